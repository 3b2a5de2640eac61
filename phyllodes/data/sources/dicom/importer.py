"""The import itself: a DICOM export and a clinical spreadsheet to a cohort folder."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import yaml

from phyllodes.data.sources.dicom.guard import OutputGuard, library_call
from phyllodes.data.sources.dicom.headers import SourceFile, read_header
from phyllodes.data.sources.dicom.identifiers import (
    DATE_LIKE,
    ID_RE,
    PERSON_RE,
    SHEET_PHI_RE,
    Identifiers,
    add_person_name,
    contact_like,
    date_spellings,
    fold,
    name_words,
    person_name_like,
)
from phyllodes.data.sources.dicom.pixels import decode_frames, parse_frames, png_bytes
from phyllodes.data.sources.dicom.pseudonyms import (
    check_private_path,
    default_key_file,
    git_tree_tracking,
    is_inside,
    load_or_create_key,
    normalise_id,
    pseudonym,
    write_private,
)
from phyllodes.data.sources.dicom.report import ImportReport, report_md
from phyllodes.data.sources.dicom.selfcheck import Needles, phi_self_check
from phyllodes.data.sources.dicom.spreadsheet import (
    ClinicalRow,
    ColumnMapping,
    clinical_rows,
    disagreement,
    duplicate_rows,
    parse_date,
    read_mapping,
    read_spreadsheet,
    resolve_patient,
    rows_text,
)
from phyllodes.data.sources.dicom.vocabulary import (
    FLAGS,
    MAY_CARRY_TEXT,
    REVIEW_REASONS,
    SKIP_REASONS,
    SUBJECT_HEX,
    SUBJECT_PREFIX,
    TAGS_CHECKED,
    TAGS_USED,
    WITHOUT_REGION,
    DicomImportError,
    SkipImage,
)

log = logging.getLogger(__name__)

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
    if source.is_dir() and (is_inside(out, source) or is_inside(source, out)):
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
        write_private(details_path, json.dumps(
            {**private_details, "source": str(source.resolve()),
             "clinical": str(clinical.resolve()), "cohort": str(out.resolve())},
            indent=2, sort_keys=True, default=str).encode() + b"\n")
        write_private(ids_path, _ids_csv(ids_rows))
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
        if c in m.id_columns or SHEET_PHI_RE.search(c) or ID_RE.search(c):
            vals = {v for v in df[c] if v and v not in allowed}
            phi.update(vals)
            phi.update(normalise_id(v) for v in vals)
            if PERSON_RE.search(c) and c not in m.id_columns:
                for v in vals:
                    add_person_name(phi, v)
        for v in set(df[c]):
            if not v:
                continue
            if DATE_LIKE.match(v) or re.fullmatch(r"(19|20)\d{6}", v):
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
    (staging / "import_report.md").write_text(report_md(name, summary), encoding="utf-8")
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
        read_header(p, sf, phi, join, keep_pixels=False)
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
        ds = read_header(p, SourceFile(sf.file_id, sf.rel), set(), join, keep_pixels=True)
        if ds is None:
            sf.skip("read_error", "the file changed during the import")
            continue
        try:
            with library_call():
                kept = decode_frames(ds, sf, frames, without_region, allow_unsafe_regions)
        except SkipImage as e:
            sf.skip(e.reason, e.detail)
            continue
        except Exception as e:  # noqa: BLE001 - a bad file must not stop the import
            sf.skip("decode_error", type(e).__name__, f"{type(e).__name__}: {e}")
            continue
        sf.status = "imported"
        _flag_text_risks(sf, kept[0][3])
        for idx, gray, box, method in kept:
            n += 1
            data = png_bytes(gray)
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
