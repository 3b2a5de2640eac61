"""./run_all.sh --check: committed tables against regenerated ones, with a readable diff."""

from __future__ import annotations

import shutil

import pandas as pd

from phyllodes import paths
from phyllodes.ops.check import compare_tables

COMMITTED = paths.ROOT / "tables" / "breast-lesions-usg"


def _copy(tmp_path):
    dst = tmp_path / "fresh"
    shutil.copytree(COMMITTED, dst)
    return dst


def test_identical_tables_pass(tmp_path):
    assert compare_tables(COMMITTED, _copy(tmp_path)) == []


def test_an_edited_number_is_named_with_table_row_and_column(tmp_path):
    fresh = _copy(tmp_path)
    csv = sorted(fresh.glob("table*.csv"))[0]
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    col = df.columns[1]
    old = df.at[0, col]
    df.at[0, col] = old + "9" if old else "1"
    df.to_csv(csv, index=False)
    diffs = compare_tables(COMMITTED, fresh)
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.table, d.column, d.committed) == (csv.name, f"column '{col}'", old)
    assert "row 1" in d.row and str(d).startswith(f"{csv.name}: row 1")


def test_numbers_within_the_tolerance_are_equal(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    pd.DataFrame({"m": ["x", "y"], "v": [0.1234567, 2.0]}).to_csv(a / "t.csv", index=False)
    pd.DataFrame({"m": ["x", "y"], "v": [0.1234567 + 5e-7, 2.0 + 2e-6]}).to_csv(b / "t.csv",
                                                                            index=False)
    diffs = compare_tables(a, b)
    assert [(d.row, d.column) for d in diffs] == [("row 2 (m = y)", "column 'v'")]


def test_missing_extra_and_reshaped_tables(tmp_path):
    fresh = _copy(tmp_path)
    gone = sorted(fresh.glob("table*.md"))[0]
    gone.unlink()
    (fresh / "table99_new.csv").write_text("a\n1\n")
    first = sorted(fresh.glob("table*.csv"))[0]
    df = pd.read_csv(first, dtype=str, keep_default_na=False)
    df.iloc[:-1].to_csv(first, index=False)
    text = "\n".join(str(d) for d in compare_tables(COMMITTED, fresh))
    assert f"{gone.name}: committed present vs regenerated missing" in text
    assert "table99_new.csv: committed missing (not committed) vs regenerated present" in text
    assert f"{first.name}: rows: committed {len(df)} rows vs regenerated {len(df) - 1} rows" \
        in text


def test_every_built_by_entry_names_a_function_of_the_package():
    """The README map's "built by" column cannot name a function that was renamed away."""
    import importlib

    from phyllodes.report.artifacts import ARTIFACTS
    names = [b for a in ARTIFACTS for b in a.built_by]
    assert len(names) >= len(ARTIFACTS)
    for qualified in names:
        module, func = qualified.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(f"phyllodes.{module}"), func)), qualified


def test_readme_results_are_generated_from_the_committed_tables(tmp_path):
    """The README's generated sections equal what the committed tables give; an edited table
    number makes its section stale."""
    import shutil

    from phyllodes.report import readme
    assert readme.stale_sections() == []
    copy = tmp_path / "README.md"
    shutil.copy(readme.README, copy)
    text = copy.read_text()
    start = text.index("<!-- results:start -->") if "<!-- results:start -->" in text else None
    assert start is not None, "README.md lost its generated results section"
    copy.write_text(text[:start] + text[start:].replace("0.", "9.", 1))
    assert "results" in readme.stale_sections(copy)


def _machine(folder, stems, vendor: str | None = None, kernels: str = "pinned-avx2") -> dict:
    """Record ``stems`` in ``folder/machine.json`` as made by this machine with another vendor
    (None: this one) or other kernels."""
    import json

    from phyllodes import kernels as k
    here = k.record()
    rec = {**here, "machine": {**here["machine"], "vendor": vendor or here["machine"]["vendor"]},
           "kernels": kernels}
    (folder / "machine.json").write_text(json.dumps({s: rec for s in stems}))
    return rec


def test_the_check_knows_which_machine_made_each_table(tmp_path):
    from phyllodes.ops.check import machine_note, made_elsewhere
    assert made_elsewhere(tmp_path) == {} and "no record" in machine_note(tmp_path)
    _machine(tmp_path, ["t1", "t2"])
    assert made_elsewhere(tmp_path) == {}
    _machine(tmp_path, ["t1"], vendor="OtherVendor")
    assert set(made_elsewhere(tmp_path)) == {"t1"}
    note = machine_note(tmp_path)
    assert "1 committed table(s) were made on another kind" in note and "OtherVendor" in note
    _machine(tmp_path, ["t2"], kernels="native")  # other kernels: another kind too
    assert set(made_elsewhere(tmp_path)) == {"t2"}


