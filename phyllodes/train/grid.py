"""A grid of runs, executed locally (in this process, one after the other) or on Ray.

:func:`grid_specs` lists the runs of a grid; :func:`run_grid` executes them, skipping finished
ones. Both executors plan every run with :func:`phyllodes.train.runs.planned_run` and train it with
:func:`phyllodes.train.runs.execute_run`, so they write the same run folders.

Ray (``executor="ray"``) spreads the runs over a cluster, losing nothing when a worker dies.
Each run is one Ray task asking for one GPU when the cluster has GPUs, else ``cpus_per_run``
CPUs. The task rebuilds the study from its files (cohort folder, splits file, profile) and
calls :func:`phyllodes.train.runs.execute_run`, which writes the run's folder under the shared
output root — the same files the local executor writes, so the notebooks' tables read them
whichever executor ran them. Finished runs are found before anything is submitted and never
recomputed. A run that raises, or whose worker process dies, is retried up to
``max_retries`` times by Ray; a run still failing is reported with its error in
:class:`GridError` after every other run has finished, so resubmitting the grid only redoes
what failed.

Ray is optional: ``pip install -e '.[ray]'`` (or ``pip install "ray[default]"``). On a cluster,
pass its address (``ray://head:10001`` or ``auto`` on a node of the cluster) and an output
folder on storage every node sees.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from phyllodes import paths
from phyllodes.progress import bars_wanted, emit
from phyllodes.study import Study
from phyllodes.train.runs import execute_run, planned_run
from phyllodes.train.spec import RunSpec

log = logging.getLogger(__name__)


class GridError(RuntimeError):
    """Some runs failed after their retries; ``failures`` maps run label to error text."""

    def __init__(self, failures: dict[str, str], finished: list[Path]):
        self.failures, self.finished = failures, finished
        lines = "\n".join(f"  - {k}: {v}" for k, v in failures.items())
        super().__init__(f"{len(failures)} run(s) failed after retries ({len(finished)} "
                         f"finished and kept; resubmit the grid to redo only the failed):\n{lines}")


@dataclass(frozen=True)
class StudyFiles:
    """What a worker needs to rebuild a Study: all paths and plain settings."""

    profile: object
    cohort_root: str
    feature_set: str
    splits_path: str
    output_root: str
    cache_dir: str
    weights_dir: str | None
    device: str
    seed: int
    encoder_weights: str | None = None

    @classmethod
    def of(cls, study: Study) -> "StudyFiles":
        return cls(study.profile, str(study.cohort.root), study.cohort.feature_set,
                   str(Path(study.splits_path).resolve()), str(study.outputs.root),
                   str(study.cache_dir), study.weights_dir, study.device, study.seed,
                   study.encoder_weights)

    def open(self, device: str | None = None) -> Study:
        from phyllodes.data.cohort import load_cohort
        from phyllodes.data.splits import load_splits
        cohort = load_cohort(self.cohort_root, check_images=False)
        cohort = cohort.with_feature_set(self.feature_set)
        splits = load_splits(self.splits_path, cohort)
        return Study(self.profile, cohort, splits, Path(self.splits_path),
                     device or self.device, self.seed, outputs=paths.Outputs.at(self.output_root),
                     cache_dir=Path(self.cache_dir), weights_dir=self.weights_dir,
                     encoder_weights=self.encoder_weights)


@dataclass(frozen=True)
class FailOnce:
    """Fault injection for tests and drills: the first attempt of run ``label`` (fold ``fold``)
    raises (``mode='raise'``) or kills its worker process (``mode='kill'``); a marker file
    records that it happened."""

    label: str
    fold: int
    marker: str
    mode: str = "raise"

    def __call__(self, spec: RunSpec) -> None:
        if spec.label != self.label or spec.fold != self.fold or Path(self.marker).exists():
            return
        Path(self.marker).write_text(self.mode)
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure of {spec.label} fold {spec.fold}")


def _run_task(files: StudyFiles, spec: RunSpec, overwrite: bool, encoder_weights: str | None,
              threads: int, fault=None) -> str:
    import torch

    if threads:
        torch.set_num_threads(threads)
    gpu = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) and torch.cuda.is_available()
    study = files.open("cuda" if gpu else "cpu")
    return str(execute_run(study, spec, overwrite, encoder_weights, progress=False,
                           before_write=fault))


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


EXECUTORS = ("local", "ray")


def run_grid(study: Study, specs: list[RunSpec], overwrite: bool = False,
             encoder_weights: str | None = None, progress: bool = True,
             executor: str | None = None, address: str | None = None,
             **executor_options) -> list[Path]:
    """Execute every run of the grid (finished runs are skipped); return their folders in the
    order of ``specs``.

    ``executor``: 'local' (sequential, in this process) or 'ray' (one Ray task per run, on the
    cluster at ``address`` or a local Ray instance; options: ``max_retries``,
    ``cpus_per_run``, ``num_cpus``, ``fault``); None: the study's (``study.executor``,
    ``study.ray_address``).
    """
    if executor is None:
        executor, address = study.executor, address or study.ray_address
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got '{executor}'")
    if executor == "ray":
        return _run_grid_ray(study, specs, overwrite, encoder_weights, address,
                             **executor_options)
    return _run_grid_local(study, specs, overwrite, encoder_weights, progress)


def _run_grid_local(study: Study, specs: list[RunSpec], overwrite: bool,
                    encoder_weights: str | None, progress: bool) -> list[Path]:
    """The runs one after the other in this process, with progress events and bars."""
    import time

    from tqdm.auto import tqdm
    plans = [planned_run(study, spec, encoder_weights) for spec in specs]
    todo = [p.spec.label for p in plans if overwrite or not p.finished]
    emit("grid", n=len(plans), to_train=len(todo), labels=todo)
    out = []
    for k, plan in enumerate(tqdm(plans, desc="runs", disable=not bars_wanted(progress)), 1):
        spec = plan.spec
        if plan.finished and not overwrite:
            emit("run_skip", k=k, label=spec.label, fold=spec.fold)
            out.append(plan.run_dir)
            continue
        emit("run_start", k=k, label=spec.label, fold=spec.fold)
        t0 = time.perf_counter()
        d = execute_run(study, spec, overwrite, encoder_weights, progress)
        m = json.loads((d / "metrics.json").read_text())
        emit("run_end", k=k, label=spec.label, fold=spec.fold,
             seconds=time.perf_counter() - t0,
             best_epoch=m["best_epoch"] if m["best_epoch"] >= 0 else None,
             val_auc=m["val"]["auc"])
        out.append(d)
    return out


def _run_grid_ray(study: Study, specs: list[RunSpec], overwrite: bool = False,
                  encoder_weights: str | None = None, address: str | None = None,
                  max_retries: int = 2, cpus_per_run: int = 1, num_cpus: int | None = None,
                  fault=None) -> list[Path]:
    """Execute the grid's runs as Ray tasks; return their folders in the order of ``specs``."""
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray: pip install 'ray[default]' (or the "
                          "project's extra: pip install -e '.[ray]')") from None

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    resources = {"num_gpus": 1, "num_cpus": cpus_per_run} if gpus else {"num_cpus": cpus_per_run}
    task = ray.remote(max_retries=max_retries, retry_exceptions=True, **resources)(_run_task)
    files = StudyFiles.of(study)
    threads = study.profile.num_threads or cpus_per_run
    out: dict[int, Path] = {}
    pending = {}
    for i, spec in enumerate(specs):
        plan = planned_run(study, spec, encoder_weights)  # images hashed once, on the driver
        if plan.finished and not overwrite:
            out[i] = plan.run_dir
            continue
        pending[task.remote(files, spec, overwrite, encoder_weights, threads, fault)] = (i, spec)
    log.info("ray: %d run(s) finished already, %d submitted", len(out), len(pending))
    emit("grid", n=len(specs), to_train=len(pending))
    failures: dict[str, str] = {}
    remaining = list(pending)
    while remaining:
        done, remaining = ray.wait(remaining, num_returns=1)
        i, spec = pending[done[0]]
        try:
            out[i] = Path(ray.get(done[0]))
            m = json.loads((out[i] / "metrics.json").read_text())
            emit("run_end", k=i + 1, label=spec.label, fold=spec.fold, seconds=m["seconds"],
                 best_epoch=m["best_epoch"], val_auc=m["val"]["auc"])
        except Exception as e:  # RayTaskError, WorkerCrashedError, ...
            first = str(e).strip().splitlines()
            failures[f"{spec.label} fold {spec.fold} seed {spec.seed}"] = (
                f"{type(e).__name__}: {first[-1] if first else ''}")
    if failures:
        raise GridError(failures, [out[i] for i in sorted(out)])
    return [out[i] for i in range(len(specs))]


