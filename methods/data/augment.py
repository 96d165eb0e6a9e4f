"""Training-time image augmentation on whole batches on the device (docs/design.md, "Habits": the dataset is a
device tensor and batches are slices of it, so there is no DataLoader and no per-sample transform).

One batch [B, C, H, W] (float, pixels in [0, 1] as methods/data/ stores images) goes through, in the order of
the Lp-sphere paper's Fashion-MNIST demo (WilliamLiPro/LpSS demo.py `transform_train`, commit
9c8cbc1):
1. random crop with reflect padding: pad by P on every side, crop back to H x W at an offset drawn uniformly
   from {0..2P}^2 per sample (torchvision RandomCrop(padding=P, padding_mode="reflect") semantics);
2. horizontal flip with probability 0.5 per sample (torchvision RandomHorizontalFlip, applied after the crop);
3. per-channel normalisation (x - mean) / std (torchvision Normalize);
4. Cutout (DeVries & Taylor 2017, arXiv 1708.04552): one square hole per sample, centre drawn uniformly over the
   H x W pixels, rows [cy - L//2, cy + L//2) and columns likewise, clipped at the borders, set to 0 after the
   normalisation (as LpSS optimizer/transform.py `Cutout`, which follows the authors' uoguelph-mlrg/Cutout). The
   hole side is therefore 2 * (L // 2): L for the even L of every published setting.
Steps 1 and 2 are one gather: the source row and column of every output pixel is computed (reflection folded
into the index arithmetic instead of materialising the padded batch), so no Python loop runs over the batch.

Random draws come from a caller-owned torch.Generator (never the global RNG), so a run is reproducible and the
Trainer's data-order generator is untouched. Draws are made on the generator's device and moved to the batch's:
give a generator on the batch's device to avoid the small host-to-device copy per batch. The same generator
state gives the same output.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch


class AugmentParams(NamedTuple):
    """Per-sample draws, long/bool tensors [B] on the batch's device (None where the step is off)."""

    top: torch.Tensor | None       # crop offset in the padded image, 0..2P
    left: torch.Tensor | None
    flip: torch.Tensor | None      # bool
    hole_y: torch.Tensor | None    # Cutout centre, 0..H-1
    hole_x: torch.Tensor | None    # 0..W-1


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    # Reflect padding without repeating the edge (numpy/torch "reflect"): -1 -> 1, n -> n - 2. One fold suffices
    # because pad < n (checked), the same limit torch.nn.functional.pad(mode="reflect") has.
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


