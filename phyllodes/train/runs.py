"""Runs are the unit of resumable work: plan one, train it, write it, reload it.

A run is (modality, model, fusion, fold, seed) under a profile's settings on a cohort. Its id
hashes everything that changes its result: the spec, the profile's ``result`` settings that
apply to it (declared on the Profile fields), the recipe version
(:data:`phyllodes.training.RECIPE_VERSION`), the cohort's fingerprint, the folds, the image
cache key and the encoder weights file's digest. So a changed setting or a new training recipe
never reuses an old run. Each run writes ``results/<cohort>/runs/<run_id>/`` with
``config.json`` (also the resolved profile, the git commit and the environment, which are not
hashed), ``history.csv``, ``predictions.csv`` (one row per image: subject, fold, split, label,
probability), ``checkpoint.pt`` and, last, ``metrics.json``. A run folder is written under a
temporary name and renamed when complete, so a folder with ``metrics.json`` is a finished run:
it is skipped when asked again (never overwritten unless ``overwrite=True``), and a grid
interrupted after k runs resumes at run k + 1.

:func:`planned_run` is the one planner (image key → config → id → folder → finished?), used by
:func:`execute_run` and by every executor of :mod:`phyllodes.grid`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.evaluate.metrics import binary_metrics, subject_level
from phyllodes.models.encoders import weights_file
from phyllodes.models.network import PhyllodesNet
from phyllodes.provenance import provenance
from phyllodes.recipe import RECIPE_VERSION
from phyllodes.study import Study
from phyllodes.train.spec import RunOutput, RunSpec
from phyllodes.train.trainer import build_model, train_run, uses_pretrained

log = logging.getLogger(__name__)

def splits_hash(splits: pd.DataFrame) -> str:
    s = splits.sort_values("subject_id")[["subject_id", "fold"]].to_csv(index=False)
    return hashlib.sha256(s.encode()).hexdigest()[:12]


@lru_cache(maxsize=32)
def _file_sha256(path: str, mtime: float, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def weights_digest(encoder_weights: str | Path | None) -> str | None:
    """Content digest of a local encoder weights file (None when there is none)."""
    if not encoder_weights:
        return None
    p = Path(encoder_weights)
    if not p.is_file():
        return f"missing:{p.name}"  # the model builder raises the clear error
    st = p.stat()
    return _file_sha256(str(p.resolve()), st.st_mtime, st.st_size)


def run_config(study: Study, spec: RunSpec, image_key: str | None,
               encoder_weights: str | None = None) -> dict:
    """Everything that determines the run's result: what its id hashes."""
    settings = study.profile.result_settings(spec.scopes)
    if spec.uses_images:
        settings["pretrained"] = uses_pretrained(spec, study.profile)
    cfg = study.cohort.config
    return {
        "spec": spec.to_dict(),
        "settings": settings,
        # the clinical inputs (a feature set); an image-only model takes none of them
        "features": {"numeric": cfg.numeric_features, "categorical": cfg.categorical_features,
                     "image_numeric": cfg.image_numeric_features,
                     "image_categorical": cfg.image_categorical_features}
        if spec.modality != "image" else None,
        "recipe_version": RECIPE_VERSION,
        "cohort": study.cohort.name,
        "cohort_fingerprint": study.cohort.fingerprint,
        "splits_hash": splits_hash(study.splits),
        "image_key": image_key if spec.uses_images else None,
        "encoder_weights": weights_digest(encoder_weights) if spec.uses_images else None,
    }


def run_id(config: dict) -> str:
    s = config["spec"]
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    fusion = f"-{s['fusion']}" if s["modality"] == "multimodal" else ""
    return f"{s['modality']}-{s['model']}{fusion}-f{s['fold']}-s{s['seed']}-{h}"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists()


@dataclass(frozen=True)
class PlannedRun:
    """A run before it is executed: its spec, hashed config, id and folder."""

    spec: RunSpec
    config: dict
    run_id: str
    run_dir: Path
    #: the local encoder weights file the run starts from (None: a package's or timm's)
    encoder_weights: str | None = None

    @property
    def finished(self) -> bool:
        return is_finished(self.run_dir)


def planned_run(study: Study, spec: RunSpec, encoder_weights: str | None = None) -> PlannedRun:
    """The one planner: image key → config → id → folder (see :attr:`PlannedRun.finished`).

    ``encoder_weights``: a local weights file of the encoder; without it, the study's weights
    folder (``--weights-dir``) is looked in (:func:`phyllodes.models.encoders.weights_file`)."""
    encoder_weights = (weights_file(spec.encoder, encoder_weights, study.weights_dir)
                       if spec.uses_images else None)
    config = run_config(study, spec, study.image_key() if spec.uses_images else None,
                        encoder_weights)
    rid = run_id(config)
    return PlannedRun(spec, config, rid, study.runs_dir / rid, encoder_weights)


