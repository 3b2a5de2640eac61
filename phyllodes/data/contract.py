"""The data contract's checks, one named function per check, run over every stage that can run.

:func:`run_checks` reads ``cohort.yaml`` and ``cohort.csv`` and runs the checks in order. A
check needs only what it reads: a broken YAML does not hide the CSV's problems (label and
feature checks are then skipped, and the report says so), and a missing column skips only the
checks of that column. Every problem names its file, line and column and says how to fix it.

Normalisations (each logged in the report and documented in data/README.md):

* a UTF-8 byte-order mark is dropped; blank lines are skipped;
* leading and trailing whitespace is stripped from header names and from every value;
* empty fields beyond the header's last column (trailing commas) are dropped;
* backslashes in image and mask paths become forward slashes;
* ROI coordinates written with a zero fraction (``12.0``) are read as integers;
* a row whose four ROI cells are all empty is used uncropped;
* every value (subject ids, labels, categories, paths, ...) and the YAML's names and values are
  compared in Unicode NFC (``é`` as one code point, never ``e`` + a combining accent); a path
  whose file exists on disk under another normalisation of the same name uses the file's
  spelling;
* an image's EXIF orientation is applied (the image as a viewer shows it); colour, palette and
  CMYK images are converted to gray by luma (a note says how many), transparency is noted.

Rows leave the cohort only through the YAML's ``exclude`` rules, each logged with its count.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import logging
import math
import os
import re
import unicodedata
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, UnidentifiedImageError

from phyllodes.data.imageio import WIDE_MODES, gray8, mask_array, orientation, upright
from phyllodes.data.references import ReferenceSpec, parse_references, value_problem

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("subject_id", "image_path", "label")
ROI_COLUMNS = ("roi_x0", "roi_y0", "roi_x1", "roi_y1")
MASK_COLUMN = "mask_path"
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, *ROI_COLUMNS, MASK_COLUMN)
DEFAULT_POSITIVE = ("borderline", "malignant")
DEFAULT_NEGATIVE = ("benign",)
DEFAULT_MISSING = ("", "NA", "N/A", "nan", "not available", "unknown")
#: Plausible ranges of common numeric fields, used unless cohort.yaml's ``ranges`` says other.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "age": (0, 120), "bmi": (10, 100), "tumor_size_mm": (0, 500), "tumour_size_mm": (0, 500),
    "height_cm": (50, 250), "weight_kg": (20, 400)}


@dataclass(frozen=True)
class Problem:
    """One violation of the contract: its kind (for the summary), place and message (with the
    fix)."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class CohortConfig:
    """The contents of ``cohort.yaml`` (see data/README.md for every key)."""

    name: str
    positive_labels: tuple[str, ...] = DEFAULT_POSITIVE
    negative_labels: tuple[str, ...] = DEFAULT_NEGATIVE
    numeric_features: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    image_numeric_features: tuple[str, ...] = ()
    image_categorical_features: tuple[str, ...] = ()
    missing_values: tuple[str, ...] = DEFAULT_MISSING
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    feature_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: tuple[dict, ...] = ()
    unused_columns: tuple[str, ...] = ()
    citation: str = ""
    license: str = ""
    description: str = ""
    #: the cohort's own folds (e.g. its authors'), a splits file relative to the cohort folder
    splits: str = ""
    #: reader references (a clinician's assessment of the case): compared with, never inputs
    references: dict[str, ReferenceSpec] = field(default_factory=dict)

    @property
    def reference_columns(self) -> list[str]:
        """The columns holding reader references (never model inputs)."""
        return [r.column for r in self.references.values()]

    @property
    def subject_features(self) -> list[str]:
        """Features with one value per subject (the same on each of its image rows)."""
        return list(self.numeric_features) + list(self.categorical_features)

    @property
    def image_features(self) -> list[str]:
        """Features of an image, which may differ between a subject's images."""
        return list(self.image_numeric_features) + list(self.image_categorical_features)

    @property
    def features(self) -> list[str]:
        return self.subject_features + self.image_features

    @property
    def all_numeric(self) -> list[str]:
        return list(self.numeric_features) + list(self.image_numeric_features)

    @property
    def all_categorical(self) -> list[str]:
        return list(self.categorical_features) + list(self.image_categorical_features)

    def range_of(self, column: str) -> tuple[float, float] | None:
        """Plausible range of a numeric feature: cohort.yaml's, else the documented default."""
        return self.ranges.get(column, DEFAULT_RANGES.get(column))

    def restricted(self, features: list[str]) -> "CohortConfig":
        """The same configuration using only ``features`` (a named feature set)."""
        keep = set(features)

        def f(cols):
            return tuple(c for c in cols if c in keep)
        return replace(self, numeric_features=f(self.numeric_features),
                       categorical_features=f(self.categorical_features),
                       image_numeric_features=f(self.image_numeric_features),
                       image_categorical_features=f(self.image_categorical_features))



#: cohort.yaml keys and what each must be
LIST_KEYS = ("positive_labels", "negative_labels", "numeric_features", "categorical_features",
             "image_numeric_features", "image_categorical_features", "missing_values",
             "unused_columns")
MAP_KEYS = ("ranges", "categories", "feature_sets", "references")
TEXT_KEYS = ("name", "citation", "license", "description", "splits")
YAML_KEYS = (*TEXT_KEYS, *LIST_KEYS, *MAP_KEYS, "exclude")
#: strings that often mean "missing" in hospital exports (compared case-insensitively)
MISSING_LIKE = ("", "na", "n/a", "n.a.", "nan", "null", "none", "nil", "-", "--", "?",
                "missing", "unknown", "not available", "not applicable", "#n/a", "not known")