@lru_cache(maxsize=32)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached so that a training step does not copy the constants to the device every batch.
    m = torch.tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1)
    return m, s


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel; one value broadcasts over every channel. Also the test-time transform."""
    if len(mean) != len(std) or len(mean) not in (1, x.shape[1]):
        raise ValueError(f"mean/std of lengths {len(mean)}/{len(std)} do not fit {x.shape[1]} channels")
    m, s = _channel_stats(tuple(float(v) for v in mean), tuple(float(v) for v in std), x.device, x.dtype)
    return (x - m) / s


@dataclass(frozen=True)
class Augment:
    """crop (reflect pad `pad`, 0 = off) -> flip (p = 0.5, if `flip`) -> normalise (if `mean`/`std`) -> Cutout
    (side `cutout`, 0 = off). `augment(x, generator)`; `draw` and `apply` separately for tests and replays."""

    pad: int = 4
    flip: bool = True
    cutout: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.pad < 0 or self.cutout < 0:
            raise ValueError(f"pad and cutout must be >= 0, got pad={self.pad}, cutout={self.cutout}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> AugmentParams:
        b, _, h, w = x.shape
        if self.pad >= min(h, w):
            raise ValueError(f"reflect padding {self.pad} needs images larger than that, got {h}x{w}")
        g, dev = generator, generator.device
        # A fixed draw order (crop, flip, hole) so that a generator state always maps to the same batch.
        draws: list[torch.Tensor] = []
        if self.pad:
            draws += [torch.randint(0, 2 * self.pad + 1, (b,), generator=g, device=dev) for _ in range(2)]
        if self.flip:
            draws.append((torch.rand(b, generator=g, device=dev) < 0.5).long())
        if self.cutout:
            draws += [torch.randint(0, n, (b,), generator=g, device=dev) for n in (h, w)]
        it = iter(torch.stack(draws).to(x.device, non_blocking=True) if draws else ())   # one transfer
        top, left = (next(it), next(it)) if self.pad else (None, None)
        flip = next(it).bool() if self.flip else None
        hy, hx = (next(it), next(it)) if self.cutout else (None, None)
        return AugmentParams(top, left, flip, hy, hx)

    def apply(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"expected a float batch [B, C, H, W], got {x.dtype} {tuple(x.shape)}")
        b, c, h, w = x.shape
        if p.top is not None or p.flip is not None:
            rows = torch.arange(h, device=x.device).expand(b, h)
            cols = torch.arange(w, device=x.device).expand(b, w)
            if p.flip is not None:
                # Flip after the crop: output column j reads cropped column w - 1 - j.
                cols = torch.where(p.flip[:, None], w - 1 - cols, cols)
            if p.top is not None:
                # Output pixel (y, j) reads padded pixel (top + y, left + j), i.e. source pixel reflect(. - pad).
                rows = _reflect(rows + p.top[:, None] - self.pad, h)
                cols = _reflect(cols + p.left[:, None] - self.pad, w)
            bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
            ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
            x = x[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]   # one gather [B, C, H, W]
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        if p.hole_y is not None:
            half = self.cutout // 2
            ys = torch.arange(h, device=x.device)
            xs = torch.arange(w, device=x.device)
            # Comparing against the unclipped bounds clips at the borders for free.
            in_y = (ys >= p.hole_y[:, None] - half) & (ys < p.hole_y[:, None] + half)
            in_x = (xs >= p.hole_x[:, None] - half) & (xs < p.hole_x[:, None] + half)
            x = x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x, generator))

    def eval_transform(self, x: torch.Tensor) -> torch.Tensor:
        """What the test split gets: only the normalisation (demo.py `transform_test`)."""
        return x if self.mean is None else normalize(x, self.mean, self.std)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True, cutout: int = 6,
            mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> torch.Tensor:
    """One augmented copy of batch `x` [B, C, H, W]; see `Augment`."""
    return Augment(pad=pad, flip=flip, cutout=cutout, mean=mean, std=std)(x, generator)


# LpSS demo.py (Fashion-MNIST): RandomCrop(28, padding=4, padding_mode='reflect'), RandomHorizontalFlip(),
# ToTensor(), Normalize((0.13,), (0.31,)), Cutout(1, 6) (`transform_train`); the demo notes this augmentation
# was tuned after the paper, so it may be stronger than the paper's own.
FASHION_MNIST_LPSS = Augment(pad=4, flip=True, cutout=6, mean=(0.13,), std=(0.31,))

# The standard CIFAR augmentation: 4-pixel padding, random crop, horizontal flip, no Cutout (He et al. 2016, arXiv
# 1512.03385 section 4.2). He et al. pad with zeros; Augment's padding is reflect (as the LpSS demo's), our choice.
CROP_FLIP = Augment(pad=4, flip=True, cutout=0)
# Our choice for digits/MNIST: a 2-pixel shift only, no flip (a mirrored digit is another symbol or none, 2 <-> 5).
CROP = Augment(pad=2, flip=False, cutout=0)

# `train.augment` names (methods/core/config.py). The Trainer normalises every split once with a preset's mean/std and
# then applies only crop/flip/Cutout to training batches. That equals this module's (and demo.py's) order: per-channel
# normalisation commutes with the crop/flip gather (reflect padding only copies pixels; zero padding would not), and
# Cutout comes after Normalize in demo.py.
PRESETS: dict[str, Augment] = {"lpss_fashion_mnist": FASHION_MNIST_LPSS, "crop_flip": CROP_FLIP, "crop": CROP}
