"""The serving ranker without Ray: histories, events, cold start, knobs, catalog growth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longtail.bundle import load_models, read_bundle
from longtail.recommend.pipeline import Batch, retrieve
from longtail.serve.knobs import ListKnobs
from longtail.serve.live import LivePipeline, Query
from longtail.store import StoredItem


@pytest.fixture
def ranker(tiny_bundle) -> LivePipeline:
    return LivePipeline(read_bundle(tiny_bundle))


def test_known_user_gets_hybrid_ranking_without_seen_items(ranker):
    history, known = ranker.history("u0", False, [])
    assert known and len(history) == 7  # train + valid of the bundle
    [ranked] = ranker.recommend([Query("u0", history, 5)])
    picks = [ranker.index[i["item_id"]] for i in ranked.items]
    assert ranked.strategy == "hybrid" and len(picks) == 5
    assert not set(picks) & set(history)
    scores = [i["score"] for i in ranked.items]
    assert scores == sorted(scores, reverse=True)


def test_scores_match_the_bundle_model(ranker, tiny_bundle):
    history, _ = ranker.history("u1", False, [])
    [ranked] = ranker.recommend([Query("u1", history, 3, exclude_seen=False)])
    _, model = load_models(read_bundle(tiny_bundle))
    with torch.no_grad():
        expected = model(torch.tensor([history[-model.max_history :]])).score[0].numpy()
    best = np.argsort(-expected, kind="stable")[:3]
    assert [i["item_id"] for i in ranked.items] == [ranker.item_ids[j] for j in best]
    assert ranked.items[0]["score"] == pytest.approx(float(expected[best[0]]), rel=1e-5)


def test_a_new_event_changes_the_next_ranking(ranker):
    base, _ = ranker.history("u0", False, [])
    other_group = [str(i) for i in range(10, 20)]
    history, _ = ranker.history("u0", False, other_group * 3)
    before = ranker.recommend([Query("u0", base, 5, exclude_seen=False)])[0].items
    after = ranker.recommend([Query("u0", history, 5, exclude_seen=False)])[0].items
    assert [i["item_id"] for i in before] != [i["item_id"] for i in after]


def test_unknown_and_erased_users_get_cold_start_with_tail_exploration(ranker):
    history, known = ranker.history("stranger", False, [])
    assert history == [] and not known
    ranker.configure(ListKnobs(cold_start_tail_share=0.4))
    [ranked] = ranker.recommend([Query("stranger", history, 10)])
    reasons = [i["reason"] for i in ranked.items]
    assert ranked.strategy == "cold_start" and len(ranked.items) == 10
    assert reasons.count("explore") == 4 and all(i["tail"] for i in ranked.items if i["reason"] == "explore")
    assert len({i["item_id"] for i in ranked.items}) == 10
    erased, known = ranker.history("u0", True, [])
    assert erased == [] and not known


def test_alpha_knob_changes_scores_and_none_restores_training(ranker):
    history, _ = ranker.history("u2", False, [])
    first = ranker.recommend([Query("u2", history, 20, exclude_seen=False)])[0].items
    ranker.configure(ListKnobs(alpha=0.0))
    cf_only = ranker.recommend([Query("u2", history, 20, exclude_seen=False)])[0].items
    ranker.configure(ListKnobs())
    again = ranker.recommend([Query("u2", history, 20, exclude_seen=False)])[0].items
    assert [i["score"] for i in cf_only] != [i["score"] for i in first]
    assert again == first


def test_tail_boost_one_ranks_by_rarity(ranker):
    history, _ = ranker.history("u3", False, [])
    [ranked] = ranker.recommend([Query("u3", history, 5, exclude_seen=False, tail_boost=1.0)])
    counts = [ranker.counts[ranker.index[i["item_id"]]] for i in ranked.items]
    assert counts == sorted(counts) and counts[0] == ranker.counts.min()


@pytest.mark.parametrize("adjustment", [None, 0.8])
def test_explanations_sum_to_the_score(ranker, adjustment):
    ranker.configure(ListKnobs(popularity_adjustment=adjustment))
    history, _ = ranker.history("u4", False, [])
    [ranked] = ranker.recommend([Query("u4", history, 3, explain=True)])
    for item in ranked.items:
        parts = item["explanation"]["contributions"]
        assert ("popularity" in parts) == (adjustment is not None)  # the tiny bundle's own γ is 0
        assert sum(parts.values()) == pytest.approx(item["score"], abs=1e-4)
        assert {b["item_id"] for b in item["explanation"]["because"]} <= {ranker.item_ids[h] for h in history}


def test_popularity_adjustment_knob_lowers_popular_items_and_none_restores_the_bundles(ranker):
    history, _ = ranker.history("u2", False, [])
    first = ranker.recommend([Query("u2", history, 5)])[0].items
    ranker.configure(ListKnobs(popularity_adjustment=50.0))
    rare = ranker.recommend([Query("u2", history, 5)])[0].items
    counts = [[ranker.counts[ranker.index[i["item_id"]]] for i in items] for items in (first, rare)]
    assert sum(counts[1]) < sum(counts[0]) and counts[1] == sorted(counts[1])  # γ huge: rarest first
    ranker.configure(ListKnobs())
    assert ranker.recommend([Query("u2", history, 5)])[0].items == first


def test_trend_boost_knob_lifts_lately_popular_items_and_none_restores_the_bundles(ranker):
    recent = ranker.pipeline.recent_counts
    assert recent is not None and recent.sum() > 0  # the bundle carries the newest share of train's counts
    history, _ = ranker.history("u2", False, [])
    first = ranker.recommend([Query("u2", history, 5)])[0].items
    ranker.configure(ListKnobs(trend_boost=50.0))
    trending = ranker.recommend([Query("u2", history, 5)])[0].items
    lately = [[recent[ranker.index[i["item_id"]]] for i in items] for items in (first, trending)]
    assert sum(lately[1]) > sum(lately[0]) and lately[1] == sorted(
        lately[1], reverse=True
    )  # δ huge: trend first
    ranker.configure(ListKnobs())
    assert ranker.recommend([Query("u2", history, 5)])[0].items == first


def test_new_items_become_recommendable_with_graph_neighbours(ranker):
    n = ranker.n_items
    old_history, _ = ranker.history("u5", False, [])
    vector = ranker.vectors[3] + 0.01 * ranker.vectors[4]
    vector /= np.linalg.norm(vector)
    assert ranker.add_items([StoredItem(1, "new-1", "like item 3", {}, vector)]) == 1
    assert ranker.add_items([StoredItem(1, "new-1", "again", {}, vector)]) == 0  # already there
    assert ranker.n_items == n + 1 and ranker.last_item_seq == 1
    similar = [i["item_id"] for i in ranker.similar("new-1", 3)]
    assert "3" in similar
    assert "new-1" in [i["item_id"] for i in ranker.similar("3", 10)]
    after = ranker.recommend([Query("u5", old_history, n + 1, exclude_seen=False)])[0].items
    assert "new-1" in [i["item_id"] for i in after]
    # the retriever's index holds it, and with a tiny MIPS budget the new-item channel still brings it in
    assert ranker.pipeline.index.n_items == n + 1
    ranker.configure(ListKnobs(candidates=1))
    near = [i for i, _ in sorted(enumerate(ranker.vectors[:n] @ vector), key=lambda p: -p[1])[:3]]
    candidates = retrieve(ranker.pipeline, Batch.of(_histories([near])), k=1)
    assert ranker.index["new-1"] in candidates[0]
    ranker.configure(ListKnobs())
    # an event on the new item moves its text and graph neighbour up
    scores = {i["item_id"]: i["score"] for i in after}
    history, _ = ranker.history("u5", False, ["new-1"])
    moved = {
        i["item_id"]: i["score"]
        for i in ranker.recommend([Query("u5", history, n + 1, exclude_seen=False)])[0].items
    }
    assert moved["3"] > scores["3"]


def _histories(rows: list[list[int]]):
    from longtail.data.encoded import Histories

    return Histories(
        np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64),
        np.asarray([i for r in rows for i in r], dtype=np.int64),
    )


def test_extend_catalog_keeps_old_scores_when_graph_is_unchanged(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    _, model = load_models(bundle)
    n = model.n_items
    coo = bundle.graph.tocoo()
    graph = torch.sparse_coo_tensor(
        torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64),
        torch.as_tensor(coo.data),
        (n + 2, n + 2),
    ).coalesce()
    vectors = torch.cat([model.text_vectors, torch.randn(2, model.text_vectors.shape[1])])
    grown = model.grown(vectors, graph).eval()
    history = torch.tensor([[0, 1, 2] + [n] * (model.max_history - 3)])
    grown_history = torch.where(history == n, n + 2, history)
    with torch.no_grad():
        old, new = model(history).score, grown(grown_history).score
    assert new.shape == (1, n + 2)
    assert torch.allclose(old, new[:, :n], atol=1e-5)
    assert torch.all(grown.item_emb.weight[n : n + 2] == 0)


def test_coverage_counts_distinct_items_in_the_window(ranker):
    ranker.configure(ListKnobs(coverage_window=2))
    served = []
    for user in ("u0", "u1", "u2"):
        history, strengths, _ = ranker.weighted_history(user, False, [])
        (ranked,) = ranker.recommend([Query(user, history, 3, strengths=strengths)])
        served.append({item["item_id"] for item in ranked.items})
        window = served[-2:]  # the last two lists only
        assert ranker.coverage == pytest.approx(len(set().union(*window)) / ranker.n_items)


def test_shelves_knobs_reserve_tail_and_new_slots_and_spread_exposure(ranker):
    history, _ = ranker.history("u6", False, [])
    far = -ranker.vectors[history[-1]]  # unlike the user's items: the model alone would not pick it
    ranker.add_items([StoredItem(1, "new-2", "unlike anything", {}, far / np.linalg.norm(far))])
    plain = [i["item_id"] for i in ranker.recommend([Query("u6", history, 6)])[0].items]
    ranker.configure(ListKnobs(tail_share=0.5, new_share=0.2))  # of 6 slots: 2 best, 3 tail, 1 new
    shelved = ranker.recommend([Query("u6", history, 6)])[0].items
    assert [i["item_id"] for i in shelved[:2]] == plain[:2]  # the relevance block is the model's
    assert all(i["tail"] for i in shelved[2:])
    assert "new-2" not in plain and shelved[-1]["item_id"] == "new-2"
    ranker.configure(ListKnobs(tail_share=0.5, exposure_penalty=50.0))
    first, second = (ranker.recommend([Query("u6", history, 6)])[0].items for _ in range(2))
    assert [i["item_id"] for i in second[:3]] == [i["item_id"] for i in first[:3]]
    assert {i["item_id"] for i in second[3:]}.isdisjoint({i["item_id"] for i in first[3:]})  # shown less wins
    ranker.configure(ListKnobs())  # None restores the bundle's shelves (none in the tiny bundle)
    assert not ranker.shelves.active


def test_shelf_knobs_over_one_are_refused():
    with pytest.raises(ValueError, match="≤ 1"):
        ListKnobs(tail_share=0.7, new_share=0.4)


def test_a_purchase_moves_the_next_list_more_than_a_view(ranker):
    """The same stored event as a view or as a purchase: the purchase changes the list and its scores more."""
    base_items = ["0", "1", "2", "3"]
    ranker.configure(ListKnobs(candidates="exact"))

    def ranked(types: list[str]) -> dict[str, float]:
        history, strengths, _ = ranker.weighted_history(
            "shopper", False, [*base_items, "15"], types, [None] * 5
        )
        [out] = ranker.recommend([Query("shopper", history, ranker.n_items, False, strengths=strengths)])
        return {i["item_id"]: i["score"] for i in out.items}

    before_history, before_s, _ = ranker.weighted_history(
        "shopper", False, base_items, ["view"] * 4, [None] * 4
    )
    [before] = ranker.recommend([Query("shopper", before_history, ranker.n_items, False, strengths=before_s)])
    base = {i["item_id"]: i["score"] for i in before.items}
    viewed, bought = ranked(["view"] * 5), ranked(["view"] * 4 + ["purchase"])
    moved = {
        name: sum(abs(got[i] - base[i]) for i in base)
        for name, got in (("view", viewed), ("purchase", bought))
    }
    assert moved["purchase"] > 1.5 * moved["view"] > 0
    top = {
        name: [i for i in sorted(got, key=got.get, reverse=True)][:5]
        for name, got in (("view", viewed), ("purchase", bought))
    }
    group_b = {str(i) for i in range(10, 20)}
    assert len(group_b & set(top["purchase"])) >= len(
        group_b & set(top["view"])
    )  # the bought item's side gains
