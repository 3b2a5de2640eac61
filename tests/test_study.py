"""Opening a study from a notebook's parameters, and the encoder weights a study carries."""

from __future__ import annotations

import json
import math
import os

import nbformat
import pandas as pd
import pytest

from phyllodes import paths
from phyllodes.profiles import get_profile
from phyllodes.report import records, tables
from phyllodes.study import STUDY_PARAMETERS, open_study, open_study_from
from phyllodes.train import runs
from phyllodes.train.grid import StudyFiles
from phyllodes.train.spec import RunSpec

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))


def _parameters(nb_path) -> dict:
    nb = nbformat.read(nb_path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, ns)
    ns.pop("__builtins__")
    return ns


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebooks_default_parameters_open_the_profile_unchanged(nb_path, synthetic_cohort_dir,
                                                                      tmp_path):
    """The committed tables are the quick profile's: a notebook's own parameter that happened to
    be named like a profile setting would change every run id it trains."""
    ns = _parameters(nb_path)
    assert "open_study_from(globals()" in nb_path.read_text()
    study = open_study_from(ns, cohort=str(synthetic_cohort_dir), output_dir=str(tmp_path))
    assert study.profile == get_profile(ns["profile"])
    assert study.seed == ns["seed"] and study.encoder_weights is None
    own = set(ns) - STUDY_PARAMETERS
    assert not own & {"name", "overrides"}


def test_open_study_from_passes_study_parameters_and_keeps_the_notebooks_own(
        synthetic_cohort_dir, tmp_path):
    ns = {"profile": "smoke", "cohort": str(synthetic_cohort_dir), "output_dir": str(tmp_path),
          "device": "cpu", "seed": 3, "epochs": 2, "folds": None, "settings": {"image_size": 32},
          "scorecam_images": 80, "json": json}  # the notebook's own, and an import
    study = open_study_from(ns)
    assert study.seed == 3 and study.profile.epochs == 2 and study.profile.image_size == 32
    assert study.profile.folds == get_profile("smoke").folds  # None leaves the profile's
    assert open_study_from(ns, seed=1).seed == 1  # what the notebook fixes wins


def test_a_notebook_name_shadowing_a_study_parameter_is_an_error(synthetic_cohort_dir):
    ns = {"profile": "smoke", "cohort": str(synthetic_cohort_dir), "encoder": os}
    with pytest.raises(TypeError, match=r"\['encoder'\].*module.*rename"):
        open_study_from(ns)


def test_a_studys_encoder_weights_reach_the_runs_of_its_encoder_only(synthetic_cohort_dir,
                                                                     tmp_path):
    w = tmp_path / "w.pth"
    w.write_bytes(b"weights")
    kw = dict(device="cpu", output_dir=str(tmp_path / "out"), image_size=32)
    plain = open_study("smoke", synthetic_cohort_dir, **kw)
    given = open_study("smoke", synthetic_cohort_dir, encoder_weights=str(w), **kw)
    enc = plain.profile.encoder
    own = [RunSpec("image", enc, None, 0, 0), RunSpec("multimodal", enc, "late", 0, 0),
           RunSpec("image", "probe_" + enc, None, 0, 0)]
    for spec in own:  # as if every notebook's run_grid had been passed the file
        assert runs.planned_run(given, spec).run_id == runs.planned_run(plain, spec, str(w)).run_id
        assert runs.planned_run(given, spec).run_id != runs.planned_run(plain, spec).run_id
    other = RunSpec("image", "resnet18", None, 0, 0)
    assert runs.planned_run(given, other).run_id == runs.planned_run(plain, other).run_id
    assert StudyFiles.of(given).open().encoder_weights == str(w.resolve())  # a Ray worker's


def _comparison() -> tables.ModalityComparison:
    labels = {"clinical": "clinical · mlp", "multimodal": "multimodal · e · late"}
    table = pd.DataFrame({"model_label": list(labels.values()), "auc_pooled_est": [0.7, 0.9],
                          "auc_pooled_low": [0.6, 0.8], "auc_pooled_high": [0.8, 0.95]})
    tests = pd.DataFrame({"comparison": ["multimodal · e · late vs clinical · mlp"],
                          "delong_p": [0.01]})
    return tables.ModalityComparison(labels, table, tests, pd.DataFrame(), "it beats it.")


def test_the_multimodal_record_reads_each_row_by_its_role(synthetic_cohort_dir, tmp_path):
    study = open_study("smoke", synthetic_cohort_dir, device="cpu", output_dir=str(tmp_path))
    res = _comparison()
    other = tables.ModalityComparison(res.labels, res.table.assign(auc_pooled_est=[0.6, 0.8]),
                                      res.tests, res.preds, "")
    fusion = pd.DataFrame({"model_label": ["multimodal · e · late"], "auc_pooled_est": [0.9]})
    rec = records.multimodal_record(study, {study.cohort.feature_set: res, "other": other},
                                    ["run-a"], fusion, pd.DataFrame({"x": [1]}))
    assert rec["auc"] == {"clinical": 0.7, "multimodal": 0.9}
    assert rec["auc_ci"]["multimodal"] == [0.8, 0.95]
    assert rec["delong_p"] == {"multimodal · e · late vs clinical · mlp": 0.01}
    assert rec["sensitivity"] == {"other": {"clinical": 0.6, "multimodal": 0.8}}
    assert rec["reader_comparison"] == [{"x": 1}] and rec["runs"] == ["run-a"]
    assert not math.isnan(rec["fusion_auc"]["multimodal · e · late"])
