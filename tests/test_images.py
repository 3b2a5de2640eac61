"""Images are decoded once into a cached tensor; stale or corrupt caches are rebuilt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from phyllodes.data import images as images_mod
from phyllodes.data.cohort import load_cohort
from phyllodes.data.images import augment, image_tensor, prepare, square_box


@pytest.fixture
def counted_decode(monkeypatch):
    calls = []
    real = images_mod.decode_cohort

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(images_mod, "decode_cohort", counting)
    yield calls


def test_decoded_once_then_memory_then_disk(cohort_copy, tmp_path, counted_decode):
    c = load_cohort(cohort_copy)
    memory = {}  # a study's
    a = image_tensor(c, 24, cache_dir=tmp_path, memory=memory)
    assert a.images.dtype == torch.uint8 and a.images.shape == (len(c.images), 1, 24, 24)
    assert a.masks is not None and set(a.masks.unique().tolist()) <= {0, 255}
    b = image_tensor(c, 24, cache_dir=tmp_path, memory=memory)
    assert b is a and len(counted_decode) == 1          # from memory
    d = image_tensor(c, 24, cache_dir=tmp_path)         # another study: the disk cache
    assert len(counted_decode) == 1                     # from the disk cache
    assert torch.equal(d.images, a.images)
    image_tensor(c, 28, cache_dir=tmp_path)              # another setting: decoded again
    assert len(counted_decode) == 2


def test_corrupt_cache_is_rebuilt(cohort_copy, tmp_path, counted_decode):
    c = load_cohort(cohort_copy)
    a = image_tensor(c, 24, cache_dir=tmp_path)
    files = list((tmp_path / "images").rglob("*.pt"))
    assert len(files) == 1
    blob = torch.load(files[0], weights_only=True)
    blob["images"][0, 0, 0, 0] ^= 1                       # silent bit flip
    torch.save(blob, files[0])
    b = image_tensor(c, 24, cache_dir=tmp_path)
    assert len(counted_decode) == 2 and torch.equal(a.images, b.images)
    files[0].write_bytes(b"garbage")
    image_tensor(c, 24, cache_dir=tmp_path)
    assert len(counted_decode) == 3


def test_changed_image_gives_new_key(cohort_copy, tmp_path, counted_decode):
    c = load_cohort(cohort_copy)
    a = image_tensor(c, 24, cache_dir=tmp_path)
    p = cohort_copy / c.images.loc[0, "image_path"]
    arr = np.asarray(Image.open(p)).copy()
    arr[:4, :4] = 255 - arr[:4, :4]
    Image.fromarray(arr).save(p)
    b = image_tensor(load_cohort(cohort_copy), 24, cache_dir=tmp_path)
    assert a.key != b.key and len(counted_decode) == 2


def test_roi_crop_pads_and_resizes():
    img = Image.fromarray(np.arange(100 * 60, dtype=np.uint32).reshape(60, 100).astype(np.uint8))
    box = square_box((10, 20, 30, 30), margin=0.0)      # 20x10 box -> 20x20 square
    assert box[2] - box[0] == box[3] - box[1] == 20
    out = prepare(img, 16, box, Image.NEAREST)
    assert out.shape == (16, 16)
    # without a box the whole image is padded to a square: top/bottom rows are zero padding
    full = prepare(img, 50, None, Image.NEAREST)
    assert full.shape == (50, 50) and full[0].max() == 0 and full[-1].max() == 0


def test_augment_is_seeded_bounded_and_changes_images():
    x = torch.rand(8, 1, 32, 32)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().mean() > 0.01


def test_augment_flips_left_right_never_up_down():
    # a bright top half (near the probe) must stay at the top after augmentation
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, :16] = 0.8
    a = augment(x, torch.Generator().manual_seed(0), speckle=0)
    top, bottom = a[:, :, 4:12].mean((1, 2, 3)), a[:, :, 20:28].mean((1, 2, 3))
    assert (top > bottom).all()
    # and a bright left half ends up on the right in about half of the batch
    y = torch.zeros(64, 1, 32, 32)
    y[..., :16] = 0.8
    b = augment(y, torch.Generator().manual_seed(0), speckle=0)
    flipped = (b[..., 20:28].mean((1, 2, 3)) > b[..., 4:12].mean((1, 2, 3))).float().mean()
    assert 0.3 < flipped < 0.7


def test_fixed_views_depend_on_the_image_alone_not_its_batch():
    """A case predicted alone must get the test-time views it got inside its cohort."""
    from phyllodes.data.images import fixed_view, pixel_digests
    x = (torch.rand(12, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
         ).to(torch.uint8)
    d = pixel_digests(x)
    batch = fixed_view(x, d, 3, seed=7)
    alone = fixed_view(x[4:5], d[4:5], 3, seed=7)
    assert torch.equal(batch[4:5], alone)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    shuffled = fixed_view(x[perm], [d[i] for i in perm.tolist()], 3, seed=7)
    assert torch.equal(shuffled, batch[perm])
    # another view, another seed or another image: other pixels
    assert not torch.equal(fixed_view(x, d, 4, seed=7), batch)
    assert not torch.equal(fixed_view(x, d, 3, seed=8), batch)
    assert (batch - to_float(x)).abs().mean() > 0.01
    assert float(batch.min()) >= 0 and float(batch.max()) <= 1


def to_float(x):
    return x.float() / 255
