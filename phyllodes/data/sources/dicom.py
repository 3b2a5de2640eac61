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
  region is skipped; a region that extends outside the image, or that overlaps the band of
  burned-in text above or below the scan, is refused for review (``--allow-unsafe-regions``
  imports it, flagged);
* the region's PhysicalDeltaX/Y in cm become ``pixel_size_mm_x``/``pixel_size_mm_y``;
* subjects are ``S`` + the first 12 hex digits of HMAC-SHA256(key, ``b"phyllodes-subject\\0"``
  + the normalised PatientID in UTF-8) (:func:`pseudonym`); the key, the
  pseudonym table and the detailed report (with source paths) live beside the key file,
  outside the cohort folder and outside any git work tree;
* the clinical spreadsheet (CSV or Excel) is joined on PatientID or AccessionNumber and mapped
  to the contract by a small YAML file (``--write-mapping-template`` writes one); age is
  computed from dates and the dates are dropped;
* the written cohort is checked by :func:`phyllodes.data.cohort.load_cohort`; its problems, if
  any, are in the report (and the command exits with status 2);
* before the cohort is moved into place, every output file is searched for every identifier
  that was read (names, ids, accession numbers, dates in several spellings, institution,
  physicians, UIDs; a family name alone, with an initial, and accent-folded); a hit aborts the
  import. The same inputs and key give the same bytes;
* nothing printed carries a header value: while the import runs, Python warnings, the log
  records of every library and what libraries write to stdout/stderr are held, then shown
  once each with identifiers, UIDs, long numbers and quoted values replaced by placeholders.
"""

from __future__ import annotations

import argparse
import contextlib
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
import tempfile
import unicodedata
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
    "region_partly_outside_image": "the ultrasound region extends outside the image (a region "
                                   "recorded for another image size, or a wrong header): "
                                   "review the image; --allow-unsafe-regions imports it "
                                   "clamped to the image, flagged",
    "region_over_text_band": "the ultrasound region overlaps the band of burned-in text above "
                             "or below the scan, so the crop would keep that text: review the "
                             "image; --allow-unsafe-regions imports it, flagged",
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
    "region_clamped": "the ultrasound region extended outside the image and was clamped to "
                      "it (--allow-unsafe-regions): review the image",
    "region_over_text_band": "the ultrasound region overlaps the burned-in text band above or "
                             "below the scan (--allow-unsafe-regions): that text is in the image",
    "overlay_planes": "overlay planes (60xx) present: never burned in, not kept",
    "no_pixel_size": "no spatial pixel size (no region, or units other than cm)",
    "duplicate_frames": "some frames dropped: identical to an image already kept",
}
MAY_CARRY_TEXT = ("burned_in_annotation_yes", "fallback_crop", "full_frame",
                  "burned_in_kept_unsafe", "region_covers_frame", "region_clamped",
                  "region_over_text_band")
#: Skip reasons that name one image a person should look at (the detail says what is wrong).
REVIEW_REASONS = ("region_partly_outside_image", "region_over_text_band")


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
    """``S`` + the first 12 hex digits of HMAC-SHA256(key, b"phyllodes-subject\\0" + the
    normalised patient id in UTF-8); data/README.md gives the same formula."""
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


SHEET_ROW = "sheet_row"


def read_spreadsheet(path: Path | str, sheet: str | int = 0) -> pd.DataFrame:
    """Every cell of a CSV/TSV or Excel sheet as stripped text (see :func:`_cell`), indexed
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
    df = raw.map(_cell)
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
        if f.column and (f.column in m.id_columns or _SHEET_PHI_RE.search(f.column)
                         or _ID_RE.search(f.column) or _ACC_RE.search(f.column)):
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
        x = _to_float(s)
        if x is None:
            p.append(f"{where}, column '{f.column}': not a number; write a number or one of the "
                     f"missing values {sorted(miss)}")
            return ""
        return _fmt_number(x * (f.scale if f.scale is not None else 1.0))
    if f.kind == "categorical" and s and _DATE_LIKE.match(s):
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


_TITLES = r"(?:dr|doctor|prof|professor|mr|mrs|ms|miss|mx|sir|dame|sister|nurse)"
_CAP = r"[A-Z][a-z'’-]*(?:[A-Z][a-z'’-]*)?[a-z]"  # Smith, Li, O'Brien, McDonald
_INI = r"[A-Z]\."
#: Spellings of a person's name that ordinary category values do not take: a title, a dotted
#: initial, 'Family, Given', DICOM's 'Family^Given' (checked on the accent-stripped value).
_NAME_STRONG = (
    re.compile(rf"^{_TITLES}\.?\s+[A-Za-z]", re.I),
    re.compile(rf"^{_INI}\s*(?:{_INI}\s*)*{_CAP}(?:[ -]{_CAP})*$"),
    re.compile(rf"^{_CAP}(?:[ -]{_CAP})*\s+{_INI}(?:\s*{_INI})*$"),
    re.compile(rf"^{_CAP}(?:[ -]{_CAP})*,\s*(?:{_CAP}|[A-Z]\.?)(?:\s+(?:{_CAP}|[A-Z]\.?))*$"),
    re.compile(r"[A-Za-z]\^[A-Za-z]"),
)
#: ... and those a category may take but a name more often does ('J Smith', 'Smith J').
_NAME_WEAK = (re.compile(rf"^[A-Z]\s+{_CAP}$"), re.compile(rf"^{_CAP}\s+[A-Z]$"))
_CONTACT = (
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # an e-mail address
    re.compile(r"^\+?\(?\d[\d ()./-]{6,}\d$"),  # a phone number
    re.compile(r"^\d+[a-z]?,?\s+.*\b(street|st|road|rd|avenue|ave|lane|ln|drive|way|close|"
               r"court|ct|place|pl|boulevard|blvd|strasse|str|rue|via|calle|weg|platz|"
               r"square|sq|crescent|terrace|gardens)\b", re.I),  # a street address
)
_PERSON_RE = re.compile(r"(name|physician|doctor|surgeon|radiologist|referr|nurse|sonograph|"
                        r"operator|consultant|clinician|reporter|author|signed)", re.I)


