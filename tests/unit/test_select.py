"""Choices on validation: the shelves' grid and rule, the popularity adjustment, and grid metrics equal to
plain evaluations."""

import dataclasses
import math

import numpy as np
import pytest
from pydantic import ValidationError

from longtail.bundle import read_bundle
from longtail.config import SelectConfig
from longtail.data.encoded import Histories
from longtail.eval.evaluate import evaluate
from longtail.recommend.build import load_pipeline, own_lists
from longtail.recommend.recommender import PipelineRecommender
from longtail.train.select import (
    ShelfPoint,
    choose,
    choose_fit_point,
    choose_tail_knn,
    grid,
    grid_metrics,
    sample_users,
    select_shelves,
    variant_metrics,
)
from tests.conftest import clustered_split


def test_grid_starts_with_the_own_lists_and_keeps_the_first_half_of_a_list_the_models():
    points = grid(
        SelectConfig(tail_shares=[0.0, 0.3, 0.4], new_shares=[0.0, 0.1, 0.2], exposure_penalties=[0.0, 1.0])
    )
    assert points[0] == ShelfPoint(0.0, 0.0, 0.0)
    assert len(points) == len(set(points))
    assert all(0 < p.tail_share + p.new_share <= 0.5 for p in points[1:])
    assert ShelfPoint(0.4, 0.2, 0.0) not in points and ShelfPoint(0.3, 0.2, 1.0) in points


def test_the_grid_orders_every_tail_shelf_with_the_chosen_knn_weight():
    select = SelectConfig(tail_shares=[0.0, 0.2], new_shares=[0.0, 0.1], exposure_penalties=[0.0])
    plain, knn = grid(select), grid(select, 0.5)
    assert all(p.tail_knn == 0 for p in plain) and len(knn) == len(plain) == 4
    assert all(p.tail_knn == (0.5 if p.tail_share > 0 else 0.0) for p in knn)


def test_the_knn_weight_is_the_one_whose_largest_tail_shelf_finds_the_most_tail(tiny_bundle):
    from longtail.model.graph import cosine_neighbours

    data = clustered_split()
    pipe = load_pipeline(read_bundle(tiny_bundle))
    select = SelectConfig(tail_shares=[0.0, 0.2, 0.5], tail_knn_weights=[0.5, 1.0])
    users = sample_users(data, "valid", None)
    assert choose_tail_knn(pipe, data, select, users) == {"chosen": 0.0, "rows": []}  # no item-kNN matrix
    near = cosine_neighbours(data.histories(("train",)), data.n_items, 5, targets=pipe.tail)
    pipe = dataclasses.replace(pipe, neighbours=near)
    got = choose_tail_knn(pipe, data, select, users)
    assert [(r["tail_share"], r["tail_knn"]) for r in got["rows"]] == [(0.5, 0.0), (0.5, 0.5), (0.5, 1.0)]
    expected = grid_metrics(pipe, data, [ShelfPoint(0.5, 0.0, 0.0, w) for w in (0.0, 0.5, 1.0)], users)
    tails = [m["tail_recall@20"] for m in expected]
    assert got["chosen"] == (0.0, 0.5, 1.0)[tails.index(max(tails))]
    assert [r["tail_recall@20"] for r in got["rows"]] == pytest.approx(tails, abs=1e-6)
    out = select_shelves(pipe, data, select)
    assert out["tail_knn"] == got
    assert all(r["tail_knn"] == (got["chosen"] if r["tail_share"] > 0 else 0.0) for r in out["grid"])


