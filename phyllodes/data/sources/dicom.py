"""Import a hospital's DICOM ultrasound export into the data contract, de-identified.

``python -m phyllodes import-dicom --source EXPORT --clinical SHEET --mapping MAP.yaml
--out data/private/NAME`` reads every file under EXPORT and writes a cohort folder
(``cohort.csv``, ``cohort.yaml``, ``images/``, ``import_report.json`` and ``.md``) that passes
:func:`phyllodes.data.cohort.load_cohort`. data/README.md ("Importing a hospital DICOM export") is
the
user's guide; in short:

* every file under the source is accounted for: imported, or skipped with a reason;
* pixels are decoded by pydicom (native, RLE, JPEG baseline/extended/lossless, JPEG-LS,
  JPEG 2000) and turned into 8-bit grayscale: luma for RGB/YBR/palette colour, MONOCHROME1
  inverted, more than 8 stored bits mapped linearly to 0-255 (the first VOI window when there
  is one, else the frame's own range); overlay planes are never burned in and bits above
  BitsStored are dropped;
* cine clips: the middle frame by default (``frames``: first, all, every:K);
* each frame is cropped to the 2D tissue region of the Sequence of Ultrasound Regions
  (0018,6011), the largest if there are several; without it, to the largest bright connected
  area, everything outside that area blacked out (flagged); BurnedInAnnotation YES without a
  region is skipped;
* the region's PhysicalDeltaX/Y in cm become ``pixel_size_mm_x``/``pixel_size_mm_y``;
* subjects are ``S`` + 12 hex digits of HMAC-SHA256(key, normalised PatientID); the key, the
  pseudonym table and the detailed report (with source paths) live beside the key file,
  outside the cohort folder and outside any git work tree;
* the clinical spreadsheet (CSV or Excel) is joined on PatientID or AccessionNumber and mapped
  to the contract by a small YAML file (``--write-mapping-template`` writes one); age is
  computed from dates and the dates are dropped;
* the written cohort is checked by :func:`phyllodes.data.cohort.load_cohort`; its problems, if
  any, are in the report (and the command exits with status 2);
* before the cohort is moved into place, every output file is searched for every identifier
  that was read (names, ids, accession numbers, dates in several spellings, institution,
  physicians, UIDs); a hit aborts the import. The same inputs and key give the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "S"
SUBJECT_HEX = 12
US_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6",    # (retired) Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3",    # (retired) Ultrasound Multi-frame Image Storage
}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
FRAME_CHOICES = "middle, first, all or every:K"
WITHOUT_REGION = ("crop", "full", "skip")
RESERVED_COLUMNS = {"subject_id", "image_path", "label", "roi_x0", "roi_y0", "roi_x1",
                    "roi_y1", "mask_path", "pixel_size_mm_x", "pixel_size_mm_y"}
OVERLAY_GROUPS = tuple(range(0x6000, 0x6020, 2))
DEFAULT_MISSING = ("", "NA", "N/A", "n.a.", "nan", "null", "-", "--", "?", "missing",
                   "unknown", "not known", "not available", "not applicable", "#N/A")

#: The tags the import reads to build the cohort, and why. Nothing else of a header is used.
TAGS_USED: dict[str, str] = {
    "SpecificCharacterSet": "decode the text tags",
    "SOPClassUID": "recognise ultrasound when Modality is absent",
    "Modality": "keep ultrasound (US) only",
    "PatientID": "the subject: keyed hash, never written",
    "AccessionNumber": "join with the spreadsheet (--join accession), never written",
    "PatientBirthDate": "age, only when the mapping names dicom:PatientBirthDate; never written",
    "StudyDate": "order a subject's images; age when the mapping names dicom:StudyDate; "
                 "never written",
    "StudyTime": "order a subject's images, never written",
    "SeriesNumber": "order a subject's images",
    "InstanceNumber": "order a subject's images",
    "SOPInstanceUID": "find duplicate instances; order (hashed), never written",
    "BurnedInAnnotation": "skip or flag files with text burned into the pixels",
    "SequenceOfUltrasoundRegions": "crop to the 2D tissue region; pixel size in mm",
    "NumberOfFrames": "frames of a cine clip",
    "Rows": "decode", "Columns": "decode", "SamplesPerPixel": "decode",
    "PhotometricInterpretation": "decode (grayscale conversion)",
    "PlanarConfiguration": "decode", "BitsAllocated": "decode", "BitsStored": "decode",
    "HighBit": "decode", "PixelRepresentation": "decode",
    "RescaleSlope": "more than 8 bits: modality rescale", "RescaleIntercept": "idem",
    "WindowCenter": "more than 8 bits: window to 8 bits", "WindowWidth": "idem",
    "RedPaletteColorLookupTableDescriptor": "PALETTE COLOR",
    "GreenPaletteColorLookupTableDescriptor": "PALETTE COLOR",
    "BluePaletteColorLookupTableDescriptor": "PALETTE COLOR",
    "RedPaletteColorLookupTableData": "PALETTE COLOR",
    "GreenPaletteColorLookupTableData": "PALETTE COLOR",
    "BluePaletteColorLookupTableData": "PALETTE COLOR",
    "SegmentedRedPaletteColorLookupTableData": "PALETTE COLOR",
    "SegmentedGreenPaletteColorLookupTableData": "PALETTE COLOR",
    "SegmentedBluePaletteColorLookupTableData": "PALETTE COLOR",
    "ExtendedOffsetTable": "decode compressed frames",
    "ExtendedOffsetTableLengths": "decode compressed frames",
    "PixelData": "the image",
    "FloatPixelData": "reported as unsupported",
    "DoubleFloatPixelData": "reported as unsupported",
    "(60xx,0010) OverlayRows": "detect overlay planes (never burned in, not kept)",
    "(60xx,3000) OverlayData": "detect overlay planes (never burned in, not kept)",
}
#: Identifying tags read only to check that none of their values reaches the output.
TAGS_CHECKED = (
    "PatientName", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "IssuerOfPatientID",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "StationName", "DeviceSerialNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
    "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime",
)

SKIP_REASONS: dict[str, str] = {
    "not_dicom": "not a DICOM file",
    "read_error": "a DICOM file that cannot be parsed (truncated or corrupt)",
    "dicomdir": "a DICOMDIR index, not an image",
    "not_ultrasound": "not ultrasound (Modality is not US)",
    "no_pixel_data": "no pixel data (e.g. a structured report or a presentation state)",
    "unsupported_transfer_syntax": "no decoder installed for its transfer syntax "
                                   "(e.g. MPEG-4 or HEVC video)",
    "unsupported_pixel_format": "a pixel format the import does not convert "
                                "(float pixels, or neither 1 nor 3 samples per pixel)",
    "decode_error": "the pixel data could not be decoded",
    "no_patient_id": "no PatientID, so the subject is unknown",
    "no_accession": "no AccessionNumber to join on (--join accession)",
    "patient_not_in_spreadsheet": "the patient is not in the clinical spreadsheet",
    "accession_not_in_spreadsheet": "the accession number is not in the clinical spreadsheet",
    "no_label": "the spreadsheet gives no label (empty cell, or a value the mapping maps to "
                "null)",
    "conflicting_clinical_rows": "the patient's spreadsheet rows disagree on the label or a "
                                 "feature",
    "no_tissue_region": "the Sequence of Ultrasound Regions has no 2D tissue region "
                        "(a Doppler spectrum, M-mode or waveform)",
    "region_outside_image": "the ultrasound region lies outside the image",
    "burned_in_without_region": "BurnedInAnnotation is YES and there is no ultrasound region "
                                "to crop to (--allow-burned-in-without-region keeps it: unsafe)",
    "no_region_skip": "no Sequence of Ultrasound Regions, and --without-region skip",
    "no_scan_area_found": "no Sequence of Ultrasound Regions, and the fallback found no scan "
                          "area (--without-region full keeps the whole frame)",
    "duplicate_instance": "the same SOPInstanceUID as an earlier file",
    "duplicate_image": "every kept frame is identical to an image already in the cohort",
}
FLAGS: dict[str, str] = {
    "burned_in_annotation_yes": "BurnedInAnnotation YES: text around the scan was cropped "
                                "away, text inside the scan region may remain",
    "fallback_crop": "no ultrasound region: cropped to the largest bright area, pixels "
                     "outside it blacked out (text touching the scan may remain)",
    "full_frame": "no ultrasound region: the whole frame kept (--without-region full), text "
                  "around the scan remains",
    "burned_in_kept_unsafe": "BurnedInAnnotation YES without a region, kept by "
                             "--allow-burned-in-without-region: burned-in text remains",
    "region_covers_frame": "the ultrasound region covers (almost) the whole frame: text around "
                           "the scan may remain",
    "burned_in_annotation_not_stated": "BurnedInAnnotation absent: whether text is burned into "
                                       "the scan region is unknown",
    "several_tissue_regions": "several 2D tissue regions (dual view): the largest kept",
    "region_clamped": "the ultrasound region exceeded the image and was clamped to it",
    "overlay_planes": "overlay planes (60xx) present: never burned in, not kept",
    "no_pixel_size": "no spatial pixel size (no region, or units other than cm)",
    "duplicate_frames": "some frames dropped: identical to an image already kept",
}
MAY_CARRY_TEXT = ("burned_in_annotation_yes", "fallback_crop", "full_frame",
                  "burned_in_kept_unsafe", "region_covers_frame")


class DicomImportError(ValueError):
    """An import that cannot proceed; ``problems`` lists each reason with its fix."""

    def __init__(self, what: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what}:\n{lines}" if problems else what)


# --------------------------------------------------------------------------------------------
# pseudonyms, key and private paths


def normalise_id(value: Any) -> str:
    """An id as compared: stripped, upper case; all-digit ids lose their leading zeros."""
    s = _cell(value).strip().upper()
    if s.isdigit():
        s = s.lstrip("0") or "0"
    return s


def pseudonym(key: bytes, patient_id: str) -> str:
    """``S`` + 12 hex digits of HMAC-SHA256(key, normalised patient id)."""
    msg = b"phyllodes-subject\x00" + normalise_id(patient_id).encode("utf-8")
    return SUBJECT_PREFIX + hmac.new(key, msg, hashlib.sha256).hexdigest()[:SUBJECT_HEX]


def default_key_file(name: str) -> Path:
    """``~/.config/phyllodes/<name>.key`` (``$XDG_CONFIG_HOME`` respected)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "phyllodes" / f"{name}.key"


