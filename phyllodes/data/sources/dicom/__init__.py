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

The package, by concern (each module imports only those above it):

=============== ==========================================================================
``vocabulary``  the tags read, the skip reasons and flags, :class:`DicomImportError`
``pseudonyms``  subject pseudonyms, the key file, the private paths beside it
``identifiers`` what identifies a person: the strings read, their spellings, name-like cells
``spreadsheet`` the clinical spreadsheet and its column mapping
``selfcheck``   every output file searched for every identifier read
``guard``       what libraries print, held and shown scrubbed
``template``    ``--write-mapping-template``
``headers``     DICOM headers: the tags used, the ultrasound regions
``pixels``      decoding to 8-bit gray, cropping to the region
``report``      the summary on stdout and import_report.md
``importer``    :func:`import_dicom`
``cli``         ``python -m phyllodes import-dicom``
=============== ==========================================================================
"""

from __future__ import annotations

from phyllodes.data.sources.dicom.cli import build_parser, main
from phyllodes.data.sources.dicom.guard import OutputGuard, Scrubber
from phyllodes.data.sources.dicom.headers import choose_region, cm_to_mm, ultrasound_regions
from phyllodes.data.sources.dicom.identifiers import (
    Identifiers,
    add_person_name,
    contact_like,
    date_spellings,
    fold,
    name_spellings,
    person_name_like,
)
from phyllodes.data.sources.dicom.importer import contract_problems, import_dicom
from phyllodes.data.sources.dicom.pixels import (
    frame_indices,
    parse_frames,
    region_box,
    scan_area,
    text_band_rows,
    to_gray8,
)
from phyllodes.data.sources.dicom.pseudonyms import (
    check_private_path,
    default_key_file,
    load_or_create_key,
    normalise_id,
    pseudonym,
)
from phyllodes.data.sources.dicom.report import ImportReport
from phyllodes.data.sources.dicom.selfcheck import Needles, phi_self_check
from phyllodes.data.sources.dicom.spreadsheet import (
    ColumnMapping,
    Feature,
    age_years,
    clinical_rows,
    duplicate_rows,
    parse_date,
    read_mapping,
    read_spreadsheet,
    resolve_patient,
)
from phyllodes.data.sources.dicom.template import (
    category_problem,
    mapping_template,
    write_mapping_template,
)
from phyllodes.data.sources.dicom.vocabulary import (
    FLAGS,
    FRAME_CHOICES,
    SKIP_REASONS,
    SUBJECT_HEX,
    SUBJECT_PREFIX,
    TAGS_CHECKED,
    TAGS_USED,
    WITHOUT_REGION,
    DicomImportError,
)

__all__ = [
    "DicomImportError",
    "SKIP_REASONS",
    "FLAGS",
    "TAGS_USED",
    "TAGS_CHECKED",
    "FRAME_CHOICES",
    "WITHOUT_REGION",
    "SUBJECT_PREFIX",
    "SUBJECT_HEX",
    "normalise_id",
    "pseudonym",
    "default_key_file",
    "load_or_create_key",
    "check_private_path",
    "Identifiers",
    "add_person_name",
    "name_spellings",
    "date_spellings",
    "fold",
    "person_name_like",
    "contact_like",
    "ColumnMapping",
    "Feature",
    "read_mapping",
    "read_spreadsheet",
    "parse_date",
    "age_years",
    "clinical_rows",
    "resolve_patient",
    "duplicate_rows",
    "mapping_template",
    "write_mapping_template",
    "category_problem",
    "cm_to_mm",
    "ultrasound_regions",
    "choose_region",
    "to_gray8",
    "scan_area",
    "frame_indices",
    "parse_frames",
    "region_box",
    "text_band_rows",
    "Needles",
    "phi_self_check",
    "Scrubber",
    "OutputGuard",
    "ImportReport",
    "import_dicom",
    "contract_problems",
    "build_parser",
    "main",
]
