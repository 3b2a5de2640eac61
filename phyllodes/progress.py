"""Progress of a study as events: written by the runs, shown live in the terminal.

Inside a notebook run by ``./run_all.sh`` the kernel cannot print to the terminal, so training
writes small JSON events (grid start, run start/skip/end, epoch end) to the file named by the
environment variable ``PHYLLODES_PROGRESS``; :class:`TerminalView`, in the process that runs
the notebooks, follows that file and shows one updating line per run (notebook, run k of n,
modality · model · fusion · fold, epoch, inner-validation AUC, time left) and a summary per
notebook. Where the output is not a terminal (CI logs) it prints one plain line per finished
run instead of redrawing. Without the variable (a person in JupyterLab) nothing is written and
the notebook shows its own progress bars (tqdm widgets).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

ENV = "PHYLLODES_PROGRESS"


def enabled() -> bool:
    """Whether events go to a progress file (a notebook run by the runner)."""
    return bool(os.environ.get(ENV))


def emit(kind: str, **fields) -> None:
    """Append one event to the progress file, if there is one."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"kind": kind, "t": time.time(), **fields}, default=str)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def bars_wanted(progress: bool) -> bool:
    """Progress bars in the notebook only for a person: a runner shows them in the terminal."""
    return progress and not enabled()


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


class TerminalView:
    """Follows a progress file in a background thread and renders it for a person."""

    def __init__(self, path: Path, notebook: str, stream=None, interval: float = 0.5):
        self.path, self.notebook = Path(path), notebook
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._offset = 0
        self.state: dict = {"k": 0, "n": 0, "trained": 0, "reused": 0, "run_seconds": [],
                            "run": None, "epoch": None, "to_train": 0}
        self._width = 0

    def __enter__(self) -> "TerminalView":
        self.path.write_text("")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    def summary(self, seconds: float) -> str:
        s = self.state
        runs = (f"{s['trained'] + s['reused']} run(s): {s['trained']} trained, {s['reused']} "
                "reused" if s["trained"] + s["reused"] else "no training runs")
        return f"{self.notebook}: {runs}; {_duration(seconds)}"

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        complete = chunk[:chunk.rfind("\n") + 1]
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            try:
                self._event(json.loads(line))
            except (ValueError, KeyError):
                continue

    def _event(self, e: dict) -> None:
        s, kind = self.state, e["kind"]
        if kind == "grid":
            s.update(k=0, n=e["n"], to_train=e["to_train"], labels=list(e.get("labels", [])))
        elif kind == "run_start":
            s["k"], s["run"], s["epoch"] = e["k"], e, None
            s["run_t0"] = e["t"]
            self._draw()
        elif kind == "epoch":
            s["epoch"] = e
            self._draw()
        elif kind == "run_skip":
            s["reused"] += 1
            s["k"] = e["k"]
        elif kind == "run_end":
            s["trained"] += 1
            s["run_seconds"].append(e["seconds"])
            s.setdefault("by_label", {}).setdefault(e["label"], []).append(e["seconds"])
            s["to_train"] = max(0, s["to_train"] - 1)
            if e["label"] in s.get("labels", []):
                s["labels"].remove(e["label"])
            if not self.tty:
                self._line(f"[{self.notebook[:2]}] run {e['k']}/{s['n']} done: {e['label']} · "
                           f"fold {e['fold']} ({_best(e)}"
                           f"inner-val AUC {_fmt(e.get('val_auc'))}, {_duration(e['seconds'])})"
                           f"{self._left()}")

    def _left(self) -> str:
        """Time left in this notebook: each run still to train at the mean time of the runs of
        the same model so far (the mean of all runs for a model not seen yet)."""
        s = self.state
        if not s["run_seconds"] or not s["to_train"]:
            return ""
        overall = sum(s["run_seconds"]) / len(s["run_seconds"])
        by = s.get("by_label", {})
        labels = s.get("labels") or []
        left = (sum(sum(by[lab]) / len(by[lab]) if lab in by else overall for lab in labels)
                if labels else overall * s["to_train"])
        return f" · ~{_duration(left)} left"

    def _draw(self) -> None:
        if not self.tty:
            return
        s, r, ep = self.state, self.state["run"], self.state["epoch"]
        text = f"[{self.notebook}] run {s['k']}/{s['n']} · {r['label']} · fold {r['fold']}"
        if ep is not None:
            text += (f" · epoch {ep['epoch'] + 1}/{ep['epochs']} · inner-val AUC "
                     f"{_fmt(ep.get('val_auc'))}")
        text += self._left()
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns or 120
        except (OSError, ValueError):
            width = 120
        text = text[:max(40, width - 1)]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = max(self._width, len(text))

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _best(e: dict) -> str:
    return f"best epoch {e['best_epoch'] + 1}, " if e.get("best_epoch") is not None else ""


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"
