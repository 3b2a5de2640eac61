"""phyllodes.explain.maps: CAMs per encoder family, map validation, randomisation check, Shapley.

All models are built with pretrained=False on CPU; images are small (32-96 px). The trained-model
test learns a synthetic task whose label depends only on a bright disk (clinical inputs are
noise) and checks that Score-CAM points at the disk, while the same network untrained does not.
"""

from __future__ import annotations

from unittest import mock

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from scipy import special  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from phyllodes.evaluate import attribution as at  # noqa: E402
from phyllodes.explain import maps as ex  # noqa: E402
from phyllodes.explain.results import Explanation  # noqa: E402
from phyllodes.models import network as models  # noqa: E402
from phyllodes.models.network import PhyllodesNet  # noqa: E402
from phyllodes.report import figures

N_CLIN = 5


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: these small models gain little from two, and on a busy 2-core
    machine two spinning OpenMP threads made this module ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_net(encoder: str, modality: str = "multimodal", fusion: str = "concat", seed: int = 0,
             **timm_kwargs) -> PhyllodesNet:
    """PhyllodesNet with a randomly initialised timm encoder (timm kwargs e.g. img_size)."""
    torch.manual_seed(seed)
    if not timm_kwargs:
        return PhyllodesNet(modality, N_CLIN, encoder, fusion, pretrained=False)

    def create(name, pretrained=True, weights=None, img_size=None):
        return timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)

    with mock.patch.object(models, "create_encoder", create):
        return PhyllodesNet(modality, N_CLIN, encoder, fusion, pretrained=False)


# --------------------------------------------------------------------------- CAMs per family

TINY_SWIN = dict(img_size=(64, 96), window_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                 num_heads=(1, 1, 1, 1))
TINY_VIT = dict(img_size=(32, 48), patch_size=8)

FAMILIES = [  # (encoder, timm kwargs, CAM method, input (H, W), expected target layer path)
    ("resnet10t", {}, "gradcam++", (64, 96), "encoder.layer4.0"),
    ("densenet121", {}, "gradcam++", (64, 96), "encoder.features.norm5"),
    ("efficientnet_lite0", {}, "gradcam++", (64, 96), "encoder.bn2"),
    ("convnext_atto", {}, "scorecam", (64, 96), "encoder.stages.3"),
    ("vit_tiny_patch16_224", TINY_VIT, "scorecam", (32, 48), "encoder.blocks.11.norm1"),
    ("swin_tiny_patch4_window7_224", TINY_SWIN, "scorecam", (64, 96), "encoder.layers.3"),
]


@pytest.mark.parametrize("encoder,kwargs,method,size,layer_name", FAMILIES,
                         ids=[f[0] for f in FAMILIES])
def test_cams_per_family(encoder, kwargs, method, size, layer_name):
    net = make_net(encoder, **kwargs)
    names = {id(m): n for n, m in net.named_modules()}
    assert [names[id(m)] for m in ex.target_layers(net)] == [layer_name]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, *size, generator=g)
    c = torch.randn(2, N_CLIN, generator=g)
    net.train()
    cams = ex.compute_cams(net, x, c, method=method, batch_size=64)
    assert net.training  # mode restored
    assert cams.shape == (2, *size)
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    # min-max scaled, not degenerate: each map reaches ~1 and varies over the image
    assert np.allclose(cams.reshape(2, -1).max(axis=1), 1.0, atol=1e-4)
    assert (cams.reshape(2, -1).std(axis=1) > 0.05).all()


def test_wrapper_broadcasts_and_matches_model():
    net = make_net("resnet10t").eval()
    x, c = torch.rand(3, 1, 32, 32), torch.randn(3, N_CLIN)
    with torch.no_grad():
        full = net(x, c)
        one = ex.ImageBranchWrapper(net, c[1])(x)
        rows = ex.ImageBranchWrapper(net, c)(x)
        ref_one = net(x, c[1:2].expand(3, -1))
    assert one.shape == rows.shape == (3, 1)
    torch.testing.assert_close(rows[:, 0], full)
    torch.testing.assert_close(one[:, 0], ref_one)
    with pytest.raises(ValueError, match="rows"):
        ex.ImageBranchWrapper(net, c[:2])(x)


