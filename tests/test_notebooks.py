"""Notebooks are stored clean, with one parameters cell, and run end to end (smoke profile)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from phyllodes import paths
from phyllodes.runner import numbered_notebooks, run_notebooks

sys.path.insert(0, str(paths.ROOT / "scripts"))
from nbtools import check_notebook  # noqa: E402

NOTEBOOKS = numbered_notebooks()


def test_expected_notebooks_exist():
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names[0] == "01" and names == sorted(names)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_with_one_parameters_cell(nb):
    assert check_notebook(nb) == []


def test_structure_check_can_fail(tmp_path):
    import nbformat
    nb = nbformat.read(str(NOTEBOOKS[0]), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="x")]
    nb.cells[3].metadata["tags"] = ["parameters"]
    p = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(p))
    problems = check_notebook(p)
    assert any("2 cells tagged" in q for q in problems)
    assert any("outputs" in q for q in problems)


def _record(out: Path, cohort: str, name: str) -> dict:
    return json.loads((out / "results" / cohort / f"{name}.json").read_text())


@pytest.mark.slow
def test_notebook01_smoke_on_bundled_cohort(tmp_path):
    out = tmp_path / "out"
    done = run_notebooks("smoke", "breast-lesions-usg", "cpu", 0, out, only=["01"])
    assert [d["notebook"] for d in done] == ["01_data_curation.ipynb"]
    rec = _record(out, "breast-lesions-usg", "nb01_data_curation")
    assert rec["n_subjects"] == 252 and rec["n_positive_subjects"] == 98
    assert rec["n_excluded_rows"] == 4 and rec["folds"] == 2
    assert sum(rec["fold_sizes"]) == 252 and abs(rec["fold_positives"][0] - 49) <= 1
    t1 = pd.read_csv(out / "tables" / "breast-lesions-usg" / "table1_cohort.csv")
    age = t1[(t1["characteristic"] == "age") & (t1["level"] == "mean ± SD")].iloc[0]
    assert age["p_value"] == "<0.001"  # malignant patients are older (Mann-Whitney U)
    for ext in ("csv", "md", "tex"):
        assert (out / "tables" / "breast-lesions-usg" / f"table1_cohort.{ext}").stat().st_size > 500
    for ext in ("png", "pdf"):
        assert (out / "figures" / "breast-lesions-usg" / f"fig1_examples.{ext}").stat().st_size > 5000
    assert (out / "executed" / "smoke" / "01_data_curation.ipynb").exists()
    splits = pd.read_csv(out / "tables" / "breast-lesions-usg" / "splits_2fold_seed0.csv")
    assert len(splits) == 252 and splits["subject_id"].is_unique


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_naming_notebook_and_cell(tmp_path):
    from phyllodes.runner import NotebookFailed
    with pytest.raises(NotebookFailed, match=r"01_data_curation.ipynb failed in cell \d+.*"
                                             r"FileNotFoundError: cohort 'no-such-cohort'"):
        run_notebooks("smoke", "no-such-cohort", "cpu", 0, tmp_path / "out", only=["01"])
