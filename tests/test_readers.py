"""The reader in every comparison: reader references in the contract, never a model input, and
the comparisons with the reader (AUC, combination, operating points) on numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from phyllodes import paths
from phyllodes.data.cohort import load_cohort, validate_cohort
from phyllodes.data.references import ReferenceSpec, subject_reference
from phyllodes.evaluate import readers
from phyllodes.study import open_study
from phyllodes.train.spec import RunSpec

BIRADS = ("1", "2", "3", "4a", "4b", "4c", "5")


def _mann_whitney_auc(y, s) -> float:
    """AUC by counting every (positive, negative) pair, ties half: independent of sklearn."""
    pos, neg = [a for a, t in zip(s, y) if t == 1], [a for a, t in zip(s, y) if t == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_the_radiologists_numbers_equal_the_original_spreadsheet(breast_release):
    """On the bundled cohort: BI-RADS AUC, BI-RADS >= 4a sensitivity and benign spared from
    the release's spreadsheet by hand."""
    clin = pd.read_excel(breast_release / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx")
    clin = clin[clin["Classification"] != "normal"]
    y = (clin["Classification"] == "malignant").astype(int).to_list()
    rank = [BIRADS.index(str(b).strip()) for b in clin["BIRADS"]]
    expected_auc = _mann_whitney_auc(y, rank)
    flagged = [r >= BIRADS.index("4a") for r in rank]
    sens = sum(f for f, t in zip(flagged, y) if t) / sum(y)
    spared = sum(not f for f, t in zip(flagged, y) if not t) / (len(y) - sum(y))

    c = load_cohort(paths.DEFAULT_COHORT)
    table = c.reference_table("birads")
    auc = readers.reader_auc(table, n_boot=200)
    assert auc["estimate"] == pytest.approx(expected_auc, abs=1e-12)
    assert auc["estimate"] == pytest.approx(0.930, abs=5e-4) and auc["n"] == 252
    assert auc["low"] < auc["estimate"] < auc["high"]
    op = readers.reader_operating_points(table, c.references["birads"], n_boot=200)
    first = op.iloc[0]
    assert first["rule"].endswith(">= 4a") and sens == 1.0
    assert first["sensitivity (95% CI)"].startswith(f"{sens:.3f}")
    assert first["benign spared excision (95% CI)"].startswith(f"{spared:.3f}")
    assert first["benign spared"] == 67 and first["benign"] == 154 and spared == 67 / 154


def _with_reference_as_feature(cohort_copy, how: str):
    cfg = yaml.safe_load((cohort_copy / "cohort.yaml").read_text())
    if how == "categorical":
        cfg["categorical_features"] = cfg["categorical_features"] + ["radiologist_impression"]
    else:
        cfg["feature_sets"] = {"paper": ["age", "radiologist_impression"]}
    (cohort_copy / "cohort.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize("how", ["categorical", "feature set"])
def test_a_reference_listed_as_a_feature_is_refused(cohort_copy, how):
    """Tried as a new user would: also listing the reader's column as a feature."""
    _with_reference_as_feature(cohort_copy, how)
    report = validate_cohort(cohort_copy)
    assert not report.ok
    msg = " ".join(str(p) for p in report.problems)
    assert "radiologist_impression" in msg
    if how == "categorical":
        assert "never a model input" in msg


def test_invalid_reference_values_name_line_and_column(cohort_copy):
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    df.loc[3, "radiologist_impression"] = "4d"
    df.to_csv(cohort_copy / "cohort.csv", index=False)
    report = validate_cohort(cohort_copy)
    bad = [p for p in report.problems if p.kind == "reference"]
    assert len(bad) == 1 and "lines 5," in bad[0].where and "radiologist_impression" in bad[0].where
    assert "'4d' is not one of the categories" in bad[0].message


def test_no_reference_value_reaches_a_model_a_scaler_or_the_folds(cohort_copy, tmp_path):
    """The reader's column scrambled: the same folds, run ids, fitted preprocessing and
    predictions, for a classical, a neural and an image run."""
    study_a = open_study("smoke", cohort_copy, device="cpu", output_dir=tmp_path / "a",
                         image_size=32)
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(0)
    df["radiologist_impression"] = rng.permutation(df["radiologist_impression"].to_numpy())
    df.to_csv(cohort_copy / "cohort.csv", index=False)
    study_b = open_study("smoke", cohort_copy, device="cpu", output_dir=tmp_path / "b",
                         image_size=32)
    assert not study_a.cohort.reference_table("impression")["score"].equals(
        study_b.cohort.reference_table("impression")["score"])
    pd.testing.assert_frame_equal(study_a.splits, study_b.splits)
    assert study_a.cohort.fingerprint == study_b.cohort.fingerprint
    from phyllodes.train.runs import execute_run, load_predictions, planned_run
    for spec in (RunSpec("clinical", "logreg", fold=0), RunSpec("clinical", "mlp", fold=1),
                 RunSpec("multimodal", "efficientnet_lite0", "late", fold=0)):
        assert planned_run(study_a, spec).run_id == planned_run(study_b, spec).run_id
        pa = load_predictions([execute_run(study_a, spec, progress=False)])
        pb = load_predictions([execute_run(study_b, spec, progress=False)])
        pd.testing.assert_frame_equal(pa.drop(columns="run_id"), pb.drop(columns="run_id"))
    from phyllodes.data.clinical import ClinicalEncoder
    enc = ClinicalEncoder(study_a.cohort).fit(study_a.splits["subject_id"].tolist())
    assert not any("impression" in n for n in enc.feature_names)


def _toy(n_per_fold: int = 30, folds: int = 3, seed: int = 0):
    """Hand-made predictions of one model on ``folds`` folds (val and test subjects) and a
    reader's ordinal score, both informative."""
    rng = np.random.default_rng(seed)
    rows, ref = [], []
    k = 0
    for f in range(folds):
        for split in ("val", "test"):
            for _ in range(n_per_fold):
                y = int(rng.random() < 0.4)
                sid = f"s{k}"
                k += 1
                rows.append({"subject_id": sid, "image_path": f"{sid}.png", "fold": f,
                             "split": split, "y": y,
                             "prob": float(1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1)))))})
                ref.append({"subject_id": sid, "y": y,
                            "score": float(np.clip(np.round(2 + 2 * y + rng.normal(0, 1)), 0, 6))})
    preds = pd.DataFrame(rows).assign(model_label="m", modality="image", model="m",
                                      fusion="", seed=0, pretrained=True, run_id="r")
    table = pd.DataFrame(ref)
    table["category"] = [BIRADS[int(s)] for s in table["score"]]
    return preds, table


