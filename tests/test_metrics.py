"""Tests for phyllodes.evaluate.metrics: hand-computed confusion matrices, subject averaging, inner
thresholds from validation rows only, fold mean ± SD, pooled vs per-fold, bootstrap CIs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from phyllodes.evaluate import metrics as M
from phyllodes.evaluate.metrics import (
    METRICS,
    binary_metrics,
    choose_threshold,
    fold_metrics,
    metrics_table,
    pooled_metrics,
    subject_level,
    summarize_folds,
)
from phyllodes.evaluate.stats import cluster_bootstrap_ci


def _preds(rows: list[tuple]) -> pd.DataFrame:
    """Rows (subject_id, fold, split, y, prob); image_path made unique per row."""
    df = pd.DataFrame(rows, columns=["subject_id", "fold", "split", "y", "prob"])
    df.insert(1, "image_path", [f"{s}_{i}.png" for i, s in enumerate(df["subject_id"])])
    return df


def _random_preds(n_sub: int = 60, k: int = 4, models=("a", "b"), seed: int = 0) -> pd.DataFrame:
    """k folds; per fold the other folds' every third subject is 'val'; 1-3 images per subject."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_sub)
    y[:2] = [0, 1]
    fold = rng.permutation(np.arange(n_sub) % k)
    n_img = rng.integers(1, 4, n_sub)
    rows = []
    for model in models:
        for f in range(k):
            for s in range(n_sub):
                split = "test" if fold[s] == f else ("val" if s % 3 == 0 else None)
                for i in range(n_img[s] if split else 0):
                    rows.append(
                        dict(
                            model=model,
                            subject_id=f"S{s:03d}",
                            image_path=f"S{s:03d}_{i}.png",
                            fold=f,
                            split=split,
                            y=int(y[s]),
                            prob=float(np.clip(0.35 * y[s] + 0.65 * rng.random(), 0, 1)),
                        )
                    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- binary_metrics


def test_binary_metrics_hand_example():
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.7, 0.55, 0.3, 0.6, 0.5, 0.4, 0.2, 0.1, 0.05]
    # threshold 0.5, positive when p >= 0.5 (0.5 itself counts as positive):
    # positives 0.9, 0.7, 0.55 -> TP = 3; 0.3 -> FN = 1
    # negatives 0.6, 0.5 -> FP = 2; 0.4, 0.2, 0.1, 0.05 -> TN = 4
    tp, fp, tn, fn = 3, 2, 4, 1
    # AUC = correctly ordered (pos, neg) pairs / (4 * 6): 0.9 beats 6, 0.7 beats 6,
    # 0.55 beats 5 (not 0.6), 0.3 beats 3 (0.2, 0.1, 0.05) -> 20 / 24
    # AP: positives at ranks 1, 2, 4, 7 -> (1/1 + 2/2 + 3/4 + 4/7) / 4
    m = binary_metrics(y, p, threshold=0.5)
    expected = {
        "sensitivity": tp / (tp + fn),  # 0.75
        "specificity": tn / (tn + fp),  # 0.6667
        "ppv": tp / (tp + fp),  # 0.6
        "npv": tn / (tn + fn),  # 0.8
        "f1": 2 * tp / (2 * tp + fp + fn),  # 6/9
        "accuracy": (tp + tn) / 10,  # 0.7
        "balanced_accuracy": (0.75 + 4 / 6) / 2,
        "auc": 20 / 24,
        "auprc": (1 + 1 + 3 / 4 + 4 / 7) / 4,
    }
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k
    assert list(m)[: len(METRICS)] == list(METRICS)
    assert (m["threshold"], m["n"], m["n_pos"]) == (0.5, 10, 4)
    # a higher threshold moves 0.55 and 0.6 to negative: TP 2, FP 1, TN 5, FN 2
    m2 = binary_metrics(y, p, threshold=0.58)
    assert (m2["sensitivity"], m2["specificity"], m2["ppv"], m2["npv"]) == pytest.approx(
        (0.5, 5 / 6, 2 / 3, 5 / 7)
    )
    assert m2["auc"] == m["auc"]


