"""Budget sizing (issue 16): every registered method sizes a config to a parameter budget in closed form, and the
network that config really deploys (built, then taken through the method's own end-of-training topology changes)
has that size, counted by methods/core/metrics.py."""
from __future__ import annotations

import math

import pytest
import torch

from sparsebench.methods import RunConfig, get_method, list_methods, metrics
from sparsebench.methods.core.budget import BUDGET_METRICS, TOLERANCE, BudgetError
from sparsebench.methods.data import DataInfo
from sparsebench.methods.nn.layers import MaskedLinear, weight_layers

# digits' shape and MNIST's (784 inputs), given as DataInfo: sizing needs the shape only, no data is loaded. Each
# with three budgets it can reach: on MNIST one hidden unit alone costs ~800 scalars, so 2k and 8k are out of reach
# of an MLP within 5% (test_mnist_2k_is_unreachable_for_dense).
SHAPES = {
    "digits": DataInfo("digits", (64,), 10, 1000, 200, 360, "", "test"),
    "mnist": DataInfo("mnist", (1, 28, 28), 10, 50000, 10000, 10000, "", "test"),
}
BUDGETS = {"digits": (2000, 8000, 32000), "mnist": (32000, 64000, 128000)}
EPOCHS = 4


def base_config(method: str, shape: str = "digits") -> RunConfig:
    flat = {"method": method, "train.epochs": EPOCHS}
    if method == "spectral" and shape == "mnist":
        # two_sets trains ~5 scalars per hidden unit: 32k of them on MNIST is a ~6000-wide net, minutes to build
        # on 2 cores; qr (R^T trainable) is sized here, two_sets on digits.
        flat["model.variant"] = "qr"
    if method == "set_neuron":   # three pruning rounds before the last epoch
        flat.update({"model.prune_start": 1, "model.prune_every": 1})
    return RunConfig.from_flat(flat)


def deployed_network(cfg: RunConfig, info: DataInfo):
    """The network `cfg` deploys: built, then the method's topology changes that end training (set_neuron's pruning
    rounds, spectral_filter's node removal); the data never changes which shape results, only which units."""
    method = get_method(cfg.method)(cfg, info)
    torch.manual_seed(0)
    model = method.make_model()
    opt = method.optimizer(model)
    if cfg.method == "set_neuron":
        for epoch in method.schedule(cfg):
            method.before_rewiring(model, opt, epoch)
    if cfg.method == "spectral_filter":
        method.after_epoch(model, opt, method.filter_epochs())
        model = method.reshape(model)
        opt = method.optimizer(model)
    return model, opt


def measured(model, opt, metric: str) -> int:
    if metric == "params_trainable":
        return metrics.params_trainable(model, opt)
    if metric == "flops_inference":
        return metrics.inference_flops(model)   # measured from the layers, not as 2 x the nonzeros
    return int(metrics.weights_nonzero(model))


def er_slack(model) -> float:
    """4 standard deviations of the Bernoulli mask counts (SET's ER draw; the closed form is their mean)."""
    var = 0.0
    for layer in weight_layers(model):
        if isinstance(layer, MaskedLinear) and not bool(layer.mask.all()):
            p = float(layer.mask.float().mean())
            var += layer.mask.numel() * p * (1 - p)
    return 4 * math.sqrt(var) + 1


@pytest.mark.parametrize("metric", BUDGET_METRICS)
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", list_methods())
def test_sized_config_deploys_its_budget(name, shape, metric):
    info = SHAPES[shape]
    cls = get_method(name)
    for budget in BUDGETS[shape]:
        sized = cls.size_to_budget(base_config(name, shape), info, budget, metric)
        closed = cls.deployed(sized, info, metric)
        assert abs(closed - budget) <= TOLERANCE * budget, (name, budget, closed)
        model, opt = deployed_network(sized, info)
        real = measured(model, opt, metric)
        if name == "lp_sgd" and metric != "params_trainable":
            assert real == closed    # at init; LpSGD's exact zeros appear only in training (an upper bound)
        elif name in ("fixprob", "set", "set_neuron"):
            assert abs(real - closed) <= er_slack(model) * (2 if metric == "flops_inference" else 1), (name, budget, real, closed)
        elif metric != "params_trainable" and name in ("spectral_sparse", "dense_sparse"):
            # Entries tied with the threshold's |W| are zeroed too ("ties aside", methods/nn/spectral_layers.py).
            assert closed - real <= 1e-3 * closed, (name, budget, real, closed)
        else:
            assert real == pytest.approx(closed, abs=0.5), (name, budget, real, closed)
        assert abs(real - budget) <= TOLERANCE * budget, (name, budget, real)


def test_sizing_builds_no_network(monkeypatch):
    """Closed form: sizing every method never calls a constructor of a network (build / make_model)."""
    def refuse(self, *a, **k):
        raise AssertionError(f"{type(self).__name__} built a network while sizing")

    for name in list_methods():
        cls = get_method(name)
        monkeypatch.setattr(cls, "build", refuse)
        monkeypatch.setattr(cls, "make_model", refuse)
        monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
        try:
            cls.size_to_budget(base_config(name), SHAPES["digits"], 8000, "params_trainable")
        finally:
            monkeypatch.undo()


@pytest.mark.parametrize("name", list_methods())
def test_budget_below_the_minimum_is_unreachable(name):
    with pytest.raises(BudgetError, match="unreachable"):
        get_method(name).size_to_budget(base_config(name), SHAPES["digits"], 5, "params_trainable")


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf")])
def test_bad_budget_is_refused(bad):
    with pytest.raises(BudgetError, match="budget"):
        get_method("dense").size_to_budget(base_config("dense"), SHAPES["digits"], bad)


def test_unknown_metric_is_refused():
    with pytest.raises(BudgetError, match="allowed: params_trainable, weights_nonzero, flops_inference"):
        get_method("dense").size_to_budget(base_config("dense"), SHAPES["digits"], 2000, "flops")


def test_mnist_2k_is_unreachable_for_dense():
    with pytest.raises(BudgetError, match="budget 2000 params_trainable: dense reaches .* unreachable"):
        get_method("dense").size_to_budget(base_config("dense"), SHAPES["mnist"], 2000)
