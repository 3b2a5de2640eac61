"""The bundled external-validation cohort is derived from the BUS-BRA release by our converter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from phyllodes import paths
from phyllodes.data.cohort import load_cohort
from phyllodes.data.sources.busbra import SPLITS_FILE, convert_busbra, parse_bbox
from phyllodes.data.splits import load_splits

BUNDLED = paths.PUBLIC_DATA / "bus-bra"


@pytest.fixture(scope="module")
def bundled():
    return load_cohort(BUNDLED, folds=5)


@pytest.fixture(scope="module")
def release() -> pd.DataFrame:
    if not (paths.BUSBRA_RELEASE / "bus_data.csv").exists():
        pytest.skip(f"the original BUS-BRA release is not at {paths.BUSBRA_RELEASE}")
    return pd.read_csv(paths.BUSBRA_RELEASE / "bus_data.csv")


def test_bundled_counts_are_the_release_counts(bundled):
    c = bundled
    assert len(c.subjects) == 1064 and len(c.images) == 1875
    assert (c.subjects["label"] == "benign").sum() == 722
    assert (c.subjects["label"] == "malignant").sum() == 342
    assert c.images["scanner"].str.split(" @").str[0].value_counts().to_dict() == {
        "GE Logiq 7": 902, "GE Logiq 5": 809, "Toshiba Aplio 300": 139, "U-Systems": 25}
    per_subject = c.images.groupby("subject_id").size()
    assert (per_subject == 2).sum() == 811 and (per_subject == 1).sum() == 253
    assert c.images["view"].value_counts().to_dict() == {"left": 811, "right": 811,
                                                          "single": 253}


def test_bundled_inputs_are_images_scanner_and_view_only(bundled):
    cfg = bundled.config
    assert cfg.subject_features == [] and cfg.image_features == ["scanner", "view"]
    # the radiologist's category is a reader reference, never an input; histology names the
    # label and is unused
    assert list(bundled.references) == ["birads"] and "birads" not in cfg.features
    assert bundled.references["birads"].positive_from == "4"
    assert "histology" in cfg.unused_columns and "histology" not in cfg.features
    ref = bundled.reference_table("birads")
    assert ref["score"].notna().all() and len(ref) == 1064


def test_bundled_reader_reproduces_the_release_numbers(bundled):
    """BI-RADS alone, highest category per patient: AUC 0.891, >= 4 sensitivity 0.936, benign
    spared 0.777 (measured from the release when the issue was written)."""
    from sklearn.metrics import roc_auc_score
    ref = bundled.reference_table("birads")
    assert roc_auc_score(ref["y"], ref["score"]) == pytest.approx(0.891, abs=5e-4)
    pos = ref["positive"].astype(bool)
    assert pos[ref["y"] == 1].mean() == pytest.approx(0.936, abs=5e-4)
    assert 1 - pos[ref["y"] == 0].mean() == pytest.approx(0.777, abs=5e-4)


def test_bundled_size_budget():
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total < 50 * 1024 * 1024
    with Image.open(BUNDLED / "images" / "0001-l.png") as im:
        assert im.mode == "L" and max(im.size) <= 256


def test_the_authors_folds_are_the_cohorts_splits(bundled, release):
    from phyllodes.study import own_splits
    assert own_splits(bundled, 5) == BUNDLED / SPLITS_FILE
    assert own_splits(bundled, 2) is None  # another fold count: the study makes its own
    splits = load_splits(BUNDLED / SPLITS_FILE, bundled)
    folds = pd.read_csv(paths.BUSBRA_RELEASE / "5-fold-cv.csv")
    want = {f"bus{int(i[4:8]):04d}": k - 1 for i, k in zip(folds["ID"], folds["kFold"])}
    assert dict(zip(splits["subject_id"], splits["fold"])) == want


def test_boxes_and_masks_agree_in_every_stored_crop(bundled, release):
    """The stored ROI is the release's BBOX in the crop's pixels: the stored mask lies inside
    it (the release's masks fill their boxes within a pixel), and its area relative to the
    crop matches the release's box area relative to the crop's scale."""
    imgs = bundled.images.set_index("release_id")
    rel = release.set_index("ID")
    for rid in imgs.index[::37]:
        row = imgs.loc[rid]
        with Image.open(row["mask_abspath"]) as m:
            mask = np.asarray(m.convert("L")) > 127
        ys, xs = np.nonzero(mask)
        assert xs.min() >= row["roi_x0"] - 1 and xs.max() + 1 <= row["roi_x1"] + 1
        assert ys.min() >= row["roi_y0"] - 1 and ys.max() + 1 <= row["roi_y1"] + 1
        x0, y0, x1, y1 = parse_bbox(rel.at[rid, "BBOX"], rid)
        assert (x1 - x0) * (y1 - y0) == int(row["box_area_px"])
        assert row["label"] == rel.at[rid, "Pathology"]
        assert row["birads"] == str(rel.at[rid, "BIRADS"])


def test_converter_reproduces_the_bundled_copy(release, tmp_path):
    out = tmp_path / "busbra"
    table = convert_busbra(paths.BUSBRA_RELEASE, out)
    assert table["subject_id"].nunique() == release["Case"].nunique() == 1064
    assert len(table) == len(release) == 1875
    bundled_csv = (BUNDLED / "cohort.csv").read_text()
    assert (out / "cohort.csv").read_text() == bundled_csv
    assert (out / "cohort.yaml").read_text() == (BUNDLED / "cohort.yaml").read_text()
    assert (out / SPLITS_FILE).read_text() == (BUNDLED / SPLITS_FILE).read_text()
    for name in ("0001-l.png", "0500-r.png", "1064-r.png"):
        if (BUNDLED / "images" / name).exists():
            a = np.asarray(Image.open(out / "images" / name))
            b = np.asarray(Image.open(BUNDLED / "images" / name))
            assert np.array_equal(a, b)
    with pytest.raises(FileExistsError):
        convert_busbra(paths.BUSBRA_RELEASE, out)


def test_converter_refuses_a_folder_that_is_not_the_release(tmp_path):
    from phyllodes.data.sources.busbra import BusBraError
    (tmp_path / "bus_data.csv").write_text("ID,Case\n")
    with pytest.raises(BusBraError, match="5-fold-cv.csv"):
        convert_busbra(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("value, message", [("../outside.csv", "inside the cohort folder"),
                                            ("missing.csv", "no such file")])
def test_a_cohorts_own_splits_key_is_checked(cohort_copy, value, message):
    import yaml

    from phyllodes.data.cohort import validate_cohort
    cfg = yaml.safe_load((cohort_copy / "cohort.yaml").read_text())
    cfg["splits"] = value
    (cohort_copy / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    report = validate_cohort(cohort_copy, check_images=False)
    assert not report.ok and any(message in str(p) for p in report.problems)
