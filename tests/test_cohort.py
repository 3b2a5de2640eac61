"""The data contract: every bad input ends in one clear error naming file, line and column."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from phyllodes.data.cohort import CohortError, load_cohort


def _edit(cohort_dir, fn):
    df = pd.read_csv(cohort_dir / "cohort.csv", dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(cohort_dir / "cohort.csv", index=False)
    return df


def _error(cohort_dir, **kw) -> str:
    with pytest.raises(CohortError) as ei:
        load_cohort(cohort_dir, **kw)
    return str(ei.value)


def test_synthetic_cohort_loads(synthetic_cohort_dir):
    c = load_cohort(synthetic_cohort_dir, folds=5)
    s = c.summary()
    assert s["n_subjects"] == 40
    assert s["n_positive_subjects"] == 20 and s["n_negative_subjects"] == 20
    assert set(s["labels"]) == {"benign", "borderline", "malignant"}
    assert s["n_images"] > 40  # several images for some subjects
    assert c.subjects["n_images"].max() > 1
    # declared-missing values are allowed and become NaN / None
    assert c.images["age"].isna().any()
    assert c.has_roi and c.has_masks


def test_missing_required_column(cohort_copy):
    _edit(cohort_copy, lambda d: d.drop(columns=["label"]))
    msg = _error(cohort_copy)
    assert "column 'label' is missing" in msg and "cohort.csv" in msg


def test_missing_feature_column(cohort_copy):
    _edit(cohort_copy, lambda d: d.drop(columns=["bmi"]))
    assert "column 'bmi' is missing (declared in cohort.yaml)" in _error(cohort_copy)


def test_unknown_label(cohort_copy):
    def f(d):
        d.loc[3, "label"] = "fibroadenoma"
        return d
    _edit(cohort_copy, f)
    msg = _error(cohort_copy)
    # line 5 = header + 4th row; every image of that subject is reported
    assert "cohort.csv line 5, column 'label': unknown label 'fibroadenoma'" in msg


def test_missing_image_file(cohort_copy):
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str)
    (cohort_copy / df.loc[6, "image_path"]).unlink()
    msg = _error(cohort_copy)
    assert "cohort.csv line 8, column 'image_path'" in msg and "does not exist" in msg
    assert df.loc[6, "image_path"] in msg


def test_corrupt_image(cohort_copy):
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str)
    p = cohort_copy / df.loc[2, "image_path"]
    p.write_bytes(p.read_bytes()[:40])  # truncated PNG
    msg = _error(cohort_copy)
    assert "cohort.csv line 4, column 'image_path'" in msg and "cannot be read" in msg


def test_non_numeric_value(cohort_copy):
    def f(d):
        d.loc[0, "age"] = "fifty"
        return d
    _edit(cohort_copy, f)
    msg = _error(cohort_copy)
    assert "cohort.csv line 2, column 'age': 'fifty' is not a number" in msg


def test_declared_missing_value_is_allowed(cohort_copy):
    def f(d):
        d.loc[d["subject_id"] == d.loc[0, "subject_id"], "age"] = "unknown"
        return d
    _edit(cohort_copy, f)
    c = load_cohort(cohort_copy)
    assert pd.isna(c.images.loc[0, "age"])


def test_subject_inconsistent_values(cohort_copy):
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str, keep_default_na=False)
    sid = df["subject_id"][df["subject_id"].duplicated()].iloc[0]
    rows = df.index[df["subject_id"] == sid]

    def f(d):
        d.loc[rows[1], "bmi"] = "99.9"
        first = d.loc[rows[0], "label"]
        d.loc[rows[1], "label"] = "malignant" if first != "malignant" else "benign"
        return d
    _edit(cohort_copy, f)
    msg = _error(cohort_copy)
    assert f"column 'bmi': subject '{sid}' has different values" in msg
    assert f"column 'label': subject '{sid}' has different values" in msg
    assert f"line {rows[1] + 2}" in msg


def test_duplicated_image_rows(cohort_copy):
    _edit(cohort_copy, lambda d: pd.concat([d, d.iloc[[5]]], ignore_index=True))
    msg = _error(cohort_copy)
    n = len(pd.read_csv(cohort_copy / "cohort.csv"))
    assert f"cohort.csv line {n + 1}, column 'image_path'" in msg and "duplicates line 7" in msg


def test_too_few_subjects_for_folds(cohort_copy):
    msg = _error(cohort_copy, folds=25)
    assert "only 20 positive subject(s) for 25 folds" in msg


def test_empty_csv(cohort_copy):
    (cohort_copy / "cohort.csv").write_text("")
    assert "cohort.csv: the file is empty" in _error(cohort_copy)
    (cohort_copy / "cohort.csv").write_text("subject_id,image_path,label\n")
    assert "has a header but no rows" in _error(cohort_copy)


def test_all_problems_reported_at_once(cohort_copy):
    def f(d):
        d.loc[0, "age"] = "old"
        d.loc[1, "label"] = "weird"
        return d
    _edit(cohort_copy, f)
    with pytest.raises(CohortError) as ei:
        load_cohort(cohort_copy)
    joined = "\n".join(ei.value.problems)
    assert "'old' is not a number" in joined and "unknown label 'weird'" in joined


def test_exclusion_rule_is_logged_with_count(cohort_copy, caplog):
    import yaml
    cfg = yaml.safe_load((cohort_copy / "cohort.yaml").read_text())
    cfg["exclude"] = [{"column": "race", "values": ["Asian"], "reason": "test rule"}]
    (cohort_copy / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    n_other = int((pd.read_csv(cohort_copy / "cohort.csv")["race"] == "Asian").sum())
    with caplog.at_level(logging.INFO):
        c = load_cohort(cohort_copy)
    assert n_other > 0
    assert c.exclusions["n_rows"].tolist() == [n_other]
    assert f"excluded {n_other} row(s)" in caplog.text
    assert len(c.images) == len(pd.read_csv(cohort_copy / "cohort.csv")) - n_other


def test_mask_of_another_size(cohort_copy):
    from PIL import Image
    df = pd.read_csv(cohort_copy / "cohort.csv", dtype=str)
    Image.new("L", (10, 7)).save(cohort_copy / df.loc[4, "mask_path"])
    msg = _error(cohort_copy)
    assert "cohort.csv line 6, column 'mask_path': mask is 10x7 but its image is 48x48" in msg
