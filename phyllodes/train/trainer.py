"""Train one model on one outer fold and predict its inner-validation and test subjects.

Protocol of every run (no leakage by construction):

1. The outer fold's test subjects are set aside; the remaining training subjects are split,
   stratified and by subject, into inner-training and inner-validation subjects
   (:func:`phyllodes.data.splits.inner_split`).
2. The clinical preprocessor is fit on the inner-training subjects only.
3. Image networks with ``lp_init`` (LP-FT): the linear image head and its feature
   standardisation start as a logistic regression on the frozen pretrained features of the
   inner-training images, its C chosen by cross-validation by subject inside them; with late
   fusion and a linear clinical branch, the clinical head starts as a logistic regression on
   the clinical vectors and stays as it is.
4. Each epoch draws the inner-training images: once each, shuffled (``sampler='shuffle'``), or
   class-aware (as many draws as images, with replacement, weight 1 / images of the class).
   With ``cache_views`` an image's input is one of its K cached augmented views of the frozen
   prefix (:mod:`phyllodes.train.views`); else the image, augmented on the fly.
5. AdamW with one learning rate for the encoder and another for the clinical branch and heads;
   linear warm-up then cosine decay, stepped per batch.
6. ``stopping='fixed'``: every epoch is trained and the last weights kept; ``'early'``: the
   subject-level AUC on the inner-validation subjects (predicted from the image and its flip,
   without the ``tta_views``) decides early stopping (``patience``) and which epoch's weights
   are kept (the clinical MLP always stops early).
7. The kept model predicts the inner-validation subjects (for thresholds and recalibration
   chosen later) and, once, the test subjects: the mean probability over the image, its
   left-right flip (``tta_flip``) and K augmented views (``tta_views``; the cached views, or
   views drawn with the fixed ``TTA_SEED``). The augmentation is label-free and fit on nothing.

Images are decoded once per run set (:mod:`phyllodes.data.images`) and live on the device as uint8;
batches are sliced from that tensor (or from the view cache) as one tensor — no per-sample
Python in the loop. bf16 autocast on CUDA. Seeded: on the CPU the same seed gives the same
predictions.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler

from phyllodes import kernels
from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.data.cohort import Cohort
from phyllodes.data.images import augment, fixed_view, pixel_digests, to_float
from phyllodes.data.splits import fold_subjects, inner_split, subject_weights
from phyllodes.evaluate.metrics import subject_auc
from phyllodes.models.encoders import resolve_pretrained
from phyllodes.models.network import PhyllodesNet, predict_proba
from phyllodes.profiles import Profile
from phyllodes.progress import bars_wanted, emit
from phyllodes.study import Study
from phyllodes.train.probe import fold_probe, lp_weights
from phyllodes.train.spec import CLASSICAL, FINAL_FOLD, RunOutput, RunSpec, run_seed
from phyllodes.train.views import view_cache

#: seed of the augmented test-time views drawn on the fly (``tta_views`` without a cache)
TTA_SEED = 2024


def fold_partition(cohort: Cohort, splits: pd.DataFrame, fold: int, val_fraction: float,
                   seed: int) -> dict[str, np.ndarray]:
    """Subject ids of the fold's inner-training, inner-validation and test sets (the final
    model, ``fold`` = :data:`~phyllodes.train.spec.FINAL_FOLD`: every subject trains, none
    is a test subject)."""
    if fold == FINAL_FOLD:
        train_ids, test_ids = cohort.subjects["subject_id"].to_numpy(), np.array([], dtype=object)
    else:
        train_ids, test_ids = fold_subjects(splits, fold)
    subj = cohort.subjects.set_index("subject_id").loc[train_ids].reset_index()
    tr, va = inner_split(subj, val_fraction, seed=seed)
    return {"train": np.asarray(tr), "val": np.asarray(va), "test": np.asarray(test_ids)}


def _rows(cohort: Cohort, ids) -> np.ndarray:
    return np.flatnonzero(cohort.images["subject_id"].isin(set(ids)).to_numpy())


def _predictions(cohort: Cohort, rows: np.ndarray, prob: np.ndarray, split: str,
                 fold: int) -> pd.DataFrame:
    imgs = cohort.images.iloc[rows]
    return pd.DataFrame({"subject_id": imgs["subject_id"].to_numpy(),
                         "image_path": imgs["image_path"].to_numpy(),
                         "fold": fold, "split": split, "y": imgs["y"].to_numpy(),
                         "prob": prob.astype(float)})


def class_aware_sampler(y_train: np.ndarray, seed: int) -> WeightedRandomSampler:
    """Sampler drawing len(y) indices with weight 1 / count(class of index)."""
    counts = np.bincount(y_train.astype(int), minlength=2).astype(float)
    weights = 1.0 / counts[y_train.astype(int)]
    g = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                 num_samples=len(y_train), replacement=True, generator=g)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LambdaLR factor: linear warm-up to 1, then cosine decay to 0."""
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def train_classical(cohort: Cohort, parts: dict, spec: RunSpec) -> RunOutput:
    """Logistic regression, random forest or gradient boosting on the clinical features."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils.class_weight import compute_sample_weight

    t0 = time.perf_counter()
    enc = ClinicalEncoder(cohort).fit(parts["train"])
    if enc.width == 0:
        raise ValueError(f"cohort '{cohort.name}' has no clinical features: a clinical model "
                         "has nothing to learn from (the study runs image-only)")
    rows = _rows(cohort, parts["train"])
    train = cohort.images.iloc[rows]
    x_tr, y_tr = enc.transform_images(train), train["y"].to_numpy()
    # one image row per image; each subject weighs 1 in total, however many images it has
    w_subject = subject_weights(train["subject_id"])
    seed = run_seed(spec)
    if spec.model == "logreg":
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
    elif spec.model == "random_forest":
        clf = RandomForestClassifier(n_estimators=300, min_samples_leaf=2,
                                     class_weight="balanced", random_state=seed, n_jobs=1)
    elif spec.model == "gradient_boosting":
        clf = GradientBoostingClassifier(n_estimators=150, max_depth=2, learning_rate=0.05,
                                         subsample=0.8, random_state=seed)
    else:
        raise ValueError(f"unknown clinical model '{spec.model}'; use mlp or one of {CLASSICAL}")
    w = w_subject * (compute_sample_weight("balanced", y_tr)
                     if spec.model == "gradient_boosting" else 1.0)
    clf.fit(x_tr, y_tr, sample_weight=w)
    preds = []
    for split in ("val", "test"):
        rows = _rows(cohort, parts[split])
        x = enc.transform_images(cohort.images.iloc[rows])
        prob = clf.predict_proba(x)[:, 1] if len(rows) else np.zeros(0)
        preds.append(_predictions(cohort, rows, prob, split, spec.fold))
    return RunOutput(pd.concat(preds, ignore_index=True), seconds=time.perf_counter() - t0,
                     extra={"sklearn_model": clf, "clinical_encoder": enc})


def train_probe(study: Study, parts: dict, spec: RunSpec,
                encoder_weights: str | None = None) -> RunOutput:
    """The frozen-encoder linear probe of ``spec.encoder`` on one fold (phyllodes.train.probe)."""
    t0 = time.perf_counter()
    cohort, profile = study.cohort, study.profile
    rows = {k: _rows(cohort, v) for k, v in parts.items()}
    probs, info = fold_probe(cohort, rows, spec.encoder, study.images(), profile.image_size,
                             profile.probe_taps, uses_pretrained(spec, profile),
                             encoder_weights, study.device, memory=study.memory)
    preds = [_predictions(cohort, rows[s], probs[s], s, spec.fold) for s in ("val", "test")]
    history = [{"epoch": i, **h} for i, h in enumerate(info["history"])]
    best = int(np.argmax([h["val_auc"] for h in info["history"]]))
    return RunOutput(pd.concat(preds, ignore_index=True), history, None, best,
                     time.perf_counter() - t0,
                     extra={"sklearn_model": info["model"], "clinical_encoder": None,
                            "probe_C": info["C"], "probe_taps": info["taps"]})


def uses_pretrained(spec: RunSpec, profile: Profile) -> bool:
    """Whether this run's encoder starts from ImageNet weights (see models.resolve_pretrained)."""
    return spec.uses_images and resolve_pretrained(spec.encoder, profile.pretrained)