def load_or_create_key(path: Path) -> bytes:
    """The secret key of the pseudonyms; a new random one (mode 0600) when the file is missing."""
    if path.exists():
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise DicomImportError(f"key file {path}", [
                f"{path}: the key is only {len(key)} bytes; use at least 32 random bytes, or "
                "delete the file to have a new key made (subject ids then change)"])
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32).encode()
    _write_private(path, key + b"\n")
    log.info("created a new pseudonym key %s (keep it: the same key gives the same subject ids)",
             path)
    return key


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def git_tree_tracking(path: Path) -> Path | None:
    """The git work tree holding ``path`` when git would not ignore it there, else None."""
    p = Path(os.path.abspath(path))
    root = next((q for q in (p, *p.parents) if (q / ".git").exists()), None)
    if root is None:
        return None
    try:
        r = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "--no-index", str(p)],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return root  # cannot ask git: assume tracked
    return None if r.returncode == 0 else root


def _inside(path: Path, folder: Path) -> bool:
    a, b = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return a == b or b in a.parents


def check_private_path(path: Path, out: Path, what: str) -> list[str]:
    """Problems with a private file's place: inside the cohort folder, or tracked by git."""
    problems = []
    if _inside(path, out):
        problems.append(f"{what} {path} is inside the output folder {out}; the cohort must not "
                        "hold it: pass a path outside (default ~/.config/phyllodes/)")
    root = git_tree_tracking(path)
    if root is not None:
        problems.append(f"{what} {path} is inside the git work tree {root} and not ignored by "
                        "it; keep it outside the repository (default ~/.config/phyllodes/)")
    return problems


# --------------------------------------------------------------------------------------------
# the clinical spreadsheet and its mapping


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
    return {_cell(k).casefold(): (None if x is None else str(x)) for k, x in v.items()}


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


def _cell(v: Any) -> str:
    """A spreadsheet cell as text: '' when empty, dates as YYYY-MM-DD, whole floats as ints."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v.strip()
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(v, (pd.Timestamp, dt.datetime)):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v).strip()


def read_spreadsheet(path: Path | str, sheet: str | int = 0) -> pd.DataFrame:
    """Every cell of a CSV/TSV or Excel sheet as stripped text (see :func:`_cell`)."""
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
    elif suffix in (".csv", ".tsv", ".txt"):
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
        try:
            sep = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            sep = "\t" if suffix == ".tsv" else ","
        raw = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    else:
        raise DicomImportError(f"clinical spreadsheet {path}", [
            f"{path}: give a .csv, .tsv or .xlsx file (save an old .xls as .xlsx or .csv)"])
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw.map(_cell)


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


def _to_float(s: str) -> float | None:
    t = s.strip()
    if t.count(",") == 1 and "." not in t:
        t = t.replace(",", ".")
    try:
        x = float(t)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


_SHEET_PHI_RE = re.compile(r"(name|address|street|phone|mobile|e-?mail|ssn|social.?sec|"
                           r"insurance|mrn|medical.?record|accession|physician|doctor|surgeon|"
                           r"radiologist|referr)", re.I)


class _Missing(frozenset):
    """The declared missing strings, compared without regard to case or surrounding spaces."""

    def __new__(cls, values):
        return super().__new__(cls, {str(v).strip().casefold() for v in values})

    def __contains__(self, v) -> bool:
        return super().__contains__(str(v).strip().casefold())


_DATE_LIKE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
                        r"([ T]\d{1,2}:\d{2}(:\d{2})?)?$")


@dataclass
class ClinicalRow:
    """One spreadsheet row, mapped: label, feature values as kept ('' = missing), dates."""

    line: int
    key: str
    raw_id: str
    label: str  # '' when missing or excluded
    label_excluded: bool
    values: dict[str, str]
    dates: dict[str, tuple[Any, Any]]  # feature -> (birth, exam): date, None or 'dicom:...'


def clinical_rows(df: pd.DataFrame, m: ColumnMapping, source: Path, join: str = "patient_id"
                  ) -> tuple[dict[str, list[ClinicalRow]], int]:
    """Map every spreadsheet row; rows grouped by their normalised PatientID or accession
    number (``join``), and the count of rows without one.

    Raises one :class:`DicomImportError` naming each bad cell by line and column (never its
    value, which may identify a person).
    """
    key_col = m.key_column(join)
    p: list[str] = []
    missing_cols = sorted(c for c in m.columns if c not in df.columns)
    for c in missing_cols:
        p.append(f"{m.path}: column '{c}' is not in {source.name}; its columns are "
                 f"{list(df.columns)}")
    for f in m.features:
        if f.column and (f.column in m.id_columns or _SHEET_PHI_RE.search(f.column)
                         or _ID_RE.search(f.column) or _ACC_RE.search(f.column)):
            p.append(f"{m.path}: {f.kind}.{f.name} maps column '{f.column}', which looks like "
                     "an identifier (a name, id, address or physician); identifiers never "
                     "become features: remove it from the mapping")
    if p:
        raise DicomImportError(f"the mapping {m.path} does not fit {source}", p)
    miss = _Missing(m.missing_values)
    fmts: dict[str, str | None] = {}
    for f in m.features:
        for c in f.from_dates or ():
            if not c.startswith("dicom:") and c not in fmts:
                fmts[c] = m.date_format or _slash_order(list(df[c]))
    rows: dict[str, list[ClinicalRow]] = {}
    n_no_id = 0
    for i in range(len(df)):
        line = i + 2
        where = f"{source.name} line {line}"
        raw_id = df.at[i, key_col]
        key = normalise_id(raw_id)
        if not key or raw_id in miss:
            n_no_id += 1
            continue
        lab_raw = df.at[i, m.label_column]
        label, excluded = "", False
        if lab_raw and lab_raw not in miss:
            if m.label_values is not None:
                k = lab_raw.casefold()
                if k not in m.label_values:
                    p.append(f"{where}, column '{m.label_column}': the value is not in the "
                             f"mapping's label.values; add it (map it to null to exclude)")
                elif m.label_values[k] is None:
                    excluded = True
                else:
                    label = m.label_values[k]
            else:
                label = lab_raw.strip().lower()
                if label not in set(m.positive_labels) | set(m.negative_labels):
                    p.append(f"{where}, column '{m.label_column}': not one of the labels "
                             f"{list(m.positive_labels) + list(m.negative_labels)}; add "
                             "label.values to the mapping to recode it")
                    label = ""
        values: dict[str, str] = {}
        dates: dict[str, tuple[Any, Any]] = {}
        for f in m.features:
            if f.from_dates:
                pair = []
                for c in f.from_dates:
                    if c.startswith("dicom:"):
                        pair.append(c)
                        continue
                    s = df.at[i, c]
                    if not s or s in miss:
                        pair.append(None)
                        continue
                    fmt = fmts.get(c)
                    d = parse_date(s, fmt)
                    if d is None:
                        p.append(f"{where}, column '{c}': not a date the import can read "
                                 "unambiguously; write YYYY-MM-DD or set date_format in the "
                                 "mapping (e.g. date_format: '%m/%d/%Y')")
                    pair.append(d)
                dates[f.name] = (pair[0], pair[1])
                values[f.name] = ""
                continue
            s = df.at[i, f.column]
            if not s or s in miss:
                values[f.name] = ""
                continue
            if f.values is not None:
                k = s.casefold()
                if k not in f.values:
                    p.append(f"{where}, column '{f.column}': the value is not in the mapping's "
                             f"{f.kind}.{f.name}.values; add it (null for missing)")
                    values[f.name] = ""
                    continue
                mapped = f.values[k]
                s = "" if mapped is None else mapped
            if f.kind == "numeric" and s:
                x = _to_float(s)
                if x is None:
                    p.append(f"{where}, column '{f.column}': not a number; write a number or "
                             f"one of the missing values {sorted(miss)}")
                    s = ""
                else:
                    s = _fmt_number(x * (f.scale if f.scale is not None else 1.0))
            elif f.kind == "categorical" and s and _DATE_LIKE.match(s):
                p.append(f"{where}, column '{f.column}': looks like a date; dates are never kept "
                         "(use from_dates for an age) — remove this feature from the mapping")
                s = ""
            values[f.name] = s
        rows.setdefault(key, []).append(ClinicalRow(line, key, raw_id, label, excluded, values,
                                                    dates))
    if p:
        raise DicomImportError(f"{len(p)} problem(s) in the clinical spreadsheet {source}", p)
    return rows, n_no_id


def resolve_patient(rows: list[ClinicalRow], m: ColumnMapping, dicom_dates: dict[str, Any]
                    ) -> tuple[str, dict[str, str], str]:
    """(label, values, '') for one patient's rows, or ('', {}, skip reason)."""
    if any(r.label_excluded for r in rows):
        return "", {}, "no_label"
    labels = {r.label for r in rows if r.label}
    if not labels:
        return "", {}, "no_label"
    if len(labels) > 1:
        return "", {}, "conflicting_clinical_rows"
    values: dict[str, str] = {}
    for f in m.features:
        if f.from_dates:
            ages = []
            for r in rows:
                b, e = (dicom_dates.get(x) if isinstance(x, str) else x
                        for x in r.dates[f.name])
                if b is not None and e is not None:
                    a = age_years(b, e)
                    if 0 <= a <= 125:
                        ages.append((e, a))
            values[f.name] = str(min(ages)[1]) if ages else ""
            continue
        vals = {r.values[f.name] for r in rows if r.values[f.name]}
        if len(vals) > 1:
            return "", {}, "conflicting_clinical_rows"
        values[f.name] = vals.pop() if vals else ""
    return labels.pop(), values, ""


