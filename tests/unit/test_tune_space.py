"""Search-space parsing (pure), the objective and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import pytest

from longtail.config import ConfigError
from longtail.tune.space import load_space, parse_space, touches_upstream

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ranker.alfa": {"uniform": [0, 1]}}, "'ranker.alfa' is not a TrainConfig key"),
        ({"rnker.alpha": {"uniform": [0, 1]}}, "'rnker' is not a TrainConfig key"),
        ({"ranker": {"uniform": [0, 1]}}, "is a section"),
        ({"ranker.alpha": {"gaussian": [0, 1]}}, "unknown distribution 'gaussian'"),
        ({"ranker.alpha": {"uniform": [1, 0]}}, "needs low < high"),
        ({"ranker.lr": {"loguniform": [0, 1]}}, "needs low > 0"),
        ({"ranker.alpha": {"uniform": [0]}}, r"takes \[low, high\]"),
        ({"ranker.alpha": {"quniform": [0, 1, 2]}}, "0 < q"),
        ({"ranker.dim": {"randint": [1.5, 4]}}, "expected an integer"),
        ({"ranker.alpha": {"uniform": ["a", 1]}}, "expected a number"),
        ({"ranker.heads": {"choice": []}}, "at least one value"),
        ({"ranker.heads": {"choice": 3}}, "takes a list"),
        ({"ranker.heads": [1, 2]}, "expected one distribution"),
        ([], "non-empty mapping"),
    ],
)
def test_bad_spaces_are_refused_with_the_key_and_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(raw, "space.yaml")


def test_shipped_spaces_parse_and_ranker_only_space_reuses_upstream():
    hybrid = load_space(ROOT / "tune_spaces" / "hybrid.yaml")
    assert {
        "ranker.alpha",
        "ranker.beta",
        "ranker.lr",
        "ranker.temperature",
        "ranker.popularity_correction",
        "ranker.dim",
        "ranker.heads",
    } <= {p.key for p in hybrid}
    assert not touches_upstream(hybrid)
    encoder = load_space(ROOT / "tune_spaces" / "encoder.yaml")
    assert touches_upstream(encoder)


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_space(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ranker.alpha: {uniform: [0, 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(bad)


def test_objective_parsing_and_value():
    from longtail.tune.trials import Objective

    goal = Objective.parse("0.7*ndcg@10 + 0.3*tail_recall@20")
    assert goal.weights == {"ndcg@10": 0.7, "tail_recall@20": 0.3}
    assert goal.value({"valid_ndcg@10": 0.1, "valid_tail_recall@20": 0.2}) == pytest.approx(0.13)
    assert goal.value({"valid_ndcg@10": 0.1}) is None
    with pytest.raises(ConfigError, match="unknown metric"):
        Objective.parse("mrr")
    with pytest.raises(ConfigError, match="not a number"):
        Objective.parse("x*ndcg@10")


def test_pareto_front_and_params_apply():
    from longtail.tune.trials import apply_params, pareto_front

    rows = [
        {"trial": t, "valid_ndcg@10": x, "valid_tail_recall@20": y}
        for t, x, y in [("a", 0.1, 0.1), ("b", 0.2, 0.05), ("c", 0.05, 0.2), ("d", 0.09, 0.09)]
    ]
    assert [r["trial"] for r in pareto_front(rows)] == ["b", "a", "c"]
    config = apply_params({"ranker": {"epochs": 3}}, {"ranker.alpha": 0.2, "ranker.dim": 32})
    assert (config.ranker.alpha, config.ranker.dim, config.ranker.epochs) == (0.2, 32, 3)
