"""Train one model on one outer fold and predict its inner-validation and test subjects.

Protocol of every run (no leakage by construction):

1. The outer fold's test subjects are set aside; the remaining training subjects are split,
   stratified and by subject, into inner-training and inner-validation subjects
   (:func:`phyllodes.splits.inner_split`).
2. The clinical preprocessor is fit on the inner-training subjects only.
3. Class-aware sampling: each epoch draws as many inner-training images as there are, with
   replacement, by ``torch.utils.data.WeightedRandomSampler`` with weight 1 / (number of
   training images of the image's class), so both classes are drawn equally often in
   expectation.
4. AdamW with one learning rate for the (pretrained) encoder and another for the clinical
   branch and heads; linear warm-up then cosine decay, stepped per batch.
5. After each epoch the subject-level AUC on the inner-validation subjects decides early
   stopping (``patience`` epochs) and which epoch's weights are kept.
6. The kept model predicts the inner-validation subjects (for thresholds and recalibration
   chosen later) and, once, the test subjects.

Images are decoded once per run set (:mod:`phyllodes.images`) and live on the device as uint8;
batches are sliced from that tensor, augmented on the device, and fed to the model — no
per-sample Python in the loop. bf16 autocast on CUDA. Seeded: on the CPU the same seed gives
the same predictions.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import WeightedRandomSampler

from .clinical import ClinicalEncoder
from .cohort import Cohort
from .images import ImageSet, augment, to_float
from .models import PhyllodesNet, resolve_pretrained
from .profiles import Profile
from .splits import fold_subjects, inner_split

CLASSICAL = ("logreg", "random_forest", "gradient_boosting")


@dataclass(frozen=True)
class RunSpec:
    """What one run trains: ``model`` is the encoder name (image/multimodal) or the clinical
    model (``mlp`` or one of :data:`CLASSICAL`)."""

    modality: str
    model: str
    fusion: str = "concat"
    fold: int = 0
    seed: int = 0

    @property
    def label(self) -> str:
        """Human name of the model, e.g. 'multimodal · efficientnet_lite0 · concat'."""
        parts = [self.modality, self.model]
        if self.modality == "multimodal":
            parts.append(self.fusion)
        return " · ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunOutput:
    predictions: pd.DataFrame
    history: list[dict] = field(default_factory=list)
    state: dict | None = None
    best_epoch: int = -1
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def run_seed(spec: RunSpec) -> int:
    return int(spec.seed) * 1000 + int(spec.fold)


def fold_partition(cohort: Cohort, splits: pd.DataFrame, fold: int, val_fraction: float,
                   seed: int) -> dict[str, np.ndarray]:
    """Subject ids of the fold's inner-training, inner-validation and test sets."""
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


def subject_auc(subject_ids: np.ndarray, y: np.ndarray, prob: np.ndarray) -> float:
    """AUC over subjects (mean probability of a subject's images); NaN with one class."""
    df = pd.DataFrame({"s": subject_ids, "y": y, "p": prob}).groupby("s").mean()
    if df["y"].nunique() < 2:
        return float("nan")
    return float(roc_auc_score(df["y"], df["p"]))


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
    subj = cohort.subjects.set_index("subject_id")
    x_tr = enc.transform_subjects(parts["train"])
    y_tr = subj.loc[parts["train"], "y"].to_numpy()
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
    clf.fit(x_tr, y_tr, sample_weight=compute_sample_weight("balanced", y_tr)
            if spec.model == "gradient_boosting" else None)
    preds = []
    for split in ("val", "test"):
        rows = _rows(cohort, parts[split])
        x = enc.transform_images(cohort.images.iloc[rows])
        preds.append(_predictions(cohort, rows, clf.predict_proba(x)[:, 1], split, spec.fold))
    return RunOutput(pd.concat(preds, ignore_index=True), seconds=time.perf_counter() - t0,
                     extra={"sklearn_model": clf, "clinical_encoder": enc})


def uses_pretrained(spec: RunSpec, profile: Profile) -> bool:
    """Whether this run's encoder starts from ImageNet weights (see models.resolve_pretrained)."""
    if spec.modality == "clinical":
        return False
    return resolve_pretrained(spec.model, profile.pretrained)


def build_model(spec: RunSpec, profile: Profile, n_clinical: int,
                encoder_weights: str | None = None) -> PhyllodesNet:
    return PhyllodesNet(
        spec.modality, n_clinical=n_clinical,
        encoder=None if spec.modality == "clinical" else spec.model,
        fusion=spec.fusion, pretrained=uses_pretrained(spec, profile),
        encoder_weights=encoder_weights, clinical_hidden=profile.clinical_hidden,
        head_hidden=profile.head_hidden, dropout=profile.dropout,
        freeze_fraction=profile.freeze_fraction)