def grid_summary(run_dirs: list[Path], n_boot: int = 1000, seed: int = 0) -> str:
    """A Markdown table of the grid's models: pooled out-of-fold subject AUC with its 95%
    subject-bootstrap CI, fold mean ± SD, and the runs, folds and subjects behind them."""
    from phyllodes.evaluate.comparisons import as_variant, comparison_table
    from phyllodes.train.runs import load_predictions

    preds = load_predictions(run_dirs)
    if preds["seed"].nunique() > 1:  # each seed its own row
        preds = pd.concat([as_variant(g, f"seed {s}",
                                      label=f"{g['model_label'].iloc[0]} · seed {s}")
                           for (_, s), g in preds.groupby(["model_key", "seed"], sort=False)],
                          ignore_index=True)
    t = comparison_table(preds, n_boot=n_boot, seed=seed)
    runs = preds.groupby("model_label")["run_id"].nunique()
    out = pd.DataFrame({"model": t["model_label"],
                        "pooled subject AUC [95% CI]": t["auc_pooled"],
                        "AUC fold mean ± SD": t["auc"],
                        "runs": t["model_label"].map(runs).to_numpy(),
                        "folds": t["n_folds"], "test subjects": t["n"]})
    return out.to_markdown(index=False)


def shutdown() -> None:
    import ray
    if ray.is_initialized():
        ray.shutdown()


