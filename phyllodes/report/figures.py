"""Every figure of the study, each built by the function named after it, and the one writer.

The builders are named like the files they make (``fig8_clinical_importance`` writes
``figures/<cohort>/fig8_clinical_importance.*``; :func:`roc_curves` makes the three ROC
figures, :func:`forest_plot` Figure 4 and the ablation's);
README.md's artifact map and :data:`phyllodes.report.artifacts.ARTIFACTS` name the builder of each.
:func:`save_figure` writes every figure as PNG (300 dpi) and PDF. All share one style
(:mod:`phyllodes.report.style`): print widths (3.5 in for one column), a colour-blind-safe palette
with one colour per model across figures, legends below the axes, never over the data.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from phyllodes.data.cohort import ROI_COLUMNS, Cohort
from phyllodes.data.imageio import mask_array, read_gray8
from phyllodes.evaluate import stats
from phyllodes.evaluate.comparisons import pooled_subject_test
from phyllodes.explain.results import CamPanel
from phyllodes.report import style

FOREST_LABEL_CHARS = 22  #: a forest plot's model names wrap at this width (one column)
FOREST_ROW_IN = 0.28     #: inches per model row
FOREST_LINE_IN = 0.12    #: inches per extra line of a wrapped name


def save_figure(fig: plt.Figure, study, stem: str, dpi: int = style.DPI
                ) -> dict[str, Path]:
    """Write ``<study's output root>/figures/<cohort>/<stem>.{png,pdf}``; return the paths."""
    d = study.figures_dir
    out = {ext: d / f"{stem}.{ext}" for ext in ("png", "pdf")}
    # fixed metadata so that re-running writes byte-stable files where the backend allows
    fig.savefig(out["png"], dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out["pdf"], bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return out


def fig1_examples(cohort: Cohort, n_per_class: int = 4, seed: int = 0) -> plt.Figure:
    """A grid of example images per class with their ROI box (and lesion outline if masked)."""
    rng = np.random.default_rng(seed)
    imgs = cohort.images
    classes = [(0, "/".join(cohort.config.negative_labels)),
               (1, "/".join(cohort.config.positive_labels))]
    fig, axes = style.figure(style.DOUBLE, 0.47 * style.DOUBLE * 4 / max(4, n_per_class),
                             2, n_per_class, squeeze=False)
    for r, (y, name) in enumerate(classes):
        rows = imgs[imgs["y"] == y]
        pick = rows.iloc[rng.choice(len(rows), size=min(n_per_class, len(rows)),
                                    replace=False)] if len(rows) else rows
        for c in range(n_per_class):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(pick):
                continue
            row = pick.iloc[c]
            ax.imshow(read_gray8(row["image_abspath"]), cmap="gray")
            if cohort.has_masks and row.get("mask_abspath"):
                ax.contour(mask_array(row["mask_abspath"]), levels=[0.5],
                           colors=style.PALETTE[4], linewidths=0.6)
            if cohort.has_roi and not pd.isna(row["roi_x0"]):
                x0, y0, x1, y1 = (row[k] for k in ROI_COLUMNS)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor=style.PALETTE[6], linewidth=0.8))
            ax.set_title(f"{name} · {row['subject_id']}")
    fig.suptitle(f"{cohort.name}: examples (red: ROI box, yellow: lesion outline)")
    fig.tight_layout()
    return fig


def fig1b_balance_folds(cohort: Cohort, splits: pd.DataFrame) -> plt.Figure:
    """Class balance (subjects per label) and subjects per class in each fold."""
    fig, (a, b) = style.figure(style.DOUBLE, 2.3, 1, 2)
    counts = cohort.subjects["label"].value_counts()
    a.bar(counts.index.astype(str), counts.values, color=style.SERIES[0])
    a.set(title="Subjects per label", ylabel="subjects")
    for i, v in enumerate(counts.values):
        a.text(i, v, str(v), ha="center", va="bottom")
    folds = sorted(splits["fold"].unique())
    pos = splits.groupby("fold")["y"].sum().reindex(folds).to_numpy()
    tot = splits.groupby("fold").size().reindex(folds).to_numpy()
    x = np.arange(len(folds))
    b.bar(x - 0.2, tot - pos, 0.4, color=style.SERIES[2], label="negative")
    b.bar(x + 0.2, pos, 0.4, color=style.SERIES[1], label="positive")
    b.set(title="Subjects per fold and class", xlabel="fold", ylabel="subjects",
          xticks=x, xticklabels=[str(f) for f in folds])
    style.legend_outside(b, ncol=2)
    fig.tight_layout()
    return fig


