"""Notebooks are stored clean, with one parameters cell, and run end to end (smoke profile)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from phyllodes import paths
from phyllodes.ops.runner import numbered_notebooks, run_notebooks

sys.path.insert(0, str(paths.ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).parent))
from nbtools import check_notebook  # noqa: E402
from subsets import subset_cohort  # noqa: E402

NOTEBOOKS = numbered_notebooks()


def test_expected_notebooks_exist():
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names[0] == "01" and names == sorted(names)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_with_one_parameters_cell(nb):
    assert check_notebook(nb) == []


def test_structure_check_can_fail(tmp_path):
    import nbformat
    nb = nbformat.read(str(NOTEBOOKS[0]), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="x")]
    nb.cells[3].metadata["tags"] = ["parameters"]
    p = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(p))
    problems = check_notebook(p)
    assert any("2 cells tagged" in q for q in problems)
    assert any("outputs" in q for q in problems)


def _record(out: Path, cohort: str, name: str) -> dict:
    return json.loads((out / "results" / cohort / f"{name}.json").read_text())


#: BUS-BRA patients of each class in the smoke run's external validation (notebook 07 on all
#: 1,064 runs in the quick study and in `./run_all.sh --check`)
EXTERNAL_BENIGN, EXTERNAL_MALIGNANT = 60, 30


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Every numbered notebook executed once, in order, in the smoke profile; notebook 07
    validates on a spread subset of BUS-BRA (every scanner, both views)."""
    root = tmp_path_factory.mktemp("smoke")
    external = subset_cohort(root / "bus-bra-subset", paths.PUBLIC_DATA / "bus-bra", "bus-bra",
                             EXTERNAL_BENIGN, EXTERNAL_MALIGNANT, spread=True)
    out = root / "out"
    done = run_notebooks("smoke", "breast-lesions-usg", "cpu", 0, out,
                         # with notebook 05's data-randomisation check (each fold retrained
                         # on permuted labels), as in the committed study
                         extra_parameters={"external_cohort": str(external)})
    return out, done, external


@pytest.mark.slow
def test_all_notebooks_ran_in_order(smoke_run):
    out, done, _ = smoke_run
    assert [d["notebook"] for d in done] == [p.name for p in NOTEBOOKS]
    for p in NOTEBOOKS:
        assert (out / "executed" / "smoke" / p.name).exists()


@pytest.mark.slow
def test_notebook01_smoke_on_bundled_cohort(smoke_run):
    out, *_ = smoke_run
    rec = _record(out, "breast-lesions-usg", "nb01_data_curation")
    assert rec["n_subjects"] == 252 and rec["n_positive_subjects"] == 98
    assert rec["n_excluded_rows"] == 4 and rec["folds"] == 2
    assert sum(rec["fold_sizes"]) == 252 and abs(rec["fold_positives"][0] - 49) <= 1
    t1 = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table1_cohort.csv")
    age = t1[(t1["characteristic"] == "age") & (t1["level"] == "mean ± SD")].iloc[0]
    assert age["p_value"] == "<0.001"  # malignant patients are older (Mann-Whitney U)
    for ext in ("csv", "md", "tex"):
        assert (out / "tables" / "breast-lesions-usg" / f"table1_cohort.{ext}").stat().st_size > 500
    for ext in ("png", "pdf"):
        fig = out / "figures" / "breast-lesions-usg" / f"fig1_examples.{ext}"
        assert fig.stat().st_size > 5000
    assert (out / "executed" / "smoke" / "01_data_curation.ipynb").exists()
    splits = pd.read_csv(out / "tables" / "breast-lesions-usg" / "splits_2fold_seed0.csv")
    assert len(splits) == 252 and splits["subject_id"].is_unique


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_naming_notebook_and_cell(tmp_path):
    from phyllodes.ops.runner import NotebookFailed
    with pytest.raises(NotebookFailed, match=r"01_data_curation.ipynb failed in cell \d+.*"
                                             r"FileNotFoundError: cohort 'no-such-cohort'"):
        run_notebooks("smoke", "no-such-cohort", "cpu", 0, tmp_path / "out", only=["01"])


