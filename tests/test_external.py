"""External validation: a final model on all subjects, applied to a cohort it never saw."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from phyllodes.data.sources.synthetic import make_synthetic_cohort
from phyllodes.evaluate import external
from phyllodes.study import open_study
from phyllodes.train.apply import ApplyError, apply_run
from phyllodes.train.grid import development_runs
from phyllodes.train.runs import execute_run, planned_run
from phyllodes.train.spec import FINAL_FOLD, RunSpec

SMOKE = {"pretrained": "none"}


@pytest.fixture(scope="module")
def partner(tmp_path_factory):
    """A second hospital's cohort in the same schema (other patients, other seed)."""
    return make_synthetic_cohort(tmp_path_factory.mktemp("partner"), n_subjects=30, seed=7,
                                 image_size=48, name="partner")


@pytest.fixture(scope="module")
def developed(synthetic_cohort_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext")
    study = open_study("smoke", synthetic_cohort_dir, output_dir=out, settings=SMOKE)
    return study, development_runs(study, "image", progress=False), out


def _flipped(src, dst):
    """A copy of a cohort with every subject's label swapped (benign <-> the positives)."""
    shutil.copytree(src, dst)
    df = pd.read_csv(dst / "cohort.csv", dtype=str, keep_default_na=False)
    df["label"] = np.where(df["label"] == "benign", "malignant", "benign")
    df.to_csv(dst / "cohort.csv", index=False)
    return dst


def test_the_final_model_trains_on_every_subject_and_has_no_test_fold(developed):
    study, runs, _ = developed
    final = runs.final[0]
    assert "-fall-" in final.name
    preds = pd.read_csv(final / "predictions.csv", dtype={"subject_id": str})
    assert set(preds["split"]) == {"val"}  # its inner validation only
    import json
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["splits_hash"] is None
    trained = set(cfg["subjects"]["train"]) | set(cfg["subjects"]["val"])
    assert trained == set(study.cohort.subjects["subject_id"]) and not cfg["subjects"]["test"]
    # other outer folds do not change the final model: same run, reused
    other = study.__class__(**{**study.__dict__, "splits": study.splits.assign(
        fold=study.splits["fold"][::-1].to_numpy())})
    assert planned_run(other, RunSpec("image", study.profile.encoder, fold=FINAL_FOLD)).run_dir \
        == final
    assert len(runs.cv) == 2 * study.profile.folds
    assert set(runs.internal["split"]) == {"test"}


def test_external_labels_never_change_the_model_or_its_threshold(developed, partner,
                                                                  tmp_path):
    study, runs, out = developed
    ext = open_study("smoke", partner, output_dir=out, settings=SMOKE)
    flipped = open_study("smoke", _flipped(partner, tmp_path / "flipped"), output_dir=out,
                         settings=SMOKE)
    for run in runs.final:
        a, b = apply_run(run, ext), apply_run(run, flipped)
        assert np.array_equal(a["prob"].to_numpy(), b["prob"].to_numpy())
        assert (a["y"].to_numpy() == 1 - b["y"].to_numpy()).all()
    d1, d2 = (external.Direction(study.cohort, e.cohort, runs.internal, runs.inner_val,
                                 pd.concat([apply_run(r, e) for r in runs.final]))
              for e in (ext, flipped))
    t1, t2 = (external.performance_table(d, n_boot=50) for d in (d1, d2))
    col = "threshold (final model's inner validation)"
    assert t1[col].tolist()[:2] == t2[col].tolist()[:2]
    assert t1["auc_external"].iloc[0] == pytest.approx(1 - t2["auc_external"].iloc[0])
    # the external AUC is what the model's probabilities give on the external subjects
    from sklearn.metrics import roc_auc_score
    s = external.subject_scores(d1.applied[d1.applied["model_label"] == d1.models[0]])
    assert t1["auc_external"].iloc[0] == pytest.approx(roc_auc_score(s["y"], s["prob"]))


def test_a_multimodal_model_needs_its_clinical_inputs_in_the_external_cohort(
        synthetic_cohort_dir, partner, tmp_path):
    study = open_study("smoke", synthetic_cohort_dir, output_dir=tmp_path, settings=SMOKE)
    run = execute_run(study, RunSpec("multimodal", study.profile.encoder, fold=FINAL_FOLD),
                      progress=False)
    ok = apply_run(run, open_study("smoke", partner, output_dir=tmp_path, settings=SMOKE))
    assert len(ok) == len(open_study("smoke", partner, output_dir=tmp_path,
                                     settings=SMOKE).cohort.images)
    lacking = tmp_path / "lacking"
    shutil.copytree(partner, lacking)
    cfg = yaml.safe_load((lacking / "cohort.yaml").read_text())
    cfg["numeric_features"] = [f for f in cfg["numeric_features"] if f != "age"]
    cfg["feature_sets"] = {}
    cfg.setdefault("unused_columns", []).append("age")
    (lacking / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    other = open_study("smoke", lacking, output_dir=tmp_path, settings=SMOKE)
    other = other.__class__(**{**other.__dict__, "cohort": other.cohort.__class__(
        **{**other.cohort.__dict__, "images": other.cohort.images.drop(columns=["age"])})})
    with pytest.raises(ApplyError, match="age"):
        apply_run(run, other)


def test_a_subgroup_of_one_class_says_auc_undefined_never_nan():
    preds = pd.DataFrame({"subject_id": list("abcdefgh"), "image_path": list("abcdefgh"),
                          "y": [0, 1, 0, 1, 0, 0, 0, 0], "prob": np.linspace(0.1, 0.9, 8)})
    groups = pd.Series(["A", "A", "A", "A", "B", "B", "B", "B"])
    t = external.subgroup_table(preds, groups, "scanner", n_boot=50)
    b = t[t["scanner"] == "B"].iloc[0]
    assert b["AUC (95% CI)"] == "AUC undefined (one class)" and "one class" in b["note"]
    a = t[t["scanner"] == "A"].iloc[0]
    assert a["AUC (95% CI)"].startswith("0.750") and "too small" in a["note"]
    assert not t["AUC (95% CI)"].str.contains("nan").any()


def test_auc_drop_and_intercept_update():
    rng = np.random.default_rng(0)
    y_i = rng.integers(0, 2, 300)
    y_e = rng.integers(0, 2, 300)
    internal = pd.DataFrame({"y": y_i, "prob": np.clip(0.5 * y_i + rng.random(300) * 0.6, 0, 1)})
    ext = pd.DataFrame({"y": y_e, "prob": np.clip(0.2 * y_e + rng.random(300) * 0.6, 0, 1)})
    d = external.auc_drop(internal, ext, n_boot=300)
    from sklearn.metrics import roc_auc_score
    assert d["drop"] == pytest.approx(roc_auc_score(y_e, ext["prob"])
                                      - roc_auc_score(y_i, internal["prob"]))
    assert d["low"] < d["drop"] < d["high"] < 0
    # predictions shifted up: calibration-in-the-large < 0 as trained, ~0 after the update
    shifted = ext.assign(prob=np.clip(ext["prob"] + 0.3, 0.01, 0.99))
    c = external.calibration_table(shifted)
    assert c["calibration-in-the-large"].iloc[0] < -0.5
    assert abs(c["calibration-in-the-large"].iloc[1]) < 0.15
    assert c["uses external labels"].tolist() == ["no", "yes"]


def test_shared_features_are_those_of_both_cohorts_with_the_same_kind(synthetic_cohort_dir,
                                                                     partner):
    from phyllodes.data.cohort import load_cohort
    from phyllodes.paths import PUBLIC_DATA
    a, b = load_cohort(synthetic_cohort_dir), load_cohort(partner)
    assert external.shared_features(a, b) == list(a.config.features)
    breast, busbra = load_cohort(PUBLIC_DATA / "breast-lesions-usg"), load_cohort(
        PUBLIC_DATA / "bus-bra", check_images=False)
    assert external.shared_features(breast, busbra) == []
