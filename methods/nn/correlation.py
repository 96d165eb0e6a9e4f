"""Correlation statistics of a layer's units: the mean |Pearson r| of activations and the mean |cosine| between
weight rows, over pairs of units, in Gram-matrix form (no loop over pairs).

Shared by the one metrics module (methods/core/metrics.py: the logged `act_corr`, `weight_cos`, `weight_pearson`)
and the decorrelation regularisers and initialisation (methods/nn/decorrelation.py), so that what a penalty lowers
is exactly what is measured. Differentiable; the penalties call them on the training batch with a higher dead-unit
floor.
"""
from __future__ import annotations

import torch

DEAD_STD = 1e-6     # a unit whose activation varies less than this over the evaluation batch is dead


def pair_mean(g: torch.Tensor, keep: torch.Tensor, power: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of |g_ij|^power over pairs i < j of units `keep` (boolean [H]) of a symmetric [H, H] matrix whose
    rows and columns outside `keep` are 0, and the number of pairs; both 0-dim device tensors. Gram-matrix
    form, no O(H^2) loop over pairs, and no boolean indexing, which would sync a GPU with the
    host at every training step. No pair gives 0 (with a zero gradient), never 0/0."""
    n = keep.sum()
    pairs = n * (n - 1) // 2
    return g.triu(1).abs().pow(power).sum() / pairs.clamp_min(1), pairs


def units_2d(a: torch.Tensor) -> torch.Tensor:
    """Activations [B, H, ...] -> [B, H]: a convolution channel is one unit (its spatial mean)."""
    return a if a.dim() == 2 else a.flatten(2).mean(2)


def live_units(a: torch.Tensor, dead_std: float = DEAD_STD) -> torch.Tensor:
    """Boolean [H]: units whose activation over the batch varies by more than `dead_std` (standard deviation)."""
    a = units_2d(a).detach()
    return a.std(0, unbiased=False) > dead_std if len(a) > 1 else torch.zeros(a.shape[1], dtype=torch.bool, device=a.device)


def mean_abs_pearson(a: torch.Tensor, dead_std: float = DEAD_STD,
                     live: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |Pearson r| over pairs of live units of activations `a` [B, H] (batch statistics), and the pair
    count. Units whose standard deviation is <= `dead_std` (or outside a given `live`) are left out: their
    columns are zeroed after a floored division, so nothing is 0/0 and they get a zero gradient."""
    a = units_2d(a)
    if live is None:
        live = live_units(a, dead_std)
    c = a - a.mean(0)
    # Floor before the square root: sqrt'(0) is infinite, and inf * 0 would be a NaN gradient for a dead unit.
    std = c.pow(2).mean(0).clamp_min(dead_std ** 2).sqrt()
    z = c / std * live                         # exact for live units, 0 for dead ones
    r = z.T @ z / max(len(a), 1)               # the correlation matrix of the live units, zero-padded
    return pair_mean(r, live)


def row_cosines(w: torch.Tensor, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine matrix [H, H] between the rows of `w` [H, ...] (zero rows give zero rows and columns) and
    the boolean [H] of nonzero rows. `centred`: each row minus its mean first (the weight Pearson
    correlation, docs/methods.md "Notes on reconstructions")."""
    w = w.reshape(w.shape[0], -1)
    if centred:
        w = w - w.mean(1, keepdim=True)
    norm = w.norm(dim=1)
    keep = norm.detach() > 0
    u = w / torch.where(keep, norm, torch.ones_like(norm))[:, None]
    return u @ u.T, keep


def mean_abs_cosine(w: torch.Tensor, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |cosine| between the nonzero rows of `w` [H, ...] (rows = incoming weight vectors), and the
    pair count."""
    return pair_mean(*row_cosines(w, centred))


def sparse_mean_abs_cosine(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int],
                           centred: bool = False, block_products: int = 2**20) -> tuple[torch.Tensor, torch.Tensor]:
    """`mean_abs_cosine` of the n_rows x n_cols matrix with entries `values` at (`rows`, `cols`) (distinct
    coordinates, e.g. a truly sparse layer's), without the dense matrix or the dense cosine matrix.

    Only row pairs that share a column have a nonzero inner product G_ij, so the uncentred sum of |cos| runs over the
    nonzeros of the sparse Gram matrix W W^T, built by sparse x sparse products over blocks of rows (each block at
    most about `block_products` partial products). Centring makes every row dense, but in closed form: with row
    means m_i, centred norms s_i^2 = |w_i|^2 - n m_i^2 and a_i = sqrt(n) m_i / s_i, the centred cosine is
    (G_ij - n m_i m_j) / (s_i s_j) = G_ij / (s_i s_j) - a_i a_j. Pairs that share no column contribute |a_i a_j|,
    summed over all pairs as ((sum |a|)^2 - sum a^2) / 2, and the sharing pairs replace that term by their exact
    |cos|. Work O(sum over columns of count^2 + n_rows), memory O(nnz + block)."""
    n_rows, n_cols = shape
    device = values.device
    v = values.detach().double()
    r, c = rows.long(), cols.long()
    sq = torch.zeros(n_rows, dtype=torch.float64, device=device).index_add_(0, r, v * v)
    if centred:
        mean = torch.zeros(n_rows, dtype=torch.float64, device=device).index_add_(0, r, v) / n_cols
        s2 = (sq - n_cols * mean * mean).clamp_min(0)
    else:
        mean, s2 = None, sq
    keep = s2 > 0
    norm = torch.where(keep, s2.sqrt(), torch.ones_like(s2))
    a = torch.where(keep, n_cols ** 0.5 * mean / norm, torch.zeros_like(s2)) if centred else torch.zeros_like(s2)
    total = (a.abs().sum() ** 2 - (a * a).sum()) / 2
    order = torch.argsort(r * n_cols + c)
    r, c, v = r[order], c[order], v[order]
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=device)
    crow[1:] = torch.cumsum(torch.bincount(r, minlength=n_rows), 0)
    t_order = torch.argsort(c * n_rows + r)
    crow_t = torch.zeros(n_cols + 1, dtype=torch.long, device=device)
    crow_t[1:] = torch.cumsum(torch.bincount(c, minlength=n_cols), 0)
    w_t = torch.sparse_csr_tensor(crow_t, r[t_order], v[t_order], (n_cols, n_rows), check_invariants=False)
    col_count = crow_t.diff()
    products = torch.zeros(n_rows + 1, dtype=torch.long, device=device)   # partial products per row, cumulated
    products[1:] = torch.cumsum(torch.zeros(n_rows, dtype=torch.long, device=device).index_add_(0, r, col_count[c]), 0)
    start = 0
    while start < n_rows:
        stop = int(torch.searchsorted(products, products[start] + block_products, right=True)) - 1
        stop = min(n_rows, max(stop, start + 1))
        lo, hi = int(crow[start]), int(crow[stop])
        block = torch.sparse_csr_tensor(crow[start:stop + 1] - lo, c[lo:hi], v[lo:hi], (stop - start, n_cols),
                                        check_invariants=False)
        g = torch.sparse.mm(block, w_t)
        i = start + torch.repeat_interleave(torch.arange(stop - start, device=device), g.crow_indices().diff())
        j = g.col_indices()
        upper = (j > i) & keep[i] & keep[j]
        i, j, gij = i[upper], j[upper], g.values()[upper]
        cos = gij / (norm[i] * norm[j]) - a[i] * a[j]
        total = total + (cos.abs() - (a[i] * a[j]).abs()).sum()
        start = stop
    n = keep.sum()
    pairs = n * (n - 1) // 2
    return total / pairs.clamp_min(1), pairs
