"""The output self-check: every file of the cohort searched for every identifier read."""

from __future__ import annotations

import csv
import functools
import io
import re
from pathlib import Path

from phyllodes.data.sources.dicom.identifiers import fold

_TOKEN = re.compile(r"[^\W_]+")

_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})

@functools.lru_cache(maxsize=1)
def _own_words() -> frozenset[str]:
    """Every word of the import's own strings (every module of this package): what the
    import writes by itself (not its docstrings, nor the patterns of its regular
    expressions)."""
    import ast
    words: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for n in ast.walk(tree):
            body = getattr(n, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))  # a docstring
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "re":
                skip |= {id(x) for a in n.args for x in ast.walk(a)}
        words |= {t for n in ast.walk(tree) if isinstance(n, ast.Constant)
                  and isinstance(n.value, str) and id(n) not in skip
                  for t in _TOKEN.findall(fold(n.value))}
    return frozenset(words)

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
