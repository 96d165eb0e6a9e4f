"""Layers. Every layer that holds weights exposes `effective_weight()`: the tensor the forward pass really
uses (W for a dense layer, W = W*M for a masked one, (lam_in - lam_out) * phi for a spectral one), and
`effective_bias()`. `methods/core/metrics.py` measures only through these, so that every method's sparsity,
parameter and neuron counts are computed the same way (docs/design.md, "Contracts").

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

    @torch.no_grad()
    def remove_units_(self, drop: torch.Tensor) -> None:
        """Remove output units `drop` (bool [out]): every incoming weight and the bias become 0, so a removed unit
        outputs act(0) (methods/nn/node_pruning.py). Layers whose weight is not a `weight` parameter override this."""
        self.weight[drop] = 0.0
        bias = getattr(self, "bias", None)
        if bias is not None:
            bias[drop] = 0.0

    def num_trainable(self, updated: Callable[[nn.Parameter], bool]) -> int:
        """Scalars of this layer's own parameters that the optimizer updates (`updated(p)`: p is in it)."""
        return sum(p.numel() for p in self.parameters(recurse=False) if updated(p))

    def flop_positions(self) -> int | None:
        """How many times per example the weight is applied: 1 for a linear layer; a convolution overrides it with
        its output's spatial size, known once it has run (None before). methods/core/metrics.py `flops`."""
        return 1


class DenseLinear(nn.Linear, WeightLayer):
    """nn.Linear with the WeightLayer interface: the effective weight is the weight itself."""

    def effective_weight(self) -> torch.Tensor:
        return self.weight


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """The model's weight layers in forward order (a model may define `weight_layers()` to override)."""
    if hasattr(model, "weight_layers"):
        return list(model.weight_layers())
    return [m for m in model.modules() if isinstance(m, WeightLayer)]


def _remask_after_load(module: "MaskedLinear", incompatible_keys) -> None:
    module._remask()  # a module-level function: the hook must pickle with the module


class MaskedLinear(DenseLinear):
    """A sparse linear layer: `weight` is held at exactly 0 where the boolean `mask` buffer is False
    (checkpointed with the model), so the forward pass uses `weight` as stored and equals W * M.

    Masked entries get a zero gradient (a hook multiplies it by the mask), and the methods that change the
    mask zero the weights and reset their optimizer state. `unit_mask` switches off the bias of removed output units
    (neuron pruning), so that a pruned unit outputs act(0) and nothing flows through it. `budget` is the
    number of weights the layer may hold (SET regrows up to it; neuron pruning shrinks it).
    """

    def __init__(self, n_in: int, n_out: int, bias: bool = True, mask: torch.Tensor | None = None):
        super().__init__(n_in, n_out, bias=bias)
        mask = torch.ones(n_out, n_in, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        if mask.shape != (n_out, n_in):
            raise ValueError(f"mask shape {tuple(mask.shape)} != ({n_out}, {n_in})")
        self.register_buffer("mask", mask)
        self.register_buffer("unit_mask", torch.ones(n_out, dtype=torch.bool))
        self.register_buffer("budget", mask.sum())
        # Invariant: `weight` is exactly 0 where `mask` is False. The forward pass can then use `weight` as it
        # is, and only the gradient is masked (one elementwise op per step instead of W * M in the forward
        # pass and again in its backward: benchmarks/method_epoch_time.py). A zero weight with a zero gradient
        # stays zero under SGD (momentum, L2), Adam/Adamax and the decoupled decay; whatever changes the mask
        # (SET, neuron pruning) zeroes the weight and its optimizer state itself. Loading a state dict re-masks
        # and re-installs the hooks (tensor hooks do not survive deepcopy, pickling or assign=True loads).
        self._remask()
        self.register_load_state_dict_post_hook(_remask_after_load)

    @torch.no_grad()
    def _remask(self) -> None:
        self.weight.mul_(self.mask)
        if self.bias is not None:
            self.bias.mul_(self.unit_mask)
        for param, hook in ((self.weight, self._mask_grad), (self.bias, self._mask_bias_grad)):
            if param is not None and not getattr(param, "_sparsebench_masked", False):
                param.register_hook(hook)
                param._sparsebench_masked = True

    def __setstate__(self, state):
        super().__setstate__(state)
        for param in (self.weight, self.bias):
            if param is not None:
                param._sparsebench_masked = False
        self._remask()

    @torch.no_grad()
    def remove_units_(self, drop: torch.Tensor) -> None:
        # Through the masks, so that the removal survives a state-dict round trip. Optimizer state and the SET
        # budget are left alone: node_pruning removes units from copies that are only evaluated.
        self.mask[drop] = False
        self.unit_mask[drop] = False
        self._remask()

    def _mask_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.mask

    def _mask_bias_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.unit_mask

    def effective_weight(self) -> torch.Tensor:
        # What the forward pass uses. Not W * M: should the invariant ever break, weights_nonzero exceeds the
        # mask count and the tests see it.
        return self.weight

    def num_trainable(self, updated: Callable[[nn.Parameter], bool]) -> int:
        n = int(self.mask.sum()) if updated(self.weight) else 0
        if self.bias is not None and updated(self.bias):
            n += int(self.unit_mask.sum())
        return n