def build_model(spec: RunSpec, settings: Mapping[str, Any], n_clinical: int, pretrained: bool,
                encoder_weights: str | None = None) -> PhyllodesNet:
    """The network of a run: the one builder, for training (``settings`` = the profile) and
    for reloading a finished run (its recorded settings, ``pretrained=False``)."""
    return PhyllodesNet.from_settings(spec.modality, spec.model if spec.uses_images else None,
                                      spec.fusion, n_clinical, settings, pretrained,
                                      encoder_weights)


def autocast_dtype(profile: Profile, device: str) -> torch.dtype | None:
    """The training precision: bf16 autocast on CUDA ('auto' or 'bf16'), on a CPU only when
    asked ('bf16'; 'auto' keeps fp32 there: bf16 training steps were measured no faster on the
    CPUs this was built on, see README "Performance")."""
    if profile.precision == "fp32":
        return None
    if profile.precision == "bf16" or device.startswith("cuda"):
        return torch.bfloat16
    return None


class Trainer:
    """One run's model, optimiser, schedule, sampler and device tensors.

    :meth:`epoch` is the training hot path (also what :mod:`phyllodes.ops.bench` measures): it
    draws the epoch's sample once, then per batch either slices the uint8 images on the device
    and augments them as one tensor (end to end), or gathers one cached augmented view of the
    frozen prefix per image (``cache_views``, :mod:`phyllodes.train.views`), and steps the model.
    """

    def __init__(self, study: Study, parts: dict, spec: RunSpec,
                 encoder_weights: str | None = None):
        cohort, profile, device = study.cohort, study.profile, study.device
        image_set = study.images() if spec.uses_images else None
        self.spec, self.profile, self.device = spec, profile, device
        self.seed = seed = run_seed(spec)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        if profile.num_threads:
            torch.set_num_threads(profile.num_threads)
        self.cohort = cohort
        self.encoder = ClinicalEncoder(cohort).fit(parts["train"])
        self.x_clin = torch.as_tensor(self.encoder.transform_images(cohort.images), device=device)
        self.y_all = torch.tensor(cohort.images["y"].to_numpy(copy=True), dtype=torch.float32,
                                  device=device)
        self.uses_images = spec.uses_images
        self.x_img = None
        if self.uses_images:
            if image_set is None:
                raise ValueError(f"a {spec.modality} run needs the cohort's images")
            self.x_img = image_set.images.to(device)
            if device.startswith("cuda"):
                self.x_img = self.x_img.contiguous(memory_format=torch.channels_last)
        model = build_model(spec, profile.to_dict(), self.x_clin.shape[1],
                            uses_pretrained(spec, profile), encoder_weights).to_run_layout(device)
        self.model = model
        self.cached = bool(self.uses_images and profile.cache_views and model.prefix_stages)
        self.amp = autocast_dtype(profile, device)
        self.views = (view_cache(model, image_set, profile.cache_views, device,
                                 self.amp or torch.float32, memory=study.memory,
                                 cache_dir=study.cache_dir) if self.cached else None)
        self.rows = {k: torch.as_tensor(_rows(cohort, v), device=device) for k, v in parts.items()}
        y_train = cohort.images["y"].to_numpy()[self.rows["train"].cpu().numpy()]
        self.sampler = class_aware_sampler(y_train, seed)
        self.lp = self.lp_init() if (self.uses_images and profile.lp_init) else {}
        # the compiled module shares the parameters; state_dict() stays that of ``model``
        if profile.compile and profile.frozen_bn and self.uses_images:
            raise ValueError("compile=True is not supported with frozen_bn=True: the compiled "
                             "forward trained other weights than the eager one in the tests; "
                             "set compile=False (the default) or frozen_bn=False")
        if profile.compile:
            kernels.pin_compiler()
        self.forward = torch.compile(model.forward_parts) if profile.compile else \
            model.forward_parts
        is_clin = not spec.uses_images
        self.epochs = profile.clinical_epochs if is_clin else profile.epochs
        self.patience = max(profile.patience, self.epochs // 5) if is_clin else profile.patience
        self.fixed = profile.stopping == "fixed" and not is_clin
        self.batch_size = profile.batch_size
        self.steps_per_epoch = max(1, len(y_train) // self.batch_size)  # drop last partial batch
        groups = [{"params": model.head_parameters(), "lr": profile.lr_head}]
        if model.encoder is not None:
            groups.append({"params": model.encoder_parameters(), "lr": profile.lr_encoder})
        self.opt = torch.optim.AdamW(groups, weight_decay=profile.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, warmup_cosine(self.epochs * self.steps_per_epoch,
                                    profile.warmup_epochs * self.steps_per_epoch))
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.aux_weight = profile.aux_weight if spec.modality == "multimodal" else 0.0

    @torch.no_grad()
    def frozen_features(self, rows: torch.Tensor) -> np.ndarray:
        """Pretrained image features of ``rows`` (the clean image averaged with its flip)."""
        self.model.eval()
        if self.cached:
            f = [self.model.features_from_prefix(self.views[k][rows].float().contiguous(
                memory_format=torch.channels_last)) for k in ("clean", "flip")]
        else:
            x = to_float(self.x_img[rows])
            f = [self.model.image_features(v) for v in (x, x.flip(-1))]
        return ((f[0] + f[1]) / 2).float().cpu().numpy()

    @torch.no_grad()
    def lp_init(self) -> dict:
        """LP of LP-FT on the inner-training rows: the image features' standardisation and the
        linear image head from a logistic regression on the frozen features; with a linear
        clinical branch and late fusion, the clinical head from a logistic regression (C=1)
        on the clinical vectors, kept frozen. Returns what was chosen."""
        m, rows = self.model, self.rows["train"]
        r = rows.cpu().numpy()
        y = self.cohort.images["y"].to_numpy()[r].astype(int)
        subjects = self.cohort.images["subject_id"].to_numpy()[r]
        mu, sd, coef, intercept, c = lp_weights(self.frozen_features(rows), y, subjects,
                                                self.seed)
        m.feat_mu.copy_(torch.as_tensor(mu, dtype=torch.float32))
        m.feat_sd.copy_(torch.as_tensor(sd, dtype=torch.float32))
        head = m.image_head_layer()
        head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32)[None])
        head.bias.fill_(intercept)
        out = {"lp_C": c}
        if m.modality == "multimodal" and m.fusion == "late" and \
                isinstance(m.clinical, torch.nn.Identity):
            from sklearn.linear_model import LogisticRegression
            xc = self.x_clin[rows].cpu().numpy()
            lr = LogisticRegression(C=1.0, max_iter=5000).fit(
                xc, y, sample_weight=subject_weights(subjects))
            m.clinical_head.weight.copy_(torch.as_tensor(lr.coef_[0], dtype=torch.float32)[None])
            m.clinical_head.bias.fill_(float(lr.intercept_[0]))
            for p in m.clinical_head.parameters():
                p.requires_grad_(False)
        return out

    def batch(self, b: torch.Tensor) -> torch.Tensor | None:
        """The image input of rows ``b``: augmented floats in [0, 1], or one cached augmented
        view of the frozen prefix per row (None for clinical-only)."""
        if not self.uses_images:
            return None
        if self.cached:
            k = self.views["views"].shape[0]
            v = torch.randint(0, k, (len(b),), device=self.device, generator=self.gen)
            return self.views["views"][v, b].float().contiguous(memory_format=torch.channels_last)
        xb = to_float(self.x_img[b])
        return augment(xb, self.gen) if self.profile.augment else xb

    def step(self, xb: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.split(":")[0], dtype=self.amp or torch.bfloat16,
                            enabled=self.amp is not None):
            if self.cached:
                fused, aux_i, aux_c = self.forward(None, self.x_clin[b], prefix=xb)
            else:
                fused, aux_i, aux_c = self.forward(xb, self.x_clin[b])
            y = self.y_all[b]
            loss = self.loss_fn(fused.float(), y)
            if self.aux_weight > 0 and aux_i is not None:
                loss = loss + self.aux_weight * (self.loss_fn(aux_i.float(), y)
                                                 + self.loss_fn(aux_c.float(), y))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.detach()

    def epoch_indices(self) -> torch.Tensor:
        """This epoch's draw of training positions: with the class-aware sampler its own
        multinomial draw (the same numbers ``iter(self.sampler)`` yields), else a shuffle of
        every training image once; kept as one tensor instead of a Python list."""
        s = self.sampler
        if self.profile.sampler == "shuffle":
            return torch.randperm(s.num_samples, generator=s.generator)
        return torch.multinomial(s.weights, s.num_samples, s.replacement, generator=s.generator)

    def epoch(self, max_steps: int | None = None) -> float:
        """One epoch of batches; returns the mean training loss."""
        self.model.train()
        order = self.rows["train"][self.epoch_indices().to(self.device)]
        total = torch.zeros((), device=self.device)
        bs = self.batch_size
        n = self.steps_per_epoch if max_steps is None else min(max_steps, self.steps_per_epoch)
        for s in range(n):
            b = order[s * bs:(s + 1) * bs]
            total += self.step(self.batch(b), b)
        return float(total) / n

    def predict(self, split: str, views: bool = True) -> np.ndarray:
        """Probabilities of the split's rows (the inner-validation or test subjects' images):
        the mean over the image, its left-right flip (``tta_flip``) and, with ``views``, its
        first ``tta_views`` augmented views (the per-epoch monitoring skips those: they cost
        as much as the epoch's training)."""
        rows = self.rows[split]
        return tta_predict(self.model, self.x_img, self.views, self.x_clin, rows,
                           self.profile.tta_flip, self.profile.tta_views if views else 0,
                           max(self.batch_size, 64), self.amp, self.device)


