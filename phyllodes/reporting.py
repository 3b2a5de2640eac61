"""Tables and figures that compare models: metric tables with CIs, paired AUC tests, ROC plots.

Everything here works on the predictions of :func:`phyllodes.runs.load_predictions` and shows
subject-level, out-of-fold test results (a subject's probability is the mean over its images).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from . import stats
from .metrics import metrics_table

SHOW = ("auc", "f1", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv",
        "npv", "auprc")


def pooled_subject_test(preds: pd.DataFrame, by: str = "model_label") -> pd.DataFrame:
    """One row per (model, subject) of the out-of-fold test predictions."""
    from .evaluation import subject_predictions
    s = subject_predictions(preds, by)
    return s[s["split"] == "test"].drop(columns="split")


def comparison_table(preds: pd.DataFrame, by: str = "model_label", threshold: str = "0.5",
                     n_boot: int = 1000, seed: int = 0, order: list[str] | None = None
                     ) -> pd.DataFrame:
    """Per model: each metric as fold mean ± SD and pooled [95% CI] (subject level)."""
    cols = [by, "subject_id", "image_path", "fold", "split", "y", "prob"]
    t = metrics_table(preds[cols], level="subject", threshold=threshold, n_boot=n_boot,
                      seed=seed, by=[by])
    if order:
        t = t.set_index(by).loc[[o for o in order if o in set(t[by])]].reset_index()
    return t


def display_columns(table: pd.DataFrame, by: str = "model_label",
                    metrics: tuple[str, ...] = SHOW) -> pd.DataFrame:
    """The readable columns: model, then 'metric (folds)' and 'metric (pooled, 95% CI)'."""
    out = pd.DataFrame({"model": table[by]})
    for m in metrics:
        out[f"{m} (fold mean ± SD)"] = table[m]
        out[f"{m} (pooled, 95% CI)"] = table[f"{m}_pooled"]
    return out


def paired_auc_tests(preds: pd.DataFrame, reference: str, others: list[str],
                     by: str = "model_label", n_boot: int = 2000, seed: int = 0
                     ) -> pd.DataFrame:
    """DeLong test and subject-bootstrap CI of AUC(reference) - AUC(other), pooled OOF."""
    s = pooled_subject_test(preds, by)
    wide = s.pivot_table(index="subject_id", columns=by, values="prob")
    y = s.groupby("subject_id")["y"].first().loc[wide.index].to_numpy()
    rows = []
    for o in others:
        if o not in wide.columns or reference not in wide.columns:
            continue
        ok = wide[[reference, o]].notna().all(axis=1).to_numpy()
        a, b = wide[reference].to_numpy()[ok], wide[o].to_numpy()[ok]
        d = stats.delong_roc_test(y[ok], a, b)
        bs = stats.paired_bootstrap_auc_diff(y[ok], a, b, n_boot=n_boot, seed=seed)
        rows.append({"comparison": f"{reference} vs {o}", "auc_reference": d["auc_a"],
                     "auc_other": d["auc_b"], "auc_difference": d["diff"],
                     "delong_ci": stats.format_ci(d["diff"], d["ci_low"], d["ci_high"]),
                     "delong_p": d["p_value"],
                     "bootstrap_ci": stats.format_ci(bs["diff"], bs["low"], bs["high"]),
                     "bootstrap_p": bs["p_value"], "n_subjects": int(ok.sum())})
    return pd.DataFrame(rows)


def plot_roc(preds: pd.DataFrame, by: str = "model_label", order: list[str] | None = None,
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
        from sklearn.metrics import roc_auc_score
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


def verdict(table: pd.DataFrame, tests: pd.DataFrame, fused: str, singles: list[str],
            by: str = "model_label") -> str:
    """A plain sentence: does the fused model beat each single modality on this cohort?"""
    t = table.set_index(by)
    parts = []
    for s in singles:
        if s not in t.index or fused not in t.index:
            continue
        row = tests[tests["comparison"] == f"{fused} vs {s}"]
        p = float(row["delong_p"].iloc[0]) if len(row) else np.nan
        diff = t.at[fused, "auc_pooled_est"] - t.at[s, "auc_pooled_est"]
        if diff > 0 and p < 0.05:
            word = "beats"
        elif diff > 0:
            word = "is above, but not significantly (DeLong p = %.3f)," % p
        else:
            word = "does NOT beat" + (" (DeLong p = %.3f)" % p if not np.isnan(p) else "")
        parts.append(f"{fused} {word} {s} (pooled AUC difference {diff:+.3f})")
    return "; ".join(parts) + "."


def label_for(preds: pd.DataFrame, modality: str, model: str, fusion: str | None = None) -> str:
    """The ``model_label`` of the runs with this modality, model (and fusion)."""
    m = (preds["modality"] == modality) & (preds["model"] == model)
    if modality == "multimodal" and fusion:
        m &= preds["fusion"] == fusion
    labels = preds.loc[m, "model_label"].unique()
    if len(labels) != 1:
        raise ValueError(f"expected one model for {modality}/{model}/{fusion}, found {labels}")
    return str(labels[0])


def modality_table(table: pd.DataFrame, labels: dict[str, str], cohort_name: str,
                   paper_auc: dict[str, float], by: str = "model_label") -> pd.DataFrame:
    """Table 3: one row per modality, this run's metrics beside the paper's reported AUC."""
    from .reported import comparison_note
    t = table.set_index(by)
    rows = []
    for modality, lab in labels.items():
        r = t.loc[lab]
        rows.append({"modality": modality, "model": lab,
                     "AUC (fold mean ± SD)": r["auc"], "AUC (pooled, 95% CI)": r["auc_pooled"],
                     "F1 (fold mean ± SD)": r["f1"], "sensitivity (pooled, 95% CI)":
                     r["sensitivity_pooled"], "specificity (pooled, 95% CI)":
                     r["specificity_pooled"], "balanced accuracy (pooled, 95% CI)":
                     r["balanced_accuracy_pooled"],
                     "paper AUC (MGH phyllodes)": paper_auc.get(modality, np.nan),
                     "auc_mean": r["auc_mean"], "auc_sd": r["auc_sd"],
                     "auc_pooled_est": r["auc_pooled_est"], "auc_pooled_low": r["auc_pooled_low"],
                     "auc_pooled_high": r["auc_pooled_high"]})
    out = pd.DataFrame(rows)
    out["note"] = comparison_note(cohort_name)
    return out


TABLE2_METRICS = {"auc": "AUC-ROC", "f1": "F1", "accuracy": "accuracy", "ppv": "precision",
                  "sensitivity": "recall (sensitivity)", "specificity": "specificity"}


def encoder_table(table: pd.DataFrame, encoders: dict[str, str], cohort_name: str,
                  paper: dict[str, dict[str, float]], by: str = "model_label") -> pd.DataFrame:
    """Table 2: per encoder, metrics as fold mean ± SD and pooled [95% CI], paper values beside."""
    from .reported import comparison_note
    t = table.set_index(by)
    rows = []
    for enc, lab in encoders.items():
        r = t.loc[lab]
        row = {"encoder": enc, "model": lab}
        for m, name in TABLE2_METRICS.items():
            row[f"{name} (fold mean ± SD)"] = r[m]
            row[f"{name} (pooled, 95% CI)"] = r[f"{m}_pooled"]
        row["paper AUC"] = paper.get(enc, {}).get("auc", np.nan)
        row["paper F1"] = paper.get(enc, {}).get("f1", np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["note"] = comparison_note(cohort_name)
    return out
