"""Sparse Evolutionary Training (SET) and SET with neuron importance pruning.

- `fixprob`: Erdos-Renyi (ER) sparse MLP, never rewired (MLP_FixProb, fixprob_mlp_keras_cifar10.py).
- `set`: ER init, then after every epoch but the last, remove the zeta fraction of positive weights closest
  to zero and, separately, of negative weights closest to zero, and regrow as many at random empty
  positions (Mocanu et al., Nat. Commun. 9:2383, 2018, arXiv 1707.04780; `weightsEvolution` in
  dcmocanu/sparse-evolutionary-artificial-neural-networks SET-MLP-Keras-Weights-Mask/set_mlp_keras_cifar10.py).
- `set_neuron`: SET plus neuron importance pruning (Liu, Mocanu, Pechenizkiy, arXiv 1906.11626). Paper B's
  rule is unknown (only its abstract was read); the rule here is the same group's "Importance Pruning"
  (SelimaC/large-scale-sparse-neural-networks set_mlp_sequential.py `weights_evolution_II`): importance of a
  hidden unit = sum of |incoming weights|, units at or below a percentile are removed with all their
  incoming and outgoing weights and their bias, and never regrown; the layer's weight budget shrinks.

`model.sparse_compute` stores the ER layers as a dense weight times a mask or truly sparse (values and indices on
CSR kernels, methods/nn/sparse_linear.py; docs/sparse-compute.md), with the same network for one seed.
All topology randomness (ER masks, regrowth positions and values) comes from the method's own generator,
which is checkpointed, so a resumed run rewires exactly as an uninterrupted one.
Options and the known unknowns of Paper B: docs/methods.md ("fixprob, set, set_neuron", "Notes on reconstructions").
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.method import Method
from ..core.config import ConfigError, spec
from ._mlp import MLPConfig, mlp_only, uniform_hidden, with_hidden
from ..core.budget import BudgetError, chain, solve_knob, solve_width
from ..nn.layers import MaskedLinear
from ..nn.models import MLP
from ..nn.sparse_linear import SparseLinear
from ..nn.sparse_topology import er_positions, sample_empty
from ..core.registry import register_method

INITS = ("torch", "normal", "he_uniform", "xavier_uniform")
SPARSE_COMPUTE = ("auto", "mask", "sparse")
# `auto` stores a sparse layer truly sparse (methods/nn/sparse_linear.py) when its ER density is below this. Measured
# by benchmarks/sparse_compute.py (docs/sparse-compute.md; 1000 x 1000 layer, batch 100, 2 shared CPU threads): the
# CSR layer's forward plus backward took 0.36-0.60x the masked layer's at density 0.05 in every run, and lost in
# some runs at 0.1-0.2 (pytorch PR 51647 puts the CSR/dense crossover at 80-90% sparsity).
SPARSE_DENSITY_CROSSOVER = 0.05
# Above this density a SparseLinear stores more than the dense weight it replaces: 28 bytes a weight (float32 value,
# int32 row and col, and the int32 column and permutation arrays of the CSR views of W and W^T:
# methods/nn/sparse_linear.py) against 4 for a dense float32 entry. `sparse` is refused above it.
SPARSE_BREAK_EVEN = 4 / 28
REGROW_INITS = ("zero", "normal", "he_uniform", "xavier_uniform")


def er_density(n_in: int, n_out: int, epsilon: float) -> float:
    """P(M_ij = 1) = epsilon (n_in + n_out) / (n_in n_out), capped at 1 (SET paper eq. 1; createWeightsMask)."""
    return min(1.0, epsilon * (n_in + n_out) / (n_in * n_out))


def draw_values(kind: str, n: int, fan_in: int, fan_out: int, gen: torch.Generator) -> torch.Tensor:
    """Values for new weights: N(0, 0.1^2) as the NumPy SET code (randn/10), He or Xavier uniform as Curci et
    al.'s `weight_init`, or zeros as the Keras SET code (the mask multiplies a fresh weight to 0)."""
    if kind == "zero":
        return torch.zeros(n)
    if kind == "normal":
        return torch.randn(n, generator=gen) * 0.1
    bound = math.sqrt(6.0 / fan_in) if kind == "he_uniform" else math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(n, generator=gen) * 2 - 1) * bound


SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq", "exp_inf")  # Adam, AMSGrad, Adamax


def reset_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, where: torch.Tensor,
                          active: torch.Tensor) -> None:
    """Reset the per-entry optimizer state of `param` at `where` (removed, regrown or pruned entries);
    `active` is the layer's mask after the change.

    First moments (SGD momentum, Adam exp_avg) become 0: a new connection does not move on stale momentum
    (NumPy SET code: the momentum of new weights is 0). Second moments become the mean over the surviving
    connections (active and not reset): with a zero second moment and Adam's global step count, a regrown
    weight would take steps many times larger than its neighbours'. Masked positions are excluded from the
    mean: their gradient is 0, so their second moment is 0, and counting them would shrink the mean by the
    layer's density.
    """
    for name, value in optimizer.state.get(param, {}).items():
        if not (torch.is_tensor(value) and value.shape == param.shape):
            continue
        if name in SECOND_MOMENTS:
            kept = value[active & ~where]
            value[where] = kept.mean() if kept.numel() else 0
        else:
            value[where] = 0


def compact_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, keep: torch.Tensor) -> None:
    """The per-entry optimizer state of a SparseLinear's `values` after `keep_slots_(keep)`: the kept slots' state,
    in slot order (the state the masked layer keeps for its surviving weights)."""
    state = optimizer.state.get(param, {})
    for name, value in state.items():
        if torch.is_tensor(value) and value.dim() == 1 and value.numel() == keep.numel():
            state[name] = value[keep].clone()


@dataclass(frozen=True)
class FixProbConfig(MLPConfig):
    # epsilon = 20: the official SET code (set_mlp_keras_cifar10.py, fixprob_mlp_keras_cifar10.py).
    epsilon: float = spec(20.0, gt=0.0, help="ER sparsity level: expected weights per layer = epsilon (n_in + n_out)")
    # The Keras SET code keeps the output layer dense (set_mlp_keras_cifar10.py); the NumPy code makes it sparse.
    sparse_output: bool = spec(False)
    # "torch": PyTorch's nn.Linear init, the same as `dense`, so that dense and sparse start alike;
    # "normal": N(0, 0.1^2) as the NumPy SET code (createSparseWeights).
    init: str = spec("torch", choices=INITS)
    # "mask": a dense weight times a boolean mask (MaskedLinear); "sparse": only (rows, cols, values) on CSR
    # kernels (SparseLinear); "auto": sparse for the layers whose ER density is below SPARSE_DENSITY_CROSSOVER.
    sparse_compute: str = spec("mask", choices=SPARSE_COMPUTE,
                               help="sparse layers as dense weight x mask, or truly sparse (values + indices)")

    def validate(self) -> None:
        super().validate()
        if self.sparse_compute != "sparse" or not self.hidden:
            return
        # The layers whose shape the model config fixes: hidden -> hidden exactly; input -> first hidden (and last
        # hidden -> classes, when sparse) at least epsilon / width, whatever the data's width (FixProb.build checks
        # them exactly once the data's shape is known).
        h = self.hidden
        bounds = [(f"{a}->{b}", er_density(a, b, self.epsilon)) for a, b in zip(h[:-1], h[1:])]
        bounds.append((f"inputs->{h[0]}", min(1.0, self.epsilon / h[0])))
        if self.sparse_output:
            bounds.append((f"{h[-1]}->classes", min(1.0, self.epsilon / h[-1])))
        check_break_even(bounds, self.epsilon)


