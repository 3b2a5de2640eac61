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
  (its ``scope``: ``all`` runs, ``neural`` networks, runs that take ``images`` (the image
  input), only image networks (``image_training``), only the linear ``probe``, or only the
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
SCOPES = ("all", "neural", "images", "image_training", "probe", "clinical_mlp")


def setting(default: Any, role: str, scope: str = "all", doc: str = "",
            choices: tuple | None = None) -> Any:
    """A Profile field with its role (see the module docstring), scope and, for a setting that
    names one of a few behaviours, its ``choices`` (any other value is refused)."""
    if role not in ROLES or scope not in SCOPES:
        raise ValueError(f"role must be one of {ROLES} and scope one of {SCOPES}")
    return field(default=default, metadata={"role": role, "scope": scope, "doc": doc,
                                            "choices": choices})


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
        "else random init, labelled in the tables) or 'none'; hashed as the resolved yes/no",
        choices=("required", "if_cached", "none"))
    freeze_fraction: float = setting(0.0, "result", "image_training",
                                     "fraction of encoder parameters kept frozen (early layers)")
    fusion: str = setting("concat", "plan",
                          doc="the paper's fusion: feature concatenation + MLP head",
                          choices=("concat", "late", "gated"))
    fusions: tuple[str, ...] = setting(("concat", "late", "gated"), "plan",
                                       doc="fusion variants of notebook 03")
    epochs: int = setting(40, "result", "image_training",
                          "epochs of image and multimodal networks")
    patience: int = setting(8, "result", "neural",
                            "early stopping on inner-validation AUC (ours)")
    batch_size: int = setting(32, "result", "neural")
    lr_encoder: float = setting(1e-4, "result", "image_training",
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
    augment: bool = setting(True, "result", "image_training")
    tap: int | None = setting(
        None, "result", "image_training",
        "truncate the encoder after this stage of its family (phyllodes.models.families: "
        "EfficientNet 0-6, ResNet/DenseNet/ConvNeXt/Swin 0-3; refused for a family without a "
        "stage table), its pooled output is the image feature (None: the whole network)")
    frozen_stages: int = setting(0, "result", "image_training",
                                 "stem and first stages frozen (the cacheable prefix; "
                                 "refused like tap)")
    cache_views: int = setting(
        0, "result", "image_training",
        "with frozen stages: the frozen prefix's output of K augmented views per "
        "image (plus the clean image and its flip) is computed once and reused by every fold "
        "and run (0: augment and run the whole encoder every step)")
    frozen_bn: bool = setting(False, "result", "image_training",
                              "every encoder BatchNorm keeps its ImageNet statistics")
    image_head: str = setting("mlp", "result", "image_training",
                              "'linear' (a logistic regression on the features) or 'mlp'",
                              choices=("mlp", "linear"))
    clinical_branch: str = setting(
        "mlp", "result", "image_training",
        "multimodal: 'mlp' (the paper's clinical MLP) or 'linear' (the preprocessed vector "
        "itself; late fusion's clinical head is then a logistic regression, fit first and kept)",
        choices=("mlp", "linear"))
    lp_init: bool = setting(False, "result", "image_training",
                            "LP-FT: the linear image head (and its feature standardisation) "
                            "starts as a logistic regression on the frozen features")
    stopping: str = setting("early", "result", "image_training",
                            "'early' (best inner-validation AUC, patience) or 'fixed' (train "
                            "every epoch, keep the last)", choices=("early", "fixed"))
    tta_flip: bool = setting(False, "result", "image_training",
                             "test-time augmentation: mean of the image's and its left-right "
                             "flip's probabilities")
    tta_views: int = setting(0, "result", "image_training",
                             "test-time augmentation: also average the probabilities of this "
                             "many augmented views of each image (with cache_views, its first "
                             "cached views; else views drawn with a fixed seed)")
    sampler: str = setting("class_aware", "result", "neural",
                           "'class_aware' (each class drawn equally often) or 'shuffle' (every "
                           "training image once per epoch)", choices=("class_aware", "shuffle"))
    precision: str = setting("auto", "result", "neural",
                             "'auto' (bf16 autocast on CUDA, fp32 on a CPU, where bf16 "
                             "training was measured no faster), 'fp32' or 'bf16'",
                             choices=("auto", "fp32", "bf16"))
    probe_taps: tuple = setting(("head",), "result", "probe",
                                "features of the linear probe: 'head' (the last stage, pooled) "
                                "and/or feature-stage indices (phyllodes.train.probe)")
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


    def __post_init__(self) -> None:
        """Refuse a value outside a setting's choices (a typo would otherwise fall back to
        some default behaviour silently), naming the setting and what it accepts; refuse more
        test-time views than are cached (they would silently be fewer)."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"profile setting {f.name}={getattr(self, f.name)!r} is not "
                                 f"one of {list(choices)}; fix it in the notebook's parameters "
                                 "cell or the get_profile(...) call")
        for f in fields(self):
            v, kind = getattr(self, f.name), str(f.type)
            ok = (v is None and "None" in kind) or (
                isinstance(v, bool) if kind.startswith("bool") else
                isinstance(v, int) and not isinstance(v, bool) if kind.startswith("int") else
                isinstance(v, (int, float)) and not isinstance(v, bool)
                if kind.startswith("float") else
                isinstance(v, tuple) if kind.startswith("tuple") else
                isinstance(v, str) if kind.startswith("str") else True)
            if not ok:
                raise ValueError(f"profile setting {f.name}={v!r} is not of type {kind}; fix it "
                                 "in the notebook's parameters cell, --set or get_profile(...)")
        if self.tta_views < 0 or (self.cache_views and self.tta_views > self.cache_views):
            raise ValueError(f"profile setting tta_views={self.tta_views} must be between 0 "
                             f"and cache_views={self.cache_views} (the test-time views are "
                             "the cached ones): lower tta_views or raise cache_views")
        if self.cache_views and not self.frozen_stages:
            raise ValueError(f"profile setting cache_views={self.cache_views} needs "
                             "frozen_stages > 0 (the views cached are the frozen prefix's "
                             "output): set frozen_stages, or cache_views=0")


#: The image recipe of the quick profile (notebook 06 shows how it was chosen, on folds of
#: other seeds): EfficientNet-Lite at 128 px on a tight ROI crop (5% margin), stem and stages
#: 0-3 frozen and cached over 16 augmented views, stage 4 fine-tuned with BatchNorm at ImageNet
#: statistics, pooled stage-4 features, a linear head started as a logistic regression (LP-FT),
#: 8 epochs, test-time mean over the image, its flip and its 16 cached views.
RECIPE = dict(image_size=128, roi_margin=0.05, tap=4, frozen_stages=4, cache_views=16,
              frozen_bn=True, image_head="linear", lp_init=True, stopping="fixed", epochs=8,
              lr_encoder=3e-4, lr_head=3e-3, weight_decay=1e-2, warmup_epochs=1, tta_flip=True,
              tta_views=16, sampler="shuffle", aux_weight=1.0, probe_taps=(4,))

#: Notebook 06's ablation of the image recipe: each variant changes one thing of the recipe
#: (or, the last, takes the whole network as before it), on folds of another seed.
RECIPE_ABLATION: tuple[tuple[str, dict], ...] = (
    ("recipe", {}),
    ("BatchNorm statistics updated in training", {"frozen_bn": False}),
    ("no linear-probe initialisation of the head", {"lp_init": False}),
    ("ROI margin 0.15 (the earlier crop) instead of 0.05", {"roi_margin": 0.15}),
    ("no augmented-view test-time augmentation", {"tta_views": 0}),
    ("no flip test-time augmentation", {"tta_flip": False}),
    ("class-aware sampler instead of a shuffle", {"sampler": "class_aware"}),
    ("early stopping on inner-validation AUC", {"stopping": "early"}),
    ("whole network (last stage + conv head) instead of stage 4", {"tap": None}),
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", folds=2, encoder="efficientnet_lite0",
        encoders=("efficientnet_lite0", "resnet10t"), pretrained="none",
        fusion="late", fusions=("late", "concat"), clinical_branch="linear",
        # tap 3 / 3 frozen stages: stages both encoders have (ResNet has 4, EfficientNet 7)
        **{**RECIPE, "image_size": 64, "epochs": 2, "cache_views": 2, "tta_views": 2,
           "tap": 3, "frozen_stages": 3, "probe_taps": ("head",)},
        patience=2, batch_size=16, n_boot=200,
        clinical_epochs=20, clinical_hidden=8, head_hidden=16, cam_examples=1,
    ),
    "quick": Profile(
        name="quick", folds=5, encoder="efficientnet_lite0",
        encoders=("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
        pretrained="if_cached", fusion="late", fusions=("late", "concat", "gated"),
        clinical_branch="linear", **RECIPE, patience=6, batch_size=32, n_boot=1000,
        clinical_epochs=150,
    ),
    # the paper's protocol on a GPU: whole encoders fine-tuned end to end at 224 px (not
    # measured yet: no GPU was available); it keeps what helped on a CPU and should help there
    # too (the tight ROI crop, BatchNorm at ImageNet statistics, LP-FT of a linear head, flip
    # and augmented-view TTA)
    "paper": Profile(name="paper", roi_margin=0.05, frozen_bn=True, image_head="linear",
                     lp_init=True, tta_flip=True, tta_views=16),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    """The named profile with overrides applied; ``None`` overrides are ignored."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}'; choose one of {sorted(PROFILES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(Profile.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown profile setting(s) {sorted(unknown)}")
    for k in ("encoders", "fusions", "probe_taps"):
        if k in overrides and isinstance(overrides[k], (list, str)):
            v = overrides[k]
            overrides[k] = tuple([v] if isinstance(v, str) else v)
    return replace(PROFILES[name], **overrides)


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Profile)}


