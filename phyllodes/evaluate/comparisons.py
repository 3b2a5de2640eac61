"""Comparing cross-validated models: subject-level predictions, metric tables, calibration and
clinical-utility computations.

Everything here works on the predictions of :func:`phyllodes.train.runs.load_predictions` (one row
per image and run) and looks at subject-level, out-of-fold test results (a subject's
probability is the mean over its images). Anything fit — a recalibration map, an operating
threshold — is fit on a fold's inner-validation subjects (``split == 'val'``) and applied to
that fold's test subjects, never fit on test subjects.

Why recalibration matters here: class-aware sampling (the paper profile's) trains the network
as if the classes were equally frequent, which shifts its probabilities towards the minority
class (too high for borderline/malignant when they are rarer than benign); the quick recipe
draws every image once per epoch, but nothing in it is fit for calibration either. Ranking
metrics (AUC) are unaffected; probabilities, Brier score, calibration intercept and decision
curves are not.

The paper's tables and figures are assembled from these by :mod:`phyllodes.report.tables` and
:mod:`phyllodes.report.figures`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phyllodes.evaluate import stats
from phyllodes.evaluate.metrics import metrics_table, subject_level
from phyllodes.keys import model_key, probe_name, variant_key


def check_identity(preds: pd.DataFrame) -> pd.DataFrame:
    """``preds``, after checking that its display labels and model keys are one to one: tables
    name their rows by ``model_label``, so two models under one label would be pooled into one
    row, and one model under two labels split into two. Frames without a ``model_key`` column
    (made by hand) are passed through."""
    if "model_key" not in preds.columns or "model_label" not in preds.columns:
        return preds
    pairs = preds[["model_key", "model_label"]].drop_duplicates()
    for col, other in (("model_label", "model_key"), ("model_key", "model_label")):
        n = pairs.groupby(col, sort=False)[other].nunique()
        if (n > 1).any():
            name = n[n > 1].index[0]
            found = sorted(pairs.loc[pairs[col] == name, other])
            raise ValueError(
                f"predictions name {col} {name!r} with several {other}s {found}: a table row "
                "must be one model; give each model its own key and label "
                "(comparisons.as_variant for a recipe variant)")
    return preds


def as_variant(preds: pd.DataFrame, variant: str, label: str | None = None) -> pd.DataFrame:
    """``preds`` renamed as a variant of their model (an ablated recipe, one of several seeds):
    ``model_key`` becomes ``<key>@<variant>`` (:func:`phyllodes.keys.variant_key`) and
    ``model_label`` ``label`` (default: the variant's name)."""
    return preds.assign(model_key=[variant_key(k, variant) for k in preds["model_key"]],
                        model_label=variant if label is None else label)


def subject_predictions(preds: pd.DataFrame, by: str = "model_label") -> pd.DataFrame:
    """One row per model, fold, split and subject (mean probability over its images); the
    models' labels and keys must be one to one (:func:`check_identity`)."""
    check_identity(preds)
    keep = [by, "subject_id", "image_path", "fold", "split", "y", "prob"]
    return subject_level(preds[keep])


def pooled_subject_test(preds: pd.DataFrame, by: str = "model_label") -> pd.DataFrame:
    """One row per (model, subject) of the out-of-fold test predictions."""
    s = subject_predictions(preds, by)
    return s[s["split"] == "test"].drop(columns="split")


def comparison_table(preds: pd.DataFrame, by: str = "model_label", threshold: str = "0.5",
                     n_boot: int = 1000, seed: int = 0, order: list[str] | None = None
                     ) -> pd.DataFrame:
    """Per model: each metric as fold mean ± SD and pooled [95% CI] (subject level); the
    models' labels and keys must be one to one (:func:`check_identity`)."""
    check_identity(preds)
    cols = [by, "subject_id", "image_path", "fold", "split", "y", "prob"]
    t = metrics_table(preds[cols], level="subject", threshold=threshold, n_boot=n_boot,
                      seed=seed, by=[by])
    if order:
        t = t.set_index(by).loc[[o for o in order if o in set(t[by])]].reset_index()
    return t


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


def label_for(preds: pd.DataFrame, modality: str, model: str, fusion: str | None = None,
              pretrained: bool | None = None) -> str:
    """The display label of the model whose key (:func:`phyllodes.keys.model_key`) is
    ``modality/model`` (``/fusion`` for a multimodal one): the rows are found by the
    predictions' ``model_key`` column, never by searching labels. ``pretrained=None`` takes
    the one initialisation the predictions hold (both, pretrained and random-init runs of the
    model, are an error asking to say which)."""
    if pretrained is None:
        keys = {model_key(modality, model, fusion, p) for p in (True, False)}
        found = sorted(set(preds["model_key"]) & keys)
        if len(found) > 1:
            raise ValueError(f"predictions hold {found}: pass pretrained=True or False")
        key = found[0] if found else model_key(modality, model, fusion)
    else:
        key = model_key(modality, model, fusion, pretrained)
    labels = preds.loc[preds["model_key"] == key, "model_label"].unique()
    if len(labels) != 1:
        raise ValueError(f"expected one model with key {key}, found labels {list(labels)}")
    return str(labels[0])


def recalibrate_per_fold(subj: pd.DataFrame, by: str = "model_label") -> pd.DataFrame:
    """Add ``prob_recal``: Platt recalibration fit on each fold's val subjects, applied to
    that fold's rows."""
    out = []
    for _, g in subj.groupby([by, "fold"], sort=False):
        val = g[g["split"] == "val"]
        f = stats.fit_platt_recalibration(val["y"], val["prob"])
        out.append(g.assign(prob_recal=f(g["prob"].to_numpy())))
    return pd.concat(out).sort_index()


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


def baselines_late_fusion(preds: pd.DataFrame, encoder: str, label: str
                          ) -> tuple[pd.DataFrame, list[str]]:
    """The late fusion (:func:`late_fusion`) of the two simple baselines, the clinical logistic
    regression and the image linear probe of ``encoder``: its prediction rows labelled
    ``label``, and the two baselines' labels."""
    pair = [label_for(preds, "clinical", "logreg"), label_for(preds, "image",
                                                              probe_name(encoder))]
    return late_fusion(preds, pair, label), pair


def late_fusion(preds: pd.DataFrame, labels: list[str], label: str) -> pd.DataFrame:
    """The late fusion of finished models: per image, the mean of their predicted log-odds
    (nothing is fit, so nothing can leak). Returns prediction rows (inner-validation and test)
    with ``model_label`` = ``label``, to concatenate with ``preds``."""
    check_identity(preds)
    keys = ["subject_id", "image_path", "fold", "split", "y"]
    parts = [preds[preds["model_label"] == lab].set_index(keys)["prob"] for lab in labels]
    if any(p.empty for p in parts):
        missing = [lab for lab, p in zip(labels, parts) if p.empty]
        raise ValueError(f"late fusion needs the predictions of {missing}")
    logits = [pd.Series(stats.logit(p, eps=1e-6), index=p.index) for p in parts]
    mean = pd.concat(logits, axis=1, join="inner").mean(axis=1)
    out = (1 / (1 + np.exp(-mean))).rename("prob").reset_index()
    first = preds[preds["model_label"] == labels[0]].drop_duplicates("modality")
    part_keys = [str(preds.loc[preds["model_label"] == lab, "model_key"].iloc[0])
                 if "model_key" in preds.columns else lab for lab in labels]
    return out.assign(modality="multimodal", model="late_fusion", fusion="late",
                      seed=int(first["seed"].iloc[0]), pretrained=bool(first["pretrained"].iloc[0]),
                      model_key=model_key("multimodal", f"late_fusion[{'+'.join(part_keys)}]",
                                          "late"),
                      model_label=label, run_id="late-fusion:" + "+".join(labels))
