"""CIFAR-style wide ResNets of the Lp-sphere paper (Li, Yang, Li, Lu, Xie, arXiv 2103.16013), as defined by the
authors' WilliamLiPro/LpSS model/resNet.py (`ResNet_CIFAR` with `BasicBlock_cifar`, commit
9c8cbc1; models per dataset from the README epochs and "nw" column, demo.py). Written from a reading of that
file, not copied from it.

Structure (He et al., arXiv 1512.03385, CIFAR variant; widths as Zagoruyko & Komodakis, arXiv 1605.07146):
    stem: 3x3 conv, 16 channels, stride 1 -> BN -> ReLU
    stage 1..3: BasicBlocks of width w, 2w, 4w, the first block of stage 2 and 3 with stride 2
        block: 3x3 conv (stride s) -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, -> ReLU
        shortcut: identity, or 1x1 conv (stride s) -> BN where the stride or the width changes
    adaptive global average pool (so 28x28, 32x32 and 64x64 inputs all work) -> FC (with bias)
Convs have no bias; BN is affine. The LpSS block's Dropout2d is left out: every LpSS constructor uses p = 0.
Initialisation as resNet.py: Kaiming-normal (fan_out, ReLU) for every conv, shortcuts included; BN weight 1,
bias 0; PyTorch's default nn.Linear init for the FC.

| constructor            | w  | blocks    | parameters (inputs, classes)      | LpSS dataset |
| wide_resnet12_cifar    | 16 | [1, 2, 2] | 170,298 (1, 10)                   | MNIST        |
| wide_resnet18_cifar    | 16 | [2, 3, 3] | 267,514 (1, 10)                   | Fashion-MNIST (demo.py) |
| wide_resnet22_2_cifar  | 32 | [3, 4, 3] | 1,154,074 (3, 10)                 | CIFAR-10     |
| wide_resnet22_4_cifar  | 64 | [3, 4, 3] | 4,644,120 (3, 200)                | Tiny ImageNet |
The counts equal the README's "nw" column (tests/test_wrn.py pins them); they include BN and the FC bias.

Module names follow resNet.py (conv1, bn1, layer1..3 of blocks with conv1/bn1/conv2/bn2/downsample.0/1, fc),
so state-dict keys match the authors' checkpoints. Rules should nevertheless read the `role` data below, never
parameter names.

Which layers the LpSS rules leave unconstrained (optimizer/lpcgd.py `LpCGD.weightNormalize` at commit 9c8cbc1;
getting them wrong changes the achievable sparsity and accuracy). Each weight layer carries `role` in ROLES so
a method can apply them:
- role "stem" (the first 3x3 conv): constrained only if it has >= `min_input_channel` = 2 input channels, so it
  is unconstrained on 1-channel inputs (MNIST, Fashion-MNIST) and constrained on RGB. It consumes an entry of
  the per-layer p list either way (an off-by-one would shift every p): see `lpss_p_slots`.
- role "conv" (the 3x3 convs of the blocks): constrained, one p-list entry each, in forward order.
- role "shortcut" (the 1x1 downsample convs): unconstrained (the authors' name filter misses "downsample.0").
- role "fc" (the classifier): unconstrained (`forbid_layers`: the last two named parameters, fc.weight/bias).
- BN weights and biases, and every bias: unconstrained (they are not weight layers here at all).
Sparse methods mask all four roles (as `SparseLpSSOptimizer`, optimizer/sparse_optimizer.py); the roles only
decide the Lp constraint.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DenseLinear, WeightLayer

ROLES = ("stem", "conv", "shortcut", "fc")
STEM_WIDTH = 16   # resNet.py: self.inplanes = 16 whatever the width w

# (kind "conv" | "fc", in_channels, out_channels, kernel_size, stride, index) -> WeightLayer.
# `index` is the layer's position in `weight_layers()` (forward order). A conv must use padding
# kernel_size // 2 and no bias; the fc has a bias and kernel_size = stride = 1. The model sets `role` afterwards.
LayerFactory = Callable[[str, int, int, int, int, int], WeightLayer]


class DenseConv2d(nn.Conv2d, WeightLayer):
    """nn.Conv2d ("same" padding for odd kernels) with the WeightLayer interface; the effective weight is the weight.

    The init lives in reset_parameters (called by nn.Conv2d.__init__), so a masked subclass gets the authors'
    init before it applies its mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)

    def reset_parameters(self) -> None:
        # resNet.py: kaiming_normal_(mode='fan_out', nonlinearity='relu') for every nn.Conv2d, shortcuts included.
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def effective_weight(self) -> torch.Tensor:
        return self.weight

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # Every conv forward of this class and its subclasses (SemiMaskedConv2d) passes here: it records the
        # output's spatial size (shape only, no device sync), which the FLOP count needs (flop_positions).
        out = super()._conv_forward(x, weight, bias)
        self._positions = out.shape[-2] * out.shape[-1]
        return out

    def flop_positions(self) -> int | None:
        return getattr(self, "_positions", None)


