"""SET family (methods/families/set_prune.py): measured facts about masks, rewiring and neuron pruning."""
from __future__ import annotations

import math

import pytest
import torch

from sparsebench.methods import ConfigError, RunConfig, Trainer
from sparsebench.methods.nn.layers import MaskedLinear
from sparsebench.methods.core.metrics import structure
from sparsebench.methods.families.set_prune import er_density, set_evolve

from .conftest import assert_resume_identical, small_config


def test_er_density_formula_and_cap():
    assert er_density(784, 1000, 20) == pytest.approx(20 * 1784 / 784000)
    assert er_density(1000, 10, 20) == 1.0  # 2.02 capped: the layer is dense


@pytest.mark.parametrize("eps", [5.0, 20.0])
def test_er_nonzeros_within_three_sigma(eps, digits):
    cfg = RunConfig.from_flat({"method": "fixprob", "model.hidden": [300, 200], "model.epsilon": eps, "model.sparse_output": True})
    model = Trainer(cfg, data=digits).model
    for layer in model.layers:
        n_out, n_in = layer.weight.shape
        p = er_density(n_in, n_out, eps)
        n = n_in * n_out
        nnz = int(torch.count_nonzero(layer.effective_weight()))
        assert abs(nnz - p * n) <= 3 * math.sqrt(n * p * (1 - p)) + 1e-9, (n_in, n_out, nnz, p * n)
        if p < 1:
            assert abs(p * n - eps * (n_in + n_out)) < 1e-6


def test_output_layer_dense_unless_asked(digits):
    model = Trainer(RunConfig.from_flat({"method": "fixprob", "model.hidden": [300]}), data=digits).model
    assert bool(model.layers[-1].mask.all()) and not bool(model.layers[0].mask.all())


def hand_layer() -> MaskedLinear:
    layer = MaskedLinear(5, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.1, 0.2, -0.7, 0.05], [-0.3, 0.9, -0.02, 0.4, 0.0]]))
        layer.mask[1, 4] = False  # an empty position
        layer.weight.mul_(layer.mask)
        layer.budget.copy_(layer.mask.sum())
    return layer


def test_evolution_removes_zeta_of_each_sign_closest_to_zero_and_regrows_into_empty_positions():
    layer = hand_layer()
    before = layer.mask.clone()
    # 5 positive active weights (0.5, 0.2, 0.05, 0.9, 0.4) and 4 negative (-0.1, -0.7, -0.3, -0.02); zeta = 0.5:
    # int(0.5*5) = 2 positives closest to zero (0.05, 0.2), int(0.5*4) = 2 negatives (-0.02, -0.1).
    removed, regrown = set_evolve(layer, 0.5, "normal", torch.Generator().manual_seed(0))
    expected_removed = torch.zeros_like(before)
    for r, c in [(0, 4), (0, 2), (1, 2), (0, 1)]:
        expected_removed[r, c] = True
    assert torch.equal(removed, expected_removed)
    assert int(layer.mask.sum()) == int(before.sum()) == int(layer.budget)  # nonzero budget constant
    assert not (regrown & (before & ~removed)).any()  # regrown only where empty after the removal
    assert int(regrown.sum()) == 4
    w = layer.weight
    assert torch.all(w[~layer.mask] == 0)
    assert torch.all(w[regrown] != 0)  # N(0, 0.01) values
    kept = before & ~removed
    assert torch.equal(w[kept], hand_layer().weight[kept])  # survivors untouched


def test_active_exact_zeros_are_removed_and_regrown_weights_can_start_at_zero():
    layer = hand_layer()
    with torch.no_grad():
        layer.mask[1, 4] = True  # active but exactly zero
        layer.budget.copy_(layer.mask.sum())
    removed, regrown = set_evolve(layer, 0.0, "zero", torch.Generator().manual_seed(0))
    assert removed.sum() == 1 and bool(removed[1, 4])
    assert regrown.sum() == 1 and int(layer.mask.sum()) == 10
    assert layer.weight[regrown].item() == 0.0


def test_rewiring_during_training_keeps_budget_and_zeroes_momentum(digits):
    cfg = small_config("set", **{"train.epochs": 3, "model.zeta": 0.3})
    tr = Trainer(cfg, data=digits)
    tr.run_epoch()
    layer = tr.model.layers[0]
    before = layer.mask.clone()
    budget = int(layer.budget)
    assert int(before.sum()) == budget
    # Train one more epoch by hand up to the rewiring, so we can look at the masks around it.
    tr.train_epoch()
    pre = layer.mask.clone()
    tr.method.after_epoch(tr.model, tr.optimizer, 2)
    post = layer.mask
    changed = pre ^ post
    assert changed.any()
    assert int(post.sum()) == budget
    mom = tr.optimizer.state[layer.weight]["momentum_buffer"]
    assert torch.all(mom[changed] == 0) and torch.any(mom[post & pre] != 0)
    assert torch.all(layer.weight[~post] == 0)


