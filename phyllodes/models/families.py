"""What the package knows of each timm encoder family, in one table (:data:`FAMILIES`).

For each family: its stem, its stages (what ``tap`` truncates after, what ``frozen_stages``
freezes and the view cache runs once), what comes after the last stage inside the network's
features (dropped by a tap) and inside its pooling head (a norm of the last stage's width,
dropped by a tap), its CAM target layer and how that layer's output is laid out, and whether
its constructor takes the input size. Module paths are attribute paths of the timm model
(``layer4.-1`` is the last block of ``layer4``). Adding a family is one entry here; a test
(tests/test_families.py) checks for every entry with stages that stem -> stages -> tail ->
the head reproduces the encoder's own forward.

A setting an encoder cannot honour is refused by name (:func:`check_stage_settings`), never
ignored: a family without a stage table takes no ``tap`` and no ``frozen_stages``, and a stage
index beyond the encoder's stages is an error that lists them. Stage indices are the family's
own (EfficientNet has 7 stages, ``blocks.0``-``blocks.6``; ResNet, DenseNet, ConvNeXt and Swin
have 4): the quick profile's ``tap=4`` is an EfficientNet setting.

Once tapped after stage ``t``, the features are the average-pooled output of stage ``t`` (the
stages after it, the tail and the head's norm are removed), and the CAM layer is the last
module of stage ``t`` (EfficientNet keeps ``bn2``, an identity on it after the tap).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Family:
    """One encoder family (see the module docstring)."""

    name: str
    #: the timm classes of the family, as 'module.Class' under timm.models
    classes: tuple[str, ...]
    #: name prefixes of timm's model names in the family (for what is known before building)
    prefixes: tuple[str, ...]
    #: the CAM target layer of the whole network
    cam_layer: str
    #: the stem's modules, in forward order (empty for a family without a stage table)
    stem: tuple[str, ...] = ()
    #: the stage container (its children are the stages) ...
    stage_container: str | None = None
    #: ... or the stages themselves, each a tuple of modules run in order
    stage_paths: tuple[tuple[str, ...], ...] = ()
    #: modules after the last stage inside the features (removed by a tap)
    tail: tuple[str, ...] = ()
    #: a norm inside the pooling head of the last stage's width (removed by a tap)
    head_norm: str | None = None
    #: the CAM layer of a tapped encoder; None: the last module of the last kept stage
    cam_layer_tapped: str | None = None
    #: how the CAM layer's output is laid out: None (B, C, h, w), 'nhwc' or 'tokens' (ViT)
    layout: str | None = None
    #: the constructor takes the input size (position embeddings, attention windows)
    takes_image_size: bool = False

    @property
    def has_stages(self) -> bool:
        """Whether the family has a stage table (tap, frozen stages, the view cache)."""
        return bool(self.stage_container or self.stage_paths)


FAMILIES: tuple[Family, ...] = (
    Family("efficientnet", ("efficientnet.EfficientNet",),
           ("efficientnet", "tf_efficientnet", "mnasnet", "spnasnet", "mixnet", "fbnet"),
           cam_layer="bn2", stem=("conv_stem", "bn1"), stage_container="blocks",
           tail=("conv_head", "bn2"), cam_layer_tapped="bn2"),
    Family("resnet", ("resnet.ResNet",), ("resnet", "resnext", "seresnet", "wide_resnet"),
           cam_layer="layer4.-1", stem=("conv1", "bn1", "act1", "maxpool"),
           stage_paths=(("layer1",), ("layer2",), ("layer3",), ("layer4",))),
    Family("densenet", ("densenet.DenseNet",), ("densenet",), cam_layer="features.norm5",
           stem=("features.conv0", "features.norm0", "features.pool0"),
           # a stage: the transition into it (pooling) and its dense block
           stage_paths=(("features.denseblock1",),
                        ("features.transition1", "features.denseblock2"),
                        ("features.transition2", "features.denseblock3"),
                        ("features.transition3", "features.denseblock4")),
           tail=("features.norm5",)),
    Family("convnext", ("convnext.ConvNeXt",), ("convnext",), cam_layer="stages.-1",
           stem=("stem",), stage_container="stages", tail=("norm_pre",),
           head_norm="head.norm"),
    Family("swin", ("swin_transformer.SwinTransformer",
                    "swin_transformer_v2.SwinTransformerV2"), ("swin",),
           cam_layer="layers.-1", stem=("patch_embed",), stage_container="layers",
           tail=("norm",), layout="nhwc", takes_image_size=True),
    # families without a stage table: CAMs only
    Family("mobilenetv3", ("mobilenetv3.MobileNetV3",), ("mobilenetv3", "tf_mobilenetv3"),
           cam_layer="blocks.-1"),  # its conv head comes after the global pooling
    Family("vit", ("vision_transformer.VisionTransformer",),
           ("vit_", "deit", "eva", "beit", "cait", "xcit"),
           # the last block's output only reaches the class token: its patch tokens' gradients
           # vanish there, so the CAM layer is the last block's first norm
           cam_layer="blocks.-1.norm1", layout="tokens", takes_image_size=True),
)


def _class(path: str) -> type:
    module, cls = path.rsplit(".", 1)
    return getattr(importlib.import_module(f"timm.models.{module}"), cls)


def family_of(encoder: nn.Module) -> Family | None:
    """The family of a timm encoder (by its class), or None for one the table does not know."""
    for fam in FAMILIES:
        if any(isinstance(encoder, _class(c)) for c in fam.classes):
            return fam
    return None


def family_named(name: str) -> Family | None:
    """The family of timm's model name ``name`` (by its prefixes), before building it."""
    for fam in FAMILIES:
        if name.startswith(fam.prefixes):
            return fam
    return None