MIN_IMAGE_SIDE = 8
#: the most pixels an image may declare (Pillow's decompression-bomb limit, about 9459x9459):
#: a larger header is a corrupt or hostile file, reported instead of decoded
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: the longest cohort.csv cell (Python's csv field limit)
MAX_CELL_CHARS = csv.field_size_limit()
#: control, zero-width and direction characters: invisible, yet they make two values differ
INVISIBLE = re.compile(r"[\x00-\x1f\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
#: masks with 3..this many distinct values are label maps (more are anti-aliased edges)
MAX_LABEL_VALUES = 8
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _hint(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _lines(lines, limit: int = 6) -> str:
    lines = sorted(int(x) for x in lines)
    shown = ", ".join(str(x) for x in lines[:limit])
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


@dataclass
class Checks:
    """What the checks share: the files, what has been read so far, the problems and notes."""

    root: Path
    folds: int | None = None
    check_images: bool = True
    #: False for patients to predict (``python -m phyllodes predict``): the label column may be
    #: absent or empty, no class balance is asked for, and a feature may be missing on every
    #: row (it is imputed as in training, and said so)
    labelled: bool = True
    #: the cohort.yaml to read instead of the folder's own (a model's input declaration)
    yaml_file: Path | None = None
    config: CohortConfig | None = None
    header: list[str] | None = None
    df: pd.DataFrame | None = None      #: all values as stripped strings, plus '_line'
    exclusions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["column", "values", "reason", "n_rows"]))
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    numeric: dict[str, pd.Series] = field(default_factory=dict)
    roi: pd.DataFrame | None = None
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def csv_path(self) -> Path:
        return self.root / "cohort.csv"

    @property
    def yaml_path(self) -> Path:
        return self.yaml_file or self.root / "cohort.yaml"

    def add(self, kind: str, where: str, message: str) -> None:
        self.problems.append(Problem(kind, where, message))

    def at(self, i, col: str) -> str:
        """'cohort.csv line N, column 'col'' for row index ``i``."""
        return f"{self.csv_path.name} line {int(self.df.at[i, '_line'])}, column '{col}'"

    def has(self, *cols: str) -> bool:
        return self.df is not None and all(c in self.df.columns for c in cols)

    def fingerprint(self) -> str:
        """Digest of what a run can learn from: the validated, normalised rows (subject, image
        path, label, ROI, mask path and every declared feature, in order) and the classes and
        features of cohort.yaml. Reader references, unused columns, descriptions and the
        contract's own code are not in it: correcting a reference value or rewording a check
        reuses every run, a changed value a model sees never does."""
        import json
        cfg = self.config
        table = self.cohort_table()
        cols = [c for c in (*REQUIRED_COLUMNS, "y", *ROI_COLUMNS, MASK_COLUMN, *cfg.features)
                if c in table.columns]
        h = hashlib.sha256()
        h.update(table[cols].to_csv(index=False).encode())
        h.update(json.dumps({k: list(getattr(cfg, k)) for k in (
            "positive_labels", "negative_labels", "numeric_features", "categorical_features",
            "image_numeric_features", "image_categorical_features")}).encode())
        return h.hexdigest()[:16]

    def cohort_table(self) -> pd.DataFrame:
        """The validated rows, typed: numbers as floats, ROI as integers, missing as NaN/None,
        ``y`` (1 = positive), ``csv_line`` and absolute paths."""
        df, cfg = self.df.copy(), self.config
        missing = set(cfg.missing_values)
        for col, vals in self.numeric.items():
            df[col] = vals
        for col in cfg.all_categorical:
            df[col] = df[col].where(~df[col].isin(missing), other=None)
        if self.roi is not None:
            for c in ROI_COLUMNS:
                df[c] = self.roi[c]
        df["image_abspath"] = [str(self.root / p) for p in df["image_path"]]
        if MASK_COLUMN in df.columns:
            df["mask_abspath"] = [str(self.root / p) if p else "" for p in df[MASK_COLUMN]]
        if "label" not in df.columns:  # patients to predict (labelled=False)
            df["label"] = ""
        df["y"] = df["label"].isin(cfg.positive_labels).astype(int)
        if not self.labelled:  # an unlabelled row has no class
            df["y"] = df["y"].where(df["label"] != "").astype(float)
        return df.rename(columns={"_line": "csv_line"}).reset_index(drop=True)


# --------------------------------------------------------------------------- cohort.yaml


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that records every mapping key written twice (at any nesting
    level; PyYAML itself silently keeps the last value) in ``duplicates`` as (key, first line,
    second line)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[object, int, int]] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.duplicates.append((key, seen[key], line))
                else:
                    seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> tuple[object, list[tuple[object, int, int]]]:
    """The YAML document, and every duplicated mapping key as (key, first line, second line)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def _as_written(path: Path, key: str, i: int) -> tuple[str, int] | None:
    """The text and line of item ``i`` of the top-level list ``key`` as written in the YAML
    file (``yes`` for what YAML reads as True), or None when it cannot be found."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for k, v in root.value:
        if getattr(k, "value", None) == key and isinstance(v, yaml.SequenceNode) \
                and i < len(v.value) and isinstance(v.value[i], yaml.ScalarNode):
            return v.value[i].value, v.value[i].start_mark.line + 1
    return None


def _nfc(x):
    """Strings (also inside lists and mappings) in Unicode NFC."""
    if isinstance(x, str):
        return unicodedata.normalize("NFC", x)
    if isinstance(x, list):
        return [_nfc(v) for v in x]
    if isinstance(x, dict):
        return {_nfc(k): _nfc(v) for k, v in x.items()}
    return x


def read_config(ck: Checks) -> None:
    """cohort.yaml: valid YAML, a mapping, known keys of the right types, consistent lists."""
    where = str(ck.yaml_path)
    raw = _yaml_mapping(ck)
    if raw is None:
        return
    for key in raw:
        if key not in YAML_KEYS:
            ck.add("yaml", where, f"unknown key '{key}'{_hint(key, YAML_KEYS)}: it would be "
                   f"ignored; the keys are {', '.join(YAML_KEYS)}")
    name = raw.get("name")
    if not name:
        ck.add("yaml", where, "key 'name' is missing; add e.g. 'name: my-cohort' (it names "
               "tables/<name>/, figures/<name>/ and results/<name>/)")
    elif not isinstance(name, str) or not NAME_PATTERN.match(name):
        ck.add("yaml", where, f"name {name!r} must be letters, digits, '.', '_' or '-' (it "
               "becomes a folder name), e.g. 'mgh-phyllodes'")
    lists = {k: _string_list(ck, raw, k) for k in LIST_KEYS}
    pos, neg = _class_labels(ck, raw, lists)
    feats = {k: lists[k] for k in ("numeric_features", "categorical_features",
                                   "image_numeric_features", "image_categorical_features")}
    seen = _feature_owners(ck, feats, lists["unused_columns"])
    numeric = set(feats["numeric_features"]) | set(feats["image_numeric_features"])
    categorical = set(feats["categorical_features"]) | set(feats["image_categorical_features"])
    ranges = _ranges(ck, raw.get("ranges"), numeric)
    categories = _categories(ck, raw.get("categories"), categorical)
    sets = _feature_sets(ck, raw.get("feature_sets"), set(seen))
    exclude = _exclude_rules(ck, raw.get("exclude"))
    feature_like = set(seen) | {c for cols in sets.values() for c in cols}
    references = parse_references(raw.get("references"), feature_like, set(RESERVED_COLUMNS),
                                  lambda msg: ck.add("yaml", where, msg))
    for k in ("citation", "license", "description", "splits"):
        if k in raw and not isinstance(raw[k], str):
            ck.add("yaml", where, f"'{k}' must be text; quote it")
    _check_splits_path(ck, raw.get("splits"))
    # built even when some keys have problems: the CSV checks use what could be read
    ck.config = CohortConfig(
        name=str(name or "unnamed"), positive_labels=tuple(pos), negative_labels=tuple(neg),
        numeric_features=tuple(feats["numeric_features"]),
        categorical_features=tuple(feats["categorical_features"]),
        image_numeric_features=tuple(feats["image_numeric_features"]),
        image_categorical_features=tuple(feats["image_categorical_features"]),
        missing_values=tuple(lists["missing_values"]) if "missing_values" in raw
        else DEFAULT_MISSING,
        ranges=ranges, categories=categories, feature_sets=sets, exclude=tuple(exclude),
        unused_columns=tuple(lists["unused_columns"]), references=references,
        **{k: raw[k] if isinstance(raw.get(k), str) else "" for k in
           ("citation", "license", "description", "splits")})


def _yaml_mapping(ck: Checks) -> dict | None:
    """cohort.yaml read as a mapping (its text in NFC), or None with the problem added: missing,
    not UTF-8, not YAML (with line and column), not a mapping. A key written twice is a
    problem too (YAML would keep the second silently)."""
    path = ck.yaml_path
    where = str(path)
    if not path.exists():
        ck.add("yaml", where, "file not found; write a cohort.yaml beside cohort.csv (see "
               "data/README.md)")
        return None
    try:
        raw, duplicates = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        ck.add("yaml", where, "not UTF-8 text; save it as UTF-8")
        return None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        ck.add("yaml", where + at, f"not valid YAML ({getattr(e, 'problem', e)}); check the "
               "indentation and quote values that contain ':' or '#'")
        return None
    for key, first, second in duplicates:
        ck.add("yaml", f"{where} line {second}", f"key '{key}' is written twice (lines {first} "
               f"and {second}); YAML would silently keep only the second: merge them into one")
    raw = raw or {}
    if not isinstance(raw, dict):
        ck.add("yaml", where, "must be a mapping of keys to values (key: value lines)")
        return None
    return _nfc(raw)


