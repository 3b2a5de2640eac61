"""Decode every image once into a cached uint8 tensor; augment batches of tensors.

:func:`image_tensor` decodes, crops to the ROI (optional, with a margin), pads to a square and
resizes each image of a cohort once per (cohort images, size, ROI setting), and stores the
result as one uint8 tensor of shape (N, 1, S, S) — lesion masks alongside when the cohort has
them. The cache file is keyed by a fingerprint of the image (and mask) bytes, the settings and
the decoding code (:func:`decoding_digest`: an edited docstring does not rebuild it, a changed
crop does); it also stores a checksum of its tensors, so a stale or corrupt cache is rebuilt,
never trusted. A study also keeps the tensor in its ``memory`` (a dict the caller owns), so its
notebooks' runs share it.

:func:`augment` applies ultrasound-appropriate augmentation to a float batch on whatever device
the batch is on: left-right flip (never up-down: depth has a direction in ultrasound), small
affine jitter (scale, rotation, translation), gain (brightness), contrast and gamma jitter, and
multiplicative speckle-like noise. :func:`fixed_view` draws the test-time (and cached) views
of each image from a generator seeded by that image's own pixels and the view's index, so an
image's views do not depend on which other images are decoded with it or in what order: a case
predicted alone gets the views it got inside its cohort.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from phyllodes import paths
from phyllodes.data.cohort import ROI_COLUMNS, Cohort
from phyllodes.data.imageio import gray8, mask_array
from phyllodes.recipe import code_digest

log = logging.getLogger(__name__)
CACHE_VERSION = 2


@dataclass
class ImageSet:
    """Decoded images (N, 1, S, S) uint8 in the cohort's row order, masks if any, cache key."""

    images: torch.Tensor
    masks: torch.Tensor | None
    image_paths: list[str]
    key: str

    def index_of(self, image_paths) -> torch.Tensor:
        """Row indices of the given image paths (cohort.images['image_path'] values)."""
        where = {p: i for i, p in enumerate(self.image_paths)}
        return torch.as_tensor([where[p] for p in image_paths], dtype=torch.long)


def _file_digest(paths_: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths_:
        h.update(p.encode())
        try:
            h.update(Path(p).read_bytes() if p else b"")
        except OSError as e:
            raise FileNotFoundError(f"cannot read {p} ({type(e).__name__}: {e}); it is listed "
                                    "in the cohort's cohort.csv: fix the path or restore the "
                                    "file, then run python -m phyllodes validate COHORT") from None
    return h.hexdigest()


def cache_key(cohort: Cohort, size: int, use_roi: bool, roi_margin: float) -> str:
    """Fingerprint of the image and mask bytes, the ROI boxes and the settings."""
    imgs = cohort.images
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{decoding_digest()}|{size}|{use_roi and cohort.has_roi}|"
             f"{roi_margin}".encode())
    h.update(_file_digest(imgs["image_abspath"].tolist()).encode())
    if cohort.has_masks:
        h.update(_file_digest(imgs["mask_abspath"].tolist()).encode())
    if cohort.has_roi:
        h.update(imgs[list(ROI_COLUMNS)].to_numpy().astype(np.float64).tobytes())
    return h.hexdigest()[:20]


