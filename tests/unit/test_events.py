"""Event types and weights count: strengths from the config, carried through the data, the models and the
loss."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from longtail.config import ConfigError, EventsConfig, GraphConfig, RankerConfig, TrainConfig, load_config
from longtail.data.encoded import Histories, Interactions, encode_split
from longtail.data.events import event_strengths
from longtail.data.splits import SplitTables
from longtail.model.attention import TargetAttention
from longtail.model.factory import build_graph, build_ranker
from longtail.model.objective import next_item_examples, next_item_strengths, sampled_softmax_loss
from longtail.train.fit import example_strengths
from tests.conftest import clustered_split


def test_strength_is_type_weight_times_own_weight_clipped():
    cfg = EventsConfig(use_weight=True)
    got = event_strengths(
        ["view", "purchase", "interaction", "cart", "purchase", "view"],
        [None, 1.0, 4.0, 0.5, 100.0, 0.0],
        cfg,
    )
    assert got.tolist() == pytest.approx([0.5, 3.0, 4.0, 1.0, 10.0, 0.1])
    plain = event_strengths(
        ["view", "purchase", "interaction"], [2.0, 2.0, 5.0], EventsConfig()
    )  # the default
    assert plain.tolist() == pytest.approx([0.5, 3.0, 1.0])


def test_events_config_rejects_bad_weights_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="type_weights must be > 0"):
        EventsConfig(type_weights={"view": 0.0})
    path = tmp_path / "c.yaml"
    path.write_text("events:\n  type_weight: {view: 1}\n")
    with pytest.raises(ConfigError, match="type_weight"):
        load_config(TrainConfig, path, [])


def _tables(types: list[str], weights: list[float]) -> tuple[SplitTables, pa.Table]:
    n = len(types)
    table = pa.table(
        {
            "user_id": ["u0"] * (n - 2) + ["u1"] * 2,
            "item_id": [str(i) for i in range(n)],
            "timestamp": np.arange(n, dtype=np.float64)[::-1].copy(),  # u0's rows newest first
            "weight": pa.array(weights, pa.float32()),
            "event_type": types,
        }
    )
    empty = table.slice(0, 0)
    items = pa.table({"item_id": [str(i) for i in range(n)], "text": [f"item {i}" for i in range(n)]})
    return SplitTables(table, empty, empty), items


def test_strengths_follow_the_time_order_and_vanish_when_uniform():
    tables, items = _tables(["view", "purchase", "cart", "view", "click"], [1.0] * 5)
    data = encode_split(tables, items, EventsConfig())
    # u0 owns items 0..2 with timestamps 4, 3, 2: oldest first is item 2 (cart), 1 (purchase), 0 (view)
    h = data.histories(("train",))
    assert h.of(0).tolist() == [2, 1, 0] and h.strengths[:3].tolist() == [2.0, 3.0, 0.5]
    assert h.rows(np.array([1])).strengths.tolist() == [1.0, 0.5]  # u1: item 4 (click), then 3 (view)
    assert h.padded_strengths(2).tolist() == [[3.0, 0.5], [1.0, 0.5]]
    assert encode_split(tables, items).train.strengths is None  # no events config: nothing computed
    same, items = _tables(["interaction"] * 5, [1.0] * 5)
    assert encode_split(same, items, EventsConfig()).train.strengths is None  # every event counts the same


def test_example_strengths_align_with_the_examples():
    inter = Interactions(
        np.array([0, 0, 0, 1, 1]),
        np.array([4, 5, 6, 7, 8]),
        np.arange(5.0),
        np.array([0.5, 3.0, 2.0, 1.0, 0.5], np.float32),
    )
    h = Histories.from_interactions(inter, 2)
    prefixes, targets = next_item_examples(h, 2, pad=9)
    prefix_s, target_s = next_item_strengths(h, 2)
    assert targets.tolist() == [5, 6, 8] and target_s.tolist() == [3.0, 2.0, 0.5]
    assert prefixes.tolist() == [[4, 9], [4, 5], [7, 9]] and prefix_s.tolist() == [
        [0.5, 1],
        [0.5, 3.0],
        [1.0, 1],
    ]
    strengths, weights = example_strengths(h, 2, EventsConfig())
    assert np.array_equal(strengths, prefix_s)
    assert weights.mean() == pytest.approx(1.0) and weights[0] / weights[2] == pytest.approx(6.0)
    assert example_strengths(h, 2, EventsConfig(in_loss=False, in_history=False)) == (None, None)


def test_a_strength_w_weighs_like_w_copies_in_the_attention():
    torch.manual_seed(0)
    attn = TargetAttention(8, 2, 6)
    items = torch.randn(3, 8)  # a, b, c
    cand = torch.randn(4, 8)
    once = items[[0, 1, 2]][None]  # (1, 3, 8): a, b, c with a of strength 3
    thrice = items[[0, 0, 0, 1, 2]][None]  # a three times, then b, c
    s_once, _ = attn(
        cand, cand, once, once, torch.ones(1, 3, dtype=torch.bool), torch.tensor([[3.0, 1.0, 1.0]])
    )
    s_copies, _ = attn(cand, cand, thrice, thrice, torch.ones(1, 5, dtype=torch.bool))
    assert torch.allclose(s_once, s_copies, atol=1e-5)  # recency bias is 0 at initialisation
    ones, _ = attn(cand, cand, once, once, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3))
    plain, _ = attn(cand, cand, once, once, torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(ones, plain) and not torch.allclose(ones, s_once)


def test_a_stronger_history_item_pulls_the_scores_towards_it():
    data = clustered_split()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph, _ = build_graph(GraphConfig(text_k=3, kg_k=0, cooc_k=0), vectors, None, data.histories())
    model = build_ranker(
        RankerConfig(dim=8, max_history=4, dropout=0.0), vectors, graph, data.train_counts()
    ).eval()
    history = torch.tensor([[0, 1, 2, 15]])  # three group-A items, then one group-B item
    base = model(history).score
    weak = model(history, strength=torch.tensor([[1.0, 1.0, 1.0, 0.5]])).score
    strong = model(history, strength=torch.tensor([[1.0, 1.0, 1.0, 3.0]])).score
    alone = model(torch.tensor([[15, 20, 20, 20]])).score  # item 15 alone (20 pads)
    # the purchase-strength item moves every score further from the base, towards item 15 alone
    assert (strong - base).abs().sum() > (weak - base).abs().sum()
    assert (strong - alone).abs().sum() < (base - alone).abs().sum() < (weak - alone).abs().sum()


class TableScorer(torch.nn.Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, history, candidates):
        from types import SimpleNamespace

        return SimpleNamespace(score=self.table[candidates].expand(len(history), -1))


def test_weighted_loss_teaches_strong_targets_more():
    """Two rows with the same history and different targets: the stronger target's score grows more."""
    history = torch.tensor([[0], [0]])
    target = torch.tensor([1, 2])
    negatives = torch.tensor([3, 4, 5])
    share = torch.full((6,), 1 / 6)
    prior = torch.zeros(6)

    def grown(weight: torch.Tensor | None) -> torch.Tensor:
        scorer = TableScorer(torch.zeros(6))
        loss = sampled_softmax_loss(scorer, history, target, negatives, share, prior, 0.0, 1.0, None, weight)
        loss.backward()
        return -scorer.table.grad  # the direction a gradient step moves each item's score

    plain = grown(None)
    assert torch.allclose(grown(torch.ones(2)), plain)
    step = grown(torch.tensor([3.0, 0.5]))  # row 0's target is a purchase, row 1's a view
    assert step[1] > step[2] and plain[1] == pytest.approx(plain[2].item())  # equal without weights