def takes_image_size(name: str) -> bool:
    """Whether timm's encoder ``name`` takes the input size in its constructor."""
    return any(name.startswith(p) for fam in FAMILIES if fam.takes_image_size
               for p in fam.prefixes)


def module_at(root: nn.Module, path: str) -> nn.Module:
    """The module at an attribute path ('layer4.-1', 'features.norm5')."""
    m = root
    for part in path.split("."):
        m = m[int(part)] if part.lstrip("-").isdigit() and part.startswith("-") else \
            getattr(m, part)
    return m


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(module_at(root, parent) if parent else root, leaf, new)


def _stages(encoder: nn.Module, fam: Family) -> list[tuple[str, ...]]:
    if fam.stage_container:
        n = len(module_at(encoder, fam.stage_container))
        paths = [(f"{fam.stage_container}.{i}",) for i in range(n)]
    else:
        paths = list(fam.stage_paths)
    kept = getattr(encoder, "_phyllodes_tap", None)
    return paths if kept is None else paths[:kept + 1]


def stages(encoder: nn.Module) -> list[tuple[str, ...]]:
    """The encoder's stages (each a tuple of module paths), those kept by a tap only."""
    fam = family_of(encoder)
    return _stages(encoder, fam) if fam is not None and fam.has_stages else []


def _describe(name: str, encoder: nn.Module, fam: Family | None) -> str:
    return f"encoder '{name}' ({type(encoder).__name__}, family {fam.name if fam else 'unknown'})"


def check_stage_settings(name: str, encoder: nn.Module, tap: int | None,
                         frozen_stages: int = 0, taps: tuple = ()) -> None:
    """Refuse, by name, a ``tap``, ``frozen_stages`` or probe tap the encoder cannot honour:
    a family without a stage table, or a stage it does not have."""
    fam = family_of(encoder)
    asked = {k: v for k, v in (("tap", tap), ("frozen_stages", frozen_stages or None))
             if v is not None}
    stage_taps = [t for t in taps if t != "head"]
    if stage_taps:
        asked["probe_taps"] = tuple(stage_taps)
    if not asked:
        return
    if fam is None or not fam.has_stages:
        settings = ", ".join(f"{k}={v}" for k, v in asked.items())
        raise ValueError(
            f"{settings} cannot be honoured: {_describe(name, encoder, fam)} has no stage table "
            "in phyllodes.models.families (its stages are not known). Set tap=none, "
            "frozen_stages=0 and cache_views=0 (probe_taps=head) to train the whole network, "
            "or add the family's stages to FAMILIES")
    paths = _stages(encoder, fam)
    n = len(paths)
    listing = ", ".join(f"{i}: {'+'.join(p)}" for i, p in enumerate(paths))
    where = f"{_describe(name, encoder, fam)} has {n} stages ({listing})"
    if tap is not None and not 0 <= int(tap) < n:
        raise ValueError(f"tap={tap} is not a stage: {where}; set tap to 0-{n - 1}, or none "
                         "for the whole network (stage indices are the family's own: the "
                         "quick recipe's tap=4 is EfficientNet's)")
    kept = n if tap is None else int(tap) + 1
    if frozen_stages and not 0 < int(frozen_stages) <= kept:
        raise ValueError(f"frozen_stages={frozen_stages} is more than the {kept} stage(s) "
                         f"kept (tap={tap}): {where}; freeze at most {kept}")
    for t in stage_taps:
        if not 0 <= int(t) < n:
            raise ValueError(f"probe tap {t} is not a stage: {where}; use 0-{n - 1} or 'head'")


