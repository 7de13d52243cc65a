"""The hybrid ranker (second stage): the formula, per-user candidates, attention masking, history-driven
updates, the training loss, re-rank knobs and explanations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longtail.config import GraphConfig, RankerConfig
from longtail.data.encoded import Histories, Interactions
from longtail.model import hybrid
from longtail.model.attention import TargetAttention
from longtail.model.explain import explain
from longtail.model.factory import build_graph, build_ranker, graph_tensor
from longtail.model.objective import (
    LossSpec,
    NextItemObjective,
    next_item_examples,
    popularity_log_prior,
    sampled_softmax_loss,
    train_epoch,
)
from longtail.recommend.arrange import explore, tail_boost, zscore
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
    # and its gradients (training: shared candidates) are the formula's, for κ and λ alike
    model.train()
    got = torch.autograd.grad(model(history).assoc[0, 7], [model.assoc_scale, model.assoc_decay])
    lam = torch.nn.functional.softplus(model.assoc_decay)
    r = torch.exp(-lam * torch.tensor([2.0, 1.0, 0.0]))
    by_hand = torch.nn.functional.softplus(model.assoc_scale) * 10 * (r / r.sum() * dense[[0, 1, 2], 7]).sum()
    want = torch.autograd.grad(by_hand, [model.assoc_scale, model.assoc_decay])
    for g, w in zip(got, want, strict=True):
        assert torch.isclose(g, w, atol=1e-6) and w != 0


@pytest.mark.parametrize("adapter", [0, 4])
def test_scoring_tables_give_the_autograd_path_numbers_and_follow_weight_updates(setup, monkeypatch, adapter):
    data, vectors, graph = setup
    n = data.n_items
    model = build_ranker(
        RankerConfig(dim=8, heads=2, max_history=4, dropout=0.0, text_adapter=adapter),
        vectors,
        graph,
        data.train_counts(),
    ).eval()
    history = torch.tensor([[0, 1, 2, n], [5, n, n, n], [n, n, n, n]])  # the last user has no history
    candidates = torch.tensor([[3, 4, 7, n], [0, 9, 11, 2], [1, 2, 3, 4]])  # n pads a short row
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    for _ in range(2):  # the tables are rebuilt after a step changes the weights (validation mid-training)
        with torch.no_grad():
            fast = model(history, candidates)  # gathers rows of the per-item tables
        seen.append(fast.score)
        slow = model(history, candidates)  # projects candidates and history (autograd on)
        for name in ("score", "text", "cf", "assoc", "text_attention", "cf_attention"):
            assert torch.allclose(getattr(fast, name), getattr(slow, name).detach(), atol=1e-6), name
        optimizer.zero_grad()
        (
            -model(history, candidates).score[:, 0].sum()
        ).backward()  # the empty history must not spoil the step
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
    assert not torch.allclose(seen[0], seen[1])  # the step moved the scores, and the tables followed it
    if adapter:  # the adapter started at zero and the steps trained it: the tables read its weights too
        x = torch.as_tensor(vectors)
        assert not torch.allclose(model.project_text(x), model.text_proj(x), atol=1e-4)
    with torch.no_grad():
        tabled = model.eval()(history, candidates)
    monkeypatch.setattr(hybrid, "TABLES_MAX_BYTES", 0)  # a catalog too large for tables: the projecting path
    with torch.no_grad():
        projected = model(history, candidates)
    for name in ("score", "text", "cf", "assoc"):  # the same numbers either way
        assert torch.allclose(getattr(tabled, name), getattr(projected, name), atol=1e-6), name


def test_graph_reach_is_the_same_through_the_dense_buffer_and_the_sorted_path(setup):
    data, vectors, graph = setup
    n = data.n_items
    model = build_ranker(RankerConfig(dim=8, max_history=4), vectors, graph, data.train_counts()).eval()
    history = torch.tensor([[0, 1, 2, n], [5, 6, n, n]])
    mask = history < n
    everything = torch.arange(n + 1).expand(2, n + 1)  # c·L ≥ n + 1: the dense buffer
    few = torch.tensor([[1, 3, n], [4, 0, 7]])  # c·L < n + 1: sorted entries
    assert few.shape[1] * 4 < n + 1 <= everything.shape[1] * 4
    with torch.no_grad():
        dense, sparse_ = model.assoc(history, mask, everything), model.assoc(history, mask, few)
        shared = model.assoc(history, mask, torch.arange(n))  # every item shared by the batch
        # training's shared candidates: a subset, repeated items among them (targets of several users)
        subset = torch.tensor([7, 1, 3, 7, 0, 1])
        shared_subset = model.assoc(history, mask, subset)
    assert torch.allclose(shared, dense[:, :n], atol=1e-6)
    assert torch.equal(shared_subset, shared[:, subset])
    assert torch.allclose(torch.gather(dense, 1, few), sparse_, atol=1e-6)
    assert (dense[:, n] == 0).all() and (
        dense > 0
    ).any()  # padding reaches nothing; the history reaches items


def test_per_user_candidates_score_like_the_whole_catalog(setup):
    data, vectors, graph = setup
    model = build_ranker(
        RankerConfig(dim=8, max_history=4, heads=2, dropout=0.0, alpha=None, beta=None),
        vectors,
        graph,
        data.train_counts(),
    ).eval()
    n = data.n_items
    history = torch.tensor([[0, 1, 2, n], [5, 6, n, n]])
    full = model(history)  # shared candidates: every item
    cand = torch.tensor([[7, 3, 12, n], [0, 19, 5, 1]])  # one set per user, padded with n
    own = model(history, cand)  # through the edge lookup, no (b, n) tensor
    expected = torch.gather(full.score, 1, cand.clamp(max=n - 1))
    assert torch.allclose(own.score[:, :3], expected[:, :3], atol=1e-5)
    assert torch.allclose(own.score[1], expected[1], atol=1e-5)
    assert torch.allclose(
        own.assoc[:, :3], torch.gather(full.assoc, 1, cand.clamp(max=n - 1))[:, :3], atol=1e-6
    )
    assert own.score[0, 3] == 0  # padding scores 0 (the pipeline sets it to -inf)


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


@pytest.mark.parametrize("heads", [1, 2])
def test_shared_candidates_give_the_per_user_numbers_and_gradients(heads):
    # training scores candidates shared by the batch (candidate-major, one product per head); serving scores
    # one set per user: the same weights, scores and gradients, padding and empty histories included
    torch.manual_seed(0)
    attn = TargetAttention(dim=8, heads=heads, max_history=5)
    torch.nn.init.normal_(attn.recency)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    strength = torch.rand(3, 5) + 0.5
    inputs = [torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)]
    results = []
    for shared in (True, False):
        attn.zero_grad()
        x = [t.clone().requires_grad_() for t in inputs]
        cand = (x[0], x[1]) if shared else (x[0].expand(3, 4, 8), x[1].expand(3, 4, 8))
        score, w = attn(*cand, x[2], x[3], mask, strength)
        (score * torch.arange(1.0, 13.0).view(3, 4)).sum().backward()
        grads = [t.grad for t in x] + [p.grad.clone() for p in attn.parameters()]
        results.append([score.detach(), w.detach(), *grads])
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert (results[0][0][2] == 0).all() and not results[0][0].isnan().any()  # the empty history scores 0


def test_a_new_event_changes_the_next_ranking(setup):
    data, vectors, graph = setup
    model = build_ranker(RankerConfig(dim=8, dropout=0.0), vectors, graph, data.train_counts()).eval()
    n = data.n_items

    def scores(items: list[int]) -> torch.Tensor:
        padded = items + [n] * (model.max_history - len(items))
        with torch.no_grad():
            return model(torch.tensor([padded])).score[0]

    assert not torch.allclose(scores([0, 1]), scores([0, 1, 15]))
    assert torch.isfinite(scores([])).all() and torch.all(
        scores([]) == 0
    )  # a brand-new user: defined, no signal


def test_training_learns_the_groups(setup):
    """Both stages, trained together: each alone and the pipeline put the user's own group first."""
    from longtail.config import RetrievalConfig, RetrieverConfig
    from longtail.eval.evaluate import evaluate
    from longtail.model.factory import build_retriever
    from longtail.recommend.build import make_pipeline
    from longtail.recommend.recommender import PipelineRecommender, RetrieverRecommender

    data, vectors, graph = setup
    counts = data.train_counts()
    model = build_ranker(RankerConfig(dim=8, max_history=8, lr=1e-2), vectors, graph, counts)
    retriever = build_retriever(RetrieverConfig(dim=8, layers=1), 8, vectors, graph, counts)
    prefixes, targets = next_item_examples(data.histories(), 8, data.n_items)
    share = torch.as_tensor(np.bincount(targets, minlength=data.n_items) / len(targets)).float()
    prior = torch.as_tensor(popularity_log_prior(counts))
    objective = NextItemObjective({"retriever": retriever, "ranker": model}, LossSpec(), share, prior)
    opt = torch.optim.Adam(objective.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = [
        train_epoch(
            objective, torch.as_tensor(prefixes), torch.as_tensor(targets), opt, 32, 8, data.n_items, gen
        )
        for _ in range(10)
    ]
    assert losses[-1] < 0.8 * losses[0]
    retrieval = RetrievalConfig(candidates=5, tail_candidates=0, graph_candidates=0, new_candidates=0)
    pipe = make_pipeline(
        retriever=retriever,
        ranker=model,
        vectors=vectors,
        graph=graph,
        train_counts=counts,
        retrieval=retrieval,
    )
    assert evaluate(PipelineRecommender(pipe), data, "test").metrics["recall@10"] > 0.9
    assert evaluate(RetrieverRecommender(pipe), data, "test").metrics["recall@10"] > 0.9


def test_next_item_examples():
    inter = Interactions(np.array([0, 0, 0, 1]), np.array([4, 5, 6, 7]), np.arange(4.0))
    prefixes, targets = next_item_examples(Histories.from_interactions(inter, 2), 2, pad=9)
    assert targets.tolist() == [5, 6]
    assert prefixes.tolist() == [[4, 9], [4, 5]]


class TableScorer(torch.nn.Module):
    """Scores from a per-item table, the same for every user: lets a test move one candidate's logit."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, history, candidates):
        from types import SimpleNamespace

        return SimpleNamespace(score=self.table[candidates].expand(len(history), -1))


def test_loss_masks_seen_items_and_duplicate_targets():
    n = 8
    prior, share = torch.zeros(n), torch.full((n,), 1.0 / n)
    hist = torch.tensor([[0, 1], [2, 3]])
    targets, negatives = torch.tensor([4, 4]), torch.tensor([0, 5, 6])  # item 0: seen by row 0; 4 twice

    def loss_with(item: int, value: float) -> float:
        table = torch.zeros(n)
        table[item] = value
        return sampled_softmax_loss(TableScorer(table), hist, targets, negatives, share, prior, 0.0).item()

    base = loss_with(7, 0.0)  # item 7 is no candidate: the plain loss
    # row 0's seen item 0 is masked for row 0 but a real negative for row 1: the loss rises, by row 1 only
    masked = sampled_softmax_loss(
        TableScorer(torch.zeros(n)), hist[:1], targets[:1], negatives, share, prior, 0.0
    )
    lifted = sampled_softmax_loss(
        TableScorer(torch.eye(n)[0] * 5), hist[:1], targets[:1], negatives, share, prior, 0.0
    )
    assert lifted.item() == pytest.approx(masked.item())  # a seen item is no negative for its own row
    assert loss_with(0, 5.0) > base  # ... but it is one for row 1
    assert loss_with(5, 5.0) > base  # a real negative scoring higher costs
    # the other row's copy of target 4 is masked (else it would tie with the positive: loss ≥ log 2)
    assert loss_with(4, 30.0) < 1e-6


def test_rerank_knobs():
    scores = np.array([[3.0, 2.0, 1.0]])
    counts = np.array([100, 10, 1])
    assert np.argsort(-tail_boost(scores, counts, 0.0))[0].tolist() == [0, 1, 2]
    assert np.argsort(-tail_boost(scores, counts, 1.0))[0].tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        tail_boost(scores, counts, 1.5)
    tail = np.array([False, True, True])
    assert np.array_equal(explore(scores, tail, 0.0, np.random.default_rng(0)), scores)
    out = explore(np.repeat(scores, 50, axis=0), tail, 1.0, np.random.default_rng(0))
    assert np.allclose(out[:, 0], zscore(scores, axis=1)[0, 0])  # head items are never lifted
    assert out[:, 1:].std(0).min() > 0.5  # tail items get noise, so their order varies across users
    assert (np.argmax(out, axis=1) != 0).any()


def test_explanations_sum_to_the_score(setup):
    data, vectors, graph = setup
    model = build_ranker(
        RankerConfig(dim=8, dropout=0.0, alpha=None), vectors, graph, data.train_counts()
    ).eval()
    history = np.array([[0, 1, 2, data.n_items]])
    out = model(torch.as_tensor(history))
    picks = np.array([[7, 12]])
    expl = explain(out, history, picks, data.item_ids)
    per_user = model(
        torch.as_tensor(history), torch.tensor([[12, 7, 3]])
    )  # per-user candidates, gates (1, c)
    again = explain(per_user, history, np.array([[1, -1, 0]]), data.item_ids)[0]
    assert len(again) == 2 and again[0]["contributions"] == pytest.approx(
        expl[0][0]["contributions"], abs=1e-5
    )
    first = expl[0][0]
    assert sum(first["contributions"].values()) == pytest.approx(out.score[0, 7].item(), abs=1e-5)
    assert 0 < len(first["because"]) <= 3 and all(b["item_id"] in {"0", "1", "2"} for b in first["because"])


def test_an_untrained_text_adapter_leaves_the_projection_and_grown_keeps_it(setup):
    data, vectors, graph = setup
    config = RankerConfig(dim=8, max_history=4, dropout=0.0)
    plain = build_ranker(config, vectors, graph, data.train_counts()).eval()
    adapted = build_ranker(
        config.model_copy(update={"text_adapter": 16}), vectors, graph, data.train_counts()
    ).eval()
    history = torch.tensor([[0, 1, 2, data.n_items]])
    with torch.no_grad():  # same seed, adapter's output weights zero: the scores of the linear projection
        assert torch.allclose(plain(history).score, adapted(history).score, atol=1e-6)
        adapted.text_adapter.up.weight.normal_()
        moved = adapted(history).score
    assert not torch.allclose(plain(history).score.detach(), moved, atol=1e-4)
    assert set(adapted.state_dict()) - set(plain.state_dict()) == {
        "text_adapter.down.weight",
        "text_adapter.down.bias",
        "text_adapter.up.weight",
    }
    more = np.concatenate([vectors, vectors[:2]])
    grown_graph, _ = build_graph(GraphConfig(text_k=3, kg_k=0, cooc_k=3), more, None, data.histories())
    grown = adapted.grown(torch.as_tensor(more), graph_tensor(grown_graph))
    with torch.no_grad():
        assert torch.allclose(
            grown.project_text(torch.as_tensor(vectors)), adapted.project_text(torch.as_tensor(vectors))
        )


def test_id_dropout_acts_only_while_training(setup):
    data, vectors, graph = setup
    model = build_ranker(
        RankerConfig(dim=8, max_history=4, dropout=0.0, id_dropout=0.5), vectors, graph, data.train_counts()
    )
    history = torch.tensor([[0, 1, 2, 3]])
    model.eval()
    served = model(history).cf
    assert torch.equal(served, model(history).cf)  # scoring never drops
    model.train()
    torch.manual_seed(0)
    dropped = model(history).cf
    assert not torch.allclose(dropped, served) and (dropped == 0).sum() > (served == 0).sum()
