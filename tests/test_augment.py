"""Batch augmentation (methods/data/augment.py) against per-sample references: reflect-padded crop windows, flips,
clipped Cutout holes, normalisation, and reproducibility from the caller's generator."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsebench.methods.data.augment import FASHION_MNIST_LPSS, PRESETS, Augment, augment, normalize


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b=64, c=3, h=10, w=12, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(123), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device(dtype):
    x = batch(dtype=dtype)
    y = augment(x, gen(), pad=4, flip=True, cutout=6, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device


@pytest.mark.parametrize("pad", [1, 4, 9])
def test_crop_and_flip_are_a_window_of_the_reflect_padded_input(pad):
    x = batch(b=200, h=10, w=12)
    aug = Augment(pad=pad, flip=True, cutout=0)
    p = aug.draw(x, gen(1))
    y = aug.apply(x, p)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    for i in range(len(x)):                                     # the per-sample reference (torchvision order)
        t, l = int(p.top[i]), int(p.left[i])
        ref = padded[i, :, t:t + 10, l:l + 12]
        if p.flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(y[i], ref), i
    # Offsets are uniform on {0..2P}: both ends occur.
    for o in (p.top, p.left):
        assert int(o.min()) == 0 and int(o.max()) == 2 * pad
    assert torch.equal(aug(x, gen(1)), y)                       # __call__ = apply(draw)


def test_flip_fraction_and_flip_alone():
    x = batch(b=4000, c=1, h=4, w=5)
    aug = Augment(pad=0, flip=True, cutout=0)
    p = aug.draw(x, gen(2))
    assert abs(p.flip.double().mean().item() - 0.5) < 0.04      # std of the fraction is 0.008
    y = aug.apply(x, p)
    assert torch.equal(y[p.flip], x[p.flip].flip(-1)) and torch.equal(y[~p.flip], x[~p.flip])


@pytest.mark.parametrize("h,w", [(28, 28), (7, 9)])
def test_cutout_zeroes_one_clipped_square_per_sample(h, w):
    L = 6
    x = torch.rand(500, 2, h, w, generator=gen(3)) + 1.0       # no zeros before Cutout
    aug = Augment(pad=0, flip=False, cutout=L)
    p = aug.draw(x, gen(4))
    y = aug.apply(x, p)
    full = 0
    for i in range(len(x)):
        cy, cx = int(p.hole_y[i]), int(p.hole_x[i])
        assert 0 <= cy < h and 0 <= cx < w
        y1, y2 = max(cy - L // 2, 0), min(cy + L // 2, h)       # DeVries & Taylor: clipped at the borders
        x1, x2 = max(cx - L // 2, 0), min(cx + L // 2, w)
        hole = torch.zeros(h, w, dtype=torch.bool)
        hole[y1:y2, x1:x2] = True
        assert torch.equal(y[i] == 0, hole.expand(2, h, w)), i   # exactly the hole, in every channel
        assert torch.equal(y[i][:, ~hole], x[i][:, ~hole])
        full += (y2 - y1, x2 - x1) == (L, L)
    assert full > 0                                             # unclipped holes are L x L


def test_normalise_then_cutout_in_the_fashion_mnist_preset():
    assert PRESETS["lpss_fashion_mnist"] is FASHION_MNIST_LPSS
    assert (FASHION_MNIST_LPSS.pad, FASHION_MNIST_LPSS.flip, FASHION_MNIST_LPSS.cutout) == (4, True, 6)
    assert (FASHION_MNIST_LPSS.mean, FASHION_MNIST_LPSS.std) == ((0.13,), (0.31,))
    x = torch.full((50, 1, 28, 28), 0.5)
    y = FASHION_MNIST_LPSS(x, gen(5))
    value = (0.5 - 0.13) / 0.31
    assert torch.allclose(y[y != 0], torch.tensor(value))      # constant image: crop/flip change nothing
    holes = (y == 0).flatten(1).sum(1)
    assert int(holes.min()) >= 9 and int(holes.max()) == 36     # hole zeroed after normalising (3x3 .. 6x6)
    assert torch.equal(FASHION_MNIST_LPSS.eval_transform(x), torch.full_like(x, value))
    rgb = torch.ones(2, 3, 4, 4)
    n = normalize(rgb, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert n[:, :, 0, 0].tolist() == [[1.0, 3.0, 0.5]] * 2
    with pytest.raises(ValueError, match="channels"):
        normalize(rgb, (0.1, 0.2), (1.0, 1.0))


def test_reproducible_from_the_generator_and_global_rng_untouched():
    x = batch()
    state = torch.get_rng_state()
    a = augment(x, gen(7))
    b = augment(x, gen(7))
    c = augment(x, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    g = gen(7)
    first, second = augment(x, g), augment(x, g)                # the generator advances between batches
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_bad_settings_are_refused():
    x = batch(h=4, w=4)
    with pytest.raises(ValueError, match="reflect padding"):
        augment(x, gen(), pad=4)
    with pytest.raises(ValueError, match="mean and std"):
        Augment(mean=(0.1,))
    with pytest.raises(ValueError, match="float batch"):
        Augment(pad=0).apply(torch.zeros(2, 4, 4), Augment(pad=0).draw(x, gen()))