@pytest.mark.slow
def test_notebook02_records_unimodal_baselines(smoke_run):
    out, *_ = smoke_run
    rec = _record(out, "breast-lesions-usg", "nb02_unimodal_baselines")
    assert rec["folds"] == 2 and rec["n_test_subjects"] == 252
    assert len(rec["runs"]) == 6 * 2  # four clinical models, the image model, the probe
    auc = rec["auc"]
    assert set(auc) == {"clinical · mlp", "clinical · logreg", "clinical · random_forest",
                        "clinical · gradient_boosting",
                        "image · efficientnet_lite0 (random init)",
                        "image · efficientnet_lite0 linear probe (random init)",
                        "radiologist's BI-RADS category (reader)"}
    # the primary inputs (age, tumour size, echogenicity) carry signal on this cohort
    assert auc["clinical · logreg"] > 0.7
    assert all(0 <= v <= 1 for v in auc.values())
    assert all(s >= 0 for s in rec["auc_sd"].values())
    assert isinstance(rec["image_beats_probe"], bool)
    vp = rec["image_vs_probe"]
    assert vp["auc_difference"] == pytest.approx(
        auc["image · efficientnet_lite0 (random init)"]
        - auc["image · efficientnet_lite0 linear probe (random init)"], abs=1e-9)
    assert 0 < vp["delong_p"] <= 1 and 0 < vp["bootstrap_p"] <= 1
    tdir = out / "tables" / "breast-lesions-usg"
    tests = pd.read_csv(tdir / "table_unimodal_baselines_tests.csv")
    # image vs probe; the MLP vs each classical model; the reader vs the image model and the LR
    assert len(tests) == 1 + 3 + 2
    assert tests["comparison"].iloc[0].endswith("linear probe (random init)")
    reader = "radiologist's BI-RADS category (reader)"
    assert tests["comparison"].iloc[-1] == f"{reader} vs clinical · logreg"
    assert rec["reader"] == reader
    t = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table_unimodal_baselines.csv")
    assert len(t) == 7 and t["auc (pooled, 95% CI)"].str.match(r"0\.\d{3} \[0\.\d{3}, ").all()
    # the reader's row: its AUC is the BI-RADS category's (0.930 on the 252 lesions)
    assert t.set_index("model").at[reader, "auc (pooled, 95% CI)"].startswith("0.930")
    assert (out / "figures" / "breast-lesions-usg" / "fig_roc_unimodal.png").exists()
    assert rec["provenance"]["profile"]["name"] == "smoke"
    assert set(rec["provenance"]["code"]) == {"commit", "dirty"}


@pytest.mark.slow
def test_notebook03_records_modality_comparison_and_sensitivity(smoke_run):
    out, *_ = smoke_run
    rec = _record(out, "breast-lesions-usg", "nb03_multimodal_training")
    assert rec["feature_set"] == "paper"
    assert list(rec["auc"])[:3] == ["clinical", "image", "multimodal"]
    assert {"image baseline: linear probe", "late fusion of the two baselines"} <= set(rec["auc"])
    for m, (lo, hi) in rec["auc_ci"].items():
        assert lo <= rec["auc"][m] <= hi
    assert rec["paper_auc"] == {"clinical": 0.7846, "image": 0.8919, "multimodal": 0.9427}
    assert len(rec["fusion_auc"]) == 2  # the smoke profile's late and concat
    # the runs shared with notebook 02 were reused, not retrained
    rec2 = _record(out, "breast-lesions-usg", "nb02_unimodal_baselines")
    assert set(rec2["runs"]) <= set(rec["runs"])
    tdir = out / "tables" / "breast-lesions-usg"
    t3 = pd.read_csv(tdir / "table3_modality_comparison.csv")
    assert t3["modality"].tolist()[:3] == ["clinical", "image", "multimodal"]
    assert t3["paper AUC (MGH phyllodes)"].tolist()[:3] == [0.7846, 0.8919, 0.9427]
    assert "note" not in t3.columns  # the comparability note is in the caption, once
    md = (tdir / "table3_modality_comparison.md").read_text()
    assert "not the paper's" in md.splitlines()[0] and "'paper': age" in md.splitlines()[0]
    tests = pd.read_csv(tdir / "table3b_modality_tests.csv")
    # multimodal vs the two branches, three clinical baselines, the probe, the late fusion,
    # the reader
    assert len(tests) == 8 and tests["delong_p"].between(0, 1).all()
    assert t3["modality"].iloc[-1] == "reader"
    # Table 3e: the reader alone, then image and multimodal (both input sets) against it and
    # combined with it, each on the 252 subjects with a category
    t3e = pd.read_csv(tdir / "table3e_reader_comparison.csv")
    assert len(t3e) == 1 + 2 + 2 + 2 and (t3e["n_subjects"] == 252).all()
    assert t3e["AUC (95% CI)"].iloc[0].startswith("0.930")
    assert set(t3e["verdict"].iloc[1:]) <= {"better than the reader", "worse than the reader",
                                            "not distinguishable from the reader"}
    assert len(rec["reader_comparison"]) == len(t3e)
    assert "linear probe" in rec["verdict"]
    # the sensitivity analysis with every clinical column
    assert set(rec["sensitivity"]) == {"all"}
    t3c = pd.read_csv(tdir / "table3c_modality_comparison_all.csv")
    assert len(t3c) == len(t3)
    assert "'all': age, tumor_size_mm, tissue_composition" in \
        (tdir / "table3c_modality_comparison_all.md").read_text().splitlines()[0]
    for ext in ("png", "pdf"):
        assert (out / "figures" / "breast-lesions-usg" / f"fig2_roc_modalities.{ext}").exists()


