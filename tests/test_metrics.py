"""Metrics on hand-built layers with known zeros: exact counts, measured through effective weights."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsebench.methods.nn.layers import WeightLayer
from sparsebench.methods.core.metrics import accuracy, hoyer_rows, params_trainable, structure
from sparsebench.methods.nn.models import MLP


def hoyer(v):
    d = len(v)
    l1, l2 = sum(abs(x) for x in v), math.sqrt(sum(x * x for x in v))
    return 1.0 if l2 == 0 else (math.sqrt(d) - l1 / l2) / (math.sqrt(d) - 1)


def hand_built() -> MLP:
    """4 -> 3 -> 2. Hidden unit 0 has in and out weights, unit 1 no incoming, unit 2 no outgoing."""
    m = MLP((4, 3, 2))
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [3, 4, 0, 0]]))
        m.layers[1].weight.copy_(torch.tensor([[1.0, 2, 0], [0, 5, 0]]))
    return m


def test_exact_counts_on_hand_built_mlp():
    s = structure(hand_built())
    assert s["params_dense"] == 4 * 3 + 3 + 3 * 2 + 2 == 23
    assert s["params_trainable"] == 23
    assert s["weights_nonzero"] == 6
    assert s["weight_sparsity"] == pytest.approx(1 - 6 / 18)
    assert s["layer0/weights_nonzero"] == 3 and s["layer1/weights_nonzero"] == 3
    assert s["neurons_active"] == 1
    assert s["neuron_sparsity"] == pytest.approx(2 / 3)
    assert s["layer0/neurons_no_in"] == 1 and s["layer0/neurons_no_out"] == 1
    h0 = (hoyer([1, 0, 0, 0]) + hoyer([0, 0, 0, 0]) + hoyer([3, 4, 0, 0])) / 3
    h1 = (hoyer([1, 2, 0]) + hoyer([0, 5, 0])) / 2
    assert s["layer0/hoyer"] == pytest.approx(h0)
    assert s["hoyer"] == pytest.approx((12 * h0 + 6 * h1) / 18)


def test_hoyer_known_values():
    w = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1], [3, 4, 0, 0], [0, 0, 0, 0], [-2, 2, -2, 2]])
    assert hoyer_rows(w).tolist() == pytest.approx([1.0, 0.0, 0.6, 1.0, 0.0])
    assert hoyer_rows(torch.tensor([[2.0], [0.0]])).tolist() == [0.0, 1.0]  # d = 1: dense, or empty
    conv = torch.zeros(2, 3, 2, 2)
    conv[0, 0, 0, 0] = 1.0  # one nonzero among 12 inputs of filter 0
    assert hoyer_rows(conv).tolist() == pytest.approx([1.0, 1.0])


def test_frozen_parameters_are_not_trainable():
    m = hand_built()
    m.layers[1].bias.requires_grad_(False)
    assert params_trainable(m) == 21
    assert structure(m)["params_dense"] == 23  # the dense shape does not change


def test_params_trainable_counts_what_the_optimizer_updates():
    m = hand_built()
    opt = torch.optim.SGD([m.layers[0].weight, m.layers[1].bias], lr=0.1)  # biases of layer 0, weight of layer 1 left out
    assert params_trainable(m, opt) == 12 + 2
    assert structure(m, opt)["params_trainable"] == 14


class MaskedStub(WeightLayer):
    """A layer whose forward uses W * M: metrics must see the mask, not the raw weight."""

    def __init__(self, n_in, n_out, mask):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_out, n_in))
        self.register_buffer("mask", mask.float())
        self.bias = None

    def effective_weight(self):
        return self.weight * self.mask

    def num_trainable(self, updated):
        return int(self.mask.sum()) if updated(self.weight) else 0

    def forward(self, x):
        return x @ self.effective_weight().t()


def test_metrics_measure_effective_weights_not_raw_parameters():
    mask0 = torch.tensor([[1, 0, 0], [0, 0, 0]])  # hidden unit 1 has no incoming weight
    mask1 = torch.tensor([[1, 1], [0, 0]])
    m = MLP((3, 2, 2), bias=False, factory=lambda a, b, bias, i: MaskedStub(a, b, mask0 if i == 0 else mask1))
    s = structure(m)
    assert s["weights_nonzero"] == 3
    assert s["params_trainable"] == 3
    assert s["params_dense"] == 3 * 2 + 2 * 2
    assert s["weight_sparsity"] == pytest.approx(1 - 3 / 10)
    assert s["neurons_active"] == 1 and s["neuron_sparsity"] == pytest.approx(0.5)


def test_accuracy_counts_exactly():
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0].long(), 3).float()

    x = torch.tensor([[0.0], [1], [2], [2], [1]])
    y = torch.tensor([0, 1, 0, 2, 0])
    assert accuracy(Fixed(), x, y, batch_size=2).item() == pytest.approx(3 / 5)


def test_non_chain_model_is_refused():
    from sparsebench.methods.nn.layers import DenseLinear

    m = hand_built()
    m.layers[1] = DenseLinear(5, 2)  # 3 hidden outputs feed a layer expecting 5 inputs
    with pytest.raises(ValueError, match=r"layers \[0\] write and layers \[1\] read a group of units, but their widths "
                                         r"differ \(\[3, 5\]\)"):
        structure(m)