def roc_curves(preds: pd.DataFrame, by: str = "model_label", order: list[str] | None = None,
               n_boot: int = 1000, seed: int = 0, title: str = "",
               points: list[tuple[str, float, float]] | None = None,
               points_label: str = "") -> plt.Figure:
    """Pooled out-of-fold subject-level ROC curves, AUC with its 95% CI in the legend (below
    the axes); ``points``: operating points (name, 1 - specificity, sensitivity) of a reader's
    rules, drawn as labelled markers."""
    s = pooled_subject_test(preds, by)
    labels = [lab for lab in (order or sorted(s[by].unique())) if lab in set(s[by])]
    fig, ax = style.figure(style.SINGLE, style.SINGLE * 0.95 + 0.16 * len(labels))
    for lab in labels:
        d = s[s[by] == lab]
        fpr, tpr, _ = roc_curve(d["y"], d["prob"])
        ci = stats.cluster_bootstrap_ci(roc_auc_score, d["y"].to_numpy(), d["prob"].to_numpy(),
                                        groups=d["subject_id"].to_numpy(), n_boot=n_boot,
                                        seed=seed)
        ax.plot(fpr, tpr, color=style.colour_of(lab),
                label=f"{lab}: {stats.format_ci(ci['estimate'], ci['low'], ci['high'])}")
    for i, (name, fpr, tpr) in enumerate(points or []):
        ax.scatter([fpr], [tpr], marker="D", s=18, c="k", zorder=5,
                   label=f"{points_label} rules" if i == 0 and points_label else None)
        ax.annotate(name, (fpr, tpr), xytext=(4, -9), textcoords="offset points", fontsize=6)
    ax.plot([0, 1], [0, 1], ls="--", c=style.REFERENCE, lw=0.7)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=title or "ROC, pooled out-of-fold test subjects")
    ax.set_aspect("equal")
    style.legend_outside(ax, title="AUC [95% CI]")
    fig.tight_layout()
    return fig


def fig3_scorecam(panel: CamPanel) -> plt.Figure:
    """Figure 3: Score-CAM overlays of TP/TN/FP/FN test images with their fold and probability,
    the lesion outlined and the outer edge of its peri-lesional band dashed (the cases of
    :func:`phyllodes.explain.folds.scorecam_panel`, chosen by its written rule)."""
    return cam_grid(panel.images, panel.cams, panel.titles, panel.masks,
                    ncols=min(4, max(1, len(panel.titles))), bands=panel.bands)


def fig6d_randomised_maps(panel: CamPanel) -> plt.Figure:
    """The model-randomisation check seen: each image's Grad-CAM++ map as trained beside the
    map after the encoder is re-initialised (:func:`phyllodes.explain.folds.
    randomised_maps_panel`)."""
    return cam_grid(panel.images, panel.cams, panel.titles, ncols=4)


