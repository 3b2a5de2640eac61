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


# --------------------------------------------------------------------------- where, and faithful


#: The regions of :func:`anatomy_table`, in order.
REGIONS = ("lesion", "peri-lesional band", "rest of the image")
#: The outcome groups of :func:`outcome_groups` (threshold 0.5 on the model's probability).
OUTCOMES = ("TP", "TN", "FP", "FN")
#: The peri-lesional band's width, in lesion equivalent radii (:func:`peri_lesional_band`).
BAND_WIDTH = 0.5


def outcome_groups(y: ArrayLike, prob: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """'TP', 'TN', 'FP' or 'FN' of each case (positive when ``prob >= threshold``)."""
    y, pred = np.asarray(y).ravel() == 1, np.asarray(prob).ravel() >= threshold
    return np.select([pred & y, ~pred & ~y, pred & ~y], ["TP", "TN", "FP"], default="FN")


def peri_lesional_band(mask: np.ndarray, width: float = BAND_WIDTH) -> np.ndarray:
    """The ring around a lesion mask: the mask dilated by ``width`` x the lesion's equivalent
    radius (sqrt(area / pi); at least 1 pixel), minus the mask. A relative width, so the band
    is the same share of every lesion whatever its size in pixels (the lesion's margin, its
    halo and the posterior shadowing just below it, where the BI-RADS lexicon looks)."""
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return np.zeros_like(mask)
    radius = max(1.0, width * math.sqrt(mask.sum() / math.pi))
    return (ndimage.distance_transform_edt(~mask) <= radius) & ~mask


def region_shares(cam: np.ndarray, mask: np.ndarray, width: float = BAND_WIDTH
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(energy share, area share) of the lesion, its peri-lesional band and the rest of the
    image (:data:`REGIONS`); each triple sums to 1. Energy shares are NaN for a map with no
    positive value."""
    cam, mask = _check_pair(cam, mask)
    band = peri_lesional_band(mask, width)
    regions = (mask, band, ~(mask | band))
    cam = np.clip(cam, 0, None)
    total = cam.sum()
    energy = np.array([cam[r].sum() / total if total > 0 else np.nan for r in regions])
    return energy, np.array([r.mean() for r in regions])


def _subject_ci(values: np.ndarray, weights: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile CI of weighted means over bootstrap weight rows (NaN rows dropped)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = weights @ values / weights.sum(axis=1)
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _lift_verdict(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "too few images to say"
    if low > 1:
        return "more energy than its area"
    if high < 1:
        return "less energy than its area"
    return "as much energy as its area (CI includes 1)"


def anatomy_table(cams: np.ndarray, masks: np.ndarray, outcome: ArrayLike, subjects: ArrayLike,
                  width: float = BAND_WIDTH, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05
                  ) -> pd.DataFrame:
    """Where a method's maps put their energy: per outcome group (TP, TN, FP, FN, all) and
    region (lesion, peri-lesional band, rest), the mean energy share, the mean area share and
    their ratio (the lift: 1 = as much as a uniform map) with a subject-bootstrap CI, and in
    words. An image with an empty mask or a flat map (no positive value) cannot be placed: it is
    left out and counted (``empty_masks``, ``flat_maps``); ``images`` counts the rest."""
    cams, masks = np.asarray(cams), np.asarray(masks).astype(bool)
    outcome = np.asarray(outcome).astype(str).ravel()
    subjects = np.asarray(subjects).ravel()
    if not (cams.shape == masks.shape and cams.ndim == 3 and len(outcome) == len(cams)
            == len(subjects)):
        raise ValueError(f"cams {cams.shape}, masks {masks.shape}, outcome {outcome.shape} and "
                         f"subjects {subjects.shape} do not match")
    shares = [region_shares(c, m, width) if m.any() else (np.full(3, np.nan), np.full(3, np.nan))
              for c, m in zip(cams, masks)]
    energy = np.array([e for e, _ in shares]).reshape(-1, 3)
    area = np.array([a for _, a in shares]).reshape(-1, 3)
    has_mask = masks.reshape(len(masks), -1).any(axis=1)
    ok = has_mask & np.isfinite(energy).all(axis=1) & np.isfinite(area).all(axis=1)
    rows = []
    for group in (*OUTCOMES, "all"):
        members = (outcome == group) if group != "all" else np.ones(len(outcome), bool)
        sel = ok & members
        left = {"empty_masks": int((members & ~has_mask).sum()),
                "flat_maps": int((members & has_mask & ~ok).sum())}
        n_subj = len(np.unique(subjects[sel]))
        w = (bootstrap_row_counts(cluster_codes(subjects[sel], int(sel.sum())), n_boot,
                                  seed) if sel.sum() > 1 else None)
        for j, region in enumerate(REGIONS):
            e, a = energy[sel, j], area[sel, j]
            lift = float(e.mean() / a.mean()) if e.size and a.mean() > 0 else np.nan
            low = high = np.nan
            if w is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    reps = (w @ e) / (w @ a)
                reps = reps[np.isfinite(reps)]
                if reps.size > 1:
                    low, high = (float(q) for q in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
            rows.append({"outcome": group, "region": region, "images": int(sel.sum()),
                         **left, "subjects": n_subj, "energy_share": float(e.mean()) if e.size
                         else np.nan, "area_share": float(a.mean()) if a.size else np.nan,
                         "lift": lift, "lift_low": low, "lift_high": high,
                         "reading": _lift_verdict(low, high)})
    return pd.DataFrame(rows)


def curve_area(scores: np.ndarray, fractions: ArrayLike) -> np.ndarray:
    """Area under each row of ``scores`` (N, F) over ``fractions`` (F,; from 0 to 1):
    the trapezoid rule, so a constant score s has area s."""
    f = np.asarray(fractions, dtype=float)
    s = np.asarray(scores, dtype=float)
    return ((s[:, 1:] + s[:, :-1]) / 2 * np.diff(f)).sum(axis=1) / (f[-1] - f[0])


def faithfulness_table(gaps: pd.DataFrame, references: Sequence[str] = ("random map",
                                                                         "centre prior"),
                       n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
                       ) -> pd.DataFrame:
    """Whether each map reflects what the model uses: per map, the mean of its deletion
    curve's area removing the most relevant pixels first (MoRF; lower = the score falls
    faster), removing the least relevant first (LeRF; higher = the score holds), their gap
    (LeRF - MoRF; a map without information has gap 0 in expectation), and the paired
    difference of the gap from each of ``references`` (maps without model information: a
    random map, a centre prior) on the same images, with subject-bootstrap CIs, and a verdict.

    ``gaps``: one row per image and map, columns ``map``, ``row`` (the image), ``subject_id``,
    ``morf``, ``lerf``."""
    out = []
    g = gaps.assign(gap=gaps["lerf"] - gaps["morf"])
    wide = g.pivot_table(index=["row", "subject_id"], columns="map", values="gap")
    wide = wide.reset_index()
    for name in g["map"].drop_duplicates():
        m = g[g["map"] == name]
        codes = cluster_codes(m["subject_id"].to_numpy(), len(m))
        w = bootstrap_row_counts(codes, n_boot, seed)
        row = {"map": name, "images": len(m), "subjects": int(codes.max()) + 1 if len(m) else 0}
        for col in ("morf", "lerf", "gap"):
            v = m[col].to_numpy()
            row[col] = float(v.mean())
            row[f"{col}_low"], row[f"{col}_high"] = _subject_ci(v, w, alpha)
        verdicts = []
        for ref in references:
            if ref == name or ref not in wide:
                continue
            pair = wide[wide[name].notna() & wide[ref].notna()] if name in wide else wide.iloc[:0]
            d = (pair[name] - pair[ref]).to_numpy()
            key = f"gap minus {ref}"
            row[key] = float(d.mean()) if d.size else np.nan
            lo = hi = np.nan
            if d.size > 1:
                wp = bootstrap_row_counts(cluster_codes(pair["subject_id"].to_numpy(), len(d)),
                                          n_boot, seed)
                lo, hi = _subject_ci(d, wp, alpha)
            row[f"{key} low"], row[f"{key} high"] = lo, hi
            verdicts.append("better than a " + ref if lo > 0 else
                            "worse than a " + ref if hi < 0 else
                            "no better than a " + ref)
        row["reading"] = "; ".join(verdicts) if verdicts else "reference"
        out.append(row)
    return pd.DataFrame(out)
