"""Explaining the image + clinical model: CAMs, their validation, and modality contributions.

Class activation maps come from ``pytorch-grad-cam`` unchanged (Score-CAM and Grad-CAM++);
this module only adapts :class:`~phyllodes.models.network.PhyllodesNet` to it:

* :class:`ImageBranchWrapper` makes the two-input network a one-input network (the subject's
  clinical vector held fixed) returning logits of shape (B, 1), so the CAM target is
  ``ClassifierOutputTarget(0)`` = the positive-class (borderline/malignant) logit.
* :func:`target_layers` / :func:`reshape_transform` pick the CAM layer per timm encoder family.
* :func:`compute_cams` returns (N, H, W) maps in [0, 1] at the input's size.

Map validation as numbers is in :mod:`phyllodes.evaluate.attribution` (energy inside the
lesion, pointing game); here: the model-randomisation sanity check of Adebayo et al. (2018)
(:func:`randomisation_check`), the modality contribution as exact two-player Shapley values
(:func:`modality_shapley`; their share: :mod:`phyllodes.evaluate.attribution`) with an independent
ablation estimate (:func:`modality_ablation_auc`), grouped permutation importance of clinical
features (:func:`permutation_importance_oof`). Their figures are in :mod:`phyllodes.report.figures`.

Conventions: images are float grayscale in [0, 1], shape (N, 1, H, W) (or (N, H, W)); clinical
vectors are the preprocessed (N, F) matrix the model was trained on; masks are boolean (N, H, W)
at the image size.
"""

from __future__ import annotations

import contextlib
import copy
import math
import types
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import special
from scipy import stats as sstats
from sklearn.metrics import roc_auc_score
from torch import nn

from phyllodes.explain.results import MapComparison
from phyllodes.models import families
from phyllodes.models.network import predict_logits

__all__ = [
    "ImageBranchWrapper",
    "target_layers",
    "reshape_transform",
    "map_agreement",
    "compute_cams",
    "randomise_encoder",
    "randomisation_check",
    "modality_shapley",
    "modality_ablation_auc",
    "permutation_importance_oof",
]

CAM_METHODS = ("scorecam", "gradcam++")
_RANDOMISE_SEED_OFFSET = 7_919_000  # see randomise_encoder

ArrayLike = np.ndarray | torch.Tensor | Sequence


# --------------------------------------------------------------------------- adapters