def dense_factory(kind: str, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                  index: int) -> WeightLayer:
    if kind == "fc":
        return DenseLinear(in_channels, out_channels, bias=True)
    if kind == "conv":
        return DenseConv2d(in_channels, out_channels, kernel_size, stride=stride)
    raise ValueError(f"layer kind {kind!r} is not one of 'conv', 'fc'")


class _Builder:
    """Calls the factory in forward order, numbering layers and tagging their role."""

    def __init__(self, factory: LayerFactory):
        self.factory = factory
        self.index = 0

    def __call__(self, role: str, n_in: int, n_out: int, kernel: int = 1, stride: int = 1) -> WeightLayer:
        kind = "fc" if role == "fc" else "conv"
        layer = self.factory(kind, n_in, n_out, kernel, stride, self.index)
        if not isinstance(layer, WeightLayer):
            raise TypeError(f"layer_factory returned {type(layer).__name__}, not a WeightLayer (methods/nn/layers.py)")
        layer.role = role
        self.index += 1
        return layer


class BasicBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut, -> ReLU (resNet.py `BasicBlock_cifar`)."""

    def __init__(self, build: _Builder, n_in: int, width: int, stride: int):
        super().__init__()
        self.conv1 = build("conv", n_in, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = build("conv", width, width, 3, 1)
        self.bn2 = nn.BatchNorm2d(width)
        # resNet.py `_make_layer`: a 1x1 conv + BN shortcut exactly where the stride or the width changes.
        self.downsample = None
        if stride != 1 or n_in != width:
            self.downsample = nn.Sequential(build("shortcut", n_in, width, 1, stride), nn.BatchNorm2d(width))

    def weight_layers(self) -> list[WeightLayer]:
        # Forward order of resNet.py's BasicBlock_cifar.forward: conv1, conv2, then downsample(x).
        layers = [self.conv1, self.conv2]
        if self.downsample is not None:
            layers.append(self.downsample[0])
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class WideResNet(nn.Module):
    """CIFAR-style wide ResNet: 16-channel stem, stages of `blocks[i]` BasicBlocks of width (w, 2w, 4w), global
    average pool, FC. `layer_factory` (see LayerFactory) builds every conv and the FC, so a sparse method can
    substitute masked layers; each layer gets `role` in ROLES (module docstring: which roles LpSS constrains)."""

    def __init__(self, input_channels: int, num_classes: int, width: int, blocks: Sequence[int],
                 layer_factory: LayerFactory | None = None):
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"blocks must be three stage depths >= 1, got {list(blocks)}")
        build = _Builder(layer_factory or dense_factory)
        self.input_channels, self.num_classes, self.width = int(input_channels), int(num_classes), int(width)
        self.blocks = tuple(int(b) for b in blocks)
        self.conv1 = build("stem", self.input_channels, STEM_WIDTH, 3, 1)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        n_in = STEM_WIDTH
        stages = []
        for i, depth in enumerate(self.blocks):
            w = self.width * 2 ** i
            stage = []
            for j in range(depth):
                stage.append(BasicBlock(build, n_in, w, stride=2 if i > 0 and j == 0 else 1))
                n_in = w
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = build("fc", n_in, self.num_classes)

    def stages(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
        return self.layer1, self.layer2, self.layer3

    def _block_layers(self) -> Iterator[WeightLayer]:
        for stage in self.stages():
            for block in stage:
                yield from block.weight_layers()

    def weight_layers(self) -> list[WeightLayer]:
        """Every weight layer in forward order: stem, per block conv1, conv2 (, shortcut), fc. Read from the
        modules each time, so a layer replaced after construction is seen."""
        return [self.conv1, *self._block_layers(), self.fc]

    def unit_groups(self) -> list[tuple[list[int], list[int]]]:
        """The hidden units of the network for methods/core/metrics.py, as groups of channels (indices into
        `weight_layers()`): (producers, consumers). A channel of a group is written by the producers (their outputs
        are summed into it) and read by the consumers. Inside a block conv1 feeds conv2 alone; the residual
        stream of a stage is written by the stem or the shortcut and every block's conv2 (identity shortcuts add
        to the same stream), and read by every block's conv1, the next 1x1 shortcut, and finally the fc. An MLP is
        the special case ([i], [i + 1])."""
        index = {id(l): i for i, l in enumerate(self.weight_layers())}
        groups = []
        prod, cons = [index[id(self.conv1)]], []
        for stage in self.stages():
            for block in stage:
                c1, c2 = index[id(block.conv1)], index[id(block.conv2)]
                cons.append(c1)                      # conv1 reads the stream entering the block
                groups.append(([c1], [c2]))
                if block.downsample is None:
                    prod.append(c2)                  # identity shortcut: conv2 adds to the same stream
                else:
                    sc = index[id(block.downsample[0])]
                    cons.append(sc)                  # the shortcut reads the old stream ...
                    groups.append((prod, cons))
                    prod, cons = [c2, sc], []        # ... and with conv2 writes a new one
        groups.append((prod, cons + [index[id(self.fc)]]))
        return sorted(groups, key=lambda g: g[0][0])

    def hidden_weight_layers(self) -> list[WeightLayer]:
        """For each entry of `forward(return_hidden=True)`'s hidden list (a stage's output), the weight layer whose
        rows are its units' last incoming weights: the stage's last conv2 (methods/core/metrics.py `diversity`)."""
        return [stage[-1].conv2 for stage in self.stages()]

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        h = F.relu(self.bn1(self.conv1(x)))
        hidden = []
        for stage in self.stages():
            h = stage(h)
            hidden.append(h)   # [B, C, H, W]: methods/core/metrics.py treats a channel as a unit
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
        return (logits, hidden) if return_hidden else logits


def lpss_constrained(layer: WeightLayer, min_input_channel: int = 2) -> bool:
    """Whether LpSS's LpCGD keeps this layer's rows on the unit Lp sphere (module docstring; lpcgd.py 9c8cbc1)."""
    role = getattr(layer, "role", None)
    if role not in ROLES:
        raise ValueError(f"layer {type(layer).__name__} has role {role!r}, not one of {ROLES}")
    if role in ("shortcut", "fc"):
        return False
    return layer.effective_weight().shape[1] >= min_input_channel


def lpss_p_slots(model: WideResNet) -> list[int | None]:
    """For each weight layer (forward order) its index into the authors' per-layer p list (`net_lp`), None for
    layers that consume no entry (shortcut, fc). The stem always consumes entry 0, even where it stays
    unconstrained (as the authors' `net_lp` indexing); check `lpss_constrained` as well."""
    slots, k = [], 0
    for layer in model.weight_layers():
        if layer.role in ("stem", "conv"):
            slots.append(k)
            k += 1
        else:
            slots.append(None)
    return slots


def p_slot_count(blocks: Sequence[int]) -> int:
    """Entries of the per-layer p list a net consumes (`lpss_p_slots`): the stem and two convs per block."""
    return 1 + 2 * sum(blocks)


def wide_resnet12_cifar(input_channels: int = 3, num_classes: int = 10,
                        layer_factory: LayerFactory | None = None) -> WideResNet:
    """WRN-12-1 (w = 16, blocks [1, 2, 2]): LpSS's MNIST model (170,298 parameters at 1 channel, 10 classes)."""
    return WideResNet(input_channels, num_classes, 16, (1, 2, 2), layer_factory)


def wide_resnet18_cifar(input_channels: int = 3, num_classes: int = 10,
                        layer_factory: LayerFactory | None = None) -> WideResNet:
    """WRN-18-1 (w = 16, blocks [2, 3, 3]): demo.py's Fashion-MNIST model (267,514 at 1 channel, 10 classes)."""
    return WideResNet(input_channels, num_classes, 16, (2, 3, 3), layer_factory)


def wide_resnet22_2_cifar(input_channels: int = 3, num_classes: int = 10,
                          layer_factory: LayerFactory | None = None) -> WideResNet:
    """WRN-22-2 (w = 32, blocks [3, 4, 3]): LpSS's CIFAR-10 model (1,154,074 at 3 channels, 10 classes)."""
    return WideResNet(input_channels, num_classes, 32, (3, 4, 3), layer_factory)


def wide_resnet22_4_cifar(input_channels: int = 3, num_classes: int = 200,
                          layer_factory: LayerFactory | None = None) -> WideResNet:
    """WRN-22-4 (w = 64, blocks [3, 4, 3]): LpSS's Tiny ImageNet model (4,644,120 at 3 channels, 200 classes)."""
    return WideResNet(input_channels, num_classes, 64, (3, 4, 3), layer_factory)


# `model.arch` names (methods/families/lp_sphere.py, methods/families/dense.py) -> (constructor, blocks). The input channels and
# classes come from the dataset, so "wrn12" on MNIST is the README's 170,298-parameter net.
ARCHS: dict[str, tuple[Callable[..., WideResNet], tuple[int, int, int]]] = {
    "wrn12": (wide_resnet12_cifar, (1, 2, 2)),
    "wrn18": (wide_resnet18_cifar, (2, 3, 3)),
    "wrn22_2": (wide_resnet22_2_cifar, (3, 4, 3)),
    "wrn22_4": (wide_resnet22_4_cifar, (3, 4, 3)),
}


def build_wrn(arch: str, dataset: str, input_shape: Sequence[int], num_classes: int,
              layer_factory: LayerFactory | None = None) -> WideResNet:
    """The wide ResNet `arch` for a dataset of image shape [C, H, W]; a one-line error for tabular data."""
    if len(input_shape) != 3:
        raise ValueError(f"model.arch={arch!r} needs image data [C, H, W]; dataset {dataset!r} has input shape "
                         f"{tuple(input_shape)}: use model.arch=mlp")
    make, _ = ARCHS[arch]
    return make(int(input_shape[0]), num_classes, layer_factory)