@pytest.mark.slow
def test_notebook04_records_encoders_calibration_and_utility(smoke_run):
    out, *_ = smoke_run
    rec = _record(out, "breast-lesions-usg", "nb04_encoder_comparison")
    assert rec["encoders"] == ["efficientnet_lite0", "resnet10t"]
    for e, (lo, hi) in rec["encoder_auc_ci"].items():
        assert lo <= rec["encoder_auc"][e] <= hi
    assert len(rec["delong_p"]) == 1 and 0 <= next(iter(rec["delong_p"].values())) <= 1
    cal = pd.DataFrame(rec["calibration"])
    assert len(cal) == 6  # three modalities, raw and recalibrated
    assert cal["brier"].between(0, 1).all()
    for m, (lo, hi) in rec["spared_ci"].items():
        assert 0 <= lo <= rec["spared"][m] <= hi <= 1
    t2 = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table2_encoder_comparison.csv")
    assert t2["encoder"].tolist() == ["efficientnet_lite0", "resnet10t"]
    assert {"AUC-ROC (pooled, 95% CI)", "precision (pooled, 95% CI)",
            "paper AUC"} <= set(t2.columns)
    for stem in ("fig4_encoder_forest", "fig5_calibration", "fig6_decision_curves"):
        assert (out / "figures" / "breast-lesions-usg" / f"{stem}.png").exists()
    # the calibration table names the sampler the smoke recipe trains with
    assert set(cal["probabilities"]) == {"as trained (every image once per epoch, shuffled)",
                                         "recalibrated on inner validation"}
    # Table 5b: the reader's three rules, then per model its operating point at the reader's
    # sensitivity and the two downgrade groups (BI-RADS 4a; 3 or 4a)
    t5b = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table5b_reader_operating_points.csv")
    assert t5b["kind"].tolist()[:3] == ["reader's rule"] * 3
    assert t5b["benign spared"].iloc[0] == 67 and t5b["benign"].iloc[0] == 154
    assert len(t5b) == 3 + 2 * 3
    g4a = t5b[t5b["kind"] == "downgrade: radiologist's BI-RADS category 4a"]
    assert (g4a["subjects"] == 44).all()  # 43 benign and 1 malignant BI-RADS 4a lesions


