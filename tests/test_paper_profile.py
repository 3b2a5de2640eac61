"""The paper's protocol, proven to run before anyone spends GPU hours on it: every notebook in
the ``paper`` profile — its six encoders end to end, concatenation fusion, frozen BatchNorm,
LP-FT, flip and 16 augmented test-time views drawn on the fly — on a CPU at a tiny size (64 px,
one epoch, two folds, random-init weights, a subset of the bundled cohort). What only a GPU
can exercise (bf16 autocast, channels-last transfers, torch.compile) is in
scripts/gpu_check.sh."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from phyllodes import paths
from phyllodes.ops.runner import numbered_notebooks, run_notebooks
from phyllodes.profiles import get_profile

sys.path.insert(0, str(Path(__file__).parent))
from subsets import subset_cohort  # noqa: E402

#: the overrides of the dry run (README "Profiles": the same as ./run_all.sh --set ...)
DRY_RUN = {"pretrained": "none", "image_size": 64, "epochs": 1, "folds": 2, "patience": 1,
           "clinical_epochs": 5, "n_boot": 100, "cam_examples": 1, "batch_size": 16}


@pytest.mark.slow
def test_the_paper_profile_runs_every_notebook_with_its_six_encoders(tmp_path):
    paper = get_profile("paper")
    assert len(paper.encoders) == 6 and paper.fusion == "concat" and paper.cache_views == 0
    cohort = subset_cohort(tmp_path / "cohort", name="paper-dry-run")
    external = subset_cohort(tmp_path / "external", paths.PUBLIC_DATA / "bus-bra",
                             "bus-bra-dry-run", 12, 10)
    out = tmp_path / "out"
    done = run_notebooks("paper", str(cohort), "cpu", 0, out, settings=DRY_RUN,
                         # two of notebook 06's variants and no data randomisation (the
                         # smoke run has them all): the paths are the same, in 5 minutes
                         extra_parameters={"scorecam_images": 4, "permutation_repeats": 2,
                                           "selection_scorecam_images": 2,
                                           "data_randomisation": False,
                                           "external_cohort": str(external),
                                           "variants": ["recipe", "no flip test-time "
                                                        "augmentation"]})
    assert [d["notebook"] for d in done] == [p.name for p in numbered_notebooks()]
    res = out / "results" / "paper-dry-run"

    def record(name: str) -> dict:
        return json.loads((res / f"{name}.json").read_text())
    rec2 = record("nb02_unimodal_baselines")
    assert rec2["encoder"] == "convnext_tiny" and rec2["provenance"]["profile"]["name"] == "paper"
    prof = rec2["provenance"]["profile"]
    assert {k: prof[k] for k in DRY_RUN} == DRY_RUN  # the overrides are recorded
    rec4 = record("nb04_encoder_comparison")
    assert rec4["encoders"] == list(paper.encoders)
    assert set(rec4["encoder_auc"]) == set(paper.encoders)
    assert all(0 <= v <= 1 for v in rec4["encoder_auc"].values())
    rec3 = record("nb03_multimodal_training")
    assert rec3["encoder"] == "convnext_tiny" and rec3["fusions"] == ["concat", "late", "gated"]
    rec5 = record("nb05_explainability")
    assert rec5["cam_shape"][1:] == [64, 64] and rec5["n_folds"] == 2
    # every run of the study's folds (notebook 06 ablates the recipe on other folds) used the
    # paper's end-to-end path: no view cache, 16 augmented TTA views, frozen BN, LP-FT
    configs = [json.loads(p.read_text()) for p in (res / "runs").glob("*/config.json")]
    study_folds = {c["splits_hash"] for c in configs if c["run_id"] in set(rec2["runs"])}
    image = [c for c in configs if c["spec"]["modality"] != "clinical"
             and not c["spec"]["model"].startswith("probe_")
             and c["splits_hash"] in study_folds]
    assert image and all(c["settings"]["cache_views"] == 0 and c["settings"]["tta_views"] == 16
                         and c["settings"]["frozen_bn"] and c["settings"]["lp_init"]
                         and c["settings"]["image_size"] == 64 for c in image)
    assert {c["spec"]["model"] for c in image} >= set(paper.encoders)
    # notebook 07: both ways with a small external cohort, the exported final model evaluated
    rec7 = record("nb07_external_validation")
    # each direction: the fine-tuned encoder and its linear probe
    assert {r["direction"] for r in rec7["directions"]} == {
        "paper-dry-run → bus-bra-dry-run", "bus-bra-dry-run → paper-dry-run"}
    assert sorted(r["model"] for r in rec7["directions"]) == sorted(
        2 * ["image · convnext_tiny (random init)",
             "image · convnext_tiny linear probe (random init)"])
    exported = rec7["exported_models"]["paper-dry-run"]
    assert exported and all("-fall-" in name for name in exported)
    from phyllodes.handover.predict import load_model
    model = load_model(res / "models" / exported[0])
    assert model.doc["spec"]["model"] == "convnext_tiny"
    assert model.doc["settings"]["tta_views"] == 16
