"""Reading DICOM headers: the tags used, the ultrasound regions, what a file is."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from phyllodes.data.sources.dicom.guard import library_call
from phyllodes.data.sources.dicom.identifiers import add_person_name, date_spellings
from phyllodes.data.sources.dicom.pseudonyms import normalise_id
from phyllodes.data.sources.dicom.vocabulary import (
    DICOMDIR_CLASS,
    OVERLAY_GROUPS,
    TAGS_CHECKED,
    TAGS_USED,
    US_SOP_CLASSES,
)


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

def read_header(path: Path, sf: SourceFile, phi: set[str], join: str, keep_pixels: bool):
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
    with library_call():
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
    """Fill ``sf`` from a header read by :func:`read_header`; the dataset, or None if skipped."""
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
