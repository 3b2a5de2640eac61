"""Generated parts of README.md: the paper artifact map (and, from the committed tables, the
results), written between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers.

``python -m phyllodes readme`` rewrites them; ``--check`` only says whether README.md is up to
date (exit status 1 when not), which the tests and ``./run_all.sh --check`` run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from phyllodes import paths, reported
from phyllodes.report.artifacts import artifact_map_markdown

README = paths.ROOT / "README.md"

#: the bundled cohort's committed tables, which the README's results are generated from
TABLES = paths.ROOT / "tables" / paths.DEFAULT_COHORT.name


def _csv(stem: str):
    import pandas as pd
    return pd.read_csv(TABLES / f"{stem}.csv", dtype=str, keep_default_na=False)


def _csv_or_none(stem: str):
    """A table, or None when this study did not make it."""
    return _csv(stem) if (TABLES / f"{stem}.csv").exists() else None


def _p(x: str) -> str:
    v = float(x)
    return "p < 0.001" if v < 0.001 else f"p = {v:.3f}"


def _test(tests, other: str) -> tuple[str, str]:
    """(difference with its DeLong CI, p) of a table's reference model against ``other``."""
    row = tests[tests["comparison"].str.endswith(" vs " + other)].iloc[0]
    return row["delong_ci"], _p(row["delong_p"])


def _pval(tests, other: str) -> float:
    return float(tests[tests["comparison"].str.endswith(" vs " + other)]["delong_p"].iloc[0])




def ablation_label(setting: str) -> str:
    """The name of notebook 06's ablation variant that changes ``setting`` (one list:
    :data:`phyllodes.profiles.RECIPE_ABLATION`)."""
    from phyllodes.profiles import RECIPE_ABLATION
    return next(name for name, overrides in RECIPE_ABLATION if setting in overrides)


def _auc(table, variant: str) -> str:
    return table.at[variant, "AUC (pooled, 95% CI)"]


def results_markdown() -> str:
    """The bundled cohort's results, every number read from the committed tables."""
    bullets = [*_modality_bullets(), *reader_bullets(), _with_every_column_bullet(),
               _encoder_bullet(), _share_bullet(), _maps_bullet(), *explanation_bullets(),
               _recipe_bullet(), *external_bullets()]
    return ("\n".join(_table3_rows()) + "\n\nWhat the tables say, plainly:\n\n"
            + "\n".join(bullets))


def _table3_rows() -> list[str]:
    """Table 3 as the README shows it, with the pooled AUC on clinical inputs 'all' beside."""
    t3, t3c = _csv("table3_modality_comparison"), _csv("table3c_modality_comparison_all")
    rows = ["| model (Table 3, clinical inputs 'paper') | pooled AUC [95% CI] | fold mean ± SD "
            "| paper (MGH phyllodes, not comparable) | pooled AUC with clinical inputs 'all' |",
            "| --- | --- | --- | --- | --- |"]
    by_all = t3c.set_index("modality")["AUC (pooled, 95% CI)"]
    for _, r in t3.iterrows():
        paper = r["paper AUC (MGH phyllodes)"] or "—"
        other = ("(same: the reader's category)" if r["modality"] == "reader" else
                 by_all.get(r["modality"], "—") if r["modality"] != "image" and
                 "image baseline" not in r["modality"] else "(same: no clinical input)")
        rows.append(f"| {r['modality']}: `{r['model']}` | {r['AUC (pooled, 95% CI)']} | "
                    f"{r['AUC (fold mean ± SD)']} | {paper} | {other} |")
    return rows


