"""Statistics for subject-level evaluation: bootstrap and DeLong CIs, calibration, decision curves.

Conventions: ``y_true`` is a binary 0/1 array (1 = positive class), ``y_score``/``y_prob`` are
scores or probabilities of the positive class, and ``groups`` (optional) holds one subject id per
row so that bootstrap resampling draws whole subjects (clusters) with replacement. Without
``groups`` every row is its own cluster (the ordinary bootstrap).

Built on numpy/scipy/scikit-learn; hand-written are only the pieces no library offers: cluster
resampling, a batched (vectorised) AUC for bootstrap replicates, the fast DeLong covariance of
Sun & Xu (2014), the calibration-in-the-large intercept (a logistic model with an offset), ECE,
and net benefit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn
from scipy import optimize, special, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

__all__ = [
    "cluster_bootstrap_ci",
    "paired_bootstrap_auc_diff",
    "delong_roc_variance",
    "delong_roc_test",
    "calibration_summary",
    "fit_platt_recalibration",
    "PlattRecalibration",
    "net_benefit",
    "net_benefit_treat_all",
    "decision_curve",
    "threshold_for_sensitivity",
    "format_ci",
    "format_mean_sd",
]

MetricFn = Callable[[np.ndarray, np.ndarray], float]

#: Probabilities are clipped to [_EPS, 1 - _EPS] before taking logits.
_EPS = 1e-7


# --------------------------------------------------------------------------- helpers


def binary_labels(y_true) -> np.ndarray:
    """``y_true`` as an int array of 0/1; ValueError for any other value."""
    y = np.asarray(y_true).ravel()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0/1 values")
    return y.astype(int)


def _scores(y_score, n: int) -> np.ndarray:
    s = np.asarray(y_score, dtype=float).ravel()
    if s.shape[0] != n:
        raise ValueError(f"score length {s.shape[0]} does not match y_true length {n}")
    return s


def cluster_codes(groups, n: int) -> np.ndarray:
    """Integer cluster code (0..k-1, in sorted order of the ids) for every row."""
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups).ravel()
    if g.shape[0] != n:
        raise ValueError(f"groups length {g.shape[0]} does not match y_true length {n}")
    return np.unique(g, return_inverse=True)[1].ravel()


def bootstrap_row_counts(codes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_rows) multiplicities of each row when whole clusters are drawn with
    replacement."""
    n_clusters = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    cluster_counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
    return cluster_counts[:, codes]