# --------------------------------------------------------------------------------------------
# the mapping template


_ID_RE = re.compile(r"(patient.?id|^pid$|^mrn|medical.?record|record.?n|^id$|patient.?n(o|um)|"
                    r"hospital.?n(o|um)|^subject)", re.I)
_ACC_RE = re.compile(r"accession", re.I)
_LABEL_RE = re.compile(r"(patholog|diagnos|label|classif|grade|histolog|outcome)", re.I)
_BIRTH_RE = re.compile(r"(birth|dob|geburt)", re.I)
_EXAM_RE = re.compile(r"(exam|study|scan|visit|ultrasound|us.?date|imaging)", re.I)
_DATE_RE = re.compile(r"(date|dob|^dt_|_dt$)", re.I)
_PHI_RE = re.compile(r"(name|address|street|city|zip|postal|phone|mobile|e-?mail|ssn|social|"
                     r"insurance|mrn|record|accession|physician|doctor|surgeon|radiologist|"
                     r"comment|note|remark|free.?text)", re.I)


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
    acc_col = next((c for c in cols if _ACC_RE.search(c)), None)
    pid_col = next((c for c in cols if _ID_RE.search(c) and c != acc_col), None)
    if join == "patient_id" and pid_col is None:
        pid_col = cols[0] if cols else "CHANGE_ME"
    if join == "accession" and acc_col is None:
        acc_col = cols[0] if cols else "CHANGE_ME"
    id_cols = {pid_col, acc_col} - {None}
    label_col = next((c for c in cols if _LABEL_RE.search(c) and c not in id_cols), None)
    dates = [c for c in cols if c not in id_cols and c != label_col and
             (_DATE_RE.search(c) or _mostly(df[c], lambda s: _DATE_LIKE.match(s) is not None))]
    birth = next((c for c in dates if _BIRTH_RE.search(c)), None)
    exam = next((c for c in dates if c != birth and _EXAM_RE.search(c)), None)
    numeric, categorical, never = [], [], []
    for c in cols:
        if c in id_cols or c == label_col or c in dates:
            continue
        if _PHI_RE.search(c) or _ID_RE.search(c) or _ACC_RE.search(c):
            never.append(c)
        elif _mostly(df[c], lambda s: _to_float(s) is not None):
            numeric.append(c)
        elif df[c].replace("", np.nan).nunique() <= 20:
            categorical.append(c)
        else:
            never.append(c)
    L = [
        "# Column mapping for `python -m phyllodes import-dicom` (phyllodes/data/sources/dicom.py,",
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
        L += ["", "# Not mapped (they look like identifiers, dates or free text):"]
        L += [f"#   {c}" for c in never]
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


def _mostly(col: pd.Series, test, share: float = 0.9) -> bool:
    vals = [v for v in col if v and v not in DEFAULT_MISSING]
    return bool(vals) and sum(1 for v in vals if test(v)) >= share * len(vals)


def write_mapping_template(clinical: Path | str, path: Path | str, join: str = "patient_id",
                           sheet: str | int = 0, overwrite: bool = False) -> Path:
    """Write :func:`mapping_template` of the spreadsheet to ``path``; return ``path``."""
    clinical, path = Path(clinical), Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; edit it, or pass --overwrite to replace it")
    df = read_spreadsheet(clinical, sheet)
    path.write_text(mapping_template(df, clinical, join), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# reading DICOM files


@functools.lru_cache(maxsize=1)
def _read_tags() -> tuple:
    from pydicom.datadict import tag_for_keyword
    tags = [tag_for_keyword(k) for k in (*TAGS_USED, *TAGS_CHECKED) if tag_for_keyword(k)]
    for g in OVERLAY_GROUPS:
        tags += [(g << 16) | 0x0010, (g << 16) | 0x3000]
    return tuple(tags)


@dataclass
class Region:
    """A region of the Sequence of Ultrasound Regions: inclusive DICOM bounds, pixel size."""

    x0: int
    y0: int
    x1: int
    y1: int
    mm_x: str
    mm_y: str
    data_type: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0 + 1) * max(0, self.y1 - self.y0 + 1)


def cm_to_mm(v: Any) -> str:
    """A length in cm (a DICOM FD) as exact decimal millimetres, e.g. 0.0125 -> '0.125'."""
    d = abs(Decimal(repr(float(v)))) * 10
    s = format(d.normalize(), "f")
    return s


def ultrasound_regions(ds) -> list[Region] | None:
    """The 2D regions (tissue first) of (0018,6011); None when the sequence is absent."""
    seq = ds.get("SequenceOfUltrasoundRegions")
    if seq is None or len(seq) == 0:
        return None
    out = []
    for item in seq:
        fmt = item.get("RegionSpatialFormat")
        kind = item.get("RegionDataType")
        bounds = [item.get(k) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                        "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if fmt != 1 or kind not in (1, 2) or any(b is None for b in bounds):
            continue
        mm = []
        for ax in ("X", "Y"):
            units, delta = item.get(f"PhysicalUnits{ax}Direction"), item.get(f"PhysicalDelta{ax}")
            ok = units == 3 and delta is not None and float(delta) != 0 and \
                math.isfinite(float(delta))
            mm.append(cm_to_mm(delta) if ok else "")
        out.append(Region(*(int(b) for b in bounds), mm[0], mm[1], int(kind)))
    return out


def choose_region(regions: list[Region]) -> tuple[Region | None, list[str]]:
    """The largest 2D tissue region (colour-flow regions only when there is no tissue one)."""
    flags = []
    tissue = [r for r in regions if r.data_type == 1] or regions
    if not tissue:
        return None, flags
    if len([r for r in tissue if r.data_type == 1]) > 1:
        flags.append("several_tissue_regions")
    best = max(tissue, key=lambda r: (r.area, -regions.index(r)))
    return best, flags


def _luma(rgb: np.ndarray, maxval: float) -> np.ndarray:
    x = rgb[..., :3].astype(np.float64) * (255.0 / maxval)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def _first(v: Any) -> float:
    try:
        return float(v[0])
    except (TypeError, IndexError, KeyError):
        return float(v)


def to_gray8(arr: np.ndarray, ds) -> np.ndarray:
    """One decoded frame (as pydicom gives it, colour as RGB) as 8-bit grayscale."""
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", 8) or 8)
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        rgb = apply_color_lut(arr, ds)
        return _luma(rgb, 65535.0 if rgb.dtype.itemsize > 1 else 255.0)
    if arr.ndim == 3:
        return _luma(arr, float(2 ** min(bits, 16) - 1) if bits > 8 else 255.0)
    if arr.dtype == np.uint8 and bits <= 8:
        g = arr
    else:
        x = arr.astype(np.float64)
        slope, icpt = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0)
                                                                     or 0)
        x = x * slope + icpt
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None \
                and _first(ds.WindowWidth) >= 1:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            y = np.clip((x - (c - 0.5)) / max(w - 1, 1) + 0.5, 0, 1)
        else:
            lo, hi = float(x.min()), float(x.max())
            y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        g = np.clip(np.floor(y * 255 + 0.5), 0, 255).astype(np.uint8)
    return (255 - g) if pi == "MONOCHROME1" else g


