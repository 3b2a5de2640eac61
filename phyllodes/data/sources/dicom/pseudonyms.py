"""Subject pseudonyms (keyed HMAC of the PatientID), the key file and the private paths
beside it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from phyllodes.data.sources.dicom.vocabulary import (
    SUBJECT_HEX,
    SUBJECT_PREFIX,
    DicomImportError,
    cell_text,
)

log = logging.getLogger(__name__)

def normalise_id(value: Any) -> str:
    """An id as compared: stripped, upper case; all-digit ids lose their leading zeros."""
    s = cell_text(value).strip().upper()
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
    write_private(path, key + b"\n")
    log.info("created a new pseudonym key %s (keep it: the same key gives the same subject ids)",
             path)
    return key

def write_private(path: Path, data: bytes) -> None:
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

def is_inside(path: Path, folder: Path) -> bool:
    a, b = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return a == b or b in a.parents

def check_private_path(path: Path, out: Path, what: str) -> list[str]:
    """Problems with a private file's place: inside the cohort folder, or tracked by git."""
    problems = []
    if is_inside(path, out):
        problems.append(f"{what} {path} is inside the output folder {out}; the cohort must not "
                        "hold it: pass a path outside (default ~/.config/phyllodes/)")
    root = git_tree_tracking(path)
    if root is not None:
        problems.append(f"{what} {path} is inside the git work tree {root} and not ignored by "
                        "it; keep it outside the repository (default ~/.config/phyllodes/)")
    return problems
