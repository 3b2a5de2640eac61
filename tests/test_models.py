"""The dual-branch model: modalities, fusions, encoder weights and their errors."""

from __future__ import annotations

import pytest
import torch

from phyllodes.models.encoders import PretrainedWeightsError, resolve_pretrained
from phyllodes.models.network import PhyllodesNet, create_encoder, freeze_encoder_fraction


@pytest.mark.parametrize("modality,fusion", [("clinical", "concat"), ("image", "concat"),
                                             ("multimodal", "concat"), ("multimodal", "late"),
                                             ("multimodal", "gated")])
def test_one_logit_per_sample_and_gradients_reach_both_branches(modality, fusion):
    torch.manual_seed(0)
    m = PhyllodesNet(modality, n_clinical=6, encoder="resnet10t", fusion=fusion,
                     pretrained=False)
    x, c = torch.rand(4, 1, 32, 32), torch.randn(4, 6)
    out = m(x, c)
    assert out.shape == (4,)
    out.sum().backward()
    if modality != "clinical":
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
    if modality != "image":
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.clinical.parameters())
    # the multimodal output depends on both inputs
    if modality == "multimodal":
        m.eval()
        with torch.no_grad():
            assert not torch.allclose(m(x, c), m(x, c + 3))
            assert not torch.allclose(m(x, c), m(x.flip(-1) * 0.5, c))


def test_grayscale_expanded_and_normalised_with_encoder_statistics():
    m = PhyllodesNet("image", encoder="efficientnet_lite0", pretrained=True)
    assert m.img_mean.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])  # TF-Lite preprocessing
    r = PhyllodesNet("image", encoder="resnet10t", pretrained=False)
    assert r.img_mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    src = create_encoder("resnet10t", pretrained=False)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    torch.manual_seed(2)
    loaded = create_encoder("resnet10t", pretrained=True, weights=path)
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_weights_errors_are_clear(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_encoder("resnet10t", weights=tmp_path / "missing.pth")
    bad = tmp_path / "other.pth"
    torch.save(create_encoder("resnet18", pretrained=False).state_dict(), bad)
    with pytest.raises(PretrainedWeightsError, match="does not fit timm's 'resnet10t'"):
        create_encoder("resnet10t", weights=bad)


def test_offline_pretrained_request_fails_clearly(monkeypatch):
    import timm

    def offline(*a, pretrained=False, **k):
        if pretrained:
            raise OSError("Name or service not known")
        return real(*a, pretrained=pretrained, **k)
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError, match="local weights file"):
        create_encoder("resnet18", pretrained=True)


def test_pretrained_modes():
    assert resolve_pretrained("efficientnet_lite0", "if_cached") is True
    assert resolve_pretrained("resnet18", "none") is False
    assert resolve_pretrained("resnet18", "required") is True
    with pytest.raises(ValueError):
        resolve_pretrained("resnet18", "sometimes")


def test_freeze_fraction_freezes_early_layers_and_keeps_their_batchnorm_stats():
    m = PhyllodesNet("image", encoder="resnet10t", pretrained=False, freeze_fraction=0.5)
    params = list(m.encoder.parameters())
    n_frozen = sum(not p.requires_grad for p in params)
    assert abs(n_frozen - len(params) // 2) <= 1
    assert not params[0].requires_grad and params[-1].requires_grad
    m.train()
    assert not m.encoder.bn1.training       # frozen stem BN in eval mode
    assert m.encoder.layer4[-1].bn1.training
    assert all(p.requires_grad for p in m.encoder_parameters())
    assert freeze_encoder_fraction(m.encoder, 0) == 0


@pytest.mark.parametrize("encoder", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_transformer_encoders_take_the_profile_image_size(encoder):
    size = 64 if encoder.startswith("vit") else 112  # Swin needs multiples of 32 * window
    m = PhyllodesNet("multimodal", n_clinical=3, encoder=encoder, pretrained=False,
                     img_size=size)
    assert m(torch.rand(2, 1, size, size), torch.randn(2, 3)).shape == (2,)
    # a convolutional encoder ignores the size argument
    r = PhyllodesNet("image", encoder="resnet10t", pretrained=False, img_size=size)
    assert r(torch.rand(2, 1, size, size)).shape == (2,)
