"""What identifies a person: the identifying strings read from headers and the
spreadsheet, their spellings, and how a cell written like a name or a contact is recognised."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

import pandas as pd

SHEET_PHI_RE = re.compile(r"(name|address|street|phone|mobile|e-?mail|ssn|social.?sec|"
                           r"insurance|mrn|medical.?record|accession|physician|doctor|surgeon|"
                           r"radiologist|referr)", re.I)

DATE_LIKE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
                        r"([ T]\d{1,2}:\d{2}(:\d{2})?)?$")

ID_RE = re.compile(r"(patient.?id|^pid$|^mrn|medical.?record|record.?n|^id$|patient.?n(o|um)|"
                    r"hospital.?n(o|um)|^subject)", re.I)

ACC_RE = re.compile(r"accession", re.I)

PHI_RE = re.compile(r"(name|address|street|city|zip|postal|phone|mobile|e-?mail|ssn|social|"
                     r"insurance|mrn|record|accession|physician|doctor|surgeon|radiologist|"
                     r"comment|note|remark|free.?text)", re.I)

_TITLES = r"(?:dr|doctor|prof|professor|mr|mrs|ms|miss|mx|sir|dame|sister|nurse)"

_CAP = r"[A-Z][a-z'’-]*(?:[A-Z][a-z'’-]*)?[a-z]"  # Smith, Li, O'Brien, McDonald

_INI = r"[A-Z]\."

#: Spellings of a person's name that ordinary category values do not take: a title, a dotted
#: initial, 'Family, Given', DICOM's 'Family^Given' (checked on the accent-stripped value).
_NAME_STRONG = (
    re.compile(rf"^{_TITLES}\.?\s+[A-Za-z]", re.I),
    re.compile(rf"^{_INI}\s*(?:{_INI}\s*)*{_CAP}(?:[ -]{_CAP})*$"),
    re.compile(rf"^{_CAP}(?:[ -]{_CAP})*\s+{_INI}(?:\s*{_INI})*$"),
    re.compile(rf"^{_CAP}(?:[ -]{_CAP})*,\s*(?:{_CAP}|[A-Z]\.?)(?:\s+(?:{_CAP}|[A-Z]\.?))*$"),
    re.compile(r"[A-Za-z]\^[A-Za-z]"),
)

#: ... and those a category may take but a name more often does ('J Smith', 'Smith J').
_NAME_WEAK = (re.compile(rf"^[A-Z]\s+{_CAP}$"), re.compile(rf"^{_CAP}\s+[A-Z]$"))

_CONTACT = (
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # an e-mail address
    re.compile(r"^\+?\(?\d[\d ()./-]{6,}\d$"),  # a phone number
    re.compile(r"^\d+[a-z]?,?\s+.*\b(street|st|road|rd|avenue|ave|lane|ln|drive|way|close|"
               r"court|ct|place|pl|boulevard|blvd|strasse|str|rue|via|calle|weg|platz|"
               r"square|sq|crescent|terrace|gardens)\b", re.I),  # a street address
)

PERSON_RE = re.compile(r"(name|physician|doctor|surgeon|radiologist|referr|nurse|sonograph|"
                        r"operator|consultant|clinician|reporter|author|signed)", re.I)

def deaccent(s: str) -> str:
    """``s`` without diacritics (Müller -> Muller, José -> Jose); case kept."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))

def fold(s: str) -> str:
    """``s`` as identifiers are compared: without diacritics, case-folded (ß -> ss)."""
    return deaccent(s).casefold()

def person_name_like(v: str, strong_only: bool = False) -> bool:
    """Whether a cell is written like a person's name ('Dr Smith', 'J. Smith', 'Smith, John',
    'Smith^John'; unless ``strong_only``, also 'J Smith' and 'Smith J')."""
    t = deaccent(v.strip())
    pats = _NAME_STRONG if strong_only else _NAME_STRONG + _NAME_WEAK
    return any(p.search(t) for p in pats)

