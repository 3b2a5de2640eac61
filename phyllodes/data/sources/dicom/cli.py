"""The command line: ``python -m phyllodes import-dicom``."""

from __future__ import annotations

import argparse
import logging
import sys

from phyllodes.data.sources.dicom.importer import import_dicom
from phyllodes.data.sources.dicom.template import write_mapping_template
from phyllodes.data.sources.dicom.vocabulary import FRAME_CHOICES, WITHOUT_REGION, DicomImportError


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
