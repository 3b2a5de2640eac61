"""External validation: a model developed on one cohort, evaluated on another it never saw.

The numbers notebook 07 reports (TRIPOD+AI: external validation, differences between
development and evaluation data, performance across clusters), all at the subject level:

* :func:`auc_estimate` — AUC with a subject-bootstrap 95% CI (a subgroup of one class says
  "AUC undefined", never NaN);
* :func:`auc_drop` — external minus internal AUC, the CI from independent subject bootstraps of
  the two cohorts (different patients: nothing is paired);
* :func:`calibration_table` — calibration-in-the-large and slope of the model *as trained*, and
  after an **intercept-only update estimated by cross-validation within the external cohort**
  (each external subject's update is fit on the other external folds): that row uses external
  labels, and says so;
* :func:`subgroup_table` — performance by an image-level group (scanner, view) with counts and
  CIs, and a note where a subgroup is too small to say anything;
* :func:`case_mix_table` — each cohort's label balance, images, image and lesion sizes,
  scanners and prediction distribution, side by side.

Nothing here fits anything on the external cohort except the labelled intercept update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from phyllodes.data.imageio import upright_size
from phyllodes.evaluate import stats
from phyllodes.evaluate.comparisons import check_identity
from phyllodes.evaluate.metrics import subject_level

#: a subgroup with fewer subjects than this in either class is flagged as too small
MIN_PER_CLASS = 10
UNDEFINED = "AUC undefined (one class)"


def subject_scores(preds: pd.DataFrame) -> pd.DataFrame:
    """One row per subject (mean probability over its images): subject_id, y, prob."""
    cols = ["subject_id", "fold", "split", "y", "prob", "image_path"]
    s = subject_level(preds.assign(fold=0, split="x")[cols])
    return s[["subject_id", "y", "prob", "n_images"]].reset_index(drop=True)


def auc_estimate(y, prob, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC, its subject-bootstrap 95% CI, the counts, and ``text`` ("0.912 [0.871, 0.948]",
    or "AUC undefined (one class)")."""
    y = np.asarray(y, dtype=int)
    prob = np.asarray(prob, dtype=float)
    n, n_pos = len(y), int(y.sum())
    if n == 0 or n_pos in (0, n):
        return {"auc": np.nan, "low": np.nan, "high": np.nan, "n": n, "n_positive": n_pos,
                "text": UNDEFINED}
    ci = stats.cluster_bootstrap_ci(roc_auc_score, y, prob, n_boot=n_boot, seed=seed)
    return {"auc": ci["estimate"], "low": ci["low"], "high": ci["high"], "n": n,
            "n_positive": n_pos, "text": stats.format_ci(ci["estimate"], ci["low"], ci["high"])}