def test_rule_takes_the_most_tail_within_the_recall_budget():
    points = [
        ShelfPoint(0, 0, 0),
        ShelfPoint(0.1, 0, 0),
        ShelfPoint(0.3, 0, 0),
        ShelfPoint(0.2, 0, 1),
        ShelfPoint(0, 0.1, 0),
    ]
    m = [
        {"recall@20": 0.20, "tail_recall@20": 0.05, "coverage@20": 0.3, "cold_recall@20": 0.0},
        {"recall@20": 0.19, "tail_recall@20": 0.08, "coverage@20": 0.4, "cold_recall@20": 0.0},
        {
            "recall@20": 0.14,
            "tail_recall@20": 0.15,
            "coverage@20": 0.7,
            "cold_recall@20": 0.0,
        },  # costs 30% of recall
        {
            "recall@20": 0.17,
            "tail_recall@20": 0.08,
            "coverage@20": 0.6,
            "cold_recall@20": 0.0,
        },  # ties, more coverage
        {"recall@20": 0.20, "tail_recall@20": math.nan, "coverage@20": 0.9, "cold_recall@20": math.nan},
    ]
    assert choose(points, m, recall_budget=0.2) == 3
    assert choose(points, m, recall_budget=0.35) == 2
    assert choose(points, m, recall_budget=0.0) == 0  # nothing but the own lists keeps all the recall


def test_near_ties_on_tail_go_to_the_point_that_shows_never_touched_items():
    points = [
        ShelfPoint(0, 0, 0),
        ShelfPoint(0.4, 0, 0.5),
        ShelfPoint(0.4, 0.1, 0.5),
        ShelfPoint(0.3, 0.2, 0.5),
    ]
    m = [
        {"recall@20": 0.13, "tail_recall@20": 0.084, "coverage@20": 0.46, "cold_recall@20": 0.0},
        {"recall@20": 0.14, "tail_recall@20": 0.128, "coverage@20": 0.89, "cold_recall@20": 0.04},
        {
            "recall@20": 0.13,
            "tail_recall@20": 0.127,
            "coverage@20": 0.89,
            "cold_recall@20": 0.37,
        },  # within 2%
        {"recall@20": 0.13, "tail_recall@20": 0.119, "coverage@20": 0.85, "cold_recall@20": 0.41},
    ]  # 7% less tail
    assert choose(points, m, recall_budget=0.2) == 1  # no tolerance: the most tail
    assert choose(points, m, recall_budget=0.2, tail_tolerance=0.02) == 2


def test_coverage_floor_and_new_item_floor_apply_where_some_point_meets_them():
    points = [ShelfPoint(0, 0, 0), ShelfPoint(0.4, 0, 0), ShelfPoint(0.4, 0, 0.5), ShelfPoint(0.4, 0.1, 0.5)]
    m = [
        {"recall@20": 0.28, "tail_recall@20": 0.075, "coverage@20": 0.42, "cold_recall@20": 0.0},
        {"recall@20": 0.26, "tail_recall@20": 0.173, "coverage@20": 0.46, "cold_recall@20": 0.0},
        {"recall@20": 0.25, "tail_recall@20": 0.148, "coverage@20": 0.73, "cold_recall@20": 0.0},
        {"recall@20": 0.23, "tail_recall@20": 0.141, "coverage@20": 0.73, "cold_recall@20": 0.0},
    ]
    assert choose(points, m, 0.2) == 1
    assert choose(points, m, 0.2, min_coverage=0.6) == 2
    assert choose(points, m, 0.2, min_coverage=0.6, min_new_share=0.1) == 3
    assert choose(points, m, 0.2, min_coverage=0.99) == 1  # a floor no point meets is ignored
    assert choose(points, m, 0.1, min_new_share=0.1) == 1  # nor one no affordable point meets


@pytest.mark.parametrize("bad", [{"tail_shares": []}, {"new_shares": [0.6]}, {"exposure_penalties": [-1.0]}])
def test_bad_grids_are_refused(bad):
    with pytest.raises(ValidationError, match="select"):
        SelectConfig(**bad)


