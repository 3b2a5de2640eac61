"""Every table of the study, each built by the function named after it, and the one writer.

The builders are named like the files they make (``table2_encoder_comparison`` writes
``tables/<cohort>/table2_encoder_comparison.*``); README.md's artifact map and
:data:`phyllodes.report.artifacts.ARTIFACTS` name the builder of each. :func:`write_table`
writes every table as CSV, Markdown (formatted for people, :mod:`phyllodes.report.format`) and
LaTeX; what a notebook measured goes to JSON through :mod:`phyllodes.report.records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sstats

from phyllodes.data.cohort import Cohort
from phyllodes.evaluate import attribution, readers, stats
from phyllodes.evaluate import comparisons as evaluation
from phyllodes.evaluate.comparisons import pooled_subject_test
from phyllodes.evaluate.stats import format_ci
from phyllodes.explain.results import Explanation
from phyllodes.keys import probe_name
from phyllodes.study import Study


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


def table1_cohort(cohort: Cohort) -> pd.DataFrame:
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
    p = sstats.mannwhitneyu(neg["n_images"], pos["n_images"]).pvalue if (
        s["n_images"].nunique() > 1) else np.nan
    add("Images per subject", "mean ± SD", {k: _mean_sd(v["n_images"].astype(float))
                                              for k, v in cols.items()}, p,
        "Mann-Whitney U" if not np.isnan(p) else "")
    add("Images", "n", {k: str(int(v["n_images"].sum())) for k, v in cols.items()})
    for f in cfg.numeric_features:
        a, b = neg[f].dropna(), pos[f].dropna()
        p = sstats.mannwhitneyu(a, b).pvalue if len(a) and len(b) else np.nan
        add(f, "mean ± SD", {k: _mean_sd(v[f]) for k, v in cols.items()}, p, "Mann-Whitney U")
        add(f, "median [IQR]", {k: _median_iqr(v[f]) for k, v in cols.items()})
        add(f, "missing", {k: _n_pct(int(v[f].isna().sum()), len(v)) for k, v in cols.items()})
    for f in cfg.categorical_features:
        observed = s.dropna(subset=[f])
        ct = pd.crosstab(observed[f], observed["y"])
        p, test = np.nan, ""
        if ct.shape[0] >= 2 and ct.shape[1] == 2:
            if ct.shape == (2, 2):
                p, test = sstats.fisher_exact(ct.to_numpy()).pvalue, "Fisher exact"
            else:
                p, test = sstats.chi2_contingency(ct.to_numpy())[1], "chi-square"
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


SHOW = ("auc", "f1", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv",
        "npv", "auprc")


def model_comparison(table: pd.DataFrame, by: str = "model_label",
                     metrics: tuple[str, ...] = SHOW) -> pd.DataFrame:
    """The readable columns: model, then 'metric (folds)' and 'metric (pooled, 95% CI)'."""
    out = pd.DataFrame({"model": table[by]})
    for m in metrics:
        out[f"{m} (fold mean ± SD)"] = table[m]
        out[f"{m} (pooled, 95% CI)"] = table[f"{m}_pooled"]
    return out


def paired_auc_tests(preds: pd.DataFrame, reference: str, others: list[str],
                     by: str = "model_label", n_boot: int = 2000, seed: int = 0
                     ) -> pd.DataFrame:
    """DeLong test and subject-bootstrap CI of AUC(reference) - AUC(other), pooled OOF."""
    s = pooled_subject_test(preds, by)
    wide = s.pivot_table(index="subject_id", columns=by, values="prob")
    y = s.groupby("subject_id")["y"].first().loc[wide.index].to_numpy()
    rows = []
    for o in others:
        if o not in wide.columns or reference not in wide.columns:
            continue
        ok = wide[[reference, o]].notna().all(axis=1).to_numpy()
        a, b = wide[reference].to_numpy()[ok], wide[o].to_numpy()[ok]
        d = stats.delong_roc_test(y[ok], a, b)
        bs = stats.paired_bootstrap_auc_diff(y[ok], a, b, n_boot=n_boot, seed=seed)
        rows.append({"comparison": f"{reference} vs {o}", "auc_reference": d["auc_a"],
                     "auc_other": d["auc_b"], "auc_difference": d["diff"],
                     "delong_ci": stats.format_ci(d["diff"], d["ci_low"], d["ci_high"]),
                     "delong_p": d["p_value"],
                     "bootstrap_ci": stats.format_ci(bs["diff"], bs["low"], bs["high"]),
                     "bootstrap_p": bs["p_value"], "n_subjects": int(ok.sum())})
    return pd.DataFrame(rows)


TABLE2_METRICS = {"auc": "AUC-ROC", "f1": "F1", "accuracy": "accuracy", "ppv": "precision",
                  "sensitivity": "recall (sensitivity)", "specificity": "specificity"}


@dataclass
class ModalityComparison:
    """Table 3's numbers for one set of clinical inputs (:func:`modality_comparison`), keyed by
    row (``clinical``, ``image``, ``multimodal``, then the baselines and the reader)."""

    #: row -> model label (display), the paper's three first
    labels: dict[str, str]
    #: :func:`~phyllodes.evaluate.comparisons.comparison_table` of the rows' models
    table: pd.DataFrame
    #: paired tests of the multimodal model against each other row
    tests: pd.DataFrame
    #: the predictions, with the late-fusion baseline's (and the reader's) rows added
    preds: pd.DataFrame
    #: a plain sentence: does the multimodal model beat each other row on this cohort?
    verdict: str

    def pooled_auc(self) -> dict[str, float]:
        """Row -> pooled out-of-fold subject AUC."""
        t = self.table.set_index("model_label")
        return {k: float(t.at[v, "auc_pooled_est"]) for k, v in self.labels.items()}

    def pooled_auc_ci(self) -> dict[str, list[float]]:
        """Row -> [low, high] of its pooled AUC's subject-bootstrap 95% CI."""
        t = self.table.set_index("model_label")
        return {k: [float(t.at[v, "auc_pooled_low"]), float(t.at[v, "auc_pooled_high"])]
                for k, v in self.labels.items()}

    def delong_p(self) -> dict[str, float]:
        """Comparison ('multimodal label vs other label') -> DeLong p-value."""
        return dict(zip(self.tests["comparison"], self.tests["delong_p"]))