def test_reshape_transforms_place_tokens_on_the_grid():
    vit = make_net("vit_tiny_patch16_224", **TINY_VIT)  # grid 4 x 6, one class token
    f = ex.reshape_transform(vit)
    tokens = torch.arange(1 + 24, dtype=torch.float32).view(1, 25, 1).expand(1, 25, 3)
    m = f(tokens)
    assert m.shape == (1, 3, 4, 6)
    assert m[0, 0, 2, 5] == 1 + 2 * 6 + 5  # token index (after the class token) = row * w + col
    swin = make_net("swin_tiny_patch4_window7_224", **TINY_SWIN)
    nhwc = torch.randn(2, 2, 3, 5)
    torch.testing.assert_close(ex.reshape_transform(swin)(nhwc), nhwc.permute(0, 3, 1, 2))
    assert ex.reshape_transform(make_net("resnet10t")) is None


def test_unknown_family_raises_with_hint():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Conv2d(3, 4, 3)

    with pytest.raises(ValueError, match="pass one by hand"):
        ex.target_layers(Odd())
    with pytest.raises(ValueError, match="no image branch"):
        ex.target_layers(PhyllodesNet("clinical", N_CLIN, pretrained=False))


# --------------------------------------------------------------------------- map metrics


def test_energy_and_pointing_on_hand_made_maps():
    cam = np.zeros((10, 10))
    cam[2, 3], cam[5, 5] = 1.0, 3.0
    mask = np.zeros((10, 10), bool)
    mask[4:7, 4:7] = True
    assert at.cam_energy_inside(cam, mask) == pytest.approx(0.75)
    assert at.pointing_game_hit(cam, mask)
    far = np.zeros((10, 10), bool)
    far[5, 7:9] = True  # max at (5, 5) is 2 px left of this mask
    assert not at.pointing_game_hit(cam, far)
    assert not at.pointing_game_hit(cam, far, tolerance_px=1.5)
    assert at.pointing_game_hit(cam, far, tolerance_px=2)
    uniform = np.ones((10, 10))
    assert at.cam_energy_inside(uniform, mask) == pytest.approx(mask.mean())
    assert not at.pointing_game_hit(uniform, mask)  # a constant map has no maximum
    assert np.isnan(at.cam_energy_inside(np.zeros((10, 10)), mask))
    with pytest.raises(ValueError):
        at.cam_energy_inside(cam, mask[:5])


def test_wilson_and_validation_table():
    lo, hi = at.wilson_ci(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    cams = np.zeros((4, 8, 8))
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:4, 2:4] = True  # area 4/64
    cams[0, 2, 2] = 1.0                        # correct, all inside, hit
    cams[1, 2, 2], cams[1, 7, 7] = 1.0, 3.0    # correct, energy 0.25, miss
    cams[2, 6, 6] = 1.0                        # misclassified, energy 0, miss
    cams[3, 3, 3] = 1.0                        # misclassified, empty mask -> left out
    masks[3] = False
    t = at.cam_validation_table(cams, masks, correct=[True, True, False, False])
    assert t.loc["correct", "n"] == 2 and t.loc["misclassified", "n"] == 1
    assert t.loc["all", "n"] == 3
    assert t.loc["correct", "energy_inside"] == pytest.approx(0.625)
    assert t.loc["correct", "hit_rate"] == pytest.approx(0.5)
    assert t.loc["misclassified", "hit_rate"] == 0.0
    assert t.loc["all", "chance_energy"] == pytest.approx(4 / 64)
    assert t.loc["correct", "energy_lift"] == pytest.approx(0.625 / (4 / 64))
    assert (t.loc["correct", "hit_low"], t.loc["correct", "hit_high"]) == \
        pytest.approx(at.wilson_ci(1, 2))


