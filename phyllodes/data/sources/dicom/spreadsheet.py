"""The clinical spreadsheet (CSV or Excel) and its column mapping: reading, mapping each
row, and resolving a patient's rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from phyllodes.data.sources.dicom.identifiers import ACC_RE, DATE_LIKE, ID_RE, SHEET_PHI_RE
from phyllodes.data.sources.dicom.pseudonyms import normalise_id
from phyllodes.data.sources.dicom.vocabulary import (
    DEFAULT_MISSING,
    RESERVED_COLUMNS,
    DicomImportError,
    cell_text,
)


@dataclass
class Feature:
    """One clinical feature of the mapping: a column (maybe recoded or scaled) or an age."""

    name: str
    kind: str  # numeric | categorical
    column: str | None = None
    values: dict[str, str | None] | None = None  # casefolded spreadsheet value -> kept value
    scale: float | None = None
    from_dates: tuple[str, str] | None = None  # (birth, exam): a column or dicom:<tag>
    #: a reader reference (cohort.yaml 'references': type, order, positive_from, ...), not a
    #: feature: copied like a categorical column, declared as a reference, never an input
    reference: dict | None = None

@dataclass
class ColumnMapping:
    """The user's mapping file: how the spreadsheet's columns become the contract's."""

    path: Path
    label_column: str
    patient_id_column: str | None = None
    accession_column: str | None = None
    join: str | None = None
    sheet: str | int = 0
    label_values: dict[str, str | None] | None = None
    positive_labels: tuple[str, ...] = ("borderline", "malignant")
    negative_labels: tuple[str, ...] = ("benign",)
    features: list[Feature] = field(default_factory=list)
    missing_values: tuple[str, ...] = DEFAULT_MISSING
    date_format: str | None = None
    description: str = ""
    citation: str = ""
    license: str = ""

    @property
    def id_columns(self) -> set[str]:
        return {c for c in (self.patient_id_column, self.accession_column) if c}

    def key_column(self, join: str) -> str:
        """The spreadsheet column matched to PatientID (join patient_id) or AccessionNumber."""
        col = self.patient_id_column if join == "patient_id" else self.accession_column
        if not col:
            key = "patient_id_column" if join == "patient_id" else "accession_column"
            raise DicomImportError(f"mapping {self.path}", [
                f"{self.path}: --join {join} needs '{key}': the spreadsheet column holding "
                + ("the PatientID" if join == "patient_id" else "the AccessionNumber")])
        return col

    @property
    def columns(self) -> set[str]:
        cols = {self.label_column} | self.id_columns
        for f in self.features:
            if f.column:
                cols.add(f.column)
            for c in f.from_dates or ():
                if not c.startswith("dicom:"):
                    cols.add(c)
        return cols

MAPPING_KEYS = {"join", "patient_id_column", "accession_column", "sheet", "label",
                "positive_labels", "negative_labels", "numeric", "categorical", "missing_values",
                "references",
                "date_format", "description", "citation", "license"}

DICOM_DATES = ("dicom:PatientBirthDate", "dicom:StudyDate")

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

