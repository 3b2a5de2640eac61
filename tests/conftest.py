"""Shared fixtures: a seeded synthetic cohort and a temporary output root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from phyllodes import paths
from phyllodes.data.sources.synthetic import make_synthetic_cohort


@pytest.fixture(scope="session")
def synthetic_cohort_dir(tmp_path_factory) -> Path:
    """A 40-subject synthetic cohort in the hospital's schema (read-only: copy to modify)."""
    return make_synthetic_cohort(tmp_path_factory.mktemp("synthetic"), n_subjects=40, seed=0,
                                 image_size=48)


@pytest.fixture
def cohort_copy(synthetic_cohort_dir, tmp_path) -> Path:
    """A private, modifiable copy of the synthetic cohort."""
    dst = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort_dir, dst)
    return dst


@pytest.fixture
def output_root(tmp_path) -> Path:
    """A temporary output root for tables/, figures/ and results/ (pass it as output_dir)."""
    return tmp_path / "out"


@pytest.fixture(scope="session")
def breast_release() -> Path:
    if not (paths.BREAST_RELEASE / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx").exists():
        pytest.skip(f"the original BrEaST-Lesions_USG release is not at {paths.BREAST_RELEASE}")
    return paths.BREAST_RELEASE
