"""Semi-masked layers of the Lp-sphere method (arXiv 2103.16013; as the authors' `SparseLpSSOptimizer`,
WilliamLiPro/LpSS optimizer/sparse_optimizer.py, behaves: the paper's definition is unknown): the forward pass
uses W * M, while W (and LpSGD's feature vector) keep the latent values of masked entries, so a regrown entry
resumes from its latent value.

Autograd through W * M gives masked entries a zero gradient; the gradient of the product itself is dense and is kept
in `dense_grad` when `capture` is set (the topology update's growth criterion; a reference, no copy). The mask has
the weight's shape: rows of a linear layer, filters [in, kh, kw] of a convolution (a filter is an output
unit, as the authors' `LpNormalize_cnn` normalises it).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import WeightLayer
from .wrn import DenseConv2d


class SemiMasked(WeightLayer):
    """Mixin: call `_init_mask()` after the parameter exists; the subclass's forward uses `_masked_weight()`. List it
    first among the bases, so that its `effective_weight` (W * M) wins over a dense layer's (W)."""

    capture: bool
    dense_grad: torch.Tensor | None

    def _init_mask(self) -> None:
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))
        self.capture = False
        self.dense_grad = None

    def _stash(self, grad: torch.Tensor) -> None:
        self.dense_grad = grad.detach()

    def _masked_weight(self) -> torch.Tensor:
        w = self.weight * self.mask
        if self.capture and w.requires_grad:
            w.register_hook(self._stash)
        return w

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def num_trainable(self, updated: Callable[[nn.Parameter], bool]) -> int:
        n = int(self.mask.sum()) if updated(self.weight) else 0
        return n + (self.bias.numel() if self.bias is not None and updated(self.bias) else 0)


class SemiMaskedLinear(SemiMasked, nn.Linear):
    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__(n_in, n_out, bias=bias)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._masked_weight(), self.bias)


class SemiMaskedConv2d(SemiMasked, DenseConv2d):
    """A DenseConv2d (the wide ResNets' conv, with the authors' init) whose forward pass uses W * M."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self._masked_weight(), self.bias)


def semi_masked_factory(kind: str, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                        index: int) -> WeightLayer:
    """methods/nn/wrn.py LayerFactory: every conv and the fc semi-masked (all four roles, as the authors' masks)."""
    if kind == "fc":
        return SemiMaskedLinear(in_channels, out_channels, bias=True)
    return SemiMaskedConv2d(in_channels, out_channels, kernel_size, stride=stride)