def check_break_even(layers: list[tuple[str, float]], epsilon: float) -> None:
    """ConfigError (one line) if a layer that `sparse_compute: sparse` would store truly sparse has an ER density
    above SPARSE_BREAK_EVEN; `layers`: (name, density) of the sparse layers."""
    for name, density in layers:
        if density > SPARSE_BREAK_EVEN:
            raise ConfigError(f"model.sparse_compute='sparse': layer {name} at model.epsilon={epsilon:g} has ER density "
                              f">= {density:.3g}, above {SPARSE_BREAK_EVEN:.3f} where sparse storage (28 bytes a weight) "
                              f"exceeds dense (4); allowed: mask, auto, or a smaller epsilon")


@register_method("fixprob")
class FixProb(Method):
    summary = "static Erdos-Renyi sparse MLP, density epsilon (n_in + n_out) / (n_in n_out)"
    source = "MLP_FixProb of the SET code (Mocanu et al., arXiv 1707.04780)"
    """Static ER-sparse MLP."""

    Config = FixProbConfig

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        # Its own stream: topology draws never shift the data order or dropout (and vice versa).
        self.gen = torch.Generator().manual_seed(cfg.train.seed + 7919)

    def sparse_layer(self, index: int, n_layers: int) -> bool:
        return index < n_layers - 1 or self.cfg.model.sparse_output

    def truly_sparse(self, density: float) -> bool:
        """Whether a sparse layer of this ER density is stored as a SparseLinear (model.sparse_compute)."""
        mode = self.cfg.model.sparse_compute
        return mode == "sparse" or (mode == "auto" and density < SPARSE_DENSITY_CROSSOVER)

    def build(self) -> nn.Module:
        m = self.cfg.model
        widths = (self.info.in_features, *m.hidden, self.info.num_classes)
        n_layers = len(widths) - 1

        if m.sparse_compute == "sparse":   # exactly, now that the data's width is known (FixProbConfig.validate)
            check_break_even([(f"{a}->{b}", er_density(a, b, m.epsilon)) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
                              if self.sparse_layer(i, n_layers)], m.epsilon)

        def factory(n_in: int, n_out: int, bias: bool, index: int) -> MaskedLinear | SparseLinear:
            density = er_density(n_in, n_out, m.epsilon)
            if not self.sparse_layer(index, n_layers):   # dense (the output layer unless sparse_output)
                layer = MaskedLinear(n_in, n_out, bias=bias)
                if m.init != "torch":
                    with torch.no_grad():
                        layer.weight.copy_(draw_values(m.init, n_in * n_out, n_in, n_out, self.gen).view(n_out, n_in))
                        if layer.bias is not None:
                            layer.bias.zero_()
                return layer
            # The ER draw as coordinates (methods/nn/sparse_topology.py), then its values and bias, all from the
            # method's generator: no dense temporary, and the mask path stores the very same draw, so a seed gives
            # the same network either way (tests/test_sparse_linear.py).
            pos = er_positions(n_out, n_in, density, self.gen)
            rows, cols = pos // n_in, pos % n_in
            if m.init == "torch":
                # nn.Linear's init (kaiming_uniform with a = sqrt(5): bound 1/sqrt(fan_in), the bias alike), drawn
                # for the kept positions only; the same distribution as `dense`'s weights.
                bound = 1.0 / math.sqrt(n_in)
                values = (torch.rand(pos.numel(), generator=self.gen) * 2 - 1) * bound
                b = (torch.rand(n_out, generator=self.gen) * 2 - 1) * bound if bias else None
            else:
                values = draw_values(m.init, pos.numel(), n_in, n_out, self.gen)
                b = torch.zeros(n_out) if bias else None
            if density < 1.0 and self.truly_sparse(density):
                return SparseLinear(n_in, n_out, rows, cols, values, b)
            mask = torch.zeros(n_out, n_in, dtype=torch.bool)
            mask.view(-1)[pos] = True
            # fork_rng: nn.Linear's own init would advance the global generator (dropout, the output layer), which
            # the sparse path never touches; the draw is overwritten below anyway.
            with torch.random.fork_rng(devices=[]):
                layer = MaskedLinear(n_in, n_out, bias=bias, mask=mask)
            with torch.no_grad():
                layer.weight.zero_().view(-1)[pos] = values
                if b is not None:
                    layer.bias.copy_(b)
            return layer

        return MLP(widths, activation=m.activation, dropout=m.dropout, bias=m.bias, factory=factory)

    # ---- budget (issue 16): the ER epsilon for the sampled hidden shape
    @classmethod
    def final_widths(cls, cfg) -> tuple[int, ...]:
        """Hidden widths of the deployed network (SET and FixProb never remove a unit)."""
        return tuple(cfg.model.hidden)

    @classmethod
    def deployed_size(cls, cfg, info, metric):
        """Expected size: each sparse layer keeps density * (its alive outputs x alive inputs) weights (the mask is
        an ER draw, SET's regrowth keeps each layer's count: `budget`), a dense output layer all of them; every alive
        unit keeps its bias (MaskedLinear.num_trainable)."""
        mlp_only(cfg)
        m = cfg.model
        drawn = chain(info.in_features, m.hidden, info.num_classes)
        alive = chain(info.in_features, cls.final_widths(cfg), info.num_classes)
        n = len(drawn)
        weights = bias = 0.0
        for i, ((a0, b0), (a, b)) in enumerate(zip(drawn, alive)):
            sparse = i < n - 1 or m.sparse_output
            p = er_density(a0, b0, m.epsilon) if sparse else 1.0
            weights += p * a * b + (cls.selection_excess(cfg, a0, b0, b, p) * a / a0 if sparse and b < b0 else 0.0)
            bias += b if m.bias else 0
        return weights if metric == "weights_nonzero" else weights + bias

    @classmethod
    def selection_excess(cls, cfg, n_in: int, n_out: int, kept: int, p: float) -> float:
        """Weights the kept rows of a pruned layer hold above the mean (none: SET and FixProb prune no unit)."""
        return 0.0

    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        """epsilon for the sampled hidden shape. Our choice where that shape cannot hold the budget (denser than
        dense, or its dense output layer alone above it): every hidden layer at the width whose dense network has
        twice the budget, so the sparse layers sit near density 1/2, then epsilon."""
        mlp_only(cfg)
        widths = chain(info.in_features, cfg.model.hidden, info.num_classes)
        eps_max = max(a * b / (a + b) for a, b in widths)   # density 1 in every layer (er_density caps at 1)
        size = lambda c, e: cls.deployed_size(c.replace(**{"model.epsilon": e}), info, metric)  # noqa: E731
        lo, hi = 1e-9 * eps_max, eps_max
        if not size(cfg, lo) <= budget <= size(cfg, hi):
            dense = lambda w: size(with_hidden(cfg, uniform_hidden(cfg.model.hidden, w)), eps_max * 1e6)  # noqa: E731
            cfg = with_hidden(cfg, uniform_hidden(cfg.model.hidden, solve_width(dense, 2 * budget, f"{cls.name} network")))
            widths = chain(info.in_features, cfg.model.hidden, info.num_classes)
            lo, hi = 1e-9 * eps_max, max(a * b / (a + b) for a, b in widths)
            if size(cfg, lo) > budget * 1.05:
                raise BudgetError(f"budget {budget:g} {metric}: below {cls.name}'s smallest network "
                                  f"({size(cfg, lo):g}, its dense output layer and biases): unreachable")
        return cfg.replace(**{"model.epsilon": solve_knob(lambda e: size(cfg, e), budget, lo, hi)})

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])


