"""The benchmark reports both throughputs and their ratio (no timing thresholds here)."""

from __future__ import annotations

import json

import pytest

from phyllodes.ops import bench


def test_benchmark_reports_throughputs_and_ratio(output_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--profile", "smoke", "--device", "cpu", "--steps", "3",
                       "--repeats", "1", "--json", str(out), "--output", str(output_root)]) == 0
    printed = capsys.readouterr().out
    assert "(a) bare model" in printed and "(b) full training pipeline" in printed
    assert "overhead ratio a/b" in printed
    r = json.loads(out.read_text())
    a, b = r["bare_model_images_per_s"], r["pipeline_images_per_s"]
    assert a > 0 and b > 0
    assert r["overhead_ratio"] == pytest.approx(a / b, rel=1e-2)
    assert r["batch_size"] == 16 and r["steps"] == 3 and r["image_size"] == 64


def test_stage_times_are_reported(output_root, capsys):
    assert bench.main(["--profile", "smoke", "--device", "cpu", "--steps", "2",
                       "--repeats", "1", "--stages", "--only", "01",
                       "--output", str(output_root)]) == 0
    printed = capsys.readouterr().out
    assert "stage 01_data_curation.ipynb" in printed and "stages total" in printed
