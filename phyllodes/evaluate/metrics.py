"""Classification metrics of cross-validated predictions: per image or per subject, per fold
(mean ± SD over folds) and pooled out-of-fold (with subject-level cluster-bootstrap CIs).

Predictions (one row per image, as each training run writes them) have the columns
``subject_id``, ``image_path``, ``fold`` (the run's outer test fold), ``split`` ('val' = the
inner-validation subjects of that fold's training set, 'test' = the outer test fold), ``y`` (0/1)
and ``prob`` (probability of class 1, borderline/malignant). Several runs may be concatenated
with extra identifying columns; the column(s) that name a model are ``by`` (default: ``model``
when that column exists).

A subject or image is predicted positive when ``prob >= threshold``. The threshold is either a
fixed number ("0.5") or, with ``threshold="inner"``, chosen per fold on that fold's
inner-validation rows (never on test rows) at the same level (image or subject). Undefined
metrics (AUC with one class, PPV with no predicted positives, ...) are NaN.

Point estimates use scikit-learn's metric functions. Bootstrap replicates use small numpy
equivalents (``_FAST_METRICS``, tested equal to scikit-learn) because scikit-learn's input
validation costs ~1 ms a call, i.e. minutes for a table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from phyllodes.evaluate.stats import binary_labels, cluster_bootstrap_ci, format_ci, format_mean_sd

__all__ = [
    "METRICS",
    "THRESHOLD_METRICS",
    "binary_metrics",
    "subject_level",
    "choose_threshold",
    "fold_metrics",
    "summarize_folds",
    "pooled_metrics",
    "metrics_table",
    "subject_auc",
]

#: Metric names, in the order tables show them.
METRICS: tuple[str, ...] = (
    "auc",
    "auprc",
    "f1",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
)
#: Metrics of predicted labels (depend on the threshold); auc and auprc use probabilities.
THRESHOLD_METRICS: tuple[str, ...] = METRICS[2:]

PREDICTION_COLUMNS = ("subject_id", "image_path", "fold", "split", "y", "prob")
_PER_IMAGE = ("image_path", "prob")
_LEVELS = ("subject", "image")
_TIE_ATOL = 1e-12


# --------------------------------------------------------------------------- one set of predictions


def sensitivity_of(y, positive) -> float:
    """Share of the positives (``y`` = 1) called positive (``positive`` True); NaN without
    positives."""
    y, positive = np.asarray(y), np.asarray(positive, dtype=bool)
    return float(positive[y == 1].mean()) if (y == 1).any() else np.nan


def specificity_of(y, positive) -> float:
    """Share of the negatives called negative (benign subjects spared excision); NaN without
    negatives."""
    y, positive = np.asarray(y), np.asarray(positive, dtype=bool)
    return float(1 - positive[y == 0].mean()) if (y == 0).any() else np.nan


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else np.nan


def _rates(tn: float, fp: float, fn: float, tp: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV from confusion counts (NaN when undefined)."""
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def _check_probs(prob, n: int) -> np.ndarray:
    p = np.asarray(prob, dtype=float).ravel()
    if p.shape[0] != n:
        raise ValueError(f"prob has {p.shape[0]} values but y_true has {n}")
    if not np.isfinite(p).all():
        raise ValueError(f"prob has {int((~np.isfinite(p)).sum())} missing or infinite values")
    return p


