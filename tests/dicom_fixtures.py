"""Synthetic hospital DICOM exports with planted identifiers, for tests/test_dicom.py.

Every identifying string planted (in tags, in folder names, in the clinical spreadsheet and as
text burned into the pixels around the scan) is returned by :func:`all_phi`. Scan pixels stay in
[30, 200]; burned-in text is 255, so an output pixel >= 250 means text got through.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
MPEG4 = "1.2.840.10008.1.2.4.102"
ROWS, COLS = 128, 192
#: The tissue region: RegionLocationMinX0, MinY0, MaxX1, MaxY1 (inclusive, as in DICOM).
REGION = (40, 24, 167, 119)
INSTITUTION = "Saint Quibblewick Infirmary"
STATION = "USROOM-QX7"

#: Identifying strings shared by every patient (see :func:`all_phi` for all of them).
PHI: set[str] = {INSTITUTION, STATION, "Quibblewick", "Drummondville^Ottoline",
                 "Drummondville", "Ottoline", "Farquharson^Bede", "Farquharson",
                 "SN-QQ-881234", "Vexleigh", "Ormand", "MRN-5550999", "ACC-5550999"}


@dataclass
class Patient:
    """One planted patient: identifiers and the values the spreadsheet gives."""

    family: str
    given: str
    mrn: str
    accession: str
    birth: str  # YYYYMMDD
    study: str  # YYYYMMDD
    label: str | None  # spreadsheet Pathology (None: absent from the spreadsheet)
    bmi: str = "27.5"
    size_cm: str = "2.4"
    race: str = "White"
    meno: str = "Pre"
    uids: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.family}^{self.given}"

    def phi(self) -> set[str]:
        b, s = self.birth, self.study
        dates = set()
        for d in (b, s):
            y, m, dd = d[:4], d[4:6], d[6:]
            dates |= {d, f"{y}-{m}-{dd}", f"{m}/{dd}/{y}", f"{dd}/{m}/{y}", f"{dd}.{m}.{y}"}
        return {self.family, self.given, self.name, f"{self.given} {self.family}", self.mrn,
                self.accession, *dates, *self.uids}


PATIENTS = {
    "p1": Patient("Zyxwort", "Quilla", "MRN-7730012", "ACC-99001", "19710523", "20190314",
                  "Benign"),
    "p2": Patient("Brackenholt", "Eudora", "MRN-7730013", "ACC-99002", "19650102", "20200611",
                  "Malignant", bmi="31.2", size_cm="5.1", race="Black", meno="Post"),
    "p3": Patient("Quennevais", "Phyllida", "MRN-7730014", "ACC-99003", "19800817", "20210205",
                  "Benign", bmi="22.0", size_cm="1.8", race="Asian"),
    "p4": Patient("Thistlewaite", "Marigold", "MRN-7730015", "ACC-99004", "19590930",
                  "20181120", "Borderline", bmi="29.9", size_cm="4.0", meno="Post"),
    "p5": Patient("Oakenshaw", "Rosalind", "00482231", "ACC-99005", "19751211", "20220301",
                  "Benign", bmi="NA", size_cm="2.0"),
    "p6": Patient("Pemberthy", "Imelda", "MRN-7730017", "ACC-99006", "19621003", "20190707",
                  "Malignant", bmi="33.1", size_cm="6.2", race="Hispanic", meno="Post"),
    "p7": Patient("Yarborough", "Cressida", "MRN-7730018", "ACC-99007", "19880404",
                  "20230115", "Benign", bmi="24.4", size_cm="1.1"),
    "p8": Patient("Ashcombe", "Wilhelmina", "MRN-7730019", "ACC-99008", "19700707", "20200202",
                  "Benign"),
    "p9": Patient("Marchbanks", "Ondine", "MRN-7730020", "ACC-99009", "19690909", "20210909",
                  "Benign"),
    "p10": Patient("Fairweather", "Clemency", "MRN-7730021", "ACC-99010", "19781111",
                   "20201111", None),
    "p11": Patient("Goldthorpe", "Perpetua", "MRN-7730022", "ACC-99011", "19850606",
                   "20220606", "Benign", bmi="25.0", size_cm="1.5"),
    "p12": Patient("Ravensworth", "Isolde", "MRN-7730023", "ACC-99012", "19601212",
                   "20191212", "Malignant", bmi="30.0", size_cm="4.4", meno="Post"),
    "p13": Patient("Winterbourne", "Seraphina", "MRN-7730024", "ACC-99013", "19730303",
                   "20200303", "Pending"),
}


def all_phi() -> set[str]:
    """Every identifying string the export carries, UIDs of the files written so far included."""
    out = set(PHI)
    for p in PATIENTS.values():
        out |= p.phi()
    return out


def scan(rng: np.random.Generator, h: int, w: int, lo: int = 30, hi: int = 200) -> np.ndarray:
    """Speckle-like scan content in [lo, hi]."""
    return rng.integers(lo, hi + 1, (h, w), dtype=np.int64).astype(np.uint8)


def burn_text(img: np.ndarray, p: Patient, value: int = 255) -> None:
    """Burn the patient's name, MRN and the institution into the frame, outside the region."""
    pil = Image.fromarray(np.zeros(img.shape[:2], np.uint8))
    d = ImageDraw.Draw(pil)
    d.text((2, 2), f"{p.family.upper()} {p.given.upper()}", fill=255)
    d.text((110, 2), p.mrn, fill=255)
    d.text((2, 100), "QBW", fill=255)
    d.rectangle((2, 40, 30, 60), outline=255)  # a body marker
    mask = np.asarray(pil) > 0
    assert not mask[REGION[1]:REGION[3] + 1, REGION[0]:REGION[2] + 1].any()
    img[mask] = value


