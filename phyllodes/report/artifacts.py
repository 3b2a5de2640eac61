"""The paper artifact map: each table and figure, the notebook that makes it, its files and
the function that builds it. README.md's map, the HTML report and the tests read it from here.

Output paths are relative to the output root with ``{c}`` for the cohort name; ``{k}`` and
``{s}`` (folds, seed) appear only in the splits file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """One paper artifact: what it is, where it comes from and which files hold it."""

    name: str                   #: e.g. "Table 3: clinical vs image vs multimodal"
    notebook: str               #: e.g. "03_multimodal_training"
    tables: tuple[str, ...] = ()   #: stems under tables/<cohort>/ (.csv, .md, .tex)
    figures: tuple[str, ...] = ()  #: stems under figures/<cohort>/ (.png, .pdf)
    #: "module.function" of the builders: names for people, never imported from here (report
    #: may not import explain.folds or train; tests/test_check.py resolves them)
    built_by: tuple[str, ...] = ()
    needs_clinical: bool = False  #: only for cohorts with clinical features

    def files(self, cohort: str) -> list[str]:
        """Every file of the artifact, relative to the output root."""
        out = [f"tables/{cohort}/{t}.{e}" for t in self.tables for e in ("csv", "md", "tex")]
        return out + [f"figures/{cohort}/{f}.{e}" for f in self.figures for e in ("png", "pdf")]


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("Table 1: cohort characteristics", "01_data_curation", ("table1_cohort",),
             built_by=("report.tables.table1_cohort",)),
    Artifact("Figure 1: example images with ROI, classes, folds", "01_data_curation",
             figures=("fig1_examples", "fig1b_balance_folds"),
             built_by=("report.figures.fig1_examples", "report.figures.fig1b_balance_folds")),
    Artifact("subject-stratified folds", "01_data_curation",
             built_by=("data.splits.make_splits",)),
    Artifact("unimodal baselines (clinical MLP, LR, RF, GB; image fine-tuned, image linear "
             "probe)", "02_unimodal_baselines",
             ("table_unimodal_baselines", "table_unimodal_baselines_inner_threshold",
              "table_unimodal_baselines_tests"),
             ("fig_roc_unimodal",), ("report.tables.model_comparison",
                                     "report.tables.paired_auc_tests",
                                     "report.figures.roc_curves")),
    Artifact("Table 3: clinical vs image vs multimodal, beside the simple baselines",
             "03_multimodal_training",
             ("table3_modality_comparison", "table3b_modality_tests"),
             built_by=("report.tables.modality_comparison",
                       "report.tables.table3_modality_comparison",
                       "report.tables.paired_auc_tests"), needs_clinical=True),
    Artifact("Table 3 with every clinical column (sensitivity analysis)",
             "03_multimodal_training",
             ("table3c_modality_comparison_all", "table3d_modality_tests_all"),
             built_by=("report.tables.modality_comparison",
                       "report.tables.table3_modality_comparison",
                       "report.tables.paired_auc_tests"), needs_clinical=True),
    Artifact("the reader: the radiologist's category against the models, and combined with "
             "them", "03_multimodal_training", ("table3e_reader_comparison",),
             built_by=("report.tables.table3e_reader_comparison",
                       "evaluate.readers.reader_comparison"), needs_clinical=True),
    Artifact("Figure 2: ROC of the three modalities", "03_multimodal_training",
             figures=("fig2_roc_modalities",), built_by=("report.figures.roc_curves",),
             needs_clinical=True),
    Artifact("fusion variants (concat, late, gated)", "03_multimodal_training",
             ("table_fusion_variants", "table_fusion_variants_tests"),
             built_by=("report.tables.model_comparison", "report.tables.paired_auc_tests"),
             needs_clinical=True),
    Artifact("Table 2: encoder comparison", "04_encoder_comparison",
             ("table2_encoder_comparison", "table2b_encoder_tests"),
             ("fig4_encoder_forest", "fig4b_roc_encoders"),
             ("report.tables.table2_encoder_comparison", "report.tables.paired_auc_tests",
              "report.figures.forest_plot", "report.figures.roc_curves")),
    Artifact("calibration", "04_encoder_comparison", ("table4_calibration",),
             ("fig5_calibration",), ("report.tables.table4_calibration",
                                     "report.figures.fig5_calibration")),
    Artifact("clinical utility, beside the reader's rules (BI-RADS >= 4a, the downgrade "
             "question)", "04_encoder_comparison",
             ("table5_operating_point", "table5b_reader_operating_points"),
             ("fig6_decision_curves",),
             ("report.tables.table5_operating_point", "evaluate.readers.reader_operating_table",
              "report.figures.fig6_decision_curves")),
    Artifact("Figure 3: Score-CAM", "05_explainability", ("table6_cam_validation",),
             ("fig3_scorecam",), ("report.figures.fig3_scorecam",
                                  "explain.folds.table6_cam_validation")),
    Artifact("the CAM layer of each method (the family's or a finer one), chosen by "
             "faithfulness on the folds of another split seed", "05_explainability",
             ("table6e_cam_layer_choice",), built_by=("explain.folds.choose_cam_layers",)),
    Artifact("are the maps faithful (deletion curves against a random map and a centre prior), "
             "and where in the anatomy (lesion, peri-lesional band, rest) by outcome",
             "05_explainability", ("table6b_cam_faithfulness", "table6c_cam_anatomy"),
             built_by=("explain.folds.table6b_cam_faithfulness",
                       "explain.folds.table6c_cam_anatomy")),
    Artifact("the maps' sanity checks on every fold (model and data randomisation)",
             "05_explainability",
             ("table6d_cam_sanity_checks",), ("fig6d_randomised_maps",),
             ("explain.folds.table6d_sanity_checks", "report.figures.fig6d_randomised_maps")),
    Artifact("image share of the prediction (~63%)", "05_explainability",
             ("table7_modality_share",), ("fig7_modality_share",),
             ("report.tables.table7_modality_share", "report.figures.fig7_modality_share"),
             needs_clinical=True),
    Artifact("clinical feature importance", "05_explainability",
             ("table8_clinical_importance",), ("fig8_clinical_importance",),
             ("report.tables.table8_clinical_importance",
              "report.figures.fig8_clinical_importance"),
             needs_clinical=True),
    Artifact("how the image recipe was chosen (ablation, folds of another seed)",
             "06_image_recipe", ("table9_image_recipe_ablation",), ("fig9_recipe_ablation",),
             ("report.tables.table9_recipe_ablation", "report.figures.forest_plot")),
    Artifact("the multimodal recipe against its alternatives (folds of another seed)",
             "06_image_recipe", ("table9b_multimodal_recipe_ablation",),
             built_by=("report.tables.table9b_multimodal_recipe_ablation",
                       "report.tables.table9_recipe_ablation"), needs_clinical=True),
    Artifact("external validation: internal vs external AUC, calibration, scanners and views, "
             "the reader, case mix (a second cohort, both ways)", "07_external_validation",
             ("table10_external_validation", "table10b_external_calibration",
              "table10c_external_subgroups", "table10d_external_reader", "table10e_case_mix",
              "table10f_external_decision_curve"), ("fig_external_validation",),
             ("evaluate.external.performance_table", "evaluate.external.calibration_tables",
              "evaluate.external.subgroup_tables", "evaluate.external.reader_table",
              "evaluate.external.case_mix_table", "evaluate.external.decision_curve_table",
              "report.figures.external_validation")),
)

def artifact_map_markdown() -> str:
    """README.md's table: paper artifact → notebook → output files → built by."""
    rows = ["| paper artifact | notebook | output (for cohort `<c>`) | built by |",
            "| --- | --- | --- | --- |"]
    for a in ARTIFACTS:
        outs = [f"`tables/<c>/{t}.{{csv,md,tex}}`" for t in a.tables]
        outs += [f"`figures/<c>/{f}.{{png,pdf}}`" for f in a.figures]
        if a.name == "subject-stratified folds":
            outs = ["`tables/<c>/splits_<k>fold_seed<s>.csv` (editable, reused)"]
        built = ", ".join(f"`{b}`" for b in a.built_by)
        rows.append(f"| {a.name} | `{a.notebook}` | {', '.join(outs)} | {built} |")
    return "\n".join(rows)