def read_mapping(path: Path | str) -> ColumnMapping:
    """Read and check a mapping file; one :class:`DicomImportError` lists every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DicomImportError(f"mapping {path}", [
            f"{path}: file not found; write one with --write-mapping-template {path}"]) from None
    except yaml.YAMLError as e:
        raise DicomImportError(f"mapping {path}", [f"{path}: not valid YAML ({e})"]) from None
    if not isinstance(raw, dict):
        raise DicomImportError(f"mapping {path}", [f"{path}: must be a mapping of keys"])
    p: list[str] = []
    for k in sorted(set(raw) - MAPPING_KEYS):
        p.append(f"{path}: unknown key '{k}'; the keys are {sorted(MAPPING_KEYS)}")
    if not (raw.get("patient_id_column") or raw.get("accession_column")):
        p.append(f"{path}: name the spreadsheet column holding the PatientID "
                 "(patient_id_column: ...) or the AccessionNumber (accession_column: ...)")
    join = raw.get("join") or ("patient_id" if raw.get("patient_id_column") else "accession")
    if join not in ("patient_id", "accession"):
        p.append(f"{path}: join must be patient_id or accession, not {join!r}")
    label = raw.get("label")
    label_col, label_values = None, None
    if isinstance(label, str):
        label_col = label
    elif isinstance(label, dict) and label.get("column"):
        label_col = str(label["column"])
        extra = set(label) - {"column", "values"}
        if extra:
            p.append(f"{path}: label has unknown key(s) {sorted(extra)}; use column and values")
        label_values = _value_map(label.get("values"), f"{path}: label.values", p)
    else:
        p.append(f"{path}: key 'label' must name the spreadsheet column of the pathology, "
                 "e.g. label: {column: Pathology, values: {Benign: benign, Malignant: "
                 "malignant}}")
    pos = _str_list(raw.get("positive_labels", ["borderline", "malignant"]),
                    f"{path}: positive_labels", p)
    neg = _str_list(raw.get("negative_labels", ["benign"]), f"{path}: negative_labels", p)
    if label_values:
        known = set(pos) | set(neg)
        for k, v in label_values.items():
            if v is not None and v not in known:
                p.append(f"{path}: label.values maps {k!r} to {v!r}, which is neither a positive "
                         f"{pos} nor a negative {neg} label; fix the value, declare the label, "
                         "or map it to null to exclude those patients")
    feats: list[Feature] = []
    for kind in ("numeric", "categorical"):
        block = raw.get(kind) or {}
        if not isinstance(block, dict):
            p.append(f"{path}: '{kind}' must map feature names to columns, e.g. "
                     f"{kind}: {{bmi: BMI}}")
            continue
        for name, spec in block.items():
            feats.append(_feature(str(name), kind, spec, path, p))
    feats += _references(raw.get("references"), path, p)
    names = [f.name for f in feats]
    for n in sorted({n for n in names if names.count(n) > 1}):
        p.append(f"{path}: feature '{n}' is declared twice")
    missing = _str_list(raw.get("missing_values", list(DEFAULT_MISSING)),
                        f"{path}: missing_values", p)
    sheet = raw.get("sheet", 0)
    if not isinstance(sheet, (str, int)):
        p.append(f"{path}: sheet must be a sheet name or a 0-based index")
    if p:
        raise DicomImportError(f"{len(p)} problem(s) in the mapping {path}", p)
    return ColumnMapping(
        path=path, label_column=str(label_col), join=join,
        patient_id_column=_opt_str(raw.get("patient_id_column")),
        accession_column=_opt_str(raw.get("accession_column")),
        sheet=sheet, label_values=label_values, positive_labels=tuple(pos),
        negative_labels=tuple(neg), features=feats, missing_values=tuple(missing),
        date_format=raw.get("date_format") or None,
        description=str(raw.get("description") or ""), citation=str(raw.get("citation") or ""),
        license=str(raw.get("license") or ""))

def _opt_str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)

def _str_list(v: Any, where: str, p: list[str]) -> list[str]:
    if not isinstance(v, list):
        p.append(f"{where} must be a list, e.g. [a, b]")
        return []
    return ["" if x is None else str(x) for x in v]

def _value_map(v: Any, where: str, p: list[str]) -> dict[str, str | None] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        p.append(f"{where} must map spreadsheet values to kept values, e.g. {{Benign: benign}}")
        return None
    return {cell_text(k).casefold(): (None if x is None else str(x)) for k, x in v.items()}

REFERENCE_SPEC_KEYS = ("type", "order", "positive_from", "aggregate", "label")

def _references(block: Any, path: Path, p: list[str]) -> list[Feature]:
    """The mapping's reader references, e.g. ``references: {birads: {column: 'US BI-RADS',
    order: ['2', '3', '4a', '4b', '4c', '5'], positive_from: 4a}}``: a spreadsheet column
    (``column``, optional ``values`` to recode) copied into cohort.csv under the reference's
    name and declared in cohort.yaml as a reference (data/README.md), never as a feature."""
    if block is None:
        return []
    if not isinstance(block, dict):
        p.append(f"{path}: 'references' must map reference names to {{column: ..., order: "
                 "[...], positive_from: ...}}")
        return []
    out = []
    for name, spec in block.items():
        if not isinstance(spec, dict) or not spec.get("column"):
            p.append(f"{path}: references.{name} needs 'column' (the spreadsheet column of the "
                     "reader's assessment) and, for categories, 'order'")
            continue
        f = _feature(str(name), "categorical",
                     {k: spec[k] for k in ("column", "values") if k in spec}, path, p)
        extra = set(spec) - {"column", "values", *REFERENCE_SPEC_KEYS}
        if extra:
            p.append(f"{path}: references.{name} has unknown key(s) {sorted(extra)}")
        f.reference = {k: spec[k] for k in REFERENCE_SPEC_KEYS if k in spec}
        out.append(f)
    return out

def _feature(name: str, kind: str, spec: Any, path: Path, p: list[str]) -> Feature:
    f = Feature(name=name, kind=kind)
    if not _NAME_RE.match(name) or name in RESERVED_COLUMNS:
        p.append(f"{path}: {kind}.{name}: a feature name must be a word (letters, digits, _) "
                 f"and not one of the contract's columns {sorted(RESERVED_COLUMNS)}")
    if isinstance(spec, str):
        f.column = spec
        return f
    if not isinstance(spec, dict):
        p.append(f"{path}: {kind}.{name} must be a column name or {{column: ...}}")
        return f
    allowed = {"column", "values"} if kind == "categorical" else {"column", "scale",
                                                                  "from_dates"}
    extra = set(spec) - allowed
    if extra:
        p.append(f"{path}: {kind}.{name} has unknown key(s) {sorted(extra)}; allowed: "
                 f"{sorted(allowed)}")
    if "from_dates" in spec:
        d = spec["from_dates"]
        if not (isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)):
            p.append(f"{path}: {kind}.{name}.from_dates must be [birth date column, exam date "
                     f"column] (either may be one of {list(DICOM_DATES)})")
        else:
            for x in d:
                if x.startswith("dicom:") and x not in DICOM_DATES:
                    p.append(f"{path}: {kind}.{name}.from_dates: {x!r} is not one of "
                             f"{list(DICOM_DATES)}")
            f.from_dates = (d[0], d[1])
    elif spec.get("column"):
        f.column = str(spec["column"])
    else:
        p.append(f"{path}: {kind}.{name} needs 'column' (or 'from_dates' for an age)")
    if "scale" in spec:
        try:
            f.scale = float(spec["scale"])
        except (TypeError, ValueError):
            p.append(f"{path}: {kind}.{name}.scale must be a number (e.g. 10 for cm -> mm)")
    if "values" in spec:
        f.values = _value_map(spec["values"], f"{path}: {kind}.{name}.values", p)
    return f

SHEET_ROW = "sheet_row"

def read_spreadsheet(path: Path | str, sheet: str | int = 0) -> pd.DataFrame:
    """Every cell of a CSV/TSV or Excel sheet as stripped text (see :func:`cell_text`), indexed
    by the row number a person sees (Excel's row, the CSV's line; the header is 1); empty rows
    are dropped."""
    path = Path(path)
    if not path.exists():
        raise DicomImportError(f"clinical spreadsheet {path}", [f"{path}: file not found"])
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        try:
            raw = pd.read_excel(path, sheet_name=sheet, dtype=object)
        except (ValueError, KeyError) as e:
            raise DicomImportError(f"clinical spreadsheet {path}", [
                f"{path}: cannot read sheet {sheet!r} ({e}); set 'sheet' in the mapping"]) \
                from None
        rows = list(range(2, len(raw) + 2))
    elif suffix in (".csv", ".tsv", ".txt"):
        raw, rows = _read_csv(path)
    else:
        raise DicomImportError(f"clinical spreadsheet {path}", [
            f"{path}: give a .csv, .tsv or .xlsx file (save an old .xls as .xlsx or .csv)"])
    raw.columns = [str(c).strip() for c in raw.columns]
    df = raw.map(cell_text)
    df.index = pd.Index(rows, name=SHEET_ROW)
    return df[(df != "").any(axis=1)] if len(df.columns) else df

def _read_csv(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """A CSV/TSV file as text cells, and the line each record starts on."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    try:
        sep = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
    raw = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                      skip_blank_lines=False)
    starts, end = [], 0
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        for _ in reader:
            starts.append(end + 1)
            end = reader.line_num
    except csv.Error:
        starts = []
    rows = starts[1:] if len(starts) == len(raw) + 1 else list(range(2, len(raw) + 2))
    return raw.fillna(""), rows

