"""A cohort through the data contract (data/README.md): load it, validate it, summarise it.

A cohort is a folder with ``cohort.csv`` (one row per image) and ``cohort.yaml`` (what the
columns mean). :func:`validate_cohort` runs every check of :mod:`phyllodes.data.contract` over all
stages (YAML, CSV structure, values, images, classes) and returns one
:class:`ValidationReport`; :func:`load_cohort` raises one :class:`CohortError` listing every
problem with its file, line and column and how to fix it, or returns the :class:`Cohort`.
Rows are only ever removed by an explicit ``exclude`` rule of the YAML, each rule logged with
its count; every normalisation (whitespace, byte-order mark, ...) is logged and listed in the
report.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phyllodes import paths
from phyllodes.data.contract import (  # noqa: F401  (the contract's names, used across the package)
    DEFAULT_MISSING,
    MASK_COLUMN,
    REQUIRED_COLUMNS,
    ROI_COLUMNS,
    CohortConfig,
    Problem,
    run_checks,
)
from phyllodes.data.references import ReferenceSpec, subject_reference

log = logging.getLogger(__name__)

class CohortError(ValueError):
    """A cohort that breaks the data contract; ``problems`` lists each one (as text),
    ``items`` as :class:`Problem` objects. Long lists end with a count per kind."""

    def __init__(self, source: Path | str, problems: list[Problem | str], show: int = 12):
        self.source = str(source)
        self.items = [p if isinstance(p, Problem) else Problem("other", str(source), str(p))
                      for p in problems]
        self.problems = [str(p) for p in self.items]
        super().__init__(f"{len(self.items)} problem(s) in cohort {self.source} (the contract "
                         f"is in data/README.md):\n{format_problems(self.items, show)}")


def format_problems(items: list[Problem], show: int | None = 12) -> str:
    """Every problem on its own line, grouped by kind; with ``show``, at most that many of a
    kind, the rest counted. More than one kind or a cut list ends with a count per kind."""
    by_kind: dict[str, list[Problem]] = {}
    for p in items:
        by_kind.setdefault(p.kind, []).append(p)
    lines = []
    for kind, ps in by_kind.items():
        shown = ps if show is None else ps[:show]
        lines += [f"  - {p}" for p in shown]
        if len(ps) > len(shown):
            lines.append(f"  ... and {len(ps) - len(shown)} more of the kind '{kind}' "
                         "(python -m phyllodes validate COHORT --all lists them)")
    cut = show is not None and any(len(ps) > show for ps in by_kind.values())
    if len(by_kind) > 1 or cut:
        lines.append("  summary by kind: " + "; ".join(
            f"{kind}: {len(ps)}" for kind, ps in
            sorted(by_kind.items(), key=lambda kv: -len(kv[1]))))
    return "\n".join(lines)


@dataclass
class Cohort:
    """A validated cohort: one row per image in ``images``, one per subject in ``subjects``."""

    name: str
    root: Path
    config: CohortConfig
    images: pd.DataFrame
    exclusions: pd.DataFrame
    fingerprint: str
    notes: list[str] = field(default_factory=list)  #: normalisations that were applied
    feature_set: str = "all"
    #: cohort.yaml as declared (``config`` is restricted to the feature set in use)
    declared: CohortConfig | None = None

    @property
    def subjects(self) -> pd.DataFrame:
        """One row per subject: ``subject_id``, ``label``, ``y``, ``n_images`` and the
        subject-level features."""
        cols = ["subject_id", "label", "y", *self.config.subject_features]
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
    def has_clinical(self) -> bool:
        """Whether the cohort (its feature set) has any clinical or image-level feature."""
        return bool(self.config.features)

    @property
    def numeric_features(self) -> list[str]:
        return list(self.config.numeric_features)

    @property
    def categorical_features(self) -> list[str]:
        return list(self.config.categorical_features)

    @property
    def image_numeric_features(self) -> list[str]:
        return list(self.config.image_numeric_features)

    @property
    def image_categorical_features(self) -> list[str]:
        return list(self.config.image_categorical_features)

    @property
    def references(self) -> dict[str, ReferenceSpec]:
        """The reader references cohort.yaml declares (never model inputs)."""
        return dict(self.config.references)

    def reference_table(self, name: str) -> pd.DataFrame:
        """Per subject, the reader reference ``name``: ``subject_id``, ``y``, ``score``,
        ``category`` and (with a declared rule) ``positive``
        (:func:`phyllodes.data.references.subject_reference`)."""
        if name not in self.config.references:
            raise ValueError(f"cohort '{self.name}' declares no reader reference '{name}'; it "
                             f"declares {sorted(self.config.references) or 'none'} (see "
                             "references in data/README.md)")
        return subject_reference(self.images, self.config.references[name])

    @property
    def feature_sets(self) -> dict[str, list[str]]:
        """Named feature sets of cohort.yaml, and ``all`` (every declared feature)."""
        full = self.declared or self.config
        return {"all": list(full.features),
                **{k: list(v) for k, v in full.feature_sets.items()}}

    def with_feature_set(self, name: str) -> "Cohort":
        """The cohort seen through one named feature set (``all``: every feature)."""
        sets = self.feature_sets
        if name not in sets:
            raise ValueError(f"cohort '{self.name}' has no feature set '{name}'; its sets are "
                             f"{sorted(sets)} (declare more under feature_sets in cohort.yaml)")
        if name == self.feature_set:
            return self
        full = self.declared or self.config
        return replace(self, config=full.restricted(sets[name]), feature_set=name,
                       declared=full)

    def with_features(self, names: list[str], set_name: str = "shared") -> "Cohort":
        """The cohort seen through an ad-hoc set of its declared features (e.g. the clinical
        inputs two cohorts share), named ``set_name``."""
        full = self.declared or self.config
        unknown = [n for n in names if n not in full.features]
        if unknown:
            raise ValueError(f"cohort '{self.name}' declares no feature(s) "
                             f"{', '.join(unknown)}; its features are {list(full.features)}")
        return replace(self, config=full.restricted(list(names)), feature_set=set_name,
                       declared=full)

    def with_permuted_labels(self, seed: int) -> "Cohort":
        """The cohort with its subjects' labels permuted (seeded): every subject keeps its
        images and inputs and takes another subject's label (``label`` and ``y``; the class
        counts stay). For the data-randomisation sanity check (Adebayo et al. 2018): a model
        trained on it learned nothing real. Its fingerprint says so, so its runs never mix
        with the real ones."""
        subj = self.subjects
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(subj))
        label = dict(zip(subj["subject_id"], subj["label"].to_numpy()[order]))
        y = dict(zip(subj["subject_id"], subj["y"].to_numpy()[order]))
        images = self.images.copy()
        images["label"] = images["subject_id"].map(label)
        images["y"] = images["subject_id"].map(y).astype(self.images["y"].dtype)
        digest = hashlib.sha256(f"{self.fingerprint}|labels permuted|{seed}".encode())
        return replace(self, images=images, fingerprint=digest.hexdigest()[:16],
                       notes=[*self.notes, f"labels permuted among subjects (seed {seed}): "
                                           "the data-randomisation check, not a study"])

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
            "feature_set": self.feature_set,
            "features": feature_summary(self).to_dict("records"),
            "has_roi": self.has_roi, "has_masks": self.has_masks,
            "fingerprint": self.fingerprint,
        }


def feature_summary(cohort: Cohort) -> pd.DataFrame:
    """Per feature: level (subject or image), type, missing rate and number of levels."""
    cfg = cohort.config
    rows = []
    for level, numeric, categorical, table in (
            ("subject", cfg.numeric_features, cfg.categorical_features, cohort.subjects),
            ("image", cfg.image_numeric_features, cfg.image_categorical_features,
             cohort.images)):
        for kind, cols in (("numeric", numeric), ("categorical", categorical)):
            for c in cols:
                v = table[c]
                rows.append({"feature": c, "level": level, "type": kind,
                             "missing": round(float(v.isna().mean()), 4),
                             "levels": str(v.nunique()) if kind == "categorical" else "",
                             "range": (f"{v.min():g} – {v.max():g}"
                                       if kind == "numeric" and v.notna().any() else "")})
    return pd.DataFrame(rows, columns=["feature", "level", "type", "missing", "levels", "range"])


@dataclass
class ValidationReport:
    """Everything :func:`validate_cohort` found: problems, normalisations, stages it could not
    run (and why), and what will be used (None when there are problems)."""

    root: Path
    problems: list[Problem]
    notes: list[str]
    skipped: list[str]
    cohort: Cohort | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self, show: int | None = 12) -> str:
        """The report as a person reads it."""
        out = [f"cohort {self.root}"]
        if self.problems:
            out.append(f"{len(self.problems)} problem(s) (the contract is in data/README.md):")
            out.append(format_problems(self.problems, show))
        for s in self.skipped:
            out.append(f"not checked: {s}")
        if self.notes:
            out.append("notes: what was normalised or not used (see data/README.md, 'What the "
                       "loader normalises'):")
            out += [f"  - {n}" for n in self.notes]
        if self.cohort is not None:
            c, s = self.cohort, self.cohort.summary()
            out.append(f"OK: {s['n_subjects']} subjects, {s['n_images']} images; labels "
                       + ", ".join(f"{k} {v}" for k, v in s["labels"].items())
                       + f" ({s['n_positive_subjects']} positive, "
                       f"{s['n_negative_subjects']} negative subjects)")
            if len(c.exclusions):
                for r in c.exclusions.itertuples():
                    out.append(f"excluded by rule: {r.n_rows} row(s) where {r.column} in "
                               f"[{r.values}] ({r.reason})")
            out.append(f"ROI boxes: {'yes' if c.has_roi else 'no'}; lesion masks: "
                       f"{'yes' if c.has_masks else 'no'}")
            feats = feature_summary(c)
            if len(feats):
                out.append("features (missing = fraction of subjects, or of images for "
                           "image-level features):")
                out.append(feats.to_string(index=False))
            else:
                out.append("features: none declared: the study runs image-only")
            sets = {k: v for k, v in c.feature_sets.items() if k != "all"}
            for k, v in sets.items():
                out.append(f"feature set '{k}': {', '.join(v)}")
            for name, ref in c.references.items():
                t = c.reference_table(name)
                rule = f"; the clinic's rule: {ref.rule_text()}" if ref.positive_from else ""
                out.append(f"reader reference '{name}' (column {ref.column}, {ref.type}): "
                           f"{int(t['score'].notna().sum())} of {len(t)} subjects{rule} — "
                           "compared with the model, never an input")
        return "\n".join(out)


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


def cohort_name(cohort: str | Path) -> str:
    """The cohort's name from its cohort.yaml (the folder name when it cannot be read)."""
    import yaml

    try:
        root = resolve_cohort_dir(cohort)
        return str(yaml.safe_load((root / "cohort.yaml").read_text())["name"])
    except Exception:  # the notebooks report a broken cohort properly
        return Path(str(cohort)).name


