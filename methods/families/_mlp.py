"""The MLP configuration shared by every MLP-based family (dense, diversity, set_prune, spectral, lp_sphere): its
shape, the initialisation options that act on plain weight matrices, and the `model.arch` switch to the wide
ResNets of the Lp-sphere paper (arXiv 2103.16013). Private: discovery (methods/families/__init__.py) skips it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from ..core.budget import BudgetError, batchnorm_params, chain, solve_width, uniform_hidden
from ..core.config import ConfigError, ModelConfig, RunConfig, spec
from ..data import DataInfo
from ..nn.models import ACTIVATIONS
from ..nn.wrn import ARCHS, LayerFactory, build_wrn

# `model.arch` of the methods that also train the Lp-sphere paper's wide ResNets (dense, lp_sgd, lp_sphere).
ARCH_CHOICES = ("mlp", *ARCHS)
# Keys that shape only an MLP: with a wide ResNet a changed value would be silently ignored, so it is refused.
MLP_ONLY = ("hidden", "activation", "dropout", "bias", "decor_init")


def arch_spec():
    return spec("mlp", choices=ARCH_CHOICES, help="mlp (model.hidden), or a wide ResNet of the Lp-sphere paper for "
                                                  "image data (methods/nn/wrn.py; it always has BatchNorm)")


def check_arch(cfg: RunConfig) -> None:
    m = cfg.model
    if getattr(m, "arch", "mlp") == "mlp":
        return
    defaults = {f.name: f.default for f in dataclasses.fields(m)}
    for key in MLP_ONLY:
        if key in defaults and getattr(m, key) != defaults[key]:
            raise ConfigError(f"model.{key}={getattr(m, key)!r} shapes an MLP, but model.arch={m.arch!r}: "
                              f"leave it at its default or use model.arch=mlp")
    if cfg.train.prune_curve:
        raise ConfigError(f"train.prune_curve removes the hidden nodes of an MLP; model.arch={m.arch!r} is a ResNet")


def build_arch(m: ModelConfig, info: DataInfo, wrn_factory: LayerFactory | None = None) -> nn.Module | None:
    """The wide ResNet `m.arch` for the dataset (input channels and classes from `info`), None for an MLP."""
    arch = getattr(m, "arch", "mlp")
    return None if arch == "mlp" else build_wrn(arch, info.name, info.input_shape, info.num_classes, wrn_factory)


@dataclass(frozen=True)
class MLPShapeConfig(ModelConfig):
    """Shape of an MLP; shared by every MLP-based method's config (spectral ones included)."""

    hidden: tuple[int, ...] = spec((128, 64), ge=1, help="hidden layer widths")
    activation: str = spec("relu", choices=tuple(ACTIVATIONS))
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    bias: bool = spec(True)


@dataclass(frozen=True)
class MLPConfig(MLPShapeConfig):
    """An MLP of plain weight matrices: the shape plus the initialisation options that act on such matrices."""

    # Decorrelated yet random initialisation (Paper A, arXiv 2109.09612; the algorithm is our reconstruction from
    # the abstract and Kovalenko & Kordik's ICANN 2023 abstract, docs/methods.md): the standard init, then
    # `decor_steps` data-free Adam steps lowering the mean squared cosine ("cosine") or Pearson correlation
    # ("pearson", centred rows) between the rows of every hidden layer, then each row's norm restored
    # (methods/nn/decorrelation.py says why squared). Paper A's step count and rate are unknown: the defaults are
    # ours: with them the mean |cosine| of 8..64 x 784, 16 x 617 and 32..64 x 64 layers falls from 0.03-0.10 to
    # <= 0.001, and layers with more units than inputs reach their floor (benchmarks/decor_init.py).
    decor_init: str = spec("none", choices=("none", "cosine", "pearson"))
    decor_steps: int = spec(100, ge=1, help="data-free gradient steps of the decorrelated initialisation")
    decor_lr: float = spec(0.05, gt=0.0, help="Adam rate of those steps, relative to a unit row's typical entry")


# ---- budgets (issue 16): the counts of plain MLPs and the width solver every MLP-based family uses ----
def mlp_only(cfg: RunConfig) -> None:
    arch = getattr(cfg.model, "arch", "mlp")
    if arch != "mlp":
        raise BudgetError(f"model.arch={arch!r}: budgets size MLPs only (model.hidden); use model.arch=mlp")


def dense_mlp_size(cfg: RunConfig, info: DataInfo, metric: str) -> int:
    """params_trainable / weights_nonzero of a dense MLP (DenseLinear chain, optional BatchNorm): every weight,
    every bias of a layer with bias, BatchNorm's weight and bias per hidden unit (metrics.params_trainable)."""
    mlp_only(cfg)
    m = cfg.model
    layers = chain(info.in_features, m.hidden, info.num_classes)
    weights = sum(a * b for a, b in layers)
    if metric == "weights_nonzero":
        return weights
    return weights + (sum(b for _, b in layers) if m.bias else 0) + batchnorm_params(m.hidden, getattr(m, "batchnorm", False))


def with_hidden(cfg: RunConfig, hidden: tuple[int, ...]) -> RunConfig:
    return cfg.replace(**{"model.hidden": tuple(hidden)})


def fit_width(method, cfg: RunConfig, info: DataInfo, budget: float, metric: str, depth: int | None = None) -> RunConfig:
    """`cfg` with every hidden layer at the width whose deployed size is nearest to `budget` (the depth of
    model.hidden kept, or `depth`): the knob of the dense, diversity and spectral families, whose size is set by
    their shape alone."""
    mlp_only(cfg)
    hidden = cfg.model.hidden if depth is None else (1,) * depth
    size = lambda w: method.deployed_size(with_hidden(cfg, uniform_hidden(hidden, w)), info, metric)  # noqa: E731
    return with_hidden(cfg, uniform_hidden(hidden, solve_width(size, budget, f"{method.name} network ({metric})")))


class WidthSized:
    """Budget hooks of a method whose size is its MLP's shape (issue 16): the budget picks the hidden width, and the
    deployed network is the dense MLP of that shape (Dense, Diversity, LpSGD; mixed in before `Method`)."""

    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        return fit_width(cls, cfg, info, budget, metric)

    @classmethod
    def deployed_size(cls, cfg, info, metric):
        return dense_mlp_size(cfg, info, metric)