def _as_images(images: ArrayLike) -> torch.Tensor:
    """(N, 1, H, W) float32 tensor from (N, H, W) or (N, 1, H, W) arrays/tensors."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.detach().float()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def _as_clinical(clinical: ArrayLike | None, n: int | None = None) -> torch.Tensor | None:
    if clinical is None:
        return None
    c = torch.as_tensor(np.asarray(clinical) if not isinstance(clinical, torch.Tensor)
                        else clinical).detach().float()
    if c.ndim == 1:
        c = c[None]
    if n is not None and c.shape[0] not in (1, n):
        raise ValueError(f"clinical has {c.shape[0]} rows for {n} images")
    return c


def _image_encoder(model: nn.Module) -> nn.Module:
    """The timm encoder of a PhyllodesNet (or ``model`` itself when it is a bare timm model)."""
    if hasattr(model, "modality") and getattr(model, "encoder", None) is None:
        raise ValueError("this model has no image branch (clinical-only): no CAMs to compute")
    enc = getattr(model, "encoder", None)
    return enc if isinstance(enc, nn.Module) else model


class ImageBranchWrapper(nn.Module):
    """``forward(image) -> logits (B, 1)`` of ``model(image, clinical)`` with clinical held fixed.

    ``clinical``: one subject's vector (F,) / (1, F), broadcast to every image of the batch (what
    Score-CAM needs: it feeds many masked copies of one image), or a (B, F) matrix matched row by
    row with a batch of B images (Grad-CAM++ on several subjects at once). ``None`` for an
    image-only model. Column 0 of the output is the positive-class logit, so pytorch-grad-cam's
    ``ClassifierOutputTarget(0)`` targets it.
    """

    def __init__(self, model: nn.Module, clinical: ArrayLike | None = None):
        super().__init__()
        self.model = model
        self.clinical = _as_clinical(clinical)

    def set_clinical(self, clinical: ArrayLike | None) -> None:
        """Hold another clinical vector/matrix fixed (the CAM hooks stay in place)."""
        self.clinical = _as_clinical(clinical)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c = self.clinical
        if c is not None:
            b = image.shape[0]
            if c.shape[0] == 1:
                c = c.expand(b, -1)
            elif c.shape[0] != b:
                raise ValueError(f"held clinical matrix has {c.shape[0]} rows, batch has {b}")
            c = c.to(image.device)
        return self.model(image, c).reshape(-1, 1)


# --------------------------------------------------------------------------- target layers


def map_grid(model: nn.Module, image_size: int, layer: str | None = None) -> tuple[int, int]:
    """The resolution (h, w) of the CAMs of ``model`` at ``image_size``: the target layer's
    (``layer``, a module path in the image encoder; None: :func:`target_layers`) spatial size,
    before the maps are upsampled to the image."""
    module = target_layers(model, layer)[0]
    shape = {}
    def grab(_module, _inputs, out) -> None:  # returning None keeps the layer's output
        shape.setdefault("s", out.shape)
    hook = module.register_forward_hook(grab)
    try:
        dev = next(model.parameters()).device
        x = torch.zeros(1, 1, image_size, image_size, device=dev)
        with torch.no_grad():
            model.image_features(x) if hasattr(model, "image_features") else model(x)
    finally:
        hook.remove()
    s = shape["s"]
    return (int(s[-2]), int(s[-1])) if len(s) == 4 else (int(s[1]), int(s[2]))


#: the side a finer CAM must have at least (issue: maps of 16 x 16 or more)
FINE_MAP_SIDE = 16


def cam_layer_candidates(model: nn.Module, image_size: int, min_side: int = FINE_MAP_SIDE
                         ) -> list[tuple[str | None, tuple[int, int]]]:
    """The CAM layers to choose between, with their map grids: the family's (None) and, when
    its maps are smaller than ``min_side`` on a side, the output of the last stage whose maps
    are at least ``min_side`` x ``min_side`` (the same model, a finer map; convolutional
    families with a stage table only). The choice is made on other folds than those reported
    (:func:`phyllodes.explain.folds.choose_cam_layers`)."""
    enc = _image_encoder(model)
    out: list[tuple[str | None, tuple[int, int]]] = [(None, map_grid(model, image_size))]
    fam = families.family_of(enc)
    if fam is None or fam.layout is not None or not fam.has_stages \
            or min(out[0][1]) >= min_side:
        return out
    for stage in reversed(families.stages(enc)):  # those a tap kept
        path = stage[-1]
        grid = map_grid(model, image_size, path)
        if min(grid) >= min_side:
            out.append((path, grid))
            break
    return out


def target_layers(model: nn.Module, layer: str | None = None) -> list[nn.Module]:
    """The CAM target layer of the model's timm encoder: ``layer`` (a module path in the
    encoder, e.g. ``blocks.2``), or its family's entry in
    :data:`phyllodes.models.families.FAMILIES` (ResNet ``layer4[-1]``, DenseNet
    ``features.norm5``, EfficientNet ``bn2``, MobileNetV3 ``blocks[-1]``, ConvNeXt
    ``stages[-1]``, ViT ``blocks[-1].norm1``, Swin ``layers[-1]``; a tapped encoder's last kept
    stage). ViT and Swin need :func:`reshape_transform` as well.
    """
    enc = _image_encoder(model)
    if layer is not None:
        try:
            return [families.module_at(enc, layer)]
        except (AttributeError, IndexError):
            raise ValueError(f"encoder {type(enc).__name__} has no module '{layer}'; give a "
                             "module path of model.encoder (see named_modules())") from None
    try:
        return [families.cam_layer(enc)]
    except ValueError:
        raise ValueError(
            f"no CAM target layer known for encoder class {type(enc).__name__}; pass one by "
            "hand: compute_cams(model, images, clinical, layers=[model.encoder.<last spatial "
            "module>], reshape=<callable turning its output into (B, C, h, w)> or None for "
            "CNNs), or add its family to phyllodes.models.families.FAMILIES") from None


def layer_name(model: nn.Module, layer: str | None = None) -> str:
    """The module path in the image encoder of the CAM target layer (``layer``, or the
    family's when None), e.g. ``bn2``: how tables name it."""
    if layer is not None:
        return layer
    target = target_layers(model)[0]
    return next(n for n, m in _image_encoder(model).named_modules() if m is target)


def _vit_tokens_to_map(x: torch.Tensor, n_prefix: int, grid: tuple[int, int] | None
                       ) -> torch.Tensor:
    x = x[:, n_prefix:, :]
    n = x.shape[1]
    if grid is None or grid[0] * grid[1] != n:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"cannot reshape {n} patch tokens to a grid; give the image size")
        grid = (side, side)
    return x.reshape(x.shape[0], grid[0], grid[1], x.shape[2]).permute(0, 3, 1, 2)