def _metrics_from_labels(y: np.ndarray, prob: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of METRICS (scikit-learn), plus ``n`` and ``n_pos``; NaN where undefined."""
    n, n_pos = int(y.shape[0]), int(y.sum())
    out = dict.fromkeys(METRICS, np.nan)
    if n:
        both = 0 < n_pos < n
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            out.update(
                auc=float(roc_auc_score(y, prob)) if both else np.nan,
                auprc=float(average_precision_score(y, prob)) if n_pos else np.nan,
                f1=float(f1_score(y, pred, labels=[0, 1], zero_division=np.nan)),
                accuracy=float(accuracy_score(y, pred)),
                balanced_accuracy=float(balanced_accuracy_score(y, pred)) if both else np.nan,
            )
        out.update(_rates(tn, fp, fn, tp))
    out.update(n=n, n_pos=n_pos)
    return out


def binary_metrics(y_true, prob, threshold: float = 0.5) -> dict[str, float]:
    """Returns a dict with every metric of METRICS plus ``threshold``, ``n`` and ``n_pos``.

    Positive prediction: ``prob >= threshold``. Undefined values are NaN without warnings: auc
    and balanced_accuracy need both classes, auprc a positive, f1 any positive or predicted
    positive, sensitivity/specificity/ppv/npv a nonzero denominator.
    """
    y = binary_labels(y_true)
    p = _check_probs(prob, y.shape[0])
    out = _metrics_from_labels(y, p, (p >= threshold).astype(int))
    return {
        **{m: out[m] for m in METRICS},
        "threshold": float(threshold),
        "n": out["n"],
        "n_pos": out["n_pos"],
    }


# --------------------------------------------------------------------------- fast replicates


def _counts(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(tn, fp, fn, tp) as floats."""
    return np.bincount(2 * y.astype(int) + (pred >= 0.5).astype(int), minlength=4).astype(float)


def _fast_label_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """metric_fn(y, predicted_label) for the bootstrap; equals the scikit-learn value."""

    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        tn, fp, fn_, tp = _counts(y, pred)
        n = tn + fp + fn_ + tp
        if name == "f1":
            return _ratio(2 * tp, 2 * tp + fp + fn_)
        if name == "accuracy":
            return _ratio(tp + tn, n)
        if name == "balanced_accuracy":
            r = _rates(tn, fp, fn_, tp)
            return 0.5 * (r["sensitivity"] + r["specificity"])
        return _rates(tn, fp, fn_, tp)[name]

    fn.__name__ = f"fast_{name}"
    return fn


def _fast_average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """sklearn's average_precision_score (step-wise, ties grouped); NaN without positives."""
    y = np.asarray(y).astype(int)
    order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]  # last row of each distinct score
    tps = np.cumsum(yy)[last].astype(float)
    if tps.size == 0 or tps[-1] == 0:
        return np.nan
    precision = tps / (last + 1)
    recall_gain = np.diff(np.r_[0.0, tps]) / tps[-1]
    return float(np.sum(recall_gain * precision))


_FAST_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc": roc_auc_score,  # cluster_bootstrap_ci's vectorised path
    "auprc": _fast_average_precision,
    **{m: _fast_label_metric(m) for m in THRESHOLD_METRICS},
}


# --------------------------------------------------------------------------- frames


def _require(preds: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in preds.columns]
    if missing:
        raise ValueError(
            f"predictions lack column(s) {missing}; expected {list(PREDICTION_COLUMNS)}"
        )
    for c in columns:
        na = preds[c].isna().to_numpy()
        if na.any():
            rows = preds.index[na][:5].tolist()
            raise ValueError(
                f"predictions column {c!r} has {int(na.sum())} missing value(s), "
                f"e.g. at rows {rows}"
            )
    bad_y = ~preds["y"].isin([0, 1]).to_numpy() if "y" in columns else np.zeros(len(preds), bool)
    if bad_y.any():
        raise ValueError(
            f"predictions column 'y' must be 0/1; rows {preds.index[bad_y][:5].tolist()} are not"
        )


