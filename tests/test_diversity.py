"""Neuron diversification (issue 7): penalties, the decorrelated initialisation, the diversity metrics."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from methods import ConfigError, RunConfig, Trainer, get_method
from methods import decorrelation as dc
from methods.layers import MaskedLinear
from methods.metrics import diversity, mean_abs_cosine, mean_abs_pearson
from methods.models import MLP

from .conftest import small_config


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def orthogonal_activations() -> torch.Tensor:
    """[8, 4]: centred, mutually orthogonal columns with different scales: a diagonal covariance, exactly."""
    return hadamard(8)[:, 1:5] * torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64) + 5.0


# ------------------------------------------------------------------------------------------ penalties

@pytest.mark.parametrize("name", ["decov", "act_pearson"])
def test_activation_penalty_gradient_matches_finite_differences(name):
    torch.manual_seed(0)
    a = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(getattr(dc, name), (a,), eps=1e-6, atol=1e-6)


def test_weight_cos_gradient_matches_finite_differences():
    torch.manual_seed(1)
    w = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dc.weight_cos, (w,), eps=1e-6, atol=1e-6)


def test_ncl_gradient_matches_finite_differences():
    torch.manual_seed(2)
    h = torch.rand(7, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dc.ncl, (h, v), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["decov", "act_pearson"])
def test_activation_penalty_is_zero_with_zero_gradient_for_decorrelated_units(name):
    a = orthogonal_activations().requires_grad_(True)
    value = getattr(dc, name)(a)
    value.backward()
    assert value.item() == 0.0
    assert torch.count_nonzero(a.grad) == 0


def test_weight_cos_is_zero_with_zero_gradient_for_orthogonal_rows():
    w = (torch.eye(4, 6, dtype=torch.float64) * torch.tensor([[1.0], [2.0], [0.3], [5.0]], dtype=torch.float64))
    w.requires_grad_(True)
    value = dc.weight_cos(w)
    value.backward()
    assert value.item() == 0.0 and torch.count_nonzero(w.grad) == 0
    # ... and is 1 for parallel or anti-parallel rows.
    assert dc.weight_cos(torch.tensor([[1.0, 2.0], [-2.0, -4.0], [0.5, 1.0]])).item() == pytest.approx(1.0)


def test_ncl_equals_the_liu_yao_sum_normalised_by_the_contribution_energy():
    torch.manual_seed(3)
    h, v = torch.rand(4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    f = h[:, None, :] * v[None]
    expected = (-(f - f.mean(-1, keepdim=True)).pow(2).sum(-1) / f.pow(2).sum(-1)).mean()
    assert dc.ncl(h, v).item() == pytest.approx(expected.item(), rel=1e-12)
    # Identical contributions: no disagreement at all, the term is 0; it never leaves [-1, 0].
    assert dc.ncl(torch.ones(2, 3), torch.ones(2, 3)).item() == 0.0
    assert -1.0 <= dc.ncl(h * 100, v * 100).item() <= 0.0


def test_decov_is_the_cogswell_formula():
    torch.manual_seed(4)
    a = torch.randn(10, 4, dtype=torch.float64)
    c = torch.cov(a.T, correction=0)
    assert dc.decov(a).item() == pytest.approx(0.5 * (c.pow(2).sum() - c.diagonal().pow(2).sum()).item(), rel=1e-12)


# ------------------------------------------------------------------------------------------ dead units

def test_dead_units_give_no_nan_in_penalties_or_their_gradients():
    a = orthogonal_activations()[:, :3].clone()
    a[:, 1] = 0.0                                          # a dead ReLU unit
    a = torch.cat([a, torch.full((8, 1), 0.7, dtype=torch.float64)], 1).requires_grad_(True)   # a saturated one
    for fn in (dc.decov, dc.act_pearson):
        value = fn(a)
        (grad,) = torch.autograd.grad(value, a)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), fn.__name__
    # The dead columns are left out: the value is that of the live units alone.
    assert dc.act_pearson(a).item() == pytest.approx(dc.act_pearson(a[:, [0, 2]]).item(), abs=1e-15)
    dead = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    for value in (dc.decov(dead), dc.act_pearson(dead), dc.ncl(dead, torch.randn(2, 3, dtype=torch.float64))):
        (grad,) = torch.autograd.grad(value, dead)
        assert value.item() == 0.0 and torch.isfinite(grad).all()
    zero_rows = torch.zeros(3, 4, requires_grad=True)
    value = dc.weight_cos(zero_rows)
    (grad,) = torch.autograd.grad(value, zero_rows)
    assert value.item() == 0.0 and torch.isfinite(grad).all()


def test_a_network_of_dead_units_reports_zeros_not_nan():
    model = MLP((4, 5, 3))
    with torch.no_grad():
        model.layers[0].bias.fill_(-100.0)                 # every ReLU unit dead on any bounded input
    d = diversity(model, torch.rand(32, 4))
    assert d["dead_units"] == 5 and d["layer0/dead_units"] == 5
    assert all(math.isfinite(v) for v in d.values())
    assert d["act_corr"] == 0.0


# ------------------------------------------------------------------------------------------ metrics

def hand_built():
    """Two inputs x1, x2 (uncorrelated, equal variance); hidden ReLU units h = x1+10, x2+10, x1+x2+10 and a
    dead one (bias -100); pairwise |Pearson| 0, 1/sqrt 2, 1/sqrt 2; row cosines known in closed form."""
    model = MLP((2, 4, 3))
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]))
        model.layers[0].bias.copy_(torch.tensor([10.0, 10.0, 10.0, -100.0]))
    x = hadamard(8)[:, 1:3].float()
    return model, x


def test_diversity_metrics_of_a_hand_built_layer_are_exact():
    model, x = hand_built()
    d = diversity(model, x)
    assert d["layer0/dead_units"] == d["dead_units"] == 1
    assert d["act_corr"] == pytest.approx(math.sqrt(2) / 3, abs=1e-12)
    # Rows (1,0), (0,1), (1,1), (1,0): |cos| over 6 pairs = 0, 1/sqrt2, 1, 1/sqrt2, 0, 1/sqrt2.
    assert d["weight_cos"] == pytest.approx((1 + 3 / math.sqrt(2)) / 6, abs=1e-12)
    assert d["layer0/act_corr"] == d["act_corr"] and d["layer0/weight_cos"] == d["weight_cos"]


def test_network_values_pool_the_pairs_of_every_hidden_layer():
    torch.manual_seed(5)
    model = MLP((6, 5, 3, 2))
    x = torch.randn(64, 6)
    d = diversity(model, x)
    _, hidden = model(x, return_hidden=True)
    per = [mean_abs_pearson(h.double()) for h in hidden]
    pooled = sum(v.item() * int(n) for v, n in per) / sum(int(n) for _, n in per)
    assert d["act_corr"] == pytest.approx(pooled, abs=1e-12)
    cos = [mean_abs_cosine(l.weight.double()) for l in model.layers[:2]]
    assert d["weight_cos"] == pytest.approx(sum(v.item() * int(n) for v, n in cos) / sum(int(n) for _, n in cos),
                                           abs=1e-12)


def test_every_method_reports_diversity_on_the_validation_batch(digits):
    hist = Trainer(small_config("set"), data=digits).fit()
    hidden = 32 + 16
    for m in hist:
        assert 0.0 < m["act_corr"] < 1.0 and 0.0 < m["weight_cos"] < 1.0
        assert 0 <= m["dead_units"] <= hidden
        assert m["dead_units"] == m["layer0/dead_units"] + m["layer1/dead_units"]


# ------------------------------------------------------------------------------------------ decorrelated init

@pytest.mark.parametrize("shape", [(64, 784), (16, 617), (32, 64), (8, 784)])
def test_decorrelated_init_lowers_row_cosine_and_keeps_row_norms(shape):
    torch.manual_seed(6)
    w = nn.Linear(shape[1], shape[0]).weight.detach().clone()
    before, norms = mean_abs_cosine(w)[0].item(), w.norm(dim=1)
    dc.decorrelate_rows_(w, steps=100, lr=0.05)
    after = mean_abs_cosine(w)[0].item()
    assert after < 0.25 * before, (before, after)   # measured: 10-30x lower on these shapes
    assert torch.allclose(w.norm(dim=1), norms, rtol=0, atol=1e-6)


def test_decorrelated_init_stays_random_and_is_deterministic():
    def draw(seed):
        torch.manual_seed(seed)
        w = nn.Linear(64, 32).weight.detach().clone()
        return dc.decorrelate_rows_(w, steps=50, lr=0.05)
    a, b, c = draw(0), draw(1), draw(0)
    assert not torch.allclose(a, b, atol=1e-3)
    assert torch.equal(a, c)


def test_pearson_variant_lowers_the_centred_row_correlation():
    torch.manual_seed(7)
    w = nn.Linear(64, 32).weight.detach().clone() + 0.05     # rows sharing a mean: high centred-vs-raw gap
    before = mean_abs_cosine(w, centred=True)[0].item()
    dc.decorrelate_rows_(w, steps=100, lr=0.05, centred=True)
    assert mean_abs_cosine(w, centred=True)[0].item() < 0.25 * before


def test_decorrelated_init_keeps_a_sparse_layer_sparse():
    torch.manual_seed(8)
    mask = torch.rand(32, 64) < 0.3
    layer = MaskedLinear(64, 32, mask=mask)
    norms = layer.weight.detach().norm(dim=1).clone()
    dc.decorrelate_rows_(layer.weight, steps=50, lr=0.05, mask=layer.mask)
    assert torch.count_nonzero(layer.weight[~mask]) == 0
    assert torch.allclose(layer.weight.detach().norm(dim=1), norms, atol=1e-6)


@pytest.mark.parametrize("method", ["dense", "set", "diversity"])
def test_decor_init_option_reaches_every_mlp_method(method, digits):
    std = Trainer(small_config(method), data=digits)
    rng_std = torch.get_rng_state()
    dec = Trainer(small_config(method, **{"model.decor_init": "cosine"}), data=digits)
    # No random number drawn: data order, dropout and topology streams are those of the standard arm.
    assert torch.equal(torch.get_rng_state(), rng_std)
    s_layers, d_layers = std.model.layers, dec.model.layers
    for k in range(len(s_layers) - 1):
        s, d = s_layers[k].weight.detach(), d_layers[k].weight.detach()
        assert torch.allclose(s.norm(dim=1), d.norm(dim=1), atol=1e-6)
        assert mean_abs_cosine(d)[0] < 0.5 * mean_abs_cosine(s)[0]
        assert torch.equal(s != 0, d != 0)                  # same sparsity pattern (SET's ER mask)
    assert torch.equal(s_layers[-1].weight, d_layers[-1].weight)   # the output layer's rows are classes: untouched


# ------------------------------------------------------------------------------------------ the method

def test_lambda_schedules(digits):
    base = {"train.epochs": 4}
    ep = lambda **kw: _weights(small_config("diversity", **base, **kw), digits.info)  # noqa: E731
    assert ep(**{"model.lam": 0.2}) == pytest.approx([0.2] * 4)
    assert ep(**{"model.lam": 0.2, "model.lam_schedule": "exp_decay", "model.lam_decay": 0.5}) == \
        pytest.approx([0.2, 0.1, 0.05, 0.025])
    assert ep(**{"model.lam": 0.2, "model.lam_schedule": "linear"}) == pytest.approx([0.2, 0.15, 0.1, 0.05])


def _weights(cfg, info):
    method = get_method("diversity")(cfg, info)
    out = []
    for e in range(1, cfg.train.epochs + 1):
        out.append(method.epoch_weight())
        method.after_epoch(None, None, e)
    return out


@pytest.mark.parametrize("flat", [{"model.lam": 0.0}, {"model.lam_schedule": "gated", "model.gate_threshold": 0.99}])
def test_a_penalty_that_is_off_trains_exactly_like_dense(flat, digits):
    dense = Trainer(small_config("dense", **{"train.epochs": 2}), data=digits).fit()
    off = Trainer(small_config("diversity", **{"train.epochs": 2}, **flat), data=digits).fit()
    assert [m["test_acc"] for m in off] == [m["test_acc"] for m in dense]
    assert [m["train_loss"] for m in off] == [m["train_loss"] for m in dense]
    assert all(m["reg_weight"] == 0.0 for m in off)


def test_gate_opens_only_above_the_threshold(digits):
    hist = Trainer(small_config("diversity", **{"model.lam_schedule": "gated", "model.gate_threshold": 0.0,
                                                "train.epochs": 1}), data=digits).fit()
    assert hist[0]["reg_weight"] == pytest.approx(0.1)     # every batch has some correlation > 0: always on


@pytest.mark.parametrize("penalty,metric", [("act_pearson", "act_corr"), ("weight_cos", "weight_cos")])
def test_the_penalty_lowers_what_it_penalises(penalty, metric, digits):
    flat = {"train.epochs": 3, "model.dropout": 0.0}
    plain = Trainer(small_config("dense", **flat), data=digits).fit()[-1]
    reg = Trainer(small_config("diversity", **flat, **{"model.penalty": penalty, "model.lam": 2.0}), data=digits).fit()[-1]
    assert reg[metric] < 0.8 * plain[metric], (reg[metric], plain[metric])


@pytest.mark.parametrize("flat,match", [
    ({"model.penalty": "orthogonal"}, "model.penalty"),
    ({"model.lam": -1.0}, "model.lam"),
    ({"model.lam_schedule": "cyclic"}, "model.lam_schedule"),
    ({"model.decor_init": "orthogonal"}, "model.decor_init"),
    ({"model.decor_steps": 0}, "model.decor_steps"),
])
def test_bad_options_are_one_line_errors(flat, match):
    with pytest.raises(ConfigError, match=match) as e:
        RunConfig.from_flat({"method": "diversity", **flat})
    assert "\n" not in str(e.value)