def sheet_rows(df: pd.DataFrame) -> list[int]:
    """The row numbers a person sees of ``df``'s rows (:func:`read_spreadsheet`'s index; for a
    frame made otherwise, its position + 2)."""
    if df.index.name == SHEET_ROW:
        return [int(i) for i in df.index]
    return list(range(2, len(df) + 2))

def _row_word(source: Path) -> str:
    """How a person calls a row of the spreadsheet: an Excel 'row', a CSV 'line'."""
    return "row" if source.suffix.lower() in (".xlsx", ".xlsm") else "line"

def rows_text(lines: list[int], word: str = "row") -> str:
    """'row 5', 'rows 5 and 9', 'lines 3, 7 and 12'."""
    ls = [str(x) for x in sorted(lines)]
    if len(ls) == 1:
        return f"{word} {ls[0]}"
    return f"{word}s " + ", ".join(ls[:-1]) + " and " + ls[-1]

_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                 "%d.%m.%Y")

def parse_date(s: str, fmt: str | None = None) -> dt.date | None:
    """A date from the unambiguous spellings (or ``fmt``); None when it is not one."""
    s = s.strip()
    for f in ((fmt,) if fmt else _DATE_FORMATS):
        try:
            return dt.datetime.strptime(s, f).date()
        except ValueError:
            continue
    return None

