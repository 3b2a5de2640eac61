"""Every folder of the repository, resolved from its root in one place.

Outputs (tables/, figures/, results/, executed/, report/) go under an output root that travels
with the study (:class:`Outputs`, carried by :class:`phyllodes.study.Study`); nothing reads it
from the process environment. The repository itself is the default root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PUBLIC_DATA = DATA / "public"
PRIVATE_DATA = DATA / "private"
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_COHORT = PUBLIC_DATA / "breast-lesions-usg"
#: decoded image tensors and view caches (a study may name another folder)
DEFAULT_CACHE = ROOT / ".cache"
#: the original public releases as laid out beside the checkout in this workplace
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
BREAST_RELEASE = SHARED_DATASETS / "breast-lesions-usg"
BUSBRA_RELEASE = SHARED_DATASETS / "bus-bra"


@dataclass(frozen=True)
class Outputs:
    """The folders of one output root; each is created when asked for."""

    root: Path = ROOT

    @classmethod
    def at(cls, root: str | Path | None = None) -> "Outputs":
        """The outputs under ``root`` (empty or None: the repository)."""
        return cls(Path(root).expanduser().resolve() if root else ROOT)

    def tables(self, cohort: str) -> Path:
        return _mk(self.root / "tables" / cohort)

    def figures(self, cohort: str) -> Path:
        return _mk(self.root / "figures" / cohort)

    def results(self, cohort: str) -> Path:
        return _mk(self.root / "results" / cohort)

    def runs(self, cohort: str) -> Path:
        return _mk(self.results(cohort) / "runs")

    def models(self, cohort: str) -> Path:
        """Exported model folders of a cohort's final models."""
        return _mk(self.results(cohort) / "models")

    def executed(self, profile: str | None = None) -> Path:
        return _mk(self.root / "executed" / profile if profile else self.root / "executed")

    def report(self, cohort: str) -> Path:
        return _mk(self.root / "report" / cohort)


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
