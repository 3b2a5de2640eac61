"""Write and check the study notebooks' structure (one tagged parameters cell, no outputs).

Used as ``python scripts/nbtools.py check`` (also run by the tests) and, by maintainers, as a
library to write a notebook from a list of cells: ``write_notebook(path, cells)`` where each
cell is ("md", text), ("code", text) or ("parameters", text).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def write_notebook(path: Path | str, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            c = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, str(path))


def check_notebook(path: Path) -> list[str]:
    """Problems with a stored notebook: outputs, parameters cell, literal-only parameters."""
    import ast
    nb = nbformat.read(str(path), as_version=4)
    problems = []
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{path.name}: {len(tagged)} cells tagged 'parameters' (want 1)")
    for c in tagged:
        for node in ast.parse(c.source).body:
            if not (isinstance(node, ast.Assign) and _is_literal(node.value)):
                problems.append(f"{path.name}: parameters cell line {node.lineno} is not "
                                "'name = <plain literal>'")
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")):
            problems.append(f"{path.name}: cell {i} is stored with outputs; clear them")
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        problems.append(f"{path.name}: the first cell must be a markdown title")
    return problems


def _is_literal(node) -> bool:
    try:
        import ast
        ast.literal_eval(node)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    if sys.argv[1:] == ["check"]:
        probs = [p for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))
                 for p in check_notebook(nb)]
        print("\n".join(probs) or "notebooks OK")
        sys.exit(1 if probs else 0)
    print(__doc__)