def test_flat_maps_are_counted_and_left_out_of_energy_and_its_ci():
    """A map with no positive value has no energy to place: counted in ``n_flat_maps``, left
    out of the energy, chance and lift alike (point estimate and bootstrap), a pointing-game
    miss. Before, one such map turned the lift's CI into NaN."""
    rng = np.random.default_rng(0)
    cams = rng.random((6, 8, 8))
    masks = np.zeros((6, 8, 8), bool)
    masks[:, 2:6, 2:6] = True  # area 16/64
    masks[5, :, :4] = True     # another area for the flat map: must not enter the chance
    cams[5] = 0.0              # flat
    t = at.cam_validation_table(cams, masks, correct=np.ones(6, bool), n_boot=200)
    row = t.loc["all"]
    assert row["n"] == 6 and row["n_flat_maps"] == 1
    e = [at.cam_energy_inside(c, m) for c, m in zip(cams[:5], masks[:5])]
    assert row["energy_inside"] == pytest.approx(np.mean(e))
    assert row["chance_energy"] == pytest.approx(16 / 64)
    assert np.isfinite(row["lift_low"]) and np.isfinite(row["lift_high"])
    assert row["lift_low"] <= row["energy_lift"] <= row["lift_high"]
    hits = [at.pointing_game_hit(c, m) for c, m in zip(cams, masks)]
    assert not hits[5] and row["hit_rate"] == pytest.approx(np.mean(hits))


# --------------------------------------------------------------------------- trained model

SIZE, RADIUS = 32, 6


