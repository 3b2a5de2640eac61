"""The study as a page: ``report/<cohort>/index.html``, readable from a file:// URL, offline.

:func:`build_report` renders each executed notebook to HTML (nbconvert, its ``lab``
template, with every script or style that would load from the internet left out) and writes an
index page: the run's profile, seed, commit and time; the paper artifact map (artifact →
notebook → files → builder) from :data:`phyllodes.artifacts.ARTIFACTS`; every table inline;
every figure as a thumbnail linking to the full PNG and the PDF. Links are relative to the
output root (``../../tables/<cohort>/...``), and absolute paths of the machine that ran the study
are replaced by placeholders, so the folder can be moved, zipped or attached.

``./run_all.sh`` builds it last; ``./run_all.sh --report`` (``python -m phyllodes report``)
rebuilds it alone from existing outputs. Reports of private cohorts stay out of git
(``report/`` is ignored).
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path

import pandas as pd

from phyllodes import paths
from phyllodes.report.artifacts import ARTIFACTS, Artifact

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:72em;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.meta td:first-child{font-weight:600}
.thumbs{display:flex;flex-wrap:wrap;gap:1em}.thumb{width:22em}
.thumb img{width:100%;border:1px solid #ddd}.caption{font-size:.85em;color:#444}
.scroll{overflow-x:auto}.missing{color:#999}code{font-size:.92em}
"""


#: after loading, the page records how many images it has and how many failed to load
#: (``<body data-images=N data-broken=K>``): what the browser test reads
IMAGE_CHECK = ("window.addEventListener('load',function(){var im=[].slice.call(document.images);"
               "document.body.dataset.images=im.length;document.body.dataset.broken=im.filter("
               "function(i){return !(i.complete&&i.naturalWidth>0)}).length;});")


def _esc(x) -> str:
    return html.escape(str(x))


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _scrub(text: str, roots: list[Path]) -> str:
    """Absolute paths of this machine (output root, repository, home) → placeholders."""
    for root, name in zip(roots, ("<output>", "<repository>", "~")):
        for variant in {str(root), str(root.resolve())}:
            if variant and variant != "/":
                text = text.replace(variant, name)
    return text


