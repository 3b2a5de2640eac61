"""A clinician's assessment of the same case — the reference a model must be compared with.

``cohort.yaml`` may declare one or more reader references (data/README.md, "Reader
references"), e.g. the radiologist's BI-RADS category::

    references:
      birads:
        column: BIRADS                  # default: the reference's name
        type: ordinal                   # ordinal (categories in order) or probability (0-1)
        order: ["1", "2", "3", "4a", "4b", "4c", "5"]
        positive_from: 4a               # the clinic's rule: this category and above -> biopsy
        aggregate: max                  # a subject with several images: the highest (default)
        label: radiologist's BI-RADS category

A reference is **never a model input**: the contract refuses a column that is both a feature
and a reference, the clinical preprocessing only ever sees declared features, and the folds
only see subjects and labels. It is read here, per subject, for the comparisons of
:mod:`phyllodes.evaluate.readers`: an ordinal category becomes its rank (0, 1, ...) in
``order`` — a score whose AUC is the reader's, ties included — and the clinic's decision is
``rank >= rank(positive_from)``. A value may be missing for some subjects; those subjects are
left out of that reference's comparisons, and every table says on how many subjects each
comparison rests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REFERENCE_TYPES = ("ordinal", "probability")
AGGREGATES = ("max", "min", "mean", "first")
REFERENCE_KEYS = ("column", "type", "order", "positive_from", "aggregate", "label")


@dataclass(frozen=True)
class ReferenceSpec:
    """One declared reader reference (see the module docstring)."""

    name: str
    column: str
    type: str = "ordinal"
    order: tuple[str, ...] = ()
    positive_from: str | float | None = None
    aggregate: str = "max"
    label: str = ""

    @property
    def title(self) -> str:
        """The reference's name for people (its ``label``, else its name)."""
        return self.label or self.name

    def score_of(self, value: str | None) -> float:
        """The value as a number: an ordinal category's rank in ``order`` or a probability;
        NaN when missing."""
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return float("nan")
        if self.type == "ordinal":
            return float(self.order.index(str(value)))
        return float(value)

    def valid_score(self, value) -> float:
        """:meth:`score_of` of a validated cell, NaN for a missing marker (the contract lets
        only categories, probabilities and declared missing strings through)."""
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return float("nan")
        if self.type == "ordinal":
            return float(self.order.index(str(value))) if str(value) in self.order \
                else float("nan")
        try:
            x = float(value)
        except ValueError:
            return float("nan")
        return x if 0.0 <= x <= 1.0 else float("nan")

    @property
    def threshold(self) -> float | None:
        """The score at and above which the clinic's rule calls a case positive (None when the
        reference declares no rule)."""
        if self.positive_from is None:
            return None
        return self.score_of(str(self.positive_from)) if self.type == "ordinal" \
            else float(self.positive_from)

    def category_of(self, score: float) -> str:
        """The category (or probability) a score stands for, as text."""
        if np.isnan(score):
            return ""
        return self.order[int(round(score))] if self.type == "ordinal" else f"{score:g}"

    def rule_text(self) -> str:
        """The clinic's decision rule in words, e.g. ``BI-RADS >= 4a``."""
        return f"{self.title} >= {self.positive_from}" if self.positive_from is not None else ""


