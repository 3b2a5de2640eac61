"""The recipe version, and the fingerprint of the code that decides what a run computes.

Run ids hash :data:`RECIPE_VERSION` (with every result setting of the profile, see
:mod:`phyllodes.train.runs`): bump it whenever a change alters what a run computes, so that old
runs are never reused. :data:`RECIPE_FILES` are the files whose code decides what a run
computes (training, the networks, the clinical preprocessing, image decoding and augmentation,
the inner split) and :data:`RECIPE_SOURCE` their fingerprint when the version was last reviewed:
tests/test_runs.py fails when that code changes without the fingerprint being updated — then
bump RECIPE_VERSION if what a run computes changed, and record the new fingerprint either way.

Validation code (the data contract, the cohort loader) is not in the fingerprint: what it lets
through is covered by the cohort's fingerprint, a digest of the validated table itself
(:meth:`phyllodes.data.contract.Checks.fingerprint`), so a reworded error message or a new check
invalidates no run, while a change to what a cohort loads as does. Comments, docstrings and
formatting never count (:func:`code_digest` hashes syntax trees without docstrings).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

#: Version of the training recipe (see the module docstring).
RECIPE_VERSION = 9
#: Files (relative to the package) whose code decides what a run computes.
RECIPE_FILES = ("train/trainer.py", "train/spec.py", "train/probe.py", "train/views.py",
                "models/network.py", "models/encoders.py", "models/families.py",
                "models/pretrained.py",
                "data/clinical.py", "data/images.py", "data/imageio.py", "data/splits.py",
                "keys.py", "kernels.py")
RECIPE_SOURCE = "242d67795bd10d18"


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str) -> str:
    """Digest of Python source as a syntax tree without docstrings (comments, docstrings and
    formatting do not count)."""
    tree = _without_docstrings(ast.parse(textwrap.dedent(source)))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def code_digest(*objects) -> str:
    """:func:`source_digest` of functions or classes (e.g. the augmentation a cache depends
    on): a change to their code changes it, an edited docstring or comment does not."""
    return hashlib.sha256("|".join(source_digest(inspect.getsource(o))
                                   for o in objects).encode()).hexdigest()[:16]


def recipe_fingerprint(package: Path = PACKAGE) -> str:
    """Digest of the :data:`RECIPE_FILES` under ``package`` (the recorded
    :data:`RECIPE_SOURCE` line itself left out)."""
    h = hashlib.sha256()
    for name in RECIPE_FILES:
        h.update(name.encode() + source_digest((package / name).read_text()).encode())
    return h.hexdigest()[:16]