def scan_area(gray: np.ndarray, threshold: int = 12
              ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The scan found without a region: the largest bright connected area once thin strokes
    (text, lines) are opened away, holes filled. Returns its bounding box (x0, y0, x1, y1;
    x1/y1 exclusive) and its mask grown by 2 px, or None when it covers under a tenth of the
    frame."""
    from scipy import ndimage
    pad = 4
    mask = np.pad(gray > threshold, pad)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3), bool), iterations=2)
    mask = ndimage.binary_opening(mask, structure=np.ones((7, 7), bool))[pad:-pad, pad:-pad]
    lab, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    if sizes[k - 1] < 0.1 * gray.size:
        return None
    area = ndimage.binary_fill_holes(lab == k)
    ys, xs = np.nonzero(area)
    area = ndimage.binary_dilation(area, structure=np.ones((3, 3), bool), iterations=2)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), area


def frame_indices(n: int, frames: str) -> list[int]:
    """The frames kept of a clip of ``n`` (see FRAME_CHOICES); a single frame is always kept."""
    mode, k = parse_frames(frames)
    if n <= 1:
        return [0]
    if mode == "middle":
        return [n // 2]
    if mode == "first":
        return [0]
    if mode == "all":
        return list(range(n))
    return list(range(0, n, k))


def parse_frames(frames: str) -> tuple[str, int]:
    """('middle'|'first'|'all'|'every', k) from the --frames option."""
    f = frames.strip().lower()
    if f in ("middle", "first", "all"):
        return f, 1
    m = re.match(r"^every[:=](\d+)$", f)
    if m and int(m.group(1)) >= 1:
        return "every", int(m.group(1))
    raise ValueError(f"--frames {frames!r}: use {FRAME_CHOICES} (e.g. every:5)")


@dataclass
class SourceFile:
    """What the import knows about one input file (private fields stay out of the cohort)."""

    file_id: str
    rel: str  # private: path relative to the source
    status: str = "pending"
    reason: str = ""
    detail: str = ""  # PHI-free
    error: str = ""  # private (exception text may hold paths)
    key: str = ""  # normalised PatientID (private)
    raw_id: str = ""  # private
    accession: str = ""  # normalised (private)
    subject: str = ""
    sort_key: tuple = ()
    sop_uid: str = ""  # private
    n_frames: int = 1
    region: Region | None = None
    has_region_seq: bool = False
    us_image: bool = False
    burned_in: str = ""
    flags: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    birth: dt.date | None = None
    study: dt.date | None = None

    def skip(self, reason: str, detail: str = "", error: str = "") -> None:
        self.status, self.reason, self.detail, self.error = "skipped", reason, detail, error

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)


def _dicom_date(v: Any) -> dt.date | None:
    s = str(v or "").strip()
    try:
        return dt.datetime.strptime(s[:8], "%Y%m%d").date() if len(s) >= 8 else None
    except ValueError:
        return None


def _int(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _safe_word(s: Any) -> str:
    return re.sub(r"[^A-Z0-9 _-]", "", str(s or "").upper())[:16] or "absent"


def _phi_from(ds, phi: set[str]) -> None:
    """Add the identifying values of a header (in their usual spellings) to ``phi``."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.multival import MultiValue
    for kw in ("PatientID", "AccessionNumber", "PatientBirthDate", "StudyDate",
               "SOPInstanceUID", *TAGS_CHECKED):
        try:
            el = ds.get(kw)
        except Exception:  # noqa: BLE001 - an unreadable value cannot reach the output either
            continue
        if el is None or el == "":
            continue
        vr = dictionary_VR(tag_for_keyword(kw))
        for v in (list(el) if isinstance(el, (MultiValue, list, tuple)) else [el]):
            if vr == "PN":
                phi.update(name_spellings(str(v)))
            elif vr in ("DA", "DT"):
                d = _dicom_date(v)
                phi.update(date_spellings(d) if d else {str(v).strip()})
            else:
                phi.add(str(v).strip())
                phi.add(normalise_id(v))


def name_spellings(pn: str) -> set[str]:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) in the usual spellings."""
    parts = [p.strip() for p in pn.split("=")[0].split("^")]
    fam, giv = (parts + ["", ""])[:2]
    out = {pn.strip(), pn.split("=")[0].strip().rstrip("^")}
    if fam and giv:
        out |= {f"{giv} {fam}", f"{fam} {giv}", f"{fam}, {giv}", f"{fam},{giv}",
                f"{fam}^{giv}"}
    elif fam:
        out.add(fam)
    return {s for s in out if s}


def date_spellings(d: dt.date) -> set[str]:
    """A date in the spellings a table or report might use."""
    y, m, dd = f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}"
    return {f"{y}{m}{dd}", f"{y}-{m}-{dd}", f"{y}/{m}/{dd}", f"{y}.{m}.{dd}",
            f"{dd}/{m}/{y}", f"{m}/{dd}/{y}", f"{dd}.{m}.{y}", f"{dd}-{m}-{y}",
            f"{m}-{dd}-{y}", f"{d.day}/{d.month}/{y}", f"{d.month}/{d.day}/{y}"}


def _read_header(path: Path, sf: SourceFile, phi: set[str], join: str, keep_pixels: bool):
    """Read ``path`` with only the tags listed; fill ``sf``; return the dataset or None."""
    import pydicom
    tags = _read_tags()
    kw: dict[str, Any] = {"specific_tags": list(tags)}
    if not keep_pixels:
        kw["defer_size"] = 1024
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        sf.skip("read_error", type(e).__name__, f"{type(e).__name__}: {e}")
        return None
    raw = head[128:132] != b"DICM"  # no preamble: only a dataset that starts with a group tag
    if raw and (len(head) < 8 or int.from_bytes(head[:2], "little") not in (0x0002, 0x0008)):
        sf.skip("not_dicom")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=raw, **kw)
        except Exception as e:  # noqa: BLE001 - a bad file must not stop the import
            sf.skip("not_dicom" if raw else "read_error", type(e).__name__,
                    f"{type(e).__name__}: {e}")
            return None
        if raw and not ("SOPClassUID" in ds or "Modality" in ds):
            sf.skip("not_dicom")
            return None
        try:
            return _classify(ds, sf, phi, join)
        except Exception as e:  # noqa: BLE001 - e.g. a value that cannot be converted
            sf.skip("read_error", type(e).__name__, f"{type(e).__name__}: {e}")
            return None


def _classify(ds, sf: SourceFile, phi: set[str], join: str):
    """Fill ``sf`` from a header read by :func:`_read_header`; the dataset, or None if skipped."""
    _phi_from(ds, phi)
    meta = getattr(ds, "file_meta", None)
    sop_class = str((meta.get("MediaStorageSOPClassUID", "") if meta is not None else "")
                    or ds.get("SOPClassUID", ""))
    if sop_class == DICOMDIR_CLASS:
        sf.skip("dicomdir")
        return None
    sf.raw_id = str(ds.get("PatientID", "") or "").strip()
    sf.key = normalise_id(sf.raw_id)
    sf.accession = normalise_id(ds.get("AccessionNumber", ""))
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality != "US" and not (not modality and sop_class in US_SOP_CLASSES):
        sf.skip("not_ultrasound", f"Modality {_safe_word(modality)}")
        return None
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        sf.skip("unsupported_pixel_format", "float pixel data")
        return None
    if "PixelData" not in ds:
        sf.skip("no_pixel_data")
        return None
    sf.us_image = True
    spp = _int(ds.get("SamplesPerPixel", 1), 1)
    if spp not in (1, 3):
        sf.skip("unsupported_pixel_format", f"{spp} samples per pixel")
        return None
    ts = _transfer_syntax(ds)
    reason = _decoder_problem(ts)
    if reason:
        sf.skip("unsupported_transfer_syntax", reason)
        return None
    sf.sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    sf.birth = _dicom_date(ds.get("PatientBirthDate"))
    sf.study = _dicom_date(ds.get("StudyDate"))
    sf.n_frames = max(1, _int(ds.get("NumberOfFrames", 1), 1))
    sf.burned_in = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    uid_hash = hashlib.sha256((sf.sop_uid or sf.rel).encode()).hexdigest()
    sf.sort_key = (sf.study or dt.date.max, str(ds.get("StudyTime", "") or ""),
                   _int(ds.get("SeriesNumber"), 1 << 30), _int(ds.get("InstanceNumber"), 1 << 30),
                   uid_hash, sf.file_id)
    if any((g << 16) | 0x3000 in ds or (g << 16) | 0x0010 in ds for g in OVERLAY_GROUPS):
        sf.flag("overlay_planes")
    if not sf.key:
        sf.skip("no_patient_id")
        return None
    if join == "accession" and not sf.accession:
        sf.skip("no_accession")
        return None
    regions = ultrasound_regions(ds)
    sf.has_region_seq = regions is not None
    if regions is not None:
        region, flags = choose_region(regions)
        for f in flags:
            sf.flag(f)
        if region is None:
            sf.skip("no_tissue_region")
            return None
        sf.region = region
    return ds


def _transfer_syntax(ds):
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    from pydicom.dataset import FileMetaDataset
    implicit = (getattr(ds, "original_encoding", None) or (True, True))[0]
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    return ts


def _decoder_problem(ts) -> str:
    from pydicom.pixels import get_decoder
    name = f"{ts.name} ({re.sub(r'[^0-9.]', '', str(ts))})" if ts.is_transfer_syntax \
        else re.sub(r"[^0-9.]", "", str(ts)) or "unknown"
    if not ts.is_transfer_syntax:
        return f"transfer syntax {name} is unknown"
    if ts.is_transfer_syntax and not ts.is_encapsulated:
        return ""
    try:
        dec = get_decoder(ts)
    except NotImplementedError:
        return f"transfer syntax {name}: no decoder exists in pydicom"
    if not dec.is_available:
        return (f"transfer syntax {name}: no decoder installed (JPEG Lossless, Extended and "
                "JPEG-LS need python-gdcm, pinned in requirements.txt: run ./run_all.sh --setup "
                "and import again)")
    return ""


def _decode_frames(ds, sf: SourceFile, frames: str, without_region: str
                   ) -> list[tuple[int, np.ndarray, tuple, str]]:
    """The kept frames of a file, cropped: (index, gray8, box (x0, y0, x1, y1), method)."""
    from pydicom.pixels import pixel_array
    out = []
    for idx in frame_indices(sf.n_frames, frames):
        arr = pixel_array(ds, index=idx, as_rgb=True)
        if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            arr = arr[0]  # a frame axis kept
        gray = to_gray8(arr, ds)
        h, w = gray.shape[:2]
        if sf.region is not None:
            r = sf.region
            x0, y0 = max(0, r.x0), max(0, r.y0)
            x1, y1 = min(w - 1, r.x1), min(h - 1, r.y1)
            if x1 < x0 or y1 < y0:
                raise _Skip("region_outside_image", f"region outside the {w}x{h} image")
            if (x0, y0, x1, y1) != (r.x0, r.y0, r.x1, r.y1):
                sf.flag("region_clamped")
            box = (x0, y0, x1 + 1, y1 + 1)
            if (box[2] - box[0]) * (box[3] - box[1]) >= 0.95 * w * h:
                sf.flag("region_covers_frame")
            method = "ultrasound_region"
        elif without_region == "full":
            box = (0, 0, w, h)
            method = "full_frame"
        else:
            found = scan_area(gray)
            if found is None:
                raise _Skip("no_scan_area_found")
            box, area = found
            gray = np.where(area, gray, 0).astype(np.uint8)  # black outside the scan
            method = "fallback_crop"
        out.append((idx, np.ascontiguousarray(gray[box[1]:box[3], box[0]:box[2]]), box, method))
    return out


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _png_bytes(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# the output self-check


_TOKEN = re.compile(r"[a-z0-9]+")


@functools.lru_cache(maxsize=1)
def _own_words() -> frozenset[str]:
    """Every word of this module's own strings: what the import writes by itself."""
    import ast
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    return frozenset(t for n in ast.walk(tree) if isinstance(n, ast.Constant)
                     and isinstance(n.value, str) for t in _TOKEN.findall(n.value.lower()))