def cam_grid(images: np.ndarray, cams: np.ndarray,
             titles: Sequence[str] | None = None, masks: np.ndarray | None = None,
             ncols: int = 4, alpha: float = 0.45, bands: np.ndarray | None = None
             ) -> plt.Figure:
    """Grayscale images with their CAM overlaid (inferno, ``alpha``), the lesion mask
    outlined in sky blue and, given ``bands``, the outer edge of each band dashed."""
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim == 4:  # (N, 1, H, W)
        imgs = imgs[:, 0]
    cams = np.asarray(cams)
    n = imgs.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    side = style.DOUBLE / max(ncols, 4)
    fig, axes = style.figure(side * ncols, side * 1.1 * nrows, nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        ax.imshow(cams[i], cmap="inferno", alpha=alpha, vmin=0, vmax=1)
        if masks is not None and np.asarray(masks[i]).any():
            ax.contour(np.asarray(masks[i]).astype(float), levels=[0.5],
                       colors=style.PALETTE[2], linewidths=0.8)
            if bands is not None and np.asarray(bands[i]).any():
                outer = np.asarray(bands[i]) | np.asarray(masks[i]).astype(bool)
                ax.contour(outer.astype(float), levels=[0.5], colors=style.PALETTE[2],
                           linewidths=0.6, linestyles="--")
        if titles is not None:
            ax.set_title(titles[i], fontsize=6.5)
    fig.tight_layout()
    return fig


def forest_plot(table: pd.DataFrame, metric: str = "auc", by: str = "model_label",
                paper: list[float] | None = None, title: str = "") -> plt.Figure:
    """Pooled estimate and 95% CI of one metric per model (forest plot), fold means as bars,
    the paper's values as ×. One column wide: long model names wrap over lines so that the
    data keep at least half the width; the figure is as tall as its (wrapped) rows, the
    legend below."""
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator
    t = table.reset_index(drop=True)
    names = [textwrap.fill(str(s), FOREST_LABEL_CHARS) for s in t[by]]
    lines = sum(max(1, n.count("\n") + 1) for n in names)
    fig, ax = style.figure(style.SINGLE, 0.9 + FOREST_ROW_IN * len(t)
                           + FOREST_LINE_IN * (lines - len(t)))
    y = np.arange(len(t))[::-1]
    est, lo, hi = (t[f"{metric}_pooled_{k}"].to_numpy() for k in ("est", "low", "high"))
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="o", c=style.SERIES[0], capsize=2,
                label="pooled, 95% CI")
    ax.scatter(t[f"{metric}_mean"], y, marker="|", s=60, c=style.SERIES[3], label="fold mean")
    if paper is not None and np.isfinite(np.asarray(paper, dtype=float)).any():
        ax.scatter(paper, y, marker="x", c=style.PAPER, label="paper (MGH phyllodes)")
    ax.set_yticks(y, names)
    ax.set_ylim(-0.6, len(t) - 0.4)
    ax.xaxis.set_major_locator(MaxNLocator(4, steps=[1, 2, 5, 10]))  # 0.85, 0.90: exact
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    ax.set(xlabel=metric.upper(), title=title)
    style.legend_outside(ax, ncol=3)
    fig.tight_layout()
    return fig


def reliability(subj: pd.DataFrame, by: str = "model_label", column: str = "prob",
                n_bins: int = 8, ax=None, title: str = "") -> plt.Axes:
    """Reliability diagram (quantile bins) of pooled test subjects, one line per model."""
    test = subj[subj["split"] == "test"]
    if ax is None:
        _, ax = style.figure()
    for model, g in test.groupby(by, sort=False):
        frac, mean = calibration_curve(g["y"], g[column], n_bins=n_bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", color=style.colour_of(model), label=model)
    ax.plot([0, 1], [0, 1], ls="--", c=style.REFERENCE, lw=0.7)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive",
           xlim=(0, 1), ylim=(0, 1), title=title)
    ax.set_aspect("equal")
    return ax


def fig5_calibration(subj: pd.DataFrame, by: str = "model_label") -> plt.Figure:
    """Reliability diagrams side by side: as trained, and recalibrated on inner validation."""
    n = subj[by].nunique()
    fig, axes = style.figure(style.DOUBLE, 3.3 + 0.15 * n, 1, 2)
    reliability(subj, by, column="prob", ax=axes[0], title="as trained")
    reliability(subj, by, column="prob_recal", ax=axes[1],
                title="recalibrated on inner validation")
    style.legend_outside(axes[0], ncol=2)
    fig.tight_layout()
    return fig


def fig6_decision_curves(dca: pd.DataFrame, title: str = "",
                         rules: Mapping[str, pd.DataFrame] | None = None) -> plt.Figure:
    """Net benefit of each model against excising all and none (legend below); ``rules``: a
    reader's decision rule (name -> its ``threshold``/``net_benefit`` frame) as a reference."""
    n = dca["model_label"].nunique() + len(rules or {})
    fig, ax = style.figure(style.SINGLE, 2.9 + 0.15 * (n + 2))
    for model, g in dca.groupby("model_label", sort=False):
        ax.plot(g["threshold"], g["model"], color=style.colour_of(model), label=model)
    for name, r in (rules or {}).items():
        ax.plot(r["threshold"], r["net_benefit"], c="k", ls="-.", lw=1, label=name)
    first = dca[dca["model_label"] == dca["model_label"].iloc[0]]
    ax.plot(first["threshold"], first["treat_all"], c="k", ls=":", lw=1, label="excise all")
    ax.axhline(0, c=style.REFERENCE, lw=0.8, label="excise none")
    top = max(dca["model"].max(), first["treat_all"].max())
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(-0.05, top + 0.05),
           title=title or "Decision curves (pooled out-of-fold test subjects)")
    style.legend_outside(ax)
    fig.tight_layout()
    return fig


