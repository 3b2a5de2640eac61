"""Subject-stratified folds: no subject in two folds, balanced classes, seeded, checked on load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phyllodes import paths
from phyllodes.data.cohort import load_cohort
from phyllodes.data.splits import (
    SplitsError,
    fold_subjects,
    get_or_make_splits,
    inner_split,
    load_splits,
    make_splits,
    save_splits,
)


@pytest.fixture(scope="module")
def public():
    return load_cohort(paths.DEFAULT_COHORT, folds=5)


@pytest.mark.parametrize("k", [2, 5])
def test_folds_are_subject_disjoint_and_balanced(synthetic_cohort_dir, public, k):
    for cohort in (load_cohort(synthetic_cohort_dir), public):
        sp = make_splits(cohort, k, seed=0)
        assert sp["subject_id"].is_unique
        assert set(sp["fold"]) == set(range(k))
        # images of one subject never straddle folds
        img = cohort.images.merge(sp[["subject_id", "fold"]], on="subject_id")
        assert (img.groupby("subject_id")["fold"].nunique() == 1).all()
        # per class, fold sizes within one subject of even
        for y in (0, 1):
            counts = sp[sp["y"] == y].groupby("fold").size()
            assert counts.max() - counts.min() <= 1, (cohort.name, y, counts.tolist())
        for f in range(k):
            tr, te = fold_subjects(sp, f)
            assert not set(tr) & set(te)
            assert len(tr) + len(te) == len(sp)


def test_same_seed_same_folds_other_seed_other_folds(public):
    a, b = make_splits(public, 5, seed=3), make_splits(public, 5, seed=3)
    c = make_splits(public, 5, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.set_index("subject_id")["fold"].equals(
        c.set_index("subject_id").loc[a["subject_id"], "fold"]
    )


def test_roundtrip_and_never_overwrite(public, tmp_path):
    sp = make_splits(public, 5, seed=0)
    p = save_splits(sp, tmp_path / "splits.csv")
    back = load_splits(p, public)
    assert (
        back.set_index("subject_id")["fold"].to_dict()
        == sp.set_index("subject_id")["fold"].to_dict()
    )
    with pytest.raises(FileExistsError):
        save_splits(sp, p)
    # an edited file is reused as is
    edited = pd.read_csv(p, dtype=str)
    moved = edited.loc[0, "subject_id"]
    edited.loc[0, "fold"] = str((int(edited.loc[0, "fold"]) + 1) % 5)
    edited.to_csv(p, index=False)
    again = get_or_make_splits(public, p, 5)
    assert int(again.set_index("subject_id").at[moved, "fold"]) == int(edited.loc[0, "fold"])


def test_bad_splits_files_are_explained(public, tmp_path):
    sp = make_splits(public, 5, seed=0)[["subject_id", "fold"]]
    p = tmp_path / "s.csv"
    sp.iloc[1:].to_csv(p, index=False)
    with pytest.raises(
        SplitsError, match="1 subject\\(s\\) of cohort 'breast-lesions-usg' have no fold"
    ):
        load_splits(p, public)
    pd.concat([sp, sp.iloc[[0]]]).to_csv(p, index=False)
    with pytest.raises(SplitsError, match=f"subject '{sp.iloc[0, 0]}' appears more than once"):
        load_splits(p, public)
    bad = sp.copy()
    bad["fold"] = bad["fold"].astype(object)
    bad.iloc[2, 1] = "x"
    bad.to_csv(p, index=False)
    with pytest.raises(SplitsError, match="line 4, column 'fold': 'x' is not a fold"):
        load_splits(p, public)
    one_class = sp.copy()
    y = public.subjects.set_index("subject_id")["y"]
    one_class["fold"] = (y.loc[one_class["subject_id"]].to_numpy() == 1).astype(int)
    one_class.to_csv(p, index=False)
    with pytest.raises(SplitsError, match="fold 0 holds only one class"):
        load_splits(p, public)


def test_inner_split_is_stratified_and_disjoint(public):
    subj = public.subjects
    tr, va = inner_split(subj, 0.2, seed=0)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(subj)
    frac = subj.set_index("subject_id").loc[va, "y"].mean()
    assert abs(frac - subj["y"].mean()) < 0.03


def test_subject_weights_make_every_subject_weigh_one():
    from phyllodes.data.splits import subject_weights
    ids = np.array(["a", "b", "b", "c", "c", "c"])
    w = subject_weights(ids)
    assert w.tolist() == [1.0, 0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]
    assert pd.Series(w).groupby(ids).sum().tolist() == pytest.approx([1, 1, 1])