SPEC = ReferenceSpec("birads", "birads", "ordinal", BIRADS, "4a")


def test_rule_prob_is_monotone_and_puts_the_rule_at_one_half():
    s = np.arange(len(BIRADS), dtype=float)
    p = readers.rule_prob(SPEC, s)
    assert np.all(np.diff(p) > 0) and p[BIRADS.index("4a")] == 0.5 and p[0] == 0 and p[-1] == 1
    assert (p >= 0.5).tolist() == [b in ("4a", "4b", "4c", "5") for b in BIRADS]


def test_the_combination_never_fits_on_the_subjects_it_predicts():
    """A test subject's label, reference value or model output changed: the fold's fitted
    combination (its coefficients) and every other subject's combined risk do not move."""
    preds, table = _toy()
    rows_a, coef_a = readers.combined_predictions(preds, table, SPEC, "c")
    victim = preds[(preds["fold"] == 1) & (preds["split"] == "test")]["subject_id"].iloc[0]
    p2, t2 = preds.copy(), table.copy()
    p2.loc[p2["subject_id"] == victim, ["y", "prob"]] = [1 - int(p2.loc[p2["subject_id"] ==
                                                                        victim, "y"].iloc[0]),
                                                         0.999]
    t2.loc[t2["subject_id"] == victim, "score"] = 6.0
    rows_b, coef_b = readers.combined_predictions(p2, t2, SPEC, "c")
    pd.testing.assert_frame_equal(coef_a, coef_b)
    a = rows_a[rows_a["subject_id"] != victim].set_index("subject_id")["prob"]
    b = rows_b[rows_b["subject_id"] != victim].set_index("subject_id")["prob"]
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())
    # the fit uses only inner-validation subjects: one per fold, as many as that fold's val
    assert coef_a["n_fit_subjects"].tolist() == [30, 30, 30]
    # and it is informative: both inputs get positive weights
    assert (coef_a["reader"] > 0).all() and (coef_a["model_log_odds"] > 0).all()