def validate_cohort(cohort: str | Path = paths.DEFAULT_COHORT, folds: int | None = None,
                    check_images: bool = True, labelled: bool = True,
                    yaml_file: str | Path | None = None) -> ValidationReport:
    """Run every check of the contract over every stage that can run; never raises for a bad
    cohort (the report lists the problems).

    ``folds``: when given, each class must have enough subjects for that many folds.
    ``check_images``: open every image and mask (size, format, frames, truncation) and compare
    their bytes (the same image under two subjects); without it, only their paths and
    existence are checked.
    """
    root = resolve_cohort_dir(cohort)
    ctx = run_checks(root, folds, check_images, labelled, yaml_file)
    report = ValidationReport(root, ctx.problems, ctx.notes, ctx.skipped)
    if not ctx.problems:
        report.cohort = Cohort(name=ctx.config.name, root=root, config=ctx.config,
                               images=ctx.cohort_table(), exclusions=ctx.exclusions,
                               fingerprint=ctx.fingerprint(), notes=list(ctx.notes))
    return report


def load_cohort(cohort: str | Path = paths.DEFAULT_COHORT, folds: int | None = None,
                check_images: bool = True, labelled: bool = True,
                yaml_file: str | Path | None = None) -> Cohort:
    """Load and validate a cohort; raise :class:`CohortError` listing every problem.

    ``labelled=False``: patients to predict (no label needed, see
    :class:`~phyllodes.data.contract.Checks`); ``yaml_file``: read this cohort.yaml instead of
    the folder's own."""
    report = validate_cohort(cohort, folds, check_images, labelled, yaml_file)
    if not report.ok:
        raise CohortError(report.root, report.problems)
    for n in report.notes:
        log.info("cohort %s: %s", report.root.name, n)
    return report.cohort
