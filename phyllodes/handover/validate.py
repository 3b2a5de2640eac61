"""External validation of what is handed over: develop on one cohort, export, apply elsewhere.

:func:`external_direction` is notebook 07's unit of work: the development cohort's
cross-validation and final models (:func:`phyllodes.train.grid.development_runs`), each final
network exported once (:func:`phyllodes.handover.export.exported_model`) and the *exported
folder* applied to the external cohort through :func:`phyllodes.handover.predict.study_predictions`
(the code a partner hospital runs); a final model that is not handed over (the linear probe, a
baseline) is applied from its run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from phyllodes.evaluate.external import Direction
from phyllodes.handover.export import exportable, exported_model
from phyllodes.handover.predict import load_model, study_predictions
from phyllodes.study import Study
from phyllodes.train.apply import apply_run
from phyllodes.train.grid import development_runs


@dataclass
class Validated:
    """One direction's evaluation, and the model folders that were evaluated."""

    direction: Direction
    exported: list[Path] = field(default_factory=list)
    cv_runs: int = 0
    final_runs: list[Path] = field(default_factory=list)


def external_direction(dev: Study, ext: Study, modality: str = "image",
                       encoder_weights: str | None = None, progress: bool = True) -> Validated:
    """Develop on ``dev`` (runs reused when finished), export its final networks under
    ``results/<dev>/models/``, and apply them (as exported) to every image of ``ext``."""
    runs = development_runs(dev, modality, encoder_weights=encoder_weights, progress=progress)
    applied, exported = [], []
    for r in runs.final:
        if exportable(r):
            folder = exported_model(r, dev.results_dir / "models", dev.cohort)
            exported.append(folder)
            applied.append(study_predictions(load_model(folder), ext))
        else:
            applied.append(apply_run(r, ext, encoder_weights))
    direction = Direction(dev.cohort, ext.cohort, runs.internal, runs.inner_val,
                          pd.concat(applied, ignore_index=True))
    return Validated(direction, exported, len(runs.cv), list(runs.final))
