"""A truly sparse linear layer: it stores only the nonzero weights (a 1-D `values` parameter) and their
coordinates (`rows`, `cols` buffers), never a dense weight or a dense mask, and computes forward and backward
on torch's CSR kernels (issue 18; the truly sparse SET of Curci, Mocanu and Pechenizkiy, "Truly Sparse Neural
Networks at Scale", 2021, and the SET authors' SciPy-CSR code, dcmocanu/sparse-evolutionary-artificial-neural-networks
SET-MLP-Sparse-Python-Data-Structures/set_mlp_sparse_data_structures.py, which also stores (rows, cols, values)).

Slots: entry s of `values` is the weight at (rows[s], cols[s]). The slot order is free (SET rewiring writes a
regrown connection into the slot of a removed one, so the optimizer state stays aligned with `values`); the CSR
views of W and of W^T are rebuilt from the coordinates after every topology change (`rebuild_()`), as
permutations `perm` / `perm_t` from slots to CSR order.

Backward (`_SparseLinearFn`), for y = x W^T with W sparse (n_out x n_in):
- dL/dx = dL/dy W, computed as the CSR product W^T (dL/dy)^T;
- dL/dW only at the stored coordinates: (dL/dy^T x) sampled at the CSR pattern by `torch.sparse.sampled_addmm`
  (SDDMM), so the dense outer product is never formed.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .layers import WeightLayer


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _SparseLinearFn(torch.autograd.Function):
    """y = x W^T for W given by the CSR structure of `layer` and the slot-ordered `values`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, layer: "SparseLinear") -> torch.Tensor:
        w = _csr(layer.crow, layer.col, values[layer.perm], (layer.out_features, layer.in_features))
        ctx.save_for_backward(x, values)
        ctx.layer, ctx.w = layer, w
        # (W x^T)^T: CSR times dense is the kernel torch has for CPU and CUDA (dense times CSR was ~4x slower in
        # benchmarks/sparse_compute.py). The result is made row-major again: elementwise ops that draw random
        # numbers (dropout) fill in memory order, so a column-major y would get another dropout mask than the
        # masked layer's y for the same seed.
        return torch.sparse.mm(w, x.t()).t().contiguous()

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, values = ctx.saved_tensors
        layer = ctx.layer
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            w_t = _csr(layer.crow_t, layer.col_t, values[layer.perm_t], (layer.in_features, layer.out_features))
            grad_x = torch.sparse.mm(w_t, grad_y.t()).t()
        if ctx.needs_input_grad[1]:
            # W's own CSR as the pattern: with beta = 0 its values are ignored (torch.sparse.sampled_addmm docs).
            sampled = torch.sparse.sampled_addmm(ctx.w, grad_y.t().contiguous(), x.contiguous(), beta=0.0)
            grad_values = torch.empty_like(values)
            grad_values[layer.perm] = sampled.values()
        return grad_x, grad_values, None


def _rebuild_after_load(module: "SparseLinear", incompatible_keys) -> None:
    module.rebuild_()  # module level: the hook must pickle with the module