@torch.inference_mode()
def predict(model: PhyllodesNet, images: torch.Tensor | None, clinical: torch.Tensor,
            rows: torch.Tensor, batch_size: int, device: str) -> np.ndarray:
    """Probabilities for the given rows (images uint8 on ``device``)."""
    model.eval()
    out = []
    amp = device.startswith("cuda")
    for i in range(0, len(rows), max(batch_size, 64)):
        b = rows[i:i + max(batch_size, 64)]
        xb = to_float(images[b]) if images is not None else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logit = model(xb, clinical[b])
        out.append(torch.sigmoid(logit.float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_neural(cohort: Cohort, parts: dict, spec: RunSpec, profile: Profile,
                 image_set: ImageSet | None, device: str = "cpu",
                 encoder_weights: str | None = None, progress: bool = True) -> RunOutput:
    """Train a PhyllodesNet (clinical MLP, image-only or multimodal) on one fold."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    seed = run_seed(spec)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if profile.num_threads:
        torch.set_num_threads(profile.num_threads)
    enc = ClinicalEncoder(cohort).fit(parts["train"])
    x_clin = torch.as_tensor(enc.transform_images(cohort.images), device=device)
    y_all = torch.tensor(cohort.images["y"].to_numpy(copy=True), dtype=torch.float32, device=device)
    uses_images = spec.modality != "clinical"
    x_img = None
    if uses_images:
        if image_set is None:
            raise ValueError(f"a {spec.modality} run needs the cohort's images")
        x_img = image_set.images.to(device)
        if device.startswith("cuda"):
            x_img = x_img.contiguous(memory_format=torch.channels_last)
    model = build_model(spec, profile, x_clin.shape[1], encoder_weights).to(device)
    if device.startswith("cuda") and uses_images:
        model = model.to(memory_format=torch.channels_last)

    rows = {k: torch.as_tensor(_rows(cohort, v), device=device) for k, v in parts.items()}
    y_train = cohort.images["y"].to_numpy()[rows["train"].cpu().numpy()]
    sampler = class_aware_sampler(y_train, seed)
    is_clin = spec.modality == "clinical"
    epochs = profile.clinical_epochs if is_clin else profile.epochs
    patience = max(profile.patience, epochs // 5) if is_clin else profile.patience
    bs = profile.batch_size
    steps_per_epoch = max(1, len(y_train) // bs)  # drop the last partial batch
    groups = [{"params": model.head_parameters(), "lr": profile.lr_head}]
    if model.encoder is not None:
        groups.append({"params": model.encoder_parameters(), "lr": profile.lr_encoder})
    opt = torch.optim.AdamW(groups, weight_decay=profile.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(epochs * steps_per_epoch, profile.warmup_epochs * steps_per_epoch))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator(device=device).manual_seed(seed)
    amp = device.startswith("cuda")

    val_rows_np = rows["val"].cpu().numpy()
    val_subj = cohort.images["subject_id"].to_numpy()[val_rows_np]
    val_y = cohort.images["y"].to_numpy()[val_rows_np]
    best = (-np.inf, np.inf)
    best_state, best_epoch, since_best, history = None, -1, 0, []
    bar = tqdm(range(epochs), desc=spec.label + f" · fold {spec.fold}", leave=False,
               disable=not progress)
    for epoch in bar:
        model.train()
        order = rows["train"][torch.as_tensor(list(sampler), device=device)]
        total = torch.zeros((), device=device)
        for s in range(steps_per_epoch):
            b = order[s * bs:(s + 1) * bs]
            xb = None
            if uses_images:
                xb = to_float(x_img[b])
                if profile.augment:
                    xb = augment(xb, gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                logit = model(xb, x_clin[b])
                loss = loss_fn(logit.float(), y_all[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        p_val = predict(model, x_img, x_clin, rows["val"], bs, device)
        val_auc = subject_auc(val_subj, val_y, p_val)
        val_loss = float(torch.nn.functional.binary_cross_entropy(
            torch.as_tensor(p_val).clamp(1e-6, 1 - 1e-6), torch.as_tensor(val_y, dtype=torch.float32)))
        history.append({"epoch": epoch, "train_loss": float(total) / steps_per_epoch,
                        "val_auc": val_auc, "val_loss": val_loss})
        score = (val_auc if not np.isnan(val_auc) else -val_loss, -val_loss)
        if score[0] > best[0] or (score[0] == best[0] and -score[1] < best[1]):
            best = (score[0], -score[1])
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_epoch, since_best = epoch, 0
        else:
            since_best += 1
        bar.set_postfix(val_auc=f"{val_auc:.3f}", best=best_epoch)
        if since_best >= patience:
            break
    model.load_state_dict(best_state)
    preds = []
    for split in ("val", "test"):
        p = predict(model, x_img, x_clin, rows[split], bs, device)
        preds.append(_predictions(cohort, rows[split].cpu().numpy(), p, split, spec.fold))
    return RunOutput(pd.concat(preds, ignore_index=True), history, best_state, best_epoch,
                     time.perf_counter() - t0,
                     extra={"clinical_encoder": enc, "n_clinical": int(x_clin.shape[1])})


def train_run(cohort: Cohort, splits: pd.DataFrame, spec: RunSpec, profile: Profile,
              image_set: ImageSet | None = None, device: str = "cpu",
              encoder_weights: str | None = None, progress: bool = True) -> RunOutput:
    """Train and predict one run (see the module docstring for the protocol)."""
    parts = fold_partition(cohort, splits, spec.fold, profile.inner_val_fraction,
                           seed=run_seed(spec))
    if spec.modality == "clinical" and spec.model in CLASSICAL:
        out = train_classical(cohort, parts, spec)
    else:
        out = train_neural(cohort, parts, spec, profile, image_set, device, encoder_weights,
                           progress)
    out.extra["subjects"] = {k: [str(x) for x in v] for k, v in parts.items()}
    return out
