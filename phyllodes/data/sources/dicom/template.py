"""The mapping template (``--write-mapping-template``): a mapping guessed from the
spreadsheet's header and values, every guess to be checked by a person."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from phyllodes.data.sources.dicom.guard import OutputGuard
from phyllodes.data.sources.dicom.identifiers import (
    ACC_RE,
    DATE_LIKE,
    ID_RE,
    PHI_RE,
    Identifiers,
    contact_like,
    fold,
    name_words,
    person_name_like,
    sheet_name_tokens,
)
from phyllodes.data.sources.dicom.spreadsheet import number_or_none, read_spreadsheet
from phyllodes.data.sources.dicom.vocabulary import DEFAULT_MISSING

_LABEL_RE = re.compile(r"(patholog|diagnos|label|classif|grade|histolog|outcome)", re.I)

_BIRTH_RE = re.compile(r"(birth|dob|geburt)", re.I)

_EXAM_RE = re.compile(r"(exam|study|scan|visit|ultrasound|us.?date|imaging)", re.I)

_DATE_RE = re.compile(r"(date|dob|^dt_|_dt$)", re.I)

def category_problem(values: list[str], name_tokens: set[str] = frozenset(),
                     max_distinct: int = 20) -> str | None:
    """Why a column's values do not look like categories (None when they do): categories are
    short (at most 3 words and 32 characters), repeated (at most ``max_distinct`` distinct
    values, and at most half as many as the rows holding one), and not written like person
    names, contacts or sentences. Never quotes a value."""
    vals = [v for v in values if v and v not in DEFAULT_MISSING]
    if not vals:
        return "no values"
    if any(person_name_like(v) for v in vals):
        return "some values are written like person names (a title, an initial, 'Family, Given')"
    if any(contact_like(v) for v in vals):
        return "some values look like addresses, e-mail addresses or phone numbers"
    if any(len(v) > 32 or len(v.split()) > 3 or re.search(r"[.;!?]\s+\S", v) for v in vals):
        return "free text: some values are longer than 3 words or 32 characters, or sentences"
    if any(fold(w) in name_tokens for v in vals for w in name_words(v)):
        return "some values are also words of the person names in the spreadsheet"
    n = len(set(vals))
    if n > max_distinct:
        return f"{n} distinct values: free text or ids, not categories"
    if n > max(2, len(vals) // 2):
        return (f"the values are hardly repeated ({n} distinct in {len(vals)} rows): free text "
                "or ids, not categories")
    return None

def _snake(s: str) -> str:
    t = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()
    if not t or not t[0].isalpha():
        t = "f_" + t
    return t

def _yv(v: str) -> str:
    """A YAML scalar for ``v``: plain when safe, else double-quoted."""
    if re.match(r"^[A-Za-z_][A-Za-z0-9_ ./()-]*$", v) and v.lower() not in (
            "yes", "no", "true", "false", "null", "on", "off", "y", "n", "~") \
            and not v.endswith(" "):
        return v
    return json.dumps(v, ensure_ascii=False)

def _guess_label(v: str) -> str | None:
    t = v.casefold()
    if "malig" in t:
        return "malignant"
    if "border" in t:
        return "borderline"
    if "benign" in t:
        return "benign"
    return None

def mapping_template(df: pd.DataFrame, source: Path, join: str = "patient_id") -> str:
    """A commented mapping file guessed from the spreadsheet's header and values."""
    cols = list(df.columns)
    acc_col = next((c for c in cols if ACC_RE.search(c)), None)
    pid_col = next((c for c in cols if ID_RE.search(c) and c != acc_col), None)
    if join == "patient_id" and pid_col is None:
        pid_col = cols[0] if cols else "CHANGE_ME"
    if join == "accession" and acc_col is None:
        acc_col = cols[0] if cols else "CHANGE_ME"
    id_cols = {pid_col, acc_col} - {None}
    label_col = next((c for c in cols if _LABEL_RE.search(c) and c not in id_cols), None)
    dates = [c for c in cols if c not in id_cols and c != label_col and
             (_DATE_RE.search(c) or _mostly(df[c], lambda s: DATE_LIKE.match(s) is not None))]
    birth = next((c for c in dates if _BIRTH_RE.search(c)), None)
    exam = next((c for c in dates if c != birth and _EXAM_RE.search(c)), None)
    numeric, categorical, never = _classify_columns(
        df, [c for c in cols if c not in id_cols and c != label_col and c not in dates])
    L = [
        "# Column mapping for `python -m phyllodes import-dicom` (phyllodes/data/sources/dicom/,",
        "# data/README.md). Guessed from the header of " + _yv(source.name) + ": check every",
        "# line, then pass --mapping THIS_FILE. Only the columns mapped below reach cohort.csv;",
        "# never map a column that identifies a person (names, ids, dates, free text).",
        "",
        "# The spreadsheet columns holding the DICOM PatientID and AccessionNumber, and which",
        "# of the two the rows are joined on (patient_id or accession; --join overrides it).",
        f"join: {join}",
        f"patient_id_column: {_yv(pid_col)}" if pid_col else "# patient_id_column: CHANGE_ME",
        f"accession_column: {_yv(acc_col)}" if acc_col else "# accession_column: CHANGE_ME",
        "sheet: 0                 # Excel only: the sheet's name or 0-based index",
        "",
        "# The pathology label. values: spreadsheet value -> contract label; null excludes the",
        "# patient (listed in the import report). Every value met must be listed.",
        "label:",
        f"  column: {_yv(label_col or 'CHANGE_ME')}",
        "  values:",
    ]
    if label_col is not None:
        vals = sorted(v for v in df[label_col].unique() if v)
        if len(vals) <= 30:
            for v in vals:
                g = _guess_label(v)
                L.append(f"    {_yv(v)}: {g if g else 'null   # CHANGE_ME: benign, borderline, '}"
                         + ("" if g else "malignant or null"))
        else:
            L.append(f"    # {len(vals)} distinct values: is this the label column?")
    L += [
        "positive_labels: [borderline, malignant]   # -> 1",
        "negative_labels: [benign]                  # -> 0",
        "",
        "# Numeric features. name: column | {column: C, scale: 10} (e.g. cm -> mm) |",
        "# {from_dates: [birth date, exam date]}: whole years at the exam, the dates are not",
        "# kept; either date may be dicom:PatientBirthDate or dicom:StudyDate (the patient's",
        "# earliest study).",
        "numeric:",
    ]
    has_age = any(_snake(c) == "age" for c in numeric)
    if birth and not has_age:
        exam_col = _yv(exam) if exam else "dicom:StudyDate"
        L.append(f"  age: {{from_dates: [{_yv(birth)}, {exam_col}]}}")
    for c in numeric:
        L.append(f"  {_snake(c)}: {_yv(c)}")
    L += ["", "# Categorical features. name: column | {column: C, values: {as written: as kept}}",
          "categorical:"]
    for c in categorical:
        L.append(f"  {_snake(c)}: {_yv(c)}")
    if never:
        L += ["", "# Not mapped: they look like identifiers or free text (map one only if it",
              "# truly is a category; the self-check refuses names and ids in the output):"]
        L += [f"#   {c}: {why}" for c, why in never]
    if dates:
        L += ["", "# Dates (only ever used through from_dates): " + ", ".join(dates)]
    L += [
        "",
        'missing_values: ["", NA, N/A, unknown, not available]',
        "# date_format: '%m/%d/%Y'   # only if dates are written d/m/y or m/d/y ambiguously",
        "# description: ...           # copied to cohort.yaml (citation and license too)",
        "",
    ]
    return "\n".join(L)