@pytest.mark.slow
def test_notebook05_records_explanations(smoke_run):
    out, *_ = smoke_run
    rec = _record(out, "breast-lesions-usg", "nb05_explainability")
    assert rec["n_test_images"] == 252 and rec["n_folds"] == 2
    assert rec["cam_shape"] == [252, 64, 64]
    # the CAM layers, chosen on the folds of split seed 1: the family's (the tapped stage 3,
    # stride 16: 4x4 at 64 px) or the last stage with maps of 16x16 or more (stage 1, stride 4)
    choice = pd.DataFrame(rec["cam_layer_choice"])
    assert choice["method"].tolist() == ["Score-CAM"] * 2 + ["Grad-CAM++"] * 2 + ["random map"]
    assert (choice["selection folds"] == "split seed 1").all()
    for method in ("Grad-CAM++", "Score-CAM"):
        rows = choice[choice["method"] == method].set_index("layer")
        assert rows.index.tolist() == ["bn2", "blocks.1"]
        assert rows["map grid"].tolist() == ["4x4", "16x16"]
        gain = rows["gap minus random map"].astype(float)
        best = "blocks.1" if gain["blocks.1"] > gain["bn2"] else "bn2"
        assert rows["chosen"].to_dict() == {best: "yes", ({"bn2", "blocks.1"} - {best}).pop(): "no"}
        grid = [int(v) for v in rows.at[best, "map grid"].split("x")]
        assert rec["cam_layers"][method] == [best, grid]
        assert rows["images"].astype(int).iloc[0] == (252 if method == "Grad-CAM++" else 40)
    val = pd.DataFrame(rec["cam_validation"]).set_index("method")
    for method, (name, grid) in rec["cam_layers"].items():
        assert set(val.loc[[method], "layer"]) == {name}
        assert set(val.loc[[method], "map grid"]) == {f"{grid[0]}x{grid[1]}"}
    assert rec["shapley_sum_error"] < 1e-6  # efficiency: phi_img + phi_clin = f(I,C) - f(B)
    lo, hi = rec["image_share_ci"]
    assert 0 <= lo <= rec["image_share"] <= hi <= 1
    val = pd.DataFrame(rec["cam_validation"])
    assert set(val["method"]) == {"Grad-CAM++", "Score-CAM"}
    allrow = val[(val["method"] == "Grad-CAM++") & (val["group"] == "all")].iloc[0]
    assert allrow["n"] == 252 and 0 < allrow["chance_energy"] < 1
    assert allrow["lift_low"] <= allrow["energy_lift"] <= allrow["lift_high"]
    assert rec["top_clinical_feature"] is not None
    assert rec["paper_image_share"] == 0.63
    # faithfulness: every method and both references on the same (Score-CAM) images
    faith = pd.DataFrame(rec["cam_faithfulness"]).set_index("map")
    assert list(faith.index) == ["Grad-CAM++", "Score-CAM", "random map", "centre prior"]
    assert faith["images"].nunique() == 1 and faith["images"].iloc[0] >= 40
    for m in ("Grad-CAM++", "Score-CAM"):
        r = faith.loc[m]
        assert r["gap"] == pytest.approx(r["lerf"] - r["morf"], abs=1e-9)
        assert r["gap_low"] <= r["gap"] <= r["gap_high"]
        assert r["reading"].count(" than a ") == 2
    # where: three regions whose shares sum to 1, per outcome
    an = pd.DataFrame(rec["cam_anatomy"])
    gpp = an[(an["method"] == "Grad-CAM++") & (an["outcome"] == "all")]
    assert list(gpp["region"]) == ["lesion", "peri-lesional band", "rest of the image"]
    # every image is placed or counted as left out (an empty mask or a flat map), never dropped;
    # the smoke run's random-init models leave many maps with no positive value
    assert gpp["area_share"].sum() == pytest.approx(1)
    placed = gpp[["images", "empty_masks", "flat_maps"]].iloc[0]
    assert placed.sum() == 252 and placed["images"] >= 126 and placed["empty_masks"] == 0
    assert set(an["outcome"]) == {"TP", "TN", "FP", "FN", "all"}
    # the sanity check on every fold, each passing or failing
    sanity = pd.DataFrame(rec["sanity_checks"])
    model = sanity[sanity["test"] == "model randomisation"]
    data = sanity[sanity["test"] == "data randomisation"]
    assert len(model) + len(data) == len(sanity)
    assert model["fold"].tolist() == [0, 1] and model["images"].sum() == 252
    assert set(sanity["check"]) <= {"passes", "fails"}
    assert model["spearman_mean"].iloc[0] == pytest.approx(rec["randomisation_spearman"])
    # data randomisation: each fold's model retrained on permuted labels, on the same images
    assert data["fold"].tolist() == [0, 1] and data["images"].sum() == 252
    assert data["permuted_model_auc"].between(0, 1).all()
    assert model["permuted_model_auc"].isna().all()
    assert all("permuted labels" in r for r in data["reading"])
    for stem in ("fig3_scorecam", "fig6d_randomised_maps", "fig7_modality_share",
                 "fig8_clinical_importance"):
        assert (out / "figures" / "breast-lesions-usg" / f"{stem}.png").exists()
    executed = (out / "executed" / "smoke" / "05_explainability.ipynb").read_text()
    assert "Explore a test subject" in executed and "image/png" in executed