def modality_comparison(preds: pd.DataFrame, encoder: str, fusion: str,
                        clinical_baselines: list[str], n_boot: int = 1000, seed: int = 0,
                        reader: readers.Reader | None = None) -> ModalityComparison:
    """Table 3's numbers for one set of clinical inputs: the paper's three models (clinical
    MLP, fine-tuned image branch, multimodal), the simple baselines (classical clinical models,
    the image linear probe, and the late fusion of the clinical logistic regression with the
    probe), their metrics, and paired tests of the multimodal model against each. With a
    ``reader`` (the cohort's reader reference) its row comes last and the multimodal model is
    tested against it too."""
    labels = {"clinical": evaluation.label_for(preds, "clinical", "mlp"),
              "image": evaluation.label_for(preds, "image", encoder),
              "multimodal": evaluation.label_for(preds, "multimodal", encoder, fusion)}
    for m in clinical_baselines:
        labels[f"clinical baseline: {m}"] = evaluation.label_for(preds, "clinical", m)
    labels["image baseline: linear probe"] = evaluation.label_for(preds, "image",
                                                                  probe_name(encoder))
    if "logreg" in clinical_baselines:
        lf = "multimodal · late fusion of clinical logreg and image linear probe"
        rows, _ = evaluation.baselines_late_fusion(preds, encoder, lf)
        preds = pd.concat([preds, rows], ignore_index=True)
        labels["late fusion of the two baselines"] = lf
    if reader is not None:
        preds = pd.concat([preds, reader.rows(preds)], ignore_index=True)
        labels["reader"] = reader.label
    shown = preds[preds["model_label"].isin(labels.values())]
    table = evaluation.comparison_table(shown, n_boot=n_boot, seed=seed,
                                        order=list(labels.values()))
    singles = [lab for k, lab in labels.items() if k != "multimodal"]
    tests = paired_auc_tests(shown, labels["multimodal"], singles, n_boot=n_boot, seed=seed)
    return ModalityComparison(labels, table, tests, preds,
                              evaluation.verdict(table, tests, labels["multimodal"], singles))