def test_operating_points_on_a_hand_made_cohort():
    table = pd.DataFrame({"subject_id": list("abcdefgh"),
                          "y": [0, 0, 0, 0, 1, 1, 1, 0],
                          "score": [1, 2, 3, 3, 4, 5, 6, np.nan]})  # 'h' has no category
    table["category"] = [BIRADS[int(s)] if s == s else "" for s in table["score"]]
    op = readers.reader_operating_points(table, SPEC, n_boot=100).set_index("rule")
    r4a = op.loc["birads >= 4a"]
    # >= 4a (rank 3): flags c, d (benign) and e, f, g (malignant)
    assert (r4a["benign excised"], r4a["benign spared"], r4a["malignant missed"]) == (2, 2, 0)
    assert r4a["subjects"] == 7 and r4a["benign"] == 4
    assert r4a["benign spared excision (95% CI)"].startswith("0.500")
    r4c = op.loc["birads >= 4c"]  # rank 5: e (rank 4) missed
    assert (r4c["benign excised"], r4c["malignant missed"]) == (0, 1)
    assert r4c["sensitivity (95% CI)"].startswith("0.667")


def test_the_model_at_the_readers_sensitivity_chooses_its_threshold_on_inner_validation():
    preds, table = _toy()
    dec = readers.model_at_reader_sensitivity(preds, table, SPEC)
    assert set(dec["subject_id"]) == set(preds.loc[preds["split"] == "test", "subject_id"])
    for fold, g in dec.groupby("fold"):
        val = preds[(preds["fold"] == fold) & (preds["split"] == "val")].merge(
            table[["subject_id", "score"]], on="subject_id")
        target = float((val.loc[val["y"] == 1, "score"] >= 3).mean())
        assert g["target_sensitivity"].iloc[0] == pytest.approx(target)
        reached = (val.loc[val["y"] == 1, "prob"] >= g["threshold"].iloc[0]).mean()
        assert reached >= target - 1e-12
        # the threshold is the highest that reaches the target on val: a hair higher does not
        higher = (val.loc[val["y"] == 1, "prob"] >= g["threshold"].iloc[0] + 1e-9).mean()
        assert higher < target or target == 0


def test_reader_rows_follow_the_models_folds_and_leave_out_missing_values(cohort_copy):
    c = load_cohort(cohort_copy)
    ref = c.references["impression"]
    table = subject_reference(c.images, ref)
    assert table["score"].isna().sum() >= 0 and len(table) == c.subjects.shape[0]
    preds = pd.DataFrame({"subject_id": c.images["subject_id"], "image_path":
                          c.images["image_path"], "fold": 0, "split": "test",
                          "y": c.images["y"], "prob": 0.5, "model_label": "m"})
    rows = readers.reader_predictions(preds, table, ref)
    have = set(table.loc[table["score"].notna(), "subject_id"])
    assert set(rows["subject_id"]) == have and rows["model_label"].iloc[0].endswith("(reader)")


def test_a_cohort_without_a_reference_says_so(synthetic_cohort_dir, tmp_path):
    import shutil
    dst = tmp_path / "c"
    shutil.copytree(synthetic_cohort_dir, dst)
    cfg = yaml.safe_load((dst / "cohort.yaml").read_text())
    cfg.pop("references")
    cfg["unused_columns"] = ["radiologist_impression"]
    (dst / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    c = load_cohort(dst)
    assert readers.study_reader(c) is None
    note = readers.no_reference_note(c.name)
    assert "no reader reference declared" in note["note"].iloc[0]