def _tensor_checksum(*tensors: torch.Tensor | None) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def square_box(box: tuple[float, float, float, float], margin: float
               ) -> tuple[int, int, int, int]:
    """The ROI box grown by ``margin`` (fraction of its size) on each side, made square."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (int(round(cx - side / 2)), int(round(cy - side / 2)),
            int(round(cx + side / 2)), int(round(cy + side / 2)))


def prepare(img: Image.Image, size: int, box: tuple | None, resample) -> np.ndarray:
    """Crop (to ``box``, padding with zeros outside the image), pad to square, resize."""
    if box is None:
        w, h = img.size
        side = max(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side,
               (h - side) // 2 + side)
    # PIL's crop pads with zeros where the box leaves the image
    return np.asarray(img.crop(box).resize((size, size), resample), dtype=np.uint8)


def decode_cohort(cohort: Cohort, size: int, use_roi: bool, roi_margin: float
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode, crop, pad and resize every image (and mask) of the cohort once."""
    imgs = cohort.images
    n = len(imgs)
    out = np.zeros((n, 1, size, size), dtype=np.uint8)
    masks = np.zeros((n, 1, size, size), dtype=np.uint8) if cohort.has_masks else None
    crop = use_roi and cohort.has_roi
    for i, row in enumerate(imgs.itertuples(index=False)):
        roi = tuple(getattr(row, c) for c in ROI_COLUMNS) if crop else None
        box = square_box(roi, roi_margin) if roi and not np.isnan(roi).any() else None
        try:
            with Image.open(row.image_abspath) as im:
                out[i, 0] = prepare(gray8(im), size, box, Image.BILINEAR)
        except OSError as e:
            raise OSError(f"{cohort.root / 'cohort.csv'} line {row.csv_line}, column "
                          f"'image_path': cannot decode {row.image_abspath}: {e}") from None
        if masks is not None and row.mask_abspath:
            m = Image.fromarray(mask_array(row.mask_abspath).astype(np.uint8) * 255)
            masks[i, 0] = (prepare(m, size, box, Image.NEAREST) > 127) * 255
    return torch.from_numpy(out), (torch.from_numpy(masks) if masks is not None else None)


def decoding_digest() -> str:
    """Digest of the code that turns image files into the cached tensor (reading, cropping,
    padding, resizing): part of every image cache key."""
    from phyllodes.data.imageio import gray8, mask_array
    return code_digest(gray8, mask_array, square_box, prepare, decode_cohort)