def _class_labels(ck: Checks, raw: dict, lists: dict[str, list[str]]
                  ) -> tuple[list[str], list[str]]:
    """The positive and negative labels (the defaults where not given): each non-empty, no
    label in both."""
    where = str(ck.yaml_path)
    pos = lists["positive_labels"] if "positive_labels" in raw else list(DEFAULT_POSITIVE)
    neg = lists["negative_labels"] if "negative_labels" in raw else list(DEFAULT_NEGATIVE)
    for k, v in (("positive_labels", pos), ("negative_labels", neg)):
        if not v:
            ck.add("yaml", where, f"'{k}' is empty; list at least one label")
    both = sorted(set(pos) & set(neg))
    if both:
        ck.add("yaml", where, f"label(s) {', '.join(both)} are in both positive_labels and "
               "negative_labels; each label belongs to one class")
    return pos, neg


def _feature_owners(ck: Checks, feats: dict[str, list[str]], unused: list[str]
                    ) -> dict[str, str]:
    """Each declared feature and the list that declares it; a contract column, a feature in
    two lists, or a feature also in unused_columns is a problem."""
    where = str(ck.yaml_path)
    seen: dict[str, str] = {}
    for k, cols in feats.items():
        for c in cols:
            if c in RESERVED_COLUMNS:
                ck.add("yaml", where, f"'{c}' in {k} is a column of the contract itself, not a "
                       "feature; remove it from the list")
            elif c in seen:
                ck.add("yaml", where, f"feature '{c}' is listed in both {seen[c]} and {k}; "
                       "list each feature once")
            seen.setdefault(c, k)
    for c in unused:
        if c in seen:
            ck.add("yaml", where, f"'{c}' is in unused_columns and in {seen[c]}; it is either "
                   "a feature or unused")
    return seen


def _check_splits_path(ck: Checks, own) -> None:
    """The cohort's own folds file: a relative path inside the cohort folder that exists."""
    where = str(ck.yaml_path)
    if isinstance(own, str) and own:
        sp = Path(own)
        if sp.is_absolute() or ".." in sp.parts:
            ck.add("yaml", where, f"splits '{own}' must be a path inside the cohort folder "
                   "(relative, without '..')")
        elif not (ck.root / sp).is_file():
            ck.add("yaml", where, f"splits '{own}': no such file in {ck.root}; write the "
                   "cohort's own folds there as subject_id,fold lines, or remove the key")


def _string_list(ck: Checks, raw: dict, key: str) -> list[str]:
    """A YAML list of strings; integers are taken as their text, anything else is a problem
    (YAML reads yes/no as booleans and empty items as null: quote them)."""
    v = raw.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        ck.add("yaml", str(ck.yaml_path), f"'{key}' must be a list, e.g. {key}: [a, b]")
        return []
    out = []
    for i, x in enumerate(v):
        if isinstance(x, str):
            out.append(x.strip())
        elif isinstance(x, int) and not isinstance(x, bool):
            out.append(str(x))
        elif x is None:
            ck.add("yaml", str(ck.yaml_path), f"'{key}' item {i + 1} is empty (null); write '' "
                   "for the empty string")
        else:
            written, line = _as_written(ck.yaml_path, key, i) or (str(x), None)
            at = f" line {line}" if line else ""
            ck.add("yaml", f"{ck.yaml_path}{at}", f"'{key}' item {i + 1} ({written}) was read "
                   f"as {x!r} ({type(x).__name__}), not as text; quote it: '{written}'")
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        ck.add("yaml", str(ck.yaml_path), f"'{key}' lists {', '.join(dup)} more than once")
    return out