def test_binary_metrics_undefined_values_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_class = binary_metrics([0, 0, 0], [0.1, 0.2, 0.7])
        none_flagged = binary_metrics([0, 1, 1], [0.1, 0.2, 0.3])
    # one class: TN = 2, FP = 1, FN = 0, TP = 0
    for k in ("auc", "auprc", "balanced_accuracy", "sensitivity"):
        assert np.isnan(one_class[k]), k
    assert one_class["npv"] == 1.0
    assert one_class["specificity"] == pytest.approx(2 / 3)
    assert one_class["ppv"] == 0.0 and one_class["f1"] == 0.0
    assert one_class["accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(none_flagged["ppv"])
    assert none_flagged["sensitivity"] == 0.0 and none_flagged["npv"] == pytest.approx(1 / 3)
    assert none_flagged["auc"] == 1.0
    with pytest.raises(ValueError, match="0/1"):
        binary_metrics([0, 2], [0.1, 0.2])


def test_fast_bootstrap_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        s = np.round(rng.random(n), 1)  # many ties
        pred = (s >= 0.5).astype(float)
        full = binary_metrics(y, s, 0.5)
        for m in METRICS:
            score = s if m in ("auc", "auprc") else pred
            if m == "auc" and not 0 < y.sum() < n:
                continue
            fast = M._FAST_METRICS[m](y, score)
            assert fast == pytest.approx(full[m], abs=1e-12, nan_ok=True), (trial, m)
        if y.sum():
            assert M._fast_average_precision(y, s) == pytest.approx(
                average_precision_score(y, s), abs=1e-12
            )


# --------------------------------------------------------------------------- subject level


def test_subject_level_averages_images_per_subject_and_run():
    df = _preds(
        [
            ("A", 0, "test", 1, 0.2),
            ("A", 0, "test", 1, 0.6),
            ("A", 0, "test", 1, 0.7),
            ("B", 0, "test", 0, 0.4),
            ("A", 1, "val", 1, 0.9),
            ("A", 1, "val", 1, 0.5),  # same subject, other fold/split
            ("C", 1, "test", 0, 0.1),
            ("C", 1, "test", 0, 0.3),
        ]
    )
    df["model"] = "m1"
    df2 = df.assign(model="m2", prob=1 - df["prob"])
    both = pd.concat([df, df2], ignore_index=True)
    sl = subject_level(both)
    assert len(sl) == 8 and int(sl["n_images"].sum()) == len(both)
    assert "image_path" not in sl.columns
    got = sl.set_index(["model", "subject_id", "fold", "split"])
    assert got.at[("m1", "A", 0, "test"), "prob"] == pytest.approx(0.5)
    assert got.at[("m1", "A", 0, "test"), "n_images"] == 3
    assert got.at[("m1", "A", 1, "val"), "prob"] == pytest.approx(0.7)
    assert got.at[("m1", "C", 1, "test"), "prob"] == pytest.approx(0.2)
    assert got.at[("m2", "A", 0, "test"), "prob"] == pytest.approx(0.5)
    assert got.at[("m2", "C", 1, "test"), "prob"] == pytest.approx(0.8)
    assert got.at[("m1", "B", 0, "test"), "y"] == 0 and got.at[("m1", "A", 1, "val"), "y"] == 1


def test_subject_level_keeps_rows_with_missing_extra_keys():
    df = _preds([("A", 0, "test", 1, 0.2), ("A", 0, "test", 1, 0.4), ("B", 0, "test", 0, 0.3)])
    df["note"] = [np.nan, np.nan, "x"]
    sl = subject_level(df)
    assert len(sl) == 2 and sl["n_images"].tolist() == [2, 1]
    assert sl.loc[sl["subject_id"] == "A", "prob"].item() == pytest.approx(0.3)


def test_subject_level_rejects_inconsistent_y():
    df = _preds(
        [("A", 0, "test", 1, 0.2), ("P042", 0, "test", 0, 0.3), ("P042", 0, "test", 1, 0.9)]
    )
    with pytest.raises(ValueError, match="P042"):
        subject_level(df)
    # also across folds of one run
    df = _preds([("Q7", 0, "test", 1, 0.2), ("Q7", 1, "val", 0, 0.3), ("B", 0, "test", 0, 0.1)])
    with pytest.raises(ValueError, match="Q7"):
        subject_level(df)
    with pytest.raises(ValueError, match="missing"):
        subject_level(_preds([("A", 0, "test", 1, np.nan)]))


# --------------------------------------------------------------------------- thresholds


def test_choose_threshold_youden_ties_and_f1():
    # J: inf -> 0, 0.9 -> 0.5, 0.8 -> 0, 0.2 -> 0.5, 0.1 -> 0; tie 0.9 vs 0.2 -> closer to 0.5
    assert choose_threshold([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9]) == 0.2
    # J: 0.6 -> 0.5, 0.55 -> 0, 0.2 -> 0.5; tie 0.6 vs 0.2 -> 0.6
    assert choose_threshold([0, 1, 0, 1], [0.1, 0.2, 0.55, 0.6]) == 0.6
    # a perfectly separated set: Youden picks the lowest positive score
    assert choose_threshold([0, 0, 1, 1], [0.81, 0.84, 0.9, 0.95]) == 0.9
    # the result is a valid probability even when no cut beats "flag nobody"
    t = choose_threshold([1, 0], [0.3, 0.7])
    assert 0 <= t <= 1
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 50)
    p = np.round(rng.random(50) * 0.5 + 0.3 * y, 2)
    t = choose_threshold(y, p, "f1")
    youden = choose_threshold(y, p, "youden")
    assert t != youden  # this data separates the two criteria
    j_at = {c: np.mean(p[y == 1] >= c) - np.mean(p[y == 0] >= c) for c in np.unique(p)}
    assert j_at[youden] == pytest.approx(max(j_at.values()))
    f1_at = {c: f1_score(y, (p >= c).astype(int)) for c in np.unique(p)}
    assert f1_score(y, (p >= t).astype(int)) == pytest.approx(max(f1_at.values()))
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1], [0.2, 0.3])