def blob_data(n: int, seed: int):
    """Noisy backgrounds of random brightness; label 1 = a bright disk at a random place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    x = np.empty((n, 1, SIZE, SIZE), np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    y = rng.integers(0, 2, n)
    for i in range(n):
        img = rng.uniform(0.15, 0.45) + rng.normal(0, 0.08, (SIZE, SIZE))
        if y[i]:
            cy, cx = rng.integers(RADIUS + 1, SIZE - RADIUS - 1, 2)
            masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS ** 2
            img[masks[i]] += 0.4
        x[i, 0] = np.clip(img, 0, 1)
    clinical = rng.normal(size=(n, N_CLIN)).astype(np.float32)  # pure noise
    return torch.from_numpy(x), torch.from_numpy(clinical), y, masks


def tiny_resnet_net(seed: int) -> PhyllodesNet:
    # resnet10t at reduced width with output stride 8: a 4x4 layer4 map at 32 px
    return make_net("resnet10t", seed=seed, channels=(16, 32, 64, 128), stem_width=16,
                    stem_type="", output_stride=8)


@pytest.fixture(scope="module")
def blob_models():
    torch.manual_seed(0)
    untrained = tiny_resnet_net(seed=0)
    net = tiny_resnet_net(seed=0)
    x, c, y, _ = blob_data(256, seed=0)
    yt = torch.from_numpy(y).float()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(96):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[idx], c[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    test = blob_data(64, seed=1)
    return net, untrained, test


def test_trained_model_is_accurate(blob_models):
    net, _, (x, c, y, _) = blob_models
    with torch.no_grad():
        p = torch.sigmoid(net(x, c)).numpy()
    assert roc_auc_score(y, p) > 0.95


def test_scorecam_points_at_the_lesion_only_after_training(blob_models):
    net, untrained, (x, c, y, masks) = blob_models
    pos = np.flatnonzero(y == 1)[:24]
    chance = masks[pos].mean()
    tables = {}
    for name, model in (("trained", net), ("untrained", untrained)):
        cams = ex.compute_cams(model, x[pos], c[pos], method="scorecam", batch_size=128)
        assert cams.shape == (len(pos), SIZE, SIZE)
        tables[name] = at.cam_validation_table(cams, masks[pos], np.ones(len(pos), bool),
                                               tolerance_px=2)
    t, u = tables["trained"].loc["all"], tables["untrained"].loc["all"]
    assert t["chance_energy"] == pytest.approx(chance)
    # (96 steps; the head projects image features before fusing) observed with 48 steps over
    # training seeds 0-5: trained 2.2-2.5x chance and hit rate 0.75-1.0 (seed 0:
    # 2.5x, 0.96); the same network untrained 1.2-1.4x chance and hit rate 0.0-0.4 (seed 0:
    # 1.4x, 0.12) -- random convolutions respond to a bright disk somewhat, hence not 1.0x
    # (on a CPU with AMX the trained hit rate was 0.625: the kernels' rounding moves the
    # argmax of near-flat maps, so the pointing game is compared with the untrained network's)
    assert t["energy_inside"] > 2.0 * chance
    assert t["hit_rate"] > 0.6 and t["hit_rate"] >= u["hit_rate"] + 0.3
    assert u["energy_inside"] < 1.6 * chance
    assert u["hit_rate"] < 0.5
    assert t["energy_inside"] - u["energy_inside"] > 0.5 * chance
    # Grad-CAM++ (the cheap method) also concentrates above chance on the trained model
    cams = ex.compute_cams(net, x[pos], c[pos], method="gradcam++")
    energy = np.mean([at.cam_energy_inside(m, k) for m, k in zip(cams, masks[pos])])
    assert energy > 1.8 * chance


def test_randomisation_check(blob_models):
    net, _, (x, c, y, _) = blob_models
    pos = np.flatnonzero(y == 1)[:12]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = ex.randomisation_check(net, x[pos], c[pos], method="gradcam++", seed=0)
    for k, v in net.state_dict().items():  # the trained model is untouched
        torch.testing.assert_close(v, before[k])
    again = ex.compute_cams(net, x[pos], c[pos], method="gradcam++")
    self_rho = np.mean([ex._spearman(a, b) for a, b in zip(res.cams_trained, again)])
    assert self_rho == pytest.approx(1.0)
    assert res.spearman.shape == (len(pos),)
    # observed 0.80 here, 0.55-0.80 over other training seeds: coarse 4x4 maps of a bright disk
    # stay somewhat alike even in a random network (Adebayo et al. saw this for edge-like input)
    assert res.spearman_mean < 0.9
    assert res.spearman_mean < self_rho - 0.1


def test_randomise_encoder_resets_encoder_only(blob_models):
    net = blob_models[0]
    rand = ex.randomise_encoder(net, seed=0)
    trained, fresh = dict(net.named_parameters()), dict(rand.named_parameters())
    enc = [k for k in trained if k.startswith("encoder.")]
    assert enc and all(not torch.equal(trained[k], fresh[k]) for k in enc)
    assert all(torch.equal(trained[k], fresh[k]) for k in trained if k not in enc)


# --------------------------------------------------------------------------- modality Shapley


def _explained(per_image: pd.DataFrame) -> Explanation:
    empty, none = pd.DataFrame(), np.zeros((0, 4, 4))
    return Explanation(per_image=per_image, cams_gradcampp=none, cam_rows=np.arange(0),
                       cams_scorecam=none, scorecam_rows=np.arange(0), ablation=empty,
                       importance=empty, faithfulness=empty)


@pytest.fixture(scope="module")
def shapley_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(10, 1, 32, 32, generator=g)
    c = torch.randn(10, N_CLIN, generator=g)
    return x, c, x.mean(0)[0], c.mean(0)


@pytest.mark.parametrize("fusion", ["concat", "late", "gated"])
def test_shapley_efficiency_all_fusions(fusion, shapley_inputs):
    x, c, bi, bc = shapley_inputs
    net = make_net("resnet10t", fusion=fusion, seed=1)
    with torch.no_grad():  # give the random late-fusion weights an unequal split
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    df = ex.modality_shapley(net, x, c, bi, bc)
    assert len(df) == 10
    with torch.no_grad():
        net.eval()
        full = torch.sigmoid(net(x, c)).numpy()
        base = torch.sigmoid(net(bi.expand(10, 1, 32, 32), bc.expand(10, -1))).numpy()
    np.testing.assert_allclose(df["f_full"], full, atol=1e-6)
    np.testing.assert_allclose(df["phi_image"] + df["phi_clinical"], full - base, atol=1e-6)
    assert df["phi_image"].abs().sum() > 0 and df["phi_clinical"].abs().sum() > 0
    # what notebook 05 records: efficiency holds to rounding, and a broken phi is seen
    assert _explained(df).shapley_sum_error() < 1e-6
    broken = df.assign(phi_image=df["phi_image"] + np.where(np.arange(10) == 4, 0.25, 0.0))
    assert _explained(broken).shapley_sum_error() == pytest.approx(0.25, abs=1e-6)
    assert _explained(df.drop(columns=["phi_image", "phi_clinical"])).shapley_sum_error() is None
    share = at.image_share(df["phi_image"], df["phi_clinical"])
    assert 0 < share < 1
    lg = ex.modality_shapley(net, x, c, bi, bc, scale="logit")
    np.testing.assert_allclose(lg["phi_image"] + lg["phi_clinical"],
                               special.logit(full) - special.logit(base), atol=1e-4)


def test_shapley_of_additive_late_fusion_is_each_branch(shapley_inputs):
    """Late fusion is additive on the logit scale: each phi is its own branch's change."""
    x, c, bi, bc = shapley_inputs
    net = make_net("resnet10t", fusion="late", seed=2).eval()
    lg = ex.modality_shapley(net, x, c, bi, bc, scale="logit")
    with torch.no_grad():
        w = net.late_weights
        img = lambda im: (w[0] * net.image_head(net.image_features(im))[:, 0]).numpy()  # noqa: E731
        clin = lambda cc: (w[1] * net.clinical_head(net.clinical(cc))[:, 0]).numpy()  # noqa: E731
        d_img = img(x) - img(bi.expand(10, 1, 32, 32))
        d_clin = clin(c) - clin(bc.expand(10, -1))
    np.testing.assert_allclose(lg["phi_image"], d_img, atol=1e-5)
    np.testing.assert_allclose(lg["phi_clinical"], d_clin, atol=1e-5)