def _deaccent(s: str) -> str:
    """``s`` without diacritics (Müller -> Muller, José -> Jose); case kept."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


def fold(s: str) -> str:
    """``s`` as identifiers are compared: without diacritics, case-folded (ß -> ss)."""
    return _deaccent(s).casefold()


def person_name_like(v: str, strong_only: bool = False) -> bool:
    """Whether a cell is written like a person's name ('Dr Smith', 'J. Smith', 'Smith, John',
    'Smith^John'; unless ``strong_only``, also 'J Smith' and 'Smith J')."""
    t = _deaccent(v.strip())
    pats = _NAME_STRONG if strong_only else _NAME_STRONG + _NAME_WEAK
    return any(p.search(t) for p in pats)


def contact_like(v: str) -> bool:
    """Whether a cell looks like an e-mail address, a phone number or a street address."""
    t = v.strip()
    return not _DATE_LIKE.match(t) and any(p.search(t) for p in _CONTACT)


def name_words(v: str) -> set[str]:
    """The words of a name-like cell that may be a name alone: at least 2 letters, not a
    title ('Dr Hargreaves' -> {'Hargreaves'}, 'Smith, J.' -> {'Smith'})."""
    words = re.findall(r"[^\W\d_](?:[^\W\d_]|['’-])*[^\W\d_]", v)
    return {w for w in words if not re.fullmatch(_TITLES, _deaccent(w), re.I)}


def _name_tokens(df: pd.DataFrame) -> set[str]:
    """The folded words (3 letters or more) of the spreadsheet's person-name columns."""
    out: set[str] = set()
    for c in df.columns:
        if _PERSON_RE.search(c):
            for v in df[c]:
                out |= {fold(w) for w in name_words(v) if len(w) >= 3}
    return out


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
    numeric, categorical, never = _classify_columns(
        df, [c for c in cols if c not in id_cols and c != label_col and c not in dates])
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
    names = _name_tokens(df)
    for c in cols:
        if _PHI_RE.search(c) or _ID_RE.search(c) or _ACC_RE.search(c):
            never.append((c, "the header names an identifier or free text (a name, id, "
                             "address, physician, comment or note)"))
        elif _mostly(df[c], lambda s: _to_float(s) is not None):
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
    notes: dict[str, str] = field(default_factory=dict)  # flag -> what is wrong (PHI-free)
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


class Identifiers(set):
    """The identifying strings read from the export and the spreadsheet (a set of str), and
    apart, in ``names_alone``, the family names alone: searched everywhere too, but a cell of
    cohort.csv that equals a value the mapping declares for that column is not a hit (a race
    'White' and a patient called White)."""

    def __init__(self, values=()):
        super().__init__(values)
        self.names_alone: set[str] = set()


def add_person_name(phi: set[str], pn: str) -> None:
    """Add a person name (DICOM Family^Given^..., or as a spreadsheet writes it) to ``phi``:
    its spellings (:func:`name_spellings`), and its family name alone."""
    pn = _as_pn(pn)
    phi.update(name_spellings(pn))
    fam = pn.split("=")[0].split("^")[0].strip()
    if fam:
        getattr(phi, "names_alone", phi).add(fam)
    if "^" not in pn:  # 'Given Family' or 'Family Given' as written: either word alone
        words = pn.split()
        getattr(phi, "names_alone", phi).update(w for w in (words[0], words[-1]) if len(w) > 1)


def _as_pn(v: str) -> str:
    """A name as a spreadsheet writes it ('Family, Given') in DICOM's Family^Given form;
    other spellings are returned unchanged."""
    v = v.strip()
    if "^" in v or "," not in v:
        return v
    fam, giv = (x.strip() for x in v.split(",", 1))
    return f"{fam}^{giv}" if fam and giv else v


def _phi_from(ds, phi: set[str]) -> None:
    """Add the identifying values of a header (in their usual spellings) to ``phi``."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.multival import MultiValue
    for kw in ("PatientID", "AccessionNumber", "PatientBirthDate", "StudyDate",
               "SOPInstanceUID", *TAGS_CHECKED):
        try:
            el = ds.get(kw)
        except Exception:  # noqa: BLE001 - an unreadable value: kept as written
            phi.update(_raw_values(ds, kw))
            continue
        if el is None or el == "":
            continue
        vr = dictionary_VR(tag_for_keyword(kw))
        for v in (list(el) if isinstance(el, (MultiValue, list, tuple)) else [el]):
            if vr == "PN":
                add_person_name(phi, str(v))
            elif vr in ("DA", "DT"):
                d = _dicom_date(v)
                phi.update(date_spellings(d) if d else {str(v).strip()})
            else:
                phi.add(str(v).strip())
                phi.add(normalise_id(v))


def _raw_values(ds, kw: str) -> set[str]:
    """The values of an element as stored (bytes as Latin-1), when they cannot be read."""
    try:
        raw = ds.get_item(kw)
        data = getattr(raw, "value", raw)
        text = data.decode("latin-1") if isinstance(data, bytes) else str(data or "")
    except Exception:  # noqa: BLE001
        return set()
    return {v.strip(" \x00") for v in text.split("\\") if v.strip(" \x00")}


def name_spellings(pn: str) -> set[str]:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) in the usual spellings, with
    the given name in full or as an initial ('John Smith', 'Smith, John', 'J. Smith', 'J Smith',
    'Smith J', ...). The family name alone is :func:`add_person_name`'s."""
    parts = [p.strip() for p in pn.split("=")[0].split("^")]
    fam, giv = (parts + ["", ""])[:2]
    out = {pn.strip(), pn.split("=")[0].strip().rstrip("^")}
    if fam and giv:
        out |= {f"{giv} {fam}", f"{fam} {giv}", f"{fam}, {giv}", f"{fam},{giv}",
                f"{fam}^{giv}"}
        i = giv[0]
        out |= {f"{i}. {fam}", f"{i} {fam}", f"{i}.{fam}", f"{fam} {i}", f"{fam} {i}.",
                f"{fam}, {i}", f"{fam}, {i}.", f"{fam},{i}."}
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
    with _library_call():
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