@dataclass(frozen=True)
class SetConfig(FixProbConfig):
    zeta: float = spec(0.3, ge=0.0, lt=1.0, help="fraction of each sign's weights closest to zero rewired per epoch")
    # New weights start at 0 as in the Keras SET code (the mask zeroes them); the NumPy code draws N(0, 0.1^2),
    # Curci et al. He/Xavier uniform (SelimaC/large-scale-sparse-neural-networks `weight_init`).
    regrow_init: str = spec("zero", choices=REGROW_INITS)
    # "changed": survivors keep their momentum, removed and new entries start from 0 (the NumPy SET code);
    # "all": every weight's optimizer state is reset at each rewiring (what recompiling every epoch does in the
    # Keras code, kept only to reproduce it).
    momentum_reset: str = spec("changed", choices=("changed", "all"))


def set_removal(values: torch.Tensor, zeta: float) -> torch.Tensor:
    """SET's removal over the active weights `values` (1-D, row-major order): int(zeta * n) of the n positive ones
    closest to zero and, separately, int(zeta * m) of the m negative ones closest to zero (weightsEvolution keeps
    w > smallestPositive or w < largestNegative), and the exact zeros (that rule never keeps a zero). Boolean."""
    remove = values == 0
    for sign in (1.0, -1.0):
        idx = (values * sign > 0).nonzero().squeeze(1)
        k = int(zeta * idx.numel())
        if k:
            closest = torch.topk(values[idx] * sign, k, largest=False).indices
            remove[idx[closest]] = True
    return remove


