"""Importers: RecBole atomic files, MovieLens-100K raw files, and CSV / Parquet / JSONL with a mapping.

Each returns a ``Dataset`` of canonical tables (``longtail.data.schema``), validated, with repeated
(user, item) pairs reduced to their earliest copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from longtail.data.dataset import (
    Dataset,
    UnknownItems,
    apply_unknown_items,
    check_unique_items,
    keep_first_pairs,
)
from longtail.data.errors import DataError
from longtail.data.readers import read_delimited, read_jsonl, read_parquet, read_text
from longtail.data.schema import Source, id_column, text_column, to_interactions, to_kg, to_kg_link
from longtail.data.splits import PARTS, SplitTables
from longtail.data.text import compose_text, default_template

FORMATS = ("recbole", "movielens", "csv", "parquet", "jsonl")
RECBOLE_FIELDS = {"rating": "weight", "relation_id": "relation"}
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


@dataclass(frozen=True)
class ImportOptions:
    """How raw columns become canonical fields and item text.

    ``mapping``: source column -> canonical field (``user_id``, ``item_id``, ``timestamp``, ``weight``,
    ``event_type``, ``head_id``, ``relation``, ``tail_id``, ``entity_id``, or an item text field name).
    ``template``: item text, e.g. ``"{title} ({year}). {genres}"``; default: all text fields joined.
    ``list_fields``: item fields whose space-separated tokens read better joined by ``", "``.
    ``unknown_items``: interactions on items missing from the item table: ``error`` or ``drop``.
    """

    mapping: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    list_fields: tuple[str, ...] = ()
    unknown_items: UnknownItems = "error"


def build_items(raw: pa.Table, source: Source, options: ImportOptions) -> pa.Table:
    """Canonical items: ``item_id``, composed ``text``, then every other column as a text field."""
    if "item_id" not in raw.column_names:
        raise DataError(
            source.file,
            "missing column 'item_id'; map yours with --map COLUMN=item_id",
            found=f"columns {raw.column_names}",
            expected="an item id column",
        )
    names = [n for n in raw.column_names if n not in ("item_id", "text")]
    if not names and "text" not in raw.column_names:
        raise DataError(
            source.file,
            "the item table has an id column only: nothing for the encoder to read",
            found=f"columns {raw.column_names}",
            expected="a 'text' column or descriptive columns (title, genres, …), mapped with --map and "
            "--template",
        )
    fields = {n: text_column(raw, n).to_pylist() for n in names}
    for name in options.list_fields:
        if name in fields:
            fields[name] = [", ".join(v.split()) for v in fields[name]]
    if "text" in raw.column_names and options.template is None:
        text = text_column(raw, "text")
    else:
        text = compose_text(fields, options.template or default_template(names), source.file)
    columns = {"item_id": id_column(raw, "item_id", source), "text": text}
    columns.update({n: pa.array(v, pa.string()) for n, v in fields.items()})
    items = pa.table(columns)
    check_unique_items(items, source.file)
    return items


def assemble(
    items: pa.Table | None,
    interactions: pa.Table,
    options: ImportOptions,
    *,
    files: dict[str, str],
    kg: pa.Table | None = None,
    kg_link: pa.Table | None = None,
    given: SplitTables | None = None,
) -> Dataset:
    """Apply the unknown-item policy and keep the first copy of each (user, item) pair."""
    stats: dict[str, int | str] = {}
    if items is None:
        ids = np.unique(np.asarray(interactions.column("item_id").to_numpy(zero_copy_only=False), dtype=str))
        items = pa.table(
            {"item_id": pa.array(ids, pa.string()), "text": pa.array([""] * len(ids), pa.string())}
        )
    interactions, stats["unknown_items_dropped"] = apply_unknown_items(
        interactions, items, options.unknown_items, files["interactions"]
    )
    interactions, stats["duplicate_pairs_dropped"] = keep_first_pairs(interactions)
    if given is not None:
        parts = []
        for part in PARTS:
            table, _ = apply_unknown_items(given.part(part), items, options.unknown_items, files[part])
            parts.append(keep_first_pairs(table)[0])
        given = SplitTables(*parts)
    return Dataset(items, interactions, kg, kg_link, given, stats)


# --- RecBole atomic files -------------------------------------------------------------------------


def _read_atomic(path: Path, mapping: dict[str, str]) -> tuple[pa.Table, Source]:
    table, source = read_delimited(path, "\t", quoting=False)
    names = []
    for raw in table.column_names:
        name, sep, kind = raw.partition(":")
        if not sep or not name or not kind:
            raise DataError(
                str(path),
                "bad RecBole header",
                where="line 1",
                found=repr(raw),
                expected="tab-separated 'name:type' headers, e.g. 'item_id:token'",
            )
        names.append(mapping.get(name, RECBOLE_FIELDS.get(name, name)))
    return _renamed(table, names, source), source


def _renamed(table: pa.Table, names: list[str], source: Source) -> pa.Table:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            source.file,
            f"two columns would both be named {dupes}",
            found=f"columns {table.column_names}",
            expected="a --map that gives each field one column",
        )
    return table.rename_columns(names)


def _one(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.glob(pattern))
    if len(found) > 1:
        raise DataError(
            str(directory),
            f"several files match {pattern!r}",
            found=str([p.name for p in found]),
            expected="exactly one",
        )
    return found[0] if found else None


def import_recbole(path: Path, options: ImportOptions) -> Dataset:
    """A RecBole atomic dataset directory: ``.inter`` (or ``train/valid/test.inter``), ``.item``,
    ``.kg`` and ``.link`` files."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(str(path), "not a directory", expected="a directory of RecBole atomic files")
    parts = {p: _one(path, f"*{p}.inter") for p in PARTS}
    whole = [p for p in path.glob("*.inter") if not any(p.name.endswith(f"{s}.inter") for s in PARTS)]
    if len(whole) > 1:
        raise DataError(str(path), "several .inter files", found=str([p.name for p in whole]), expected="one")
    given = None
    files: dict[str, str] = {}
    found = {p: path for p, path in parts.items() if path is not None}
    if len(found) == len(PARTS):
        tables = []
        for p in PARTS:
            raw, source = _read_atomic(found[p], options.mapping)
            tables.append(to_interactions(raw, source))
            files[p] = source.file
        given = SplitTables(*tables)
    if whole:
        raw, source = _read_atomic(whole[0], options.mapping)
        interactions = to_interactions(raw, source)
        files["interactions"] = source.file
    elif given is not None:
        interactions = pa.concat_tables([given.train, given.valid, given.test])
        files["interactions"] = files["train"]
    else:
        raise DataError(str(path), "no .inter file", expected="NAME.inter or train/valid/test .inter files")
    item_path, kg_path, link_path = _one(path, "*.item"), _one(path, "*.kg"), _one(path, "*.link")
    items = build_items(*_read_atomic(item_path, options.mapping), options) if item_path else None
    kg = to_kg(*_read_atomic(kg_path, options.mapping)) if kg_path else None
    link = to_kg_link(*_read_atomic(link_path, options.mapping)) if link_path else None
    return assemble(items, interactions, options, files=files, kg=kg, kg_link=link, given=given)


