"""Convert the public BrEaST-Lesions_USG release into the data contract.

The bundled cohort (``data/public/breast-lesions-usg/``) is made by :func:`convert_breast`
from the original release (Pawłowska et al., Sci Data 11:148, 2024; TCIA
DOI 10.7937/9WKK-Q141; CC BY 4.0). Regenerate it with::

    python -m phyllodes convert-breast --source PATH/TO/BrEaST-Lesions_USG \
        --out data/public/breast-lesions-usg

What the conversion does, and never does:

* label: ``Classification`` benign -> benign (0), malignant -> malignant (1); the 4 'normal'
  cases (no lesion) are kept in the CSV and excluded by an explicit rule of cohort.yaml.
* features: age; tumour size in mm = the longer side of the tumour mask's bounding box at
  full resolution x ``Pixel_size`` (cm/pixel) x 10; the clinical descriptors (tissue
  composition, signs, symptoms) and the BI-RADS lexicon descriptors (shape, margin,
  echogenicity, posterior features, halo, calcifications, skin thickening) as categories.
* the reader reference: ``BIRADS`` (the radiologist's category, 1-5 with 4a/4b/4c) is kept as
  the column ``birads``, declared in cohort.yaml as a reference (``references``): the standard
  of care the model is compared with, never a model input (the contract refuses it as a
  feature). ``Interpretation``, ``Verification`` and ``Diagnosis`` carry the radiologist's or
  pathologist's conclusion and are not copied.
* images: RGBA -> 8-bit grayscale, downsized (Lanczos) so the longer side is at most
  ``max_side`` px; tumour masks downsized with nearest neighbour; the ROI box is the tumour
  mask's bounding box in the stored image's pixels.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

log = logging.getLogger(__name__)

SPREADSHEET = "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx"
IMAGE_FOLDER = "BrEaST-Lesions_USG-images_and_masks"
LEAKY_COLUMNS = ("Interpretation", "Verification", "Diagnosis")
#: the radiologist's BI-RADS categories, lowest to highest suspicion
BIRADS_ORDER = ("1", "2", "3", "4a", "4b", "4c", "5")
CATEGORICAL = {
    "Tissue_composition": "tissue_composition",
    "Signs": "signs",
    "Symptoms": "symptoms",
    "Shape": "shape",
    "Margin": "margin",
    "Echogenicity": "echogenicity",
    "Posterior_features": "posterior_features",
    "Halo": "halo",
    "Calcifications": "calcifications",
    "Skin_thickening": "skin_thickening",
}
MISSING = ["not available", "not applicable"]
CITATION = (
    "Pawłowska A, Ćwierz-Pieńkowska A, Domalik A, et al. Curated benchmark dataset for "
    "ultrasound based breast lesion analysis. Scientific Data 11, 148 (2024). "
    "https://doi.org/10.1038/s41597-024-02984-z. Data: The Cancer Imaging Archive, "
    "https://doi.org/10.7937/9WKK-Q141"
)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a binary mask's nonzero pixels, x1/y1 exclusive; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def tumor_size_mm(mask: np.ndarray, pixel_size_cm: float) -> float:
    """Longer side of the mask's bounding box in millimetres (pixel size in cm/pixel)."""
    box = mask_bbox(mask)
    if box is None:
        return float("nan")
    x0, y0, x1, y1 = box
    return float(max(x1 - x0, y1 - y0) * pixel_size_cm * 10.0)


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def convert_breast(source: Path | str, out: Path | str, max_side: int = 320,
                   overwrite: bool = False) -> pd.DataFrame:
    """Write the contract's cohort.csv, cohort.yaml, images/ and masks/ into ``out``.

    Returns the cohort table. Refuses to write into a non-empty ``out`` unless ``overwrite``.
    """
    source, out = Path(source), Path(out)
    sheet = source / SPREADSHEET
    img_dir = source / IMAGE_FOLDER
    if not sheet.exists() or not img_dir.is_dir():
        raise FileNotFoundError(
            f"{source} is not the BrEaST-Lesions_USG release: expected {SPREADSHEET} and "
            f"{IMAGE_FOLDER}/ (download from https://doi.org/10.7937/9WKK-Q141)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to "
                              "replace it")
    clin = pd.read_excel(sheet, sheet_name=0)
    if out.exists() and overwrite:
        for sub in ("images", "masks"):
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)

    rows = []
    for r in clin.itertuples(index=False):
        rec = r._asdict()
        case = Path(rec["Image_filename"]).stem
        label = str(rec["Classification"]).strip()
        with Image.open(img_dir / rec["Image_filename"]) as im:
            gray = im.convert("L")
        w, h = gray.size
        scale = min(1.0, max_side / max(w, h))
        new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = gray.resize(new_size, Image.LANCZOS) if scale < 1 else gray
        small.save(out / "images" / f"{case}.png", optimize=True)
        row = {"subject_id": case, "image_path": f"images/{case}.png", "label": label}
        mask_name = rec["Mask_tumor_filename"]
        size_mm, box = float("nan"), None
        mask_rel = ""
        if isinstance(mask_name, str) and mask_name.strip():
            mask = _read_mask(img_dir / mask_name)
            size_mm = tumor_size_mm(mask, float(rec["Pixel_size"]))
            small_mask = Image.fromarray(mask.astype(np.uint8) * 255).resize(new_size,
                                                                              Image.NEAREST)
            mask_rel = f"masks/{case}_tumor.png"
            small_mask.convert("1").save(out / mask_rel, optimize=True)
            box = mask_bbox(np.asarray(small_mask) > 127)
        row["mask_path"] = mask_rel
        if box is None:  # normal cases have no lesion: the ROI is the whole image
            box = (0, 0, new_size[0], new_size[1])
        row.update(dict(zip(("roi_x0", "roi_y0", "roi_x1", "roi_y1"), box)))
        age = rec["Age"]
        row["age"] = "not available" if str(age).strip() in MISSING else str(int(age))
        row["tumor_size_mm"] = "not available" if np.isnan(size_mm) else f"{size_mm:.2f}"
        for src, dst in CATEGORICAL.items():
            v = str(rec[src]).strip()
            row[dst] = v
        row["pixel_size_cm"] = f"{float(rec['Pixel_size']):.9g}"
        row["birads"] = str(rec["BIRADS"]).strip()
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "cohort.csv", index=False)
    (out / "cohort.yaml").write_text(yaml.safe_dump(cohort_yaml(), sort_keys=False,
                                                    allow_unicode=True, width=100))
    log.info("wrote %d rows to %s", len(table), out / "cohort.csv")
    return table


