"""The bundled public cohort is derived from the BrEaST-Lesions_USG release by our converter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from phyllodes import paths
from phyllodes.data.cohort import load_cohort
from phyllodes.data.sources.breast import LEAKY_COLUMNS, convert_breast

IMG = "BrEaST-Lesions_USG-images_and_masks"


def test_bundled_cohort_counts_and_no_leaky_inputs():
    c = load_cohort(paths.DEFAULT_COHORT, folds=5)
    assert len(c.images) == 252
    assert (c.subjects["label"] == "benign").sum() == 154
    assert (c.subjects["label"] == "malignant").sum() == 98
    assert c.exclusions["n_rows"].tolist() == [4]  # the 'normal' cases, by rule
    lower = {f.lower() for f in c.config.features}
    assert not lower & {x.lower() for x in LEAKY_COLUMNS} and "birads" not in lower
    assert not {"interpretation", "verification", "diagnosis",
                "classification"} & {col.lower() for col in c.images.columns}
    # the radiologist's category is kept, as a reader reference: compared with, never an input
    assert list(c.references) == ["birads"] and c.config.reference_columns == ["birads"]
    assert c.references["birads"].positive_from == "4a"
    assert c.images["birads"].isin(["2", "3", "4a", "4b", "4c", "5"]).all()
    assert "echogenicity" in c.config.categorical_features
    assert c.config.numeric_features == ("age", "tumor_size_mm")


def test_bundled_cohort_size_budget():
    root = paths.DEFAULT_COHORT
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 15 * 1024 * 1024
    with Image.open(root / "images" / "case001.png") as im:
        assert im.mode == "L" and max(im.size) <= 320


@pytest.mark.parametrize("case", ["case001", "case005", "case100", "case250"])
def test_tumor_size_against_hand_computation(breast_release, case):
    clin = pd.read_excel(breast_release / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx")
    row = clin[clin["Image_filename"] == f"{case}.png"].iloc[0]
    mask = np.asarray(Image.open(breast_release / IMG / row["Mask_tumor_filename"]).convert("L"))
    rows_with = [r for r in range(mask.shape[0]) if mask[r].max() > 127]
    cols_with = [c for c in range(mask.shape[1]) if mask[:, c].max() > 127]
    height = rows_with[-1] - rows_with[0] + 1
    width = cols_with[-1] - cols_with[0] + 1
    expected_mm = max(height, width) * float(row["Pixel_size"]) * 10
    c = load_cohort(paths.DEFAULT_COHORT)
    got = float(c.images.set_index("subject_id").at[case, "tumor_size_mm"])
    assert got == pytest.approx(expected_mm, abs=0.006)
    assert 1 < got < 100  # a breast lesion's size in mm


def test_converter_reproduces_the_bundled_csv(breast_release, tmp_path):
    out = tmp_path / "breast"
    table = convert_breast(breast_release, out, max_side=320)
    assert len(table) == 256 and (table["label"] == "normal").sum() == 4
    fresh = (out / "cohort.csv").read_text()
    bundled = (paths.DEFAULT_COHORT / "cohort.csv").read_text()
    assert fresh == bundled
    assert (out / "cohort.yaml").read_text() == (paths.DEFAULT_COHORT / "cohort.yaml").read_text()
    a = np.asarray(Image.open(out / "images" / "case042.png"))
    b = np.asarray(Image.open(paths.DEFAULT_COHORT / "images" / "case042.png"))
    assert np.array_equal(a, b)
    with pytest.raises(FileExistsError):
        convert_breast(breast_release, out)
