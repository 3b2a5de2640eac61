"""Runs are the unit of resumable work.

A run is (modality, model, fusion, fold, seed) under a profile's settings on a cohort. Its id
hashes everything that changes its result — the spec, the training settings, the cohort's
fingerprint, the folds, the image cache key — so a changed setting never reuses an old run.
Each run writes ``results/<cohort>/runs/<run_id>/`` with ``config.json``, ``history.csv``,
``predictions.csv`` (one row per image: subject, fold, split, label, probability),
``checkpoint.pt`` and, last, ``metrics.json``. A run folder is written under a temporary name
and renamed when complete, so a folder with ``metrics.json`` is a finished run: it is skipped
when asked again (never overwritten unless ``overwrite=True``), and a grid interrupted
after k runs resumes at run k + 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from . import paths
from .images import ImageSet, image_tensor
from .metrics import binary_metrics, subject_level
from .study import Study
from .training import CLASSICAL, RunOutput, RunSpec, train_run, uses_pretrained

log = logging.getLogger(__name__)

#: Profile settings that change a run's result (the others only change reporting).
TRAINING_SETTINGS = ("image_size", "use_roi", "roi_margin", "freeze_fraction", "epochs", "patience",
                     "batch_size", "lr_encoder", "lr_head", "weight_decay", "warmup_epochs",
                     "clinical_hidden", "head_hidden", "dropout", "aux_weight", "inner_val_fraction",
                     "augment", "clinical_epochs")


def splits_hash(splits: pd.DataFrame) -> str:
    s = splits.sort_values("subject_id")[["subject_id", "fold"]].to_csv(index=False)
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def run_config(study: Study, spec: RunSpec, image_key: str | None,
               encoder_weights: str | None = None) -> dict:
    """Everything that determines the run's result, plus where it ran."""
    prof = study.profile.to_dict()
    uses_images = spec.modality != "clinical"
    settings = {k: prof[k] for k in TRAINING_SETTINGS}
    if not uses_images:
        for k in ("image_size", "use_roi", "roi_margin", "freeze_fraction", "lr_encoder",
                  "augment"):
            settings.pop(k)
    settings["pretrained"] = uses_pretrained(spec, study.profile)
    if prof["compile"]:  # only when on, so that turning it on never renames existing runs
        settings["compile"] = True
    return {
        "spec": spec.to_dict(),
        "settings": settings,
        "cohort": study.cohort.name,
        "cohort_fingerprint": study.cohort.fingerprint,
        "splits_hash": splits_hash(study.splits),
        "image_key": image_key if uses_images else None,
        "encoder_weights": str(encoder_weights) if encoder_weights else None,
    }


def run_id(config: dict) -> str:
    s = config["spec"]
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    fusion = f"-{s['fusion']}" if s["modality"] == "multimodal" else ""
    return f"{s['modality']}-{s['model']}{fusion}-f{s['fold']}-s{s['seed']}-{h}"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists()


def needs_images(spec: RunSpec) -> bool:
    return spec.modality != "clinical"


def study_images(study: Study) -> ImageSet:
    p = study.profile
    return image_tensor(study.cohort, p.image_size, p.use_roi, p.roi_margin)


def run_metrics(preds: pd.DataFrame) -> dict:
    """Subject-level test metrics at 0.5 and the inner-validation AUC of one run."""
    subj = subject_level(preds)
    test, val = subj[subj["split"] == "test"], subj[subj["split"] == "val"]
    return {"test": binary_metrics(test["y"], test["prob"], 0.5),
            "val": binary_metrics(val["y"], val["prob"], 0.5),
            "n_test_subjects": int(len(test)), "n_val_subjects": int(len(val))}


def execute_run(study: Study, spec: RunSpec, overwrite: bool = False,
                encoder_weights: str | None = None, progress: bool = True,
                before_write: Callable[[RunSpec], None] | None = None) -> Path:
    """Train one run unless it is already finished; return its folder."""
    images = study_images(study) if needs_images(spec) else None
    config = run_config(study, spec, images.key if images else None, encoder_weights)
    rid = run_id(config)
    final = paths.runs_dir(study.name) / rid
    if is_finished(final) and not overwrite:
        log.info("run %s is finished: skipped", rid)
        return final
    out: RunOutput = train_run(study.cohort, study.splits, spec, study.profile, images,
                               study.device, encoder_weights, progress)
    if before_write is not None:  # a hook for tests (simulated interruptions)
        before_write(spec)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config["run_id"] = rid
    config["environment"] = {"torch": torch.__version__, "python": platform.python_version(),
                             "device": study.device, "host": platform.node()}
    config["subjects"] = out.extra["subjects"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    out.predictions.assign(run_id=rid).to_csv(tmp / "predictions.csv", index=False)
    pd.DataFrame(out.history).to_csv(tmp / "history.csv", index=False)
    ckpt = {"spec": spec.to_dict(), "config": config,
            "clinical_encoder": out.extra.get("clinical_encoder")}
    if spec.model in CLASSICAL and spec.modality == "clinical":
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


def grid_specs(modalities: Iterable[str], models: dict[str, Iterable[str]],
               fusions: Iterable[str], folds: Iterable[int], seeds: Iterable[int]
               ) -> list[RunSpec]:
    """All runs of a grid. ``models`` maps modality -> model names."""
    specs = []
    for seed in seeds:
        for modality in modalities:
            for model in models[modality]:
                for fusion in (fusions if modality == "multimodal" else ["concat"]):
                    for fold in folds:
                        specs.append(RunSpec(modality, model, fusion, int(fold), int(seed)))
    return specs


def run_grid(study: Study, specs: list[RunSpec], overwrite: bool = False,
             encoder_weights: str | None = None, progress: bool = True,
             executor: str = "local", address: str | None = None,
             **executor_options) -> list[Path]:
    """Execute every run of the grid (finished runs are skipped); return their folders.

    ``executor``: 'local' (sequential, in this process) or 'ray' (one Ray task per run, on the
    cluster at ``address`` or a local Ray instance; see :mod:`phyllodes.distributed`).
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got '{executor}'")
    if executor == "ray":
        from . import distributed
        return distributed.run_grid(study, specs, executor=executor, overwrite=overwrite,
                                    encoder_weights=encoder_weights, address=address,
                                    **executor_options)
    from tqdm.auto import tqdm
    out = []
    for spec in tqdm(specs, desc="runs", disable=not progress):
        out.append(execute_run(study, spec, overwrite, encoder_weights, progress))
    return out


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
        if spec.modality != "clinical" and not pretrained:
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
