"""Does the language model earn its cost? `longtail train --data DATA` with the built-in defaults and with
one change at a time to what the model reads of the item text, on each dataset given:

- ``no_text``: every item's text replaced by the empty string (a copy of the prepared dataset with the same
  interactions and splits; every item gets the same text vector, so text cannot tell items apart) and the
  graph's text edges off (``graph.text_k=0``); the knowledge graph, where the dataset has one, stays;
- ``frozen``: the built-in defaults (the packaged all-MiniLM-L6-v2, not trained);
- ``finetuned``: the defaults plus ``finetune.enabled=true`` (the contrastive fine-tune of the encoder on
  the train part's item pairs, Ray Train + DeepSpeed, before the catalog is embedded);
- ``adapter``: the frozen encoder with a residual MLP on its vectors trained inside the ranker by the
  recommendation loss (``ranker.text_adapter=256``), the CPU-sized form of training the text tower end to end.

Each run's valid figures (what the platform's own choices read) and test figures, served and own lists, and
its train seconds (the cost) go to ``docs/results/text-ablation.json``, which ``python -m harness.docs``
turns into a section of docs/results.md.

    python -m benchmarks.text_ablation --data /tmp/data/ml-100k [--data ...] [--variant no_text ...]
        [--bundle frozen=B@COMMIT ...] [--work /tmp/longtail-text-ablation] [--add]

``--bundle VARIANT=B``: use a bundle already trained that way on the first ``--data`` instead of training
(checked: the bundle's data fingerprint and config must be the variant's); ``@COMMIT`` names the commit that
trained it. ``--add``: keep the rows of other
datasets and variants already in the output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from benchmarks.demo_runs import machine
from benchmarks.train_time import commit
from longtail.config import SelectConfig, TrainConfig, load_config
from longtail.data.dataset import Dataset, read_manifest, read_split, read_table, write_dataset

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "longtail")
KEPT = ("ndcg@10", "recall@20", "tail_recall@20", "cold_recall@20", "coverage@20")
CHECKED = ("split", "encoder", "finetune", "embed", "graph", "select")  # a bundle's config sections that
# must be the variant's (the others hold values the selection chose)
VARIANTS: dict[str, list[str]] = {
    "no_text": ["graph.text_k=0"],
    "frozen": [],
    "finetuned": ["finetune.enabled=true"],
    "adapter": ["ranker.text_adapter=256"],
}
FIELDS = (("ranker", "text_adapter", 0),)  # fields of other sections that must be the variant's too (section,
# field, its value in bundles made before the field existed)


def blank_text_copy(data: Path, out: Path) -> Path:
    """A copy of the prepared dataset ``data`` in ``out`` whose items all have the empty text; the same
    interactions, knowledge graph and splits (their files are checked to be byte-identical)."""
    manifest = read_manifest(data)
    same = {name: sha for name, sha in manifest["files"].items() if name != "items.parquet"}
    if (out / "manifest.json").is_file() and all(
        read_manifest(out)["files"].get(name) == sha for name, sha in same.items()
    ):
        return out  # made earlier from these same interactions and splits
    items = read_table(data, "items")
    interactions = read_table(data, "interactions")
    assert items is not None and interactions is not None, f"{data}: items or interactions missing"
    blank = pa.array([""] * items.num_rows, pa.string())
    items = items.set_column(items.schema.get_field_index("text"), "text", blank)
    given = read_split(data, "given") if "given" in manifest["splits"] else None
    dataset = Dataset(
        items, interactions, read_table(data, "kg"), read_table(data, "kg_link"), given, manifest["import"]
    )
    copy = write_dataset(dataset, out, source=manifest["source"], seed=manifest["cold_seed"])
    changed = [name for name, sha in same.items() if copy["files"][name] != sha]
    if changed:
        raise RuntimeError(f"{out}: the blank-text copy changed {changed}, not only items.parquet")
    return out


def config_of(variant: str) -> dict:
    return load_config(TrainConfig, None, VARIANTS[variant]).model_dump(mode="json")


def row_of(bundle: Path, data: Path, variant: str, code: str) -> dict:
    """The figures of a bundle trained as ``variant`` on ``data`` (checked)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    prepared = read_manifest(data)
    if manifest["data"]["fingerprint"] != prepared["fingerprint"]:
        raise ValueError(f"{bundle}: trained on other data than {data}")
    wanted = config_of(variant)
    if any(manifest["config"][key] != wanted[key] for key in CHECKED) or any(
        manifest["config"][section].get(field, before) != wanted[section][field]
        for section, field, before in FIELDS
    ):
        raise ValueError(f"{bundle}: its config is not the {variant!r} variant's ({VARIANTS[variant]})")
    metrics = manifest["metrics"]
    own = metrics["own_lists"]
    return {
        "dataset": prepared["source"],
        "variant": variant,
        "overrides": VARIANTS[variant],
        "code": code,
        "train_s": round(float(metrics["seconds"]), 1),
        "stage_seconds": metrics.get("stage_seconds", {}),
        "epochs": len(metrics.get("fit_history", [])),
        "chosen": metrics.get("selection", {}).get("fit", {}).get("chosen"),
        "valid": {k: metrics["valid"].get(k) for k in KEPT},
        "own_valid": {k: own["valid"].get(k) for k in KEPT},
        "test": {k: metrics["test"].get(k) for k in KEPT},
        "own_test": {k: own["test"].get(k) for k in KEPT},
    }


