"""The dense MLP baseline: the reference every parameter-efficient method is compared with."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import Method
from .config import ModelConfig, spec
from .models import ACTIVATIONS, MLP
from .registry import register_method


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Shape of an MLP; shared by every MLP-based method's config."""

    hidden: tuple[int, ...] = spec((128, 64), ge=1, help="hidden layer widths")
    activation: str = spec("relu", choices=tuple(ACTIVATIONS))
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    bias: bool = spec(True)


@dataclass(frozen=True)
class DenseConfig(MLPConfig):
    pass


@register_method("dense")
class Dense(Method):
    Config = DenseConfig

    def build(self) -> nn.Module:
        m = self.cfg.model
        return MLP((self.info.in_features, *m.hidden, self.info.num_classes), activation=m.activation,
                   dropout=m.dropout, bias=m.bias)