@pytest.mark.slow
def test_notebook06_records_the_recipe_ablation_on_other_folds(smoke_run):
    from phyllodes.profiles import RECIPE_ABLATION
    out, *_ = smoke_run
    rec = _record(out, "breast-lesions-usg", "nb06_image_recipe")
    assert rec["selection_seed"] == 1
    assert list(rec["image_auc"]) == [n for n, _ in RECIPE_ABLATION] + [
        "image linear probe (baseline)"]
    assert set(rec["multimodal_auc"]) >= {"recipe: late fusion LP-FT",
                                         "late fusion of the baselines"}
    # the recipe was chosen on other folds than the study's
    tdir = out / "tables" / "breast-lesions-usg"
    sel = pd.read_csv(tdir / "splits_2fold_seed1.csv").set_index("subject_id")["fold"]
    study_folds = pd.read_csv(tdir / "splits_2fold_seed0.csv").set_index("subject_id")["fold"]
    assert (sel.loc[study_folds.index] != study_folds).any()
    t9 = pd.read_csv(tdir / "table9_image_recipe_ablation.csv")
    assert len(t9) == len(RECIPE_ABLATION) + 1 and t9["DeLong p"].iloc[1:].between(0, 1).all()


@pytest.mark.slow
def test_notebook07_validates_on_bus_bra_both_ways(smoke_run):
    from sklearn.metrics import roc_auc_score
    out, _, external = smoke_run
    n_ext = EXTERNAL_BENIGN + EXTERNAL_MALIGNANT
    rec = _record(out, "breast-lesions-usg", "nb07_external_validation")
    assert rec["shared_features"] == [] and rec["modality"] == "image"
    dirs = {(r["direction"], r["model"]): r for r in rec["directions"]}
    assert {d for d, _ in dirs} == {"breast-lesions-usg → bus-bra",
                                    "bus-bra → breast-lesions-usg"}
    t = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table10_external_validation.csv")
    models = t[t["external minus internal (95% CI)"].notna()]
    assert set(models["external subjects"]) == {n_ext, 252}
    for _, r in models.iterrows():
        assert r["auc_drop"] == pytest.approx(r["auc_external"] - r["auc_internal"])
    readers = t[t["model"].str.contains("(reader)", regex=False)]
    busbra = readers[readers["model"].str.endswith("bus-bra")]
    # the reader's AUC computed here from the subset's BI-RADS (highest per patient)
    ext = pd.read_csv(external / "cohort.csv", dtype=str)
    per = ext.assign(b=ext["birads"].astype(int)).groupby("subject_id").agg(
        b=("b", "max"), y=("label", "first"))
    want = roc_auc_score(per["y"] == "malignant", per["b"])
    assert busbra["auc_external"].dropna().tolist() == [pytest.approx(want, abs=1e-9)]
    sub = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table10c_external_subgroups.csv")
    scan = sub[(sub["subgroup"] == "scanner") & (sub["direction"].str.endswith("bus-bra"))]
    assert scan.groupby("model")["subjects"].sum().eq(n_ext).all()
    assert scan["value"].nunique() == 4  # the spread subset holds every scanner
    assert "too small" in scan[scan["value"].str.startswith("U-Systems")]["note"].iloc[0]
    assert "note" in sub.columns and sub[sub["direction"].str.startswith("bus-bra")][
        "note"].str.contains("records no image-level group").any()


#: the other cohorts' runs test their own paths (no masks, image-level inputs, no clinical
#: data): notebook 06 with two of its variants, Score-CAM on a few images and no data
#: randomisation (the bundled smoke run keeps every variant and the check)
FEWER = {"variants": ["recipe", "no flip test-time augmentation"], "scorecam_images": 8,
         "selection_scorecam_images": 4, "data_randomisation": False}


