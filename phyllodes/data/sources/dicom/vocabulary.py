"""What the DICOM import names: the tags it reads, its skip reasons and flags, its error."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from phyllodes.data import contract

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

#: the contract's own columns, and the pixel sizes the import writes per image
RESERVED_COLUMNS = {*contract.RESERVED_COLUMNS, "pixel_size_mm_x", "pixel_size_mm_y"}

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

def cell_text(v: Any) -> str:
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

class SkipImage(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail
