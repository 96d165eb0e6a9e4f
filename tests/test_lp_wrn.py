"""The Lp-sphere methods and the dense baseline on the wide ResNets (model.arch), through the one Trainer: which
layers are constrained and with which p (LpSS `LpCGD.weightNormalize`, `net_lp`), the sphere after training, masks on
every conv and the fc, the topology on conv filters, resume, and the errors for configs that cannot work."""
from __future__ import annotations

import pytest
import torch

from sparsebench.methods import ConfigError, RunConfig
from sparsebench.methods.data import Dataset
from sparsebench.methods.families.lp_sphere import lp_layers
from sparsebench.methods.nn.semi_masked import SemiMaskedConv2d, SemiMaskedLinear
from sparsebench.methods.core.train import Trainer
from sparsebench.methods.nn.wrn import p_slot_count

BASE = {"train.epochs": 3, "train.batch_size": 64, "train.lr": 0.05, "train.nesterov": True,
        "model.arch": "wrn12"}


def wrn_config(method: str, **flat) -> RunConfig:
    return RunConfig.from_flat({"method": method, **BASE, **flat})


def rgb(digits) -> Dataset:
    """digits as 3-channel images (the stem then has >= 2 input channels and is constrained)."""
    d = digits
    rep = lambda x: x.repeat(1, 3, 1, 1)  # noqa: E731
    info = type(d.info)(**{**d.info.__dict__, "input_shape": (3, 8, 8)})
    return Dataset(rep(d.x_train), d.y_train, rep(d.x_val), d.y_val, rep(d.x_test), d.y_test, info)


def test_p_slots_follow_the_authors_indexing(digits):
    n = p_slot_count((1, 2, 2))                                     # stem + 2 convs per block = 11
    ps = [1.1 + 0.01 * k for k in range(n)]
    for data, stem_constrained in ((digits, False), (rgb(digits), True)):
        tr = Trainer(wrn_config("lp_sgd", **{"model.p": ps}), data=data)
        chosen = lp_layers(tr.cfg, tr.model)
        layers = tr.model.weight_layers()
        convs = [l for l in layers if l.role == "conv"]
        expect = ([(layers[0], ps[0])] if stem_constrained else []) + list(zip(convs, ps[1:]))
        assert [(id(l), p) for l, p in chosen] == [(id(l), p) for l, p in expect]
        free = {id(q) for q in tr.optimizer.param_groups[0]["params"]}
        assert tr.optimizer.param_groups[0]["lp"] is None
        for layer in layers:                                        # shortcuts, fc (and the 1-channel stem) free
            if layer.role in ("shortcut", "fc") or (layer.role == "stem" and not stem_constrained):
                assert id(layer.weight) in free


@pytest.mark.parametrize("method", ["lp_sgd", "lp_sphere"])
def test_constrained_filters_stay_on_the_sphere_through_training(method, digits):
    tr = Trainer(wrn_config(method, **{"model.p": [1.2], "train.epochs": 1}), data=digits)
    tr.fit()
    chosen = lp_layers(tr.cfg, tr.model)
    assert len(chosen) == 10
    for layer, p in chosen:
        rows = layer.weight.detach().double().flatten(1)            # the latent W: its rows are on the sphere
        norms = rows.abs().pow(p).sum(1).pow(1 / p)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), (layer.role, norms.min(), norms.max())


def test_lp_sphere_masks_every_conv_and_the_fc_and_evolves_filters(digits):
    cfg = wrn_config("lp_sphere", **{"model.p": [1.1], "model.sparsity": 0.6, "model.frequency": 4,
                                     "train.epochs": 5})
    tr = Trainer(cfg, data=digits)
    layers = tr.model.weight_layers()
    assert all(isinstance(l, SemiMaskedConv2d) for l in layers[:-1]) and isinstance(layers[-1], SemiMaskedLinear)
    before = [l.mask.clone() for l in layers]
    for l, m in zip(layers, before):                                # s0 = 0.2 random zeros per layer, whole filters' shape
        assert m.shape == l.weight.shape and int((~m).sum()) == -(-l.weight.numel() * 2 // 10)
    hist = tr.fit()
    assert hist[-1]["topology_updates"] > 0
    assert any(not torch.equal(l.mask, m) for l, m in zip(layers, before))
    # The measured sparsity counts the masks (effective weights), and the method's own count agrees.
    zeros = sum(int((~l.mask).sum()) for l in layers)
    total = sum(p.numel() for p in tr.model.parameters())
    assert hist[-1]["mask_sparsity"] == pytest.approx(zeros / total)
    assert hist[-1]["weights_nonzero"] <= sum(int(l.mask.sum()) for l in layers)
    assert hist[-1]["mask_sparsity"] > 0.2 * 169_232 / 170_298     # beyond s0: the feedback pushed toward 0.6


def test_dense_baseline_trains_the_same_net(digits):
    tr = Trainer(RunConfig.from_flat({"method": "dense", **BASE, "train.nesterov": False, "train.epochs": 2}),
                 data=digits)
    m = tr.fit()[-1]
    assert m["params_trainable"] == 170_298 and m["neurons_active"] == 320
    assert m["test_acc"] > 0.8


def test_resume_across_a_topology_update_is_bit_identical(digits, tmp_path):
    cfg = wrn_config("lp_sphere", **{"model.p": [1.2], "model.frequency": 5, "train.epochs": 3})
    full = Trainer(cfg, data=digits).fit()
    first = Trainer(cfg, data=digits)
    first.run_epoch()
    first.run_epoch()
    assert first.method.updates > 0
    first.save(tmp_path / "s.pt")
    resumed = Trainer(cfg, data=digits)
    resumed.load(tmp_path / "s.pt")
    strip = lambda h: [{k: v for k, v in m.items() if k != "seconds"} for m in h]  # noqa: E731
    assert strip(resumed.fit()) == strip(full)


@pytest.mark.parametrize("flat,message", [
    ({"model.hidden": [64]}, "model.hidden=(64,) shapes an MLP, but model.arch='wrn12'"),
    ({"model.dropout": 0.1}, "model.dropout=0.1 shapes an MLP"),
    ({"model.p": [1.2, 1.3]}, "one per constrained layer (11 here: the stem and block convs of wrn12)"),
    ({"train.prune_curve": [50]}, "train.prune_curve removes the hidden nodes of an MLP"),
    ({"model.arch": "wrn99"}, "model.arch='wrn99': allowed values are mlp, wrn12, wrn18, wrn22_2, wrn22_4"),
])
def test_bad_configs(flat, message):
    with pytest.raises(ConfigError, match=None) as e:
        wrn_config("lp_sphere", **flat)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_resnet_on_tabular_data_is_refused():
    cfg = RunConfig.from_flat({"method": "dense", "model.arch": "wrn18", "data.dataset": "iris"})
    with pytest.raises(ValueError, match=r"model.arch='wrn18' needs image data \[C, H, W\]; dataset 'iris' has "
                                         r"input shape \(4,\): use model.arch=mlp"):
        Trainer(cfg)
