"""Generated parts of README.md: the paper artifact map (and, from the committed tables, the
results), written between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers.

``python -m phyllodes readme`` rewrites them; ``--check`` only says whether README.md is up to
date (exit status 1 when not), which the tests and ``./run_all.sh --check`` run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from . import paths
from .artifacts import artifact_map_markdown

README = paths.ROOT / "README.md"

#: marker name -> function returning the Markdown between the markers
SECTIONS: dict[str, Callable[[], str]] = {"artifact-map": artifact_map_markdown}


def render(text: str, sections: dict[str, Callable[[], str]] = SECTIONS) -> str:
    """``text`` with every generated section replaced by its current content."""
    for name, make in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md has no '<!-- {name}:start -->' ... "
                             f"'<!-- {name}:end -->' markers")
        body = make().rstrip("\n") + "\n"
        text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text


def stale_sections(path: Path = README) -> list[str]:
    """Names of the generated sections whose text differs from what they would be now."""
    text = path.read_text()
    return [n for n in SECTIONS if render(text, {n: SECTIONS[n]}) != text]


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m phyllodes readme", description=__doc__)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = ap.parse_args(argv)
    stale = stale_sections()
    if args.check:
        for n in stale:
            print(f"README.md: section '{n}' is out of date; run python -m phyllodes readme")
        return 1 if stale else 0
    README.write_text(render(README.read_text()))
    print(f"README.md: rewrote {', '.join(SECTIONS)}" if stale else "README.md: up to date")
    return 0
