"""Every bad input of the data layer ends in a DataError naming the file, the place, and what was expected."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longtail.data import DataError, ImportOptions, import_source, write_dataset
from longtail.data.named import NAMED, WheelDataset, download_wheel, verify_wheel
from tests.conftest import write_tabular

CSV = ImportOptions(mapping={"uid": "user_id", "iid": "item_id", "ts": "timestamp"})


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def expect(match: str, fn, *args) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        fn(*args)
    return info.value


def test_missing_column_names_the_file_and_found_columns(tmp_path):
    f = write(tmp_path / "interactions.csv", "uid,iid\nu1,1\n")
    err = expect(
        "missing column 'item_id'", import_source, f, "csv", ImportOptions(mapping={"uid": "user_id"})
    )
    assert str(f) in str(err) and "found columns ['user_id', 'iid']" in str(err) and "--map" in str(err)


def test_misnamed_column_is_reported_until_mapped(tmp_path):
    f = write(tmp_path / "interactions.csv", "user,item_id\nu1,1\n")
    expect("missing column 'user_id'", import_source, f, "csv", ImportOptions())
    ds = import_source(f, "csv", ImportOptions(mapping={"user": "user_id"}))
    assert ds.interactions.column("user_id").to_pylist() == ["u1"]


def test_wrong_type_in_weight_names_line_and_value(tmp_path):
    f = write(tmp_path / "interactions.csv", "user_id,item_id,weight\nu1,1,1.0\nu1,2,lots\n")
    err = expect("unparseable number", import_source, f, "csv", ImportOptions())
    assert "line 3, column 'weight'" in str(err) and "'lots'" in str(err)


def test_wrong_id_type_in_parquet(tmp_path):
    f = tmp_path / "interactions.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": [[1, 2]]}), f)
    expect("column 'item_id' has type list", import_source, f, "parquet", ImportOptions())


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_id(tmp_path, value):
    f = write(tmp_path / "interactions.csv", f"user_id,item_id\nu1,1\n{value},2\n")
    err = expect("empty id", import_source, f, "csv", ImportOptions())
    assert "line 3, column 'user_id'" in str(err)


def test_null_id_in_parquet_names_the_row(tmp_path):
    f = tmp_path / "interactions.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2", None], "item_id": ["1", "2", "3"]}), f)
    err = expect("empty id", import_source, f, "parquet", ImportOptions())
    assert "row 3, column 'user_id'" in str(err)


def test_duplicate_item_ids_name_both_rows(tmp_path):
    d = write_tabular(tmp_path / "raw", "csv")
    write(d / "items.csv", "iid,title\n1,A\n2,B\n1,C\n")
    err = expect("duplicate item_id '1'", import_source, d, "csv", CSV)
    assert "rows 1 and 3" in str(err)


def test_unknown_items_error_by_default_and_drop_counts(tmp_path):
    d = write_tabular(tmp_path / "raw", "csv")
    write(d / "items.csv", "iid,title\n" + "\n".join(f"{i},T{i}" for i in range(1, 10)) + "\n")
    err = expect("unknown item '10'", import_source, d, "csv", CSV)
    assert "(2 such rows)" in str(err) and "--unknown-items drop" in str(err)
    drop = ImportOptions(mapping=CSV.mapping, unknown_items="drop")
    ds = import_source(d, "csv", drop)
    assert ds.stats["unknown_items_dropped"] == 2
    assert "10" not in ds.interactions.column("item_id").to_pylist()


def test_unparseable_timestamp(tmp_path):
    f = write(
        tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,1,2024-01-02T03:04:05\nu1,2,yesterday\n"
    )
    err = expect("unparseable timestamp", import_source, f, "csv", ImportOptions())
    assert "line 3, column 'timestamp'" in str(err) and "ISO-8601" in str(err)


def test_iso_timestamps_are_parsed(tmp_path):
    f = write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,1,1970-01-01T00:01:00Z\n")
    assert import_source(f, "csv", ImportOptions()).interactions.column("timestamp").to_pylist() == [60.0]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    f = write(tmp_path / "interactions.csv", content)
    expect("file is empty", import_source, f, "csv", ImportOptions())


def test_header_only_file(tmp_path):
    f = write(tmp_path / "interactions.csv", "user_id,item_id\n")
    expect("no data rows", import_source, f, "csv", ImportOptions())


def test_invalid_utf8_names_the_line(tmp_path):
    f = write(tmp_path / "interactions.csv", b"user_id,item_id\nu1,1\nu\xff2,2\n")
    err = expect("invalid UTF-8 text", import_source, f, "csv", ImportOptions())
    assert "line 3" in str(err)


def test_invalid_utf8_in_recbole_item_file(recbole_dir):
    item = next(recbole_dir.glob("*.item"))
    item.write_bytes(item.read_bytes().replace(b"Movie 4", b"Movie \xc3\x28"))
    err = expect("invalid UTF-8", import_source, recbole_dir, "recbole", ImportOptions())
    assert item.name in str(err) and "line 5" in str(err)


def test_wrong_delimiter_reads_as_missing_columns(tmp_path):
    f = write(tmp_path / "interactions.csv", "user_id;item_id\nu1;1\n")
    expect(re.escape("found columns ['user_id;item_id']"), import_source, f, "csv", ImportOptions())


def test_ragged_row_names_the_line(tmp_path):
    f = write(tmp_path / "interactions.csv", "user_id,item_id\nu1,1\nu1,2,3,4\n")
    err = expect("wrong number of fields", import_source, f, "csv", ImportOptions())
    assert "line 3" in str(err)


def test_bad_recbole_header(recbole_dir):
    inter = next(recbole_dir.glob("*.inter"))
    inter.write_text("user_id\titem_id:token\nu1\t1\n")
    expect("bad RecBole header", import_source, recbole_dir, "recbole", ImportOptions())


def test_invalid_jsonl_line(tmp_path):
    f = write(tmp_path / "interactions.jsonl", '{"user_id": "u1", "item_id": "1"}\n{"user_id": "u2", item\n')
    err = expect("invalid JSON", import_source, f, "jsonl", ImportOptions())
    assert "line 2" in str(err)


def test_not_parquet(tmp_path):
    f = write(tmp_path / "interactions.parquet", "user_id,item_id\n")
    expect("cannot read as Parquet", import_source, f, "parquet", ImportOptions())


def test_template_with_unknown_field(recbole_dir):
    opts = ImportOptions(template="{name} ({year})")
    expect(
        re.escape("refers to missing column(s) ['name', 'year']"), import_source, recbole_dir, "recbole", opts
    )


@pytest.mark.parametrize("template", ["{title", "title}", "{0}"])
def test_unparseable_template_is_a_data_error(tmp_path, template):
    write(tmp_path / "interactions.csv", "uid,iid,ts\nu1,1,1\n")
    write(tmp_path / "items.csv", "iid,title\n1,Heat\n")
    opts = ImportOptions(mapping=CSV.mapping, template=template)
    err = expect("item text template", import_source, tmp_path, "csv", opts)
    assert repr(template) in str(err)


def test_an_item_table_with_an_id_column_only_is_refused(tmp_path):
    write(tmp_path / "interactions.csv", "uid,iid,ts\nu1,1,1\n")
    items = write(tmp_path / "items.csv", "iid\n1\n2\n")
    err = expect("id column only", import_source, tmp_path, "csv", CSV)
    assert str(items) in str(err) and "--template" in str(err)


def test_wheel_hash_mismatch_is_refused(tmp_path):
    fake = write(tmp_path / "wheels" / "recbole-1.2.1-py3-none-any.whl", b"not the wheel")
    err = expect("sha256 mismatch", verify_wheel, fake, NAMED["ml-100k"].sha256)
    assert NAMED["ml-100k"].sha256 in str(err) and "delete the file" in str(err)
    # the cached copy is verified on every use, not only after a download
    spec = NAMED["ml-100k"]
    expect("sha256 mismatch", download_wheel, WheelDataset(**{**spec.__dict__}), tmp_path)


def test_failed_write_keeps_the_previous_dataset(tmp_path, recbole_dir, monkeypatch):
    out = tmp_path / "data"
    ds = import_source(recbole_dir, "recbole", ImportOptions())
    first = write_dataset(ds, out, source="toy")
    before = {p.name: p.read_bytes() for p in out.rglob("*.parquet")}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("longtail.data.dataset.pq.write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(ds, out, source="toy")
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == first["fingerprint"]
    assert {p.name: p.read_bytes() for p in out.rglob("*.parquet")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "raw"]  # no temporary directory left


def test_refuses_to_overwrite_a_directory_that_is_not_a_dataset(tmp_path, recbole_dir):
    out = tmp_path / "precious"
    write(out / "notes.txt", "keep me")
    ds = import_source(recbole_dir, "recbole", ImportOptions())
    expect("not a longtail dataset", lambda: write_dataset(ds, out, source="toy"))
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_float_id_too_large_to_be_exact_is_a_data_error_not_a_traceback(tmp_path):
    f = tmp_path / "interactions.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u1"], "item_id": [2.0, 1e20], "timestamp": [1.0, 2.0]}), f)
    err = expect("too large to be an exact integer", import_source, f, "parquet", ImportOptions())
    assert "row 2, column 'item_id'" in str(err) and "1e+20" in str(err)


def test_a_template_without_placeholders_on_an_id_and_text_items_file_is_refused(tmp_path):
    write(tmp_path / "src" / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu2,a,3\n")
    write(tmp_path / "src" / "items.csv", "item_id,text\na,Alpha\nb,Beta\n")
    err = expect("names no column", import_source, tmp_path / "src", "csv", ImportOptions(template="plain"))
    assert "items.csv" in str(err) and "'plain'" in str(err)
