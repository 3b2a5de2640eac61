"""Subject-stratified k-fold splits, saved as an editable ``splits.csv`` (subject_id -> fold).

Outer folds come from scikit-learn's StratifiedGroupKFold over images grouped by subject, so
no subject is ever in two folds. Inside each training fold an inner validation split of
whole subjects (stratified) is held out for early stopping, threshold and calibration
choices; the test fold is used once, for the final predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

from phyllodes.data.cohort import Cohort


class SplitsError(ValueError):
    """A splits file that cannot be used with the cohort."""


def make_splits(cohort: Cohort, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """A table subject_id, label, y, fold (0..n_folds-1), one row per subject."""
    subj = cohort.subjects
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(subj), -1)
    # one row per subject: grouping is then exact and stratification is by subject
    for k, (_, test) in enumerate(cv.split(subj, subj["y"], groups=subj["subject_id"])):
        fold[test] = k
    out = subj[["subject_id", "label", "y"]].copy()
    out["fold"] = fold
    return out.sort_values(["fold", "subject_id"]).reset_index(drop=True)


def save_splits(splits: pd.DataFrame, path: Path | str, overwrite: bool = False) -> Path:
    """Write splits.csv; never replaces an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it (it may hold "
                              "folds you edited by hand)")
    path.parent.mkdir(parents=True, exist_ok=True)
    splits[["subject_id", "fold"]].to_csv(path, index=False)
    return path


def load_splits(path: Path | str, cohort: Cohort) -> pd.DataFrame:
    """Read and check a splits.csv against the cohort; raise :class:`SplitsError` on problems.

    Checks: columns subject_id and fold; integer folds; every cohort subject exactly once;
    no unknown subjects; every fold holds both classes.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"subject_id": str}, skipinitialspace=True)
    except FileNotFoundError:
        raise SplitsError(f"{path}: file not found; make it with phyllodes.data.splits.make_splits "
                          "(notebook 01 writes it)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SplitsError(f"{path}: not a readable CSV ({type(e).__name__}: "
                          f"{str(e).splitlines()[0]}); write it as subject_id,fold lines") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "subject_id" in df.columns:
        df["subject_id"] = df["subject_id"].astype(str).str.strip()
    problems = []
    for col in ("subject_id", "fold"):
        if col not in df.columns:
            problems.append(f"{path}: column '{col}' is missing; the file needs subject_id,fold")
    if problems:
        raise SplitsError("\n".join(problems))
    folds = pd.to_numeric(df["fold"], errors="coerce")
    for i in df.index[folds.isna() | (folds % 1 != 0) | (folds < 0)]:
        problems.append(f"{path} line {i + 2}, column 'fold': '{df.at[i, 'fold']}' is not a fold "
                        "number; write an integer 0..k-1")
    dups = df["subject_id"][df["subject_id"].duplicated()]
    for sid in dups.unique():
        lines = ", ".join(str(i + 2) for i in df.index[df["subject_id"] == sid])
        problems.append(f"{path}: subject '{sid}' appears more than once (lines {lines}); each "
                        "subject belongs to exactly one fold")
    subj = cohort.subjects.set_index("subject_id")
    unknown = sorted(set(df["subject_id"]) - set(subj.index))
    if unknown:
        problems.append(f"{path}: {len(unknown)} subject(s) not in cohort '{cohort.name}': "
                        f"{', '.join(unknown[:10])}; remove them or fix their ids")
    missing = sorted(set(subj.index) - set(df["subject_id"]))
    if missing:
        problems.append(f"{path}: {len(missing)} subject(s) of cohort '{cohort.name}' have no "
                        f"fold: {', '.join(missing[:10])}; add a line subject_id,fold for each")
    if problems:
        raise SplitsError("\n".join(problems))
    df["fold"] = folds.astype(int)
    found = sorted(df["fold"].unique())
    if found != list(range(len(found))):
        fix = (f"subtract 1 from every fold (0..{len(found) - 1})" if found ==
               list(range(1, len(found) + 1)) else f"renumber them 0..{len(found) - 1}")
        raise SplitsError(f"{path}: folds are numbered {', '.join(map(str, found))}; they must "
                          f"be 0..k-1 without gaps: {fix}")
    df = df.join(subj[["label", "y"]], on="subject_id")
    counts = df.groupby("fold")["y"].agg(["sum", "count"])
    for k, row in counts.iterrows():
        if row["sum"] == 0 or row["sum"] == row["count"]:
            problems.append(f"{path}: fold {k} holds only one class ({int(row['sum'])} positive "
                            f"of {int(row['count'])} subjects); every fold needs both classes")
    if problems:
        raise SplitsError("\n".join(problems))
    return df[["subject_id", "label", "y", "fold"]]


def get_or_make_splits(cohort: Cohort, path: Path | str, n_folds: int, seed: int = 0,
                       overwrite: bool = False) -> pd.DataFrame:
    """Load ``path`` if it exists (checked), else make, save and return new splits."""
    path = Path(path)
    if path.exists() and not overwrite:
        splits = load_splits(path, cohort)
        k = splits["fold"].nunique()
        if k != n_folds:
            raise SplitsError(f"{path} has {k} folds but {n_folds} were asked for; use another "
                              "file or overwrite=True")
        return splits
    splits = make_splits(cohort, n_folds, seed)
    save_splits(splits, path, overwrite=True)
    return splits


def inner_split(subjects: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of whole training subjects into (train ids, inner-validation ids)."""
    y = subjects["y"].to_numpy()
    ids = subjects["subject_id"].to_numpy()
    n_val = max(2, int(round(val_fraction * len(ids))))
    sss = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    tr, va = next(sss.split(ids, y))
    return ids[tr], ids[va]


def subject_weights(subject_ids) -> np.ndarray:
    """Per image row, 1 / (rows of its subject): every subject weighs 1 in a fit, however many
    images it has."""
    ids = pd.Series(np.asarray(subject_ids))
    return 1.0 / ids.map(ids.value_counts()).to_numpy()


def fold_subjects(splits: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training subject ids, test subject ids) of outer fold ``fold``."""
    test = splits["fold"] == fold
    return splits.loc[~test, "subject_id"].to_numpy(), splits.loc[test, "subject_id"].to_numpy()


def fold_composition(splits: pd.DataFrame) -> pd.DataFrame:
    """Per fold: subjects, positives, negatives and positive fraction."""
    g = splits.groupby("fold")["y"]
    out = pd.DataFrame({"subjects": g.size(), "positive": g.sum()})
    out["negative"] = out["subjects"] - out["positive"]
    out["positive_fraction"] = (out["positive"] / out["subjects"]).round(3)
    return out.reset_index()
