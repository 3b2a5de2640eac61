"""The import's report: the summary printed on stdout and import_report.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phyllodes.data.sources.dicom.vocabulary import (
    FLAGS,
    MAY_CARRY_TEXT,
    REVIEW_REASONS,
    SKIP_REASONS,
)


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

def report_md(name: str, s: dict) -> str:
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
