"""What the import and its libraries print: held while the import runs, shown scrubbed of
every identifier."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

from phyllodes.data.sources.dicom.identifiers import deaccent, fold
from phyllodes.data.sources.dicom.selfcheck import Needles
from phyllodes.data.sources.dicom.vocabulary import DicomImportError

log = logging.getLogger(__name__)

PLACEHOLDER = "<identifier>"

_UID_LIKE = re.compile(r"(?<![\w.])\d+(?:\.[0-9A-Za-z_-]*){2,}")

_LONG_NUMBER = re.compile(r"(?<![^\W_])\d{6,}(?![^\W_])")

_QUOTED = re.compile(r"""(['"])(?:(?!\1).){1,300}\1""")

class Scrubber:
    """Replaces, in a text to be printed, every identifier of ``phi`` (as :class:`Needles`
    finds them) by ``<identifier>``, every UID-like string by ``<uid>`` and every run of 6
    digits or more by ``<number>``; in a library's text, also every quoted value by
    ``<value>``. ``phi`` may grow: what was added is searched from the next call on."""

    def __init__(self, phi: set[str]):
        self.phi = phi
        self.needles = Needles()
        self.replaced = 0

    def __call__(self, text: str, library: bool = False) -> str:
        self.needles.update(self.phi)
        out = text
        hits = self.needles.find(out)
        if hits:
            out = deaccent(out)
            for f in sorted(hits, key=len, reverse=True):
                out = re.sub(r"(?<![^\W_])(?<!\.)" + re.escape(f) + r"(?![^\W_])",
                             PLACEHOLDER, out, flags=re.I)
            if self.needles.find(out):  # spelt with letters folding changes (ß): fold it all
                out = fold(out)
                for f in sorted(hits, key=len, reverse=True):
                    out = self.needles.pattern(f).sub(PLACEHOLDER, out)
        out = _UID_LIKE.sub("<uid>", out)
        out = _LONG_NUMBER.sub("<number>", out)
        if library:
            out = _QUOTED.sub("<value>", out)
        self.replaced += out != text
        return out

_GUARDS: list[OutputGuard] = []

class OutputGuard:
    """While active (``with OutputGuard(phi) as g:``), nothing a library prints reaches the
    terminal or a log handler as it is: Python warnings are recorded; the log records of every
    logger outside ``phyllodes`` are held (a filter on the logger that made them); what the
    libraries write to stdout/stderr during :func:`library_call` is captured (file
    descriptors 1 and 2, and ``sys.stdout``/``sys.stderr``). The import's own log records are
    scrubbed (:class:`Scrubber`) when made. On exit, everything held is scrubbed with every
    identifier read by then, and logged once per distinct message with its count, followed by
    one line saying how many were held; an exception leaving the block is scrubbed too."""

    def __init__(self, phi: set[str]):
        self.scrub = Scrubber(phi)
        self.held: list[tuple[str, str, int, str]] = []  # (channel, source, level, raw text)
        self._filter = _HoldFilter(self)
        self._filtered: set[str] = set()
        self._capture = None
        self._capturing = False

    def __enter__(self) -> OutputGuard:
        self._warnings = warnings.catch_warnings(record=True)
        self._recorded = self._warnings.__enter__()
        warnings.simplefilter("always")
        self._factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(self._make_record)
        _GUARDS.append(self)
        return self

    def __exit__(self, et, e, tb) -> bool:
        logging.setLogRecordFactory(self._factory)
        for name in self._filtered:
            _logger(name).removeFilter(self._filter)
        self._warnings.__exit__(None, None, None)
        _GUARDS.remove(self)
        if self._capture is not None:
            self._capture.close()
        for w in self._recorded:
            kind = "" if w.category is UserWarning else f"{w.category.__name__}: "
            self.held.append(("warning", _package_of(w.filename), logging.WARNING,
                              f"{kind}{w.message}"))
        if e is not None:
            _scrub_exception(e, self.scrub)
        self._emit()
        return False

    def _make_record(self, *args, **kwargs) -> logging.LogRecord:
        rec = self._factory(*args, **kwargs)
        if rec.name == "phyllodes" or rec.name.startswith("phyllodes."):
            try:
                text = rec.getMessage()
            except (TypeError, ValueError):
                text = str(rec.msg)
            rec.msg, rec.args = self.scrub(text), ()
            if rec.exc_info:
                rec.exc_text = self.scrub(logging.Formatter().formatException(rec.exc_info))
                rec.exc_info = None
        elif rec.name not in self._filtered:  # held by the filter, when the logger handles it
            self._filtered.add(rec.name)
            _logger(rec.name).addFilter(self._filter)
        return rec

    def hold_output(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.held.append(("output", "stdout/stderr", logging.WARNING, line))

    def _emit(self) -> None:
        """Log each distinct held message once (scrubbed), then how many were held."""
        if not self.held:
            return
        seen: dict[tuple[str, str], dict] = {}
        for channel, source, level, raw in self.held:
            e = seen.setdefault((source, self.scrub(raw, library=True)),
                                {"level": level, "n": {}})
            e["level"] = max(e["level"], level)
            e["n"][channel] = e["n"].get(channel, 0) + 1
        for (source, text), e in seen.items():
            n = max(e["n"].values())  # pydicom both warns and logs each message
            log.log(e["level"], "%s: %s%s", source, text, f" ({n} times)" if n > 1 else "")
        per = {}
        for _, source, _, _ in self.held:
            per[source] = per.get(source, 0) + 1
        log.info("the libraries printed %d message(s) during the import (%s), held and shown "
                 "once each above, with identifiers, UIDs, long numbers and quoted values "
                 "replaced by %s, <uid>, <number> and <value>", len(self.held),
                 ", ".join(f"{k} {v}" for k, v in sorted(per.items())), PLACEHOLDER)

    @contextlib.contextmanager
    def capture(self):
        """Capture what is written to stdout/stderr (Python and file descriptors 1, 2)."""
        if self._capturing:
            yield
            return
        self._capturing = True
        out, err = io.StringIO(), io.StringIO()
        saved = []
        try:
            if self._capture is None:
                self._capture = tempfile.TemporaryFile()
            for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                if s is not None:
                    s.flush()
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(self._capture.fileno(), fd)
        except (OSError, ValueError, AttributeError):
            pass  # no file descriptors to capture (an embedded interpreter): Python's only
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield
        finally:
            for fd, old in saved:
                with contextlib.suppress(OSError):
                    os.dup2(old, fd)
                    os.close(old)
            self._capturing = False
            text = out.getvalue() + err.getvalue()
            if saved:
                self._capture.seek(0)
                text += self._capture.read().decode("utf-8", errors="replace")
                self._capture.seek(0)
                self._capture.truncate()
            self.hold_output(text)

def _logger(name: str) -> logging.Logger:
    return logging.getLogger(None if name == "root" else name)

class _HoldFilter(logging.Filter):
    """Holds a library's log record in its :class:`OutputGuard` instead of letting it on."""

    def __init__(self, guard: OutputGuard):
        super().__init__()
        self.guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.guard.held.append(("log", record.name.split(".")[0], record.levelno, text))
        return False

@contextlib.contextmanager
def library_call():
    """Around a call into pydicom, Pillow, ...: what they print is held by the active
    :class:`OutputGuard`; without one, their warnings are silenced."""
    if _GUARDS:
        with _GUARDS[-1].capture():
            yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

def _package_of(filename: str) -> str:
    """The top-level package of a source file ('pydicom' for .../site-packages/pydicom/x.py)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return Path(parts[parts.index(marker) + 1]).stem
    return Path(filename).stem or "python"

def _scrub_exception(e: BaseException, scrub: Scrubber) -> None:
    """Scrub the text of an exception (and of those it was raised from) in place."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        library = not isinstance(e, DicomImportError)
        if isinstance(e, DicomImportError):
            e.problems = [scrub(p) for p in e.problems]
        e.args = tuple(scrub(a, library) if isinstance(a, str) else a for a in e.args)
        for attr in ("filename", "filename2"):
            if isinstance(getattr(e, attr, None), str):
                setattr(e, attr, scrub(getattr(e, attr), library))
        e = e.__cause__ or e.__context__
