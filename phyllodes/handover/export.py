"""Export a finished run as a self-contained model folder that can be carried to another machine.

``python -m phyllodes export RUN_DIR --out MODEL_DIR`` (or :func:`export_model`) writes:

* ``weights.safetensors``: the network's weights (tensors only; absent for a logistic
  regression, whose coefficients are data in ``model.json``);
* ``model.json``: everything else as plain data — the run's spec and settings, the clinical
  encoder (imputation values, scaling, categories; no subject ids), the preprocessing (ROI crop
  and margin, size, intensity handling, the test-time views), the calibration map and the
  operating points (both fit on the final model's *inner-validation* subjects, never on a test
  or external subject), the recipe version, the package version and commit, and the training
  cohort's name, fingerprint and counts;
* ``cohort.yaml``: the model's input declaration, the data contract's cohort.yaml a folder of
  new patients is read with when it has none (the clinical inputs by type, the missing-value
  markers and label names of the training cohort);
* ``model_card.md`` when the study's tables exist (:mod:`phyllodes.report.model_card`);
* ``MANIFEST.json``: the SHA-256 of every other file. :func:`phyllodes.handover.predict.load_model`
  refuses a folder whose files do not match it, or that holds any pickle, naming the file, and
  never executes anything from the folder (JSON and safetensors only).

A fold run can be exported too (for a reviewer who wants the exact cross-validated model): it is
labelled ``fold k of the cross-validation`` everywhere, and its operating points come from that
fold's inner-validation subjects. A linear probe (its features need the frozen ImageNet encoder)
and a tree ensemble (not stored) are refused by name.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from phyllodes import __version__
from phyllodes.data.cohort import Cohort, load_cohort
from phyllodes.evaluate.metrics import choose_threshold, subject_level
from phyllodes.evaluate.stats import fit_platt_recalibration, threshold_for_sensitivity
from phyllodes.handover.folder import (
    CARD,
    DECLARATION,
    EXPORT_FORMAT,
    EXPORT_KIND,
    ModelFolderError,
    verify_folder,
    write_manifest,
)
from phyllodes.provenance import git_commit
from phyllodes.train.runs import MODEL_FILE, WEIGHTS_FILE, read_model_record, run_label
from phyllodes.train.spec import RunSpec

log = logging.getLogger(__name__)
#: the high-sensitivity operating point's target on inner validation
SENSITIVITY_TARGET = 0.95


class ExportError(ValueError):
    """The run cannot be exported as it is."""


def _inner_validation(run_dir: Path) -> pd.DataFrame:
    """Subject-level inner-validation predictions of the run (where its thresholds are fit)."""
    preds = pd.read_csv(run_dir / "predictions.csv", dtype={"subject_id": str})
    val = preds[preds["split"] == "val"]
    if val.empty or val["y"].nunique() < 2:
        raise ExportError(f"{run_dir.name}: its predictions.csv has no inner-validation subjects "
                          "of both classes, so no operating point can be chosen without test "
                          "subjects: export a run trained with inner_val_fraction > 0")
    return subject_level(val)


def operating_points(val: pd.DataFrame) -> dict:
    """The calibration map and the operating points, from inner-validation subjects only."""
    y, p = val["y"].to_numpy(int), val["prob"].to_numpy(float)
    n = {"subjects": int(len(y)), "positive": int(y.sum())}

    def at(t: float) -> dict:
        pred = p >= t
        return {"threshold": round(float(t), 6),
                "inner_validation_sensitivity": round(float(pred[y == 1].mean()), 4),
                "inner_validation_specificity": round(float((~pred)[y == 0].mean()), 4)}

    points = {"youden": {"rule": "maximum Youden's J on inner validation", **at(
        choose_threshold(y, p))},
        "high_sensitivity": {"rule": f"highest threshold with sensitivity >= "
                                     f"{SENSITIVITY_TARGET:.2f} on inner validation",
                             **at(threshold_for_sensitivity(y, p, SENSITIVITY_TARGET))}}
    platt = fit_platt_recalibration(y, p)
    calibration = ({"method": "platt", "intercept": platt.intercept, "slope": platt.slope,
                    "risk": "expit(intercept + slope * logit(probability))"}
                   if platt.slope > 0 else
                   {"method": "identity", "why": f"the Platt slope fit on inner validation was "
                                                 f"{platt.slope:.3g} (not positive)"})
    return {"fit_on": {"what": "inner-validation subjects of the run (never a test or external "
                               "subject)", **n},
            "calibration": calibration, "operating_points": points, "primary": "youden"}


def declaration(cohort: Cohort, clinical: dict | None) -> dict:
    """The model's input declaration as a cohort.yaml (for folders of new patients)."""
    cfg = cohort.config
    levels = (clinical or {}).get("levels", {})
    sub, img = levels.get("subject", {}), levels.get("image", {})
    return {"name": "patients", "description": f"new patients for a model trained on "
                                                f"{cohort.name}",
            "positive_labels": list(cfg.positive_labels),
            "negative_labels": list(cfg.negative_labels),
            "numeric_features": list(sub.get("numeric", [])),
            "categorical_features": list(sub.get("categorical", [])),
            "image_numeric_features": list(img.get("numeric", [])),
            "image_categorical_features": list(img.get("categorical", [])),
            "missing_values": list(dict.fromkeys([*cfg.missing_values, ""]))}