def _slash_order(values: list[str]) -> str | None:
    """'%m/%d/%Y' or '%d/%m/%Y' when the values of a column decide it, else None."""
    first = second = False
    for v in values:
        m = re.match(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})$", v)
        if m:
            first |= int(m.group(1)) > 12
            second |= int(m.group(2)) > 12
    if first and not second:
        return "%d/%m/%Y"
    if second and not first:
        return "%m/%d/%Y"
    return None

def age_years(birth: dt.date, exam: dt.date) -> int:
    """Whole years from ``birth`` to ``exam``."""
    return exam.year - birth.year - ((exam.month, exam.day) < (birth.month, birth.day))

def _fmt_number(x: float) -> str:
    y = float(f"{x:.10g}")
    return str(int(y)) if y.is_integer() else repr(y)

def number_or_none(s: str) -> float | None:
    t = s.strip()
    if t.count(",") == 1 and "." not in t:
        t = t.replace(",", ".")
    try:
        x = float(t)
    except ValueError:
        return None
    return x if math.isfinite(x) else None

class _Missing(frozenset):
    """The declared missing strings, compared without regard to case or surrounding spaces."""

    def __new__(cls, values):
        return super().__new__(cls, {str(v).strip().casefold() for v in values})

    def __contains__(self, v) -> bool:
        return super().__contains__(str(v).strip().casefold())

@dataclass
class ClinicalRow:
    """One spreadsheet row, mapped: label, feature values as kept ('' = missing), dates."""

    line: int  # the row number a person sees (Excel's row, the CSV's line)
    key: str
    raw_id: str
    label: str  # '' when missing or excluded
    label_excluded: bool
    values: dict[str, str]
    dates: dict[str, tuple[Any, Any]]  # feature -> (birth, exam): date, None or 'dicom:...'
    unit: str = "row"  # 'row' (Excel) or 'line' (CSV)

