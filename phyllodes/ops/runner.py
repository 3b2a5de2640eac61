"""Execute the numbered notebooks in order with papermill (what ./run_all.sh calls)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path

from phyllodes import paths

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


def _quiet_kernel_manager(log_file: Path):
    """A kernel manager whose kernel writes its own stderr (start-up chatter, crash messages)
    to ``log_file`` instead of the terminal; cell outputs still go to the notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["stderr"] = open(log_file, "ab")  # noqa: SIM115 (kept open by the kernel)
            return await super()._async_launch_kernel(kernel_cmd, **kw)
    return QuietKernelManager


def run_notebooks(profile: str, cohort: str, device: str = "auto", seed: int = 0,
                  output: str | Path | None = None, only: list[str] | None = None,
                  extra_parameters: dict | None = None, report: bool = True,
                  preflight: bool = True, stream=None, settings: dict | None = None,
                  weights_dir: str | None = None) -> list[dict]:
    """Execute each numbered notebook; stop at the first failure (:class:`NotebookFailed`).

    Executed copies go to ``<output>/executed/<profile>/``. Without ``output`` the smoke profile
    writes under ``executed/smoke-output/`` so it never replaces the study's tables. First the
    pre-flight: every encoder the profile needs must be able to get its weights. While a
    notebook runs, its training progress is shown in the terminal (one updating line per run;
    plain lines when the output is not a terminal) and a summary line closes it. Last, the HTML
    report of the study (``<output>/report/<cohort>/index.html``).

    ``settings``: profile settings for every notebook (``--set NAME=VALUE``; each notebook's
    ``settings`` parameter, validated by the Profile); ``weights_dir``: a folder of encoder
    weights files (each notebook's ``weights_dir`` parameter).
    """
    import logging

    stream = stream or sys.stdout
    for noisy in ("papermill", "traitlets"):  # per-notebook file names, nbconvert's alt-text
        logging.getLogger(noisy).setLevel(logging.ERROR)

    def say(text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    if output is None:
        output = paths.ROOT / "executed" / "smoke-output" if profile == "smoke" else paths.ROOT
    output = Path(output).resolve()
    executed = paths.Outputs.at(output).executed(profile)
    params = _parameters(profile, cohort, device, seed, output, extra_parameters, settings,
                         weights_dir)
    say(f"run_all: profile={profile} cohort={cohort} device={device} outputs={output}")
    if preflight:
        from phyllodes.ops.preflight import preflight as check_weights
        overrides = {k: extra_parameters[k] for k in ("encoder", "encoders")
                     if extra_parameters and extra_parameters.get(k) is not None}
        overrides.update(settings or {})
        say("run_all: pre-flight: pretrained weights of every encoder\n"
            + check_weights(profile, params.get("weights_dir"), **overrides))
    done = []
    nbs = numbered_notebooks(only=only)
    events = executed / "progress.jsonl"
    manager = _quiet_kernel_manager(executed / "kernels.log")
    with _progress_events(events):
        for i, nb in enumerate(nbs, 1):
            say(f"[{i}/{len(nbs)}] {nb.name}")
            done.append(_execute(nb, executed, params, manager, events, stream))
            say("    " + done[-1].pop("summary"))
    total = sum(d["seconds"] for d in done)
    say(f"run_all: {len(done)} notebook(s) in {total:.0f} s; executed copies in {executed}")
    if report and done:
        from phyllodes.data.cohort import cohort_name
        from phyllodes.report.html import build_report
        index = build_report(output, cohort_name(cohort), profile)
        say(f"run_all: report {index} (open file://{index})")
    return done


def _parameters(profile: str, cohort: str, device: str, seed: int, output: Path,
                extra: dict | None, settings: dict | None, weights_dir: str | None) -> dict:
    """The parameters every notebook gets; profile settings are validated (an unknown name or
    value is refused before anything runs)."""
    params = {"profile": profile, "cohort": str(cohort), "device": device, "seed": seed,
              "output_dir": str(output), **(extra or {})}
    if settings:
        from phyllodes.profiles import get_profile
        get_profile(profile, **settings)
        params["settings"] = dict(settings)
    if weights_dir:
        params["weights_dir"] = str(Path(weights_dir).resolve())
    return params


@contextlib.contextmanager
def _progress_events(events: Path):
    """Point the notebooks' training progress at ``events`` while they run (the variable is
    put back afterwards)."""
    from phyllodes import progress
    previous = os.environ.get(progress.ENV)
    os.environ[progress.ENV] = str(events)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = previous


def _execute(nb: Path, executed: Path, params: dict, manager, events: Path, stream) -> dict:
    """Run one notebook with papermill into ``executed/``, its progress shown on ``stream``;
    its name, seconds and summary line. A failing cell raises :class:`NotebookFailed` naming
    the cell and the executed copy that holds the traceback."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from phyllodes import progress
    t0 = time.perf_counter()
    with progress.TerminalView(events, nb.stem, stream) as view:
        try:
            pm.execute_notebook(str(nb), str(executed / nb.name), parameters=params,
                                progress_bar=False, cwd=str(paths.NOTEBOOKS),
                                kernel_name="python3", kernel_manager_class=manager)
        except PapermillExecutionError as e:
            raise NotebookFailed(
                f"{nb.name} failed in cell {e.cell_index} (execution count "
                f"{e.exec_count}): {e.ename}: {e.evalue}\n  executed copy with the "
                f"traceback: {executed / nb.name}") from None
    dt = time.perf_counter() - t0
    return {"notebook": nb.name, "seconds": round(dt, 1), "summary": view.summary(dt)}


def main_notebooks(args) -> int:
    try:
        run_notebooks(args.profile, args.cohort, args.device, args.seed, args.output,
                      args.only.split(",") if args.only else None,
                      settings=getattr(args, "settings", None) or None,
                      weights_dir=getattr(args, "weights_dir", None))
    except NotebookFailed as e:
        print(f"run_all: STOPPED. {e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # the pre-flight's list of encoders without weights
        print(f"run_all: STOPPED before training. {e}", file=sys.stderr)
        return 1
    return 0