def _weighted_auc_batch(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC (ties count 1/2) of each row of the weight matrix ``w`` (B, n); NaN where one class
    is absent.

    With integer weights equal to bootstrap multiplicities this is exactly the AUC of the
    resampled data (the Mann-Whitney statistic of the expanded sample).
    """
    uniq, inv = np.unique(s, return_inverse=True)
    inv = inv.ravel()
    n_b, n_u = w.shape[0], uniq.shape[0]
    offsets = (np.arange(n_b) * n_u)[:, None]

    def per_level(mask: np.ndarray) -> np.ndarray:
        flat = (offsets + inv[mask][None, :]).ravel()
        return np.bincount(flat, weights=w[:, mask].ravel(), minlength=n_b * n_u).reshape(n_b, n_u)

    pos, neg = per_level(y == 1), per_level(y == 0)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _metric_replicates(
    metric_fn: MetricFn, y: np.ndarray, s: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Metric on every bootstrap resample; NaN where it is undefined (raises or is non-finite)."""
    if metric_fn is roc_auc_score:  # vectorised fast path, identical values
        return _weighted_auc_batch(y, s, counts)
    rows = np.arange(y.shape[0])
    out = np.full(counts.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. UndefinedMetricWarning on one-class resamples
        for b in range(counts.shape[0]):
            idx = np.repeat(rows, counts[b])
            try:
                out[b] = float(metric_fn(y[idx], s[idx]))
            except (ValueError, ZeroDivisionError, FloatingPointError):
                pass
    out[~np.isfinite(out)] = np.nan
    return out


def _logit(p) -> np.ndarray:
    return logit(p)


def _unpenalised_logistic() -> LogisticRegression:
    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    no_penalty = {"C": np.inf} if (major, minor) >= (1, 8) else {"penalty": None}
    return LogisticRegression(**no_penalty, tol=1e-10, max_iter=10_000)


def logit(p, eps: float = _EPS) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [eps, 1 - eps] (default 1e-7)."""
    return special.logit(np.clip(np.asarray(p, dtype=float), eps, 1 - eps))


def auc_replicates(y_true, y_score, groups=None, n_boot: int = 2000, seed: int = 0
                   ) -> np.ndarray:
    """Bootstrap replicates of the AUC, resampling whole ``groups`` (subjects; default: rows);
    NaN where a resample holds one class."""
    y = binary_labels(y_true)
    s = _scores(y_score, y.shape[0])
    counts = bootstrap_row_counts(cluster_codes(groups, y.shape[0]), n_boot, seed)
    return _weighted_auc_batch(y, s, counts)


# --------------------------------------------------------------------------- bootstrap


def cluster_bootstrap_ci(
    metric_fn: MetricFn,
    y_true,
    y_score,
    groups=None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap CI of ``metric_fn(y_true, y_score)``, resampling whole subjects.

    Returns a dict with ``estimate`` (metric on the full data), ``low``/``high`` (the
    ``alpha/2`` and ``1 - alpha/2`` percentiles of the valid replicates), ``se`` (their SD,
    ddof=1) and ``n_boot_valid`` (replicates where the metric was defined; resamples where it
    raises ValueError/ZeroDivisionError or is non-finite, e.g. a single class for the AUC, are
    skipped). ``metric_fn is sklearn.metrics.roc_auc_score`` takes a vectorised path that gives
    the same values as calling it on each resample.
    """
    y = binary_labels(y_true)
    s = _scores(y_score, y.shape[0])
    counts = bootstrap_row_counts(cluster_codes(groups, y.shape[0]), n_boot, seed)
    reps = _metric_replicates(metric_fn, y, s, counts)
    valid = reps[np.isfinite(reps)]
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2]) if valid.size else (np.nan, np.nan)
    return {
        "estimate": float(metric_fn(y, s)),
        "low": float(low),
        "high": float(high),
        "se": float(np.std(valid, ddof=1)) if valid.size > 1 else np.nan,
        "n_boot_valid": int(valid.size),
    }


def paired_bootstrap_auc_diff(
    y_true, score_a, score_b, groups=None, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """Paired (same resamples) cluster bootstrap of AUC(a) - AUC(b).

    Returns a dict with ``auc_a``, ``auc_b``, ``diff`` (a - b on the full data), ``low``/``high``
    (percentile CI), ``se`` (SD of the replicate differences), ``p_value`` (two-sided, from
    inverting the percentile interval: ``2 * min(P*(d <= 0), P*(d >= 0))`` with the add-one
    correction ``(count + 1) / (B + 1)``, capped at 1) and ``n_boot_valid``.
    """
    y = binary_labels(y_true)
    a = _scores(score_a, y.shape[0])
    b = _scores(score_b, y.shape[0])
    counts = bootstrap_row_counts(cluster_codes(groups, y.shape[0]), n_boot, seed)
    d = _weighted_auc_batch(y, a, counts) - _weighted_auc_batch(y, b, counts)
    d = d[np.isfinite(d)]
    auc_a, auc_b = float(roc_auc_score(y, a)), float(roc_auc_score(y, b))
    n_valid = d.size
    if n_valid:
        low, high = np.quantile(d, [alpha / 2, 1 - alpha / 2])
        p_le = (np.sum(d <= 0) + 1) / (n_valid + 1)
        p_ge = (np.sum(d >= 0) + 1) / (n_valid + 1)
        p = min(1.0, 2 * min(p_le, p_ge))
    else:
        low = high = p = np.nan
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": auc_a - auc_b,
        "low": float(low),
        "high": float(high),
        "se": float(np.std(d, ddof=1)) if n_valid > 1 else np.nan,
        "p_value": float(p),
        "n_boot_valid": int(n_valid),
    }


# --------------------------------------------------------------------------- DeLong


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and DeLong covariance (k, k) of the k score rows, by Sun & Xu's midrank
    algorithm."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes present")
    if m < 2 or n < 2:
        raise ValueError("DeLong variance needs at least two positives and two negatives")
    tx = stats.rankdata(pos, axis=1)  # midranks within positives
    ty = stats.rankdata(neg, axis=1)  # midranks within negatives
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks overall
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives scored below (ties 1/2)
    v01 = 1 - (tz[:, m:] - ty) / m  # per negative: share of positives scored above (ties 1/2)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_roc_variance(y_true, y_score) -> tuple[float, float]:
    """Returns ``(auc, var)``: the AUC and its DeLong variance (fast midrank algorithm)."""
    y = binary_labels(y_true)
    s = _scores(y_score, y.shape[0])
    aucs, cov = _delong_components(y, s[None, :])
    return float(aucs[0]), float(cov[0, 0])


