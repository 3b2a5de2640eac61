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

``python -m phyllodes check --regenerated DIR`` compares; ``python -m phyllodes check`` (what
``./run_all.sh --check`` calls) first runs the whole study in the quick profile into a scratch
folder, never touching the committed outputs, then compares, then checks that README.md's
generated sections are up to date. Exit status 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phyllodes import paths

ABS_TOL = 1e-6
REL_TOL = 1e-9
TABLE_EXTENSIONS = ("csv", "md", "tex")


@dataclass(frozen=True)
class Difference:
    table: str
    row: str
    column: str
    committed: str
    regenerated: str

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


def _row_name(df: pd.DataFrame, i: int) -> str:
    first = df.columns[0] if len(df.columns) else None
    label = f" ({first} = {df.iat[i, 0]})" if first is not None else ""
    return f"row {i + 1}{label}"


def compare_csv(committed: Path, regenerated: Path, abs_tol: float = ABS_TOL,
                rel_tol: float = REL_TOL) -> list[Difference]:
    """Cell-by-cell differences of two CSV tables."""
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
        for c in a.columns:
            x, y = a.at[i, c], b.at[i, c]
            if not _same(x, y, abs_tol, rel_tol):
                out.append(Difference(name, _row_name(a, i), f"column '{c}'", x, y))
    return out


def compare_tables(committed_dir: Path, regenerated_dir: Path, abs_tol: float = ABS_TOL,
                   rel_tol: float = REL_TOL) -> list[Difference]:
    """Every difference between the committed tables and the regenerated ones."""
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
            out += compare_csv(committed_dir / n, regenerated_dir / n, abs_tol, rel_tol)
    return out


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
    diffs = compare_tables(committed, fresh, abs_tol=args.tolerance)
    from phyllodes.report.readme import stale_sections
    stale = stale_sections()
    for d in diffs:
        print(f"DIFF {d}")
    for s in stale:
        print(f"DIFF README.md: section '{s}' does not match the committed tables; run "
              "python -m phyllodes readme")
    n_tables = len([p for p in committed.glob("*.csv")])
    if diffs or stale:
        print(f"check: FAILED: {len(diffs)} table difference(s), {len(stale)} stale README "
              f"section(s) against {committed} (tolerance {args.tolerance:g})")
    else:
        print(f"check: OK: {n_tables} committed tables equal the regenerated ones "
              f"(tolerance {args.tolerance:g}); README.md is up to date")
    if scratch is not None and not args.output:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if diffs or stale else 0