def _training_data(cohort: Cohort, config: dict, spec: RunSpec) -> dict:
    s = cohort.summary()
    fitted = config.get("subjects", {})
    return {"cohort": cohort.name, "fingerprint": config["cohort_fingerprint"],
            "subjects": s["n_subjects"], "images": s["n_images"],
            "positive_subjects": s["n_positive_subjects"],
            "positive_labels": list(cohort.config.positive_labels),
            "negative_labels": list(cohort.config.negative_labels),
            "subjects_trained_on": len(fitted.get("train", [])),
            "inner_validation_subjects": len(fitted.get("val", [])),
            "what": "every subject (the final model)" if spec.is_final
            else f"fold {spec.fold} of the cross-validation (its training subjects)"}


def _clinical_encoder(record: dict, spec: RunSpec) -> dict | None:
    """The run's clinical encoder, None for a model that takes no clinical input (an image-only
    network carries one it never reads)."""
    return None if spec.modality == "image" else record["clinical_encoder"]


def _clinical_without_ids(enc: dict | None) -> dict | None:
    if enc is None:
        return None
    return {**{k: v for k, v in enc.items() if k != "fitted_subjects"},
            "fitted_subjects": len(enc.get("fitted_subjects", []))}


def _inputs(record: dict, cohort: Cohort, spec: RunSpec) -> dict:
    """The model's inputs, and each categorical input's categories in the training cohort
    (a category of the cohort that the run's own training subjects lacked is encoded as none,
    as the study encoded it; one the cohort never had is refused by predict)."""
    levels = (_clinical_encoder(record, spec) or {}).get("levels", {}).values()
    imgs = cohort.images
    return {"image": spec.uses_images,
            "clinical": [c for lv in levels for c in (*lv["numeric"], *lv["categorical"])],
            "categories": {c: sorted(str(v) for v in imgs[c].dropna().unique())
                           for lv in levels for c in lv["categorical"]}}


