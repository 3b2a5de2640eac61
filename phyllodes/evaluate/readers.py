"""The reader in every comparison: a clinician's assessment beside the model, on the same folds.

A cohort may declare reader references (``cohort.yaml`` ``references``; e.g. the
radiologist's BI-RADS category, :mod:`phyllodes.data.references`). They are never model
inputs; here they are compared with the models, on the very subjects and folds the models are
evaluated on:

* :func:`reader_predictions` turns the reference into prediction rows shaped like a model's
  (one per image, each subject in its outer test fold and in the folds' inner-validation sets),
  so every table, paired DeLong test and ROC curve of the study takes the reader as one more
  row. Its ``prob`` is a monotone map of the category (ties kept, so its AUC is the reader's)
  that puts the clinic's rule (e.g. BI-RADS >= 4a) exactly at 0.5: the threshold-0.5 metrics
  are the rule's. It is a ranking, not a probability: calibration tables leave it out.
* :func:`combined_predictions` asks whether the model adds to the reader: per outer fold, a
  logistic regression on (reader score, model log-odds) fit on that fold's *inner-validation*
  subjects — whose model predictions come from the fold's model, which never trained on them —
  and applied once to the fold's test subjects. No test subject's label, reference or
  prediction enters the fit that predicts it.
* :func:`reader_operating_points` (the clinic's thresholds, e.g. >= 4a, >= 4b, >= 4c),
  :func:`model_at_reader_sensitivity` (the model's threshold chosen per fold on inner
  validation to match the reader's sensitivity there; benign subjects spared excision against
  the reader's rule, with a paired subject-bootstrap CI) and the *downgrade* question: among the
  lesions of given categories (e.g. BI-RADS 4a, or 3-4a), how many benign ones the model would
  spare and how many cancers it would miss.

Every result says on how many subjects it rests (subjects without a reference value are left
out of that reference's comparisons).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from phyllodes.data.references import ReferenceSpec
from phyllodes.evaluate import stats
from phyllodes.evaluate.metrics import sensitivity_of, specificity_of, subject_level
from phyllodes.keys import model_key

_KEYS = ["subject_id", "image_path", "fold", "split", "y"]


def reader_label(ref: ReferenceSpec) -> str:
    """The display label of a reader reference in the tables."""
    return f"{ref.title} (reader)"


def rule_prob(ref: ReferenceSpec, score: np.ndarray) -> np.ndarray:
    """The reference's score mapped monotonically into [0, 1] with the clinic's threshold at
    exactly 0.5 (categories below it in [0, 0.5), at or above it in [0.5, 1]); without a rule,
    the score scaled to [0, 1]."""
    s = np.asarray(score, dtype=float)
    if ref.type == "probability":
        if ref.threshold is None:
            return s
        t = ref.threshold
        return np.where(s < t, 0.5 * s / t, 0.5 + 0.5 * (s - t) / (1 - t))
    top = len(ref.order) - 1
    if ref.threshold is None:
        return s / top
    t = ref.threshold
    low = 0.5 * s / t if t > 0 else np.zeros_like(s)
    high = 0.5 + 0.5 * (s - t) / (top - t) if top > t else np.ones_like(s)
    return np.where(s < t, low, high)


def reader_predictions(model_preds: pd.DataFrame, reference: pd.DataFrame, ref: ReferenceSpec
                       ) -> pd.DataFrame:
    """Prediction rows of the reader shaped like ``model_preds`` (the images, folds and splits
    of one model's runs), ``prob`` = :func:`rule_prob` of the subject's reference score.
    Subjects without a reference value are left out. ``reference``: per subject
    (:meth:`phyllodes.data.cohort.Cohort.reference_table`)."""
    rows = model_preds[_KEYS].drop_duplicates()
    score = reference.set_index("subject_id")["score"]
    s = rows["subject_id"].map(score).to_numpy(dtype=float)
    keep = ~np.isnan(s)
    out = rows[keep].assign(prob=rule_prob(ref, s[keep]))
    label = reader_label(ref)
    return out.assign(modality="reader", model=ref.name, fusion="", seed=0, pretrained=True,
                      model_key=model_key("reader", ref.name), model_label=label,
                      run_id=f"reader:{ref.name}").reset_index(drop=True)


def _logit(p) -> np.ndarray:
    return stats.logit(p, eps=1e-6)


def combined_predictions(model_preds: pd.DataFrame, reference: pd.DataFrame, ref: ReferenceSpec,
                         label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reader and the model combined (see the module docstring): per fold, a logistic
    regression on the standardised reader score and model log-odds, fit on the fold's
    inner-validation subjects, predicting its test subjects (``split='test'``; the val rows
    carry the in-sample fit, for nothing but thresholds). Returns (prediction rows labelled
    ``label``, the coefficients per fold)."""
    subj = subject_level(model_preds[[*_KEYS, "prob"]])
    score = reference.set_index("subject_id")["score"]
    subj = subj.assign(score=subj["subject_id"].map(score).astype(float))
    subj = subj[subj["score"].notna()]
    frames, coefs = [], []
    for fold, g in subj.groupby("fold", sort=True):
        val = g[g["split"] == "val"]
        x_val = np.column_stack([val["score"], _logit(val["prob"])])
        mu, sd = x_val.mean(0), x_val.std(0) + 1e-9
        if val["y"].nunique() < 2:
            raise ValueError(f"fold {fold}: the inner-validation subjects hold one class: the "
                             "reader-plus-model combination cannot be fit there")
        lr = LogisticRegression(C=1.0, max_iter=5000).fit((x_val - mu) / sd, val["y"])
        x = np.column_stack([g["score"], _logit(g["prob"])])
        frames.append(g.assign(prob=lr.predict_proba((x - mu) / sd)[:, 1]))
        coefs.append({"fold": int(fold), "reader": float(lr.coef_[0][0] / sd[0]),
                      "model_log_odds": float(lr.coef_[0][1] / sd[1]),
                      "n_fit_subjects": int(len(val))})
    subj = pd.concat(frames, ignore_index=True)
    # back to image rows (a subject's images share its combined probability)
    rows = model_preds[_KEYS].drop_duplicates().merge(
        subj[["subject_id", "fold", "split", "prob"]], on=["subject_id", "fold", "split"])
    models = sorted(set(model_preds["model_key"])) if "model_key" in model_preds else ["model"]
    out = rows.assign(modality="reader+model", model=f"{ref.name}+model", fusion="", seed=0,
                      pretrained=True,
                      model_key=model_key("reader+model", f"{ref.name}+{'+'.join(models)}"),
                      model_label=label, run_id=f"combined:{ref.name}")
    return out, pd.DataFrame(coefs)


def reader_auc(reference: pd.DataFrame, subjects=None, n_boot: int = 1000, seed: int = 0
               ) -> dict:
    """AUC of the reader's score (ties count half) with a subject-bootstrap 95% CI, on
    ``subjects`` (default: all with a value) — and on how many it rests."""
    r = reference[reference["score"].notna()]
    if subjects is not None:
        r = r[r["subject_id"].isin(set(subjects))]
    if r["y"].nunique() < 2:
        return {"estimate": np.nan, "low": np.nan, "high": np.nan, "n": int(len(r)),
                "n_positive": int(r["y"].sum())}
    ci = stats.cluster_bootstrap_ci(roc_auc_score, r["y"].to_numpy(), r["score"].to_numpy(),
                                    groups=r["subject_id"].to_numpy(), n_boot=n_boot, seed=seed)
    return {**ci, "n": int(len(r)), "n_positive": int(r["y"].sum())}


def _boot_ci(fn, y, pos, groups, n_boot, seed) -> str:
    ci = stats.cluster_bootstrap_ci(fn, y, pos, groups=groups, n_boot=n_boot, seed=seed)
    return stats.format_ci(ci["estimate"], ci["low"], ci["high"])


def reader_operating_points(reference: pd.DataFrame, ref: ReferenceSpec,
                            categories: list[str] | None = None, n_boot: int = 1000,
                            seed: int = 0) -> pd.DataFrame:
    """The clinic's rules "category >= c" for each ``c`` (default: the declared rule's
    category and every higher one but the top): sensitivity and benign subjects
    spared excision with subject-bootstrap CIs, benign excisions and cancers missed, and the
    subjects it rests on."""
    r = reference[reference["score"].notna()]
    if ref.type != "ordinal":
        cats = [ref.positive_from] if ref.positive_from is not None else [0.5]
    elif categories is None:
        start = ref.order.index(ref.positive_from) if ref.positive_from else 1
        cats = list(ref.order[start:-1]) or [ref.order[-1]]
    else:
        cats = categories
    y, g = r["y"].to_numpy(int), r["subject_id"].to_numpy()
    rows = []
    for c in cats:
        t = ref.score_of(str(c)) if ref.type == "ordinal" else float(c)
        pos = (r["score"].to_numpy() >= t).astype(float)
        rows.append({"rule": f"{ref.title} >= {c}",
                     "sensitivity (95% CI)": _boot_ci(sensitivity_of, y, pos, g, n_boot, seed),
                     "benign spared excision (95% CI)": _boot_ci(specificity_of, y, pos, g, n_boot,
                                                                  seed),
                     "benign excised": int(((y == 0) & (pos == 1)).sum()),
                     "benign spared": int(((y == 0) & (pos == 0)).sum()),
                     "malignant missed": int(((y == 1) & (pos == 0)).sum()),
                     "subjects": int(len(r)), "benign": int((y == 0).sum()),
                     "positive": int((y == 1).sum())})
    return pd.DataFrame(rows)


def model_at_reader_sensitivity(model_preds: pd.DataFrame, reference: pd.DataFrame,
                                ref: ReferenceSpec) -> pd.DataFrame:
    """Per test subject with a reference value: the model's decision at a threshold chosen per
    fold on that fold's inner-validation subjects to reach the reader's sensitivity *there*
    (the clinic's rule, :attr:`ReferenceSpec.threshold`), and the reader's decision. Columns
    ``subject_id``, ``fold``, ``y``, ``prob``, ``threshold``, ``target_sensitivity``, ``model``
    (1 = excise), ``reader`` (1 = excise), ``category``."""
    if ref.threshold is None:
        raise ValueError(f"reference '{ref.name}' declares no rule (positive_from)")
    subj = subject_level(model_preds[[*_KEYS, "prob"]])
    ref_s = reference.set_index("subject_id")
    subj = subj[subj["subject_id"].isin(ref_s.index[ref_s["score"].notna()])]
    subj = subj.assign(score=subj["subject_id"].map(ref_s["score"]).astype(float),
                       category=subj["subject_id"].map(ref_s["category"]))
    out = []
    for fold, g in subj.groupby("fold", sort=True):
        val, test = g[g["split"] == "val"], g[g["split"] == "test"]
        target = float((val.loc[val["y"] == 1, "score"] >= ref.threshold).mean())
        thr = stats.threshold_for_sensitivity(val["y"], val["prob"], max(target, 1e-9))
        out.append(test.assign(threshold=thr, target_sensitivity=target,
                               model=(test["prob"] >= thr).astype(int),
                               reader=(test["score"] >= ref.threshold).astype(int)))
    return pd.concat(out, ignore_index=True)[
        ["subject_id", "fold", "y", "prob", "threshold", "target_sensitivity", "model",
         "reader", "category"]]


def _paired_spared_diff(decisions: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Benign spared by the model minus by the reader, with a paired subject-bootstrap CI."""
    benign = decisions[decisions["y"] == 0]
    d = (1 - benign["model"].to_numpy()) - (1 - benign["reader"].to_numpy())
    rng = np.random.default_rng(seed)
    reps = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)] if len(d) else []
    low, high = (np.quantile(reps, [0.025, 0.975]) if len(reps) else (np.nan, np.nan))
    return {"estimate": float(d.mean()) if len(d) else np.nan, "low": float(low),
            "high": float(high)}


def reader_operating_table(reference: pd.DataFrame, ref: ReferenceSpec,
                           models: dict[str, pd.DataFrame], downgrade: list[list[str]] | None,
                           n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Table 5b: the clinic's thresholds, then per model (``label -> its predictions``) its
    decisions at the reader's sensitivity against the reader's rule (benign spared, cancers
    missed, the paired difference in benign spared), then the downgrade question for each
    group of categories in ``downgrade`` (e.g. [["4a"], ["3", "4a"]]): among those lesions,
    benign spared and cancers missed by the model."""
    rows = reader_operating_points(reference, ref, n_boot=n_boot, seed=seed).assign(
        kind="reader's rule").to_dict("records")
    for label, preds in models.items():
        dec = model_at_reader_sensitivity(preds, reference, ref)
        y, m, g = dec["y"].to_numpy(int), dec["model"].to_numpy(float), dec["subject_id"]
        diff = _paired_spared_diff(dec, n_boot, seed)
        rows.append({"kind": "model at the reader's sensitivity (threshold per fold on inner "
                             "validation)",
                     "rule": f"{label} >= its fold's threshold (reader's sensitivity "
                             f"{dec.groupby('fold')['target_sensitivity'].first().mean():.3f} "
                             "on inner validation)",
                     "sensitivity (95% CI)": _boot_ci(sensitivity_of, y, m, g.to_numpy(),
                                                      n_boot, seed),
                     "benign spared excision (95% CI)": _boot_ci(specificity_of, y, m, g.to_numpy(),
                                                                  n_boot, seed),
                     "benign excised": int(((y == 0) & (m == 1)).sum()),
                     "benign spared": int(((y == 0) & (m == 0)).sum()),
                     "malignant missed": int(((y == 1) & (m == 0)).sum()),
                     "spared minus the reader's rule (paired 95% CI)": stats.format_ci(
                         diff["estimate"], diff["low"], diff["high"]),
                     "subjects": int(len(dec)), "benign": int((y == 0).sum()),
                     "positive": int((y == 1).sum())})
        for cats in downgrade or []:
            sub = dec[dec["category"].isin([str(c) for c in cats])]
            ys, ms, gs = sub["y"].to_numpy(int), sub["model"].to_numpy(float), sub["subject_id"]
            name = " or ".join(str(c) for c in cats)
            rows.append({"kind": f"downgrade: {ref.title} {name}",
                         "rule": f"{label} below its threshold among {ref.title} {name}",
                         "benign spared excision (95% CI)": _boot_ci(
                             specificity_of, ys, ms, gs.to_numpy(), n_boot, seed)
                         if (ys == 0).any() else "undefined (no benign)",
                         "sensitivity (95% CI)": _boot_ci(sensitivity_of, ys, ms, gs.to_numpy(),
                                                          n_boot, seed)
                         if (ys == 1).any() else "undefined (no cancer)",
                         "benign excised": int(((ys == 0) & (ms == 1)).sum()),
                         "benign spared": int(((ys == 0) & (ms == 0)).sum()),
                         "malignant missed": int(((ys == 1) & (ms == 0)).sum()),
                         "subjects": int(len(sub)), "benign": int((ys == 0).sum()),
                         "positive": int((ys == 1).sum())})
    cols = ["kind", "rule", "sensitivity (95% CI)", "benign spared excision (95% CI)",
            "spared minus the reader's rule (paired 95% CI)", "benign excised",
            "benign spared", "malignant missed", "subjects", "benign", "positive"]
    return pd.DataFrame(rows).reindex(columns=cols).fillna("")


def reader_net_benefit(reference: pd.DataFrame, ref: ReferenceSpec, thresholds) -> pd.DataFrame:
    """Net benefit of the clinic's rule (excise when the reference is at or above its rule) at
    each threshold probability: a fixed decision, TP/n - FP/n * t / (1 - t)."""
    r = reference[reference["score"].notna()]
    y = r["y"].to_numpy(int)
    pos = (r["score"].to_numpy() >= ref.threshold)
    t = np.asarray(thresholds, dtype=float)
    n = len(y)
    tp, fp = float(((y == 1) & pos).sum()), float(((y == 0) & pos).sum())
    return pd.DataFrame({"threshold": t, "net_benefit": tp / n - fp / n * t / (1 - t)})


def no_reference_note(cohort_name: str) -> pd.DataFrame:
    """The one-row table a cohort without a reader reference gets (no silent gap)."""
    return pd.DataFrame([{"comparison": "reader reference",
                          "note": f"no reader reference declared for cohort {cohort_name} "
                                  "(cohort.yaml 'references'): the model is compared with "
                                  "models only"}])


class Reader:
    """A cohort's first declared reader reference, ready for the study's tables: its spec,
    per-subject table and display label (see :func:`study_reader`)."""

    def __init__(self, spec: ReferenceSpec, table: pd.DataFrame):
        self.spec, self.table = spec, table
        self.label = reader_label(spec)

    @property
    def n_subjects(self) -> int:
        return int(self.table["score"].notna().sum())

    def rows(self, preds: pd.DataFrame) -> pd.DataFrame:
        """The reader's prediction rows on the images, folds and splits of ``preds`` (the
        first model's runs; every model of a study shares its folds and inner splits)."""
        first = preds[preds["model_label"] == preds["model_label"].iloc[0]]
        return reader_predictions(first, self.table, self.spec)

    def combined(self, preds: pd.DataFrame, model_label: str) -> tuple[pd.DataFrame, str]:
        """:func:`combined_predictions` of the reader with model ``model_label``: its rows and
        label."""
        label = f"the reader + {model_label} (logistic regression fit on inner validation)"
        rows, _ = combined_predictions(preds[preds["model_label"] == model_label], self.table,
                                       self.spec, label)
        return rows, label


def study_reader(cohort) -> Reader | None:
    """The cohort's first declared reader reference (None when it declares none)."""
    if not cohort.references:
        return None
    name = next(iter(cohort.references))
    return Reader(cohort.references[name], cohort.reference_table(name))


def reader_comparison(preds: pd.DataFrame, reader: Reader, models: dict[str, str],
                      n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Table 3e: the reader's AUC, and for each model (``row name -> model label`` in
    ``preds``) the model against the reader and the reader-plus-model combination against the
    reader alone: AUCs, the difference with its DeLong CI and p-value, a paired subject
    bootstrap, and the subjects each comparison rests on (those with a reference value)."""
    from phyllodes.evaluate.comparisons import pooled_subject_test
    rows = []
    ref_rows = reader.rows(preds)
    auc = reader_auc(reader.table, ref_rows["subject_id"].unique(), n_boot, seed)
    rows.append({"comparison": f"{reader.label} alone", "auc_first": auc["estimate"],
                 "auc_second": np.nan,
                 "AUC (95% CI)": stats.format_ci(auc["estimate"], auc["low"], auc["high"]),
                 "difference (DeLong 95% CI)": "", "delong_p": np.nan,
                 "difference (bootstrap 95% CI)": "", "bootstrap_p": np.nan,
                 "n_subjects": auc["n"], "verdict": ""})
    for name, label in models.items():
        comb, comb_label = reader.combined(preds, label)
        both = pd.concat([preds[preds["model_label"] == label], ref_rows, comb],
                         ignore_index=True)
        s = pooled_subject_test(both)
        wide = s.pivot_table(index="subject_id", columns="model_label", values="prob").dropna()
        y = s.groupby("subject_id")["y"].first().loc[wide.index].to_numpy()
        for first, what in ((label, f"{name} vs the reader"),
                            (comb_label, f"the reader + {name} vs the reader alone")):
            a, b = wide[first].to_numpy(), wide[reader.label].to_numpy()
            d = stats.delong_roc_test(y, a, b)
            bs = stats.paired_bootstrap_auc_diff(y, a, b, n_boot=n_boot, seed=seed)
            verdict = ("better than the reader" if d["ci_low"] > 0 else
                       "worse than the reader" if d["ci_high"] < 0 else
                       "not distinguishable from the reader")
            rows.append({"comparison": what, "auc_first": d["auc_a"], "auc_second": d["auc_b"],
                         "AUC (95% CI)": "", "difference (DeLong 95% CI)": stats.format_ci(
                             d["diff"], d["ci_low"], d["ci_high"]),
                         "delong_p": d["p_value"],
                         "difference (bootstrap 95% CI)": stats.format_ci(
                             bs["diff"], bs["low"], bs["high"]),
                         "bootstrap_p": bs["p_value"], "n_subjects": int(len(y)),
                         "verdict": verdict})
    return pd.DataFrame(rows)


def rule_points(reader: Reader, subjects=None) -> list[tuple[str, float, float]]:
    """The reader's operating points (rule name, 1 - specificity, sensitivity) for each of the
    clinic's thresholds (:func:`reader_operating_points`' rules), on ``subjects``."""
    r = reader.table[reader.table["score"].notna()]
    if subjects is not None:
        r = r[r["subject_id"].isin(set(subjects))]
    ref, out = reader.spec, []
    cats = (list(ref.order[ref.order.index(ref.positive_from):-1]) or [ref.order[-1]]) \
        if ref.type == "ordinal" and ref.positive_from else []
    y, s = r["y"].to_numpy(int), r["score"].to_numpy(float)
    for c in cats:
        pos = s >= ref.score_of(c)
        out.append((f">= {c}", float(pos[y == 0].mean()), float(pos[y == 1].mean())))
    return out


def downgrade_groups(ref: ReferenceSpec) -> list[list[str]]:
    """The categories of the downgrade question: the rule's category alone, and with the one
    below it (BI-RADS 4a, and 3-4a)."""
    if ref.type != "ordinal" or not ref.positive_from:
        return []
    i = ref.order.index(ref.positive_from)
    return [[ref.positive_from]] + ([[ref.order[i - 1], ref.positive_from]] if i > 0 else [])