def test_single_modality_models_get_zero_for_the_unused_input(shapley_inputs):
    x, c, bi, bc = shapley_inputs
    clin_only = PhyllodesNet("clinical", N_CLIN, pretrained=False)
    df = ex.modality_shapley(clin_only, x, c, bi, bc)
    assert (df["phi_image"] == 0).all() and df["phi_clinical"].abs().sum() > 0
    assert at.image_share(df["phi_image"], df["phi_clinical"]) == 0.0
    img_only = make_net("resnet10t", modality="image")
    df = ex.modality_shapley(img_only, x, None, bi, None)
    assert (df["phi_clinical"] == 0).all()
    assert at.image_share(df["phi_image"], df["phi_clinical"]) == 1.0


def test_image_share_and_bootstrap_ci():
    assert at.image_share([1, -1], [1, 1]) == pytest.approx(0.5)
    assert at.image_share([3, 0], [-1, 0]) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 2, 60), rng.normal(0, 1, 60)
    ci = at.image_share_ci(a, b, n_boot=500, seed=0)
    assert ci["estimate"] == pytest.approx(at.image_share(a, b))
    assert ci["low"] < ci["estimate"] < ci["high"]
    assert 0.5 < ci["low"] and ci["high"] < 0.85
    assert ci["n_boot_valid"] == 500
    # duplicated rows of one subject: resampling subjects widens nothing artificially narrow
    groups = np.repeat(np.arange(30), 2)
    ci_g = at.image_share_ci(a, b, groups=groups, n_boot=500, seed=0)
    assert ci_g["estimate"] == ci["estimate"]
    assert ci_g["low"] != ci["low"]


def test_modality_ablation_auc(shapley_inputs):
    x, c, bi, bc = shapley_inputs
    clin_only = PhyllodesNet("clinical", N_CLIN, pretrained=False).eval()
    with torch.no_grad():
        z = clin_only(None, c).numpy()
    y = (z > np.median(z)).astype(int)
    res = ex.modality_ablation_auc(clin_only, x, c, y, bi, bc)
    assert res["auc_both"] == pytest.approx(1.0)
    assert res["auc_no_image"] == pytest.approx(1.0)
    assert res["auc_no_clinical"] == pytest.approx(0.5)  # every subject gets the same score
    assert res["drop_image"] == pytest.approx(0.0) and res["drop_clinical"] == pytest.approx(0.5)
    assert res["image_share"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- permutation importance


def test_grouped_permutation_importance():
    rng = np.random.default_rng(0)
    n = 300
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n), rng.integers(0, 2, n),
                         rng.normal(size=n)])
    lin = 1.5 * X[:, 0] + 1.0 * (X[:, 1] - X[:, 2])
    y = (lin + rng.normal(0, 0.5, n) > 0).astype(int)

    def predict(Xc):
        return special.expit(1.5 * Xc[:, 0] + 1.0 * (Xc[:, 1] - Xc[:, 2]))

    groups = {"age": [0], "one_hot": [1, 2], "noise": [3]}
    df = ex.permutation_importance_oof(predict, X, y, groups, n_repeats=5, seed=0)
    d = df.set_index("feature")
    assert list(df["feature"]) == ["age", "one_hot", "noise"]
    assert d.loc["age", "auc_drop_mean"] > 0.15
    assert d.loc["one_hot", "auc_drop_mean"] > 0.03
    assert d.loc["noise", "auc_drop_mean"] == 0.0 and d.loc["noise", "auc_drop_sd"] == 0.0
    assert d.loc["one_hot", "n_columns"] == 2
    assert d["baseline_auc"].iloc[0] == pytest.approx(roc_auc_score(y, predict(X)))


