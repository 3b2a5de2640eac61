"""The study as a page: ``report/<cohort>/index.html``, readable from a file:// URL, offline.

The page reads like the paper's results: what the tables say (the generated narrative of the
bundled cohort), where the numbers come from (the commit, profile, seed and time of the
outputs shown), then one section per part of the paper in the paper's order (cohort, single
modalities, multimodal, encoders, calibration and clinical utility, explanations, how the
recipe was chosen, external validation and the model card when they exist), each with its
figures inline and its tables formatted for people (:mod:`phyllodes.report.format`). The
paper artifact map (artifact → notebook → files → builder, from
:data:`phyllodes.report.artifacts.ARTIFACTS`) and the executed notebooks, each rendered to HTML
(nbconvert, its ``lab`` template, with every script or style that would load from the internet
left out), close it as an appendix. It prints (``@media print``: no navigation, tables whole,
figures on one page, folded tables unfolded).

Links are relative to the output root (``../../tables/<cohort>/...``), and absolute paths of
the machine that ran the study are replaced by placeholders, so the folder can be moved, zipped
or attached.

``./run_all.sh`` builds it last; ``./run_all.sh --report`` (``python -m phyllodes report``)
rebuilds it alone from existing outputs. Reports of private cohorts stay out of git
(``report/`` is ignored).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phyllodes import paths
from phyllodes.report.artifacts import ARTIFACTS, Artifact
from phyllodes.report.format import format_table

BUNDLED = "breast-lesions-usg"

#: tables longer than this fold away (``<details>``)
LONG_TABLE = 12

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:72em;
color:#222;line-height:1.45;padding:0 1em;overflow-wrap:break-word}
h1{font-size:1.6em;margin-bottom:.2em}
h2{margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:.15em}
h3{margin-top:1.6em}h4{margin:1.2em 0 .2em;font-size:1em}
nav.toc{background:#f7f7f7;border:1px solid #e3e3e3;padding:.4em 1em;font-size:.92em}
nav.toc ol{margin:.3em 0;padding-left:1.4em;columns:2 18em}
.narrative li{margin:.35em 0}.narrative .see{font-size:.85em;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%;margin:.4em 0 1.2em}
table{border-collapse:collapse;font-size:.82em;max-width:100%}
.scroll table{min-width:50%}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top;
overflow-wrap:break-word;word-break:normal}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fafafa}
.meta td:first-child{font-weight:600;white-space:nowrap}
figure{margin:1em 0 1.4em}figure img{max-width:100%;height:auto;display:block;
border:1px solid #e3e3e3}
.caption,figcaption{font-size:.85em;color:#444}.files{font-size:.8em;color:#666}
.missing{color:#999}.note{color:#555;font-size:.92em}code{font-size:.92em}
details>summary{cursor:pointer;color:#245;margin:.2em 0}
.appendix{font-size:.95em}
@media (max-width:900px){body{margin:1em auto}table{font-size:.75em}}
@media print{
  nav,.toc,.files,details>summary{display:none}
  body{max-width:none;margin:0;padding:0;font-size:10pt}
  a{color:inherit;text-decoration:none}
  .scroll{overflow:visible}
  table{width:100%;table-layout:fixed;font-size:7pt;page-break-inside:auto}
  th,td,td.num{overflow-wrap:anywhere;white-space:normal;padding:.15em .25em}
  tr,figure,img{break-inside:avoid;page-break-inside:avoid}
  thead{display:table-header-group}
  figure img{max-height:24cm;width:auto;max-width:100%}
  h2,h3,h4,.caption{break-after:avoid;page-break-after:avoid}
  details::details-content{content-visibility:visible;display:contents}
  details>*{display:block}
}
"""


#: after loading, the page records how many images it has and how many failed to load
#: (``<body data-images=N data-broken=K>``), how wide it is against the window
#: (``data-scroll-width``, ``data-inner-width``) and its sections in order
#: (``data-sections``): what the browser tests read
IMAGE_CHECK = ("window.addEventListener('load',function(){var im=[].slice.call(document.images);"
               "document.body.dataset.images=im.length;document.body.dataset.broken=im.filter("
               "function(i){return !(i.complete&&i.naturalWidth>0)}).length;"
               "document.body.dataset.scrollWidth=document.documentElement.scrollWidth;"
               "document.body.dataset.innerWidth=window.innerWidth;"
               "document.body.dataset.sections=[].slice.call(document.querySelectorAll("
               "'section.paper')).map(function(s){return s.id}).join(' ');});"
               # printing unfolds the long tables, and folds them back afterwards
               "window.addEventListener('beforeprint',function(){[].forEach.call("
               "document.querySelectorAll('details:not([open])'),function(d){d.open=true;"
               "d.dataset.printed=1})});window.addEventListener('afterprint',function(){"
               "[].forEach.call(document.querySelectorAll('details[data-printed]'),"
               "function(d){d.open=false;delete d.dataset.printed})});")


