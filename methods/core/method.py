"""The contract between a method and the one training loop (methods/core/train.py).

A method is a registered subclass of `Method` with a typed `Config` (a `ModelConfig` whose defaults are the
paper's values, source cited next to each) and hooks. The loop calls, in order:

    model = method.make_model()                 once: build(), then the shared initialisation options
    opt = method.optimizer(model)               once
    per step:  loss = CE + method.extra_loss(model, x, out, hidden)   (regularisers; None for none)
               opt.step(); method.after_step(model, opt, step)        (e.g. Lp-sphere mask updates)
    per epoch: metrics are measured (with method.epoch_metrics()), then method.after_epoch(model, opt, epoch)
               (SET rewiring, neuron pruning)
    checkpoint: method.state_dict() / load_state_dict()               (schedules, extras a resume needs)

Budgets (issue 16): `Method.size_to_budget(cfg, info, budget, metric)` returns the config resized so that the
network at the end of training has `budget` scalars by `metric`, in closed form (`fit_budget` chooses the knob,
`deployed_size` is the formula; methods/core/budget.py); no network is built.

Masks and other tensors that belong to layers live in the model's buffers and are checkpointed with it.
Every model's forward accepts `return_hidden=True` and then returns (logits, [hidden activations, one per
weight layer but the last]): the diversity metrics of every method and the activation penalties read them.
A method never imports ray, optuna or mlflow.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .budget import FLOPS_PER_NONZERO, BudgetError, check_metric, check_reached, counted_as
from .config import ModelConfig, RunConfig
from ..data import DataInfo
from ..nn.decorrelation import decorrelate_model_
from .optim import make_optimizer


class Method:
    name: ClassVar[str] = ""  # set by @register_method
    # One line each for the methods table (`sparsebench methods`, docs/methods.md): what it is, and its paper.
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    # True when the model's hidden activations are needed by extra_loss (saves a second forward pass).
    needs_hidden: ClassVar[bool] = False
    # Flat config values this method needs (e.g. LpSGD methods train with their own optimizer: train.optimizer=sgd).
    # RunConfig refuses others, and the search-space fairness test lets such a method fix the key.
    requires: ClassVar[dict[str, Any]] = {}
    # Node scores `train.prune_score` may name for this method's networks (methods/nn/node_pruning.py).
    node_scores: ClassVar[tuple[str, ...]] = ("connectivity",)
    # True when the network's size changes during training (pruning rounds, annealed sparsity, a node-removal
    # phase): only a run trained all its epochs has the size `deployed_size` predicts, so a budget search judges an
    # early-stopped trial's size by nothing it measured (workflows/search.py, BudgetTrialCallback).
    size_changes: ClassVar[bool] = False

    def __init__(self, cfg: RunConfig, info: DataInfo):
        self.cfg = cfg
        self.info = info

    def build(self) -> nn.Module:
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        """build(), then the initialisation options every MLP-based method shares (MLPConfig.decor_init): one
        place, so that SET or Lp-sphere networks get the decorrelated initialisation exactly as dense does."""
        model = self.build()
        m = self.cfg.model
        if getattr(m, "decor_init", "none") != "none":
            decorrelate_model_(model, centred=m.decor_init == "pearson", steps=m.decor_steps, lr=m.decor_lr)
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return make_optimizer([p for p in model.parameters() if p.requires_grad], self.cfg.train)

    def extra_loss(self, model: nn.Module, x: torch.Tensor, out: torch.Tensor, hidden: list[torch.Tensor] | None) -> torch.Tensor | None:
        return None

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        pass

    def epoch_metrics(self) -> dict[str, float]:
        """Method-specific numbers of the epoch just trained (e.g. a regulariser's mean weight), reported with
        the common metrics; called once per epoch, before after_epoch."""
        return {}

    def after_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Called after epoch `epoch` (1-based) has been trained and measured: changes apply to the next one."""

    def reshape(self, model: nn.Module) -> nn.Module | None:
        """A new network to go on training with when the method's state says the architecture has changed (e.g.
        nodes removed and the network rebuilt smaller), else None. The Trainer calls it after every after_epoch
        and after loading a checkpoint's method state (so a resumed run rebuilds the same shape before its
        weights are loaded), then builds a fresh optimizer for the new parameters and keeps the schedule."""
        return None

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Checks across config sections (e.g. a schedule against train.epochs); raise ConfigError."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # ---- budgets (issue 16; methods/core/budget.py) ----
    @classmethod
    def size_to_budget(cls, cfg: RunConfig, info: DataInfo, budget: float, metric: str = "params_trainable") -> RunConfig:
        """`cfg` with the knobs of this method set so that the network at the end of training has `budget`
        scalars by `metric` (params_trainable | weights_nonzero | flops_inference), in closed form: no network is built. The other
        keys of `cfg` are kept. BudgetError when the budget is out of this method's reach."""
        check_metric(metric)
        if not (isinstance(budget, (int, float)) and budget > 0 and budget == budget and budget != float("inf")):
            raise BudgetError(f"budget {budget!r}: must be a finite number > 0")
        counted, scalars = counted_as(metric, float(budget))   # a FLOP budget is a weight-nonzero one (budget.py)
        sized = cls.fit_budget(cfg, info, scalars, counted)
        check_reached(cls.deployed(sized, info, metric), budget, cls.name, metric)
        return sized

    @classmethod
    def deployed(cls, cfg: RunConfig, info: DataInfo, metric: str) -> float:
        """`deployed_size` for every budget metric: flops_inference from the weight nonzeros (budget.py)."""
        check_metric(metric)
        per = FLOPS_PER_NONZERO.get(metric)
        return per * cls.deployed_size(cfg, info, "weights_nonzero") if per else cls.deployed_size(cfg, info, metric)

    @classmethod
    def fit_budget(cls, cfg: RunConfig, info: DataInfo, budget: float, metric: str) -> RunConfig:
        """The sized config (override: choose the width, density or sparsity that meets `budget`)."""
        raise BudgetError(f"method {cls.name!r} cannot be sized to a budget (it defines no Method.fit_budget)")

    @classmethod
    def deployed_size(cls, cfg: RunConfig, info: DataInfo, metric: str) -> float:
        """Closed-form `metric` (params_trainable | weights_nonzero; `deployed` adds the FLOPs) of the network `cfg`
        deploys at the end of training (expected value where masks are random draws), counted as
        methods/core/metrics.py measures it."""
        raise BudgetError(f"method {cls.name!r} has no closed-form size (it defines no Method.deployed_size)")