# --------------------------------------------------------------------------- plots


def test_plot_helpers():
    rng = np.random.default_rng(0)
    imgs, cams = rng.random((5, 16, 16)), rng.random((5, 16, 16))
    masks = np.zeros((5, 16, 16), bool)
    masks[:, 4:9, 4:9] = True
    fig = figures.cam_grid(imgs, cams, titles=[f"case {i}" for i in range(5)], masks=masks,
                           ncols=3)
    assert len(fig.axes) == 6 and fig.axes[4].get_title() == "case 4"
    assert len(fig.axes[0].images) == 2
    fig2 = figures.fig7_modality_share({"concat": 0.6, "late": 0.4},
                                  {"concat": (0.5, 0.7), "late": (0.3, 0.5)})
    assert len(fig2.axes[0].patches) == 2
    fig3 = figures.fig8_clinical_importance(pd.DataFrame(
        {"feature": ["a", "b", "c"], "auc_drop_mean": [0.1, 0.0, 0.05],
         "auc_drop_sd": [0.01, 0.0, np.nan]}))
    assert [p.get_width() for p in fig3.axes[0].patches] == pytest.approx([0.0, 0.05, 0.1])
    plt.close("all")


def test_cam_layer_candidates_offer_a_finer_stage_of_the_same_model():
    """The quick recipe's tapped EfficientNet-Lite0 maps at 8x8 (stage 4, stride 16) at 128 px;
    the finer candidate is the last stage with maps of 16x16 or more (stage 2, stride 8)."""
    torch.manual_seed(0)
    tapped = PhyllodesNet("multimodal", N_CLIN, "efficientnet_lite0", "late", pretrained=False,
                          tap=4, frozen_stages=4, image_head="linear").eval()
    assert ex.cam_layer_candidates(tapped, 128) == [(None, (8, 8)), ("blocks.2", (16, 16))]
    assert ex.layer_name(tapped) == "bn2" and ex.layer_name(tapped, "blocks.2") == "blocks.2"
    # a whole ResNet at 128 px maps at 4x4: its finer candidate skips layer3 (8x8)
    assert ex.cam_layer_candidates(make_net("resnet10t"), 128)[1] == ("layer2", (16, 16))
    # maps already 16x16 or finer: the family's layer is the only candidate
    assert ex.cam_layer_candidates(tapped, 256) == [(None, (16, 16))]
    x = torch.rand(3, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    c = torch.randn(3, N_CLIN, generator=torch.Generator().manual_seed(1))
    coarse = ex.compute_cams(tapped, x, c, method="gradcam++")
    fine = ex.compute_cams(tapped, x, c, method="gradcam++", layer="blocks.2")
    assert coarse.shape == fine.shape == (3, 128, 128)
    # upsampled from 8x8 a map is constant over 16x16-pixel cells almost everywhere; from
    # 16x16 it varies on a finer scale: compare the mean change between neighbouring pixels
    def roughness(m):
        return float(np.abs(np.diff(m, axis=-1)).mean())
    assert roughness(fine) > 1.3 * roughness(coarse)
    with pytest.raises(ValueError, match="no module 'blocks.9'"):
        ex.compute_cams(tapped, x, c, method="gradcam++", layer="blocks.9")
    with pytest.raises(ValueError, match="not both"):
        ex.compute_cams(tapped, x, c, layer="blocks.2", layers=ex.target_layers(tapped))
    # the randomisation check looks the layer up in the re-initialised copy by its path
    check = ex.randomisation_check(tapped, x, c, method="gradcam++", layer="blocks.2")
    np.testing.assert_allclose(check.cams_trained, fine, atol=1e-6)