@pytest.mark.slow
def test_all_notebooks_on_a_hospital_schema_cohort_without_masks_or_roi(tmp_path):
    """The private-cohort path: borderline labels, several images per subject, missing values,
    no ROI boxes and no lesion masks."""
    from phyllodes.data.sources.synthetic import make_synthetic_cohort
    src = make_synthetic_cohort(tmp_path / "full", n_subjects=40, seed=1, image_size=64,
                                name="hospital-demo")
    dst = tmp_path / "hospital-demo"
    dst.mkdir()
    df = pd.read_csv(src / "cohort.csv", dtype=str, keep_default_na=False)
    # an image-level input: the side of each image may differ between a subject's images
    df["side"] = ["left" if i % 2 else "right" for i in range(len(df))]
    df.drop(columns=["mask_path", "roi_x0", "roi_y0", "roi_x1", "roi_y1"]).to_csv(
        dst / "cohort.csv", index=False)
    import yaml
    cfg = yaml.safe_load((src / "cohort.yaml").read_text())
    cfg["image_categorical_features"] = ["side"]
    # a hospital export without the radiologist's impression: no reader reference declared
    cfg.pop("references")
    cfg["unused_columns"] = ["radiologist_impression"]
    (dst / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    import shutil
    shutil.copytree(src / "images", dst / "images")
    # a partner hospital in the same schema: notebook 07 validates a multimodal model on it
    partner = make_synthetic_cohort(tmp_path / "partner", n_subjects=30, seed=4, image_size=64,
                                    name="partner-hospital")
    out = tmp_path / "out"
    # notebooks 04 and 06 (encoders, the recipe's ablation) take no path of their own on this
    # cohort's shape: they run on the bundled cohort and on the image-only one
    only = ["01", "02", "03", "05", "07"]
    done = run_notebooks("smoke", str(dst), "cpu", 0, out, only=only,
                         extra_parameters={"external_cohort": str(partner),
                                           "modality": "multimodal", **FEWER})
    assert [d["notebook"][:2] for d in done] == only
    rec7 = _record(out, "hospital-demo", "nb07_external_validation")
    assert rec7["modality"] == "multimodal"
    # 'side' is declared by the hospital only: the shared inputs are the partner's
    assert "side" not in rec7["shared_features"] and "age" in rec7["shared_features"]
    assert {r["direction"] for r in rec7["directions"]} == {
        "hospital-demo → partner-hospital", "partner-hospital → hospital-demo"}
    assert all(r["model"].startswith("multimodal") for r in rec7["directions"])
    rec1 = _record(out, "hospital-demo", "nb01_data_curation")
    assert rec1["n_subjects"] == 40 and rec1["labels"]["borderline"] == 10
    assert rec1["n_images"] > 40
    assert {"feature": "side", "level": "image"}.items() <= next(
        f for f in rec1["features"] if f["feature"] == "side").items()
    rec3 = _record(out, "hospital-demo", "nb03_multimodal_training")
    assert {"clinical", "image", "multimodal"} <= set(rec3["auc"]) and "reader" not in rec3["auc"]
    # no reader: the tables say so instead of leaving a silent gap
    assert "no reader reference declared" in rec3["reader_comparison"][0]["note"]
    assert _record(out, "hospital-demo", "nb02_unimodal_baselines")["reader"] == \
        "no reader reference declared"
    rec5 = _record(out, "hospital-demo", "nb05_explainability")
    assert rec5["n_test_images"] == rec1["n_images"]
    assert all("no lesion masks" in v["note"] for v in rec5["cam_validation"])
    assert not (paths.ROOT / "tables" / "hospital-demo").exists()  # outputs went to `out`


@pytest.mark.slow
def test_all_notebooks_on_an_image_only_cohort(tmp_path):
    """A cohort that declares no clinical features runs the whole study image-only: the clinical
    and multimodal parts are skipped with a note; Table 1, the image baselines, the encoder
    comparison, calibration, utility and the CAMs still come out."""
    import shutil

    import yaml

    from phyllodes.data.sources.synthetic import make_synthetic_cohort
    from phyllodes.report.artifacts import ARTIFACTS
    src = make_synthetic_cohort(tmp_path / "c", n_subjects=40, seed=2, image_size=48,
                                name="images-only")
    cfg = yaml.safe_load((src / "cohort.yaml").read_text())
    for k in ("numeric_features", "categorical_features"):
        cfg.pop(k)
    (src / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    partner = make_synthetic_cohort(tmp_path / "p", n_subjects=30, seed=5, image_size=48,
                                    name="images-partner")
    out = tmp_path / "out"
    done = run_notebooks("smoke", str(src), "cpu", 0, out,
                         extra_parameters={"external_cohort": str(partner), **FEWER})
    assert len(done) == len(NOTEBOOKS)
    for a in ARTIFACTS:
        for f in a.files("images-only"):
            assert (out / f).exists() != a.needs_clinical, (a.name, f)
    t = pd.read_csv(out / "tables" / "images-only" / "table_unimodal_baselines.csv")
    assert t["model"][~t["model"].str.endswith("(reader)")].str.startswith("image").all()
    assert "skipped" in _record(out, "images-only", "nb03_multimodal_training")
    rec4 = _record(out, "images-only", "nb04_encoder_comparison")
    assert rec4["compared_as"] == "image"
    rec5 = _record(out, "images-only", "nb05_explainability")
    assert rec5["explained"] == "image" and rec5["image_share"] is None
    executed = (out / "executed" / "smoke" / "03_multimodal_training.ipynb").read_text()
    assert "has no clinical features" in executed
    # the synthetic cohort's reader (a per-image impression, the highest per subject) still
    # gives the image-only study its reference
    t = pd.read_csv(out / "tables" / "images-only" / "table_unimodal_baselines.csv")
    assert "radiologist's impression (reader)" in set(t["model"])
    t5b = pd.read_csv(out / "tables" / "images-only" / "table5b_reader_operating_points.csv")
    assert t5b["kind"].iloc[0] == "reader's rule" and (t5b["subjects"] <= 40).all()
    shutil.rmtree(tmp_path / "c")


# --------------------------------------------------------------------------- the HTML report


def _report_pages(out: Path) -> list[Path]:
    return sorted((out / "report" / "breast-lesions-usg").glob("*.html"))


@pytest.mark.slow
def test_report_links_every_artifact_and_every_link_resolves(smoke_run):
    import re

    from phyllodes.report.artifacts import ARTIFACTS
    out, *_ = smoke_run
    here = out / "report" / "breast-lesions-usg"
    index = (here / "index.html").read_text()
    for a in ARTIFACTS:
        for f in a.files("breast-lesions-usg"):
            assert f'href="../../{f}"' in index, f"the report does not link {f}"
    assert [p.stem for p in _report_pages(out) if p.stem != "index"] == [
        p.stem for p in NOTEBOOKS]
    for page in _report_pages(out):
        text = page.read_text()
        for link in re.findall(r'(?:href|src)="([^"#][^"]*)"', text):
            if link.startswith(("http://", "https://", "mailto:", "data:")):
                continue
            assert (page.parent / link).exists(), f"{page.name}: broken link {link}"
        assert not re.search(r'<script[^>]*src="https?://', text), page.name  # offline


@pytest.mark.slow
def test_report_has_no_absolute_path_of_the_machine(smoke_run):
    out, *_ = smoke_run
    needles = {str(out), str(out.resolve()), str(paths.ROOT), str(Path.home())}
    for page in _report_pages(out):
        text = page.read_text()
        for n in needles:
            assert n not in text, f"{page.name} contains the machine path {n}"


@pytest.mark.slow
def test_report_renders_in_headless_chromium(smoke_run, tmp_path):
    """Every image of the index loads in a real browser from a file:// URL."""
    import shutil
    import subprocess
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless browser installed (Debian: apt-get install chromium)")
    out, *_ = smoke_run
    index = out / "report" / "breast-lesions-usg" / "index.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", index.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    import re
    body = re.search(r"<body[^>]*>", dom).group(0)
    n = int(re.search(r'data-images="(\d+)"', body).group(1))
    broken = int(re.search(r'data-broken="(\d+)"', body).group(1))
    assert n >= 10 and broken == 0, body