def _modality_bullets() -> list[str]:
    """The image branch against its probe, the multimodal model against each modality and the
    simple baselines (Table 3, 3b and the unimodal tests), each against the study's aim."""
    t3, tests = _csv("table3_modality_comparison"), _csv("table3b_modality_tests")
    labels = t3.set_index("modality")["model"]
    auc = t3.set_index("modality")["AUC (pooled, 95% CI)"]
    est = {k: float(v.split()[0]) for k, v in auc.items()}
    d_lf, p_lf = _test(tests, labels["late fusion of the two baselines"])
    d_img, p_img = _test(tests, labels["image"])
    d_lr, p_lr = _test(tests, labels["clinical baseline: logreg"])
    d_probe, p_probe = _test(_csv("table_unimodal_baselines_tests"),
                             labels["image baseline: linear probe"])
    probe_verb = "beats" if est["image"] > est["image baseline: linear probe"] else \
        "does NOT beat"
    goal = reported.STUDY_TARGETS
    target = "reaches, in its point estimate," if est["multimodal"] >= goal["multimodal_auc"] \
        else "does not reach"
    image_target = "reaches, in its point estimate," if est["image"] >= goal["image_auc"] else \
        "does not reach"
    return [
        f"- **The image branch {probe_verb} its frozen linear probe**: fine-tuned "
        f"{auc['image']} against the probe's {auc['image baseline: linear probe']} (same "
        f"encoder, same folds); difference {d_probe} ({p_probe}). It {image_target} the "
        f"{goal['image_auc']:.2f} "
        "the study aimed at.",
        f"- **Multimodal against each single modality and the simple baselines** on the "
        f"paper's inputs: {auc['multimodal']}; minus the image branch {d_img} ({p_img}), minus "
        f"the clinical logistic regression {d_lr} ({p_lr}), minus the late fusion of the "
        f"clinical logistic regression with the image probe "
        f"({auc['late fusion of the two baselines']}) {d_lf} ({p_lf}). It {target} the "
        f"{goal['multimodal_auc']:.2f} "
        "the study aimed at.",
    ]


def _with_every_column_bullet() -> str:
    """The multimodal model against the clinical logistic regression on every clinical column
    (Table 3c and 3d)."""
    labels = _csv("table3_modality_comparison").set_index("modality")["model"]
    tests_all = _csv("table3d_modality_tests_all")
    auc_all = _csv("table3c_modality_comparison_all").set_index("modality")[
        "AUC (pooled, 95% CI)"]
    d_lr_all, p_lr_all = _test(tests_all, labels["clinical baseline: logreg"])
    gain_all = ("a significant gain" if _pval(tests_all, labels["clinical baseline: logreg"])
                < 0.05 else "no measurable gain")
    return (f"- **With every clinical column** (the BI-RADS lexicon describes the image too): "
            f"multimodal {auc_all['multimodal']}, the clinical logistic regression alone "
            f"{auc_all['clinical baseline: logreg']}; difference {d_lr_all} ({p_lr_all}): "
            f"{gain_all} from the image on top of the radiologist's descriptors.")


def _encoder_bullet() -> str:
    """Table 2 and its tests against the best encoder."""
    encoders = "; ".join(f"{r['encoder']} {r['AUC-ROC (pooled, 95% CI)']}"
                         for _, r in _csv("table2_encoder_comparison").iterrows())
    enc_p = ", ".join(_p(x) for x in _csv("table2b_encoder_tests")["delong_p"])
    return (f"- **Encoders** (Table 2, multimodal, all ImageNet-pretrained offline): {encoders}; "
            f"each against the best: {enc_p}.")


def _share_bullet() -> str:
    share = _csv("table7_modality_share")["value"].iloc[0]
    return (f"- **The image's share** of the multimodal prediction (Shapley): {share} (the paper: "
            "about 0.63).")


def _maps_bullet() -> str:
    """Table 6: the maps' energy in the lesion and the pointing game, against the study's aim."""
    cam = _csv("table6_cam_validation")
    g = cam[(cam["method"] == "Grad-CAM++") & (cam["group"] == "all")].iloc[0]
    sc = cam[(cam["method"] == "Score-CAM") & (cam["group"] == "all")].iloc[0]
    goal = reported.STUDY_TARGETS
    lift = float(g["energy_lift"])
    where = f"{g['map grid']} before upsampling"
    if "layer" in cam.columns:
        where = (f"Grad-CAM++ at {g['layer']}, {g['map grid']}; Score-CAM at {sc['layer']}, "
                 f"{sc['map grid']}; before upsampling")
        choice = _csv_or_none("table6e_cam_layer_choice")
        if choice is not None:
            where += (f"; each CAM layer chosen by faithfulness on the folds of "
                      f"{choice['selection folds'].iloc[0]}, Table 6e")
    return (f"- **Maps** ({where}): Grad-CAM++ puts {lift:.2f}× the "
            f"chance share of its energy inside the lesion [{float(g['lift_low']):.2f}, "
            f"{float(g['lift_high']):.2f}], pointing game {float(g['hit_rate']):.2f}; Score-CAM "
            f"{float(sc['energy_lift']):.2f}× [{float(sc['lift_low']):.2f}, "
            f"{float(sc['lift_high']):.2f}]"
            + (f". The {goal['cam_lift']}× aimed at is not reached: the maps are "
               + ("coarse and " if _side(g["map grid"]) < 16 else "")
               + "partly off the lesion." if lift < goal["cam_lift"] else "."))


def _side(grid: str) -> int:
    """The shorter side of a map grid written '8x8'."""
    return min(int(v) for v in str(grid).split("x"))


def _recipe_bullet() -> str:
    """Notebook 06's ablations (Table 9 and 9b), on the folds of split seed 1."""
    from phyllodes.report.tables import CONCAT, RECIPE_LATE
    ab = _csv("table9_image_recipe_ablation").set_index("variant")
    abm = _csv("table9b_multimodal_recipe_ablation").set_index("variant")
    var = {k: _auc(ab, ablation_label(k))
           for k in ("frozen_bn", "lp_init", "tap", "roi_margin", "tta_views")}
    return ("- **How the recipe was chosen** (notebook 06, folds of split seed 1, not the "
            f"study's): recipe {_auc(ab, 'recipe')}; BatchNorm statistics updated in training "
            f"{var['frozen_bn']}; no linear-probe initialisation {var['lp_init']}; the whole "
            f"network instead of stage 4 {var['tap']} (three times the training cost); the "
            f"earlier ROI margin of 0.15 {var['roi_margin']}; no augmented-view test-time "
            f"augmentation {var['tta_views']}; the linear probe "
            f"{_auc(ab, 'image linear probe (baseline)')}. Multimodal: late fusion "
            f"{_auc(abm, RECIPE_LATE)} against the paper's concatenation {_auc(abm, CONCAT)}.")


def _num(x) -> str:
    """A number as the .md tables print it (:func:`phyllodes.report.format.format_number`)."""
    from phyllodes.report.format import format_number
    return format_number(float(x))


def _ci(r, col: str) -> str:
    return f"{_num(r[col])} [{_num(r[col + '_low'])}, {_num(r[col + '_high'])}]"


def explanation_bullets() -> list[str]:
    """Whether the maps are faithful (Table 6b) and where in the anatomy they look (6c)."""
    faith = _csv("table6b_cam_faithfulness").set_index("map")
    anat = _csv("table6c_cam_anatomy")
    if "gap" not in faith.columns:
        return []
    parts = []
    for m in ("Grad-CAM++", "Score-CAM"):
        r = faith.loc[m]
        d = (f"{_num(r['gap minus random map'])} [{_num(r['gap minus random map low'])}, "
             f"{_num(r['gap minus random map high'])}]")
        parts.append(f"{m} {_ci(r, 'gap')}, minus a random map's {d}: {r['reading']}")
    out = ["- **Are the maps faithful?** (Table 6b: the gap between the deletion curves removing "
           "the least and the most relevant pixels first; 0 for a map without information) "
           + "; ".join(parts)
           + f"; the centre prior alone {_ci(faith.loc['centre prior'], 'gap')}."]
    if "lift" not in anat.columns:
        return out
    a = anat[anat["method"] == "Grad-CAM++"].set_index(["outcome", "region"])

    def lift(outcome: str, region: str) -> str:
        r = a.loc[(outcome, region)]
        if not str(r["lift"]).strip() or int(r["images"]) == 0:
            return "no image"
        return (f"{float(r['lift']):.2f}× [{float(r['lift_low']):.2f}, "
                f"{float(r['lift_high']):.2f}]")
    words = [f"{o} ({int(a.loc[(o, 'lesion'), 'images'])} images): lesion {lift(o, 'lesion')}, "
             f"band {lift(o, 'peri-lesional band')}" for o in ("TP", "TN", "FP", "FN")]
    out.append("- **Where Grad-CAM++ looks** (Table 6c: energy share over area share; the band "
               "is the lesion dilated by half its equivalent radius): " + "; ".join(words) + ".")
    return out + sanity_bullets()


def sanity_bullets() -> list[str]:
    """Whether the maps pass the sanity checks on every fold (Table 6d)."""
    san = _csv("table6d_cam_sanity_checks")
    if "test" not in san.columns:
        return []
    words = []
    for test in ("model randomisation", "data randomisation"):
        t = san[san["test"] == test]
        if not len(t):
            continue
        passed = int((t["check"] == "passes").sum())
        weak = int(t["reading"].str.contains("weak evidence").sum())
        w = f"{test} passes on {passed} of {len(t)} folds"
        if weak:
            w += f" ({weak} of them with most maps constant: weak evidence)"
        if test == "data randomisation":
            auc = t["permuted_model_auc"].astype(float)
            w += (f", its permuted-label models' test AUC from {_num(auc.min())} to "
                  f"{_num(auc.max())}")
        words.append(w)
    return ["- **Sanity checks** (Table 6d, Adebayo et al. 2018: each passes when the maps "
            "change, mean |Spearman| < 0.5): " + "; ".join(words) + "."]