def image_tensor(cohort: Cohort, size: int, use_roi: bool = True, roi_margin: float = 0.15,
                 cache_dir: Path | None = None, key: str | None = None,
                 memory: dict | None = None) -> ImageSet:
    """The cohort's images decoded once, from ``memory``, the disk cache, or decoding.

    ``key``: the :func:`cache_key` when the caller has it already (it hashes every file).
    ``memory``: a dict the caller keeps (a study's), where the decoded set is kept by its key.
    ``cache_dir``: the disk cache (default: the repository's ``.cache/``)."""
    key = key or cache_key(cohort, size, use_roi, roi_margin)
    memory = {} if memory is None else memory
    mkey = ("images", key)
    if mkey in memory:
        return memory[mkey]
    folder = (cache_dir or paths.DEFAULT_CACHE) / "images" / cohort.name
    file = folder / f"{key}.pt"
    paths_ = cohort.images["image_path"].tolist()
    if file.exists():
        try:
            blob = torch.load(file, map_location="cpu", weights_only=True)
            ok = (blob["key"] == key and blob["image_paths"] == paths_
                  and blob["checksum"] == _tensor_checksum(blob["images"], blob["masks"]))
            if ok:
                memory[mkey] = ImageSet(blob["images"], blob["masks"], paths_, key)
                return memory[mkey]
            log.warning("image cache %s is stale or corrupt: rebuilding it", file)
        except Exception as e:  # an unreadable file is rebuilt, never trusted
            log.warning("image cache %s is unreadable (%s): rebuilding it", file, e)
    images, masks = decode_cohort(cohort, size, use_roi, roi_margin)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    torch.save({"key": key, "image_paths": paths_, "images": images, "masks": masks,
                "checksum": _tensor_checksum(images, masks)}, tmp)
    tmp.replace(file)
    log.info("decoded %d images of %s at %d px into %s", len(images), cohort.name, size, file)
    memory[mkey] = ImageSet(images, masks, paths_, key)
    return memory[mkey]


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> float32 in [0, 1]."""
    return batch_u8.float().div_(255.0)


def augment(x: torch.Tensor, generator: torch.Generator | None = None,
            max_rotate_deg: float = 10.0, max_scale: float = 0.1, max_shift: float = 0.05,
            gain: float = 0.15, contrast: float = 0.15, gamma: float = 0.2,
            speckle: float = 0.05) -> torch.Tensor:
    """Random ultrasound-appropriate augmentation of a float batch (B, 1, H, W) in [0, 1].

    All draws come from ``generator`` (on the batch's device) so a seed reproduces them.
    """
    draws = _draw(x.shape, x.device, generator, speckle > 0)
    return _apply(x, draws, max_rotate_deg, max_scale, max_shift, gain, contrast, gamma,
                  speckle)


def _draw(shape, dev, generator: torch.Generator | None, noise: bool) -> dict:
    """The random numbers of :func:`augment` for a batch of ``shape``, in their fixed order."""
    b = shape[0]

    def u(*s):  # uniform in [-1, 1)
        return torch.rand(*s, device=dev, generator=generator) * 2 - 1

    d = {"flip": torch.rand(b, device=dev, generator=generator) < 0.5, "ang": u(b),
         "scale": u(b), "shift": u(b, 2), "gain": u(b, 1, 1, 1), "contrast": u(b, 1, 1, 1),
         "gamma": u(b, 1, 1, 1)}
    if noise:
        d["noise"] = torch.randn(tuple(shape), device=dev, generator=generator)
    return d


def _apply(x: torch.Tensor, d: dict, max_rotate_deg: float = 10.0, max_scale: float = 0.1,
           max_shift: float = 0.05, gain: float = 0.15, contrast: float = 0.15,
           gamma: float = 0.2, speckle: float = 0.05) -> torch.Tensor:
    flip = d["flip"]
    ang = d["ang"] * np.deg2rad(max_rotate_deg)
    scale = 1 + d["scale"] * max_scale
    shift = d["shift"] * max_shift * 2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    sx = torch.where(flip, -cos, cos)
    theta = torch.stack([torch.stack([sx, -sin, shift[:, 0]], 1),
                         torch.stack([torch.where(flip, -sin, sin), cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    g = (1 + d["gain"] * gain)
    c = (1 + d["contrast"] * contrast)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * c + mean) * g
    x = x.clamp(0, 1) ** torch.exp(d["gamma"] * gamma)
    if speckle > 0:
        x = x * (1 + speckle * d["noise"])
    return x.clamp_(0, 1)


def pixel_digests(images_u8: torch.Tensor) -> list[bytes]:
    """A digest of each image's pixels (N, 1, S, S) uint8: the seed material of its views."""
    arr = images_u8.cpu().contiguous().numpy()
    return [hashlib.sha256(a.tobytes()).digest() for a in arr]


def fixed_view(images_u8: torch.Tensor, digests: list[bytes], view: int, seed: int
               ) -> torch.Tensor:
    """Augmented view number ``view`` of every image, float (N, 1, S, S) in [0, 1] on the CPU.

    Image i's view is :func:`augment` drawn from a generator seeded by its pixel digest
    (:func:`pixel_digests`), ``seed`` and ``view`` only: the same image gets the same views
    alone, in any batch and in any order."""
    x = to_float(images_u8.cpu())
    tag = f"|{seed}|{view}".encode()
    draws = []
    for d in digests:
        g = torch.Generator().manual_seed(
            int.from_bytes(hashlib.sha256(d + tag).digest()[:8], "little") >> 1)
        draws.append(_draw((1, *x.shape[1:]), x.device, g, True))
    if not draws:
        return x
    return _apply(x, {k: torch.cat([d[k] for d in draws]) for k in draws[0]})


def augmentation_code() -> tuple:
    """The functions that draw and apply :func:`augment`'s random numbers, for the digests of
    what depends on their code (the view cache, :mod:`phyllodes.train.views`)."""
    return _draw, _apply
