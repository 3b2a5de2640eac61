"""phyllodes.data.sources.dicom: a synthetic hospital DICOM export through the de-identifying
import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("pydicom")

sys.path.insert(0, str(Path(__file__).parent))
import dicom_fixtures as fx  # noqa: E402

from phyllodes.data.cohort import load_cohort  # noqa: E402
from phyllodes.data.sources import dicom  # noqa: E402
from phyllodes.data.sources.dicom.spreadsheet import _slash_order as slash_order  # noqa: E402


def _import(export: Path, sheet: Path, mapping: Path, out: Path, key: Path, **kw):
    return dicom.import_dicom(export, sheet, out, mapping=mapping, key_file=key, **kw)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dicom")
    info = fx.make_export(root / "export")
    sheet, mapping = fx.write_clinical(root / "clinical")
    return {"root": root, "export": root / "export", "sheet": sheet, "mapping": mapping,
            "key": root / "private" / "study.key", **info}


@pytest.fixture(scope="module")
def imported(export) -> dict:
    out = export["root"] / "cohorts" / "mgh-dicom"
    report = _import(export["export"], export["sheet"], export["mapping"], out, export["key"])
    details = json.loads(report.details_path.read_text())
    by_name = {Path(f["path"]).name: f for f in details["files"]}
    table = pd.read_csv(out / "cohort.csv", dtype=str, keep_default_na=False)
    return {"out": out, "report": report, "by_name": by_name, "table": table,
            "details": details}


def _png(out: Path, rel: str) -> np.ndarray:
    with Image.open(out / rel) as im:
        assert im.mode == "L"
        return np.asarray(im)


def test_every_file_is_imported_or_skipped_with_its_reason(export, imported):
    by_name, report = imported["by_name"], imported["report"]
    assert len(by_name) == len(list(p for p in export["export"].rglob("*") if p.is_file()))
    for name, reason in export["skipped"].items():
        assert by_name[name]["status"] == "skipped", name
        assert by_name[name]["reason"] == reason, name
    for name in export["expected"]:
        assert by_name[name]["status"] == "imported", (name, by_name[name])
    assert set(export["skipped"]) | set(export["expected"]) == set(by_name)
    public = {f["file"]: f for f in report.files}
    for f in by_name.values():  # the public report gives the same reason for every file
        assert public[f["file"]]["status"] == f["status"]
        assert public[f["file"]]["reason"] == f["reason"]
        if f["status"] == "skipped":
            assert f["reason"] in dicom.SKIP_REASONS
    c = report.summary["counts"]
    assert c["files_found"] == c["files_imported"] + c["files_skipped"] == len(by_name)
    assert sum(report.skipped.values()) == c["files_skipped"] == len(export["skipped"])
    assert c["images_written"] == len(imported["table"]) == 11
    assert report.skipped["unsupported_transfer_syntax"] == 1


def test_crop_equals_region_pixel_size_exact_and_colour_to_luma(export, imported):
    out, table, by_name = imported["out"], imported["table"], imported["by_name"]
    rows = table.set_index("image_path")
    for name, e in export["expected"].items():
        images = by_name[name]["images"]
        assert len(images) == 1, name
        got = _png(out, images[0])
        want = e.get("gray", e.get("luma"))
        assert got.shape == want.shape, name
        if "gray" in e:
            np.testing.assert_array_equal(got, e["gray"], err_msg=name)
        else:
            err = np.abs(got.astype(float) - want)
            assert err.max() <= e["tol"], (name, err.max())
        r = rows.loc[images[0]]
        assert (r["pixel_size_mm_x"], r["pixel_size_mm_y"]) == e["mm"], name
        assert set(e.get("flags", ())) <= set(by_name[name]["flags"]), name


def test_no_burned_in_text_in_any_image(imported):
    pngs = sorted((imported["out"] / "images").glob("*.png"))
    assert len(pngs) == 11
    for p in pngs:  # scan pixels are <= 200; burned-in text is 255
        assert _png(imported["out"], f"images/{p.name}").max() <= 200, p.name


def test_cine_clip_middle_frame_and_two_files_of_one_patient(export, imported):
    by_name, table = imported["by_name"], imported["table"]
    single, cine = by_name["IM0001.dcm"], by_name["CINE0002.dcm"]
    assert single["subject"] == cine["subject"]
    sid = single["subject"]
    assert single["images"] == [f"images/{sid}_1.png"]  # series 1 before series 2
    assert cine["images"] == [f"images/{sid}_2.png"]
    assert list(table.loc[table.subject_id == sid, "image_path"]) == [
        f"images/{sid}_1.png", f"images/{sid}_2.png"]
    frame = next(i for i in imported["report"].summary["images"]
                 if i["image_path"] == cine["images"][0])
    assert (frame["frame"], frame["frames_in_file"]) == (2, 5)
    assert "overlay_planes" in cine["flags"]  # flagged, and not burned in (exact crop above)


def test_clinical_values_joined_and_dates_dropped(export, imported):
    table, by_name = imported["table"], imported["by_name"]
    p1 = table[table.subject_id == by_name["IM0001.dcm"]["subject"]].iloc[0]
    assert (p1["label"], p1["age"], p1["bmi"], p1["tumor_size_mm"], p1["race"],
            p1["menopausal_status"]) == ("benign", "47", "27.5", "24", "White", "pre")
    p5 = table[table.subject_id == by_name["W16.dcm"]["subject"]].iloc[0]
    assert (p5["bmi"], p5["age"]) == ("", "46")  # NA is missing
    assert list(table.columns) == ["subject_id", "image_path", "label", "pixel_size_mm_x",
                                   "pixel_size_mm_y", "age", "bmi", "tumor_size_mm", "race",
                                   "menopausal_status"]
    assert set(table.label) == {"benign", "borderline", "malignant"}


def test_absent_patients_and_unmatched_rows_are_reported(export, imported):
    report, key = imported["report"], dicom.load_or_create_key(export["key"])
    s = report.summary
    absent = dicom.pseudonym(key, fx.PATIENTS["p10"].mrn)
    entry = next(e for e in s["patients_not_imported"] if e["subject"] == absent)
    assert entry["reasons"] == ["patient_not_in_spreadsheet"]
    pending = dicom.pseudonym(key, fx.PATIENTS["p13"].mrn)
    assert next(e for e in s["patients_not_imported"]
                if e["subject"] == pending)["reasons"] == ["no_label"]
    assert dicom.pseudonym(key, "MRN-5550999") in s["spreadsheet_ids_without_ultrasound"]
    md = (imported["out"] / "import_report.md").read_text()
    assert absent in md and "patient_not_in_spreadsheet" in md


def _all_output_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def _png_text_chunks(data: bytes) -> list[bytes]:
    chunks, i = [], 8
    while i + 8 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] not in (b"IHDR", b"IDAT", b"IEND"):
            chunks.append(data[i + 4:i + 8])
        i += 12 + n
    return chunks


def test_no_identifier_in_any_output_file(export, imported):
    out = imported["out"]
    files = _all_output_files(out)
    assert {p.suffix for p in files} == {".csv", ".yaml", ".json", ".md", ".png"}
    phi = {s for s in fx.all_phi() if len(s) >= 4}
    assert len(phi) > 200
    for p in files:
        data = p.read_bytes()
        rel = p.relative_to(out).as_posix()
        if p.suffix == ".png":
            assert _png_text_chunks(data) == [], rel
        for s in phi:
            for v in {s, s.upper(), s.lower()}:
                assert v.encode() not in data, (rel, s)
                assert v not in rel, (rel, s)
    # the private files hold them, beside the key, readable by the owner only
    report = imported["report"]
    for p in (report.details_path, report.ids_path, report.key_file):
        assert p.parent == export["key"].parent
        assert oct(p.stat().st_mode & 0o777) == "0o600"
        assert not p.is_relative_to(out)
    assert "MRN-7730012" in report.ids_path.read_text()
    assert "Zyxwort_Quilla" in report.details_path.read_text()


def test_imported_cohort_passes_the_contract(imported):
    assert imported["report"].passes_contract
    assert imported["report"].summary["contract"] == {"passed": True, "problems": []}
    cohort = load_cohort(imported["out"], folds=2)
    assert cohort.name == "mgh-dicom"
    assert len(cohort.images) == 11 and len(cohort.subjects) == 9
    assert set(cohort.numeric_features) == {"age", "bmi", "tumor_size_mm"}
    import yaml
    raw = yaml.safe_load((imported["out"] / "cohort.yaml").read_text())
    assert set(raw) <= {"name", "positive_labels", "negative_labels", "numeric_features",
                        "unused_columns",
                        "categorical_features", "missing_values", "citation", "license",
                        "description"}


def test_same_input_and_key_give_identical_bytes_other_key_other_ids(export, imported,
                                                                    tmp_path):
    out2 = tmp_path / "again" / "mgh-dicom"
    _import(export["export"], export["sheet"], export["mapping"], out2, export["key"])
    a, b = _all_output_files(imported["out"]), _all_output_files(out2)
    assert [p.relative_to(imported["out"]) for p in a] == [p.relative_to(out2) for p in b]
    for p, q in zip(a, b):
        assert p.read_bytes() == q.read_bytes(), p.name
    out3 = tmp_path / "other" / "mgh-dicom"
    r3 = _import(export["export"], export["sheet"], export["mapping"], out3,
                 tmp_path / "k2" / "other.key")
    t3 = pd.read_csv(out3 / "cohort.csv", dtype=str)
    assert not set(t3.subject_id) & set(imported["table"].subject_id)
    assert r3.n_images == 11


def test_excel_spreadsheet_gives_the_same_cohort(export, imported, tmp_path):
    sheet, mapping = fx.write_clinical(tmp_path / "xl", excel=True)
    assert sheet.suffix == ".xlsx"
    out = tmp_path / "xl-cohort" / "mgh-dicom"
    _import(export["export"], sheet, mapping, out, export["key"])
    assert (out / "cohort.csv").read_bytes() == (imported["out"] / "cohort.csv").read_bytes()


def test_frames_all_and_every_k(export, tmp_path):
    src = tmp_path / "cine"
    shutil.copytree(fx.folder(export["export"], fx.PATIENTS["p1"]), src / "p1")
    frames = export["expected"]["CINE0002.dcm"]["frames"]
    for opt, want in (("all", [0, 1, 2, 3, 4]), ("every:2", [0, 2, 4]), ("first", [0])):
        out = tmp_path / opt.replace(":", "") / "c"
        r = _import(src, export["sheet"], export["mapping"], out, export["key"], frames=opt)
        got = [i for i in r.summary["images"] if i["frames_in_file"] == 5]
        assert [i["frame"] for i in got] == want, opt
        for i in got:
            np.testing.assert_array_equal(_png(out, i["image_path"]), fx._crop(frames[i["frame"]]))
    with pytest.raises(ValueError, match="--frames"):
        dicom.parse_frames("sometimes")


def test_burned_in_without_region_policy(export, tmp_path):
    src = tmp_path / "burned"
    shutil.copytree(fx.folder(export["export"], fx.PATIENTS["p8"]), src / "p8")
    shutil.copytree(fx.folder(export["export"], fx.PATIENTS["p7"]), src / "p7")
    with pytest.raises(dicom.DicomImportError, match="no image imported"):
        _import(src, export["sheet"], export["mapping"], tmp_path / "a" / "c", export["key"],
                without_region="skip")
    r = _import(src, export["sheet"], export["mapping"], tmp_path / "b" / "c", export["key"])
    assert r.skipped == {"burned_in_without_region": 1} and r.n_images == 1
    r = _import(src, export["sheet"], export["mapping"], tmp_path / "c" / "c", export["key"],
                allow_burned_in_without_region=True)
    assert r.n_images == 2 and not r.skipped
    flagged = r.summary["flags"]["burned_in_kept_unsafe"]["files"]
    assert len(flagged) == 1 and flagged[0] in r.summary["may_carry_text_in_scan_region"]
    x0, y0, x1, y1 = fx.REGION
    for i in r.summary["images"]:  # the fallback found the scan and left the text out
        assert i["crop"] == [x0, y0, x1 + 1, y1 + 1] and i["crop_method"] == "fallback_crop"
        assert _png(tmp_path / "c" / "c", i["image_path"]).max() <= 200
    r = _import(src, export["sheet"], export["mapping"], tmp_path / "d" / "c", export["key"],
                without_region="full")
    assert r.summary["images"][0]["crop"] == [0, 0, fx.COLS, fx.ROWS]
    assert r.summary["flags"]["full_frame"]["count"] == 1


def test_join_on_accession_with_age_from_the_study_date(export, tmp_path):
    mapping = tmp_path / "acc.yaml"
    mapping.write_text(fx.MAPPING.replace("[DOB, Exam Date]", "[DOB, dicom:StudyDate]"))
    out = tmp_path / "acc" / "c"
    r = _import(export["export"], export["sheet"], mapping, out, export["key"], join="accession")
    assert r.n_images == 11 and r.summary["options"]["join"] == "accession"
    assert r.skipped["accession_not_in_spreadsheet"] == 1
    t = pd.read_csv(out / "cohort.csv", dtype=str, keep_default_na=False)
    key = dicom.load_or_create_key(export["key"])
    assert t[t.subject_id == dicom.pseudonym(key, "MRN-7730012")].age.tolist() == ["47", "47"]
    assert isinstance(r.summary["spreadsheet_ids_without_ultrasound"], str)


def test_multiframe_jpeg_and_a_dataset_without_preamble(export, tmp_path):
    import io

    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    src = tmp_path / "edge"
    p = fx.PATIENTS["p1"]
    frames = [fx.color_frame(p, 80 + 20 * i) for i in range(3)]
    ds = fx.base_dataset(p, sop_class=fx.US_MULTIFRAME)
    ds.SequenceOfUltrasoundRegions = [fx.region_item()]
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation, ds.NumberOfFrames = "YBR_FULL_422", 3
    ds.Rows, ds.Columns = fx.ROWS, fx.COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    jpegs = []
    for f in frames:
        b = io.BytesIO()
        Image.fromarray(f).save(b, "JPEG", quality=95)
        jpegs.append(b.getvalue())
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(jpegs, has_bot=False)
    ds["PixelData"].VR = "OB"
    fx.save(ds, src / "MF")
    p = fx.PATIENTS["p2"]
    img = fx.frame_with_scan(np.random.default_rng(3), p)
    ds = fx.base_dataset(p)
    del ds.Modality  # the SOP class says ultrasound
    ds.SequenceOfUltrasoundRegions = [fx.region_item()]
    fx.set_mono(ds, img)
    ds.preamble = None
    pydicom.dcmwrite(src / "RAW", ds, enforce_file_format=False)
    assert (src / "RAW").read_bytes()[128:132] != b"DICM"
    out = tmp_path / "o" / "c"
    r = _import(src, export["sheet"], export["mapping"], out, export["key"])
    assert not r.skipped and r.n_images == 2
    by_file = {i["frames_in_file"]: i for i in r.summary["images"]}
    got = _png(out, by_file[3]["image_path"])
    assert by_file[3]["frame"] == 1
    assert np.abs(got - fx._crop(fx.luma(frames[1]))).max() <= 4
    np.testing.assert_array_equal(_png(out, by_file[1]["image_path"]), fx._crop(img))


def test_repeated_images_are_dropped_and_reported(export, tmp_path):
    import pydicom
    from pydicom.uid import generate_uid
    src = tmp_path / "rep"
    p1 = fx.folder(export["export"], fx.PATIENTS["p1"])
    shutil.copytree(p1, src / "p1")
    ds = pydicom.dcmread(p1 / "IM0001.dcm")  # re-exported: same pixels, a new instance UID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 9
    ds.save_as(src / "p1" / "IM0001_again.dcm")
    ds = pydicom.dcmread(p1 / "CINE0002.dcm")  # a clip whose first two frames are the same
    frames = ds.pixel_array.copy()
    frames[1] = frames[0]
    ds.PixelData = frames.tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(src / "p1" / "CINE0002.dcm")
    r = _import(src, export["sheet"], export["mapping"], tmp_path / "o" / "c", export["key"],
                frames="all")
    files = {f["file"]: f for f in r.files}
    dup = [f for f in files.values() if f["reason"] == "duplicate_image"]
    assert len(dup) == 1 and dup[0]["detail"].startswith("identical to images/S")
    assert r.summary["counts"]["frames_dropped_as_duplicates"] == 2
    assert r.summary["flags"]["duplicate_frames"]["count"] == 1
    assert r.n_images == 5  # the single frame + 4 distinct frames of the clip


def test_refusals(export, imported, tmp_path):
    args = (export["export"], export["sheet"], export["mapping"])
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(dicom.DicomImportError, match="not empty"):
        _import(*args, out, export["key"])
    with pytest.raises(dicom.DicomImportError, match="not an earlier import"):
        _import(*args, out, export["key"], overwrite=True)
    assert (out / "notes.txt").exists()
    fresh = tmp_path / "fresh" / "c"
    with pytest.raises(dicom.DicomImportError, match="inside the output folder"):
        _import(*args, fresh, fresh / "keys" / "c.key")
    with pytest.raises(dicom.DicomImportError, match="--mapping is required"):
        dicom.import_dicom(export["export"], export["sheet"], fresh, key_file=export["key"])
    if shutil.which("git"):
        repo = tmp_path / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / ".gitignore").write_text("private/\n")
        with pytest.raises(dicom.DicomImportError, match="git work tree"):
            _import(*args, fresh, repo / "keys" / "c.key")
        with pytest.raises(dicom.DicomImportError, match="never be committed"):
            _import(*args, repo / "data" / "c", export["key"])
        r = _import(*args, repo / "private" / "c", export["key"])  # ignored by git: fine
        assert r.n_images == 11
    assert not fresh.exists()


def test_overwrite_replaces_an_earlier_import(export, tmp_path):
    out = tmp_path / "ow" / "c"
    _import(export["export"], export["sheet"], export["mapping"], out, export["key"])
    (out / "images" / "stale.png").write_bytes(b"x")
    _import(export["export"], export["sheet"], export["mapping"], out, export["key"],
            overwrite=True)
    assert not (out / "images" / "stale.png").exists()
    assert not list(out.parent.glob(".c.*"))  # no staging left behind


def test_mapping_problems_name_the_line_and_column_not_the_value(export, tmp_path):
    t = fx.clinical_table()
    t.loc[2, "Pathology"] = "Fibroadenoma"
    t.loc[4, "BMI"] = "Quennevais"
    sheet = tmp_path / "bad.csv"
    t.to_csv(sheet, index=False)
    with pytest.raises(dicom.DicomImportError) as e:
        _import(export["export"], sheet, export["mapping"], tmp_path / "o" / "c", export["key"])
    msg = str(e.value)
    assert "bad.csv line 4, column 'Pathology'" in msg and "line 6, column 'BMI'" in msg
    assert "Fibroadenoma" not in msg and "Quennevais" not in msg
    bad = tmp_path / "m.yaml"
    bad.write_text(fx.MAPPING + "categorical_extra: 1\n")
    with pytest.raises(dicom.DicomImportError, match="unknown key 'categorical_extra'"):
        dicom.read_mapping(bad)
    bad.write_text(fx.MAPPING.replace("accession_column: Accession\n", ""))
    with pytest.raises(dicom.DicomImportError, match="needs 'accession_column'"):
        _import(export["export"], export["sheet"], bad, tmp_path / "o" / "c", export["key"],
                join="accession")
    bad.write_text(fx.MAPPING.replace("race: Race", "race: Race\n  who: Patient Name"))
    with pytest.raises(dicom.DicomImportError, match="looks like an identifier"):
        _import(export["export"], export["sheet"], bad, tmp_path / "o" / "c", export["key"])


def test_mapping_template_is_guessed_from_the_header(export, tmp_path):
    path = dicom.write_mapping_template(export["sheet"], tmp_path / "map.yaml")
    text = path.read_text()
    m = dicom.read_mapping(path)
    assert (m.patient_id_column, m.accession_column, m.label_column, m.join) == (
        "MRN", "Accession", "Pathology", "patient_id")
    assert m.label_values == {"benign": "benign", "borderline": "borderline",
                              "malignant": "malignant", "pending": None}
    feats = {f.name: f for f in m.features}
    assert feats["age"].from_dates == ("DOB", "Exam Date")
    assert {"bmi", "size_cm", "race", "menopause"} <= set(feats)
    assert "Patient Name" not in {f.column for f in m.features}
    assert "#   Patient Name" in text
    r = _import(export["export"], export["sheet"], path, tmp_path / "t" / "c", export["key"])
    assert r.n_images == 11
    with pytest.raises(FileExistsError):
        dicom.write_mapping_template(export["sheet"], path)


def test_cli(export, tmp_path, capsys):
    out = tmp_path / "cli" / "c"
    argv = ["--source", str(export["export"]), "--clinical", str(export["sheet"]),
            "--mapping", str(export["mapping"]), "--out", str(out), "--key-file",
            str(export["key"])]
    assert dicom.main(argv) == 0
    assert "imported 11 image(s) of 9 subject(s)" in capsys.readouterr().out
    assert dicom.main(argv) == 1
    assert "not empty" in capsys.readouterr().err
    tpl = tmp_path / "tpl.yaml"
    assert dicom.main(["--clinical", str(export["sheet"]), "--write-mapping-template",
                       str(tpl)]) == 0
    assert tpl.exists()


def test_to_gray8_conversions():
    from pydicom.dataset import Dataset
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored = "MONOCHROME1", 16
    arr = np.array([[0, 1000, 2000]], np.uint16)
    np.testing.assert_array_equal(dicom.to_gray8(arr, ds), [[255, 127, 0]])
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 1000, 1001  # 500..1500 -> 0..255, no clipping to white
    np.testing.assert_array_equal(dicom.to_gray8(np.array([[0, 500, 1000, 1500, 4000]],
                                                          np.uint16), ds),
                                  [[0, 0, 128, 255, 255]])
    pal = Dataset()
    pal.PhotometricInterpretation, pal.BitsStored, pal.BitsAllocated = "PALETTE COLOR", 8, 8
    pal.SamplesPerPixel, pal.PixelRepresentation = 1, 0
    lut = np.arange(256, dtype=np.uint16) * 257  # 16-bit entries
    for c, scale in (("Red", 1.0), ("Green", 0.5), ("Blue", 0.0)):
        setattr(pal, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(pal, f"{c}PaletteColorLookupTableData",
                (lut * scale).astype(np.uint16).tobytes())
    g = dicom.to_gray8(np.array([[0, 200]], np.uint8), pal)
    assert abs(int(g[0, 1]) - round(0.299 * 200 + 0.587 * 100)) <= 1 and g[0, 0] == 0


def test_pseudonyms_ids_and_helpers():
    key = b"k" * 32
    assert dicom.pseudonym(key, "00482231") == dicom.pseudonym(key, " 482231 ")
    assert dicom.pseudonym(key, "mrn-1") == dicom.pseudonym(key, "MRN-1")
    assert dicom.pseudonym(key, "MRN-1") != dicom.pseudonym(b"j" * 32, "MRN-1")
    assert len(dicom.pseudonym(key, "x")) == 13
    assert dicom.cm_to_mm(0.0125) == "0.125" and dicom.cm_to_mm(0.1) == "1"
    assert dicom.age_years(pd.Timestamp("1971-05-23").date(),
                           pd.Timestamp("2019-05-22").date()) == 47
    assert slash_order(["12/31/1970", "01/02/1980"]) == "%m/%d/%Y"
    assert slash_order(["31/12/1970"]) == "%d/%m/%Y"
    assert slash_order(["01/02/1980"]) is None
    assert dicom.frame_indices(7, "middle") == [3] and dicom.frame_indices(1, "all") == [0]


def test_self_check_flags_identifiers_and_png_text(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "cohort.csv").write_text("subject_id,race\nS1,White\n")
    phi = {"Zyxwort^Quilla", "Quilla Zyxwort", "MRN-7730012", "White^Mary"}
    assert dicom.phi_self_check(tmp_path, phi) == []
    (tmp_path / "cohort.csv").write_text("subject_id,who\nS1,Quilla Zyxwort\n")
    assert len(dicom.phi_self_check(tmp_path, phi)) == 1
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text("Comment", "x")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "b.png",
                                                     pnginfo=info)
    assert any("tEXt" in p for p in dicom.phi_self_check(tmp_path, set()))


def test_key_file_is_private_and_kept(tmp_path):
    k = tmp_path / "cfg" / "x.key"
    a = dicom.load_or_create_key(k)
    assert oct(k.stat().st_mode & 0o777) == "0o600"
    assert dicom.load_or_create_key(k) == a
    k.write_text("short")
    with pytest.raises(dicom.DicomImportError, match="at least 32"):
        dicom.load_or_create_key(k)


def test_jpeg_lossless_and_jpeg_ls_decode_exactly(export, tmp_path):
    """JPEG Lossless (process 14) and JPEG-LS, common in PACS exports, decode through the pinned
    python-gdcm (BSD): imported pixel for pixel, not skipped."""
    gdcm = pytest.importorskip("gdcm")
    import pydicom
    src = tmp_path / "lossless"
    raw = tmp_path / "raw"
    imgs = {}
    for i, (name, ts) in enumerate([("JLL", gdcm.TransferSyntax.JPEGLosslessProcess14_1),
                                    ("JLS", gdcm.TransferSyntax.JPEGLSLossless)]):
        p = fx.PATIENTS[f"p{i + 1}"]
        imgs[name] = fx.frame_with_scan(np.random.default_rng(10 + i), p)
        ds = fx.base_dataset(p)
        ds.SequenceOfUltrasoundRegions = [fx.region_item()]
        fx.set_mono(ds, imgs[name])
        fx.save(ds, raw / name)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(raw / name))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(ts))
        change.SetInput(reader.GetImage())
        assert change.Change()
        src.mkdir(exist_ok=True)
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(src / name))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        assert pydicom.dcmread(src / name).file_meta.TransferSyntaxUID.is_compressed
    out = tmp_path / "o" / "c"
    r = _import(src, export["sheet"], export["mapping"], out, export["key"])
    assert not r.skipped and r.n_images == 2
    got = sorted((_png(out, i["image_path"]) for i in r.summary["images"]), key=lambda a: a.sum())
    want = sorted((fx._crop(imgs[n]) for n in imgs), key=lambda a: a.sum())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_readers_assessment_in_the_spreadsheet_becomes_a_reference(export, tmp_path):
    """The radiologist's impression mapped under 'references': copied per patient, declared in
    cohort.yaml as a reader reference (never a feature), usable by the study's comparisons."""
    import yaml
    sheet = pd.read_csv(export["sheet"], dtype=str, keep_default_na=False)
    cats = ["2", "3", "4a", "4b", "4c", "5"]
    sheet["US BI-RADS"] = [cats[i % len(cats)] for i in range(len(sheet))]
    new_sheet = tmp_path / "pathology.csv"
    sheet.to_csv(new_sheet, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(fx.MAPPING + "references:\n  birads: {column: US BI-RADS, order: "
                       "['2', '3', '4a', '4b', '4c', '5'], positive_from: 4a, "
                       "label: radiologist's BI-RADS}\n")
    out = tmp_path / "out" / "cohort"
    _import(export["export"], new_sheet, mapping, out, export["key"])
    cfg = yaml.safe_load((out / "cohort.yaml").read_text())
    assert "birads" not in cfg["categorical_features"] + cfg["numeric_features"]
    assert cfg["references"]["birads"]["positive_from"] == "4a"
    from phyllodes.data.cohort import load_cohort
    c = load_cohort(out)
    t = c.reference_table("birads")
    assert t["score"].notna().all() and set(t["category"]) <= set(cats)
    assert "birads" not in c.config.features
