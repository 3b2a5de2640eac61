"""Clinical preprocessing, fit on the training subjects of a fold only.

:func:`make_preprocessor` is a scikit-learn ColumnTransformer: numeric features are imputed
with the training median (plus a missing-indicator column) and standardised; categorical
features are imputed with the most frequent training category (plus a missing indicator) and
one-hot encoded, ignoring categories never seen in training. It is fit on one row per
*subject* (so subjects with many images do not weigh more) of the fold's training subjects,
and then transforms validation and test subjects it never saw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .cohort import Cohort


def make_preprocessor(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """An unfitted ColumnTransformer for the given feature lists."""
    parts = []
    if numeric:
        parts.append(("num", Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True,
                                     keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]), list(numeric)))
    if categorical:
        parts.append(("cat", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent", add_indicator=True,
                                     missing_values=np.nan, keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), list(categorical)))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=True)


def feature_frame(cohort: Cohort, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The clinical columns of ``table`` (default: the cohort's subjects), typed for sklearn."""
    t = cohort.subjects if table is None else table
    out = pd.DataFrame(index=t.index)
    for c in cohort.numeric_features:
        out[c] = pd.to_numeric(t[c], errors="coerce").astype(float)
    for c in cohort.categorical_features:
        out[c] = t[c].astype(object).where(t[c].notna(), np.nan)
    return out


class ClinicalEncoder:
    """A preprocessor fit on the given training subjects; records which subjects it saw."""

    def __init__(self, cohort: Cohort):
        self.cohort = cohort
        self.transformer = make_preprocessor(cohort.numeric_features,
                                             cohort.categorical_features)
        self.fitted_subjects: list[str] = []

    def fit(self, subject_ids) -> "ClinicalEncoder":
        subj = self.cohort.subjects.set_index("subject_id").loc[list(subject_ids)].reset_index()
        self.transformer.fit(feature_frame(self.cohort, subj))
        self.fitted_subjects = list(subject_ids)
        return self

    def transform_subjects(self, subject_ids) -> np.ndarray:
        subj = self.cohort.subjects.set_index("subject_id").loc[list(subject_ids)].reset_index()
        return self.transformer.transform(feature_frame(self.cohort, subj)).astype(np.float32)

    def transform_images(self, images: pd.DataFrame) -> np.ndarray:
        """One clinical vector per image row (its subject's values)."""
        return self.transformer.transform(feature_frame(self.cohort, images)).astype(np.float32)

    @property
    def feature_names(self) -> list[str]:
        return list(self.transformer.get_feature_names_out())

    def feature_groups(self) -> dict[str, list[int]]:
        """Output column indices of each input feature (one-hot levels and indicators)."""
        names = self.feature_names
        groups: dict[str, list[int]] = {}
        for f in [*self.cohort.numeric_features, *self.cohort.categorical_features]:
            groups[f] = [i for i, n in enumerate(names)
                         if n.split("__", 1)[1] == f
                         or n.split("__", 1)[1].startswith(f + "_")
                         or n.split("__", 1)[1].startswith(f"missingindicator_{f}")]
        return groups
