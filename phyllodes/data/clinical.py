"""Clinical preprocessing, fit on the training subjects of a fold only.

:func:`make_preprocessor` is a scikit-learn ColumnTransformer: numeric features are imputed
with the training median (plus a missing-indicator column) and standardised; categorical
features are imputed with the most frequent training category (plus a missing indicator) and
one-hot encoded, ignoring categories never seen in training.

:class:`ClinicalEncoder` holds two of them. Subject-level features (one value per patient) are
fit on one row per *subject* of the fold's training subjects, so subjects with many images do
not weigh more; image-level features (side, view, transducer: they may differ between a
subject's images) are fit on the image rows of those same subjects. Every image then gets one
vector: its subject's features followed by its own. A cohort without clinical features gets
vectors of width 0 (the study runs image-only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from phyllodes.data.cohort import Cohort


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


def feature_frame(table: pd.DataFrame, numeric: list[str], categorical: list[str]
                  ) -> pd.DataFrame:
    """The feature columns of ``table``, typed for scikit-learn (floats; objects with NaN)."""
    out = pd.DataFrame(index=table.index)
    for c in numeric:
        out[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    for c in categorical:
        out[c] = table[c].astype(object).where(table[c].notna(), np.nan)
    return out


class ClinicalEncoder:
    """The clinical inputs of a fold: preprocessors fit on its training subjects only; records
    which subjects they saw (``fitted_subjects``)."""

    def __init__(self, cohort: Cohort):
        cfg = cohort.config
        self.levels = {"subject": (list(cfg.numeric_features), list(cfg.categorical_features)),
                       "image": (list(cfg.image_numeric_features),
                                 list(cfg.image_categorical_features))}
        self.transformers = {level: make_preprocessor(*cols)
                             for level, cols in self.levels.items() if any(cols)}
        self.fitted_subjects: list[str] = []
        self._cohort = cohort  # for fit only; not pickled with the run's checkpoint

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cohort"}

    def fit(self, subject_ids) -> "ClinicalEncoder":
        ids = list(subject_ids)
        cohort = self._cohort
        tables = {"subject": cohort.subjects.set_index("subject_id").loc[ids].reset_index(),
                  "image": cohort.images[cohort.images["subject_id"].isin(set(ids))]}
        for level, tf in self.transformers.items():
            tf.fit(feature_frame(tables[level], *self.levels[level]))
        self.fitted_subjects = ids
        return self

    def transform_images(self, images: pd.DataFrame) -> np.ndarray:
        """One vector per image row: its subject's features, then its own (float32)."""
        parts = [tf.transform(feature_frame(images, *self.levels[level]))
                 for level, tf in self.transformers.items()]
        if not parts:
            return np.zeros((len(images), 0), dtype=np.float32)
        return np.hstack(parts).astype(np.float32)

    @property
    def width(self) -> int:
        """Length of the vectors (0 for a cohort without clinical features)."""
        return len(self.feature_names)

    @property
    def feature_names(self) -> list[str]:
        return [n for tf in self.transformers.values() for n in tf.get_feature_names_out()]

    def feature_groups(self) -> dict[str, list[int]]:
        """Output column indices of each input feature (one-hot levels and indicators)."""
        names = [n.split("__", 1)[1] for n in self.feature_names]
        groups: dict[str, list[int]] = {}
        for numeric, categorical in self.levels.values():
            for f in [*numeric, *categorical]:
                groups[f] = [i for i, n in enumerate(names)
                             if n == f or n.startswith(f + "_")
                             or n.startswith(f"missingindicator_{f}")]
        return groups
