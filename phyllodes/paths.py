"""Every folder of the repository, resolved from its root in one place."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PUBLIC_DATA = DATA / "public"
PRIVATE_DATA = DATA / "private"
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_COHORT = PUBLIC_DATA / "breast-lesions-usg"
#: The original BrEaST-Lesions_USG release as laid out beside the checkout in this workplace.
BREAST_RELEASE = ROOT.parent / "shared" / "datasets" / "breast-lesions-usg"


def output_root() -> Path:
    """Root of tables/, figures/, results/ and executed/ (``PHYLLODES_OUTPUT`` overrides)."""
    return Path(os.environ.get("PHYLLODES_OUTPUT", ROOT)).resolve()


def cache_dir() -> Path:
    """Where decoded image tensors are cached (``PHYLLODES_CACHE`` overrides)."""
    return Path(os.environ.get("PHYLLODES_CACHE", ROOT / ".cache")).resolve()


def tables_dir(cohort: str) -> Path:
    return _mk(output_root() / "tables" / cohort)


def figures_dir(cohort: str) -> Path:
    return _mk(output_root() / "figures" / cohort)


def results_dir(cohort: str) -> Path:
    return _mk(output_root() / "results" / cohort)


def runs_dir(cohort: str) -> Path:
    return _mk(results_dir(cohort) / "runs")


def executed_dir() -> Path:
    return _mk(output_root() / "executed")


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
