"""Tests for phyllodes.evaluate.stats: every test asserts numbers that a wrong implementation
would miss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special
from scipy.stats import norm
from sklearn.metrics import brier_score_loss, roc_auc_score

from phyllodes.evaluate.stats import (
    calibration_summary,
    cluster_bootstrap_ci,
    decision_curve,
    delong_roc_test,
    delong_roc_variance,
    fit_platt_recalibration,
    format_ci,
    format_mean_sd,
    net_benefit,
    net_benefit_treat_all,
    paired_bootstrap_auc_diff,
    threshold_for_sensitivity,
)

# --------------------------------------------------------------------------- reference DeLong


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _direct_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) with explicit O(m*n) loops: structural components and S10/S01."""
    k = len(scores)
    pos_idx = [i for i in range(len(y)) if y[i] == 1]
    neg_idx = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos_idx), len(neg_idx)
    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    for r, s in enumerate(scores):
        for a, i in enumerate(pos_idx):
            for b, j in enumerate(neg_idx):
                psi = _psi(s[i], s[j])
                v10[r, a] += psi / n
                v01[r, b] += psi / m
    auc = v10.mean(axis=1)
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for r in range(k):
        for q in range(k):
            s10[r, q] = sum((v10[r, a] - auc[r]) * (v10[q, a] - auc[q]) for a in range(m)) / (m - 1)
            s01[r, q] = sum((v01[r, b] - auc[r]) * (v01[q, b] - auc[q]) for b in range(n)) / (n - 1)
    return auc, s10 / m + s01 / n


