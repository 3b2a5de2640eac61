"""Explanations that can be checked (#26): deletion curves tell a map that shows what the model
uses from one that does not, and the anatomy table places a map's energy in the lesion, the
peri-lesional band and the rest, by outcome."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from phyllodes.evaluate import attribution
from phyllodes.explain import maps
from phyllodes.explain.results import Explanation, MapComparison, SanityCheck

H = W = 16


class QuadrantModel(nn.Module):
    """logit = 12 x (mean of the top-left quadrant - 0.5): only those pixels matter."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(12.0))

    def forward(self, image, clinical=None):
        return (self.scale * (image[:, 0, :H // 2, :W // 2].mean(dim=(1, 2)) - 0.5))[:, None]


def _images(n: int = 24, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.4, (n, 1, H, W))
    x[: n // 2, :, : H // 2, : W // 2] += 0.5  # half of them 'positive'
    return torch.as_tensor(x, dtype=torch.float32)


def test_a_map_on_what_the_model_uses_is_faithful_and_one_elsewhere_is_not():
    model, x = QuadrantModel(), _images()
    n = len(x)
    right = np.zeros((n, H, W))
    right[:, : H // 2, : W // 2] = 1
    wrong = np.zeros((n, H, W))
    wrong[:, H // 2:, W // 2:] = 1
    base = np.full((H, W), 0.3)
    f = maps.DELETION_FRACTIONS
    rows = []
    for name, m in (("right", right), ("wrong", wrong),
                    ("random map", np.random.default_rng(1).random((n, H, W))),
                    ("centre prior", np.broadcast_to(maps.centre_prior(H, W), (n, H, W)))):
        morf = maps.deletion_scores(model, x, None, m, base, most_relevant_first=True)
        lerf = maps.deletion_scores(model, x, None, m, base, most_relevant_first=False)
        assert morf.shape == (n, len(f))
        assert np.all(morf[:, 0] >= 0.5)  # the score of the predicted class
        assert np.allclose(morf[:, -1], lerf[:, -1])  # all pixels removed: one image
        rows.append(pd.DataFrame({"map": name, "row": np.arange(n), "subject_id": np.arange(n),
                                  "morf": attribution.curve_area(morf, f),
                                  "lerf": attribution.curve_area(lerf, f)}))
    t = attribution.faithfulness_table(pd.concat(rows), n_boot=200).set_index("map")
    # the quadrant map removes what the model reads first: its score falls at once
    assert t.loc["right", "gap"] > 0.15 and t.loc["right", "gap_low"] > 0
    assert t.loc["right", "reading"] == "better than a random map; better than a centre prior"
    # the other quadrant: what it removes first the model never reads
    assert t.loc["wrong", "gap"] < 0 and t.loc["wrong", "gap minus random map high"] < 0
    assert t.loc["wrong", "reading"].startswith("worse than a random map")
    assert abs(t.loc["random map", "gap"]) < 0.05
    assert "gap minus random map" not in t.columns or np.isnan(
        t.loc["random map", "gap minus random map"])


def test_curve_area_is_the_mean_score_over_the_fractions():
    f = (0.0, 0.5, 1.0)
    assert attribution.curve_area(np.array([[0.8, 0.8, 0.8], [1.0, 0.5, 0.0]]), f) == \
        pytest.approx([0.8, 0.5])


def test_band_is_a_ring_of_relative_width():
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True  # 100 px: equivalent radius 5.64
    band = attribution.peri_lesional_band(mask, width=0.5)
    assert not (band & mask).any() and band.any()
    dist = __import__("scipy").ndimage.distance_transform_edt(~mask)
    assert dist[band].max() <= 0.5 * np.sqrt(100 / np.pi) + 1e-9
    big = np.zeros((80, 80), bool)
    big[20:60, 20:60] = True  # 4x the side: the band scales with it
    assert attribution.peri_lesional_band(big, 0.5).sum() > 10 * band.sum()


def test_anatomy_table_places_the_energy_by_region_and_outcome():
    rng = np.random.default_rng(0)
    n = 40
    masks = np.zeros((n, 32, 32), bool)
    masks[:, 12:20, 12:20] = True
    cams = rng.random((n, 32, 32)) * 0.01
    cams[:20, 12:20, 12:20] = 1.0                 # TP: on the lesion
    band = attribution.peri_lesional_band(masks[0], 0.5)
    cams[20:, band] = 1.0                          # FN: on the margin only
    y = np.ones(n)
    prob = np.r_[np.full(20, 0.9), np.full(20, 0.1)]
    outcome = attribution.outcome_groups(y, prob)
    assert list(outcome[[0, 39]]) == ["TP", "FN"]
    t = attribution.anatomy_table(cams, masks, outcome, np.arange(n) // 2, n_boot=200)
    t = t.set_index(["outcome", "region"])
    tp, fn = t.loc[("TP", "lesion")], t.loc[("FN", "peri-lesional band")]
    area = masks[0].mean()
    assert tp["area_share"] == pytest.approx(area)
    assert tp["lift"] > 5 and tp["lift_low"] > 1 and tp["reading"] == "more energy than its area"
    assert fn["lift"] > 3 and t.loc[("FN", "lesion"), "lift"] < 0.2
    assert t.loc[("FN", "lesion"), "reading"] == "less energy than its area"
    assert t.loc[("FP", "lesion"), "images"] == 0
    assert t.loc[("all", "lesion"), "images"] == n and t.loc[("all", "lesion"), "subjects"] == 20
    assert (t["flat_maps"] == 0).all() and (t["empty_masks"] == 0).all()
    shares = t.loc["all"]
    assert shares["area_share"].sum() == pytest.approx(1)
    assert shares["energy_share"].sum() == pytest.approx(1)


def test_anatomy_table_counts_the_images_it_cannot_place():
    masks = np.zeros((6, 16, 16), bool)
    masks[:, 4:10, 4:10] = True
    masks[5] = False                               # no lesion outlined
    cams = np.ones((6, 16, 16))
    cams[4] = 0.0                                  # a flat map: no energy to place
    cams[0, 4:10, 4:10] = 3.0
    outcome = np.array(["TP", "TP", "TN", "TN", "TP", "FN"])
    t = attribution.anatomy_table(cams, masks, outcome, np.arange(6), n_boot=50)
    t = t.set_index(["outcome", "region"])
    allrow, tp, fn = t.loc[("all", "lesion")], t.loc[("TP", "lesion")], t.loc[("FN", "lesion")]
    assert (allrow["images"], allrow["flat_maps"], allrow["empty_masks"]) == (4, 1, 1)
    assert (tp["images"], tp["flat_maps"], tp["empty_masks"]) == (2, 1, 0)
    assert (fn["images"], fn["empty_masks"]) == (0, 1)
    # the two uniform maps and the one on the lesion: shares of the placed images only
    area = masks[0].mean()
    e0 = 3 * area / (3 * area + (1 - area))
    assert allrow["energy_share"] == pytest.approx((e0 + 3 * area) / 4)


def test_figure3_cases_follow_the_written_rule():
    from phyllodes.explain.folds import cam_examples
    prob = np.array([0.95, 0.7, 0.8, 0.6, 0.1, 0.3, 0.2, 0.55, 0.05, 0.45])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1])
    rows = np.arange(10) + 100
    empty = pd.DataFrame()
    result = Explanation(per_image=pd.DataFrame({"row": rows, "y": y, "prob": prob,
                                                 "fold": np.arange(10) % 2}),
                         cams_gradcampp=np.zeros((0, 4, 4)), cam_rows=rows[:0],
                         cams_scorecam=np.zeros((10, 4, 4)), scorecam_rows=rows[::-1],
                         ablation=empty, importance=empty, faithfulness=empty)
    ex = cam_examples(result, per_outcome=1)
    # TP probabilities 0.95, 0.7, 0.8, 0.6 (median 0.75): 0.7 and 0.8 tie, the lower row wins
    assert ex["outcome"].tolist() == ["TP", "TN", "FP", "FN"]
    assert ex["row"].tolist() == [101, 106, 107, 108]
    assert (ex["position"] == [np.flatnonzero(result.scorecam_rows == r)[0]
                               for r in ex["row"]]).all()
    assert len(cam_examples(result, per_outcome=3)) == 3 + 3 + 1 + 2


def test_the_sanity_check_passes_or_fails_on_each_fold():
    from phyllodes.explain.folds import RANDOMISATION_PASS, table6d_sanity_checks

    def check(fold, rho):
        rho = np.asarray(rho, float)
        ok = rho[np.isfinite(rho)]
        cams = np.zeros((len(rho), 2, 2))
        return SanityCheck("model randomisation", fold, np.arange(len(rho)), MapComparison(
            cams, cams, rho, float(ok.mean()), float(np.median(ok)), float(np.abs(ok).mean()),
            int((~np.isfinite(rho)).sum())))
    t = table6d_sanity_checks([check(0, [0.1, -0.2, np.nan]), check(1, [0.9, 0.8])])
    assert t["check"].tolist() == ["passes", "fails"]
    assert t["constant_maps"].tolist() == [1, 0] and t["images"].tolist() == [3, 2]
    assert t.loc[0, "abs_spearman_mean"] == pytest.approx(0.15)
    assert t.loc[1, "abs_spearman_mean"] > RANDOMISATION_PASS


def test_permuted_labels_keep_subjects_and_class_counts(synthetic_cohort_dir):
    from phyllodes.data.cohort import load_cohort
    c = load_cohort(synthetic_cohort_dir)
    p = c.with_permuted_labels(1)
    before, after = c.subjects.set_index("subject_id"), p.subjects.set_index("subject_id")
    assert list(after.index) == list(before.index)
    assert (after["y"].value_counts().sort_index() == before["y"].value_counts().sort_index()).all()
    assert (after["y"] != before["y"]).sum() >= 4          # labels moved between subjects
    # every image of a subject carries its subject's new label; nothing else changed
    assert (p.images.groupby("subject_id")["y"].nunique() == 1).all()
    assert p.images.drop(columns=["y", "label"]).equals(c.images.drop(columns=["y", "label"]))
    # a label travels with its y (borderline and malignant are both 1)
    assert set(zip(p.images["label"], p.images["y"])) <= set(zip(c.images["label"], c.images["y"]))
    assert (after["label"].value_counts().sort_index()
            == before["label"].value_counts().sort_index()).all()
    assert p.fingerprint != c.fingerprint != c.with_permuted_labels(2).fingerprint
    assert p.fingerprint == c.with_permuted_labels(1).fingerprint


def test_sanity_table_reads_both_tests_and_flags_constant_maps():
    from phyllodes.explain.folds import table6d_sanity_checks
    rng = np.random.default_rng(0)
    a = rng.random((6, 8, 8))
    same = maps.map_agreement(a, a + 1e-3 * rng.random((6, 8, 8)))
    other = maps.map_agreement(a, rng.random((6, 8, 8)))
    flat = maps.map_agreement(a, np.concatenate([np.ones((4, 8, 8)), rng.random((2, 8, 8))]))
    assert same.abs_spearman_mean > 0.9 and other.abs_spearman_mean < 0.5
    assert flat.n_constant == 4
    rows = np.arange(6)
    t = table6d_sanity_checks(
        [SanityCheck("model randomisation", 0, rows, other),
         SanityCheck("model randomisation", 1, rows, flat)],
        [SanityCheck("data randomisation", 0, rows, same, permuted_model_auc=0.52)])
    assert t["test"].tolist() == ["model randomisation"] * 2 + ["data randomisation"]
    assert t["check"].tolist() == ["passes", "passes", "fails"]
    assert "weak evidence" in t["reading"].iloc[1] and "weak" not in t["reading"].iloc[0]
    assert "permuted labels" in t["reading"].iloc[2] and t["permuted_model_auc"].iloc[2] == 0.52
    assert np.isnan(t["permuted_model_auc"].iloc[0])



def _choice_table(gains: dict[str, float]) -> pd.DataFrame:
    rows = [{"map": name, "images": 10, "subjects": 8, "morf": 0.5, "lerf": 0.5 + g,
             "gap": g, "gap_low": g - 0.1, "gap_high": g + 0.1, "gap minus random map": g,
             "gap minus random map low": g - 0.05, "gap minus random map high": g + 0.05,
             "reading": "x"} for name, g in gains.items()]
    return pd.DataFrame(rows + [{"map": "random map", "images": 10, "subjects": 8, "morf": 0.5,
                                 "lerf": 0.5, "gap": 0.0, "reading": "reference"}])


def test_the_cam_layer_choice_takes_the_more_faithful_layer_and_the_family_on_a_tie():
    from phyllodes.explain.folds import _chosen_layers
    cands = [(None, (8, 8)), ("blocks.2", (16, 16))]
    t = _choice_table({"Grad-CAM++ @ family layer": 0.02, "Grad-CAM++ @ blocks.2": 0.05,
                       "Score-CAM @ family layer": 0.04, "Score-CAM @ blocks.2": 0.04})
    chosen, table = _chosen_layers(t, cands, "bn2")
    assert chosen == {"scorecam": None, "gradcam++": "blocks.2"}  # Score-CAM: a tie
    assert table["method"].tolist() == ["Score-CAM"] * 2 + ["Grad-CAM++"] * 2 + ["random map"]
    assert table["layer"].tolist()[:4] == ["bn2", "blocks.2", "bn2", "blocks.2"]
    assert table["map grid"].tolist()[:4] == ["8x8", "16x16", "8x8", "16x16"]
    assert table["chosen"].tolist() == ["yes", "no", "no", "yes", ""]
    assert table["gap minus random map"].tolist()[:4] == [0.04, 0.04, 0.02, 0.05]
    assert (table["selection folds"] == "split seed 1").all()
    # the table names the folds the choice was made on, whichever they were
    assert (_chosen_layers(t, cands, "bn2", selection_seed=3)[1]["selection folds"]
            == "split seed 3").all()
    # a candidate without a number (no image had a map) is never chosen
    t = _choice_table({"Grad-CAM++ @ family layer": -0.01, "Grad-CAM++ @ blocks.2": np.nan,
                       "Score-CAM @ family layer": 0.0, "Score-CAM @ blocks.2": 0.3})
    chosen, _ = _chosen_layers(t, cands, "bn2")
    assert chosen == {"scorecam": "blocks.2", "gradcam++": None}