def _phi_needles(phi: set[str]) -> list[tuple[list[str], re.Pattern]]:
    """(lower-case word tokens, pattern) of the identifiers worth searching: those of at least
    4 characters, and at least 6 when they hold no letter (shorter ones match any number).
    Values made only of words the import writes itself (a department called 'Ultrasound')
    are left out: they identify no one."""
    out = []
    own = _own_words()
    for v in sorted({x.strip() for x in phi}):
        if len(v) < 4 or (not re.search(r"[^\W\d_]", v) and len(v) < 6):
            continue
        toks = _TOKEN.findall(v.lower())
        if re.search(r"[a-z]", v.lower()) and all(t in own for t in toks):
            continue
        if toks:
            out.append((toks, re.compile(r"(?<![A-Za-z0-9.])" + re.escape(v)
                                         + r"(?![A-Za-z0-9])", re.I)))
    return out


def phi_self_check(folder: Path, phi: set[str]) -> list[str]:
    """Problems: an identifier in an output text file, or a PNG with chunks beyond pixels."""
    needles = _phi_needles(phi)
    problems = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        data = p.read_bytes()
        if p.suffix == ".png":
            bad = _png_chunks(data) - {b"IHDR", b"IDAT", b"IEND"}
            if bad:
                problems.append(f"{rel}: PNG chunks {sorted(c.decode('latin-1') for c in bad)} "
                                "beyond the pixels")
            continue
        text = data.decode("utf-8", errors="replace")
        words = set(_TOKEN.findall(text.lower()))
        for toks, pat in needles:
            if all(t in words for t in toks) and pat.search(text):
                problems.append(f"{rel}: holds an identifier read from the export or the "
                                "spreadsheet (does the mapping map an identifying column?)")
                break
    return problems


def _png_chunks(data: bytes) -> set[bytes]:
    chunks, i = set(), 8
    while i + 8 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        chunks.add(data[i + 4:i + 8])
        i += 12 + n
    return chunks


# --------------------------------------------------------------------------------------------
# the import


@dataclass
class ImportReport:
    """What an import did: the PHI-free summary written as import_report.json, and paths."""

    out: Path
    name: str
    summary: dict
    ids_path: Path
    details_path: Path
    key_file: Path

    @property
    def n_images(self) -> int:
        return int(self.summary["counts"]["images_written"])

    @property
    def n_subjects(self) -> int:
        return int(self.summary["counts"]["subjects_written"])

    @property
    def skipped(self) -> dict[str, int]:
        return {k: v["count"] for k, v in self.summary["skipped"].items()}

    @property
    def files(self) -> list[dict]:
        return self.summary["files"]

    @property
    def passes_contract(self) -> bool:
        """Whether :func:`phyllodes.data.cohort.load_cohort` accepted the written cohort."""
        return bool(self.summary["contract"]["passed"])

    def text(self) -> str:
        c = self.summary["counts"]
        lines = [f"imported {c['images_written']} image(s) of {c['subjects_written']} "
                 f"subject(s) from {c['files_imported']} of {c['files_found']} file(s) into "
                 f"{self.out}"]
        for k, v in sorted(self.summary["skipped"].items()):
            lines.append(f"  skipped {v['count']:>4}  {k}: {v['description']}")
        for k in MAY_CARRY_TEXT:
            n = self.summary["flags"].get(k, {}).get("count", 0)
            if n:
                lines.append(f"  flagged {n:>4}  {k}: {FLAGS[k]}")
        if not self.passes_contract:
            probs = self.summary["contract"]["problems"]
            lines.append(f"  NOT VALID: the cohort does not pass the data contract "
                         f"({len(probs)} problem(s)), e.g. {probs[0]}")
        lines.append(f"report: {self.out / 'import_report.md'}; private (paths, ids): "
                     f"{self.details_path}, {self.ids_path}")
        return "\n".join(lines)


