"""The one place that measures. Every number a run reports comes from here, computed from the layers'
`effective_weight()` / `effective_bias()` (never from a nominal knob such as a target sparsity), so that
every method is counted the same way (docs/design.md, "Metric names").

Definitions
- params_trainable: scalars the optimizer updates: parameters in its param groups, counted by
  `WeightLayer.num_trainable()` for weight layers (so a masked or frozen entry does not count).
- params_dense: scalars of the dense network of the same shape: weights plus biases of every weight layer
  (Paper C's "Dense" count, authors' Example/plot_functions.py, N1*N2 + 10*N2 + N2 + 10).
- weights_nonzero / weight_sparsity: exact nonzeros of the effective weights (biases excluded).
- neurons_active / neuron_sparsity: a hidden unit is active when it has at least one nonzero incoming AND
  at least one nonzero outgoing effective weight; a unit lacking either passes nothing that depends on the
  input to the output. Per-layer `neurons_no_in` / `neurons_no_out` keep the counts for the other
  conventions (arXiv 1906.11626 is known only from its abstract: its convention is unknown). In a
  residual network a unit is a channel of a group that several layers write (summed) and read: it is active
  when any writer has an incoming and any reader an outgoing nonzero weight (`unit_groups`).
- flops_inference: floating-point operations of one example's forward pass through the weight layers: 2 per
  nonzero effective weight and application (a multiply and an add: a dot product of k nonzero terms plus its
  bias is k multiplies and k adds), times a convolution's output positions. Counted from the nonzeros as
  rigl's tables count them ("sum of multiply and add operations" of the sparse layers: google-research/rigl
  rigl/sparse_utils.py `get_stats`; arXiv 1911.11134, Appendix H), whatever the storage computes, so a masked
  layer counts what it would cost computed sparsely. Activations, normalisation, pooling, regularisers and the
  optimizer are not counted. For an MLP it is exactly 2 x weights_nonzero.
- flops_train: per training example, 3 x the inference FLOPs (the forward pass, then the backward pass's
  gradients with respect to the activations and to the weights, each as costly as the forward: arXiv 1911.11134,
  Appendix H, "3 f_S" for a static or SET-style sparse network), averaged over the epochs trained so far; an
  epoch's network is the mean of its FLOPs at the epoch's start and end, so a method that starts dense and
  prunes pays for its dense epochs. `flops_train_epoch` is that epoch's own value.
- hoyer: Hoyer (2004) sparsity of each output unit's effective weight vector, H(w) = (sqrt(d) -
  |w|_1/|w|_2) / (sqrt(d) - 1), averaged over the units of a layer, then over layers weighted by their
  number of weights (as `Hoyer_layer_sparsity` / `Hoyer_net_sparsity` in WilliamLiPro/LpSS
  optimizer/myFunction.py, commit 9c8cbc1). An all-zero unit counts as 1 (maximally sparse); d = 1 gives
  0 for a nonzero weight.

Neuron diversity (issue 7; a reconstruction: Paper A, arXiv 2109.09612, is known only from its abstract and
its own metric is unknown; docs/methods.md, "Notes on reconstructions"), measured for every method on a fixed
evaluation batch (the first `EVAL_BATCH` samples of the validation split, the same for every trial of a study
because the split comes from data.split_seed):
- act_corr: mean |Pearson r| over pairs of live hidden units of a layer, from the post-activations that the
  next layer receives (eval mode, no dropout). Pairs are pooled over hidden layers, so the network value is the
  mean over every within-layer pair.
- dead_units: hidden units whose activation is constant on the evaluation batch (standard deviation
  <= DEAD_STD): a dead ReLU, a saturated unit, a pruned one. They have no correlation; they are excluded from
  act_corr and counted here (their variance is 0, so a plain Pearson would be NaN).
- weight_cos: mean |cosine| between the incoming weight vectors (rows of the effective weight) of a hidden
  layer, over pairs of nonzero rows, pooled over hidden layers like act_corr.
- weight_pearson: the same with every row centred first (a "weight Pearson correlation").
A layer with fewer than two live units (or nonzero rows) has no pair: it reports 0 and adds no pair to the pool.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..nn.correlation import (DEAD_STD, live_units, mean_abs_cosine, mean_abs_pearson, pair_mean, row_cosines,  # noqa: F401
                              sparse_mean_abs_cosine, units_2d)  # (re-exported)
from ..nn.layers import WeightLayer, weight_layers
from ..nn.node_pruning import node_scores, removal_masks, remove_nodes_

# Keys every run reports every epoch (docs/design.md, "Metric names"). tests/test_registry.py checks each method
# reports them.
EPOCH_KEYS = ("epoch", "seconds", "train_loss", "train_acc", "val_acc", "test_acc", "params_trainable", "params_dense",
              "weights_nonzero", "weight_sparsity", "neurons_active", "neuron_sparsity", "hoyer",
              "act_corr", "weight_cos", "weight_pearson", "dead_units", "flops_inference", "flops_train",
              "flops_train_epoch")
# arXiv 1911.11134, Appendix H: a training step costs the forward pass and a backward pass of twice its FLOPs.
TRAIN_FLOPS_FACTOR = 3

EVAL_BATCH = 1024   # samples of the validation split on which activation diversity is measured


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Top-1 accuracy as a 0-dim tensor on the model's device (no host sync here)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for start in range(0, len(x), batch_size):
        correct += (model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum()
    model.train(was_training)
    return correct.double() / max(len(x), 1)


def hoyer_from_norms(l1: torch.Tensor, l2: torch.Tensor, d: int) -> torch.Tensor:
    """Hoyer sparsity of rows of length `d` with L1 norms `l1` and L2 norms `l2` (float64)."""
    zero = l2 == 0
    if d == 1:
        return zero.double()
    ratio = torch.where(zero, torch.zeros_like(l1), l1 / torch.where(zero, torch.ones_like(l2), l2))
    h = (math.sqrt(d) - ratio) / (math.sqrt(d) - 1)
    return torch.where(zero, torch.ones_like(h), h)


def hoyer_rows(w: torch.Tensor) -> torch.Tensor:
    """Hoyer sparsity of each row of `w` (rows = output units; trailing dims flattened, e.g. conv filters)."""
    w = w.detach().reshape(w.shape[0], -1).double()
    return hoyer_from_norms(w.abs().sum(1), w.pow(2).sum(1).sqrt(), w.shape[1])


def layer_stats(layer: WeightLayer) -> dict:
    """nnz, mean Hoyer over rows, has-incoming (per output unit) and has-outgoing (per input unit, None for a 1-D
    weight) of a layer's effective weight, its (output units, input units) and its number of entries. A layer with `coordinates()` (a truly sparse
    layer, methods/nn/sparse_linear.py) is measured from its (rows, cols, values) without densifying."""
    if hasattr(layer, "coordinates"):
        rows, cols, v = layer.coordinates()
        n_out, n_in = layer.out_features, layer.in_features
        v = v.double()
        nz = v != 0
        l1 = torch.zeros(n_out, dtype=torch.float64, device=v.device).index_add_(0, rows, v.abs())
        l2 = torch.zeros(n_out, dtype=torch.float64, device=v.device).index_add_(0, rows, v * v).sqrt()
        has_in = torch.zeros(n_out, dtype=torch.bool, device=v.device)
        has_in[rows[nz]] = True
        has_out = torch.zeros(n_in, dtype=torch.bool, device=v.device)
        has_out[cols[nz]] = True
        return dict(nnz=torch.count_nonzero(nz), hoyer=hoyer_from_norms(l1, l2, n_in).mean(), has_in=has_in,
                    has_out=has_out, shape=(n_out, n_in), size=n_out * n_in)
    w = layer.effective_weight().detach()
    return dict(nnz=torch.count_nonzero(w), hoyer=hoyer_rows(w).mean(),
                has_in=(w.reshape(w.shape[0], -1) != 0).any(1),
                has_out=(w.reshape(w.shape[0], w.shape[1], -1) != 0).any(2).any(0) if w.dim() > 1 else None,
                shape=tuple(w.shape[:2]), size=w.numel())


def params_trainable(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Scalars the optimizer updates: parameters in its groups (all `requires_grad` ones without an optimizer),
    as counted by each WeightLayer (which excludes masked or frozen entries)."""
    if optimizer is not None:
        ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        updated = lambda p: id(p) in ids and p.requires_grad  # noqa: E731
    else:
        updated = lambda p: p.requires_grad  # noqa: E731
    total = 0
    for m in model.modules():
        if isinstance(m, WeightLayer):
            total += m.num_trainable(updated)
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False) if updated(p))
    return total


