"""Spectral node pruning (issue 5, Sci. Rep. 12, 11201, 2022): post-training removal of hidden nodes by |lam_out|
or incoming connectivity, the curve one run yields, and the pre-training filter (`spectral_filter`)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from sparsebench.methods import ConfigError, RunConfig, Trainer, list_methods
from sparsebench.methods.nn.layers import DenseLinear, MaskedLinear
from sparsebench.methods.core.metrics import params_trainable, structure
from sparsebench.methods.nn.models import MLP
from sparsebench.methods.core.metrics import pruning_curve
from sparsebench.methods.nn.node_pruning import node_scores, prune_, removal_masks, remove_nodes_
from sparsebench.methods.families.spectral_filter import shrink
from sparsebench.methods.nn.spectral_layers import DenseSparseLinear, SpectralLinear

from .conftest import small_config

WIDTHS = (20, 12, 8, 5)   # two hidden layers: 20 hidden nodes in all
GEN = lambda: torch.Generator().manual_seed(0)  # noqa: E731

FACTORIES = {
    "dense": lambda a, b, bias, i: DenseLinear(a, b, bias=bias),
    "masked": lambda a, b, bias, i: MaskedLinear(a, b, bias=bias, mask=torch.rand(b, a, generator=GEN()) < 0.7),
    "dense_sparse": lambda a, b, bias, i: DenseSparseLinear(a, b, bias=bias, sparsity=0.3, generator=GEN()),
    "qr_sparse": lambda a, b, bias, i: SpectralLinear(a, b, "qr", bias=bias, sparsity=0.5, generator=GEN()),
    **{v: (lambda v: lambda a, b, bias, i: SpectralLinear(a, b, v, bias=bias, generator=GEN()))(v)
       for v in ("eig_out", "eig_out_full", "two_sets", "ssvd", "qr", "full")},
}


def net(kind: str, activation: str = "tanh", bias: bool = True) -> MLP:
    torch.manual_seed(0)
    model = MLP(WIDTHS, activation=activation, bias=bias, factory=FACTORIES[kind])
    with torch.no_grad():  # nonzero biases, so that removing a node must remove its bias too
        for layer in model.layers:
            if layer.bias is not None:
                layer.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("percent", [0, 5, 30, 50, 95, 100])
def test_pruning_removes_exactly_that_share_of_hidden_nodes_and_leaves_the_output_layer(kind, percent):
    model = net(kind)
    out_before = model.layers[-1].effective_weight().detach().clone()
    out_bias = model.layers[-1].bias.detach().clone()
    before = [(l.effective_weight().detach().clone(), l.bias.detach().clone()) for l in model.layers[:-1]]
    drops = removal_masks(node_scores(model, "connectivity" if kind in ("qr_sparse", "two_sets") else "auto"), percent)
    remove_nodes_(model, drops)
    removed = sum(int(d.sum()) for d in drops)
    assert removed == round(percent / 100 * 20)
    gone = 0
    for layer, drop, (w0, b0) in zip(model.layers[:-1], drops, before):
        w = layer.effective_weight().detach()
        dead = (w == 0).all(1)
        assert torch.equal(dead, drop)
        assert torch.equal(layer.bias[dead], torch.zeros(int(dead.sum())))
        # Every surviving node keeps exactly its incoming weights and bias (for a dynamically sparsified layer:
        # the same survivors of the thresholding).
        assert torch.equal(w[~drop], w0[~drop]) and torch.equal(layer.bias[~drop], b0[~drop])
        gone += int(dead.sum())
    assert gone == removed
    assert structure(model)["layer0/neurons_no_in"] + structure(model)["layer1/neurons_no_in"] == removed
    assert torch.equal(model.layers[-1].effective_weight(), out_before)
    assert torch.equal(model.layers[-1].bias, out_bias)
    # A removed node outputs act(0) = 0 (tanh) on every input.
    _, hidden = model(torch.randn(16, WIDTHS[0]), return_hidden=True)
    for layer, h in zip(model.layers[:-1], hidden):
        dead = (layer.effective_weight() == 0).all(1)
        assert torch.equal(h[:, dead], torch.zeros(16, int(dead.sum())))


def test_one_global_percentile_over_all_hidden_layers_ranks_by_absolute_eigenvalue():
    """Sci. Rep. 2022: |lam| of all hidden layers pooled (Buffoni/spectral_learning); the sign does not matter."""
    model = net("eig_out_full")
    with torch.no_grad():
        model.layers[0].lam_out.copy_(torch.linspace(1.0, 2.0, 12) * torch.tensor([1, -1] * 6))  # large, both signs
        model.layers[1].lam_out.copy_(torch.linspace(0.01, 0.08, 8))                           # all small
        model.layers[2].lam_out.fill_(1e-6)                                                     # output: never ranked
    drops = removal_masks(node_scores(model), 40)   # 8 of 20 nodes
    assert int(drops[0].sum()) == 0 and bool(drops[1].all())
    drops = removal_masks(node_scores(model), 50)   # 10: all of layer 1, then the two smallest |lam| of layer 0
    assert drops[0].nonzero().flatten().tolist() == [0, 1]
    # `auto` uses the eigenvalue for single-set layers and connectivity for the others.
    assert torch.equal(node_scores(model)[0], model.layers[0].lam_out.detach().abs())
    dense = net("dense")
    assert torch.allclose(node_scores(dense)[1], dense.layers[1].weight.detach().abs().sum(1))
    assert torch.allclose(node_scores(model, "connectivity")[0],
                          model.layers[0].effective_weight().detach().abs().sum(1))
    with pytest.raises(ValueError, match=r"prune_score=eigenvalue needs spectral layers with one eigenvalue set "
                                         r"\(eig_out, eig_out_full\), got DenseLinear"):
        node_scores(dense, "eigenvalue")
    with pytest.raises(ValueError, match="got SpectralLinear two_sets"):
        node_scores(net("two_sets"), "eigenvalue")
    mixed = MLP(WIDTHS, factory=lambda a, b, bias, i: SpectralLinear(a, b, ("eig_out_full", "two_sets", "qr")[i]))
    with pytest.raises(ValueError, match="prune_score=auto would rank eigenvalues against connectivities"):
        node_scores(mixed)
    assert len(node_scores(mixed, "connectivity")) == 2


def test_eigenvalue_removal_sets_the_nodes_eigenvalue_to_zero():
    model = net("eig_out")
    drops = removal_masks(node_scores(model), 25)
    remove_nodes_(model, drops)
    for layer, drop in zip(model.layers, drops):
        assert torch.equal(layer.lam_out[drop], torch.zeros(int(drop.sum())))
        assert bool((layer.lam_out[~drop] != 0).all())


@pytest.mark.parametrize("percent", [-1, 100.5])
def test_bad_percent(percent):
    with pytest.raises(ValueError, match="percent must be in"):
        removal_masks(node_scores(net("dense")), percent)


def test_masked_layer_removal_survives_a_state_dict_round_trip():
    model = net("masked")
    prune_(model, 50)
    fresh = net("masked")
    fresh.load_state_dict(model.state_dict())
    for a, b in zip(model.layers, fresh.layers):
        assert torch.equal(a.unit_mask, b.unit_mask) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.effective_weight(), b.effective_weight())
    assert sum(int((~l.unit_mask).sum()) for l in fresh.layers[:-1]) == 10


@pytest.mark.parametrize("method", list_methods())
def test_every_method_gives_a_pruning_curve(method, digits):
    tr = Trainer(small_config(method, **{"train.epochs": 2, "train.prune_curve": [0, 50]}), data=digits)
    m = tr.fit()[-1]
    curve = m["pruning"]
    hidden = sum(l.out_features for l in tr.model.layers[:-1])
    assert curve["nodes_removed"] == [0, round(hidden / 2)]
    assert curve["test_acc"][0] == m["test_acc"] and curve["weights_nonzero"][0] == m["weights_nonzero"]
    assert curve["weights_nonzero"][1] < curve["weights_nonzero"][0]


def test_curve_is_measured_on_copies_and_starts_at_the_models_accuracy(digits):
    tr = Trainer(small_config("spectral", **{"model.variant": "eig_out_full", "train.epochs": 2,
                                             "train.prune_curve": [0, 10, 50, 90, 100]}), data=digits)
    hist = tr.fit()
    assert "pruning" not in hist[0]
    curve = hist[-1]["pruning"]
    assert curve["percent"] == [0, 10, 50, 90, 100]
    assert curve["nodes_removed"] == [0, 26, 128, 230, 256]
    assert curve["test_acc"][0] == hist[-1]["test_acc"] and curve["val_acc"][0] == hist[-1]["val_acc"]
    assert hist[-1]["test_acc"] > 0.5 and curve["test_acc"][-1] < 0.25   # all hidden nodes gone: near chance
    assert curve["weights_nonzero"][0] == hist[-1]["weights_nonzero"]
    assert curve["weights_nonzero"] == sorted(curve["weights_nonzero"], reverse=True)
    # The trained network itself was not touched: evaluating again gives the same numbers.
    before = copy.deepcopy(tr.model.state_dict())
    again = tr.pruning_curve()
    assert again == curve
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())


def test_curve_of_the_dense_baseline_uses_incoming_connectivity(digits):
    tr = Trainer(small_config("dense_sparse", **{"model.sparsity": 0.0, "train.epochs": 1, "train.prune_curve": [30]}),
                 data=digits)
    curve = tr.fit()[-1]["pruning"]
    splits = {"test": (digits.x_test, digits.y_test)}
    manual = copy.deepcopy(tr.model)
    w = manual.layers[0].weight.detach()
    drop = torch.zeros(256, dtype=torch.bool)
    drop[torch.argsort(w.abs().sum(1), stable=True)[:77]] = True
    with torch.no_grad():
        manual.layers[0].weight[drop] = 0
    assert curve["nodes_removed"] == [77]
    assert pruning_curve(manual, splits, [0])["test_acc"] == curve["test_acc"]


@pytest.mark.parametrize("flat, message", [
    ({"method": "dense", "train.prune_curve": [10], "train.prune_score": "eigenvalue"},
     "train.prune_score='eigenvalue' is not defined for method 'dense'; allowed: auto, connectivity"),
    ({"method": "spectral", "train.prune_curve": [10, 101]}, r"train.prune_curve\[1\]=101: must be <= 100"),
    ({"method": "spectral", "train.prune_curve": [10, 10]}, "percentages must be distinct"),
    ({"method": "spectral", "train.prune_score": "random"}, "train.prune_score='random': allowed values are"),
    ({"method": "spectral_filter", "train.epochs": 1},
     "train.epochs=1 with model.retrain_fraction=0.166667 leaves no epoch for the eigenvalue-only phase"),
    ({"method": "spectral_filter", "train.epochs": 5, "model.retrain_fraction": 0.95},
     "raise train.epochs or lower model.retrain_fraction"),
    ({"method": "spectral_filter", "model.hidden": []}, r"spectral_filter removes hidden nodes, but model.hidden=\[\]"),
    ({"method": "dense", "train.prune_score": "connectivity"}, "without train.prune_curve ranks nothing"),
    ({"method": "dense", "model.hidden": [], "train.prune_curve": [10]}, r"model.hidden=\[\] has none"),
    ({"method": "spectral", "train.prune_curve": [10], "train.prune_score": "eigenvalue"},
     r"needs hidden layers of variant eig_out or eig_out_full .* got \['two_sets', 'two_sets'\]"),
    ({"method": "spectral", "train.prune_curve": [10], "model.hidden": [8, 8],
      "model.layer_variants": ["eig_out", "qr", "qr"]}, "train.prune_score='auto' would rank eigenvalues against"),
    ({"method": "spectral_sparse", "train.prune_curve": [10], "train.prune_score": "eigenvalue"},
     "not defined for method 'spectral_sparse'; allowed: auto, connectivity"),
    ({"method": "spectral_filter", "train.epochs": 30, "model.prune_percent": 100}, "model.prune_percent=100: must be < 100"),
])
def test_bad_pruning_configs(flat, message):
    """Each is refused when the config is built, before any data is loaded or any trial starts."""
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_flat(flat)


# ---------------------------------------------------------------- the pre-training filter ("Alternate")
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_shrunk_network_computes_what_the_pruned_one_does(activation):
    """The smaller network built after the filter equals the eigenvalue-pruned big one, logit for logit."""
    model = net("eig_out", activation=activation, bias=False)
    drops = removal_masks(node_scores(model, "eigenvalue"), 40)
    small = shrink(model, [(~d).nonzero().flatten() for d in drops])
    assert small.widths == (20, 12 - int(drops[0].sum()), 8 - int(drops[1].sum()), 5)
    assert [l.variant for l in small.layers] == ["eig_out_full"] * 3
    pruned = copy.deepcopy(model)
    remove_nodes_(pruned, drops)
    x = torch.randn(32, 20)
    assert torch.allclose(small(x), pruned(x), atol=1e-6)
    # phi is trainable now: n_in * n_out + n_out per layer (no bias).
    assert params_trainable(small) == sum(a * b + b for a, b in zip(small.widths[:-1], small.widths[1:]))


def test_filter_phase_trains_eigenvalues_only_then_the_smaller_network_everything(digits):
    cfg = small_config("spectral_filter", **{"model.hidden": [40], "model.prune_percent": 75, "train.epochs": 4,
                                             "train.schedule": "cosine"})
    tr = Trainer(cfg, data=digits)
    hist = tr.fit()
    # Eigenvalue-only: 40 + 10 trainable values; then a 64-10-10 network with phi trainable.
    assert [m["params_trainable"] for m in hist] == [50, 50, 64 * 10 + 10 + 10 * 10 + 10, 760]
    assert tr.model.widths == (64, 10, 10)
    assert [m["params_dense"] for m in hist] == [64 * 40 + 40 * 10] * 2 + [64 * 10 + 10 * 10] * 2
    # The schedule carried over to the new optimizer: the cosine rates of a 4-epoch run.
    assert [m["lr"] for m in hist] == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    assert hist[-1]["val_acc"] > hist[1]["val_acc"]


def test_the_filter_never_empties_a_hidden_layer(digits):
    tr = Trainer(small_config("spectral_filter", **{"model.hidden": [4, 200], "model.prune_percent": 95}), data=digits)
    with torch.no_grad():
        tr.model.layers[0].lam_out.copy_(torch.tensor([1e-4, 3e-4, 2e-4, 1e-5]))   # all below layer 1's
        tr.model.layers[1].lam_out.uniform_(0.5, 1.0)
    tr.method.after_epoch(tr.model, tr.optimizer, tr.method.filter_epochs())
    assert tr.method.kept[0].tolist() == [1]                    # the largest |lam| of the emptied layer
    assert len(tr.method.kept[1]) == 204 - 194                  # round(0.95 * 204) = 194 removed from layer 1
    small = tr.method.reshape(tr.model)
    assert small.widths == (64, 1, 10, 10)


def test_resume_after_the_filter_keeps_the_pruned_nodes_pruned(digits, tmp_path):
    cfg = small_config("spectral_filter", **{"model.hidden": [40], "model.prune_percent": 50, "train.epochs": 5,
                                             "model.retrain_fraction": 0.4})
    full = Trainer(cfg, data=digits).fit()
    first = Trainer(cfg, data=digits)
    for _ in range(4):
        first.run_epoch()
    kept = first.method.kept[0].tolist()
    first.save(tmp_path / "state.pt")
    resumed = Trainer(cfg, data=digits)
    assert resumed.model.widths == (64, 40, 10)
    resumed.load(tmp_path / "state.pt")
    assert resumed.model.widths == (64, 20, 10) and resumed.method.kept[0].tolist() == kept
    rest = resumed.fit()
    strip = lambda h: [{k: v for k, v in m.items() if k != "seconds"} for m in h]  # noqa: E731
    assert strip(rest) == strip(full)
