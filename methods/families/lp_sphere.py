"""Sparse training on the unit Lp sphere (Li, Yang, Li, Lu, Xie, arXiv 2103.16013, known only from its abstract;
authors' code WilliamLiPro/LpSS at commit 9c8cbc1).

- `lp_sgd`: LpSGD alone (methods/nn/lpsgd.py): every constrained row on its unit Lp sphere; sparsity only from the
  entries that |v|^(1/(p-1)) crushes to exact zeros (an ablation of ours, not a run of the authors).
- `lp_sphere`: LpSGD + the topology evolution of `SparseLpSSOptimizer` (optimizer/sparse_optimizer.py): a random
  mask at s0 = 0.2, updated every `frequency` steps between 20% and 80% of training:
    h      = drop_fraction * (0.5 cos(pi (epoch - begin) / (end - begin)) + 0.5)      cosine-annealed
    thr_r  = h * mean |W_r| over the row's active entries                               per-neuron threshold
    K      = active entries with |W| >= thr_r ; n_drop = |M \\ K| ; n_grow = int(n_drop * g_f)
    grow   = the n_grow best entries outside K by the row-normalised dense gradient G_r / ||G_r||_2
    M      = K | grow ; momentum of every changed entry reset to 0
    s      = zeros of all masks / all model parameters (BN and biases included, as the authors count)
    g_f    = (1 - d) s / s*  if s < s* (1 - h / 2)  else  (1 + d) s / s*                  feedback to the target s*
  Semi-pruning: the forward pass uses W * M, but W (and LpSGD's feature vector v) keep the values of masked
  entries, which get no gradient; a regrown entry resumes from its latent value, not from 0.

Choices where the code is ambiguous or looks unintended, each an option:
- `grow_by: signed` (default) ranks candidates by the signed normalised gradient, as the authors' code does (the
  published table was produced with it); `magnitude` ranks by |G|, as RigL does.
- K keeps only entries that are active now: the authors threshold W after `prune.remove`, i.e. W * M, so masked
  entries (0) never pass a positive threshold (optimizer/core.py `sparsify_weight`, commit 527ed00); masked
  entries come back only by growth.
- The dense gradient is that of the step just taken (captured from the backward pass of W * M, whose gradient
  is dense), not of a second forward/backward after the step as in the authors' code: one pass instead of two.
Which layers are constrained (optimizer/lpcgd.py `LpCGD.weightNormalize`), read from each layer's place, never
from parameter names:
- MLP (`model.arch: mlp`): every hidden layer's weight, one entry of `model.p` each;
- wide ResNet (`model.arch: wrn12 | wrn18 | wrn22_2 | wrn22_4`, methods/nn/wrn.py): the roles of `lpss_constrained`:
  the block convs, and the stem only on inputs of >= 2 channels; 1x1 shortcuts stay free. `model.p` has one entry
  per slot of `lpss_p_slots` (the stem and every block conv, in forward order): the stem consumes its entry even
  where it stays free (the authors' `net_lp` indexing; an off-by-one would shift every p);
- the classifier only with `constrain_classifier: true` (the authors exclude the last fc; it takes the last entry);
  biases and BatchNorm always stay free.
Masks cover every weight layer, classifier and shortcuts included (as `SparseLpSSOptimizer`). The authors' summed
loss and per-step rate schedule/batch_size (demo.py, optimizer/lpcgd.py) become, with sparsebench's mean loss,
rate `train.lr` for the free parameters and mixing rate `train.lr / batch_size` for the constrained ones
(`model.mix_rate` overrides it): the same dynamics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.method import Method
from ..core.config import ConfigError, RunConfig, spec
from ._mlp import MLPShapeConfig, WidthSized, arch_spec, build_arch, check_arch, mlp_only, with_hidden
from ..core.budget import BudgetError, batchnorm_params, chain, solve_knob, solve_width, uniform_hidden
from ..nn.layers import WeightLayer, weight_layers
from ..nn.lpsgd import LpSGD
from ..core.optim import steps_per_epoch
from ..nn.models import MLP
from ..core.registry import register_method
from ..nn.semi_masked import SemiMaskedLinear, semi_masked_factory
from ..nn.wrn import ARCHS, WideResNet, lpss_constrained, lpss_p_slots, p_slot_count

__all__ = ["LpSGDMethod", "LpSphere", "SemiMaskedLinear", "lp_layers"]


@dataclass(frozen=True)
class LpSGDConfig(MLPShapeConfig):
    hidden: tuple[int, ...] = spec((256, 256), ge=1, help="hidden layer widths")
    batchnorm: bool = spec(True, help="BatchNorm after every hidden layer (the authors' nets have one per layer)")
    # One p for every constrained layer, or one per constrained layer in forward order. The demo's lists put a
    # larger p on the first layers ([1.3]*4 + [1.15]*18 at s = 0.8, demo.py); 1.3 is the middle of its values.
    p: tuple[float, ...] = spec((1.3,), gt=1.0, help="Lp exponent(s) of the constrained layers")
    constrain_classifier: bool = spec(False, help="also keep the classifier's rows on the sphere (the authors do not)")
    mix_rate: float = spec(0.0, ge=0.0, lt=1.0, help="LpSGD mixing rate; 0: train.lr / train.batch_size (authors)")
    arch: str = arch_spec()


def p_entries(m) -> int:
    """How many exponents a per-layer `model.p` list has for this config (module docstring)."""
    base = len(m.hidden) if m.arch == "mlp" else p_slot_count(ARCHS[m.arch][1])
    return base + (1 if m.constrain_classifier else 0)


def lp_layers(cfg: RunConfig, model: nn.Module) -> list[tuple[WeightLayer, float]]:
    """(layer, p) of every layer whose rows LpSGD keeps on the unit Lp sphere (module docstring)."""
    m = cfg.model
    ps = list(m.p) * p_entries(m) if len(m.p) == 1 else list(m.p)
    layers = weight_layers(model)
    if isinstance(model, WideResNet):
        chosen = [(l, ps[k]) for l, k in zip(layers, lpss_p_slots(model)) if k is not None and lpss_constrained(l)]
    else:
        chosen = list(zip(layers[:-1], ps))
    if m.constrain_classifier:
        chosen.append((layers[-1], ps[-1]))
    return chosen


def lp_optimizer(cfg: RunConfig, model: nn.Module) -> LpSGD:
    """One group per constrained layer weight (its own p), one for everything else. The constrained groups'
    rate is the mixing rate; a learning-rate schedule scales both alike."""
    t = cfg.train
    mix = cfg.model.mix_rate or t.lr / t.batch_size
    chosen = lp_layers(cfg, model)
    constrained = {id(layer.weight) for layer, _ in chosen}
    free = [q for q in model.parameters() if q.requires_grad and id(q) not in constrained]
    # The free group first: the Trainer reports param_groups[0]'s rate as the epoch's `lr`.
    groups = [{"params": free, "lp": None}] + [{"params": [layer.weight], "lp": p, "lr": mix} for layer, p in chosen]
    return LpSGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov)


def check_lp(cfg: RunConfig) -> None:
    check_arch(cfg)
    m = cfg.model
    n = p_entries(m)
    if n == 0:
        raise ConfigError("model.hidden=[] with constrain_classifier=false leaves no layer on the Lp sphere")
    if len(m.p) not in (1, n):
        what = "the hidden layers" if m.arch == "mlp" else f"the stem and block convs of {m.arch}"
        raise ConfigError(f"model.p={list(m.p)}: give one exponent, or one per constrained layer ({n} here: "
                          f"{what}" + (" and the classifier" if m.constrain_classifier else "") + ")")


# Budget (issue 16): the hidden width (WidthSized). LpSGD's exact zeros are not known before training, so
# weights_nonzero is sized as the dense count (an upper bound); the trial's measured size says whether it stayed
# within 5%.
@register_method("lp_sgd")
class LpSGDMethod(WidthSized, Method):
    summary = "LpSGD: hidden rows on the unit Lp sphere, dual-norm normalised Nesterov step; sparsity from exact zeros"
    source = "Li et al., arXiv 2103.16013 (authors' LpCGD)"
    Config = LpSGDConfig
    # LpSGD is the method (train.momentum and train.nesterov configure it); it has no weight decay: the LpSS runs
    # use none, and a decay would pull the rows off their sphere.
    requires = {"train.optimizer": "sgd", "train.weight_decay": 0.0}

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        check_lp(cfg)

    def build(self) -> nn.Module:
        return self.network()

    def network(self, wrn_factory=None, mlp_factory=None) -> nn.Module:
        """The wide ResNet of `model.arch`, or the MLP of `model.hidden` (with BatchNorm when `model.batchnorm`)."""
        m, info = self.cfg.model, self.info
        net = build_arch(m, info, wrn_factory)
        if net is not None:
            return net
        extra = {} if mlp_factory is None else {"factory": mlp_factory}
        return MLP((info.in_features, *m.hidden, info.num_classes), activation=m.activation, dropout=m.dropout,
                   bias=m.bias, batchnorm=m.batchnorm, **extra)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return lp_optimizer(self.cfg, model)



@dataclass(frozen=True)
class LpSphereConfig(LpSGDConfig):
    sparsity: float = spec(0.8, gt=0.0, lt=1.0, help="target share of zero parameters (of all parameters)")
    initial_sparsity: float = spec(0.2, ge=0.0, lt=1.0, help="random mask's share of zeros per layer at init (s0)")
    begin: float = spec(0.2, ge=0.0, lt=1.0, help="topology updates from this share of the epochs...")
    end: float = spec(0.8, gt=0.0, le=1.0, help="...until this share")
    frequency: int = spec(40, ge=1, help="steps between topology updates")
    drop_fraction: float = spec(0.2, gt=0.0, lt=1.0, help="h at the first update (cosine-annealed to 0)")
    grow_fraction_d: float = spec(0.1, ge=0.0, lt=1.0, help="step of the grow-fraction feedback")
    grow_by: str = spec("signed", choices=("signed", "magnitude"), help="growth criterion (signed: the authors' code)")


@register_method("lp_sphere")
class LpSphere(LpSGDMethod):
    summary = "LpSGD + the LpSS topology: annealed per-neuron thresholds, gradient-guided growth, semi-pruning"
    source = "Li et al., arXiv 2103.16013 (authors' SparseLpSSOptimizer)"
    Config = LpSphereConfig
    size_changes = True   # the topology anneals towards its target sparsity between `begin` and `end`

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.grow_fraction = 0.95          # sparse_optimizer.py's initial g_f
        self.mask_sparsity = 0.0
        self.updates = 0
        self.gen = torch.Generator().manual_seed(cfg.train.seed + 7919)   # topology stream, apart from data order
        self.steps_per_epoch = steps_per_epoch(info.n_train, cfg.train)   # the Trainer's count (drop_last)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        check_lp(cfg)
        m = cfg.model
        if m.end <= m.begin:
            raise ConfigError(f"model.end={m.end} must exceed model.begin={m.begin}")

    def build(self) -> nn.Module:
        m = self.cfg.model
        model = self.network(semi_masked_factory, lambda a, b, bias, i: SemiMaskedLinear(a, b, bias=bias))
        for layer in weight_layers(model):   # exactly ceil(s0 * n) zeros per layer, at random (sparse_optimizer.py)
            n = layer.mask.numel()
            off = torch.randperm(n, generator=self.gen)[: math.ceil(m.initial_sparsity * n)]
            layer.mask.view(-1)[off] = False
        for layer in weight_layers(model):
            # Always: the stash is a reference to a gradient autograd computes anyway, and a run resumed just before
            # an update step needs it as much as an uninterrupted one.
            layer.capture = True
        return model

    # ---- budget (issue 16): the target sparsity, with the initial mask drawn at it
    @staticmethod
    def _totals(cfg: RunConfig, info) -> tuple[int, int, list[int]]:
        """(all parameters, all weights, weights per layer): the controller's s = mask zeros / all parameters."""
        m = cfg.model
        layers = [a * b for a, b in chain(info.in_features, m.hidden, info.num_classes)]
        total = sum(layers) + (sum(b for _, b in chain(info.in_features, m.hidden, info.num_classes)) if m.bias else 0)
        return total + batchnorm_params(m.hidden, m.batchnorm), sum(layers), layers

    @classmethod
    def deployed_size(cls, cfg, info, metric):
        # The feedback of SparseLpSSOptimizer holds the mask's zeros at `sparsity` of all parameters (module
        # docstring), so the deployed network has (1 - s*) * total trainable scalars; masked weights are the zeros.
        mlp_only(cfg)
        total, weights, _ = cls._totals(cfg, info)
        zeros = cfg.model.sparsity * total
        return total - zeros if metric == "params_trainable" else weights - zeros

    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        """model.sparsity for the sampled hidden shape, and model.initial_sparsity drawing exactly those zeros at
        init (ceil(s0 n) per layer, as `build`): the network starts at its budget and the feedback keeps it there.
        Our choice where the sampled shape cannot hold the budget (fewer parameters than it, or the biases and
        BatchNorm alone above it): every hidden layer at the width that holds it at the paper's s* = 0.8."""
        mlp_only(cfg)

        def zeros_needed(c):
            total, weights, _ = cls._totals(c, info)
            return (total if metric == "params_trainable" else weights) - budget, weights

        z, weights = zeros_needed(cfg)
        if not 0 < z < weights:
            at_paper = cfg.replace(**{"model.sparsity": 0.8})
            size = lambda w: cls.deployed_size(with_hidden(at_paper, uniform_hidden(cfg.model.hidden, w)), info, metric)  # noqa: E731
            cfg = with_hidden(cfg, uniform_hidden(cfg.model.hidden, solve_width(size, budget, f"lp_sphere network ({metric})")))
            z, weights = zeros_needed(cfg)
            if not 0 < z < weights:
                raise BudgetError(f"budget {budget:g} {metric}: lp_sphere cannot mask its way there: unreachable")
        total, _, layers = cls._totals(cfg, info)
        drawn = lambda s0: sum(math.ceil(s0 * n) for n in layers)  # noqa: E731
        s0 = solve_knob(drawn, z, 0.0, 1.0 - 1e-12)
        s0 = min(s0, math.nextafter(1.0, 0.0))
        zeros = drawn(s0)
        if not 0 < zeros < total:
            raise BudgetError(f"budget {budget:g} {metric}: lp_sphere would mask {zeros} of {total} parameters: unreachable")
        return cfg.replace(**{"model.initial_sparsity": s0, "model.sparsity": zeros / total})

    # ---- schedule
    def _epoch(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch        # 0-based epoch the step belongs to

    def _window(self) -> tuple[float, float]:
        e = self.cfg.train.epochs
        return self.cfg.model.begin * e, self.cfg.model.end * e

    def _due(self, step: int) -> bool:
        begin, end = self._window()
        return begin <= self._epoch(step) < end and step % self.cfg.model.frequency == 0

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self._due(step):
            self.update_topology(model, optimizer, self._epoch(step))

    @torch.no_grad()
    def update_topology(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        m = self.cfg.model
        begin, end = self._window()
        h = m.drop_fraction * (0.5 * math.cos(math.pi * (epoch - begin) / (end - begin)) + 0.5)
        for layer in weight_layers(model):
            if layer.dense_grad is None:   # no gradient this step (cannot happen in the Trainer's loop): keep it
                continue
            # Rows = output units: a linear layer's rows, a conv's filters flattened (`LpNormalize_cnn`). Views, so
            # `mask.copy_` below writes the layer's own mask.
            rows = layer.weight.shape[0]
            w, mask, g = (t.view(rows, -1) for t in (layer.weight, layer.mask, layer.dense_grad))
            active = mask.sum(1, keepdim=True).clamp_min(1)
            thr = h * (w.abs() * mask).sum(1, keepdim=True) / active
            keep = mask & (w.abs() >= thr)
            n_drop = int((mask & ~keep).sum())
            n_grow = int(n_drop * self.grow_fraction)
            grown = torch.zeros_like(mask)
            if n_grow:
                gn = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
                score = gn if m.grow_by == "signed" else gn.abs()
                # As grow_maximum does: kept entries score 0 and may fill the top-k (a no-op), so a negative signed
                # gradient is never grown while a zero-score slot is left.
                score = score.masked_fill(keep, 0.0)
                grown.view(-1)[torch.topk(score.flatten(), n_grow).indices] = True
                grown &= ~keep
            new = keep | grown
            changed = new ^ mask
            mask.copy_(new)
            buf = optimizer.state.get(layer.weight, {}).get("momentum_buffer")
            if buf is not None:     # momentum of dropped and grown entries restarts at 0
                buf.view(rows, -1).masked_fill_(changed, 0.0)
        zeros = sum(int((~l.mask).sum()) for l in weight_layers(model))
        total = sum(p.numel() for p in model.parameters())
        s, target = zeros / total, m.sparsity
        d = m.grow_fraction_d
        self.grow_fraction = (1 - d) * s / target if s < target * (1 - 0.5 * h) else (1 + d) * s / target
        self.mask_sparsity = s
        self.updates += 1

    def epoch_metrics(self) -> dict[str, float]:
        return {"mask_sparsity": self.mask_sparsity, "grow_fraction": self.grow_fraction,
                "topology_updates": float(self.updates)}

    def state_dict(self) -> dict[str, Any]:
        return {"grow_fraction": self.grow_fraction, "mask_sparsity": self.mask_sparsity, "updates": self.updates,
                "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grow_fraction, self.mask_sparsity = state["grow_fraction"], state["mask_sparsity"]
        self.updates = state["updates"]
        self.gen.set_state(state["gen"])
