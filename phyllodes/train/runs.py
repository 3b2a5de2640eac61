"""Runs are the unit of resumable work: plan one, train it, write it, reload it.

A run is (modality, model, fusion, fold, seed) under a profile's settings on a cohort. Its id
hashes everything that changes its result: the spec, the profile's ``result`` settings that
apply to it (declared on the Profile fields), the recipe version
(:data:`phyllodes.train.trainer.RECIPE_VERSION`), the cohort's fingerprint, the folds, the image
cache key and the encoder weights file's digest. So a changed setting or a new training recipe
never reuses an old run. Each run writes ``results/<cohort>/runs/<run_id>/`` with
``config.json`` (also the resolved profile, the git commit and the environment, which are not
hashed), ``history.csv``, ``predictions.csv`` (one row per image: subject, fold, split, label,
probability), the model as data — ``model.json`` and, for a network, ``weights.safetensors``
— and, last, ``metrics.json``. A run folder is written under a temporary name and renamed when
complete, so a folder with ``metrics.json`` is a finished run: it is skipped when asked again
(never overwritten unless ``overwrite=True``), and a grid interrupted after k runs resumes at
run k + 1.

No pickle is written or read, so a run folder can be handed over and opened safely:
``weights.safetensors`` holds a network's weights (safetensors: tensors only) and
``model.json`` the spec, the settings that rebuild the network, ``n_clinical`` and the clinical
encoder as data (:meth:`phyllodes.data.clinical.ClinicalEncoder.to_json`); a logistic
regression (classical ``logreg``, or the linear probe's standardised one) is written there as
its coefficients, and a tree ensemble is not stored (its ``predictions.csv`` is what the tables
read). :func:`load_run_model` reloads a network from these two files only; a folder from
before this format (a pickled ``checkpoint.pt``) is refused, never unpickled: recompute it.

:func:`planned_run` is the one planner (image key → config → id → folder → finished?), used by
:func:`execute_run` and by every executor of :mod:`phyllodes.train.grid`.
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

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file

from phyllodes import kernels
from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.evaluate.metrics import binary_metrics, subject_level
from phyllodes.keys import model_key, model_label
from phyllodes.models import families
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
    staged = spec.uses_images and (settings.get("tap") is not None
                                   or bool(settings.get("frozen_stages")))
    fam = families.family_named(spec.encoder or "") if staged else None
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
        # the final model is trained on every subject: the outer folds do not change it
        "splits_hash": None if spec.is_final else splits_hash(study.splits),
        "image_key": image_key if spec.uses_images else None,
        "encoder_weights": weights_digest(encoder_weights) if spec.uses_images else None,
        # the CPU kernels (phyllodes.kernels): other kernels round differently, so other runs
        "kernels": kernels.tag(),
        # tap and frozen stages were ignored outside EfficientNet until the families table
        # (phyllodes.models.families) honoured them: such runs get new ids, the others keep theirs
        **({"stage_table": 1} if staged and (fam is None or fam.name != "efficientnet")
           else {}),
    }


def run_id(config: dict) -> str:
    s = config["spec"]
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    fusion = f"-{s['fusion']}" if s["modality"] == "multimodal" else ""
    fold = RunSpec(**s).fold_name
    return f"{s['modality']}-{s['model']}{fusion}-{fold}-s{s['seed']}-{h}"


def is_finished(run_dir: Path) -> bool:
    """A run folder with its metrics and its model as data (a folder of an earlier version with
    only a pickled checkpoint is not: it is recomputed, and kept aside, never unpickled)."""
    return (run_dir / "metrics.json").exists() and (run_dir / MODEL_FILE).exists()


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

    ``encoder_weights``: a local weights file of the encoder; without it, the study's file for
    its encoder (:meth:`~phyllodes.study.Study.encoder_weights_for`), then its weights folder
    (``--weights-dir``) (:func:`phyllodes.models.encoders.weights_file`)."""
    encoder_weights = (weights_file(spec.encoder,
                                    encoder_weights or study.encoder_weights_for(spec.encoder),
                                    study.weights_dir)
                       if spec.uses_images else None)
    config = run_config(study, spec, study.image_key() if spec.uses_images else None,
                        encoder_weights)
    rid = run_id(config)
    return PlannedRun(spec, config, rid, study.runs_dir / rid, encoder_weights)


def run_metrics(preds: pd.DataFrame) -> dict:
    """Subject-level test metrics at 0.5 and the inner-validation AUC of one run (a final
    model has no test subjects: its test metrics are None)."""
    subj = subject_level(preds)
    test, val = subj[subj["split"] == "test"], subj[subj["split"] == "val"]
    return {"test": binary_metrics(test["y"], test["prob"], 0.5) if len(test) else None,
            "val": binary_metrics(val["y"], val["prob"], 0.5),
            "n_test_subjects": int(len(test)), "n_val_subjects": int(len(val))}


