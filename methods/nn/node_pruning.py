"""Node pruning after training: remove whole hidden units ranked by a score, evaluate, repeat for each share.

Buffoni et al., "Spectral pruning of fully connected layers", Sci. Rep. 12, 11201 (2022), arXiv
2108.00940 (Fig. 3 caption; authors' Buffoni/spectral_learning Funzioni.py, multilayer.py) rank the hidden
nodes of a trained network and remove the lowest-ranked share without retraining:
- "Spectral": score |lam_out| of a spectral layer W = -lam_out * phi; removing a node sets its eigenvalue to 0;
- "Dense": score the incoming connectivity sum_j |w_ij| of a direct-space layer; removal zeroes that row.
In both, one percentile is taken over the nodes of ALL hidden layers pooled (as the authors' code); the output
layer is never pruned. A removed node loses every incoming weight and its bias (lam = 0 alone leaves the bias),
so with relu, tanh or elu it outputs 0 and nothing flows through it (with sigmoid it outputs the constant 0.5,
as in the authors' code).

"Percentile q" here means: the round(q% * N) lowest-scoring of the N hidden nodes are removed (ties broken by
position, so the share is exact); the authors' `np.percentile` threshold differs from it only by interpolation.
Each share is evaluated on its own copy of the trained network, so one training run yields the whole curve
(the pre-training filter, which retrains after removing, is the `spectral_filter` method instead).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import weight_layers
from .spectral_layers import SINGLE_SET, SpectralLinear

SCORES = ("auto", "eigenvalue", "connectivity")


def single_set(layer: nn.Module) -> bool:
    """A layer whose node is removed by zeroing its eigenvalue (W = -lam_out * phi)."""
    return isinstance(layer, SpectralLinear) and layer.variant in SINGLE_SET


def layer_rules(model: nn.Module, rule: str) -> list[str]:
    """The score each hidden layer is ranked by. `auto` may not mix eigenvalues and connectivities, whose scales
    have nothing in common, in one pooled ranking."""
    layers = weight_layers(model)[:-1]
    if not layers:
        raise ValueError("node pruning needs at least one hidden layer")
    if rule == "auto":
        kinds = {single_set(l) for l in layers}
        if len(kinds) > 1:
            raise ValueError("prune_score=auto would rank eigenvalues against connectivities in one pooled ranking "
                             "(hidden layers mix single-set spectral and other layers); set prune_score=connectivity")
        return ["eigenvalue" if kinds.pop() else "connectivity"] * len(layers)
    return [rule] * len(layers)


def _layer_score(layer: nn.Module, rule: str) -> torch.Tensor:
    if rule == "eigenvalue":
        # W_ij = (lam_in_j - lam_out_i) phi_ij: only without sending eigenvalues does lam_out_i = 0 remove node i
        # (Sci. Rep. 2022 ranks the nodes of W = -lam_out * phi; Fig. 3).
        if not single_set(layer):
            raise ValueError(f"prune_score=eigenvalue needs spectral layers with one eigenvalue set "
                             f"({', '.join(SINGLE_SET)}), got {type(layer).__name__}"
                             + (f" {layer.variant}" if isinstance(layer, SpectralLinear) else ""))
        return layer.lam_out.detach().abs()
    if rule == "connectivity":
        if hasattr(layer, "coordinates"):  # a truly sparse layer (methods/nn/sparse_linear.py): no dense copy
            rows, _, v = layer.coordinates()
            return torch.zeros(layer.out_features, dtype=v.dtype, device=v.device).index_add_(0, rows, v.abs())
        w = layer.effective_weight().detach()
        return w.reshape(w.shape[0], -1).abs().sum(1)
    raise ValueError(f"unknown prune_score {rule!r}; allowed: {', '.join(SCORES)}")


def node_scores(model: nn.Module, rule: str = "auto") -> list[torch.Tensor]:
    """One score per hidden node, per hidden layer (every weight layer but the last). `auto`: |lam_out| for
    networks of single-eigenvalue-set spectral layers, incoming connectivity for every other network."""
    return [_layer_score(l, r) for l, r in zip(weight_layers(model)[:-1], layer_rules(model, rule))]


def removal_masks(scores: list[torch.Tensor], percent: float) -> list[torch.Tensor]:
    """Boolean masks (True = remove) of the round(percent% * N) lowest scores pooled over all layers."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    flat = torch.cat(scores)
    k = round(percent / 100 * flat.numel())
    drop = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    drop[torch.argsort(flat, stable=True)[:k]] = True
    return list(drop.split([s.numel() for s in scores]))


def remove_nodes_(model: nn.Module, drops: list[torch.Tensor]) -> None:
    """Remove the hidden nodes marked in `drops` (one mask per hidden layer), in place."""
    for layer, drop in zip(weight_layers(model)[:-1], drops):
        layer.remove_units_(drop)


def prune_(model: nn.Module, percent: float, rule: str = "auto") -> int:
    """Remove `percent`% of the hidden nodes of `model` in place; the number removed."""
    drops = removal_masks(node_scores(model, rule), percent)
    remove_nodes_(model, drops)
    return int(sum(int(d.sum()) for d in drops))