class SparseLinear(WeightLayer):
    """Linear layer holding only (rows, cols, values) of its nonzero weights; see the module docstring.

    `unit_mask` and `budget` mirror MaskedLinear's (node pruning switches units off; SET regrows up to the
    budget, which equals the number of slots: the storage never grows).
    """

    def __init__(self, n_in: int, n_out: int, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
                 bias: torch.Tensor | None = None):
        super().__init__()
        if not (rows.shape == cols.shape == values.shape and rows.dim() == 1):
            raise ValueError(f"rows, cols, values must be 1-D of one length, got {rows.shape}, {cols.shape}, {values.shape}")
        self.in_features, self.out_features = int(n_in), int(n_out)
        # int32 coordinates while they fit (4 bytes an index instead of 8; torch's CSR kernels take int32 indices
        # directly): with the CSR views the layer stores 4 + 6 * 4 = 28 bytes per weight.
        index = torch.int32 if max(n_in, n_out, rows.numel()) < 2**31 - 1 else torch.long
        self.register_buffer("rows", rows.to(index).clone())
        self.register_buffer("cols", cols.to(index).clone())
        self.values = nn.Parameter(values.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.register_buffer("unit_mask", torch.ones(n_out, dtype=torch.bool))
        self.register_buffer("budget", torch.tensor(rows.numel()))
        for name in ("perm", "crow", "col", "perm_t", "crow_t", "col_t"):
            self.register_buffer(name, torch.empty(0, dtype=index), persistent=False)
        self.rebuild_()
        self.register_load_state_dict_post_hook(_rebuild_after_load)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> "SparseLinear":
        """The entries of `weight` where `mask` is True (a construction-time conversion, e.g. of an ER draw)."""
        rows, cols = mask.nonzero().unbind(1)
        return cls(weight.shape[1], weight.shape[0], rows, cols, weight.detach()[rows, cols], bias)

    @torch.no_grad()
    def rebuild_(self) -> None:
        """Recompute the CSR views of W and W^T from the coordinates (after a topology change or a load)."""
        n_out, n_in = self.out_features, self.in_features
        for name, major, minor, n_major, n_minor in (("", self.rows, self.cols, n_out, n_in),
                                                     ("_t", self.cols, self.rows, n_in, n_out)):
            index = major.dtype
            perm = torch.argsort(major.long() * n_minor + minor.long())
            crow = torch.zeros(n_major + 1, dtype=index, device=major.device)
            crow[1:] = torch.cumsum(torch.bincount(major, minlength=n_major), 0)
            setattr(self, "perm" + name, perm.to(index))
            setattr(self, "crow" + name, crow)
            setattr(self, "col" + name, minor[perm].contiguous())

    def flat_index(self) -> torch.Tensor:
        """Row-major position of each slot in the dense (n_out, n_in) matrix."""
        return self.rows.long() * self.in_features + self.cols.long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _SparseLinearFn.apply(x, self.values, self)
        return y if self.bias is None else y + self.bias

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, values) of the stored weights: what methods/core/metrics.py measures, without densifying."""
        return self.rows, self.cols, self.values.detach()

    def effective_weight(self) -> torch.Tensor:
        # Dense, for the consumers that need a matrix (the decorrelated initialisation); the metrics and node
        # pruning read coordinates() instead.
        w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype, device=self.values.device)
        return w.index_put_((self.rows, self.cols), self.values.detach())

    @torch.no_grad()
    def remove_units_(self, drop: torch.Tensor) -> None:
        self.values[drop[self.rows]] = 0.0
        self.unit_mask[drop] = False
        if self.bias is not None:
            self.bias[drop] = 0.0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint taken after neuron pruning (keep_slots_) holds fewer slots than a freshly built layer: take
        # its size first (the same Parameter object, so an optimizer built before the load still holds it).
        values = state_dict.get(prefix + "values")
        if values is not None and values.shape != self.values.shape:
            self.values.data = torch.empty_like(values, device=self.values.device)
            self.rows = torch.empty(values.shape, dtype=self.rows.dtype, device=self.rows.device)
            self.cols = torch.empty(values.shape, dtype=self.cols.dtype, device=self.cols.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def keep_slots_(self, keep: torch.Tensor) -> None:
        """Drop the slots where `keep` (bool [nnz]) is False for good (neuron pruning removes a unit's connections):
        the storage shrinks and the budget with it. `values` stays the same Parameter object (its data is swapped),
        so the optimizer keeps it; the caller compacts the optimizer's per-slot state alike."""
        self.rows, self.cols = self.rows[keep].clone(), self.cols[keep].clone()
        self.values.data = self.values.data[keep].clone()
        if self.values.grad is not None:
            self.values.grad = self.values.grad[keep].clone()
        self.budget.fill_(self.values.numel())
        self.rebuild_()

    def num_trainable(self, updated: Callable[[nn.Parameter], bool]) -> int:
        n = self.values.numel() if updated(self.values) else 0
        if self.bias is not None and updated(self.bias):
            n += int(self.unit_mask.sum())
        return n

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.values.numel()}"