#: the run folder's model description (JSON) and network weights (safetensors)
MODEL_FILE, WEIGHTS_FILE = "model.json", "weights.safetensors"
#: the model file format (``model.json``'s ``format_version``)
MODEL_FORMAT = 1
#: the pickled files of earlier run folders: never loaded (unpickling runs code)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".joblib")


class UnsafeRunFolderError(RuntimeError):
    """A run folder whose model is only a pickle (written before ``model.json``)."""


def _linear_model_data(clf) -> dict | str:
    """A logistic regression, or a StandardScaler + LogisticRegression pipeline, as data; a
    note for a model that is not stored (a tree ensemble)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    scaler = None
    if isinstance(clf, Pipeline):
        steps = [s for _, s in clf.steps]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            scaler, clf = steps
    if not isinstance(clf, LogisticRegression):
        from sklearn.ensemble import BaseEnsemble
        what = "tree ensemble" if isinstance(clf, BaseEnsemble) else type(clf).__name__
        return f"not stored: {what}; predictions.csv holds its predictions"
    data = {"type": "logistic_regression", "coef": np.asarray(clf.coef_).tolist(),
            "intercept": np.asarray(clf.intercept_).tolist(),
            "classes": np.asarray(clf.classes_).tolist(),
            # float32 when fit on float32 vectors: restored as such, so predictions are exact
            "dtype": str(np.asarray(clf.coef_).dtype)}
    if scaler is not None:
        data = {"type": "standardised_logistic_regression",
                "scaler": {"mean": np.asarray(scaler.mean_).tolist(),
                           "scale": np.asarray(scaler.scale_).tolist()},
                **{k: v for k, v in data.items() if k != "type"}}
    return data


def model_record(spec: RunSpec, config: dict, out: RunOutput
                 ) -> tuple[dict, dict | None]:
    """What ``model.json`` holds for a run, and the network weights (None without one)."""
    enc = out.extra.get("clinical_encoder")
    record = {"format_version": MODEL_FORMAT, "spec": spec.to_dict(),
              "settings": config["settings"], "run_id": config["run_id"],
              "clinical_encoder": enc.to_json() if enc is not None else None}
    if not spec.is_network:  # a scikit-learn model: classical clinical, or a linear probe
        record["kind"] = "sklearn"
        record["model"] = _linear_model_data(out.extra["sklearn_model"])
        if "probe_C" in out.extra:
            record["probe"] = {"C": out.extra["probe_C"], "taps": out.extra["probe_taps"]}
        return record, None
    record.update(kind="network", n_clinical=int(out.extra["n_clinical"]),
                  weights=WEIGHTS_FILE)
    # own, contiguous CPU tensors (safetensors refuses shared or strided storage)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in out.state.items()}
    return record, weights


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
    model, weights = model_record(spec, config, out)
    if weights is not None:
        save_file(weights, tmp / WEIGHTS_FILE)
    (tmp / MODEL_FILE).write_text(json.dumps(model, indent=2))
    metrics = {"run_id": rid, **run_metrics(out.predictions), "best_epoch": out.best_epoch,
               "epochs_run": len(out.history), "seconds": round(out.seconds, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    if final.exists() and overwrite:
        shutil.rmtree(final)
    elif final.exists():  # not finished (no model.json): kept aside, never deleted or loaded
        aside = final.with_name(f"{final.name}.unfinished-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("run folder %s has no %s (an earlier version's pickle?): recomputed; the "
                    "old folder is kept as %s", final, MODEL_FILE, aside.name)
        final.rename(aside)
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


def _refuse_pickles(run_dir: Path) -> None:
    """No ``model.json``: explain a pickled checkpoint of an earlier version (never load it)."""
    pickles = sorted(p.name for p in run_dir.iterdir()
                     if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeRunFolderError(
            f"{run_dir}: {', '.join(pickles)} is a pickled checkpoint (torch.save) written "
            f"before run folders held {MODEL_FILE} + {WEIGHTS_FILE}. Pickles are not loaded: "
            "loading one executes whatever code it contains. The run must be recomputed: "
            "delete this folder and run ./run_all.sh (it recomputes missing runs), or just "
            "delete the folder.")
    raise FileNotFoundError(f"{run_dir}: no {MODEL_FILE}: not a finished run folder (recompute "
                            "it with ./run_all.sh, or delete the folder)")


def read_model_record(run_dir: Path) -> dict:
    """A run's ``model.json`` (refused with a clear error for a pickle-only folder)."""
    run_dir = Path(run_dir)
    path = run_dir / MODEL_FILE
    if not path.is_file():
        _refuse_pickles(run_dir)
    record = json.loads(path.read_text())
    if record.get("format_version") != MODEL_FORMAT:
        raise ValueError(f"{path}: model format {record.get('format_version')!r}, this code "
                         f"reads {MODEL_FORMAT}: recompute the run")
    return record