@dataclass(frozen=True)
class Section:
    """One part of the paper: its anchor, its title and the artifacts it shows."""

    id: str
    title: str
    artifacts: tuple[Artifact, ...]
    optional: bool = False  #: left out when none of its files exist


def _is_calibration(a: Artifact) -> bool:
    return a.notebook.startswith("04") and ("calibration" in a.name or "utility" in a.name)


#: (anchor, title, which artifacts), in the paper's order
_PLAN = (("cohort", "Cohort", lambda a: a.notebook.startswith("01"), False),
         ("single-modalities", "Single modalities", lambda a: a.notebook.startswith("02"), False),
         ("multimodal", "Multimodal", lambda a: a.notebook.startswith("03"), False),
         ("encoders", "Encoders",
          lambda a: a.notebook.startswith("04") and not _is_calibration(a), False),
         ("calibration", "Calibration and clinical utility", _is_calibration, False),
         ("explanations", "Explanations", lambda a: a.notebook.startswith("05"), False),
         ("recipe", "How the recipe was chosen", lambda a: a.notebook.startswith("06"), False),
         ("external-validation", "External validation",
          lambda a: a.notebook.startswith("07"), True))


def sections(artifacts: tuple[Artifact, ...] = ARTIFACTS) -> list[Section]:
    """The paper's sections with their artifacts (grouped by notebook), in the paper's order
    (the model card, which has no artifact, is added by :func:`build_report`)."""
    return [Section(i, t, tuple(a for a in artifacts if keep(a)), opt)
            for i, t, keep, opt in _PLAN]


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


def _scrub_page(page: str, roots: list[Path]) -> str:
    """:func:`_scrub` for everything but the relative links (``href``/``src`` values that do
    not start with ``/``), which must keep resolving wherever the page was written."""
    pieces = re.split(r'((?:href|src)="[^"/#:][^"]*")', page)
    return "".join(p if i % 2 and ":" not in p.split('"')[1][:12] else _scrub(p, roots)
                   for i, p in enumerate(pieces))


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


def _record_files(output: Path, cohort: str) -> dict[str, Path]:
    folder = output / "results" / cohort
    return {p.stem: p for p in sorted(folder.glob("nb*_*.json"))} if folder.is_dir() else {}


def _records(output: Path, cohort: str) -> dict[str, dict]:
    out = {}
    for stem, p in _record_files(output, cohort).items():
        try:
            out[stem] = json.loads(p.read_text())
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------- provenance


def _git(output: Path, *args: str) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=output, capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def tables_commit(output: Path, cohort: str) -> tuple[str, str, bool] | None:
    """(commit, commit time, tables changed since) of the last commit that touched
    ``tables/<cohort>/`` under ``output``; None when the tables are not committed there."""
    folder = Path(output) / "tables" / cohort
    if not folder.is_dir():
        return None
    line = _git(folder, "log", "-1", "--format=%H%x09%cI", "--", ".")
    if "\t" not in line:
        return None
    commit, when = line.split("\t", 1)
    dirty = bool(_git(folder, "status", "--porcelain", "--", "."))
    return commit, when, dirty


def _fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(t))


