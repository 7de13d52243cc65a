"""Reports: JSON with every metric key, a Markdown table, and a PNG of recall@20 by popularity decile."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from longtail.eval.evaluate import EvalResult
from longtail.eval.metrics import METRIC_KEYS


def markdown_table(results: Sequence[EvalResult]) -> str:
    """One row per model, one column per metric key."""
    head = "| model | " + " | ".join(METRIC_KEYS) + " |"
    rule = "|---|" + "---:|" * len(METRIC_KEYS)
    rows = []
    for r in results:
        cells = ["–" if r.metrics[k] != r.metrics[k] else f"{r.metrics[k]:.4f}" for k in METRIC_KEYS]
        rows.append(f"| {r.model} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def plot_deciles(results: Sequence[EvalResult], path: Path, title: str) -> Path:
    """Line plot of recall@20 per item-popularity decile, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        xs = range(1, len(r.decile_recall) + 1)
        ax.plot(xs, [float("nan") if v is None else v for v in r.decile_recall], marker="o", label=r.model)
    ax.set_xlabel("item popularity decile (1 = least popular in train)")
    ax.set_ylabel("recall@20")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: Sequence[EvalResult], out: Path, context: dict) -> dict[str, Path]:
    """Write ``out`` (JSON), ``out`` with ``.md`` and ``.png`` suffixes; returns the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": out, "markdown": out.with_suffix(".md"), "plot": out.with_suffix(".png")}
    payload = {**context, "metric_keys": list(METRIC_KEYS), "results": [r.to_json() for r in results]}
    paths["json"].write_text(json.dumps(payload, indent=2))
    title = f"{context.get('dataset', '')} · split {context.get('split', '')} · {context.get('part', '')}"
    paths["markdown"].write_text(
        f"# {title}\n\n{markdown_table(results)}\n\n![recall by decile]({paths['plot'].name})\n"
    )
    plot_deciles(results, paths["plot"], title)
    return paths


def plot_alpha_sweep(points: Sequence[tuple[float, float, float]], path: Path, title: str) -> Path:
    """tail_recall@20 against ndcg@10 for fixed α values (α, ndcg, tail), labelled by α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel("ndcg@10")
    ax.set_ylabel("tail_recall@20")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.15)  # room for labels beside the outermost points
    fig.tight_layout()
    place_labels(ax, [(x, y) for _, x, y in points], [f"α={alpha:g}" for alpha, _, _ in points])
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


LABEL_OFFSETS = (
    (6, 6),
    (6, -14),
    (-44, 6),
    (-44, -14),
    (6, 18),
    (6, -26),
    (-44, 18),
    (-44, -26),
    (6, 30),
    (6, -38),
)


def place_labels(ax, anchors: Sequence[tuple[float, float]], texts: Sequence[str]) -> list:
    """Annotate each point with its text at the first offset where the label overlaps no label placed before
    and no marker (points close together get their labels above, below or left, with a leader line to
    their point); returns the annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    markers = [ax.transData.transform(a) for a in anchors]
    placed: list = []
    boxes: list = []
    for (x, y), text in zip(anchors, texts, strict=True):
        for n, (dx, dy) in enumerate(LABEL_OFFSETS):
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=9)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            hits_marker = any(
                box.x0 - 4 <= mx <= box.x1 + 4 and box.y0 - 4 <= my <= box.y1 + 4 for mx, my in markers
            )
            if not hits_marker and not any(box.overlaps(b) for b in boxes):
                if n:  # moved away from its point: a leader line says whose label it is
                    label.remove()
                    label = ax.annotate(
                        text,
                        (x, y),
                        textcoords="offset points",
                        xytext=(dx, dy),
                        fontsize=9,
                        arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.45"},
                    )
                break
            label.remove()
        else:  # every offset taken: keep the first one
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=LABEL_OFFSETS[0], fontsize=9)
            box = label.get_window_extent(renderer)
        placed.append(label)
        boxes.append(box)
    return placed


def plot_term_shares(table: dict[str, dict[str, float]], path, title: str):
    """Stacked bars: each term's mean share of the listed items' scores, per popularity bucket."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("head", "tail", "cold") if table.get(n, {}).get("items")]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    bottom = np.zeros(len(names))
    for term in ("text", "assoc", "cf"):
        values = np.array([table[n][f"share_{term}"] for n in names])
        ax.bar(names, values, bottom=bottom, label=term)
        bottom += values
    ax.set_xticks(range(len(names)), [f"{n}\n({table[n]['items']} listed)" for n in names])
    ax.set_ylabel("mean share of |score|")
    ax.set_ylim(0, 1.18)  # room for the legend above the bars
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
