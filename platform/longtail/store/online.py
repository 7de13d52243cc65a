"""``longtail report online``: per-arm engagement of served lists, with confidence intervals.

Reads the store's impressions and attributions (``Store.online_rows``). A *slot* is one item of one served
list; it is *engaged* when at least one event was attributed to it. Per arm: slot engagement rate (CTR) over
every slot, over head / tail / never-touched items (the item's bucket), and over the model / tail / new
shelves, each with a 95% Wilson interval; and the median time from a never-touched item's first showing to
its first attributed event. Every arm is compared with the control (the first arm by name, or ``control``):
the difference of rates with a 95% Newcombe interval, and a verdict — ahead, behind, or that the data cannot
tell yet (the interval holds 0).

The intervals treat slots as independent trials; slots of one list, or one user's lists, are correlated, so
with few users they are too narrow. Read them with the user counts the report prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from longtail.store.base import OnlineRows

Z95 = 1.959964


@dataclass(frozen=True)
class Rate:
    engaged: int
    shown: int

    @property
    def value(self) -> float:
        return self.engaged / self.shown if self.shown else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.engaged, self.shown)


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (nan, nan) without trials."""
    if trials == 0:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(a: Rate, b: Rate) -> tuple[float, float]:
    """95% interval of b − a from the two Wilson intervals (Newcombe's method 10)."""
    la, ua = a.interval
    lb, ub = b.interval
    d = b.value - a.value
    return (
        d - math.sqrt((b.value - lb) ** 2 + (ua - a.value) ** 2),
        d + math.sqrt((ub - b.value) ** 2 + (a.value - la) ** 2),
    )


SEGMENTS = ("all", "head", "tail", "new", "shelf:model", "shelf:tail", "shelf:new")


@dataclass
class ArmReport:
    arm: str
    users: int
    lists: int
    rates: dict[str, Rate] = field(default_factory=dict)  # SEGMENTS → Rate
    median_first_engagement_s: float | None = None  # never-touched items: first showing → first event


@dataclass
class Comparison:
    arm: str
    control: str
    segment: str
    difference: float
    interval: tuple[float, float]

    @property
    def verdict(self) -> str:
        low, high = self.interval
        if not (math.isfinite(low) and math.isfinite(high)):
            return "no data"
        if low > 0:
            return "ahead"
        if high < 0:
            return "behind"
        return "cannot tell yet"


@dataclass
class OnlineReport:
    arms: list[ArmReport]
    control: str | None
    comparisons: list[Comparison]
    engaged_by_type: dict[str, int]


