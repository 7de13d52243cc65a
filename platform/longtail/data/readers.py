"""Read raw files into all-string Arrow tables, failing with the file and line of the first problem."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.json as pj
import pyarrow.parquet as pq

from longtail.data.errors import DataError, shorten
from longtail.data.schema import Source


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file decoded strictly; empty files and undecodable bytes are errors with a line number."""
    if not path.is_file():
        raise DataError(str(path), "file not found", expected="an existing file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(str(path), "file is empty", expected="a header row and at least one data row")
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            str(path),
            f"invalid {encoding.upper()} text",
            where=f"line {line}, byte {err.start}",
            found=shorten(raw[max(0, err.start - 10) : err.end + 10]),
            expected=f"{encoding.upper()}-encoded text",
        ) from None


def read_delimited(
    path: Path,
    delimiter: str = ",",
    *,
    encoding: str = "utf-8",
    column_names: list[str] | None = None,
    quoting: bool = True,
) -> tuple[pa.Table, Source]:
    """A delimited text file as an all-string table.

    With ``column_names`` the file has no header row; otherwise line 1 is the header.
    """
    text = read_text(path, encoding)
    if column_names is None:
        header = text.split("\n", 1)[0].rstrip("\r")
        names = [h.strip() for h in header.split(delimiter)]
        if len(set(names)) != len(names) or any(not n for n in names):
            raise DataError(
                str(path),
                "bad header row",
                where="line 1",
                found=shorten(header),
                expected=f"unique, non-empty column names separated by {delimiter!r}",
            )
        skip, first_line = 1, 2
    else:
        names, skip, first_line = column_names, 0, 1
    data = text.encode("utf-8")
    table, bad_line = _parse_delimited(path, data, names, skip, delimiter, quoting, threads=True)
    if bad_line is not None:  # parallel parsing cannot tell the line; parse again serially to name it
        _, bad_line = _parse_delimited(path, data, names, skip, delimiter, quoting, threads=False)
        raise DataError(
            str(path),
            "wrong number of fields",
            where=f"line {bad_line}" if bad_line else None,
            expected=f"{len(names)} fields separated by {delimiter!r} like the header {names}",
        )
    if table.num_rows == 0:
        raise DataError(str(path), "no data rows", expected="at least one row after the header")
    return table, Source(str(path), first_line)


def _parse_delimited(
    path: Path, data: bytes, names: list[str], skip: int, delimiter: str, quoting: bool, *, threads: bool
) -> tuple[pa.Table, int | None]:
    """Parse with pyarrow; returns the table and the line of the first ragged row (0 if unknown)."""
    bad: list[int] = []

    def on_invalid(row: pv.InvalidRow) -> str:
        bad.append(row.number or 0)
        return "skip"

    try:
        table = pv.read_csv(
            pa.BufferReader(data),
            read_options=pv.ReadOptions(
                column_names=names, skip_rows=skip, block_size=1 << 24, use_threads=threads
            ),
            parse_options=pv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoting else False, invalid_row_handler=on_invalid
            ),
            convert_options=pv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as err:
        raise DataError(str(path), f"cannot parse as {delimiter!r}-delimited text: {err}") from None
    return table, (bad[0] if bad else None)


def read_jsonl(path: Path) -> tuple[pa.Table, Source]:
    """A JSON-lines file (one object per line) as a table."""
    text = read_text(path)
    try:
        table = pj.read_json(pa.BufferReader(text.encode("utf-8")))
    except pa.ArrowInvalid:
        table = _jsonl_slow(path, text)
    return table, Source(str(path), 1)


def _jsonl_slow(path: Path, text: str) -> pa.Table:
    """Line-by-line parse that finds the bad line; mixed-type columns become strings."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                str(path),
                f"invalid JSON: {err.msg}",
                where=f"line {number}",
                found=shorten(line),
                expected="one JSON object per line",
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                str(path),
                "not a JSON object",
                where=f"line {number}",
                found=shorten(line),
                expected="one JSON object per line",
            )
        rows.append(obj)
    names = list(dict.fromkeys(k for row in rows for k in row))
    columns = {n: [None if row.get(n) is None else str(row[n]) for row in rows] for n in names}
    return pa.table({n: pa.array(v, pa.string()) for n, v in columns.items()})


def read_parquet(path: Path) -> tuple[pa.Table, Source]:
    """A Parquet file as a table."""
    if not path.is_file():
        raise DataError(str(path), "file not found", expected="an existing Parquet file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(str(path), f"cannot read as Parquet: {err}", expected="a Parquet file") from None
    if table.num_rows == 0:
        raise DataError(str(path), "no rows", expected="at least one row")
    return table, Source(str(path), None)


def rename_columns(table: pa.Table, mapping: dict[str, str]) -> pa.Table:
    """Rename columns ``source -> field`` for the keys present in ``table``."""
    return table.rename_columns([mapping.get(n, n) for n in table.column_names])
