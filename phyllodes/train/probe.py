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
stage ``k`` of the encoder's family (:mod:`phyllodes.models.families`; EfficientNet's
``blocks[k]``: the quick profile's probe uses stage 4, the stage its fine-tuned image branch
ends with).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from phyllodes.data.images import ImageSet
from phyllodes.data.splits import subject_weights
from phyllodes.evaluate.metrics import subject_auc
from phyllodes.models import families

#: seed of a random-init probe encoder (``pretrained`` off)
PROBE_INIT_SEED = 0
#: inverse regularisation strengths tried on inner validation
C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 11))


def _stage_modules(encoder: torch.nn.Module, taps) -> dict:
    out = {}
    for t in taps:
        if t == "head":
            continue
        if not families.stages(encoder):
            raise ValueError(f"{type(encoder).__name__} has no stage table to tap "
                             "(phyllodes.models.families): use probe_taps=('head',)")
        out[t] = families.stage_output_module(encoder, int(t))
    return out


@torch.inference_mode()
def pooled_features(net, images: torch.Tensor, taps=("head",), batch_size: int = 16,
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


def cohort_features(net, image_set: ImageSet, key: tuple, taps=("head",),
                    memory: dict | None = None) -> np.ndarray:
    """:func:`pooled_features` of every image of the cohort, kept in ``memory`` (a dict the
    caller owns, a study's) by ``key`` (encoder, weights, image cache key, taps): computed once,
    shared by every fold."""
    memory = {} if memory is None else memory
    full = ("probe_features", *key, tuple(taps))
    if full not in memory:
        memory[full] = pooled_features(net, image_set.images, taps)
    return memory[full]


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


def lp_weights(x: np.ndarray, y: np.ndarray, subjects: np.ndarray, seed: int,
               c_grid=C_GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """LP of LP-FT (:class:`phyllodes.train.trainer.Trainer`): standardisation (mean, SD) and a
    logistic regression on it, its C chosen by stratified 5-fold cross-validation by subject
    (AUC) on these training rows only; each subject weighs 1. Returns (mean, sd, coef,
    intercept, C). (The probe baseline, :func:`fit_probe`, chooses its C on the
    inner-validation subjects instead: it has them, the LP of a run must not use them.)"""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    mu, sd = x.mean(0), x.std(0) + 1e-6
    n_class = int(np.bincount(y.astype(int), minlength=2).min())
    folds = max(2, min(5, n_class))
    cv = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
        x, y, groups=subjects))
    lr = LogisticRegressionCV(Cs=list(c_grid), cv=cv, scoring="roc_auc", max_iter=5000,
                              l1_ratios=(0,), use_legacy_attributes=False)
    lr.fit((x - mu) / sd, y, sample_weight=subject_weights(subjects))
    return mu, sd, lr.coef_[0], float(lr.intercept_[0]), float(np.ravel(lr.C_)[0])


def probe_features(cohort, encoder: str, image_set: ImageSet, image_size: int, taps,
                   pretrained: bool, encoder_weights: str | None, device: str = "cpu",
                   memory: dict | None = None) -> np.ndarray:
    """The probe's frozen features of every image of ``cohort`` (:func:`cohort_features`
    through the pretrained ``encoder``): the one builder, for a fold and for a cohort a fitted
    probe is applied to (:mod:`phyllodes.train.apply`)."""
    from phyllodes.models.network import PhyllodesNet
    stages = [int(t) for t in taps if t != "head"]
    # a random-init encoder (pretrained=False) is drawn from a fixed seed, so that a fitted
    # probe applied to another cohort sees the same features it was fit on
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_INIT_SEED)
        net = PhyllodesNet("image", encoder=encoder, pretrained=pretrained,
                           encoder_weights=encoder_weights, img_size=image_size,
                           tap=None if "head" in taps or not stages else max(stages)).to(device)
    return cohort_features(net, image_set, (encoder, encoder_weights, image_set.key, pretrained),
                           tuple(taps), memory)


def fold_probe(cohort, rows: dict[str, np.ndarray], encoder: str, image_set: ImageSet,
               image_size: int, taps, pretrained: bool, encoder_weights: str | None,
               device: str = "cpu", memory: dict | None = None
               ) -> tuple[dict[str, np.ndarray], dict]:
    """One fold of the linear probe: probabilities of the ``val`` and ``test`` rows (a final
    model's empty test set gives none), and what was chosen (C, the search, the taps, the
    fitted pipeline)."""
    x = probe_features(cohort, encoder, image_set, image_size, taps, pretrained,
                       encoder_weights, device, memory)
    y = cohort.images["y"].to_numpy()
    subjects = cohort.images["subject_id"].to_numpy()
    clf, c, history = fit_probe(x, y, subjects, rows)
    probs = {s: clf.predict_proba(x[rows[s]])[:, 1] if len(rows[s]) else np.zeros(0)
             for s in ("val", "test")}
    return probs, {"model": clf, "C": c, "history": history, "taps": list(taps)}
