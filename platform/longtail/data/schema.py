"""Arrow schemas of the canonical tables, and conversion of raw columns into them with located errors.

Canonical tables (every importer produces exactly these):

- items:         ``item_id`` (string), ``text`` (string, composed from fields), then the text fields.
- interactions:  ``user_id``, ``item_id`` (string), ``timestamp`` (float64, seconds), ``weight``
                 (float32), ``event_type`` (string).
- kg:            ``head_id``, ``relation``, ``tail_id`` (string): knowledge-graph triples.
- kg_link:       ``item_id``, ``entity_id`` (string): which entity an item is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from longtail.data.errors import DataError, shorten

INTERACTIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.float64()),
        ("weight", pa.float32()),
        ("event_type", pa.string()),
    ]
)
KG_SCHEMA = pa.schema([("head_id", pa.string()), ("relation", pa.string()), ("tail_id", pa.string())])
KG_LINK_SCHEMA = pa.schema([("item_id", pa.string()), ("entity_id", pa.string())])
ITEM_KEY_FIELDS = ("item_id", "text")
DEFAULT_EVENT_TYPE = "interaction"


@dataclass(frozen=True)
class Source:
    """Where a raw table came from, so that errors can point at a line or row.

    ``first_line`` is the file line of data row 0 for line-oriented text files (CSV, TSV, JSONL);
    ``None`` means rows are reported 1-based as ``row N`` (Parquet).
    """

    file: str
    first_line: int | None = None

    def where(self, row: int, column: str | None = None) -> str:
        place = f"line {self.first_line + row}" if self.first_line is not None else f"row {row + 1}"
        return f"{place}, column '{column}'" if column else place


def require_columns(table: pa.Table, needed: tuple[str, ...], source: Source, hint: str = "") -> None:
    """Fail with the missing column names and the columns that were found."""
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(
            source.file,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}{hint}",
            found=f"columns {table.column_names}",
            expected=f"columns {list(needed)}",
        )


def id_column(table: pa.Table, name: str, source: Source) -> pa.Array:
    """Column ``name`` as non-empty strings (integers are rendered in decimal)."""
    col = table.column(name)
    kind = col.type
    if pa.types.is_floating(kind):
        _bad_float_ids(col, name, source)
        col = pc.cast(col, pa.int64())
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
        raise DataError(source.file, f"column '{name}' has type {kind}", expected="string or integer ids")
    col = pc.cast(col, pa.string()).combine_chunks()
    stripped = pc.utf8_trim_whitespace(col)
    bad = pc.or_kleene(pc.is_null(stripped), pc.equal(pc.utf8_length(stripped), 0))
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise DataError(source.file, "empty id", where=source.where(row, name), expected="a non-empty id")
    return stripped


INT64_LIMIT = 2**63  # a float id must convert to an int64 exactly


def _bad_float_ids(col: pa.ChunkedArray, name: str, source: Source) -> None:
    for row, value in enumerate(col.to_pylist()):
        if value is None or not float(value).is_integer():
            raise DataError(
                source.file,
                "id is not an integer",
                where=source.where(row, name),
                found=shorten(value),
                expected="a string or integer id",
            )
        if abs(value) >= INT64_LIMIT or abs(value) > 2**53:  # beyond 2^53 a float does not hold every integer
            raise DataError(
                source.file,
                "id is a float too large to be an exact integer",
                where=source.where(row, name),
                found=shorten(value),
                expected="ids stored as strings or int64 (floats are exact only up to 2^53)",
            )


def float_column(
    table: pa.Table, name: str, source: Source, parse: Callable[[str], float] = float
) -> pa.Array:
    """Column ``name`` as float64, every value finite; strings go through ``parse``."""
    col = table.column(name)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = pc.cast(col, pa.float64()).combine_chunks()
        if values.null_count == 0 and _all_finite(values):
            return values
        raw = values.to_pylist()
    else:
        raw = col.to_pylist()
    out: list[float] = []
    for row, value in enumerate(raw):
        try:
            number = parse(value) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            what = "timestamp" if parse is parse_timestamp else "number"
            raise DataError(
                source.file,
                f"unparseable {what}",
                where=source.where(row, name),
                found=shorten(value),
                expected="epoch seconds or an ISO-8601 date" if what == "timestamp" else "a finite number",
            )
        out.append(number)
    return pa.array(out, pa.float64())


def _all_finite(values: pa.Array) -> bool:
    return bool(pc.all(pc.is_finite(values)).as_py()) if len(values) else True


def parse_timestamp(text: str) -> float:
    """Epoch seconds from a number or an ISO-8601 date/time (naive times are taken as UTC)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def text_column(table: pa.Table, name: str) -> pa.Array:
    """Column ``name`` as strings with nulls turned into empty strings."""
    col = table.column(name)
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return pc.fill_null(col, "").combine_chunks()


def to_interactions(table: pa.Table, source: Source) -> pa.Table:
    """Canonical interactions from a raw table with at least ``user_id`` and ``item_id``.

    Missing ``timestamp`` becomes the file order, missing ``weight`` 1.0, missing ``event_type``
    ``"interaction"``.
    """
    require_columns(table, ("user_id", "item_id"), source, hint="; map yours with --map COLUMN=FIELD")
    n = table.num_rows
    if n == 0:
        raise DataError(source.file, "no interactions", expected="at least one row")
    has = table.column_names
    timestamp = (
        float_column(table, "timestamp", source, parse_timestamp)
        if "timestamp" in has
        else pa.array(range(n), pa.float64())
    )
    weight = float_column(table, "weight", source) if "weight" in has else pa.array([1.0] * n, pa.float64())
    event = text_column(table, "event_type") if "event_type" in has else pa.array([DEFAULT_EVENT_TYPE] * n)
    return pa.Table.from_arrays(
        [
            id_column(table, "user_id", source),
            id_column(table, "item_id", source),
            timestamp,
            pc.cast(weight, pa.float32()),
            event,
        ],
        schema=INTERACTIONS_SCHEMA,
    )


def to_kg(table: pa.Table, source: Source) -> pa.Table:
    """Canonical knowledge-graph triples."""
    require_columns(table, tuple(KG_SCHEMA.names), source)
    return pa.Table.from_arrays([id_column(table, c, source) for c in KG_SCHEMA.names], schema=KG_SCHEMA)


def to_kg_link(table: pa.Table, source: Source) -> pa.Table:
    """Canonical item-to-entity links."""
    require_columns(table, tuple(KG_LINK_SCHEMA.names), source)
    return pa.Table.from_arrays(
        [id_column(table, c, source) for c in KG_LINK_SCHEMA.names], schema=KG_LINK_SCHEMA
    )
