"""Figures share one print style: single-column width, legends off the data, sized to rows."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from phyllodes.report import (
    figures,
    style,  # noqa: E402
)


def _preds(n_models=3, n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_models):
        y = rng.integers(0, 2, n)
        p = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        for i in range(n):
            rows.append({"model_label": f"model {m} with a long descriptive name",
                         "subject_id": f"s{i}", "image_path": f"i{i}", "fold": i % 3,
                         "split": "test", "y": y[i], "prob": p[i]})
    return pd.DataFrame(rows)


def _inside(inner, outer) -> bool:
    return (inner.x0 >= outer.x0 - 1 and inner.x1 <= outer.x1 + 1
            and inner.y0 >= outer.y0 - 1 and inner.y1 <= outer.y1 + 1)


def test_roc_legend_is_below_the_axes_not_over_the_data():
    fig = figures.roc_curves(_preds(), n_boot=50)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0  # entirely below the plotting area
    assert fig.get_size_inches()[0] == pytest.approx(style.SINGLE)
    assert min(t.get_fontsize() for t in ax.get_legend().get_texts()) >= 6


def test_forest_plot_is_sized_to_its_rows():
    def table(k):
        return pd.DataFrame({"model_label": [f"enc{i}" for i in range(k)],
                             "auc_pooled_est": np.full(k, 0.8), "auc_pooled_low": 0.7,
                             "auc_pooled_high": 0.9, "auc_mean": 0.8})
    h = [figures.forest_plot(table(k)).get_size_inches()[1] for k in (2, 6)]
    assert h[1] - h[0] == pytest.approx(4 * 0.28)
    fig = figures.forest_plot(table(6), paper=[0.9] * 6)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0
    # below the x label too, not over it, however short the axes
    assert ax.get_legend().get_window_extent().y1 <= ax.xaxis.label.get_window_extent().y0



def test_forest_plot_with_long_names_keeps_half_the_width_for_the_data():
    names = ["whole network (last stage + conv head) instead of stage 4",
             "class-aware sampler instead of a shuffle", "recipe"]
    t = pd.DataFrame({"model_label": names, "auc_pooled_est": [0.83, 0.84, 0.85],
                      "auc_pooled_low": [0.78, 0.79, 0.80], "auc_pooled_high": [0.88, 0.89, 0.9],
                      "auc_mean": [0.84, 0.85, 0.86]})
    fig = figures.forest_plot(t)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert fig.get_size_inches()[0] == pytest.approx(style.SINGLE)
    assert ax.get_window_extent().width >= 0.45 * fig.bbox.width
    labels = [x.get_text() for x in ax.get_yticklabels()]
    assert all(max(len(s) for s in x.split("\n")) <= figures.FOREST_LABEL_CHARS for x in labels)
    # x tick labels do not overlap one another
    boxes = [x.get_window_extent() for x in ax.get_xticklabels() if x.get_text()]
    assert len(boxes) >= 2 and all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))
    # ticks at round values, so that the printed label is the tick's exact value
    ticks = [x for x in ax.get_xticks() if ax.get_xlim()[0] <= x <= ax.get_xlim()[1]]
    assert all(abs(x * 100 - round(x * 100)) < 1e-9 for x in ticks)
    assert fig.get_size_inches()[1] > figures.forest_plot(t.assign(
        model_label=["a", "b", "c"])).get_size_inches()[1]  # wrapped rows are taller


def test_models_keep_their_colour_across_figures():
    a = figures.roc_curves(_preds(2), n_boot=20)
    b = figures.roc_curves(_preds(2), n_boot=20, order=["model 1 with a long descriptive name",
                                                        "model 0 with a long descriptive name"])
    ca = {line.get_label().split(":")[0]: line.get_color() for line in a.axes[0].lines[:2]}
    cb = {line.get_label().split(":")[0]: line.get_color() for line in b.axes[0].lines[:2]}
    assert ca == cb and set(ca.values()) <= set(style.SERIES)


def test_every_figure_is_at_most_two_columns_wide():
    for w in (style.SINGLE, style.DOUBLE):
        fig, _ = style.figure(w)
        assert fig.get_size_inches()[0] <= style.DOUBLE
    assert matplotlib.rcParams["font.size"] >= 7