def load_run_model(run_dir: Path) -> tuple[PhyllodesNet, ClinicalEncoder, dict]:
    """The trained network of a finished run (eval mode), its clinical encoder and config.

    Reads ``model.json`` and ``weights.safetensors`` only (no pickle is ever loaded)."""
    run_dir = Path(run_dir)
    record = read_model_record(run_dir)
    if record["kind"] != "network":
        raise ValueError(f"{run_dir}: a scikit-learn run ({record['spec']['model']}) has no "
                         "network to load (see load_linear_model)")
    spec = RunSpec(**record["spec"])
    model = build_model(spec, {**record["settings"], "freeze_fraction": 0.0},
                        record["n_clinical"], pretrained=False)
    model.load_state_dict(load_file(run_dir / record["weights"], device="cpu"))
    enc = record["clinical_encoder"]
    cfg = json.loads((run_dir / "config.json").read_text())
    return model.eval(), (ClinicalEncoder.from_json(enc) if enc is not None else None), cfg


def load_linear_model(run_dir: Path) -> tuple[object, ClinicalEncoder | None, dict]:
    """The logistic regression of a finished scikit-learn run (classical ``logreg``: on the
    clinical encoder's vectors; the linear probe: a StandardScaler + LogisticRegression
    pipeline on the encoder's pooled features) rebuilt from ``model.json``, its clinical
    encoder (None for the probe) and config. A tree ensemble is not stored: ValueError."""
    run_dir = Path(run_dir)
    record = read_model_record(run_dir)
    data = record.get("model")
    if record["kind"] != "sklearn" or not isinstance(data, dict):
        raise ValueError(f"{run_dir}: no linear model stored ({data or record['kind']})")
    clf = linear_model_from_data(data)
    enc = record["clinical_encoder"]
    cfg = json.loads((run_dir / "config.json").read_text())
    return clf, (ClinicalEncoder.from_json(enc) if enc is not None else None), cfg


def linear_model_from_data(data: dict):
    """A logistic regression (or StandardScaler + LogisticRegression pipeline) rebuilt from
    the data :func:`model_record` wrote."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    lr = LogisticRegression()
    dtype = np.dtype(data.get("dtype", "float64"))
    lr.coef_ = np.asarray(data["coef"], dtype=dtype)
    lr.intercept_ = np.asarray(data["intercept"], dtype=dtype)
    lr.classes_ = np.asarray(data["classes"])
    lr.n_features_in_ = lr.coef_.shape[1]
    clf = lr
    if data["type"] == "standardised_logistic_regression":
        scaler = StandardScaler()
        scaler.mean_ = np.asarray(data["scaler"]["mean"], dtype=np.float64)
        scaler.scale_ = np.asarray(data["scaler"]["scale"], dtype=np.float64)
        scaler.n_features_in_ = len(scaler.mean_)
        clf = make_pipeline(scaler, lr)
    return clf


def run_key(spec: RunSpec, settings: dict) -> str:
    """The run's model key (:func:`phyllodes.keys.model_key`; ``@random-init`` when its image
    branch did not start from pretrained weights)."""
    return model_key(spec.modality, spec.model, spec.fusion,
                     pretrained=bool(settings.get("pretrained", False)))


def run_label(spec: RunSpec, settings: dict) -> str:
    """The run's display label (:func:`phyllodes.keys.model_label`; ``(random init)`` when its
    image branch did not start from pretrained weights)."""
    return model_label(spec.modality, spec.model, spec.fusion,
                       pretrained=bool(settings.get("pretrained", False)))


def load_predictions(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """Predictions of the runs, with their spec as columns (modality, model, fusion, seed) and
    a readable ``model_label`` (for display; a model's identity is its ``model_key``)."""
    frames = []
    for d in run_dirs:
        d = Path(d)
        cfg = json.loads((d / "config.json").read_text())
        s = cfg["spec"]
        p = pd.read_csv(d / "predictions.csv", dtype={"subject_id": str})
        spec = RunSpec(**s)
        frames.append(p.assign(modality=s["modality"], model=s["model"], fusion=s["fusion"],
                               seed=s["seed"],
                               pretrained=bool(cfg["settings"].get("pretrained", False)),
                               model_key=run_key(spec, cfg["settings"]),
                               model_label=run_label(spec, cfg["settings"])))
    if not frames:
        raise ValueError("no runs to load")
    return pd.concat(frames, ignore_index=True)


def load_run_metrics(run_dirs: Iterable[Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text())
        cfg = json.loads((Path(d) / "config.json").read_text())
        rows.append({**cfg["spec"], "run_id": m["run_id"],
                     "test_auc": (m["test"] or {}).get("auc", np.nan),
                     "val_auc": m["val"]["auc"], "best_epoch": m["best_epoch"],
                     "epochs_run": m["epochs_run"], "seconds": m["seconds"]})
    return pd.DataFrame(rows)
