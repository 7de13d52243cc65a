"""Runs inside the RecBole environment: RecBole's SASRec on longtail's split files and metric code.

    .venv-recbole/bin/python -m benchmarks.peers.sasrec_runner --data DIR --split warm --out sasrec.json

RecBole supplies the model (`recbole.model.sequential_recommender.SASRec`, its default hyper-parameters
from `SASRec.yaml`, its loss); longtail supplies the split (`load_split_data`) and the evaluation
(`evaluate`, full ranking). Training examples are RecBole's sequential augmentation of each user's train
history (every prefix of at most MAX_ITEM_LIST_LENGTH items predicts the next item); valid ndcg@10 picks
the epoch and the grid point; at test time the model reads train+valid history. ``--users N`` trains on
a seeded sample of N users' prefixes and scores those users only (``users.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml
from recbole.model.sequential_recommender.sasrec import SASRec

from benchmarks.peers.users import restricted, sample_users
from longtail.data.encoded import Histories, SplitData, load_split_data
from longtail.eval.evaluate import evaluate
from longtail.model.base import ScoringRecommender

MAX_LEN = 50  # RecBole's MAX_ITEM_LIST_LENGTH default
DROPOUTS = (0.2, 0.5)  # the grid: hidden and attention dropout (RecBole's default is 0.5)
FIELDS = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "LIST_SUFFIX": "_list",
    "NEG_PREFIX": "neg_",
    "ITEM_LIST_LENGTH_FIELD": "item_length",
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "device": "cpu",
}
SEQ, SEQ_LEN, POS = "item_id_list", "item_length", "item_id"
FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class Catalog:
    """What RecBole's model asks of its dataset: the number of ids of a field (0 is padding)."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items + 1


def recbole_defaults() -> dict:
    """SASRec.yaml as shipped in the installed RecBole."""
    text = resources.files("recbole").joinpath("properties/model/SASRec.yaml").read_text()
    values = yaml.safe_load(text)
    # YAML 1.1 reads "1e-12" as a string; RecBole's own loader adds a float resolver for it
    return {k: float(v) if isinstance(v, str) and FLOAT.fullmatch(v) else v for k, v in values.items()}


def sequences(histories: Histories, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """RecBole's input: the last MAX_LEN items (ids + 1), left-aligned, zero padded; and the lengths."""
    items, mask = histories.rows(users).padded(MAX_LEN)  # (b, L) with -1 padding
    seq = np.where(mask, items + 1, 0)
    return torch.from_numpy(seq), torch.from_numpy(np.maximum(mask.sum(1), 1))


def augmented(histories: Histories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prefix, next item) of every user's history: seq (n, L), length (n,), target (n,)."""
    seqs, lens, targets = [], [], []
    for u in range(histories.n_users):
        h = histories.of(u) + 1
        for t in range(1, len(h)):
            prefix = h[max(0, t - MAX_LEN) : t]
            row = np.zeros(MAX_LEN, dtype=np.int64)
            row[: len(prefix)] = prefix
            seqs.append(row)
            lens.append(len(prefix))
            targets.append(h[t])
    return np.stack(seqs), np.asarray(lens), np.asarray(targets)


class RecBoleSASRec(ScoringRecommender):
    """longtail's Recommender protocol around a RecBole SASRec module."""

    def __init__(self, model: SASRec, name: str = "sasrec (recbole)") -> None:
        self.model, self.name = model, name

    def fit(self, data: SplitData) -> None:
        """Trained outside (``train``); nothing to do here."""

    @torch.no_grad()
    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        self.model.eval()
        seq, lengths = sequences(histories, np.arange(histories.n_users))
        scores = self.model.full_sort_predict({SEQ: seq, SEQ_LEN: lengths})  # (b, n_items + 1)
        return scores[:, 1:].numpy().astype(np.float32)


def train(
    data: SplitData,
    params: dict,
    max_epochs: int,
    patience: int,
    seed: int,
    per_epoch: int,
    among: np.ndarray | None = None,
) -> tuple[SASRec, dict]:
    """Adam on RecBole's CE loss, ``per_epoch`` sampled (prefix, next item) examples per epoch (a full pass
    over ML-100K's 80k prefixes takes ~3.5 min on 2 cores); the epoch with the best valid ndcg@10 is kept.
    ``among``: train on these users' prefixes only and score them only."""
    torch.manual_seed(seed)
    config = {**recbole_defaults(), **FIELDS, **params}
    model = SASRec(config, Catalog(data.n_items))
    optim = torch.optim.Adam(model.parameters(), lr=params.get("learning_rate", 1e-3))
    seqs, lens, targets = augmented(
        (data if among is None else restricted(data, among)).histories(("train",))
    )
    rng = np.random.default_rng(seed)
    best, best_state, best_epoch, curve = -1.0, None, 0, []
    for epoch in range(1, max_epochs + 1):
        model.train()
        order, total, t0 = rng.permutation(len(targets))[:per_epoch], 0.0, time.time()
        for start in range(0, len(order), 2048):  # RecBole's train_batch_size
            idx = order[start : start + 2048]
            batch = {
                SEQ: torch.from_numpy(seqs[idx]),
                SEQ_LEN: torch.from_numpy(lens[idx]),
                POS: torch.from_numpy(targets[idx]),
            }
            loss = model.calculate_loss(batch)
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(idx)
        ndcg = evaluate(RecBoleSASRec(model), data, "valid", among=among).metrics["ndcg@10"]
        curve.append({"epoch": epoch, "loss": round(total / len(order), 4), "valid_ndcg@10": round(ndcg, 4)})
        print(
            f"[sasrec] {params} epoch {epoch}: loss {total / len(order):.4f}, valid ndcg@10 {ndcg:.4f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
        if ndcg > best:
            best, best_epoch = ndcg, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return model, {
        "params": params,
        "best_epoch": best_epoch,
        "valid_ndcg@10": round(best, 4),
        "curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="warm")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-epochs", type=int, default=400, help="a cap; valid ndcg@10 decides when to stop")
    ap.add_argument("--patience", type=int, default=6, help="epochs without a valid gain before stopping")
    ap.add_argument("--dropouts", default=",".join(map(str, DROPOUTS)), help="comma-separated grid")
    ap.add_argument("--examples-per-epoch", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=None, help="train on a seeded sample of N users, score them")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_split_data(args.data, args.split)
    grid = [
        {"hidden_dropout_prob": float(d), "attn_dropout_prob": float(d)} for d in args.dropouts.split(",")
    ]
    among = None if args.users is None else sample_users(data, args.users)
    runs = [
        train(data, p, args.max_epochs, args.patience, args.seed, args.examples_per_epoch, among)
        for p in grid
    ]
    model, chosen = max(runs, key=lambda run: run[1]["valid_ndcg@10"])
    rec = RecBoleSASRec(model)
    result = {
        "grid": [info for _, info in runs],
        "chosen": chosen["params"],
        "users": None if among is None else len(among),
        "valid": evaluate(rec, data, "valid", among=among).to_json(),
        "test": evaluate(rec, data, "test", among=among).to_json(),
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"[sasrec] chosen {chosen['params']} (epoch {chosen['best_epoch']}); wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
