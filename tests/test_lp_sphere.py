"""LpSGD and sparse training on the unit Lp sphere (issue 6, arXiv 2103.16013): the sphere constraint after every
step, the update against an independent computation, plain SGD for free parameters, float32 safety at p = 1.07,
sparsity rising as p -> 1, the LpSS topology (target, no gradient to masked entries, semi-pruning) and bad input."""
from __future__ import annotations

import pytest
import torch

from sparsebench.methods import ConfigError, RunConfig, Trainer
from sparsebench.methods.families.lp_sphere import SemiMaskedLinear
from sparsebench.methods.nn.lpsgd import LpSGD, row_norm

from .conftest import small_config


def exact_norm(w: torch.Tensor, p: float) -> torch.Tensor:
    return w.double().reshape(w.shape[0], -1).abs().pow(p).sum(1).pow(1 / p)


@pytest.mark.parametrize("p", [1.07, 1.3, 2.0])
def test_rows_stay_on_the_unit_sphere_after_every_step(p):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(12, 30))
    conv = torch.nn.Parameter(torch.randn(6, 3, 3, 3))       # a filter is a row: all dims but 0
    opt = LpSGD([{"params": [w, conv], "lp": p}], lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(64, 30)
    for _ in range(25):
        opt.zero_grad()
        (torch.tanh(x @ w.T).square().mean() + conv.sum().square()).backward()
        opt.step()
        for t in (w, conv):
            assert (exact_norm(t.detach(), p) - 1).abs().max() < 1e-5


def test_free_parameters_follow_torch_sgd_exactly():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(5))
    a2, b2 = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    ours = LpSGD([{"params": [a, b], "lp": None}], lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD([a2, b2], lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(8, 4)
    for _ in range(10):
        for (wa, wb), opt in (((a, b), ours), ((a2, b2), ref)):
            opt.zero_grad()
            (x @ wa.T + wb).sin().sum().backward()
            opt.step()
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_one_step_equals_the_update_computed_independently():
    """float64, by hand: Nesterov buffer, feature vector, dual-norm normalisation, mixing, renormalisation, map back."""
    torch.manual_seed(1)
    p, eta, mu = 1.5, 0.1, 0.9
    q = p / (p - 1)
    w0 = torch.randn(3, 4, dtype=torch.float64)
    w0 = w0 / w0.abs().pow(p).sum(1, keepdim=True).pow(1 / p)
    g = torch.randn(3, 4, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = LpSGD([{"params": [w], "lp": p}], lr=eta, momentum=mu, nesterov=True)
    w.grad = g.clone()
    opt.step()
    d = g + mu * g                                                      # first step: buf = g
    v = w0.sign() * w0.abs().pow(p - 1)
    d_hat = d / d.abs().pow(q).sum(1, keepdim=True).pow(1 / q)
    v = (1 - eta) * v - eta * d_hat
    v = v / v.abs().pow(q).sum(1, keepdim=True).pow(1 / q)
    expected = v.sign() * v.abs().pow(1 / (p - 1))
    assert torch.allclose(w.detach(), expected, atol=1e-6, rtol=0)      # eps: a floor at 1e-6, never reached here


def test_tiny_gradients_at_p_1_07_neither_underflow_nor_overflow_in_float32():
    """|g|^15.3 underflows for |g| < ~3e-3 in float32: the max-scaled norm does not."""
    g = torch.full((2, 50), 1e-4) * torch.linspace(0.5, 1.5, 50)
    naive = g.abs().pow(1.07 / 0.07).sum(1).pow(0.07 / 1.07)
    assert (naive == 0).all()                                            # what an unscaled norm gives
    n = row_norm(g, 1.07 / 0.07).flatten()
    assert torch.allclose(n.double(), exact_norm(g.double(), 1.07 / 0.07), rtol=1e-5)
    w = torch.nn.Parameter(torch.randn(2, 50))
    opt = LpSGD([{"params": [w], "lp": 1.07}], lr=0.01)
    w.grad = g.clone()
    opt.step()
    assert torch.isfinite(w).all() and (exact_norm(w.detach(), 1.07) - 1).abs().max() < 1e-5


def test_p_close_to_one_gives_sparser_weights(digits):
    hoyer = {}
    for p in (1.05, 2.0):
        cfg = small_config("lp_sgd", **{"model.p": [p], "train.epochs": 3, "train.nesterov": True, "model.dropout": 0.0,
                                        "model.mix_rate": 0.05})
        hoyer[p] = Trainer(cfg, data=digits).fit()[-1]["hoyer"]
    assert hoyer[1.05] > hoyer[2.0] + 0.2, hoyer


def test_which_parameters_are_constrained(digits):
    tr = Trainer(small_config("lp_sgd", **{"model.hidden": [32, 16], "model.p": [1.2, 1.4]}), data=digits)
    groups = tr.optimizer.param_groups
    constrained = [(g["lp"], g["params"][0]) for g in groups if g["lp"] is not None]
    layers = tr.model.layers
    assert [(lp, w is layer.weight) for (lp, w), layer in zip(constrained, layers)] == [(1.2, True), (1.4, True)]
    free = next(g for g in groups if g["lp"] is None)["params"]
    assert any(w is layers[-1].weight for w in free)                     # the classifier stays free
    assert all(w.dim() == 1 or w is layers[-1].weight for w in free)      # biases, BatchNorm
    # Mixing rate lr / batch (authors' coupling) for the constrained groups; the free group comes first, at train.lr.
    assert [g["lr"] for g in groups] == pytest.approx([0.05] + [0.05 / 64] * 2)


# ---------------------------------------------------------------- topology (lp_sphere)
def test_sparsity_reaches_the_target(digits):
    cfg = RunConfig.from_flat({"method": "lp_sphere", "data.dataset": "digits", "train.epochs": 10, "train.lr": 0.1,
                               "train.batch_size": 32, "train.nesterov": True, "model.hidden": [128, 128],
                               "model.sparsity": 0.5, "model.frequency": 5, "model.p": [1.05]})
    hist = Trainer(cfg, data=digits).fit()
    assert hist[1]["topology_updates"] == 0 < hist[-1]["topology_updates"]   # none before 20% of training
    assert abs(hist[-1]["weight_sparsity"] - 0.5) <= 0.02, [h["weight_sparsity"] for h in hist]
    assert hist[-1]["test_acc"] > 0.9


def test_masked_entries_get_no_gradient_and_keep_a_latent_value(digits):
    tr = Trainer(small_config("lp_sphere"), data=digits)
    tr.fit()
    layer = tr.model.layers[0]
    off = ~layer.mask
    assert off.any()
    x, y = digits.x_train[:64], digits.y_train[:64]
    tr.optimizer.zero_grad()
    torch.nn.functional.cross_entropy(tr.model(x), y).backward()
    assert torch.equal(layer.weight.grad[off], torch.zeros(int(off.sum())))
    assert torch.equal(layer.effective_weight().detach()[off], torch.zeros(int(off.sum())))
    latent = layer.weight.detach()[off]
    assert (latent != 0).any()                                           # semi-pruning: W keeps them
    # Regrowing a masked entry resumes from its latent value: the forward pass uses it at once.
    i, j = off.nonzero()[(latent != 0).nonzero()[0, 0]]
    h = torch.randn(5, layer.in_features)
    before = layer(h).detach()
    layer.mask[i, j] = True
    assert torch.allclose(layer(h).detach()[:, i] - before[:, i], h[:, j] * layer.weight.detach()[i, j], atol=1e-6)


def test_signed_and_magnitude_growth_differ(digits):
    masks = {}
    for grow in ("signed", "magnitude"):
        tr = Trainer(small_config("lp_sphere", **{"model.grow_by": grow}), data=digits)
        tr.fit()
        masks[grow] = torch.cat([l.mask.flatten() for l in tr.model.layers])
    assert not torch.equal(masks["signed"], masks["magnitude"])


def test_semi_masked_layer_counts():
    layer = SemiMaskedLinear(6, 4)
    layer.mask[0, :3] = False
    assert layer.num_trainable(lambda p: True) == 21 + 4


@pytest.mark.parametrize("flat, message", [
    ({"method": "lp_sgd", "model.p": [1.0]}, r"model.p\[0\]=1.0: must be > 1.0"),
    ({"method": "lp_sgd", "model.hidden": [8, 8], "model.p": [1.1, 1.2, 1.3]},
     "give one exponent, or one per constrained layer (2 here: the hidden layers)"),
    ({"method": "lp_sgd", "train.optimizer": "adam"}, "train.optimizer='adam': method 'lp_sgd' needs train.optimizer='sgd'"),
    ({"method": "lp_sphere", "train.weight_decay": 0.01}, "method 'lp_sphere' needs train.weight_decay=0.0"),
    ({"method": "lp_sphere", "model.begin": 0.5, "model.end": 0.4}, "model.end=0.4 must exceed model.begin=0.5"),
    ({"method": "lp_sphere", "model.sparsity": 1.0}, "model.sparsity=1.0: must be < 1.0"),
    ({"method": "lp_sgd", "model.hidden": []}, "leaves no layer on the Lp sphere"),
])
def test_bad_configs(flat, message):
    with pytest.raises(ConfigError, match=message if "\\" in message else None) as err:
        RunConfig.from_flat(flat)
    assert message.replace("\\", "") in str(err.value) or "\\" in message


def test_dense_baseline_can_have_the_same_batchnorm(digits):
    """The Lp-sphere protocol's dense arm is the same BatchNorm MLP trained by SGD (workflows/papers/lp_sphere.yaml)."""
    tr = Trainer(small_config("dense", **{"model.batchnorm": True, "model.hidden": [32, 16]}), data=digits)
    assert [n.num_features for n in tr.model.norms] == [32, 16]
    m = tr.run_epoch()
    assert m["params_trainable"] == m["params_dense"] + 2 * (32 + 16)
