"""Do the committed tables equal what the committed code produces? ``./run_all.sh --check``.

:func:`compare_tables` compares a folder of regenerated tables with the committed one: a
missing or extra table, a changed header or row count, a changed text cell, or a number that
differs by more than the tolerance is a difference, reported with its table, row and column
and both values. CSV files are compared cell by cell (the ``.md`` and ``.tex`` copies are made
from the same frames by the one writer, :func:`phyllodes.tables.write_table`; they are checked
for presence). Figures are not compared.

Tolerance: the study is deterministic on one machine kind (same seeds, same threads, same
kernels), so regenerated numbers are expected to be equal; ``ABS_TOL = 1e-6`` only absorbs
printing noise of floating-point values, far below the 3 decimals tables show. Numbers inside
text cells ("0.912 [0.871, 0.948]") are compared as text: they are rounded already.

Which machine: ``machine.json`` beside the tables records, per table, the processor and
kernels that made it (:func:`phyllodes.kernels.record`: vendor, family, vector extensions, the
kernel tag, the torch version). Even with the CPU kernels pinned (:mod:`phyllodes.kernels`), two
kinds of processor do not compute every bit alike: the tables made on an AMD EPYC Zen 4
(AVX-512), rerun on a Zen 3 (AVX2 only), came out equal except 79 cells of 12 tables (the CAMs,
models trained through the whole encoder, the BUS-BRA-developed model), all within 0.012, one a
verdict on its threshold. So a table made on this kind of machine is compared exactly, and one
made on another kind at :data:`OTHER_MACHINE_TOL` (every number, also those inside text cells,
within ``0.02 + 5%``, the words around them equal); there, words alone that moved in a row whose
numbers all held (a confidence bound on its threshold: "no better than" / "worse than") are
printed as a note, not a failure. The check says which tables were made elsewhere and the
largest difference among them, so a failure still means the science differs, not the last bits.

``python -m phyllodes check --regenerated DIR`` compares; ``python -m phyllodes check`` (what
``./run_all.sh --check`` calls) first runs the whole study in the quick profile into a scratch
folder, never touching the committed outputs, then compares, then checks that README.md's
generated sections are up to date. Exit status 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from phyllodes import paths

ABS_TOL = 1e-6
REL_TOL = 1e-9
#: (absolute, relative) tolerance when the tables were made on another kind of machine
OTHER_MACHINE_TOL = (0.02, 0.05)
TABLE_EXTENSIONS = ("csv", "md", "tex")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Difference:
    table: str
    row: str
    column: str
    committed: str
    regenerated: str
    #: "difference", or "verdict": words without numbers that moved in a table made on another
    #: kind of machine while every number of the row stayed within the cross-machine tolerance
    #: (a confidence bound on its threshold); reported, not a failure
    kind: str = "difference"

    def __str__(self) -> str:
        where = ", ".join(x for x in (self.row, self.column) if x)
        return (f"{self.table}{': ' + where if where else ''}: committed {self.committed!s} "
                f"vs regenerated {self.regenerated!s}")


def _number(x) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v


def _same(a, b, abs_tol: float, rel_tol: float) -> bool:
    if (pd.isna(a) if not isinstance(a, str) else False) and \
            (pd.isna(b) if not isinstance(b, str) else False):
        return True
    fa, fb = _number(a), _number(b)
    if fa is not None and fb is not None:
        if math.isnan(fa) and math.isnan(fb):
            return True
        return math.isclose(fa, fb, abs_tol=abs_tol, rel_tol=rel_tol)
    return str(a) == str(b)


def _same_numbers(a, b, abs_tol: float, rel_tol: float) -> bool:
    """Two cells equal up to their numbers, each within the tolerance: the same words, the
    same count of numbers ("0.912 [0.871, 0.948]" against "0.913 [0.870, 0.948]")."""
    if _same(a, b, abs_tol, rel_tol):
        return True
    a, b = str(a), str(b)
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    return all(math.isclose(float(x), float(y), abs_tol=abs_tol, rel_tol=rel_tol)
               for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)))


def _row_name(df: pd.DataFrame, i: int) -> str:
    first = df.columns[0] if len(df.columns) else None
    label = f" ({first} = {df.iat[i, 0]})" if first is not None else ""
    return f"row {i + 1}{label}"


def compare_csv(committed: Path, regenerated: Path, abs_tol: float = ABS_TOL,
                rel_tol: float = REL_TOL, in_text: bool = False) -> list[Difference]:
    """Cell-by-cell differences of two CSV tables. ``in_text`` (a table made on another kind of
    machine): numbers inside text cells are compared at the tolerance too, and words without
    numbers that moved in a row whose numbers all held are reported as ``verdict``."""
    same = _same_numbers if in_text else _same
    name = committed.name
    a = pd.read_csv(committed, dtype=str, keep_default_na=False)
    b = pd.read_csv(regenerated, dtype=str, keep_default_na=False)
    out = []
    if list(a.columns) != list(b.columns):
        gone = [c for c in a.columns if c not in b.columns]
        new = [c for c in b.columns if c not in a.columns]
        out.append(Difference(name, "header", "", ", ".join(gone) or "(same columns)",
                              ", ".join(new) or "(order changed)"))
        return out
    if len(a) != len(b):
        out.append(Difference(name, "rows", "", f"{len(a)} rows", f"{len(b)} rows"))
    for i in range(min(len(a), len(b))):
        row = [Difference(name, _row_name(a, i), f"column '{c}'", a.at[i, c], b.at[i, c])
               for c in a.columns if not same(a.at[i, c], b.at[i, c], abs_tol, rel_tol)]
        words = [d for d in row if not _NUMBER.search(d.committed + d.regenerated)]
        if in_text and words and len(words) == len(row):
            row = [replace(d, kind="verdict") for d in row]
        out += row
    return out


def compare_tables(committed_dir: Path, regenerated_dir: Path, abs_tol: float = ABS_TOL,
                   rel_tol: float = REL_TOL, elsewhere: frozenset[str] = frozenset()
                   ) -> list[Difference]:
    """Every difference between the committed tables and the regenerated ones; the tables in
    ``elsewhere`` (stems made on another kind of machine, :func:`made_elsewhere`) are compared
    at :data:`OTHER_MACHINE_TOL`, numbers inside text included."""
    committed_dir, regenerated_dir = Path(committed_dir), Path(regenerated_dir)

    def files(d: Path) -> set[str]:
        return {p.name for p in d.iterdir() if p.suffix.lstrip(".") in TABLE_EXTENSIONS} \
            if d.is_dir() else set()

    have, got = files(committed_dir), files(regenerated_dir)
    out = [Difference(n, "", "", "present", "missing (not regenerated)")
           for n in sorted(have - got)]
    out += [Difference(n, "", "", "missing (not committed)", "present")
            for n in sorted(got - have)]
    for n in sorted(have & got):
        if n.endswith(".csv"):
            if n[:-4] in elsewhere:
                out += compare_csv(committed_dir / n, regenerated_dir / n, *OTHER_MACHINE_TOL,
                                   in_text=True)
            else:
                out += compare_csv(committed_dir / n, regenerated_dir / n, abs_tol, rel_tol)
    return out


def largest_difference(committed_dir: Path, regenerated_dir: Path,
                       stems: frozenset[str] | None = None) -> Difference | None:
    """The numeric cell (or number inside a text cell) that moved most (of the tables
    ``stems``, None: all), for the report of a comparison across machines; None when nothing
    moved."""
    worst, size = None, 0.0
    for d in compare_tables(committed_dir, regenerated_dir):
        if stems is not None and d.table[:-4] not in stems:
            continue
        xs, ys = _NUMBER.findall(d.committed), _NUMBER.findall(d.regenerated)
        if len(xs) == len(ys) and xs:
            gap = max(abs(float(x) - float(y)) for x, y in zip(xs, ys))
            if gap > size:
                worst, size = d, gap
    return worst


def _kind(record: dict) -> tuple:
    """What decides the bits (:mod:`phyllodes.kernels`): the processor's vendor, family and
    vector extensions, the kernel tag and the torch version. Two AMD EPYC generations (Zen 3
    with AVX2 only, Zen 4 with AVX-512) regenerate most tables exactly but not all: the CAMs,
    models trained through the whole encoder and a few others move by about 1e-4."""
    m = record.get("machine", {})
    return (m.get("vendor"), m.get("family"), tuple(m.get("isa") or ()),
            record.get("kernels"), record.get("torch"))


def _words(record: dict) -> str:
    m = record.get("machine", {})
    return (f"{m.get('model') or m.get('vendor')} ({m.get('vendor')} family {m.get('family')}, "
            f"{'/'.join(m.get('isa') or []) or 'no x86 vector extensions'}), kernels "
            f"{record.get('kernels')}, torch {record.get('torch')}")


def made_elsewhere(committed_dir: Path) -> dict[str, dict]:
    """The committed tables (stems) that ``machine.json`` says were made on another kind of
    machine than this one (:func:`_kind`), with the record of that machine. A table without a
    record is taken as made here (compared exactly)."""
    from phyllodes import kernels
    p = Path(committed_dir) / "machine.json"
    if not p.exists():
        return {}
    here = _kind(kernels.record())
    return {stem: r for stem, r in json.loads(p.read_text()).items() if _kind(r) != here}


def machine_note(committed_dir: Path) -> str:
    """Which machines made the committed tables, against this one: a sentence."""
    from phyllodes import kernels
    elsewhere = made_elsewhere(committed_dir)
    if not elsewhere:
        return f"every committed table was made on this kind of machine or has no record; " \
               f"this machine: {_words(kernels.record())}"
    kinds = sorted({_words(r) for r in elsewhere.values()})
    return (f"{len(elsewhere)} committed table(s) were made on another kind of machine "
            f"({'; '.join(kinds)}) than this one ({_words(kernels.record())}): those are "
            f"compared at the cross-machine tolerance {OTHER_MACHINE_TOL[0]:g} + "
            f"{OTHER_MACHINE_TOL[1]:.0%}, the others exactly")


def regenerate(output: Path, cohort: str = "breast-lesions-usg", profile: str = "quick",
               device: str = "cpu", seed: int = 0) -> Path:
    """Run the whole study into ``output`` (never the repository's own folders); return the
    folder of the regenerated tables."""
    from phyllodes.ops.runner import run_notebooks
    output = Path(output).resolve()
    if output == paths.ROOT.resolve() or paths.ROOT.resolve() in output.parents and \
            output.name in ("tables", "figures"):
        raise ValueError(f"{output} would overwrite the committed outputs; give a scratch "
                         "folder")
    run_notebooks(profile, cohort, device, seed, output, report=False)
    return output / "tables" / cohort


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m phyllodes check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regenerated", default="", help="compare this folder of tables instead "
                    "of running the study")
    ap.add_argument("--output", default="", help="scratch folder for the study run (default: "
                    "a temporary folder, removed afterwards)")
    ap.add_argument("--cohort", default="breast-lesions-usg")
    ap.add_argument("--tolerance", type=float, default=ABS_TOL)
    args = ap.parse_args(argv)
    committed = paths.ROOT / "tables" / args.cohort
    scratch = None
    if args.regenerated:
        fresh = Path(args.regenerated)
    else:
        scratch = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="check-"))
        print(f"check: running the whole study (quick profile) into {scratch}", flush=True)
        fresh = regenerate(scratch, args.cohort)
    print(f"check: {machine_note(committed)}")
    elsewhere = frozenset(made_elsewhere(committed)) if args.tolerance == ABS_TOL else \
        frozenset()
    found = compare_tables(committed, fresh, abs_tol=args.tolerance, elsewhere=elsewhere)
    diffs = [d for d in found if d.kind == "difference"]
    if elsewhere:
        worst = largest_difference(committed, fresh, elsewhere)
        print("check: largest difference in the tables made elsewhere: "
              + (str(worst) if worst else "none (every cell equal)"))
    from phyllodes.report.readme import stale_sections
    stale = stale_sections()
    for d in found:
        print(f"{'DIFF' if d.kind == 'difference' else 'NOTE verdict moved'} {d}")
    for s in stale:
        print(f"DIFF README.md: section '{s}' does not match the committed tables; run "
              "python -m phyllodes readme")
    n_tables = len([p for p in committed.glob("*.csv")])
    tol = f"tolerance {args.tolerance:g}" + (
        f"; {len(elsewhere)} made on another kind of machine at {OTHER_MACHINE_TOL[0]:g} + "
        f"{OTHER_MACHINE_TOL[1]:.0%}" if elsewhere else "")
    if diffs or stale:
        print(f"check: FAILED: {len(diffs)} table difference(s), {len(stale)} stale README "
              f"section(s) against {committed} ({tol})")
    else:
        print(f"check: OK: {n_tables} committed tables equal the regenerated ones "
              f"({tol}); README.md is up to date")
    if scratch is not None and not args.output:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if diffs or stale else 0
