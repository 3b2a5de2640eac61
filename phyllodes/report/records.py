"""What a notebook measured, as JSON: ``results/<cohort>/<name>.json``, with its provenance.

The next notebooks, the tests, the README generator and the HTML report read these records;
each carries the provenance of its result (resolved profile, seed, commit, time) under
``provenance``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from phyllodes import reported
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


# What notebooks 03-05 record: built here from their typed results, so a notebook's last cell
# only names what it measured (and the tests, the README and the report read the same keys).

def skipped_record(study: Study, why: str) -> dict:
    """The record of a notebook that had nothing to measure on this cohort, and why."""
    return {"profile": study.profile.name, "cohort": study.name, "skipped": why}


def multimodal_record(study: Study, results: dict, run_names: list[str],
                      fusion_table: pd.DataFrame, reader_table: pd.DataFrame) -> dict:
    """Notebook 03's record: each modality's pooled AUC [CI] on the primary clinical inputs
    (``results``: clinical inputs -> :class:`~phyllodes.report.tables.ModalityComparison`),
    the DeLong p-values and verdict, the other inputs' AUCs, the fusion variants' AUCs, Table
    3e's rows and the runs it rests on."""
    p, main = study.profile, study.cohort.feature_set
    res = results[main]
    return {"profile": p.name, "cohort": study.name, "folds": p.folds, "encoder": p.encoder,
            "fusions": list(p.fusions), "feature_set": main, "runs": list(run_names),
            "auc": res.pooled_auc(), "auc_ci": res.pooled_auc_ci(),
            "delong_p": res.delong_p(), "verdict": res.verdict,
            "sensitivity": {name: r.pooled_auc() for name, r in results.items() if name != main},
            "fusion_auc": dict(zip(fusion_table["model_label"],
                                   fusion_table["auc_pooled_est"])),
            "paper_auc": reported.MODALITY_AUC,
            "reader_comparison": reader_table.to_dict("records")}


def encoder_record(study: Study, compared: str, encoder_table: pd.DataFrame,
                   encoder_labels: dict[str, str], best: str, encoder_tests: pd.DataFrame,
                   calibration: pd.DataFrame, operating, reader_points: pd.DataFrame,
                   decision_curves: pd.DataFrame) -> dict:
    """Notebook 04's record: each encoder's pooled AUC [CI] (``encoder_labels``: encoder ->
    model label; ``compared``: the modality they were compared in), the best and the tests
    against it, Table 4's rows, Table 5's spared fraction [CI] and sensitivity per model
    (``operating``: :class:`~phyllodes.report.tables.OperatingPoints`), Table 5b's rows and the
    net benefit at a 10% threshold."""
    t = encoder_table.set_index("model_label")
    est = operating.estimates
    return {"profile": study.profile.name, "cohort": study.name,
            "encoders": list(study.profile.encoders), "compared_as": compared,
            "encoder_auc": {e: float(t.at[lab, "auc_pooled_est"])
                            for e, lab in encoder_labels.items()},
            "encoder_auc_ci": {e: [float(t.at[lab, "auc_pooled_low"]),
                                   float(t.at[lab, "auc_pooled_high"])]
                               for e, lab in encoder_labels.items()},
            "best_encoder": best,
            "delong_p": dict(zip(encoder_tests["comparison"], encoder_tests["delong_p"])),
            "calibration": calibration.to_dict("records"),
            "spared": dict(zip(est["model"], est["spared"])),
            "spared_ci": {m: [lo, hi] for m, lo, hi in zip(est["model"], est["spared_low"],
                                                           est["spared_high"])},
            "sensitivity_at_operating_point": dict(zip(est["model"], est["sensitivity"])),
            "reader_operating_points": reader_points.to_dict("records"),
            "net_benefit_at_0.1": decision_curves[decision_curves["threshold"] == 0.1]
            .set_index("model_label")["model"].to_dict()}


def explanation_record(study: Study, explained: str, result, n_folds: int, share, *,
                       validation: pd.DataFrame, faithfulness: pd.DataFrame,
                       anatomy: pd.DataFrame, sanity: pd.DataFrame,
                       layer_choice: pd.DataFrame | None, randomisation_spearman: float,
                       layers: dict, importance: pd.DataFrame) -> dict:
    """Notebook 05's record: the image share [CI] (``share``:
    :class:`~phyllodes.report.tables.ModalityShare`, None without clinical inputs) and its
    Shapley efficiency error, the ablation, the rows of Tables 6, 6b, 6c, 6d and 6e
    (``layer_choice`` None when the family's layers were used), the model-randomisation
    correlation, the CAM grid and layers and the top clinical feature (``result``: the
    :class:`~phyllodes.explain.results.Explanation`)."""
    def rows(t):
        return None if t is None else t.to_dict("records")
    return {"profile": study.profile.name, "cohort": study.name,
            "encoder": study.profile.encoder, "explained": explained,
            "n_test_images": int(len(result.per_image)), "n_folds": int(n_folds),
            "image_share": None if share is None else share.estimate,
            "image_share_ci": [None, None] if share is None else [share.low, share.high],
            "shapley_sum_error": result.shapley_sum_error(),
            "ablation": result.ablation.to_dict("records"),
            "cam_validation": rows(validation), "cam_faithfulness": rows(faithfulness),
            "cam_anatomy": rows(anatomy), "randomisation_spearman": randomisation_spearman,
            "sanity_checks": rows(sanity), "cam_shape": list(result.cams_gradcampp.shape),
            "cam_layers": {m: [name, list(g)] for m, (name, g) in layers.items()},
            "cam_layer_choice": rows(layer_choice),
            "top_clinical_feature": importance["feature"].iloc[0] if len(importance) else None,
            "paper_image_share": reported.IMAGE_SHARE}
