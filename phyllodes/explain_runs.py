"""Explain finished cross-validation runs: each test subject by the fold model that never saw it.

:func:`fold_models` reloads every fold's trained multimodal model with its clinical
preprocessing; :func:`explain_folds` computes, per fold and on that fold's test images only,
the CAMs (Grad-CAM++ for every image, Score-CAM for up to ``scorecam_images``), the map
validation against the lesion masks, the two-modality Shapley values against the fold's
baselines (mean inner-training image and clinical vector), the ablation AUCs, and the grouped
permutation importance of the clinical features. Results are pooled over folds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import explain
from .clinical import ClinicalEncoder
from .images import ImageSet, to_float
from .models import PhyllodesNet
from .study import Study
from .training import RunSpec


@dataclass
class FoldModel:
    fold: int
    spec: RunSpec
    model: PhyllodesNet
    encoder: ClinicalEncoder
    rows: dict[str, np.ndarray]      #: image rows of the cohort per split (train/val/test)
    run_dir: Path


def load_run_model(run_dir: Path) -> tuple[PhyllodesNet, ClinicalEncoder, dict]:
    """The trained network of a finished run (eval mode), its clinical encoder and config."""
    ck = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = ck["config"]
    spec = RunSpec(**ck["spec"])
    s = cfg["settings"]
    model = PhyllodesNet(spec.modality, n_clinical=ck["n_clinical"],
                         encoder=None if spec.modality == "clinical" else spec.model,
                         fusion=spec.fusion, pretrained=False,
                         clinical_hidden=s["clinical_hidden"], head_hidden=s["head_hidden"],
                         dropout=s["dropout"], img_size=s.get("image_size"))
    model.load_state_dict(ck["state_dict"])
    return model.eval(), ck["clinical_encoder"], cfg


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
    """Images (float, [0, 1]), preprocessed clinical rows and cohort rows of a fold's split."""
    rows = fm.rows[split]
    x = to_float(images.images[torch.as_tensor(rows)])
    c = fm.encoder.transform_images(study.cohort.images.iloc[rows])
    return x, c, rows