def test_grid_metrics_equal_plain_evaluations_of_each_point(tiny_bundle):
    pipe = load_pipeline(read_bundle(tiny_bundle)).with_knobs(tail_boost=0.3)  # score knobs stay on
    data = clustered_split()
    points = [ShelfPoint(0, 0, 0), ShelfPoint(0.5, 0, 0), ShelfPoint(0.3, 0.2, 1.0)]
    users = sample_users(data, "valid", None)
    got = grid_metrics(pipe, data, points, users)
    for point, metrics in zip(points, got, strict=True):
        shelved = pipe.with_knobs(shelves=point.shelves)
        assert metrics == pytest.approx(
            evaluate(PipelineRecommender(shelved), data, "valid").metrics, nan_ok=True
        )
    assert got[1]["ndcg@10"] == pytest.approx(got[0]["ndcg@10"])  # the first half of a list stays the model's
    assert got[1] != got[0]


def test_grid_metrics_with_a_knn_ordered_tail_shelf_equal_plain_evaluations(tiny_bundle):
    from longtail.model.graph import cosine_neighbours

    data = clustered_split()
    pipe = load_pipeline(read_bundle(tiny_bundle))
    near = cosine_neighbours(data.histories(("train",)), data.n_items, 5, targets=pipe.tail)
    pipe = dataclasses.replace(pipe, neighbours=near)
    points = [
        ShelfPoint(0, 0, 0),
        ShelfPoint(0.5, 0, 0),
        ShelfPoint(0.5, 0, 0, 1.0),
        ShelfPoint(0.3, 0.2, 1.0, 0.5),
    ]
    users = sample_users(data, "valid", None)
    got = grid_metrics(pipe, data, points, users)
    for point, metrics in zip(points, got, strict=True):
        shelved = pipe.with_knobs(shelves=point.shelves)
        assert metrics == pytest.approx(
            evaluate(PipelineRecommender(shelved), data, "valid").metrics, nan_ok=True
        )


def test_select_shelves_reports_the_grid_and_a_chosen_point_of_it(tiny_bundle):
    pipe = load_pipeline(read_bundle(tiny_bundle))
    out = select_shelves(
        pipe,
        clustered_split(),
        SelectConfig(tail_shares=[0.0, 0.2], new_shares=[0.0], exposure_penalties=[0.0]),
    )
    assert [(r["tail_share"], r["new_share"]) for r in out["grid"]] == [(0.0, 0.0), (0.2, 0.0)]
    assert out["chosen"] in [{k: r[k] for k in out["chosen"]} for r in out["grid"]]
    assert out["users"] == 60 and "recall@20" in out["rule"]


def test_the_fit_choice_keeps_the_tail_among_fits_tied_on_ndcg():
    rows = [
        {"id_dropout": 0.0, "ndcg@10": 0.0599, "tail_recall@20": 0.10, "coverage@20": 0.70},
        {"id_dropout": 0.3, "ndcg@10": 0.0590, "tail_recall@20": 0.12, "coverage@20": 0.80},
    ]
    assert choose_fit_point(rows, 0.02) == 1  # 1.5% less ndcg@10 buys 20% more tail: a tie, the tail wins
    assert choose_fit_point(rows, 0.01) == 0  # outside the tolerance accuracy decides
    dense = [
        {"id_dropout": 0.0, "ndcg@10": 0.1833, "tail_recall@20": 0.06, "coverage@20": 0.40},
        {"id_dropout": 0.3, "ndcg@10": 0.1611, "tail_recall@20": 0.04, "coverage@20": 0.39},
    ]
    assert choose_fit_point(dense, 0.02) == 0
    nan = [
        {"ndcg@10": 0.05, "tail_recall@20": None, "coverage@20": 0.5},
        {"ndcg@10": 0.05, "tail_recall@20": 0.01, "coverage@20": 0.1},
    ]
    assert choose_fit_point(nan, 0.0) == 1  # a tail metric no user could score never wins


