"""The Ray executor: same predictions as local, retries, and nothing lost when a worker dies."""

from __future__ import annotations

import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="the Ray executor is optional: pip install -e '.[ray]'")

from phyllodes.study import open_study  # noqa: E402
from phyllodes.train.grid import FailOnce, GridError, grid_specs, run_grid, shutdown  # noqa: E402
from phyllodes.train.runs import load_predictions  # noqa: E402

SPECS = grid_specs(["clinical", "image", "multimodal"],
                   {"clinical": ["mlp"], "image": ["resnet10t"], "multimodal": ["resnet10t"]},
                   ["concat"], [0, 1], [0])


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import torch
    threads = torch.get_num_threads()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    shutdown()
    torch.set_num_threads(threads)  # the local runs here trained with one thread


def _study(cohort_dir, out):
    # one torch thread in both executors, so floating-point reductions run in the same order
    return open_study("smoke", cohort_dir, device="cpu", seed=0, output_dir=str(out),
                      image_size=32, num_threads=1)


def test_ray_grid_gives_the_same_predictions_as_local(synthetic_cohort_dir, tmp_path,
                                                      monkeypatch):
    local = load_predictions(run_grid(_study(synthetic_cohort_dir, tmp_path / "local"), SPECS,
                                      progress=False))
    dirs = run_grid(_study(synthetic_cohort_dir, tmp_path / "ray"), SPECS, executor="ray")
    assert all(str(d).startswith(str(tmp_path / "ray")) for d in dirs)
    remote = load_predictions(dirs)
    pd.testing.assert_frame_equal(local, remote)


def test_a_run_that_raises_once_is_retried(synthetic_cohort_dir, tmp_path, monkeypatch):
    study = _study(synthetic_cohort_dir, tmp_path / "out")
    marker = tmp_path / "raised"
    fault = FailOnce(SPECS[2].label, SPECS[2].fold, str(marker), mode="raise")
    dirs = run_grid(study, SPECS, executor="ray", max_retries=1, fault=fault)
    assert marker.exists()  # the failure happened ...
    assert len(dirs) == len(SPECS) and all((d / "metrics.json").exists() for d in dirs)


def test_killed_worker_loses_no_finished_run_and_resubmission_completes(
        synthetic_cohort_dir, tmp_path, monkeypatch):
    study = _study(synthetic_cohort_dir, tmp_path / "out")
    victim = SPECS[3]
    fault = FailOnce(victim.label, victim.fold, str(tmp_path / "killed"), mode="kill")
    with pytest.raises(GridError) as ei:
        run_grid(study, SPECS, executor="ray", max_retries=0, fault=fault)
    assert list(ei.value.failures) == [f"{victim.label} fold {victim.fold} seed 0"]
    finished = ei.value.finished
    assert len(finished) == len(SPECS) - 1
    mtimes = {d: (d / "metrics.json").stat().st_mtime_ns for d in finished}
    dirs = run_grid(study, SPECS, executor="ray")  # resubmit: only the killed run is redone
    assert len(dirs) == len(SPECS) and all((d / "metrics.json").exists() for d in dirs)
    for d, t in mtimes.items():
        assert (d / "metrics.json").stat().st_mtime_ns == t
    runs = [p for p in study.runs_dir.iterdir() if not p.name.endswith(".partial")]
    assert len(runs) == len(SPECS)


def test_a_killed_worker_is_retried_by_ray(synthetic_cohort_dir, tmp_path, monkeypatch):
    study = _study(synthetic_cohort_dir, tmp_path / "out")
    fault = FailOnce(SPECS[4].label, SPECS[4].fold, str(tmp_path / "killed"), mode="kill")
    dirs = run_grid(study, SPECS, executor="ray", max_retries=1, fault=fault)
    assert (tmp_path / "killed").exists() and len(dirs) == len(SPECS)