def _nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def reshape_transform(model: nn.Module, image_size: tuple[int, int] | None = None
                      ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Token/NHWC -> (B, C, h, w) reshape for transformer encoders; ``None`` for CNNs.

    ViT: drops the class/register (prefix) tokens and reshapes the rest to the patch grid (from
    ``image_size`` when the encoder takes dynamic sizes, else its configured grid, else a square).
    Swin (timm >= 1.0 stages output (B, H, W, C)): permutes to channels-first.
    """
    enc = _image_encoder(model)
    fam = families.family_of(enc)
    layout = fam.layout if fam is not None else None
    if layout == "tokens":
        n_prefix = int(getattr(enc, "num_prefix_tokens", 1))
        grid = tuple(enc.patch_embed.grid_size) if getattr(enc.patch_embed, "grid_size", None) \
            else None
        if image_size is not None and hasattr(enc.patch_embed, "dynamic_feat_size"):
            grid = tuple(enc.patch_embed.dynamic_feat_size(tuple(image_size)))
        return lambda x: _vit_tokens_to_map(x, n_prefix, grid)
    if layout == "nhwc":
        return _nhwc_to_nchw
    return None


# --------------------------------------------------------------------------- CAMs


@contextlib.contextmanager
def _quiet_scorecam() -> Iterator[None]:
    """Silence Score-CAM's per-image tqdm progress bars (it has no switch for them)."""
    from pytorch_grad_cam import score_cam

    saved = score_cam.tqdm
    score_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, *a, **k: it)
    try:
        yield
    finally:
        score_cam.tqdm = saved


