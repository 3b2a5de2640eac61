"""Every figure of the study, each built by the function named after it, and the one writer.

The builders are named like the files they make (``fig4_encoder_forest`` writes
``figures/<cohort>/fig4_encoder_forest.*``; :func:`roc_curves` makes the three ROC figures);
README.md's artifact map and :data:`phyllodes.artifacts.ARTIFACTS` name the builder of each.
:func:`save_figure` writes every figure as PNG and PDF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.patches import Rectangle
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from . import paths, stats
from .cohort import ROI_COLUMNS, Cohort
from .evaluation import pooled_subject_test
from .explain_runs import cam_examples
from .imageio import mask_array, read_gray8
from .images import ImageSet


def save_figure(fig: plt.Figure, cohort: str, stem: str, dpi: int = 150) -> dict[str, Path]:
    """Write ``figures/<cohort>/<stem>.{png,pdf}``; return the paths."""
    d = paths.figures_dir(cohort)
    out = {ext: d / f"{stem}.{ext}" for ext in ("png", "pdf")}
    # fixed metadata so that re-running writes byte-stable files where the backend allows
    fig.savefig(out["png"], dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out["pdf"], bbox_inches="tight", metadata={"CreationDate": None})
    return out


def fig1_examples(cohort: Cohort, n_per_class: int = 4, seed: int = 0) -> plt.Figure:
    """A grid of example images per class with their ROI box (and lesion outline if masked)."""
    rng = np.random.default_rng(seed)
    imgs = cohort.images
    classes = [(0, "/".join(cohort.config.negative_labels)),
               (1, "/".join(cohort.config.positive_labels))]
    fig, axes = plt.subplots(2, n_per_class, figsize=(2.4 * n_per_class, 5.2), squeeze=False)
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
                           colors="yellow", linewidths=0.6)
            if cohort.has_roi and not pd.isna(row["roi_x0"]):
                x0, y0, x1, y1 = (row[k] for k in ROI_COLUMNS)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor="tab:red", linewidth=1))
            ax.set_title(f"{name}\n{row['subject_id']}", fontsize=8)
    fig.suptitle(f"{cohort.name}: example images (red: ROI box, yellow: lesion mask)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def fig1b_balance_folds(cohort: Cohort, splits: pd.DataFrame) -> plt.Figure:
    """Class balance (subjects per label) and subjects per class in each fold."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    counts = cohort.subjects["label"].value_counts()
    sns.barplot(x=counts.index, y=counts.values, ax=a, color="tab:blue")
    a.set(title="Subjects per label", xlabel="", ylabel="subjects")
    for i, v in enumerate(counts.values):
        a.text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    comp = splits.assign(cls=np.where(splits["y"] == 1, "positive", "negative"))
    sns.countplot(data=comp, x="fold", hue="cls", ax=b, palette=["tab:green", "tab:red"])
    b.set(title="Subjects per fold and class", ylabel="subjects")
    b.legend(title="")
    fig.tight_layout()
    return fig


