"""The frozen-feature baseline: "image · linear probe".

An ImageNet encoder used as it is (frozen, eval mode): every image's pooled features — the last
stage's and, with ``taps``, those of earlier stages — averaged over the image and its
left-right flip, are computed once per cohort, encoder and image setting (they do not depend
on the fold: nothing is fit). Per fold, a standardised logistic regression is fit on the
inner-training subjects' images (each subject weighing 1), its regularisation chosen on the
inner-validation subjects (subject-level AUC), and it predicts the inner-validation and test
subjects, like every other run. Any fine-tuned image or multimodal model is tested against it:
fine-tuning that loses to its own frozen features is a recipe defect.

Taps: ``"head"`` is the encoder's final pooled output; an integer ``k`` is the pooled output of
stage ``k`` of an EfficientNet (``encoder.blocks[k]``; the quick profile's probe uses stage 4,
the stage its fine-tuned image branch ends with).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .images import ImageSet
from .metrics import subject_auc
from .splits import subject_weights

PREFIX = "probe_"
#: inverse regularisation strengths tried on inner validation
C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 11))
_FEATURES: dict[tuple, np.ndarray] = {}


def is_probe(model: str) -> bool:
    return model.startswith(PREFIX)


def probe_name(encoder: str) -> str:
    """The model name of the linear probe of ``encoder`` (e.g. ``probe_efficientnet_lite0``)."""
    return PREFIX + encoder


def encoder_of(model: str) -> str:
    return model[len(PREFIX):] if is_probe(model) else model


def _stage_modules(encoder: torch.nn.Module, taps) -> dict:
    blocks = getattr(encoder, "blocks", None)
    out = {}
    for t in taps:
        if t == "head":
            continue
        if blocks is None:
            raise ValueError(f"{type(encoder).__name__} has no stages to tap: use taps=('head',)")
        out[t] = blocks[int(t)]
    return out


@torch.inference_mode()
def pooled_features(net, images: torch.Tensor, taps=("head",), batch_size: int = 64,
                    flip: bool = True) -> np.ndarray:
    """Pooled features (N, D) of uint8 images (N, 1, S, S) through ``net`` (a PhyllodesNet with
    an image branch, in eval mode), the taps side by side, averaged over a left-right flip."""
    net.eval()
    enc = net.encoder
    hooks, grabbed = [], {}
    for t, module in _stage_modules(enc, taps).items():
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, t=t: grabbed.__setitem__(t, out.float().mean((2, 3)))))
    dev = next(net.parameters()).device
    parts = []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(dev).float().div_(255.0)
            views = [x, x.flip(-1)] if flip else [x]
            acc = None
            for v in views:
                head = net.image_features(v).float()
                feats = torch.cat([grabbed[t] if t != "head" else head for t in taps], dim=1)
                acc = feats if acc is None else acc + feats
            parts.append((acc / len(views)).cpu())
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(parts).numpy().astype(np.float64)


def cohort_features(net, image_set: ImageSet, key: tuple, taps=("head",)) -> np.ndarray:
    """:func:`pooled_features` of every image of the cohort, memoised by ``key`` (encoder,
    weights, image cache key, taps): computed once, shared by every fold."""
    full = (*key, tuple(taps))
    if full not in _FEATURES:
        _FEATURES[full] = pooled_features(net, image_set.images, taps)
    return _FEATURES[full]


def fit_probe(x: np.ndarray, y: np.ndarray, subjects: np.ndarray, rows: dict[str, np.ndarray],
              c_grid=C_GRID) -> tuple[object, float, list[dict]]:
    """A standardised logistic regression fit on the ``train`` rows (each subject weighs 1),
    its C chosen by the subject-level AUC of the ``val`` rows (ties: the smaller C). Returns
    the fitted pipeline, the C and the history of the search."""
    tr, va = rows["train"], rows["val"]
    w = subject_weights(subjects[tr])
    best, history = None, []
    for c in c_grid:
        clf = make_pipeline(StandardScaler(), LogisticRegression(
            C=c, class_weight="balanced", max_iter=5000))
        clf.fit(x[tr], y[tr], logisticregression__sample_weight=w)
        auc = subject_auc(subjects[va], y[va], clf.predict_proba(x[va])[:, 1])
        history.append({"C": c, "val_auc": auc})
        if best is None or auc > best[0] + 1e-12:
            best = (auc, c, clf)
    return best[2], best[1], history


def fold_probe(cohort, rows: dict[str, np.ndarray], encoder: str, image_set: ImageSet,
               image_size: int, taps, pretrained: bool, encoder_weights: str | None,
               device: str = "cpu") -> tuple[dict[str, np.ndarray], dict]:
    """One fold of the linear probe: probabilities of the ``val`` and ``test`` rows, and what
    was chosen (C, the search, the taps, the fitted pipeline)."""
    from .models import PhyllodesNet
    stages = [int(t) for t in taps if t != "head"]
    net = PhyllodesNet("image", encoder=encoder, pretrained=pretrained,
                       encoder_weights=encoder_weights, img_size=image_size,
                       tap=None if "head" in taps or not stages else max(stages)).to(device)
    x = cohort_features(net, image_set, (encoder, encoder_weights, image_set.key, pretrained),
                        tuple(taps))
    y = cohort.images["y"].to_numpy()
    subjects = cohort.images["subject_id"].to_numpy()
    clf, c, history = fit_probe(x, y, subjects, rows)
    probs = {s: clf.predict_proba(x[rows[s]])[:, 1] for s in ("val", "test")}
    return probs, {"model": clf, "C": c, "history": history, "taps": list(taps)}
