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

An encoder is handed over as data, never as a pickle: :meth:`ClinicalEncoder.to_json` writes,
for each preprocessor, the feature lists, the numeric imputation medians, the columns with a
missing indicator, the scaler's means and scales, the categorical imputation values and the
one-hot categories, in output column order; :meth:`ClinicalEncoder.from_json` rebuilds an
encoder whose :meth:`~ClinicalEncoder.transform_images` gives exactly the fitted one's matrix
(:class:`FittedPreprocessor` computes the ColumnTransformer's transform in numpy).
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


def _plain(value):
    """A JSON-able Python value of a category or imputation value (numpy scalars unwrapped)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"clinical category {value!r} ({type(value).__name__}) cannot be written "
                    "as JSON")


def preprocessor_data(tf: ColumnTransformer) -> dict:
    """The fitted state of a :func:`make_preprocessor` transformer as plain data."""
    parts = tf.named_transformers_
    data: dict = {"numeric": None, "categorical": None,
                  "feature_names": [str(n) for n in tf.get_feature_names_out()]}
    if "num" in parts:
        imp, scale = parts["num"]["impute"], parts["num"]["scale"]
        feats = [str(f) for f in imp.feature_names_in_]
        ind = imp.indicator_.features_ if imp.indicator_ is not None else []
        data["numeric"] = {"features": feats,
                           "medians": [float(v) for v in imp.statistics_],
                           "indicator_features": [feats[i] for i in ind],
                           "mean": [float(v) for v in scale.mean_],
                           "scale": [float(v) for v in scale.scale_]}
    if "cat" in parts:
        imp, onehot = parts["cat"]["impute"], parts["cat"]["onehot"]
        feats = [str(f) for f in imp.feature_names_in_]
        ind = imp.indicator_.features_ if imp.indicator_ is not None else []
        data["categorical"] = {"features": feats,
                               "fill_values": [_plain(v) for v in imp.statistics_],
                               "indicator_features": [feats[i] for i in ind],
                               "categories": [[_plain(v) for v in c]
                                              for c in onehot.categories_]}
    return data


class FittedPreprocessor:
    """A fitted :func:`make_preprocessor` rebuilt from :func:`preprocessor_data`: the same
    transform, computed in numpy (median imputation + missing indicators + standardisation;
    most-frequent imputation + missing indicators + one-hot encoding, unseen categories all
    zeros), in the same output column order."""

    def __init__(self, data: dict):
        self.data = data
        num, cat = data.get("numeric"), data.get("categorical")
        self._num = None if not num else {
            "features": list(num["features"]),
            "medians": np.asarray(num["medians"], dtype=np.float64),
            "indicators": [num["features"].index(f) for f in num["indicator_features"]],
            "mean": np.asarray(num["mean"], dtype=np.float64),
            "scale": np.asarray(num["scale"], dtype=np.float64)}
        self._cat = None if not cat else {
            "features": list(cat["features"]),
            "fill": list(cat["fill_values"]),
            "indicators": [cat["features"].index(f) for f in cat["indicator_features"]],
            "codes": [{v: i for i, v in enumerate(c)} for c in cat["categories"]]}
        width = sum(len(p["mean"]) for p in [self._num] if p) + sum(
            len(c) for c in (cat or {}).get("categories", []))
        if width != len(data["feature_names"]):
            raise ValueError(f"clinical preprocessor data: {width} output columns, but "
                             f"{len(data['feature_names'])} feature names")

    def get_feature_names_out(self) -> np.ndarray:
        return np.asarray(self.data["feature_names"], dtype=object)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        if self._num:
            p = self._num
            x = frame[p["features"]].to_numpy(dtype=np.float64, copy=True)
            missing = np.isnan(x)
            x = np.where(missing, p["medians"][None, :], x)
            x = np.hstack([x, missing[:, p["indicators"]].astype(np.float64)])
            x -= p["mean"]
            x /= p["scale"]
            blocks.append(x)
        if self._cat:
            p = self._cat
            x = frame[p["features"]].to_numpy(dtype=object, copy=True)
            missing = np.asarray(x != x, dtype=bool)  # NaN (what scikit-learn's imputer sees)
            columns = [[p["fill"][j] if m else v for v, m in zip(x[:, j], missing[:, j])]
                       for j in range(x.shape[1])]
            columns += [missing[:, j].tolist() for j in p["indicators"]]
            for values, codes in zip(columns, p["codes"]):
                block = np.zeros((len(values), len(codes)), dtype=np.float64)
                idx = np.array([codes.get(v, -1) for v in values], dtype=np.int64)
                hit = np.flatnonzero(idx >= 0)
                block[hit, idx[hit]] = 1.0
                blocks.append(block)
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float64)
        return np.hstack(blocks)


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

    def to_json(self) -> dict:
        """The fitted encoder as plain data (JSON-able; no pickle): see the module docstring."""
        return {"levels": {level: {"numeric": list(num), "categorical": list(cat)}
                           for level, (num, cat) in self.levels.items()},
                "preprocessors": {level: (tf.data if isinstance(tf, FittedPreprocessor)
                                          else preprocessor_data(tf))
                                  for level, tf in self.transformers.items()},
                "fitted_subjects": [str(s) for s in self.fitted_subjects]}

    @classmethod
    def from_json(cls, data: dict) -> "ClinicalEncoder":
        """An encoder rebuilt from :meth:`to_json` (for transforming only: it cannot be fit)."""
        enc = cls.__new__(cls)
        enc.levels = {level: (list(v["numeric"]), list(v["categorical"]))
                      for level, v in data["levels"].items()}
        enc.transformers = {level: FittedPreprocessor(d)
                            for level, d in data["preprocessors"].items()}
        enc.fitted_subjects = list(data["fitted_subjects"])
        enc._cohort = None
        return enc

    @property
    def input_columns(self) -> list[str]:
        """The cohort columns the encoder reads (subject-level, then image-level)."""
        return [c for num, cat in self.levels.values() for c in (*num, *cat)]

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
