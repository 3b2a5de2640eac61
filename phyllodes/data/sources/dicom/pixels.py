"""Decoding DICOM pixels to 8-bit gray and cropping them to the ultrasound region
(refusing a region partly outside the image or over the burned-in text band)."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
from PIL import Image

from phyllodes.data.sources.dicom.guard import library_call
from phyllodes.data.sources.dicom.headers import Region, SourceFile
from phyllodes.data.sources.dicom.vocabulary import FRAME_CHOICES, SkipImage


def _luma(rgb: np.ndarray, maxval: float) -> np.ndarray:
    x = rgb[..., :3].astype(np.float64) * (255.0 / maxval)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)

def _first(v: Any) -> float:
    try:
        return float(v[0])
    except (TypeError, IndexError, KeyError):
        return float(v)

def to_gray8(arr: np.ndarray, ds) -> np.ndarray:
    """One decoded frame (as pydicom gives it, colour as RGB) as 8-bit grayscale."""
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", 8) or 8)
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        rgb = apply_color_lut(arr, ds)
        return _luma(rgb, 65535.0 if rgb.dtype.itemsize > 1 else 255.0)
    if arr.ndim == 3:
        return _luma(arr, float(2 ** min(bits, 16) - 1) if bits > 8 else 255.0)
    if arr.dtype == np.uint8 and bits <= 8:
        g = arr
    else:
        x = arr.astype(np.float64)
        slope, icpt = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0)
                                                                     or 0)
        x = x * slope + icpt
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None \
                and _first(ds.WindowWidth) >= 1:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            y = np.clip((x - (c - 0.5)) / max(w - 1, 1) + 0.5, 0, 1)
        else:
            lo, hi = float(x.min()), float(x.max())
            y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        g = np.clip(np.floor(y * 255 + 0.5), 0, 255).astype(np.uint8)
    return (255 - g) if pi == "MONOCHROME1" else g

def scan_area(gray: np.ndarray, threshold: int = 12
              ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The scan found without a region: the largest bright connected area once thin strokes
    (text, lines) are opened away, holes filled. Returns its bounding box (x0, y0, x1, y1;
    x1/y1 exclusive) and its mask grown by 2 px, or None when it covers under a tenth of the
    frame."""
    from scipy import ndimage
    pad = 4
    mask = np.pad(gray > threshold, pad)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3), bool), iterations=2)
    mask = ndimage.binary_opening(mask, structure=np.ones((7, 7), bool))[pad:-pad, pad:-pad]
    lab, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    if sizes[k - 1] < 0.1 * gray.size:
        return None
    area = ndimage.binary_fill_holes(lab == k)
    ys, xs = np.nonzero(area)
    area = ndimage.binary_dilation(area, structure=np.ones((3, 3), bool), iterations=2)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), area