def test_masked_entries_get_no_gradient(digits):
    tr = Trainer(small_config("fixprob"), data=digits)
    layer = tr.model.layers[0]
    tr.train_step(digits.x_train[:64], digits.y_train[:64])
    assert torch.all(layer.weight.grad[~layer.mask] == 0)
    assert torch.all(layer.weight[~layer.mask] == 0)


def prune_config(**flat):
    base = {"train.epochs": 8, "model.hidden": [64, 32], "model.prune_start": 2, "model.prune_every": 2,
            "model.zeta": 0.2, "model.dropout": 0.0}
    return small_config("set_neuron", **{**base, **flat})


def test_neuron_pruning_follows_the_target_schedule_and_never_regrows(digits):
    cfg = prune_config(**{"model.prune_target": 0.5})
    tr = Trainer(cfg, data=digits)
    assert tr.method.schedule(tr.cfg) == [2, 4, 6]
    dead_seen = [set(), set()]
    hist = tr.fit(lambda m, t: [dead_seen[i].update((~t.model.layers[i].unit_mask).nonzero().flatten().tolist())
                                for i in range(2)])
    layers = tr.model.layers
    for i, width in enumerate((64, 32)):
        dead = ~layers[i].unit_mask
        # H (1 - 0.5)^(r/3) alive after round r: exactly half gone at the end.
        assert int(dead.sum()) == width // 2
        assert set(dead.nonzero().flatten().tolist()) == dead_seen[i]  # once dead, dead for good
        assert torch.all(layers[i].weight[dead] == 0) and not layers[i].mask[dead].any()
        assert torch.all(layers[i].bias[dead] == 0)
        assert torch.all(layers[i + 1].weight[:, dead] == 0) and not layers[i + 1].mask[:, dead].any()
        assert int(layers[i].budget) == int(layers[i].mask.sum())
    # Alive counts follow round(H * 0.5^(r/3)) after the rounds at epochs 2, 4 and 6 (measured from the next
    # epoch on: an epoch is measured before its topology change).
    alive = [m["layer0/neurons_active"] for m in hist]
    assert alive[:2] == [64, 64]
    assert alive[2] == alive[3] == round(64 * 0.5 ** (1 / 3)) and alive[4] == round(64 * 0.5 ** (2 / 3)) and alive[-1] == 32
    assert hist[-1]["neuron_sparsity"] == pytest.approx(0.5)
    assert hist[-1]["neurons_active"] == 48


def test_percentile_over_all_saturates_and_over_alive_does_not(digits):
    rounds = {"train.epochs": 12, "model.prune_start": 1, "model.prune_every": 1, "model.prune_percentile": 20.0}
    over_all = Trainer(prune_config(**rounds, **{"model.percentile_over": "all"}), data=digits).fit()
    over_alive = Trainer(prune_config(**rounds, **{"model.percentile_over": "alive"}), data=digits).fit()
    # Percentile saturation: once 20% are dead the threshold over all units is 0 and pruning stalls near 20%.
    assert 0.15 < over_all[-1]["layer0/neuron_sparsity"] < 0.35
    assert over_alive[-1]["layer0/neuron_sparsity"] > 0.8  # 1 - 0.8^11 = 0.91


def test_params_trainable_shrinks_by_what_pruning_removes(digits):
    """Counted independently of MaskedLinear.num_trainable: every connection a pruned unit had (in and out)
    and its bias leave the count; SET rewiring keeps each layer's budget."""
    tr = Trainer(prune_config(**{"model.prune_target": 0.5}), data=digits)
    start = structure(tr.model, tr.optimizer)["params_trainable"]
    layers = tr.model.layers
    budgets = [int(l.budget) for l in layers]
    tr.fit()
    end = structure(tr.model, tr.optimizer)["params_trainable"]
    lost_biases = sum(int((~l.unit_mask).sum()) for l in layers)
    lost_weights = sum(b - int(l.budget) for b, l in zip(budgets, layers))
    assert lost_biases > 0 and lost_weights > 0
    assert start - end == lost_weights + lost_biases


def test_resume_after_rewiring_and_pruning_is_identical(digits, tmp_path):
    cfg = prune_config(**{"model.prune_target": 0.5, "model.regrow_init": "normal", "model.dropout": 0.1})
    assert_resume_identical(cfg, digits, tmp_path / "s.pt", after=5)   # after rewirings and two pruning rounds


def test_decoupled_weight_decay_matches_its_definition(digits):
    """W <- W - wd W after each step: with lr ~ 0 the weights shrink by (1 - wd)^steps exactly."""
    cfg = small_config("dense", **{"train.epochs": 1, "train.lr": 1e-12, "train.momentum": 0.0,
                                   "train.decoupled_weight_decay": 0.01, "model.dropout": 0.0})
    tr = Trainer(cfg, data=digits)
    w0 = tr.model.layers[0].weight.detach().clone()
    b0 = tr.model.layers[0].bias.detach().clone()
    tr.run_epoch()
    steps = math.ceil(digits.info.n_train / cfg.train.batch_size)
    assert torch.allclose(tr.model.layers[0].weight, w0 * 0.99 ** steps, rtol=1e-5, atol=1e-9)
    assert torch.allclose(tr.model.layers[0].bias, b0, atol=1e-9)  # biases are not decayed


