"""Apply a finished run's model to a cohort it never saw (external validation, new patients).

:func:`apply_run` reads the run folder as data only (``model.json`` and, for a network,
``weights.safetensors``: no pickle), decodes the target cohort's images under the *run's*
image settings (size, ROI crop and margin, whatever the target study's profile says), and
predicts every image exactly as the run predicted its test fold
(:func:`phyllodes.train.trainer.tta_predict`: the image, its flip and its cached augmented
views). Nothing is fit on the target cohort: its labels are only carried along in the output
for evaluation, and changing them changes no probability (a test checks it).

A multimodal model needs the clinical inputs it was trained on under the same names in the
target cohort; a missing one is an error naming it. A tree ensemble is not stored (its
predictions are), so it cannot be applied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phyllodes.models.encoders import weights_file
from phyllodes.study import Study
from phyllodes.train.probe import probe_features
from phyllodes.train.runs import (
    load_linear_model,
    load_run_model,
    read_model_record,
    run_key,
    run_label,
    weights_digest,
)
from phyllodes.train.spec import RunSpec
from phyllodes.train.trainer import autocast_dtype, tta_predict
from phyllodes.train.views import view_cache

#: the image settings a run's model was trained on, which the target's images are decoded with
IMAGE_SETTINGS = ("image_size", "use_roi", "roi_margin")


class ApplyError(ValueError):
    """The run's model cannot be applied to the target cohort as it is."""


def target_study(study: Study, settings: dict) -> Study:
    """The target study under the run's image settings and precision."""
    keep = {k: settings[k] for k in (*IMAGE_SETTINGS, "precision") if k in settings}
    return study.with_settings(**keep) if keep else study


def _clinical(enc, study: Study, run_dir: Path, spec: RunSpec, width: int = 0
              ) -> torch.Tensor:
    """The clinical vectors of the target's images under the run's fitted encoder (an
    image-only model takes none: zeros of the width it was built with)."""
    images = study.cohort.images
    if spec.modality == "image" or enc is None or enc.width == 0:
        return torch.zeros((len(images), width))
    missing = [c for c in enc.input_columns if c not in images.columns]
    if missing:
        raise ApplyError(f"{run_dir.name} takes the clinical input(s) {', '.join(missing)}, "
                         f"which cohort '{study.name}' does not have: apply an image-only model, "
                         "or train on the inputs both cohorts declare")
    return torch.as_tensor(enc.transform_images(images))


def apply_run(run_dir: Path | str, study: Study, encoder_weights: str | None = None
              ) -> pd.DataFrame:
    """Predictions of the run's model on every image of ``study``'s cohort: one row per image
    (subject_id, image_path, y, prob, split='external', fold, run_id, modality, model,
    fusion, model_label)."""
    run_dir = Path(run_dir)
    record = read_model_record(run_dir)
    spec, settings = RunSpec(**record["spec"]), record["settings"]
    target = target_study(study, settings)
    cohort, device = target.cohort, target.device
    if spec.uses_images:
        weights = weights_file(spec.encoder,
                               encoder_weights or study.encoder_weights_for(spec.encoder),
                               study.weights_dir)
        cfg_weights = _recorded_weights(run_dir)
        if cfg_weights and weights_digest(weights) != cfg_weights:
            raise ApplyError(f"{run_dir.name} was trained from encoder weights {cfg_weights}; "
                             f"the weights found now ({weights}) differ: pass the same file")
    if spec.is_probe:
        clf, _, _ = load_linear_model(run_dir)
        x = probe_features(cohort, spec.encoder, target.images(), settings["image_size"],
                           tuple(settings["probe_taps"]), bool(settings["pretrained"]),
                           weights, device, memory=target.memory)
        prob = clf.predict_proba(x)[:, 1]
    elif spec.is_classical:
        clf, enc, _ = load_linear_model(run_dir)
        prob = clf.predict_proba(_clinical(enc, target, run_dir, spec).numpy())[:, 1]
    else:
        model, enc, _ = load_run_model(run_dir)
        prob = network_probs(model, enc, record, target, run_dir.name)
    imgs = cohort.images
    return pd.DataFrame({"subject_id": imgs["subject_id"].to_numpy(),
                         "image_path": imgs["image_path"].to_numpy(), "fold": spec.fold,
                         "split": "external", "y": imgs["y"].to_numpy(),
                         "prob": np.asarray(prob, dtype=float), "run_id": run_dir.name,
                         "modality": spec.modality, "model": spec.model, "fusion": spec.fusion,
                         "model_key": run_key(spec, settings),
                         "model_label": run_label(spec, settings)})


def network_probs(model, enc, record: dict, target: Study, name: str) -> np.ndarray:
    """A network's test-time probability of every image of ``target`` (already under the
    model's image settings, :func:`target_study`): its image, flip and views as in its run."""
    spec, settings, device = RunSpec(**record["spec"]), record["settings"], target.device
    model = model.to_run_layout(device)  # as in training: the same kernels, the same numbers
    x_clin = _clinical(enc, target, Path(name), spec, int(record["n_clinical"])).to(device)
    amp = autocast_dtype(target.profile, device)
    x_img, views = None, None
    if spec.uses_images:
        image_set = target.images()
        x_img = image_set.images.to(device)
        if settings.get("cache_views") and model.prefix_stages:
            views = view_cache(model, image_set, int(settings["cache_views"]), device,
                               amp or torch.float32, memory=target.memory,
                               cache_dir=target.cache_dir)
    rows = torch.arange(len(target.cohort.images), device=device)
    return tta_predict(model, x_img, views, x_clin, rows, bool(settings.get("tta_flip")),
                       int(settings.get("tta_views") or 0), 64, amp, device)


def _recorded_weights(run_dir: Path) -> str | None:
    import json
    cfg = json.loads((run_dir / "config.json").read_text())
    return cfg.get("encoder_weights")