def clinical_rows(df: pd.DataFrame, m: ColumnMapping, source: Path, join: str = "patient_id"
                  ) -> tuple[dict[str, list[ClinicalRow]], int]:
    """Map every spreadsheet row; rows grouped by their normalised PatientID or accession
    number (``join``), and the count of rows without one.

    Raises one :class:`DicomImportError` naming each bad cell by row (as Excel numbers it; the
    line of a CSV) and column (never its value, which may identify a person).
    """
    key_col = m.key_column(join)
    _check_mapping_fits(df, m, source)
    miss = _Missing(m.missing_values)
    fmts = {c: m.date_format or _slash_order(list(df[c])) for f in m.features
            for c in f.from_dates or () if not c.startswith("dicom:")}
    unit = _row_word(source)
    rows: dict[str, list[ClinicalRow]] = {}
    n_no_id = 0
    p: list[str] = []
    for line, rec in zip(sheet_rows(df), df.to_dict("records")):
        raw_id = rec[key_col]
        key = normalise_id(raw_id)
        if not key or raw_id in miss:
            n_no_id += 1
            continue
        where = f"{source.name} {unit} {line}"
        label, excluded = _row_label(rec, m, miss, where, p)
        dates = {f.name: _row_dates(rec, f, fmts, miss, where, p) for f in m.features
                 if f.from_dates}
        values = {f.name: "" if f.from_dates else _row_value(rec, f, miss, where, p)
                  for f in m.features}
        rows.setdefault(key, []).append(ClinicalRow(line, key, raw_id, label, excluded, values,
                                                    dates, unit))
    if p:
        raise DicomImportError(f"{len(p)} problem(s) in the clinical spreadsheet {source}", p)
    return rows, n_no_id

def _check_mapping_fits(df: pd.DataFrame, m: ColumnMapping, source: Path) -> None:
    """Every mapped column exists, and none looks like an identifier by its header."""
    p = [f"{m.path}: column '{c}' is not in {source.name}; its columns are {list(df.columns)}"
         for c in sorted(c for c in m.columns if c not in df.columns)]
    for f in m.features:
        if f.column and (f.column in m.id_columns or SHEET_PHI_RE.search(f.column)
                         or ID_RE.search(f.column) or ACC_RE.search(f.column)):
            p.append(f"{m.path}: {f.kind}.{f.name} maps column '{f.column}', which looks like "
                     "an identifier (a name, id, address or physician); identifiers never "
                     "become features: remove it from the mapping")
    if p:
        raise DicomImportError(f"the mapping {m.path} does not fit {source}", p)

def _row_label(rec: dict, m: ColumnMapping, miss: _Missing, where: str, p: list[str]
               ) -> tuple[str, bool]:
    """(label, excluded) of one row; problems appended to ``p``."""
    lab_raw = rec[m.label_column]
    if not lab_raw or lab_raw in miss:
        return "", False
    if m.label_values is not None:
        k = lab_raw.casefold()
        if k not in m.label_values:
            p.append(f"{where}, column '{m.label_column}': the value is not in the mapping's "
                     "label.values; add it (map it to null to exclude)")
            return "", False
        if m.label_values[k] is None:
            return "", True
        return str(m.label_values[k]), False
    label = lab_raw.strip().lower()
    if label not in set(m.positive_labels) | set(m.negative_labels):
        p.append(f"{where}, column '{m.label_column}': not one of the labels "
                 f"{list(m.positive_labels) + list(m.negative_labels)}; add label.values to "
                 "the mapping to recode it")
        return "", False
    return label, False