def test_each_fit_candidate_sets_both_stages_id_dropout_and_nothing_else():
    from longtail.config import TrainConfig
    from longtail.train.select import with_id_dropout

    base = TrainConfig()
    candidate = with_id_dropout(base, 0.3)
    assert candidate.ranker.id_dropout == candidate.retriever.id_dropout == 0.3
    assert candidate.model_copy(update={"ranker": base.ranker, "retriever": base.retriever}) == base
    assert base.ranker.id_dropout == 0.0  # the default config is untouched


@pytest.mark.parametrize(
    ("values", "rung", "epochs", "expected"),
    [
        ([0.0, 0.3], 0.5, 12, 6),
        ([0.0, 0.3], 0.5, 5, 3),
        ([0.0, 0.3], 1.0, 12, 12),
        ([0.0, 0.3], 0.01, 4, 1),
        ([0.3], 0.5, 12, 12),
        (None, 0.5, 12, 12),
    ],
)
def test_id_dropout_values_train_the_rung_share_of_the_epochs_before_the_choice(
    values, rung, epochs, expected
):
    from longtail.config import TrainConfig
    from longtail.train.select import rung_epochs, with_epochs

    config = TrainConfig.model_validate({"select": {"id_dropout": values, "fit_rung": rung}})
    assert rung_epochs(with_epochs(config, epochs)) == expected
    assert with_epochs(config, epochs).model_copy(update={"ranker": config.ranker}) == config


def test_popularity_adjusted_variants_equal_plain_evaluations_and_move_lists_to_the_tail(tiny_bundle):
    pipe = own_lists(load_pipeline(read_bundle(tiny_bundle)))
    data = clustered_split()
    users = sample_users(data, "valid", None)
    variants = [pipe.with_knobs(popularity_penalty=g) for g in (0.0, 0.5, 50.0)]
    got = variant_metrics(variants, data, users)
    for variant, metrics in zip(variants, got, strict=True):  # one ranking pass, the same lists as evaluate's
        assert metrics == pytest.approx(
            evaluate(PipelineRecommender(variant), data, "valid").metrics, nan_ok=True
        )
    # a penalty on log(1 + train count) moves rarer items up the lists; a huge one orders by rarity
    history = data.histories(("train",)).rows(users)
    top = [PipelineRecommender(v).recommend(users, history, 5) for v in variants]  # (users, 5) each
    popularity = [np.log1p(data.train_counts()[t[t >= 0]]).mean() for t in top]
    assert popularity[0] > popularity[1] > popularity[2]


def test_the_joint_fit_and_adjustment_rule_spends_at_most_the_tolerance_on_ndcg():
    rows = [
        {"popularity_adjustment": g, "ndcg@10": n, "tail_recall@20": t, "coverage@20": c}
        for g, n, t, c in (
            (0.0, 0.100, 0.05, 0.4),
            (0.2, 0.099, 0.07, 0.5),
            (0.5, 0.097, 0.09, 0.6),
            (1.0, 0.090, 0.12, 0.8),
        )
    ]
    assert choose_fit_point(rows, 0.02) == 1  # 0.5 costs 3%: outside
    assert choose_fit_point(rows, 0.05) == 2
    assert choose_fit_point(rows, 0.0) == 0


def test_the_trend_term_is_kept_only_where_it_loses_neither_ndcg_nor_tail():
    from longtail.train.select import choose_fit_trend_point

    def row(g, d, n, t):
        return {
            "popularity_adjustment": g,
            "trend_boost": d,
            "ndcg@10": n,
            "tail_recall@20": t,
            "coverage@20": 0.5,
        }

    plain = [row(0.0, 0.0, 0.100, 0.05), row(0.2, 0.0, 0.099, 0.07), row(0.5, 0.0, 0.097, 0.09)]
    accurate = row(
        0.2, 0.5, 0.110, 0.06
    )  # more ndcg, less tail: the best-ndcg rule would move the window to it
    assert choose_fit_point([*plain, accurate], 0.02) == 3
    assert choose_fit_trend_point([*plain, accurate], 0.02) == 1  # the pick without the trend term stays
    both = row(0.5, 0.25, 0.100, 0.08)  # ≥ on both counts: replaces it
    tail_only = row(1.0, 0.25, 0.098, 0.10)  # more tail but less ndcg than the plain pick: not taken
    assert choose_fit_trend_point([*plain, accurate, tail_only, both], 0.02) == 5
    assert choose_fit_trend_point([accurate, both], 0.02) == 0  # no trend-free row: the plain rule over all


