"""Random sparse topologies drawn as coordinates, never as a dense matrix (issue 18): the Erdos-Renyi draw of a
layer's connections and SET's regrowth at random empty positions, in memory O(connections), so that a layer whose
dense weight would not fit (e.g. 200,000 x 200,000) can be built and rewired.

Both the masked and the truly sparse layers of methods/families/set_prune.py draw through these functions, so one
seed gives one topology whatever the storage (tests/test_sparse_linear.py).

- `er_positions`: an ER layer keeps every position independently with probability p (SET paper, arXiv 1707.04780
  eq. 1; `createWeightsMask` in dcmocanu/sparse-evolutionary-artificial-neural-networks draws rand < p per entry).
  The same distribution without the dense draw: a count k ~ Binomial(N, p), then a uniformly random k-subset of the
  N positions (given its size, the kept set of independent Bernoulli draws is uniform over the subsets of that size).
- `sample_empty`: a uniformly random n-subset of the empty positions (SET regrowth: `weightsEvolution` regrows at
  random empty positions) by rejection sampling: uniform draws over the allowed grid, the occupied ones rejected by a
  search in the sorted occupied set, duplicates dropped keeping first occurrences. The first n distinct accepted
  values of an i.i.d. uniform sequence are a uniformly random n-subset (each order of first appearances is equally
  likely), so the result is exact, not approximate.
"""
from __future__ import annotations

import torch

# Below this share of free positions the rejection sampler would draw more than ~16 times what it keeps; it then
# lists the free positions instead (only layers denser than 15/16 get there: dense storage, never a SparseLinear).
MIN_FREE_SHARE = 1 / 16


def _first_occurrences(x: torch.Tensor) -> torch.Tensor:
    """The distinct values of `x` in the order of their first occurrence."""
    uniq, inverse = torch.unique(x, return_inverse=True)
    first = torch.full((uniq.numel(),), x.numel(), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(x.numel()), reduce="amin")
    return x[first.sort().values]


def _in_sorted(x: torch.Tensor, sorted_set: torch.Tensor) -> torch.Tensor:
    """Boolean: which entries of `x` are in the sorted 1-D `sorted_set` (a binary search each; torch.isin sorts both)."""
    if sorted_set.numel() == 0:
        return torch.zeros(x.shape, dtype=torch.bool)
    i = torch.searchsorted(sorted_set, x).clamp_max_(sorted_set.numel() - 1)
    return sorted_set[i] == x


def sample_empty(n: int, n_rows: int, n_cols: int, occupied: torch.Tensor, gen: torch.Generator,
                 alive_rows: torch.Tensor | None = None, alive_cols: torch.Tensor | None = None) -> torch.Tensor:
    """min(n, free) distinct uniformly random row-major positions (int64, on the CPU, in draw order) of an
    n_rows x n_cols matrix that are not in `occupied` (sorted int64 positions) and lie in the grid alive_rows x
    alive_cols (boolean masks; None: every row / column). `occupied` must lie inside that grid (SET keeps no weight
    of a pruned unit). Draws from `gen` only, the same numbers whatever the caller's storage."""
    rows = torch.arange(n_rows) if alive_rows is None else alive_rows.cpu().nonzero().squeeze(1)
    cols = torch.arange(n_cols) if alive_cols is None else alive_cols.cpu().nonzero().squeeze(1)
    grid = rows.numel() * cols.numel()
    occupied = occupied.cpu().long()
    free = grid - occupied.numel()
    n = min(int(n), free)
    if n <= 0:
        return torch.empty(0, dtype=torch.long)

    def position(v: torch.Tensor) -> torch.Tensor:   # grid index -> row-major position in the matrix
        return rows[v // cols.numel()] * n_cols + cols[v % cols.numel()]

    if free < MIN_FREE_SHARE * grid:
        candidates = position(torch.arange(grid))
        candidates = candidates[~_in_sorted(candidates, occupied)]
        return candidates[torch.randperm(candidates.numel(), generator=gen)[:n]]
    picked = torch.empty(0, dtype=torch.long)
    while picked.numel() < n:
        need = n - picked.numel()
        # Expected acceptance (free - picked) / grid; 25% more plus a few, so one round almost always suffices.
        draw = int(need * grid / (free - picked.numel()) * 1.25) + 16
        pos = position(torch.randint(grid, (draw,), generator=gen))
        pos = pos[~_in_sorted(pos, occupied)]
        picked = _first_occurrences(torch.cat([picked, pos]))[:n]
    return picked


def er_positions(n_rows: int, n_cols: int, density: float, gen: torch.Generator) -> torch.Tensor:
    """Sorted row-major positions of an ER draw: each of the n_rows x n_cols positions independently with
    probability `density` (see the module docstring), in O(kept positions) memory."""
    total = n_rows * n_cols
    if density >= 1.0:
        return torch.arange(total)
    k = int(torch.binomial(torch.tensor(float(total), dtype=torch.float64), torch.tensor(float(density), dtype=torch.float64),
                           generator=gen))
    return sample_empty(k, n_rows, n_cols, torch.empty(0, dtype=torch.long), gen).sort().values
