"""Benchmark: is training bound by model compute? ``python -m phyllodes.ops.bench --help``.

On the same cached image tensor and the same model it measures

(a) the bare model: forward + backward + optimiser step on one fixed, pre-made batch
    (images/s) — the ceiling set by model compute;
(b) the full training pipeline: :meth:`phyllodes.train.trainer.Trainer.epoch` — class-aware
    sampling, slicing the uint8 cache, conversion, augmentation, the clinical branch, loss,
    schedule and bookkeeping (images/s);

and prints the overhead ratio a / b (1.00 = no overhead). With ``--stages`` it also executes
the numbered notebooks of a profile into a temporary folder and prints each one's wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from phyllodes.data.images import to_float
from phyllodes.models.network import MODALITIES
from phyllodes.profiles import PROFILES
from phyllodes.study import open_study
from phyllodes.train.spec import RunSpec, run_seed
from phyllodes.train.trainer import Trainer, fold_partition


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(profile: str = "quick", cohort: str = "breast-lesions-usg", device: str = "auto",
            modality: str = "multimodal", model: str | None = None, steps: int = 20,
            warmup: int = 3, repeats: int = 3, **overrides) -> dict:
    """Throughputs (images/s) of the bare model and of the training pipeline, and their ratio.

    Each is measured ``repeats`` times over ``steps`` batches after ``warmup`` batches; the
    best (least disturbed) repeat counts.
    """
    study = open_study(profile, cohort, device=device, **overrides)
    p = study.profile
    spec = RunSpec(modality, model or p.encoder, p.fusion, 0, 0)
    parts = fold_partition(study.cohort, study.splits, 0, p.inner_val_fraction, run_seed(spec))
    tr = Trainer(study, parts, spec)
    steps = min(steps, tr.steps_per_epoch)
    bs = tr.batch_size
    dev = study.device

    # (a) bare model on one fixed batch already in the model's input format
    b = tr.rows["train"][:bs]
    if tr.cached:  # one cached view per image, as the recipe trains
        xb = tr.batch(b)
    else:
        xb = to_float(tr.x_img[b]) if tr.uses_images else None
    tr.model.train()

    def bare() -> float:
        for _ in range(warmup):
            tr.step(xb, b)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.step(xb, b)
        _sync(dev)
        return steps * bs / (time.perf_counter() - t0)

    def pipeline() -> float:
        tr.epoch(max_steps=warmup)
        _sync(dev)
        t0 = time.perf_counter()
        tr.epoch(max_steps=steps)
        _sync(dev)
        return steps * bs / (time.perf_counter() - t0)

    a_runs, b_runs = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        a_runs.append(bare())
        b_runs.append(pipeline())
    a, pipe = max(a_runs), max(b_runs)
    return {"profile": p.name, "device": dev, "modality": modality, "model": spec.model,
            "image_size": p.image_size, "batch_size": bs, "steps": steps,
            "freeze_fraction": p.freeze_fraction, "cached_views": tr.cached,
            "precision": str(tr.amp or "fp32"),
            "bare_model_images_per_s": round(a, 2), "pipeline_images_per_s": round(pipe, 2),
            "overhead_ratio": round(a / pipe, 3),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads"
                       + (f", {torch.cuda.get_device_name()}" if dev.startswith("cuda") else "")}


def stage_times(profile: str, cohort: str, device: str, only: list[str] | None = None,
                output: str | None = None) -> list[dict]:
    """Wall time of each numbered notebook of a profile (in a temporary output folder)."""
    from phyllodes.ops.runner import run_notebooks
    with tempfile.TemporaryDirectory() as tmp:
        return run_notebooks(profile, cohort, device, 0, output or tmp, only=only)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m phyllodes.ops.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    ap.add_argument("--cohort", default="breast-lesions-usg")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--modality", default="multimodal",
                    choices=[m for m in MODALITIES if m != "clinical"])
    ap.add_argument("--model", default=None, help="encoder (default: the profile's)")
    ap.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                    help="training precision (default: the profile's); compare fp32 and bf16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", action="store_true", help="also time every notebook")
    ap.add_argument("--only", default="", help="with --stages: notebook numbers, e.g. 01,02")
    ap.add_argument("--json", default="", help="write the results to this file too")
    ap.add_argument("--set", dest="settings", action="append", default=[],
                    metavar="NAME=VALUE", help="a profile setting (repeatable)")
    ap.add_argument("--output", default="", help="output root of the study's folds (default: "
                    "the repository; --stages always runs into a temporary folder)")
    args = ap.parse_args(argv)
    from phyllodes.profiles import parse_settings
    r = measure(args.profile, args.cohort, args.device, args.modality, args.model, args.steps,
                repeats=args.repeats, precision=args.precision, output_dir=args.output,
                **parse_settings(args.settings))
    print(f"profile {r['profile']} · {r['model']} · {r['image_size']} px · batch "
          f"{r['batch_size']} · {r['device']} ({r['machine']})")
    print(f"(a) bare model (forward+backward+step): {r['bare_model_images_per_s']:8.1f} images/s")
    print(f"(b) full training pipeline:             {r['pipeline_images_per_s']:8.1f} images/s")
    print(f"overhead ratio a/b: {r['overhead_ratio']:.3f}")
    if args.stages:
        r["stages"] = stage_times(args.profile, args.cohort, args.device,
                                  args.only.split(",") if args.only else None)
        for s in r["stages"]:
            print(f"stage {s['notebook']:<34} {s['seconds']:8.1f} s")
        print(f"stages total {sum(s['seconds'] for s in r['stages']):.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