def _inner_case() -> pd.DataFrame:
    """Fold 0: val subjects imply a threshold of 0.9 (negatives 0.81-0.85, positives 0.9-0.95);
    test subjects would give another one (positives 0.86-0.88)."""
    rows = [
        ("V1", 0, "val", 0, 0.81),
        ("V2", 0, "val", 0, 0.84),
        ("V3", 0, "val", 0, 0.85),
        ("V4", 0, "val", 1, 0.90),
        ("V4", 0, "val", 1, 0.90),
        ("V5", 0, "val", 1, 0.95),
        ("T1", 0, "test", 0, 0.60),
        ("T2", 0, "test", 0, 0.70),
        ("T3", 0, "test", 0, 0.89),
        ("T4", 0, "test", 1, 0.86),
        ("T5", 0, "test", 1, 0.88),
        ("T6", 0, "test", 1, 0.97),
    ]
    return _preds(rows)


def test_inner_threshold_comes_from_val_rows_only():
    df = _inner_case()
    fm = fold_metrics(df, threshold="inner")
    assert fm["threshold"].tolist() == [0.9]
    test = df[df["split"] == "test"]
    expected = binary_metrics(test["y"], test["prob"], 0.9)
    # at 0.9: TP = 1 (0.97), FN = 2, TN = 3, FP = 0
    assert fm.loc[0, "sensitivity"] == pytest.approx(1 / 3) == expected["sensitivity"]
    assert fm.loc[0, "specificity"] == 1.0 and fm.loc[0, "ppv"] == 1.0
    # 0.5 would flag every test subject
    fixed = fold_metrics(df, threshold="0.5")
    assert fixed["threshold"].tolist() == [0.5]
    assert fixed.loc[0, "sensitivity"] == 1.0 and fixed.loc[0, "specificity"] == 0.0
    # changing test probabilities changes nothing about the threshold
    moved = df.copy()
    is_test = moved["split"] == "test"
    moved.loc[is_test, "prob"] = 1 - moved.loc[is_test, "prob"]
    assert fold_metrics(moved, threshold="inner")["threshold"].tolist() == [0.9]
    # while changing val probabilities does
    shifted = df.copy()
    shifted.loc[~is_test, "prob"] -= 0.3
    assert fold_metrics(shifted, threshold="inner")["threshold"].tolist() == [pytest.approx(0.6)]


def test_inner_threshold_uses_the_same_level():
    # val subject V4 has images 0.70 and 0.96 (mean 0.83); negatives 0.75, 0.80
    df = _preds(
        [
            ("V1", 0, "val", 0, 0.75),
            ("V2", 0, "val", 0, 0.80),
            ("V4", 0, "val", 1, 0.70),
            ("V4", 0, "val", 1, 0.96),
            ("T1", 0, "test", 0, 0.2),
            ("T2", 0, "test", 1, 0.9),
        ]
    )
    assert fold_metrics(df, "subject", "inner")["threshold"].item() == pytest.approx(0.83)
    assert fold_metrics(df, "image", "inner")["threshold"].item() == pytest.approx(0.96)
    assert fold_metrics(df, "image", "0.5")["n"].item() == 2


def test_inner_threshold_needs_val_rows():
    df = _inner_case()
    with pytest.raises(ValueError, match="val"):
        fold_metrics(df[df["split"] == "test"], threshold="inner")