def build_report(rows: OnlineRows, control: str | None = None) -> OnlineReport:
    """Per-arm rates and comparisons with ``control`` (default: the first arm by name)."""
    names = sorted(rows.lists)
    arms = []
    for name in names:
        counts: dict[str, list[int]] = {s: [0, 0] for s in SEGMENTS}
        for arm, shelf, bucket, shown, engaged in rows.slots:
            if arm != name:
                continue
            for segment in ("all", bucket, f"shelf:{shelf}"):
                if segment in counts:
                    counts[segment][0] += engaged
                    counts[segment][1] += shown
        delays = sorted(d for a, d in rows.first_engagement if a == name)
        arms.append(
            ArmReport(
                name,
                rows.users.get(name, 0),
                rows.lists[name],
                {s: Rate(e, n) for s, (e, n) in counts.items()},
                delays[len(delays) // 2] if delays else None,
            )
        )
    if control is not None and control not in rows.lists:
        raise ValueError(f"--control {control!r}: no such arm in the window (arms: {names})")
    base = control or (names[0] if names else None)
    comparisons = []
    by_name = {a.arm: a for a in arms}
    for a in arms:
        if a.arm == base or base is None:
            continue
        for segment in ("all", "tail", "head", "new"):
            ctl, got = by_name[base].rates[segment], a.rates[segment]
            comparisons.append(Comparison(a.arm, base, segment, got.value - ctl.value, newcombe(ctl, got)))
    return OnlineReport(arms, base, comparisons, rows.engaged_by_type)


def render(report: OnlineReport) -> str:
    """The report as plain text tables."""
    if not report.arms:
        return "no served lists recorded in this window"

    def pct(rate: Rate) -> str:
        if not rate.shown:
            return "—"
        low, high = rate.interval
        return f"{100 * rate.value:.2f}% [{100 * low:.2f}, {100 * high:.2f}] of {rate.shown}"

    lines = ["engaged slots per arm (95% Wilson interval, slots shown):", ""]
    header = ["arm", "users", "lists", *SEGMENTS, "new item: first event after"]
    lines.append(" | ".join(header))
    lines.append(" | ".join("---" for _ in header))
    for a in report.arms:
        first = (
            "—" if a.median_first_engagement_s is None else f"{a.median_first_engagement_s:.0f} s (median)"
        )
        lines.append(
            " | ".join([a.arm, str(a.users), str(a.lists), *(pct(a.rates[s]) for s in SEGMENTS), first])
        )
    if report.comparisons:
        lines += ["", f"against the control arm {report.control!r} (difference, 95% Newcombe interval):", ""]
        for c in report.comparisons:
            low, high = c.interval
            lines.append(
                f"{c.arm} vs {c.control}, {c.segment}: {100 * c.difference:+.2f} points "
                f"[{100 * low:+.2f}, {100 * high:+.2f}] → {c.verdict}"
            )
    if report.engaged_by_type:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.engaged_by_type.items()))
        lines += ["", f"attributed events by type: {kinds}"]
    return "\n".join(lines)


def to_json(report: OnlineReport) -> dict:
    """The report as JSON-ready data (rates with their intervals)."""

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    def rate(r: Rate) -> dict:
        low, high = r.interval
        return {
            "engaged": r.engaged,
            "shown": r.shown,
            "rate": finite(r.value),
            "interval": [finite(low), finite(high)],
        }

    return {
        "control": report.control,
        "arms": [
            {
                **{k: v for k, v in asdict(a).items() if k != "rates"},
                "rates": {s: rate(r) for s, r in a.rates.items()},
            }
            for a in report.arms
        ],
        "comparisons": [
            {
                **asdict(c),
                "difference": finite(c.difference),
                "interval": [finite(x) for x in c.interval],
                "verdict": c.verdict,
            }
            for c in report.comparisons
        ],
        "engaged_by_type": report.engaged_by_type,
    }


def plot(report: OnlineReport, path: Path) -> Path:
    """Bars of each arm's engagement rate over all, head, tail and never-touched slots, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segments = ("all", "head", "tail", "new")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(report.arms), 1)
    for j, a in enumerate(report.arms):
        values = [a.rates[s].value if a.rates[s].shown else 0.0 for s in segments]
        lows = [
            v - a.rates[s].interval[0] if a.rates[s].shown else 0.0
            for v, s in zip(values, segments, strict=True)
        ]
        highs = [
            a.rates[s].interval[1] - v if a.rates[s].shown else 0.0
            for v, s in zip(values, segments, strict=True)
        ]
        xs = [i + j * width for i in range(len(segments))]
        ax.bar(xs, values, width, yerr=[lows, highs], capsize=3, label=a.arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(segments))], segments)
    ax.set_ylabel("engaged slots / slots shown")
    ax.set_title("engagement per arm (95% intervals)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_json(report: OnlineReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(report), indent=2, allow_nan=False))
    return path


UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_duration(text: str) -> float:
    """'90s', '30m', '24h', '7d', '2w' or plain seconds → seconds; ValueError naming the expected form."""
    raw = text.strip().lower()
    unit = UNITS.get(raw[-1:])
    number = raw[:-1] if unit is not None else raw
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration like 90s, 30m, 24h, 7d or 2w") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--since {text!r}: must be a positive duration")
    return value