def _classify_columns(df: pd.DataFrame, cols: list[str]
                      ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The template's (numeric, categorical, not mapped with the reason) of ``cols``: a
    column is proposed as categorical only when its values look like categories
    (:func:`category_problem`)."""
    numeric, categorical, never = [], [], []
    names = sheet_name_tokens(df)
    for c in cols:
        if PHI_RE.search(c) or ID_RE.search(c) or ACC_RE.search(c):
            never.append((c, "the header names an identifier or free text (a name, id, "
                             "address, physician, comment or note)"))
        elif _mostly(df[c], lambda s: number_or_none(s) is not None):
            numeric.append(c)
        elif (why := category_problem(list(df[c]), names)) is None:
            categorical.append(c)
        else:
            never.append((c, why))
    return numeric, categorical, never

def _mostly(col: pd.Series, test, share: float = 0.9) -> bool:
    vals = [v for v in col if v and v not in DEFAULT_MISSING]
    return bool(vals) and sum(1 for v in vals if test(v)) >= share * len(vals)

def write_mapping_template(clinical: Path | str, path: Path | str, join: str = "patient_id",
                           sheet: str | int = 0, overwrite: bool = False) -> Path:
    """Write :func:`mapping_template` of the spreadsheet to ``path``; return ``path``."""
    clinical, path = Path(clinical), Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; edit it, or pass --overwrite to replace it")
    phi = Identifiers()
    with OutputGuard(phi):  # what pandas or openpyxl print, scrubbed of the sheet's values
        df = read_spreadsheet(clinical, sheet)
        phi.update(v for c in df.columns for v in df[c] if v)
        text = mapping_template(df, clinical, join)
    path.write_text(text, encoding="utf-8")
    return path