def run_variant(data: Path, variant: str, work: Path) -> Path:
    """Train ``variant`` on ``data`` from an empty ``work``; the bundle."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundle = work / "bundle"
    command = [CLI, "train", "--data", str(data), "--out", str(bundle), "--no-mlflow", *VARIANTS[variant]]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return bundle


def one_dataset(
    data: Path, variants: list[str], given: dict[str, tuple[Path, str]], work: Path, code: str
) -> list[dict]:
    rows = []
    for variant in variants:
        source = blank_text_copy(data, work / "no-text-data") if variant == "no_text" else data
        if variant in given:
            bundle, by = given[variant]
            rows.append({**row_of(bundle, source, variant, by), "given": True})
            continue
        bundle = run_variant(source, variant, work / variant)
        rows.append(row_of(bundle, source, variant, code))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="a prepared dataset")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="default: all")
    parser.add_argument(
        "--bundle", action="append", default=[], help="VARIANT=B[@COMMIT], a bundle trained so (by COMMIT)"
    )
    parser.add_argument("--add", action="store_true", help="keep --out's other rows")
    parser.add_argument("--work", type=Path, default=Path("/tmp/longtail-text-ablation"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "text-ablation.json")
    args = parser.parse_args()
    given = {}
    for item in args.bundle:
        variant, _, rest = item.partition("=")
        path, _, by = rest.partition("@")
        if variant not in VARIANTS or not path:
            parser.error(f"--bundle {item!r}: expected VARIANT=PATH[@COMMIT], VARIANT in {list(VARIANTS)}")
        given[variant] = (Path(path), by or "earlier")
    variants = args.variant or list(VARIANTS)
    code = commit()
    rows = []
    for i, data in enumerate(args.data):
        rows += one_dataset(data, variants, given if i == 0 else {}, args.work / data.name, code)
    if args.add and args.out.is_file():
        ours = {(r["dataset"], r["variant"]) for r in rows}
        kept = json.loads(args.out.read_text())["rows"]
        rows = [r for r in kept if (r["dataset"], r["variant"]) not in ours] + rows
    order = list(VARIANTS)
    rows.sort(key=lambda r: (r["dataset"], order.index(r["variant"])))
    result = {
        "command": "longtail train --data DATA [override]",
        "machine": machine(),
        "ndcg_tolerance": SelectConfig().ndcg_tolerance,  # the winner rule of the platform's own choices
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