def subject_level(preds: pd.DataFrame) -> pd.DataFrame:
    """Returns one row per subject and run: every column but image_path/prob, the mean ``prob``
    over the subject's images and ``n_images``.

    Rows are grouped by every column except image_path, prob and y (so drop per-image columns
    other than those first). NaN in extra identifying columns form their own groups (no row is
    dropped). Raises ValueError naming the subject(s) whose ``y`` differs between images (or
    folds) of one run.
    """
    _require(preds, ("subject_id", "fold", "split", "y", "prob"))
    keys = [c for c in preds.columns if c not in (*_PER_IMAGE, "y")]
    run_keys = [c for c in keys if c not in ("fold", "split")]
    n_y = preds.groupby(run_keys, dropna=False, sort=False, observed=True)["y"].nunique()
    if (n_y > 1).any():
        bad = n_y[n_y > 1].index.to_frame(index=False)["subject_id"].unique().tolist()
        raise ValueError(
            f"y differs between images/folds of subject(s) {bad[:10]}"
            f"{' ...' if len(bad) > 10 else ''}; fix the labels in the predictions"
        )
    out = (
        preds.groupby(keys, dropna=False, sort=False, observed=True)
        .agg(y=("y", "first"), prob=("prob", "mean"), n_images=("prob", "size"))
        .reset_index()
    )
    if int(out["n_images"].sum()) != len(preds):  # pragma: no cover - guards against pandas changes
        raise RuntimeError("subject_level lost rows while grouping")
    columns = [c for c in preds.columns if c != "image_path"] + ["n_images"]
    return out[columns]


def _model_columns(df: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    cols = (["model"] if "model" in df.columns else []) if by is None else list(by)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"by column(s) {missing} not in the predictions")
    for c in cols:
        if df[c].isna().any():
            raise ValueError(
                f"model column {c!r} has missing values; fill them before computing metrics"
            )
    return cols


def _at_level(preds: pd.DataFrame, level: str) -> pd.DataFrame:
    if level == "subject":
        return subject_level(preds)
    if level == "image":
        _require(preds, ("subject_id", "fold", "split", "y", "prob"))
        return preds
    raise ValueError(f"level must be one of {_LEVELS}, not {level!r}")


def _fixed_threshold(threshold: str | float) -> float | None:
    """The fixed threshold, or None for 'inner'."""
    if isinstance(threshold, str) and threshold == "inner":
        return None
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(
            f"threshold must be 'inner' or a number such as '0.5', not {threshold!r}"
        ) from None
    if not 0 <= t <= 1:
        raise ValueError(f"threshold must lie in [0, 1], not {t}")
    return t


def choose_threshold(y_true, prob, method: str = "youden") -> float:
    """Returns the threshold (in [0, 1]) maximising Youden's J (``method='youden'``) or F1
    (``'f1'``) over roc_curve's thresholds; ties go to the threshold closest to 0.5 (then the
    higher one). Use it on inner-validation rows only. Needs both classes.
    """
    y = binary_labels(y_true)
    p = _check_probs(prob, y.shape[0])
    n_pos = int(y.sum())
    if not 0 < n_pos < y.shape[0]:
        raise ValueError("choose_threshold needs both classes in y_true")
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)  # thresholds decreasing, first inf
    if method == "youden":
        score = tpr - fpr
    elif method == "f1":
        tp, fp = tpr * n_pos, fpr * (y.shape[0] - n_pos)
        score = 2 * tp / (tp + fp + n_pos)
    else:
        raise ValueError(f"method must be 'youden' or 'f1', not {method!r}")
    cand = np.clip(thr[np.isclose(score, score.max(), rtol=0, atol=_TIE_ATOL)], 0.0, 1.0)
    return float(cand[np.argmin(np.abs(cand - 0.5))])


