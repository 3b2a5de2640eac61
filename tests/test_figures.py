"""Figures share one print style: single-column width, legends off the data, sized to rows."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from phyllodes import figures, style  # noqa: E402


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