def auc_drop(internal: pd.DataFrame, external: pd.DataFrame, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """External minus internal subject AUC (``internal``/``external``: subject tables with y,
    prob) and its 95% CI from independent bootstraps of the two cohorts' subjects."""
    yi, pi = internal["y"].to_numpy(int), internal["prob"].to_numpy(float)
    ye, pe = external["y"].to_numpy(int), external["prob"].to_numpy(float)
    if len(set(yi)) < 2 or len(set(ye)) < 2:
        return {"drop": np.nan, "low": np.nan, "high": np.nan, "text": UNDEFINED}
    d = (stats.auc_replicates(ye, pe, n_boot=n_boot, seed=seed + 1)
         - stats.auc_replicates(yi, pi, n_boot=n_boot, seed=seed))
    d = d[np.isfinite(d)]
    est = float(roc_auc_score(ye, pe) - roc_auc_score(yi, pi))
    low, high = np.quantile(d, [0.025, 0.975])
    return {"drop": est, "low": float(low), "high": float(high),
            "text": stats.format_ci(est, float(low), float(high))}


def intercept_update_cv(y, prob, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Probabilities after an intercept-only recalibration (logit p + a) where each subject's
    ``a`` is estimated on the other folds of the *same* (external) cohort: uses its labels."""
    y = np.asarray(y, dtype=int)
    lp = stats.logit(np.asarray(prob, dtype=float))
    out = np.empty(len(y))
    k = max(2, min(n_splits, int(np.bincount(y, minlength=2).min())))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(lp, y):
        a = stats.calibration_in_the_large(y[tr], lp[tr])
        out[te] = special.expit(lp[te] + a)
    return out


def calibration_table(subj: pd.DataFrame, n_splits: int = 5, seed: int = 0) -> pd.DataFrame:
    """Calibration on the external subjects: as trained, and after the intercept-only update
    estimated by cross-validation within the external cohort (labelled: it uses external
    labels). Columns: version, uses external labels, calibration-in-the-large, slope, Brier,
    ECE, mean predicted, observed rate, subjects."""
    y, p = subj["y"].to_numpy(int), subj["prob"].to_numpy(float)
    rows = []
    for version, q, uses in (
            ("as trained (the development cohort's model, nothing fit here)", p, "no"),
            (f"intercept-only update, {n_splits}-fold cross-validation within the external "
             "cohort", intercept_update_cv(y, p, n_splits, seed), "yes")):
        c = stats.calibration_summary(y, q)
        rows.append({"version": version, "uses external labels": uses,
                     "calibration-in-the-large": c["intercept"], "slope": c["slope"],
                     "Brier": c["brier"], "ECE": c["ece"], "mean predicted": float(q.mean()),
                     "observed rate": float(y.mean()), "subjects": int(len(y))})
    return pd.DataFrame(rows)


def subgroup_table(preds: pd.DataFrame, groups: pd.Series, name: str, n_boot: int = 1000,
                   seed: int = 0, min_per_class: int = MIN_PER_CLASS) -> pd.DataFrame:
    """Subject-level AUC within each value of an image-level ``groups`` column (aligned with
    ``preds``' rows): a subject enters a subgroup with its images of that group. Columns:
    the group, subjects, positive, negative, images, AUC (95% CI), note."""
    rows = []
    g = pd.Series(np.asarray(groups), index=preds.index).astype(str)
    for value in sorted(g.unique()):
        s = subject_scores(preds[g == value])
        est = auc_estimate(s["y"], s["prob"], n_boot, seed)
        n_pos, n_neg = est["n_positive"], est["n"] - est["n_positive"]
        note = ("one class only: no AUC" if est["text"] == UNDEFINED else
                f"too small to say anything (fewer than {min_per_class} subjects of a class)"
                if min(n_pos, n_neg) < min_per_class else "")
        rows.append({name: value, "subjects": est["n"], "positive": n_pos, "negative": n_neg,
                     "images": int((g == value).sum()), "AUC (95% CI)": est["text"],
                     "auc": est["auc"], "note": note})
    return pd.DataFrame(rows)


def _image_sizes(cohort) -> np.ndarray:
    """(width, height) of every stored image as the study reads it (EXIF orientation
    applied), from the file headers (no decoding)."""
    return np.asarray([upright_size(p) for p in cohort.images["image_abspath"]], dtype=float)


def _median_iqr(x, digits: int = 0) -> str:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return "not available"
    q = np.quantile(x, [0.25, 0.5, 0.75])
    return f"{q[1]:.{digits}f} [{q[0]:.{digits}f}, {q[2]:.{digits}f}]"


SCANNER_COLUMNS = ("scanner", "device", "manufacturer", "transducer")
#: columns of a derived copy holding the release's lesion box area and image size (BUS-BRA's
#: crops keep them), so the case mix compares lesions in the original images
ORIGINAL_BOX_COLUMNS = ("box_area_px", "image_width", "image_height")
SIZE_COLUMNS = ("tumor_size_mm", "lesion_size_mm")


def case_mix(cohort, subj: pd.DataFrame, role: str) -> dict:
    """One column of the case-mix table: the cohort's label balance, images, stored image size,
    lesion box (px of the stored image) and size in mm where the cohort has it, scanners, and
    the distribution of the model's subject-level predictions (``subj``: y, prob) by class."""
    images, subjects = cohort.images, cohort.subjects
    sizes = _image_sizes(cohort)
    out = {"role": role, "subjects": int(len(subjects)),
           "positive subjects": f"{int(subjects['y'].sum())} "
                                f"({subjects['y'].mean():.1%})",
           "images": int(len(images)),
           "images per subject": f"{len(images) / len(subjects):.2f}",
           "image width x height as stored, px (median)":
               f"{np.median(sizes[:, 0]):.0f} x {np.median(sizes[:, 1]):.0f}"}
    share = None
    if set(ORIGINAL_BOX_COLUMNS) <= set(images.columns):  # a derived copy that keeps them
        area, w, h = (pd.to_numeric(images[c], errors="coerce").to_numpy(float)
                      for c in ORIGINAL_BOX_COLUMNS)
        share = 100 * area / (w * h)
    elif cohort.has_roi:  # the stored image is the whole (possibly downsized) image
        w = (images["roi_x1"] - images["roi_x0"]).to_numpy(float)
        h = (images["roi_y1"] - images["roi_y0"]).to_numpy(float)
        share = 100 * w * h / (sizes[:, 0] * sizes[:, 1])
    out["lesion box, share of the original image's area (median [IQR])"] = (
        _median_iqr(share, 1) + " %" if share is not None else "not available")
    size_col = next((c for c in SIZE_COLUMNS if c in images.columns), None)
    out["lesion size, mm (median [IQR])"] = (
        _median_iqr(pd.to_numeric(images.drop_duplicates("subject_id")[size_col],
                                  errors="coerce"), 1)
        if size_col else "not available (no pixel size)")
    scan = next((c for c in SCANNER_COLUMNS if c in images.columns), None)
    out["scanners (images)"] = ("; ".join(f"{k}: {v}" for k, v in
                                          images[scan].value_counts().items())
                                if scan else "not recorded")
    for label, yv in (("benign", 0), ("positive", 1)):
        out[f"predicted probability, {label} subjects (median [IQR])"] = _median_iqr(
            subj.loc[subj["y"] == yv, "prob"], 3)
    return out


def case_mix_table(columns: list[dict]) -> pd.DataFrame:
    """The case-mix columns (:func:`case_mix`) side by side: one row per characteristic."""
    names = [c["role"] for c in columns]
    keys = [k for k in columns[0] if k != "role"]
    for c in columns[1:]:
        keys += [k for k in c if k != "role" and k not in keys]
    return pd.DataFrame({"characteristic": keys,
                         **{n: [str(c.get(k, "")) for k in keys] for n, c in zip(names, columns)}})


def decision_table(subj: pd.DataFrame, columns: dict[str, str], thresholds,
                   reader_nb: pd.DataFrame | None = None, reader_label: str = ""
                   ) -> pd.DataFrame:
    """Net benefit on the external subjects at each threshold probability: each model column
    of ``subj`` (``label -> column``), excise-all, excise-none and, when given, the reader's
    rule (a fixed decision)."""
    t = np.asarray(thresholds, dtype=float)
    y = subj["y"].to_numpy(int)
    out = pd.DataFrame({"threshold": t})
    for label, col in columns.items():
        out[label] = stats.net_benefit(y, subj[col].to_numpy(float), t)
    out["excise all"] = stats.net_benefit_treat_all(y, t)
    out["excise none"] = 0.0
    if reader_nb is not None:
        out[reader_label] = reader_nb["net_benefit"].to_numpy()
    return out


# --------------------------------------------------------------------------- a direction


@dataclass
class Direction:
    """One external validation: models developed on ``development``, applied to ``external``.

    ``internal``: the development cohort's pooled out-of-fold test predictions (image rows,
    one ``model_label`` per model); ``inner_val``: the final models' inner-validation
    predictions on the development cohort (where their thresholds are chosen); ``applied``:
    the final models' predictions on every external image."""

    development: object
    external: object
    internal: pd.DataFrame
    inner_val: pd.DataFrame
    applied: pd.DataFrame

    def __post_init__(self) -> None:
        for frame in (self.internal, self.inner_val, self.applied):
            check_identity(frame)  # a model is selected by its label below

    @property
    def name(self) -> str:
        return f"{self.development.name} → {self.external.name}"

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.applied["model_label"]))

    def scores(self, which: str, model: str) -> pd.DataFrame:
        """Subject scores of ``model`` on the 'internal', 'inner_val' or 'external' subjects."""
        frame = {"internal": self.internal, "inner_val": self.inner_val,
                 "external": self.applied}[which]
        return subject_scores(frame[frame["model_label"] == model])

    def reader(self, cohort=None):
        """The first reader reference of ``cohort`` (default: the external one), or None."""
        from phyllodes.evaluate.readers import study_reader
        return study_reader(cohort if cohort is not None else self.external)


def shared_features(a, b) -> list[str]:
    """The clinical inputs both cohorts declare, with the same level and type."""
    def kinds(c) -> dict[str, str]:
        cfg = c.declared or c.config
        return {**{f: "subject numeric" for f in cfg.numeric_features},
                **{f: "subject categorical" for f in cfg.categorical_features},
                **{f: "image numeric" for f in cfg.image_numeric_features},
                **{f: "image categorical" for f in cfg.image_categorical_features}}
    ka, kb = kinds(a), kinds(b)
    return [f for f in ka if kb.get(f) == ka[f]]


def _sens_spec(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    from phyllodes.evaluate.metrics import sensitivity_of, specificity_of
    return sensitivity_of(y, p >= t), specificity_of(y, p >= t)


def performance_table(d: Direction, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model: internal AUC (cross-validation, pooled out of fold), external AUC (final
    model), the drop, and sensitivity/specificity at the final model's threshold (Youden on
    its inner-validation subjects); then the reader, internal and external, when both
    cohorts declare one."""
    from phyllodes.evaluate.metrics import choose_threshold
    from phyllodes.evaluate.readers import reader_label
    rows = []
    for m in d.models:
        i, e, v = d.scores("internal", m), d.scores("external", m), d.scores("inner_val", m)
        ai, ae = auc_estimate(i["y"], i["prob"], n_boot, seed), auc_estimate(
            e["y"], e["prob"], n_boot, seed)
        drop = auc_drop(i, e, n_boot, seed)
        t = choose_threshold(v["y"], v["prob"])
        si, pi = _sens_spec(i["y"].to_numpy(), i["prob"].to_numpy(), t)
        se, pe = _sens_spec(e["y"].to_numpy(), e["prob"].to_numpy(), t)
        rows.append({"direction": d.name, "model": m, "internal AUC (95% CI)": ai["text"],
                     "external AUC (95% CI)": ae["text"],
                     "external minus internal (95% CI)": drop["text"],
                     "threshold (final model's inner validation)": round(float(t), 4),
                     "external sensitivity": se, "external specificity": pe,
                     "internal sensitivity": si, "internal specificity": pi,
                     "internal subjects": ai["n"], "external subjects": ae["n"],
                     "auc_internal": ai["auc"], "auc_external": ae["auc"],
                     "auc_drop": drop["drop"]})
    for which, cohort in (("internal", d.development), ("external", d.external)):
        r = d.reader(cohort)
        if r is None:
            continue
        t = r.table[r.table["score"].notna()]
        est = auc_estimate(t["y"], t["score"], n_boot, seed)
        sens, spec = _sens_spec(t["y"].to_numpy(), t["score"].to_numpy(), r.spec.threshold) \
            if r.spec.threshold is not None else (np.nan, np.nan)
        rows.append({"direction": d.name, "model": f"{reader_label(r.spec)}, {cohort.name}",
                     f"{which} AUC (95% CI)": est["text"],
                     f"{which} sensitivity": sens, f"{which} specificity": spec,
                     "threshold (final model's inner validation)": np.nan,
                     f"{which} subjects": est["n"], f"auc_{which}": est["auc"]})
    cols = ["direction", "model", "internal AUC (95% CI)", "external AUC (95% CI)",
            "external minus internal (95% CI)", "threshold (final model's inner validation)",
            "internal sensitivity", "internal specificity", "external sensitivity",
            "external specificity", "internal subjects", "external subjects", "auc_internal",
            "auc_external", "auc_drop"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    text = [c for c in cols if "(95% CI)" in c]
    out[text] = out[text].fillna("")
    for c in ("internal subjects", "external subjects"):
        out[c] = out[c].astype("Int64")
    return out


def calibration_tables(d: Direction, seed: int = 0) -> pd.DataFrame:
    """:func:`calibration_table` of every model of the direction."""
    return pd.concat([calibration_table(d.scores("external", m), seed=seed)
                      .assign(direction=d.name, model=m) for m in d.models],
                     ignore_index=True)


def subgroup_tables(d: Direction, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`subgroup_table` of every model by each image-level categorical column of the
    external cohort (scanner, view, ...); one note row when it declares none."""
    cfg = d.external.declared or d.external.config
    columns = list(cfg.image_categorical_features)
    columns += [c for c in SCANNER_COLUMNS if c in d.external.images.columns
                and c not in columns]
    if not columns:
        return pd.DataFrame([{"direction": d.name, "subgroup": "none",
                              "note": f"{d.external.name} records no image-level group "
                                      "(scanner, view)"}])
    frames = []
    images = d.external.images.set_index("image_path")
    for m in d.models:
        a = d.applied[d.applied["model_label"] == m]
        for c in columns:
            t = subgroup_table(a, a["image_path"].map(images[c]), "value", n_boot, seed)
            frames.append(t.assign(direction=d.name, model=m, subgroup=c))
    out = pd.concat(frames, ignore_index=True)
    for c in ("subjects", "positive", "negative", "images"):
        out[c] = out[c].astype("Int64")
    first = ["direction", "model", "subgroup", "value"]
    return out[first + [c for c in out.columns if c not in first]]


def reader_table(d: Direction, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The external cohort's reader beside each final model on the same external subjects:
    AUCs, the paired AUC difference (subject bootstrap, DeLong) and the clinic's rule; one
    note row when the external cohort declares no reader reference."""
    from phyllodes.evaluate.readers import reader_label, reader_operating_points
    r = d.reader()
    if r is None:
        return pd.DataFrame([{"direction": d.name, "comparison": "reader reference",
                              "note": f"no reader reference declared for {d.external.name}"}])
    ref = r.table[r.table["score"].notna()].set_index("subject_id")
    rows = []
    for m in d.models:
        s = d.scores("external", m)
        s = s[s["subject_id"].isin(ref.index)]
        y = s["y"].to_numpy(int)
        score = s["subject_id"].map(ref["score"]).to_numpy(float)
        boot = stats.paired_bootstrap_auc_diff(y, s["prob"].to_numpy(), score, n_boot=n_boot,
                                               seed=seed)
        dl = stats.delong_roc_test(y, s["prob"].to_numpy(), score)
        rows.append({"direction": d.name, "comparison": f"{m} minus {reader_label(r.spec)}",
                     "model AUC": boot["auc_a"], "reader AUC": boot["auc_b"],
                     "difference (95% CI)": stats.format_ci(boot["diff"], boot["low"],
                                                            boot["high"]),
                     "bootstrap p": boot["p_value"], "DeLong p": dl["p_value"],
                     "subjects": int(len(y)), "positive": int(y.sum())})
    ops = reader_operating_points(r.table, r.spec, n_boot=n_boot, seed=seed)
    for _, o in ops.iterrows():
        rows.append({"direction": d.name, "comparison": f"the clinic's rule: {o['rule']}",
                     "sensitivity (95% CI)": o["sensitivity (95% CI)"],
                     "benign spared excision (95% CI)": o["benign spared excision (95% CI)"],
                     "subjects": o["subjects"], "positive": o["positive"]})
    out = pd.DataFrame(rows)
    return out.fillna("")


def case_mix_columns(d: Direction) -> list[dict]:
    """The case-mix columns of a direction's two cohorts (predictions of its image model:
    out of fold on the development cohort, the final model on the external one)."""
    m = d.models[0]
    return [case_mix(d.development, d.scores("internal", m),
                     f"{d.development.name} (development, out of fold)"),
            case_mix(d.external, d.scores("external", m),
                     f"{d.external.name} (external, final model of {d.development.name})")]


def decision_curve_table(d: Direction, thresholds=None, seed: int = 0) -> pd.DataFrame:
    """Net benefit on the external subjects of each final model as trained and after the
    cross-validated intercept update (uses external labels), and the reader's rule."""
    from phyllodes.evaluate.readers import reader_label, reader_net_benefit
    t = np.round(np.arange(0.05, 0.81, 0.05), 2) if thresholds is None else thresholds
    frames = []
    r = d.reader()
    for m in d.models:
        s = d.scores("external", m)
        s = s.assign(updated=intercept_update_cv(s["y"], s["prob"], seed=seed))
        nb = reader_net_benefit(r.table, r.spec, t) if r is not None and \
            r.spec.threshold is not None else None
        tab = decision_table(s, {"model as trained": "prob",
                                 "model, intercept updated (external labels)": "updated"}, t,
                             nb, reader_label(r.spec) + "'s rule" if nb is not None else "")
        frames.append(tab.assign(direction=d.name, model=m))
    out = pd.concat(frames, ignore_index=True)
    first = ["direction", "model", "threshold"]
    return out[first + [c for c in out.columns if c not in first]]


def summary_record(directions: list[Direction], perf: pd.DataFrame, **meta) -> dict:
    """What README and the report say of notebook 07: per direction and model, internal and
    external AUC and the drop."""
    rows = []
    for d in directions:
        for m in d.models:
            r = perf[(perf["direction"] == d.name) & (perf["model"] == m)].iloc[0]
            rows.append({"direction": d.name, "development": d.development.name,
                         "external": d.external.name, "model": m,
                         "internal_auc": float(r["auc_internal"]),
                         "external_auc": float(r["auc_external"]),
                         "drop": float(r["auc_drop"]),
                         "internal": r["internal AUC (95% CI)"],
                         "external_text": r["external AUC (95% CI)"],
                         "drop_text": r["external minus internal (95% CI)"]})
    return {**meta, "directions": rows}
