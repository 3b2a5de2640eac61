"""Small copies of a bundled cohort for the notebook runs of the tests (test_notebooks,
test_paper_profile): some subjects of each class, all of their images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from phyllodes import paths


def subset_cohort(dst: Path, src: Path = paths.DEFAULT_COHORT, name: str = "subset",
                  n_benign: int = 24, n_malignant: int = 20, spread: bool = False) -> Path:
    """``n_benign`` and ``n_malignant`` subjects of the cohort at ``src`` (all their images),
    their image and mask files only, under the name ``name``; its own folds file left out (a
    subset makes its folds). ``spread``: subjects evenly spaced through the cohort's order
    (a mix of its scanners and sites) instead of its first ones."""
    df = pd.read_csv(src / "cohort.csv", dtype=str, keep_default_na=False)
    first = df.drop_duplicates("subject_id")
    ids: set[str] = set()
    for label, n in (("benign", n_benign), ("malignant", n_malignant)):
        pool = first[first["label"] == label]["subject_id"].tolist()
        at = np.linspace(0, len(pool) - 1, n).round().astype(int) if spread else range(n)
        ids |= {pool[i] for i in at}
    keep = df[df["subject_id"].isin(ids)]
    dst.mkdir(parents=True)
    for col in ("image_path", "mask_path"):
        for rel in keep[col] if col in keep else ():
            if rel:
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / rel, dst / rel)
    keep.to_csv(dst / "cohort.csv", index=False)
    cfg = yaml.safe_load((src / "cohort.yaml").read_text())
    cfg["name"] = name
    cfg.pop("splits", None)
    (dst / "cohort.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst
