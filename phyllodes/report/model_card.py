"""The model card (Mitchell et al. 2019) with a TRIPOD+AI (Collins et al., BMJ 2024) checklist,
generated from the study's own tables: ``report/<cohort>/model_card.md``, a page of the HTML
report, and a copy in every exported model folder.

Nothing in it is typed by hand except the fixed statements of intended use: every number is
read from ``tables/<cohort>/*.csv`` when the card is built (a changed table changes the card),
every checklist item points at the table, figure or README section that answers it, and an item
whose table was not produced, or that the study does not address, says so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: the public cohorts the repository bundles: general breast-lesion cohorts, not phyllodes
BUNDLED = ("breast-lesions-usg", "bus-bra")

#: TRIPOD+AI items (development and evaluation) -> where the study answers them: table or
#: figure names (looked up in the study's outputs), "README: <section>", "notebook NN", or
#: None (not addressed). Item texts are short paraphrases of the checklist's topics.
TRIPOD_AI: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("1", "Title: a prediction model, its population, outcome and approach", ("README: title",)),
    ("2", "Abstract (TRIPOD+AI for Abstracts)", None),
    ("3a", "Healthcare context and rationale", ("README: The study",)),
    ("3b", "Target population, place in the care pathway, intended users",
     ("model card: intended use",)),
    ("3c", "Known health inequalities", None),
    ("4", "Objectives: development and/or evaluation", ("README: The study",)),
    ("5a", "Data sources", ("data/README.md", "table1_cohort")),
    ("5b", "Dates of accrual", None),
    ("6a", "Setting: centres, care level", ("data/README.md",)),
    ("6b", "Eligibility criteria", ("table1_cohort", "notebook 01")),
    ("6c", "Treatments received", None),
    ("7", "Data preparation, quality checks", ("data/README.md", "notebook 01")),
    ("8a", "Outcome and how it was assessed", ("data/README.md",)),
    ("8b", "Qualifications of outcome assessors", None),
    ("8c", "Blinding of outcome assessment", None),
    ("9a", "Choice of predictors", ("table8_clinical_importance", "README: The study")),
    ("9b", "Predictor definition and measurement", ("data/README.md",)),
    ("9c", "Qualifications of predictor assessors", None),
    ("10", "Sample size", ("table1_cohort",)),
    ("11", "Missing data and its handling", ("table1_cohort", "model card: model details")),
    ("12a", "How the data were used (development, evaluation)",
     ("splits_5fold_seed0", "README: Reproducing")),
    ("12b", "Predictor handling (transformations, scaling)", ("model card: model details",)),
    ("12c", "Model type, building, hyperparameter tuning, internal validation",
     ("table9_image_recipe_ablation", "table2_encoder_comparison")),
    ("12d", "Heterogeneity across clusters (centres, scanners)",
     ("table10c_external_subgroups",)),
    ("12e", "Performance measures, with uncertainty", ("table3_modality_comparison",)),
    ("12f", "Model updating or recalibration", ("table4_calibration",
                                                  "table10b_external_calibration")),
    ("12g", "Model comparisons (simple baselines, the clinician)",
     ("table_unimodal_baselines", "table3e_reader_comparison")),
    ("13", "Class imbalance handling", ("model card: model details",)),
    ("14", "Fairness: performance across groups", ("table10c_external_subgroups",)),
    ("15", "Model output and its thresholds", ("table5_operating_point",
                                               "model card: model details")),
    ("16", "Differences between development and evaluation data", ("table10e_case_mix",)),
    ("17", "Ethical approval", ("data/README.md",)),
    ("18a", "Funding", None),
    ("18b", "Conflicts of interest", None),
    ("18c", "Protocol", ("README: Reproducing",)),
    ("18d", "Registration", None),
    ("18e", "Data sharing", ("data/README.md",)),
    ("18f", "Code sharing", ("README: Reproducing",)),
    ("19", "Patient and public involvement", None),
    ("20a", "Flow of participants (exclusions)", ("table1_cohort", "notebook 01")),
    ("20b", "Participant characteristics by outcome", ("table1_cohort",)),
    ("20c", "Development vs evaluation data compared", ("table10e_case_mix",)),
    ("21", "Participants and outcome events in each analysis", ("table3_modality_comparison",
                                                               "table10_external_validation")),
    ("22", "Full model specification (for use on new individuals)",
     ("model card: model details", "exported model folder")),
    ("23a", "Model performance with CIs (discrimination, calibration, utility)",
     ("table3_modality_comparison", "table4_calibration", "table10f_external_decision_curve")),
    ("23b", "Performance across subgroups", ("table10c_external_subgroups",)),
    ("24", "Model updating results", ("table10b_external_calibration",)),
    ("25", "Interpretation, against the objectives and other studies",
     ("table3e_reader_comparison", "table6_cam_validation")),
    ("26", "Limitations", ("model card: limitations",)),
    ("27a", "Handling of poor-quality or unavailable input data",
     ("data/README.md", "model card: model details")),
    ("27b", "User interaction and expertise needed", ("model card: intended use",)),
    ("27c", "Future research and implementation", None),
)


def _read(tables: Path, name: str) -> pd.DataFrame | None:
    p = tables / f"{name}.csv"
    return pd.read_csv(p) if p.is_file() else None


def _where(tables: Path, figures: Path | None, target: str) -> str | None:
    """A checklist target resolved: a table or figure that exists, a README or notebook
    reference, or None when the study did not produce it."""
    if target.startswith(("README", "data/README", "notebook", "model card", "exported")):
        return target
    if (tables / f"{target}.csv").is_file():
        return f"`tables/{tables.name}/{target}`"
    if figures is not None and any(figures.glob(f"{target}.*")):
        return f"`figures/{figures.name}/{target}`"
    return None


def checklist(tables: Path, figures: Path | None = None) -> pd.DataFrame:
    """The TRIPOD+AI items with where the study answers each, or "not addressed"."""
    rows = []
    for item, topic, targets in TRIPOD_AI:
        found = [w for w in (_where(tables, figures, t) for t in targets or ()) if w]
        if targets and not found:
            where = "not addressed (its tables were not produced: " + ", ".join(targets) + ")"
        else:
            where = "; ".join(found) if found else "not addressed"
        rows.append({"item": item, "topic": topic, "answered in": where})
    return pd.DataFrame(rows)


def _md(df: pd.DataFrame) -> str:
    """Markdown of a table, numbers to 4 significant digits (the CSVs hold them unrounded)."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    return out.fillna("").astype(str).to_markdown(index=False)


def _training(tables: Path) -> list[str]:
    t1 = _read(tables, "table1_cohort")
    if t1 is None:
        return ["Not available: notebook 01 has not written table1_cohort."]
    n = t1[(t1["characteristic"] == "Subjects")].iloc[0]
    lab = t1[t1["characteristic"] == "Label"]
    overall = [c for c in t1.columns if c.startswith("overall")][0]
    out = [f"- Cohort `{tables.name}`: {n[overall]} subjects."]
    out += [f"- {r['level']}: {r[overall]}" for _, r in lab.iterrows()]
    feats = t1.loc[~t1["characteristic"].isin(["Subjects", "Label"]), "characteristic"]
    if len(feats):
        out.append(f"- Characteristics tabulated (table 1): {', '.join(dict.fromkeys(feats))}.")
    return out


def _task(tables: Path, doc: dict | None) -> str:
    """"benign vs malignant" in the cohort's own label names."""
    if doc is not None:
        td = doc["training_data"]
        return f"{'/'.join(td['negative_labels'])} vs {'/'.join(td['positive_labels'])}"
    t1 = _read(tables, "table1_cohort")
    if t1 is None:
        return "benign vs malignant"
    levels = list(t1.loc[t1["characteristic"] == "Label", "level"])
    return " vs ".join(levels) if levels else "benign vs malignant"


def _rows(df: pd.DataFrame | None, columns: list[str]) -> str | None:
    if df is None:
        return None
    keep = [c for c in columns if c in df.columns]
    return _md(df[keep])


def _details(doc: dict | None) -> list[str]:
    if doc is None:
        return ["No exported model is attached to this card: it describes the study's models "
                "(export one with `python -m phyllodes export`)."]
    td, ops = doc["training_data"], doc["operating_points"]
    out = [f"- Model: **{doc['label']}**, {doc['what']}; run `{doc['run_id']}`; recipe version "
           f"{doc['recipe_version']}; package {doc['package']['name']} "
           f"{doc['package']['version']} at commit `{doc['package']['commit']}`.",
           f"- Inputs: {'the ultrasound image' if doc['inputs']['image'] else 'no image'}"
           + (f" and the clinical inputs {', '.join(doc['inputs']['clinical'])}"
              if doc["inputs"]["clinical"] else " (no clinical input)") + ".",
           f"- Trained on {td['what']} of `{td['cohort']}` (fingerprint `{td['fingerprint']}`, "
           f"{td['subjects']} subjects, {td['positive_subjects']} positive: "
           f"{'/'.join(td['positive_labels'])})"
           + (f": {td['subjects_trained_on']} subjects train the weights, "
              f"{td['inner_validation_subjects']} are kept as its inner validation."
              if "inner_validation_subjects" in td else "."),
           f"- Training sampler: {doc['settings'].get('sampler', 'shuffle')} "
           + ("(class-aware: each batch balanced between the classes)"
              if doc["settings"].get("sampler") == "class_aware"
              else "(every image once per epoch, shuffled; the classes as they come)") + "."]
    if doc["inputs"]["clinical"]:
        out.append("- Missing clinical values are imputed as in training (median / most "
                   "frequent category of the training subjects, with a missing indicator); a "
                   "category the training cohort never had is refused.")
    if doc.get("preprocessing"):
        pp = doc["preprocessing"]
        out.append(f"- Preprocessing: {pp['image']}; {pp['crop']}; {pp['image_size']} px "
                   f"({pp['resample']}); {pp['intensity']}. Test time: flip "
                   f"{'yes' if pp['test_time']['flip'] else 'no'}, "
                   f"{pp['test_time']['views']} augmented views.")
    fit = doc["fit_on"]
    out.append(f"- Calibration and operating points fit on {fit['subjects']} inner-validation "
               f"subjects ({fit['positive']} positive): calibration "
               f"{doc['calibration']['method']}; thresholds "
               + "; ".join(f"{k} {v['threshold']:.4f} (inner-validation sensitivity "
                           f"{v['inner_validation_sensitivity']:.2f}, specificity "
                           f"{v['inner_validation_specificity']:.2f})" for k, v in ops.items())
               + f"; primary: {doc['primary']}.")
    return out


def _limitations(tables: Path) -> list[str]:
    out = []
    if tables.name in BUNDLED:
        out.append(f"- `{tables.name}` is a public general breast-lesion cohort (benign vs "
                   "malignant), not phyllodes tumours: a stand-in for the private phyllodes "
                   "cohort, so nothing here is evidence about phyllodes tumour grading.")
    reader = _read(tables, "table3e_reader_comparison")
    if reader is not None and "verdict" in reader.columns:
        for _, r in reader[reader["verdict"].notna()
                           & ~reader["verdict"].astype(str).str.startswith("better")].iterrows():
            out.append(f"- {r['comparison']}: {r['verdict']} (difference "
                       f"{r['difference (DeLong 95% CI)']}).")
    calib = _read(tables, "table10b_external_calibration")
    if calib is not None:
        asis = calib[calib["uses external labels"] == "no"]
        for _, r in asis.iterrows():
            out.append(f"- {r['direction']}, {r['model']}: calibration-in-the-large "
                       f"{r['calibration-in-the-large']:+.2f} as trained on the external cohort: "
                       "risks need local recalibration before use at another centre.")
    t1 = _read(tables, "table1_cohort")
    if t1 is not None:
        n = int(t1[t1["characteristic"] == "Subjects"].iloc[0].iloc[2])
        out.append(f"- {n} development subjects: wide confidence intervals; thresholds and "
                   "calibration are fit on the inner-validation subjects only (a fraction of "
                   "them).")
    out.append("- Not evaluated: prospective use, other populations than the cohorts named "
               "here, images from other manufacturers than those listed in the subgroup table.")
    return out


def model_card(tables: Path | str, model_doc: dict | None = None,
               figures: Path | str | None = None) -> str:
    """The model card's markdown from the study's tables (and the exported model's
    ``model.json``, when given)."""
    tables = Path(tables)
    figures = Path(figures) if figures else tables.parent.parent / "figures" / tables.name
    cohort = tables.name
    parts = [f"# Model card: {model_doc['label'] if model_doc else 'the study'} ({cohort})",
             "",
             "Generated by `phyllodes.report.model_card` from the study's tables; nothing in it "
             "is typed by hand except the statements of intended use.", "",
             "## Model details", "", *_details(model_doc), "",
             "## Intended use", "",
             f"- Research on triage of breast lesions on B-mode ultrasound "
             f"({_task(tables, model_doc)}), as a second opinion beside the radiologist, by "
             "clinical "
             "machine-learning researchers and radiologists reproducing or extending the study.",
             "- Decision it informs: whether a lesion is excised or followed up; the operating "
             "point is chosen on inner-validation subjects of the training cohort.", "",
             "## Not intended for", "",
             "- Clinical decisions on a patient without local validation and recalibration.",
             "- Use instead of the radiologist, or on images of other organs, other modalities, "
             "or lesions without a visible mass.", "",
             "## Training data", "", *_training(tables), "",
             "## Evaluation: internal cross-validation (subject level)", ""]
    t3 = _rows(_read(tables, "table3_modality_comparison"),
               ["model", "AUC (pooled, 95% CI)", "sensitivity (pooled, 95% CI)",
                "specificity (pooled, 95% CI)", "paper AUC (MGH phyllodes)"])
    parts += [t3 or "Not available (notebook 03 has not run).", ""]
    reader = _rows(_read(tables, "table3e_reader_comparison"),
                   ["comparison", "AUC (95% CI)", "difference (DeLong 95% CI)", "delong_p",
                    "verdict"])
    parts += ["## The radiologist reference", "", reader or "No reader reference declared.",
              ""]
    parts += ["## Calibration", "", _rows(_read(tables, "table4_calibration"), [
        "model", "probabilities", "brier", "slope", "intercept", "ece", "n_subjects"])
        or "Not available.", ""]
    parts += ["## Operating point", "", _rows(_read(tables, "table5_operating_point"), [
        "model", "target_sensitivity", "sensitivity (95% CI)",
        "benign spared excision (95% CI)", "malignant missed"]) or "Not available.", ""]
    ext = _read(tables, "table10_external_validation")
    parts += ["## External validation", ""]
    if ext is None:
        parts += ["Not evaluated (notebook 07 has not run).", ""]
    else:
        parts += [_rows(ext, ["direction", "model", "internal AUC (95% CI)",
                              "external AUC (95% CI)", "external minus internal (95% CI)",
                              "external sensitivity", "external specificity"]), ""]
        sub = _rows(_read(tables, "table10c_external_subgroups"),
                    ["direction", "model", "subgroup", "value", "subjects", "AUC (95% CI)",
                     "note"])
        parts += ["### Subgroups (scanner, view)", "", sub or "Not available.", ""]
    parts += ["## Known limitations", "", *_limitations(tables), "",
              "## TRIPOD+AI checklist", "",
              "Each item of TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) with where this "
              "study answers it; \"not addressed\" where it does not.", "",
              _md(checklist(tables, figures)), ""]
    return "\n".join(parts)