def test_the_adjustment_lowers_popular_items_the_trend_lifts_recent_ones_and_padding_stays(tiny_bundle):
    from longtail.recommend.pipeline import Catalog, score_knobs

    pipe = own_lists(load_pipeline(read_bundle(tiny_bundle)))
    counts = np.zeros(pipe.n_items, np.int64)
    counts[:3] = [100, 0, 5]
    recent = np.zeros(pipe.n_items, np.int64)
    recent[:3] = [0, 0, 5]  # item 2 is what is popular lately
    pipe = dataclasses.replace(
        pipe,
        train_counts=counts,
        recent_counts=recent,
        catalog=Catalog.of(counts, pipe.text_vectors, pipe.retrieval),
    )
    pipe = pipe.with_knobs(popularity_penalty=0.0, trend_bonus=0.0)
    candidates = np.array([[0, 1, 2, -1]])
    scores = np.array([[1.0, 1.0, 1.0, -np.inf]])
    assert score_knobs(pipe, candidates, scores) is scores  # both off: untouched
    out = score_knobs(pipe.with_knobs(popularity_penalty=0.1), candidates, scores)
    assert out[0, 1] == 1.0 and out[0, 0] == pytest.approx(1.0 - 0.1 * np.log(101)) and out[0, 3] == -np.inf
    assert np.argmax(out[0]) == 1  # the untouched item loses nothing
    trend = score_knobs(pipe.with_knobs(trend_bonus=0.2), candidates, scores)
    assert trend[0, 2] == pytest.approx(1.0 + 0.2 * np.log(6)) and trend[0, :2].tolist() == [1.0, 1.0]
    both = score_knobs(pipe.with_knobs(popularity_penalty=0.1, trend_bonus=0.2), candidates, scores)
    assert np.argmax(both[0]) == 2 and both[0, 3] == -np.inf  # popular overall loses, popular lately wins


def test_recent_counts_count_the_newest_share_of_train():
    data = clustered_split()
    stamps = np.asarray(data.train.timestamps)
    assert (data.recent_counts(1.0) == data.train_counts()).all()
    recent = data.recent_counts(0.3)
    newest = stamps >= np.quantile(stamps, 0.7, method="higher")
    assert recent.sum() == newest.sum() and 0 < recent.sum() < len(stamps)
    assert (recent <= data.train_counts()).all()
    with pytest.raises(ValueError, match="window"):
        data.recent_counts(0.0)


def test_own_lists_keep_the_adjustment_and_bundles_apply_the_chosen_one(tiny_bundle):
    from longtail.config import RankerConfig
    from longtail.recommend.build import popularity_penalty_of

    pipe = load_pipeline(read_bundle(tiny_bundle)).with_knobs(popularity_penalty=0.2, tail_boost=0.5)
    own = own_lists(pipe)
    assert (
        own.knobs.popularity_penalty == 0.2 and own.knobs.tail_boost == 0.0
    )  # a model setting, not a re-rank knob
    ranker = RankerConfig(temperature=0.5, popularity_adjustment=0.4)
    assert popularity_penalty_of(ranker) == pytest.approx(0.2) and popularity_penalty_of(ranker, 1.0) == 0.5
    with pytest.raises(ValidationError, match="popularity_adjustments"):
        SelectConfig(popularity_adjustments=[])
    with pytest.raises(ValidationError, match="trend_boosts"):
        SelectConfig(trend_boosts=[-0.5])