def import_dicom(source: Path | str, clinical: Path | str, out: Path | str,
                 mapping: Path | str | None = None, key_file: Path | str | None = None,
                 frames: str = "middle", join: str | None = None, name: str | None = None,
                 without_region: str = "crop", allow_burned_in_without_region: bool = False,
                 overwrite: bool = False) -> ImportReport:
    """Import a DICOM export and its clinical spreadsheet into the cohort folder ``out``.

    ``mapping``: the YAML column mapping (:func:`write_mapping_template` writes one).
    ``key_file``: the pseudonym key (default ``~/.config/phyllodes/<name>.key``, made when
    missing); the pseudonym table and the detailed report are written beside it.
    ``frames``: frames kept of a cine clip (middle, first, all, every:K).
    ``join``: patient_id or accession (default: the mapping's, else patient_id).
    ``without_region``: crop (largest bright area, flagged), full (flagged) or skip, for
    files without a Sequence of Ultrasound Regions.
    """
    source, clinical, out = Path(source), Path(clinical), Path(out)
    name = name or out.name
    parse_frames(frames)
    problems = []
    if not source.is_dir():
        problems.append(f"--source {source}: not a folder")
    if not clinical.is_file():
        problems.append(f"--clinical {clinical}: file not found")
    if mapping is None:
        problems.append("--mapping is required: write one from the spreadsheet's header with "
                        f"--write-mapping-template FILE --clinical {clinical}, edit it, pass it")
    if without_region not in WITHOUT_REGION:
        problems.append(f"--without-region {without_region!r}: use one of {WITHOUT_REGION}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        problems.append(f"cohort name {name!r}: use letters, digits, '.', '_' and '-'")
    if source.is_dir() and (_inside(out, source) or _inside(source, out)):
        problems.append(f"--out {out} and --source {source} must not contain each other")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            problems.append(f"--out {out} is not empty; pass --overwrite to replace an earlier "
                            "import, or choose another folder")
        elif not (out / "import_report.json").exists():
            problems.append(f"--out {out} is not an earlier import (no import_report.json); "
                            "--overwrite only replaces those: empty it by hand")
    root = git_tree_tracking(out)
    if root is not None:
        problems.append(f"--out {out} is inside the git work tree {root} and not ignored by it: "
                        "patient images must never be committed; write under data/private/ "
                        "(git-ignored) or outside the repository")
    key_file = Path(key_file) if key_file else default_key_file(name)
    private = key_file.parent
    ids_path, details_path = private / f"{name}.ids.csv", private / f"{name}.import-details.json"
    for what, pth in (("the key file", key_file), ("the pseudonym table", ids_path),
                      ("the detailed report", details_path)):
        problems += check_private_path(pth, out, what)
    if problems:
        raise DicomImportError("cannot import", problems)

    m = read_mapping(mapping)
    join = join or m.join or "patient_id"
    if join not in ("patient_id", "accession"):
        raise DicomImportError("cannot import", [f"--join {join!r}: use patient_id or accession"])
    sheet = read_spreadsheet(clinical, m.sheet)
    rows, n_rows_no_id = clinical_rows(sheet, m, clinical, join)
    phi: set[str] = set()
    _phi_from_sheet(sheet, m, phi)
    key = load_or_create_key(key_file)

    staging = out.parent / f".{out.name}.importing"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images" / ".tmp").mkdir(parents=True)
    try:
        summary, private_details, ids_rows = _run(source, staging, m, rows, n_rows_no_id, key,
                                                  join, frames, without_region,
                                                  allow_burned_in_without_region, phi, name)
        _write_private(details_path, json.dumps(
            {**private_details, "source": str(source.resolve()),
             "clinical": str(clinical.resolve()), "cohort": str(out.resolve())},
            indent=2, sort_keys=True, default=str).encode() + b"\n")
        _write_private(ids_path, _ids_csv(ids_rows))
        if summary["counts"]["images_written"] == 0:
            raise DicomImportError(
                f"no image imported from {source}", [
                    f"{k}: {v['count']} file(s) ({v['description']})"
                    for k, v in sorted(summary["skipped"].items())] +
                [f"the detailed report (with source paths) is {details_path}"])
        bad = phi_self_check(staging, phi)
        if bad:
            raise DicomImportError("the self-check found identifiers in the output; nothing "
                                   "was written to " + str(out), bad)
        if out.exists():
            old = out.parent / f".{out.name}.replaced"
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    report = ImportReport(out=out, name=name, summary=summary, ids_path=ids_path,
                          details_path=details_path, key_file=key_file)
    log.info("%s", report.text().splitlines()[0])
    if not report.passes_contract:
        log.warning("the cohort was written but does not pass the data contract:\n%s",
                    "\n".join(f"  - {p}" for p in summary["contract"]["problems"]))
    return report


def contract_problems(folder: Path) -> list[str]:
    """What :func:`phyllodes.data.cohort.load_cohort` finds wrong with ``folder`` (paths
    relative)."""
    from phyllodes.data.cohort import CohortError, load_cohort
    try:
        load_cohort(folder, check_images=True)
    except CohortError as e:
        out = []
        for p in e.problems:
            t = str(p)
            for root in {str(folder.resolve()), str(folder)}:
                t = t.replace(root + os.sep, "").replace(root, ".")
            out.append(t)
        return out
    return []


def _phi_from_sheet(df: pd.DataFrame, m: ColumnMapping, phi: set[str]) -> None:
    """The spreadsheet's identifiers: the id column, identifier-like columns, every date."""
    allowed = set(m.missing_values)  # values the output may hold by design
    for f in m.features:
        if f.column and f.column in df.columns:
            allowed.update(df[f.column])
    if m.label_column in df.columns:
        allowed.update(df[m.label_column])
    for c in df.columns:
        if c in m.id_columns or _SHEET_PHI_RE.search(c) or _ID_RE.search(c):
            vals = {v for v in df[c] if v and v not in allowed}
            phi.update(vals)
            phi.update(normalise_id(v) for v in vals)
        for v in df[c]:
            if v and (_DATE_LIKE.match(v) or re.fullmatch(r"(19|20)\d{6}", v)):
                for fmt in (None, "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%m-%d-%Y"):
                    d = parse_date(v, fmt)
                    if d:
                        phi.update(date_spellings(d))
                phi.add(v)


def _run(source: Path, staging: Path, m: ColumnMapping, rows: dict[str, list[ClinicalRow]],
         n_rows_no_id: int, key: bytes, join: str, frames: str, without_region: str,
         allow_burned_in: bool, phi: set[str], name: str):
    """Every step of the import into ``staging``; the summary, private details and id table."""
    paths = sorted((p for p in source.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(source).as_posix())
    files = [SourceFile(file_id=f"F{i + 1:05d}", rel=p.relative_to(source).as_posix())
             for i, p in enumerate(paths)]
    log.info("reading %d file(s) under %s", len(files), source)
    _read_headers(paths, files, phi, key, join, without_region, allow_burned_in)
    patient_clin = _join_clinical(files, rows, m, join)
    n_frames_decoded = _decode_all(paths, files, staging / "images" / ".tmp", join, frames,
                                   without_region)
    table, images_meta, n_dup_frames = _name_images(files, patient_clin, staging)
    (staging / "images" / ".tmp").rmdir()
    cols = ["subject_id", "image_path", "label", "pixel_size_mm_x", "pixel_size_mm_y",
            *(f.name for f in m.features)]
    pd.DataFrame(table, columns=cols).to_csv(staging / "cohort.csv", index=False,
                                             lineterminator="\n")
    (staging / "cohort.yaml").write_text(_cohort_yaml(name, m, frames, without_region),
                                         encoding="utf-8")
    contract = contract_problems(staging) if table else ["no image imported"]
    # reports
    written = sorted({r["subject_id"] for r in table})
    of_subject: dict[str, list[SourceFile]] = {}
    for sf in files:
        if sf.subject:
            of_subject.setdefault(sf.subject, []).append(sf)
    not_imported = [{"subject": subj, "reasons": sorted({sf.reason for sf in of_subject[subj]}),
                     "files": [sf.file_id for sf in of_subject[subj]]}
                    for subj in sorted(set(of_subject) - set(written))]
    n_dicom = sum(1 for sf in files if sf.reason not in ("not_dicom", "read_error"))
    n_us = sum(1 for sf in files if sf.us_image)
    dicom_keys = {sf.key for sf in files if sf.key and sf.us_image} if join == "patient_id" \
        else {sf.accession for sf in files if sf.accession and sf.us_image}
    ids_without = sorted(k for k in rows if k not in dicom_keys)
    summary = _summary(files, table, images_meta, not_imported, ids_without, join, key,
                       frames, without_region, allow_burned_in, n_dicom, n_us,
                       n_frames_decoded, n_dup_frames, len(written), rows, n_rows_no_id, m, phi)
    summary["contract"] = {"passed": not contract, "problems": contract}
    (staging / "import_report.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8")
    (staging / "import_report.md").write_text(_report_md(name, summary), encoding="utf-8")
    details = {"files": [{"file": sf.file_id, "path": sf.rel, "status": sf.status,
                          "reason": sf.reason, "detail": sf.detail, "error": sf.error,
                          "subject": sf.subject, "patient_id": sf.raw_id, "flags": sf.flags,
                          "images": [im.get("image_path", "") for im in sf.images]}
                         for sf in files],
               "spreadsheet_ids_without_ultrasound": [
                   {"lines": [r.line for r in rows[k]], "id": rows[k][0].raw_id}
                   for k in ids_without],
               "key_sha256_prefix": hashlib.sha256(key).hexdigest()[:12]}
    return summary, details, _id_table(files, set(written))


def _read_headers(paths: list[Path], files: list[SourceFile], phi: set[str], key: bytes,
                  join: str, without_region: str, allow_burned_in: bool) -> None:
    """Read every header (no pixels); apply the region policy; skip duplicate instances."""
    for p, sf in zip(paths, files):
        _read_header(p, sf, phi, join, keep_pixels=False)
        if sf.key:
            sf.subject = pseudonym(key, sf.key)
        if sf.status == "pending" and sf.region is None:
            if sf.burned_in == "YES" and not allow_burned_in:
                sf.skip("burned_in_without_region")
            elif without_region == "skip":
                sf.skip("no_region_skip")
    seen_uid: dict[str, str] = {}
    for sf in sorted((s for s in files if s.status == "pending"), key=lambda s: s.sort_key):
        if sf.sop_uid and sf.sop_uid in seen_uid:
            sf.skip("duplicate_instance", f"same instance as {seen_uid[sf.sop_uid]}")
        elif sf.sop_uid:
            seen_uid[sf.sop_uid] = sf.file_id


def _join_clinical(files: list[SourceFile], rows: dict[str, list[ClinicalRow]],
                   m: ColumnMapping, join: str) -> dict[str, tuple[str, dict[str, str]]]:
    """(label, feature values) of each patient with a file left; the others' files skipped."""
    by_patient: dict[str, list[SourceFile]] = {}
    all_of: dict[str, list[SourceFile]] = {}  # every readable file of a patient
    for sf in files:
        if sf.key:
            all_of.setdefault(sf.key, []).append(sf)
        if sf.status == "pending":
            by_patient.setdefault(sf.key, []).append(sf)
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for pkey, sfs in sorted(by_patient.items(), key=lambda kv: kv[1][0].subject):
        matched: list[ClinicalRow] = []
        for sf in sfs:
            r = rows.get(pkey if join == "patient_id" else sf.accession, [])
            if r:
                matched += [x for x in r if x not in matched]
            else:
                sf.skip("patient_not_in_spreadsheet" if join == "patient_id"
                        else "accession_not_in_spreadsheet")
        live = [sf for sf in sfs if sf.status == "pending"]
        if not live:
            continue
        mine = sorted(all_of[pkey], key=lambda s: s.sort_key)
        dd = {"dicom:PatientBirthDate": next((sf.birth for sf in mine if sf.birth), None),
              "dicom:StudyDate": min((sf.study for sf in mine if sf.study), default=None)}
        label, values, reason = resolve_patient(matched, m, dd)
        if reason:
            for sf in live:
                sf.skip(reason)
            continue
        out[pkey] = (label, values)
    return out


def _decode_all(paths: list[Path], files: list[SourceFile], tmp: Path, join: str, frames: str,
                without_region: str) -> int:
    """Decode, crop and write (to ``tmp``) the kept frames of every file left; their count."""
    n = 0
    for p, sf in zip(paths, files):
        if sf.status != "pending":
            continue
        ds = _read_header(p, SourceFile(sf.file_id, sf.rel), set(), join, keep_pixels=True)
        if ds is None:
            sf.skip("read_error", "the file changed during the import")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kept = _decode_frames(ds, sf, frames, without_region)
        except _Skip as e:
            sf.skip(e.reason, e.detail)
            continue
        except Exception as e:  # noqa: BLE001 - a bad file must not stop the import
            sf.skip("decode_error", type(e).__name__, f"{type(e).__name__}: {e}")
            continue
        sf.status = "imported"
        _flag_text_risks(sf, kept[0][3])
        for idx, gray, box, method in kept:
            n += 1
            data = _png_bytes(gray)
            t = tmp / f"{sf.file_id}_{idx}.png"
            t.write_bytes(data)
            sf.images.append({"frame": idx, "tmp": t, "sha": hashlib.sha256(data).hexdigest(),
                              "crop": list(box), "crop_method": method,
                              "size": [int(gray.shape[1]), int(gray.shape[0])]})
    return n


def _flag_text_risks(sf: SourceFile, method: str) -> None:
    """The flags of an imported file: how it was cropped, BurnedInAnnotation, pixel size."""
    if sf.region is None:
        sf.flag(method)
        if sf.burned_in == "YES":
            sf.flag("burned_in_kept_unsafe")
    elif sf.burned_in == "YES":
        sf.flag("burned_in_annotation_yes")
    if sf.burned_in not in ("YES", "NO"):
        sf.flag("burned_in_annotation_not_stated")
    if sf.region is None or not (sf.region.mm_x and sf.region.mm_y):
        sf.flag("no_pixel_size")


def _name_images(files: list[SourceFile], patient_clin: dict, staging: Path
                 ) -> tuple[list[dict], list[dict], int]:
    """Order each subject's images, drop repeats of an image already kept, name the rest
    ``images/<subject>_<k>.png``; the cohort rows, the images' provenance, repeats dropped."""
    table, meta = [], []
    seen: dict[str, str] = {}
    n_dup = 0
    of_subject: dict[str, list[SourceFile]] = {}
    for sf in files:
        if sf.status == "imported":
            of_subject.setdefault(sf.subject, []).append(sf)
    for subj in sorted(of_subject):
        sfs = sorted(of_subject[subj], key=lambda s: s.sort_key)
        label, values = patient_clin[sfs[0].key]
        k = 0
        for sf in sfs:
            for im in sf.images:
                if im["sha"] in seen:
                    n_dup += 1
                    im["tmp"].unlink()
                    im["duplicate_of"] = seen[im["sha"]]
                    continue
                k += 1
                rel = f"images/{subj}_{k}.png"
                im["tmp"].rename(staging / rel)
                im["image_path"] = seen[im["sha"]] = rel
                mm = (sf.region.mm_x, sf.region.mm_y) if sf.region is not None else ("", "")
                table.append({"subject_id": subj, "image_path": rel, "label": label,
                              "pixel_size_mm_x": mm[0], "pixel_size_mm_y": mm[1], **values})
                meta.append({"image_path": rel, "file": sf.file_id, "frame": im["frame"],
                             "frames_in_file": sf.n_frames, "crop": im["crop"],
                             "crop_method": im["crop_method"], "size": im["size"]})
            dups = [im["duplicate_of"] for im in sf.images if "duplicate_of" in im]
            if len(dups) == len(sf.images):
                sf.skip("duplicate_image", "identical to " + ", ".join(sorted(set(dups))))
            elif dups:
                sf.flag("duplicate_frames")
    return table, meta, n_dup


def _id_table(files: list[SourceFile], written: set[str]) -> list[dict]:
    """The private pseudonym table: one row per patient read."""
    ids: dict[str, dict] = {}
    for sf in files:
        if not sf.key:
            continue
        e = ids.setdefault(sf.subject, {"subject_id": sf.subject, "patient_id": sf.key,
                                        "patient_id_as_written": set(),
                                        "accession_numbers": set(), "images": 0,
                                        "in_cohort": "yes" if sf.subject in written else "no"})
        e["patient_id_as_written"].add(sf.raw_id)
        if sf.accession:
            e["accession_numbers"].add(sf.accession)
        e["images"] += sum(1 for im in sf.images if im.get("image_path"))
    return [ids[s] for s in sorted(ids)]


def _ids_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subject_id", "patient_id", "patient_id_as_written", "accession_numbers",
                "images", "in_cohort"])
    for r in rows:
        w.writerow([r["subject_id"], r["patient_id"],
                    " | ".join(sorted(r["patient_id_as_written"])),
                    " | ".join(sorted(r["accession_numbers"])), r["images"], r["in_cohort"]])
    return buf.getvalue().encode("utf-8")


