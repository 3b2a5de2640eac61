"""What a notebook measured, as JSON: ``results/<cohort>/<name>.json``, with its provenance.

The next notebooks, the tests, the README generator and the HTML report read these records;
each carries the provenance of its result (resolved profile, seed, commit, time) under
``provenance``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from phyllodes.provenance import provenance
from phyllodes.study import Study


def write_record(record: dict, study: Study, name: str) -> Path:
    """Write what a notebook measured as ``results/<cohort>/<name>.json`` for later steps and
    the tests, with the result's provenance (resolved profile, seed, commit) under
    ``provenance``."""
    p = study.results_dir / f"{name}.json"
    p.write_text(json.dumps({**record, "provenance": provenance(study)}, indent=2,
                            default=_json_default))
    return p


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
