"""PolyNet: PolyInception modules on the Inception-ResNet-v2 schema (Zhang et al. 2017, arXiv:1611.05725), built from its spec."""

from __future__ import annotations

import torch
from torch import nn

from smallnets.arch.polynet import Conv, InceptionBlock, Mixed, PolyModule, PolyNetSpec
from smallnets.layers import ClassifierHead, ConvNormAct, SmallNet, init_weights


def conv_norm_act(in_chs: int, conv: Conv) -> ConvNormAct:
    return ConvNormAct(in_chs, conv.out_chs, conv.kernel, conv.stride, padding=conv.padding)


def conv_chain(in_chs: int, convs: tuple[Conv, ...]) -> nn.Sequential:
    layers = []
    for conv in convs:
        layers.append(conv_norm_act(in_chs, conv))
        in_chs = conv.out_chs
    return nn.Sequential(*layers)


class MixedBranches(nn.Module):
    """Parallel conv chains (and a 3x3 max-pool at its place), concatenated. Keys ``branches.<i>.<j>.conv.*``."""

    def __init__(self, mixed: Mixed, in_chs: int):
        super().__init__()
        convs = iter(mixed.branches)
        self.branches = nn.ModuleList()
        for i in range(len(mixed.branches) + (mixed.pool_at is not None)):
            if i == mixed.pool_at:
                self.branches.append(nn.MaxPool2d(3, mixed.pool_stride, padding=1 if mixed.pool_padded else 0))
            else:
                self.branches.append(conv_chain(in_chs, next(convs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class InceptionResidual(nn.Module):
    """One Inception residual block F: branches, concatenation, closing 1x1 conv - BN (no ReLU)."""

    def __init__(self, block: InceptionBlock):
        super().__init__()
        self.branches = nn.ModuleList(conv_chain(block.chs, branch) for branch in block.branches)
        self.up = ConvNormAct(block.concat_chs, block.chs, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.cat([branch(x) for branch in self.branches], 1))


class Blocks(nn.ModuleList):
    """``order`` independent blocks; ``blocks(x, k)`` is the k-th (mpoly-N, N-way). Keys ``<k>.*``."""

    def __init__(self, block: InceptionBlock, order: int):
        super().__init__(InceptionResidual(block) for _ in range(order))

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self[k](x)


class SharedConvNormAct(nn.Module):
    """One conv serving ``uses`` applications, each with its own BN, then ReLU. Keys ``conv.*``, ``bns.<k>.*``."""

    def __init__(self, in_chs: int, conv: Conv, uses: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, conv.out_chs, conv.kernel, conv.stride, conv.padding, bias=False)
        self.bns = nn.ModuleList(nn.BatchNorm2d(conv.out_chs) for _ in range(uses))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.act(self.bns[k](self.conv(x)))


class SharedBlock(nn.Module):
    """poly-N's one block F applied ``order`` times: the branch convs are shared, each application has
    its own BNs and its own closing 1x1 conv - BN (the authors' release). ``block(x, k)`` is the k-th
    application. Keys ``branches.<i>.<j>.conv.*`` / ``.bns.<k>.*``, ``ups.<k>.*``."""

    def __init__(self, block: InceptionBlock, order: int):
        super().__init__()
        self.branches = nn.ModuleList()
        for branch in block.branches:
            chain, in_chs = nn.ModuleList(), block.chs
            for conv in branch:
                chain.append(SharedConvNormAct(in_chs, conv, order))
                in_chs = conv.out_chs
            self.branches.append(chain)
        self.ups = nn.ModuleList(ConvNormAct(block.concat_chs, block.chs, 1, act=None) for _ in range(order))

    def branch(self, chain: nn.ModuleList, x: torch.Tensor, k: int) -> torch.Tensor:
        for layer in chain:
            x = layer(x, k)
        return x

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.ups[k](torch.cat([self.branch(chain, x, k) for chain in self.branches], 1))


class PolyInceptionWay(nn.Module):
    """N-way: ``ReLU(x + s·F1(x) + ... + s·FN(x))`` with N independent blocks (1-way: an Inception-ResNet unit)."""

    def __init__(self, module: PolyModule):
        super().__init__()
        self.order, self.scale = module.order, module.scale
        self.blocks = Blocks(module.block, module.order)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for k in range(self.order):
            out = out + self.scale * self.blocks(x, k)
        return self.act(out)

    def extra_repr(self) -> str:
        return f"order={self.order}, scale={self.scale}"


class PolyInceptionChain(nn.Module):
    """poly-N and mpoly-N: ``ReLU(x + s·h1 + ... + s·hN)``, ``h1 = F1(x)``, ``hk = Fk(ReLU(h(k-1)))``;
    the Fk are one shared block's applications (poly) or independent blocks (mpoly)."""

    def __init__(self, module: PolyModule):
        super().__init__()
        self.order, self.scale = module.order, module.scale
        self.blocks = SharedBlock(module.block, module.order) if module.kind == "poly" else Blocks(module.block, module.order)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = x, x
        for k in range(self.order):
            h = self.blocks(h, k)
            out = out + self.scale * h
            h = self.act(h)
        return self.act(out)

    def extra_repr(self) -> str:
        return f"order={self.order}, scale={self.scale}"


def poly_module(module: PolyModule) -> nn.Module:
    return PolyInceptionWay(module) if module.kind == "way" else PolyInceptionChain(module)


class PolyNet(SmallNet):
    """Stem (3 convs, 3 mixes), stages A, B, C (B and C opened by their reductions), GAP, dropout, FC.

    Module for module the authors' released Very Deep PolyNet, as the spec describes it; the neck is empty.
    """

    def __init__(self, spec: PolyNetSpec):
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential()
        in_chs = spec.in_chans
        for i, conv in enumerate(spec.stem):
            self.stem.add_module(f"conv{i + 1}", conv_norm_act(in_chs, conv))
            in_chs = conv.out_chs
        for i, mixed in enumerate(spec.stem_mixed):
            self.stem.add_module(f"mixed{i + 1}", MixedBranches(mixed, in_chs))
            in_chs = mixed.out_chs(in_chs)

        self.stages = nn.Sequential()
        for stage, chs in zip(spec.stages, spec.stage_chs):
            seq = nn.Sequential()
            if stage.reduction is not None:
                seq.add_module("reduction", MixedBranches(stage.reduction, in_chs))
            for j, module in enumerate(stage.modules):
                seq.add_module(str(j), poly_module(module))
            self.stages.add_module(stage.name, seq)
            in_chs = chs

        self.neck = nn.Identity()
        self.num_features = spec.num_features
        self.classifier = ClassifierHead(self.num_features, spec.num_classes, spec.drop_rate)
        init_weights(self)
