"""Tables of the study (Table 1 here) and the one writer of every table: CSV, Markdown, LaTeX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import paths
from .cohort import Cohort


def _fmt_p(p: float) -> str:
    if p is None or np.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _mean_sd(x: pd.Series) -> str:
    x = x.dropna()
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if len(x) > 1 else (
        f"{x.mean():.1f}" if len(x) else "")


def _median_iqr(x: pd.Series) -> str:
    x = x.dropna()
    if not len(x):
        return ""
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return f"{q2:.1f} [{q1:.1f}, {q3:.1f}]"


def _n_pct(k: int, n: int) -> str:
    return f"{k} ({100 * k / n:.1f}%)" if n else "0"


def table1(cohort: Cohort) -> pd.DataFrame:
    """Cohort characteristics by class (subject level) with fitting tests.

    Numeric features: mean ± SD and median [IQR], Mann-Whitney U test. Categorical features:
    n (%) per level, chi-square test (Fisher's exact test for 2x2 tables). Missing values are
    counted on their own row and left out of the tests.
    """
    s = cohort.subjects
    cfg = cohort.config
    neg, pos = s[s["y"] == 0], s[s["y"] == 1]
    cols = {"overall": s, "negative": neg, "positive": pos}
    rows: list[dict] = []

    def add(characteristic, level, values, p=np.nan, test=""):
        rows.append({"characteristic": characteristic, "level": level, **values,
                     "p_value": _fmt_p(p), "test": test})

    add("Subjects", "n", {k: str(len(v)) for k, v in cols.items()})
    for lab in [*cfg.negative_labels, *cfg.positive_labels]:
        add("Label", lab, {k: _n_pct(int((v["label"] == lab).sum()), len(v))
                           for k, v in cols.items()})
    p = stats.mannwhitneyu(neg["n_images"], pos["n_images"]).pvalue if (
        s["n_images"].nunique() > 1) else np.nan
    add("Images per subject", "mean ± SD", {k: _mean_sd(v["n_images"].astype(float))
                                              for k, v in cols.items()}, p,
        "Mann-Whitney U" if not np.isnan(p) else "")
    add("Images", "n", {k: str(int(v["n_images"].sum())) for k, v in cols.items()})
    for f in cfg.numeric_features:
        a, b = neg[f].dropna(), pos[f].dropna()
        p = stats.mannwhitneyu(a, b).pvalue if len(a) and len(b) else np.nan
        add(f, "mean ± SD", {k: _mean_sd(v[f]) for k, v in cols.items()}, p, "Mann-Whitney U")
        add(f, "median [IQR]", {k: _median_iqr(v[f]) for k, v in cols.items()})
        add(f, "missing", {k: _n_pct(int(v[f].isna().sum()), len(v)) for k, v in cols.items()})
    for f in cfg.categorical_features:
        observed = s.dropna(subset=[f])
        ct = pd.crosstab(observed[f], observed["y"])
        p, test = np.nan, ""
        if ct.shape[0] >= 2 and ct.shape[1] == 2:
            if ct.shape == (2, 2):
                p, test = stats.fisher_exact(ct.to_numpy()).pvalue, "Fisher exact"
            else:
                p, test = stats.chi2_contingency(ct.to_numpy())[1], "chi-square"
        levels = s[f].dropna().value_counts().index
        for j, lev in enumerate(levels):
            add(f, str(lev), {k: _n_pct(int((v[f] == lev).sum()), len(v))
                              for k, v in cols.items()},
                p if j == 0 else np.nan, test if j == 0 else "")
        add(f, "missing", {k: _n_pct(int(v[f].isna().sum()), len(v)) for k, v in cols.items()})
    out = pd.DataFrame(rows)
    neg_name = "/".join(cfg.negative_labels)
    pos_name = "/".join(cfg.positive_labels)
    return out.rename(columns={
        "overall": f"overall (n={len(s)})",
        "negative": f"{neg_name} (n={len(neg)})",
        "positive": f"{pos_name} (n={len(pos)})",
    })


def write_table(df: pd.DataFrame, cohort: str, stem: str, caption: str = "",
                index: bool = False) -> dict[str, Path]:
    """Write ``tables/<cohort>/<stem>.{csv,md,tex}``; return the paths."""
    d = paths.tables_dir(cohort)
    out = {ext: d / f"{stem}.{ext}" for ext in ("csv", "md", "tex")}
    df.to_csv(out["csv"], index=index)
    md = df.to_markdown(index=index)
    out["md"].write_text((f"**{caption}**\n\n" if caption else "") + md + "\n")
    tex = df.to_latex(index=index, escape=True, caption=caption or None,
                      label=f"tab:{stem}")
    out["tex"].write_text(tex)
    return out


def write_record(record: dict, cohort: str, name: str) -> Path:
    """Write what a notebook measured as ``results/<cohort>/<name>.json`` for later steps."""
    p = paths.results_dir(cohort) / f"{name}.json"
    p.write_text(json.dumps(record, indent=2, default=_json_default))
    return p


def read_record(cohort: str, name: str) -> dict:
    p = paths.results_dir(cohort) / f"{name}.json"
    return json.loads(p.read_text())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
