"""What produced a result: the resolved profile, seed, device, code version and environment.

Recorded in every run's config.json and every notebook record; never hashed into run ids (the
recipe version and the result settings are, see :mod:`phyllodes.train.runs`).
"""

from __future__ import annotations

import platform
import subprocess

from phyllodes import paths
from phyllodes.recipe import RECIPE_VERSION
from phyllodes.study import Study


def git_commit() -> dict:
    """The checkout's commit and whether it has uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=paths.ROOT, capture_output=True, text=True,
                               timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def provenance(study: Study) -> dict:
    """The resolved profile, seed, device, cohort, folds file, recipe version, git commit and
    environment of a study's results."""
    import torch
    return {"profile": study.profile.to_dict(), "seed": study.seed, "device": study.device,
            "cohort": study.cohort.name, "cohort_fingerprint": study.cohort.fingerprint,
            "splits_file": str(study.splits_path), "recipe_version": RECIPE_VERSION,
            "code": git_commit(),
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "host": platform.node()}}
