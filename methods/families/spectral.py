"""Spectral learning (issue 5): MLPs whose layers are `SpectralLinear` (methods/nn/spectral_layers.py).

- `spectral`: Paper C's variants (Chicchi et al., arXiv 2106.09021) and the parent's eigenvalue-only layer
  (Giambagli et al., Nat. Commun. 12, 1330, 2021), for the whole net (`model.variant`) or per layer
  (`model.layer_variants`, e.g. the parent's demo: eig_out, full, full).
- `spectral_sparse`: Paper C's QR_sparse: QR layers, lam_in = 1 and lam_out = 0 at init, every layer (output
  included) keeps only its top (1 - sparsity) share of |W| at every forward pass (Example/sparse_functions.py).
- `dense_sparse`: the same dynamic thresholding on a dense kernel, Glorot init, no bias (`Sparse_Dense`).
Defaults follow the authors' code (Jamba15/Spectral_parameters_reduction Example/Layers.py, commit 44fc49e):
ReLU for the dense-vs-spectral comparison, tanh for the sparse experiment. The optimiser is a train.* option
(the authors use Adamax / Adam: Example/lessparam_functions.py, Example/sparse_functions.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.method import Method
from ..core.config import ConfigError, RunConfig, spec
from ._mlp import MLPShapeConfig, fit_width, uniform_hidden, with_hidden
from ..core.budget import chain, solve_knob, solve_width
from ..nn.models import MLP
from ..core.registry import register_method
from ..nn.spectral_layers import SINGLE_SET, VARIANTS, DenseSparseLinear, SpectralLinear


def spectral_trainable(variant: str, n_in: int, n_out: int, qr_triangular: bool = True) -> int:
    """Trainable scalars of a SpectralLinear without its bias (its parameters, R^T counted by its mask:
    methods/nn/spectral_layers.py, SpectralLinear.num_trainable)."""
    k = min(n_in, n_out)
    if variant == "eig_out":
        return n_out
    if variant == "eig_out_full":
        return n_in * n_out + n_out
    if variant == "two_sets":
        return n_in + n_out
    if variant == "ssvd":
        return k + n_in + n_out
    if variant == "full":
        return n_in * n_out + n_in + n_out
    # qr: row i of the lower-trapezoidal R^T (n_out x k) holds min(i + 1, k) entries
    rt = sum(min(i + 1, k) for i in range(n_out)) if qr_triangular else n_out * k
    return rt + n_in + n_out


def kept_nonzeros(n: int, sparsity: float) -> int:
    """Entries of an n-entry W left by dynamic_sparsify: n - int(sparsity * n) (ties aside)."""
    return n - int(sparsity * n)


def spectral_mlp_size(cfg: RunConfig, info, metric: str, variants, sparsity: float = 0.0) -> int:
    m = cfg.model
    layers = chain(info.in_features, m.hidden, info.num_classes)
    if metric == "weights_nonzero":
        return sum(kept_nonzeros(a * b, sparsity) for a, b in layers)
    qr_tri = getattr(m, "qr_triangular", True)
    return sum(spectral_trainable(v, a, b, qr_tri) + (b if m.bias else 0) for v, (a, b) in zip(variants, layers))


def fit_sparsity(method, cfg: RunConfig, info, budget: float) -> RunConfig:
    """model.sparsity for the sampled shape so that the kept nonzeros meet `budget`; our choice where the shape has
    fewer weights than the budget: every hidden layer at the smallest width that has them (sparsity near 0)."""
    nonzeros = lambda c, s: method.deployed_size(c.replace(**{"model.sparsity": s}), info, "weights_nonzero")  # noqa: E731
    if nonzeros(cfg, 0.0) < budget:
        dense = lambda w: nonzeros(with_hidden(cfg, uniform_hidden(cfg.model.hidden, w)), 0.0)  # noqa: E731
        w = solve_width(dense, budget, f"{method.name} network (weights_nonzero)")
        cfg = with_hidden(cfg, uniform_hidden(cfg.model.hidden, w + (dense(w) < budget)))
    # Nonzeros fall as the sparsity grows: solve on the kept count's negative, nondecreasing in s.
    s = solve_knob(lambda s: -nonzeros(cfg, s), -budget, 0.0, 1.0 - 1e-9)
    return cfg.replace(**{"model.sparsity": min(s, 1.0 - 1e-9)})


def mlp_of(method: Method, factory) -> MLP:
    """The configured MLP shape (input, model.hidden, classes) with layers made by `factory(n_in, n_out, bias, i)`."""
    m = method.cfg.model
    widths = (method.info.in_features, *m.hidden, method.info.num_classes)
    return MLP(widths, activation=m.activation, dropout=m.dropout, bias=m.bias, factory=factory)


@dataclass(frozen=True)
class SpectralConfig(MLPShapeConfig):
    variant: str = spec("two_sets", choices=VARIANTS, help=f"{' | '.join(VARIANTS)}, every layer")
    layer_variants: tuple[str, ...] = spec((), choices=VARIANTS,
                                           help="one variant per weight layer (overrides variant); empty: all alike")
    # Default True: the paper's parameter count (Example/plot_functions.py) treats R as triangular; the TF code
    # trains the full matrix (False reproduces that).
    qr_triangular: bool = spec(True)


@register_method("spectral")
class Spectral(Method):
    summary = "MLP of spectral layers W_ij = (lam_in_j - lam_out_i) phi_ij; variants eig_out, eig_out_full, two_sets, ssvd, qr, full"
    source = "Chicchi et al., arXiv 2106.09021; Giambagli et al., Nat. Commun. 2021"
    Config = SpectralConfig
    node_scores = ("eigenvalue", "connectivity")

    def variants(self, n_layers: int) -> tuple[str, ...]:
        m = self.cfg.model
        return tuple(m.layer_variants) or (m.variant,) * n_layers

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        m = cfg.model
        if m.layer_variants and len(m.layer_variants) != len(m.hidden) + 1:
            raise ConfigError(f"model.layer_variants={list(m.layer_variants)} has {len(m.layer_variants)} entries; "
                              f"model.hidden={list(m.hidden)} makes {len(m.hidden) + 1} weight layers")
        if cfg.train.prune_curve and m.hidden:
            # The score rules of methods/nn/node_pruning.py, refused here rather than after training.
            hidden = (tuple(m.layer_variants) or (m.variant,) * (len(m.hidden) + 1))[:-1]
            single = {v in SINGLE_SET for v in hidden}
            if cfg.train.prune_score == "eigenvalue" and single != {True}:
                raise ConfigError(f"train.prune_score='eigenvalue' needs hidden layers of variant "
                                  f"{' or '.join(SINGLE_SET)} (lam_out = 0 removes a node only there), got {list(hidden)}")
            if cfg.train.prune_score == "auto" and len(single) > 1:
                raise ConfigError(f"train.prune_score='auto' would rank eigenvalues against connectivities: hidden "
                                  f"variants {list(hidden)} mix {' / '.join(SINGLE_SET)} with others; "
                                  f"set train.prune_score=connectivity")

    def build(self) -> nn.Module:
        m = self.cfg.model
        variants = self.variants(len(m.hidden) + 1)
        return mlp_of(self, lambda a, b, bias, i: SpectralLinear(a, b, variants[i], bias=bias,
                                                                 qr_triangular=m.qr_triangular))

    # Budget (issue 16): the hidden width (depth and variants kept); the size is set by the shape alone.
    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        return fit_width(cls, cfg, info, budget, metric)

    @classmethod
    def deployed_size(cls, cfg, info, metric):
        m = cfg.model
        return spectral_mlp_size(cfg, info, metric, tuple(m.layer_variants) or (m.variant,) * (len(m.hidden) + 1))


@dataclass(frozen=True)
class SpectralSparseConfig(MLPShapeConfig):
    # Section 3.2: 784-500-500-10, tanh; sparsities 0.5-0.98 in the paper's sweep.
    hidden: tuple[int, ...] = spec((500, 500), ge=1, help="hidden layer widths")
    activation: str = spec("tanh", choices=("relu", "tanh", "elu", "sigmoid"))
    sparsity: float = spec(0.9, ge=0.0, lt=1.0, help="share of each layer's |W| zeroed at every forward pass")
    qr_triangular: bool = spec(True)


@register_method("spectral_sparse")
class SpectralSparse(Method):
    summary = "QR spectral layers keeping the top (1 - sparsity) share of |W| at every forward pass"
    source = "arXiv 2106.09021 (authors' Example/sparse_functions.py)"
    Config = SpectralSparseConfig   # QR layers: lam_out = 0 does not remove a node, so connectivity only

    def build(self) -> nn.Module:
        m = self.cfg.model
        return mlp_of(self, lambda a, b, bias, i: SpectralLinear(a, b, "qr", bias=bias, sparsity=m.sparsity,
                                                                 qr_triangular=m.qr_triangular, lam_init=(1.0, 0.0)))

    # Budget (issue 16): the target sparsity for weights_nonzero; the width for params_trainable, which the
    # thresholding leaves unchanged (every spectral parameter keeps training).
    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        return fit_sparsity(cls, cfg, info, budget) if metric == "weights_nonzero" else fit_width(cls, cfg, info, budget, metric)

    @classmethod
    def deployed_size(cls, cfg, info, metric):
        return spectral_mlp_size(cfg, info, metric, ("qr",) * (len(cfg.model.hidden) + 1), cfg.model.sparsity)


@dataclass(frozen=True)
class DenseSparseConfig(MLPShapeConfig):
    hidden: tuple[int, ...] = spec((500, 500), ge=1, help="hidden layer widths")
    activation: str = spec("tanh", choices=("relu", "tanh", "elu", "sigmoid"))
    bias: bool = spec(False)   # Sparse_Dense has no bias (Example/Layers.py)
    sparsity: float = spec(0.9, ge=0.0, lt=1.0, help="share of each layer's |W| zeroed at every forward pass")


@register_method("dense_sparse")
class DenseSparse(Method):
    summary = "the same dynamic thresholding on a dense kernel: Paper C's sparse baseline"
    source = "arXiv 2106.09021"
    Config = DenseSparseConfig

    def build(self) -> nn.Module:
        sparsity = self.cfg.model.sparsity
        return mlp_of(self, lambda a, b, bias, i: DenseSparseLinear(a, b, bias=bias, sparsity=sparsity))

    # Budget (issue 16): as spectral_sparse; a dense kernel trains all its entries (its gradient is dense).
    @classmethod
    def fit_budget(cls, cfg, info, budget, metric):
        return fit_sparsity(cls, cfg, info, budget) if metric == "weights_nonzero" else fit_width(cls, cfg, info, budget, metric)

    @classmethod
    def deployed_size(cls, cfg, info, metric):
        m = cfg.model
        layers = chain(info.in_features, m.hidden, info.num_classes)
        if metric == "weights_nonzero":
            return sum(kept_nonzeros(a * b, m.sparsity) for a, b in layers)
        return sum(a * b + (b if m.bias else 0) for a, b in layers)