def test_the_new_item_floor_grows_with_the_never_touched_share_of_the_catalog():
    from longtail.train.select import new_share_floor

    select = SelectConfig(new_shares=[0.0, 0.1, 0.2], min_new_share=0.1)
    assert new_share_floor(select, 0.0) == 0.0  # nothing new: no floor
    assert new_share_floor(select, 0.04) == 0.1  # a few new items: min_new_share
    assert new_share_floor(select, 0.137) == 0.2  # a cold split: their share, rounded up to the grid
    assert new_share_floor(select, 0.6) == 0.2  # beyond the grid: its largest value
    assert new_share_floor(SelectConfig(new_shares=[0.0, 0.1, 0.2], min_new_share=0.0), 0.05) == 0.1


def test_the_default_rules_trade_a_few_percent_of_ndcg_and_the_least_spreading_for_the_tail():
    """ML-100K's recorded valid figures (the current code's draw): the defaults keep γ 0.3 (4.5% less ndcg@10
    for a third more tail than γ 0; at a 2% tolerance the rule stopped at γ 0.1) and, of the 0.4 / 0.1
    shelves, the
    smallest exposure penalty that reaches the coverage floor (at the old grid [0, 0.5, 1]: λ 0.5)."""
    select = SelectConfig()
    fit = [
        {"popularity_adjustment": g, "ndcg@10": n, "tail_recall@20": t, "coverage@20": c}
        for g, n, t, c in (
            (0.0, 0.194273, 0.084184, 0.467),
            (0.1, 0.191324, 0.092484, 0.489),
            (0.2, 0.188955, 0.100582, 0.518),
            (0.3, 0.185511, 0.112369, 0.554),
            (0.5, 0.176225, 0.131120, 0.625),
        )
    ]
    assert fit[choose_fit_point(fit, select.ndcg_tolerance)]["popularity_adjustment"] == 0.3
    assert fit[choose_fit_point(fit, 0.02)]["popularity_adjustment"] == 0.1
    shelves = {
        (0.0, 0.0, 0.0): (0.273615, 0.112369, 0.0, 0.553508),  # recall, tail, cold, coverage @20
        (0.4, 0.1, 0.0): (0.227151, 0.170499, 0.058824, 0.585612),
        (0.4, 0.1, 0.1): (0.222812, 0.163330, 0.058824, 0.637337),
        (0.4, 0.1, 0.25): (0.220874, 0.155530, 0.117647, 0.719382),
        (0.4, 0.1, 0.5): (0.215898, 0.143262, 0.176471, 0.824614),
        (0.4, 0.1, 1.0): (0.211490, 0.136828, 0.176471, 0.958383),
    }
    assert {lam for *_, lam in shelves} <= set(select.exposure_penalties)
    points = [ShelfPoint(*key) for key in shelves]
    metrics = [
        dict(zip(("recall@20", "tail_recall@20", "cold_recall@20", "coverage@20"), v, strict=True))
        for v in shelves.values()
    ]
    args = (select.recall_budget, select.tail_tolerance, select.min_coverage, select.min_new_share)
    assert points[choose(points, metrics, *args)] == ShelfPoint(0.4, 0.1, 0.1)
    old = [j for j, p in enumerate(points) if p.exposure_penalty in (0.0, 0.5, 1.0)]
    assert points[old[choose([points[j] for j in old], [metrics[j] for j in old], *args)]] == ShelfPoint(
        0.4, 0.1, 0.5
    )


