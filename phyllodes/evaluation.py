"""Calibration and clinical utility of cross-validated, subject-level predictions.

All functions take subject-level predictions (:func:`subject_predictions`): one row per
(model, fold, split, subject) with ``y`` and ``prob``. Anything fit — a recalibration map, an
operating threshold — is fit on a fold's inner-validation subjects (``split == 'val'``) and
applied to that fold's test subjects, never fit on test subjects.

Why recalibration matters here: class-aware sampling trains the network as if the classes
were equally frequent, which shifts its probabilities towards the minority class (too high for
borderline/malignant when they are rarer than benign). Ranking metrics (AUC) are unaffected;
probabilities, Brier score, calibration intercept and decision curves are not.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from . import stats
from .metrics import subject_level


def subject_predictions(preds: pd.DataFrame, by: str = "model_label") -> pd.DataFrame:
    """One row per model, fold, split and subject (mean probability over its images)."""
    keep = [by, "subject_id", "image_path", "fold", "split", "y", "prob"]
    return subject_level(preds[keep])


def recalibrate_per_fold(subj: pd.DataFrame, by: str = "model_label") -> pd.DataFrame:
    """Add ``prob_recal``: Platt recalibration fit on each fold's val subjects, applied to
    that fold's rows."""
    out = []
    for _, g in subj.groupby([by, "fold"], sort=False):
        val = g[g["split"] == "val"]
        f = stats.fit_platt_recalibration(val["y"], val["prob"])
        out.append(g.assign(prob_recal=f(g["prob"].to_numpy())))
    return pd.concat(out).sort_index()


def calibration_table(subj: pd.DataFrame, by: str = "model_label",
                      columns: tuple[str, ...] = ("prob", "prob_recal")) -> pd.DataFrame:
    """Brier score, calibration slope/intercept, ECE and mean predicted risk vs prevalence on
    pooled test subjects, for the raw and the recalibrated probabilities."""
    rows = []
    test = subj[subj["split"] == "test"]
    for model, g in test.groupby(by, sort=False):
        for col in columns:
            if col not in g:
                continue
            c = stats.calibration_summary(g["y"], g[col])
            rows.append({"model": model,
                         "probabilities": "recalibrated on inner validation"
                         if col == "prob_recal" else "as trained (class-aware sampling)",
                         "brier": c["brier"], "slope": c["slope"], "intercept": c["intercept"],
                         "ece": c["ece"], "mean_predicted": float(g[col].mean()),
                         "prevalence": float(g["y"].mean()), "n_subjects": int(len(g))})
    return pd.DataFrame(rows)


def plot_reliability(subj: pd.DataFrame, by: str = "model_label", column: str = "prob",
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


def plot_reliability_pair(subj: pd.DataFrame, by: str = "model_label") -> plt.Figure:
    """Reliability diagrams side by side: as trained, and recalibrated on inner validation."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6))
    plot_reliability(subj, by, column="prob", ax=axes[0], title="as trained")
    plot_reliability(subj, by, column="prob_recal", ax=axes[1],
                     title="recalibrated on inner validation")
    fig.tight_layout()
    return fig


def decision_curves(subj: pd.DataFrame, by: str = "model_label", column: str = "prob_recal",
                    thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Net benefit of each model against excise-all and excise-none, pooled test subjects."""
    t = np.round(np.arange(0.02, 0.81, 0.02), 2) if thresholds is None else thresholds
    test = subj[subj["split"] == "test"]
    frames = []
    for model, g in test.groupby(by, sort=False):
        d = stats.decision_curve(g["y"], g[column], t)
        frames.append(d.assign(model_label=model))
    return pd.concat(frames, ignore_index=True)


def plot_decision_curves(dca: pd.DataFrame, title: str = "") -> plt.Figure:
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


def operating_point(subj: pd.DataFrame, by: str = "model_label", target: float = 0.95,
                    column: str = "prob", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A high-sensitivity rule chosen on inner validation, applied to test subjects.

    Per fold the threshold is the highest one reaching ``target`` sensitivity on that fold's
    val subjects. Pooled over test subjects: achieved sensitivity, and the fraction of benign
    (negative) subjects below the threshold — excisions that would be spared — each with a
    subject-bootstrap 95% CI.
    """
    rows = []
    for model, g in subj.groupby(by, sort=False):
        flagged = []
        for fold, f in g.groupby("fold"):
            val, test = f[f["split"] == "val"], f[f["split"] == "test"]
            thr = stats.threshold_for_sensitivity(val["y"], val[column], target)
            flagged.append(test.assign(threshold=thr, positive=(test[column] >= thr)))
        t = pd.concat(flagged)
        y, pos = t["y"].to_numpy(), t["positive"].to_numpy().astype(float)

        def sens(yy, pp):
            return float(pp[yy == 1].mean()) if (yy == 1).any() else np.nan

        def spared(yy, pp):
            return float(1 - pp[yy == 0].mean()) if (yy == 0).any() else np.nan
        ci_s = stats.cluster_bootstrap_ci(sens, y, pos, groups=t["subject_id"].to_numpy(),
                                          n_boot=n_boot, seed=seed)
        ci_b = stats.cluster_bootstrap_ci(spared, y, pos, groups=t["subject_id"].to_numpy(),
                                          n_boot=n_boot, seed=seed)
        missed = int(((y == 1) & (pos == 0)).sum())
        rows.append({"model": model, "target_sensitivity": target,
                     "thresholds_per_fold": ", ".join(f"{x:.3f}" for x in
                                                      t.groupby("fold")["threshold"].first()),
                     "sensitivity (95% CI)": stats.format_ci(ci_s["estimate"], ci_s["low"],
                                                            ci_s["high"]),
                     "benign spared excision (95% CI)": stats.format_ci(
                         ci_b["estimate"], ci_b["low"], ci_b["high"]),
                     "malignant missed": missed, "benign": int((y == 0).sum()),
                     "positive": int((y == 1).sum()),
                     "sensitivity": ci_s["estimate"], "spared": ci_b["estimate"],
                     "spared_low": ci_b["low"], "spared_high": ci_b["high"]})
    return pd.DataFrame(rows)


def plot_forest(table: pd.DataFrame, metric: str = "auc", by: str = "model_label",
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
