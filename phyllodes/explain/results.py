"""What the explanations hand to the figures, tables and notebooks: typed records of plain
arrays and frames, no models.

The report layer draws these; it never imports training or the networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CamPanel:
    """Images (N, H, W) in [0, 1] with their maps (N, H, W), titles, lesion masks and the
    peri-lesional bands around them (each None without masks)."""

    images: np.ndarray
    cams: np.ndarray
    titles: list[str]
    masks: np.ndarray | None = None
    bands: np.ndarray | None = None


@dataclass(frozen=True)
class Explanation:
    """What :func:`phyllodes.explain.folds.explain_folds` computed on every fold's test images,
    each by the fold model that never trained on it, pooled over folds.

    ``per_image``: one row per test image (cohort ``row``, fold, subject_id, y, prob, correct,
    and for a multimodal model the Shapley values ``phi_image`` / ``phi_clinical``);
    ``cams_gradcampp`` / ``cam_rows``: every test image's Grad-CAM++ map and its cohort row;
    ``cams_scorecam`` / ``scorecam_rows``: the same for the Score-CAM subset; ``ablation``: the
    modality-ablation AUCs per fold; ``importance``: the clinical permutation importance per fold
    and feature group; ``faithfulness``: the deletion-curve areas per image and map (each frame
    empty where it does not apply)."""

    per_image: pd.DataFrame
    cams_gradcampp: np.ndarray
    cam_rows: np.ndarray
    cams_scorecam: np.ndarray
    scorecam_rows: np.ndarray
    ablation: pd.DataFrame
    importance: pd.DataFrame
    faithfulness: pd.DataFrame
    #: each method's CAM target layer (a module path in the encoder; None: the family's)
    cam_layers: dict = field(default_factory=dict)

    def shapley_sum_error(self) -> float | None:
        """The largest deviation from Shapley efficiency over the test images: how far
        ``phi_image + phi_clinical`` is from the model's output minus its both-modalities-removed
        baseline (``f_full - f_baseline``). Exact two-player Shapley values make it rounding
        noise; None for an image-only model (no Shapley values)."""
        pi = self.per_image
        if not {"phi_image", "phi_clinical", "f_full", "f_baseline"} <= set(pi.columns):
            return None
        gap = pi["phi_image"] + pi["phi_clinical"] - (pi["f_full"] - pi["f_baseline"])
        return float(np.abs(gap.to_numpy(dtype=float)).max()) if len(pi) else None


@dataclass(frozen=True)
class MapComparison:
    """Two sets of maps of the same images and how alike they are
    (:func:`phyllodes.explain.maps.map_agreement`): the Spearman rank correlation of each pair
    of flattened maps (``spearman``; NaN where a map is constant), its mean, median and mean
    absolute value over the pairs that have one, and how many have none (``n_constant``)."""

    cams_trained: np.ndarray
    cams_other: np.ndarray
    spearman: np.ndarray
    spearman_mean: float
    spearman_median: float
    abs_spearman_mean: float
    n_constant: int


@dataclass(frozen=True)
class SanityCheck:
    """One fold's sanity check (Adebayo et al. 2018): ``test`` is ``model randomisation`` (the
    other maps are the re-initialised encoder's) or ``data randomisation`` (the maps of the model
    trained on permuted labels, whose subject-level test AUC against the true labels is
    ``permuted_model_auc``); ``rows`` are the fold's test images (cohort rows)."""

    test: str
    fold: int
    rows: np.ndarray
    maps: MapComparison
    permuted_model_auc: float = float("nan")
