"""The HTML report reads like the paper's results: tables formatted for people, sections in the
paper's order, a narrative whose numbers are the tables', true provenance; and it renders in a
real browser without horizontal scrolling."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phyllodes import paths
from phyllodes.report import format as report_format
from phyllodes.report import html as report_html

format_number, format_p = report_format.format_number, report_format.format_p
format_table, human_column = report_format.format_table, report_format.human_column
is_p_column = report_format.is_p_column

COHORT = "breast-lesions-usg"
TABLES = paths.ROOT / "tables" / COHORT
FIGURES = paths.ROOT / "figures" / COHORT


# --------------------------------------------------------------------------- format.py


def test_format_number():
    assert format_number(0.8651063498542275) == "0.865"
    assert format_number("0.8651063498542275") == "0.865"
    assert format_number(0.05) == "0.050"
    assert format_number(252) == "252" and format_number("252") == "252"
    assert format_number(np.int64(5)) == "5"
    assert format_number(-0.0323) == "-0.032"
    assert format_number(float("nan")) == "" and format_number(None) == ""
    assert format_number("") == "" and format_number(pd.NA) == ""
    assert format_number(4.17e-06) == "4.2e-06"  # not a misleading 0.000
    # strings that are not plain numbers (CIs, mean ± SD, labels) are kept as they are
    for s in ("0.901 [0.864, 0.934]", "0.799 ± 0.077", "clinical · mlp", "154 (61.1%)"):
        assert format_number(s) == s


def test_format_p():
    assert format_p(0.020899) == "p = 0.021"
    assert format_p(0.0004) == "p < 0.001"
    assert format_p(4.166098535687728e-06) == "p < 0.001"
    assert format_p("0.4084394548604897") == "p = 0.408"
    assert format_p("<0.001") == "p < 0.001"  # as table 1's builder writes it
    assert format_p(1.0) == "p = 1.000"
    assert format_p(float("nan")) == "" and format_p("") == "" and format_p(None) == ""


def test_p_columns_and_column_names():
    for name in ("delong_p", "bootstrap_p", "p_value", "DeLong p", "p"):
        assert is_p_column(name), name
    for name in ("paper AUC", "ppv (pooled, 95% CI)", "specificity", "prevalence", "positive"):
        assert not is_p_column(name), name
    assert human_column("n_subjects") == "n subjects"
    assert human_column("delong_p") == "DeLong p"
    assert human_column("p_value") == "p-value"
    assert human_column("auc (pooled, 95% CI)") == "AUC (pooled, 95% CI)"
    assert human_column("balanced_accuracy (fold mean ± SD)") == \
        "balanced accuracy (fold mean ± SD)"


def test_format_table_of_a_committed_table():
    df = pd.read_csv(TABLES / "table3b_modality_tests.csv", dtype=str, keep_default_na=False)
    shown = format_table(df)
    assert list(shown.columns) == ["comparison", "AUC reference", "AUC other", "AUC difference",
                                   "DeLong CI", "DeLong p", "bootstrap CI", "bootstrap p",
                                   "n subjects"]
    assert shown.shape == df.shape
    assert all(isinstance(v, str) for v in shown.to_numpy().ravel())
    assert shown.iloc[0]["AUC reference"] == f"{float(df.iloc[0, 1]):.3f}"
    assert shown.iloc[0]["DeLong p"] == "p < 0.001"
    assert shown.iloc[0]["DeLong CI"] == df.iloc[0]["delong_ci"]  # the CI string is kept
    assert shown.iloc[0]["n subjects"] == "252"
    # numeric frames too, with missing values as empty cells
    num = format_table(pd.DataFrame({"auc": [0.8651063498542275, math.nan], "p_value": [
        0.020899, 0.0004], "n": [252, 98]}))
    assert num.to_dict("list") == {"AUC": ["0.865", ""], "p-value": ["p = 0.021", "p < 0.001"],
                                   "n": ["252", "98"]}


def test_write_table_md_for_people_csv_full_precision(tmp_path):
    from types import SimpleNamespace

    from phyllodes.report.tables import write_table
    df = pd.DataFrame({"model": ["a", "b"], "auc_reference": [0.8651063498542275, 0.5],
                       "delong_p": [0.020899, 0.0004], "n_subjects": [252, 252]})
    with pytest.raises(ValueError, match=r"columns \['_raw'\] start with '_'"):
        write_table(df.assign(_raw=[1, 2]), SimpleNamespace(tables_dir=tmp_path), "t")
    out = write_table(df, SimpleNamespace(tables_dir=tmp_path), "t", caption="A caption")
    csv = pd.read_csv(out["csv"])
    assert list(csv.columns) == ["model", "auc_reference", "delong_p", "n_subjects"]
    assert csv["auc_reference"].tolist() == [0.8651063498542275, 0.5]  # full precision
    assert csv["delong_p"].tolist() == [0.020899, 0.0004]
    md = out["md"].read_text()
    assert md.startswith("**A caption**\n\n")
    assert "AUC reference" in md and "DeLong p" in md and "n subjects" in md
    assert "0.865" in md and "0.500" in md and "p = 0.021" in md and "p < 0.001" in md
    assert "0.8651" not in md


# --------------------------------------------------------------------------- the page


def _copy_outputs(root: Path) -> None:
    shutil.copytree(TABLES, root / "tables" / COHORT)
    shutil.copytree(FIGURES, root / "figures" / COHORT)


def _section_ids(page: str) -> list[str]:
    return re.findall(r'<section class="paper" id="([^"]+)"', page)


def test_sections_follow_the_paper_and_the_appendix_closes(tmp_path):
    _copy_outputs(tmp_path)
    page = report_html.build_report(tmp_path, COHORT).read_text()
    assert _section_ids(page) == ["cohort", "single-modalities", "multimodal", "encoders",
                                  "calibration", "explanations", "recipe",
                                  "external-validation", "model-card"]
    # every artifact file is linked, relative to the output root
    from phyllodes.report.artifacts import ARTIFACTS
    for a in ARTIFACTS:
        for f in a.files(COHORT):
            assert f'href="../../{f}"' in page, f
    # the results come first, the artifact map last
    assert page.index('id="results"') < page.index('id="cohort"') < page.index('id="appendix"')
    assert page.index("Paper artifact → notebook → files") > page.index('id="recipe"')
    # figures inline (not thumbnails), tables formatted for people, long tables folded
    assert 'class="thumb"' not in page and "<figure" in page
    assert re.search(r"p = 0\.\d{3}<", page) and "p &lt; 0.001" in page and "DeLong p" in page
    assert "0.8651603498542275" not in page
    assert "<details><summary>show all 85 rows</summary>" in page  # table 1
    assert str(tmp_path) not in page
    # the model card, generated from the tables, closes the paper's sections
    card = (tmp_path / "report" / COHORT / "model_card.md").read_text()
    assert "TRIPOD+AI checklist" in card and "Intended use" in page
    t3 = pd.read_csv(tmp_path / "tables" / COHORT / "table3_modality_comparison.csv")
    assert t3["AUC (pooled, 95% CI)"].iloc[0] in card


def test_narrative_for_the_bundled_cohort_and_a_note_for_others(tmp_path):
    _copy_outputs(tmp_path)
    page = report_html.build_report(tmp_path, COHORT).read_text()
    narrative = re.search(r'<ul class="narrative">(.*?)</ul>', page, re.S).group(1)
    assert narrative.count("<li>") >= 5 and "<strong>" in narrative
    assert 'href="#table3_modality_comparison"' in narrative
    other = tmp_path / "other"
    (other / "tables" / "some-cohort").mkdir(parents=True)
    shutil.copy(TABLES / "table1_cohort.csv", other / "tables" / "some-cohort")
    page = report_html.build_report(other, "some-cohort").read_text()
    assert "No generated narrative for this cohort" in page
    # a missing table of the bundled cohort does not break the report
    (tmp_path / "tables" / COHORT / "table7_modality_share.csv").unlink()
    page = report_html.build_report(tmp_path, COHORT).read_text()
    assert "could not be generated" in page and 'id="recipe"' in page


def test_provenance_of_committed_tables_is_their_last_commit():
    line = subprocess.run(["git", "log", "-1", "--format=%H%x09%cI", "--", f"tables/{COHORT}"],
                          cwd=paths.ROOT, capture_output=True, text=True).stdout.strip()
    if not line:
        pytest.skip("the repository's tables are not in a git checkout here")
    commit, when = line.split("\t")
    rows = dict(report_html.provenance_rows(paths.ROOT, COHORT)) if not list(
        (paths.ROOT / "results" / COHORT).glob("nb*_*.json")) else None
    if rows is None:
        pytest.skip("this checkout has notebook records: they are the provenance")
    assert rows["tables commit"].startswith(commit) and rows["tables committed"] == when
    assert "no notebook record found" not in json.dumps(rows)


def test_provenance_from_the_notebook_records(tmp_path):
    folder = tmp_path / "results" / COHORT
    folder.mkdir(parents=True)
    prov = {"profile": {"name": "quick", "image_size": 224, "folds": 5}, "seed": 0,
            "device": "cuda", "cohort": COHORT, "recipe_version": 3,
            "code": {"commit": "abc123", "dirty": False}, "environment": {"torch": "2.4"}}
    (folder / "nb01_data_curation.json").write_text(json.dumps({"provenance": prov}))
    (folder / "nb03_multimodal_training.json").write_text(json.dumps(
        {"provenance": {**prov, "seed": 1}}))
    rows = dict(report_html.provenance_rows(tmp_path, COHORT))
    assert rows["commit"] == "abc123" and rows["profile"] == "quick"
    assert rows["seed"] == "0 (nb01); 1 (nb03)"
    assert rows["outputs written"] and "2 notebook record(s)" in rows["source"]
    # no record and no git: unknown, said so
    rows = dict(report_html.provenance_rows(tmp_path / "nothing", COHORT))
    assert "unknown" in rows["source"]


# --------------------------------------------------------------------------- in a browser


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")


def _chromium(browser: str, profile: Path, width: int, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},1600",
             "--virtual-time-budget=10000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True,
                          timeout=180)


@pytest.mark.skipif(_browser() is None, reason="no chromium, chromium-browser or "
                    "google-chrome on PATH (Debian: apt-get install chromium)")
def test_report_in_headless_chromium_at_1280_and_800_px(tmp_path):
    """The committed bundled outputs' report: no horizontal scrolling of the page at 1280 and
    800 px, every image loads, the sections in the paper's order, and the narrative's first
    AUC is the table's."""
    browser = _browser()
    here = tmp_path / "report" / COHORT
    # the repository as output root (so the provenance is the tables' commit), the pages in
    # the temporary folder
    index = report_html.build_report(paths.ROOT, COHORT, report_dir=here)
    page = index.read_text()
    expected = _section_ids(page)
    assert expected[:3] == ["cohort", "single-modalities", "multimodal"]
    for width in (1280, 800):
        shot = here / f"screenshot-{width}.png"
        _chromium(browser, tmp_path / f"p-shot-{width}", width, f"--screenshot={shot}",
                  index.as_uri())
        assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot at {width} px"
        dom = _chromium(browser, tmp_path / f"p-dom-{width}", width, "--dump-dom",
                        index.as_uri()).stdout
        body = re.search(r"<body[^>]*>", dom).group(0)
        data = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
        assert int(data["images"]) >= 10 and int(data["broken"]) == 0, body
        assert int(data["inner-width"]) == width, body
        assert int(data["scroll-width"]) <= int(data["inner-width"]), \
            f"the page scrolls horizontally at {width} px: {body}"
        assert data["sections"].split() == expected, body
        narrative = re.search(r'<ul class="narrative">(.*?)</ul>', dom, re.S).group(1)
        first_auc = re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", narrative).group(0)
        t3 = pd.read_csv(TABLES / "table3_modality_comparison.csv", dtype=str)
        assert first_auc in set(t3["AUC (pooled, 95% CI)"]), first_auc
        # every number of the narrative, as the browser shows it, is one of the tables'
        shown = re.sub(r"<[^>]+>", "", narrative).replace("\u2212", "-")
        numbers = re.findall(r"(?<![\d.])-?\d+\.\d{3}(?!\d)", shown)
        tables_text = "\n".join(p.read_text() for p in TABLES.glob("*.md"))
        assert len(numbers) >= 20
        missing = [n for n in numbers if n not in tables_text and n.lstrip("-") not in
                   tables_text]
        assert not missing, f"narrative numbers in no table: {missing}"
    assert (here / "screenshot-1280.png").exists() and (here / "screenshot-800.png").exists()
    # the print view: a PDF of several pages, as a person would attach it
    pdf = here / "report.pdf"
    _chromium(browser, tmp_path / "p-pdf", 1280, f"--print-to-pdf={pdf}",
              "--no-pdf-header-footer", index.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 100_000
    assert len(re.findall(rb"/Type\s*/Page(?!s)", data)) >= 5