def _ranges(ck: Checks, v, numeric: set[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    if v is None:
        return out
    where = str(ck.yaml_path)
    if not isinstance(v, dict):
        ck.add("yaml", where, "'ranges' must map numeric features to [low, high], e.g. "
               "ranges: {age: [18, 100]}")
        return out
    for col, r in v.items():
        if col not in numeric:
            ck.add("yaml", where, f"ranges: '{col}' is not a declared numeric feature"
                   f"{_hint(col, numeric)}")
        elif (not isinstance(r, list) or len(r) != 2
              or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)
              or r[0] >= r[1]):
            ck.add("yaml", where, f"ranges: '{col}' must be [low, high] with low < high, got "
                   f"{r!r}")
        else:
            out[col] = (float(r[0]), float(r[1]))
    return out


def _categories(ck: Checks, v, categorical: set[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    if v is None:
        return out
    where = str(ck.yaml_path)
    if not isinstance(v, dict):
        ck.add("yaml", where, "'categories' must map categorical features to their allowed "
               "values, e.g. categories: {menopausal_status: [pre, post]}")
        return out
    for col, vals in v.items():
        if col not in categorical:
            ck.add("yaml", where, f"categories: '{col}' is not a declared categorical feature"
                   f"{_hint(col, categorical)}")
        elif not isinstance(vals, list) or not vals:
            ck.add("yaml", where, f"categories: '{col}' must be a non-empty list of values")
        else:
            out[col] = tuple(_string_list(ck, {col: vals}, col))
    return out


def _feature_sets(ck: Checks, v, features: set[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    if v is None:
        return out
    where = str(ck.yaml_path)
    if not isinstance(v, dict):
        ck.add("yaml", where, "'feature_sets' must map set names to lists of declared "
               "features, e.g. feature_sets: {paper: [age, tumor_size_mm]}")
        return out
    for name, cols in v.items():
        if name == "all":
            ck.add("yaml", where, "feature_sets: 'all' is built in (every feature); use "
                   "another name")
            continue
        cols = _string_list(ck, {f"feature_sets.{name}": cols}, f"feature_sets.{name}")
        unknown = [c for c in cols if c not in features]
        for c in unknown:
            ck.add("yaml", where, f"feature_sets.{name}: '{c}' is not a declared feature"
                   f"{_hint(c, features)}")
        if not unknown:
            out[str(name)] = tuple(cols)
    return out


def _exclude_rules(ck: Checks, v) -> list[dict]:
    if v is None:
        return []
    where = str(ck.yaml_path)
    if not isinstance(v, list):
        ck.add("yaml", where, "'exclude' must be a list of rules {column, values, reason}")
        return []
    out = []
    for i, rule in enumerate(v):
        if not (isinstance(rule, dict) and {"column", "values", "reason"} <= set(rule)):
            ck.add("yaml", where, f"exclude rule {i + 1} needs 'column', 'values' and 'reason' "
                   "keys")
            continue
        values = _string_list(ck, {"values": rule["values"]}, "values")
        if not isinstance(rule["reason"], str) or not rule["reason"].strip():
            ck.add("yaml", where, f"exclude rule {i + 1}: 'reason' must say why, in words")
        out.append({"column": str(rule["column"]), "values": values,
                    "reason": str(rule["reason"])})
    return out


# --------------------------------------------------------------------------- cohort.csv


def read_csv(ck: Checks) -> None:
    """cohort.csv: UTF-8, comma-separated, one record per line, as many values as columns, a
    header of unique, non-empty names; values stripped of surrounding whitespace."""
    name = ck.csv_path.name
    text = _csv_text(ck)
    if text is None or _layout_problem(ck, name, text):
        return
    records = _records(ck, text)
    if records is None:
        return
    header, rows = records[0][2], records[1:]
    n0 = len(ck.problems)
    _check_header(ck, header)
    good = _full_rows(ck, name, rows, len(header))
    if len(ck.problems) > n0 and (len(good) == 0 or ck.header is None):
        return
    if not good:
        ck.add("csv", name, "the file has a header but no rows; add one row per image")
        return
    df = pd.DataFrame(good, columns=["_line", *header]).astype({"_line": int})
    ck.df = _normalised(ck, name, df, header).set_index(pd.RangeIndex(len(df)))


def _csv_text(ck: Checks) -> str | None:
    """cohort.csv's text, or None with the problem added: missing, an Excel workbook, not
    UTF-8 (with the encoding it looks saved in), or empty. A UTF-8 byte-order mark is dropped."""
    path, name = ck.csv_path, ck.csv_path.name
    if not path.exists():
        ck.add("csv", str(path), "file not found; write one row per image (see "
               "data/README.md)")
        return None
    raw = path.read_bytes()
    for magic, what in ((b"PK\x03\x04", "an Excel workbook, not a CSV (an .xlsx file is a ZIP "
                                         "archive)"),
                        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel workbook, not a CSV "
                                                             "(an Excel 97-2003 .xls file)")):
        if raw.startswith(magic):
            ck.add("csv", str(path), f"the file is {what}: save as CSV UTF-8 (in Excel: File > "
                   "Save As > 'CSV UTF-8 (Comma delimited)') and name that file cohort.csv")
            return None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        ck.notes.append(f"{name}: the UTF-8 byte-order mark was dropped")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        guess = ("UTF-16 (Excel 'Unicode Text')" if raw[:2] in (b"\xff\xfe", b"\xfe\xff")
                 else "Windows-1252 or Latin-1 (Excel's default 'CSV')")
        ck.add("csv", f"{name} line {line}", f"byte 0x{raw[e.start]:02x} is not UTF-8: the file "
               f"looks saved as {guess}; save it as 'CSV UTF-8', or convert it, e.g. "
               f"iconv -f cp1252 -t utf-8 {name} > fixed.csv")
        return None
    if not text.strip():
        ck.add("csv", name, "the file is empty; it needs a header row "
               f"({', '.join(REQUIRED_COLUMNS)}, features...) and one row per image")
        return None
    return text


def _layout_problem(ck: Checks, name: str, text: str) -> bool:
    """Whether the text is laid out as something other than a comma-separated table (Excel's
    ``sep=`` line, semicolons or tabs, stray double quotes), each problem added."""
    first = text.splitlines()[0]
    sep_line = re.fullmatch(r'\s*"?(sep=[^"]?)"?[,;\t]*\s*', first, flags=re.IGNORECASE)
    if sep_line:
        hint = sep_line.group(1)
        ck.add("csv", f"{name} line 1", f"delete line 1 ({hint}): it is Excel's separator "
               "hint, not part of a CSV; the header must be line 1"
               + ("" if hint.lower() == "sep=," else ", and the values separated by commas"))
        return True
    for sep, sep_name in ((";", "semicolons"), ("\t", "tabs")):
        if first.count(sep) >= 2 and first.count(",") == 0:
            ck.add("csv", f"{name} line 1", f"the values are separated by {sep_name}, not "
                   "commas; save the file as comma-separated CSV (in Excel: 'CSV UTF-8 (Comma "
                   "delimited)')")
            return True
    odd = [i + 1 for i, line in enumerate(text.splitlines()) if line.count('"') % 2]
    for line in odd:
        ck.add("csv", f"{name} line {line}", "an odd number of double quotes: a quoted value "
               "opens here and runs on into the next lines, merging rows; remove the stray '\"' "
               "or close the quoted value on the same line")
    return bool(odd)


def _full_rows(ck: Checks, name: str, rows: list[tuple[int, int, list[str]]],
               width: int) -> list[list]:
    """The records with one value per column, as ``[line, *values]`` (trailing empty fields
    dropped, with a note); each other record is a problem naming its line."""
    good = []
    for line, end, values in rows:
        if end > line:
            ck.add("csv", f"{name} lines {line}-{end}", "a double quote opens a value that "
                   f"runs over {end - line + 1} lines, merging rows; remove the stray '\"' or "
                   "close the quoted value on the same line")
            continue
        if len(values) > width and not any(v.strip() for v in values[width:]):
            values = values[:width]
            ck.notes.append(f"{name} line {line}: empty fields after the last column dropped")
        if len(values) != width:
            more = len(values) > width
            ck.add("csv", f"{name} line {line}", f"{len(values)} values for {width} columns: "
                   + ("a value containing a comma must be quoted (\"a, b\")" if more
                      else "a value or a separator is missing; fill in the row"))
            continue
        good.append([line, *values])
    return good


def _normalised(ck: Checks, name: str, df: pd.DataFrame, header: list[str]) -> pd.DataFrame:
    """The values stripped of surrounding whitespace and in NFC, each change counted in a note
    (the same text is then the same value)."""
    stripped = 0
    for c in header:
        s = df[c].str.strip()
        changed = int((s != df[c]).sum())
        if changed:
            stripped += changed
            df[c] = s
    if stripped:
        ck.notes.append(f"{name}: leading/trailing whitespace stripped from {stripped} "
                        "value(s)")
    for c in header:
        s = df[c].map(_nfc)
        changed = int((s != df[c]).sum())
        if changed:
            df[c] = s
            ck.notes.append(f"{name}, column '{c}': {changed} value(s) written in decomposed "
                            "Unicode (e.g. 'e' + a combining accent) normalised to NFC, so the "
                            "same text is the same value")
    return df


def _records(ck: Checks, text: str) -> list[tuple[int, int, list[str]]] | None:
    """(first line, last line, values) of every non-blank record; None on a quoting error."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out, blank, prev = [], 0, 0
    try:
        for values in reader:
            start, prev = prev + 1, reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                blank += 1
                continue
            out.append((start, reader.line_num, values))
    except csv.Error as e:
        if "field limit" in str(e):
            ck.add("csv", f"{ck.csv_path.name} line {reader.line_num}", "a value is longer "
                   f"than {MAX_CELL_CHARS:,} characters, the longest cell a CSV may hold here; "
                   "a cell holds one value (a stray double quote can also run a value on over "
                   "the next lines): shorten it or fix the quoting")
            return None
        ck.add("csv", f"{ck.csv_path.name} line {reader.line_num}", f"cannot be read as CSV "
               f"({e}); a value with a double quote must be quoted as a whole, the quote "
               "doubled (\"a \"\"b\"\" c\")")
        return None
    if blank:
        ck.notes.append(f"{ck.csv_path.name}: {blank} blank line(s) skipped")
    return out


def _check_header(ck: Checks, header: list[str]) -> None:
    name = ck.csv_path.name
    clean = [h.strip() for h in header]
    if clean != header:
        ck.notes.append(f"{name}: whitespace stripped from header names")
    if [_nfc(h) for h in clean] != clean:
        clean = [_nfc(h) for h in clean]
        ck.notes.append(f"{name}: header names normalised to Unicode NFC")
    header[:] = clean
    problems = False
    for i, h in enumerate(clean):
        if not h:
            ck.add("csv", f"{name} line 1, column {i + 1}", "the header name is empty; name the "
                   "column or delete it (and its values)")
            problems = True
    for h in sorted({h for h in clean if h and clean.count(h) > 1}):
        idx = [str(i + 1) for i, x in enumerate(clean) if x == h]
        ck.add("csv", f"{name} line 1", f"column '{h}' appears {len(idx)} times (columns "
               f"{', '.join(idx)}); keep one and rename or delete the others")
        problems = True
    ck.header = None if problems else clean


def check_columns(ck: Checks) -> None:
    """Required columns, declared features, ROI columns together, exclusion columns."""
    if ck.header is None:
        return
    name, cols = ck.csv_path.name, ck.header
    for c in REQUIRED_COLUMNS:
        if c == "label" and not ck.labelled:
            continue
        if c not in cols:
            ck.add("columns", name, f"column '{c}' is missing (required by the contract)"
                   f"{_hint(c, cols)}; add it to the header")
    roi = [c for c in ROI_COLUMNS if c in cols]
    if roi and len(roi) != len(ROI_COLUMNS):
        ck.add("columns", name, f"ROI columns must come together ({', '.join(ROI_COLUMNS)}); "
               f"found only {', '.join(roi)}")
    cfg = ck.config
    if cfg is None:
        return
    for c in cfg.features:
        if c not in cols:
            ck.add("columns", name, f"column '{c}' is missing (declared in cohort.yaml)"
                   f"{_hint(c, cols)}; add it to the header, or remove it from cohort.yaml's "
                   "feature lists")
    for ref in cfg.references.values():
        if ref.column not in cols:
            ck.add("columns", name, f"column '{ref.column}' of reference '{ref.name}' is "
                   f"missing{_hint(ref.column, cols)}; add it to the header, or remove the "
                   "reference from cohort.yaml")
    for rule in cfg.exclude:
        if rule["column"] not in cols:
            ck.add("columns", str(ck.yaml_path), f"exclude rule names column "
                   f"'{rule['column']}', which {name} does not have{_hint(rule['column'], cols)}")
    used = {*RESERVED_COLUMNS, *cfg.features, *cfg.reference_columns, *cfg.unused_columns,
            *(rule["column"] for rule in cfg.exclude)}
    for c in cols:
        if c and c not in used:
            ck.notes.append(f"{name}, column '{c}': not used: declare it as a feature (or a "
                            "reader reference) in cohort.yaml, or list it under unused_columns"
                            f"{_hint(c, cfg.features)}")


def apply_exclusions(ck: Checks) -> None:
    """Drop the rows the YAML's exclude rules name; log each rule with its count."""
    if ck.df is None or ck.config is None:
        return
    rows = []
    for rule in ck.config.exclude:
        col = rule["column"]
        if col not in ck.df.columns:
            continue
        hit = ck.df[col].isin(rule["values"])
        rows.append({"column": col, "values": ", ".join(rule["values"]),
                     "reason": rule["reason"], "n_rows": int(hit.sum())})
        if hit.any():
            log.info("excluded %d row(s) of %s where %s in %s: %s", int(hit.sum()),
                        ck.csv_path.name, col, rule["values"], rule["reason"])
        ck.df = ck.df[~hit]
    ck.exclusions = pd.DataFrame(rows, columns=["column", "values", "reason", "n_rows"])
    if rows and not len(ck.df):
        counts = "; ".join(f"{r['column']} in [{r['values']}]: {r['n_rows']} row(s)"
                           for r in rows)
        ck.add("exclude", str(ck.yaml_path), f"the exclude rules remove every row of "
               f"{ck.csv_path.name} ({counts}); nothing would be left to study: check each "
               "rule's column and values")


# --------------------------------------------------------------------------- values


def check_subject_ids(ck: Checks) -> None:
    """Every row has a subject id; ids that differ only in letter case are the same patient."""
    if not ck.has("subject_id"):
        return
    ids = ck.df["subject_id"]
    for i in ck.df.index[ids == ""]:
        ck.add("subject_id", ck.at(i, "subject_id"), "empty; every image needs its subject's id")
    for i in ck.df.index[ids.str.contains(INVISIBLE, regex=True)]:
        ck.add("subject_id", ck.at(i, "subject_id"), f"{ids[i]!r} contains an invisible "
               f"(control or zero-width) character ({_invisible(ids[i])}); retype the id")
    folded: dict[str, set[str]] = defaultdict(set)
    for s in ids.unique():
        folded[s.casefold()].add(s)
    for variants in folded.values():
        if len(variants) > 1:
            shown = "; ".join(f"'{v}' (lines {_lines(ck.df.loc[ids == v, '_line'])})"
                              for v in sorted(variants))
            ck.add("subject_id", f"{ck.csv_path.name}, column 'subject_id'", f"ids {shown} "
                   "differ only in letter case: one patient would count as several and could "
                   "land in two folds; write each patient's id the same way")


def _invisible(value: str) -> str:
    """The invisible characters of a value, named (e.g. 'U+200B ZERO WIDTH SPACE')."""
    chars = dict.fromkeys(INVISIBLE.findall(value))
    return ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'control character')}"
                     for c in chars)


def check_labels(ck: Checks) -> None:
    """Every label is one the YAML declares."""
    if not ck.has("label"):
        return
    if ck.config is None:
        ck.skipped.append("labels (they need a valid cohort.yaml)")
        return
    cfg = ck.config
    known = [*cfg.positive_labels, *cfg.negative_labels]
    for lab, rows in ck.df.groupby("label", sort=False).groups.items():
        if lab in known or (not lab and not ck.labelled):
            continue
        for i in rows:
            ck.add("label", ck.at(i, "label"), "empty; every image needs its subject's label"
                   if not lab else f"unknown label '{lab}'{_hint(lab, known)}; use one of "
                   f"{sorted(known)} or declare it in cohort.yaml (positive_labels / "
                   "negative_labels, or an exclude rule)")


def _missing_like(value: str, declared: set[str]) -> bool:
    return value not in declared and value.strip().casefold() in MISSING_LIKE


def check_numeric(ck: Checks) -> None:
    """Numeric features are numbers (finite, dot decimals) or declared missing strings, inside
    their plausible range."""
    if ck.df is None or ck.config is None:
        return
    cfg = ck.config
    declared = set(cfg.missing_values)
    for col in cfg.all_numeric:
        if col not in ck.df.columns:
            continue
        raw = ck.df[col]
        vals = pd.Series(np.nan, index=raw.index, dtype=float)
        for i, v in raw.items():
            if v in declared:
                continue
            try:
                x = float(v)
            except ValueError:
                x = None
            if x is None or not math.isfinite(x):
                if _missing_like(v, declared):
                    why = (f"'{v}' looks like a missing-value marker but is not declared; add "
                           f"it to missing_values in cohort.yaml")
                elif re.fullmatch(r"[-+]?[\d.]+,\d+", v):
                    why = (f"'{v}' has a comma: write a dot as the decimal separator and no "
                           f"thousands separator (e.g. {v.replace(',', '.')} or "
                           f"{v.replace(',', '')})")
                else:
                    why = (f"'{v}' is not a number; write a number (without units), or one of "
                           f"the declared missing strings {sorted(declared)} (cohort.yaml "
                           "missing_values)")
                ck.add("numeric", ck.at(i, col), why)
                continue
            vals[i] = x
        rng = cfg.range_of(col)
        if rng is not None:
            lo, hi = rng
            for i in vals.index[(vals < lo) | (vals > hi)]:
                ck.add("range", ck.at(i, col), f"{vals[i]:g} is outside the plausible range "
                       f"[{lo:g}, {hi:g}]; correct it, mark it missing, or set ranges: "
                       f"{{{col}: [low, high]}} in cohort.yaml")
        ck.numeric[col] = vals


def check_categorical(ck: Checks) -> None:
    """Categorical values: no undeclared missing markers, only declared categories (when
    declared), no spellings that differ only in letter case or inner spaces."""
    if ck.df is None or ck.config is None:
        return
    cfg = ck.config
    declared = set(cfg.missing_values)
    for col in cfg.all_categorical:
        if col not in ck.df.columns:
            continue
        raw = ck.df[col]
        present = raw[~raw.isin(declared)]
        for v, rows in present.groupby(present, sort=False).groups.items():
            if INVISIBLE.search(v):
                ck.add("categorical", f"{ck.csv_path.name} lines "
                       f"{_lines(ck.df.loc[rows, '_line'])}, column '{col}'", f"{v!r} contains "
                       f"an invisible (control or zero-width) character ({_invisible(v)}): it "
                       "would be a category of its own; retype the value")
            elif _missing_like(v, declared):
                ck.add("categorical", f"{ck.csv_path.name} lines {_lines(ck.df.loc[rows, '_line'])}"
                       f", column '{col}'", f"'{v}' looks like a missing-value marker but is not "
                       "declared, so it would become a category; add it to missing_values in "
                       "cohort.yaml")
        allowed = cfg.categories.get(col)
        if allowed is not None:
            for v, rows in present.groupby(present, sort=False).groups.items():
                if v not in allowed and not _missing_like(v, declared):
                    ck.add("categorical", f"{ck.csv_path.name} lines "
                           f"{_lines(ck.df.loc[rows, '_line'])}, column '{col}'",
                           f"'{v}' is not one of the declared categories {list(allowed)}"
                           f"{_hint(v, allowed)}; correct it or add it to categories.{col}")
            continue
        folded: dict[str, set[str]] = defaultdict(set)
        for v in present.unique():
            folded[" ".join(v.casefold().split())].add(v)
        for variants in folded.values():
            if len(variants) > 1:
                shown = "; ".join(f"'{v}' (lines {_lines(ck.df.loc[raw == v, '_line'], 3)})"
                                  for v in sorted(variants))
                ck.add("categorical", f"{ck.csv_path.name}, column '{col}'", f"{shown} differ "
                       "only in letter case or spacing and would be different categories; write "
                       f"them the same way (or declare categories.{col} in cohort.yaml)")


def check_references(ck: Checks) -> None:
    """Reader references: every value is a declared category (or a probability in [0, 1]) or a
    declared missing string; a reference is never also a feature (checked in cohort.yaml)."""
    if ck.df is None or ck.config is None:
        return
    declared = set(ck.config.missing_values)
    for ref in ck.config.references.values():
        if ref.column not in ck.df.columns:
            continue
        raw = ck.df[ref.column]
        present = raw[~raw.isin(declared)]
        for v, rows in present.groupby(present, sort=False).groups.items():
            why = value_problem(ref, v)
            if why is None:
                continue
            if _missing_like(v, declared):
                why = (f"'{v}' looks like a missing-value marker but is not declared; add it to "
                       "missing_values in cohort.yaml")
            ck.add("reference", f"{ck.csv_path.name} lines {_lines(ck.df.loc[rows, '_line'])}"
                   f", column '{ref.column}'", why)


def check_subject_consistency(ck: Checks) -> None:
    """A subject's label and subject-level features are the same on each of its image rows."""
    if not ck.has("subject_id"):
        return
    cols = ["label"] if ck.has("label") else []
    if ck.config is not None:
        cols += [c for c in ck.config.subject_features if c in ck.df.columns]
    image_level = ("; if the column describes the image (side, view, transducer), declare it "
                   "under image_categorical_features or image_numeric_features in cohort.yaml")
    missing = set(ck.config.missing_values) if ck.config is not None else set()
    for col in cols:
        values = (ck.numeric[col] if col in ck.numeric
                  else ck.df[col].where(~ck.df[col].isin(missing), other="<missing>"))
        n = values.groupby(ck.df["subject_id"]).nunique(dropna=False)
        for sid in n.index[n > 1]:
            rows = ck.df.index[ck.df["subject_id"] == sid]
            shown = ", ".join(f"line {int(ck.df.at[r, '_line'])}: {ck.df.at[r, col]!r}"
                              for r in rows[:6])
            ck.add("subject consistency", f"{ck.csv_path.name}, column '{col}'",
                   f"subject '{sid}' has different values on its images ({shown}); a subject's "
                   "label and clinical values must be the same on every image row"
                   + (image_level if col != "label" else ""))


def check_feature_coverage(ck: Checks) -> None:
    """No feature is missing on every row (it could not be learned from, and hides a typo)."""
    if ck.df is None or ck.config is None or not len(ck.df) or not ck.labelled:
        return
    declared = set(ck.config.missing_values)
    for col in ck.config.features:
        if col in ck.df.columns and ck.df[col].isin(declared).all():
            ck.add("coverage", f"{ck.csv_path.name}, column '{col}'", "every value is missing; "
                   "fill it in or remove the feature from cohort.yaml")


# --------------------------------------------------------------------------- images


def _inside(root: Path, rel: str) -> bool:
    full = os.path.normpath(os.path.join(str(root), rel))
    return full == str(root) or full.startswith(str(root) + os.sep)


def _unicode_twin(root: Path, rel: str) -> str | None:
    """``rel`` as spelt on disk, when the file exists only under another Unicode normalisation
    of its name (macOS writes NFD, the CSV is read as NFC); None when there is no such file."""
    cur, parts = root, []
    for part in Path(rel).parts:
        if part in (".", "..") or (cur / part).exists():
            cur, parts = cur / part, [*parts, part]
            continue
        try:
            names = os.listdir(cur)
        except OSError:
            return None
        key = unicodedata.normalize("NFC", part)
        hits = [n for n in names if unicodedata.normalize("NFC", n) == key]
        if len(hits) != 1:
            return None
        cur, parts = cur / hits[0], [*parts, hits[0]]
    return "/".join(parts)


def check_paths(ck: Checks) -> None:
    """Image and mask paths: relative, inside the cohort folder, existing, each image once."""
    if not ck.has("image_path"):
        return
    for col in ("image_path", MASK_COLUMN):
        if col not in ck.df.columns:
            continue
        back = ck.df[col].str.contains("\\", regex=False)
        if back.any():
            ck.df.loc[back, col] = ck.df.loc[back, col].str.replace("\\", "/", regex=False)
            ck.notes.append(f"{ck.csv_path.name}, column '{col}': backslashes in "
                            f"{int(back.sum())} path(s) read as '/'")
        twins = 0
        for i, rel in ck.df[col].items():
            if rel and _inside(ck.root, rel) and not os.path.isabs(rel) \
                    and not (ck.root / rel).exists():
                twin = _unicode_twin(ck.root, rel)
                if twin is not None:
                    ck.df.at[i, col] = rel = twin
                    twins += 1
            if not rel:
                if col == "image_path":
                    ck.add("path", ck.at(i, col), "empty; give the image file relative to "
                           "cohort.csv")
                continue
            if os.path.isabs(rel) or re.match(r"^[A-Za-z]:[/\\]", rel):
                ck.add("path", ck.at(i, col), f"'{rel}' is an absolute path; paths are relative "
                       "to the cohort folder (copy or link the files into it)")
            elif not _inside(ck.root, rel):
                ck.add("path", ck.at(i, col), f"'{rel}' points outside the cohort folder; keep "
                       "images inside it (a link to the data drive is fine)")
            elif not (ck.root / rel).exists():
                ck.add("file", ck.at(i, col), f"file {ck.root / rel} does not exist; fix the "
                       "path (relative to cohort.csv) or remove the row")
            elif not (ck.root / rel).is_file():
                ck.add("file", ck.at(i, col), f"{ck.root / rel} is a folder, not an image file")
        if twins:
            ck.notes.append(f"{ck.csv_path.name}, column '{col}': {twins} path(s) name a file "
                            "whose name on disk differs only in Unicode normalisation (NFC/NFD, "
                            "e.g. 'é' as one character or as 'e' + accent): the file's own "
                            "spelling is used")
    if MASK_COLUMN in ck.df.columns:
        for i in ck.df.index:
            if _same_file(ck, i):
                ck.add("mask", ck.at(i, MASK_COLUMN), f"mask_path '{ck.df.at[i, MASK_COLUMN]}' "
                       "is the image file itself; give the lesion mask (white on black), or "
                       "leave mask_path empty")
    real = ck.df["image_path"].map(
        lambda p: os.path.normcase(os.path.realpath(ck.root / p)) if p else "")
    first: dict[str, int] = {}
    for i, r in real.items():
        if not r:
            continue
        if r in first:
            j = first[r]
            same = ck.df.at[i, "image_path"] == ck.df.at[j, "image_path"]
            ck.add("duplicate image", ck.at(i, "image_path"),
                   f"'{ck.df.at[i, 'image_path']}' "
                   + ("duplicates" if same else f"is the same file as '{ck.df.at[j, 'image_path']}'"
                      " on") + f" line {int(ck.df.at[j, '_line'])}; list each image once")
        else:
            first[r] = i


def _too_large(e: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(e))
    pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than allowed"
    return (f"declares {pixels}, more than the limit of {MAX_IMAGE_PIXELS:,} pixels (about "
            f"{math.isqrt(MAX_IMAGE_PIXELS)}x{math.isqrt(MAX_IMAGE_PIXELS)}; Pillow's "
            "decompression-bomb guard): the file is corrupt or not an ultrasound image")


def _inspect(path: Path) -> tuple[tuple[int, int], str] | str:
    """((width, height), mode) of a readable single-frame image, else what is wrong with it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size, mode, fmt = im.size, im.mode, im.format
                frames = getattr(im, "n_frames", 1)
                im.verify()
        if size[0] * size[1] > MAX_IMAGE_PIXELS:
            return _too_large(ValueError(f"({size[0] * size[1]} pixels)"))
        if frames > 1:
            return (f"holds {frames} frames; the contract takes one image per row: export each "
                    "frame you want as its own file")
        if fmt == "JPEG":
            tail = path.read_bytes()[-64:].rstrip(b"\x00")
            if not tail.endswith(b"\xff\xd9"):
                return "is a truncated JPEG (it does not end with the end-of-image marker)"
        elif fmt != "PNG":  # verify() checks PNG chunks; others are decoded in full
            with Image.open(path) as im:
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return _too_large(e)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"cannot be read ({type(e).__name__}: {e})"
    return size, mode


def _alpha(im: Image.Image) -> np.ndarray | None:
    """The alpha channel of an opened image (None without one)."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return np.asarray(im.getchannel(im.mode[-1]))
    if "transparency" in im.info:
        return np.asarray(im.convert("RGBA").getchannel("A"))
    return None


def _decode(path: Path) -> dict | str:
    """What the loader sees of a readable image: upright size, EXIF orientation, mode,
    transparency; or what is wrong with its pixels."""
    try:
        with Image.open(path) as im:
            turn, mode, fmt = orientation(im), im.mode, im.format
            alpha = _alpha(im)
            if mode == "F" and np.isnan(np.asarray(im)).any():
                n = int(np.isnan(np.asarray(im)).sum())
                return (f"holds {n} NaN (not-a-number) pixel(s): a float image must hold a "
                        "value in every pixel; re-export it")
            g = np.asarray(gray8(im))
    except (OSError, SyntaxError, ValueError) as e:
        return f"cannot be decoded ({type(e).__name__}: {e})"
    if g.size and g.min() == g.max():
        return (f"is blank: every pixel decodes to the same gray value ({int(g.flat[0])}); give "
                "the ultrasound image itself")
    if fmt == "JPEG" and (flat := _flat_tail(g)):
        return (f"is a JPEG cut short: its last {flat} rows (from row {g.shape[0] - flat + 1} of "
                f"{g.shape[0]}) decode to one flat gray value ({int(g[-1, 0])}), what a decoder "
                "fills in when the compressed data ends early (the end-of-image marker was "
                "written after a cut file): copy or export the image again")
    return {"size": (g.shape[1], g.shape[0]), "orientation": turn, "mode": mode,
            "transparent": alpha is not None and bool((alpha < 255).any())}


def _flat_tail(g: np.ndarray, min_rows: int = 8) -> int:
    """How many rows at the bottom of a decoded JPEG hold one value other than black or white
    (0 when fewer than ``min_rows``, or when the image is flat above them too): a libjpeg
    decoder fills the blocks after the end of a cut data stream with one gray value."""
    last = g[-1]
    if g.shape[0] < 2 * min_rows or last.min() != last.max() or int(last[0]) in (0, 255):
        return 0
    flat = (g == last[0]).all(axis=1)
    n = int(np.argmin(flat[::-1])) if not flat.all() else 0
    return n if n >= min_rows else 0


#: how the conversion to gray of an image mode is described in the notes
MODE_NAMES = {"RGB": "colour (RGB)", "RGBA": "colour (RGBA)", "P": "palette", "PA": "palette",
              "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV", "1": "1-bit",
              "LA": "gray with alpha"}


def check_image_files(ck: Checks) -> None:
    """Every image and mask opens as a single-frame image of at most MAX_IMAGE_PIXELS pixels
    and is not blank or NaN; masks have their image's size and a filled lesion; ROI boxes are
    integer pixels inside their (upright) image. EXIF orientations, transparency and
    conversions to gray are noted."""
    if not ck.has("image_path") or not ck.check_images:
        if ck.df is not None and not ck.check_images:
            ck.skipped.append("image contents (check_images=False): only paths were checked")
        return
    wide = 0
    turned: list[int] = []
    transparent: list[int] = []
    converted: dict[str, int] = defaultdict(int)
    for i, rel in ck.df["image_path"].items():
        p = ck.root / rel
        if not rel or not p.is_file() or not _inside(ck.root, rel):
            continue
        got = _inspect(p)
        if isinstance(got, str):
            ck.add("image", ck.at(i, "image_path"), f"image file {p} {got}; replace it with a "
                   "valid PNG/JPEG or remove the row")
            continue
        size, mode = got
        if min(size) < MIN_IMAGE_SIDE:
            ck.add("image", ck.at(i, "image_path"), f"image file {p} is only "
                   f"{size[0]}x{size[1]} pixels; give the ultrasound image itself")
            continue
        info = _decode(p)
        if isinstance(info, str):
            ck.add("image", ck.at(i, "image_path"), f"image file {p} {info}")
            continue
        line = int(ck.df.at[i, "_line"])
        if info["orientation"] != 1:
            turned.append(line)
        if info["transparent"]:
            transparent.append(line)
        if mode not in ("L", *WIDE_MODES):
            converted[MODE_NAMES.get(mode, mode)] += 1
        ck.sizes[i] = info["size"]
        wide += mode in WIDE_MODES
        if MASK_COLUMN in ck.df.columns and ck.df.at[i, MASK_COLUMN]:
            _check_mask(ck, i, ck.sizes[i])
    name = ck.csv_path.name
    if wide:
        ck.notes.append(f"{wide} image(s) have more than 8 bits per pixel: each is scaled to 8 "
                        "bits by its own minimum and maximum when decoded")
    if turned:
        at = f"{name} line{'s' * (len(turned) > 1)} {_lines(turned)}"
        ck.notes.append(f"{len(turned)} image(s) carry an EXIF orientation ({at}): each is "
                        "rotated/flipped as a viewer shows it, and its ROI box and mask are "
                        "read in those (the viewer's) coordinates")
    if transparent:
        at = f"{name} line{'s' * (len(transparent) > 1)} {_lines(transparent)}"
        ck.notes.append(f"{len(transparent)} image(s) have transparent pixels ({at}): the "
                        "alpha channel is ignored, the gray is that of the colour values "
                        "beneath it")
    if converted:
        ck.notes.append(f"{sum(converted.values())} image(s) converted to 8-bit gray by luma ("
                        + ", ".join(f"{k}: {v}" for k, v in sorted(converted.items())) + ")")


def _mask_values(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask as the loader thresholds it (upright, gray), and its alpha channel."""
    with Image.open(p) as im:
        im = upright(im)
        alpha = _alpha(im)
        a = np.asarray(im if im.mode in WIDE_MODES or im.mode == "L" else im.convert("L"))
    return a, alpha


def _check_mask(ck: Checks, i, size: tuple[int, int]) -> None:
    from scipy import ndimage

    rel = ck.df.at[i, MASK_COLUMN]
    p = ck.root / rel
    if not p.is_file() or not _inside(ck.root, rel) or _same_file(ck, i):
        return
    got = _inspect(p)
    if isinstance(got, str):
        ck.add("mask", ck.at(i, MASK_COLUMN), f"mask file {p} {got}")
        return
    try:
        values, alpha = _mask_values(p)
        fg = mask_array(p)
    except (OSError, SyntaxError, ValueError) as e:
        ck.add("mask", ck.at(i, MASK_COLUMN), f"mask file {p} cannot be decoded "
               f"({type(e).__name__}: {e})")
        return
    msize = (fg.shape[1], fg.shape[0])
    if msize != size:
        ck.add("mask", ck.at(i, MASK_COLUMN), f"mask is {msize[0]}x{msize[1]} but its image is "
               f"{size[0]}x{size[1]}; a lesion mask must have its image's size")
        return
    if not fg.any():
        if alpha is not None and alpha.min() != alpha.max():
            ck.add("mask", ck.at(i, MASK_COLUMN), f"mask {p} is drawn only in its alpha "
                   "channel (transparency): its gray values hold no lesion pixel; save the "
                   "lesion as white on black, without transparency")
        else:
            ck.add("mask", ck.at(i, MASK_COLUMN), f"mask {p} is empty (no lesion pixel); leave "
                   "mask_path empty for an image without an outline")
        return
    levels = np.unique(values)
    if 3 <= len(levels) <= 32:
        # a label is an area of one value; anti-aliased edges are one pixel thin
        labels = [v for v in levels[1:] if ndimage.binary_erosion(values == v).any()]
        if len(labels) >= 2:
            shown = ", ".join(f"{v:g}" for v in levels[:MAX_LABEL_VALUES])
            more = "" if len(levels) <= MAX_LABEL_VALUES else ", ..."
            ck.add("mask", ck.at(i, MASK_COLUMN), f"mask {p} is a label map (values {shown}"
                   f"{more}), not one lesion: which label is the lesion? Save a mask with only "
                   "the lesion's pixels as foreground (white on black)")
            return
    filled = int(ndimage.binary_fill_holes(fg).sum())
    n = int(fg.sum())
    if filled - n > n:
        ck.add("mask", ck.at(i, MASK_COLUMN), f"mask {p} is only an outline: filling it adds "
               f"{filled - n} pixels to its {n}; fill the lesion (every pixel inside the "
               "outline is foreground)")


def _same_file(ck: Checks, i) -> bool:
    """Whether row ``i``'s mask is its image file itself."""
    image, mask = ck.df.at[i, "image_path"], ck.df.at[i, MASK_COLUMN]
    if not image or not mask:
        return False
    return os.path.realpath(ck.root / image) == os.path.realpath(ck.root / mask)


def check_roi(ck: Checks) -> None:
    """ROI boxes: all four cells integers (or all four empty), x0 < x1, y0 < y1, inside the
    image."""
    if not ck.has(*ROI_COLUMNS):
        return
    roi = pd.DataFrame(index=ck.df.index, columns=list(ROI_COLUMNS), dtype=float)
    uncropped = 0
    for i in ck.df.index:
        cells = [ck.df.at[i, c] for c in ROI_COLUMNS]
        if not any(cells):
            uncropped += 1
            continue
        box = []
        for c, v in zip(ROI_COLUMNS, cells):
            try:
                x = float(v)
            except ValueError:
                x = math.nan
            if not math.isfinite(x) or x != int(x):
                ck.add("roi", ck.at(i, c), f"'{v}' is not a pixel coordinate; write an integer "
                       "(all four ROI cells of a row, or leave all four empty)")
            box.append(x)
        if any(not math.isfinite(x) or x != int(x) for x in box):
            continue
        x0, y0, x1, y1 = box
        w, h = ck.sizes.get(i, (math.inf, math.inf))
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            ck.add("roi", ck.at(i, "roi_x0"), f"ROI box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is "
                   f"not inside the {w}x{h} image with x0 < x1 and y0 < y1; give pixel "
                   "coordinates of the image (x1, y1 exclusive)")
            continue
        roi.loc[i] = box
    if uncropped:
        ck.notes.append(f"{uncropped} row(s) with all four ROI cells empty: used uncropped")
    ck.roi = roi


def check_duplicate_bytes(ck: Checks) -> None:
    """The same image (identical bytes) under two file names: across subjects it would leak
    one image into two folds."""
    if not ck.has("image_path", "subject_id") or not ck.check_images:
        return
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, rel in ck.df["image_path"].items():
        p = ck.root / rel
        if i in ck.sizes:  # readable, inside the folder
            by_hash[hashlib.sha256(p.read_bytes()).hexdigest()].append(i)
    for rows in by_hash.values():
        names = {ck.df.at[i, "image_path"] for i in rows}
        if len(rows) < 2 or len(names) < 2:
            continue  # the same path twice is reported by check_paths
        subjects = sorted(set(ck.df.loc[rows, "subject_id"]))
        where = ", ".join(f"line {int(ck.df.at[i, '_line'])} ({ck.df.at[i, 'image_path']}, "
                          f"subject {ck.df.at[i, 'subject_id']})" for i in rows)
        ck.add("duplicate image", f"{ck.csv_path.name}, column 'image_path'",
               f"identical image files: {where}; "
               + ("the same image under two subjects would be in training and test at once: "
                  "keep it under its own subject only" if len(subjects) > 1
                  else "list each image once"))


# --------------------------------------------------------------------------- classes


def check_classes(ck: Checks) -> None:
    """Both classes present, and enough subjects of each for the folds (and the inner
    validation split inside each training fold)."""
    if not ck.has("subject_id", "label") or ck.config is None or not ck.labelled:
        return
    known = set(ck.config.positive_labels) | set(ck.config.negative_labels)
    d = ck.df[ck.df["label"].isin(known) & (ck.df["subject_id"] != "")]
    if d.empty:
        return
    y = d["label"].isin(ck.config.positive_labels)
    per_class = {"positive": d.loc[y, "subject_id"].nunique(),
                 "negative": d.loc[~y, "subject_id"].nunique()}
    name = ck.csv_path.name
    for cls, n in per_class.items():
        labels = ck.config.positive_labels if cls == "positive" else ck.config.negative_labels
        if n == 0:
            ck.add("classes", name, f"no {cls} subject ({'/'.join(labels)}); the study compares "
                   "two classes")
        elif ck.folds is not None and n < ck.folds:
            advice = (f"use at most {n} folds or add subjects" if n >= 2
                      else "cross-validation needs at least 2 subjects of each class: add "
                           "subjects")
            ck.add("classes", name, f"only {n} {cls} subject(s) for {ck.folds} folds; each "
                   f"fold needs one of each class: {advice}")


# --------------------------------------------------------------------------- all of them

CHECKS = (check_columns, apply_exclusions, check_subject_ids, check_labels, check_numeric,
          check_categorical, check_references, check_subject_consistency,
          check_feature_coverage, check_paths, check_image_files, check_roi,
          check_duplicate_bytes, check_classes)


def run_checks(root: Path, folds: int | None = None, check_images: bool = True,
               labelled: bool = True, yaml_file: Path | None = None) -> Checks:
    """Read both files and run every check that what was read allows (``labelled`` and
    ``yaml_file``: see :class:`Checks`)."""
    ck = Checks(root=root, folds=folds, check_images=check_images, labelled=labelled,
                yaml_file=Path(yaml_file) if yaml_file else None)
    read_config(ck)
    read_csv(ck)
    if ck.config is None:
        ck.skipped.append("labels, features and exclusion rules (they need a valid "
                          "cohort.yaml)")
    for check in CHECKS:
        check(ck)
    return ck
