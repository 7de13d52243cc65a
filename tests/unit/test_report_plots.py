"""Plot labels stay readable: the α-sweep labels of points close together do not overlap."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from longtail.eval.report import place_labels, plot_alpha_sweep

# the α sweep of the issue: α = 0.5 and α = 0.75 almost on the same spot
SWEEP = [
    (0.0, 0.045, 0.010),
    (0.25, 0.041, 0.012),
    (0.5, 0.0300, 0.0150),
    (0.75, 0.0302, 0.0151),
    (1.0, 0.013, 0.017),
]


def boxes(labels):
    """The text boxes of the labels (without their leader lines)."""
    renderer = labels[0].figure.canvas.get_renderer()
    return [
        label.get_window_extent(renderer) if label.arrow_patch is None else label.get_tightbbox(renderer)
        for label in labels
    ]


def test_labels_of_close_points_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot([p[1] for p in SWEEP], [p[2] for p in SWEEP], marker="o")
    fig.tight_layout()
    naive = [
        ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
        for a, x, y in SWEEP
    ]
    assert any(a.overlaps(b) for a, b in itertools.combinations(boxes(naive), 2))  # the bug, as it was
    for label in naive:
        label.remove()
    placed = place_labels(ax, [(x, y) for _, x, y in SWEEP], [f"α={a:g}" for a, _, _ in SWEEP])
    assert [label.get_text() for label in placed] == [f"α={a:g}" for a, _, _ in SWEEP]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes(placed), 2))
    plt.close(fig)


def test_alpha_sweep_plot_is_written(tmp_path):
    path = plot_alpha_sweep(SWEEP, tmp_path / "sweep.png", "test: α sweep")
    assert path.read_bytes()[:4] == b"\x89PNG"
