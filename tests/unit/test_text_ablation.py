"""The text ablation's pieces: the no-text copy of a dataset changes the item texts and nothing else, and the
results section marks each dataset's winner on valid."""

from __future__ import annotations

import pyarrow.parquet as pq
from benchmarks.text_ablation import blank_text_copy
from harness.docs import text_ablation_section

from longtail.data.dataset import read_manifest
from tests.conftest import write_clustered_dataset


def test_the_no_text_copy_empties_every_text_and_keeps_interactions_and_splits(tmp_path):
    data = write_clustered_dataset(tmp_path / "data")
    copy = blank_text_copy(data, tmp_path / "copy")
    before, after = read_manifest(data), read_manifest(copy)
    assert set(pq.read_table(copy / "items.parquet").column("text").to_pylist()) == {""}
    assert len(set(pq.read_table(data / "items.parquet").column("text").to_pylist())) == 20
    assert after["files"]["items.parquet"] != before["files"]["items.parquet"]
    assert {k: v for k, v in after["files"].items() if k != "items.parquet"} == {
        k: v for k, v in before["files"].items() if k != "items.parquet"
    }
    assert after["fingerprint"] != before["fingerprint"]  # its bundles cannot pass for the original's
    (copy / "marker").write_text("")  # a rewrite replaces the whole directory
    assert blank_text_copy(data, copy) == copy
    assert (copy / "marker").is_file()  # reused, not written again


def row(dataset: str, variant: str, valid_ndcg: float, own_tail: float = 0.1) -> dict:
    figures = dict.fromkeys(("ndcg@10", "tail_recall@20", "cold_recall@20", "coverage@20"), 0.1)
    return {
        "dataset": dataset,
        "variant": variant,
        "code": "abc1234",
        "train_s": 100.0,
        "valid": {**figures, "ndcg@10": valid_ndcg},
        "own_valid": {**figures, "tail_recall@20": own_tail},
        "test": figures,
        "own_test": figures,
    }


def test_the_section_marks_each_datasets_winner_by_the_platforms_rule():
    rows = [
        row("a", "no_text", 0.2, own_tail=0.9),  # more tail, but ndcg@10 not within 5 % of the best
        row("a", "frozen", 0.3),
        row("b", "frozen", 0.300, own_tail=0.1),
        row("b", "finetuned", 0.290, own_tail=0.2),  # within 5 %: the tail decides
    ]
    section = text_ablation_section(
        {"command": "longtail train", "machine": "m", "ndcg_tolerance": 0.05, "rows": rows}
    )
    marked = [line.split(" | ")[:2] for line in section.splitlines() if line.startswith("| ") and "✓" in line]
    assert marked == [["| a", "frozen MiniLM (default) ✓"], ["| b", "contrastive fine-tune ✓"]]