def _verdict_words(verdict: str) -> str:
    return {"better than the reader": "beats", "worse than the reader": "loses to",
            "not distinguishable from the reader": "matches (no significant difference from)"
            }.get(verdict, verdict)


SPARED_DIFF = "spared minus the reader's rule (paired 95% CI)"


def reader_bullets() -> list[str]:
    """The radiologist in plain words: the model against the reader, the reader plus the
    model, and the decision the clinic makes today (Tables 3e and 5b)."""
    if not (TABLES / "table3e_reader_comparison.csv").exists():
        return []
    t = _csv("table3e_reader_comparison")
    if "note" in t.columns:
        return [f"- **The reader**: {t['note'].iloc[0]}."]
    alone = t.iloc[0]
    rows = t.iloc[1:].set_index("comparison")
    out = []

    def row(prefix: str):
        hit = [c for c in rows.index if c.startswith(prefix)]
        return rows.loc[hit[0]] if hit else None
    mm = row("multimodal model (clinical inputs 'paper') vs")
    comb = row("the reader + multimodal model (clinical inputs 'paper')")
    mm_all = row("multimodal model (clinical inputs 'all') vs")
    if mm is not None:
        out.append(
            f"- **The radiologist's BI-RADS category alone**: AUC {alone['AUC (95% CI)']} on "
            f"{alone['n_subjects']} subjects. The multimodal model (paper inputs, "
            f"{float(mm['auc_first']):.3f}) **{_verdict_words(mm['verdict'])}** the reader: "
            f"model minus reader {mm['difference (DeLong 95% CI)']} ({_p(mm['delong_p'])})"
            + (f"; with every clinical column ({float(mm_all['auc_first']):.3f}) it "
               f"{_verdict_words(mm_all['verdict'])} the reader, "
               f"{mm_all['difference (DeLong 95% CI)']} ({_p(mm_all['delong_p'])})"
               if mm_all is not None else "") + ".")
    if comb is not None:
        adds = comb["verdict"] == "better than the reader"
        out.append(
            f"- **Does the model add to the reader?** The category and the model's output "
            f"combined (a logistic regression fit on each fold's inner-validation subjects): "
            f"{float(comb['auc_first']):.3f} against the category alone, "
            f"{comb['difference (DeLong 95% CI)']} ({_p(comb['delong_p'])}): "
            + ("it adds to the reader." if adds else "no measurable gain over the reader."))
    if (TABLES / "table5b_reader_operating_points.csv").exists():
        op = _csv("table5b_reader_operating_points")
        if "kind" in op.columns:
            rule = op[op["kind"] == "reader's rule"].iloc[0]
            at = op[op["kind"].str.startswith("model at the reader") &
                    op["rule"].str.startswith("multimodal")]
            text = (f"- **The decision today** ({rule['rule']}: biopsy or excise): sensitivity "
                    f"{rule['sensitivity (95% CI)']}, benign spared excision "
                    f"{rule['benign spared excision (95% CI)']} ({rule['benign spared']} of "
                    f"{rule['benign']})")
            if len(at):
                a = at.iloc[0]
                text += (f"; the multimodal model at the reader's sensitivity (threshold chosen "
                         f"on inner validation): sensitivity {a['sensitivity (95% CI)']}, benign "
                         f"spared {a['benign spared excision (95% CI)']}, "
                         f"{a['malignant missed']} cancer(s) missed; spared minus the reader's "
                         f"rule {a[SPARED_DIFF]}")
            out.append(text + ".")
    return out


def external_bullets() -> list[str]:
    """Internal vs external AUC and the drop, each direction and model (Table 10)."""
    if not (TABLES / "table10_external_validation.csv").exists():
        return []
    t = _csv("table10_external_validation")
    t = t[t["external minus internal (95% CI)"] != ""]
    out = []
    for direction, g in t.groupby("direction", sort=False):
        parts = [f"{r['model']}: internal {r['internal AUC (95% CI)']} (cross-validation), "
                 f"external {r['external AUC (95% CI)']} (final model), external minus "
                 f"internal {r['external minus internal (95% CI)']}" for _, r in g.iterrows()]
        out.append(f"- **External validation, {direction}** (notebook 07, image-only: the "
                   "cohorts share no clinical input): " + "; ".join(parts) + ".")
    return out


#: marker name -> function returning the Markdown between the markers
SECTIONS: dict[str, Callable[[], str]] = {"artifact-map": artifact_map_markdown,
                                          "results": results_markdown}


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