def compute_cams(model: nn.Module, images: ArrayLike, clinical: ArrayLike | None = None,
                 method: str = "scorecam", batch_size: int = 32,
                 layers: list[nn.Module] | None = None,
                 reshape: Callable[[torch.Tensor], torch.Tensor] | None | str = "auto",
                 layer: str | None = None) -> np.ndarray:
    """CAMs (N, H, W) in [0, 1] at the input size, target = the positive-class logit.

    ``method``: ``"scorecam"`` (pytorch_grad_cam.ScoreCAM, gradient-free, one forward pass per
    activation channel per image: ``batch_size`` masked copies go through the network at once,
    one subject at a time) or ``"gradcam++"`` (GradCAMPlusPlus, ``batch_size`` subjects per
    pass). ``layer``: the target layer as a module path in the image encoder (None: the
    family's, :func:`target_layers`); ``layers``/``reshape`` override
    :func:`target_layers`/:func:`reshape_transform` with modules.
    The model is evaluated in eval mode; its train/eval mode is restored afterwards and its
    parameter gradients are cleared (Grad-CAM++ back-propagates through it). Each map is
    min-max scaled to [0, 1] by pytorch-grad-cam (an all-zero map stays zero). Score-CAM cost:
    N x (channels of the target layer) forward passes.
    """
    from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {CAM_METHODS}, got '{method}'")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    x = _as_images(images)
    n, size = x.shape[0], (int(x.shape[-2]), int(x.shape[-1]))
    c = _as_clinical(clinical, n)
    if c is not None and c.shape[0] == 1 and n > 1:
        c = c.expand(n, -1)
    if layers is not None and layer is not None:
        raise ValueError("give the target layer as layer (a path) or layers (modules), not both")
    layers = target_layers(model, layer) if layers is None else list(layers)
    if isinstance(reshape, str):
        if reshape != "auto":
            raise ValueError("reshape must be 'auto', None or a callable")
        reshape = reshape_transform(model, image_size=size)
    device = next(model.parameters()).device
    was_training = model.training
    wrapper = ImageBranchWrapper(model)
    cam = None
    out: list[np.ndarray] = []
    try:
        model.eval()
        if method == "scorecam":
            cam = ScoreCAM(wrapper, layers, reshape_transform=reshape)
            cam.batch_size = batch_size
            with _quiet_scorecam(), torch.no_grad():
                for i in range(n):
                    wrapper.set_clinical(None if c is None else c[i:i + 1])
                    out.append(cam(x[i:i + 1].to(device), [ClassifierOutputTarget(0)]))
        else:
            cam = GradCAMPlusPlus(wrapper, layers, reshape_transform=reshape)
            cam.compute_input_gradient = True  # gradients exist even with a frozen encoder
            with torch.enable_grad():
                for s in range(0, n, batch_size):
                    xb = x[s:s + batch_size].to(device)
                    wrapper.set_clinical(None if c is None else c[s:s + batch_size])
                    out.append(cam(xb, [ClassifierOutputTarget(0)] * xb.shape[0]))
    finally:
        if cam is not None:
            cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    maps = np.concatenate(out, axis=0) if out else np.zeros((0, *size), np.float32)
    return np.clip(maps.astype(np.float32), 0.0, 1.0)


# --------------------------------------------------------------------------- randomisation