def delong_roc_test(y_true, score_a, score_b, alpha: float = 0.05) -> dict:
    """DeLong test for two correlated (paired) AUCs on the same observations.

    Returns a dict with ``auc_a``, ``auc_b``, ``diff`` (a - b), ``se`` of the difference, the
    Wald ``ci_low``/``ci_high`` at level ``1 - alpha``, ``z`` and the two-sided ``p_value``
    (1.0 with ``z`` NaN when the difference has zero variance, e.g. identical scores).
    Observations are treated as independent (no clustering).
    """
    y = binary_labels(y_true)
    a = _scores(score_a, y.shape[0])
    b = _scores(score_b, y.shape[0])
    aucs, cov = _delong_components(y, np.vstack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zq = stats.norm.ppf(1 - alpha / 2)
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:
        z, p = np.nan, 1.0
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "se": se,
        "ci_low": float(diff - zq * se),
        "ci_high": float(diff + zq * se),
        "z": float(z),
        "p_value": p,
    }


# --------------------------------------------------------------------------- calibration


def _expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Sum over equal-width bins of (bin share) * |observed rate - mean predicted probability|."""
    bins = np.clip(
        (p * n_bins).astype(int), 0, n_bins - 1
    )  # [k/n_bins, (k+1)/n_bins); 1.0 in the last
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=y, minlength=n_bins)
        - np.bincount(bins, weights=p, minlength=n_bins)
    )
    return float(gap.sum() / count.sum())


def _calibration_in_the_large(y: np.ndarray, lp: np.ndarray) -> float:
    """MLE of ``a`` in logit P(y=1) = a + lp (lp an offset): the root of
    sum(y - expit(a + lp)) = 0."""
    if y.min() == y.max():
        return np.nan

    def score(a: float) -> float:
        return float(np.sum(y - special.expit(a + lp)))

    lo, hi = -1.0, 1.0
    while score(lo) < 0:  # score is decreasing in a
        lo *= 2
    while score(hi) > 0:
        hi *= 2
    return float(optimize.brentq(score, lo, hi, xtol=1e-12))


def calibration_in_the_large(y_true, lp) -> float:
    """The intercept ``a`` of logit P(y=1) = a + lp with the linear predictor ``lp`` as an
    offset (0 is ideal; > 0: risks under-predicted); NaN for one class."""
    return _calibration_in_the_large(binary_labels(y_true), np.asarray(lp, dtype=float))


def calibration_summary(y_true, y_prob, n_bins: int = 10) -> dict:
    """Calibration of predicted probabilities.

    Returns a dict with ``brier`` (sklearn's Brier score), ``slope`` (coefficient of logit(p) in
    an unpenalised logistic regression of y on logit(p), fitted with sklearn; 1 is ideal, > 1 means
    predictions too close to 0.5, < 1 overconfident), ``intercept`` (calibration-in-the-large: the
    intercept of a logistic regression with logit(p) as offset and no other covariate, solved as
    the root of its score equation with scipy.optimize.brentq; 0 is ideal, > 0 means risks are
    under-predicted) and ``ece`` (expected calibration error over ``n_bins`` equal-width bins).
    Probabilities are clipped to [1e-7, 1 - 1e-7] before taking logits.
    """
    y = binary_labels(y_true)
    p = _scores(y_prob, y.shape[0])
    lp = _logit(p)
    if y.min() == y.max():
        slope = np.nan
    else:
        slope = float(_unpenalised_logistic().fit(lp[:, None], y).coef_[0, 0])
    return {
        "brier": float(brier_score_loss(y, p)),
        "slope": slope,
        "intercept": _calibration_in_the_large(y, lp),
        "ece": _expected_calibration_error(y, p, n_bins),
    }


@dataclass(frozen=True)
class PlattRecalibration:
    """Maps probabilities p to ``expit(intercept + slope * logit(p))``."""

    intercept: float
    slope: float

    def __call__(self, y_prob) -> np.ndarray:
        """Returns the recalibrated probabilities (same shape as ``y_prob``)."""
        p = np.asarray(y_prob, dtype=float)
        return special.expit(self.intercept + self.slope * _logit(p))


def fit_platt_recalibration(y_true, y_prob) -> PlattRecalibration:
    """Fits logistic recalibration on logit(p) (unpenalised); returns the callable mapping.

    Fit it on inner-validation subjects only, then apply it to the test subjects.
    """
    y = binary_labels(y_true)
    p = _scores(y_prob, y.shape[0])
    if y.min() == y.max():
        raise ValueError("recalibration needs both classes present")
    model = _unpenalised_logistic().fit(_logit(p)[:, None], y)
    return PlattRecalibration(intercept=float(model.intercept_[0]), slope=float(model.coef_[0, 0]))


# --------------------------------------------------------------------------- decision curves


def _thresholds(thresholds) -> np.ndarray:
    t = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if np.any((t < 0) | (t >= 1)):
        raise ValueError("threshold probabilities must lie in [0, 1)")
    return t


def net_benefit(y_true, y_prob, thresholds) -> np.ndarray:
    """Net benefit TP/n - FP/n * pt/(1-pt) at each threshold pt, predicting positive when
    p >= pt."""
    y = binary_labels(y_true)
    p = _scores(y_prob, y.shape[0])
    t = _thresholds(thresholds)
    flagged = p[None, :] >= t[:, None]
    tp = (flagged & (y == 1)).sum(axis=1)
    fp = (flagged & (y == 0)).sum(axis=1)
    n = y.shape[0]
    return tp / n - fp / n * t / (1 - t)


def net_benefit_treat_all(y_true, thresholds) -> np.ndarray:
    """Net benefit of treating everyone: prevalence - (1 - prevalence) * pt/(1-pt)."""
    y = binary_labels(y_true)
    t = _thresholds(thresholds)
    prev = y.mean()
    return prev - (1 - prev) * t / (1 - t)


def decision_curve(y_true, y_prob, thresholds) -> pd.DataFrame:
    """Decision-curve table with columns threshold, model, treat_all, treat_none (always 0)."""
    t = _thresholds(thresholds)
    return pd.DataFrame(
        {
            "threshold": t,
            "model": net_benefit(y_true, y_prob, t),
            "treat_all": net_benefit_treat_all(y_true, t),
            "treat_none": np.zeros_like(t),
        }
    )


# --------------------------------------------------------------------------- operating points


def threshold_for_sensitivity(y_true, y_score, target: float = 0.95) -> float:
    """Highest threshold t whose sensitivity (share of positives with score >= t) is >= target.

    Candidate thresholds are the observed scores (via sklearn's roc_curve), so t is one of the
    positives' scores. Choose it on inner-validation data, then apply it to test subjects.
    """
    if not 0 < target <= 1:
        raise ValueError("target must lie in (0, 1]")
    y = binary_labels(y_true)
    s = _scores(y_score, y.shape[0])
    if not (y == 1).any():
        raise ValueError("no positives: sensitivity undefined")
    _, tpr, thr = roc_curve(y, s, drop_intermediate=False)  # thresholds decreasing
    return float(thr[np.argmax(tpr >= target - 1e-12)])




# --------------------------------------------------------------------------- formatting


def format_ci(est: float, low: float, high: float, digits: int = 3) -> str:
    """Returns e.g. ``"0.912 [0.871, 0.948]"``."""
    return f"{est:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def format_mean_sd(values: Sequence[float] | np.ndarray, digits: int = 3, ddof: int = 1,
                   n_total: int | None = None) -> str:
    """Returns e.g. ``"0.912 ± 0.031"``: mean ± SD (``ddof``) of the finite values.

    Undefined values (NaN: a metric undefined on a fold) are left out and said so:
    ``"0.912 ± 0.031 (4 of 5 folds)"``, ``"0.714 (1 of 5 folds)"`` with one defined value (no
    SD), ``"undefined on every fold"`` with none. ``n_total`` is the number of values before
    the undefined ones were removed (default: ``len(values)``).
    """
    v = np.asarray(values, dtype=float).ravel()
    total = v.size if n_total is None else int(n_total)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "undefined on every fold"
    text = f"{float(np.mean(v)):.{digits}f}"
    if v.size > ddof:
        text += f" ± {float(np.std(v, ddof=ddof)):.{digits}f}"
    if v.size < total:
        text += f" ({v.size} of {total} folds)"
    return text
