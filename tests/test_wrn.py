"""The LpSS wide ResNets (methods/nn/wrn.py): exact parameter counts of the README's nw column, shapes, layer order and
roles, the factory hook, the authors' init, and what methods/core/metrics.py can measure on them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebench.methods import metrics
from sparsebench.methods.nn.layers import WeightLayer
from sparsebench.methods.nn.wrn import (ROLES, DenseConv2d, WideResNet, dense_factory, lpss_constrained, lpss_p_slots,
                         wide_resnet12_cifar, wide_resnet18_cifar, wide_resnet22_2_cifar, wide_resnet22_4_cifar)

# (constructor, input channels, classes, README nw, role counts stem/conv/shortcut/fc); LpSS model/resNet.py.
NETS = [
    (wide_resnet12_cifar, 1, 10, 170_298, (1, 10, 2, 1)),
    (wide_resnet18_cifar, 1, 10, 267_514, (1, 16, 2, 1)),
    (wide_resnet22_2_cifar, 3, 10, 1_154_074, (1, 20, 3, 1)),
    (wide_resnet22_4_cifar, 3, 200, 4_644_120, (1, 20, 3, 1)),
]
IDS = [n[0].__name__ for n in NETS]


@pytest.mark.parametrize("make,channels,classes,count,roles", NETS, ids=IDS)
def test_parameter_count_and_roles(make, channels, classes, count, roles):
    model = make(channels, classes)
    assert sum(p.numel() for p in model.parameters()) == count
    assert metrics.params_trainable(model) == count          # BN and the fc bias are trainable too
    layers = model.weight_layers()
    assert all(isinstance(l, WeightLayer) for l in layers)
    assert tuple(sum(l.role == r for l in layers) for r in ROLES) == roles
    assert layers[0].role == "stem" and layers[-1].role == "fc"
    # Convs carry no bias; the classifier does (resNet.py).
    assert all(l.effective_bias() is None for l in layers[:-1]) and layers[-1].effective_bias() is not None
    # Every parameter that is not a weight layer's belongs to a BN.
    in_layers = {id(p) for l in layers for p in l.parameters()}
    rest = [m for m in model.modules() if any(id(p) not in in_layers for p in m.parameters(recurse=False))]
    assert rest and all(isinstance(m, nn.BatchNorm2d) for m in rest)


@pytest.mark.parametrize("make,channels,classes,size,stage_hw", [
    (wide_resnet18_cifar, 1, 10, 28, (28, 14, 7)),
    (wide_resnet22_2_cifar, 3, 10, 32, (32, 16, 8)),
    (wide_resnet22_4_cifar, 3, 200, 64, (64, 32, 16)),
], ids=["28x28x1", "32x32x3", "64x64x3"])
def test_forward_shapes(make, channels, classes, size, stage_hw):
    model = make(channels, classes)
    x = torch.randn(2, channels, size, size)
    logits, hidden = model(x, return_hidden=True)
    assert logits.shape == (2, classes)
    w = model.width
    assert [tuple(h.shape) for h in hidden] == [(2, w * 2 ** i, s, s) for i, s in enumerate(stage_hw)]
    model.eval()
    assert torch.allclose(model(x), model(x, return_hidden=True)[0])


def test_weight_layers_are_in_forward_order_and_numbered_by_the_factory():
    seen, calls = [], []

    def factory(kind, n_in, n_out, kernel, stride, index):
        calls.append((kind, n_in, n_out, kernel, stride, index))
        return dense_factory(kind, n_in, n_out, kernel, stride, index)

    model = wide_resnet22_2_cifar(3, 10, layer_factory=factory)
    layers = model.weight_layers()
    assert [c[5] for c in calls] == list(range(len(layers)))
    handles = [l.register_forward_hook(lambda m, i, o: seen.append(m)) for l in layers]
    model(torch.randn(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert [id(m) for m in seen] == [id(l) for l in layers]
    # The factory saw each layer's real shape: the first conv of stage 2 (16 blocks in: w=32 -> 64, stride 2)
    # and its 1x1 shortcut.
    for (kind, n_in, n_out, kernel, stride, _), layer in zip(calls, layers):
        w = layer.effective_weight()
        assert w.shape[:2] == (n_out, n_in)
        if kind == "conv":
            assert w.shape[2:] == (kernel, kernel) and layer.stride == (stride, stride)
            assert kernel == (1 if layer.role == "shortcut" else 3)
    assert [c[:5] for c in calls if c[3] == 1 and c[0] == "conv"] == [
        ("conv", 16, 32, 1, 1), ("conv", 32, 64, 1, 2), ("conv", 64, 128, 1, 2)]
    assert calls[-1][:2] == ("fc", 128)


def test_factory_substitutes_layers_and_must_return_weight_layers():
    class Marked(DenseConv2d):
        pass

    def factory(kind, n_in, n_out, kernel, stride, index):
        return Marked(n_in, n_out, kernel, stride) if kind == "conv" else dense_factory(kind, n_in, n_out, kernel, stride, index)

    model = WideResNet(1, 10, 8, (1, 1, 1), layer_factory=factory)
    assert sum(isinstance(l, Marked) for l in model.weight_layers()) == len(model.weight_layers()) - 1
    with pytest.raises(TypeError, match="WeightLayer"):
        WideResNet(1, 10, 8, (1, 1, 1), layer_factory=lambda kind, a, b, k, s, i: nn.Conv2d(a, b, k, s, k // 2))
    with pytest.raises(ValueError, match="three stage"):
        WideResNet(1, 10, 8, (1, 1))


def test_init_follows_resnet_py_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = wide_resnet22_4_cifar(3, 200)
    big = model.layer3[1].conv1.weight                      # 256 x 256 x 3 x 3: fan_out = 2304
    assert big.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.02)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((b.weight == 1).all()) and bool((b.bias == 0).all()) for b in bns)
    small = wide_resnet12_cifar(1, 10)
    small(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in small.parameters())


def test_state_dict_keys_follow_the_authors_module_names():
    keys = set(wide_resnet18_cifar(1, 10).state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
              "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer3.2.conv2.weight", "fc.bias"):
        assert k in keys
    assert "layer1.0.downsample.0.weight" not in keys      # w = 16 = stem width: stage 1 needs no shortcut


def test_lpss_rules_by_role():
    grey = wide_resnet18_cifar(1, 10)
    flags = [lpss_constrained(l) for l in grey.weight_layers()]
    roles = [l.role for l in grey.weight_layers()]
    assert flags == [r == "conv" for r in roles]            # stem on 1 channel, shortcuts, fc: unconstrained
    rgb = wide_resnet22_2_cifar(3, 10)
    assert lpss_constrained(rgb.weight_layers()[0])          # the stem on RGB is constrained
    slots = lpss_p_slots(grey)
    assert [s for s in slots if s is not None] == list(range(17))   # stem + 16 block convs consume p entries
    assert all((s is None) == (r in ("shortcut", "fc")) for s, r in zip(slots, roles))


def test_what_metrics_measure_on_a_wrn():
    model = wide_resnet18_cifar(1, 10)
    layers = model.weight_layers()
    with torch.no_grad():
        layers[1].weight[:4] = 0.0                           # four filters of the first block conv
    weights = sum(l.effective_weight().numel() for l in layers)
    assert int(metrics.weights_nonzero(model)) == weights - 4 * 16 * 9
    assert metrics.hoyer_rows(layers[1].effective_weight())[:4].tolist() == [1.0] * 4
    d = metrics.diversity(model, torch.randn(32, 1, 28, 28))
    assert {"act_corr", "weight_cos", "weight_pearson", "dead_units"} <= set(d)


def test_structure_counts_channels_of_residual_groups():
    """A unit of a residual stream is active while any writer has an incoming and any reader an outgoing weight
    (methods/core/metrics.py `unit_groups`); wrn12's groups are read from methods/nn/wrn.py's layer order."""
    model = wide_resnet12_cifar(1, 10)
    layers = model.weight_layers()
    s = metrics.structure(model)
    assert s["params_trainable"] == 170_298 and s["weight_sparsity"] == 0.0
    assert s["neurons_active"] == 16 * 2 + 32 * 3 + 64 * 3 and s["neuron_sparsity"] == 0.0
    # Stage 1's stream (16 channels) is written by the stem (0) and block conv2 (2), read by 1, 3 and the shortcut 5.
    assert ([0, 2], [1, 3, 5]) in model.unit_groups()
    with torch.no_grad():
        layers[0].weight[4] = 0                           # one writer silent: the block still writes channel 4
        assert metrics.structure(model)["layer0/neurons_no_in"] == 0
        layers[2].weight[4] = 0                           # both silent: channel 4 carries nothing
        s = metrics.structure(model)
        assert s["layer0/neurons_no_in"] == 1 and s["layer0/neurons_active"] == 15
        assert s["neurons_active"] == 320 - 1
        for c in (1, 3, 5):                               # nobody reads channel 7
            layers[c].weight[:, 7] = 0
        s = metrics.structure(model)
        assert s["layer0/neurons_no_out"] == 1 and s["layer0/neurons_active"] == 14
        layers[1].weight[2] = 0                           # block-internal unit: conv1 filter 2 -> conv2 input 2
        assert metrics.structure(model)["layer1/neurons_no_in"] == 1


def test_diversity_uses_each_stage_output_and_its_last_conv():
    model = wide_resnet12_cifar(1, 10)
    assert model.hidden_weight_layers() == [model.layer1[-1].conv2, model.layer2[-1].conv2, model.layer3[-1].conv2]
    d = metrics.diversity(model, torch.randn(64, 1, 16, 16))
    assert {f"layer{k}/act_corr" for k in range(3)} <= set(d)
    w = model.layer3[-1].conv2.weight.detach().double()
    assert d["layer2/weight_cos"] == pytest.approx(float(metrics.mean_abs_cosine(w)[0]))