def tta_predict(model: PhyllodesNet, x_img: torch.Tensor | None, views: dict | None,
                x_clin: torch.Tensor, rows: torch.Tensor, tta_flip: bool, tta_views: int,
                batch_size: int, amp: torch.dtype | None, device: str) -> np.ndarray:
    """The test-time prediction of a run's model on ``rows`` (the one definition, for the
    test fold in training and for a cohort the model never saw, :mod:`phyllodes.train.apply`):
    the mean probability over the image, its left-right flip (``tta_flip``) and its first
    ``tta_views`` augmented views (the cached ``views`` of the frozen prefix when given, else
    views drawn with the fixed :data:`TTA_SEED`). An image's views depend on its pixels only
    (:func:`phyllodes.data.images.fixed_view`), so a case predicted alone gets the probability
    it gets inside its cohort."""
    clin = x_clin[rows]
    if x_img is None:
        return predict_proba(model, None, clin, batch_size, amp)
    cached = views is not None
    if cached:
        inputs = [views[k][rows] for k in ("clean", "flip")]
    else:
        inputs = [x_img[rows], x_img[rows].flip(-1)]
    if not tta_flip:
        inputs = inputs[:1]
    if tta_views and cached:
        inputs += [views["views"][v][rows] for v in range(min(tta_views, views["views"].shape[0]))]
    elif tta_views:
        x_u8 = x_img[rows]
        digests = pixel_digests(x_u8)
        inputs += [fixed_view(x_u8, digests, v, TTA_SEED).to(device) for v in range(tta_views)]
    probs = [predict_proba(model, x, clin, batch_size, amp, prefix=cached) for x in inputs]
    return np.mean(probs, axis=0).astype(np.float32) if len(probs) > 1 else probs[0]