def frame_with_scan(rng: np.random.Generator, p: Patient, text: bool = True) -> np.ndarray:
    """A ROWS x COLS frame: black, the scan inside REGION, burned-in text around it."""
    img = np.zeros((ROWS, COLS), np.uint8)
    x0, y0, x1, y1 = REGION
    img[y0:y1 + 1, x0:x1 + 1] = scan(rng, y1 - y0 + 1, x1 - x0 + 1)
    if text:
        burn_text(img, p)
    return img


def region_item(box=REGION, delta_cm=(0.0125, 0.0125), units=(3, 3), spatial=1, data_type=1
                ) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat = spatial
    r.RegionDataType = data_type
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, \
        r.RegionLocationMaxY1 = box
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = delta_cm
    return r


def base_dataset(p: Patient, *, sop_class: str = US_IMAGE, modality: str = "US",
                 series: int = 1, instance: int = 1) -> Dataset:
    """A header full of identifiers (the pixels are added by the caller)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    uid = generate_uid()
    p.uids.append(uid)
    study_uid = generate_uid()
    p.uids.append(study_uid)
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = p.name, p.mrn
    ds.PatientBirthDate, ds.PatientSex = p.birth, "F"
    ds.AccessionNumber = p.accession
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = p.study
    ds.StudyTime = "101500"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionalDepartmentName = "Ultrasound"  # a word the report uses: not an identifier
    ds.ReferringPhysicianName = "Drummondville^Ottoline"
    ds.OperatorsName = "Farquharson^Bede"
    ds.StationName = STATION
    ds.DeviceSerialNumber = "SN-QQ-881234"
    ds.StudyID = "STQ" + p.mrn[-5:]
    ds.SeriesNumber, ds.InstanceNumber = series, instance
    ds.StudyDescription = "US BREAST"
    return ds


def set_mono(ds: Dataset, pixels: np.ndarray, bits: int = 8, photometric: str = "MONOCHROME2"
             ) -> None:
    """Native monochrome pixels (one frame HxW or frames NxHxW)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.PixelData = pixels.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()