def roc_curves(preds: pd.DataFrame, by: str = "model_label", order: list[str] | None = None,
             n_boot: int = 1000, seed: int = 0, title: str = "") -> plt.Figure:
    """Pooled out-of-fold subject-level ROC curves, AUC with its 95% CI in the legend."""
    s = pooled_subject_test(preds, by)
    labels = order or sorted(s[by].unique())
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for lab in labels:
        d = s[s[by] == lab]
        if d.empty:
            continue
        fpr, tpr, _ = roc_curve(d["y"], d["prob"])
        ci = stats.cluster_bootstrap_ci(roc_auc_score, d["y"].to_numpy(), d["prob"].to_numpy(),
                                        groups=d["subject_id"].to_numpy(), n_boot=n_boot,
                                        seed=seed)
        ax.plot(fpr, tpr, lw=1.8,
                label=f"{lab}: AUC {stats.format_ci(ci['estimate'], ci['low'], ci['high'])}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=title or "ROC, pooled out-of-fold test subjects")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def fig3_scorecam(result: dict, images: ImageSet, per_outcome: int, seed: int = 0):
    """Figure 3: Score-CAM overlays of TP/TN/FP/FN test images with their fold and probability."""
    ex = cam_examples(result, per_outcome, seed=seed)
    rows = torch.as_tensor(result["scorecam_rows"][ex["position"]])
    imgs = images.images[rows, 0].float().div(255).numpy()
    masks = None if images.masks is None else (images.masks[rows, 0] > 0).numpy()
    titles = [f"{o} · p={p:.2f} · fold {f}" for o, p, f in zip(ex["outcome"], ex["prob"],
                                                                 ex["fold"])]
    return cam_grid(imgs, result["cams_scorecam"][ex["position"]], titles, masks,
                                 ncols=min(4, max(1, len(ex))))


def cam_grid(images: np.ndarray | torch.Tensor, cams: np.ndarray,
             titles: Sequence[str] | None = None, masks: np.ndarray | None = None,
             ncols: int = 4, alpha: float = 0.4) -> plt.Figure:
    """Grayscale images with their CAM overlaid (jet, ``alpha``) and the lesion mask outlined."""
    imgs = np.asarray(images, dtype=float)
    if imgs.ndim == 4:  # (N, 1, H, W)
        imgs = imgs[:, 0]
    cams = np.asarray(cams)
    n = imgs.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        ax.imshow(cams[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        if masks is not None and np.asarray(masks[i]).any():
            ax.contour(np.asarray(masks[i]).astype(float), levels=[0.5], colors="white",
                       linewidths=1.0)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def fig4_encoder_forest(table: pd.DataFrame, metric: str = "auc", by: str = "model_label",
                paper: list[float] | None = None, title: str = "") -> plt.Figure:
    """Pooled estimate and 95% CI of one metric per model (forest plot), paper values as ×."""
    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(t) + 1.2))
    y = np.arange(len(t))[::-1]
    est, lo, hi = (t[f"{metric}_pooled_{k}"].to_numpy() for k in ("est", "low", "high"))
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="o", c="tab:blue", capsize=3,
                label="this run (pooled, 95% CI)")
    ax.scatter(t[f"{metric}_mean"], y, marker="|", s=120, c="tab:orange",
               label="fold mean")
    if paper is not None and np.isfinite(np.asarray(paper, dtype=float)).any():
        ax.scatter(paper, y, marker="x", c="tab:red", label="paper (MGH phyllodes)")
    ax.set_yticks(y, t[by])
    ax.set(xlabel=metric.upper(), title=title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def reliability(subj: pd.DataFrame, by: str = "model_label", column: str = "prob",
                     n_bins: int = 8, ax=None, title: str = "") -> plt.Figure:
    """Reliability diagram (quantile bins) of pooled test subjects, one line per model."""
    test = subj[subj["split"] == "test"]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for model, g in test.groupby(by, sort=False):
        frac, mean = calibration_curve(g["y"], g[column], n_bins=n_bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, lw=1.5, label=model)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive",
           xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=6, loc="upper left")
    return fig or ax.figure


def fig5_calibration(subj: pd.DataFrame, by: str = "model_label") -> plt.Figure:
    """Reliability diagrams side by side: as trained, and recalibrated on inner validation."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6))
    reliability(subj, by, column="prob", ax=axes[0], title="as trained")
    reliability(subj, by, column="prob_recal", ax=axes[1],
                     title="recalibrated on inner validation")
    fig.tight_layout()
    return fig


def fig6_decision_curves(dca: pd.DataFrame, title: str = "") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    for model, g in dca.groupby("model_label", sort=False):
        ax.plot(g["threshold"], g["model"], lw=1.6, label=model)
    first = dca[dca["model_label"] == dca["model_label"].iloc[0]]
    ax.plot(first["threshold"], first["treat_all"], c="k", ls=":", lw=1.2,
            label="excise all")
    ax.axhline(0, c="grey", lw=1, label="excise none")
    top = max(dca["model"].max(), first["treat_all"].max())
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(-0.05, top + 0.05),
           title=title or "Decision curves (pooled out-of-fold test subjects)")
    ax.legend(fontsize=6)
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
    fig, ax = plt.subplots(figsize=(5.5, 0.6 * len(names) + 1.4))
    ax.barh(names, vals, xerr=np.clip(err, 0, None), color="tab:blue", alpha=0.8, capsize=4)
    if paper_share is not None:
        ax.axvline(paper_share, color="tab:red", ls="--", label=f"paper ({paper_share:.0%})")
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("image share of |Shapley| attribution")
    fig.tight_layout()
    return fig


def fig8_clinical_importance(df: pd.DataFrame) -> plt.Figure:
    """Horizontal bars of :func:`permutation_importance_oof` (mean AUC drop ± SD)."""
    d = df.sort_values("auc_drop_mean")
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(d) + 1.2))
    ax.barh(d["feature"].astype(str), d["auc_drop_mean"],
            xerr=d["auc_drop_sd"].fillna(0), color="tab:green", alpha=0.8, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("AUC drop when permuted (mean ± SD over repeats)")
    fig.tight_layout()
    return fig
