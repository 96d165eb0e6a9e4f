"""Neuron diversification (issue 7): penalties, the decorrelated initialisation, the diversity metrics."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsebench.methods import ConfigError, RunConfig, Trainer, get_method
from sparsebench.methods.nn import decorrelation as dc
from sparsebench.methods.nn.layers import MaskedLinear
from sparsebench.methods.core.metrics import diversity, mean_abs_cosine, mean_abs_pearson
from sparsebench.methods.nn.models import MLP

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


def test_ncl_gradient_is_the_liu_yao_gradient_over_the_batch_energy():
    torch.manual_seed(2)
    h = torch.rand(7, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    # The Liu-Yao term itself matches finite differences ...
    assert torch.autograd.gradcheck(dc.ncl_sum, (h, v), eps=1e-6, atol=1e-6)
    # ... and the penalty's gradient is exactly its gradient divided by the (constant) contribution energy.
    energy = (h[:, None, :] * v[None]).detach().pow(2).sum()
    g_pen = torch.autograd.grad(dc.ncl(h, v), (h, v))
    g_raw = torch.autograd.grad(dc.ncl_sum(h, v), (h, v))
    for a, b in zip(g_pen, g_raw):
        assert torch.allclose(a, b / energy, rtol=1e-12, atol=0)


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


def test_ncl_value_is_minus_the_spread_of_contributions_over_their_energy():
    torch.manual_seed(3)
    h, v = torch.rand(4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    f = h[:, None, :] * v[None]
    # sum_i p_i = -sum_i (f_i - fbar)^2 (Liu & Yao's identity), here summed over batch and logits.
    expected = -(f - f.mean(-1, keepdim=True)).pow(2).sum() / f.pow(2).sum()
    assert dc.ncl(h, v).item() == pytest.approx(expected.item(), rel=1e-12)
    assert dc.ncl(torch.ones(2, 3), torch.ones(2, 3)).item() == 0.0      # identical members: no disagreement
    assert dc.ncl(h * 100, v).item() == pytest.approx(dc.ncl(h, v).item(), rel=1e-12)   # scale-free value


def test_ncl_gradient_stays_bounded_for_vanishing_activations():
    torch.manual_seed(9)
    v = torch.randn(3, 6, dtype=torch.float64)
    for scale in (1.0, 1e-4, 1e-10, 1e-20):
        h = (torch.rand(4, 6, dtype=torch.float64) * scale).requires_grad_(True)
        value = dc.ncl(h, v)
        (grad,) = torch.autograd.grad(value, h)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        assert grad.abs().max() < 100.0, (scale, grad.abs().max())


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
    # float32, a unit just above and one just below the metric's dead floor: finite either way.
    a32 = torch.cat([orthogonal_activations().float(), 1 + 2e-6 * hadamard(8)[:, 5:6].float(),
                     1 + 5e-7 * hadamard(8)[:, 6:7].float()], 1)
    value, _ = mean_abs_pearson(a32)
    assert torch.isfinite(value)
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


def test_diversity_is_measured_on_the_first_validation_samples(digits):
    tr = Trainer(small_config("set"), data=digits)
    hist = tr.fit()
    for m in hist:
        assert 0.0 < m["act_corr"] < 1.0 and 0.0 < m["weight_cos"] < 1.0 and 0.0 < m["weight_pearson"] < 1.0
        assert 0 <= m["dead_units"] <= 32 + 16
    # SET does not rewire after the last epoch: the final model is the one measured last.
    again = diversity(tr.model, digits.x_val[:1024])
    for key in ("act_corr", "weight_cos", "weight_pearson", "dead_units", "layer1/act_corr"):
        assert hist[-1][key] == again[key], key
    other = diversity(tr.model, digits.x_train[:1024])
    assert other["act_corr"] != hist[-1]["act_corr"]


# ------------------------------------------------------------------------------------------ decorrelated init

def max_abs_cos(w):
    u = nn.functional.normalize(w.double(), dim=1)
    return (u @ u.T).abs().triu(1).max().item()


@pytest.mark.parametrize("shape", [(64, 784), (16, 617), (32, 64), (8, 784), (64, 64), (128, 64), (256, 64)])
def test_decorrelated_init_lowers_row_cosine_and_keeps_row_norms(shape):
    torch.manual_seed(6)
    w = nn.Linear(shape[1], shape[0]).weight.detach().clone()
    w0 = w.clone()
    before, norms = mean_abs_cosine(w)[0].item(), w.norm(dim=1)
    dc.decorrelate_rows_(w, steps=100, lr=0.05)
    after = mean_abs_cosine(w)[0].item()
    # Measured (benchmarks/decor_init.py): 0.03-0.10 -> <= 0.001 with units <= inputs. With H units > D inputs
    # the rows cannot all be orthogonal: mean cos^2 >= (H - D) / (D (H - 1)) (Welch bound), which it reaches.
    h, d = shape
    welch = max(0.0, (h - d) / (d * (h - 1)))
    assert dc.mean_sq_cosine(w.double()).item() <= welch + 0.1 / d, (before, after)
    assert after < before
    # No near-duplicates traded for orthogonal pairs (what a mean |cos| objective does when units >= inputs).
    assert max_abs_cos(w) <= max_abs_cos(w0)
    assert torch.allclose(w.norm(dim=1), norms, rtol=0, atol=1e-6)
    # ... which the standard draw is far from (random rows: mean cos^2 about 1 / D above it).
    assert dc.mean_sq_cosine(w0.double()).item() > welch + 0.2 / d


def test_decorrelated_init_stays_random_and_is_deterministic():
    def draw(seed):
        torch.manual_seed(seed)
        w = nn.Linear(64, 32).weight.detach().clone()
        return dc.decorrelate_rows_(w, steps=50, lr=0.05)
    a, b, c = draw(0), draw(1), draw(0)
    assert not torch.allclose(a, b, atol=1e-3)
    assert torch.equal(a, c)
    torch.manual_seed(0)
    assert not torch.allclose(a, nn.Linear(64, 32).weight.detach(), atol=1e-3)   # not a no-op


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


@pytest.mark.parametrize("method,kind", [("dense", "cosine"), ("fixprob", "cosine"), ("set", "cosine"),
                                         ("set_neuron", "cosine"), ("diversity", "cosine"), ("dense", "pearson")])
def test_decor_init_option_reaches_every_mlp_method(method, kind, digits):
    std = Trainer(small_config(method), data=digits)
    rng_std = torch.get_rng_state()
    dec = Trainer(small_config(method, **{"model.decor_init": kind}), data=digits)
    # No random number drawn: data order, dropout and topology streams are those of the standard arm.
    assert torch.equal(torch.get_rng_state(), rng_std)
    s_layers, d_layers = std.model.layers, dec.model.layers
    for k in range(len(s_layers) - 1):
        s, d = s_layers[k].weight.detach(), d_layers[k].weight.detach()
        assert torch.allclose(s.norm(dim=1), d.norm(dim=1), atol=1e-6)
        assert mean_abs_cosine(d, centred=kind == "pearson")[0] < 0.5 * mean_abs_cosine(s, centred=kind == "pearson")[0]
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
    if flat.get("model.lam") == 0.0:
        assert all("reg_penalty" not in m for m in off)    # never computed: not reported as a fake 0


def test_gate_opens_only_above_the_threshold(digits):
    hist = Trainer(small_config("diversity", **{"model.lam_schedule": "gated", "model.gate_threshold": 0.0,
                                                "train.epochs": 1}), data=digits).fit()
    assert hist[0]["reg_weight"] == pytest.approx(0.1)     # every batch has some correlation > 0: always on


@pytest.mark.parametrize("penalty", ["act_pearson", "decov"])
def test_gate_reads_the_batch_correlation(penalty, digits):
    """Two batches of known mean |Pearson| (0 and 0.64) against a 0.25 threshold: off, then on."""
    cfg = small_config("diversity", **{"model.lam": 0.3, "model.lam_schedule": "gated", "model.gate_threshold": 0.25,
                                       "model.penalty": penalty})
    method = get_method("diversity")(cfg, digits.info)
    model = method.make_model()
    uncorrelated = orthogonal_activations().float()[:, :3]
    x = hadamard(8)[:, 1:2].float()
    correlated = torch.cat([x, x + hadamard(8)[:, 2:3].float(), x + hadamard(8)[:, 3:4].float()], 1)
    # Pairs: (x, x+y) and (x, x+z) 1/sqrt 2, (x+y, x+z) 1/2.
    assert dc.act_pearson(correlated).item() == pytest.approx((2 / math.sqrt(2) + 0.5) / 3)
    off = method.extra_loss(model, None, None, [uncorrelated])
    on = method.extra_loss(model, None, None, [correlated])
    pen_on = method.penalty(model, [correlated]).item()
    assert off.item() == 0.0 and on.item() == pytest.approx(0.3 * pen_on)
    m = method.epoch_metrics()
    assert m["reg_weight"] == pytest.approx(0.15)          # open on one step of two
    assert m["reg_penalty"] == pytest.approx((method.penalty(model, [uncorrelated]).item() + pen_on) / 2)


def test_a_decaying_and_gated_run_resumes_identically(digits, tmp_path):
    for flat in ({"model.lam_schedule": "exp_decay", "model.penalty": "decov", "model.decor_init": "cosine"},
                 {"model.lam_schedule": "gated", "model.gate_threshold": 0.2, "model.penalty": "weight_cos"},
                 {"model.lam_schedule": "linear", "model.penalty": "ncl", "model.lam": 1.0}):
        cfg = small_config("diversity", **flat)
        full = Trainer(cfg, data=digits).fit()
        first = Trainer(cfg, data=digits)
        first.run_epoch(), first.run_epoch()
        first.save(tmp_path / "s.pt")
        resumed = Trainer(cfg, data=digits)
        resumed.load(tmp_path / "s.pt")
        strip = lambda h: [{k: v for k, v in m.items() if k != "seconds"} for m in h]  # noqa: E731
        assert strip(resumed.fit()) == strip(full), flat


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