# --- MovieLens-100K raw files ---------------------------------------------------------------------

_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def import_movielens(path: Path, options: ImportOptions) -> Dataset:
    """MovieLens-100K raw files: ``u.data`` (tab-separated, no header) and ``u.item`` (``|``, Latin-1)."""
    path = Path(path)
    data, source = read_delimited(
        path / "u.data", "\t", column_names=["user_id", "item_id", "weight", "timestamp"]
    )
    interactions = to_interactions(data, source)
    genres = ML100K_GENRES
    if (path / "u.genre").is_file():
        lines = read_text(path / "u.genre", "latin-1").splitlines()
        genres = [line.split("|")[0] for line in lines if line.strip()]
    columns = [
        "item_id",
        "raw_title",
        "release_date",
        "video_date",
        "url",
        *[f"g{i}" for i in range(len(genres))],
    ]
    raw, item_source = read_delimited(
        path / "u.item", "|", encoding="latin-1", column_names=columns, quoting=False
    )
    titles, years = [], []
    for title, date in zip(
        raw.column("raw_title").to_pylist(), raw.column("release_date").to_pylist(), strict=True
    ):
        match = _TITLE_YEAR.match(title)
        titles.append(match.group(1) if match else title.strip())
        years.append(match.group(2) if match else (date[-4:] if len(date) >= 4 else ""))
    flags = np.array([raw.column(f"g{i}").to_pylist() for i in range(len(genres))]).T == "1"
    genre_text = [", ".join(g for g, on in zip(genres, row, strict=True) if on) for row in flags]
    items_raw = pa.table(
        {"item_id": raw.column("item_id"), "title": titles, "year": years, "genres": genre_text}
    )
    template = options.template or "{title} ({year}). {genres}"
    items = build_items(items_raw, item_source, ImportOptions(template=template))
    return assemble(items, interactions, options, files={"interactions": source.file})