def provenance_rows(output: Path, cohort: str) -> list[tuple[str, str]]:
    """Where the numbers shown come from: the notebook records' provenance (commit, profile,
    seed, ...) and their file times, or, for a report rebuilt from committed tables only, the
    last commit that touched them."""
    files = _record_files(output, cohort)
    records = _records(output, cohort)
    provs = {k: r["provenance"] for k, r in records.items() if isinstance(r.get("provenance"),
                                                                            dict)}
    if not provs:
        found = tables_commit(output, cohort)
        if found is None:
            return [("source", "no notebook record (results/<cohort>/nb*_*.json) and the "
                               "tables are not committed: the commit, profile and seed of "
                               "these outputs are unknown")]
        commit, when, dirty = found
        return [("source", "committed tables only: no notebook record "
                           "(results/<cohort>/nb*_*.json) in this output folder, so the "
                           "commit is that of the last change to tables/<cohort>/"),
                ("cohort", cohort),
                ("tables commit", commit + (" (the tables have uncommitted changes since)"
                                            if dirty else "")),
                ("tables committed", when),
                ("profile, seed", "not recorded with the committed tables")]

    def distinct(get) -> str:
        seen: dict[str, list[str]] = {}
        for name, prov in provs.items():
            try:
                v = get(prov)
            except (AttributeError, KeyError, TypeError):
                v = ""
            seen.setdefault(str(v if v not in (None, "") else "—"), []).append(name[:4])
        if len(seen) == 1:
            return next(iter(seen))
        return "; ".join(f"{v} ({', '.join(n)})" for v, n in seen.items())

    def commit_of(prov) -> str:
        code = prov.get("code") or {}
        c = code.get("commit") or "not a git checkout"
        return c + (" (with uncommitted changes)" if code.get("dirty") else "")

    times = [files[k].stat().st_mtime for k in provs if k in files]
    written = (_fmt_time(min(times)) if len(times) == 1 or min(times) == max(times) else
               f"{_fmt_time(min(times))} – {_fmt_time(max(times))}") if times else ""
    return [("source", f"{len(provs)} notebook record(s): "
                       + ", ".join(f"{k}.json" for k in provs)),
            ("cohort", distinct(lambda p: p.get("cohort", cohort))),
            ("commit", distinct(commit_of)),
            ("profile", distinct(lambda p: p["profile"].get("name", ""))),
            ("seed", distinct(lambda p: p.get("seed", ""))),
            ("outputs written", written),
            ("device", distinct(lambda p: p.get("device", ""))),
            ("recipe version", distinct(lambda p: p.get("recipe_version", ""))),
            ("torch", distinct(lambda p: p["environment"].get("torch", ""))),
            ("image size", distinct(lambda p: p["profile"].get("image_size", ""))),
            ("folds", distinct(lambda p: p["profile"].get("folds", "")))]


# --------------------------------------------------------------------------- the narrative

#: bullet → the table it is about (first match of its bold heading, then of its text)
_BULLET_TABLES = ((r"linear probe|image branch", "table_unimodal_baselines"),
                  (r"every clinical column", "table3c_modality_comparison_all"),
                  (r"multimodal against|single modalit", "table3_modality_comparison"),
                  (r"encoder|table 2", "table2_encoder_comparison"),
                  (r"share", "table7_modality_share"),
                  (r"faithful", "table6b_cam_faithfulness"),
                  (r"where grad-cam", "table6c_cam_anatomy"),
                  (r"sanity", "table6d_cam_sanity_checks"),
                  (r"maps|cam", "table6_cam_validation"),
                  (r"recipe", "table9_image_recipe_ablation"))


