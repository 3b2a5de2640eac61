"""Execute the numbered notebooks in order with papermill (what ./run_all.sh calls)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from . import paths

NOTEBOOK_PATTERN = re.compile(r"^\d\d_.*\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the cell."""


def numbered_notebooks(folder: Path = paths.NOTEBOOKS, only: list[str] | None = None
                       ) -> list[Path]:
    """The notebooks named NN_*.ipynb, in order; ``only`` keeps those whose NN is listed."""
    nbs = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if only:
        nbs = [p for p in nbs if p.name[:2] in only]
    return nbs


def run_notebooks(profile: str, cohort: str, device: str = "auto", seed: int = 0,
                  output: str | Path | None = None, only: list[str] | None = None,
                  extra_parameters: dict | None = None) -> list[dict]:
    """Execute each numbered notebook; stop at the first failure (:class:`NotebookFailed`).

    Executed copies go to ``<output>/executed/<profile>/``. Without ``output`` the smoke profile
    writes under ``executed/smoke-output/`` so it never replaces the study's tables.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if output is None:
        output = paths.ROOT / "executed" / "smoke-output" if profile == "smoke" else paths.ROOT
    output = Path(output).resolve()
    executed = output / "executed" / profile
    executed.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "cohort": str(cohort), "device": device, "seed": seed,
              "output_dir": str(output), **(extra_parameters or {})}
    done = []
    nbs = numbered_notebooks(only=only)
    print(f"run_all: profile={profile} cohort={cohort} device={device} outputs={output}")
    for i, nb in enumerate(nbs, 1):
        print(f"[{i}/{len(nbs)}] {nb.name}", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(executed / nb.name), parameters=params,
                                progress_bar=True, cwd=str(paths.NOTEBOOKS),
                                kernel_name="python3")
        except PapermillExecutionError as e:
            raise NotebookFailed(
                f"{nb.name} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                f"{e.ename}: {e.evalue}\n  executed copy with the traceback: "
                f"{executed / nb.name}") from None
        dt = time.perf_counter() - t0
        done.append({"notebook": nb.name, "seconds": round(dt, 1)})
        print(f"    done in {dt:.0f} s", flush=True)
    total = sum(d["seconds"] for d in done)
    print(f"run_all: {len(done)} notebook(s) in {total:.0f} s; executed copies in {executed}")
    return done


def main_notebooks(args) -> int:
    try:
        run_notebooks(args.profile, args.cohort, args.device, args.seed, args.output,
                      args.only.split(",") if args.only else None)
    except NotebookFailed as e:
        print(f"run_all: STOPPED. {e}", file=sys.stderr)
        return 1
    return 0