def layer_nonzero(layer: WeightLayer) -> torch.Tensor:
    """Nonzero entries of one layer's effective weight, as a device tensor (a truly sparse layer: of its values)."""
    if hasattr(layer, "coordinates"):
        return torch.count_nonzero(layer.coordinates()[2])
    return torch.count_nonzero(layer.effective_weight().detach())


@torch.no_grad()
def weights_nonzero(model: nn.Module) -> torch.Tensor:
    """Nonzero entries of every layer's effective weight, as a device tensor (no host sync)."""
    return sum(layer_nonzero(l) for l in weight_layers(model))


def flop_positions(model: nn.Module, probe: torch.Tensor | None = None) -> list[int] | None:
    """Applications per example of every weight layer's weight (1 for a linear layer, the output positions of a
    convolution), or None while a convolution has not run; with `probe` (a batch of inputs) one forward pass in
    eval mode and without gradients records them (no state changes: no BatchNorm update, no dropout draw)."""
    layers = weight_layers(model)
    positions = [l.flop_positions() for l in layers]
    if None in positions and probe is not None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(probe[:1])
        model.train(was_training)
        positions = [l.flop_positions() for l in layers]
    return None if None in positions else positions


@torch.no_grad()
def inference_flops(model: nn.Module, probe: torch.Tensor | None = None) -> float:
    """flops_inference of the network as it is now (module docstring); ValueError when a convolution's output
    size is unknown (it has not run and no `probe` was given)."""
    positions = flop_positions(model, probe)
    if positions is None:
        raise ValueError("flops: a convolution has not run a forward pass yet; give a probe batch")
    nnz = [layer_nonzero(l) for l in weight_layers(model)]
    if not nnz:
        return 0.0
    counts = torch.stack([n.double() for n in nnz]).cpu().tolist()   # one transfer
    return float(sum(2 * n * p for n, p in zip(counts, positions)))


