"""Topologies drawn as coordinates (methods/nn/sparse_topology.py): the ER draw and SET's regrowth sampler against
their closed-form counts and distributions, and the sparse weight-cosine metrics against the dense ones."""
from __future__ import annotations

import pytest
import torch

from sparsebench.methods.nn.correlation import mean_abs_cosine, sparse_mean_abs_cosine
from sparsebench.methods.nn.sparse_topology import er_positions, sample_empty

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def test_regrowth_is_uniform_over_the_empty_positions_and_never_hits_an_occupied_one():
    g = torch.Generator().manual_seed(0)
    occupied = torch.tensor([1, 5, 7])              # of a 3 x 4 matrix: 9 free positions
    counts = torch.zeros(12)
    draws = 9000
    for _ in range(draws):
        new = sample_empty(3, 3, 4, occupied, g)
        assert new.numel() == 3 and new.unique().numel() == 3
        counts[new] += 1
    assert counts[occupied].sum() == 0
    free = counts[counts > 0]
    # Each free position is picked with probability 3/9; binomial sd sqrt(9000 * 1/3 * 2/3) = 45, so 5 sd is 225.
    assert free.numel() == 9 and (free - draws / 3).abs().max() < 225
    assert sorted(sample_empty(20, 3, 4, occupied, g).tolist()) == [0, 2, 3, 4, 6, 8, 9, 10, 11]   # capped at free


def test_regrowth_stays_between_alive_units():
    g = torch.Generator().manual_seed(1)
    alive_rows = torch.tensor([True, False, True, True])
    alive_cols = torch.tensor([False, True, True, True, True, False])
    occupied = torch.tensor([0 * 6 + 1, 2 * 6 + 3])   # inside the alive grid
    new = sample_empty(100, 4, 6, occupied, g, alive_rows, alive_cols)
    assert new.numel() == 3 * 4 - 2                   # every free position of the 3 x 4 grid
    assert alive_rows[new // 6].all() and alive_cols[new % 6].all() and not torch.isin(new, occupied).any()


def test_dense_fallback_for_nearly_full_layers_is_the_same_set():
    g = torch.Generator().manual_seed(2)
    occupied = torch.arange(100)[torch.arange(100) % 25 != 0]     # 4 free of 100: below MIN_FREE_SHARE
    assert sorted(sample_empty(10, 10, 10, occupied, g).tolist()) == [0, 25, 50, 75]


def test_er_positions_count_is_binomial_and_positions_distinct():
    g = torch.Generator().manual_seed(3)
    n_rows, n_cols, p = 300, 700, 0.05
    counts = []
    for _ in range(20):
        pos = er_positions(n_rows, n_cols, p, g)
        assert pos.unique().numel() == pos.numel() and torch.equal(pos, pos.sort().values)
        assert 0 <= int(pos.min()) and int(pos.max()) < n_rows * n_cols
        counts.append(pos.numel())
    mean, sd = n_rows * n_cols * p, (n_rows * n_cols * p * (1 - p)) ** 0.5      # 10500, 100
    assert abs(sum(counts) / 20 - mean) < 5 * sd / 20 ** 0.5
    assert er_positions(3, 4, 1.0, g).tolist() == list(range(12))


@pytest.mark.parametrize("centred", [False, True])
def test_sparse_weight_cosines_equal_the_dense_ones(centred):
    g = torch.Generator().manual_seed(4)
    for shape, density in (((30, 50), 0.1), ((120, 90), 0.03), ((40, 40), 0.6)):
        mask = torch.rand(*shape, generator=g) < density
        w = torch.randn(*shape, generator=g, dtype=torch.float64) * mask
        w[3] = 0                                       # a zero row: in no pair
        rows, cols = mask.nonzero().unbind(1)
        dense = mean_abs_cosine(w, centred=centred)
        # Small blocks: several sparse x sparse products per matrix.
        sparse = sparse_mean_abs_cosine(rows, cols, w[rows, cols], shape, centred=centred, block_products=64)
        assert int(sparse[1]) == int(dense[1])
        assert float(sparse[0]) == pytest.approx(float(dense[0]), abs=1e-12)
