"""Truly sparse layers (methods/nn/sparse_linear.py) and `model.sparse_compute` of set / fixprob: gradients against
gradcheck and the masked layer, the same network as the mask path for one seed, metrics without densifying,
resume, and the refused configs."""
from __future__ import annotations

import pytest
import torch

from sparsebench.methods import ConfigError, RunConfig, Trainer
from sparsebench.methods.core.metrics import pruning_curve, structure, weights_nonzero
from sparsebench.methods.core.registry import get_method
from sparsebench.methods.data import DataInfo
from sparsebench.methods.nn.layers import DenseLinear, MaskedLinear
from sparsebench.methods.nn.sparse_linear import SparseLinear, _SparseLinearFn

from .conftest import assert_resume_identical, small_config

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def shuffled_layer(n_in=7, n_out=5, density=0.4, dtype=torch.float64, seed=0):
    """A SparseLinear with its slots in random order (as after rewiring) and the dense W * M it equals."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_out, n_in, generator=g) < density
    w = torch.randn(n_out, n_in, generator=g, dtype=dtype) * mask
    rows, cols = mask.nonzero().unbind(1)
    p = torch.randperm(rows.numel(), generator=g)
    layer = SparseLinear(n_in, n_out, rows[p], cols[p], w[rows[p], cols[p]], torch.randn(n_out, generator=g, dtype=dtype))
    return layer, w, mask


def test_stores_only_values_and_indices():
    layer, w, mask = shuffled_layer(n_in=300, n_out=200, density=0.03, dtype=torch.float32)
    nnz = int(mask.sum())
    tensors = dict(layer.named_parameters()) | dict(layer.named_buffers())
    # Nothing of n_out x n_in size: values, two index vectors and the CSR views are O(nnz + n_out + n_in).
    assert all(t.numel() <= nnz + 300 + 1 for t in tensors.values()), {k: t.numel() for k, t in tensors.items()}
    assert layer.values.shape == (nnz,) and torch.equal(layer.effective_weight(), w)


def test_gradcheck_float64():
    layer, _, _ = shuffled_layer()
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, v: _SparseLinearFn.apply(x, v, layer), (x, layer.values))


def test_gradients_equal_the_masked_layers_at_the_nonzeros():
    layer, w, mask = shuffled_layer(n_in=40, n_out=30, density=0.2)
    dense = MaskedLinear(40, 30, mask=mask).double()
    with torch.no_grad():
        dense.weight.copy_(w)
        dense.bias.copy_(layer.bias)
    x = torch.randn(16, 40, dtype=torch.float64)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yd = layer(xs), dense(xd)
    assert torch.allclose(ys, yd, atol=1e-12)
    g = torch.randn_like(ys)
    ys.backward(g)
    yd.backward(g)
    assert torch.allclose(xs.grad, xd.grad, atol=1e-12)
    assert torch.allclose(layer.values.grad, dense.weight.grad[layer.rows, layer.cols], atol=1e-12)
    assert torch.allclose(layer.bias.grad, dense.bias.grad, atol=1e-12)


def test_metrics_read_coordinates_and_equal_the_dense_measurement():
    layer, w, mask = shuffled_layer(n_in=50, n_out=20, density=0.1)
    with torch.no_grad():
        layer.values[:3] = 0.0       # stored zeros are not counted
        layer.remove_units_(torch.arange(20) == 4)
    dense = MaskedLinear(50, 20, mask=mask).double()
    with torch.no_grad():
        dense.weight.copy_(layer.effective_weight())
    head = DenseLinear(20, 3).double()
    sa, sb = structure(torch.nn.Sequential(layer, head)), structure(torch.nn.Sequential(dense, head))
    for key in ("weights_nonzero", "weight_sparsity", "hoyer", "neurons_active", "layer0/neurons_no_in",
                "layer0/neurons_no_out", "layer0/hoyer"):
        assert sa[key] == pytest.approx(sb[key], abs=1e-12), key
    assert sa["layer0/neurons_no_in"] >= 1   # the removed unit
    assert int(weights_nonzero(torch.nn.Sequential(layer))) == int(torch.count_nonzero(dense.weight))


def pair(method, **flat):
    # epsilon 2: densities 0.0625 (64 -> 64) and 0.094 (64 -> 32), below the break-even at which `sparse` is refused.
    base = {"model.hidden": [64, 32], "model.epsilon": 2.0, "train.epochs": 3}
    cfg = {**base, "model.regrow_init": "normal", **flat} if method == "set" else {**base, **flat}
    return (small_config(method, **{**cfg, "model.sparse_compute": "mask"}),
            small_config(method, **{**cfg, "model.sparse_compute": "sparse"}))


@pytest.mark.parametrize("method,flat", [("set", {}), ("set", {"train.optimizer": "adam", "train.lr": 0.003,
                                                                 "train.decoupled_weight_decay": 1e-3}),
                                         ("fixprob", {"model.init": "normal"}),
                                         ("set", {"model.decor_init": "cosine", "model.decor_steps": 5})],
                         ids=["set-sgd", "set-adam", "fixprob", "set-decor"])
def test_sparse_path_equals_mask_path_for_one_seed(method, flat, digits):
    """Same seed: same ER topology, same rewiring (after epochs 1 and 2), weights within 1e-5 after 3 epochs."""
    cm, cs = pair(method, **flat)
    # One after the other: dropout draws from the global generator, which each Trainer seeds when it is built.
    tm = Trainer(cm, data=digits)
    init = [l.effective_weight().clone() for l in tm.model.layers]
    hm = tm.fit()
    ts = Trainer(cs, data=digits)
    assert isinstance(ts.model.layers[0], SparseLinear) and isinstance(tm.model.layers[0], MaskedLinear)
    assert isinstance(ts.model.layers[-1], MaskedLinear)   # the dense output layer stays as it is
    assert all(torch.equal(w, l.effective_weight()) for w, l in zip(init, ts.model.layers))
    hs = ts.fit()
    for lm, ls in zip(tm.model.layers, ts.model.layers):
        if isinstance(ls, SparseLinear):
            topo = torch.zeros_like(lm.mask).index_put_((ls.rows, ls.cols), torch.tensor(True))
            assert torch.equal(topo, lm.mask) and ls.values.numel() == int(lm.mask.sum())
        assert (lm.effective_weight() - ls.effective_weight()).abs().max() < 1e-5
    for a, b in zip(hm, hs):
        assert a["weights_nonzero"] == b["weights_nonzero"] and a["params_trainable"] == b["params_trainable"]
        assert a["neurons_active"] == b["neurons_active"]
        assert a["hoyer"] == pytest.approx(b["hoyer"], abs=1e-5) and a["weight_cos"] == pytest.approx(b["weight_cos"], abs=1e-5)
        assert a["weight_pearson"] == pytest.approx(b["weight_pearson"], abs=1e-5)
    # Node pruning (connectivity scores read from the coordinates) removes the same nodes.
    splits = {"val": (digits.x_val, digits.y_val)}
    cm_, cs_ = pruning_curve(tm.model, splits, [0, 30, 60]), pruning_curve(ts.model, splits, [0, 30, 60])
    assert cm_["weights_nonzero"] == cs_["weights_nonzero"] and cm_["nodes_removed"] == cs_["nodes_removed"]
    assert cm_["val_acc"] == pytest.approx(cs_["val_acc"], abs=2 / len(digits.y_val))


def test_resume_of_the_sparse_path_is_identical(digits, tmp_path):
    cfg = small_config("set", **{"model.sparse_compute": "sparse", "model.regrow_init": "normal", "train.epochs": 4,
                                 "model.epsilon": 1.0})
    assert_resume_identical(cfg, digits, tmp_path / "s.pt", after=2)


def test_auto_picks_sparse_below_the_crossover_only(digits):
    # 64 inputs: a 64 -> 400 layer at epsilon 1 has density 0.018 (sparse), 400 -> 300 at epsilon 20 0.117 (mask).
    tr = Trainer(small_config("set", **{"model.hidden": [400, 300], "model.epsilon": 1.0, "model.sparse_compute": "auto"}),
                 data=digits)
    kinds = [type(l) for l in tr.model.layers]
    assert kinds == [SparseLinear, SparseLinear, MaskedLinear]
    tr = Trainer(small_config("set", **{"model.hidden": [400, 300], "model.sparse_compute": "auto"}), data=digits)
    assert [type(l) for l in tr.model.layers] == [MaskedLinear, MaskedLinear, MaskedLinear]


def test_unknown_sparse_compute_is_refused():
    with pytest.raises(ConfigError, match=r"model.sparse_compute='dense': allowed values are auto, mask, sparse"):
        RunConfig.from_flat({"method": "set", "model.sparse_compute": "dense"})


def test_sparse_above_the_storage_break_even_is_refused():
    # 100 -> 100 at epsilon 10: density 0.2 > 4/28, where 28 bytes a stored weight exceed 4 a dense one.
    with pytest.raises(ConfigError, match=r"^model.sparse_compute='sparse': layer 100->100 at model.epsilon=10 has ER "
                                          r"density >= 0.2, above 0.143 .* allowed: mask, auto, or a smaller epsilon$"):
        RunConfig.from_flat({"method": "set", "model.hidden": [1000, 100, 100], "model.epsilon": 10.0,
                             "model.sparse_compute": "sparse"})
    # The input layer: at least epsilon / width whatever the data (20 / 100 = 0.2).
    with pytest.raises(ConfigError, match=r"layer inputs->100 .* density >= 0.2,"):
        RunConfig.from_flat({"method": "fixprob", "model.hidden": [100], "model.sparse_compute": "sparse"})
    RunConfig.from_flat({"method": "set", "model.hidden": [100], "model.sparse_compute": "auto"})   # auto: fine
    # Exactly, once the data's width is known: digits' 64 inputs -> 200 at epsilon 7 is 0.144 (7 / 200 = 0.035 passed).
    cfg = small_config("set", **{"model.hidden": [200], "model.epsilon": 7.0, "model.sparse_compute": "sparse"})
    with pytest.raises(ConfigError, match=r"layer 64->200 at model.epsilon=7 has ER density >= 0.144"):
        get_method("set")(cfg, DataInfo("digits", (64,), 10, 1, 1, 1, "none", "test")).build()


def test_cli_refuses_sparse_above_the_break_even_with_exit_2(capsys, in_tmp_cwd):
    from sparsebench.workflows.cli import main

    (in_tmp_cwd / "s.yaml").write_text("method: set\nfixed:\n  model.hidden: [64, 64]\n  model.sparse_compute: sparse\n"
                                       "space:\n  train.lr: {type: float, low: 0.01, high: 0.1}\n")
    assert main(["search", "--methods", "set", "--search-space", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer 64->64 at model.epsilon=20 has ER density >= 0.625" in err, err
    assert sorted(p.name for p in in_tmp_cwd.iterdir()) == ["s.yaml"]


NEURON = {"model.prune_start": 1, "model.prune_every": 1, "model.prune_target": 0.5, "model.regrow_init": "normal"}


@pytest.mark.parametrize("flat", [{}, {"model.importance": "in_out", "train.optimizer": "adam", "train.lr": 0.003}],
                         ids=["in-sgd", "in_out-adam"])
def test_set_neuron_sparse_path_equals_mask_path_for_one_seed(flat, digits):
    """Neuron importance pruning after epochs 1 and 2 (half the hidden units gone by the end) and SET rewiring
    between the alive units: the same units, topology and weights on both storages; the sparse layers shrink."""
    cm, cs = pair("set_neuron", **NEURON, **flat)
    tm = Trainer(cm, data=digits)
    hm = tm.fit()
    ts = Trainer(cs, data=digits)
    slots = [l.values.numel() for l in ts.model.layers[:-1]]
    hs = ts.fit()
    for lm, ls in zip(tm.model.layers, ts.model.layers):
        assert torch.equal(lm.unit_mask, ls.unit_mask)
        if isinstance(ls, SparseLinear):
            topo = torch.zeros_like(lm.mask).index_put_((ls.rows.long(), ls.cols.long()), torch.tensor(True))
            assert torch.equal(topo, lm.mask) and ls.values.numel() == int(lm.mask.sum()) == int(ls.budget)
        assert (lm.effective_weight() - ls.effective_weight()).abs().max() < 1e-5
    assert [int(l.unit_mask.sum()) for l in ts.model.layers[:-1]] == [32, 16]      # round(H (1 - 0.5))
    assert all(l.values.numel() < n for l, n in zip(ts.model.layers[:-1], slots))   # pruned slots are gone
    for a, b in zip(hm, hs):
        for key in ("weights_nonzero", "params_trainable", "neurons_active"):
            assert a[key] == b[key], key
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-9)


def test_resume_of_set_neuron_on_the_sparse_path_is_identical(digits, tmp_path):
    # Saved after a pruning round: the checkpoint holds fewer slots than a freshly built layer.
    cfg = small_config("set_neuron", **{**NEURON, "model.sparse_compute": "sparse", "model.epsilon": 1.0,
                                        "train.epochs": 4})
    assert_resume_identical(cfg, digits, tmp_path / "n.pt", after=2)


def test_trained_sparse_layers_and_their_optimizer_state_are_o_nnz(digits):
    tr = Trainer(small_config("set", **{"model.sparse_compute": "sparse", "model.hidden": [300, 200], "model.epsilon": 5.0,
                                            "train.epochs": 2}),
                 data=digits)
    tr.fit()
    for layer in tr.model.layers[:-1]:
        assert isinstance(layer, SparseLinear)
        nnz = layer.values.numel()
        assert nnz < 0.2 * layer.in_features * layer.out_features
        limit = max(nnz, layer.in_features, layer.out_features) + 1
        assert all(t.numel() <= limit for t in (*layer.parameters(), *layer.buffers()))
        momentum = tr.optimizer.state[layer.values]["momentum_buffer"]
        assert momentum.shape == (nnz,)
