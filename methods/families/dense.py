"""The dense MLP baseline: the reference every parameter-efficient method is compared with."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.method import Method
from ..core.config import spec
from ..core.registry import register_method
from ..nn.models import MLP
from ._mlp import MLPConfig, WidthSized, arch_spec, build_arch, check_arch
from ..core.config import RunConfig


@dataclass(frozen=True)
class DenseConfig(MLPConfig):
    # The Lp-sphere paper's dense baseline is its BatchNorm network trained by SGD (WilliamLiPro/LpSS demo.py):
    # the same MLP as lp_sgd / lp_sphere, with BatchNorm after every hidden layer, compares like with like.
    batchnorm: bool = spec(False, help="BatchNorm after every hidden layer")
    # The paper's image rows train wide ResNets (LpSS README, model/resNet.py); its dense baseline is the same
    # net trained by SGD.
    arch: str = arch_spec()


@register_method("dense")
class Dense(WidthSized, Method):   # budget: the hidden width (WidthSized; diversity inherits it)
    summary = "MLP baseline (or a wide ResNet via model.arch): the reference every method is compared with"
    source = "dense baseline"
    Config = DenseConfig

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        check_arch(cfg)

    def build(self) -> nn.Module:
        m = self.cfg.model
        net = build_arch(m, self.info)
        if net is not None:
            return net
        return MLP((self.info.in_features, *m.hidden, self.info.num_classes), activation=m.activation,
                   dropout=m.dropout, bias=m.bias, batchnorm=getattr(m, "batchnorm", False))  # diversity reuses this build

