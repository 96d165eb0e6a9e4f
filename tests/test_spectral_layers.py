"""Spectral layers (issue 5, part 1): closed form vs operator, gradients, parameter counts, sparsification."""
from __future__ import annotations

import pytest
import torch

from sparsebench.methods.core.metrics import params_trainable, structure
from sparsebench.methods.nn.models import MLP
from sparsebench.methods.nn.spectral_layers import VARIANTS, DenseSparseLinear, SpectralLinear, closed_form_weight, dynamic_sparsify


def layer(n_in, n_out, variant, seed=0, **kw):
    return SpectralLinear(n_in, n_out, variant, generator=torch.Generator().manual_seed(seed), **kw).double()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_closed_form_is_the_receiving_block_of_the_operator(variant, shape):
    n_in, n_out = shape
    lay = layer(n_in, n_out, variant)
    with torch.no_grad():  # random eigenvalues everywhere (some variants start at 0 / 1)
        lay.lam_in.copy_(torch.randn(n_in, dtype=torch.float64))
        lay.lam_out.copy_(torch.randn(n_out, dtype=torch.float64))
    phi = lay.eigenvectors().detach()
    n = n_in + n_out
    big_phi = torch.eye(n, dtype=torch.float64)
    big_phi[n_in:, :n_in] = phi
    lam = torch.diag(torch.cat([lay.lam_in.detach(), lay.lam_out.detach()]))
    inverse = 2 * torch.eye(n, dtype=torch.float64) - big_phi
    assert torch.allclose(inverse @ big_phi, torch.eye(n, dtype=torch.float64), atol=1e-12)
    a = big_phi @ lam @ inverse
    w = lay.effective_weight().detach()
    assert torch.allclose(a[n_in:, :n_in], w, atol=1e-12)
    # The forward pass is x W^T + b: the padded operator applied to (x, 0), receiving block read off.
    x = torch.randn(7, n_in, dtype=torch.float64)
    padded = torch.cat([x, torch.zeros(7, n_out, dtype=torch.float64)], 1) @ a.T
    assert torch.allclose(lay(x), padded[:, n_in:] + lay.bias, atol=1e-12)


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    ssvd, qr = layer(5, 4, "ssvd"), layer(5, 4, "qr")

    def f_ssvd(lam_in, lam_out, s):
        phi = ssvd.u @ (s[:, None] * ssvd.v)
        return torch.tanh(x @ closed_form_weight(lam_in, lam_out, phi).T)

    def f_qr(lam_in, lam_out, rt):
        return torch.tanh(x @ closed_form_weight(lam_in, lam_out, (rt * qr.rt_mask) @ qr.qt).T)

    args = [torch.randn(5, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(f_ssvd, (*args, torch.rand(4, dtype=torch.float64, requires_grad=True)))
    assert torch.autograd.gradcheck(f_qr, (*args, torch.randn(4, 4, dtype=torch.float64, requires_grad=True)))
    # The layer's own gradient w.r.t. s equals that of f_ssvd at the layer's parameters.
    ssvd(x).tanh().sum().backward()
    (g,) = torch.autograd.grad(f_ssvd(ssvd.lam_in, ssvd.lam_out, ssvd.s).sum(), ssvd.s)
    assert torch.allclose(ssvd.s.grad, g, atol=1e-12)


def test_qr_above_diagonal_gets_no_gradient_when_triangular():
    lay = layer(6, 4, "qr")
    lay(torch.randn(3, 6, dtype=torch.float64)).pow(2).sum().backward()
    assert torch.count_nonzero(lay.rt.grad[~lay.rt_mask]) == 0
    assert torch.count_nonzero(lay.rt.grad[lay.rt_mask]) == int(lay.rt_mask.sum())
    full = layer(6, 4, "qr", qr_triangular=False)
    full(torch.randn(3, 6, dtype=torch.float64)).pow(2).sum().backward()
    assert torch.count_nonzero(full.rt.grad) == full.rt.numel()


def paper_counts(n1: int, n2: int) -> dict[str, int]:
    """Paper C's counts as in the authors' Example/plot_functions.py, one hidden layer N1 -> N2 -> 10."""
    tri = lambda k: (k * k + k) // 2  # noqa: E731
    return {
        "dense": n1 * n2 + 10 * n2 + n2 + 10,
        "two_sets": n1 + 2 * n2 + 10 + n2 + 10,
        "ssvd": min(n2, n1) + min(n2, 10) + n1 + 3 * n2 + 10 + 10,
        "qr": n2 + n1 + n2 + 10 + tri(min(n2, n1)) + tri(min(n2, 10)),  # the paper counts no bias for QR
    }


# Those formulas evaluated by hand (our arithmetic, not a table of the paper).
PUBLISHED_TABLE = {
    (784, 50): (39760, 954, 1014, 2224), (784, 100): (79510, 1104, 1214, 6099), (784, 150): (119260, 1254, 1414, 12474),
    (784, 200): (159010, 1404, 1614, 21349), (784, 300): (238510, 1704, 2014, 46599),
    (784, 500): (397510, 2304, 2814, 127099),
    (3072, 50): (154160, 3242, 3302, 4512), (3072, 100): (308310, 3392, 3502, 8387),
    (3072, 300): (924910, 3992, 4302, 48887),
}


@pytest.mark.parametrize("n1,n2", sorted(PUBLISHED_TABLE))
def test_params_trainable_equals_the_papers_formulas(n1, n2):
    expected = paper_counts(n1, n2)
    assert tuple(expected.values()) == PUBLISHED_TABLE[(n1, n2)]
    for variant in ("two_sets", "ssvd", "qr"):
        bias = variant != "qr"
        model = MLP((n1, n2, 10), factory=lambda a, b, _bias, i: SpectralLinear(a, b, variant, bias=bias))
        assert params_trainable(model) == expected[variant], variant
        # Paper C's "Dense" count is the dense network of the same shape (biases where the layers have them).
        assert structure(model)["params_dense"] == expected["dense"] - (0 if bias else n2 + 10)
    # The parent's eigenvalue-only layer: one trainable value per receiving node (+ bias).
    model = MLP((n1, n2, 10), factory=lambda a, b, bias, i: SpectralLinear(a, b, "eig_out", bias=bias))
    assert params_trainable(model) == n2 + 10 + n2 + 10
    # The TF code's full R^T: N_out x k per layer instead of the triangle.
    model = MLP((n1, n2, 10), factory=lambda a, b, _b, i: SpectralLinear(a, b, "qr", bias=False, qr_triangular=False))
    assert params_trainable(model) == n1 + 2 * n2 + 10 + n2 * min(n1, n2) + 10 * min(n2, 10)


def test_qr_trapezoid_count_when_units_exceed_inputs():
    """N_out > N_in: R^T is lower-trapezoidal, k(k+1)/2 + (N_out - k) k entries, more than the paper's k(k+1)/2."""
    lay = layer(4, 6, "qr", bias=False)
    assert params_trainable(lay) == 4 + 6 + 10 + 2 * 4


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.98])
def test_dynamic_sparsification_zeroes_exactly_the_requested_share(sparsity):
    for lay in (layer(64, 32, "qr", sparsity=sparsity), layer(64, 32, "two_sets", sparsity=sparsity),
                DenseSparseLinear(64, 32, sparsity=sparsity, generator=torch.Generator().manual_seed(0))):
        w = lay.effective_weight()
        assert int((w == 0).sum()) == int(sparsity * w.numel())
        s = structure(MLP((64, 32, 10), factory=lambda a, b, bias, i: lay if i == 0 else
                          SpectralLinear(a, b, "qr", sparsity=sparsity)))
        assert s["layer0/weight_sparsity"] == pytest.approx(int(sparsity * 2048) / 2048)
        # The survivors are the largest |W| of the dense closed form.
        dense = lay.dense_weight() if isinstance(lay, SpectralLinear) else lay.weight
        kept = dense.detach().abs()[w != 0]
        assert kept.min() >= dense.detach().abs()[w == 0].max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_smallest_is_torch_kthvalue(dtype):
    """The CPU selection (numpy) and the device one (torch.kthvalue) pick the same element, ties included."""
    from sparsebench.methods.nn.spectral_layers import kth_smallest
    a = torch.randn(300, 70, generator=torch.Generator().manual_seed(1)).abs().to(dtype)
    a[:5] = a[5:10]   # repeated values
    for k in (1, 7, 1000, 14999, a.numel()):
        assert kth_smallest(a, k).item() == torch.kthvalue(a.flatten(), k).values.item()


