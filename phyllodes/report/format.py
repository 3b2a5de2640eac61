"""Tables formatted for people: what the HTML report and the ``.md`` tables show.

The ``.csv`` files keep full precision; this is only how a number is *shown*: metrics to 3
decimals, counts as integers, confidence intervals as the builders wrote them
(``"0.901 [0.864, 0.934]"``), p-values as ``p = 0.021`` / ``p < 0.001``, column names in words
(underscores to spaces, ``auc`` → ``AUC``), missing values as empty cells.
"""

from __future__ import annotations

import math
import re
from numbers import Integral, Real

import pandas as pd

#: a cell that is a plain number (and nothing else): formatted like one
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")

#: words written in capitals (or their usual spelling) in column names
_WORDS = {"auc": "AUC", "roc": "ROC", "ci": "CI", "sd": "SD", "ece": "ECE", "ppv": "PPV",
          "npv": "NPV", "f1": "F1", "delong": "DeLong", "iqr": "IQR", "lr": "LR",
          "mlp": "MLP", "cam": "CAM"}


def _missing(x) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return x.strip() == "" or x.strip().lower() in ("nan", "none", "<na>")
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def format_number(x, digits: int = 3) -> str:
    """A number as people read it: ``0.8651063498542275`` → ``"0.865"``, ``252`` → ``"252"``,
    NaN → ``""``; strings that are numbers are formatted too, other strings are kept."""
    if _missing(x):
        return ""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, str):
        if not _NUMBER.match(x):
            return x
        if _INTEGER.match(x):
            return str(int(x))
        x = float(x)
    if isinstance(x, Integral):
        return str(int(x))
    if isinstance(x, Real):
        v = float(x)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and abs(v) < 0.5 * 10 ** -digits:  # would show as 0.000
            return f"{v:.1e}"
        return f"{v:.{digits}f}"
    return str(x)


def format_p(p) -> str:
    """A p-value: ``0.020899`` → ``"p = 0.021"``, ``0.0004`` → ``"p < 0.001"``, NaN → ``""``;
    strings the builders already formatted (``"<0.001"``, ``"0.021"``) read the same."""
    if _missing(p):
        return ""
    if isinstance(p, str):
        s = p.strip()
        if s.startswith("p ") or s.startswith("p<") or s.startswith("p="):
            return s
        if s.startswith("<"):
            return "p < " + s[1:].strip()
        if not _NUMBER.match(s):
            return s
        p = float(s)
    v = float(p)
    if math.isnan(v):
        return ""
    return "p < 0.001" if v < 0.001 else f"p = {v:.3f}"


def is_p_column(name) -> bool:
    """Whether a column holds p-values: ``delong_p``, ``bootstrap_p``, ``p_value``,
    ``DeLong p``, ``p`` (not ``paper AUC``, ``ppv``, ``specificity``)."""
    tokens = [t for t in re.split(r"[^0-9a-zA-Z]+", str(name).lower()) if t]
    return "p" in tokens or "pvalue" in tokens


def human_column(name) -> str:
    """A column name in words: ``delong_p`` → ``"DeLong p"``, ``n_subjects`` →
    ``"n subjects"``, ``auc (pooled, 95% CI)`` → ``"AUC (pooled, 95% CI)"``."""
    text = re.sub(r"\s+", " ", str(name).replace("_", " ")).strip()
    text = re.sub(r"\bp value\b", "p-value", text)
    return re.sub(r"[A-Za-z][A-Za-z0-9]*",
                  lambda m: _WORDS.get(m.group(0), m.group(0)) if m.group(0).islower()
                  else m.group(0), text)


def format_table(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``df`` as strings for people (see the module): same rows, same index, the columns
    renamed by :func:`human_column`."""
    out = pd.DataFrame(index=df.index)
    for i, col in enumerate(df.columns):
        values = df.iloc[:, i]
        fmt = format_p if is_p_column(col) else (lambda x: format_number(x, digits))
        out[i] = [fmt(v) for v in values]
    out.columns = [human_column(c) for c in df.columns]
    return out