def train_neural(study: Study, parts: dict, spec: RunSpec, encoder_weights: str | None = None,
                 progress: bool = True) -> RunOutput:
    """Train a PhyllodesNet (clinical MLP, image-only or multimodal) on one fold: early
    stopping on the inner-validation AUC, or a fixed epoch budget (``stopping='fixed'``)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    cohort = study.cohort
    tr = Trainer(study, parts, spec, encoder_weights)
    val_rows = tr.rows["val"].cpu().numpy()
    val_subj = cohort.images["subject_id"].to_numpy()[val_rows]
    val_y = cohort.images["y"].to_numpy()[val_rows]
    best = (-np.inf, np.inf)
    best_state, best_epoch, since_best, history = None, -1, 0, []
    bar = tqdm(range(tr.epochs), desc=spec.label + f" · fold {spec.fold}", leave=False,
               disable=not bars_wanted(progress))
    for epoch in bar:
        train_loss = tr.epoch()
        p_val = tr.predict("val", views=False)
        val_auc = subject_auc(val_subj, val_y, p_val)
        val_loss = float(torch.nn.functional.binary_cross_entropy(
            torch.as_tensor(p_val).clamp(1e-6, 1 - 1e-6),
            torch.as_tensor(val_y, dtype=torch.float32)))
        history.append({"epoch": epoch, "train_loss": train_loss, "val_auc": val_auc,
                        "val_loss": val_loss})
        if tr.fixed:  # a fixed budget: the last epoch's weights, whatever validation says
            best_epoch = epoch
        else:
            score = val_auc if not np.isnan(val_auc) else -val_loss
            if score > best[0] or (score == best[0] and val_loss < best[1]):
                best = (score, val_loss)
                best_state = copy.deepcopy({k: v.detach().cpu()
                                            for k, v in tr.model.state_dict().items()})
                best_epoch, since_best = epoch, 0
            else:
                since_best += 1
        bar.set_postfix(val_auc=f"{val_auc:.3f}", best=best_epoch)
        emit("epoch", epoch=epoch, epochs=tr.epochs, val_auc=val_auc, best_epoch=best_epoch)
        if not tr.fixed and since_best >= tr.patience:
            break
    if tr.fixed:
        best_state = {k: v.detach().cpu().clone() for k, v in tr.model.state_dict().items()}
    else:
        tr.model.load_state_dict(best_state)
    preds = [_predictions(cohort, tr.rows[split].cpu().numpy(), tr.predict(split), split,
                          spec.fold) for split in ("val", "test")]
    return RunOutput(pd.concat(preds, ignore_index=True), history, best_state, best_epoch,
                     time.perf_counter() - t0,
                     extra={"clinical_encoder": tr.encoder, "n_clinical": int(tr.x_clin.shape[1]),
                            **tr.lp})


def train_run(study: Study, spec: RunSpec, encoder_weights: str | None = None,
              progress: bool = True) -> RunOutput:
    """Train and predict one run of ``study`` (see the module docstring for the protocol)."""
    parts = fold_partition(study.cohort, study.splits, spec.fold,
                           study.profile.inner_val_fraction, seed=run_seed(spec))
    if spec.is_classical:
        out = train_classical(study.cohort, parts, spec)
    elif spec.is_probe:
        out = train_probe(study, parts, spec, encoder_weights)
    else:
        out = train_neural(study, parts, spec, encoder_weights, progress)
    out.extra["subjects"] = {k: [str(x) for x in v] for k, v in parts.items()}
    return out
