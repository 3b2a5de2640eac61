"""The encoder-family table (phyllodes.models.families): for each of the paper's six encoders
(random init, 64 px) the recipe's tap, frozen stages and cached prefix work and are what the
network computes, one training step moves only what is not frozen, and the CAMs come from the
tapped stage; a setting a family cannot honour is refused by name, never ignored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phyllodes.explain import maps
from phyllodes.models import families
from phyllodes.models.network import PhyllodesNet
from phyllodes.profiles import get_profile

SIZE = 64
#: the paper's six encoders, the family each belongs to, and its number of stages
PAPER = [("resnet18", "resnet", 4), ("resnet50", "resnet", 4), ("densenet121", "densenet", 4),
         ("efficientnet_b0", "efficientnet", 7), ("convnext_tiny", "convnext", 4),
         ("swin_tiny_patch4_window7_224", "swin", 4)]


def _net(encoder: str, **kw) -> PhyllodesNet:
    torch.manual_seed(0)
    return PhyllodesNet("image", encoder=encoder, pretrained=False, img_size=SIZE,
                        image_head="linear", **kw)


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("encoder,family,n_stages", PAPER, ids=[p[0] for p in PAPER])
def test_paper_encoders_tap_freeze_cache_train_and_explain(encoder, family, n_stages):
    whole = _net(encoder).eval()
    fam = families.family_of(whole.encoder)
    assert fam.name == family and families.family_named(encoder) is fam
    assert len(families.stages(whole.encoder)) == n_stages
    x = _images()
    with torch.no_grad():
        ref = whole.encoder(whole._normalise(x))
        # stem -> stages -> tail -> head is the encoder's own forward, split at every stage
        for k in range(n_stages + 1):
            h = whole._normalise(x)
            for m in (*families.prefix_modules(whole.encoder, k),
                      *families.rest_modules(whole.encoder, k)):
                h = m(h)
            torch.testing.assert_close(whole.encoder.forward_head(h), ref)

    tap = 2
    net = _net(encoder, tap=tap, frozen_stages=tap).eval()
    assert net.prefix_stages == tap and len(families.stages(net.encoder)) == tap + 1
    with torch.no_grad():
        feats = net.image_features(x)
        # the cached path (the frozen prefix's output, then the rest) is the same network
        torch.testing.assert_close(net.features_from_prefix(net.encode_prefix(x)), feats)
        # the features are stage 2's output, average-pooled
        h = net._normalise(x)
        for m in families.prefix_modules(net.encoder, tap + 1):
            h = m(h)
        pooled = h.mean(dim=(1, 2)) if fam.layout == "nhwc" else h.mean(dim=(2, 3))
    torch.testing.assert_close(feats, pooled)
    assert feats.shape[1] == net.encoder.num_features == net.head.in_features

    # one training step: the stem and frozen stages do not move, the tapped stage does
    frozen = [p for m in families.prefix_modules(net.encoder, tap) for p in m.parameters()]
    trained = list(families.module_at(net.encoder, families.stages(net.encoder)[tap][-1])
                   .parameters())
    assert frozen and trained and not any(p.requires_grad for p in frozen)
    before = [p.detach().clone() for p in (*frozen, *trained)]
    net.train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), torch.tensor([0., 1.]))
    loss.backward()
    opt.step()
    after = [p.detach() for p in (*frozen, *trained)]
    assert all(torch.equal(a, b) for a, b in zip(before[:len(frozen)], after[:len(frozen)]))
    assert any(not torch.equal(a, b) for a, b in zip(before[len(frozen):], after[len(frozen):]))

    # the CAM layer is the tapped stage's (EfficientNet: bn2, an identity on it)
    layer = maps.target_layers(net)[0]
    expected = net.encoder.bn2 if family == "efficientnet" else families.module_at(
        net.encoder, families.stages(net.encoder)[tap][-1])
    assert layer is expected
    cams = maps.compute_cams(net, x, None, method="gradcam++", batch_size=8)
    assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all()


def test_a_setting_a_family_cannot_honour_is_refused_by_name():
    with pytest.raises(ValueError, match=r"tap=4 is not a stage: encoder 'resnet18' .* has 4 "
                                         r"stages \(0: layer1, 1: layer2, 2: layer3, 3: layer4\)"):
        _net("resnet18", tap=4)
    with pytest.raises(ValueError, match="frozen_stages=3 is more than the 2 stage"):
        _net("resnet18", tap=1, frozen_stages=3)
    with pytest.raises(ValueError, match=r"tap=1 cannot be honoured: encoder 'vit_tiny_patch16_"
                                         r"224' \(VisionTransformer, family vit\) has no stage"):
        PhyllodesNet("image", encoder="vit_tiny_patch16_224", pretrained=False, tap=1,
                     img_size=32)
    with pytest.raises(ValueError, match="frozen_stages=2 cannot be honoured.*mobilenetv3"):
        _net("mobilenetv3_small_050", frozen_stages=2)
    # DenseNet's stages are its dense blocks, each with the transition into it
    assert families.stages(_net("densenet121").encoder)[1] == (
        "features.transition1", "features.denseblock2")
    # the view cache needs a frozen prefix: asking for it without one is refused
    with pytest.raises(ValueError, match="cache_views=16 needs frozen_stages > 0"):
        get_profile("paper", cache_views=16)
    # without tap or frozen stages, a family without a stage table trains as before
    assert _net("mobilenetv3_small_050").prefix_stages == 0


def test_efficientnet_tap_keeps_its_state_dict_and_features():
    """The quick recipe (tap 4, stages 0-3 frozen) on EfficientNet-Lite0: the same modules and
    weights as before the table (exported models keep loading)."""
    net = _net("efficientnet_lite0", tap=4, frozen_stages=4)
    keys = set(net.state_dict())
    assert len(net.encoder.blocks) == 5 and not any(k.startswith("encoder.blocks.5") for k in keys)
    assert "encoder.conv_head.weight" not in keys and net.encoder.num_features == 112
    assert maps.map_grid(net, 128) == (8, 8)


def test_stage_settings_outside_efficientnet_get_new_run_ids(synthetic_cohort_dir, tmp_path):
    """A tap set on ResNet was ignored before the table and is honoured now: those runs get a
    new id (old results never come back); EfficientNet's ids are unchanged."""
    from phyllodes.study import open_study
    from phyllodes.train import runs
    from phyllodes.train.spec import RunSpec
    study = open_study("smoke", synthetic_cohort_dir, device="cpu", seed=0,
                       output_dir=str(tmp_path), image_size=32)
    res = runs.run_config(study, RunSpec("image", "resnet10t", fold=0), None)
    eff = runs.run_config(study, RunSpec("image", "efficientnet_lite0", fold=0), None)
    assert res["stage_table"] == 1 and "stage_table" not in eff
    # the paper profile sets neither: the whole network, as before
    whole = open_study("paper", synthetic_cohort_dir, device="cpu", seed=0,
                       output_dir=str(tmp_path), image_size=32, pretrained="none")
    assert "stage_table" not in runs.run_config(whole, RunSpec("image", "resnet10t", fold=0),
                                                None)