def fig7_modality_share(share: float | Mapping[str, float],
                        ci: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
                        paper_share: float | None = 0.63) -> plt.Figure:
    """Image share of the attribution (one bar per model) with CIs, beside the paper's value."""
    shares = dict(share) if isinstance(share, Mapping) else {"image share": float(share)}
    if ci is None:
        cis = {}
    elif isinstance(ci, Mapping):
        cis = dict(ci)
    else:
        cis = {next(iter(shares)): tuple(ci)}
    names = list(shares)
    vals = np.array([shares[k] for k in names], dtype=float)
    err = np.array([[vals[i] - cis[k][0], cis[k][1] - vals[i]] if k in cis else [0.0, 0.0]
                    for i, k in enumerate(names)]).T
    fig, ax = style.figure(style.SINGLE, 1.2 + 0.35 * len(names))
    ax.barh(names, vals, xerr=np.clip(err, 0, None), color=style.SERIES[0], capsize=3,
            height=0.5, label="this run (95% CI)")
    if paper_share is not None:
        ax.axvline(paper_share, color=style.PAPER, ls="--", lw=1,
                   label=f"paper ({paper_share:.0%})")
    ax.axvline(0.5, color=style.REFERENCE, lw=0.6, ls=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("image share of |Shapley| attribution")
    style.legend_outside(ax, ncol=2)
    fig.tight_layout()
    return fig


def fig8_clinical_importance(df: pd.DataFrame) -> plt.Figure:
    """Horizontal bars of :func:`phyllodes.explain.maps.permutation_importance_oof` (mean AUC drop
    ± SD)."""
    d = df.sort_values("auc_drop_mean")
    fig, ax = style.figure(style.SINGLE, 0.9 + 0.2 * len(d))
    ax.barh(d["feature"].astype(str), d["auc_drop_mean"], xerr=d["auc_drop_sd"].fillna(0),
            color=style.SERIES[2], capsize=2, height=0.6)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("AUC drop when permuted (mean ± SD)")
    fig.tight_layout()
    return fig


def external_validation(directions: Sequence, title: str = "") -> plt.Figure:
    """Figure 10: for each direction (:class:`phyllodes.evaluate.external.Direction`), the
    first model's ROC on the development cohort's out-of-fold subjects (dashed) and on the
    external subjects (solid), the external reader's rule as a marker; and the external
    reliability diagram of the model as trained."""
    from phyllodes.evaluate.readers import reader_label
    fig, (roc, rel) = style.figure(style.DOUBLE, style.SINGLE * 1.15, ncols=2)
    for k, d in enumerate(directions):
        colour = style.SERIES[k % len(style.SERIES)]
        m = d.models[0]
        for which, ls in (("internal", "--"), ("external", "-")):
            s = d.scores(which, m)
            if s["y"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(s["y"], s["prob"])
            auc = roc_auc_score(s["y"], s["prob"])
            cohort = d.development.name if which == "internal" else d.external.name
            roc.plot(fpr, tpr, ls=ls, color=colour,
                     label=f"{d.name}: {cohort} ({which}) {auc:.3f}")
        r = d.reader()
        if r is not None and r.spec.threshold is not None:
            t = r.table[r.table["score"].notna()]
            pos = t["score"].to_numpy() >= r.spec.threshold
            y = t["y"].to_numpy(int)
            roc.scatter([pos[y == 0].mean()], [pos[y == 1].mean()], marker="D", s=18,
                        color=colour, edgecolor="k", zorder=5,
                        label=f"{reader_label(r.spec)}'s rule, {d.external.name}")
        s = d.scores("external", m)
        frac, mean = calibration_curve(s["y"], s["prob"], n_bins=8, strategy="quantile")
        rel.plot(mean, frac, marker="o", ms=3, color=colour, label=f"{d.name}")
    roc.plot([0, 1], [0, 1], ls=":", c=style.REFERENCE, lw=0.7)
    roc.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
            title="ROC: internal (dashed) vs external (solid)")
    rel.plot([0, 1], [0, 1], ls=":", c=style.REFERENCE, lw=0.7)
    rel.set(xlabel="mean predicted probability", ylabel="observed fraction positive",
            xlim=(0, 1), ylim=(0, 1), title="External calibration, as trained")
    style.legend_outside(roc, title="subject AUC")
    style.legend_outside(rel)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