def _row_dates(rec: dict, f: Feature, fmts: dict, miss: _Missing, where: str, p: list[str]
               ) -> tuple[Any, Any]:
    """(birth, exam) of an age feature: a date, None, or the 'dicom:...' it stands for."""
    pair: list[Any] = []
    for c in f.from_dates or ():
        s = "" if c.startswith("dicom:") else rec[c]
        if c.startswith("dicom:"):
            pair.append(c)
        elif not s or s in miss:
            pair.append(None)
        else:
            d = parse_date(s, fmts.get(c))
            if d is None:
                p.append(f"{where}, column '{c}': not a date the import can read "
                         "unambiguously; write YYYY-MM-DD or set date_format in the mapping "
                         "(e.g. date_format: '%m/%d/%Y')")
            pair.append(d)
    return pair[0], pair[1]

def _row_value(rec: dict, f: Feature, miss: _Missing, where: str, p: list[str]) -> str:
    """The kept value of one feature of one row ('' when missing); problems appended."""
    s = rec[f.column]
    if not s or s in miss:
        return ""
    if f.values is not None:
        k = s.casefold()
        if k not in f.values:
            p.append(f"{where}, column '{f.column}': the value is not in the mapping's "
                     f"{f.kind}.{f.name}.values; add it (null for missing)")
            return ""
        s = f.values[k] or ""
    if f.kind == "numeric" and s:
        x = number_or_none(s)
        if x is None:
            p.append(f"{where}, column '{f.column}': not a number; write a number or one of the "
                     f"missing values {sorted(miss)}")
            return ""
        return _fmt_number(x * (f.scale if f.scale is not None else 1.0))
    if f.kind == "categorical" and s and DATE_LIKE.match(s):
        p.append(f"{where}, column '{f.column}': looks like a date; dates are never kept (use "
                 "from_dates for an age) — remove this feature from the mapping")
        return ""
    return s

def disagreement(rows: list[ClinicalRow], m: ColumnMapping) -> list[str]:
    """What the spreadsheet rows of one patient disagree on: 'label' and feature names."""
    out = []
    labels = {r.label for r in rows if r.label}
    if len(labels) > 1 or (labels and any(r.label_excluded for r in rows)):
        out.append("label")
    for f in m.features:
        if not f.from_dates and len({r.values[f.name] for r in rows if r.values[f.name]}) > 1:
            out.append(f.name)
    return out

def resolve_patient(rows: list[ClinicalRow], m: ColumnMapping, dicom_dates: dict[str, Any]
                    ) -> tuple[str, dict[str, str], str]:
    """(label, values, '') for one patient's rows, or ('', {}, skip reason)."""
    if any(r.label_excluded for r in rows):
        return "", {}, "no_label"
    labels = {r.label for r in rows if r.label}
    if not labels:
        return "", {}, "no_label"
    if disagreement(rows, m):
        return "", {}, "conflicting_clinical_rows"
    values: dict[str, str] = {}
    for f in m.features:
        if f.from_dates:
            values[f.name] = _age_of(rows, f, dicom_dates)
            continue
        vals = {r.values[f.name] for r in rows if r.values[f.name]}
        values[f.name] = vals.pop() if vals else ""
    return labels.pop(), values, ""

def _age_of(rows: list[ClinicalRow], f: Feature, dicom_dates: dict[str, Any]) -> str:
    """The age in whole years at the earliest exam with both dates ('' when none)."""
    ages = []
    for r in rows:
        b, e = (dicom_dates.get(x) if isinstance(x, str) else x for x in r.dates[f.name])
        if b is not None and e is not None:
            a = age_years(b, e)
            if 0 <= a <= 125:
                ages.append((e, a))
    return str(min(ages)[1]) if ages else ""

def duplicate_rows(rows: dict[str, list[ClinicalRow]], m: ColumnMapping) -> list[dict]:
    """The patients (or accession numbers) with several spreadsheet rows: their row numbers,
    and whether they are merged (they agree) or excluded (what they disagree on). Ordered by
    their first row; ``key`` is private."""
    out = []
    for key, rs in rows.items():
        if len(rs) < 2:
            continue
        differ = disagreement(rs, m)
        out.append({"key": key, "rows": sorted(r.line for r in rs), "unit": rs[0].unit,
                    "result": "excluded" if differ else "merged", "disagree_on": differ})
    return sorted(out, key=lambda e: e["rows"])