def test_delong_variance_matches_direct_loops_with_ties():
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(13), np.zeros(17)].astype(int)
    s = rng.integers(0, 5, size=30) + y  # heavy ties, within and across classes
    auc, var = delong_roc_variance(y, s)
    ref_auc, ref_cov = _direct_delong(y, [s])
    assert auc == pytest.approx(ref_auc[0], abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert var == pytest.approx(ref_cov[0, 0], rel=1e-10)
    assert var > 0


def test_delong_test_matches_direct_loops():
    rng = np.random.default_rng(11)
    y = rng.permutation(np.r_[np.ones(15), np.zeros(20)].astype(int))
    a = np.round(1.0 * y + rng.normal(size=35), 1)  # rounding creates ties
    b = np.round(0.5 * y + 0.6 * a + rng.normal(size=35), 1)
    res = delong_roc_test(y, a, b)
    ref_auc, ref_cov = _direct_delong(y, [a, b])
    ref_var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    ref_diff = ref_auc[0] - ref_auc[1]
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert res["diff"] == pytest.approx(ref_diff, abs=1e-12)
    assert res["se"] == pytest.approx(np.sqrt(ref_var), rel=1e-10)
    assert res["z"] == pytest.approx(ref_diff / np.sqrt(ref_var), rel=1e-10)
    assert res["p_value"] == pytest.approx(2 * norm.sf(abs(ref_diff) / np.sqrt(ref_var)), rel=1e-10)
    assert res["ci_low"] == pytest.approx(ref_diff - 1.959963985 * np.sqrt(ref_var), abs=1e-8)
    assert res["ci_high"] == pytest.approx(ref_diff + 1.959963985 * np.sqrt(ref_var), abs=1e-8)


def test_delong_identical_scores_give_p_one():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    res = delong_roc_test(y, s, s)
    assert res["diff"] == 0.0 and res["se"] == 0.0 and res["p_value"] == 1.0


def test_delong_se_agrees_with_paired_bootstrap_se():
    rng = np.random.default_rng(2024)
    n = 400
    y = rng.integers(0, 2, size=n)
    e1, e2 = rng.normal(size=(2, n))
    a = 1.2 * y + e1
    b = 0.7 * y + 0.6 * e1 + 0.8 * e2  # correlated with a
    dl = delong_roc_test(y, a, b)
    bs = paired_bootstrap_auc_diff(y, a, b, n_boot=2000, seed=3)
    assert bs["diff"] == pytest.approx(dl["diff"], abs=1e-12)
    assert bs["auc_a"] == pytest.approx(roc_auc_score(y, a)) and bs["auc_b"] == pytest.approx(
        roc_auc_score(y, b)
    )
    assert bs["n_boot_valid"] == 2000
    assert bs["se"] == pytest.approx(dl["se"], rel=0.15)
    # single-score variance too
    auc_a, var_a = delong_roc_variance(y, a)
    boot_a = cluster_bootstrap_ci(roc_auc_score, y, a, n_boot=2000, seed=3)
    assert boot_a["se"] == pytest.approx(np.sqrt(var_a), rel=0.15)
    # a real difference of ~0.1 AUC: both tests reject, CIs exclude 0
    assert dl["p_value"] < 0.01 and bs["p_value"] < 0.01
    assert bs["low"] > 0 and dl["ci_low"] > 0


def test_paired_bootstrap_null_difference_not_significant():
    rng = np.random.default_rng(5)
    n = 200
    y = rng.integers(0, 2, size=n)
    a = y + rng.normal(size=n)
    b = a + rng.normal(scale=1e-3, size=n)  # essentially the same ranking
    bs = paired_bootstrap_auc_diff(y, a, b, n_boot=500, seed=1)
    assert abs(bs["diff"]) < 0.01
    assert bs["low"] <= 0 <= bs["high"]
    assert bs["p_value"] > 0.2


# --------------------------------------------------------------------------- cluster bootstrap


def _simulate_clustered(rng, n_sub=80, d=1.2, var_subject=0.7):
    """Subject-level labels, 2-3 correlated images per subject; marginally N(0,1) vs N(d,1)."""
    y_sub = np.r_[np.zeros(n_sub // 2), np.ones(n_sub // 2)].astype(int)
    k = rng.integers(2, 4, size=n_sub)
    g = np.repeat(np.arange(n_sub), k)
    u = rng.normal(0, np.sqrt(var_subject), n_sub)[g]
    e = rng.normal(0, np.sqrt(1 - var_subject), g.size)
    return y_sub[g], d * y_sub[g] + u + e, g


def test_cluster_bootstrap_coverage_with_clustered_data():
    d = 1.2
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(1)
    reps = 200
    hit_cluster = hit_naive = 0
    for r in range(reps):
        y, s, g = _simulate_clustered(rng, d=d)
        c = cluster_bootstrap_ci(roc_auc_score, y, s, groups=g, n_boot=300, seed=r)
        nv = cluster_bootstrap_ci(roc_auc_score, y, s, groups=None, n_boot=300, seed=r)
        hit_cluster += c["low"] <= truth <= c["high"]
        hit_naive += nv["low"] <= truth <= nv["high"]
    cov_cluster, cov_naive = hit_cluster / reps, hit_naive / reps
    assert 0.88 <= cov_cluster <= 0.99
    # resampling images as if independent under-covers with correlated images per subject
    assert cov_naive <= cov_cluster - 0.05


def test_bootstrap_coverage_independent_binormal():
    d = 1.0
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(2)
    reps = 200
    hits = 0
    for r in range(reps):
        y = np.r_[np.zeros(50), np.ones(50)].astype(int)
        s = d * y + rng.normal(size=100)
        ci = cluster_bootstrap_ci(roc_auc_score, y, s, n_boot=300, seed=r)
        hits += ci["low"] <= truth <= ci["high"]
    assert 0.88 <= hits / reps <= 0.99


def test_cluster_bootstrap_resamples_whole_subjects():
    """Each subject's row copied 3 times: resampling subjects must reproduce the unduplicated
    bootstrap."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=60)
    s = y + rng.normal(size=60)
    base = cluster_bootstrap_ci(roc_auc_score, y, s, n_boot=1000, seed=9)
    y3, s3, g3 = np.repeat(y, 3), np.repeat(s, 3), np.repeat(np.arange(60), 3)
    clustered = cluster_bootstrap_ci(roc_auc_score, y3, s3, groups=g3, n_boot=1000, seed=9)
    for key in ("estimate", "low", "high", "se"):
        assert clustered[key] == pytest.approx(base[key], abs=1e-12)
    # treating the copies as independent shrinks the SE by about sqrt(3)
    naive = cluster_bootstrap_ci(roc_auc_score, y3, s3, n_boot=1000, seed=9)
    assert naive["se"] / base["se"] == pytest.approx(1 / np.sqrt(3), rel=0.12)
    # string subject ids work the same way
    ids = np.array([f"subj{i:03d}" for i in range(60)])
    by_name = cluster_bootstrap_ci(
        roc_auc_score, y3, s3, groups=np.repeat(ids, 3), n_boot=1000, seed=9
    )
    assert by_name["low"] == pytest.approx(base["low"], abs=1e-12)


def test_generic_metric_path_matches_vectorised_auc_and_counts_invalid():
    # 3 subjects: one positive (2 images), two negatives; a resample is one-class w.p. 8/27 + 1/27
    y = np.array([1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.4, 0.3, 0.2, 0.6])  # a positive-negative tie
    g = np.array([0, 0, 1, 1, 2, 2])
    fast = cluster_bootstrap_ci(roc_auc_score, y, s, groups=g, n_boot=400, seed=4)
    slow = cluster_bootstrap_ci(
        lambda a, b: roc_auc_score(a, b), y, s, groups=g, n_boot=400, seed=4
    )
    assert fast["n_boot_valid"] == slow["n_boot_valid"] < 400
    for key in ("estimate", "low", "high", "se"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-12)
    many = cluster_bootstrap_ci(roc_auc_score, y, s, groups=g, n_boot=6000, seed=0)
    assert many["n_boot_valid"] / 6000 == pytest.approx(18 / 27, abs=0.02)


def test_vectorised_auc_replicates_equal_sklearn_with_ties_and_clusters():
    rng = np.random.default_rng(10)
    g = np.repeat(np.arange(40), 2)
    y = np.repeat(rng.integers(0, 2, size=40), 2)
    s = rng.integers(0, 4, size=80) + y  # many ties within and across classes
    fast = cluster_bootstrap_ci(roc_auc_score, y, s, groups=g, n_boot=200, seed=2)
    slow = cluster_bootstrap_ci(
        lambda a, b: roc_auc_score(a, b), y, s, groups=g, n_boot=200, seed=2
    )
    assert fast["n_boot_valid"] == slow["n_boot_valid"] == 200
    for key in ("estimate", "low", "high", "se"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-12)


def test_cluster_bootstrap_any_metric():
    rng = np.random.default_rng(8)
    p = rng.uniform(size=300)
    y = rng.binomial(1, p)
    res = cluster_bootstrap_ci(brier_score_loss, y, p, n_boot=300, seed=0)
    assert res["estimate"] == pytest.approx(np.mean((p - y) ** 2))
    assert res["n_boot_valid"] == 300
    assert res["low"] < res["estimate"] < res["high"]
    # Brier of calibrated uniform p is 1/6; its SD over rows / sqrt(n) gives the SE scale
    assert res["se"] == pytest.approx(np.std((p - y) ** 2, ddof=1) / np.sqrt(300), rel=0.2)


# --------------------------------------------------------------------------- calibration


def _calibrated(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    lp = rng.normal(0, 1.5, size=n)
    p = special.expit(lp)
    return rng.binomial(1, p), p


def test_calibration_perfect_squashed_and_overconfident():
    y, p = _calibrated()
    cs = calibration_summary(y, p)
    assert cs["slope"] == pytest.approx(1.0, abs=0.05)
    assert cs["intercept"] == pytest.approx(0.0, abs=0.05)
    assert cs["ece"] < 0.02
    assert cs["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    assert cs["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-15)

    squashed = special.expit(0.5 * special.logit(p))  # toward 0.5
    sq = calibration_summary(y, squashed)
    assert sq["slope"] > 1.5 and sq["slope"] == pytest.approx(2.0, abs=0.1)
    assert sq["ece"] > 0.05

    over = special.expit(2.0 * special.logit(p))
    assert calibration_summary(y, over)["slope"] == pytest.approx(0.5, abs=0.03)

    under = special.expit(special.logit(p) - 1.0)  # risks too low by one logit
    assert calibration_summary(y, under)["intercept"] == pytest.approx(1.0, abs=0.05)


def test_calibration_slope_and_intercept_match_independent_mle():
    rng = np.random.default_rng(6)
    p = rng.uniform(0.02, 0.98, size=500)
    y = rng.binomial(1, special.expit(0.3 + 1.4 * special.logit(p)))
    lp = special.logit(p)

    def nll2(beta):
        eta = beta[0] + beta[1] * lp
        return np.sum(np.logaddexp(0, eta) - y * eta)

    beta = optimize.minimize(nll2, [0.0, 1.0], method="BFGS", options={"gtol": 1e-10}).x
    a = optimize.minimize_scalar(lambda a: np.sum(np.logaddexp(0, a + lp) - y * (a + lp))).x
    cs = calibration_summary(y, p)
    assert cs["slope"] == pytest.approx(beta[1], abs=1e-4)
    assert cs["intercept"] == pytest.approx(a, abs=1e-5)


def test_ece_hand_example():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.15, 0.95])
    # bins: [0,.1): |0-0.05|; [.1,.2): |1 - 0.30| summed; [.9,1]: |1-0.95|  -> (0.05+0.7+0.05)/4
    assert calibration_summary(y, p)["ece"] == pytest.approx(0.2, abs=1e-12)


def test_platt_recalibration_fixes_squashed_probabilities():
    y, p = _calibrated(seed=1)
    squashed = special.expit(0.5 * special.logit(p) - 0.4)
    half = y.size // 2
    recal = fit_platt_recalibration(y[:half], squashed[:half])  # inner-validation half
    assert recal.slope == pytest.approx(2.0, abs=0.12)
    assert recal.intercept == pytest.approx(0.8, abs=0.1)
    fixed = recal(squashed[half:])  # applied to held-out half
    cs = calibration_summary(y[half:], fixed)
    assert cs["slope"] == pytest.approx(1.0, abs=0.07)
    assert cs["intercept"] == pytest.approx(0.0, abs=0.07)
    assert np.mean(np.abs(fixed - p[half:])) < 0.02


# --------------------------------------------------------------------------- decision curves


def test_net_benefit_hand_example():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05])
    t = np.array([0.0, 0.2, 0.5, 0.8])
    # pt=0.0: all flagged, TP=4 FP=6 -> 4/10 - 6/10*0        = 0.4
    # pt=0.2: TP=3 (.9,.6,.4), FP=4 (.7,.5,.3,.2 tie counts)  -> 0.3 - 0.4*0.25 = 0.2
    # pt=0.5: TP=2 (.9,.6),    FP=2 (.7,.5 tie counts)        -> 0.2 - 0.2*1    = 0.0
    # pt=0.8: TP=1 (.9),       FP=0                           -> 0.1
    np.testing.assert_allclose(net_benefit(y, p, t), [0.4, 0.2, 0.0, 0.1], atol=1e-12)
    # treat all: prevalence 0.4 -> 0.4 - 0.6 * pt/(1-pt)
    np.testing.assert_allclose(net_benefit_treat_all(y, t), [0.4, 0.25, -0.2, -2.0], atol=1e-12)
    df = decision_curve(y, p, t)
    assert list(df.columns) == ["threshold", "model", "treat_all", "treat_none"]
    pd.testing.assert_series_equal(
        df["model"], pd.Series([0.4, 0.2, 0.0, 0.1], name="model"), atol=1e-12
    )
    assert (df["treat_none"] == 0).all()
    with pytest.raises(ValueError):
        net_benefit(y, p, [1.0])


# --------------------------------------------------------------------------- operating points






# --------------------------------------------------------------------------- formatting


def test_formatting():
    assert format_ci(0.91234, 0.8711, 0.948) == "0.912 [0.871, 0.948]"
    assert format_ci(0.5, 0.25, 0.75, digits=2) == "0.50 [0.25, 0.75]"
    assert format_mean_sd([0.90, 0.92, 0.94]) == "0.920 ± 0.020"
    assert format_mean_sd(np.array([1.0, 2.0, 3.0, 4.0]), digits=2) == "2.50 ± 1.29"
    # metrics undefined on some folds read as such, never as "nan ± nan"
    assert format_mean_sd([0.9, np.nan, 0.92, 0.94]) == "0.920 ± 0.020 (3 of 4 folds)"
    assert format_mean_sd([0.714, np.nan, np.nan]) == "0.714 (1 of 3 folds)"
    assert format_mean_sd([np.nan, np.nan]) == "undefined on every fold"


def test_threshold_for_sensitivity_achieves_target_and_is_highest():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, size=500)
    s = np.round(y + rng.normal(size=500), 2)  # with ties
    for target in (0.8, 0.9, 0.95, 0.99):
        t = threshold_for_sensitivity(y, s, target)
        assert np.mean(s[y == 1] >= t) >= target
        higher = s[s > t].min()
        assert np.mean(s[y == 1] >= higher) < target


def test_threshold_for_sensitivity_hand_example():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    assert threshold_for_sensitivity(y, s, 0.75) == 0.6  # 3/4 positives >= 0.6; at 0.7 only 2/4
    assert threshold_for_sensitivity(y, s, 0.95) == 0.3  # needs all four positives
    assert threshold_for_sensitivity(y, s, 0.5) == 0.8
    assert threshold_for_sensitivity(y, s, 1.0) == 0.3