def _cohort_yaml(name: str, m: ColumnMapping, frames: str, without_region: str) -> str:
    desc = m.description or (
        f"Breast ultrasound imported from a hospital DICOM export by phyllodes.data.sources.dicom "
        f"(frames: {frames}; crop: the 2D tissue region of the Sequence of Ultrasound Regions, "
        f"else --without-region {without_region}; pseudonymous subject ids; clinical values "
        "from the hospital spreadsheet through a column mapping). See import_report.md.")
    doc = {
        "name": name,
        "description": desc,
        "positive_labels": list(m.positive_labels),
        "negative_labels": list(m.negative_labels),
        "numeric_features": [f.name for f in m.features if f.kind == "numeric"],
        "categorical_features": [f.name for f in m.features
                                 if f.kind == "categorical" and f.reference is None],
        "missing_values": [""],
        # physical pixel size of each image (for sizes in mm); not a model input
        "unused_columns": ["pixel_size_mm_x", "pixel_size_mm_y"],
        **({"references": {f.name: f.reference for f in m.features if f.reference is not None}}
           if any(f.reference is not None for f in m.features) else {}),
        "citation": m.citation or "private hospital data; cite the study that collected it",
        "license": m.license or "private: the institution's data use agreement; do not "
                                "redistribute",
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def _summary(files, table, images_meta, not_imported, ids_without_dicom, join, key, frames,
             without_region, allow_burned_in, n_dicom, n_us, n_frames_decoded, n_dup_frames,
             n_subjects, rows, n_rows_no_id, m, phi) -> dict:
    import pydicom
    skipped: dict[str, dict] = {}
    for sf in files:
        if sf.status == "skipped":
            e = skipped.setdefault(sf.reason, {"description": SKIP_REASONS[sf.reason],
                                               "count": 0, "files": []})
            e["count"] += 1
            e["files"].append(sf.file_id if not sf.detail else f"{sf.file_id} ({sf.detail})")
    flags: dict[str, dict] = {}
    for sf in files:
        if sf.status != "imported":
            continue
        for f in sf.flags:
            e = flags.setdefault(f, {"description": FLAGS[f], "count": 0, "files": []})
            e["count"] += 1
            e["files"].append(sf.file_id)
    labels: dict[str, dict] = {}
    for r in table:
        e = labels.setdefault(r["label"], {"subjects": set(), "images": 0})
        e["subjects"].add(r["subject_id"])
        e["images"] += 1
    n_pat = len({sf.key for sf in files if sf.key})
    counts = {
        "files_found": len(files),
        "dicom_files": n_dicom,
        "ultrasound_files_with_pixels": n_us,
        "files_imported": sum(1 for sf in files if sf.status == "imported"),
        "files_skipped": sum(1 for sf in files if sf.status == "skipped"),
        "frames_decoded": n_frames_decoded,
        "frames_dropped_as_duplicates": n_dup_frames,
        "images_written": len(table),
        "patients_in_export": n_pat,
        "patients_not_imported": len(not_imported),
        "subjects_written": n_subjects,
        "spreadsheet_rows": sum(len(v) for v in rows.values()) + n_rows_no_id,
        "spreadsheet_rows_without_id": n_rows_no_id,
        "spreadsheet_ids_without_ultrasound": len(ids_without_dicom),
    }
    assert counts["files_imported"] + counts["files_skipped"] == counts["files_found"]
    return {
        "tool": "phyllodes.data.sources.dicom",
        "pydicom": pydicom.__version__,
        "options": {"frames": frames, "join": join, "without_region": without_region,
                    "allow_burned_in_without_region": bool(allow_burned_in),
                    "subject_id": f"{SUBJECT_PREFIX} + {SUBJECT_HEX} hex digits of "
                                  "HMAC-SHA256(key, normalised PatientID)",
                    "mapping": {"positive_labels": list(m.positive_labels),
                                "negative_labels": list(m.negative_labels),
                                "numeric": [f.name for f in m.features if f.kind == "numeric"],
                                "categorical": [f.name for f in m.features
                                                if f.kind == "categorical"
                                                and f.reference is None],
                                "references": [f.name for f in m.features
                                               if f.reference is not None],
                                "ages_from_dates": [f.name for f in m.features
                                                    if f.from_dates]}},
        "counts": counts,
        "labels": {k: {"subjects": len(v["subjects"]), "images": v["images"]}
                   for k, v in sorted(labels.items())},
        "skipped": dict(sorted(skipped.items())),
        "flags": dict(sorted(flags.items())),
        "may_carry_text_in_scan_region": sorted({f for k in MAY_CARRY_TEXT
                                                 for f in flags.get(k, {}).get("files", [])}),
        "files": [{"file": sf.file_id, "status": sf.status, "reason": sf.reason,
                   "detail": sf.detail, "subject": sf.subject, "frames_in_file": sf.n_frames,
                   "images": [im["image_path"] for im in sf.images if im.get("image_path")],
                   "flags": sorted(sf.flags) if sf.status == "imported" else []}
                  for sf in files],
        "images": images_meta,
        "patients_not_imported": sorted(not_imported, key=lambda e: e["subject"]),
        "spreadsheet_ids_without_ultrasound": (
            [pseudonym(key, k) for k in ids_without_dicom] if join == "patient_id"
            else f"{len(ids_without_dicom)} accession number(s); listed in the private report"),
        "tags_read": {"used": {k: v for k, v in TAGS_USED.items()},
                      "read_only_to_check_the_output": list(TAGS_CHECKED)},
        "self_check": {"identifiers_searched": len(_phi_needles(phi)),
                       "result": "no identifier found in any output file; PNGs hold pixels "
                                 "only"},
    }


def _report_md(name: str, s: dict) -> str:
    c = s["counts"]
    o = s["options"]
    L = [f"# Import report: {name}", "",
         "Written by `phyllodes.data.sources.dicom` (`python -m phyllodes import-dicom`). It "
         "holds no "
         "identifier: files are named by their index `Fnnnnn` in the sorted source listing, "
         "subjects by their keyed pseudonym. The source paths and patient ids are in the "
         "private report beside the key file, outside this folder.", "",
         f"Options: frames `{o['frames']}`, join `{o['join']}`, without region "
         f"`{o['without_region']}`, allow burned-in without region "
         f"`{o['allow_burned_in_without_region']}`. Subject ids: {o['subject_id']}.", "",
         "## Counts", "", "| step | count |", "| --- | ---: |"]
    L += [f"| {k.replace('_', ' ')} | {v} |" for k, v in c.items()]
    L += ["", "## Labels", "", "| label | subjects | images |", "| --- | ---: | ---: |"]
    L += [f"| {k} | {v['subjects']} | {v['images']} |" for k, v in s["labels"].items()]
    L += ["", "## Skipped files", ""]
    if not s["skipped"]:
        L.append("None.")
    for k, v in s["skipped"].items():
        L += [f"- **{k}** ({v['count']}): {v['description']}. Files: " + ", ".join(v["files"])]
    L += ["", "## Flags on imported files", ""]
    if not s["flags"]:
        L.append("None.")
    for k, v in s["flags"].items():
        L += [f"- **{k}** ({v['count']}): {v['description']}. Files: " + ", ".join(v["files"])]
    L += ["", "## Files that may carry text inside the kept image", "",
          "Cropping removes what lies outside the ultrasound region; it cannot remove text "
          "burned into the scan itself. Check these images by eye before sharing anything "
          "derived from them: " + (", ".join(s["may_carry_text_in_scan_region"]) or "none") +
          ".", "", "## Patients not imported", ""]
    if not s["patients_not_imported"]:
        L.append("None.")
    for e in s["patients_not_imported"]:
        L.append(f"- {e['subject']}: " + "; ".join(f"{r} ({SKIP_REASONS[r]})"
                                                    for r in e["reasons"])
                 + f". Files: {', '.join(e['files'])}")
    ids = s["spreadsheet_ids_without_ultrasound"]
    L += ["", "## Spreadsheet ids without an ultrasound file", "",
          (", ".join(ids) or "None.") if isinstance(ids, list) else ids, "",
          "## DICOM tags read", "", "| tag | why |", "| --- | --- |"]
    L += [f"| {k} | {v} |" for k, v in s["tags_read"]["used"].items()]
    L += ["", "Read only to check that none of their values reaches this folder: "
          + ", ".join(s["tags_read"]["read_only_to_check_the_output"]) + ".", "",
          "## Data contract", "",
          ("`phyllodes.data.cohort.load_cohort` accepts the cohort." if s["contract"]["passed"] else
           "`phyllodes.data.cohort.load_cohort` finds these problems (fix the mapping or the "
           "spreadsheet and import again):"), *[f"- {p}" for p in s["contract"]["problems"]],
          "", "## Self-check", "",
          f"{s['self_check']['identifiers_searched']} identifier spellings searched in every "
          f"file of this folder: {s['self_check']['result']}.", ""]
    return "\n".join(L)


# --------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m phyllodes import-dicom",
        description="Import a DICOM ultrasound export and its clinical spreadsheet into a "
                    "de-identified cohort (data/README.md, 'Importing a hospital DICOM export').")
    p.add_argument("--source", help="folder of the DICOM export (searched recursively)")
    p.add_argument("--clinical", required=True, help="the clinical spreadsheet (.csv or .xlsx)")
    p.add_argument("--out", help="the cohort folder to write, e.g. data/private/mgh-phyllodes")
    p.add_argument("--mapping", help="YAML column mapping (see --write-mapping-template)")
    p.add_argument("--join", choices=["patient_id", "accession"], default=None,
                   help="join the spreadsheet on PatientID or AccessionNumber (default: the "
                        "mapping's join, else patient_id)")
    p.add_argument("--key-file", help="pseudonym key (default ~/.config/phyllodes/NAME.key, "
                                      "made when missing); the id table and the detailed "
                                      "report go beside it")
    p.add_argument("--name", help="cohort name (default: the --out folder's name)")
    p.add_argument("--frames", default="middle",
                   help=f"frames kept of a cine clip: {FRAME_CHOICES} (default middle)")
    p.add_argument("--without-region", choices=WITHOUT_REGION, default="crop",
                   help="files without a Sequence of Ultrasound Regions: crop to the largest "
                        "bright area (default), keep the full frame, or skip; crop and full "
                        "are flagged in the report")
    p.add_argument("--allow-burned-in-without-region", action="store_true",
                   help="UNSAFE: keep files whose BurnedInAnnotation is YES although there is "
                        "no region to crop to (burned-in names may remain)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier import in --out (or the mapping template)")
    p.add_argument("--write-mapping-template", metavar="FILE",
                   help="write a commented mapping guessed from the spreadsheet's header to "
                        "FILE and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m phyllodes import-dicom ...``; returns the exit status."""
    p = build_parser()
    a = p.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if a.write_mapping_template:
            path = write_mapping_template(a.clinical, a.write_mapping_template,
                                          a.join or "patient_id", overwrite=a.overwrite)
            print(f"wrote {path}: check every line, then run the import with --mapping {path}")
            return 0
        if not a.source or not a.out:
            p.error("--source and --out are required (unless --write-mapping-template)")
        report = import_dicom(a.source, a.clinical, a.out, mapping=a.mapping,
                              key_file=a.key_file, frames=a.frames, join=a.join, name=a.name,
                              without_region=a.without_region,
                              allow_burned_in_without_region=a.allow_burned_in_without_region,
                              overwrite=a.overwrite)
    except (DicomImportError, FileExistsError, ValueError) as e:
        print(f"import-dicom: {e}", file=sys.stderr)
        return 1
    print(report.text())
    return 0 if report.passes_contract else 2


if __name__ == "__main__":
    sys.exit(main())