def test_one_ranking_pass_gives_each_variant_the_lists_it_gets_alone(tiny_bundle):
    """``pipeline_lists`` (how ``longtail train`` evaluates the hybrid and its own lists): each variant's
    lists equal its own ``PipelineRecommender`` pass — shelves with exposure damping included; variants
    that rank differently are refused."""
    from longtail.eval.evaluate import eval_users, history_parts
    from longtail.recommend.arrange import Shelves
    from longtail.recommend.recommender import pipeline_lists

    pipe = load_pipeline(read_bundle(tiny_bundle)).with_knobs(
        shelves=Shelves(0.4, 0.2, 5.0), tail_boost=0.2, popularity_penalty=0.1
    )
    data = clustered_split()
    users = eval_users(data, "test")
    histories = data.histories(history_parts("test")).rows(users)
    variants = [own_lists(pipe), pipe, pipe.with_knobs(shelves=Shelves(0.4, 0.0, 0.0))]  # damped second
    lists = pipeline_lists(variants, histories, 5)  # 5 of a 20-item catalog: the shelves choose
    for variant, got in zip(variants, lists, strict=True):
        assert got.tolist() == PipelineRecommender(variant).recommend(users, histories, 5).tolist()
    assert lists[0].tolist() != lists[1].tolist()
    with pytest.raises(ValueError, match="α and β"):
        pipeline_lists([pipe, pipe.with_knobs(alpha=0.5)], histories, 20)


def test_a_kept_ranking_pass_gives_the_lists_a_fresh_one_does_and_is_not_ranked_again(
    tiny_bundle, monkeypatch
):
    """``RankMemo``: the choices after a fit and the valid evaluation read one ranking pass — the same lists
    whatever the batches (the pass is padded to its widest batch), no second ranking of the same models
    and histories, and no pass found for other models."""
    from longtail.eval.evaluate import eval_users
    from longtail.recommend import variants as variants_module
    from longtail.recommend.arrange import Shelves
    from longtail.recommend.recommender import pipeline_lists
    from longtail.recommend.variants import RankMemo, rank_rows, shared_base, variant_lists

    pipe = (
        load_pipeline(read_bundle(tiny_bundle))
        .with_knobs(shelves=Shelves(0.4, 0.2, 5.0), popularity_penalty=0.1)
        .with_candidates(4)
    )
    data = clustered_split()
    users = eval_users(data, "valid")
    histories = data.histories(("train",)).rows(users)
    variants = [own_lists(pipe), pipe]
    keep = [histories.of(u)[: 1 + u % 6] for u in range(histories.n_users)]  # 1-6 items: other widths
    short = Histories(np.r_[0, np.cumsum([len(h) for h in keep])].astype(np.int64), np.concatenate(keep))
    ranked = rank_rows(shared_base(variants), short, 5, batch_users=3)
    assert len({int((ranked.candidates[r : r + 3] >= 0).sum(1).max()) for r in range(0, len(users), 3)}) > 1
    fresh = variant_lists(variants, short, 5, batch_users=4)  # other batches than the pass's
    assert variant_lists(variants, short, 5, batch_users=4, ranked=ranked).tolist() == fresh.tolist()

    calls = []
    real_rank = variants_module.rank
    monkeypatch.setattr(variants_module, "rank", lambda *a, **kw: calls.append(1) or real_rank(*a, **kw))
    memo = RankMemo()
    first = variant_metrics(variants, data, users, memo)
    ranked_once = len(calls)
    assert ranked_once > 0
    for got, plain in zip(first, variant_metrics(variants, data, users), strict=True):
        assert got == pytest.approx(plain, nan_ok=True)
    adjusted = [pipe.with_knobs(popularity_penalty=0.5)]
    [got], [plain] = variant_metrics(adjusted, data, users, memo), variant_metrics(adjusted, data, users)
    assert got == pytest.approx(plain, nan_ok=True)
    assert (
        pipeline_lists(variants, histories, 20, memo).tolist()
        == pipeline_lists(variants, histories, 20).tolist()
    )
    assert len(calls) == ranked_once + 3  # the three plain passes above: the memo ranked once
    other = load_pipeline(read_bundle(tiny_bundle)).with_candidates(4)  # the same weights, other objects
    assert memo.find(shared_base([other]), histories, 20) is None