def table3e_reader_comparison(results: dict[str, ModalityComparison], reader: readers.Reader,
                              main: str,
                              n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Table 3e, the reader in the comparison: the reader's AUC, then for the image model and
    the multimodal model of each set of clinical inputs (``results``: set name ->
    :func:`modality_comparison`'s result, ``main`` the primary set) the model against the
    reader and the reader-plus-model combination (fit on inner validation) against the reader
    alone, with DeLong and bootstrap CIs and the subjects each rests on."""
    frames = []
    for name, res in results.items():
        lab = res.labels
        models = ({"image model": lab["image"]} if name == main else {})
        models[f"multimodal model (clinical inputs '{name}')"] = lab["multimodal"]
        t = readers.reader_comparison(res.preds, reader, models, n_boot=n_boot, seed=seed)
        frames.append(t if not frames else t.iloc[1:])  # the reader's own row once
    return pd.concat(frames, ignore_index=True)


@dataclass
class Ablation:
    """Table 9 (or 9b) for people (``table``) and each variant's pooled subject AUC as a number
    (``auc``: variant -> estimate) for the notebook's record."""

    table: pd.DataFrame
    auc: dict[str, float]


def table9_recipe_ablation(preds: pd.DataFrame, reference: str, order: list[str],
                           changes: dict[str, str], n_boot: int = 1000, seed: int = 0
                           ) -> Ablation:
    """Notebook 06's ablation: per variant its change, pooled subject AUC [95% CI], fold mean ±
    SD, and the paired difference from ``reference`` (the recipe) with its DeLong p-value."""
    table = evaluation.comparison_table(preds, n_boot=n_boot, seed=seed, order=order)
    tests = paired_auc_tests(preds, reference, [o for o in order if o != reference],
                             n_boot=n_boot, seed=seed).set_index("comparison")
    rows = []
    for _, r in table.iterrows():
        key = f"{reference} vs {r['model_label']}"
        t = tests.loc[key] if key in tests.index else None
        rows.append({"variant": r["model_label"], "change": changes.get(r["model_label"], ""),
                     "AUC (pooled, 95% CI)": r["auc_pooled"], "AUC (fold mean ± SD)": r["auc"],
                     "recipe minus variant (DeLong 95% CI)": "" if t is None
                     else t["delong_ci"],
                     "DeLong p": np.nan if t is None else t["delong_p"]})
    return Ablation(pd.DataFrame(rows), {str(r["model_label"]): float(r["auc_pooled_est"])
                                         for _, r in table.iterrows()})


#: Table 9b's rows: the multimodal recipe (late fusion LP-FT), the paper's concatenation and
#: the simple baselines.
RECIPE_LATE = "recipe: late fusion LP-FT"
CONCAT = "paper's concatenation (MLP head)"


def table9b_multimodal_recipe_ablation(preds: pd.DataFrame, encoder: str, n_boot: int = 1000,
                                       seed: int = 0) -> Ablation:
    """Notebook 06's multimodal part: the recipe's late fusion against the paper's
    concatenation, the clinical logistic regression, the image linear probe and the late
    fusion of those two (:func:`table9_recipe_ablation`'s columns). ``preds``: the runs of
    multimodal ``encoder`` (late, concat), clinical logreg and the probe."""
    lab = {RECIPE_LATE: evaluation.label_for(preds, "multimodal", encoder, "late"),
           CONCAT: evaluation.label_for(preds, "multimodal", encoder, "concat")}
    lf, (clin, probe) = evaluation.baselines_late_fusion(preds, encoder,
                                                         "late fusion of the baselines")
    lab.update({"clinical logistic regression": clin, "image linear probe": probe,
                "late fusion of the baselines": "late fusion of the baselines"})
    mm = pd.concat([preds, lf], ignore_index=True)
    mm = mm[mm["model_label"].isin(lab.values())].copy()
    mm["model_label"] = mm["model_label"].map({v: k for k, v in lab.items()})
    return table9_recipe_ablation(mm, RECIPE_LATE, list(lab), dict(lab), n_boot=n_boot,
                                  seed=seed)


def table2_encoder_comparison(table: pd.DataFrame, encoders: dict[str, str],
                              paper: dict[str, dict[str, float]], by: str = "model_label"
                              ) -> pd.DataFrame:
    """Table 2: per encoder, metrics as fold mean ± SD and pooled [95% CI], paper values beside
    (whether they are comparable goes in the caption: reported.comparison_note)."""
    t = table.set_index(by)
    rows = []
    for enc, lab in encoders.items():
        r = t.loc[lab]
        row = {"encoder": enc, "model": lab}
        for m, name in TABLE2_METRICS.items():
            row[f"{name} (fold mean ± SD)"] = r[m]
            row[f"{name} (pooled, 95% CI)"] = r[f"{m}_pooled"]
        row["paper AUC"] = paper.get(enc, {}).get("auc", np.nan)
        row["paper F1"] = paper.get(enc, {}).get("f1", np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def table3_modality_comparison(table: pd.DataFrame, labels: dict[str, str],
                               paper_auc: dict[str, float], by: str = "model_label"
                               ) -> pd.DataFrame:
    """Table 3: one row per modality, this run's metrics beside the paper's reported AUC."""
    t = table.set_index(by)
    rows = []
    for modality, lab in labels.items():
        r = t.loc[lab]
        rows.append({"modality": modality, "model": lab,
                     "AUC (fold mean ± SD)": r["auc"], "AUC (pooled, 95% CI)": r["auc_pooled"],
                     "F1 (fold mean ± SD)": r["f1"], "sensitivity (pooled, 95% CI)":
                     r["sensitivity_pooled"], "specificity (pooled, 95% CI)":
                     r["specificity_pooled"], "balanced accuracy (pooled, 95% CI)":
                     r["balanced_accuracy_pooled"],
                     "paper AUC (MGH phyllodes)": paper_auc.get(modality, np.nan)})
    return pd.DataFrame(rows)


SAMPLER_WORDS = {"class_aware": "class-aware sampling",
                 "shuffle": "every image once per epoch, shuffled"}


def table4_calibration(subj: pd.DataFrame, by: str = "model_label",
                       columns: tuple[str, ...] = ("prob", "prob_recal"),
                       sampler: str = "class_aware") -> pd.DataFrame:
    """Brier score, calibration slope/intercept, ECE and mean predicted risk vs prevalence on
    pooled test subjects, for the raw and the recalibrated probabilities; ``sampler``: the
    profile's, named in the label of the raw probabilities."""
    rows = []
    test = subj[subj["split"] == "test"]
    for model, g in test.groupby(by, sort=False):
        for col in columns:
            if col not in g:
                continue
            c = stats.calibration_summary(g["y"], g[col])
            raw = f"as trained ({SAMPLER_WORDS.get(sampler, sampler)})"
            rows.append({"model": model,
                         "probabilities": "recalibrated on inner validation"
                         if col == "prob_recal" else raw,
                         "brier": c["brier"], "slope": c["slope"], "intercept": c["intercept"],
                         "ece": c["ece"], "mean_predicted": float(g[col].mean()),
                         "prevalence": float(g["y"].mean()), "n_subjects": int(len(g))})
    return pd.DataFrame(rows)


@dataclass
class OperatingPoints:
    """Table 5 for people (``table``) and its estimates as numbers (``estimates``: model,
    sensitivity, spared, spared_low, spared_high) for the notebook's record."""

    table: pd.DataFrame
    estimates: pd.DataFrame


def table5_operating_point(subj: pd.DataFrame, by: str = "model_label", target: float = 0.95,
                           column: str = "prob", n_boot: int = 1000, seed: int = 0
                           ) -> OperatingPoints:
    """A high-sensitivity rule chosen on inner validation, applied to test subjects.

    Per fold the threshold is the highest one reaching ``target`` sensitivity on that fold's
    val subjects. Pooled over test subjects: achieved sensitivity, and the fraction of benign
    (negative) subjects below the threshold — excisions that would be spared — each with a
    subject-bootstrap 95% CI.
    """
    from phyllodes.evaluate.metrics import sensitivity_of, specificity_of
    estimates = []
    rows = []
    for model, g in subj.groupby(by, sort=False):
        flagged = []
        for fold, f in g.groupby("fold"):
            val, test = f[f["split"] == "val"], f[f["split"] == "test"]
            thr = stats.threshold_for_sensitivity(val["y"], val[column], target)
            flagged.append(test.assign(threshold=thr, positive=(test[column] >= thr)))
        t = pd.concat(flagged)
        y, pos = t["y"].to_numpy(), t["positive"].to_numpy().astype(float)

        ci_s = stats.cluster_bootstrap_ci(sensitivity_of, y, pos,
                                          groups=t["subject_id"].to_numpy(), n_boot=n_boot,
                                          seed=seed)
        ci_b = stats.cluster_bootstrap_ci(specificity_of, y, pos,
                                          groups=t["subject_id"].to_numpy(), n_boot=n_boot,
                                          seed=seed)
        missed = int(((y == 1) & (pos == 0)).sum())
        rows.append({"model": model, "target_sensitivity": target,
                     "thresholds_per_fold": ", ".join(f"{x:.3f}" for x in
                                                      t.groupby("fold")["threshold"].first()),
                     "sensitivity (95% CI)": stats.format_ci(ci_s["estimate"], ci_s["low"],
                                                            ci_s["high"]),
                     "benign spared excision (95% CI)": stats.format_ci(
                         ci_b["estimate"], ci_b["low"], ci_b["high"]),
                     "malignant missed": missed, "benign": int((y == 0).sum()),
                     "positive": int((y == 1).sum())})
        estimates.append({"model": model, "sensitivity": ci_s["estimate"],
                          "spared": ci_b["estimate"], "spared_low": ci_b["low"],
                          "spared_high": ci_b["high"]})
    return OperatingPoints(pd.DataFrame(rows), pd.DataFrame(estimates))


@dataclass
class ModalityShare:
    """Table 7 for people (``table``) and the Shapley image share with its subject-bootstrap
    95% CI as numbers, for the figure and the notebook's record."""

    table: pd.DataFrame
    estimate: float
    low: float
    high: float


def table7_modality_share(result: Explanation, paper_share: float, n_boot: int = 1000,
                          seed: int = 0
                          ) -> ModalityShare:
    """The image's share of the prediction: Shapley (subject-bootstrap CI) and ablation
    estimates, with the paper's value beside them."""
    pi, abl = result.per_image, result.ablation
    share = attribution.image_share_ci(pi["phi_image"], pi["phi_clinical"], groups=pi["subject_id"],
                                   n_boot=n_boot, seed=seed)
    table = pd.DataFrame([
        {"estimate": "Shapley image share (|phi| over test images, all folds)",
         "value": format_ci(share["estimate"], share["low"], share["high"]),
         "paper": paper_share},
        {"estimate": "ablation image share (mean ± SD over folds)",
         "value": f"{abl['image_share'].mean():.3f} ± {abl['image_share'].std(ddof=1):.3f}",
         "paper": paper_share},
        {"estimate": "AUC both / no image / no clinical (mean over folds)",
         "value": f"{abl['auc_both'].mean():.3f} / {abl['auc_no_image'].mean():.3f} / "
                  f"{abl['auc_no_clinical'].mean():.3f}", "paper": float("nan")},
    ])
    return ModalityShare(table, float(share["estimate"]), float(share["low"]),
                         float(share["high"]))


def table8_clinical_importance(importance: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC drop per clinical feature over folds (weighted by test images)."""
    if importance.empty:
        return importance
    w = importance.assign(wd=importance["auc_drop_mean"] * importance["n_test"])
    g = w.groupby("feature")
    out = pd.DataFrame({"auc_drop_mean": g["wd"].sum() / g["n_test"].sum(),
                        "auc_drop_sd_between_folds": g["auc_drop_mean"].std(ddof=1),
                        "folds": g.size()})
    return out.sort_values("auc_drop_mean", ascending=False).reset_index()


def write_table(df: pd.DataFrame, study: Study, stem: str, caption: str = "",
                index: bool = False, digits: int | None = None) -> dict[str, Path]:
    """Write ``<study's output root>/tables/<cohort>/<stem>.{csv,md,tex}``; return the paths.

    Every column is written; one whose name starts with ``_`` is refused (numbers a notebook
    records travel beside a table as typed fields, e.g. :class:`Ablation`, never as hidden
    columns). ``digits`` rounds the numbers."""
    hidden = [str(c) for c in df.columns if str(c).startswith("_")]
    if hidden:
        raise ValueError(f"table {stem}: columns {hidden} start with '_'; a table holds only "
                         "what it shows (return the numbers beside it, e.g. tables.Ablation)")
    if digits is not None:
        df = df.round(digits)
    d = study.tables_dir
    out = {ext: d / f"{stem}.{ext}" for ext in ("csv", "md", "tex")}
    df.to_csv(out["csv"], index=index)
    from phyllodes.report.format import format_table  # the .md is for people: 3 decimals,
    md = format_table(df).to_markdown(index=index, disable_numparse=True)  # p = 0.021, words
    out["md"].write_text((f"**{caption}**\n\n" if caption else "") + md + "\n")
    tex = df.to_latex(index=index, escape=True, caption=caption or None,
                      label=f"tab:{stem}")
    out["tex"].write_text(tex)
    write_machine(d, stem)
    return out


#: beside the tables: the processor and kernels that made each of them (``--check``)
MACHINE_FILE = "machine.json"


def write_machine(tables_dir: Path, stem: str) -> Path:
    """Record which processor and CPU kernels made table ``stem`` in ``tables_dir``
    (:func:`phyllodes.kernels.record`, one entry per table in ``machine.json``)."""
    import json

    from phyllodes import kernels
    p = Path(tables_dir) / MACHINE_FILE
    try:
        made = json.loads(p.read_text()) if p.exists() else {}
    except ValueError:
        made = {}
    made[stem] = kernels.record()
    text = json.dumps(dict(sorted(made.items())), indent=1) + "\n"
    if not p.exists() or p.read_text() != text:
        p.write_text(text)
    return p
