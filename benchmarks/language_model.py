"""Issue 3 figures: frozen vs fine-tuned MiniLM (text-only recommendation), and the speed of the Ray paths
against plain single-process loops, all measured in one run.

    python benchmarks/language_model.py --data data/ml-100k [--out reports/bench/language_model.json]

Quality: user profile = mean of history text vectors, score = cosine (``TextMeanProfile``);
``cold_recall@20`` on the cold split and ``tail_recall@20`` on the warm split, each with an encoder
fine-tuned on that split's train part through the real Ray Train + DeepSpeed path.
Speed: fine-tuning samples/s of Ray Train + DeepSpeed (1 worker) vs ``plain_finetune`` on the same
pairs, model, micro-batch and threads; Ray Data embedding items/s vs a plain transformers loop.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray

from benchmarks.peers.text_profile import TextMeanProfile
from benchmarks.plain_finetune import plain_finetune
from longtail.config import TrainConfig, load_config
from longtail.data.encoded import SplitData, load_split_data
from longtail.data.vectors import vectors_of
from longtail.eval.evaluate import evaluate
from longtail.model.encoder import embed_texts, load_encoder, load_tokenizer
from longtail.train.embed import embed_catalog
from longtail.train.finetune import build_pairs, finetune

KEYS = ("recall@20", "ndcg@10", "tail_recall@20", "cold_recall@20", "coverage@20")


def text_metrics(data: SplitData, vectors, label: str) -> dict[str, dict[str, float]]:
    out = {}
    for part in ("valid", "test"):
        result = evaluate(TextMeanProfile(vectors, label), data, part)
        out[part] = {k: round(result.metrics[k], 4) for k in KEYS}
    print(label, json.dumps(out), flush=True)
    return out


def quality(data_dir: Path, cfg: TrainConfig, work: Path) -> dict:
    tok = load_tokenizer(cfg.encoder.name)
    frozen = load_encoder(cfg.encoder.name)
    report = {}
    for split in ("cold", "warm"):
        data = load_split_data(data_dir, split)
        before = text_metrics(
            data, embed_texts(frozen, tok, list(data.item_text), cfg.encoder.max_length), f"frozen/{split}"
        )
        t = time.time()
        result = finetune(data, cfg, work / f"encoder-{split}", run_name=f"bench-{split}-{int(t)}")
        seconds = time.time() - t
        table = embed_catalog(
            data.item_ids, data.item_text, str(result.encoder_dir), cfg.encoder.max_length, cfg.embed
        )
        after = text_metrics(data, vectors_of(table), f"finetuned/{split}")
        report[split] = {
            "frozen": before,
            "finetuned": after,
            "finetune_seconds": round(seconds, 1),
            "finetune_metrics": result.metrics,
        }
    cold_ratio = (
        report["cold"]["finetuned"]["test"]["cold_recall@20"]
        / report["cold"]["frozen"]["test"]["cold_recall@20"]
    )
    tail_ratio = (
        report["warm"]["finetuned"]["test"]["tail_recall@20"]
        / report["warm"]["frozen"]["test"]["tail_recall@20"]
    )
    report["ratios"] = {
        "cold_recall@20 (cold split)": round(cold_ratio, 3),
        "tail_recall@20 (warm split)": round(tail_ratio, 3),
    }
    return report


def finetune_speed(data: SplitData, cfg: TrainConfig, work: Path, steps: int, threads: int = 2) -> dict:
    """Samples/s of Ray Train + DeepSpeed (1 worker, ``threads`` CPUs) against ``plain_finetune``."""
    micro = cfg.finetune.micro_batch_size
    pairs_cfg = cfg.model_copy(deep=True)
    pairs_cfg.finetune.pairs_per_epoch = steps * micro
    pairs_cfg.resources.num_workers = 1
    pairs_cfg.resources.cpus_per_worker = float(threads)
    pairs_cfg.finetune.checkpoint_every = 10**6
    pairs, _, _ = build_pairs(data, pairs_cfg)
    _, plain_sps = plain_finetune(pairs, pairs_cfg, threads=threads, max_steps=steps)
    ray_result = finetune(data, pairs_cfg, work / "speed-encoder", run_name=f"bench-speed-{int(time.time())}")
    ray_sps = ray_result.metrics["samples_per_s"]
    return {
        "ray_train_deepspeed": round(ray_sps, 2),
        "plain_torch": round(plain_sps, 2),
        "ratio": round(ray_sps / plain_sps, 3),
        "steps": steps,
        "micro_batch": micro,
        "threads": threads,
    }


def embed_speed(data: SplitData, cfg: TrainConfig, threads: int = 2) -> dict:
    """Items/s of ``embed_catalog`` (Ray Data, the config's actors sharing ``threads`` CPUs; actor start-up
    and encoder loading included) against a plain loop on ``threads`` threads over the same texts."""
    import torch

    texts = list(data.item_text)
    torch.set_num_threads(threads)
    t = time.perf_counter()
    enc, tok = load_encoder(cfg.encoder.name), load_tokenizer(cfg.encoder.name)
    embed_texts(enc, tok, texts, cfg.encoder.max_length, cfg.embed.batch_size)
    plain_s = time.perf_counter() - t
    actors = max(1, min(cfg.embed.actors, threads))
    embed_cfg = cfg.embed.model_copy(
        update={"actors": actors, "cpus_per_actor": cfg.embed.cpus_per_actor or float(threads // actors)}
    )
    t = time.perf_counter()
    embed_catalog(data.item_ids, data.item_text, cfg.encoder.name, cfg.encoder.max_length, embed_cfg)
    ray_s = time.perf_counter() - t
    return {
        "ray_data": round(len(texts) / ray_s, 1),
        "plain_loop": round(len(texts) / plain_s, 1),
        "ratio": round(plain_s / ray_s, 3),
        "items": len(texts),
        "actors": actors,
        "threads": threads,
        "batch_size": cfg.embed.batch_size,
        "note": "both times include loading the encoder; Ray Data's also starting its actors",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=Path("train_configs/ml100k-cpu.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/language_model.json"))
    parser.add_argument(
        "--speed-steps", type=int, default=60, help="timed steps of each loop (30 left the ratio at ±5%%)"
    )
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--only", choices=("finetune", "embed"), help="one speed figure, no quality")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(TrainConfig, args.config, args.overrides)
    ray.init(num_cpus=2, include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg.resources.storage_path = str(work / "ray")
        report = {"config": str(args.config), "overrides": args.overrides}
        data = load_split_data(args.data, "warm")
        report["speed"] = {}
        if args.only in (None, "finetune"):
            report["speed"]["finetune_samples_per_s"] = finetune_speed(data, cfg, work, args.speed_steps)
        if args.only in (None, "embed"):
            report["speed"]["embed_items_per_s"] = embed_speed(data, cfg)
        print(json.dumps(report["speed"], indent=2), flush=True)
        if not args.skip_quality and args.only is None:
            report["quality"] = quality(args.data, cfg, work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report.get("quality", {}).get("ratios", {}), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
