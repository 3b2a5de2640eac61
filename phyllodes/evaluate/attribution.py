"""Statistics of explanations, on plain arrays: how much of a map lies on the lesion (energy
inside the mask, pointing game, with bootstrap and Wilson CIs) and how much of a multimodal
prediction the image carries (the Shapley share with a subject-bootstrap CI). No model is run
here: :mod:`phyllodes.explain.maps` computes the maps and attributions, the report formats these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy import stats as sstats

from phyllodes.evaluate.stats import bootstrap_row_counts, cluster_codes

ArrayLike = np.ndarray | Sequence

def _check_pair(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=float), np.asarray(mask).astype(bool)
    if cam.shape != mask.shape or cam.ndim != 2:
        raise ValueError(f"cam {cam.shape} and mask {mask.shape} must be 2-D of one shape "
                         "(resize the mask to the CAM/image size first)")
    return cam, mask


def cam_energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the map's mass inside the mask: sum(cam[mask]) / sum(cam); NaN for a zero map.

    Negative values are clipped to 0. A map spread uniformly scores the mask's area fraction
    (the chance level).
    """
    cam, mask = _check_pair(cam, mask)
    cam = np.clip(cam, 0, None)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else float("nan")


def pointing_game_hit(cam: np.ndarray, mask: np.ndarray, tolerance_px: float = 0) -> bool:
    """Whether the map's maximum falls inside the mask (dilated by ``tolerance_px``, Euclidean).

    The first maximum in row-major order is used when several pixels tie; a constant map has no
    maximum and counts as a miss; an empty mask is always a miss.
    """
    cam, mask = _check_pair(cam, mask)
    if not mask.any() or not np.isfinite(cam).all() or cam.max() == cam.min():
        return False
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    if tolerance_px <= 0:
        return bool(mask[r, c])
    dist = ndimage.distance_transform_edt(~mask)
    return bool(dist[r, c] <= tolerance_px)


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (NaN, NaN) when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    z = sstats.norm.ppf(1 - alpha / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def cam_validation_table(cams: np.ndarray, masks: np.ndarray, correct: ArrayLike,
                         tolerance_px: float = 0, alpha: float = 0.05, n_boot: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """Energy-inside and pointing-game hit rate of correct / misclassified / all cases.

    Columns: ``n``, ``energy_inside`` (mean) and ``energy_inside_sd``, ``chance_energy`` (mean
    mask area fraction: the energy inside, and the hit rate, a map without information would
    get), ``energy_lift`` (energy_inside / chance_energy) with its bootstrap
    ``lift_low``/``lift_high``, ``hit_rate`` with its Wilson ``hit_low``/``hit_high``. Cases
    with an empty mask are left out (``n`` counts the rest). A map with no positive value
    (``n_flat_maps``) has no energy to place: it is left out of the energy, chance and lift
    columns (point estimate and bootstrap alike) and counts as a miss in the pointing game.
    """
    cams, masks = np.asarray(cams), np.asarray(masks).astype(bool)
    correct = np.asarray(correct).astype(bool).ravel()
    if not (cams.shape == masks.shape and cams.ndim == 3 and correct.shape[0] == cams.shape[0]):
        raise ValueError(f"cams {cams.shape}, masks {masks.shape} and correct {correct.shape} "
                         "do not match")
    keep = masks.reshape(len(masks), -1).any(axis=1)
    energy = np.array([cam_energy_inside(c, m) if k else np.nan
                       for c, m, k in zip(cams, masks, keep)])
    hit = np.array([pointing_game_hit(c, m, tolerance_px) for c, m in zip(cams, masks)])
    area = masks.reshape(len(masks), -1).mean(axis=1)
    rows = []
    for name, sel in (("correct", correct), ("misclassified", ~correct),
                      ("all", np.ones_like(correct))):
        sel = sel & keep
        k, n = int(hit[sel].sum()), int(sel.sum())
        valid = sel & np.isfinite(energy)
        e = energy[valid]
        low, high = wilson_ci(k, n, alpha)
        chance = float(area[valid].mean()) if e.size else np.nan
        mean_e = float(e.mean()) if e.size else np.nan
        lift_low = lift_high = np.nan
        if e.size > 1:
            idx = np.flatnonzero(valid)
            rng = np.random.default_rng(seed)
            draws = idx[rng.integers(0, idx.size, size=(n_boot, idx.size))]
            reps = energy[draws].mean(axis=1) / area[draws].mean(axis=1)
            lift_low, lift_high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
        rows.append({"group": name, "n": n, "n_flat_maps": n - int(e.size),
                     "energy_inside": mean_e,
                     "energy_inside_sd": float(e.std(ddof=1)) if e.size > 1 else np.nan,
                     "chance_energy": chance,
                     "energy_lift": mean_e / chance if n and chance > 0 else np.nan,
                     "lift_low": float(lift_low), "lift_high": float(lift_high),
                     "hit_rate": k / n if n else np.nan, "hit_low": low, "hit_high": high})
    return pd.DataFrame(rows).set_index("group")


def image_share(phi_img: ArrayLike, phi_clin: ArrayLike) -> float:
    """Σ|phi_image| / (Σ|phi_image| + Σ|phi_clinical|): the image's share of the attribution."""
    a = np.abs(np.asarray(phi_img, dtype=float)).sum()
    b = np.abs(np.asarray(phi_clin, dtype=float)).sum()
    return float(a / (a + b)) if a + b > 0 else float("nan")


def image_share_ci(phi_img: ArrayLike, phi_clin: ArrayLike, groups: ArrayLike | None = None,
                   n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Percentile bootstrap CI of :func:`image_share`, resampling whole subjects (``groups``).

    Uses the cluster resampling of :mod:`phyllodes.evaluate.stats`. Returns ``estimate``, ``low``,
    ``high``, ``se`` and ``n_boot_valid``.
    """
    a = np.abs(np.asarray(phi_img, dtype=float).ravel())
    b = np.abs(np.asarray(phi_clin, dtype=float).ravel())
    if a.shape != b.shape:
        raise ValueError("phi_img and phi_clin must have the same length")
    counts = bootstrap_row_counts(cluster_codes(groups, a.shape[0]), n_boot, seed)
    sa, sb = counts @ a, counts @ b
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = sa / (sa + sb)
    valid = reps[np.isfinite(reps)]
    low, high = (np.quantile(valid, [alpha / 2, 1 - alpha / 2]) if valid.size
                 else (np.nan, np.nan))
    return {"estimate": image_share(a, b), "low": float(low), "high": float(high),
            "se": float(valid.std(ddof=1)) if valid.size > 1 else float("nan"),
            "n_boot_valid": int(valid.size)}