@torch.no_grad()
def set_evolve(layer: MaskedLinear, zeta: float, regrow_init: str, gen: torch.Generator,
               alive_rows: torch.Tensor | None = None, alive_cols: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One SET rewiring of `layer`. Returns boolean (removed, regrown) masks.

    Removal: `set_removal` of the active weights. Regrowth: as many weights as the budget allows at uniformly random
    positions that are empty after the removal (the just removed ones included, as in SET) and between alive units
    (alive_rows x alive_cols; pruned neurons excluded), drawn on the coordinates by `sample_empty` (the same draw as
    `sparse_set_evolve`'s).
    """
    w, m = layer.weight, layer.mask
    flat_w, flat_m = w.view(-1), m.view(-1)
    active = flat_m.nonzero().squeeze(1)             # sorted row-major positions
    remove = torch.zeros_like(flat_m)
    remove[active[set_removal(flat_w[active], zeta)]] = True
    keep = flat_m & ~remove
    kept = keep.nonzero().squeeze(1)
    n_new = max(0, int(layer.budget) - kept.numel())
    new = sample_empty(n_new, w.shape[0], w.shape[1], kept, gen, alive_rows, alive_cols).to(w.device)
    regrown = torch.zeros_like(flat_m)
    regrown[new] = True
    flat_w[remove] = 0
    values = draw_values(regrow_init, new.numel(), w.shape[1], w.shape[0], gen)
    flat_w[new] = values.to(w.device, w.dtype)
    flat_m.copy_(keep | regrown)
    return remove.view_as(m), regrown.view_as(m)


@torch.no_grad()
def sparse_set_evolve(layer: SparseLinear, zeta: float, regrow_init: str, gen: torch.Generator,
                      alive_rows: torch.Tensor | None = None, alive_cols: torch.Tensor | None = None) -> torch.Tensor:
    """`set_evolve` on the coordinates of a SparseLinear, drawing the same random numbers, so that it picks the
    same removals and regrowth positions as on the equivalent MaskedLinear. Returns the changed slots (bool).

    Removal runs over the weights in row-major order (the order `set_evolve` sees them). A regrown connection
    takes the slot of a removed one, so the number of slots (the budget) and the optimizer state's layout stay.
    Regrowth samples among the empty positions against the sorted kept positions (`sample_empty`): memory
    O(nnz), never O(n_in n_out), and only between alive units (alive_rows x alive_cols), as `set_evolve`.
    """
    order = layer.perm                      # slots in row-major order
    remove = set_removal(layer.values[order], zeta)
    kept = layer.flat_index()[order][~remove]   # sorted: row-major
    n_new = max(0, int(layer.budget) - kept.numel())
    new = sample_empty(n_new, layer.out_features, layer.in_features, kept, gen, alive_rows, alive_cols).to(kept.device)
    values = draw_values(regrow_init, new.numel(), layer.in_features, layer.out_features, gen)
    slots = order[remove.nonzero().squeeze(1)]
    if slots.numel() != new.numel():  # budget == slots by construction (SparseLinear.budget)
        raise RuntimeError(f"SET rewiring: {slots.numel()} removed slots but {new.numel()} regrown connections")
    layer.rows[slots] = (new // layer.in_features).to(layer.rows.dtype)
    layer.cols[slots] = (new % layer.in_features).to(layer.cols.dtype)
    layer.values[slots] = values.to(layer.values.device, layer.values.dtype)
    layer.rebuild_()
    changed = torch.zeros(layer.values.numel(), dtype=torch.bool, device=layer.values.device)
    changed[slots] = True
    return changed


@register_method("set")
class SET(FixProb):
    summary = "Sparse Evolutionary Training: ER init; every epoch remove the zeta share of weights closest to zero, regrow at random"
    source = "Mocanu et al., arXiv 1707.04780"
    Config = SetConfig

    def evolved_layers(self, model: MLP) -> list[int]:
        """Sparse layers whose budget leaves room to move: a layer whose ER density was capped at 1 is dense,
        and rewiring it would only re-initialise its smallest weights in place."""
        n = len(model.layers)
        return [i for i in range(n) if self.sparse_layer(i, n)
                and int(model.layers[i].budget) < model.layers[i].in_features * model.layers[i].out_features]

    def after_epoch(self, model: MLP, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        if epoch >= self.cfg.train.epochs:
            return  # no topology change after the last epoch (weightsEvolution runs for epochs < maxepoch)
        self.before_rewiring(model, optimizer, epoch)
        layers = model.layers
        for i in self.evolved_layers(model):
            layer = layers[i]
            # Regrowth only between units that are alive (neuron pruning removes units for good).
            alive_in = layers[i - 1].unit_mask if i > 0 else None
            if isinstance(layer, SparseLinear):
                changed = sparse_set_evolve(layer, self.cfg.model.zeta, self.cfg.model.regrow_init, self.gen,
                                            layer.unit_mask, alive_in)
                every = torch.ones_like(changed)
                reset_optimizer_state(optimizer, layer.values, every if self.cfg.model.momentum_reset == "all" else changed,
                                      every)
                continue
            removed, regrown = set_evolve(layer, self.cfg.model.zeta, self.cfg.model.regrow_init, self.gen,
                                          layer.unit_mask, alive_in)
            if self.cfg.model.momentum_reset == "all":
                reset_optimizer_state(optimizer, layer.weight, torch.ones_like(removed), layer.mask)
            else:
                reset_optimizer_state(optimizer, layer.weight, removed | regrown, layer.mask)

    def before_rewiring(self, model: MLP, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Hook for set_neuron: neuron pruning runs before the SET step, as in weights_evolution_II."""


@dataclass(frozen=True)
class SetNeuronConfig(SetConfig):
    # Importance of a hidden unit: sum of |incoming weights| ("strength", set_mlp_sequential.py); "in_out"
    # adds the outgoing ones (our option: a unit whose outgoing weights are all tiny matters little too).
    importance: str = spec("in", choices=("in", "in_out"))
    # Schedule of weights_evolution_II: after epochs 210, 220, ... (`epoch % 10 == 0 and epoch > 200`).
    prune_start: int = spec(210, ge=1, help="first epoch after which neurons are pruned")
    prune_every: int = spec(10, ge=1, help="epochs between pruning rounds")
    prune_percentile: float = spec(20.0, gt=0.0, lt=100.0, help="units at or below this importance percentile are removed per round")
    # 0: use prune_percentile. Otherwise remove, per round, the lowest-importance alive units so that this
    # fraction of each hidden layer is gone after the last scheduled round (Paper B: "about 50%").
    prune_target: float = spec(0.0, ge=0.0, lt=1.0, help="fraction of hidden units removed by the end (0 = percentile rule)")
    # "alive": the percentile is taken among the units still alive, so every round removes ~p% of them.
    # "all": over all units, pruned ones (importance 0) included, as set_mlp_sequential.py does; once p% are
    # gone the threshold is 0 and pruning stalls near p%,
    # which cannot reach Paper B's ~50%, hence the default.
    percentile_over: str = spec("alive", choices=("alive", "all"))

    def validate(self) -> None:
        super().validate()
        if not self.hidden:
            raise ConfigError("model.hidden=(): set_neuron prunes hidden units, give at least one hidden layer")


@register_method("set_neuron")
class SetNeuron(SET):
    summary = "SET + neuron importance pruning; pruned units lose every weight and never regrow"
    source = "Liu et al., arXiv 1906.11626"
    Config = SetNeuronConfig
    size_changes = True   # every pruning round removes units until the last one

    @staticmethod
    def schedule(cfg) -> list[int]:
        """Epochs after which a pruning round runs (never after the last epoch: nothing would retrain)."""
        return list(range(cfg.model.prune_start, cfg.train.epochs, cfg.model.prune_every))

    # Budget (issue 16): epsilon as SET, counted after the last pruning round. The prune_target rule leaves
    # round(H (1 - target)) units of an H-unit layer (`choose`), so the deployed shape is known in closed form; the
    # percentile rule's count depends on ties, so budgets need a target (Paper B's ~50% where none is set).
    @classmethod
    def final_widths(cls, cfg) -> tuple[int, ...]:
        t = cfg.model.prune_target
        if not t:
            raise BudgetError("model.prune_target=0 (the percentile rule): set_neuron is sized in closed form only "
                              "with a pruning target; set model.prune_target in (0, 1)")
        return tuple(round(h * (1 - t) ** 1.0) for h in cfg.model.hidden)

    @classmethod
    def selection_excess(cls, cfg, n_in: int, n_out: int, kept: int, p: float) -> float:
        """The units kept are those of largest importance sum |w_in|, i.e. mostly those with more connections: a row's
        count k ~ Bin(n_in, p) (mean mu, sd sigma), and the top q = kept / n_out of rows by importance hold, in a
        normal approximation, mu + rho sigma phi(z) / q each (z = Phi^-1(1 - q), the truncated-normal mean), with
        rho the correlation of k with sum |w| at the initial draw: rho^2 = (1 - p) / ((1 - p) + c), c = var|w| /
        E|w|^2 (1/3 for a uniform draw, 1 - 2/pi over 2/pi for a normal one). An in_out importance mixes in the
        outgoing weights, which the formula ignores (our approximation; the trial's measured size decides)."""
        if not 0 < p < 1 or kept <= 0 or cfg.model.importance != "in":
            return 0.0
        q = kept / n_out
        if q >= 1:
            return 0.0
        c = (1 - 2 / math.pi) / (2 / math.pi) if cfg.model.init == "normal" else 1 / 3
        rho = math.sqrt((1 - p) / ((1 - p) + c))
        sigma = math.sqrt(n_in * p * (1 - p))
        z = statistics.NormalDist().inv_cdf(1 - q)
        return kept * rho * sigma * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) / q

    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        if not cfg.model.prune_target:
            cfg = cfg.replace(**{"model.prune_target": 0.5})   # Paper B (arXiv 1906.11626 abstract): "about 50%"
        return super().fit_budget(cfg, info, budget, metric)

    @classmethod
    def check(cls, cfg) -> None:
        if not cls.schedule(cfg):
            raise ConfigError(f"model.prune_start={cfg.model.prune_start}: no pruning round before the last epoch "
                              f"(train.epochs={cfg.train.epochs}); set model.prune_start < train.epochs")

    @torch.no_grad()
    def importance(self, model: MLP, i: int) -> torch.Tensor:
        """Sum of |incoming| (and, for in_out, |outgoing|) weights per unit of hidden layer i, in float64 on either
        storage (a truly sparse layer sums its coordinates), so that both find the same order."""
        layers = model.layers
        s = abs_sums(layers[i], 1)
        if self.cfg.model.importance == "in_out":
            s = s + abs_sums(layers[i + 1], 0)
        return s

    @torch.no_grad()
    def choose(self, s: torch.Tensor, alive: torch.Tensor, round_index: int, n_rounds: int) -> torch.Tensor:
        m = self.cfg.model
        if m.prune_target:
            # Alive units after round r: H (1 - target)^(r / R), so exactly `target` is gone after round R.
            keep_n = round(alive.numel() * (1 - m.prune_target) ** ((round_index + 1) / n_rounds))
            n_kill = max(0, int(alive.sum()) - keep_n)
            order = torch.where(alive, s, torch.full_like(s, math.inf)).argsort(stable=True)
            kill = torch.zeros_like(alive)
            kill[order[:n_kill]] = True
            return kill & alive
        pool = s[alive] if m.percentile_over == "alive" else s
        if pool.numel() == 0:
            return torch.zeros_like(alive)
        threshold = torch.quantile(pool.double(), m.prune_percentile / 100.0).to(s.dtype)
        kill = alive & (s <= threshold)
        if alive.any() and not (alive & ~kill).any():  # all tied at the threshold: keep the strongest
            kill[torch.where(alive, s, torch.full_like(s, -math.inf)).argmax()] = False
        return kill

    @torch.no_grad()
    def before_rewiring(self, model: MLP, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        rounds = self.schedule(self.cfg)
        if epoch not in rounds:
            return
        layers = model.layers
        for i in range(len(layers) - 1):  # hidden units = outputs of every layer but the last
            into, out_of = layers[i], layers[i + 1]
            kill = self.choose(self.importance(model, i), into.unit_mask, rounds.index(epoch), len(rounds))
            if not kill.any():
                continue
            into.unit_mask[kill] = False
            # The budget shrinks with the units: regrowth refills only what survived (Curci et al.).
            remove_connections_(into, optimizer, rows=kill)
            remove_connections_(out_of, optimizer, cols=kill)
            if into.bias is not None:
                into.bias[kill] = 0
                reset_optimizer_state(optimizer, into.bias, kill, into.unit_mask)


def abs_sums(layer: MaskedLinear | SparseLinear, dim: int) -> torch.Tensor:
    """Row (dim 1) or column (dim 0) sums of |W| in float64, from the coordinates of a truly sparse layer."""
    if isinstance(layer, SparseLinear):
        index, n = (layer.rows, layer.out_features) if dim == 1 else (layer.cols, layer.in_features)
        return torch.zeros(n, dtype=torch.float64, device=layer.values.device).index_add_(
            0, index.long(), layer.values.detach().double().abs())
    return layer.effective_weight().detach().double().abs().sum(dim)


@torch.no_grad()
def remove_connections_(layer: MaskedLinear | SparseLinear, optimizer: torch.optim.Optimizer,
                        rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    """Remove for good every connection of the output units `rows` or the input units `cols` (bool masks), and
    shrink the layer's budget to what is left: a masked layer clears mask and weight and resets their optimizer
    state; a truly sparse one drops the slots and compacts its optimizer state (the survivors' state is the same
    either way)."""
    if isinstance(layer, SparseLinear):
        dead = rows[layer.rows.long()] if rows is not None else cols[layer.cols.long()]
        layer.keep_slots_(~dead)
        compact_optimizer_state(optimizer, layer.values, ~dead)
        return
    where = rows[:, None].expand_as(layer.mask) if rows is not None else cols[None, :].expand_as(layer.mask)
    layer.mask[where] = False
    layer.weight[where] = 0
    reset_optimizer_state(optimizer, layer.weight, where, layer.mask)
    layer.budget.copy_(layer.mask.sum())
