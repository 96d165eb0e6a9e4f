"""Model families shared by the methods. An `MLP` is a chain of weight layers built by a factory, so that
dense, masked (SET), spectral and Lp-sphere networks share one forward pass and one set of metrics.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DenseLinear, WeightLayer

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}

LayerFactory = Callable[[int, int, bool, int], WeightLayer]  # (n_in, n_out, bias, index) -> layer


def dense_factory(n_in: int, n_out: int, bias: bool, index: int) -> WeightLayer:
    return DenseLinear(n_in, n_out, bias=bias)


class MLP(nn.Module):
    """Flatten -> [layer -> activation -> dropout] * len(hidden) -> layer (logits).

    `widths` is the whole chain (inputs, hidden..., classes). Dropout follows each hidden activation,
    never the logits.
    """

    def __init__(self, widths: Sequence[int], activation: str = "relu", dropout: float = 0.0, bias: bool = True,
                 factory: LayerFactory = dense_factory, batchnorm: bool = False):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least input and output widths, got {list(widths)}")
        self.widths = tuple(int(w) for w in widths)
        self.layers = nn.ModuleList(factory(a, b, bias, i) for i, (a, b) in enumerate(zip(self.widths[:-1], self.widths[1:])))
        self.activation = activation
        self.act = ACTIVATIONS[activation]()
        # Optional BatchNorm after every hidden layer, before its activation (the LpSS networks normalise after every
        # constrained layer, which absorbs the fixed scale of rows on the unit Lp sphere: methods/families/lp_sphere.py).
        self.norms = nn.ModuleList(nn.BatchNorm1d(w) for w in self.widths[1:-1]) if batchnorm else None
        self.dropout = float(dropout)
        self._last = len(self.layers) - 1

    def weight_layers(self) -> list[WeightLayer]:
        return list(self.layers)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        # Plain iteration and no dropout call at p = 0: slicing a ModuleList builds a new one every step
        # (benchmarks/train_throughput.py measured ~1% of an epoch for these two).
        h = x.flatten(1)
        hidden = []
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == self._last:
                break
            if self.norms is not None:
                h = self.norms[i](h)
            h = self.act(h)
            hidden.append(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
        return (h, hidden) if return_hidden else h
