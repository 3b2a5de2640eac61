"""Hand-over: export a run as a model folder, predict new patients with it, its model card."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from phyllodes.__main__ import main
from phyllodes.handover.export import ExportError, export_model
from phyllodes.handover.folder import MANIFEST, sha256
from phyllodes.handover.predict import (
    ModelFolderError,
    PredictError,
    load_model,
    load_patients,
)
from phyllodes.report.model_card import TRIPOD_AI, checklist, model_card
from phyllodes.study import open_study
from phyllodes.train.apply import apply_run
from phyllodes.train.runs import execute_run
from phyllodes.train.spec import FINAL_FOLD, RunSpec

SMOKE = {"pretrained": "none", "image_size": 32}


@pytest.fixture(scope="module")
def study(synthetic_cohort_dir, tmp_path_factory):
    return open_study("smoke", synthetic_cohort_dir,
                      output_dir=tmp_path_factory.mktemp("handover"), settings=SMOKE)


@pytest.fixture(scope="module")
def runs(study):
    enc = study.profile.encoder
    return {"final": execute_run(study, RunSpec("multimodal", enc, fold=FINAL_FOLD),
                                 progress=False),
            "fold0": execute_run(study, RunSpec("multimodal", enc, fold=0), progress=False)}


@pytest.fixture(scope="module")
def exported(runs, study, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {k: export_model(r, root / k, study.cohort) for k, r in runs.items()}


class _Evil:
    """Unpickling this writes a marker file: the proof that a loader executed the pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_exported_folder_is_data_only_with_inner_validation_operating_points(exported,
                                                                              runs):
    folder = exported["final"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["MANIFEST.json", "cohort.yaml", "model.json", "weights.safetensors"]
    doc = json.loads((folder / "model.json").read_text())
    assert doc["what"].startswith("final model") and "-fall-" in doc["run_id"]
    assert json.loads((exported["fold0"] / "model.json").read_text())["what"] == \
        "fold 0 of the cross-validation"
    # thresholds from the run's inner-validation subjects only
    preds = pd.read_csv(runs["final"] / "predictions.csv", dtype={"subject_id": str})
    val = preds[preds["split"] == "val"].groupby("subject_id").agg(y=("y", "first"),
                                                                    prob=("prob", "mean"))
    from phyllodes.evaluate.metrics import choose_threshold
    assert doc["operating_points"]["youden"]["threshold"] == pytest.approx(
        choose_threshold(val["y"], val["prob"]), abs=1e-6)
    assert doc["fit_on"]["subjects"] == len(val)
    # no subject id of the training cohort travels with the model
    assert doc["clinical_encoder"]["fitted_subjects"] > 0
    text = (folder / "model.json").read_text()
    assert not any(f'"{s}"' in text for s in val.index)
    assert doc["preprocessing"]["image_size"] == 32 and doc["recipe_version"] >= 8
    assert set(doc["inputs"]["clinical"]) >= {"age", "echogenicity"}


def test_predict_equals_the_study_for_the_same_subjects(exported, runs, study):
    # the fold run's test subjects: what the study's predictions.csv holds for them
    model = load_model(exported["fold0"])
    preds = model.predict(load_patients(model, study.cohort.root))
    own = pd.read_csv(runs["fold0"] / "predictions.csv", dtype={"subject_id": str})
    test = own[own["split"] == "test"].set_index("image_path")["prob"]
    got = preds.images.set_index("image_path")["prob"].loc[test.index]
    # the same numbers, not merely close: the model computes in the run's layout
    # (PhyllodesNet.to_run_layout), over views built the same whoever builds them
    assert np.array_equal(got.to_numpy(np.float32), test.to_numpy(np.float32))
    # the final model: what apply_run (notebook 07's evaluation) gives
    final = load_model(exported["final"]).predict(load_patients(
        load_model(exported["final"]), study.cohort.root))
    applied = apply_run(runs["final"], study)
    assert np.abs(final.images["prob"].to_numpy() - applied["prob"].to_numpy()).max() < 1e-6
    # risks are the calibration map of the probabilities; the decision is at the threshold
    m = load_model(exported["final"])
    assert np.allclose(final.images["risk"], m.risk(final.images["prob"]))
    above = final.subjects["prob"] >= m.threshold
    assert (final.subjects["decision"].str.startswith("borderline/malignant") == above).all()
    assert final.subjects["n_images"].sum() == len(study.cohort.images)


def test_an_applied_or_exported_network_computes_in_the_runs_layout(exported, runs, study,
                                                                    monkeypatch):
    """A reloaded run and an exported model compute as training did: channels-last weights
    (oneDNN's convolutions round by layout; notebook 07's external predictions come from here)."""
    from phyllodes.train import apply as apply_mod
    seen, real = [], apply_mod.tta_predict
    monkeypatch.setattr(apply_mod, "tta_predict",
                        lambda model, *a, **k: seen.append(model) or real(model, *a, **k))
    apply_run(runs["final"], study)
    load_model(exported["final"]).predict(study.cohort)
    convs = [[m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
             for net in seen]
    assert len(seen) == 2 and all(convs)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for ws in convs for w in ws)
    assert all(any(not w.is_contiguous() for w in ws) for ws in convs)  # not the default one


def _case_args(study, i):
    row = study.cohort.images.iloc[i]
    roi = ",".join(str(int(row[c])) for c in ("roi_x0", "roi_y0", "roi_x1", "roi_y1"))
    clin = [f"{c}={row[c]}" for c in ("age", "bmi", "tumor_size_mm", "race",
                                      "menopausal_status", "echogenicity")
            if pd.notna(row[c])]
    return row, ["--image", row["image_abspath"], "--roi", roi, "--clinical", *clin]


def test_one_case_alone_gets_its_probability_inside_the_cohort(exported, study, tmp_path,
                                                               capsys):
    model = load_model(exported["final"])
    cohort_preds = model.predict(load_patients(model, study.cohort.root)).images
    # a subject with one image, so that its subject probability is that image's
    one = study.cohort.images.groupby("subject_id").filter(lambda g: len(g) == 1)
    i = int(one.index[0])
    row, args = _case_args(study, i)
    assert main(["predict", "--model", str(exported["final"]), *args,
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    prob = float(re.search(r"probability (\d\.\d+)", out).group(1))
    assert prob == pytest.approx(float(cohort_preds.iloc[i]["prob"]), abs=1e-4)
    assert "calibrated risk" in out and "threshold" in out
    png = tmp_path / f"{row['image_path'].split('/')[-1].rsplit('.', 1)[0]}_gradcampp.png"
    assert png.stat().st_size > 3000


def test_missing_value_imputed_and_said_so_unknown_category_and_input_refused(
        exported, study, tmp_path, capsys):
    d = str(exported["final"])
    row, args = _case_args(study, 0)
    no_age = [a for a in args if not a.startswith("age=")]
    assert main(["predict", "--model", d, *no_age, "--out", str(tmp_path)]) == 0
    assert "age: missing on 1 of 1 image row(s), imputed as in training" in \
        capsys.readouterr().out
    bad = [a if not a.startswith("echogenicity=") else "echogenicity=sparkly" for a in args]
    assert main(["predict", "--model", d, *bad]) == 1
    err = capsys.readouterr().err
    assert "echogenicity" in err and "'sparkly' was never seen in training" in err
    assert main(["predict", "--model", d, *args, "shoe_size=42"]) == 1
    assert "takes no input 'shoe_size'" in capsys.readouterr().err
    # a cohort that does not declare one of the model's inputs
    lacking = tmp_path / "lacking"
    shutil.copytree(study.cohort.root, lacking)
    import yaml
    cfg = yaml.safe_load((lacking / "cohort.yaml").read_text())
    cfg["numeric_features"].remove("bmi")
    cfg.setdefault("unused_columns", []).append("bmi")
    (lacking / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    model = load_model(d)
    with pytest.raises(PredictError, match="numeric input 'bmi'"):
        model.predict(load_patients(model, lacking))


def test_unlabelled_folder_without_cohort_yaml_is_read_with_the_model_declaration(
        exported, study, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(study.cohort.root, new)
    (new / "cohort.yaml").unlink()
    df = pd.read_csv(new / "cohort.csv", dtype=str, keep_default_na=False)
    df.drop(columns=["label", "radiologist_impression"]).to_csv(new / "cohort.csv",
                                                                index=False)
    assert main(["predict", "--model", str(exported["final"]), "--cohort", str(new),
                 "--overlays", "0"]) == 0
    got = pd.read_csv(new / "predictions" / "predictions.csv")
    model = load_model(exported["final"])
    ref = model.predict(load_patients(model, study.cohort.root)).images
    assert len(got) == len(df) and "label" not in got.columns
    assert np.abs(got["prob"].to_numpy() - ref["prob"].to_numpy()).max() < 1e-6
    subj = pd.read_csv(new / "predictions" / "predictions_subjects.csv")
    assert len(subj) == df["subject_id"].nunique()


def test_a_tampered_or_pickled_model_folder_is_refused_and_nothing_executes(exported,
                                                                             tmp_path):
    marker = tmp_path / "executed"
    evil = pickle.dumps(_Evil(marker))
    cases = {}
    for name in ("changed", "extra", "renamed", "swapped"):
        cases[name] = shutil.copytree(exported["final"], tmp_path / name)
    w = cases["changed"] / "weights.safetensors"
    b = bytearray(w.read_bytes())
    b[-1] ^= 1
    w.write_bytes(bytes(b))
    (cases["extra"] / "extra.pt").write_bytes(evil)
    (cases["renamed"] / "notes.txt").write_bytes(evil)
    # a pickle in place of the weights, with a manifest made to match it
    (cases["swapped"] / "weights.safetensors").write_bytes(evil)
    m = json.loads((cases["swapped"] / MANIFEST).read_text())
    m["files"]["weights.safetensors"] = sha256(cases["swapped"] / "weights.safetensors")
    (cases["swapped"] / MANIFEST).write_text(json.dumps(m))
    why = {"changed": "differs from MANIFEST", "extra": "a pickle", "renamed": "a pickle",
           "swapped": "a pickle"}
    for name, folder in cases.items():
        with pytest.raises(ModelFolderError, match=why[name]):
            load_model(folder)
    assert not marker.exists()
    added = shutil.copytree(exported["final"], tmp_path / "added")
    (added / "README.txt").write_text("hello")
    with pytest.raises(ModelFolderError, match="not listed in MANIFEST"):
        load_model(added)


def test_a_probe_or_unfinished_run_is_not_exported(study, tmp_path):
    run = execute_run(study, RunSpec("image", "probe_" + study.profile.encoder, fold=0),
                      progress=False)
    with pytest.raises(ExportError, match="frozen ImageNet encoder"):
        export_model(run, tmp_path / "m", study.cohort)
    (tmp_path / "half").mkdir()
    with pytest.raises(ExportError, match="not a finished run"):
        export_model(tmp_path / "half", tmp_path / "m2", study.cohort)


def _tables(tmp_path):
    src = __import__("phyllodes.paths", fromlist=["ROOT"]).ROOT / "tables" / \
        "breast-lesions-usg"
    dst = tmp_path / "tables" / "breast-lesions-usg"
    shutil.copytree(src, dst)
    return dst


def test_the_model_card_is_read_from_the_tables(tmp_path, exported):
    tables = _tables(tmp_path)
    doc = json.loads((exported["final"] / "model.json").read_text())
    card = model_card(tables, doc)
    t3 = pd.read_csv(tables / "table3_modality_comparison.csv")
    auc = t3["AUC (pooled, 95% CI)"].iloc[0]
    assert auc in card
    ext = pd.read_csv(tables / "table10_external_validation.csv")
    assert ext["external AUC (95% CI)"].iloc[0] in card
    assert "not phyllodes" in card and doc["run_id"] in card
    # a changed table changes the card
    t3.loc[0, "AUC (pooled, 95% CI)"] = "0.123 [0.100, 0.150]"
    t3.to_csv(tables / "table3_modality_comparison.csv", index=False)
    assert "0.123 [0.100, 0.150]" in model_card(tables, doc)
    # every TRIPOD+AI item is listed; a table that was not produced says "not addressed"
    (tables / "table10c_external_subgroups.csv").unlink()
    c = checklist(tables).set_index("item")
    assert len(c) == len(TRIPOD_AI) and c.loc["23b", "answered in"].startswith("not addressed")
    assert c.loc["12e", "answered in"] == "`tables/breast-lesions-usg/table3_modality_comparison`"
    assert c.loc["19", "answered in"] == "not addressed"


def test_unlabelled_patients_still_go_through_every_check_of_the_contract(exported, study,
                                                                          tmp_path):
    """No label is needed, but a broken image or an unknown label is still an error naming the
    file, line and column."""
    from phyllodes.data.cohort import CohortError
    model = load_model(exported["final"])
    bad = tmp_path / "bad"
    shutil.copytree(study.cohort.root, bad)
    (bad / "cohort.yaml").unlink()
    df = pd.read_csv(bad / "cohort.csv", dtype=str, keep_default_na=False)
    df["label"] = ""
    df.loc[2, "label"] = "malignnt"
    (bad / df.loc[5, "image_path"]).write_bytes(b"not an image")
    df.to_csv(bad / "cohort.csv", index=False)
    with pytest.raises(CohortError) as err:
        load_patients(model, bad)
    msg = str(err.value)
    assert "line 4, column 'label'" in msg and "malignnt" in msg
    assert df.loc[5, "image_path"] in msg


def test_an_image_only_model_takes_no_clinical_input_and_predicts_as_applied(study, tmp_path):
    run = execute_run(study, RunSpec("image", study.profile.encoder, fold=FINAL_FOLD),
                      progress=False)
    folder = export_model(run, tmp_path / "image", study.cohort)
    model = load_model(folder)
    assert model.doc["inputs"]["clinical"] == [] and model.doc["clinical_encoder"] is None
    # a cohort without any clinical column is fine for it
    bare = tmp_path / "bare"
    shutil.copytree(study.cohort.root, bare)
    (bare / "cohort.yaml").unlink()
    df = pd.read_csv(bare / "cohort.csv", dtype=str, keep_default_na=False)
    df[["subject_id", "image_path", "roi_x0", "roi_y0", "roi_x1", "roi_y1"]].to_csv(
        bare / "cohort.csv", index=False)
    got = model.predict(load_patients(model, bare)).images["prob"].to_numpy()
    ref = apply_run(run, study)["prob"].to_numpy()
    assert np.abs(got - ref).max() < 1e-6


def test_external_validation_encodes_a_category_the_training_cohort_never_had_as_none(
        exported, study, tmp_path):
    """predict refuses it; the external-validation path (study_predictions) encodes it as none
    of the known categories, as the study's one-hot encoding does, and logs it."""
    from phyllodes.handover.predict import study_predictions
    other = tmp_path / "other"
    shutil.copytree(study.cohort.root, other)
    df = pd.read_csv(other / "cohort.csv", dtype=str, keep_default_na=False)
    df.loc[df["subject_id"] == df["subject_id"].iloc[0], "race"] = "Other"
    df.to_csv(other / "cohort.csv", index=False)
    model = load_model(exported["final"])
    with pytest.raises(PredictError, match="'Other' was never seen in training"):
        model.predict(load_patients(model, other))
    target = open_study("smoke", other, output_dir=tmp_path / "o", settings=SMOKE)
    got = study_predictions(model, target)
    preds = model.predict(target.cohort, unknown_categories="as_none")
    assert any("never had (Other)" in n for n in preds.notes)
    assert np.isfinite(got["prob"]).all() and len(got) == len(df)
