"""The frozen prefix of the image encoder, run once over augmented views of every image.

With the stem and first stages of an encoder frozen (``frozen_stages``), their output does
not depend on the fold: :func:`view_cache` computes it for every image of the cohort — the
clean image, its left-right flip (for flip TTA and the linear-probe initialisation) and K
augmented views (:func:`phyllodes.data.images.fixed_view`: each image's own views, seeded by its
pixels and the view's index) — and every fold,
modality and fusion of a study reuses it. Training then draws, for each image and epoch, one of
its K views and runs only the trainable stages. Nothing is fit and the augmentation is
label-free, so sharing it across folds leaks nothing.

The prefix runs in the run's training precision
(:func:`phyllodes.train.trainer.autocast_dtype`): bf16 on a CUDA device, fp32 on a CPU unless
the profile asks for bf16 (its rounding depends on the CPU's bf16 support, and the committed
tables must come out the same on any CPU that runs the quick profile). It runs in batches of
16: on a 2-core CPU (AMD EPYC, 2026-12) a batch of 16 took 0.6 s per 256 images at 128 px
against 1.5 s for batches of 64 (the activations stay in cache), which matters for a cohort of
1,875 images x 18 passes (BUS-BRA, notebook 07). The cache is kept in the study's memory and on
disk (``.cache/views/``), keyed by a digest of the prefix's weights, the image cache key, K,
the dtype, the CPU kernels and the code of the augmentation and of the prefix's forward
(:func:`phyllodes.recipe.code_digest`: a docstring edit does not rebuild it): a stale file is
never used. The views are computed by a copy of the network in the run layout
(:meth:`~phyllodes.models.network.PhyllodesNet.to_run_layout`), so they are the same numbers
whichever caller builds them first (a training run, or an exported model predicting a cohort:
notebook 07 does both on BUS-BRA).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path

import torch

from phyllodes import kernels, paths
from phyllodes.data.images import ImageSet, augment, fixed_view, pixel_digests
from phyllodes.models.families import prefix_modules
from phyllodes.recipe import code_digest

log = logging.getLogger(__name__)
VIEWS_SEED = 12345


def views_code_digest() -> str:
    """Digest of the code the cached views depend on (the augmentation, the prefix's forward
    and this module's pass): a change to it makes new views, never reuses old ones."""
    from phyllodes.data.images import augmentation_code
    from phyllodes.models.network import PhyllodesNet
    draw, apply = augmentation_code()
    return code_digest(augment, draw, apply, fixed_view, pixel_digests,
                       PhyllodesNet.encode_prefix, _run)


def prefix_digest(model) -> str:
    """A digest of the frozen prefix's weights (stem and frozen stages)."""
    h = hashlib.sha256()
    for module in prefix_modules(model.encoder, model.prefix_stages):
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@torch.inference_mode()
def _run(model, images01: torch.Tensor, dtype: torch.dtype, device: str,
         batch_size: int = 16) -> torch.Tensor:
    out = []
    for i in range(0, len(images01), batch_size):
        x = images01[i:i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                            enabled=dtype == torch.bfloat16):
            out.append(model.encode_prefix(x).to(dtype))
    return torch.cat(out).contiguous()


def view_cache_key(model, image_set: ImageSet, k: int, dtype: torch.dtype) -> str:
    """What the cached views are computed from: the prefix's weights, the images, K, the dtype,
    the views' seed and code, and the CPU kernels (:func:`phyllodes.kernels.tag`: a process with
    other kernels computes other numbers, and the cache folder is shared)."""
    return hashlib.sha256(f"{prefix_digest(model)}|{image_set.key}|{k}|{dtype}|{VIEWS_SEED}|"
                          f"{views_code_digest()}|{kernels.tag()}".encode()).hexdigest()[:24]


def view_cache(model, image_set: ImageSet, k: int, device: str = "cpu",
               dtype: torch.dtype = torch.float32, memory: dict | None = None,
               cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """{'clean': (N, C, h, w), 'flip': (N, C, h, w), 'views': (K, N, C, h, w)} prefix outputs
    of every image of ``image_set`` in ``dtype`` (bf16: computed under autocast), from
    ``memory`` (a dict the caller keeps), the disk cache under ``cache_dir``, or computed
    once."""
    key = view_cache_key(model, image_set, k, dtype)
    memory = {} if memory is None else memory
    if ("views", key) in memory:
        return memory[("views", key)]
    file = (cache_dir or paths.DEFAULT_CACHE) / "views" / f"{key}.pt"
    if file.exists():
        try:
            blob = torch.load(file, map_location=device, weights_only=True)
            if blob.get("key") == key:
                memory[("views", key)] = {n: blob[n] for n in ("clean", "flip", "views")}
                return memory[("views", key)]
        except Exception as e:  # an unreadable cache is rebuilt, never trusted
            log.warning("view cache %s is unreadable (%s): rebuilding it", file, e)
    # a copy in the run layout and eval mode: the views are a function of the key only, whether
    # a training run, a reloaded run or an exported model (other layout) computes them first
    model = copy.deepcopy(model).to_run_layout(device).eval()
    x01 = image_set.images.float().div(255.0)
    digests = pixel_digests(image_set.images)
    blob = {"clean": _run(model, x01, dtype, device),
            "flip": _run(model, x01.flip(-1), dtype, device),
            "views": torch.stack([_run(model, fixed_view(image_set.images, digests, v,
                                                         VIEWS_SEED), dtype, device)
                                  for v in range(k)])}
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    torch.save({"key": key, **{n: v.cpu() for n, v in blob.items()}}, tmp)
    tmp.replace(file)
    memory[("views", key)] = blob
    return blob
