"""Importers turn every supported format into the same canonical tables."""

from __future__ import annotations

import pytest

from longtail.data import ImportOptions, import_source, read_manifest, read_split, write_dataset
from longtail.data.schema import INTERACTIONS_SCHEMA
from tests.conftest import INTERACTIONS, write_recbole, write_tabular

MAP = {"uid": "user_id", "iid": "item_id", "ts": "timestamp"}


def test_recbole_import_is_canonical(recbole_dir):
    opts = ImportOptions(
        mapping={"movie_title": "title", "release_year": "year", "class": "genres"},
        template="{title} ({year}). {genres}",
        list_fields=("genres",),
    )
    ds = import_source(recbole_dir, "recbole", opts)
    assert ds.interactions.schema == INTERACTIONS_SCHEMA
    assert ds.interactions.num_rows == len(INTERACTIONS)
    first = ds.items.slice(0, 1).to_pylist()[0]
    assert first == {
        "item_id": "1",
        "text": "Movie 1 (1991). Drama, Comedy",
        "title": "Movie 1",
        "year": "1991",
        "genres": "Drama, Comedy",
    }
    assert ds.kg.column_names == ["head_id", "relation", "tail_id"] and ds.kg.num_rows == 2
    assert ds.kg_link.to_pylist()[0] == {"item_id": "1", "entity_id": "m.1"}
    assert ds.interactions.column("weight").to_pylist()[0] == 4.0  # rating becomes weight


def test_recbole_given_split(tmp_path):
    d = write_recbole(tmp_path / "raw")
    lines = (d / "toy.inter").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    (d / "toy.inter").unlink()
    for name, chunk in (("train", rows[:14]), ("valid", rows[14:17]), ("test", rows[17:])):
        (d / f"toy.{name}.inter").write_text("\n".join([header, *chunk]) + "\n")
    ds = import_source(d, "recbole", ImportOptions())
    assert ds.given is not None and ds.given.counts() == {"train": 14, "valid": 3, "test": 3}
    manifest = write_dataset(ds, tmp_path / "data", source="toy")
    assert set(manifest["splits"]) == {"warm", "cold", "loo", "given"}
    assert read_split(tmp_path / "data", "given").test.num_rows == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_tabular_formats_agree(tmp_path, recbole_dir, fmt):
    ds = import_source(
        write_tabular(tmp_path / fmt, fmt), fmt, ImportOptions(mapping=MAP, template="{title}")
    )
    ref = import_source(recbole_dir, "recbole", ImportOptions())
    cols = ["user_id", "item_id", "timestamp"]
    assert ds.interactions.select(cols).equals(ref.interactions.select(cols))
    assert ds.items.column("text").to_pylist()[:2] == ["Movie 1", "Movie 2"]


def test_single_interactions_file_without_items_or_timestamps(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user_id,item_id\na,x\na,y\nb,x\na,x\n")
    ds = import_source(f, "csv", ImportOptions())
    assert ds.interactions.column("timestamp").to_pylist() == [0.0, 1.0, 2.0]  # file order
    assert ds.stats["duplicate_pairs_dropped"] == 1
    assert sorted(ds.items.column("item_id").to_pylist()) == ["x", "y"]


def test_html_character_references_in_item_text_are_unescaped(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\na,x\nb,y\n")
    (tmp_path / "items.csv").write_text(
        "item_id,title\nx,Wrath of Ashardalon: A D&amp;D Boardgame\n"
        'y,"Shapes (Set of 30 1-3/4&quot; Pieces) &#39;n&#x27; more"\n'
    )
    ds = import_source(tmp_path, "csv", ImportOptions())
    items = ds.items.to_pydict()
    texts = dict(zip(items["item_id"], items["text"], strict=True))
    assert texts == {
        "x": "Wrath of Ashardalon: A D&D Boardgame",
        "y": "Shapes (Set of 30 1-3/4\" Pieces) 'n' more",
    }


def test_repeated_pair_keeps_earliest_copy(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user_id,item_id,timestamp,event_type\na,x,9,click\na,x,3,buy\na,x,3,view\n")
    ds = import_source(f, "csv", ImportOptions())
    assert ds.interactions.to_pylist() == [
        {"user_id": "a", "item_id": "x", "timestamp": 3.0, "weight": 1.0, "event_type": "buy"}
    ]


def test_movielens_raw(tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t3\t881250950\n1\t11\t4\t881250951\n")
    flags = "|".join(["0"] * 19)
    action = "|".join(["0", "1"] + ["0"] * 17)
    (d / "u.item").write_bytes(
        (
            f"10|Café Society (1995)|01-Jan-1995||http://x|{action}\n11|Untitled|01-Jan-1996||http://y|{flags}\n"
        ).encode("latin-1")
    )
    ds = import_source(d, "movielens", ImportOptions())
    texts = dict(
        zip(ds.items.column("item_id").to_pylist(), ds.items.column("text").to_pylist(), strict=True)
    )
    assert texts == {"10": "Café Society (1995). Action", "11": "Untitled (1996)"}
    assert ds.interactions.num_rows == 3


def test_column_mapping_collision_is_an_error(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user_id,uid,item_id\na,b,x\n")
    with pytest.raises(Exception, match="would both be named"):
        import_source(f, "csv", ImportOptions(mapping={"uid": "user_id"}))


def test_manifest_records_counts_and_fingerprint(tmp_path, recbole_dir):
    ds = import_source(recbole_dir, "recbole", ImportOptions())
    write_dataset(ds, tmp_path / "a", source="toy")
    write_dataset(ds, tmp_path / "b", source="toy")
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["rows"]["interactions"] == len(INTERACTIONS) and a["catalog_size"] == 12 and a["users"] == 4
    assert a["fingerprint"] == b["fingerprint"]  # deterministic output
