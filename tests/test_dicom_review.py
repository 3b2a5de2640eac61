"""phyllodes.data.sources.dicom: what a hospital export slips past the import, by class (#25):
what libraries print, free-text columns proposed as categories, names spelt otherwise,
regions taking in the text band or lying partly outside the image, and the spreadsheet's
duplicate rows and patients without an image."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

sys.path.insert(0, str(Path(__file__).parent))
import dicom_fixtures as fx  # noqa: E402

from phyllodes.data.sources import dicom  # noqa: E402

P1, P2, P3 = fx.PATIENTS["p1"], fx.PATIENTS["p2"], fx.PATIENTS["p3"]


def _file(root: Path, p: fx.Patient, name: str, box=fx.REGION, seed: int = 0,
          uid: str | None = None) -> Path:
    """One frame of ``p`` with the region ``box`` (the text burned outside fx.REGION)."""
    img = fx.frame_with_scan(np.random.default_rng(seed), p)
    ds = fx.base_dataset(p)
    ds.BurnedInAnnotation = "YES"
    ds.SequenceOfUltrasoundRegions = [fx.region_item(box=box)]
    if uid is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns here too: the test is the import
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    fx.set_mono(ds, img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.save(ds, fx.folder(root, p) / name)


def _sheet(folder: Path, extra: list[dict] | None = None, **columns) -> tuple[Path, Path]:
    sheet, mapping = fx.write_clinical(folder)
    t = fx.clinical_table()
    for k, v in columns.items():
        t[k] = v
    if extra:
        import pandas as pd
        t = pd.concat([t, pd.DataFrame(extra)], ignore_index=True)
    t.to_csv(sheet, index=False)
    return sheet, mapping


def _run(tmp_path: Path, export: Path, sheet: Path, mapping: Path, **kw):
    return dicom.import_dicom(export, sheet, tmp_path / "cohorts" / "c", mapping=mapping,
                              key_file=tmp_path / "private" / "c.key", **kw)


def _details(report) -> dict:
    return json.loads(report.details_path.read_text())


# --- what the libraries print ---------------------------------------------------------------


def test_nothing_printed_by_the_import_or_its_libraries_carries_a_header_value(
        tmp_path, capfd, caplog):
    """pydicom warns about a non-conformant UID, quoting it; the UID here is built from the
    MRN and the exam date. Everything printed (stdout, stderr at the file descriptors, every
    logger, Python warnings) is searched for every planted identifier."""
    uid = "1.2.840.0" + P1.mrn[-7:] + "." + P1.study + ".01"
    export = tmp_path / "export"
    _file(export, P1, "IM1.dcm", uid=uid)
    _file(export, P2, "IM2.dcm", seed=1)
    sheet, mapping = _sheet(tmp_path / "clinical")
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # pydicom also logged its warning when the fixture wrote the file
    capfd.readouterr()
    assert dicom.main(["--source", str(export), "--clinical", str(sheet), "--mapping",
                       str(mapping), "--out", str(tmp_path / "cohorts" / "c"), "--key-file",
                       str(tmp_path / "private" / "c.key")]) == 0
    captured = capfd.readouterr()
    printed = captured.out + captured.err + caplog.text
    # the library did speak (else this test could not fail), and was held and scrubbed
    assert "pydicom" in printed and "the libraries printed" in printed
    assert "<uid>" in printed or "<value>" in printed
    needles = fx.all_phi() | {uid, P1.mrn[-7:], P1.study}
    found = sorted(n for n in needles if n.casefold() in printed.casefold())
    assert found == []
    assert "imported 2 image(s) of 2 subject(s)" in captured.out


def test_the_scrubber_replaces_identifiers_uids_numbers_and_quoted_values():
    phi = dicom.Identifiers({"MRN-7730012"})
    dicom.add_person_name(phi, "Zyxwört^Quilla")
    s = dicom.Scrubber(phi)
    text = s("Invalid value 'ZYXWORT' for 1.2.840.07730012.20190314 of MRN-7730012 "
             "(zyxwoert, 20190314)", library=True)
    for bad in ("ZYXWORT", "zyxwoert", "07730012", "7730012", "20190314"):
        assert bad.casefold() not in text.casefold()
    assert "<uid>" in text and "<identifier>" in text and "<number>" in text
    assert s("nothing to hide here") == "nothing to hide here"


# --- the mapping template and the self-check --------------------------------------------------


def test_the_template_never_proposes_free_text_or_names_as_categories(tmp_path):
    n = len(fx.clinical_table())
    seen_by = (["Dr Vexleigh", "Ormand", "Vexleigh"] * n)[:n]  # few distinct values: names
    sheet, _ = _sheet(
        tmp_path, **{"Seen by": seen_by,
                     "Finding": (["irregular margin, posterior shadowing seen today",
                                  "oval"] * n)[:n],
                     "Side": (["left", "right"] * n)[:n],
                     "Contact": (["j.smith@example.org", "+44 20 7946 0958"] * n)[:n]})
    text = dicom.write_mapping_template(sheet, tmp_path / "map.yaml").read_text()
    m = dicom.read_mapping(tmp_path / "map.yaml")
    cols = {f.column for f in m.features}
    assert "Side" in cols and "Race" in cols
    assert not cols & {"Seen by", "Finding", "Contact", "Patient Name"}
    # each left-out column is named with its reason, never with a value
    assert "person names" in text and "free text" in text and "e-mail" in text
    assert "Vexleigh" not in text and "example.org" not in text


@pytest.mark.parametrize("name, cell", [
    ("Zyxwort^Quilla", "Zyxwort"), ("Zyxwort^Quilla", "Q. Zyxwort"),
    ("Zyxwort^Quilla", "Zyxwört"), ("Zyxwort^Quilla", "ZYXWORT Q"),
    ("Zyxwört^Quilla", "zyxwoert"), ("Zyxwört^Quilla", "Zyxwort, Q.")])
def test_the_self_check_finds_a_family_name_however_it_is_spelt(tmp_path, name, cell):
    phi = dicom.Identifiers()
    dicom.add_person_name(phi, name)
    (tmp_path / "cohort.csv").write_text(f'subject_id,team\nS1,"{cell}"\nS2,oval\n')
    problems = dicom.phi_self_check(tmp_path, phi)
    assert len(problems) == 1 and "column 'team'" in problems[0]
    assert cell not in problems[0]


def test_a_declared_category_equal_to_a_family_name_alone_is_not_a_hit(tmp_path):
    phi = dicom.Identifiers()
    dicom.add_person_name(phi, "White^Mary")
    (tmp_path / "cohort.csv").write_text("subject_id,race\nS1,White\n")
    assert dicom.phi_self_check(tmp_path, phi, declared={"race": {"white"}}) == []
    assert len(dicom.phi_self_check(tmp_path, phi)) == 1  # undeclared: a hit
    (tmp_path / "cohort.csv").write_text("subject_id,race\nS1,Mary White\n")
    assert len(dicom.phi_self_check(tmp_path, phi, declared={"race": {"white"}})) == 1


def test_an_import_mapping_a_name_column_as_a_category_is_aborted(tmp_path):
    export = tmp_path / "export"
    _file(export, P1, "IM1.dcm")
    _file(export, P2, "IM2.dcm", seed=1)
    t = fx.clinical_table()
    sheet, mapping = _sheet(tmp_path / "clinical",
                            Team=[p.split(",")[0] for p in t["Patient Name"]])
    mapping.write_text(fx.MAPPING.replace("race: Race", "race: Race\n  team: Team"))
    with pytest.raises(dicom.DicomImportError) as e:
        _run(tmp_path, export, sheet, mapping)
    msg = str(e.value)
    assert "column 'team'" in msg and "Team" in msg
    assert P1.family not in msg and P2.family not in msg
    assert not (tmp_path / "cohorts" / "c").exists()


# --- regions ---------------------------------------------------------------------------------


def test_a_region_over_the_text_band_or_partly_outside_is_refused_by_name(tmp_path):
    x0, y0, x1, y1 = fx.REGION
    export = tmp_path / "export"
    _file(export, P1, "IM1.dcm")  # a good one
    _file(export, P2, "BAND.dcm", box=(x0, 0, x1, y1), seed=1)  # takes in the name at the top
    _file(export, P3, "OUT.dcm", box=(x0, y0, fx.COLS - 1 + 30, y1), seed=2)  # 30 px beyond
    sheet, mapping = _sheet(tmp_path / "clinical")
    r = _run(tmp_path, export, sheet, mapping)
    assert r.n_images == 1
    files = {Path(f["path"]).name: f for f in _details(r)["files"]}
    assert files["BAND.dcm"]["status"] == "skipped"
    assert files["BAND.dcm"]["reason"] == "region_over_text_band"
    assert files["OUT.dcm"]["reason"] == "region_partly_outside_image"
    assert "right edge by 30 px" in files["OUT.dcm"]["detail"]
    out = r.text()
    assert "REVIEW 2 image(s)" in out and "--allow-unsafe-regions" in out
    md = (r.out / "import_report.md").read_text()
    assert "## Images to review" in md and md.count("- refused F") == 2

    r2 = dicom.import_dicom(export, sheet, tmp_path / "cohorts" / "c2", mapping=mapping,
                            key_file=tmp_path / "private" / "c.key", allow_unsafe_regions=True)
    assert r2.n_images == 3
    flags = r2.summary["flags"]
    assert flags["region_over_text_band"]["count"] == 1
    assert flags["region_clamped"]["count"] == 1
    assert "imported, flagged region_clamped" in r2.text()


def test_text_band_rows_finds_marks_above_the_scan_only():
    img = np.zeros((fx.ROWS, fx.COLS), np.uint8)
    x0, y0, x1, y1 = fx.REGION
    img[y0:y1 + 1, x0:x1 + 1] = fx.scan(np.random.default_rng(0), y1 - y0 + 1, x1 - x0 + 1)
    assert dicom.text_band_rows(img, (x0, 0, x1 + 1, y1 + 1)) == []
    img[3:9, x0 + 5:x0 + 40] = 255  # a line of text above the scan, inside the box
    assert dicom.text_band_rows(img, (x0, 0, x1 + 1, y1 + 1)) == [(3, 8)]
    assert dicom.text_band_rows(img, (x0, y0, x1 + 1, y1 + 1)) == []  # the region proper


# --- the spreadsheet ---------------------------------------------------------------------------


def test_duplicate_rows_and_patients_without_an_image_are_named_by_their_line(tmp_path):
    export = tmp_path / "export"
    _file(export, P1, "IM1.dcm")
    _file(export, P2, "IM2.dcm", seed=1)
    _file(export, P3, "IM3.dcm", seed=2)
    t = fx.clinical_table()
    same = t[t["MRN"] == P1.mrn].iloc[0].to_dict()
    other = t[t["MRN"] == P2.mrn].iloc[0].to_dict() | {"BMI": "19.0"}
    sheet, mapping = _sheet(tmp_path / "clinical", extra=[same, other])
    n = len(t)  # the CSV's lines: header 1, rows 2..n+1, the two duplicates n+2, n+3
    line = {mrn: i + 2 for i, mrn in enumerate(t["MRN"])}
    r = _run(tmp_path, export, sheet, mapping)
    assert r.n_subjects == 2  # P2 excluded: its rows disagree
    dup = {tuple(e["rows"]): e for e in r.summary["spreadsheet_duplicate_rows"]}
    assert dup[(line[P1.mrn], n + 2)]["result"] == "merged"
    assert dup[(line[P2.mrn], n + 3)]["result"] == "excluded"
    assert dup[(line[P2.mrn], n + 3)]["disagree_on"] == ["bmi"]
    out = r.text()
    assert f"lines {line[P1.mrn]} and {n + 2}" in out and "merged: they agree" in out
    assert f"lines {line[P2.mrn]} and {n + 3}" in out and "disagree on bmi" in out
    # the spreadsheet patients without a file are on stdout too, by pseudonym and line
    alone = r.summary["spreadsheet_rows_without_ultrasound"]
    assert len(alone) == len(t) - 3
    assert f"{len(alone)} patient(s) without an ultrasound file" in out
    assert f"line {line['MRN-5550999']}" in out
    for p in (P1, P2, P3):
        assert p.mrn not in out and p.family not in out


def test_the_pseudonym_is_the_formula_data_readme_gives():
    import hashlib
    import hmac
    key = b"k" * 32
    want = "S" + hmac.new(key, b"phyllodes-subject\x00" + b"MRN-7730012",
                          hashlib.sha256).hexdigest()[:12]
    assert dicom.pseudonym(key, " MRN-7730012 ") == want
    readme = (Path(__file__).parents[1] / "data" / "README.md").read_text()
    assert 'HMAC-SHA256(key, `b"phyllodes-subject\\0"` + the normalised PatientID' in readme
