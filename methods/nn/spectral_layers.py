"""Spectral layers (issue 5): a linear map parametrised in the spectral domain, in closed form.

Paper C (Chicchi et al., arXiv 2106.09021, Phys. Rev. E 104, 054312) and its parent (Giambagli et al.,
Nat. Commun. 12, 1330, 2021) write the map from layer k (N_in nodes) to layer k+1 (N_out nodes) as the
receiving block of the operator A = Phi Lambda Phi^-1 on the joint space, with Phi = [[I, 0], [phi, I]] and
Lambda = diag(lam_in, lam_out). Because (Phi - I)^2 = 0, Phi^-1 = 2I - Phi exactly, and the receiving block is

    W_ij = (lam_in_j - lam_out_i) * phi_ij          (i receiving node, j input node)

(`lin = mul(self.eig_in - self.eig_out, phi)` in the authors'
Jamba15/Spectral_parameters_reduction Example/Layers.py). The operator is never built and nothing is inverted:
tests/test_spectral_layers.py builds it explicitly once, in the test, to check this identity.

Variants (which parameters train, and the authors' initialisation: Example/Layers.py and
Example/lessparam_functions.py of Jamba15/Spectral_parameters_reduction at commit 44fc49e; the parent's
Buffoni/spectral_learning):
- eig_out: the parent's efficient layer: W = -lam_out * phi (lam_in fixed at 0), phi ~ U(-0.2, 0.2) frozen,
  lam_out ~ U(-0.5, 0.5) (Buffoni/spectral_learning, efficient `Spectral` layer).
- eig_out_full: the same layer with phi trainable too: the "full spectral network" that Sci. Rep. 2022 trains
  before post-training pruning by |lam_out|, and the retrained network of its pre-training filter.
- two_sets: Paper C "Spectral": phi = U diag(s) V frozen with U, V ~ N(0, 0.04^2) and s ~ U(0, 3) (fresh
  Gaussians, not SVD factors); lam_in ~ U(-0.97, 0.97), lam_out ~ U(-0.13, 0.13) trainable (`SSVD` with
  is_svd_trainable=False, `optimized_uniform(eig_in=0.97, eig_out=0.13)`). phi is stored once, materialised.
- ssvd: as two_sets with s trainable, lam_in = 0 and lam_out = 1 at init (`SSVD_full`).
- qr: B ~ N(0, 0.036^2), reduced QR of B^T = Q R, phi = R^T Q^T (= B at init); Q^T frozen, R^T trainable,
  lam_in ~ U(-0.97, 0.97), lam_out ~ U(-0.13, 0.13) (`QR`). `qr_triangular=True` (our default) keeps R^T
  lower-triangular (trapezoidal) as the paper's parameter count assumes (Example/plot_functions.py); False
  trains the full N_out x k matrix as the TF code does.
- full: phi trainable too (initialised like two_sets), with lam_in and lam_out: the parent's "full spectral
  training", which for optimisation is a reparametrised dense layer (SpectralTools README).
Biases start at 0 (Keras default in the authors' code).

`sparsity` > 0 applies Paper C's dynamic direct-space sparsification at every forward pass: the entries of W
at or below the sparsity-quantile of |W| are zeroed, so exactly floor(sparsity * numel) entries are 0 (ties
aside), and gradients reach the spectral parameters only through the survivors (Example/sparse_functions.py,
`QR_sparse` in Example/Layers.py). The same rule on a plain weight is `DenseSparseLinear` (`Sparse_Dense`).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import WeightLayer

VARIANTS = ("eig_out", "eig_out_full", "two_sets", "ssvd", "qr", "full")
# Variants with one eigenvalue per receiving node and none for the sending ones (W = -lam_out * phi): setting a
# node's eigenvalue to 0 removes it (Sci. Rep. 12, 11201, 2022, Fig. 3), so |lam_out| ranks nodes for pruning.
SINGLE_SET = ("eig_out", "eig_out_full")


def closed_form_weight(lam_in: torch.Tensor, lam_out: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """W_ij = (lam_in_j - lam_out_i) phi_ij: the receiving block of Phi Lambda (2I - Phi)."""
    return (lam_in[None, :] - lam_out[:, None]) * phi


def kth_smallest(a: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest (1-based) entry of `a` as a 0-dim tensor. A selection, not torch.quantile, which refuses
    tensors above ~16M elements (a PyTorch limit) and sorts. On the CPU numpy's introselect (np.partition)
    returns the same element ~6x faster than torch.kthvalue (500 x 784: 1.2 vs 7.5 ms, one thread), which made
    dynamic sparsification the larger part of a sparse step; on an accelerator torch.kthvalue stays on the device."""
    flat = a.reshape(-1)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return torch.as_tensor(np.partition(flat.numpy(), k - 1)[k - 1])
    return torch.kthvalue(flat, k).values