def cohort_yaml() -> dict:
    """The cohort.yaml of the bundled public cohort."""
    return {
        "name": "breast-lesions-usg",
        "description": (
            "BrEaST-Lesions_USG: benign vs malignant breast lesions on B-mode ultrasound, one "
            "image per patient. A public stand-in for the private phyllodes cohort: a general "
            "breast-lesion task, not phyllodes grading. Derived by "
            "phyllodes.data.sources.breast. The radiologist's BI-RADS category is kept as a "
            "reader reference (compared with the model, never an input); the release's "
            + ", ".join(LEAKY_COLUMNS) + " columns are the radiologist's and pathologist's "
            "conclusions: they leak the label and are not copied."),
        "positive_labels": ["malignant"],
        "negative_labels": ["benign"],
        "numeric_features": ["age", "tumor_size_mm"],
        "categorical_features": list(CATEGORICAL.values()),
        # the paper's clinical inputs as far as this cohort has them (age, tumour size,
        # echogenicity); 'all' adds the rest of the BI-RADS lexicon (a sensitivity analysis)
        "feature_sets": {"paper": ["age", "tumor_size_mm", "echogenicity"]},
        "unused_columns": ["pixel_size_cm"],
        # the radiologist's category: the standard of care, compared with the model (notebooks
        # 02-04), never an input; BI-RADS 4a and above is biopsied or excised
        "references": {"birads": {"type": "ordinal", "order": list(BIRADS_ORDER),
                                  "positive_from": "4a", "aggregate": "max",
                                  "label": "radiologist's BI-RADS category"}},
        "missing_values": MISSING + [""],
        "exclude": [{"column": "label", "values": ["normal"],
                     "reason": "normal tissue without a lesion: no benign/malignant grade"}],
        "citation": CITATION,
        "license": "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); derived copy: "
                   "grayscale, downsized, features renamed (see README.md here)",
    }