def model_document(run_dir: Path, cohort: Cohort) -> dict:
    """``model.json`` of the exported folder (see the module docstring)."""
    record = read_model_record(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    spec = RunSpec(**record["spec"])
    if record["kind"] == "sklearn":
        data = record.get("model")
        if spec.is_probe or not isinstance(data, dict):
            raise ExportError(f"{run_dir.name}: a {spec.label} cannot be exported "
                              + ("(its features need the frozen ImageNet encoder, which is not "
                                 "part of the run): export the fine-tuned network"
                                 if spec.is_probe else f"({data})"))
    if config["cohort_fingerprint"] != cohort.fingerprint:
        raise ExportError(f"{run_dir.name} was trained on cohort {config['cohort']} with "
                          f"fingerprint {config['cohort_fingerprint']}; the cohort given has "
                          f"{cohort.fingerprint}: pass the cohort the run was trained on")
    settings = record["settings"]
    code = config.get("code") or git_commit()
    doc = {"kind": EXPORT_KIND, "format_version": EXPORT_FORMAT,
           "model_kind": record["kind"], "spec": record["spec"],
           "label": run_label(spec, settings),
           "what": "final model (trained on every subject)" if spec.is_final
           else f"fold {spec.fold} of the cross-validation",
           "run_id": record["run_id"], "settings": settings,
           "n_clinical": record.get("n_clinical"),
           "clinical_encoder": _clinical_without_ids(_clinical_encoder(record, spec)),
           "model": record.get("model"),
           "inputs": _inputs(record, cohort, spec),
           "preprocessing": {
               "image": "8-bit grayscale, EXIF orientation applied (phyllodes.data.imageio)",
               "crop": (f"square box around the ROI (roi_x0..roi_y1) with a margin of "
                        f"{settings.get('roi_margin')} of its side, zero padding outside the "
                        "image; the whole image padded to a square when there is no ROI")
               if settings.get("use_roi") else "the whole image padded to a square",
               "image_size": settings.get("image_size"), "resample": "bilinear",
               "intensity": "uint8 / 255 -> [0, 1], no other normalisation",
               "test_time": {"flip": bool(settings.get("tta_flip")),
                             "views": int(settings.get("tta_views") or 0),
                             "views_seeded_by": "each image's pixels and the view's index "
                                                "(phyllodes.data.images.fixed_view)"},
           } if spec.uses_images else None,
           **operating_points(_inner_validation(run_dir)),
           "training_data": _training_data(cohort, config, spec),
           "recipe_version": config["recipe_version"],
           "package": {"name": "phyllodes", "version": __version__,
                       "commit": code.get("commit"), "dirty": code.get("dirty")},
           "environment": config.get("environment"),
           "exported": datetime.datetime.now(datetime.timezone.utc).strftime(
               "%Y-%m-%dT%H:%M:%SZ")}
    if record["kind"] == "network":
        doc["weights"] = WEIGHTS_FILE
    return doc


def export_model(run_dir: Path | str, out: Path | str, cohort: Cohort | None = None,
                 card: str | None = None, overwrite: bool = False) -> Path:
    """Export the finished run at ``run_dir`` into the model folder ``out`` (see the module
    docstring). ``cohort``: the training cohort (default: the one its config names, under
    data/); ``card``: the model card's markdown, written into the folder when given."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "metrics.json").is_file():
        raise ExportError(f"{run_dir}: not a finished run folder (no metrics.json)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: choose another folder or pass "
                              "overwrite=True (--overwrite)")
    if cohort is None:
        cohort = load_cohort(json.loads((run_dir / "config.json").read_text())["cohort"])
    doc = model_document(run_dir, cohort)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if doc["model_kind"] == "network":
        shutil.copyfile(run_dir / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
    (tmp / MODEL_FILE).write_text(json.dumps(doc, indent=2, default=_plain))
    (tmp / DECLARATION).write_text(yaml.safe_dump(declaration(cohort, doc["clinical_encoder"]),
                                                  sort_keys=False, allow_unicode=True))
    if card:
        (tmp / CARD).write_text(card)
    write_manifest(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{v!r} is not JSON data")


def exportable(run_dir: Path | str) -> bool:
    """Whether a run's model can be exported (a network, or a clinical logistic regression)."""
    record = read_model_record(Path(run_dir))
    spec = RunSpec(**record["spec"])
    return spec.is_network or (not spec.is_probe and isinstance(record.get("model"), dict))


def exported_model(run_dir: Path | str, models_dir: Path | str, cohort: Cohort) -> Path:
    """The model folder of a run under ``models_dir`` (``models_dir/<run_id>``): exported
    once, then reused while it still verifies; a folder of that name that does not verify is
    an error (it is never silently replaced)."""
    run_dir = Path(run_dir)
    out = Path(models_dir) / run_dir.name
    if out.exists():
        try:
            doc = verify_folder(out)
        except ModelFolderError as e:
            raise ModelFolderError(f"{e} (delete {out} to export {run_dir.name} again)"
                                   ) from None
        if _same(doc, model_document(run_dir, cohort)):
            return out
        log.warning("model folder %s was exported by other code than this: exported again "
                    "(it is derived from run %s, which is unchanged)", out, run_dir.name)
        return export_model(run_dir, out, cohort, overwrite=True)
    return export_model(run_dir, out, cohort)


def _same(a: dict, b: dict) -> bool:
    """Two model documents alike but for when they were exported and the code's commit."""
    def strip(d: dict) -> str:
        d = {k: v for k, v in d.items() if k not in ("exported", "package")}
        return json.dumps(d, sort_keys=True, default=_plain)
    return strip(a) == strip(b)