def baselines(study: Study, fm: FoldModel, images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """The fold's mean inner-training image (H, W) and mean clinical vector (F,)."""
    x, c, _ = fold_inputs(study, fm, images, "train")
    return x.mean(0)[0].numpy(), c.mean(0)


@torch.inference_mode()
def _probs(model, x, c, batch=128) -> np.ndarray:
    """Probabilities of images ``x`` (CPU tensor) with clinical rows ``c``, on the model's device."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch):
        logit = model(x[i:i + batch].to(dev), torch.as_tensor(c[i:i + batch]).to(dev))
        out.append(torch.sigmoid(logit.float()).cpu())
    return torch.cat(out).numpy()


def explain_folds(study: Study, folds: list[FoldModel], images: ImageSet,
                  scorecam_images: int | None = 40, n_repeats: int = 10,
                  cam_batch_size: int = 64, seed: int = 0) -> dict[str, pd.DataFrame]:
    """CAMs, map validation, Shapley shares, ablation AUCs and feature importance, pooled."""
    rng = np.random.default_rng(seed)
    cams_gpp, cams_sc, rows_all, sc_rows, per_img, ablations, importances = [], [], [], [], [], [], []
    for fm in folds:
        x, c, rows = fold_inputs(study, fm, images, "test")
        y = study.cohort.images["y"].to_numpy()[rows]
        prob = _probs(fm.model, x, c)
        b_img, b_clin = baselines(study, fm, images)
        shap = explain.modality_shapley(fm.model, x, c, b_img, b_clin)
        per_img.append(pd.DataFrame({
            "row": rows, "fold": fm.fold, "subject_id": study.cohort.images["subject_id"]
            .to_numpy()[rows], "y": y, "prob": prob, "correct": (prob >= 0.5) == (y == 1)})
            .join(shap))
        abl = explain.modality_ablation_auc(fm.model, x, c, y, b_img, b_clin)
        ablations.append({"fold": fm.fold, **abl})
        cams_gpp.append(explain.compute_cams(fm.model, x, c, method="gradcam++",
                                             batch_size=cam_batch_size))
        rows_all.append(rows)
        k = len(rows) if scorecam_images is None else max(
            1, int(round(scorecam_images * len(rows) / len(study.cohort.images))))
        pick = np.sort(rng.choice(len(rows), size=min(k, len(rows)), replace=False))
        cams_sc.append(explain.compute_cams(fm.model, x[pick], c[pick], method="scorecam",
                                            batch_size=cam_batch_size))
        sc_rows.append(rows[pick])

        def predict_fn(cm, _m=fm.model, _x=x):
            return _probs(_m, _x, cm.astype(np.float32))
        if len(np.unique(y)) == 2:
            imp = explain.permutation_importance_oof(predict_fn, c, y, fm.encoder.feature_groups(),
                                                     n_repeats=n_repeats, seed=seed + fm.fold)
            importances.append(imp.assign(fold=fm.fold, n_test=len(rows)))
    per_img = pd.concat(per_img, ignore_index=True)
    return {
        "per_image": per_img,
        "cams_gradcampp": np.concatenate(cams_gpp), "cam_rows": np.concatenate(rows_all),
        "cams_scorecam": np.concatenate(cams_sc), "scorecam_rows": np.concatenate(sc_rows),
        "ablation": pd.DataFrame(ablations),
        "importance": pd.concat(importances, ignore_index=True) if importances else pd.DataFrame(),
    }


def validation_tables(study: Study, result: dict, images: ImageSet) -> pd.DataFrame:
    """Map validation for Grad-CAM++ (all test images) and Score-CAM (its subset).

    A cohort without lesion masks (no ``mask_path`` column) gets one row per method saying so.
    """
    if images.masks is None:
        return pd.DataFrame([{"method": name, "group": "all", "n": int(len(rows)),
                              "note": f"cohort {study.name} has no lesion masks (mask_path): "
                                      "the maps cannot be validated"}
                             for name, rows in (("Grad-CAM++", result["cam_rows"]),
                                                ("Score-CAM", result["scorecam_rows"]))])
    correct = result["per_image"].set_index("row")["correct"]
    frames = []
    for name, cams, rows in (("Grad-CAM++", result["cams_gradcampp"], result["cam_rows"]),
                             ("Score-CAM", result["cams_scorecam"], result["scorecam_rows"])):
        masks = (images.masks[torch.as_tensor(rows), 0] > 0).numpy()
        t = explain.cam_validation_table(cams, masks, correct.loc[rows].to_numpy(),
                                         tolerance_px=max(1, images.images.shape[-1] // 32))
        frames.append(t.reset_index().assign(method=name))
    return pd.concat(frames, ignore_index=True)[["method", "group", "n", "energy_inside",
                                                 "energy_inside_sd", "chance_energy",
                                                 "energy_lift", "hit_rate", "hit_low",
                                                 "hit_high"]]


def importance_summary(importance: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC drop per clinical feature over folds (weighted by test images)."""
    if importance.empty:
        return importance
    w = importance.assign(wd=importance["auc_drop_mean"] * importance["n_test"])
    g = w.groupby("feature")
    out = pd.DataFrame({"auc_drop_mean": g["wd"].sum() / g["n_test"].sum(),
                        "auc_drop_sd_between_folds": g["auc_drop_mean"].std(ddof=1),
                        "folds": g.size()})
    return out.sort_values("auc_drop_mean", ascending=False).reset_index()


def cam_examples(result: dict, per_outcome: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_outcome`` Score-CAM images each of TP, TN, FP and FN (threshold 0.5)."""
    pi = result["per_image"].set_index("row").loc[result["scorecam_rows"]].reset_index()
    pi["position"] = np.arange(len(pi))
    pred = pi["prob"] >= 0.5
    pi["outcome"] = np.select([pred & (pi["y"] == 1), ~pred & (pi["y"] == 0),
                               pred & (pi["y"] == 0), ~pred & (pi["y"] == 1)],
                              ["TP", "TN", "FP", "FN"], default="?")
    parts = [g.sample(min(per_outcome, len(g)), random_state=seed)
             for _, g in pi.groupby("outcome", sort=False)]
    order = {"TP": 0, "TN": 1, "FP": 2, "FN": 3}
    out = pd.concat(parts).sort_values("outcome", key=lambda s: s.map(order))
    return out.reset_index(drop=True)


def save_json(obj: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=float))


def randomisation_for_fold(study: Study, fm: FoldModel, images: ImageSet, seed: int = 0) -> dict:
    """Model-randomisation check (Grad-CAM++) on one fold's test images."""
    x, c, _ = fold_inputs(study, fm, images, "test")
    return explain.randomisation_check(fm.model, x, c, method="gradcam++", seed=seed)


def modality_share_table(result: dict, cohort_name: str, paper_share: float,
                         n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The image's share of the prediction: Shapley (subject-bootstrap CI) and ablation
    estimates, with the paper's value beside them; also returns the Shapley CI dict."""
    from .reported import comparison_note
    from .stats import format_ci
    pi, abl = result["per_image"], result["ablation"]
    share = explain.image_share_ci(pi["phi_image"], pi["phi_clinical"], groups=pi["subject_id"],
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
    table["note"] = comparison_note(cohort_name)
    return table, share


def example_grid(result: dict, images: ImageSet, per_outcome: int, seed: int = 0):
    """Figure 3: Score-CAM overlays of TP/TN/FP/FN test images with their fold and probability."""
    ex = cam_examples(result, per_outcome, seed=seed)
    rows = torch.as_tensor(result["scorecam_rows"][ex["position"]])
    imgs = images.images[rows, 0].float().div(255).numpy()
    masks = None if images.masks is None else (images.masks[rows, 0] > 0).numpy()
    titles = [f"{o} · p={p:.2f} · fold {f}" for o, p, f in zip(ex["outcome"], ex["prob"],
                                                                 ex["fold"])]
    return explain.plot_cam_grid(imgs, result["cams_scorecam"][ex["position"]], titles, masks,
                                 ncols=min(4, max(1, len(ex))))
