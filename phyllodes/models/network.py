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

from pathlib import Path

import numpy as np
import torch
from torch import nn

from phyllodes.models import families
from phyllodes.models.encoders import (
    create_encoder,
    encoder_normalisation,
    freeze_encoder_fraction,
)

MODALITIES = ("clinical", "image", "multimodal")
FUSIONS = ("concat", "late", "gated")


























def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))










class PhyllodesNet(nn.Module):
    """Image branch (timm encoder) and/or clinical branch, fused into one logit.

    The image branch's pooled features are standardised by fixed buffers (``feat_mu``,
    ``feat_sd``: identity until a linear-probe initialisation sets them from training images).
    ``tap`` truncates the encoder after that stage (its pooled output becomes the features) and
    ``frozen_stages`` freezes the stem and the first stages, for every family with a stage table
    (:mod:`phyllodes.models.families`; refused by name for the others): their
    output (:meth:`encode_prefix`) can then be cached, and :meth:`forward_parts` takes it as
    ``prefix`` instead of the image. ``frozen_bn`` keeps every BatchNorm of the encoder at its
    running statistics in training. ``image_head`` 'linear' makes the image-only head and the
    late fusion's image head one linear layer (a logistic regression on the features);
    ``clinical_branch`` 'linear' feeds a multimodal model's preprocessed clinical vector
    directly (no MLP) to the fusion.
    """

    #: the profile settings that shape the network (a setting's name, the keyword it is)
    SETTINGS = {"clinical_hidden": "clinical_hidden", "head_hidden": "head_hidden",
                "dropout": "dropout", "freeze_fraction": "freeze_fraction",
                "image_size": "img_size", "tap": "tap", "frozen_stages": "frozen_stages",
                "frozen_bn": "frozen_bn", "image_head": "image_head",
                "clinical_branch": "clinical_branch"}

    @classmethod
    def from_settings(cls, modality: str, encoder: str | None, fusion: str, n_clinical: int,
                      settings, pretrained: bool, encoder_weights: str | Path | None = None
                      ) -> "PhyllodesNet":
        """The network of a profile's (or a finished run's recorded) settings: those of
        :data:`SETTINGS` that are given, the class's defaults for the rest."""
        kw = {arg: settings[name] for name, arg in cls.SETTINGS.items() if name in settings}
        return cls(modality, n_clinical=n_clinical, encoder=encoder, fusion=fusion,
                   pretrained=pretrained, encoder_weights=encoder_weights, **kw)

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
            # refused by name when the encoder's family cannot honour them
            families.check_stage_settings(encoder, self.encoder, tap, frozen_stages)
            if tap is not None:
                families.truncate_after_stage(self.encoder, tap, img_size)
            if frozen_stages:
                families.freeze_stages(self.encoder, frozen_stages)
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

    def to_run_layout(self, device: str | torch.device = "cpu") -> "PhyllodesNet":
        """This network on ``device`` in the memory layout every run computes in: channels-last
        weights for an image network (oneDNN chooses its convolution kernels by layout, and the
        two layouts round differently, ~1e-7 per layer). Training, a finished run applied to
        another cohort, an exported model and the view cache all go through here, so the same
        weights give the same numbers whichever of them computes."""
        model = self.to(device)
        return model.to(memory_format=torch.channels_last) if self.uses_images else model

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        x = image.expand(-1, self.in_chans, -1, -1) if image.shape[1] == 1 else image
        return (x - self.img_mean) / self.img_std

    def encode_prefix(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen stem and first stages' output for [0, 1] grayscale images (B, 1, H, W)."""
        h = self._normalise(image)
        for module in families.prefix_modules(self.encoder, self.prefix_stages):
            h = module(h)
        return h

    def features_from_prefix(self, h: torch.Tensor) -> torch.Tensor:
        """Standardised pooled features from the prefix's output (:meth:`encode_prefix`)."""
        for module in families.rest_modules(self.encoder, self.prefix_stages):
            h = module(h)
        return (self.encoder.forward_head(h) - self.feat_mu) / self.feat_sd

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