def test_gradients_flow_only_through_the_survivors():
    w = torch.randn(10, 10, dtype=torch.float64, requires_grad=True)
    out = dynamic_sparsify(w, 0.7)
    out.sum().backward()
    assert torch.equal(w.grad != 0, out.detach() != 0)


def test_bad_variant_and_sparsity():
    with pytest.raises(ValueError, match="allowed: eig_out, eig_out_full, two_sets, ssvd, qr, full"):
        SpectralLinear(3, 2, "svd")
    with pytest.raises(ValueError, match="sparsity"):
        SpectralLinear(3, 2, "qr", sparsity=1.0)


def test_parent_perceptron_uses_about_ten_percent_of_the_parameters():
    """Nat. Commun. 2021 Fig. 4 caption (workflows/papers/spectral.yaml): eigenvalue training of the 784 -> 10
    perceptron uses roughly 10% of the direct-space parameters."""
    import yaml
    from pathlib import Path
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflows" / "papers" / "spectral.yaml").read_text())
    exp = next(e for e in doc["experiments"] if e["name"] == "parent_perceptron_parameters")
    cell = exp["published"][0]
    model = MLP((784, 10), factory=lambda a, b, bias, i: SpectralLinear(a, b, "two_sets", bias=False))
    ratio = params_trainable(model) / structure(model)["params_dense"]
    assert ratio == (784 + 10) / (784 * 10)
    assert abs(ratio - cell["value"]) <= cell["tolerance"]