def test_writing_a_table_records_the_machine_that_made_it(tmp_path):
    import json

    from phyllodes import kernels
    from phyllodes.report.tables import write_machine
    write_machine(tmp_path, "table_a")
    write_machine(tmp_path, "table_b")
    made = json.loads((tmp_path / "machine.json").read_text())
    assert made == {"table_a": kernels.record(), "table_b": kernels.record()}


def test_across_machines_numbers_inside_text_are_compared_at_the_tolerance(tmp_path):
    from phyllodes.ops.check import compare_tables, largest_difference
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    pd.DataFrame({"model": ["x", "y", "z"], "auc": ["0.912 [0.871, 0.948]", "p < 0.001", "0.5"],
                  "n": [67, 10, 3], "reading": ["no better than a random map"] * 3}
                 ).to_csv(a / "t.csv", index=False)
    pd.DataFrame({"model": ["x", "y", "z"], "auc": ["0.915 [0.866, 0.950]", "p < 0.001", "0.51"],
                  "n": [68, 10, 3], "reading": ["no better than a random map"] * 2
                  + ["worse than a random map"]}).to_csv(b / "t.csv", index=False)
    assert len(compare_tables(a, b)) == 4             # exact: every cell that moved
    found = compare_tables(a, b, elsewhere=frozenset({"t"}))
    # the numbers held; row 3's verdict moved with them (its bound on the threshold): a note
    assert [(d.row, d.kind) for d in found] == [("row 3 (model = z)", "verdict")]
    worst = largest_difference(a, b)
    assert worst.column == "column 'n'" and (worst.committed, worst.regenerated) == ("67", "68")
    # other words beside numbers, or a number beyond the tolerance, are still differences
    pd.DataFrame({"model": ["x", "y", "z"], "auc": ["0.812 [0.771, 0.848]", "p = 0.001", "0.5"],
                  "n": [67, 10, 3], "reading": ["worse than a random map"] * 3}
                 ).to_csv(b / "t.csv", index=False)
    found = compare_tables(a, b, elsewhere=frozenset({"t"}))
    assert [(d.row, d.column, d.kind) for d in found] == [
        ("row 1 (model = x)", "column 'auc'", "difference"),
        ("row 1 (model = x)", "column 'reading'", "difference"),
        ("row 2 (model = y)", "column 'auc'", "difference"),
        ("row 2 (model = y)", "column 'reading'", "difference"),
        ("row 3 (model = z)", "column 'reading'", "verdict")]


def test_the_check_of_tables_from_another_machine_passes_within_its_tolerance(tmp_path,
                                                                              capsys):
    import re
    from unittest import mock

    from phyllodes.ops import check
    fresh = _copy(tmp_path)
    committed = tmp_path / "root" / "tables" / "breast-lesions-usg"
    shutil.copytree(COMMITTED, committed)
    stem = "table3_modality_comparison"
    _machine(committed, [stem], vendor="OtherVendor")
    csv = committed / f"{stem}.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    col = "AUC (pooled, 95% CI)"  # "0.776 [0.719, 0.828]": every number moved

    def shift(by: float) -> list[str]:
        return [re.sub(r"\d\.\d+", lambda m: f"{float(m.group()) + by:.3f}", v)
                for v in pd.read_csv(COMMITTED / csv.name, dtype=str)[col]]
    df[col] = shift(0.004)
    df.to_csv(csv, index=False)
    with mock.patch.object(check.paths, "ROOT", tmp_path / "root"), \
            mock.patch("phyllodes.report.readme.stale_sections", return_value=[]):
        assert check.main(["--regenerated", str(fresh)]) == 0
        out = capsys.readouterr().out
        assert "1 committed table(s) were made on another kind" in out
        assert f"largest difference in the tables made elsewhere: {stem}.csv" in out
        df[col] = shift(0.1)
        df.to_csv(csv, index=False)
        assert check.main(["--regenerated", str(fresh)]) == 1
        # the same table recorded as made here is compared exactly: 0.004 is a difference
        df[col] = shift(0.004)
        df.to_csv(csv, index=False)
        _machine(committed, [stem])
        assert check.main(["--regenerated", str(fresh)]) == 1
