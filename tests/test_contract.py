"""The data contract, case by case: a clear error naming file, line and column, or a logged and
documented normalisation. One test per case, on small files the tests write."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from phyllodes.data.cohort import CohortError, load_cohort, validate_cohort


def _csv(d):
    return (d / "cohort.csv").read_text()


def _write(d, text: str, encoding: str = "utf-8"):
    (d / "cohort.csv").write_bytes(text.encode(encoding))


def _yaml(d, **changes):
    cfg = yaml.safe_load((d / "cohort.yaml").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "cohort.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _frame(d) -> pd.DataFrame:
    return pd.read_csv(d / "cohort.csv", dtype=str, keep_default_na=False)


def _save(d, df: pd.DataFrame):
    df.to_csv(d / "cohort.csv", index=False)


def _problems(d, **kw) -> list[str]:
    with pytest.raises(CohortError) as ei:
        load_cohort(d, **kw)
    return ei.value.problems


def _one(problems: list[str], *parts: str) -> str:
    hits = [p for p in problems if all(x in p for x in parts)]
    assert hits, f"no problem with {parts} in:\n" + "\n".join(problems)
    return hits[0]


# --------------------------------------------------------------------------- CSV structure


def test_whitespace_is_stripped_and_logged(cohort_copy):
    df = _frame(cohort_copy)
    sid = df.loc[0, "subject_id"]
    n_before = df["subject_id"].nunique()
    df.loc[df["subject_id"] == sid, "subject_id"] = sid + " "  # 'S001 ' must stay S001
    df.loc[0, "label"] = " " + df.loc[0, "label"] + "  "
    _save(cohort_copy, df)
    report = validate_cohort(cohort_copy)
    assert report.ok
    c = report.cohort
    assert c.images["subject_id"].nunique() == n_before and sid in set(c.images["subject_id"])
    assert any("whitespace stripped" in n for n in report.notes)


def test_stray_double_quote_merging_lines(cohort_copy):
    lines = _csv(cohort_copy).splitlines()
    lines[4] = lines[4].replace(",", ',"', 1)  # opens a quote that never closes on the line
    _write(cohort_copy, "\n".join(lines) + "\n")
    problems = _problems(cohort_copy)
    assert len(problems) == 1  # named where it starts, not at the end of the file
    assert "merging rows" in _one(problems, "cohort.csv line 5:", "double quotes")


def test_unquoted_comma_in_a_value(cohort_copy):
    lines = _csv(cohort_copy).splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("race")] = "White, non-Hispanic"
    lines[3] = ",".join(cells)
    _write(cohort_copy, "\n".join(lines) + "\n")
    p = _one(_problems(cohort_copy), "cohort.csv line 4")
    assert f"{len(header) + 1} values for {len(header)} columns" in p and "quoted" in p


def test_short_row_is_not_padded(cohort_copy):
    lines = _csv(cohort_copy).splitlines()
    lines[6] = ",".join(lines[6].split(",")[:-2])
    _write(cohort_copy, "\n".join(lines) + "\n")
    assert "a value or a separator is missing" in _one(_problems(cohort_copy),
                                                         "cohort.csv line 7")


def test_excel_cp1252_file(cohort_copy):
    lines = _csv(cohort_copy).splitlines()
    lines[9] = lines[9].replace("White", "Wh\u00eete", 1) if "White" in lines[9] else \
        lines[9] + ""
    df = _frame(cohort_copy)
    df.loc[8, "race"] = "Caf\u00e9"
    text = df.to_csv(index=False)
    _write(cohort_copy, text, encoding="cp1252")
    p = _one(_problems(cohort_copy), "cohort.csv line 10", "not UTF-8")
    assert "0xe9" in p and "CSV UTF-8" in p


def test_semicolon_separated_file(cohort_copy):
    _write(cohort_copy, _frame(cohort_copy).to_csv(index=False, sep=";"))
    problems = _problems(cohort_copy)
    assert len(problems) == 1  # one clear error, not one per 'missing' column
    assert "separated by semicolons" in problems[0]


def test_duplicated_and_empty_header_columns(cohort_copy):
    df = _frame(cohort_copy)
    text = df.to_csv(index=False).splitlines()
    text[0] = text[0].replace("bmi", "age", 1)
    _write(cohort_copy, "\n".join(text) + "\n")
    assert "appears 2 times" in _one(_problems(cohort_copy), "column 'age'")
    text = df.to_csv(index=False).splitlines()
    text[0] = text[0].replace("race", "", 1)
    _write(cohort_copy, "\n".join(text) + "\n")
    assert "header name is empty" in _one(_problems(cohort_copy), "line 1, column")


def test_bom_blank_lines_and_trailing_commas_are_normalised(cohort_copy):
    lines = _csv(cohort_copy).splitlines()
    lines[2] = lines[2] + ",,"
    text = "\ufeff" + "\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n"
    _write(cohort_copy, text)
    report = validate_cohort(cohort_copy)
    assert report.ok, report.text()
    notes = " | ".join(report.notes)
    assert "byte-order mark" in notes and "blank line" in notes and "empty fields" in notes
    assert len(report.cohort.images) == len(lines) - 1


def test_empty_csv(cohort_copy):
    _write(cohort_copy, "")
    assert "the file is empty" in _problems(cohort_copy)[0]
    _write(cohort_copy, "subject_id,image_path,label\n")
    assert "has a header but no rows" in " ".join(_problems(cohort_copy))


# --------------------------------------------------------------------------- cohort.yaml


def test_unknown_yaml_key_with_a_hint(cohort_copy):
    _yaml(cohort_copy, numeric_feature=["age"])
    p = _one(_problems(cohort_copy), "cohort.yaml", "unknown key 'numeric_feature'")
    assert "did you mean 'numeric_features'" in p


def test_label_in_both_classes(cohort_copy):
    _yaml(cohort_copy, positive_labels=["borderline", "malignant", "benign"])
    p = _one(_problems(cohort_copy), "in both positive_labels and negative_labels")
    assert "benign" in p


def test_yaml_error_does_not_hide_csv_problems(cohort_copy):
    (cohort_copy / "cohort.yaml").write_text("name: x\nnumeric_features: [age\n")
    df = _frame(cohort_copy)
    (cohort_copy / df.loc[3, "image_path"]).unlink()
    report = validate_cohort(cohort_copy)
    text = "\n".join(str(p) for p in report.problems)
    assert "not valid YAML" in text and "line 3" in text  # the YAML error with its place
    assert "cohort.csv line 5, column 'image_path'" in text  # and the CSV's problem too
    assert any("cohort.yaml" in s for s in report.skipped)


def test_yaml_booleans_and_bad_names(cohort_copy):
    (cohort_copy / "cohort.yaml").write_text(
        "name: my cohort/1\npositive_labels: [yes]\nnegative_labels: [benign]\n")
    problems = _problems(cohort_copy)
    _one(problems, "name 'my cohort/1' must be letters")
    # the hint quotes the value as written, not as YAML read it
    assert "quote it: 'yes'" in _one(problems, "cohort.yaml line 2",
                                     "'positive_labels' item 1 (yes) was read as True")
    (cohort_copy / "cohort.yaml").write_text(
        "name: c\npositive_labels: [malignant]\nnegative_labels: [benign]\n"
        "categorical_features:\n  - race\n  - Off\n  - 1.50\n")
    problems = _problems(cohort_copy)
    assert "quote it: 'Off'" in _one(problems, "cohort.yaml line 6", "read as False")
    assert "quote it: '1.50'" in _one(problems, "cohort.yaml line 7", "read as 1.5")


def test_feature_lists_are_consistent(cohort_copy):
    _yaml(cohort_copy, categorical_features=["race", "menopausal_status", "echogenicity", "age"],
          feature_sets={"paper": ["age", "bmii"]}, ranges={"race": [0, 1]})
    problems = _problems(cohort_copy)
    _one(problems, "feature 'age' is listed in both numeric_features and categorical_features")
    _one(problems, "feature_sets.paper: 'bmii' is not a declared feature", "did you mean 'bmi'")
    _one(problems, "ranges: 'race' is not a declared numeric feature")


# --------------------------------------------------------------------------- values


def test_undeclared_missing_marker_in_a_categorical_column(cohort_copy):
    df = _frame(cohort_copy)
    sid = df.loc[2, "subject_id"]
    df.loc[df["subject_id"] == sid, "race"] = "NULL"
    _save(cohort_copy, df)
    p = _one(_problems(cohort_copy), "column 'race'", "'NULL' looks like a missing-value marker")
    lines = ", ".join(str(i + 2) for i in df.index[df["subject_id"] == sid])
    assert "missing_values" in p and f"cohort.csv line{'s' * (',' in lines)} {lines}," in p
    _yaml(cohort_copy, missing_values=["", "NA", "unknown", "NULL"])
    assert pd.isna(load_cohort(cohort_copy).images.loc[2, "race"])


def test_implausible_values_and_declared_ranges(cohort_copy):
    df = _frame(cohort_copy)
    for sid, age in ((df.loc[0, "subject_id"], "-5"), (df.loc[5, "subject_id"], "400")):
        df.loc[df["subject_id"] == sid, "age"] = age
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    _one(problems, "cohort.csv line 2, column 'age'", "-5 is outside the plausible range [0, 120]")
    _one(problems, "column 'age'", "400 is outside")
    df.loc[df["subject_id"] == df.loc[0, "subject_id"], "age"] = "30"
    df.loc[df["subject_id"] == df.loc[5, "subject_id"], "age"] = "35"
    _save(cohort_copy, df)
    _yaml(cohort_copy, ranges={"age": [40, 90]})
    assert _one(_problems(cohort_copy), "30 is outside the plausible range [40, 90]")


def test_declared_categories(cohort_copy):
    df = _frame(cohort_copy)
    sid = df.loc[1, "subject_id"]
    df.loc[df["subject_id"] == sid, "menopausal_status"] = "peri"
    _save(cohort_copy, df)
    _yaml(cohort_copy, categories={"menopausal_status": ["pre", "post"]})
    assert "not one of the declared categories ['pre', 'post']" in _one(
        _problems(cohort_copy), "column 'menopausal_status'")


def test_spellings_that_differ_only_in_case(cohort_copy):
    df = _frame(cohort_copy)
    sid = df.loc[df["echogenicity"] == "hypoechoic", "subject_id"].iloc[0]
    df.loc[df["subject_id"] == sid, "echogenicity"] = "Hypoechoic"
    _save(cohort_copy, df)
    assert "differ only in letter case" in _one(_problems(cohort_copy), "column 'echogenicity'")


def test_subject_ids_that_differ_only_in_case(cohort_copy):
    df = _frame(cohort_copy)
    sid = df["subject_id"][df["subject_id"].duplicated()].iloc[0]
    rows = df.index[df["subject_id"] == sid]
    df.loc[rows[1], "subject_id"] = sid.lower()
    _save(cohort_copy, df)
    assert "differ only in letter case" in _one(_problems(cohort_copy), "subject_id")


def test_numbers_with_decimal_comma_or_not_finite(cohort_copy):
    df = _frame(cohort_copy)
    for i, v in ((0, "27,5"), (df.index[df["subject_id"] != df.loc[0, "subject_id"]][0], "inf")):
        df.loc[df["subject_id"] == df.loc[i, "subject_id"], "bmi"] = v
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    _one(problems, "'27,5' has a comma: write a dot as the decimal separator", "27.5")
    _one(problems, "'inf' is not a number")


def test_a_feature_missing_everywhere(cohort_copy):
    df = _frame(cohort_copy)
    df["bmi"] = "unknown"
    _save(cohort_copy, df)
    assert "every value is missing" in _one(_problems(cohort_copy), "column 'bmi'")


def test_empty_label_and_subject(cohort_copy):
    df = _frame(cohort_copy)
    df.loc[4, "label"] = ""
    df.loc[7, "subject_id"] = ""
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    _one(problems, "cohort.csv line 6, column 'label'", "empty")
    _one(problems, "cohort.csv line 9, column 'subject_id'", "empty")


# --------------------------------------------------------------------------- images


def test_the_same_file_under_another_spelling(cohort_copy):
    df = _frame(cohort_copy)
    first, other = 0, df.index[df["subject_id"] != df.loc[0, "subject_id"]][0]
    df.loc[other, "image_path"] = "./" + df.loc[first, "image_path"].replace("/", "//")
    _save(cohort_copy, df)
    p = _one(_problems(cohort_copy), f"line {other + 2}, column 'image_path'", "same file")
    assert "line 2" in p


def test_identical_bytes_under_two_subjects(cohort_copy):
    df = _frame(cohort_copy)
    other = df.index[df["subject_id"] != df.loc[0, "subject_id"]][0]
    shutil.copy(cohort_copy / df.loc[0, "image_path"], cohort_copy / df.loc[other, "image_path"])
    p = _one(_problems(cohort_copy), "identical image files")
    assert "under two subjects" in p and df.loc[0, "subject_id"] in p


def test_paths_outside_the_cohort_folder(cohort_copy, tmp_path):
    df = _frame(cohort_copy)
    outside = tmp_path / "elsewhere.png"
    shutil.copy(cohort_copy / df.loc[1, "image_path"], outside)
    df.loc[1, "image_path"] = str(outside)
    df.loc[2, "image_path"] = "../elsewhere.png"
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    _one(problems, "line 3, column 'image_path'", "absolute path")
    _one(problems, "line 4, column 'image_path'", "outside the cohort folder")


def test_truncated_jpeg(cohort_copy):
    df = _frame(cohort_copy)
    src = cohort_copy / df.loc[3, "image_path"]
    jpg = src.with_suffix(".jpg")
    Image.open(src).save(jpg, quality=90)
    jpg.write_bytes(jpg.read_bytes()[:-200])
    df.loc[3, "image_path"] = str(jpg.relative_to(cohort_copy))
    _save(cohort_copy, df)
    assert "truncated JPEG" in _one(_problems(cohort_copy), "line 5, column 'image_path'")


def test_a_jpeg_cut_short_with_its_end_marker_written_again(cohort_copy):
    """Cut mid-stream, then FF D9 appended: the file ends like a JPEG and decodes (libjpeg
    fills the missing blocks with one gray); half the image is that flat gray."""
    df = _frame(cohort_copy)
    src = cohort_copy / df.loc[3, "image_path"]
    jpg = src.with_suffix(".jpg")
    Image.open(src).convert("L").save(jpg, quality=90)
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    whole = src.with_name(src.stem + "_whole.jpg")
    whole.write_bytes(data)
    df.loc[3, "image_path"] = str(jpg.relative_to(cohort_copy))
    df.loc[4, "image_path"] = str(whole.relative_to(cohort_copy))
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    assert "a JPEG cut short" in _one(problems, "line 5, column 'image_path'")
    assert not [p for p in problems if "line 6, column 'image_path'" in p]


def test_roi_must_be_integer_pixels(cohort_copy):
    df = _frame(cohort_copy)
    df.loc[0, "roi_x0"] = "10.7"
    df.loc[1, "roi_x0"] = str(float(df.loc[1, "roi_x0"]))  # 12.0: an integer, written as float
    for c in ("roi_x0", "roi_y0", "roi_x1", "roi_y1"):
        df.loc[2, c] = ""                                   # no box: uncropped
    _save(cohort_copy, df)
    assert "'10.7' is not a pixel coordinate" in _one(_problems(cohort_copy),
                                                      "line 2, column 'roi_x0'")
    df.loc[0, "roi_x0"] = "10"
    _save(cohort_copy, df)
    report = validate_cohort(cohort_copy)
    assert report.ok, report.text()
    assert any("all four ROI cells empty" in n for n in report.notes)
    roi = report.cohort.images[["roi_x0", "roi_y0", "roi_x1", "roi_y1"]]
    assert roi.loc[1, "roi_x0"] == int(float(df.loc[1, "roi_x0"])) and roi.loc[2].isna().all()


def test_16_bit_png_is_scaled_not_clipped(cohort_copy, tmp_path):
    from phyllodes.data.images import image_tensor
    df = _frame(cohort_copy)
    p = cohort_copy / df.loc[0, "image_path"]
    gray = np.asarray(Image.open(p), dtype=np.uint16)
    Image.fromarray(gray.astype(np.uint16) * 16).save(p)  # 16-bit PNG, 12-bit range
    report = validate_cohort(cohort_copy)
    assert report.ok and any("more than 8 bits" in n for n in report.notes)
    t = image_tensor(report.cohort, 24, use_roi=False, cache_dir=tmp_path).images[0, 0].numpy()
    assert (t == 255).mean() < 0.05 and t.std() > 20  # a real image, not near-white


def test_multi_frame_image(cohort_copy):
    df = _frame(cohort_copy)
    p = cohort_copy / df.loc[0, "image_path"]
    tif = p.with_suffix(".tif")
    im = Image.open(p)
    im.save(tif, save_all=True, append_images=[im, im])
    df.loc[0, "image_path"] = str(tif.relative_to(cohort_copy))
    _save(cohort_copy, df)
    assert "holds 3 frames" in _one(_problems(cohort_copy), "line 2, column 'image_path'")


def test_masks_0_1_work_and_empty_masks_are_reported(cohort_copy):
    df = _frame(cohort_copy)
    m = cohort_copy / df.loc[0, "mask_path"]
    fg = np.asarray(Image.open(m)) > 127
    Image.fromarray(fg.astype(np.uint8)).save(m)  # values 0/1
    Image.fromarray(np.zeros_like(fg, dtype=np.uint8)).save(cohort_copy / df.loc[1, "mask_path"])
    p = _one(_problems(cohort_copy), "line 3, column 'mask_path'")
    assert "is empty (no lesion pixel)" in p
    from phyllodes.data.imageio import mask_array
    assert (mask_array(m) == fg).all()


def test_backslash_paths_and_folders(cohort_copy):
    df = _frame(cohort_copy)
    df.loc[0, "image_path"] = df.loc[0, "image_path"].replace("/", "\\")
    df.loc[1, "image_path"] = "images"
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    assert "is a folder" in _one(problems, "line 3, column 'image_path'")
    assert not any("line 2," in p for p in problems)  # the backslash path was read as '/'


def test_missing_image_without_opening_images(cohort_copy):
    df = _frame(cohort_copy)
    (cohort_copy / df.loc[6, "image_path"]).unlink()
    p = _one(_problems(cohort_copy, check_images=False), "line 8, column 'image_path'")
    assert "does not exist" in p


def test_image_removed_after_loading_gives_a_clear_error(cohort_copy, tmp_path):
    from phyllodes.data.images import cache_key
    c = load_cohort(cohort_copy)
    (cohort_copy / c.images.loc[0, "image_path"]).unlink()
    with pytest.raises(FileNotFoundError, match="cohort.csv: fix the path or restore"):
        cache_key(c, 24, True, 0.15)


# --------------------------------------------------------------------------- classes, folds


def test_too_small_class_gets_advice_that_can_be_followed(cohort_copy):
    df = _frame(cohort_copy)
    pos = df.loc[df["label"] != "benign", "subject_id"].unique()
    keep = set(df["subject_id"]) - set(pos[1:])
    _save(cohort_copy, df[df["subject_id"].isin(keep)])
    p = _one(_problems(cohort_copy, folds=5), "only 1 positive subject(s) for 5 folds")
    assert "at least 2 subjects of each class" in p and "at most 1 folds" not in p


def test_splits_numbered_from_one(cohort_copy, tmp_path):
    from phyllodes.data.splits import SplitsError, load_splits, make_splits
    c = load_cohort(cohort_copy)
    sp = make_splits(c, 4, 0)
    sp.assign(fold=sp["fold"] + 1)[["subject_id", "fold"]].to_csv(tmp_path / "s.csv",
                                                                   index=False)
    with pytest.raises(SplitsError, match=r"numbered 1, 2, 3, 4.*subtract 1"):
        load_splits(tmp_path / "s.csv", c)


# --------------------------------------------------------------------------- reporting


def test_all_stages_in_one_report(cohort_copy):
    df = _frame(cohort_copy).drop(columns=["bmi"])
    df.loc[0, "age"] = "old"
    df.loc[1, "label"] = "weird"
    _save(cohort_copy, df)
    _yaml(cohort_copy, description=["not", "text"])
    problems = _problems(cohort_copy)
    _one(problems, "'description' must be text")
    _one(problems, "column 'bmi' is missing (declared in cohort.yaml)")
    _one(problems, "'old' is not a number")
    _one(problems, "unknown label 'weird'")


def test_long_error_lists_end_with_a_summary_by_kind(cohort_copy):
    df = _frame(cohort_copy)
    df["race"] = [f"r{i}" for i in range(len(df))]  # differs between a subject's images
    df.loc[0, "age"] = "old"
    _save(cohort_copy, df)
    with pytest.raises(CohortError) as ei:
        load_cohort(cohort_copy)
    text = str(ei.value)
    assert "summary by kind: subject consistency:" in text.splitlines()[-1]
    assert "image_categorical_features" in text  # the hint for image-level columns


def test_validate_command(cohort_copy, capsys):
    from phyllodes.__main__ import main
    assert main(["validate", str(cohort_copy), "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: 40 subjects" in out and "bmi" in out and "numeric" in out
    df = _frame(cohort_copy)
    df.loc[0, "label"] = "weird"
    _save(cohort_copy, df)
    assert main(["validate", str(cohort_copy)]) == 1
    assert "unknown label 'weird'" in capsys.readouterr().out
    assert main(["validate", str(cohort_copy / "nowhere")]) == 1


# --------------------------------------------------------------------------- image-level inputs


def _two_sides(d):
    """Every subject gets a 'side' per image (left/right alternating): image-level."""
    df = _frame(d)
    df["side"] = np.where(df.groupby("subject_id").cumcount() % 2 == 0, "left", "right")
    _save(d, df)
    return df


def test_image_level_features_may_differ_between_images(cohort_copy):
    _two_sides(cohort_copy)
    _yaml(cohort_copy, categorical_features=["race", "menopausal_status", "echogenicity",
                                             "side"])
    assert "image_categorical_features" in _one(_problems(cohort_copy), "column 'side'")
    _yaml(cohort_copy, categorical_features=["race", "menopausal_status", "echogenicity"],
          image_categorical_features=["side"])
    c = load_cohort(cohort_copy)
    assert c.config.image_features == ["side"] and "side" not in c.subjects.columns


def test_image_level_features_are_encoded_per_image_and_fit_in_folds(cohort_copy):
    from phyllodes.data.clinical import ClinicalEncoder
    df = _two_sides(cohort_copy)
    _yaml(cohort_copy, image_categorical_features=["side"])
    c = load_cohort(cohort_copy)
    subjects = list(c.subjects["subject_id"])
    train = [s for s in subjects if s in set(df.loc[df["side"] == "left", "subject_id"])][:10]
    enc = ClinicalEncoder(c).fit(train)
    x = enc.transform_images(c.images)
    groups = enc.feature_groups()
    side_cols = groups["side"]
    assert side_cols and x.shape[0] == len(c.images)
    # 'right' never occurs in the training images of subjects with one image: fit in folds
    one = c.subjects.set_index("subject_id").loc[train, "n_images"].eq(1).all()
    right = c.images["side"].eq("right").to_numpy()
    if one:
        assert (x[right][:, side_cols] == x[right][0, side_cols]).all()
    assert "side" in enc.feature_names[side_cols[0]] or "missingindicator" in \
        enc.feature_names[side_cols[0]]


# --------------------------------------------------------------------------- no clinical data


def test_a_cohort_without_clinical_features(cohort_copy):
    _yaml(cohort_copy, numeric_features=None, categorical_features=None)
    report = validate_cohort(cohort_copy)
    assert report.ok and "the study runs image-only" in report.text()
    c = report.cohort
    assert not c.has_clinical
    from phyllodes.data.clinical import ClinicalEncoder
    assert ClinicalEncoder(c).fit(c.subjects["subject_id"][:10]).transform_images(
        c.images).shape == (len(c.images), 0)


# --------------------------------------------------------------------------- silent changes


def test_a_yaml_key_written_twice_is_an_error(cohort_copy):
    text = (cohort_copy / "cohort.yaml").read_text()
    (cohort_copy / "cohort.yaml").write_text(
        text + "numeric_features: [age]\ncategories:\n  race: [a]\n  race: [b]\n")
    problems = _problems(cohort_copy)
    n = len(text.splitlines())
    first = next(i + 1 for i, line in enumerate(text.splitlines())
                 if line.startswith("numeric_features"))
    p = _one(problems, "key 'numeric_features' is written twice", f"lines {first} and {n + 1}")
    assert p.startswith(f"{cohort_copy / 'cohort.yaml'} line {n + 1}:")
    _one(problems, "key 'race' is written twice", f"lines {n + 3} and {n + 4}")  # nested


def test_exclude_rules_that_remove_every_row(cohort_copy):
    _yaml(cohort_copy, exclude=[{"column": "label", "values": ["benign", "borderline",
                                                               "malignant"], "reason": "typo"}])
    report = validate_cohort(cohort_copy, folds=5)
    assert not report.ok and report.cohort is None and "OK:" not in report.text()
    _one([str(p) for p in report.problems], "cohort.yaml", "exclude rules remove every row")


def test_a_column_nobody_uses_is_noted(cohort_copy):
    df = _frame(cohort_copy)
    df["tumour_grade_notes"] = "x"
    _save(cohort_copy, df)
    report = validate_cohort(cohort_copy)
    assert report.ok
    note = _one(report.notes, "column 'tumour_grade_notes': not used")
    assert "unused_columns" in note and note in report.text()
    assert not any("column 'age'" in n for n in report.notes)  # declared columns are used
    _yaml(cohort_copy, unused_columns=["tumour_grade_notes"])
    assert not any("not used" in n for n in validate_cohort(cohort_copy).notes)


# --------------------------------------------------------------------------- limits


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (with one tiny, wrong IDAT)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_an_image_declaring_a_huge_size_is_a_problem_of_its_row(cohort_copy):
    from phyllodes.data.contract import MAX_IMAGE_PIXELS
    df = _frame(cohort_copy)
    (cohort_copy / df.loc[2, "image_path"]).write_bytes(_png_header(30000, 30000))
    (cohort_copy / df.loc[5, "image_path"]).write_bytes(_png_header(12000, 9000))  # warning
    df.loc[7, "label"] = "weird"
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    p = _one(problems, "cohort.csv line 4, column 'image_path'", "900,000,000 pixels")
    assert f"limit of {MAX_IMAGE_PIXELS:,} pixels" in p
    _one(problems, "cohort.csv line 7, column 'image_path'", "108,000,000 pixels")
    _one(problems, "unknown label 'weird'")  # the other problems are still reported


def test_a_cell_longer_than_the_csv_field_limit(cohort_copy):
    df = _frame(cohort_copy)
    df.loc[3, "race"] = "x" * 200_000
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    assert len(problems) == 1
    assert "longer than 131,072 characters" in _one(problems, "cohort.csv line 5")


# --------------------------------------------------------------------------- Unicode


def _nfd(s: str) -> str:
    import unicodedata
    return unicodedata.normalize("NFD", s)


def test_nfc_and_nfd_spellings_are_one_value(cohort_copy):
    df = _frame(cohort_copy)
    sid = df["subject_id"][df["subject_id"].duplicated()].iloc[0]
    rows = df.index[df["subject_id"] == sid]
    n = df["subject_id"].nunique()
    df.loc[rows[0], "subject_id"] = "Jos\u00e9-1"           # NFC
    df.loc[rows[1:], "subject_id"] = _nfd("Jos\u00e9-1")    # NFD: the same id
    df.loc[df["race"] == df.loc[0, "race"], "race"] = "Caf\u00e9"
    df.loc[0, "race"] = _nfd("Caf\u00e9")
    _save(cohort_copy, df)
    report = validate_cohort(cohort_copy)
    assert report.ok, report.text()
    images = report.cohort.images
    assert images["subject_id"].nunique() == n and "Jos\u00e9-1" in set(images["subject_id"])
    assert images.loc[images["race"].notna(), "race"].str.startswith("Caf").sum() == \
        (images["race"] == "Caf\u00e9").sum()
    _one(report.notes, "column 'subject_id'", "NFC")


def test_invisible_characters_in_categorical_values(cohort_copy):
    df = _frame(cohort_copy)
    sid = df.loc[df["echogenicity"] == "hypoechoic", "subject_id"].iloc[0]
    df.loc[df["subject_id"] == sid, "echogenicity"] = "hypo\u200bechoic"
    _save(cohort_copy, df)
    p = _one(_problems(cohort_copy), "column 'echogenicity'", "invisible")
    assert "U+200B ZERO WIDTH SPACE" in p


def test_a_file_on_disk_under_the_nfd_spelling_is_found(cohort_copy):
    df = _frame(cohort_copy)
    old = cohort_copy / df.loc[0, "image_path"]
    new = old.with_name(_nfd("\u00e9cho_") + old.name)
    old.rename(new)
    df.loc[0, "image_path"] = str(old.with_name("\u00e9cho_" + old.name)
                                  .relative_to(cohort_copy))   # the CSV spells it NFC
    _save(cohort_copy, df)
    report = validate_cohort(cohort_copy)
    assert report.ok, report.text()
    _one(report.notes, "differs only in Unicode normalisation")
    assert report.cohort.images.loc[0, "image_abspath"] == str(new)


# --------------------------------------------------------------------------- images as shown


def test_exif_orientation_is_applied_and_noted(cohort_copy):
    from phyllodes.data.imageio import read_gray8
    df = _frame(cohort_copy)
    p = cohort_copy / df.loc[0, "image_path"]
    stored = np.asarray(Image.open(p))[:32, :]              # 48 wide, 32 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                        # a viewer rotates it 90° clockwise
    Image.fromarray(stored).save(p, exif=exif)
    df.loc[0, "mask_path"] = ""
    df.loc[0, ["roi_x0", "roi_y0", "roi_x1", "roi_y1"]] = ["0", "0", "30", "46"]  # upright only
    _save(cohort_copy, df)
    report = validate_cohort(cohort_copy)
    assert report.ok, report.text()
    _one(report.notes, "EXIF orientation", "line 2")
    assert (read_gray8(p) == np.rot90(stored, -1)).all()
    plain = cohort_copy / df.loc[1, "image_path"]          # no EXIF: decoded as stored
    assert (read_gray8(plain) == np.asarray(Image.open(plain))).all()


def test_transparency_and_conversions_to_gray_are_noted(cohort_copy):
    df = _frame(cohort_copy)
    p0, p1 = (cohort_copy / df.loc[i, "image_path"] for i in (0, 1))
    g = np.asarray(Image.open(p0))
    alpha = np.full_like(g, 255)
    alpha[:5] = 0
    Image.fromarray(np.dstack([g, g, g, alpha])).save(p0)                    # RGBA
    Image.open(p1).convert("RGB").convert("P", palette=Image.ADAPTIVE).save(p1)  # palette
    report = validate_cohort(cohort_copy)
    assert report.ok, report.text()
    _one(report.notes, "1 image(s) have transparent pixels", "line 2")
    _one(report.notes, "2 image(s) converted to 8-bit gray", "colour (RGBA): 1", "palette: 1")


def test_blank_and_nan_images(cohort_copy):
    df = _frame(cohort_copy)
    p0 = cohort_copy / df.loc[0, "image_path"]
    Image.fromarray(np.full((48, 48), 17, dtype=np.uint8)).save(p0)
    a = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    a[3, 4] = np.nan
    tif = (cohort_copy / df.loc[1, "image_path"]).with_suffix(".tif")
    Image.fromarray(a).save(tif)
    df.loc[1, "image_path"] = str(tif.relative_to(cohort_copy))
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    assert "gray value (17)" in _one(problems, "line 2, column 'image_path'", "is blank")
    _one(problems, "line 3, column 'image_path'", "1 NaN")


def test_masks_that_cannot_be_right(cohort_copy):
    from scipy import ndimage
    df = _frame(cohort_copy)
    rows = df.index[df["mask_path"] != ""][:4]
    fg = [np.asarray(Image.open(cohort_copy / df.loc[i, "mask_path"])) > 127 for i in rows]
    df.loc[rows[0], "mask_path"] = df.loc[rows[0], "image_path"]       # the image itself
    labels = fg[1].astype(np.uint8)
    cols = np.nonzero(fg[1].any(axis=0))[0]
    labels[:, : (cols[0] + cols[-1]) // 2][fg[1][:, : (cols[0] + cols[-1]) // 2]] = 2
    Image.fromarray(labels).save(cohort_copy / df.loc[rows[1], "mask_path"])  # 0/1/2
    outline = fg[2] & ~ndimage.binary_erosion(fg[2])
    Image.fromarray(outline.astype(np.uint8) * 255).save(cohort_copy / df.loc[rows[2], "mask_path"])
    zero = np.zeros_like(fg[3], dtype=np.uint8)
    Image.fromarray(np.dstack([zero, zero, zero, fg[3].astype(np.uint8) * 255])).save(
        cohort_copy / df.loc[rows[3], "mask_path"])                       # alpha only
    _save(cohort_copy, df)
    problems = _problems(cohort_copy)
    at = [f"line {i + 2}, column 'mask_path'" for i in rows]
    _one(problems, at[0], "is the image file itself")
    assert "which label is the lesion" in _one(problems, at[1], "label map (values 0, 1, 2)")
    assert "fill" in _one(problems, at[2], "only an outline")
    p = _one(problems, at[3], "alpha channel")
    assert "is empty" not in p


# --------------------------------------------------------------------------- wrong cause


def test_an_excel_workbook_saved_as_cohort_csv(cohort_copy):
    import zipfile
    with zipfile.ZipFile(cohort_copy / "cohort.csv", "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    problems = _problems(cohort_copy)
    assert len(problems) == 1
    assert "an Excel workbook, not a CSV" in problems[0] and "save as CSV UTF-8" in problems[0]
    assert "UTF-8 text" not in problems[0] and "not UTF-8" not in problems[0]


def test_excel_separator_line(cohort_copy):
    _write(cohort_copy, "sep=,\n" + _csv(cohort_copy))
    problems = _problems(cohort_copy)
    assert len(problems) == 1
    assert "delete line 1 (sep=,)" in _one(problems, "cohort.csv line 1")
