"""Convert the public BUS-BRA release into the data contract (the external-validation cohort).

The bundled copy (``data/public/bus-bra/``) is made by :func:`convert_busbra` from the original
release (Gómez-Flores W. et al., "BUS-BRA: A Breast Ultrasound Dataset for Assessing
Computer-aided Diagnosis Systems", Medical Physics 51(4):3110-3123, 2024; MIT-style licence).
Regenerate it with::

    python -m phyllodes convert-busbra --source PATH/TO/bus-bra --out data/public/bus-bra

What the conversion does, and never does:

* subjects: the release's patients (``Case``), ids ``bus0001``; both images of a patient are
  images of one subject (every fold, inner split and bootstrap keeps them together).
* label: ``Pathology`` (biopsy-proven) benign -> benign (0), malignant -> malignant (1); a
  patient whose two images disagree is refused (the release has none).
* image-level columns: ``scanner`` (the release's ``Device``) and ``view`` (its ``Side``:
  ``left`` / ``right`` / ``single`` as released; SOURCE.md warns it need not be breast
  laterality), declared as image-level categorical features: the subgroups of the external
  validation (TRIPOD+AI heterogeneity). No subject-level clinical inputs exist.
* the reader reference: ``BIRADS`` (2-5, the senior ultrasonographer's category, per image) is
  kept as the column ``birads``, declared as an ordinal reference with the clinic's rule
  "4 and above -> biopsy", aggregated per patient by its highest category: compared with the
  model, **never an input** (the contract refuses it as a feature).
* ``Histology`` is the pathology result (it names the label): kept as the column ``histology``
  for the case-mix description and listed under ``unused_columns``, never an input.
* images: the release's 8-bit grayscale B-mode images, cropped to the lesion's box
  (``BBOX``, ``[x, y, w, h]``) widened by ``context`` of its size on each side (at least
  ``min_pad`` px; clipped to the image), then downsized (Lanczos) so the longer side is at most
  ``max_side`` px; masks cropped alike (nearest neighbour). The ROI columns are the release's
  box in the stored crop's pixels; ``box_area_px`` / ``image_width`` / ``image_height`` keep
  the release's box area and image size (no pixel size is published: lesion size is in pixels
  only).
* splits: the authors' patient-wise 5-fold split (``5-fold-cv.csv``, ``kFold`` 1-5) is written
  as ``splits_authors_5fold.csv`` (subject_id, fold 0-4), a splits file of the study's format.
  Their inner-validation marks (``valid_k``) are not used: the study draws its own inner split
  inside each training fold.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

log = logging.getLogger(__name__)

TABLE, FOLDS_TABLE = "bus_data.csv", "5-fold-cv.csv"
IMAGE_FOLDER, MASK_FOLDER = "Images", "Masks"
SPLITS_FILE = "splits_authors_5fold.csv"
#: the release's BI-RADS categories, lowest to highest suspicion
BIRADS_ORDER = ("2", "3", "4", "5")
LABELS = ("benign", "malignant")
CITATION = (
    "Gómez-Flores W, Gregorio-Calas MJ, Coelho de Albuquerque Pereira W. BUS-BRA: A Breast "
    "Ultrasound Dataset for Assessing Computer-aided Diagnosis Systems. Medical Physics "
    "51(4):3110-3123 (2024). https://doi.org/10.1002/mp.16812")
#: columns of bus_data.csv the converter reads
COLUMNS = ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height",
           "Side", "BBOX")


class BusBraError(ValueError):
    """The source folder is not the BUS-BRA release as published."""


def parse_bbox(text: str, where: str) -> tuple[int, int, int, int]:
    """``"[x, y, w, h]"`` -> (x0, y0, x1, y1), x1/y1 exclusive."""
    try:
        x, y, w, h = (int(round(float(v))) for v in str(text).strip().strip("[]").split(","))
    except ValueError:
        raise BusBraError(f"{where}: BBOX '{text}' is not '[x, y, w, h]'") from None
    if w <= 0 or h <= 0:
        raise BusBraError(f"{where}: BBOX '{text}' has no area")
    return x, y, x + w, y + h


def crop_box(box: tuple[int, int, int, int], size: tuple[int, int], context: float,
             min_pad: int) -> tuple[int, int, int, int]:
    """The crop around a lesion box: widened by ``context`` of its width/height on each side
    (at least ``min_pad`` px), clipped to the image of ``size`` (width, height)."""
    x0, y0, x1, y1 = box
    px = max(min_pad, int(round(context * (x1 - x0))))
    py = max(min_pad, int(round(context * (y1 - y0))))
    w, h = size
    return max(0, x0 - px), max(0, y0 - py), min(w, x1 + px), min(h, y1 + py)


def read_release(source: Path | str) -> pd.DataFrame:
    """The release's image table joined with the authors' folds, checked (one row per image)."""
    source = Path(source)
    missing = [n for n in (TABLE, FOLDS_TABLE, IMAGE_FOLDER, MASK_FOLDER)
               if not (source / n).exists()]
    if missing:
        raise BusBraError(f"{source} is not the BUS-BRA release: {', '.join(missing)} not found "
                          "(the release holds bus_data.csv, 5-fold-cv.csv, Images/ and Masks/; "
                          "see https://doi.org/10.1002/mp.16812)")
    table = pd.read_csv(source / TABLE, dtype=str, keep_default_na=False)
    absent = [c for c in COLUMNS if c not in table.columns]
    if absent:
        raise BusBraError(f"{source / TABLE}: column(s) {', '.join(absent)} missing; expected "
                          f"{', '.join(COLUMNS)}")
    folds = pd.read_csv(source / FOLDS_TABLE, dtype=str, keep_default_na=False)
    if not {"ID", "kFold"} <= set(folds.columns):
        raise BusBraError(f"{source / FOLDS_TABLE}: columns ID and kFold expected")
    table = table.merge(folds[["ID", "kFold"]], on="ID", how="left", validate="one_to_one")
    problems = []
    for i, r in table.iterrows():
        line = f"{source / TABLE} line {i + 2}"
        if r["Pathology"] not in LABELS:
            problems.append(f"{line}, column Pathology: '{r['Pathology']}' is not one of {LABELS}")
        if r["BIRADS"] not in BIRADS_ORDER:
            problems.append(f"{line}, column BIRADS: '{r['BIRADS']}' is not one of "
                            f"{BIRADS_ORDER}")
        if not str(r["kFold"]).strip():
            problems.append(f"{line}: image {r['ID']} has no fold in {FOLDS_TABLE}")
    for case, g in table.groupby("Case"):
        for col in ("Pathology", "kFold"):
            if g[col].nunique() > 1:
                problems.append(f"{source / TABLE}: patient {case} has images with different "
                                f"{col} ({', '.join(sorted(g[col].unique()))})")
    if problems:
        raise BusBraError("\n".join(problems))
    return table


def subject_id(case: str) -> str:
    return f"bus{int(case):04d}"


def convert_busbra(source: Path | str, out: Path | str, max_side: int = 256,
                   context: float = 0.5, min_pad: int = 16,
                   overwrite: bool = False) -> pd.DataFrame:
    """Write the contract's cohort.csv, cohort.yaml, images/, masks/ and the authors' folds
    (``splits_authors_5fold.csv``) into ``out``; return the cohort table.

    Refuses to write into a non-empty ``out`` unless ``overwrite``."""
    source, out = Path(source), Path(out)
    release = read_release(source)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to "
                              "replace it")
    for sub in ("images", "masks"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    for i, r in release.iterrows():
        where = f"{source / TABLE} line {i + 2} ({r['ID']})"
        with Image.open(source / IMAGE_FOLDER / f"{r['ID']}.png") as im:
            gray = im.convert("L")
        mask_name = r["ID"].replace("bus_", "mask_", 1) + ".png"
        with Image.open(source / MASK_FOLDER / mask_name) as m:
            mask = m.convert("L")
        if mask.size != gray.size:
            raise BusBraError(f"{where}: mask {mask_name} is {mask.size}, image {gray.size}")
        if (int(r["Width"]), int(r["Height"])) != gray.size:
            # the release has 4 such rows (the box lies inside the image file): the file wins
            notes.append(f"{r['ID']}: bus_data.csv says {r['Width']}x{r['Height']}, the image "
                         f"file is {gray.size[0]}x{gray.size[1]} (the file's size is used)")
        box = parse_bbox(r["BBOX"], where)
        if box[2] > gray.size[0] or box[3] > gray.size[1] or min(box[:2]) < 0:
            raise BusBraError(f"{where}: BBOX {r['BBOX']} is not inside the "
                              f"{gray.size[0]}x{gray.size[1]} image")
        crop = crop_box(box, gray.size, context, min_pad)
        cw, ch = crop[2] - crop[0], crop[3] - crop[1]
        scale = min(1.0, max_side / max(cw, ch))
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        img = gray.crop(crop)
        msk = mask.crop(crop)
        if scale < 1:
            img = img.resize(size, Image.LANCZOS)
            msk = msk.resize(size, Image.NEAREST)
        name = r["ID"].replace("bus_", "", 1)
        img.save(out / "images" / f"{name}.png", optimize=True)
        (Image.fromarray((np.asarray(msk) > 127).astype(np.uint8) * 255)
         .convert("1").save(out / "masks" / f"{name}.png", optimize=True))
        # the release's box in the stored crop's pixels (clipped to it)
        bx = [(box[0] - crop[0]) * scale, (box[1] - crop[1]) * scale,
              (box[2] - crop[0]) * scale, (box[3] - crop[1]) * scale]
        x0, y0 = max(0, int(np.floor(bx[0]))), max(0, int(np.floor(bx[1])))
        x1, y1 = min(size[0], int(np.ceil(bx[2]))), min(size[1], int(np.ceil(bx[3])))
        rows.append({"subject_id": subject_id(r["Case"]), "image_path": f"images/{name}.png",
                     "label": r["Pathology"], "mask_path": f"masks/{name}.png",
                     "roi_x0": x0, "roi_y0": y0, "roi_x1": x1, "roi_y1": y1,
                     "scanner": r["Device"].strip(), "view": r["Side"].strip(),
                     "birads": r["BIRADS"].strip(), "histology": r["Histology"].strip(),
                     "image_width": gray.size[0], "image_height": gray.size[1],
                     "box_area_px": (box[2] - box[0]) * (box[3] - box[1]),
                     "release_id": r["ID"]})
    table = pd.DataFrame(rows)
    table.to_csv(out / "cohort.csv", index=False)
    (out / "cohort.yaml").write_text(yaml.safe_dump(cohort_yaml(), sort_keys=False,
                                                    allow_unicode=True, width=100))
    splits = (release.assign(subject_id=release["Case"].map(subject_id),
                             fold=release["kFold"].astype(int) - 1)
              .drop_duplicates("subject_id")[["subject_id", "fold"]]
              .sort_values(["fold", "subject_id"]))
    splits.to_csv(out / SPLITS_FILE, index=False)
    (out / "conversion.json").write_text(json.dumps(
        {"converter": "phyllodes.data.sources.busbra.convert_busbra", "max_side": max_side,
         "context": context, "min_pad": min_pad, "images": len(table),
         "subjects": int(table["subject_id"].nunique()), "notes": notes}, indent=2) + "\n")
    for n in notes:
        log.warning("BUS-BRA release: %s", n)
    log.info("wrote %d rows (%d patients) to %s", len(table), table["subject_id"].nunique(),
             out / "cohort.csv")
    return table


def cohort_yaml() -> dict:
    """The cohort.yaml of the bundled BUS-BRA copy."""
    return {
        "name": "bus-bra",
        "description": (
            "BUS-BRA (INCA, Rio de Janeiro, Brazil): biopsy-proven benign vs malignant breast "
            "lesions on B-mode ultrasound, one or two images per patient, four scanners. The "
            "external-validation cohort of notebook 07 (images only are shared with "
            "breast-lesions-usg). Derived by phyllodes.data.sources.busbra: lesion crops with "
            "context. The radiologist's BI-RADS category is a reader reference, never an "
            "input; histology names the label and is not used."),
        "positive_labels": ["malignant"],
        "negative_labels": ["benign"],
        "numeric_features": [],
        "categorical_features": [],
        "image_numeric_features": [],
        # image-level: the subgroups of the external validation (scanner, view)
        "image_categorical_features": ["scanner", "view"],
        "references": {"birads": {"type": "ordinal", "order": list(BIRADS_ORDER),
                                  "positive_from": "4", "aggregate": "max",
                                  "label": "radiologist's BI-RADS category"}},
        # the authors' patient-wise 5-fold split: the study's folds on this cohort
        "splits": SPLITS_FILE,
        "unused_columns": ["histology", "image_width", "image_height", "box_area_px",
                           "release_id"],
        "missing_values": [""],
        "citation": CITATION,
        "license": "MIT-style (the release's LICENSE.txt: use, copy, modify and distribute with "
                   "the copyright notice kept and the article cited); derived copy: lesion "
                   "crops with context, downsized (see README.md here)",
    }