@dataclass(frozen=True)
class DevelopmentRuns:
    """A development cohort's runs for external validation: its cross-validation (``cv``,
    whose pooled out-of-fold test predictions are ``internal``) and its final models
    (``final``, trained on every subject; ``inner_val``: their inner-validation predictions,
    where thresholds are chosen)."""

    cv: list[Path]
    final: list[Path]
    internal: pd.DataFrame
    inner_val: pd.DataFrame


def development_runs(study: Study, modality: str = "image", models: list[str] | None = None,
                     encoder_weights: str | None = None, progress: bool = True
                     ) -> DevelopmentRuns:
    """The cross-validation and the final model (:data:`~phyllodes.train.spec.FINAL_FOLD`) of
    each model (default: the profile's encoder and, for image-only, its linear probe) on
    ``study``'s own folds; finished runs are reused."""
    from phyllodes.keys import probe_name
    from phyllodes.train.runs import load_predictions
    from phyllodes.train.spec import FINAL_FOLD

    p = study.profile
    if models is None:
        models = [p.encoder] + ([probe_name(p.encoder)] if modality == "image" else [])
    cv = grid_specs([modality], {modality: models}, [p.fusion], range(p.folds), [study.seed])
    final = [RunSpec(modality, m, p.fusion if modality == "multimodal" else "concat",
                     FINAL_FOLD, study.seed) for m in models]
    dirs = run_grid(study, cv + final, encoder_weights=encoder_weights, progress=progress)
    cv_dirs, final_dirs = dirs[:len(cv)], dirs[len(cv):]
    internal = load_predictions(cv_dirs)
    inner = load_predictions(final_dirs)
    return DevelopmentRuns(cv_dirs, final_dirs, internal[internal["split"] == "test"],
                           inner[inner["split"] == "val"])
