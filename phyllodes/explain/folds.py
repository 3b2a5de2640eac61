"""Explain finished cross-validation runs: each test subject by the fold model that never saw it.

:func:`fold_models` reloads every fold's trained multimodal model with its clinical
preprocessing; :func:`explain_folds` computes, per fold and on that fold's test images only,
the CAMs (Grad-CAM++ for every image, Score-CAM for up to ``scorecam_images``), the map
validation against the lesion masks, the two-modality Shapley values against the fold's
baselines (mean inner-training image and clinical vector), the ablation AUCs, and the grouped
permutation importance of the clinical features. Results are pooled over folds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.data.images import ImageSet, to_float
from phyllodes.evaluate import attribution
from phyllodes.evaluate.metrics import subject_auc
from phyllodes.explain import maps as explain
from phyllodes.explain.results import CamPanel, Explanation, SanityCheck
from phyllodes.models.network import PhyllodesNet, predict_proba
from phyllodes.study import Study
from phyllodes.train.runs import load_run_model
from phyllodes.train.spec import RunSpec


@dataclass
class FoldModel:
    fold: int
    spec: RunSpec
    model: PhyllodesNet
    encoder: ClinicalEncoder
    rows: dict[str, np.ndarray]      #: image rows of the cohort per split (train/val/test)
    run_dir: Path


def fold_models(study: Study, run_dirs: list[Path]) -> list[FoldModel]:
    """Reload each fold's model; check its test subjects are the fold's (no leakage)."""
    out = []
    ids = study.cohort.images["subject_id"].to_numpy()
    for d in run_dirs:
        model, enc, cfg = load_run_model(d)
        spec = RunSpec(**cfg["spec"])
        subjects = cfg["subjects"]
        fold_test = set(study.splits.loc[study.splits["fold"] == spec.fold, "subject_id"])
        if set(subjects["test"]) != fold_test:
            raise ValueError(f"run {d.name} was trained with other folds than {study.splits_path}")
        rows = {k: np.flatnonzero(np.isin(ids, v)) for k, v in subjects.items()}
        out.append(FoldModel(spec.fold, spec, model.to(study.device), enc, rows, Path(d)))
    return sorted(out, key=lambda f: f.fold)


def fold_inputs(study: Study, fm: FoldModel, images: ImageSet, split: str
                ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images (float, [0, 1]), preprocessed clinical rows (None for an image-only model) and
    cohort rows of a fold's split."""
    rows = fm.rows[split]
    x = to_float(images.images[torch.as_tensor(rows)])
    c = (fm.encoder.transform_images(study.cohort.images.iloc[rows])
         if fm.spec.modality == "multimodal" else None)
    return x, c, rows


