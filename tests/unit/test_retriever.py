"""The factorized retriever: ⟨q_u, v_i⟩ is the seed formula, term by term; the towers' masking and growth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longtail.config import GraphConfig, RetrieverConfig
from longtail.model.factory import build_graph, build_retriever
from tests.conftest import clustered_split


@pytest.fixture
def setup():
    data = clustered_split()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph, _ = build_graph(GraphConfig(text_k=3, kg_k=0, cooc_k=3), vectors, None, data.histories())
    counts = data.train_counts().copy()
    counts[[3, 11]] = 0  # two items nobody touched
    model = build_retriever(RetrieverConfig(dim=8, heads=2, layers=2, dropout=0.0), 4, vectors, graph, counts)
    with torch.no_grad():  # learned-looking gates: α falls with popularity, β rises
        model.alpha.bias.fill_(0.3), model.alpha.slope.fill_(1.0), model.beta.slope.fill_(0.7)
    return data, vectors, graph, counts, model.eval()


def test_factorized_score_equals_the_formula_term_by_term(setup):
    data, vectors, graph, counts, model = setup
    n = data.n_items
    history = torch.tensor([[0, 1, 2, n], [5, n, n, n]])
    with torch.no_grad():
        out = model(history)  # (2, n) and its terms
        q, v = model.user_vectors(history), model.item_vectors()  # (2, 3·dim), (n, 3·dim)
        p_u, r_u, c_u = model.user_parts(history)
    # the factorized form is the formula: ⟨q_u, v_i⟩ = α(1−β)·text + αβ·assoc + (1−α)·cf
    a, b = out.alpha, out.beta
    assert torch.allclose(q @ v.T, a * (1 - b) * out.text + a * b * out.assoc + (1 - a) * out.cf, atol=1e-5)
    assert torch.allclose(out.score, q @ v.T, atol=1e-5)
    # each term by hand
    t = torch.as_tensor(vectors) @ model.text_proj.weight.T  # (n, dim) t_i = W_t x_i, no bias
    e = model.item_emb.weight[:n] * torch.as_tensor(counts > 0)[:, None]  # untouched items: no ID vector
    assert torch.allclose(out.text, p_u @ t.T, atol=1e-5)
    assert torch.allclose(out.cf, c_u @ e.T, atol=1e-5) and torch.all(out.cf[:, [3, 11]] == 0)
    lam = torch.nn.functional.softplus(model.assoc_decay)
    rho = torch.exp(-lam * torch.tensor([2.0, 1.0, 0.0]))
    rho = rho / rho.sum()
    neighbours = torch.as_tensor(graph.toarray()) @ torch.as_tensor(vectors)  # (n, d_t) A·x
    reach = (rho[:, None] * neighbours[[0, 1, 2]]).sum(0) @ model.text_proj.weight.T  # W_t Σ ρ_l g_{h_l}
    assert torch.allclose(r_u[0], model.assoc_proj(reach), atol=1e-5)
    assert torch.allclose(out.assoc[0], r_u[0] @ t.T, atol=1e-5)
    # the gates are per item, on the item side: α falls as items get more popular
    order = np.argsort(counts, kind="stable")
    assert (out.alpha[order[1:]] <= out.alpha[order[:-1]] + 1e-6).all()


def test_read_out_block_computes_only_the_newest_position_and_matches_the_full_block(setup):
    data, _, _, _, model = setup
    block, n = model.blocks[-1], data.n_items
    x = torch.randn(3, 4, 8)
    history = torch.tensor([[0, 1, 2, n], [5, n, n, n], [3, 4, 6, 7]])
    mask = history < n
    blocked = torch.ones(4, 4, dtype=torch.bool).triu(1)[None] | ~mask[:, None, :]
    blocked[:, :, 0] = False
    blocked = blocked.repeat_interleave(model.heads, dim=0)
    newest = mask.sum(1) - 1
    with torch.no_grad():
        full = block(x, blocked)[torch.arange(3), newest]
        assert torch.allclose(block.at(x, blocked, newest), full, atol=1e-5)


def test_user_tower_ignores_padding_and_reads_order(setup):
    data, _, _, _, model = setup
    n = data.n_items
    with torch.no_grad():
        base = model.user_vectors(torch.tensor([[0, 1, 2, n]]))
        assert torch.allclose(base, model.user_vectors(torch.tensor([[0, 1, 2, n]])))
        assert not torch.allclose(
            base, model.user_vectors(torch.tensor([[2, 1, 0, n]])), atol=1e-4
        )  # order counts
        assert torch.all(
            model.user_vectors(torch.tensor([[n, n, n, n]])) == 0
        )  # empty history: no vector, no NaN
        assert torch.allclose(
            model.user_vectors(torch.tensor([[0, 1, 2]])), base[:, :], atol=1e-5
        )  # shorter pad


@pytest.mark.parametrize("compacted", [False, True])
def test_extend_keeps_old_items_and_users(setup, compacted):
    data, vectors, _, _, model = setup
    n = data.n_items
    history = torch.tensor([[0, 1, 2, n]])
    with torch.no_grad():
        old, old_user = model.item_vectors(), model.user_vectors(history)
    if compacted:  # scoring-only form: the same vectors without the raw neighbour text
        model.compact()
        assert model.neighbour_text.numel() == 0
        with torch.no_grad():
            assert torch.allclose(model.item_vectors(), old) and torch.allclose(
                model.user_vectors(history), old_user
            )
        with pytest.raises(RuntimeError, match="compacted"):
            model.user_vectors(history)  # with gradients on: training it would need the raw text
    grown_vectors = torch.cat([torch.as_tensor(vectors), torch.randn(2, vectors.shape[1])])
    new_hood = torch.randn(2, vectors.shape[1])
    grown = model.grown(grown_vectors, new_hood).eval()
    with torch.no_grad():
        new = grown.item_vectors()
        assert new.shape == (n + 2, old.shape[1]) and torch.allclose(new[:n], old, atol=1e-6)
        assert torch.all(new[n:, 2 * model.dim :] == 0)  # no ID part for new items
        assert torch.allclose(
            grown.user_vectors(torch.where(history == n, n + 2, history)), old_user, atol=1e-5
        )
        reach = grown.user_parts(torch.tensor([[n + 1, n + 2, n + 2, n + 2]]))[1]  # one new item (n + 2 pads)
        assert torch.allclose(reach[0], grown.assoc_proj(grown.text_proj(new_hood[1])), atol=1e-5)  # its A·x
