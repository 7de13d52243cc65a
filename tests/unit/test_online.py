"""Closing the loop without Ray: A/B arms (assignment, validation, lists per arm), the feedback-driven
shelves' sampling, and the online report's rates and verdicts on synthetic traffic with known click rates."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from longtail.bundle import read_bundle
from longtail.cli import app
from longtail.serve.knobs import Arm, ListKnobs, arm_of
from longtail.serve.live import LivePipeline, Query
from longtail.store import Event, Impression, open_store
from longtail.store.online import build_report, wilson

AB = [Arm(name="fixed", share=0.5), Arm(name="feedback", share=0.5, knobs={"shelf_feedback": 1.0})]


def test_arms_are_checked_when_knobs_are_applied():
    with pytest.raises(ValueError, match="sum to 1"):
        ListKnobs(arms=[Arm(name="a", share=0.5), Arm(name="b", share=0.4)])
    with pytest.raises(ValueError, match="unknown knob"):
        ListKnobs(arms=[Arm(name="a", share=1.0, knobs={"tail_shar": 0.2})])
    with pytest.raises(ValueError, match="apply to every arm"):
        ListKnobs(arms=[Arm(name="a", share=1.0, knobs={"max_batch_size": 4})])
    with pytest.raises(ValueError, match="unique"):
        ListKnobs(arms=[Arm(name="a", share=0.5), Arm(name="a", share=0.5)])
    with pytest.raises(ValueError, match=r"arms\[a\]"):
        ListKnobs(arms=[Arm(name="a", share=1.0, knobs={"tail_share": 2.0})])
    arms = ListKnobs(tail_share=0.2, arms=AB).arm_knobs()
    assert arms["feedback"][1].shelf_feedback == 1.0 and arms["feedback"][1].tail_share == 0.2


def test_a_users_arm_is_sticky_proportional_and_moves_only_as_the_shares_require():
    users = [f"user-{i}" for i in range(20_000)]
    before = {u: arm_of(u, "exp", [("a", 0.5), ("b", 0.5)]) for u in users}
    assert before == {u: arm_of(u, "exp", [("a", 0.5), ("b", 0.5)]) for u in users}  # deterministic
    assert abs(sum(a == "a" for a in before.values()) / len(users) - 0.5) < 0.02
    after = {u: arm_of(u, "exp", [("a", 0.6), ("b", 0.4)]) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert all(before[u] == "b" and after[u] == "a" for u in moved)  # only b → a, about 10% of users
    assert abs(len(moved) / len(users) - 0.1) < 0.02
    other = {u: arm_of(u, "another-experiment", [("a", 0.5), ("b", 0.5)]) for u in users}
    assert 0.4 < sum(before[u] != other[u] for u in users) / len(users) < 0.6  # a new salt reshuffles


def test_each_user_gets_the_list_of_their_arm_with_its_shelves(tiny_bundle):
    ranker = LivePipeline(read_bundle(tiny_bundle))
    ranker.configure(
        ListKnobs(
            arms=[Arm(name="plain", share=0.5), Arm(name="shelved", share=0.5, knobs={"tail_share": 0.5})]
        )
    )
    seen = set()
    for user in [f"u{i}" for i in range(8)]:
        history, _ = ranker.history(user, False, [])
        arm = ranker.arm_for(user)
        [ranked] = ranker.recommend([Query(user, history, 6, arm=arm)])
        shelves = [i["shelf"] for i in ranked.items]
        assert ranked.arm == arm and all(i["bucket"] in {"head", "tail", "new"} for i in ranked.items)
        assert ("tail" in shelves) == (arm == "shelved"), (arm, shelves)
        seen.add(arm)
    assert seen == {"plain", "shelved"}


def test_feedback_lifts_items_users_engage_with_and_lowers_ignored_ones(tiny_bundle):
    ranker = LivePipeline(read_bundle(tiny_bundle))
    liked, ignored = ranker.item_ids[10], ranker.item_ids[11]
    ranker.set_engagement({liked: (40, 12), ignored: (200, 0), "not-in-catalog": (5, 5)})
    lift = ranker.shelf_bonus(1.0)
    assert lift[10] > 1.0 and lift[11] < -0.5 and lift[12] == 0.0  # engaged > never shown (0) > ignored
    assert ranker.shelf_bonus(0.0) is None  # off: the fixed shelves
    ranker.set_activity({ignored: 30})
    trend = ranker.shelf_lift(ListKnobs(shelf_trend=1.0))
    assert trend is not None and trend[11] == pytest.approx(np.log1p(30)) and trend[10] == 0.0
    assert ranker.shelf_lift(ListKnobs()) is None


def _traffic(store, arm: str, rate: float, lists: int, rng: random.Random, now: float) -> None:
    impressions, events = [], []
    for j in range(lists):
        rid, user = f"{arm}-{j}", f"{arm}-user-{j % 300}"
        slots = tuple((f"i{p}", "model" if p < 7 else "tail", "head" if p < 7 else "tail") for p in range(10))
        impressions.append(Impression(rid, user, now, arm, "v1", "hybrid", "{}", slots))
        for p in range(10):
            if rng.random() < rate * (2.0 if p >= 7 else 1.0):  # tail slots engage at twice the rate
                events.append(Event(f"{rid}-{p}", user, f"i{p}", "click", now + 5, recommendation_id=rid))
    store.add_impressions(impressions)
    store.add_events(events)


def test_the_report_recovers_known_per_arm_rates_and_names_the_arm_ahead(tmp_path):
    path = str(tmp_path / "state.sqlite")
    store = open_store(path, create=True)
    rng, now = random.Random(7), time.time()
    _traffic(store, "control", 0.03, 1500, rng, now)
    _traffic(store, "treatment", 0.06, 1500, rng, now)
    report = build_report(store.online_rows(0.0))
    truth = {"control": 0.03, "treatment": 0.06}
    for arm in report.arms:
        for segment, factor in (("head", 1.0), ("tail", 2.0)):
            low, high = arm.rates[segment].interval
            assert low <= truth[arm.arm] * factor <= high, (arm.arm, segment, low, high)
        assert arm.users == 300 and arm.lists == 1500
    verdicts = {c.segment: c.verdict for c in report.comparisons}
    assert verdicts["all"] == "ahead" and verdicts["tail"] == "ahead"
    out = CliRunner().invoke(
        app,
        [
            "report",
            "online",
            "--store",
            path,
            "--json",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "r.png"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "treatment vs control, all" in out.output and "ahead" in out.output
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.json").stat().st_size > 0


def test_the_report_says_when_the_data_cannot_tell_yet(tmp_path):
    store = open_store(str(tmp_path / "state.sqlite"), create=True)
    rng, now = random.Random(3), time.time()
    _traffic(store, "a", 0.05, 30, rng, now)
    _traffic(store, "b", 0.05, 30, rng, now)
    report = build_report(store.online_rows(0.0))
    assert {c.verdict for c in report.comparisons if c.segment == "all"} == {"cannot tell yet"}
    bad = CliRunner().invoke(
        app, ["report", "online", "--store", str(tmp_path / "state.sqlite"), "--since", "7 days"]
    )
    assert bad.exit_code == 2 and "--since" in bad.output


def test_wilson_interval_holds_the_rate():
    low, high = wilson(30, 1000)
    assert low < 0.03 < high and high - low < 0.025
    assert wilson(0, 10)[0] == 0.0