# --------------------------------------------------------------------------- folds, pooled, table


def test_fold_metrics_and_mean_sd_against_numpy():
    df = _random_preds()
    fm = fold_metrics(df)
    assert fm[["model", "fold"]].values.tolist() == [[m, f] for m in "ab" for f in range(4)]
    # each fold equals binary_metrics on that fold's test subjects (mean prob per subject by hand)
    for _, r in fm.iterrows():
        g = df[(df["model"] == r["model"]) & (df["fold"] == r["fold"]) & (df["split"] == "test")]
        by_subject = g.groupby("subject_id").agg(y=("y", "first"), prob=("prob", "mean"))
        exp = binary_metrics(by_subject["y"], by_subject["prob"])
        assert r["n"] == len(by_subject)
        for m in METRICS:
            assert r[m] == pytest.approx(exp[m], nan_ok=True), m
    summ = summarize_folds(fm)
    assert len(summ) == 2 * len(METRICS)
    for model in "ab":
        vals = fm.loc[fm["model"] == model, "auc"].to_numpy()
        row = summ[(summ["model"] == model) & (summ["metric"] == "auc")].iloc[0]
        assert row["mean"] == pytest.approx(np.mean(vals))
        assert row["sd"] == pytest.approx(np.std(vals, ddof=1))
        assert row["mean_sd"] == f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"
        assert row["n_folds"] == 4
    tab = metrics_table(df, n_boot=50)
    for model in "ab":
        t = tab[tab["model"] == model].iloc[0]
        vals = fm.loc[fm["model"] == model, "sensitivity"].to_numpy()
        assert t["sensitivity_mean"] == pytest.approx(np.mean(vals))
        assert t["sensitivity_sd"] == pytest.approx(np.std(vals, ddof=1))
        assert t["sensitivity"] == f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def test_summarize_folds_skips_undefined_folds():
    fm = pd.DataFrame(
        {"fold": [0, 1, 2], "threshold": 0.5, **{m: [0.2, np.nan, 0.6] for m in METRICS}}
    )
    s = summarize_folds(fm).set_index("metric")
    assert "model" not in s.columns
    assert s.at["ppv", "n_folds"] == 2
    assert s.at["ppv", "mean"] == pytest.approx(0.4) and s.at["ppv", "sd"] == pytest.approx(
        np.std([0.2, 0.6], ddof=1)
    )


def _two_offset_folds() -> pd.DataFrame:
    """Each fold separates perfectly, but fold 0 scores low (neg 0.1, pos 0.2) and fold 1 high
    (neg 0.8, pos 0.9); val rows imply thresholds 0.2 (fold 0) and 0.9 (fold 1)."""
    rows = []
    for f, (lo, hi) in enumerate([(0.1, 0.2), (0.8, 0.9)]):
        for i in range(2):
            rows += [
                (f"N{f}{i}", f, "test", 0, lo),
                (f"P{f}{i}", f, "test", 1, hi),
                (f"vN{f}{i}", f, "val", 0, lo),
                (f"vP{f}{i}", f, "val", 1, hi),
            ]
    return _preds(rows)


def test_pooled_differs_from_fold_mean():
    df = _two_offset_folds()
    fm = fold_metrics(df)
    assert fm["auc"].tolist() == [1.0, 1.0]
    # threshold 0.5: fold 0 flags nobody (sens 0, spec 1, PPV undefined, F1 0),
    # fold 1 flags everyone (sens 1, spec 0, PPV 0.5, F1 2*2/(4+2) = 2/3)
    assert fm["sensitivity"].tolist() == [0.0, 1.0]
    assert np.isnan(fm.loc[0, "ppv"]) and fm.loc[1, "ppv"] == 0.5
    assert fm["f1"].tolist() == pytest.approx([0.0, 2 / 3])
    pooled = pooled_metrics(df).iloc[0]
    # pooled pairs: positives 0.2, 0.2, 0.9, 0.9 vs negatives 0.1, 0.1, 0.8, 0.8:
    # 0.2 beats the two 0.1 (x2 = 4 pairs), 0.9 beats all four (x2 = 8) -> 12 / 16
    assert pooled["auc"] == pytest.approx(12 / 16)
    assert pooled["auc"] == pytest.approx(
        roc_auc_score(df.loc[df.split == "test", "y"], df.loc[df.split == "test", "prob"])
    )
    # pooled: TP = 2, FP = 2, FN = 2, TN = 2 -> F1 = 4/8, PPV 0.5
    assert pooled["f1"] == pytest.approx(0.5) and pooled["ppv"] == 0.5
    assert summarize_folds(fm).set_index("metric").at["f1", "mean"] == pytest.approx(1 / 3)
    assert (pooled["n"], pooled["n_pos"], pooled["n_folds"], pooled["threshold"]) == (8, 4, 2, 0.5)
    # inner: per-fold thresholds 0.2 and 0.9 label every test subject correctly once pooled,
    # which no single threshold on the pooled probabilities can do; AUC stays 0.75
    inner = pooled_metrics(df, threshold="inner").iloc[0]
    assert fold_metrics(df, threshold="inner")["threshold"].tolist() == [0.2, 0.9]
    for m in ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy"):
        assert inner[m] == 1.0, m
    assert inner["auc"] == pytest.approx(0.75) and np.isnan(inner["threshold"])