def dynamic_sparsify(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """W with its floor(sparsity * numel) smallest-|W| entries zeroed (threshold recomputed from W, no gradient
    through the choice; gradients flow through the surviving entries)."""
    k = int(sparsity * w.numel())
    if k <= 0:
        return w
    a = w.detach().abs()
    return w * (a > kth_smallest(a, k))


def without_rows(w: torch.Tensor, removed: torch.Tensor | None) -> torch.Tensor:
    return w if removed is None else w.masked_fill(removed[:, None], 0.0)


def check_sparsity(sparsity: float) -> float:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


class SpectralLinear(WeightLayer):
    def __init__(self, n_in: int, n_out: int, variant: str = "two_sets", bias: bool = True, sparsity: float = 0.0,
                 qr_triangular: bool = True, lam_init: tuple[float, float] | None = None,
                 generator: torch.Generator | None = None):
        """`lam_init=(a, b)`: start with lam_in = a and lam_out = b instead of the variant's own draw (QR_sparse
        uses (1, 0): W = phi = B at init, Example/sparse_functions.py)."""
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown spectral variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        self.in_features, self.out_features = n_in, n_out
        self.variant, self.sparsity, self.qr_triangular = variant, check_sparsity(sparsity), bool(qr_triangular)
        # Units removed from a dynamically sparsified layer (remove_units_); None: none.
        self.removed_units: torch.Tensor | None = None
        g = generator
        k = min(n_in, n_out)

        def uniform(n: int, a: float) -> torch.Tensor:
            return (torch.rand(n, generator=g) * 2 - 1) * a

        def svd_factors():
            u = torch.randn(n_out, k, generator=g) * 0.04
            v = torch.randn(k, n_in, generator=g) * 0.04
            s = torch.rand(k, generator=g) * 3.0
            return u, s, v

        if variant in SINGLE_SET:
            phi = uniform(n_out * n_in, 0.2).view(n_out, n_in)
            if variant == "eig_out_full":
                self.phi = nn.Parameter(phi)
            else:
                self.register_buffer("phi", phi)
            self.register_buffer("lam_in", torch.zeros(n_in))
            self.lam_out = nn.Parameter(uniform(n_out, 0.5))
        elif variant in ("two_sets", "full"):
            u, s, v = svd_factors()
            phi = u @ (s[:, None] * v)
            if variant == "full":
                self.phi = nn.Parameter(phi)
            else:
                self.register_buffer("phi", phi)
            self.lam_in = nn.Parameter(uniform(n_in, 0.97))
            self.lam_out = nn.Parameter(uniform(n_out, 0.13))
        elif variant == "ssvd":
            u, s, v = svd_factors()
            self.register_buffer("u", u)
            self.register_buffer("v", v)
            self.s = nn.Parameter(s)
            self.lam_in = nn.Parameter(torch.zeros(n_in))
            self.lam_out = nn.Parameter(torch.ones(n_out))
        else:  # qr
            b = torch.randn(n_out, n_in, generator=g) * 0.036
            q, r = torch.linalg.qr(b.T, mode="reduced")          # B^T = Q R, Q: n_in x k, R: k x n_out
            self.register_buffer("qt", q.T.contiguous())         # k x n_in, frozen (orthonormal rows)
            self.rt = nn.Parameter(r.T.contiguous())              # n_out x k, lower-trapezoidal
            tri = torch.tril(torch.ones(n_out, k, dtype=torch.bool))
            self.register_buffer("rt_mask", tri if qr_triangular else torch.ones(n_out, k, dtype=torch.bool))
            self.lam_in = nn.Parameter(uniform(n_in, 0.97))
            self.lam_out = nn.Parameter(uniform(n_out, 0.13))
        if lam_init is not None:
            with torch.no_grad():
                self.lam_in.fill_(lam_init[0])
                self.lam_out.fill_(lam_init[1])
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def eigenvectors(self) -> torch.Tensor:
        """phi, the non-trivial block of the eigenvector matrix (N_out x N_in)."""
        if self.variant == "ssvd":
            return self.u @ (self.s[:, None] * self.v)
        if self.variant == "qr":
            # Multiplying by the mask, rather than masking the gradient with a hook, keeps the entries above the
            # diagonal out of every gradient and survives copying and pickling.
            return (self.rt * self.rt_mask) @ self.qt
        return self.phi

    def dense_weight(self) -> torch.Tensor:
        return closed_form_weight(self.lam_in, self.lam_out, self.eigenvectors())

    def effective_weight(self) -> torch.Tensor:
        w = self.dense_weight()
        return without_rows(dynamic_sparsify(w, self.sparsity), self.removed_units) if self.sparsity else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def remove_units_(self, drop: torch.Tensor) -> None:
        """Zero every incoming weight and the bias of the receiving nodes `drop` (bool [out]). Single-set layers
        do it as Sci. Rep. 2022 does, by setting the node's eigenvalue to 0 (W = -lam_out * phi); the others by
        zeroing the node's row of phi (its factor U for S-SVD, R^T for QR). The bias goes too: with a bias left,
        lam = 0 would not remove the node.

        A dynamically sparsified layer instead drops the rows after the thresholding: zeroed rows would count
        among the smallest |W| at the next forward pass and revive pruned entries of the surviving rows. That
        record is an attribute, not in the state dict: node removal is applied to copies that are only evaluated
        (methods/nn/node_pruning.py)."""
        if self.sparsity:
            self.removed_units = drop.clone() if self.removed_units is None else self.removed_units | drop
        elif self.variant in SINGLE_SET:
            self.lam_out[drop] = 0.0
        elif self.variant == "ssvd":
            self.u[drop] = 0.0
        elif self.variant == "qr":
            self.rt[drop] = 0.0
        else:
            self.phi[drop] = 0.0
        if self.bias is not None:
            self.bias[drop] = 0.0

    def num_trainable(self, updated: Callable[[nn.Parameter], bool]) -> int:
        n = 0
        for name, p in self.named_parameters(recurse=False):
            if not updated(p):
                continue
            n += int(self.rt_mask.sum()) if name == "rt" else p.numel()
        return n

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, variant={self.variant}, "
                f"bias={self.bias is not None}, sparsity={self.sparsity}"
                + (f", qr_triangular={self.qr_triangular}" if self.variant == "qr" else ""))


class DenseSparseLinear(nn.Linear, WeightLayer):
    """Paper C's sparse baseline `Sparse_Dense`: a dense kernel (Glorot-uniform init, as Keras; no bias by
    default) with the same dynamic sparsification at every forward pass."""

    def __init__(self, n_in: int, n_out: int, bias: bool = False, sparsity: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__(n_in, n_out, bias=bias)
        self.sparsity = check_sparsity(sparsity)
        self.removed_units: torch.Tensor | None = None   # as in SpectralLinear.remove_units_
        bound = math.sqrt(6.0 / (n_in + n_out))
        with torch.no_grad():
            self.weight.copy_((torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound)
            if self.bias is not None:
                self.bias.zero_()

    def effective_weight(self) -> torch.Tensor:
        if not self.sparsity:
            return self.weight
        return without_rows(dynamic_sparsify(self.weight, self.sparsity), self.removed_units)

    @torch.no_grad()
    def remove_units_(self, drop: torch.Tensor) -> None:
        if not self.sparsity:
            return super().remove_units_(drop)
        # After the thresholding, for the reason given in SpectralLinear.remove_units_.
        self.removed_units = drop.clone() if self.removed_units is None else self.removed_units | drop
        if self.bias is not None:
            self.bias[drop] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)
