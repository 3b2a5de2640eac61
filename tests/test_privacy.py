"""Nothing derived from a private cohort can be tracked by git by default."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from phyllodes import paths

pytestmark = pytest.mark.skipif(shutil.which("git") is None or
                                not (paths.ROOT / ".git").exists(),
                                reason="needs the git checkout")


def _ignored(rel: str) -> bool:
    r = subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=paths.ROOT)
    return r.returncode == 0


@pytest.mark.parametrize("rel", [
    "data/private/mgh-phyllodes/cohort.csv",
    "data/private/mgh-phyllodes/images/P001_1.png",
    "tables/mgh-phyllodes/table3_modality_comparison.csv",
    "figures/mgh-phyllodes/fig3_scorecam.png",
    "results/mgh-phyllodes/runs/x/predictions.csv",
    "results/mgh-phyllodes/runs/x/checkpoint.pt",
    "executed/quick/05_explainability.ipynb",
    ".cache/images/mgh-phyllodes/abc.pt",
])
def test_private_cohort_outputs_are_ignored(rel):
    assert _ignored(rel)


@pytest.mark.parametrize("rel", [
    "tables/breast-lesions-usg/table3_modality_comparison.csv",
    "figures/breast-lesions-usg/fig2_roc_modalities.png",
    "data/public/breast-lesions-usg/cohort.csv",
    "notebooks/01_data_curation.ipynb",
])
def test_bundled_cohort_outputs_are_tracked(rel):
    assert not _ignored(rel)