def test_metrics_table_columns_and_cis():
    df = _random_preds(n_sub=80, models=("a", "b", "c"))
    for thr in ("0.5", "inner"):
        tab = metrics_table(df, threshold=thr, n_boot=200, seed=1)
        pooled = pooled_metrics(df, threshold=thr)
        assert tab["model"].tolist() == ["a", "b", "c"]
        for m in METRICS:
            for suffix in (
                "",
                "_pooled",
                "_mean",
                "_sd",
                "_pooled_est",
                "_pooled_low",
                "_pooled_high",
            ):
                assert f"{m}{suffix}" in tab.columns
            est, low, high = tab[f"{m}_pooled_est"], tab[f"{m}_pooled_low"], tab[f"{m}_pooled_high"]
            np.testing.assert_allclose(est, pooled[m])
            assert ((low <= est + 1e-12) & (est <= high + 1e-12)).all(), m
            assert (high > low).any(), m
            assert tab.loc[0, f"{m}_pooled"] == f"{est[0]:.3f} [{low[0]:.3f}, {high[0]:.3f}]"
    # the CI equals cluster_bootstrap_ci with scikit-learn functions on pooled subject rows
    test = subject_level(df)
    test = test[(test["model"] == "b") & (test["split"] == "test")]
    ref_auprc = cluster_bootstrap_ci(
        average_precision_score,
        test["y"],
        test["prob"],
        groups=test["subject_id"],
        n_boot=200,
        seed=1,
    )
    labels = (test["prob"] >= 0.5).astype(int)
    ref_f1 = cluster_bootstrap_ci(
        lambda a, b: f1_score(a, b.astype(int)),
        test["y"],
        labels,
        groups=test["subject_id"],
        n_boot=200,
        seed=1,
    )
    tab = metrics_table(df, threshold="0.5", n_boot=200, seed=1).set_index("model")
    assert (tab.at["b", "auprc_pooled_low"], tab.at["b", "auprc_pooled_high"]) == pytest.approx(
        (ref_auprc["low"], ref_auprc["high"])
    )
    assert (tab.at["b", "f1_pooled_low"], tab.at["b", "f1_pooled_high"]) == pytest.approx(
        (ref_f1["low"], ref_f1["high"])
    )
    assert tab.at["b", "f1_pooled_est"] == pytest.approx(ref_f1["estimate"])


def test_image_level_bootstrap_resamples_subjects():
    df = _random_preds(n_sub=40, models=("a",))
    tab = metrics_table(df, level="image", n_boot=200, seed=2).iloc[0]
    test = df[df["split"] == "test"]
    ref = cluster_bootstrap_ci(
        roc_auc_score, test["y"], test["prob"], groups=test["subject_id"], n_boot=200, seed=2
    )
    assert tab["n"] == len(test)
    assert (tab["auc_pooled_est"], tab["auc_pooled_low"], tab["auc_pooled_high"]) == pytest.approx(
        (ref["estimate"], ref["low"], ref["high"])
    )
    unclustered = cluster_bootstrap_ci(roc_auc_score, test["y"], test["prob"], n_boot=200, seed=2)
    assert (tab["auc_pooled_low"], tab["auc_pooled_high"]) != pytest.approx(
        (unclustered["low"], unclustered["high"])
    )


def test_bad_arguments():
    df = _inner_case()
    with pytest.raises(ValueError, match="level"):
        fold_metrics(df, level="lesion")
    with pytest.raises(ValueError, match="threshold"):
        fold_metrics(df, threshold="youden")
    with pytest.raises(ValueError, match="lack"):
        fold_metrics(df.drop(columns="prob"))