def frame_indices(n: int, frames: str) -> list[int]:
    """The frames kept of a clip of ``n`` (see FRAME_CHOICES); a single frame is always kept."""
    mode, k = parse_frames(frames)
    if n <= 1:
        return [0]
    if mode == "middle":
        return [n // 2]
    if mode == "first":
        return [0]
    if mode == "all":
        return list(range(n))
    return list(range(0, n, k))

def parse_frames(frames: str) -> tuple[str, int]:
    """('middle'|'first'|'all'|'every', k) from the --frames option."""
    f = frames.strip().lower()
    if f in ("middle", "first", "all"):
        return f, 1
    m = re.match(r"^every[:=](\d+)$", f)
    if m and int(m.group(1)) >= 1:
        return "every", int(m.group(1))
    raise ValueError(f"--frames {frames!r}: use {FRAME_CHOICES} (e.g. every:5)")

def decode_frames(ds, sf: SourceFile, frames: str, without_region: str,
                   allow_unsafe_regions: bool = False
                   ) -> list[tuple[int, np.ndarray, tuple, str]]:
    """The kept frames of a file, cropped: (index, gray8, box (x0, y0, x1, y1), method)."""
    from pydicom.pixels import pixel_array
    out = []
    for idx in frame_indices(sf.n_frames, frames):
        arr = pixel_array(ds, index=idx, as_rgb=True)
        if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            arr = arr[0]  # a frame axis kept
        gray = to_gray8(arr, ds)
        h, w = gray.shape[:2]
        if sf.region is not None:
            box = region_box(sf, w, h, allow_unsafe_regions)
            _check_text_band(gray, box, sf, allow_unsafe_regions)
            if (box[2] - box[0]) * (box[3] - box[1]) >= 0.95 * w * h:
                sf.flag("region_covers_frame")
            method = "ultrasound_region"
        elif without_region == "full":
            box = (0, 0, w, h)
            method = "full_frame"
        else:
            found = scan_area(gray)
            if found is None:
                raise SkipImage("no_scan_area_found")
            box, area = found
            gray = np.where(area, gray, 0).astype(np.uint8)  # black outside the scan
            method = "fallback_crop"
        out.append((idx, np.ascontiguousarray(gray[box[1]:box[3], box[0]:box[2]]), box, method))
    return out

def _region_text(r: Region) -> str:
    return f"region x {r.x0}-{r.x1}, y {r.y0}-{r.y1}"

def region_box(sf: SourceFile, w: int, h: int, allow: bool) -> tuple[int, int, int, int]:
    """The crop box (x1/y1 exclusive) of the file's region in a ``w`` x ``h`` frame. A region
    wholly outside is skipped; one partly outside is refused (:class:`SkipImage` naming how far
    and on which side) unless ``allow``, then clamped and flagged."""
    r = sf.region
    x0, y0 = max(0, r.x0), max(0, r.y0)
    x1, y1 = min(w - 1, r.x1), min(h - 1, r.y1)
    if x1 < x0 or y1 < y0:
        raise SkipImage("region_outside_image", f"{_region_text(r)} outside the {w}x{h} image")
    over = {"left": -r.x0, "top": -r.y0, "right": r.x1 - (w - 1), "bottom": r.y1 - (h - 1)}
    over = {k: v for k, v in over.items() if v > 0}
    if over:
        detail = (f"{_region_text(r)} extends {max(over.values())} px outside the {w}x{h} "
                  "image (" + ", ".join(f"{k} edge by {v} px" for k, v in over.items()) + ")")
        if not allow:
            raise SkipImage("region_partly_outside_image", detail)
        sf.flag("region_clamped")
        sf.notes["region_clamped"] = detail + "; clamped to the image"
    return x0, y0, x1 + 1, y1 + 1

def text_band_rows(gray: np.ndarray, box: tuple[int, int, int, int], mark: int = 96,
                   min_pixels: int = 6) -> list[tuple[int, int]]:
    """The rows (first, last; of the frame) inside ``box`` holding bright marks (above
    ``mark``, at least ``min_pixels`` of them in a band) above or below the scan: burned-in text
    bands the crop would keep. The scan is :func:`scan_area`'s; none found, none is reported."""
    found = scan_area(gray)
    if found is None:
        return []
    (_, sy0, _, sy1), area = found
    x0, y0, x1, y1 = box
    marks = (gray[y0:y1, x0:x1] > mark) & ~area[y0:y1, x0:x1]
    rows = np.arange(y0, y1)
    count = np.where((rows < sy0) | (rows >= sy1), marks.sum(axis=1), 0)
    out: list[tuple[int, int, int]] = []  # first, last, pixels
    for r in rows[count > 0]:
        if out and r == out[-1][1] + 1:
            out[-1] = (out[-1][0], int(r), out[-1][2] + int(count[r - y0]))
        else:
            out.append((int(r), int(r), int(count[r - y0])))
    return [(a, b) for a, b, n in out if n >= min_pixels]

def _check_text_band(gray: np.ndarray, box: tuple, sf: SourceFile, allow: bool) -> None:
    """Refuse (:class:`SkipImage`) a region overlapping a burned-in text band, unless ``allow``:
    then flag it."""
    bands = text_band_rows(gray, box)
    if not bands:
        return
    detail = (f"{_region_text(sf.region)} overlaps the burned-in text band at rows "
              + " and ".join(f"{a}-{b}" for a, b in bands))
    if not allow:
        raise SkipImage("region_over_text_band", detail)
    sf.flag("region_over_text_band")
    sf.notes["region_over_text_band"] = detail

def png_bytes(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with library_call():
        Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()