# --- CSV / Parquet / JSONL with a column mapping ---------------------------------------------------

_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


def _read_tabular(path: Path, fmt: str, mapping: dict[str, str]) -> tuple[pa.Table, Source]:
    if fmt == "csv":
        table, source = read_delimited(path, ",")
    elif fmt == "parquet":
        table, source = read_parquet(path)
    else:
        table, source = read_jsonl(path)
    return _renamed(table, [mapping.get(n, n) for n in table.column_names], source), source


def import_tabular(path: Path, fmt: str, options: ImportOptions) -> Dataset:
    """CSV, Parquet or JSONL: a single interactions file, or a directory with ``interactions``
    and optionally ``items``, ``kg``, ``kg_link`` and ``train``/``valid``/``test`` files."""
    path = Path(path)
    suffix = _SUFFIX[fmt]
    if path.is_file():
        found = {"interactions": path}
    elif path.is_dir():
        found = {n: path / f"{n}{suffix}" for n in ("interactions", "items", "kg", "kg_link", *PARTS)}
        found = {n: p for n, p in found.items() if p.is_file()}
        if "interactions" not in found and not all(p in found for p in PARTS):
            raise DataError(
                str(path), f"no interactions{suffix}", expected=f"interactions{suffix} in the directory"
            )
    else:
        raise DataError(str(path), "not found", expected=f"a {fmt} file or a directory of them")
    files = {n: str(p) for n, p in found.items()}
    given = None
    if all(p in found for p in PARTS):
        given = SplitTables(*(to_interactions(*_read_tabular(found[p], fmt, options.mapping)) for p in PARTS))
    if "interactions" in found:
        interactions = to_interactions(*_read_tabular(found["interactions"], fmt, options.mapping))
    elif given is not None:
        interactions = pa.concat_tables([given.train, given.valid, given.test])
    else:
        raise AssertionError("unreachable: the caller found interactions or a whole split")
        files["interactions"] = files["train"]
    items = (
        build_items(*_read_tabular(found["items"], fmt, options.mapping), options)
        if "items" in found
        else None
    )
    kg = to_kg(*_read_tabular(found["kg"], fmt, options.mapping)) if "kg" in found else None
    link = to_kg_link(*_read_tabular(found["kg_link"], fmt, options.mapping)) if "kg_link" in found else None
    return assemble(items, interactions, options, files=files, kg=kg, kg_link=link, given=given)


def import_source(path: Path, fmt: str, options: ImportOptions) -> Dataset:
    """Dispatch on ``fmt`` (one of ``FORMATS``)."""
    if fmt == "recbole":
        return import_recbole(path, options)
    if fmt == "movielens":
        return import_movielens(path, options)
    if fmt in _SUFFIX:
        return import_tabular(path, fmt, options)
    raise DataError(str(path), f"unknown format {fmt!r}", expected=f"one of {FORMATS}")