def _width(encoder: nn.Module, fam: Family, size: int) -> int:
    """Channels of the (tapped) features, from one forward of a blank image in eval mode."""
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            h = torch.zeros(1, 3, size, size)
            for m in prefix_modules(encoder, len(_stages(encoder, fam))):
                h = m(h)
    finally:
        encoder.train(was)
    return int(h.shape[-1] if fam.layout == "nhwc" else h.shape[1])


def truncate_after_stage(encoder: nn.Module, stage: int, image_size: int | None = None) -> int:
    """Keep the stem and stages 0..``stage`` (:func:`check_stage_settings` first): the stages
    after it, the tail and the head's norm are removed, so the pooled features are the
    average-pooled output of that stage. Returns the new feature width."""
    fam = family_of(encoder)
    if fam is None or not fam.has_stages:
        raise ValueError(f"{type(encoder).__name__} has no stage table: it cannot be tapped")
    if fam.name == "efficientnet":  # slicing keeps the state dict of earlier exports
        encoder.blocks = encoder.blocks[:stage + 1]
        encoder.conv_head, encoder.bn2 = nn.Identity(), nn.Identity()
        last = encoder.blocks[-1][-1]
        width = last.conv_pwl.out_channels if hasattr(last, "conv_pwl") else \
            last.conv_pw.out_channels
        encoder.num_features = encoder.head_hidden_size = width
        return width
    for dropped in _stages(encoder, fam)[stage + 1:]:
        for path in dropped:
            _set_module(encoder, path, nn.Identity())
    for path in (*fam.tail, *([fam.head_norm] if fam.head_norm else [])):
        _set_module(encoder, path, nn.Identity())
    encoder._phyllodes_tap = stage
    size = image_size or int((getattr(encoder, "pretrained_cfg", None) or {}).get(
        "input_size", (3, 224, 224))[-1])
    width = _width(encoder, fam, size)
    encoder.num_features = encoder.head_hidden_size = width
    return width


def prefix_modules(encoder: nn.Module, n_stages: int) -> tuple[nn.Module, ...]:
    """The stem and the first ``n_stages`` stages, in forward order: the frozen, cacheable
    prefix (frozen by :func:`freeze_stages`, run by ``PhyllodesNet.encode_prefix``, digested
    by :func:`phyllodes.train.views.prefix_digest`)."""
    fam = family_of(encoder)
    if fam is None or not fam.has_stages:
        raise ValueError(f"{type(encoder).__name__} has no stage table: no prefix")
    paths = [*fam.stem, *(p for stage in _stages(encoder, fam)[:n_stages] for p in stage)]
    return tuple(module_at(encoder, p) for p in paths)


def rest_modules(encoder: nn.Module, n_stages: int) -> tuple[nn.Module, ...]:
    """What runs after the prefix of ``n_stages`` stages, up to the pooling head: the
    remaining stages and the tail (identities once tapped)."""
    fam = family_of(encoder)
    if fam is None or not fam.has_stages:
        raise ValueError(f"{type(encoder).__name__} has no stage table")
    paths = [*(p for stage in _stages(encoder, fam)[n_stages:] for p in stage), *fam.tail]
    return tuple(module_at(encoder, p) for p in paths)


def freeze_stages(encoder: nn.Module, n_stages: int) -> None:
    """Freeze the stem and the first ``n_stages`` stages: no gradient (their BatchNorm
    statistics are kept by ``frozen_bn``, as the recipe sets, or by the view cache, which
    runs the prefix once in eval mode)."""
    for m in prefix_modules(encoder, n_stages):
        for p in m.parameters():
            p.requires_grad_(False)


def stage_output_module(encoder: nn.Module, stage: int) -> nn.Module:
    """The module whose output is stage ``stage``'s (a probe tap's features)."""
    paths = stages(encoder)
    if not 0 <= stage < len(paths):
        raise ValueError(f"{type(encoder).__name__} has no stage {stage} "
                         f"({len(paths)} stages known)")
    return module_at(encoder, paths[stage][-1])


def cam_layer(encoder: nn.Module) -> nn.Module:
    """The CAM target layer: the family's, or for a tapped encoder the last kept stage's."""
    fam = family_of(encoder)
    if fam is None:
        raise ValueError(f"no CAM target layer known for encoder class {type(encoder).__name__}")
    tapped = getattr(encoder, "_phyllodes_tap", None) is not None
    if tapped and fam.cam_layer_tapped is None:
        return module_at(encoder, _stages(encoder, fam)[-1][-1])
    return module_at(encoder, fam.cam_layer_tapped if tapped else fam.cam_layer)
