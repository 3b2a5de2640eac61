"""A model you can hand over: run folders hold no pickle, and no pickle is ever loaded."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.data.cohort import load_cohort
from phyllodes.models.network import predict_proba
from phyllodes.study import open_study
from phyllodes.train.runs import (
    UnsafeRunFolderError,
    execute_run,
    load_linear_model,
    load_run_model,
)
from phyllodes.train.spec import RunSpec


@pytest.fixture
def study(synthetic_cohort_dir, output_root):
    return open_study("smoke", synthetic_cohort_dir, device="cpu", seed=0,
                      output_dir=str(output_root), image_size=32)


def _no_pickles(run_dir):
    return not [p for p in run_dir.rglob("*")
                if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".joblib")]


def _test_rows(study, cfg):
    return np.flatnonzero(study.cohort.images["subject_id"].isin(
        set(cfg["subjects"]["test"])).to_numpy())


def _test_predictions(run_dir, study, rows):
    p = pd.read_csv(run_dir / "predictions.csv", dtype={"subject_id": str})
    p = p[p["split"] == "test"]
    assert p["image_path"].tolist() == study.cohort.images["image_path"].iloc[rows].tolist()
    return p["prob"].to_numpy()


def test_encoder_json_round_trip_is_exact(cohort_copy):
    """Missing values, an unseen category and an image-level feature: the rebuilt encoder
    gives exactly the fitted one's matrix."""
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    df["side"] = ["left" if i % 2 else "right" for i in range(len(df))]
    df["depth_mm"] = [str(5 + i % 7) if i % 5 else "" for i in range(len(df))]
    df.to_csv(cohort_copy / "cohort.csv", index=False)
    import yaml
    cfg = yaml.safe_load((cohort_copy / "cohort.yaml").read_text())
    cfg["image_categorical_features"] = ["side"]
    cfg["image_numeric_features"] = ["depth_mm"]
    (cohort_copy / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    cohort = load_cohort(cohort_copy)
    subjects = cohort.subjects["subject_id"].tolist()
    fitted = ClinicalEncoder(cohort).fit(subjects[:28])
    data = json.loads(json.dumps(fitted.to_json()))  # plain JSON, nothing else
    rebuilt = ClinicalEncoder.from_json(data)

    images = cohort.images.copy()
    assert images[["age", "race", "depth_mm"]].isna().any().all()  # missing values
    images.loc[images.index[:4], "race"] = "never seen in training"
    images.loc[images.index[4:6], "side"] = "both"
    images.loc[images.index[6:8], "bmi"] = np.nan
    a, b = fitted.transform_images(images), rebuilt.transform_images(images)
    assert a.shape[1] == fitted.width and a.dtype == b.dtype == np.float32
    assert {"image", "subject"} == set(data["preprocessors"])
    np.testing.assert_array_equal(a, b)
    assert rebuilt.feature_names == fitted.feature_names
    assert rebuilt.feature_groups() == fitted.feature_groups()
    assert rebuilt.fitted_subjects == fitted.fitted_subjects
    assert rebuilt.to_json() == data


class _Planted:
    """Unpickling it would create a marker file (what a malicious pickle would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_never_loaded(tmp_path):
    run_dir = tmp_path / "runs" / "multimodal-resnet10t-concat-f0-s0-0123456789"
    run_dir.mkdir(parents=True)
    marker = tmp_path / "executed.txt"
    with open(run_dir / "checkpoint.pt", "wb") as f:
        pickle.dump({"state_dict": _Planted(marker)}, f)
    (run_dir / "config.json").write_text(json.dumps({"spec": {}}))
    (run_dir / "metrics.json").write_text("{}")
    with pytest.raises(UnsafeRunFolderError) as err:
        load_run_model(run_dir)
    assert not marker.exists()  # nothing executed
    msg = str(err.value)
    assert "checkpoint.pt" in msg and "pickle" in msg and "executes" in msg
    assert "recomputed" in msg and "./run_all.sh" in msg and "delete" in msg
    # the planted pickle does run code when unpickled: the check above means something
    with open(run_dir / "checkpoint.pt", "rb") as f:
        pickle.load(f)["state_dict"].close()
    assert marker.exists()


def test_clinical_mlp_run_reloads_to_its_predictions(study):
    d = execute_run(study, RunSpec("clinical", "mlp", fold=0), progress=False)
    assert _no_pickles(d)
    assert {"model.json", "weights.safetensors", "config.json", "metrics.json",
            "predictions.csv", "history.csv"} == {p.name for p in d.iterdir()}
    record = json.loads((d / "model.json").read_text())
    assert record["kind"] == "network" and record["n_clinical"] > 0
    model, enc, cfg = load_run_model(d)
    assert not model.training and cfg["run_id"] == d.name
    rows = _test_rows(study, cfg)
    clin = enc.transform_images(study.cohort.images.iloc[rows])
    prob = predict_proba(model, None, torch.as_tensor(clin))
    np.testing.assert_array_equal(prob, _test_predictions(d, study, rows))


def test_multimodal_run_reloads_to_its_predictions(study):
    study = study.with_settings(tta_flip=False, tta_views=0)
    d = execute_run(study, RunSpec("multimodal", "resnet10t", "concat", fold=1), progress=False)
    assert _no_pickles(d)
    model, enc, cfg = load_run_model(d)
    rows = _test_rows(study, cfg)
    images = study.images().images[torch.as_tensor(rows)]
    clin = enc.transform_images(study.cohort.images.iloc[rows])
    prob = predict_proba(model, images, torch.as_tensor(clin))
    # (the run predicted from its cached prefix outputs: equal up to float rounding)
    np.testing.assert_allclose(prob, _test_predictions(d, study, rows), atol=1e-4)


def test_sklearn_runs_store_no_pickle(study):
    d = execute_run(study, RunSpec("clinical", "logreg", fold=0), progress=False)
    assert _no_pickles(d) and not (d / "weights.safetensors").exists()
    clf, enc, cfg = load_linear_model(d)
    rows = _test_rows(study, cfg)
    prob = clf.predict_proba(enc.transform_images(study.cohort.images.iloc[rows]))[:, 1]
    np.testing.assert_allclose(prob, _test_predictions(d, study, rows), rtol=1e-12)
    with pytest.raises(ValueError, match="no network"):
        load_run_model(d)

    d = execute_run(study, RunSpec("clinical", "random_forest", fold=0), progress=False)
    assert _no_pickles(d)
    record = json.loads((d / "model.json").read_text())
    assert record["model"] == ("not stored: tree ensemble; predictions.csv holds its "
                               "predictions")
    assert record["clinical_encoder"]["preprocessors"]
    with pytest.raises(ValueError, match="no linear model"):
        load_linear_model(d)


def test_a_folder_without_model_json_is_refused(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_run_model(d)


def test_probe_pipeline_is_written_as_coefficients(tmp_path):
    """The linear probe's StandardScaler + LogisticRegression pipeline: exact as JSON."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from phyllodes.train.runs import MODEL_FILE, model_record
    from phyllodes.train.spec import RunOutput
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=5000)).fit(x, y)
    spec = RunSpec("image", "probe_resnet10t", fold=0)
    assert not spec.is_network
    out = RunOutput(pd.DataFrame(), extra={"sklearn_model": clf, "clinical_encoder": None,
                                           "probe_C": 0.3, "probe_taps": ["head"]})
    record, weights = model_record(spec, {"settings": {}, "run_id": "x"}, out)
    assert weights is None and record["model"]["type"] == "standardised_logistic_regression"
    (tmp_path / MODEL_FILE).write_text(json.dumps(record))
    (tmp_path / "config.json").write_text("{}")
    rebuilt, enc, _ = load_linear_model(tmp_path)
    assert enc is None
    np.testing.assert_array_equal(rebuilt.predict_proba(x), clf.predict_proba(x))


def test_a_pickle_only_run_folder_is_not_finished_and_is_recomputed_aside(study):
    """A folder of an earlier version (metrics.json + a pickled checkpoint, no model.json) at a
    run's id is not a finished run: it is recomputed, the old folder kept aside, never
    unpickled."""
    from phyllodes.train.runs import is_finished, planned_run
    spec = RunSpec("clinical", "mlp", fold=0)
    plan = planned_run(study, spec)
    plan.run_dir.mkdir(parents=True)
    marker = plan.run_dir.parent / "executed.txt"
    with open(plan.run_dir / "checkpoint.pt", "wb") as f:
        pickle.dump({"state_dict": _Planted(marker)}, f)
    (plan.run_dir / "metrics.json").write_text("{}")
    assert not is_finished(plan.run_dir)
    out = execute_run(study, spec, progress=False)
    assert out == plan.run_dir and is_finished(out) and _no_pickles(out)
    aside = [p for p in out.parent.iterdir() if p.name.startswith(out.name + ".unfinished-")]
    assert len(aside) == 1 and (aside[0] / "checkpoint.pt").exists()
    assert not marker.exists()
