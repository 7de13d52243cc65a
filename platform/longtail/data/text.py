"""Compose an item's text from its fields with a template such as ``"{title} ({year}). {genres}"``; HTML
character references (``&amp;``, ``&quot;``, ``&#39;``: common in scraped catalogs) become the characters they
name, so the encoder reads ``D&D`` rather than ``D&amp;D`` (``plain_text``: also for items added online)."""

from __future__ import annotations

import html
import re
import string

import pyarrow as pa

from longtail.data.errors import DataError

_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_SPACES = re.compile(r"\s+")
_DANGLING = re.compile(r"\s+([.,;:])")


def template_fields(template: str) -> list[str]:
    """The field names a template refers to; positional or formatted fields are refused."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:  # e.g. "{title" or a lone "}"
        raise DataError(
            "item text template",
            f"cannot parse it: {err}",
            found=repr(template),
            expected="placeholders like {title} naming item columns; write {{ and }} for literal braces",
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise DataError(
                "item text template",
                f"bad placeholder {{{name}}}",
                found=repr(template),
                expected="placeholders like {title} naming item columns",
            )
        names.append(name)
    return names


def plain_text(text: str) -> str:
    """``text`` with its HTML character references unescaped and runs of whitespace made one space."""
    return _SPACES.sub(" ", html.unescape(text)).strip()


def default_template(columns: list[str]) -> str:
    """All text columns in order, joined by ``". "``."""
    return ". ".join(f"{{{c}}}" for c in columns)


def compose_text(fields: dict[str, list[str]], template: str, file: str = "items") -> pa.Array:
    """One string per item, HTML character references unescaped; empty fields leave no empty brackets or
    doubled spaces behind."""
    wanted = template_fields(template)
    if not wanted:
        raise DataError(
            file,
            "the item text template names no column: every item would get the same text",
            found=repr(template),
            expected="placeholders naming item columns, e.g. "
            + (default_template(sorted(fields)) or "{title}"),
        )
    missing = [n for n in wanted if n not in fields]
    if missing:
        raise DataError(
            file,
            f"item text template refers to missing column(s) {missing}",
            found=f"columns {sorted(fields)}",
            expected=f"every placeholder of {template!r} to be an item column",
        )
    n = len(next(iter(fields.values()))) if fields else 0
    out = []
    for i in range(n):
        composed = template.format_map({name: fields[name][i] for name in wanted})
        text = _EMPTY_BRACKETS.sub("", plain_text(composed))
        text = _DANGLING.sub(r"\1", _SPACES.sub(" ", text)).strip(" .,;:")
        out.append(text)
    return pa.array(out, pa.string())
