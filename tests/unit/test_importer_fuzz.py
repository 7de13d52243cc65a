"""Property-based bad input: every importer, given a corrupted copy of a valid source, either imports it
or raises ``DataError`` naming the file — never another exception, and never a half-written dataset."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longtail.data import DataError, ImportOptions, import_source, write_dataset
from tests.conftest import write_recbole, write_tabular

MAP = {"uid": "user_id", "iid": "item_id", "ts": "timestamp"}
TEXT_FORMATS = {"csv": "interactions.csv", "jsonl": "interactions.jsonl", "recbole": "toy.inter"}


def corrupt(data: bytes, kind: str, at: float, blob: bytes) -> bytes:
    """One corruption of a file's bytes; ``at`` in [0, 1] picks the place."""
    cut = int(at * len(data))
    match kind:
        case "truncate":
            return data[:cut]
        case "garbage":  # bytes that are not UTF-8, e.g. a Latin-1 or binary chunk
            return data[:cut] + blob + data[cut:]
        case "delimiter":  # the wrong delimiter everywhere
            return data.replace(b",", b";").replace(b"\t", b"|")
        case "huge_field":  # a 2 MB field in the middle
            return data[:cut] + b"x" * 2_000_000 + data[cut:]
        case "drop_header_column":
            header, _, rest = data.partition(b"\n")
            for sep in (b",", b"\t", b'", "'):
                if sep in header:
                    return header.split(sep, 1)[1] + b"\n" + rest
            return rest
        case "blank_lines":
            return data.replace(b"\n", b"\n\n\n")
        case _:  # "nul": a NUL byte
            return data[:cut] + b"\x00" + data[cut:]


KINDS = st.sampled_from(
    ["truncate", "garbage", "delimiter", "huge_field", "drop_header_column", "blank_lines", "nul"]
)


@pytest.mark.parametrize("fmt", list(TEXT_FORMATS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=KINDS, at=st.floats(0, 1), blob=st.binary(min_size=1, max_size=64))
def test_corrupted_source_imports_or_fails_with_a_data_error(fmt, kind, at, blob):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_recbole(root / "raw") if fmt == "recbole" else write_tabular(root / "raw", fmt)
        target = source / TEXT_FORMATS[fmt]
        target.write_bytes(corrupt(target.read_bytes(), kind, at, blob))
        options = ImportOptions(mapping=MAP) if fmt != "recbole" else ImportOptions()
        out = root / "data"
        try:
            ds = import_source(source, fmt, options)
            write_dataset(ds, out, source="fuzz")
        except DataError as err:
            assert str(err).startswith((str(target), str(out)))  # names the file, then the place
            assert not out.exists() or (out / "manifest.json").is_file()  # never half written
        finally:
            shutil.rmtree(root / "raw", ignore_errors=True)
