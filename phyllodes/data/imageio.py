"""Reading image files the one way the package reads them: 8-bit grayscale images, boolean masks.

* :func:`gray8`: any single-frame image as 8-bit grayscale. 8-bit images (gray, RGB, palette,
  with or without alpha) go through Pillow's luma conversion; images with more than 8 bits per
  pixel (16-bit PNG or TIFF, 32-bit integer or float) are scaled to 0-255 by their own
  minimum and maximum (Pillow's plain conversion would clip them to near-white). The scaling
  is per image and fixed: nothing is estimated from other images. An EXIF orientation tag is
  applied first (the image as a viewer shows it: ROI boxes and masks are drawn on that); an
  image without one is decoded exactly as stored.
* :func:`mask_array`: a lesion mask as booleans; foreground is every pixel above half the
  mask's maximum, so 0/1, 0/255 and 16-bit masks all work; an EXIF orientation is applied
  as for the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
EXIF_ORIENTATION = 0x0112


def orientation(im: Image.Image) -> int:
    """The image's EXIF orientation (1 = as stored, 2-8 = flipped and/or rotated)."""
    try:
        o = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return o if 1 <= o <= 8 else 1


def upright(im: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied (unchanged without one)."""
    return ImageOps.exif_transpose(im) if orientation(im) != 1 else im


def upright_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as a viewer shows it (EXIF orientation applied), read from
    its header without decoding the pixels."""
    with Image.open(path) as im:
        w, h = im.size
        return (h, w) if orientation(im) in (5, 6, 7, 8) else (w, h)


def gray8(im: Image.Image) -> Image.Image:
    """An opened image as an 8-bit grayscale ('L') image, upright (:func:`upright`)."""
    im = upright(im)
    if im.mode in WIDE_MODES:
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    if im.mode == "L":
        return im
    return im.convert("L")


def read_gray8(path: str | Path) -> np.ndarray:
    """The image file as an (H, W) uint8 array (see :func:`gray8`)."""
    with Image.open(path) as im:
        return np.asarray(gray8(im), dtype=np.uint8)


def mask_array(path: str | Path) -> np.ndarray:
    """The mask file as an (H, W) boolean array (foreground above half its maximum)."""
    with Image.open(path) as im:
        im = upright(im)
        a = np.asarray(im if im.mode in WIDE_MODES or im.mode == "L" else im.convert("L"),
                       dtype=np.float64)
    top = a.max() if a.size else 0
    return a > top / 2 if top > 0 else np.zeros(a.shape, dtype=bool)