def _inline_md(text: str) -> str:
    """Markdown's **bold**, *emphasis* and `code` as HTML (the rest escaped)."""
    out = _esc(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", out)


def _bullet_table(bullet: str) -> str | None:
    bold = " ".join(re.findall(r"\*\*(.+?)\*\*", bullet)).lower()
    for where in (bold, bullet.lower()):
        for pattern, stem in _BULLET_TABLES:
            if where and re.search(pattern, where):
                return stem
    return None


def _narrative_items(tables_dir: Path, cohort: str) -> list[tuple[str, str | None,
                                                                   str | None]]:
    """(sentence in Markdown, table stem, figure stem) of what the tables say."""
    from phyllodes.report import readme
    if hasattr(readme, "narrative"):  # the generator of any cohort's narrative, once written
        return [tuple(item) for item in readme.narrative(tables_dir)]
    if cohort != BUNDLED:
        return []
    saved = getattr(readme, "TABLES", None)
    try:  # read the tables shown, not necessarily the committed ones
        readme.TABLES = Path(tables_dir)
        text = readme.results_markdown()
    finally:
        readme.TABLES = saved
    bullets = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    return [(b, _bullet_table(b), None) for b in bullets]


def narrative_html(tables_dir: Path, cohort: str, titles: dict[str, str]) -> str:
    """The results in sentences, each linked to the table it reads; never fails."""
    try:
        items = _narrative_items(tables_dir, cohort)
    except Exception as e:  # noqa: BLE001 - a missing table must not break the report
        return (f'<p class="note">The results narrative could not be generated from these '
                f"tables ({_esc(type(e).__name__)}: {_esc(e)}); the sections below show "
                "them all.</p>")
    if not items:
        return ('<p class="note">No generated narrative for this cohort: the sections below '
                "show every table and figure.</p>")
    lis = []
    for sentence, table, figure in items:
        links = [f'<a href="#{_esc(s)}">{_esc(titles.get(s, s))}</a>'
                 for s in (table, figure) if s]
        see = f' <span class="see">→ {" · ".join(links)}</span>' if links else ""
        lis.append(f"<li>{_inline_md(sentence)}{see}</li>")
    return '<ul class="narrative">' + "".join(lis) + "</ul>"


# --------------------------------------------------------------------------- tables, figures


def _caption(csv: Path) -> str:
    md = csv.with_suffix(".md")
    text = md.read_text() if md.exists() else ""
    first = text.splitlines()[0] if text else ""
    return first.strip("*") if first.startswith("**") and first.endswith("**") else ""


#: cells shown right-aligned and unbroken: numbers, "0.799 ± 0.077", "0.901 [0.864, 0.934]",
#: "p = 0.021" (a wide table scrolls in its frame instead of breaking them)
_NUMERIC = re.compile(r"^[-+−]?\d[\d.]*(e[-+]?\d+)?%?( ± [\d.]+)?"
                      r"( \[[-+−]?[\d.]+, [-+−]?[\d.]+\])?$|^p [=<] [\d.]+$")


def table_html(csv: Path, here: Path) -> str:
    """One table for people: its caption, its files, its cells formatted; folded when long."""
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    shown = format_table(df)
    head = "".join(f'<th scope="col">{_esc(c)}</th>' for c in shown.columns)
    rows = []
    for values in shown.itertuples(index=False):
        cells = "".join(f'<td class="num">{_esc(v)}</td>' if _NUMERIC.match(v) else
                        f"<td>{_esc(v)}</td>" for v in values)
        rows.append(f"<tr>{cells}</tr>")
    table = (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
             + "".join(rows) + "</tbody></table></div>")
    if len(df) > LONG_TABLE:
        table = f"<details><summary>show all {len(df)} rows</summary>{table}</details>"
    caption = _caption(csv)
    links = " · ".join(f'<a href="{_rel(csv.with_suffix("." + e), here)}">{e}</a>'
                       for e in ("csv", "md", "tex") if csv.with_suffix("." + e).exists())
    return (f'<div class="table" id="{_esc(csv.stem)}"><h4>{_esc(csv.stem)}</h4>'
            + (f'<p class="caption">{_esc(caption)}</p>' if caption else "")
            + table + f'<p class="files">files: {links}</p></div>')


def _display_width(png: Path) -> int | None:
    """CSS pixels at which a figure reads like the paper's (1.6× its printed size)."""
    try:
        from PIL import Image
        with Image.open(png) as im:
            width, dpi = im.size[0], (im.info.get("dpi") or (96,))[0] or 96
    except Exception:  # noqa: BLE001 - any unreadable image just gets the default width
        return None
    return max(320, round(width * 96 / float(dpi) * 1.6))


def figure_html(png: Path, here: Path) -> str:
    pdf = png.with_suffix(".pdf")
    pdf_link = f' · <a href="{_rel(pdf, here)}">PDF</a>' if pdf.exists() else ""
    width = _display_width(png)
    style = f' style="width:{width}px"' if width else ""
    return (f'<figure id="{_esc(png.stem)}"><a href="{_rel(png, here)}">'
            f'<img src="{_rel(png, here)}" alt="{_esc(png.stem)}"{style}></a>'
            f'<figcaption>{_esc(png.stem)} <span class="files">· <a href="{_rel(png, here)}">'
            f"PNG</a>{pdf_link}</span></figcaption></figure>")


def _artifact_block(a: Artifact, tables_dir: Path, figures_dir: Path, here: Path) -> str:
    figs = [figures_dir / f"{s}.png" for s in a.figures]
    tabs = [tables_dir / f"{s}.csv" for s in a.tables]
    parts = [figure_html(p, here) for p in figs if p.exists()]
    parts += [table_html(p, here) for p in tabs if p.exists()]
    missing = [p.stem for p in [*figs, *tabs] if not p.exists()]
    if a.name == "subject-stratified folds":
        splits = sorted(tables_dir.glob("splits_*fold_seed*.csv"))
        if splits:
            parts.append('<p class="note">The folds (subject-stratified, editable, reused): '
                         + ", ".join(f'<a href="{_rel(p, here)}">{_esc(p.name)}</a>'
                                     for p in splits) + ".</p>")
    if not parts:
        return ""
    note = (f'<p class="missing">not made for this cohort: {_esc(", ".join(missing))}</p>'
            if missing else "")
    return f"<h3>{_esc(a.name)}</h3>" + "".join(parts) + note


def write_model_card(output: Path, cohort: str, here: Path, tables_dir: Path,
                     figures_dir: Path) -> Path | None:
    """``report/<cohort>/model_card.md`` from the tables, with the details of the model
    notebook 07 exported for this cohort (``results/<cohort>/models/``) when there is one."""
    import json

    from phyllodes.report.model_card import model_card
    if not tables_dir.is_dir():
        return None
    doc = None
    for p in sorted((output / "results" / cohort / "models").glob("*/model.json")):
        d = json.loads(p.read_text())
        if d.get("training_data", {}).get("cohort") == cohort:
            doc = d
            break
    card = here / "model_card.md"
    card.write_text(model_card(tables_dir, doc, figures_dir), encoding="utf-8")
    return card


def _model_card_html(here: Path, tables_dir: Path) -> str:
    parts = []
    card = here / "model_card.md"
    if card.exists():
        text = card.read_text(encoding="utf-8")
        try:
            import mistune
            parts.append('<div class="model-card">' + mistune.html(text) + "</div>")
        except Exception:  # noqa: BLE001 - without a Markdown renderer, the text as it is
            parts.append(f'<pre style="white-space:pre-wrap">{_esc(text)}</pre>')
        parts.append(f'<p class="files">file: <a href="{card.name}">{card.name}</a></p>')
    for csv in sorted(tables_dir.glob("*model_card*.csv")) if tables_dir.is_dir() else []:
        parts.append(table_html(csv, here))
    return "".join(parts)


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
    return ('<div class="scroll"><table><thead><tr><th>paper artifact</th><th>notebook</th>'
            "<th>files</th><th>built by</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


# --------------------------------------------------------------------------- the page


def build_report(output: Path | str | None = None, cohort: str = BUNDLED,
                 profile: str | None = None, report_dir: Path | str | None = None) -> Path:
    """Write ``<output>/report/<cohort>/index.html`` (and one page per executed notebook)
    from existing outputs; return the index's path. ``report_dir`` writes the pages there
    instead (links stay relative to it)."""
    output = Path(output or paths.ROOT).resolve()
    here = Path(report_dir).resolve() if report_dir else output / "report" / cohort
    here.mkdir(parents=True, exist_ok=True)
    roots = [output, paths.ROOT, Path.home()]
    if profile is None:
        records = _records(output, cohort)
        prov = next((r.get("provenance") for r in records.values() if "provenance" in r), {})
        profile = (prov or {}).get("profile", {}).get("name", "")
    notebooks = _notebook_pages(output / "executed" / profile if profile else None, here, roots)
    tables_dir, figures_dir = output / "tables" / cohort, output / "figures" / cohort
    body, toc, titles = _paper_sections(tables_dir, figures_dir, here, notebooks)
    write_model_card(output, cohort, here, tables_dir, figures_dir)
    card = _model_card_html(here, tables_dir)
    if card:
        body.append(f'<section class="paper" id="model-card"><h2>Model card</h2>{card}'
                    "</section>")
        toc.append(("model-card", "Model card"))
    body.append(_appendix(output, cohort, here, tables_dir, notebooks))
    toc.append(("appendix", "Appendix: artifact map, notebooks"))
    meta = [*provenance_rows(output, cohort),
            ("report built", time.strftime("%Y-%m-%d %H:%M %Z"))]
    parts = [f"<h1>Study report · {_esc(cohort)}</h1>",
             '<p>Multimodal deep learning for phyllodes tumour grading (Abir et al., IEEE BSN '
             '2025), reproduced by this repository. Every table and figure below was made by '
             "the notebook named in its section.</p>",
             '<nav class="toc"><strong>Contents</strong><ol><li><a href="#results">Results in '
             'brief</a></li><li><a href="#provenance">Where the numbers come from</a></li>'
             + "".join(f'<li><a href="#{i}">{_esc(t)}</a></li>' for i, t in toc)
             + "</ol></nav>",
             '<section id="results"><h2>Results in brief</h2>'
             + narrative_html(tables_dir, cohort, titles) + "</section>",
             '<section id="provenance"><h2>Where the numbers come from</h2>'
             '<div class="scroll"><table class="meta">' + "".join(
                 f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in meta)
             + "</table></div></section>",
             *body]
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Study report · {_esc(cohort)}</title><style>{CSS}</style>"
            f"<script>{IMAGE_CHECK}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
    index = here / "index.html"
    index.write_text(_scrub_page(page, roots), encoding="utf-8")
    return index


def _notebook_pages(executed: Path | None, here: Path, roots: list[Path]) -> dict[str, str]:
    """Each executed notebook rendered as a page beside the report: its stem and page name."""
    notebooks: dict[str, str] = {}
    if executed is not None and executed.is_dir():
        for nb in sorted(executed.glob("[0-9][0-9]_*.ipynb")):
            page = render_notebook(nb, here / f"{nb.stem}.html", roots)
            notebooks[nb.stem] = page.name
    return notebooks


def _paper_sections(tables_dir: Path, figures_dir: Path, here: Path,
                    notebooks: dict[str, str]
                    ) -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
    """The sections in the paper's order (:func:`sections`), each with its tables and figures
    and the notebook that made them: their HTML, the contents entries, and each table's or
    figure's section title (for the narrative's links). An optional section with nothing made
    is left out."""
    body, toc, titles = [], [], {}
    for sec in sections():
        blocks = [_artifact_block(a, tables_dir, figures_dir, here) for a in sec.artifacts]
        blocks = [b for b in blocks if b]
        if not blocks and sec.optional:
            continue
        for a in sec.artifacts:
            for stem in (*a.tables, *a.figures):
                titles[stem] = sec.title
        nbs = sorted({a.notebook for a in sec.artifacts})
        from_nb = ", ".join(f'<a href="{notebooks[n]}">{_esc(n)}</a>' if n in notebooks
                            else f"<code>{_esc(n)}</code>" for n in nbs)
        content = "".join(blocks) or '<p class="missing">not made for this cohort.</p>'
        body.append(f'<section class="paper" id="{sec.id}"><h2>{_esc(sec.title)}</h2>'
                    + (f'<p class="note">From notebook {from_nb}.</p>' if from_nb else "")
                    + content + "</section>")
        toc.append((sec.id, sec.title))
    return body, toc, titles


def _appendix(output: Path, cohort: str, here: Path, tables_dir: Path,
              notebooks: dict[str, str]) -> str:
    """The artifact map, the executed notebooks' pages and every table no section shows."""
    shown = {f"{s}.csv" for a in ARTIFACTS for s in a.tables}
    others = [p for p in sorted(tables_dir.glob("*.csv")) if tables_dir.is_dir()
              and p.name not in shown and not p.name.startswith("splits_")
              and "model_card" not in p.name]
    appendix = ['<section class="appendix" id="appendix"><h2>Appendix</h2>',
                "<h3>Paper artifact → notebook → files</h3>",
                _artifact_rows(ARTIFACTS, output, cohort, here, notebooks),
                "<h3>Notebooks</h3>" + ("<ul>" + "".join(
                    f'<li><a href="{page}">{_esc(stem)}</a></li>'
                    for stem, page in notebooks.items()) + "</ul>" if notebooks else
                    "<p>No executed notebooks found.</p>")]
    if others:
        appendix.append("<h3>Other tables</h3>" + "".join(table_html(p, here) for p in others))
    appendix.append("</section>")
    return "".join(appendix)


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m phyllodes report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="", help="output root (default: the repository)")
    ap.add_argument("--cohort", default=BUNDLED, help="a cohort name or folder")
    ap.add_argument("--profile", default=None, help="whose executed notebooks (default: the "
                    "profile of the notebook records)")
    ap.add_argument("--report-dir", default="", help="write the pages here instead of "
                    "<output>/report/<cohort>/")
    args = ap.parse_args(argv)
    from phyllodes.data.cohort import cohort_name
    index = build_report(args.output or None, cohort_name(args.cohort), args.profile,
                         args.report_dir or None)
    print(f"report: {index} (open it in a browser: file://{index})")
    return 0
