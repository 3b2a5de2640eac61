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
    from phyllodes.report.artifacts import ARTIFACTS, builder
    names = [b for a in ARTIFACTS for b in a.built_by]
    assert len(names) >= len(ARTIFACTS)
    for qualified in names:
        assert callable(builder(qualified)), qualified


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