def _decode_frames(ds, sf: SourceFile, frames: str, without_region: str,
                   allow_unsafe_regions: bool = False
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
            box = region_box(sf, w, h, allow_unsafe_regions)
            _check_text_band(gray, box, sf, allow_unsafe_regions)
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


def _region_text(r: Region) -> str:
    return f"region x {r.x0}-{r.x1}, y {r.y0}-{r.y1}"


def region_box(sf: SourceFile, w: int, h: int, allow: bool) -> tuple[int, int, int, int]:
    """The crop box (x1/y1 exclusive) of the file's region in a ``w`` x ``h`` frame. A region
    wholly outside is skipped; one partly outside is refused (:class:`_Skip` naming how far
    and on which side) unless ``allow``, then clamped and flagged."""
    r = sf.region
    x0, y0 = max(0, r.x0), max(0, r.y0)
    x1, y1 = min(w - 1, r.x1), min(h - 1, r.y1)
    if x1 < x0 or y1 < y0:
        raise _Skip("region_outside_image", f"{_region_text(r)} outside the {w}x{h} image")
    over = {"left": -r.x0, "top": -r.y0, "right": r.x1 - (w - 1), "bottom": r.y1 - (h - 1)}
    over = {k: v for k, v in over.items() if v > 0}
    if over:
        detail = (f"{_region_text(r)} extends {max(over.values())} px outside the {w}x{h} "
                  "image (" + ", ".join(f"{k} edge by {v} px" for k, v in over.items()) + ")")
        if not allow:
            raise _Skip("region_partly_outside_image", detail)
        sf.flag("region_clamped")
        sf.notes["region_clamped"] = detail + "; clamped to the image"
    return x0, y0, x1 + 1, y1 + 1


def text_band_rows(gray: np.ndarray, box: tuple[int, int, int, int], mark: int = 96,
                   min_pixels: int = 6) -> list[tuple[int, int]]:
    """The rows (first, last; of the frame) inside ``box`` holding bright marks (above
    ``mark``, at least ``min_pixels`` of them in a band) above or below the scan: burned-in text
    bands the crop would keep. The scan is :func:`scan_area`'s; none found, none is reported."""
    found = scan_area(gray)
    if found is None:
        return []
    (_, sy0, _, sy1), area = found
    x0, y0, x1, y1 = box
    marks = (gray[y0:y1, x0:x1] > mark) & ~area[y0:y1, x0:x1]
    rows = np.arange(y0, y1)
    count = np.where((rows < sy0) | (rows >= sy1), marks.sum(axis=1), 0)
    out: list[tuple[int, int, int]] = []  # first, last, pixels
    for r in rows[count > 0]:
        if out and r == out[-1][1] + 1:
            out[-1] = (out[-1][0], int(r), out[-1][2] + int(count[r - y0]))
        else:
            out.append((int(r), int(r), int(count[r - y0])))
    return [(a, b) for a, b, n in out if n >= min_pixels]


def _check_text_band(gray: np.ndarray, box: tuple, sf: SourceFile, allow: bool) -> None:
    """Refuse (:class:`_Skip`) a region overlapping a burned-in text band, unless ``allow``:
    then flag it."""
    bands = text_band_rows(gray, box)
    if not bands:
        return
    detail = (f"{_region_text(sf.region)} overlaps the burned-in text band at rows "
              + " and ".join(f"{a}-{b}" for a, b in bands))
    if not allow:
        raise _Skip("region_over_text_band", detail)
    sf.flag("region_over_text_band")
    sf.notes["region_over_text_band"] = detail


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _png_bytes(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with _library_call():
        Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# the output self-check


_TOKEN = re.compile(r"[^\W_]+")
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


@functools.lru_cache(maxsize=1)
def _own_words() -> frozenset[str]:
    """Every word of this module's own strings: what the import writes by itself (not its
    docstrings, nor the patterns of its regular expressions)."""
    import ast
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    skip: set[int] = set()
    for n in ast.walk(tree):
        body = getattr(n, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))  # a docstring
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                and isinstance(n.func.value, ast.Name) and n.func.value.id == "re":
            skip |= {id(x) for a in n.args for x in ast.walk(a)}
    return frozenset(t for n in ast.walk(tree) if isinstance(n, ast.Constant)
                     and isinstance(n.value, str) and id(n) not in skip
                     for t in _TOKEN.findall(fold(n.value)))


class Needles:
    """The identifiers worth searching, compared folded (:func:`fold`: case and diacritics
    ignored; 'Müller' also as 'Mueller'), indexed by their first word.

    Kept: values of at least 4 characters, and at least 6 when they hold no letter (shorter
    ones match any number). Values made only of words the import writes itself (a department
    called 'Ultrasound') are left out: they identify no one. A needle is 'alone' (a family name
    alone, see :class:`Identifiers`) unless it was also added as a full identifier."""

    def __init__(self, phi: set[str] | None = None):
        self.alone: dict[str, bool] = {}
        self._seen: set[tuple[str, bool]] = set()
        self._first: dict[str, set[str]] = {}
        self._toks: dict[str, tuple[str, ...]] = {}
        self._pat: dict[str, re.Pattern] = {}
        if phi is not None:
            self.update(phi)

    def __len__(self) -> int:
        return len(self.alone)

    def update(self, phi: set[str]) -> None:
        """Add the values of ``phi`` (and its ``names_alone``) not added yet."""
        self.add(phi, alone=False)
        self.add(getattr(phi, "names_alone", ()), alone=True)

    def add(self, values, alone: bool = False) -> None:
        own = _own_words()
        for v in values:
            if (v, alone) in self._seen:
                continue
            self._seen.add((v, alone))
            v = v.strip()
            if len(v) < 4 or (not re.search(r"[^\W\d_]", v) and len(v) < 6):
                continue
            for f in {fold(v), fold(v.translate(_TRANSLIT))}:
                toks = tuple(_TOKEN.findall(f))
                if not toks or (re.search(r"[^\W\d_]", f) and all(t in own for t in toks)):
                    continue
                self.alone[f] = self.alone.get(f, True) and alone
                self._toks[f] = toks
                self._first.setdefault(toks[0], set()).add(f)

    def find(self, text: str) -> list[str]:
        """The (folded) needles in ``text``."""
        t = fold(text)
        words = set(_TOKEN.findall(t))
        hits = []
        for w in words:
            for f in self._first.get(w, ()):
                if all(x in words for x in self._toks[f]) and self.pattern(f).search(t):
                    hits.append(f)
        return sorted(hits)

    def pattern(self, f: str) -> re.Pattern:
        if f not in self._pat:
            self._pat[f] = re.compile(r"(?<![^\W_])(?<!\.)" + re.escape(f) + r"(?![^\W_])")
        return self._pat[f]


def phi_self_check(folder: Path, phi: set[str], declared: dict[str, set[str]] | None = None,
                   sources: dict[str, str] | None = None) -> list[str]:
    """Problems: an identifier in an output text file (in cohort.csv, the column is named),
    or a PNG with chunks beyond pixels.

    ``declared``: cohort.csv column -> the values the mapping declares for it (folded); a cell
    equal to one is not a hit of a family name alone. ``sources``: cohort.csv column -> the
    spreadsheet column it comes from, named in the problem."""
    needles = Needles(phi)
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
        if p.suffix == ".csv":
            problems += _csv_hits(rel, text, needles, declared or {}, sources or {})
        elif needles.find(text):
            problems.append(f"{rel}: holds an identifier read from the export or the "
                            "spreadsheet (does the mapping map an identifying column?)")
    return problems


def _csv_hits(rel: str, text: str, needles: Needles, declared: dict[str, set[str]],
              sources: dict[str, str]) -> list[str]:
    """One problem per column of a CSV file holding an identifier (never the value)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header, problems = rows[0], []
    if needles.find(",".join(header)):
        problems.append(f"{rel}: its header holds an identifier read from the export or the "
                        "spreadsheet")
    for j, col in enumerate(header):
        ok = declared.get(col, set())
        for r in rows[1:]:
            cell = r[j] if j < len(r) else ""
            hits = [f for f in needles.find(cell) if not (needles.alone[f] and fold(cell) in ok)]
            if hits:
                src = f" (the spreadsheet's column '{sources[col]}')" if col in sources else ""
                problems.append(
                    f"{rel}, column '{col}'{src}: holds a person's name or another identifier "
                    "read from the export or the spreadsheet; remove that feature from the "
                    "mapping (a true category that equals a family name alone is accepted "
                    "once the mapping lists the column's values under 'values:')")
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
# what the import and its libraries print


PLACEHOLDER = "<identifier>"
_UID_LIKE = re.compile(r"(?<![\w.])\d+(?:\.[0-9A-Za-z_-]*){2,}")
_LONG_NUMBER = re.compile(r"(?<![^\W_])\d{6,}(?![^\W_])")
_QUOTED = re.compile(r"""(['"])(?:(?!\1).){1,300}\1""")


class Scrubber:
    """Replaces, in a text to be printed, every identifier of ``phi`` (as :class:`Needles`
    finds them) by ``<identifier>``, every UID-like string by ``<uid>`` and every run of 6
    digits or more by ``<number>``; in a library's text, also every quoted value by
    ``<value>``. ``phi`` may grow: what was added is searched from the next call on."""

    def __init__(self, phi: set[str]):
        self.phi = phi
        self.needles = Needles()
        self.replaced = 0

    def __call__(self, text: str, library: bool = False) -> str:
        self.needles.update(self.phi)
        out = text
        hits = self.needles.find(out)
        if hits:
            out = _deaccent(out)
            for f in sorted(hits, key=len, reverse=True):
                out = re.sub(r"(?<![^\W_])(?<!\.)" + re.escape(f) + r"(?![^\W_])",
                             PLACEHOLDER, out, flags=re.I)
            if self.needles.find(out):  # spelt with letters folding changes (ß): fold it all
                out = fold(out)
                for f in sorted(hits, key=len, reverse=True):
                    out = self.needles.pattern(f).sub(PLACEHOLDER, out)
        out = _UID_LIKE.sub("<uid>", out)
        out = _LONG_NUMBER.sub("<number>", out)
        if library:
            out = _QUOTED.sub("<value>", out)
        self.replaced += out != text
        return out


_GUARDS: list[OutputGuard] = []


class OutputGuard:
    """While active (``with OutputGuard(phi) as g:``), nothing a library prints reaches the
    terminal or a log handler as it is: Python warnings are recorded; the log records of every
    logger outside ``phyllodes`` are held (a filter on the logger that made them); what the
    libraries write to stdout/stderr during :func:`_library_call` is captured (file
    descriptors 1 and 2, and ``sys.stdout``/``sys.stderr``). The import's own log records are
    scrubbed (:class:`Scrubber`) when made. On exit, everything held is scrubbed with every
    identifier read by then, and logged once per distinct message with its count, followed by
    one line saying how many were held; an exception leaving the block is scrubbed too."""

    def __init__(self, phi: set[str]):
        self.scrub = Scrubber(phi)
        self.held: list[tuple[str, str, int, str]] = []  # (channel, source, level, raw text)
        self._filter = _HoldFilter(self)
        self._filtered: set[str] = set()
        self._capture = None
        self._capturing = False

    def __enter__(self) -> OutputGuard:
        self._warnings = warnings.catch_warnings(record=True)
        self._recorded = self._warnings.__enter__()
        warnings.simplefilter("always")
        self._factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(self._make_record)
        _GUARDS.append(self)
        return self

    def __exit__(self, et, e, tb) -> bool:
        logging.setLogRecordFactory(self._factory)
        for name in self._filtered:
            _logger(name).removeFilter(self._filter)
        self._warnings.__exit__(None, None, None)
        _GUARDS.remove(self)
        if self._capture is not None:
            self._capture.close()
        for w in self._recorded:
            kind = "" if w.category is UserWarning else f"{w.category.__name__}: "
            self.held.append(("warning", _package_of(w.filename), logging.WARNING,
                              f"{kind}{w.message}"))
        if e is not None:
            _scrub_exception(e, self.scrub)
        self._emit()
        return False

    def _make_record(self, *args, **kwargs) -> logging.LogRecord:
        rec = self._factory(*args, **kwargs)
        if rec.name == "phyllodes" or rec.name.startswith("phyllodes."):
            try:
                text = rec.getMessage()
            except (TypeError, ValueError):
                text = str(rec.msg)
            rec.msg, rec.args = self.scrub(text), ()
            if rec.exc_info:
                rec.exc_text = self.scrub(logging.Formatter().formatException(rec.exc_info))
                rec.exc_info = None
        elif rec.name not in self._filtered:  # held by the filter, when the logger handles it
            self._filtered.add(rec.name)
            _logger(rec.name).addFilter(self._filter)
        return rec

    def hold_output(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.held.append(("output", "stdout/stderr", logging.WARNING, line))

    def _emit(self) -> None:
        """Log each distinct held message once (scrubbed), then how many were held."""
        if not self.held:
            return
        seen: dict[tuple[str, str], dict] = {}
        for channel, source, level, raw in self.held:
            e = seen.setdefault((source, self.scrub(raw, library=True)),
                                {"level": level, "n": {}})
            e["level"] = max(e["level"], level)
            e["n"][channel] = e["n"].get(channel, 0) + 1
        for (source, text), e in seen.items():
            n = max(e["n"].values())  # pydicom both warns and logs each message
            log.log(e["level"], "%s: %s%s", source, text, f" ({n} times)" if n > 1 else "")
        per = {}
        for _, source, _, _ in self.held:
            per[source] = per.get(source, 0) + 1
        log.info("the libraries printed %d message(s) during the import (%s), held and shown "
                 "once each above, with identifiers, UIDs, long numbers and quoted values "
                 "replaced by %s, <uid>, <number> and <value>", len(self.held),
                 ", ".join(f"{k} {v}" for k, v in sorted(per.items())), PLACEHOLDER)

    @contextlib.contextmanager
    def capture(self):
        """Capture what is written to stdout/stderr (Python and file descriptors 1, 2)."""
        if self._capturing:
            yield
            return
        self._capturing = True
        out, err = io.StringIO(), io.StringIO()
        saved = []
        try:
            if self._capture is None:
                self._capture = tempfile.TemporaryFile()
            for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                if s is not None:
                    s.flush()
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(self._capture.fileno(), fd)
        except (OSError, ValueError, AttributeError):
            pass  # no file descriptors to capture (an embedded interpreter): Python's only
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield
        finally:
            for fd, old in saved:
                with contextlib.suppress(OSError):
                    os.dup2(old, fd)
                    os.close(old)
            self._capturing = False
            text = out.getvalue() + err.getvalue()
            if saved:
                self._capture.seek(0)
                text += self._capture.read().decode("utf-8", errors="replace")
                self._capture.seek(0)
                self._capture.truncate()
            self.hold_output(text)


def _logger(name: str) -> logging.Logger:
    return logging.getLogger(None if name == "root" else name)


class _HoldFilter(logging.Filter):
    """Holds a library's log record in its :class:`OutputGuard` instead of letting it on."""

    def __init__(self, guard: OutputGuard):
        super().__init__()
        self.guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.guard.held.append(("log", record.name.split(".")[0], record.levelno, text))
        return False


@contextlib.contextmanager
def _library_call():
    """Around a call into pydicom, Pillow, ...: what they print is held by the active
    :class:`OutputGuard`; without one, their warnings are silenced."""
    if _GUARDS:
        with _GUARDS[-1].capture():
            yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _package_of(filename: str) -> str:
    """The top-level package of a source file ('pydicom' for .../site-packages/pydicom/x.py)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return Path(parts[parts.index(marker) + 1]).stem
    return Path(filename).stem or "python"


def _scrub_exception(e: BaseException, scrub: Scrubber) -> None:
    """Scrub the text of an exception (and of those it was raised from) in place."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        library = not isinstance(e, DicomImportError)
        if isinstance(e, DicomImportError):
            e.problems = [scrub(p) for p in e.problems]
        e.args = tuple(scrub(a, library) if isinstance(a, str) else a for a in e.args)
        for attr in ("filename", "filename2"):
            if isinstance(getattr(e, attr, None), str):
                setattr(e, attr, scrub(getattr(e, attr), library))
        e = e.__cause__ or e.__context__


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
    #: what :meth:`text` passes its lines through: the import's :class:`Scrubber`
    scrub: Any = field(default=None, repr=False)

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
        """The summary printed on stdout: counts, skips, the images to review, the spreadsheet
        rows merged, excluded or without an image, the contract (no identifier)."""
        s = self.summary
        c = s["counts"]
        lines = [f"imported {c['images_written']} image(s) of {c['subjects_written']} "
                 f"subject(s) from {c['files_imported']} of {c['files_found']} file(s) into "
                 f"{self.out}"]
        for k, v in sorted(s["skipped"].items()):
            lines.append(f"  skipped {v['count']:>4}  {k}: {v['description']}")
        for k in MAY_CARRY_TEXT:
            n = s["flags"].get(k, {}).get("count", 0)
            if n:
                lines.append(f"  flagged {n:>4}  {k}: {FLAGS[k]}")
        lines += _review_lines(s, self.details_path)
        lines += _sheet_lines(s)
        if not self.passes_contract:
            probs = s["contract"]["problems"]
            lines.append(f"  NOT VALID: the cohort does not pass the data contract "
                         f"({len(probs)} problem(s)), e.g. {probs[0]}")
        lines.append(f"report: {self.out / 'import_report.md'}; private (paths, ids): "
                     f"{self.details_path}, {self.ids_path}")
        text = "\n".join(lines)
        return self.scrub(text) if self.scrub is not None else text


def _review_lines(s: dict, details: Path, most: int = 20) -> list[str]:
    """One line per image refused or flagged for review (file id, region, what is wrong)."""
    items = []
    for k in REVIEW_REASONS:
        for f in s["skipped"].get(k, {}).get("files", []):
            items.append(f"refused {f}")
    for k in ("region_clamped", "region_over_text_band"):
        for f, note in s["flags"].get(k, {}).get("details", {}).items():
            items.append(f"imported, flagged {k}: {f} ({note})")
    if not items:
        return []
    out = [f"  REVIEW {len(items)} image(s) by eye (the file paths are under 'review' in "
           f"{details}):"]
    out += [f"    {x}" for x in items[:most]]
    if len(items) > most:
        out.append(f"    ... and {len(items) - most} more in import_report.md")
    if any(x.startswith("refused") for x in items):
        out.append("    fix: check the export (a region recorded for another image size, or "
                   "a region taking in the text band); to import them anyway, clamped and "
                   "flagged, pass --allow-unsafe-regions")
    return out


def _sheet_lines(s: dict, most: int = 10) -> list[str]:
    """Lines on the spreadsheet's duplicate rows and its patients without an image."""
    out = []
    dup = s["spreadsheet_duplicate_rows"]
    if dup:
        out.append(f"  spreadsheet: {len(dup)} patient(s) with several rows:")
        for e in dup[:most]:
            who = f" ({e['subject']})" if e.get("subject") else ""
            what = ("merged: they agree" if e["result"] == "merged" else
                    "excluded: they disagree on " + ", ".join(e["disagree_on"]))
            out.append(f"    {e['rows_text']}{who}: {what}")
        if len(dup) > most:
            out.append(f"    ... and {len(dup) - most} more in import_report.md")
    alone = s["spreadsheet_rows_without_ultrasound"]
    if alone:
        out.append(f"  spreadsheet: {len(alone)} patient(s) without an ultrasound file, not "
                   "imported: " + ", ".join(
                       (f"{e['subject']} ({e['rows_text']})" if e.get("subject")
                        else e["rows_text"]) for e in alone[:most])
                   + (f" and {len(alone) - most} more" if len(alone) > most else ""))
    return out


def import_dicom(source: Path | str, clinical: Path | str, out: Path | str,
                 mapping: Path | str | None = None, key_file: Path | str | None = None,
                 frames: str = "middle", join: str | None = None, name: str | None = None,
                 without_region: str = "crop", allow_burned_in_without_region: bool = False,
                 overwrite: bool = False, allow_unsafe_regions: bool = False) -> ImportReport:
    """Import a DICOM export and its clinical spreadsheet into the cohort folder ``out``.

    ``mapping``: the YAML column mapping (:func:`write_mapping_template` writes one).
    ``key_file``: the pseudonym key (default ``~/.config/phyllodes/<name>.key``, made when
    missing); the pseudonym table and the detailed report are written beside it.
    ``frames``: frames kept of a cine clip (middle, first, all, every:K).
    ``join``: patient_id or accession (default: the mapping's, else patient_id).
    ``without_region``: crop (largest bright area, flagged), full (flagged) or skip, for
    files without a Sequence of Ultrasound Regions.
    ``allow_unsafe_regions``: import (clamped, flagged) the images whose region extends
    outside the image or overlaps the burned-in text band, instead of refusing them.

    While it runs, what libraries print is held and shown scrubbed (:class:`OutputGuard`).
    """
    source, clinical, out = Path(source), Path(clinical), Path(out)
    name = name or out.name
    parse_frames(frames)
    key_file = Path(key_file) if key_file else default_key_file(name)
    _check_arguments(source, clinical, out, mapping, without_region, name, overwrite,
                     key_file)
    private = key_file.parent
    ids_path, details_path = private / f"{name}.ids.csv", private / f"{name}.import-details.json"
    phi = Identifiers()
    with OutputGuard(phi) as guard:
        m = read_mapping(mapping)
        join = join or m.join or "patient_id"
        if join not in ("patient_id", "accession"):
            raise DicomImportError("cannot import", [
                f"--join {join!r}: use patient_id or accession"])
        sheet = read_spreadsheet(clinical, m.sheet)
        rows, n_rows_no_id = clinical_rows(sheet, m, clinical, join)
        _phi_from_sheet(sheet, m, phi)
        key = load_or_create_key(key_file)
        opts = {"join": join, "frames": frames, "without_region": without_region,
                "allow_burned_in": allow_burned_in_without_region,
                "allow_unsafe_regions": allow_unsafe_regions}
        summary = _import_into(source, clinical, out, m, rows, n_rows_no_id, key, opts, phi,
                               name, ids_path, details_path)
        report = ImportReport(out=out, name=name, summary=summary, ids_path=ids_path,
                              details_path=details_path, key_file=key_file, scrub=guard.scrub)
        log.info("%s", report.text().splitlines()[0])
        if not report.passes_contract:
            log.warning("the cohort was written but does not pass the data contract:\n%s",
                        "\n".join(f"  - {p}" for p in summary["contract"]["problems"]))
    return report


def _check_arguments(source: Path, clinical: Path, out: Path, mapping, without_region: str,
                     name: str, overwrite: bool, key_file: Path) -> None:
    """Refuse (one :class:`DicomImportError` listing every reason) what cannot be imported."""
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
    private = key_file.parent
    for what, pth in (("the key file", key_file),
                      ("the pseudonym table", private / f"{name}.ids.csv"),
                      ("the detailed report", private / f"{name}.import-details.json")):
        problems += check_private_path(pth, out, what)
    if problems:
        raise DicomImportError("cannot import", problems)


def _import_into(source: Path, clinical: Path, out: Path, m: ColumnMapping, rows, n_rows_no_id,
                 key: bytes, opts: dict, phi: set[str], name: str, ids_path: Path,
                 details_path: Path) -> dict:
    """Import into a staging folder beside ``out``, write the private files, self-check, move
    the staging folder into place; the summary."""
    staging = out.parent / f".{out.name}.importing"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images" / ".tmp").mkdir(parents=True)
    try:
        summary, private_details, ids_rows = _run(source, staging, m, rows, n_rows_no_id, key,
                                                  opts, phi, name)
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
        bad = phi_self_check(staging, phi, *_declared_values(m))
        if bad:
            raise DicomImportError("the self-check found identifiers in the output; nothing "
                                   "was written to " + str(out), bad)
        _move_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return summary


def _declared_values(m: ColumnMapping) -> tuple[dict[str, set[str]], dict[str, str]]:
    """For the self-check: cohort column -> the values the mapping declares for it (folded),
    and cohort column -> the spreadsheet column it comes from."""
    declared = {f.name: {fold(v) for v in f.values.values() if v}
                for f in m.features if f.values}
    sources = {f.name: f.column for f in m.features if f.column}
    sources["label"] = m.label_column
    return declared, sources


def _move_into_place(staging: Path, out: Path) -> None:
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
    """The spreadsheet's identifiers: the id column and identifier-like columns (person names
    in their spellings), every date, and in any column a cell written like a person's name
    ('Dr Smith', 'J. Smith', 'Smith, John': it and its words) or a contact."""
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
            if _PERSON_RE.search(c) and c not in m.id_columns:
                for v in vals:
                    add_person_name(phi, v)
        for v in set(df[c]):
            if not v:
                continue
            if _DATE_LIKE.match(v) or re.fullmatch(r"(19|20)\d{6}", v):
                _add_date(phi, v)
            elif c not in m.id_columns and c != m.label_column and (
                    person_name_like(v, strong_only=True) or contact_like(v)):
                phi.add(v)
                if not contact_like(v):
                    phi.update(w for w in name_words(v) if len(w) >= 3)


def _add_date(phi: set[str], v: str) -> None:
    """A date cell, as written and in the spellings of each reading of it."""
    for fmt in (None, "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%m-%d-%Y"):
        d = parse_date(v, fmt)
        if d:
            phi.update(date_spellings(d))
    phi.add(v)


def _run(source: Path, staging: Path, m: ColumnMapping, rows: dict[str, list[ClinicalRow]],
         n_rows_no_id: int, key: bytes, opts: dict, phi: set[str], name: str):
    """Every step of the import into ``staging``; the summary, private details and id table."""
    join = opts["join"]
    paths = sorted((p for p in source.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(source).as_posix())
    files = [SourceFile(file_id=f"F{i + 1:05d}", rel=p.relative_to(source).as_posix())
             for i, p in enumerate(paths)]
    log.info("reading %d file(s) under %s", len(files), source)
    _read_headers(paths, files, phi, key, join, opts["without_region"], opts["allow_burned_in"])
    patient_clin = _join_clinical(files, rows, m, join)
    n_frames_decoded = _decode_all(paths, files, staging / "images" / ".tmp", join,
                                   opts["frames"], opts["without_region"],
                                   opts["allow_unsafe_regions"])
    table, images_meta, n_dup_frames = _name_images(files, patient_clin, staging)
    (staging / "images" / ".tmp").rmdir()
    cols = ["subject_id", "image_path", "label", "pixel_size_mm_x", "pixel_size_mm_y",
            *(f.name for f in m.features)]
    pd.DataFrame(table, columns=cols).to_csv(staging / "cohort.csv", index=False,
                                             lineterminator="\n")
    (staging / "cohort.yaml").write_text(
        _cohort_yaml(name, m, opts["frames"], opts["without_region"]), encoding="utf-8")
    contract = contract_problems(staging) if table else ["no image imported"]
    written = sorted({r["subject_id"] for r in table})
    sheet = _sheet_report(files, rows, m, key, join)
    summary = _summary(files, table, images_meta, _not_imported(files, written), sheet, opts,
                       {"frames_decoded": n_frames_decoded,
                        "frames_dropped_as_duplicates": n_dup_frames,
                        "subjects_written": len(written)}, rows, n_rows_no_id, m, phi)
    summary["contract"] = {"passed": not contract, "problems": contract}
    (staging / "import_report.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8")
    (staging / "import_report.md").write_text(_report_md(name, summary), encoding="utf-8")
    return summary, _private_details(files, rows, sheet, key), _id_table(files, set(written))


def _not_imported(files: list[SourceFile], written: list[str]) -> list[dict]:
    """The patients of the export with no image in the cohort, and why."""
    of_subject: dict[str, list[SourceFile]] = {}
    for sf in files:
        if sf.subject:
            of_subject.setdefault(sf.subject, []).append(sf)
    return [{"subject": subj, "reasons": sorted({sf.reason for sf in of_subject[subj]}),
             "files": [sf.file_id for sf in of_subject[subj]]}
            for subj in sorted(set(of_subject) - set(written))]


def _sheet_report(files: list[SourceFile], rows: dict[str, list[ClinicalRow]],
                  m: ColumnMapping, key: bytes, join: str) -> dict:
    """The spreadsheet's patients without an ultrasound file and its duplicate rows, by row
    number and pseudonym (the private ``keys`` too, for the detailed report)."""
    dicom_keys = {sf.key for sf in files if sf.key and sf.us_image} if join == "patient_id" \
        else {sf.accession for sf in files if sf.accession and sf.us_image}
    subject_of = {(sf.key if join == "patient_id" else sf.accession): sf.subject
                  for sf in files if sf.subject}

    def who(k: str) -> str:
        return pseudonym(key, k) if join == "patient_id" else subject_of.get(k, "")

    without = sorted((k for k in rows if k not in dicom_keys), key=lambda k: rows[k][0].line)
    alone = [{"subject": who(k), "rows": sorted(r.line for r in rows[k]),
              "rows_text": rows_text([r.line for r in rows[k]], rows[k][0].unit)}
             for k in without]
    dups = duplicate_rows(rows, m)
    for e in dups:
        e["subject"] = who(e["key"])
        e["rows_text"] = rows_text(e["rows"], e.pop("unit"))
    return {"ids_without": sorted(without), "without": alone,
            "duplicates": [{k: v for k, v in e.items() if k != "key"} for e in dups],
            "duplicate_keys": [e["key"] for e in dups]}


def _private_details(files: list[SourceFile], rows: dict[str, list[ClinicalRow]], sheet: dict,
                     key: bytes) -> dict:
    """The detailed report (private: paths, ids, error messages)."""
    review = [{"file": sf.file_id, "path": sf.rel, "problem": sf.detail}
              for sf in files if sf.reason in REVIEW_REASONS]
    review += [{"file": sf.file_id, "path": sf.rel, "problem": note, "imported": True}
               for sf in files if sf.status == "imported" for note in sf.notes.values()]
    return {"files": [{"file": sf.file_id, "path": sf.rel, "status": sf.status,
                       "reason": sf.reason, "detail": sf.detail, "error": sf.error,
                       "subject": sf.subject, "patient_id": sf.raw_id, "flags": sf.flags,
                       "images": [im.get("image_path", "") for im in sf.images]}
                      for sf in files],
            "review": review,
            "spreadsheet_ids_without_ultrasound": [
                {"lines": [r.line for r in rows[k]], "id": rows[k][0].raw_id}
                for k in sheet["ids_without"]],
            "spreadsheet_duplicate_rows": [
                {"lines": [r.line for r in rows[k]], "id": rows[k][0].raw_id}
                for k in sheet["duplicate_keys"]],
            "key_sha256_prefix": hashlib.sha256(key).hexdigest()[:12]}


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
            detail = "" if reason != "conflicting_clinical_rows" else (
                f"spreadsheet {rows_text([r.line for r in matched], matched[0].unit)} "
                "disagree on " + ", ".join(disagreement(matched, m)))
            for sf in live:
                sf.skip(reason, detail)
            continue
        out[pkey] = (label, values)
    return out


def _decode_all(paths: list[Path], files: list[SourceFile], tmp: Path, join: str, frames: str,
                without_region: str, allow_unsafe_regions: bool = False) -> int:
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
            with _library_call():
                kept = _decode_frames(ds, sf, frames, without_region, allow_unsafe_regions)
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


def _summary(files, table, images_meta, not_imported, sheet, opts, steps, rows, n_rows_no_id,
             m, phi) -> dict:
    """The PHI-free summary written as import_report.json (and .md, and printed)."""
    import pydicom
    skipped, flags = _skips_and_flags(files)
    labels: dict[str, dict] = {}
    for r in table:
        e = labels.setdefault(r["label"], {"subjects": set(), "images": 0})
        e["subjects"].add(r["subject_id"])
        e["images"] += 1
    counts = {
        "files_found": len(files),
        "dicom_files": sum(1 for sf in files if sf.reason not in ("not_dicom", "read_error")),
        "ultrasound_files_with_pixels": sum(1 for sf in files if sf.us_image),
        "files_imported": sum(1 for sf in files if sf.status == "imported"),
        "files_skipped": sum(1 for sf in files if sf.status == "skipped"),
        "frames_decoded": steps["frames_decoded"],
        "frames_dropped_as_duplicates": steps["frames_dropped_as_duplicates"],
        "images_written": len(table),
        "patients_in_export": len({sf.key for sf in files if sf.key}),
        "patients_not_imported": len(not_imported),
        "subjects_written": steps["subjects_written"],
        "spreadsheet_rows": sum(len(v) for v in rows.values()) + n_rows_no_id,
        "spreadsheet_rows_without_id": n_rows_no_id,
        "spreadsheet_ids_without_ultrasound": len(sheet["without"]),
        "spreadsheet_patients_with_several_rows": len(sheet["duplicates"]),
    }
    assert counts["files_imported"] + counts["files_skipped"] == counts["files_found"]
    join = opts["join"]
    return {
        "tool": "phyllodes.data.sources.dicom",
        "pydicom": pydicom.__version__,
        "options": _options(opts, m),
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
            sorted(e["subject"] for e in sheet["without"]) if join == "patient_id"
            else f"{len(sheet['without'])} accession number(s); listed in the private report"),
        "spreadsheet_rows_without_ultrasound": sheet["without"],
        "spreadsheet_duplicate_rows": sheet["duplicates"],
        "tags_read": {"used": {k: v for k, v in TAGS_USED.items()},
                      "read_only_to_check_the_output": list(TAGS_CHECKED)},
        "self_check": {"identifiers_searched": len(Needles(phi)),
                       "result": "no identifier found in any output file; PNGs hold pixels "
                                 "only"},
    }


def _skips_and_flags(files: list[SourceFile]) -> tuple[dict, dict]:
    """The skipped files by reason (with their detail) and the imported ones by flag."""
    skipped: dict[str, dict] = {}
    flags: dict[str, dict] = {}
    for sf in files:
        if sf.status == "skipped":
            e = skipped.setdefault(sf.reason, {"description": SKIP_REASONS[sf.reason],
                                               "count": 0, "files": []})
            e["count"] += 1
            e["files"].append(sf.file_id if not sf.detail else f"{sf.file_id} ({sf.detail})")
        if sf.status != "imported":
            continue
        for f in sf.flags:
            e = flags.setdefault(f, {"description": FLAGS[f], "count": 0, "files": []})
            e["count"] += 1
            e["files"].append(sf.file_id)
            if f in sf.notes:
                e.setdefault("details", {})[sf.file_id] = sf.notes[f]
    return skipped, flags


def _options(opts: dict, m: ColumnMapping) -> dict:
    return {"frames": opts["frames"], "join": opts["join"],
            "without_region": opts["without_region"],
            "allow_burned_in_without_region": bool(opts["allow_burned_in"]),
            "allow_unsafe_regions": bool(opts["allow_unsafe_regions"]),
            "subject_id": f"{SUBJECT_PREFIX} + the first {SUBJECT_HEX} hex digits of "
                          "HMAC-SHA256(key, 'phyllodes-subject' + NUL byte + normalised "
                          "PatientID in UTF-8)",
            "mapping": {"positive_labels": list(m.positive_labels),
                        "negative_labels": list(m.negative_labels),
                        "numeric": [f.name for f in m.features if f.kind == "numeric"],
                        "categorical": [f.name for f in m.features
                                        if f.kind == "categorical" and f.reference is None],
                        "references": [f.name for f in m.features if f.reference is not None],
                        "ages_from_dates": [f.name for f in m.features if f.from_dates]}}


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
         f"`{o['allow_burned_in_without_region']}`, allow unsafe regions "
         f"`{o['allow_unsafe_regions']}`. Subject ids: {o['subject_id']}.", "",
         "## Counts", "", "| step | count |", "| --- | ---: |"]
    L += [f"| {k.replace('_', ' ')} | {v} |" for k, v in c.items()]
    L += ["", "## Labels", "", "| label | subjects | images |", "| --- | ---: | ---: |"]
    L += [f"| {k} | {v['subjects']} | {v['images']} |" for k, v in s["labels"].items()]
    L += _md_files(s) + _md_review(s) + _md_patients(s) + _md_sheet(s)
    L += ["", "## DICOM tags read", "", "| tag | why |", "| --- | --- |"]
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


def _md_files(s: dict) -> list[str]:
    L = ["", "## Skipped files", ""]
    if not s["skipped"]:
        L.append("None.")
    for k, v in s["skipped"].items():
        L += [f"- **{k}** ({v['count']}): {v['description']}. Files: " + ", ".join(v["files"])]
    L += ["", "## Flags on imported files", ""]
    if not s["flags"]:
        L.append("None.")
    for k, v in s["flags"].items():
        files = [f"{f} ({v['details'][f]})" if f in v.get("details", {}) else f
                 for f in v["files"]]
        L += [f"- **{k}** ({v['count']}): {v['description']}. Files: " + ", ".join(files)]
    return L


def _md_review(s: dict) -> list[str]:
    L = ["", "## Images to review", "",
         "Refused (not imported) because their ultrasound region extends outside the image or "
         "overlaps the burned-in text band, or imported with such a region by "
         "`--allow-unsafe-regions`. Look at each by eye (its path is under `review` in the "
         "private detailed report); fix the export, or import them with "
         "`--allow-unsafe-regions` once you have checked them.", ""]
    items = [f"- refused {f}" for k in REVIEW_REASONS
             for f in s["skipped"].get(k, {}).get("files", [])]
    items += [f"- imported, flagged `{k}`: {f} ({note})"
              for k in ("region_clamped", "region_over_text_band")
              for f, note in s["flags"].get(k, {}).get("details", {}).items()]
    L += items or ["None."]
    L += ["", "## Files that may carry text inside the kept image", "",
          "Cropping removes what lies outside the ultrasound region; it cannot remove text "
          "burned into the scan itself. Check these images by eye before sharing anything "
          "derived from them: " + (", ".join(s["may_carry_text_in_scan_region"]) or "none") +
          "."]
    return L


def _md_patients(s: dict) -> list[str]:
    L = ["", "## Patients not imported", ""]
    if not s["patients_not_imported"]:
        L.append("None.")
    for e in s["patients_not_imported"]:
        L.append(f"- {e['subject']}: " + "; ".join(f"{r} ({SKIP_REASONS[r]})"
                                                    for r in e["reasons"])
                 + f". Files: {', '.join(e['files'])}")
    return L


def _md_sheet(s: dict) -> list[str]:
    L = ["", "## Spreadsheet ids without an ultrasound file", ""]
    alone = s["spreadsheet_rows_without_ultrasound"]
    L += [f"- {e['subject'] + ': ' if e['subject'] else ''}spreadsheet {e['rows_text']}"
          for e in alone] or ["None."]
    L += ["", "## Spreadsheet rows of one patient", "",
          "Rows that agree are merged (a value missing in one row is taken from another); rows "
          "that disagree on the label or a feature exclude the patient "
          "(`conflicting_clinical_rows`): correct the spreadsheet and import again.", ""]
    L += [f"- {e['rows_text']}" + (f" ({e['subject']})" if e["subject"] else "") + ": "
          + ("merged, they agree" if e["result"] == "merged"
             else "excluded, they disagree on " + ", ".join(e["disagree_on"]))
          for e in s["spreadsheet_duplicate_rows"]] or ["None."]
    return L


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
    p.add_argument("--allow-unsafe-regions", action="store_true",
                   help="import, clamped and flagged for review, the images whose ultrasound "
                        "region extends outside the image or overlaps the burned-in text band "
                        "(default: refused, listed for review)")
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
                              overwrite=a.overwrite,
                              allow_unsafe_regions=a.allow_unsafe_regions)
    except (DicomImportError, FileExistsError, ValueError) as e:
        print(f"import-dicom: {e}", file=sys.stderr)
        return 1
    print(report.text())
    return 0 if report.passes_contract else 2


if __name__ == "__main__":
    sys.exit(main())