def baselines(study: Study, fm: FoldModel, images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """The fold's mean inner-training image (H, W) and mean clinical vector (F,; None for an
    image-only model)."""
    x, c, _ = fold_inputs(study, fm, images, "train")
    return x.mean(0)[0].numpy(), None if c is None else c.mean(0)


def explain_folds(study: Study, folds: list[FoldModel], images: ImageSet,
                  scorecam_images: int | None = 40, n_repeats: int = 10,
                  cam_batch_size: int = 64, seed: int = 0, faithfulness: bool = True,
                  cam_layers: dict[str, str | None] | None = None) -> Explanation:
    """CAMs and, for multimodal models, Shapley shares, ablation AUCs and clinical feature
    importance, pooled over folds (an image-only model gets CAMs only). ``faithfulness``: also
    the deletion curves of every map and of two maps without model information
    (:func:`faithfulness_curves`). ``cam_layers``: each method's target layer (``gradcam++``,
    ``scorecam``: a module path in the encoder, as :func:`choose_cam_layers` chose it; None or
    missing: the family's)."""
    layers = {m: (cam_layers or {}).get(m) for m in explain.CAM_METHODS}
    rng = np.random.default_rng(seed)
    cams_gpp, cams_sc, rows_all, sc_rows = [], [], [], []
    per_img, ablations, importances, faithful = [], [], [], []
    for fm in folds:
        x, c, rows = fold_inputs(study, fm, images, "test")
        y = study.cohort.images["y"].to_numpy()[rows]
        prob = predict_proba(fm.model, x, c, batch_size=128)
        frame = pd.DataFrame({
            "row": rows, "fold": fm.fold, "subject_id": study.cohort.images["subject_id"]
            .to_numpy()[rows], "y": y, "prob": prob, "correct": (prob >= 0.5) == (y == 1)})
        if c is not None:
            b_img, b_clin = baselines(study, fm, images)
            frame = frame.join(explain.modality_shapley(fm.model, x, c, b_img, b_clin))
            abl = explain.modality_ablation_auc(fm.model, x, c, y, b_img, b_clin)
            ablations.append({"fold": fm.fold, **abl})
        per_img.append(frame)
        cams_gpp.append(explain.compute_cams(fm.model, x, c, method="gradcam++",
                                             batch_size=cam_batch_size,
                                             layer=layers["gradcam++"]))
        rows_all.append(rows)
        pick = _subset(len(rows), len(study.cohort.images), scorecam_images, rng)
        cams_sc.append(explain.compute_cams(fm.model, x[pick], None if c is None else c[pick],
                                            method="scorecam", batch_size=cam_batch_size,
                                            layer=layers["scorecam"]))
        sc_rows.append(rows[pick])
        if faithfulness:
            faithful.append(faithfulness_curves(study, fm, images, x, c, rows, cams_gpp[-1],
                                                cams_sc[-1], pick, seed=seed + fm.fold))

        def predict_fn(cm, _m=fm.model, _x=x):
            return predict_proba(_m, _x, cm.astype(np.float32), batch_size=128)
        if c is not None and len(np.unique(y)) == 2:
            imp = explain.permutation_importance_oof(predict_fn, c, y, fm.encoder.feature_groups(),
                                                     n_repeats=n_repeats, seed=seed + fm.fold)
            importances.append(imp.assign(fold=fm.fold, n_test=len(rows)))
    per_img = pd.concat(per_img, ignore_index=True)
    return Explanation(
        per_image=per_img,
        cams_gradcampp=np.concatenate(cams_gpp), cam_rows=np.concatenate(rows_all),
        cams_scorecam=np.concatenate(cams_sc), scorecam_rows=np.concatenate(sc_rows),
        ablation=pd.DataFrame(ablations),
        importance=pd.concat(importances, ignore_index=True) if importances else pd.DataFrame(),
        faithfulness=pd.concat(faithful, ignore_index=True) if faithful else pd.DataFrame(),
        cam_layers=layers)


def faithfulness_curves(study: Study, fm: FoldModel, images: ImageSet, x: torch.Tensor,
                        c: np.ndarray | None, rows: np.ndarray, gradcampp: np.ndarray,
                        scorecam: np.ndarray, pick: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """One fold's deletion-curve areas (most relevant first, least relevant first; pixels
    replaced by the fold's mean inner-training image) on its Score-CAM images (``pick``), for
    Grad-CAM++, Score-CAM, a random map and a centre prior on the same images: one row per
    image and map (``map``, ``row``, ``subject_id``, ``fold``, ``morf``, ``lerf``). Cost:
    images x 4 maps x 2 orders x (fractions - 1) forward passes."""
    base, _ = baselines(study, fm, images)
    n, h, w = len(pick), x.shape[-2], x.shape[-1]
    if not n:
        return pd.DataFrame()
    rng = np.random.default_rng(seed)
    xs, cs = x[pick], None if c is None else c[pick]
    cases = (("Grad-CAM++", gradcampp[pick]), ("Score-CAM", scorecam),
             ("random map", rng.random((n, h, w))),
             ("centre prior", np.broadcast_to(explain.centre_prior(h, w), (n, h, w))))
    return pd.concat([_deletion_areas(study, fm, name, xs, cs, rows[pick], maps, base, seed)
                      for name, maps in cases], ignore_index=True)


def _deletion_areas(study: Study, fm: FoldModel, name: str, x: torch.Tensor,
                    c: np.ndarray | None, rows: np.ndarray, maps: np.ndarray, base: np.ndarray,
                    seed: int) -> pd.DataFrame:
    """The deletion-curve areas of one set of maps of images ``x`` (cohort ``rows``), most and
    least relevant first: one row per image (``map`` = ``name``)."""
    area = {}
    for key, first in (("morf", True), ("lerf", False)):
        curves = explain.deletion_scores(fm.model, x, c, maps, base,
                                         most_relevant_first=first, seed=seed)
        area[key] = attribution.curve_area(curves, explain.DELETION_FRACTIONS)
    return pd.DataFrame({"map": name, "row": rows, "subject_id": study.cohort.images[
        "subject_id"].to_numpy()[rows], "fold": fm.fold, **area})


#: the split seed of the folds the CAM layers are chosen on: not the study's (seed 0), the
#: same other folds notebook 06 chooses the recipe on
CAM_SELECTION_SEED = 1
_METHOD_NAMES = {"gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}


def _subset(n_rows: int, n_cohort: int, images: int | None, rng: np.random.Generator
            ) -> np.ndarray:
    """Which of a fold's ``n_rows`` test images get Score-CAM: its share of ``images`` over
    the cohort's ``n_cohort`` (None: all), at least one, drawn at random, sorted."""
    k = n_rows if images is None else max(1, int(round(images * n_rows / n_cohort)))
    return np.sort(rng.choice(n_rows, size=min(k, n_rows), replace=False))


def choose_cam_layers(study: Study, folds: list[FoldModel], images: ImageSet,
                      scorecam_images: int | None = 40, n_boot: int = 1000, seed: int = 0,
                      selection_seed: int = CAM_SELECTION_SEED
                      ) -> tuple[dict[str, str | None], pd.DataFrame]:
    """Each CAM method's target layer, chosen by faithfulness on ``folds``: the fold models of
    a split seed the study does not report (``selection_seed``, the seed of ``study``'s
    folds, named in the table; :data:`CAM_SELECTION_SEED` by default), so the choice never
    sees the reported test subjects. The candidates (:func:`explain.cam_layer_candidates`):
    the family's layer and, where its maps are coarser than 16 x 16, the last stage with maps
    at least that fine. Each candidate's maps of every test image (Score-CAM: of
    ``scorecam_images`` of them) are scored by their deletion-curve gap (LeRF - MoRF) minus a
    random map's on the same images (:func:`phyllodes.evaluate.attribution.faithfulness_table`,
    subject-bootstrap CIs); the candidate with the larger mean is chosen, the family's layer
    when no other is larger. Returns the choice (``{method: layer path or None}``) and the
    table that shows it (Table 6e)."""
    rng = np.random.default_rng(seed)
    candidates = explain.cam_layer_candidates(folds[0].model, study.profile.image_size)
    frames = []
    for fm in folds:
        x, c, rows = fold_inputs(study, fm, images, "test")
        base, _ = baselines(study, fm, images)
        every = np.arange(len(rows))
        pick = _subset(len(rows), len(study.cohort.images), scorecam_images, rng)
        cases = [("random map", every, rng.random((len(rows), *x.shape[-2:])))]
        for method in explain.CAM_METHODS:
            idx = pick if method == "scorecam" else every
            for layer, _grid in candidates:
                cases.append((_candidate_name(method, layer), idx, explain.compute_cams(
                    fm.model, x[idx], None if c is None else c[idx], method=method,
                    layer=layer)))
        frames += [_deletion_areas(study, fm, name, x[idx], None if c is None else c[idx],
                                   rows[idx], maps, base, seed + fm.fold)
                   for name, idx, maps in cases]
    table = attribution.faithfulness_table(pd.concat(frames, ignore_index=True),
                                           references=("random map",), n_boot=n_boot,
                                           seed=seed)
    return _chosen_layers(table, candidates, explain.layer_name(folds[0].model),
                          selection_seed)


def _candidate_name(method: str, layer: str | None) -> str:
    return f"{_METHOD_NAMES[method]} @ {layer or 'family layer'}"


def _chosen_layers(table: pd.DataFrame, candidates: list[tuple[str | None, tuple[int, int]]],
                   family_layer: str, selection_seed: int = CAM_SELECTION_SEED
                   ) -> tuple[dict[str, str | None], pd.DataFrame]:
    """The choice from the faithfulness table of the candidates (:func:`choose_cam_layers`),
    and the table as Table 6e: one row per method and candidate (and the random map), with
    the layer, its map grid, the gap minus the random map's [CI], the reading and the choice."""
    gain = "gap minus random map"
    chosen: dict[str, str | None] = {}
    rows = []
    for method in explain.CAM_METHODS:
        best, best_gain = None, -np.inf
        for layer, grid in candidates:
            r = table[table["map"] == _candidate_name(method, layer)].iloc[0]
            g = float(r[gain]) if np.isfinite(r[gain]) else -np.inf
            if g > best_gain:        # the family's layer (first) wins a tie
                best, best_gain = layer, g
            rows.append({"method": _METHOD_NAMES[method],
                         "layer": layer or family_layer,
                         "candidate": "the family's CAM layer" if layer is None else
                         f"the last stage with maps of {explain.FINE_MAP_SIDE}x"
                         f"{explain.FINE_MAP_SIDE} or more",
                         "map grid": f"{grid[0]}x{grid[1]}", **_faithful_columns(r),
                         "_layer": layer})
        chosen[method] = best
        for r in rows:
            if r["method"] == _METHOD_NAMES[method]:
                r["chosen"] = "yes" if r.pop("_layer") == best else "no"
    ref = table[table["map"] == "random map"].iloc[0]
    rows.append({"method": "random map", "layer": "", "candidate": "reference",
                 "map grid": "", **_faithful_columns(ref), "chosen": ""})
    out = pd.DataFrame(rows)
    out["selection folds"] = f"split seed {selection_seed}"
    return chosen, out


def _faithful_columns(r: pd.Series) -> dict:
    keys = ("images", "subjects", "morf", "lerf", "gap", "gap_low", "gap_high",
            "gap minus random map", "gap minus random map low",
            "gap minus random map high", "reading")
    return {k: r.get(k, np.nan) for k in keys}


def cam_examples(result: Explanation, per_outcome: int, seed: int = 0) -> pd.DataFrame:
    """Figure 3's cases, by a written rule: of the Score-CAM images of each outcome (TP, TN,
    FP, FN at probability 0.5), the ``per_outcome`` whose probability is nearest the group's
    median probability (its typical case, neither the most nor the least confident), ties by
    cohort row. ``seed`` is kept for callers; the rule draws nothing."""
    pi = result.per_image.set_index("row").loc[result.scorecam_rows].reset_index()
    pi["position"] = np.arange(len(pi))
    pi["outcome"] = attribution.outcome_groups(pi["y"], pi["prob"])
    parts = []
    for outcome in attribution.OUTCOMES:
        g = pi[pi["outcome"] == outcome]
        if len(g):
            dist = (g["prob"] - g["prob"].median()).abs()
            parts.append(g.assign(_d=dist).sort_values(["_d", "row"]).head(per_outcome)
                         .drop(columns="_d"))
    return pd.concat(parts).reset_index(drop=True) if parts else pi.iloc[:0]


def scorecam_panel(result: Explanation, images: ImageSet, per_outcome: int, seed: int = 0
                   ) -> CamPanel:
    """Figure 3's cases (:func:`cam_examples`): Score-CAM images of TP, TN, FP and FN, with
    their fold and probability, the lesion outline and the peri-lesional band of Table 6c."""
    ex = cam_examples(result, per_outcome, seed=seed)
    rows = torch.as_tensor(result.scorecam_rows[ex["position"]])
    imgs = images.images[rows, 0].float().div(255).numpy()
    masks = None if images.masks is None else (images.masks[rows, 0] > 0).numpy()
    bands = None if masks is None else np.stack([attribution.peri_lesional_band(m)
                                                 for m in masks])
    titles = [f"{o} · p={p:.2f} · fold {f}" for o, p, f in zip(ex["outcome"], ex["prob"],
                                                                 ex["fold"])]
    return CamPanel(imgs, result.cams_scorecam[ex["position"]], titles, masks, bands)


def randomisation_for_fold(study: Study, fm: FoldModel, images: ImageSet, seed: int = 0,
                           layer: str | None = None) -> SanityCheck:
    """Model-randomisation check (Grad-CAM++ at ``layer``; None: the family's) on one fold's
    test images."""
    x, c, rows = fold_inputs(study, fm, images, "test")
    maps = explain.randomisation_check(fm.model, x, c, method="gradcam++", seed=seed,
                                       layer=layer)
    return SanityCheck("model randomisation", fm.fold, rows, maps)


#: The model-randomisation check passes when the maps of the trained and the re-initialised
#: encoder agree less than this (mean absolute Spearman rank correlation over test images).
RANDOMISATION_PASS = 0.5


def randomisation_all_folds(study: Study, folds: list[FoldModel], images: ImageSet,
                            seed: int = 0, layer: str | None = None) -> list[SanityCheck]:
    """:func:`randomisation_for_fold` of every fold."""
    return [randomisation_for_fold(study, fm, images, seed=seed, layer=layer) for fm in folds]


#: added to the study's seed: the label permutation of the data-randomisation check
DATA_RANDOMISATION_SEED = 1


def permuted_label_study(study: Study, seed: int = 0) -> Study:
    """The study on its cohort with the subjects' labels permuted
    (:meth:`phyllodes.data.cohort.Cohort.with_permuted_labels`, seeded by ``seed`` +
    :data:`DATA_RANDOMISATION_SEED`), its own memory: the same folds and profile, for the
    data-randomisation check. Its runs (trained by the notebook, ``run_grid``) have their own
    ids, through the cohort's fingerprint."""
    return replace(study, cohort=study.cohort.with_permuted_labels(
        seed + DATA_RANDOMISATION_SEED), memory={})


def data_randomisation(study: Study, folds: list[FoldModel], permuted: list[FoldModel],
                       images: ImageSet, checks: list[SanityCheck], layer: str | None = None
                       ) -> list[SanityCheck]:
    """The data-randomisation sanity check (Adebayo et al. 2018) on every fold: the fold's
    model trained on permuted labels (``permuted``: :func:`fold_models` of the finished runs
    of :func:`permuted_label_study`, same specs and folds), its Grad-CAM++ maps of the fold's
    test images compared by rank correlation with the real model's (``cams_trained`` of the
    model-randomisation ``checks`` of the same folds), and its subject-level test AUC against
    the true labels (near 0.5 when it learned nothing real)."""
    truth = study.cohort.images
    out = []
    for fm, pm, check in zip(folds, permuted, checks, strict=True):
        if not (pm.fold == fm.fold == check.fold and pm.spec == fm.spec):
            raise ValueError(f"permuted-label run of fold {pm.fold} ({pm.spec.label}) is not "
                             f"the model of fold {fm.fold} ({fm.spec.label})")
        x, c, rows = fold_inputs(study, pm, images, "test")
        if not np.array_equal(rows, check.rows):
            raise ValueError(f"fold {fm.fold}: the permuted model's test images are not the "
                             "real model's")
        cams = explain.compute_cams(pm.model, x, c, method="gradcam++", layer=layer)
        prob = predict_proba(pm.model, x, c)
        auc = subject_auc(truth["subject_id"].to_numpy()[rows], truth["y"].to_numpy()[rows],
                          prob)
        out.append(SanityCheck("data randomisation", fm.fold, rows,
                               explain.map_agreement(check.maps.cams_trained, cams),
                               permuted_model_auc=auc))
    return out


def table6d_caption(with_data_randomisation: bool) -> str:
    """Table 6d's caption: what it holds (the data-randomisation rows only when run)."""
    data = (" and of the model trained on permuted labels (data randomisation)"
            if with_data_randomisation else "")
    return ("Sanity checks of Grad-CAM++ on every fold: Spearman rank correlation with the "
            f"maps of the re-initialised encoder (model randomisation){data}")


def table6d_sanity_checks(checks: list[SanityCheck],
                          data_checks: list[SanityCheck] | None = None) -> pd.DataFrame:
    """The sanity checks (Adebayo et al. 2018) of every fold: the rank correlation of each test
    image's Grad-CAM++ map with the map of the same model after its encoder is re-initialised
    (model randomisation, ``checks``) and with the map of the model trained on permuted labels
    (data randomisation, ``data_checks`` of :func:`data_randomisation`), and whether each
    passes (mean |Spearman| below :data:`RANDOMISATION_PASS`: the maps depend on what the
    encoder learned from the labels). ``constant_maps`` counts the pairs with a constant map
    (no rank correlation): many of them make a pass weak evidence, and the reading says so."""
    rows = []
    what = {"model randomisation": "the encoder's weights are randomised",
            "data randomisation": "the model is trained on permuted labels"}
    for check in [*checks, *(data_checks or [])]:
        r = check.maps
        n = len(r.spearman)
        passes = bool(np.isfinite(r.abs_spearman_mean)
                      and r.abs_spearman_mean < RANDOMISATION_PASS)
        if passes:
            reading = f"the maps change when {what[check.test]}"
        elif np.isfinite(r.abs_spearman_mean):
            reading = (f"the maps barely change when {what[check.test]}: they reflect the "
                       "architecture or the input, not what was learned")
        else:
            reading = "no image has two non-constant maps: the check cannot be read"
        if passes and r.n_constant > n / 2:
            reading += (f" (but {r.n_constant} of {n} pairs have a constant map and no "
                        "rank correlation: weak evidence)")
        rows.append({"test": check.test, "fold": check.fold, "images": n,
                     "spearman_mean": r.spearman_mean,
                     "spearman_median": r.spearman_median,
                     "abs_spearman_mean": r.abs_spearman_mean,
                     "constant_maps": r.n_constant,
                     "permuted_model_auc": check.permuted_model_auc,
                     "check": "passes" if passes else "fails", "reading": reading})
    return pd.DataFrame(rows)


def randomised_maps_panel(check: SanityCheck, images: ImageSet, n: int = 4) -> CamPanel:
    """The first ``n`` test images of one fold's check (:func:`randomisation_for_fold`), each
    twice: its Grad-CAM++ map as trained, then with the encoder re-initialised."""
    k = min(n, len(check.rows))
    rows = torch.as_tensor(check.rows[:k])
    imgs = images.images[rows, 0].float().div(255).numpy()
    pair = np.stack([check.maps.cams_trained[:k], check.maps.cams_other[:k]], axis=1)
    titles = [t for i in range(k) for t in (f"fold {check.fold} · trained",
                                            f"randomised · ρ={check.maps.spearman[i]:.2f}")]
    return CamPanel(np.repeat(imgs, 2, axis=0), pair.reshape(2 * k, *pair.shape[2:]), titles)


def cam_layer_summary(result: Explanation, model: PhyllodesNet, image_size: int
                      ) -> dict[str, tuple[str, tuple[int, int]]]:
    """Each method's (display name) CAM layer as the explanation used it: its module path in
    the encoder and its map grid at ``image_size``."""
    return {_METHOD_NAMES[m]: (explain.layer_name(model, result.cam_layers.get(m)),
                               explain.map_grid(model, image_size, result.cam_layers.get(m)))
            for m in explain.CAM_METHODS}


def table6_cam_validation(study: Study, result: Explanation, images: ImageSet,
                          randomisation_spearman: float | None = None,
                          layers: dict[str, tuple[str, tuple[int, int]]] | None = None
                          ) -> pd.DataFrame:
    """Map validation for Grad-CAM++ (all test images) and Score-CAM (its subset), and the
    rank correlation of the maps with those of a re-initialised encoder (fold 0). ``layers``
    (:func:`cam_layer_summary`) adds each method's CAM layer and map grid.

    A cohort without lesion masks (no ``mask_path`` column) gets one row per method saying so.
    """
    out = _cam_validation(study, result, images)
    if layers is not None:
        out.insert(1, "layer", out["method"].map(lambda m: layers[m][0]))
        out.insert(2, "map grid", out["method"].map(
            lambda m: f"{layers[m][1][0]}x{layers[m][1][1]}"))
    if randomisation_spearman is not None:
        out["randomisation_spearman (fold 0, Grad-CAM++)"] = randomisation_spearman
    return out


def table6b_cam_faithfulness(result: Explanation, n_boot: int = 1000, seed: int = 0
                             ) -> pd.DataFrame:
    """Whether each CAM method reflects what its fold model uses (deletion curves against a
    random map and a centre prior, :func:`phyllodes.evaluate.attribution.faithfulness_table`)."""
    if result.faithfulness.empty:
        return pd.DataFrame([{"map": "none", "note": "faithfulness not computed"}])
    return attribution.faithfulness_table(result.faithfulness, n_boot=n_boot, seed=seed)


def table6c_cam_anatomy(study: Study, result: Explanation, images: ImageSet,
                        width: float = attribution.BAND_WIDTH,
                        n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Where each CAM method puts its energy — lesion, peri-lesional band (the mask dilated by
    ``width`` x the lesion's equivalent radius), rest of the image — against each region's area,
    by outcome (TP, TN, FP, FN at probability 0.5, and all); a cohort without masks gets one row
    per method saying so."""
    if images.masks is None:
        return pd.DataFrame([{"method": name, "outcome": "all", "note": f"cohort {study.name} "
                              "has no lesion masks (mask_path): no region can be measured"}
                             for name in ("Grad-CAM++", "Score-CAM")])
    pi = result.per_image.set_index("row")
    frames = []
    for name, cams, rows in (("Grad-CAM++", result.cams_gradcampp, result.cam_rows),
                             ("Score-CAM", result.cams_scorecam, result.scorecam_rows)):
        masks = (images.masks[torch.as_tensor(rows), 0] > 0).numpy()
        outcome = attribution.outcome_groups(pi.loc[rows, "y"], pi.loc[rows, "prob"])
        t = attribution.anatomy_table(cams, masks, outcome, pi.loc[rows, "subject_id"],
                                      width=width, n_boot=n_boot, seed=seed)
        frames.append(t.assign(method=name))
    out = pd.concat(frames, ignore_index=True)
    return out[["method", *[c for c in out.columns if c != "method"]]]


def _cam_validation(study: Study, result: Explanation, images: ImageSet) -> pd.DataFrame:
    if images.masks is None:
        return pd.DataFrame([{"method": name, "group": "all", "n": int(len(rows)),
                              "note": f"cohort {study.name} has no lesion masks (mask_path): "
                                      "the maps cannot be validated"}
                             for name, rows in (("Grad-CAM++", result.cam_rows),
                                                ("Score-CAM", result.scorecam_rows))])
    correct = result.per_image.set_index("row")["correct"]
    frames = []
    for name, cams, rows in (("Grad-CAM++", result.cams_gradcampp, result.cam_rows),
                             ("Score-CAM", result.cams_scorecam, result.scorecam_rows)):
        masks = (images.masks[torch.as_tensor(rows), 0] > 0).numpy()
        t = attribution.cam_validation_table(cams, masks, correct.loc[rows].to_numpy(),
                                         tolerance_px=max(1, images.images.shape[-1] // 32))
        frames.append(t.reset_index().assign(method=name))
    return pd.concat(frames, ignore_index=True)[[
        "method", "group", "n", "n_flat_maps", "energy_inside", "energy_inside_sd",
        "chance_energy", "energy_lift", "lift_low", "lift_high", "hit_rate", "hit_low",
        "hit_high"]]