def set_color(ds: Dataset, rgb: np.ndarray, photometric: str = "RGB") -> None:
    """Native colour pixels (RGB, YBR_FULL or YBR_FULL_422 as stored)."""
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if photometric == "RGB":
        ds.PixelData = rgb.astype(np.uint8).tobytes()
        return
    ybr = convert_color_space(rgb.astype(np.uint8), "RGB", "YBR_FULL")
    if photometric == "YBR_FULL":
        ds.PixelData = ybr.tobytes()
        return
    h, w = ybr.shape[:2]  # YBR_FULL_422: Y1 Y2 Cb Cr for each pair of pixels
    y = ybr[..., 0].reshape(h, w // 2, 2)
    cb = ybr[..., 1].reshape(h, w // 2, 2).mean(-1).round().astype(np.uint8)
    cr = ybr[..., 2].reshape(h, w // 2, 2).mean(-1).round().astype(np.uint8)
    ds.PixelData = np.stack([y[..., 0], y[..., 1], cb, cr], -1).tobytes()


def color_frame(p: Patient, blue: int) -> np.ndarray:
    """A smooth colour scan (luma in [30, 200]) inside REGION, white text outside."""
    img = np.zeros((ROWS, COLS, 3), np.uint8)
    x0, y0, x1, y1 = REGION
    yy, xx = np.mgrid[0:y1 - y0 + 1, 0:x1 - x0 + 1]
    img[y0:y1 + 1, x0:x1 + 1, 0] = 60 + xx  # red ramp 60..187
    img[y0:y1 + 1, x0:x1 + 1, 1] = 50 + yy  # green ramp 50..145
    img[y0:y1 + 1, x0:x1 + 1, 2] = blue
    text = np.zeros((ROWS, COLS), np.uint8)
    burn_text(text, p)
    img[text == 255] = 255
    return img


def luma(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def folder(root: Path, p: Patient) -> Path:
    """An export folder named, as PACS exports often are, after the patient."""
    return root / f"{p.family}_{p.given}_{p.mrn}"


def make_export(root: Path, seed: int = 0) -> dict:
    """Write the synthetic export under ``root``; return what the import must produce.

    Keys of the result: ``expected`` (file name -> expected crop array, pixel sizes and
    flags), ``skipped`` (file name -> expected skip reason).
    """
    rng = np.random.default_rng(seed)
    P = PATIENTS
    exp: dict[str, dict] = {}
    skipped: dict[str, str] = {}

    # p1: a single MONOCHROME2 frame, BurnedInAnnotation YES, region; and a cine clip with an
    # overlay plane (two files of one patient)
    p = P["p1"]
    img = frame_with_scan(rng, p)
    ds = base_dataset(p, instance=1)
    ds.BurnedInAnnotation = "YES"
    ds.SequenceOfUltrasoundRegions = [region_item()]
    set_mono(ds, img)
    f = save(ds, folder(root, p) / "IM0001.dcm")
    exp[f.name] = {"patient": "p1", "gray": _crop(img), "mm": ("0.125", "0.125"),
                           "order": 1}
    frames = np.stack([frame_with_scan(rng, p) for _ in range(5)])
    ds = base_dataset(p, sop_class=US_MULTIFRAME, series=2, instance=1)
    ds.BurnedInAnnotation = "NO"
    ds.SequenceOfUltrasoundRegions = [region_item(delta_cm=(0.0083, 0.0091))]
    set_mono(ds, frames)
    ov = np.zeros((ROWS, COLS), np.uint8)
    ov[30:100, 50:150] = 1  # an overlay over the scan: must not be burned in
    ds.add_new(0x60000010, "US", ROWS)
    ds.add_new(0x60000011, "US", COLS)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", np.packbits(ov.ravel(), bitorder="little").tobytes())
    f = save(ds, folder(root, p) / "CINE0002.dcm")
    exp[f.name] = {"patient": "p1", "gray": _crop(frames[2]), "mm": ("0.083", "0.091"),
                           "order": 2, "frames": frames}

    # p2: JPEG baseline, YBR_FULL_422, colour
    p = P["p2"]
    rgb = color_frame(p, 90)
    ds = base_dataset(p)
    ds.SequenceOfUltrasoundRegions = [region_item(delta_cm=(0.01, 0.01))]
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=1)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    f = save(ds, folder(root, p) / "JPEG0001.dcm")
    exp[f.name] = {"patient": "p2", "luma": _crop(luma(rgb)), "mm": ("0.1", "0.1"), "tol": 4}

    # p3: native RGB, plus a duplicate copy of the same instance
    p = P["p3"]
    rgb = color_frame(p, 100)
    ds = base_dataset(p)
    ds.SequenceOfUltrasoundRegions = [region_item()]
    set_color(ds, rgb, "RGB")
    f = save(ds, folder(root, p) / "RGB0001.dcm")
    exp[f.name] = {"patient": "p3", "luma": _crop(luma(rgb)), "mm": ("0.125", "0.125"),
                   "tol": 0.51}
    save(ds, folder(root, p) / "copy" / "RGB0001_copy.dcm")
    skipped["RGB0001_copy.dcm"] = "duplicate_instance"

    # p4: native YBR_FULL_422 with a dual view (two tissue regions) and a Doppler spectrum
    p = P["p4"]
    rgb = color_frame(p, 110)
    ds = base_dataset(p)
    small = (50, 30, 90, 60)
    ds.SequenceOfUltrasoundRegions = [region_item(box=small), region_item(),
                                      region_item(box=(0, 0, 191, 127), spatial=3,
                                                  data_type=3)]
    set_color(ds, rgb, "YBR_FULL_422")
    f = save(ds, folder(root, p) / "YBR0001.dcm")
    exp[f.name] = {"patient": "p4", "luma": _crop(luma(rgb)), "mm": ("0.125", "0.125"),
                   "tol": 2.5, "flags": {"several_tissue_regions"}}

    # p5: 16-bit (12 stored), implicit VR little endian, no window
    p = P["p5"]
    img16 = np.zeros((ROWS, COLS), np.uint16)
    x0, y0, x1, y1 = REGION
    img16[y0:y1 + 1, x0:x1 + 1] = rng.integers(500, 3001, (y1 - y0 + 1, x1 - x0 + 1))
    text = np.zeros((ROWS, COLS), np.uint8)
    burn_text(text, p)
    img16[text == 255] = 4095
    ds = base_dataset(p)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SequenceOfUltrasoundRegions = [region_item(delta_cm=(0.02, 0.025))]
    set_mono(ds, img16, bits=12)
    f = save(ds, folder(root, p) / "W16.dcm")
    exp[f.name] = {"patient": "p5", "gray": np.floor(_crop(img16) / 4095 * 255 + 0.5)
                   .astype(np.uint8), "mm": ("0.2", "0.25")}

    # p6: YBR_FULL native (colour) and a MONOCHROME1 frame
    p = P["p6"]
    rgb = color_frame(p, 120)
    ds = base_dataset(p, instance=1)
    ds.SequenceOfUltrasoundRegions = [region_item()]
    set_color(ds, rgb, "YBR_FULL")
    f = save(ds, folder(root, p) / "YBRF0001.dcm")
    exp[f.name] = {"patient": "p6", "luma": _crop(luma(rgb)), "mm": ("0.125", "0.125"),
                   "tol": 1.6}
    img = frame_with_scan(rng, p)
    ds = base_dataset(p, instance=2)
    ds.SequenceOfUltrasoundRegions = [region_item()]
    set_mono(ds, 255 - img, photometric="MONOCHROME1")
    f = save(ds, folder(root, p) / "MONO1.dcm")
    exp[f.name] = {"patient": "p6", "gray": _crop(img), "mm": ("0.125", "0.125")}

    # p7: no region sequence, BurnedInAnnotation NO: the fallback crop (text kept apart)
    p = P["p7"]
    img = frame_with_scan(rng, p)
    ds = base_dataset(p)
    ds.BurnedInAnnotation = "NO"
    set_mono(ds, img)
    f = save(ds, folder(root, p) / "NOREGION.dcm")
    exp[f.name] = {"patient": "p7", "gray": _crop(img), "mm": ("", ""),
                   "flags": {"fallback_crop", "no_pixel_size"}}

    # p8: BurnedInAnnotation YES and no region: skipped
    p = P["p8"]
    ds = base_dataset(p)
    ds.BurnedInAnnotation = "YES"
    set_mono(ds, frame_with_scan(rng, p))
    save(ds, folder(root, p) / "BURNED.dcm")
    skipped["BURNED.dcm"] = "burned_in_without_region"

    # p9: an MR image, and an ultrasound file without pixel data
    p = P["p9"]
    ds = base_dataset(p, sop_class=MR_IMAGE, modality="MR")
    set_mono(ds, frame_with_scan(rng, p))
    save(ds, folder(root, p) / "MR0001.dcm")
    skipped["MR0001.dcm"] = "not_ultrasound"
    ds = base_dataset(p, instance=2)
    save(ds, folder(root, p) / "NOPIX.dcm")
    skipped["NOPIX.dcm"] = "no_pixel_data"

    # p10: absent from the spreadsheet
    p = P["p10"]
    ds = base_dataset(p)
    ds.SequenceOfUltrasoundRegions = [region_item()]
    set_mono(ds, frame_with_scan(rng, p))
    save(ds, folder(root, p) / "ABSENT.dcm")
    skipped["ABSENT.dcm"] = "patient_not_in_spreadsheet"

    # p11: RLE lossless; p12: JPEG 2000 lossless with units that are not cm
    p = P["p11"]
    img = frame_with_scan(rng, p)
    ds = base_dataset(p)
    ds.SequenceOfUltrasoundRegions = [region_item(delta_cm=(0.0125, 0.0125))]
    set_mono(ds, img)
    ds.compress(RLELossless)
    f = save(ds, folder(root, p) / "RLE.dcm")
    exp[f.name] = {"patient": "p11", "gray": _crop(img), "mm": ("0.125", "0.125")}
    p = P["p12"]
    img = frame_with_scan(rng, p)
    ds = base_dataset(p)
    ds.SequenceOfUltrasoundRegions = [region_item(units=(0, 0))]
    set_mono(ds, img)
    ds.compress(JPEG2000Lossless)
    f = save(ds, folder(root, p) / "J2K.dcm")
    exp[f.name] = {"patient": "p12", "gray": _crop(img), "mm": ("", ""),
                   "flags": {"no_pixel_size"}}
    # an MPEG-4 clip of p12: no decoder
    ds = base_dataset(p, instance=3)
    ds.SequenceOfUltrasoundRegions = [region_item()]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_PARTIAL_420"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLS, 10
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = MPEG4
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01\x67fake-h264-stream"])
    ds["PixelData"].VR = "OB"
    save(ds, folder(root, p) / "CLIP.mp4.dcm")
    skipped["CLIP.mp4.dcm"] = "unsupported_transfer_syntax"

    # p13: label 'Pending', mapped to null
    p = P["p13"]
    ds = base_dataset(p)
    ds.SequenceOfUltrasoundRegions = [region_item()]
    set_mono(ds, frame_with_scan(rng, p))
    save(ds, folder(root, p) / "PENDING.dcm")
    skipped["PENDING.dcm"] = "no_label"

    # not DICOM: a note naming a patient, and a DICOMDIR-like index
    (root / "NOTES_Zyxwort_Quilla.txt").write_text("Zyxwort Quilla MRN-7730012 19710523\n")
    skipped["NOTES_Zyxwort_Quilla.txt"] = "not_dicom"
    dd = Dataset()
    dd.file_meta = FileMetaDataset()
    dd.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dd.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dd.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dd.FileSetID = "QX7"
    save(dd, root / "DICOMDIR")
    skipped["DICOMDIR"] = "dicomdir"
    return {"expected": exp, "skipped": skipped}


def _crop(a: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = REGION
    return a[y0:y1 + 1, x0:x1 + 1]


def clinical_table(extra_row: bool = True) -> pd.DataFrame:
    """The pathology spreadsheet: identifiers, dates, label and clinical columns."""
    rows = []
    for p in PATIENTS.values():
        if p.label is None:
            continue
        rows.append({"MRN": p.mrn, "Patient Name": f"{p.family}, {p.given}",
                     "DOB": f"{p.birth[:4]}-{p.birth[4:6]}-{p.birth[6:]}",
                     "Exam Date": f"{p.study[:4]}-{p.study[4:6]}-{p.study[6:]}",
                     "Accession": p.accession, "Pathology": p.label, "BMI": p.bmi,
                     "Size (cm)": p.size_cm, "Race": p.race, "Menopause": p.meno})
    if extra_row:  # a spreadsheet patient with no DICOM file
        rows.append({"MRN": "MRN-5550999", "Patient Name": "Vexleigh, Ormand",
                     "DOB": "1966-06-16", "Exam Date": "2021-01-21", "Accession": "ACC-5550999",
                     "Pathology": "Malignant", "BMI": "28.0", "Size (cm)": "3.3",
                     "Race": "Other", "Menopause": "Post"})
    return pd.DataFrame(rows)


MAPPING = """\
join: patient_id
patient_id_column: MRN
accession_column: Accession
label:
  column: Pathology
  values: {Benign: benign, Borderline: borderline, Malignant: malignant, Pending: null}
numeric:
  age: {from_dates: [DOB, Exam Date]}
  bmi: BMI
  tumor_size_mm: {column: Size (cm), scale: 10}
categorical:
  race: Race
  menopausal_status: {column: Menopause, values: {Pre: pre, Post: post}}
missing_values: ["", NA]
"""


def write_clinical(folder: Path, excel: bool = False) -> tuple[Path, Path]:
    """Write the spreadsheet (CSV, or Excel with real dates) and the mapping; return both."""
    folder.mkdir(parents=True, exist_ok=True)
    t = clinical_table()
    if excel:
        for c in ("DOB", "Exam Date"):
            t[c] = pd.to_datetime(t[c])
        t["Size (cm)"] = t["Size (cm)"].astype(float)
        sheet = folder / "pathology.xlsx"
        t.to_excel(sheet, index=False)
    else:
        sheet = folder / "pathology.csv"
        t.to_csv(sheet, index=False)
    mapping = folder / "mapping.yaml"
    mapping.write_text(MAPPING)
    return sheet, mapping