def contact_like(v: str) -> bool:
    """Whether a cell looks like an e-mail address, a phone number or a street address."""
    t = v.strip()
    return not DATE_LIKE.match(t) and any(p.search(t) for p in _CONTACT)

def name_words(v: str) -> set[str]:
    """The words of a name-like cell that may be a name alone: at least 2 letters, not a
    title ('Dr Hargreaves' -> {'Hargreaves'}, 'Smith, J.' -> {'Smith'})."""
    words = re.findall(r"[^\W\d_](?:[^\W\d_]|['’-])*[^\W\d_]", v)
    return {w for w in words if not re.fullmatch(_TITLES, deaccent(w), re.I)}

def sheet_name_tokens(df: pd.DataFrame) -> set[str]:
    """The folded words (3 letters or more) of the spreadsheet's person-name columns."""
    out: set[str] = set()
    for c in df.columns:
        if PERSON_RE.search(c):
            for v in df[c]:
                out |= {fold(w) for w in name_words(v) if len(w) >= 3}
    return out

class Identifiers(set):
    """The identifying strings read from the export and the spreadsheet (a set of str), and
    apart, in ``names_alone``, the family names alone: searched everywhere too, but a cell of
    cohort.csv that equals a value the mapping declares for that column is not a hit (a race
    'White' and a patient called White)."""

    def __init__(self, values=()):
        super().__init__(values)
        self.names_alone: set[str] = set()

def add_person_name(phi: set[str], pn: str) -> None:
    """Add a person name (DICOM Family^Given^..., or as a spreadsheet writes it) to ``phi``:
    its spellings (:func:`name_spellings`), and its family name alone."""
    pn = _as_pn(pn)
    phi.update(name_spellings(pn))
    fam = pn.split("=")[0].split("^")[0].strip()
    if fam:
        getattr(phi, "names_alone", phi).add(fam)
    if "^" not in pn:  # 'Given Family' or 'Family Given' as written: either word alone
        words = pn.split()
        getattr(phi, "names_alone", phi).update(w for w in (words[0], words[-1]) if len(w) > 1)

def _as_pn(v: str) -> str:
    """A name as a spreadsheet writes it ('Family, Given') in DICOM's Family^Given form;
    other spellings are returned unchanged."""
    v = v.strip()
    if "^" in v or "," not in v:
        return v
    fam, giv = (x.strip() for x in v.split(",", 1))
    return f"{fam}^{giv}" if fam and giv else v

def name_spellings(pn: str) -> set[str]:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) in the usual spellings, with
    the given name in full or as an initial ('John Smith', 'Smith, John', 'J. Smith', 'J Smith',
    'Smith J', ...). The family name alone is :func:`add_person_name`'s."""
    parts = [p.strip() for p in pn.split("=")[0].split("^")]
    fam, giv = (parts + ["", ""])[:2]
    out = {pn.strip(), pn.split("=")[0].strip().rstrip("^")}
    if fam and giv:
        out |= {f"{giv} {fam}", f"{fam} {giv}", f"{fam}, {giv}", f"{fam},{giv}",
                f"{fam}^{giv}"}
        i = giv[0]
        out |= {f"{i}. {fam}", f"{i} {fam}", f"{i}.{fam}", f"{fam} {i}", f"{fam} {i}.",
                f"{fam}, {i}", f"{fam}, {i}.", f"{fam},{i}."}
    return {s for s in out if s}

def date_spellings(d: dt.date) -> set[str]:
    """A date in the spellings a table or report might use."""
    y, m, dd = f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}"
    return {f"{y}{m}{dd}", f"{y}-{m}-{dd}", f"{y}/{m}/{dd}", f"{y}.{m}.{dd}",
            f"{dd}/{m}/{y}", f"{m}/{dd}/{y}", f"{dd}.{m}.{y}", f"{dd}-{m}-{y}",
            f"{m}-{dd}-{y}", f"{d.day}/{d.month}/{y}", f"{d.month}/{d.day}/{y}"}