def unit_groups(model: nn.Module, n_layers: int) -> list[tuple[list[int], list[int]]]:
    """(producers, consumers) of every group of hidden units, as indices into `weight_layers(model)`: the model's
    own `unit_groups()` (a residual network, methods/nn/wrn.py), else a chain where layer i feeds layer i + 1."""
    if hasattr(model, "unit_groups"):
        return model.unit_groups()
    return [([i], [i + 1]) for i in range(n_layers - 1)]


def structure(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
              probe: torch.Tensor | None = None) -> dict[str, float]:
    """Parameter, sparsity, neuron, Hoyer and inference-FLOP metrics (network-level and per layer `layer<k>/...`).
    flops_inference is left out only for a network with a convolution that has not run (and no `probe`)."""
    layers = weight_layers(model)
    stats = [layer_stats(l) for l in layers]
    out: dict[str, float] = {}
    # One stacked transfer to the host at the end: the per-layer counts stay on the device until then.
    nz_in = [s["has_in"] for s in stats]        # unit k of layer i has an incoming weight
    nz_out = [s["has_out"] for s in stats]
    host = torch.stack([s["nnz"].double() for s in stats] + [s["hoyer"] for s in stats]).cpu().tolist()
    nnz_h, hoy_h = host[: len(stats)], host[len(stats):]
    sizes = [s["size"] for s in stats]

    dense_weights = sum(sizes)
    params_dense = dense_weights + sum(s["shape"][0] for s, l in zip(stats, layers) if l.effective_bias() is not None)
    for i, (size, n, h) in enumerate(zip(sizes, nnz_h, hoy_h)):
        out[f"layer{i}/weights_nonzero"] = int(n)
        out[f"layer{i}/weight_sparsity"] = 1.0 - n / size
        out[f"layer{i}/hoyer"] = h
    positions = flop_positions(model, probe)
    if positions is not None:
        for i, (n, p) in enumerate(zip(nnz_h, positions)):
            out[f"layer{i}/flops"] = 2.0 * n * p
        out["flops_inference"] = float(sum(2 * n * p for n, p in zip(nnz_h, positions)))

    # Hidden units, in groups written by `producers` and read by `consumers` (`unit_groups`): a unit is active when
    # some producer has a nonzero incoming weight for it and some consumer a nonzero outgoing one. The group is
    # named after its first producer, so in an MLP group i is layer i's outputs.
    active_total = hidden_total = 0
    for producers, consumers in unit_groups(model, len(stats)):
        units = {stats[p]["shape"][0] for p in producers} | {stats[c]["shape"][1] for c in consumers}
        if len(units) != 1:
            raise ValueError(f"layers {producers} write and layers {consumers} read a group of units, but their "
                             f"widths differ ({sorted(units)}): the model's unit_groups() does not fit its layers")
        has_in = torch.stack([nz_in[p] for p in producers]).any(0)
        has_out = torch.stack([nz_out[c] for c in consumers]).any(0)
        active = int((has_in & has_out).sum())
        units = units.pop()
        i = producers[0]
        out[f"layer{i}/neurons_active"] = active
        out[f"layer{i}/neuron_sparsity"] = 1.0 - active / units
        out[f"layer{i}/neurons_no_in"] = int((~has_in).sum())
        out[f"layer{i}/neurons_no_out"] = int((~has_out).sum())
        active_total += active
        hidden_total += units

    weights_nonzero = int(sum(nnz_h))
    out.update(
        params_trainable=params_trainable(model, optimizer),
        params_dense=int(params_dense),
        weights_nonzero=weights_nonzero,
        weight_sparsity=1.0 - weights_nonzero / dense_weights if dense_weights else 0.0,
        neurons_active=active_total,
        neuron_sparsity=1.0 - active_total / hidden_total if hidden_total else 0.0,
        hoyer=sum(h * size for h, size in zip(hoy_h, sizes)) / dense_weights if dense_weights else 0.0,
    )
    return out


