"""The hybrid ranker: the formula, attention masking, history-driven updates, re-rank and explanations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longtail.config import GraphConfig, RankerConfig
from longtail.data.encoded import Histories, Interactions
from longtail.model.attention import TargetAttention
from longtail.model.explain import explain
from longtail.model.factory import build_graph, build_ranker
from longtail.model.ranker_train import (
    HybridRecommender,
    next_item_examples,
    popularity_log_prior,
    sampled_softmax_loss,
    train_epoch,
)
from longtail.model.rerank import explore, tail_boost
from tests.conftest import clustered_split


@pytest.fixture
def setup():
    data = clustered_split()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph, _ = build_graph(GraphConfig(text_k=3, kg_k=0, cooc_k=3), vectors, None, data.histories())
    return data, vectors, graph


def test_score_equals_the_formula(setup):
    data, vectors, graph = setup
    model = build_ranker(
        RankerConfig(dim=8, max_history=4, dropout=0.0), vectors, graph, data.train_counts()
    ).eval()
    history = torch.tensor([[0, 1, 2, data.n_items], [5, data.n_items, data.n_items, data.n_items]])
    out = model(history)
    a, b = out.alpha, out.beta
    expected = a * (1 - b) * out.text + a * b * out.assoc + (1 - a) * out.cf
    assert torch.allclose(out.score, expected, atol=1e-6)
    # s_text by hand for user 0, candidate 7: Σ_l w_l ⟨t_7, t_{h_l}⟩ over the real history items
    t = model.item_text(torch.arange(data.n_items))
    w = out.text_attention[0, 7, :3]
    assert torch.isclose(out.text[0, 7], (w * (t[[0, 1, 2]] @ t[7])).sum(), atol=1e-5)
    # s_assoc by hand: κ Σ_l r_l A[h_l, c], r ∝ exp(−λ·position from newest)
    lam = torch.nn.functional.softplus(model.assoc_decay)
    r = torch.exp(-lam * torch.tensor([2.0, 1.0, 0.0]))
    r = r / r.sum()
    dense = torch.as_tensor(graph.toarray())
    kappa = torch.nn.functional.softplus(model.assoc_scale) * 10
    assert torch.isclose(out.assoc[0, 7], kappa * (r * dense[[0, 1, 2], 7]).sum(), atol=1e-5)


def test_fixed_alpha_beta_and_gate_direction(setup):
    data, vectors, graph = setup
    fixed = build_ranker(RankerConfig(dim=8, alpha=0.3, beta=0.6), vectors, graph, data.train_counts())
    out = fixed(torch.tensor([[0, 1]]))
    assert torch.allclose(out.alpha, torch.full_like(out.alpha, 0.3)) and torch.allclose(
        out.beta, torch.full_like(out.beta, 0.6)
    )
    gated = build_ranker(
        RankerConfig(dim=8, alpha=None, beta=None), vectors, graph, np.arange(data.n_items) * 10
    )
    alpha = gated(torch.tensor([[0]])).alpha
    assert (alpha[1:] < alpha[:-1]).all()  # α falls as items get more popular


def test_attention_masks_padding():
    attn = TargetAttention(dim=4, heads=2, max_history=3)
    cand = torch.randn(5, 4)
    hist = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    w = attn.weights(cand, hist, mask)
    assert torch.all(w[0, :, 2] == 0) and torch.allclose(w[0].sum(-1), torch.ones(5))
    assert torch.all(w[1] == 0)  # an empty history gives no weight (and no NaN)
    changed = hist.clone()
    changed[0, 2] = 100.0  # whatever sits in a padded slot cannot change the result
    assert torch.allclose(attn.weights(cand, changed, mask)[0], w[0])


def test_a_new_event_changes_the_next_ranking(setup):
    data, vectors, graph = setup
    model = build_ranker(RankerConfig(dim=8, dropout=0.0), vectors, graph, data.train_counts())
    rec = HybridRecommender(model)
    inter = Interactions(np.array([0, 0]), np.array([0, 1]), np.array([1.0, 2.0]))
    before = rec.score(np.array([0]), Histories.from_interactions(inter, 1))
    inter2 = Interactions(np.array([0, 0, 0]), np.array([0, 1, 15]), np.array([1.0, 2.0, 3.0]))
    after = rec.score(np.array([0]), Histories.from_interactions(inter2, 1))
    assert not np.allclose(before, after)
    empty = rec.score(np.array([0]), Histories(np.array([0, 0]), np.zeros(0, np.int64)))
    assert np.isfinite(empty).all()  # a brand-new user still gets scores


def test_training_learns_the_groups(setup):
    data, vectors, graph = setup
    model = build_ranker(RankerConfig(dim=8, max_history=8, lr=1e-2), vectors, graph, data.train_counts())
    prefixes, targets = next_item_examples(data.histories(), 8, data.n_items)
    share = torch.as_tensor(np.bincount(targets, minlength=data.n_items) / len(targets)).float()
    prior = torch.as_tensor(popularity_log_prior(data.train_counts()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = [train_epoch(model, torch.as_tensor(prefixes), torch.as_tensor(targets), opt, 32, 8, share, prior, 0.0, gen)
              for _ in range(8)]  # fmt: skip
    assert losses[-1] < losses[0]
    from longtail.eval.evaluate import evaluate

    assert evaluate(HybridRecommender(model), data, "test").metrics["recall@10"] > 0.9


def test_next_item_examples():
    inter = Interactions(np.array([0, 0, 0, 1]), np.array([4, 5, 6, 7]), np.arange(4.0))
    prefixes, targets = next_item_examples(Histories.from_interactions(inter, 2), 2, pad=9)
    assert targets.tolist() == [5, 6]
    assert prefixes.tolist() == [[4, 9], [4, 5]]


def test_loss_masks_seen_items_and_duplicate_targets(setup):
    data, vectors, graph = setup
    model = build_ranker(RankerConfig(dim=8, dropout=0.0), vectors, graph, data.train_counts())
    prior = torch.as_tensor(popularity_log_prior(data.train_counts()))
    share = torch.full((data.n_items,), 1.0 / data.n_items)
    hist = torch.tensor([[0, 1], [2, 3]])
    loss = sampled_softmax_loss(model, hist, torch.tensor([4, 4]), torch.tensor([0, 5]), share, prior, 0.5)
    assert torch.isfinite(loss)


def test_rerank_knobs():
    scores = np.array([[3.0, 2.0, 1.0]])
    counts = np.array([100, 10, 1])
    assert np.argsort(-tail_boost(scores, counts, 0.0))[0].tolist() == [0, 1, 2]
    assert np.argsort(-tail_boost(scores, counts, 1.0))[0].tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        tail_boost(scores, counts, 1.5)
    out = explore(scores, np.array([False, True, True]), 0.5, np.random.default_rng(0))
    assert out.shape == scores.shape


def test_explanations_sum_to_the_score(setup):
    data, vectors, graph = setup
    model = build_ranker(RankerConfig(dim=8, dropout=0.0), vectors, graph, data.train_counts()).eval()
    history = np.array([[0, 1, 2, data.n_items]])
    out = model(torch.as_tensor(history))
    picks = np.array([[7, 12]])
    expl = explain(out, history, picks, data.item_ids)
    first = expl[0][0]
    assert sum(first["contributions"].values()) == pytest.approx(out.score[0, 7].item(), abs=1e-5)
    assert 0 < len(first["because"]) <= 3 and all(b["item_id"] in {"0", "1", "2"} for b in first["because"])