def parse_value(name: str, text: str) -> Any:
    """The value of setting ``name`` written as text (``--set NAME=VALUE``): converted by the
    setting's type (int, float, yes/no, text, ``none`` for an optional one, a comma-separated
    list for a tuple); the Profile then validates it."""
    types = _field_types()
    if name not in types:
        import difflib
        close = difflib.get_close_matches(name, types, n=3)
        raise ValueError(f"unknown profile setting '{name}'"
                         + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + "; the settings are listed in phyllodes/profiles.py")
    kind, raw = types[name], text.strip()
    if "None" in kind and raw.lower() in ("none", "null", ""):
        return None
    try:
        if kind.startswith("tuple"):
            items = [s.strip() for s in raw.split(",") if s.strip()]
            return tuple(int(s) if s.lstrip("-").isdigit() else s for s in items)
        if kind.startswith("bool"):
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"profile setting {name}={raw!r}: expected {kind}") from None
    return raw


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """``["image_size=64", "pretrained=none"]`` (repeated ``--set``) as a settings dict."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set image_size=64")
        name, value = item.split("=", 1)
        out[name.strip()] = parse_value(name.strip(), value)
    return out


def default_profile_name() -> str:
    """``paper`` when CUDA is available, else ``quick``."""
    try:
        import torch
        return "paper" if torch.cuda.is_available() else "quick"
    except ImportError:  # pragma: no cover
        return "quick"