def run_metrics(preds: pd.DataFrame) -> dict:
    """Subject-level test metrics at 0.5 and the inner-validation AUC of one run."""
    subj = subject_level(preds)
    test, val = subj[subj["split"] == "test"], subj[subj["split"] == "val"]
    return {"test": binary_metrics(test["y"], test["prob"], 0.5),
            "val": binary_metrics(val["y"], val["prob"], 0.5),
            "n_test_subjects": int(len(test)), "n_val_subjects": int(len(val))}


def write_run(plan: PlannedRun, out: RunOutput, study: Study, overwrite: bool = False) -> Path:
    """Write a trained run atomically (temporary folder renamed when complete)."""
    spec, rid, final = plan.spec, plan.run_id, plan.run_dir
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = {**plan.config, "run_id": rid, **provenance(study),
              "subjects": out.extra["subjects"]}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    out.predictions.assign(run_id=rid).to_csv(tmp / "predictions.csv", index=False)
    pd.DataFrame(out.history).to_csv(tmp / "history.csv", index=False)
    ckpt = {"spec": spec.to_dict(), "config": config,
            "clinical_encoder": out.extra.get("clinical_encoder")}
    if not spec.is_network:  # a scikit-learn model: classical clinical, or a linear probe
        ckpt["sklearn_model"] = out.extra["sklearn_model"]
    else:
        ckpt["state_dict"] = out.state
        ckpt["n_clinical"] = out.extra["n_clinical"]
    torch.save(ckpt, tmp / "checkpoint.pt")
    metrics = {"run_id": rid, **run_metrics(out.predictions), "best_epoch": out.best_epoch,
               "epochs_run": len(out.history), "seconds": round(out.seconds, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    if final.exists():  # only reached with overwrite=True
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def execute_run(study: Study, spec: RunSpec, overwrite: bool = False,
                encoder_weights: str | None = None, progress: bool = True,
                before_write: Callable[[RunSpec], None] | None = None) -> Path:
    """Train one run unless it is already finished; return its folder."""
    plan = planned_run(study, spec, encoder_weights)
    if plan.finished and not overwrite:
        log.info("run %s is finished: skipped", plan.run_id)
        return plan.run_dir
    out = train_run(study, spec, plan.encoder_weights, progress)
    if before_write is not None:  # a hook for tests (simulated interruptions)
        before_write(spec)
    return write_run(plan, out, study, overwrite)


def load_run_model(run_dir: Path) -> tuple[PhyllodesNet, ClinicalEncoder, dict]:
    """The trained network of a finished run (eval mode), its clinical encoder and config."""
    ck = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = ck["config"]
    spec = RunSpec(**ck["spec"])
    model = build_model(spec, {**cfg["settings"], "freeze_fraction": 0.0}, ck["n_clinical"],
                        pretrained=False)
    model.load_state_dict(ck["state_dict"])
    return model.eval(), ck["clinical_encoder"], cfg


def load_predictions(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """Predictions of the runs, with their spec as columns (modality, model, fusion, seed) and
    a readable ``model_label``."""
    frames = []
    for d in run_dirs:
        d = Path(d)
        cfg = json.loads((d / "config.json").read_text())
        s = cfg["spec"]
        p = pd.read_csv(d / "predictions.csv", dtype={"subject_id": str})
        spec = RunSpec(**s)
        pretrained = bool(cfg["settings"].get("pretrained", False))
        label = spec.label
        if spec.uses_images and not pretrained:
            label += " (random init)"
        frames.append(p.assign(modality=s["modality"], model=s["model"], fusion=s["fusion"],
                               seed=s["seed"], pretrained=pretrained, model_label=label))
    if not frames:
        raise ValueError("no runs to load")
    return pd.concat(frames, ignore_index=True)


def load_run_metrics(run_dirs: Iterable[Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text())
        cfg = json.loads((Path(d) / "config.json").read_text())
        rows.append({**cfg["spec"], "run_id": m["run_id"], "test_auc": m["test"]["auc"],
                     "val_auc": m["val"]["auc"], "best_epoch": m["best_epoch"],
                     "epochs_run": m["epochs_run"], "seconds": m["seconds"]})
    return pd.DataFrame(rows)
