"""A seeded synthetic cohort in the hospital's (MGH phyllodes) schema.

It is a living example of the data contract and the fixture of the tests: benign, borderline
and malignant subjects with one to several images each, the six clinical variables of the
paper (age, bmi, tumor_size_mm, race, menopausal_status, echogenicity) and some values
declared missing. Images are speckled fields with an elliptical lesion; the label shows in
both modalities (larger, more irregular, more heterogeneous lesions and older patients are
more often malignant), so models trained on it learn something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

LABELS = ("benign", "borderline", "malignant")
RACES = ("White", "Black", "Asian", "Hispanic", "Other")
ECHO = ("hypoechoic", "heterogeneous", "isoechoic", "complex cystic/solid")
#: the synthetic radiologist's impression per image (a reader reference, never an input)
IMPRESSION = ("2", "3", "4a", "4b", "4c", "5")


def synthetic_yaml(name: str) -> dict:
    return {
        "name": name,
        "description": "Synthetic cohort in the MGH phyllodes schema "
                       "(phyllodes.data.sources.synthetic).",
        "positive_labels": ["borderline", "malignant"],
        "negative_labels": ["benign"],
        "numeric_features": ["age", "bmi", "tumor_size_mm"],
        "categorical_features": ["race", "menopausal_status", "echogenicity"],
        "missing_values": ["", "NA", "unknown"],
        # the radiologist's impression of each image: compared with the model, never an input
        "references": {"impression": {"column": "radiologist_impression", "type": "ordinal",
                                      "order": list(IMPRESSION), "positive_from": "4a",
                                      "aggregate": "max",
                                      "label": "radiologist's impression"}},
        "citation": "synthetic data, no citation",
        "license": "CC0",
    }


def _lesion_image(rng: np.random.Generator, size: int, positive: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = size * (rng.uniform(0.16, 0.26) if positive else rng.uniform(0.09, 0.17))
    ang = rng.uniform(0, np.pi)
    ratio = rng.uniform(0.55, 0.85)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(ang) + dy * np.sin(ang)) / r
    v = (-dx * np.sin(ang) + dy * np.cos(ang)) / (r * ratio)
    theta = np.arctan2(v, u)
    wobble = 1 + (0.25 if positive else 0.05) * np.sin(rng.integers(3, 7) * theta
                                                       + rng.uniform(0, 6))
    inside = (u ** 2 + v ** 2) < wobble ** 2
    depth = np.linspace(1.0, 0.6, size, dtype=np.float32)[:, None]
    tissue = 0.55 * depth * rng.gamma(4.0, 0.25, (size, size)).astype(np.float32)
    lesion = 0.18 + (0.25 if positive else 0.05) * rng.random((size, size), dtype=np.float32)
    img = np.where(inside, lesion, tissue)
    img = np.clip(img, 0, 1)
    return (img * 255).astype(np.uint8), inside


def _impression(rng: np.random.Generator, positive: bool) -> str:
    """A reader's category: higher for positive lesions, with overlap (and sometimes none)."""
    if rng.random() < 0.05:
        return "unknown"
    level = rng.normal(3.4 if positive else 1.6, 1.0)
    return IMPRESSION[int(np.clip(np.round(level), 0, len(IMPRESSION) - 1))]


def make_synthetic_cohort(out: Path | str, n_subjects: int = 40, seed: int = 0,
                          image_size: int = 64, max_images: int = 3,
                          missing_rate: float = 0.08, name: str = "synthetic") -> Path:
    """Write cohort.csv, cohort.yaml, images/ and masks/ to ``out``; return ``out``.

    Labels cycle benign/borderline/malignant in about 50/25/25 proportions; each subject gets
    1..``max_images`` images; about ``missing_rate`` of the clinical values are 'unknown'.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.array([LABELS[0]] * (n_subjects - 2 * (n_subjects // 4))
                      + [LABELS[1]] * (n_subjects // 4) + [LABELS[2]] * (n_subjects // 4))
    rng.shuffle(labels)
    # the reader's impressions come from a generator of their own, so that every other value
    # is the same as without them
    reader_rng = np.random.default_rng([seed, 7])
    rows = []
    for s, label in enumerate(labels):
        pos = label != "benign"
        sid = f"S{s + 1:03d}"
        age = rng.normal(52 if pos else 40, 10)
        meno = "post" if age > 51 else "pre"
        clin = {
            "age": f"{age:.0f}",
            "bmi": f"{rng.normal(29 if pos else 26, 4):.1f}",
            "tumor_size_mm": f"{rng.lognormal(np.log(45 if pos else 25), 0.35):.1f}",
            "race": rng.choice(RACES, p=[0.6, 0.15, 0.12, 0.1, 0.03]),
            "menopausal_status": meno,
            "echogenicity": rng.choice(ECHO, p=[0.2, 0.5, 0.1, 0.2] if pos
                                       else [0.6, 0.15, 0.2, 0.05]),
        }
        for k in clin:
            if rng.random() < missing_rate:
                clin[k] = "unknown"
        for j in range(int(rng.integers(1, max_images + 1))):
            img, mask = _lesion_image(rng, image_size, pos)
            rel, mrel = f"images/{sid}_{j + 1}.png", f"masks/{sid}_{j + 1}.png"
            Image.fromarray(img).save(out / rel)
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / mrel)
            ys, xs = np.nonzero(mask)
            rows.append({"subject_id": sid, "image_path": rel, "label": label,
                         "mask_path": mrel,
                         "roi_x0": int(xs.min()), "roi_y0": int(ys.min()),
                         "roi_x1": int(xs.max()) + 1, "roi_y1": int(ys.max()) + 1, **clin,
                         "radiologist_impression": _impression(reader_rng, pos)})
    pd.DataFrame(rows).to_csv(out / "cohort.csv", index=False)
    (out / "cohort.yaml").write_text(yaml.safe_dump(synthetic_yaml(name), sort_keys=False))
    return out
