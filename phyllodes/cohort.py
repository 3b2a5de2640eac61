"""Load a cohort through the data contract (data/README.md) and validate it.

A cohort is a folder with ``cohort.csv`` (one row per image) and ``cohort.yaml`` (what the
columns mean). :func:`load_cohort` checks everything and raises one :class:`CohortError` that
lists every problem with its file, line and column and how to fix it. Rows are only ever
removed by an explicit ``exclude`` rule of the YAML, and each rule is logged with its count.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image, UnidentifiedImageError

from . import paths

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("subject_id", "image_path", "label")
ROI_COLUMNS = ("roi_x0", "roi_y0", "roi_x1", "roi_y1")
MASK_COLUMN = "mask_path"
DEFAULT_POSITIVE = ("borderline", "malignant")
DEFAULT_NEGATIVE = ("benign",)
DEFAULT_MISSING = ("", "NA", "N/A", "nan", "not available", "unknown")


class CohortError(ValueError):
    """A cohort that breaks the data contract; ``problems`` lists each one."""

    def __init__(self, source: Path | str, problems: list[str]):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in cohort {self.source} "
            f"(the contract is in data/README.md):\n{lines}"
        )


@dataclass
class CohortConfig:
    """The contents of ``cohort.yaml``."""

    name: str
    positive_labels: tuple[str, ...] = DEFAULT_POSITIVE
    negative_labels: tuple[str, ...] = DEFAULT_NEGATIVE
    numeric_features: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    missing_values: tuple[str, ...] = DEFAULT_MISSING
    exclude: tuple[dict, ...] = ()
    citation: str = ""
    license: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return list(self.numeric_features) + list(self.categorical_features)

    @classmethod
    def from_yaml(cls, path: Path) -> "CohortConfig":
        problems: list[str] = []
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise CohortError(path.parent, [f"{path}: file not found; write a cohort.yaml beside "
                                            "cohort.csv (see data/README.md)"]) from None
        except yaml.YAMLError as e:
            raise CohortError(path.parent, [f"{path}: not valid YAML ({e})"]) from None
        if not isinstance(raw, dict):
            raise CohortError(path.parent, [f"{path}: must be a mapping of keys to values"])
        known = {"name", "positive_labels", "negative_labels", "numeric_features",
                 "categorical_features", "missing_values", "exclude", "citation", "license",
                 "description"}
        if not raw.get("name"):
            problems.append(f"{path}: key 'name' is missing; add e.g. 'name: my-cohort' "
                            "(used to name tables/<name>/ and figures/<name>/)")
        for key in ("positive_labels", "negative_labels", "numeric_features",
                    "categorical_features", "missing_values"):
            if key in raw and not isinstance(raw[key], list):
                problems.append(f"{path}: key '{key}' must be a list, e.g. {key}: [a, b]")
        excl = raw.get("exclude", []) or []
        for i, rule in enumerate(excl):
            if not (isinstance(rule, dict) and {"column", "values", "reason"} <= set(rule)):
                problems.append(f"{path}: exclude rule {i + 1} needs 'column', 'values' and "
                                "'reason' keys")
        if problems:
            raise CohortError(path.parent, problems)
        pos = tuple(str(x) for x in raw.get("positive_labels", DEFAULT_POSITIVE))
        neg = tuple(str(x) for x in raw.get("negative_labels", DEFAULT_NEGATIVE))
        return cls(
            name=str(raw["name"]),
            positive_labels=pos,
            negative_labels=neg,
            numeric_features=tuple(raw.get("numeric_features", []) or []),
            categorical_features=tuple(raw.get("categorical_features", []) or []),
            missing_values=tuple(str(x) for x in raw.get("missing_values", DEFAULT_MISSING)),
            exclude=tuple(excl),
            citation=str(raw.get("citation", "")),
            license=str(raw.get("license", "")),
            description=str(raw.get("description", "")),
            extra={k: v for k, v in raw.items() if k not in known},
        )


@dataclass
class Cohort:
    """A validated cohort: one row per image in ``images``, one per subject in ``subjects``."""

    name: str
    root: Path
    config: CohortConfig
    images: pd.DataFrame
    exclusions: pd.DataFrame
    fingerprint: str

    @property
    def subjects(self) -> pd.DataFrame:
        """One row per subject: ``subject_id``, ``label``, ``y``, ``n_images`` and the features."""
        cols = ["subject_id", "label", "y", *self.config.features]
        first = self.images.groupby("subject_id", sort=False)[cols[1:]].first()
        first["n_images"] = self.images.groupby("subject_id", sort=False).size()
        return first.reset_index()

    @property
    def has_roi(self) -> bool:
        return all(c in self.images.columns for c in ROI_COLUMNS)

    @property
    def has_masks(self) -> bool:
        return MASK_COLUMN in self.images.columns

    @property
    def numeric_features(self) -> list[str]:
        return list(self.config.numeric_features)

    @property
    def categorical_features(self) -> list[str]:
        return list(self.config.categorical_features)

    def summary(self) -> dict[str, Any]:
        s = self.subjects
        return {
            "name": self.name,
            "n_images": int(len(self.images)),
            "n_subjects": int(len(s)),
            "n_positive_subjects": int(s["y"].sum()),
            "n_negative_subjects": int((1 - s["y"]).sum()),
            "labels": {str(k): int(v) for k, v in s["label"].value_counts().items()},
            "n_excluded_rows": int(self.exclusions["n_rows"].sum()) if len(self.exclusions) else 0,
            "fingerprint": self.fingerprint,
        }


def resolve_cohort_dir(cohort: str | Path) -> Path:
    """A cohort folder from a path, or from a name under data/public/ or data/private/."""
    p = Path(cohort).expanduser()
    if p.is_file():
        p = p.parent
    if p.is_dir():
        return p.resolve()
    for base in (paths.PUBLIC_DATA, paths.PRIVATE_DATA):
        if (base / str(cohort)).is_dir():
            return (base / str(cohort)).resolve()
    raise FileNotFoundError(
        f"cohort '{cohort}' not found: give a folder holding cohort.csv and cohort.yaml, or the "
        f"name of one under {paths.PUBLIC_DATA} or {paths.PRIVATE_DATA}")


def load_cohort(cohort: str | Path = paths.DEFAULT_COHORT, folds: int | None = None,
                check_images: bool = True) -> Cohort:
    """Load and validate a cohort; raise :class:`CohortError` listing every problem.

    ``folds``: when given, each class must have at least this many subjects.
    ``check_images``: open every image header (and mask) to find missing or corrupt files.
    """
    root = resolve_cohort_dir(cohort)
    csv_path = root / "cohort.csv"
    config = CohortConfig.from_yaml(root / "cohort.yaml")
    if not csv_path.exists():
        raise CohortError(root, [f"{csv_path}: file not found; write one row per image "
                                 "(see data/README.md)"])
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise CohortError(root, [f"{csv_path}: the file is empty; it needs a header row "
                                 f"({', '.join(REQUIRED_COLUMNS)}, features...) and one row "
                                 "per image"]) from None
    df.columns = [c.strip() for c in df.columns]
    problems: list[str] = []
    if len(df) == 0:
        raise CohortError(root, [f"{csv_path}: the file has a header but no rows; add one row "
                                 "per image"])
    need = list(REQUIRED_COLUMNS) + config.features
    missing_cols = [c for c in need if c not in df.columns]
    for c in missing_cols:
        why = "required by the contract" if c in REQUIRED_COLUMNS else "declared in cohort.yaml"
        problems.append(f"{csv_path}: column '{c}' is missing ({why}); add it to the header, or "
                        "remove it from cohort.yaml's feature lists")
    roi_present = [c for c in ROI_COLUMNS if c in df.columns]
    if roi_present and len(roi_present) != len(ROI_COLUMNS):
        problems.append(f"{csv_path}: ROI columns must come together ({', '.join(ROI_COLUMNS)}); "
                        f"found only {', '.join(roi_present)}")
    if missing_cols:
        raise CohortError(root, problems)

    df.insert(0, "_line", np.arange(len(df)) + 2)  # file line: header is line 1
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].str.strip()

    # explicit exclusion rules, each logged with its count
    excl_rows = []
    for rule in config.exclude:
        col, values, reason = rule["column"], [str(v) for v in rule["values"]], rule["reason"]
        if col not in df.columns:
            problems.append(f"{root / 'cohort.yaml'}: exclude rule names column '{col}', which "
                            f"{csv_path.name} does not have")
            continue
        hit = df[col].isin(values)
        excl_rows.append({"column": col, "values": ", ".join(values), "reason": reason,
                          "n_rows": int(hit.sum())})
        if hit.any():
            log.warning("excluded %d row(s) of %s where %s in %s: %s", int(hit.sum()),
                        csv_path.name, col, values, reason)
        df = df[~hit]
    exclusions = pd.DataFrame(excl_rows, columns=["column", "values", "reason", "n_rows"])

    def where(i: int, col: str) -> str:
        return f"{csv_path.name} line {int(df.at[i, '_line'])}, column '{col}'"

    known_labels = set(config.positive_labels) | set(config.negative_labels)
    for i in df.index:
        if not df.at[i, "subject_id"]:
            problems.append(f"{where(i, 'subject_id')}: empty; every image needs its subject's id")
        lab = df.at[i, "label"]
        if lab not in known_labels:
            problems.append(
                f"{where(i, 'label')}: unknown label '{lab}'; use one of "
                f"{sorted(known_labels)} or declare it in cohort.yaml (positive_labels / "
                "negative_labels, or an exclude rule)")

    missing_set = set(config.missing_values)
    numeric: dict[str, pd.Series] = {}
    for col in config.numeric_features:
        raw = df[col]
        is_missing = raw.isin(missing_set)
        vals = pd.to_numeric(raw.where(~is_missing), errors="coerce")
        bad = vals.isna() & ~is_missing
        for i in df.index[bad]:
            problems.append(f"{where(i, col)}: '{raw[i]}' is not a number; write a number, or one "
                            f"of the declared missing strings {sorted(missing_set)} "
                            "(cohort.yaml missing_values)")
        numeric[col] = vals
    for col in config.categorical_features:
        df[col] = df[col].where(~df[col].isin(missing_set), other=None)
    for col, vals in numeric.items():
        df[col] = vals

    # duplicated image rows
    dup = df["image_path"].duplicated(keep="first")
    for i in df.index[dup]:
        first = df.index[(df["image_path"] == df.at[i, "image_path"])][0]
        problems.append(f"{where(i, 'image_path')}: '{df.at[i, 'image_path']}' duplicates line "
                        f"{int(df.at[first, '_line'])}; list each image once")

    # subject-level consistency of label and clinical values
    for col in ["label", *config.features]:
        as_str = df[col].astype(str)
        n = as_str.groupby(df["subject_id"]).nunique()
        for sid in n.index[n > 1]:
            rows = df.index[df["subject_id"] == sid]
            shown = ", ".join(f"line {int(df.at[r, '_line'])}: {as_str[r]!r}" for r in rows)
            problems.append(f"{csv_path.name}, column '{col}': subject '{sid}' has different "
                            f"values on its images ({shown}); a subject's label and clinical "
                            "values must be the same on every image row")

    # images, masks and ROI boxes
    def resolve(rel: str) -> Path:
        return (root / rel).resolve()

    df["image_abspath"] = [str(resolve(p)) for p in df["image_path"]]
    has_mask = MASK_COLUMN in df.columns
    if has_mask:
        df["mask_abspath"] = [str(resolve(p)) if p else "" for p in df[MASK_COLUMN]]
    has_roi = len(roi_present) == len(ROI_COLUMNS)
    if has_roi:
        for c in ROI_COLUMNS:
            vals = pd.to_numeric(df[c], errors="coerce")
            for i in df.index[vals.isna()]:
                problems.append(f"{where(i, c)}: '{df.at[i, c]}' is not a pixel coordinate; "
                                "write an integer (or remove all ROI columns)")
            df[c] = vals
    sizes: dict[int, tuple[int, int]] = {}
    if check_images:
        for i in df.index:
            size = _check_image(Path(df.at[i, "image_abspath"]), where(i, "image_path"), problems)
            if size:
                sizes[i] = size
            if has_mask and df.at[i, "mask_abspath"]:
                msize = _check_image(Path(df.at[i, "mask_abspath"]), where(i, MASK_COLUMN),
                                     problems)
                if size and msize and msize != size:
                    problems.append(f"{where(i, MASK_COLUMN)}: mask is {msize[0]}x{msize[1]} but "
                                    f"its image is {size[0]}x{size[1]}; a lesion mask must have "
                                    "its image's size")
    if has_roi:
        for i in df.index:
            box = [df.at[i, c] for c in ROI_COLUMNS]
            if any(pd.isna(b) for b in box):
                continue
            x0, y0, x1, y1 = box
            w, h = sizes.get(i, (np.inf, np.inf))
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                problems.append(f"{where(i, 'roi_x0')}: ROI box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) "
                                f"is not inside the {w}x{h} image with x0 < x1 and y0 < y1; "
                                "give pixel coordinates of the image")

    # enough subjects of each class for the folds
    df["y"] = df["label"].isin(config.positive_labels).astype(int)
    if folds is not None and not problems:
        per_class = df.groupby("y")["subject_id"].nunique()
        for y, name in ((1, "positive"), (0, "negative")):
            n = int(per_class.get(y, 0))
            if n < folds:
                problems.append(f"{csv_path.name}: only {n} {name} subject(s) for {folds} folds; "
                                f"each fold needs one of each class: use at most {max(n, 1)} "
                                "folds or add subjects")
    if problems:
        raise CohortError(csv_path, problems)

    df = df.rename(columns={"_line": "csv_line"}).reset_index(drop=True)
    fp = fingerprint_cohort(csv_path, root / "cohort.yaml")
    return Cohort(name=config.name, root=root, config=config, images=df,
                  exclusions=exclusions, fingerprint=fp)


def _check_image(path: Path, where: str, problems: list[str]) -> tuple[int, int] | None:
    if not path.exists():
        problems.append(f"{where}: image file {path} does not exist; fix the path (relative to "
                        "cohort.csv) or remove the row")
        return None
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        return size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        problems.append(f"{where}: image file {path} cannot be read ({type(e).__name__}: {e}); "
                        "replace it with a valid PNG/JPEG or remove the row")
        return None


def fingerprint_cohort(csv_path: Path, yaml_path: Path) -> str:
    """A short hash of the cohort's CSV and YAML (images are hashed by phyllodes.images)."""
    h = hashlib.sha256()
    h.update(csv_path.read_bytes())
    h.update(yaml_path.read_bytes())
    return h.hexdigest()[:16]
