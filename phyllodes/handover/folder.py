"""An exported model folder's files: the manifest that pins them, and the checks that refuse a
tampered folder or a pickle before anything of it is read as a model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from phyllodes.train.runs import MODEL_FILE, PICKLE_SUFFIXES

#: what ``model.json`` of an exported folder says it is, and its format version
EXPORT_KIND, EXPORT_FORMAT = "phyllodes-exported-model", 1
MANIFEST, CARD, DECLARATION = "MANIFEST.json", "model_card.md", "cohort.yaml"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """``MANIFEST.json``: the SHA-256 of every other file of the folder."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != MANIFEST)
    (folder / MANIFEST).write_text(json.dumps({"files": {f: sha256(folder / f) for f in files}},
                                              indent=2))


def add_card(folder: Path | str, card: str) -> None:
    """Write (or replace) the model card of a verified model folder and re-pin the manifest."""
    folder = Path(folder)
    verify_folder(folder)
    (folder / CARD).write_text(card)
    write_manifest(folder)


#: the first bytes of a pickle (protocol 2-5) and of torch.save's zip container
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


class ModelFolderError(ValueError):
    """A model folder that is not safe or not complete: nothing of it was executed."""


def verify_folder(root: Path) -> dict:
    """The model folder's ``model.json`` after checking every file against ``MANIFEST.json``
    and refusing any pickle. Reads bytes and JSON only."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise ModelFolderError(f"{root}: no {MANIFEST}: not an exported model folder (export "
                               "one with python -m phyllodes export)")
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        with open(p, "rb") as f:
            head = f.read(4)
        if p.suffix.lower() in PICKLE_SUFFIXES or head.startswith(_PICKLE_MAGIC):
            raise ModelFolderError(f"{p}: a pickle (or torch.save archive) in the model folder. "
                                   "Pickles are never loaded: loading one executes whatever "
                                   "code it contains. Remove the file, or re-export the model.")
    try:
        manifest = json.loads((root / MANIFEST).read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFolderError(f"{root / MANIFEST}: unreadable ({e}): re-export the "
                               "model") from None
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {MANIFEST}
    for name in sorted(present - set(manifest)):
        raise ModelFolderError(f"{root / name}: not listed in {MANIFEST}: a file was added to "
                               "the model folder; remove it, or re-export the model")
    for name, digest in sorted(manifest.items()):
        p = root / name
        if not p.is_file():
            raise ModelFolderError(f"{p}: listed in {MANIFEST} but missing: copy the whole "
                                   "model folder")
        if sha256(p) != digest:
            raise ModelFolderError(f"{p}: its content differs from {MANIFEST} (tampered or "
                                   "damaged): copy the model folder again, or re-export it")
    doc = json.loads((root / MODEL_FILE).read_text())
    if doc.get("kind") != EXPORT_KIND or doc.get("format_version") != EXPORT_FORMAT:
        raise ModelFolderError(f"{root / MODEL_FILE}: kind {doc.get('kind')!r} format "
                               f"{doc.get('format_version')!r}; this code reads {EXPORT_KIND} "
                               f"format {EXPORT_FORMAT}")
    return doc


