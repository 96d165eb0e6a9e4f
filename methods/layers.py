"""Layers. Every layer that holds weights exposes `effective_weight()`: the tensor the forward pass really
uses (W for a dense layer, W*M for a masked one, (lam_in - lam_out) * phi for a spectral one), and
`effective_bias()`. `methods/metrics.py` measures only through these, so that every method's sparsity,
parameter and neuron counts are computed the same way (DESIGN.md, "Contracts").

A layer whose optimizer updates fewer scalars than `numel()` of its parameters (masked entries, frozen
eigenvectors) overrides `num_trainable()`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class WeightLayer(nn.Module):
    """Interface of a layer measured by methods.metrics (a mixin; concrete layers also subclass nn.Module)."""

    def effective_weight(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def effective_bias(self) -> torch.Tensor | None:
        return getattr(self, "bias", None)

    def num_trainable(self, updated: Callable[[nn.Parameter], bool]) -> int:
        """Scalars of this layer's own parameters that the optimizer updates (`updated(p)`: p is in it)."""
        return sum(p.numel() for p in self.parameters(recurse=False) if updated(p))


class DenseLinear(nn.Linear, WeightLayer):
    """nn.Linear with the WeightLayer interface: the effective weight is the weight itself."""

    def effective_weight(self) -> torch.Tensor:
        return self.weight


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """The model's weight layers in forward order (a model may define `weight_layers()` to override)."""
    if hasattr(model, "weight_layers"):
        return list(model.weight_layers())
    return [m for m in model.modules() if isinstance(m, WeightLayer)]