def eval_batch(x_val: torch.Tensor) -> torch.Tensor:
    return x_val[:EVAL_BATCH]


@torch.no_grad()
def diversity(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """act_corr, weight_cos, weight_pearson, dead_units (network and `layer<k>/...` per hidden layer) on batch `x`.

    The model's forward must accept `return_hidden=True` and return (logits, [hidden activations per layer]);
    hidden layer k is the output of weight layer k, or of `model.hidden_weight_layers()[k]` where the model
    defines it (a residual network's stage outputs, methods/nn/wrn.py)."""
    was_training = model.training
    model.eval()
    _, hidden = model(x, return_hidden=True)
    model.train(was_training)
    layers = model.hidden_weight_layers() if hasattr(model, "hidden_weight_layers") else weight_layers(model)
    values = []                       # device tensors; one transfer at the end
    for k, a in enumerate(hidden):
        a = units_2d(a).double()
        live = live_units(a)
        corr, corr_pairs = mean_abs_pearson(a, live=live)
        if hasattr(layers[k], "coordinates"):   # a truly sparse layer: from its coordinates, no dense copy
            rows, cols, v = layers[k].coordinates()
            shape = (layers[k].out_features, layers[k].in_features)
            cos, cos_pairs = sparse_mean_abs_cosine(rows, cols, v, shape)
            pea, pea_pairs = sparse_mean_abs_cosine(rows, cols, v, shape, centred=True)
        else:
            w = layers[k].effective_weight().detach().double()
            cos, cos_pairs = mean_abs_cosine(w)
            pea, pea_pairs = mean_abs_cosine(w, centred=True)
        values += [corr, cos, pea, (~live).sum().double(), corr_pairs.double(), cos_pairs.double(),
                   pea_pairs.double()]
    host = torch.stack(values).cpu().tolist() if values else []
    out: dict[str, float] = {}
    keys = ("act_corr", "weight_cos", "weight_pearson")
    sums = dict.fromkeys(keys, 0.0)
    pairs = dict.fromkeys(keys, 0.0)
    dead = 0
    for k in range(len(hidden)):
        corr, cos, pea, n_dead, *n_pairs = host[7 * k: 7 * k + 7]
        for key, value, n in zip(keys, (corr, cos, pea), n_pairs):
            out[f"layer{k}/{key}"] = value
            sums[key] += value * n
            pairs[key] += n
        out[f"layer{k}/dead_units"] = int(n_dead)
        dead += int(n_dead)
    for key in keys:
        out[key] = sums[key] / pairs[key] if pairs[key] else 0.0
    out["dead_units"] = dead
    return out


# ---------------------------------------------------------------------------------------------- node pruning
# Sci. Rep. 12, 11201 (2022), arXiv 2108.00940: the accuracy-vs-pruned-nodes curve of one trained network; the
# scores and removals are methods/nn/node_pruning.py.
@torch.no_grad()
def pruning_curve(model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], percents, rule: str = "auto"
                  ) -> dict[str, list]:
    """Accuracy on each split after removing each percentage of hidden nodes from a copy of `model` (which is
    left untouched). Returns columns: percent, nodes_removed, weights_nonzero and `<split>_acc` per split."""
    was_training = model.training
    model.eval()
    scores = node_scores(model, rule)
    cols: dict[str, list] = {"percent": [], "nodes_removed": [], "weights_nonzero": [],
                             **{f"{name}_acc": [] for name in splits}}
    accs, nnz = [], []
    for q in percents:
        pruned = copy.deepcopy(model)
        drops = removal_masks(scores, q)
        remove_nodes_(pruned, drops)
        cols["percent"].append(q)
        cols["nodes_removed"].append(int(sum(int(d.sum()) for d in drops)))
        accs.append(torch.stack([accuracy(pruned, x, y) for x, y in splits.values()]))
        nnz.append(weights_nonzero(pruned))
    model.train(was_training)
    if accs:  # one host transfer for the whole curve
        acc_h = torch.stack(accs).cpu().tolist()
        cols["weights_nonzero"] = [int(n) for n in torch.stack(nnz).cpu().tolist()]
        for j, name in enumerate(splits):
            cols[f"{name}_acc"] = [row[j] for row in acc_h]
    return cols
