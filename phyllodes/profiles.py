"""The three run profiles (smoke / quick / paper) and all their settings, in one place.

* ``smoke``: every code path on tiny images, 1-2 epochs, 2 folds; minutes on 2 CPU cores.
  Used by the tests and CI.
* ``quick``: the whole study on the bundled cohort on a CPU: small images, a pretrained
  EfficientNet-Lite0 that ships with its weights (no internet needed), few encoders.
* ``paper``: the paper's protocol on one GPU: 224 px, 5 subject-stratified folds, six
  encoders, ImageNet-pretrained through timm.

The paper (Abir et al., BSN 2025) does not publish every hyper-parameter; where it is silent
the values below are ours and are marked so. Any setting can be overridden per notebook
through :func:`get_profile`'s keyword arguments (the notebooks' parameters cells).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    folds: int = 5
    image_size: int = 224
    use_roi: bool = True            #: crop to the ROI box (with margin) before padding/resizing
    roi_margin: float = 0.15        #: fraction of the box size added on each side
    encoder: str = "convnext_tiny"  #: encoder of notebooks 02, 03 and 05
    encoders: tuple[str, ...] = ("resnet18", "resnet50", "densenet121", "efficientnet_b0",
                                 "convnext_tiny", "swin_tiny_patch4_window7_224")
    #: 'required' (ImageNet weights or a clear error), 'if_cached' (when on this machine,
    #: else random init, labelled in the tables) or 'none'
    pretrained: str = "required"
    freeze_fraction: float = 0.0    #: fraction of encoder parameters kept frozen (early layers)
    fusion: str = "concat"          #: the paper's fusion: feature concatenation + MLP head
    fusions: tuple[str, ...] = ("concat", "late", "gated")
    epochs: int = 40
    patience: int = 8               #: early stopping on inner-validation AUC (ours)
    batch_size: int = 32
    lr_encoder: float = 1e-4        #: AdamW learning rate of the pretrained encoder (ours)
    lr_head: float = 3e-3           #: AdamW learning rate of the clinical branch and heads (ours)
    weight_decay: float = 1e-2
    warmup_epochs: int = 2
    clinical_hidden: int = 32
    head_hidden: int = 64
    dropout: float = 0.3
    #: weight of the unimodal auxiliary losses of a multimodal model (deep supervision: each
    #: branch also predicts alone, so the clinical branch learns even when the image dominates)
    aux_weight: float = 0.5
    inner_val_fraction: float = 0.2
    augment: bool = True
    n_boot: int = 2000
    clinical_epochs: int = 200      #: epochs of the clinical-only MLP (cheap)
    cam_examples: int = 2           #: CAM overlays per outcome (TP/TN/FP/FN)
    sensitivity_target: float = 0.95
    num_threads: int = 0            #: torch CPU threads; 0 = torch's default
    compile: bool = False           #: torch.compile the training forward (GPU; first epoch slower)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", folds=2, image_size=64, encoder="resnet10t",
        encoders=("resnet10t", "efficientnet_lite0"), pretrained="none",
        epochs=2, patience=2, batch_size=16, warmup_epochs=0, n_boot=200,
        clinical_epochs=20, clinical_hidden=8, head_hidden=16, cam_examples=1,
    ),
    "quick": Profile(
        name="quick", folds=5, image_size=96, encoder="efficientnet_lite0",
        encoders=("efficientnet_lite0", "resnet18"), pretrained="if_cached",
        freeze_fraction=0.5, epochs=20, patience=6, batch_size=32, warmup_epochs=1,
        lr_head=1e-2, aux_weight=1.0, n_boot=1000, clinical_epochs=150,
    ),
    "paper": Profile(name="paper"),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    """The named profile with overrides applied; ``None`` overrides are ignored."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}'; choose one of {sorted(PROFILES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(Profile.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown profile setting(s) {sorted(unknown)}")
    for k in ("encoders", "fusions"):
        if k in overrides and isinstance(overrides[k], (list, str)):
            v = overrides[k]
            overrides[k] = tuple([v] if isinstance(v, str) else v)
    return replace(PROFILES[name], **overrides)


def default_profile_name() -> str:
    """``paper`` when CUDA is available, else ``quick``."""
    try:
        import torch
        return "paper" if torch.cuda.is_available() else "quick"
    except ImportError:  # pragma: no cover
        return "quick"