def _offline(page: str) -> str:
    """Drop every <script src=http...> and <link href=http...>: the page must work offline."""
    page = re.sub(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>', "", page)
    return re.sub(r'<link[^>]*\bhref="https?://[^"]*"[^>]*>', "", page)


def render_notebook(executed: Path, out_html: Path, roots: list[Path]) -> Path:
    """One executed notebook as a stand-alone HTML page."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(nb)
    out_html.write_text(_offline(_scrub(body, roots)), encoding="utf-8")
    return out_html


def _records(output: Path, cohort: str) -> dict[str, dict]:
    folder = output / "results" / cohort
    out = {}
    for p in sorted(folder.glob("nb*.json")) if folder.is_dir() else []:
        try:
            out[p.stem] = json.loads(p.read_text())
        except ValueError:
            continue
    return out


def _provenance_rows(records: dict[str, dict]) -> list[tuple[str, str]]:
    prov = next((r["provenance"] for r in records.values() if "provenance" in r), None)
    if prov is None:
        return [("provenance", "no notebook record found")]
    code = prov.get("code") or {}
    commit = code.get("commit") or "not a git checkout"
    if code.get("dirty"):
        commit += " (with uncommitted changes)"
    profile = prov.get("profile", {})
    return [("cohort", prov.get("cohort", "")), ("profile", profile.get("name", "")),
            ("seed", prov.get("seed", "")), ("device", prov.get("device", "")),
            ("commit", commit), ("recipe version", prov.get("recipe_version", "")),
            ("torch", prov.get("environment", {}).get("torch", "")),
            ("image size", profile.get("image_size", "")),
            ("folds", profile.get("folds", ""))]


def _table_html(csv: Path) -> str:
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    caption = ""
    md = csv.with_suffix(".md")
    if md.exists():
        first = md.read_text().splitlines()[0] if md.read_text() else ""
        if first.startswith("**") and first.endswith("**"):
            caption = first.strip("*")
    return (f'<p class="caption">{_esc(caption)}</p>' if caption else "") + \
        '<div class="scroll">' + df.to_html(index=False, escape=True, border=0) + "</div>"


def _artifact_rows(artifacts: tuple[Artifact, ...], output: Path, cohort: str, here: Path,
                   notebooks: dict[str, str]) -> str:
    rows = []
    for a in artifacts:
        items = []
        for kind, stems, exts in (("tables", a.tables, ("csv", "md", "tex")),
                                  ("figures", a.figures, ("png", "pdf"))):
            for stem in stems:
                files = [(e, output / kind / cohort / f"{stem}.{e}") for e in exts]
                if not any(p.exists() for _, p in files):
                    items.append(f'<span class="missing">{_esc(stem)} (not made for this '
                                 "cohort)</span>")
                    continue
                links = " · ".join(f'<a href="{_rel(p, here)}">{e}</a>' for e, p in files
                                   if p.exists())
                items.append(f'<a href="#{_esc(stem)}">{_esc(stem)}</a> ({links})')
        if a.name == "subject-stratified folds":
            splits = sorted((output / "tables" / cohort).glob("splits_*fold_seed*.csv"))
            items += [f'<a href="{_rel(p, here)}">{_esc(p.name)}</a>' for p in splits]
        nb = notebooks.get(a.notebook)
        nb_cell = f'<a href="{nb}">{_esc(a.notebook)}</a>' if nb else _esc(a.notebook)
        built = ", ".join(f"<code>{_esc(b)}</code>" for b in a.built_by)
        rows.append(f"<tr><td>{_esc(a.name)}</td><td>{nb_cell}</td>"
                    f"<td>{'<br>'.join(items)}</td><td>{built}</td></tr>")
    return ("<table><tr><th>paper artifact</th><th>notebook</th><th>files</th>"
            "<th>built by</th></tr>" + "".join(rows) + "</table>")


def build_report(output: Path | str | None = None, cohort: str = "breast-lesions-usg",
                 profile: str | None = None) -> Path:
    """Write ``<output>/report/<cohort>/index.html`` (and one page per executed notebook)
    from existing outputs; return the index's path."""
    output = Path(output or paths.ROOT).resolve()
    here = output / "report" / cohort
    here.mkdir(parents=True, exist_ok=True)
    roots = [output, paths.ROOT, Path.home()]
    records = _records(output, cohort)
    if profile is None:
        prov = next((r.get("provenance") for r in records.values() if "provenance" in r), {})
        profile = (prov or {}).get("profile", {}).get("name", "")
    executed = output / "executed" / profile if profile else None
    notebooks: dict[str, str] = {}
    if executed is not None and executed.is_dir():
        for nb in sorted(executed.glob("[0-9][0-9]_*.ipynb")):
            page = render_notebook(nb, here / f"{nb.stem}.html", roots)
            notebooks[nb.stem] = page.name
    tables_dir, figures_dir = output / "tables" / cohort, output / "figures" / cohort
    parts = [f"<h1>Study report · {_esc(cohort)}</h1>",
             '<p>Multimodal deep learning for phyllodes tumour grading (Abir et al., IEEE BSN '
             '2025), reproduced by this repository. Every table and figure below was made by '
             "the notebooks listed with it.</p>",
             '<table class="meta">' + "".join(
                 f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>"
                 for k, v in [*_provenance_rows(records),
                              ("report built", time.strftime("%Y-%m-%d %H:%M %Z"))])
             + "</table>",
             "<h2>Notebooks</h2><ul>" + "".join(
                 f'<li><a href="{page}">{_esc(stem)}</a></li>'
                 for stem, page in notebooks.items()) + "</ul>"
             if notebooks else "<h2>Notebooks</h2><p>No executed notebooks found.</p>",
             "<h2>Paper artifact → notebook → files</h2>",
             _artifact_rows(ARTIFACTS, output, cohort, here, notebooks)]
    parts.append("<h2>Tables</h2>")
    for csv in sorted(tables_dir.glob("*.csv")) if tables_dir.is_dir() else []:
        links = " · ".join(f'<a href="{_rel(csv.with_suffix("." + e), here)}">{e}</a>'
                           for e in ("csv", "md", "tex") if csv.with_suffix("." + e).exists())
        table = _table_html(csv)
        n_rows = table.count("<tr>") - 1
        if n_rows > 30:  # long tables (the folds file) fold away
            table = f"<details><summary>{n_rows} rows</summary>{table}</details>"
        parts.append(f'<h3 id="{_esc(csv.stem)}">{_esc(csv.stem)}</h3><p>{links}</p>' + table)
    parts.append('<h2>Figures</h2><div class="thumbs">')
    for png in sorted(figures_dir.glob("*.png")) if figures_dir.is_dir() else []:
        pdf = png.with_suffix(".pdf")
        pdf_link = f' · <a href="{_rel(pdf, here)}">PDF</a>' if pdf.exists() else ""
        parts.append(f'<div class="thumb" id="{_esc(png.stem)}"><a href="{_rel(png, here)}">'
                     f'<img src="{_rel(png, here)}" alt="{_esc(png.stem)}"></a>'
                     f'<div class="caption">{_esc(png.stem)} · <a href="{_rel(png, here)}">PNG'
                     f"</a>{pdf_link}</div></div>")
    parts.append("</div>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Study report · {_esc(cohort)}</title><style>{CSS}</style>"
            f"<script>{IMAGE_CHECK}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
    index = here / "index.html"
    index.write_text(_scrub(page, roots), encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m phyllodes report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="", help="output root (default: the repository)")
    ap.add_argument("--cohort", default="breast-lesions-usg", help="a cohort name or folder")
    ap.add_argument("--profile", default=None, help="whose executed notebooks (default: the "
                    "profile of the notebook records)")
    args = ap.parse_args(argv)
    from phyllodes.data.cohort import cohort_name
    index = build_report(args.output or None, cohort_name(args.cohort), args.profile)
    print(f"report: {index} (open it in a browser: file://{index})")
    return 0
