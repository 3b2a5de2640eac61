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

Every field declares its **role** (field metadata), which decides whether it enters a run's id:

* ``result``: changes what a run computes; hashed into the run id, for the runs it applies to
  (its ``scope``: ``all`` runs, ``neural`` networks, runs that use ``images``, or only the
  ``clinical_mlp``). A changed result setting never reuses an old run.
* ``plan``: which runs a notebook asks for (encoders, fusions, folds); each run's spec and the
  splits file carry it, so it needs no hashing.
* ``execution``: how a run is executed (threads), not what it computes.
* ``report``: only how results are summarised (bootstrap resamples, CAM examples).

A test fails when a field has no role, so a new training setting cannot silently reuse runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

ROLES = ("result", "plan", "execution", "report")
SCOPES = ("all", "neural", "images", "clinical_mlp")


def setting(default: Any, role: str, scope: str = "all", doc: str = "") -> Any:
    """A Profile field with its role (see the module docstring) and scope."""
    if role not in ROLES or scope not in SCOPES:
        raise ValueError(f"role must be one of {ROLES} and scope one of {SCOPES}")
    return field(default=default, metadata={"role": role, "scope": scope, "doc": doc})


@dataclass(frozen=True)
class Profile:
    name: str = setting("custom", "report", doc="the profile's name")
    folds: int = setting(5, "plan", doc="outer cross-validation folds")
    image_size: int = setting(224, "result", "images", "side of the square network input (px)")
    use_roi: bool = setting(True, "result", "images",
                            "crop to the ROI box (with margin) before padding/resizing")
    roi_margin: float = setting(0.15, "result", "images",
                                "fraction of the box size added on each side")
    encoder: str = setting("convnext_tiny", "plan", doc="encoder of notebooks 02, 03 and 05")
    encoders: tuple[str, ...] = setting(
        ("resnet18", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny",
         "swin_tiny_patch4_window7_224"), "plan", doc="encoders compared in notebook 04")
    pretrained: str = setting(
        "required", "result", "images",
        "'required' (ImageNet weights or a clear error), 'if_cached' (when on this machine, "
        "else random init, labelled in the tables) or 'none'; hashed as the resolved yes/no")
    freeze_fraction: float = setting(0.0, "result", "images",
                                     "fraction of encoder parameters kept frozen (early layers)")
    fusion: str = setting("concat", "plan",
                          doc="the paper's fusion: feature concatenation + MLP head")
    fusions: tuple[str, ...] = setting(("concat", "late", "gated"), "plan",
                                       doc="fusion variants of notebook 03")
    epochs: int = setting(40, "result", "images", "epochs of image and multimodal networks")
    patience: int = setting(8, "result", "neural",
                            "early stopping on inner-validation AUC (ours)")
    batch_size: int = setting(32, "result", "neural")
    lr_encoder: float = setting(1e-4, "result", "images",
                                "AdamW learning rate of the pretrained encoder (ours)")
    lr_head: float = setting(3e-3, "result", "neural",
                             "AdamW learning rate of the clinical branch and heads (ours)")
    weight_decay: float = setting(1e-2, "result", "neural")
    warmup_epochs: int = setting(2, "result", "neural")
    clinical_hidden: int = setting(32, "result", "neural")
    head_hidden: int = setting(64, "result", "neural")
    dropout: float = setting(0.3, "result", "neural")
    aux_weight: float = setting(
        0.5, "result", "neural",
        "weight of the unimodal auxiliary losses of a multimodal model (deep supervision: each "
        "branch also predicts alone, so the clinical branch learns even when the image "
        "dominates)")
    inner_val_fraction: float = setting(0.2, "result", "all",
                                        "training subjects held out for inner validation")
    augment: bool = setting(True, "result", "images")
    n_boot: int = setting(2000, "report", doc="bootstrap resamples of every CI")
    clinical_epochs: int = setting(200, "result", "clinical_mlp",
                                   "epochs of the clinical-only MLP (cheap)")
    cam_examples: int = setting(2, "report", doc="CAM overlays per outcome (TP/TN/FP/FN)")
    sensitivity_target: float = setting(0.95, "report",
                                        doc="sensitivity of the high-sensitivity operating point")
    num_threads: int = setting(0, "execution", doc="torch CPU threads; 0 = torch's default")
    compile: bool = setting(False, "result", "neural",
                            "torch.compile the training forward (GPU; first epoch slower)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result_settings(self, scopes: set[str] | frozenset[str]) -> dict[str, Any]:
        """The ``result`` settings whose scope is in ``scopes`` (what a run id hashes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.metadata["role"] == "result" and f.metadata["scope"] in scopes}


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