def randomise_encoder(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose image encoder has freshly initialised weights.

    Every encoder module with ``reset_parameters()`` is reset (BatchNorm also resets its running
    statistics); parameters held by modules without it (ViT position embeddings and class token,
    ConvNeXt layer scales, Swin relative-position tables) are redrawn from N(0, 0.02²). The
    fusion/classification head keeps its trained weights. Drawn from torch seed
    ``7_919_000 + seed`` in a forked RNG (the global RNG state is left unchanged).
    """
    rand = copy.deepcopy(model)
    enc = _image_encoder(rand)
    # an offset seed: re-seeding with the seed the model was built with would redraw its
    # initial weights exactly; fork_rng leaves the caller's global RNG state as it was
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(_RANDOMISE_SEED_OFFSET + seed)
        for m in enc.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
            else:
                for p in m.parameters(recurse=False):
                    nn.init.trunc_normal_(p, std=0.02)
    return rand


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sstats.spearmanr(a, b).statistic)


def randomisation_check(model: nn.Module, images: ArrayLike, clinical: ArrayLike | None = None,
                        method: str = "gradcam++", batch_size: int = 32, seed: int = 0,
                        **cam_kwargs) -> MapComparison:
    """Model-parameter randomisation test (Adebayo et al., 2018) for the image encoder.

    CAMs of the trained model are compared with those of :func:`randomise_encoder` (same head,
    re-initialised encoder) by the Spearman rank correlation of each pair of flattened maps.
    Low correlation means the maps depend on the learned weights; a high one that they reflect
    the architecture or the input (e.g. edges) rather than what the model learned.

    Returns the :class:`~phyllodes.explain.results.MapComparison` of the trained maps with the
    re-initialised encoder's (``cams_other``).
    """
    cams_t = compute_cams(model, images, clinical, method=method, batch_size=batch_size,
                          **cam_kwargs)
    rand = randomise_encoder(model, seed=seed)
    if "layers" in cam_kwargs:  # the same layers, looked up in the copy by name
        names = {id(m): n for n, m in model.named_modules()}
        lookup = dict(rand.named_modules())
        cam_kwargs = dict(cam_kwargs, layers=[lookup[names[id(m)]] for m in cam_kwargs["layers"]])
    cams_r = compute_cams(rand, images, clinical, method=method, batch_size=batch_size,
                          **cam_kwargs)
    return map_agreement(cams_t, cams_r)


def map_agreement(cams_a: np.ndarray, cams_b: np.ndarray) -> MapComparison:
    """How alike two sets of maps of the same images are: the Spearman rank correlation of
    each pair of flattened maps (NaN where a map is constant), its mean, median and mean
    absolute value over the pairs that have one, and how many have none."""
    rho = np.array([_spearman(a, b) for a, b in zip(cams_a, cams_b)])
    valid = rho[np.isfinite(rho)]
    nan = float("nan")
    return MapComparison(
        cams_trained=cams_a, cams_other=cams_b, spearman=rho,
        spearman_mean=float(valid.mean()) if valid.size else nan,
        spearman_median=float(np.median(valid)) if valid.size else nan,
        abs_spearman_mean=float(np.abs(valid).mean()) if valid.size else nan,
        n_constant=int((~np.isfinite(rho)).sum()))


# --------------------------------------------------------------------------- modality contribution


def _four_way_logits(model: nn.Module, images: ArrayLike, clinical: ArrayLike | None,
                     image_baseline: ArrayLike, clinical_baseline: ArrayLike | None,
                     batch_size: int
                     ) -> dict[str, np.ndarray]:
    """Logits with (image, clinical) each real or replaced by its baseline, per subject."""
    x = _as_images(images)
    n = x.shape[0]
    bi = _as_images(torch.as_tensor(np.asarray(image_baseline), dtype=torch.float32)
                    .reshape(1, -1, *x.shape[-2:]))
    if bi.shape[1:] != x.shape[1:]:
        raise ValueError(f"image baseline {tuple(bi.shape[1:])} does not match the images "
                         f"{tuple(x.shape[1:])}")
    bi = bi.expand(n, -1, -1, -1)
    c = bc = None  # an image-only model takes no clinical input
    if clinical is not None:
        c = _as_clinical(clinical, n).expand(n, -1)
        bc = _as_clinical(clinical_baseline).reshape(1, -1).expand(n, -1)
        if bc.shape[1] != c.shape[1]:
            raise ValueError(f"clinical baseline has {bc.shape[1]} columns, clinical {c.shape[1]}")
    inputs = {"full": (x, c), "no_image": (bi, c), "no_clinical": (x, bc), "baseline": (bi, bc)}
    return {k: predict_logits(model, xi, ci, batch_size).numpy().astype(float)
            for k, (xi, ci) in inputs.items()}


def modality_shapley(model: nn.Module, image: ArrayLike, clinical: ArrayLike | None,
                     image_baseline: ArrayLike, clinical_baseline: ArrayLike | None,
                     scale: str = "probability", batch_size: int = 64) -> pd.DataFrame:
    """Exact two-player Shapley values of the image and the clinical input, per subject.

    With f on the chosen ``scale`` (``"probability"``, recommended: the sigmoid of the logit,
    or ``"logit"``) and a missing modality replaced by its baseline B:

        phi_image    = ½[(f(I, C) − f(B_I, C)) + (f(I, B_C) − f(B_I, B_C))]
        phi_clinical = ½[(f(I, C) − f(I, B_C)) + (f(B_I, C) − f(B_I, B_C))]

    and phi_image + phi_clinical = f(I, C) − f(B_I, B_C) exactly (``clinical=None`` for an
    image-only model gives phi_clinical = 0). Baselines: the training
    fold's mean image (H, W) and mean clinical vector (F,) after preprocessing (for standardised
    continuous columns about 0, for indicator columns the training prevalences), so a subject
    is compared with the "average" training input of that fold.

    Returns a DataFrame (one row per subject) with ``f_full``, ``f_no_image``,
    ``f_no_clinical``, ``f_baseline``, ``phi_image``, ``phi_clinical``.
    """
    if scale not in ("probability", "logit"):
        raise ValueError("scale must be 'probability' or 'logit'")
    z = _four_way_logits(model, image, clinical, image_baseline, clinical_baseline, batch_size)
    f = {k: special.expit(v) if scale == "probability" else v for k, v in z.items()}
    phi_img = 0.5 * ((f["full"] - f["no_image"]) + (f["no_clinical"] - f["baseline"]))
    phi_clin = 0.5 * ((f["full"] - f["no_clinical"]) + (f["no_image"] - f["baseline"]))
    return pd.DataFrame({"f_full": f["full"], "f_no_image": f["no_image"],
                         "f_no_clinical": f["no_clinical"], "f_baseline": f["baseline"],
                         "phi_image": phi_img, "phi_clinical": phi_clin})






def modality_ablation_auc(model: nn.Module, images: ArrayLike, clinical: ArrayLike | None,
                          y: ArrayLike, image_baseline: ArrayLike,
                          clinical_baseline: ArrayLike | None,
                          batch_size: int = 64) -> dict:
    """AUC with both inputs, with the image replaced by its baseline, and with clinical replaced.

    Returns ``auc_both``, ``auc_no_image``, ``auc_no_clinical``, the drops ``drop_image`` =
    auc_both − auc_no_image and ``drop_clinical``, and ``image_share`` = drop_image /
    (drop_image + drop_clinical). That share is an independent, cruder estimate than the
    Shapley one: it can be unstable (small denominators), fall outside [0, 1] when a drop is
    negative, and is NaN when the denominator is ≤ 0. With a modality at its baseline every
    subject gets the same value for it, so a one-input model without signal scores AUC 0.5.
    """
    z = _four_way_logits(model, images, clinical, image_baseline, clinical_baseline, batch_size)
    y = np.asarray(y).astype(int).ravel()
    auc = {k: float(roc_auc_score(y, z[k])) for k in ("full", "no_image", "no_clinical")}
    d_img, d_clin = auc["full"] - auc["no_image"], auc["full"] - auc["no_clinical"]
    den = d_img + d_clin
    return {"auc_both": auc["full"], "auc_no_image": auc["no_image"],
            "auc_no_clinical": auc["no_clinical"], "drop_image": d_img, "drop_clinical": d_clin,
            "image_share": float(d_img / den) if den > 0 else float("nan")}


# --------------------------------------------------------------------------- clinical features


def permutation_importance_oof(predict_fn: Callable[[np.ndarray], np.ndarray], X_clin: ArrayLike,
                               y: ArrayLike, feature_groups: Mapping[str, Sequence[int]],
                               n_repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """Grouped permutation importance: AUC drop when a feature's columns are permuted together.

    ``predict_fn`` maps a clinical matrix (N, F) to positive-class probabilities (the caller
    closes over the images and, for out-of-fold use, applies each fold's model to its own test
    rows). All columns of a group (e.g. a one-hot block, or a value and its missing indicator)
    get the same row permutation. Returns one row per feature, sorted by ``auc_drop_mean``:
    ``feature``, ``n_columns``, ``auc_drop_mean``, ``auc_drop_sd`` (ddof=1 over repeats),
    ``baseline_auc``.
    """
    X = np.asarray(X_clin, dtype=float)
    y = np.asarray(y).astype(int).ravel()
    base = float(roc_auc_score(y, np.asarray(predict_fn(X)).ravel()))
    rng = np.random.default_rng(seed)
    rows = []
    for name, cols in feature_groups.items():
        cols = list(cols)
        drops = []
        for _ in range(n_repeats):
            Xp = X.copy()
            Xp[:, cols] = X[rng.permutation(X.shape[0])][:, cols]
            drops.append(base - float(roc_auc_score(y, np.asarray(predict_fn(Xp)).ravel())))
        drops = np.asarray(drops)
        rows.append({"feature": name, "n_columns": len(cols), "auc_drop_mean": drops.mean(),
                     "auc_drop_sd": drops.std(ddof=1) if drops.size > 1 else np.nan,
                     "baseline_auc": base})
    return (pd.DataFrame(rows).sort_values("auc_drop_mean", ascending=False)
            .reset_index(drop=True))


# --------------------------------------------------------------------------- faithfulness


#: Fractions of the image's pixels removed along a deletion curve (:func:`deletion_scores`).
DELETION_FRACTIONS = (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)


def centre_prior(height: int, width: int) -> np.ndarray:
    """A map without model information: a Gaussian centred on the image (sigma a quarter of
    each side). The study's images are crops around the lesion, so 'the centre' is a strong
    guess of where the lesion is."""
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    return np.exp(-(((yy - (height - 1) / 2) / (height / 4)) ** 2
                    + ((xx - (width - 1) / 2) / (width / 4)) ** 2) / 2)


def deletion_scores(model: nn.Module, images: ArrayLike, clinical: ArrayLike | None,
                    maps: np.ndarray, baseline: np.ndarray,
                    fractions: Sequence[float] = DELETION_FRACTIONS,
                    most_relevant_first: bool = True, batch_size: int = 64, seed: int = 0
                    ) -> np.ndarray:
    """Deletion curves (N, F): the model's score for the class it predicts on the intact image
    (its probability p when p >= 0.5, else 1 - p) as the ``fractions`` of the pixels are
    replaced by ``baseline`` (H, W; e.g. the training fold's mean image), in the order of
    ``maps`` (N, H, W): most relevant first (MoRF), or least relevant first. Ties in a map are
    broken by a seeded random order (a flat map removes pixels at random). The clinical input
    stays as it is. Cost: N x (F - 1) forward passes."""
    x = _as_images(images)
    n, _, h, w = x.shape
    maps = np.asarray(maps, dtype=float).reshape(n, h * w)
    if maps.shape[0] != n or np.asarray(baseline).shape != (h, w):
        raise ValueError(f"maps {maps.shape} and baseline {np.asarray(baseline).shape} must "
                         f"match images {tuple(x.shape)}")
    c = None if clinical is None else _as_clinical(clinical, n)
    jitter = np.random.default_rng(seed).random((n, h * w))
    key = -maps if most_relevant_first else maps
    order = np.lexsort((jitter, key), axis=-1)       # by relevance, ties at random
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=-1)
    rank_t = torch.as_tensor(rank.reshape(n, 1, h, w))
    base = torch.as_tensor(np.asarray(baseline, dtype=np.float32))[None, None]
    p0 = predict_proba_float(model, x, c, batch_size)
    positive = p0 >= 0.5
    out = np.empty((n, len(fractions)), dtype=float)
    for j, f in enumerate(fractions):
        k = int(round(f * h * w))
        p = p0 if k == 0 else predict_proba_float(
            model, torch.where(rank_t < k, base, x), c, batch_size)
        out[:, j] = np.where(positive, p, 1 - p)
    return out


def predict_proba_float(model: nn.Module, x: torch.Tensor, c: torch.Tensor | None,
                        batch_size: int) -> np.ndarray:
    """Probabilities of float images in [0, 1] (:func:`predict_logits`), as float64."""
    return torch.sigmoid(predict_logits(model, x, c, batch_size)).double().numpy()