@pytest.mark.parametrize("flat,message", [
    ({"method": "set", "model.epsilon": 0.0}, r"model.epsilon=0.0: must be > 0.0"),
    ({"method": "set", "model.epsilon": -3.0}, r"model.epsilon=-3.0: must be > 0.0"),
    ({"method": "set", "model.zeta": 1.0}, r"model.zeta=1.0: must be < 1.0"),
    ({"method": "set", "model.zeta": -0.1}, r"model.zeta=-0.1: must be >= 0.0"),
    ({"method": "set_neuron", "model.prune_target": 1.0}, r"model.prune_target=1.0: must be < 1.0"),
    ({"method": "set_neuron", "model.prune_percentile": 100.0}, r"model.prune_percentile=100.0: must be < 100.0"),
    ({"method": "set_neuron", "model.hidden": []}, r"set_neuron prunes hidden units"),
    ({"method": "set_neuron", "train.epochs": 20}, r"model.prune_start=210: no pruning round before the last epoch"),
    ({"method": "set_neuron", "train.epochs": 5, "model.prune_start": 5}, r"set model.prune_start < train.epochs"),
    ({"method": "set", "model.regrow_init": "ones"}, r"allowed values are zero, normal, he_uniform, xavier_uniform"),
])
def test_bad_configs(flat, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_flat(flat)


def test_capped_dense_layer_is_not_rewired(digits):
    """A 1000 -> 10 layer at epsilon 13 has density 1.31, capped at 1: it is dense and left alone."""
    cfg = small_config("set", **{"model.hidden": [32], "model.epsilon": 13.0, "model.sparse_output": True})
    tr = Trainer(cfg, data=digits)
    out = tr.model.layers[-1]
    assert bool(out.mask.all()) and tr.method.evolved_layers(tr.model) == [0]
    w = out.weight.detach().clone()
    tr.train_epoch()
    trained = out.weight.detach().clone()
    tr.method.after_epoch(tr.model, tr.optimizer, 1)
    assert torch.equal(out.weight, trained) and not torch.equal(trained, w)


def test_no_topology_change_after_the_last_epoch(digits):
    tr = Trainer(small_config("set_neuron", **{"train.epochs": 3}), data=digits)
    tr.fit()
    masks = [l.mask.clone() for l in tr.model.layers]
    tr.method.after_epoch(tr.model, tr.optimizer, 3)
    assert all(torch.equal(a, l.mask) for a, l in zip(masks, tr.model.layers))


@pytest.mark.parametrize("opt", [{"train.optimizer": "sgd", "train.nesterov": True, "train.weight_decay": 1e-3},
                                 {"train.optimizer": "adam", "train.lr": 0.003, "train.weight_decay": 1e-3},
                                 {"train.optimizer": "adamax", "train.lr": 0.003,
                                  "train.decoupled_weight_decay": 1e-3}], ids=["nesterov", "adam", "adamax"])
def test_masked_weights_stay_exactly_zero_through_training(opt, digits):
    tr = Trainer(small_config("set_neuron", **{"train.epochs": 4, **opt}), data=digits)
    hist = tr.fit()
    for layer in tr.model.layers:
        assert torch.all(layer.weight[~layer.mask] == 0)
        assert torch.all(layer.bias[~layer.unit_mask] == 0)
    # weights_nonzero is measured on the raw weights: it can never exceed the masks' count.
    assert hist[-1]["weights_nonzero"] <= sum(int(l.mask.sum()) for l in tr.model.layers)


def test_adam_state_of_regrown_weights_is_reset_to_the_survivors_scale(digits):
    # A sparse layer (density ~0.04): a mean diluted by the empty positions would be ~25x too small.
    tr = Trainer(small_config("set", **{"train.optimizer": "adam", "train.lr": 0.003, "train.epochs": 3,
                                        "model.hidden": [256, 128], "model.epsilon": 2.0}), data=digits)
    tr.run_epoch()
    layer = tr.model.layers[0]
    pre = layer.mask.clone()
    tr.train_epoch()
    tr.method.after_epoch(tr.model, tr.optimizer, 2)
    state = tr.optimizer.state[layer.weight]
    new = layer.mask & ~pre
    assert new.any()
    assert torch.all(state["exp_avg"][new] == 0)
    # Survivors: connected before and after and not regrown. Regrown weights start at 0 (regrow_init "zero") and
    # SET removes every zero weight, so a survivor is exactly a connected nonzero weight.
    assert tr.cfg.model.regrow_init == "zero"
    survivors = pre & layer.mask & (layer.weight.detach() != 0)
    expected = state["exp_avg_sq"][survivors].mean()
    assert float(expected) > 0
    assert torch.allclose(state["exp_avg_sq"][new], expected.expand(int(new.sum())), rtol=1e-5, atol=0)
    # The diluted mean (empty positions counted) is far smaller: this test tells the two apart.
    assert float(state["exp_avg_sq"][~new].mean()) < 0.2 * float(expected)