def parse_references(raw, features: set[str], reserved: set[str], problem) -> dict:
    """The ``references`` mapping of cohort.yaml as :class:`ReferenceSpec` objects; each
    problem goes to ``problem(message)`` (with the fix). A reference that is also a feature
    (in any feature list) is refused: it would reach the model."""
    out: dict[str, ReferenceSpec] = {}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        problem("'references' must map names to reader references, e.g. references: {birads: "
                "{type: ordinal, order: ['2', '3', '4a', '4b', '4c', '5'], positive_from: 4a}}")
        return out
    for name, spec in raw.items():
        name = str(name)
        where = f"references.{name}"
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            problem(f"{where} must be a mapping of {', '.join(REFERENCE_KEYS)}")
            continue
        unknown = [k for k in spec if k not in REFERENCE_KEYS]
        for k in unknown:
            problem(f"{where}: unknown key '{k}'; the keys are {', '.join(REFERENCE_KEYS)}")
        column = str(spec.get("column", name))
        kind = spec.get("type", "ordinal")
        if kind not in REFERENCE_TYPES:
            problem(f"{where}: type {kind!r} must be one of {', '.join(REFERENCE_TYPES)}")
            continue
        if column in features:
            problem(f"{where}: column '{column}' is also declared as a feature. A reader's "
                    "assessment is a reference the model is compared with, never a model input "
                    "(it would leak the reader's conclusion into the model): remove it from the "
                    "feature lists, or drop the reference")
            continue
        if column in reserved:
            problem(f"{where}: '{column}' is a column of the contract itself, not a reference")
            continue
        aggregate = spec.get("aggregate", "max")
        if aggregate not in AGGREGATES:
            problem(f"{where}: aggregate {aggregate!r} must be one of {', '.join(AGGREGATES)}")
            continue
        order: tuple[str, ...] = ()
        positive_from = spec.get("positive_from")
        if kind == "ordinal":
            raw_order = spec.get("order")
            if not isinstance(raw_order, list) or len(raw_order) < 2:
                problem(f"{where}: an ordinal reference needs 'order', its categories from "
                        "lowest to highest suspicion, e.g. order: ['2', '3', '4a', '5']")
                continue
            order = tuple(str(x).strip() for x in raw_order)
            if len(set(order)) != len(order):
                problem(f"{where}: 'order' lists a category twice")
                continue
            if positive_from is not None and str(positive_from).strip() not in order:
                problem(f"{where}: positive_from {positive_from!r} is not in 'order' "
                        f"{list(order)}")
                continue
            if positive_from is not None:
                positive_from = str(positive_from).strip()
        elif positive_from is not None:
            if isinstance(positive_from, bool) or not isinstance(positive_from, (int, float)) \
                    or not 0 < float(positive_from) < 1:
                problem(f"{where}: positive_from of a probability must be a number in (0, 1)")
                continue
            positive_from = float(positive_from)
        label = spec.get("label", "")
        out[name] = ReferenceSpec(name, column, kind, order, positive_from, aggregate,
                                  str(label) if label else "")
    columns = [r.column for r in out.values()]
    for c in {c for c in columns if columns.count(c) > 1}:
        problem(f"references: column '{c}' is declared by more than one reference")
    return out


def value_problem(ref: ReferenceSpec, value: str) -> str | None:
    """Why a (non-missing) cell of the reference's column is not a valid value, or None."""
    if ref.type == "ordinal":
        if value in ref.order:
            return None
        return (f"'{value}' is not one of the categories of reference '{ref.name}' "
                f"{list(ref.order)}; correct it, write a declared missing string, or add it to "
                f"references.{ref.name}.order in cohort.yaml")
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if np.isfinite(x) and 0.0 <= x <= 1.0:
        return None
    return (f"'{value}' is not a probability between 0 and 1 (reference '{ref.name}'); write "
            "e.g. 0.35, or a declared missing string")


def subject_reference(images: pd.DataFrame, ref: ReferenceSpec) -> pd.DataFrame:
    """Per subject: ``subject_id``, ``y``, the reference's ``score`` (NaN when missing on every
    image of the subject), its ``category`` and, when the reference declares a rule,
    ``positive`` (the clinic's decision), aggregated over the subject's images by the declared
    rule (default: the highest category)."""
    scores = images[ref.column].map(ref.valid_score) if ref.column in images else \
        pd.Series(np.nan, index=images.index)
    df = pd.DataFrame({"subject_id": images["subject_id"].to_numpy(),
                       "y": images["y"].to_numpy(), "score": scores.to_numpy(dtype=float)})
    g = df.groupby("subject_id", sort=False)
    agg = {"max": "max", "min": "min", "mean": "mean", "first": "first"}[ref.aggregate]
    out = pd.DataFrame({"y": g["y"].first(), "score": g["score"].agg(agg)}).reset_index()
    out["category"] = [ref.category_of(s) for s in out["score"]]
    if ref.threshold is not None:
        out["positive"] = np.where(out["score"].isna(), np.nan,
                                   (out["score"] >= ref.threshold).astype(float))
    return out
