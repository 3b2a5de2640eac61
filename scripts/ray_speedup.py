"""Measure the Ray executor's speed-up over the local one on a smoke-size grid.

    .venv/bin/python scripts/ray_speedup.py [--cpus 2]

Both executors run the same grid (clinical MLP, image-only and multimodal ResNet10t, 2 folds,
bundled cohort, smoke profile) from empty output folders; local uses all torch threads in one
process, Ray one task per run with one thread each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from phyllodes.study import open_study
from phyllodes.train.grid import grid_specs, run_grid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()
    specs = grid_specs(["clinical", "image", "multimodal"],
                       {"clinical": ["mlp"], "image": ["resnet10t"], "multimodal": ["resnet10t"]},
                       ["concat", "late", "gated"], [0, 1], [0])
    times = {}
    for executor in ("local", "ray"):
        with tempfile.TemporaryDirectory() as out:
            study = open_study("smoke", "breast-lesions-usg", device="cpu", output_dir=out)
            if executor == "ray":
                import ray
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
                # start the workers (and their imports) before the clock starts
                warm = ray.remote(lambda: __import__("phyllodes.train.trainer") and 0)
                ray.get([warm.remote() for _ in range(args.cpus)])
            t0 = time.perf_counter()
            run_grid(study, specs, executor=executor, progress=False)
            times[executor] = time.perf_counter() - t0
    print(f"{len(specs)} runs: local {times['local']:.1f} s, ray ({args.cpus} CPUs) "
          f"{times['ray']:.1f} s, speed-up {times['local'] / times['ray']:.2f}x")


if __name__ == "__main__":
    main()