def _scored_test_rows(
    preds: pd.DataFrame, level: str, threshold: str | float, method: str, by: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """Test rows at ``level`` with columns ``threshold`` (the one of their fold) and ``pred``."""
    df = _at_level(preds, level)
    models = _model_columns(df, by)
    keys = models + ["fold"]
    test = df[df["split"] == "test"]
    if test.empty:
        raise ValueError("predictions have no rows with split == 'test'")
    fixed = _fixed_threshold(threshold)
    if fixed is not None:
        thr = pd.Series(fixed, index=test.index)
    else:
        val = df[df["split"] == "val"]
        chosen = {}
        for key, g in val.groupby(keys, sort=False, observed=True):
            try:
                chosen[key] = choose_threshold(g["y"], g["prob"], method)
            except ValueError as e:
                raise ValueError(f"inner threshold for {dict(zip(keys, key))}: {e}") from None
        test_keys = list(test[keys].itertuples(index=False, name=None))
        missing = sorted({k for k in test_keys if k not in chosen}, key=str)
        if missing:
            raise ValueError(
                f"no split == 'val' rows to choose the inner threshold for "
                f"{[dict(zip(keys, k)) for k in missing[:5]]}"
            )
        thr = pd.Series([chosen[k] for k in test_keys], index=test.index, dtype=float)
    test = test.assign(threshold=thr, pred=(test["prob"] >= thr).astype(int))
    return test, models


def fold_metrics(
    preds: pd.DataFrame,
    level: str = "subject",
    threshold: str | float = "0.5",
    *,
    method: str = "youden",
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Returns one row per model (``by`` columns) and fold of the test rows: the model columns,
    ``fold``, ``threshold`` (the one used), every metric of METRICS, ``n`` and ``n_pos``.

    ``level``: 'subject' (mean probability per subject first) or 'image'. ``threshold``: a
    number such as '0.5', or 'inner' (chosen with choose_threshold(method) on that fold's
    split == 'val' rows at the same level).
    """
    test, models = _scored_test_rows(preds, level, threshold, method, by)
    rows = []
    for key, g in test.groupby(models + ["fold"], sort=True, observed=True):
        m = _metrics_from_labels(
            g["y"].to_numpy(int), g["prob"].to_numpy(float), g["pred"].to_numpy(int)
        )
        rows.append(
            {**dict(zip(models + ["fold"], key)), "threshold": float(g["threshold"].iloc[0]), **m}
        )
    return pd.DataFrame(rows, columns=[*models, "fold", "threshold", *METRICS, "n", "n_pos"])


def summarize_folds(
    fold_df: pd.DataFrame, *, by: Sequence[str] | None = None, digits: int = 3
) -> pd.DataFrame:
    """Returns one row per model (``by`` columns) and metric: ``metric``, ``n_folds`` (folds
    where it is defined), ``mean``, ``sd`` (ddof=1) and the text ``mean_sd`` ("0.912 ± 0.031").

    Folds where a metric is NaN (undefined) are left out of its mean and SD, and the text says
    so ("0.714 (1 of 5 folds)", "undefined on every fold"; see stats.format_mean_sd).
    """
    models = _model_columns(fold_df, by)
    metrics = [m for m in METRICS if m in fold_df.columns]
    groups = fold_df.groupby(models, sort=True, observed=True) if models else [((), fold_df)]
    rows = []
    for key, g in groups:
        for m in metrics:
            v = g[m].to_numpy(float)
            n_total = v.size
            v = v[np.isfinite(v)]
            rows.append(
                {
                    **dict(zip(models, key)),
                    "metric": m,
                    "n_folds": int(v.size),
                    "mean": float(v.mean()) if v.size else np.nan,
                    "sd": float(v.std(ddof=1)) if v.size > 1 else np.nan,
                    "mean_sd": format_mean_sd(v, digits=digits, n_total=n_total),
                }
            )
    return pd.DataFrame(rows, columns=[*models, "metric", "n_folds", "mean", "sd", "mean_sd"])


def pooled_metrics(
    preds: pd.DataFrame,
    level: str = "subject",
    threshold: str | float = "0.5",
    *,
    method: str = "youden",
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Returns one row per model: the model columns, ``threshold`` (NaN for 'inner', where each
    fold has its own), ``n_folds``, every metric of METRICS on all out-of-fold test rows pooled,
    ``n`` and ``n_pos``.

    With 'inner' each test row is labelled with its own fold's inner-validation threshold and
    the labels are pooled; auc and auprc always use the pooled probabilities.
    """
    test, models = _scored_test_rows(preds, level, threshold, method, by)
    fixed = _fixed_threshold(threshold)
    groups = test.groupby(models, sort=True, observed=True) if models else [((), test)]
    rows = []
    for key, g in groups:
        m = _metrics_from_labels(
            g["y"].to_numpy(int), g["prob"].to_numpy(float), g["pred"].to_numpy(int)
        )
        rows.append(
            {
                **dict(zip(models, key)),
                "threshold": np.nan if fixed is None else fixed,
                "n_folds": int(g["fold"].nunique()),
                **m,
            }
        )
    return pd.DataFrame(rows, columns=[*models, "threshold", "n_folds", *METRICS, "n", "n_pos"])


def metrics_table(
    preds: pd.DataFrame,
    level: str = "subject",
    threshold: str | float = "0.5",
    n_boot: int = 1000,
    seed: int = 0,
    *,
    method: str = "youden",
    by: Sequence[str] | None = None,
    alpha: float = 0.05,
    digits: int = 3,
) -> pd.DataFrame:
    """Returns one row per model: the model columns, ``level``, ``threshold`` (the rule),
    ``n_folds``, ``n``/``n_pos`` (pooled test rows), and for each metric the text columns
    ``<metric>`` ("mean ± SD" over folds) and ``<metric>_pooled`` ("est [low, high]": pooled
    out-of-fold estimate with a percentile cluster-bootstrap CI resampling subjects), then the
    numbers ``<metric>_mean``, ``_sd``, ``_pooled_est``, ``_pooled_low``, ``_pooled_high``.

    All metrics of one model share the same ``n_boot`` resamples (``seed``). With 'inner',
    threshold metrics are bootstrapped on the pooled per-fold labels.
    """
    folds = fold_metrics(preds, level, threshold, method=method, by=by)
    summary = summarize_folds(folds, by=by, digits=digits)
    test, models = _scored_test_rows(preds, level, threshold, method, by)
    pooled = pooled_metrics(preds, level, threshold, method=method, by=by)
    rule = "inner" if _fixed_threshold(threshold) is None else str(threshold)
    if rule == "inner":
        rule = f"inner ({method})"

    groups = test.groupby(models, sort=True, observed=True) if models else [((), test)]
    rows = []
    for key, g in groups:
        ident = dict(zip(models, key))
        sel_s = np.ones(len(summary), bool)
        sel_p = np.ones(len(pooled), bool)
        for c, v in ident.items():
            sel_s &= (summary[c] == v).to_numpy()
            sel_p &= (pooled[c] == v).to_numpy()
        s = summary[sel_s].set_index("metric")
        p = pooled[sel_p].iloc[0]
        y = g["y"].to_numpy(int)
        row = {
            **ident,
            "level": level,
            "threshold": rule,
            "n_folds": int(p["n_folds"]),
            "n": int(p["n"]),
            "n_pos": int(p["n_pos"]),
        }
        numbers = {}
        for m in METRICS:
            score = (
                g["prob"].to_numpy(float) if m in ("auc", "auprc") else g["pred"].to_numpy(float)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                ci = cluster_bootstrap_ci(
                    _FAST_METRICS[m],
                    y,
                    score,
                    groups=g["subject_id"].to_numpy(),
                    n_boot=n_boot,
                    alpha=alpha,
                    seed=seed,
                )
            est = float(p[m])
            row[m] = s.at[m, "mean_sd"]
            row[f"{m}_pooled"] = format_ci(est, ci["low"], ci["high"], digits=digits)
            numbers.update(
                {
                    f"{m}_mean": float(s.at[m, "mean"]),
                    f"{m}_sd": float(s.at[m, "sd"]),
                    f"{m}_pooled_est": est,
                    f"{m}_pooled_low": ci["low"],
                    f"{m}_pooled_high": ci["high"],
                }
            )
        rows.append({**row, **numbers})
    return pd.DataFrame(rows)


def subject_auc(subject_ids: np.ndarray, y: np.ndarray, prob: np.ndarray) -> float:
    """AUC over subjects (mean probability of a subject's images); NaN with one class."""
    df = pd.DataFrame({"s": subject_ids, "y": y, "p": prob}).groupby("s").mean()
    if df["y"].nunique() < 2:
        return float("nan")
    return float(roc_auc_score(df["y"], df["p"]))
