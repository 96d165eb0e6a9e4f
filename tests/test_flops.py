"""FLOP counts (methods/core/metrics.py, flops_inference / flops_train): closed-form counts of hand-built layers, the
same count as PyTorch's own FLOP counter on dense networks (linear and convolutional), the truly sparse layer
counted as its masked twin, and the training count as 3 x the mean of each epoch's start and end networks."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sparsebench.methods import Trainer
from sparsebench.methods.core import metrics
from sparsebench.methods.core.metrics import TRAIN_FLOPS_FACTOR, inference_flops, structure
from sparsebench.methods.nn.layers import DenseLinear, MaskedLinear
from sparsebench.methods.nn.models import MLP
from sparsebench.methods.nn.sparse_linear import SparseLinear
from sparsebench.methods.nn.wrn import wide_resnet12_cifar

from .conftest import small_config


def torch_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """PyTorch's count for one example: 2 x multiply-adds of every mm / addmm / convolution (biases not counted)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x[:1])
    return counter.get_total_flops()


def test_a_hand_built_masked_network_costs_two_flops_per_nonzero():
    first = MaskedLinear(3, 2, mask=torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool))   # 4 nonzeros
    second = MaskedLinear(2, 3, mask=torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool))  # 3 nonzeros
    with torch.no_grad():
        first.weight[first.mask] = 0.5
        second.weight[second.mask] = -1.0
    model = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    s = structure(model)
    assert s["layer0/flops"] == 8 and s["layer1/flops"] == 6
    assert s["flops_inference"] == 14 == inference_flops(model) == 2 * s["weights_nonzero"]


@pytest.mark.parametrize("widths", [(64, 10), (64, 32, 16, 10), (784, 300, 100, 10)])
def test_a_dense_mlp_counts_what_torch_counts(widths):
    model = MLP(widths, factory=lambda a, b, bias, i: DenseLinear(a, b, bias=bias))
    x = torch.randn(4, widths[0])
    expected = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))   # 2 n_in n_out a layer
    assert inference_flops(model) == expected == torch_flops(model, x)


def test_a_wide_resnet_counts_what_torch_counts_once_its_output_sizes_are_known():
    model = wide_resnet12_cifar(input_channels=1, num_classes=10)
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="a convolution has not run a forward pass yet; give a probe batch"):
        inference_flops(model)
    assert "flops_inference" not in structure(model)      # unknown output sizes: left out, never a guess
    counted = inference_flops(model, probe=x)              # the probe records them
    assert counted == torch_flops(model, x)
    assert structure(model)["flops_inference"] == counted
    # Stride 2 in stages 2 and 3: the stem's 3x3x16 weights apply at 28 x 28 positions, the fc's once.
    layers = model.weight_layers()
    assert layers[0].flop_positions() == 28 * 28 and layers[-1].flop_positions() == 1
    assert layers[-2].flop_positions() == 7 * 7


def test_a_convolution_with_zeros_counts_its_nonzeros_at_every_position():
    model = wide_resnet12_cifar(input_channels=1, num_classes=10)
    x = torch.randn(1, 1, 16, 16)
    stem = model.weight_layers()[0]
    with torch.no_grad():
        stem.weight[:8] = 0.0                              # half the stem's filters
    before = inference_flops(model, probe=x)
    assert stem.flop_positions() == 16 * 16
    assert structure(model)["layer0/flops"] == 2 * int(torch.count_nonzero(stem.weight)) * 16 * 16
    with torch.no_grad():
        stem.weight[8:] = 0.0
    assert before - inference_flops(model) == 2 * (8 * 9) * 16 * 16


def test_the_truly_sparse_layer_costs_what_its_masked_twin_does():
    torch.manual_seed(0)
    mask = torch.rand(20, 50) < 0.1
    dense = MaskedLinear(50, 20, mask=mask)
    with torch.no_grad():
        dense.weight[mask] = 0.5                           # every slot nonzero before two are zeroed
    sparse = SparseLinear.from_dense(dense.weight, mask, dense.bias)
    rows, cols = sparse.rows.long(), sparse.cols.long()
    with torch.no_grad():
        sparse.values[:2] = 0.0                            # stored zeros cost nothing
        dense.weight[rows[:2], cols[:2]] = 0.0
    head = DenseLinear(20, 3)
    a, b = torch.nn.Sequential(sparse, head), torch.nn.Sequential(dense, head)
    assert structure(a)["flops_inference"] == structure(b)["flops_inference"] == 2 * (int(mask.sum()) - 2 + 60)


def test_training_flops_are_three_times_the_mean_of_each_epochs_start_and_end():
    # SET with neuron pruning: the rounds after epochs 2 and 4 shrink the network between one epoch's end and
    # the next one's start, so the start of an epoch is not the end of the one before.
    cfg = small_config("set_neuron", **{"train.epochs": 6, "model.hidden": [64, 32], "model.prune_start": 2,
                                        "model.prune_every": 2, "model.dropout": 0.0})
    tr = Trainer(cfg)
    starts, ends, per_epoch = [], [], []
    while not tr.finished:
        starts.append(inference_flops(tr.model))
        m = tr.run_epoch()
        ends.append(m["flops_inference"])
        per_epoch.append(m["flops_train_epoch"])
        assert m["flops_train_epoch"] == pytest.approx(TRAIN_FLOPS_FACTOR * (starts[-1] + ends[-1]) / 2)
        assert m["flops_train"] == pytest.approx(sum(per_epoch) / len(per_epoch))
        assert m["flops_inference"] == 2 * m["weights_nonzero"]
    assert any(s < e for s, e in zip(starts[1:], ends[:-1])), (starts, ends)   # pruning happened between epochs
    assert tr.history[-1]["flops_train"] > TRAIN_FLOPS_FACTOR * tr.history[-1]["flops_inference"]   # paid its start


def test_a_dense_network_trains_at_three_times_its_inference():
    tr = Trainer(small_config("dense", **{"train.epochs": 2}))
    for m in tr.fit():
        assert m["flops_train"] == TRAIN_FLOPS_FACTOR * m["flops_inference"]
        assert m["flops_inference"] == metrics.inference_flops(tr.model)
