"""What every notebook does first: resolve the profile, cohort, device, folds and output folder."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import paths
from .cohort import Cohort, load_cohort
from .profiles import Profile, get_profile
from .splits import get_or_make_splits


@dataclass
class Study:
    """The settings, cohort and folds a notebook works on."""

    profile: Profile
    cohort: Cohort
    splits: pd.DataFrame
    splits_path: Path
    device: str
    seed: int

    @property
    def name(self) -> str:
        return self.cohort.name

    def describe(self) -> pd.Series:
        """A one-column summary for the notebook to show."""
        s = self.cohort.summary()
        return pd.Series({"profile": self.profile.name, "device": self.device,
                          "cohort": s["name"], "subjects": s["n_subjects"],
                          "images": s["n_images"], "positive subjects": s["n_positive_subjects"],
                          "folds": self.profile.folds, "splits file": str(self.splits_path),
                          "outputs": str(paths.output_root())})


def resolve_device(device: str = "auto") -> str:
    """'cuda' when asked for 'auto' and CUDA is available, else 'cpu' (or what was given)."""
    if device and device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the one determinism call)."""
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def open_study(profile: str = "quick", cohort: str | Path = "breast-lesions-usg",
               device: str = "auto", seed: int = 0, output_dir: str = "",
               splits_file: str = "", **overrides: Any) -> Study:
    """Load the profile (with overrides), the validated cohort and its folds.

    ``output_dir`` (empty: the repository) is where tables/, figures/ and results/ go.
    ``splits_file`` (empty: ``tables/<cohort>/splits_<k>fold_seed<seed>.csv``) is reused when it
    exists and is made otherwise.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if output_dir:
        os.environ["PHYLLODES_OUTPUT"] = str(Path(output_dir).resolve())
    prof = get_profile(profile, **overrides)
    coh = load_cohort(cohort, folds=prof.folds)
    sp = Path(splits_file) if splits_file else (
        paths.tables_dir(coh.name) / f"splits_{prof.folds}fold_seed{seed}.csv")
    splits = get_or_make_splits(coh, sp, prof.folds, seed)
    seed_everything(seed)
    return Study(profile=prof, cohort=coh, splits=splits, splits_path=sp,
                 device=resolve_device(device), seed=seed)
