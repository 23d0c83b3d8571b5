"""GoogLeNet (Szegedy et al. 2015, arXiv:1409.4842) and Inception v3 (Szegedy et al. 2016, arXiv:1512.00567)
as specs: GoogLeNet's Table 1 and Inception v3's modules with every branch's widths explicit, the
knobs, and the published figures. Layer for layer torchvision's ``googlenet`` and ``inception_v3``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from smallnets._checks import check_bool, check_positive, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stride

GOOGLENET_PAPER = "Szegedy et al. 2015, Going Deeper with Convolutions, arXiv:1409.4842"
INCEPTION_V3_PAPER = "Szegedy et al. 2016, Rethinking the Inception Architecture for Computer Vision, arXiv:1512.00567"

POOLS = ("max", "avg")
BN_EPS = 1e-3  # torchvision's BasicConv2d (both networks): conv without bias - BN(eps 0.001) - ReLU


# ------------------------------------------------------------------------------------------------
# Layers: one conv - BN - ReLU, one pooling. Stems are written with them; every module's branches
# are derived as them (``branches()``), so one model class builds any module.


def _pair(where: str, name: str, value: object, minimum: int) -> None:
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)):
        raise ValueError(f"{where}: {name} must be two integers >= {minimum} (height, width), got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Conv:
    """Conv (``kernel`` = (height, width), at ``stride``, zero ``padding`` (height, width)) - BN - ReLU to ``out_chs``."""

    out_chs: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)  # the reference's convs are unpadded unless stated ("valid")

    def __post_init__(self) -> None:
        where = f"Conv(out_chs={self.out_chs!r}, kernel={self.kernel!r})"
        check_channels(where, out_chs=self.out_chs)
        _pair(where, "kernel", self.kernel, 1)
        check_stride(where, self.stride)
        _pair(where, "padding", self.padding, 0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"{where}: padding must be at most half the kernel on each side, got padding {self.padding} for kernel {self.kernel}")


def conv(out_chs: int, kernel: int = 1, stride: int = 1, padding: int = 0) -> Conv:
    """A square :class:`Conv`: ``kernel`` x ``kernel``, ``padding`` on every side."""
    return Conv(out_chs=out_chs, kernel=(kernel, kernel), stride=stride, padding=(padding, padding))


def _1xn(out_chs: int, n: int) -> Conv:
    """A 1 x n conv keeping the side (Figures 6 and 7's factorised convs)."""
    return Conv(out_chs=out_chs, kernel=(1, n), padding=(0, n // 2))


def _nx1(out_chs: int, n: int) -> Conv:
    return Conv(out_chs=out_chs, kernel=(n, 1), padding=(n // 2, 0))


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A ``kind`` ("max" or "avg") pooling, ``kernel`` x ``kernel`` at ``stride`` with zero ``padding``.

    ``ceil_mode``: the output side rounds up (Caffe's rule, kept by torchvision's GoogLeNet: 112 -> 56,
    where rounding down gives 55). Average pools count the padding (PyTorch's default)."""

    kind: str = "max"
    kernel: int = 3
    stride: int = 2
    padding: int = 0
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        where = f"Pool(kind={self.kind!r}, kernel={self.kernel!r})"
        if self.kind not in POOLS:
            raise ValueError(f"{where}: kind must be one of {', '.join(map(repr, POOLS))}; got {self.kind!r}")
        check_channels(where, kernel=self.kernel)
        check_stride(where, self.stride)
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or not 0 <= self.padding <= self.kernel // 2:
            raise ValueError(f"{where}: padding must be an integer in [0, kernel // 2 = {self.kernel // 2}], got {self.padding!r}")
        if not isinstance(self.ceil_mode, bool):
            raise ValueError(f"{where}: ceil_mode must be True or False, got {self.ceil_mode!r}")


@dataclass(frozen=True)
class Branch:
    """One path of a module: ``layers`` in order, then ``split`` (parallel convs on the last output,
    concatenated: Figure 7's 1x3 / 3x1 pair). Derived from a module spec, never stored in one."""

    name: str
    layers: tuple[Conv | Pool, ...]
    split: tuple[Conv, ...] = ()

    def out_chs(self, in_chs: int) -> int:
        if self.split:
            return sum(c.out_chs for c in self.split)
        convs = [layer for layer in self.layers if isinstance(layer, Conv)]
        return convs[-1].out_chs if convs else in_chs  # a pooling-only branch passes its input's channels


def _widths(where: str, block: object) -> None:
    check_channels(where, **{f.name: getattr(block, f.name) for f in dataclasses.fields(block) if f.name not in ("kernel5", "padding")})


def _reduction_padding(where: str, padding: object) -> None:
    if padding not in (0, 1) or isinstance(padding, bool):
        raise ValueError(f"{where}: padding must be 0 (the reference's unpadded reduction) or 1 (halves the side exactly), got {padding!r}")


# ------------------------------------------------------------------------------------------------
# GoogLeNet: Figure 2(b) modules with Table 1's widths


@dataclass(frozen=True, kw_only=True)
class InceptionModule:
    """GoogLeNet's module (Figure 2(b)), its Table 1 columns: 1x1; 1x1 reduce - 3x3; 1x1 reduce - "5x5";
    3x3/1 max-pool - 1x1 projection; concatenated.

    ``kernel5``: the "5x5" branch's kernel. The paper has 5; torchvision's ``googlenet`` has 3 there (a
    known deviation, kept because its published weights were trained with it), so 3 is the default here."""

    conv1x1: int  # "#1x1"
    reduce3x3: int  # "#3x3 reduce"
    conv3x3: int  # "#3x3"
    reduce5x5: int  # "#5x5 reduce"
    conv5x5: int  # "#5x5"
    pool_proj: int  # "pool proj"
    kernel5: int = 3

    def __post_init__(self) -> None:
        where = f"InceptionModule(conv1x1={self.conv1x1!r}, conv3x3={self.conv3x3!r}, conv5x5={self.conv5x5!r})"
        _widths(where, self)
        if self.kernel5 not in (3, 5) or isinstance(self.kernel5, bool):
            raise ValueError(f"{where}: kernel5 must be 3 (torchvision's layout) or 5 (the paper's), got {self.kernel5!r}")

    def branches(self) -> tuple[Branch, ...]:
        k = self.kernel5
        return (
            Branch("branch1", (conv(self.conv1x1),)),
            Branch("branch2", (conv(self.reduce3x3), conv(self.conv3x3, 3, padding=1))),
            Branch("branch3", (conv(self.reduce5x5), conv(self.conv5x5, k, padding=k // 2))),
            Branch("branch4", (Pool(kind="max", stride=1, padding=1, ceil_mode=True), conv(self.pool_proj))),  # as torchvision
        )


# ------------------------------------------------------------------------------------------------
# Inception v3: the reference's modules (torchvision's InceptionA ... InceptionE, after TF-slim)


@dataclass(frozen=True, kw_only=True)
class InceptionA:
    """35x35 module (Figure 5; the reference keeps a 1x1 - 5x5 branch beside the two-3x3 one): 1x1;
    1x1 - 5x5; 1x1 - 3x3 - 3x3; 3x3/1 average pool - 1x1; concatenated."""

    conv1x1: int = 64
    reduce5x5: int = 48
    conv5x5: int = 64
    reduce3x3dbl: int = 64
    conv3x3dbl: int = 96  # both 3x3 convs
    pool_proj: int

    def __post_init__(self) -> None:
        _widths(f"InceptionA(pool_proj={self.pool_proj!r})", self)

    def branches(self) -> tuple[Branch, ...]:
        return (
            Branch("branch1x1", (conv(self.conv1x1),)),
            Branch("branch5x5", (conv(self.reduce5x5), conv(self.conv5x5, 5, padding=2))),
            Branch("branch3x3dbl", (conv(self.reduce3x3dbl), conv(self.conv3x3dbl, 3, padding=1), conv(self.conv3x3dbl, 3, padding=1))),
            Branch("branch_pool", (Pool(kind="avg", stride=1, padding=1), conv(self.pool_proj))),
        )


@dataclass(frozen=True, kw_only=True)
class InceptionB:
    """Grid reduction 35 -> 17 (Figure 10): 3x3/2; 1x1 - 3x3 - 3x3/2; 3x3/2 max-pool; concatenated.
    ``padding`` of the stride-2 layers: 0 in the reference (35 -> 17), 1 halves the side (16 -> 8)."""

    conv3x3: int = 384
    reduce3x3dbl: int = 64
    conv3x3dbl: int = 96  # both 3x3 convs
    padding: int = 0

    def __post_init__(self) -> None:
        where = f"InceptionB(conv3x3={self.conv3x3!r})"
        _widths(where, self)
        _reduction_padding(where, self.padding)

    def branches(self) -> tuple[Branch, ...]:
        p = self.padding
        return (
            Branch("branch3x3", (conv(self.conv3x3, 3, 2, p),)),
            Branch("branch3x3dbl", (conv(self.reduce3x3dbl), conv(self.conv3x3dbl, 3, padding=1), conv(self.conv3x3dbl, 3, 2, p))),
            Branch("branch_pool", (Pool(kind="max", padding=p),)),
        )


@dataclass(frozen=True, kw_only=True)
class InceptionC:
    """17x17 module (Figure 6, n = 7): 1x1; 1x1 - 1x7 - 7x1; 1x1 - 7x1 - 1x7 - 7x1 - 1x7; 3x3/1 average
    pool - 1x1; concatenated. ``reduce7x7`` is the width of every conv inside both 7x7 branches but
    their last (torchvision's ``channels_7x7``)."""

    conv1x1: int = 192
    reduce7x7: int
    conv7x7: int = 192
    conv7x7dbl: int = 192
    pool_proj: int = 192

    def __post_init__(self) -> None:
        _widths(f"InceptionC(reduce7x7={self.reduce7x7!r})", self)

    def branches(self) -> tuple[Branch, ...]:
        c7 = self.reduce7x7
        return (
            Branch("branch1x1", (conv(self.conv1x1),)),
            Branch("branch7x7", (conv(c7), _1xn(c7, 7), _nx1(self.conv7x7, 7))),
            Branch("branch7x7dbl", (conv(c7), _nx1(c7, 7), _1xn(c7, 7), _nx1(c7, 7), _1xn(self.conv7x7dbl, 7))),
            Branch("branch_pool", (Pool(kind="avg", stride=1, padding=1), conv(self.pool_proj))),
        )


@dataclass(frozen=True, kw_only=True)
class InceptionD:
    """Grid reduction 17 -> 8 (Figure 10): 1x1 - 3x3/2; 1x1 - 1x7 - 7x1 - 3x3/2; 3x3/2 max-pool;
    concatenated. ``padding`` of the stride-2 layers as in :class:`InceptionB`."""

    reduce3x3: int = 192
    conv3x3: int = 320
    reduce7x7x3: int = 192
    conv7x7x3: int = 192  # the 1x7, 7x1 and 3x3/2 convs
    padding: int = 0

    def __post_init__(self) -> None:
        where = f"InceptionD(conv3x3={self.conv3x3!r})"
        _widths(where, self)
        _reduction_padding(where, self.padding)

    def branches(self) -> tuple[Branch, ...]:
        p, c = self.padding, self.conv7x7x3
        return (
            Branch("branch3x3", (conv(self.reduce3x3), conv(self.conv3x3, 3, 2, p))),
            Branch("branch7x7x3", (conv(self.reduce7x7x3), _1xn(c, 7), _nx1(c, 7), conv(c, 3, 2, p))),
            Branch("branch_pool", (Pool(kind="max", padding=p),)),
        )


@dataclass(frozen=True, kw_only=True)
class InceptionE:
    """8x8 module with expanded filter banks (Figure 7): 1x1; 1x1 - [1x3, 3x1]; 1x1 - 3x3 - [1x3, 3x1];
    3x3/1 average pool - 1x1; concatenated (each [1x3, 3x1] pair side by side: 2 x its width)."""

    conv1x1: int = 320
    reduce3x3: int = 384
    conv3x3: int = 384  # each of the 1x3 and 3x1 convs
    reduce3x3dbl: int = 448
    conv3x3dbl: int = 384  # the 3x3 conv and each of the 1x3 and 3x1 convs after it
    pool_proj: int = 192

    def __post_init__(self) -> None:
        _widths(f"InceptionE(conv1x1={self.conv1x1!r})", self)

    def branches(self) -> tuple[Branch, ...]:
        return (
            Branch("branch1x1", (conv(self.conv1x1),)),
            Branch("branch3x3", (conv(self.reduce3x3),), split=(_1xn(self.conv3x3, 3), _nx1(self.conv3x3, 3))),
            Branch("branch3x3dbl", (conv(self.reduce3x3dbl), conv(self.conv3x3dbl, 3, padding=1)),
                   split=(_1xn(self.conv3x3dbl, 3), _nx1(self.conv3x3dbl, 3))),
            Branch("branch_pool", (Pool(kind="avg", stride=1, padding=1), conv(self.pool_proj))),
        )


Module = InceptionModule | InceptionA | InceptionB | InceptionC | InceptionD | InceptionE


def module_out_chs(block: Module, in_chs: int) -> int:
    """Channels a module puts out for ``in_chs`` in: the sum of its branches'."""
    return sum(branch.out_chs(in_chs) for branch in block.branches())


# ------------------------------------------------------------------------------------------------
# Stages and the specs


@dataclass(frozen=True, kw_only=True)
class InceptionStage:
    """A named stage (``inception4``, ``mixed6``): the max-pool that opens it (None: the stem or its
    first module reduces), then its modules, labelled from ``first`` on (4a ... 4e; Inception v3's
    reference names its 35x35 modules 5b, 5c, 5d)."""

    name: str
    pool: Pool | None = None
    blocks: tuple[Module, ...]
    first: str = "a"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"InceptionStage: name must be an identifier (its key in the state dict), got {self.name!r}")
        where = f"InceptionStage {self.name!r}"
        if self.pool is not None and not isinstance(self.pool, Pool):
            raise ValueError(f"{where}: pool must be a Pool or None, got {self.pool!r:.80}")
        if not isinstance(self.blocks, tuple) or not self.blocks:
            raise ValueError(f"{where}: blocks must be a non-empty list of modules, got {self.blocks!r:.80}")
        for j, block in enumerate(self.blocks):
            if not isinstance(block, Module):
                raise ValueError(f"{where}: blocks[{j}] must be an inception module ({', '.join(t.__name__ for t in Module.__args__)}), got {block!r:.80}")
        if not (isinstance(self.first, str) and len(self.first) == 1 and "a" <= self.first <= "z" and ord(self.first) + len(self.blocks) - 1 <= ord("z")):
            raise ValueError(f"{where}: first must be a letter a-z leaving a letter for each of its {len(self.blocks)} modules, got {self.first!r}")

    @property
    def labels(self) -> tuple[str, ...]:
        """The modules' names: ``first``, the next letter, ..."""
        return tuple(chr(ord(self.first) + j) for j in range(len(self.blocks)))


@dataclass(frozen=True, kw_only=True)
class _InceptionSpec(ArchSpec):
    """Stem (convs - BN - ReLU and max-pools), stages of modules (each module's branches concatenated;
    a module's input is the previous output), no neck, GAP, dropout, FC."""

    stem: tuple[Conv | Pool, ...]
    stages: tuple[InceptionStage, ...]
    drop_rate: float = 0.2  # dropout before the classifier
    bn_eps: float = BN_EPS

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        check_positive("bn_eps", self.bn_eps)
        if not isinstance(self.stem, tuple) or not any(isinstance(layer, Conv) for layer in self.stem) or not all(isinstance(layer, (Conv, Pool)) for layer in self.stem):
            raise ValueError(f"{name}: stem must be a list of Conv and Pool layers with at least one Conv, got {self.stem!r:.80}")
        if not isinstance(self.stages, tuple) or not self.stages or not all(isinstance(s, InceptionStage) for s in self.stages):
            raise ValueError(f"{name}: stages must be a non-empty list of InceptionStage, got {self.stages!r:.80}")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: stage names must be unique, got {names}")

    @property
    def stem_chs(self) -> int:
        return [layer for layer in self.stem if isinstance(layer, Conv)][-1].out_chs

    @property
    def blocks(self) -> tuple[Module, ...]:
        return tuple(b for stage in self.stages for b in stage.blocks)

    @property
    def num_features(self) -> int:
        chs = self.stem_chs
        for block in self.blocks:
            chs = module_out_chs(block, chs)
        return chs


# GoogLeNet, Table 1 (sides at 224 input). torchvision's pools round up (ceil_mode) and its last one
# is 2x2/2 where the table has 3x3/2 (both give 14 -> 7); it has no local response normalisation.
GOOGLENET_STEM = (
    conv(64, 7, stride=2, padding=3),  # "convolution 7x7/2": 224 -> 112
    Pool(ceil_mode=True),  # "max pool 3x3/2": 112 -> 56
    conv(64),  # "convolution 3x3/1" row: its #3x3 reduce, 64
    conv(192, 3, padding=1),  # ... and its 3x3, 192
    Pool(ceil_mode=True),  # "max pool 3x3/2": 56 -> 28
)
GOOGLENET_TABLE = (  # InceptionModule(#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
    InceptionStage(name="inception3", blocks=(  # 28 x 28
        InceptionModule(conv1x1=64, reduce3x3=96, conv3x3=128, reduce5x5=16, conv5x5=32, pool_proj=32),  # 3a: 256
        InceptionModule(conv1x1=128, reduce3x3=128, conv3x3=192, reduce5x5=32, conv5x5=96, pool_proj=64),  # 3b: 480
    )),
    InceptionStage(name="inception4", pool=Pool(ceil_mode=True), blocks=(  # 28 -> 14
        InceptionModule(conv1x1=192, reduce3x3=96, conv3x3=208, reduce5x5=16, conv5x5=48, pool_proj=64),  # 4a: 512
        InceptionModule(conv1x1=160, reduce3x3=112, conv3x3=224, reduce5x5=24, conv5x5=64, pool_proj=64),  # 4b: 512
        InceptionModule(conv1x1=128, reduce3x3=128, conv3x3=256, reduce5x5=24, conv5x5=64, pool_proj=64),  # 4c: 512
        InceptionModule(conv1x1=112, reduce3x3=144, conv3x3=288, reduce5x5=32, conv5x5=64, pool_proj=64),  # 4d: 528
        InceptionModule(conv1x1=256, reduce3x3=160, conv3x3=320, reduce5x5=32, conv5x5=128, pool_proj=128),  # 4e: 832
    )),
    InceptionStage(name="inception5", pool=Pool(kernel=2, ceil_mode=True), blocks=(  # 14 -> 7
        InceptionModule(conv1x1=256, reduce3x3=160, conv3x3=320, reduce5x5=32, conv5x5=128, pool_proj=128),  # 5a: 832
        InceptionModule(conv1x1=384, reduce3x3=192, conv3x3=384, reduce5x5=48, conv5x5=128, pool_proj=128),  # 5b: 1024
    )),
)  # fmt: skip

# Inception v3 at 299 px, the reference implementation (TF-slim, torchvision): its stem differs from the
# paper's Table 1 after the first max-pool (a 1x1 to 80 and an unpadded 3x3 to 192, then a second max-pool).
INCEPTION_V3_STEM = (
    conv(32, 3, stride=2),  # 299 -> 149
    conv(32, 3),  # 149 -> 147
    conv(64, 3, padding=1),  # 147 -> 147
    Pool(),  # 147 -> 73
    conv(80),  # 73 -> 73
    conv(192, 3),  # 73 -> 71
    Pool(),  # 71 -> 35
)
INCEPTION_V3_TABLE = (
    InceptionStage(name="mixed5", first="b", blocks=(InceptionA(pool_proj=32), InceptionA(pool_proj=64), InceptionA(pool_proj=64))),  # 35: 256, 288, 288
    InceptionStage(name="mixed6", blocks=(  # 35 -> 17: 768
        InceptionB(),
        InceptionC(reduce7x7=128), InceptionC(reduce7x7=160), InceptionC(reduce7x7=160), InceptionC(reduce7x7=192),
    )),
    InceptionStage(name="mixed7", blocks=(InceptionD(), InceptionE(), InceptionE())),  # 17 -> 8: 1280, 2048, 2048
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class GoogLeNetSpec(_InceptionSpec):
    family = "googlenet"
    drop_rate: float = 0.2  # torchvision's; the paper: dropout 40% before the linear layer


@dataclass(frozen=True, kw_only=True)
class InceptionV3Spec(_InceptionSpec):
    family = "inception_v3"
    resolution: int = 299
    drop_rate: float = 0.5


def _cifar_stem(stem: tuple[Conv | Pool, ...]) -> tuple[Conv | Pool, ...]:
    """The small-input stem: the first conv 3x3/1, the other convs at stride 1, all padded to keep the
    side; the max-pools dropped but the last, padded to halve the side exactly: 32 -> 32 -> 16."""
    last_pool = max(i for i, layer in enumerate(stem) if isinstance(layer, Pool))
    first_conv = min(i for i, layer in enumerate(stem) if isinstance(layer, Conv))
    out: list[Conv | Pool] = []
    for i, layer in enumerate(stem):
        if isinstance(layer, Conv):
            kernel = (3, 3) if i == first_conv else layer.kernel
            out.append(dataclasses.replace(layer, kernel=kernel, stride=1, padding=tuple(k // 2 for k in kernel)))
        elif i == last_pool:
            out.append(Pool(kind=layer.kind, kernel=3, stride=2, padding=1))
    return tuple(out)


def googlenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    drop_rate: float = 0.2,
    paper_5x5: bool = False,
    cifar: bool = False,
) -> GoogLeNetSpec:
    """GoogLeNet at 224x224, layer for layer torchvision's ``googlenet`` without its auxiliary classifiers
    (BN after every conv, as torchvision's; the paper predates BN). ``drop_rate``: dropout before the
    classifier (torchvision 0.2; the paper 0.4). ``paper_5x5``: the paper's 5x5 convs in the third branch
    (torchvision's layout and checkpoint have 3x3). ``cifar``: conv1 3x3/1 and no first max-pool, so a
    32 px input reaches the modules at 16 px (32 -> 32 -> 16 -> 8 -> 4)."""
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("paper_5x5", paper_5x5)
    check_bool("cifar", cifar)
    stages = GOOGLENET_TABLE
    if paper_5x5:
        stages = tuple(dataclasses.replace(s, blocks=tuple(dataclasses.replace(b, kernel5=5) for b in s.blocks)) for s in stages)
    stem = _cifar_stem(GOOGLENET_STEM) if cifar else GOOGLENET_STEM
    return GoogLeNetSpec(num_classes=num_classes, in_chans=in_chans, stem=stem, stages=stages, drop_rate=drop_rate,
                         resolution=32 if cifar else 224)  # fmt: skip


def inception_v3(num_classes: int = 1000, in_chans: int = 3, *, drop_rate: float = 0.5, cifar: bool = False) -> InceptionV3Spec:
    """Inception v3 at 299x299, layer for layer torchvision's ``inception_v3`` without its auxiliary
    classifier. ``drop_rate``: dropout before the classifier (0.5, as torchvision and TF-slim).
    ``cifar``: the stem convs at stride 1 and padded, one max-pool (padded), and the two grid
    reductions padded, so a 32 px input runs 32 -> 16 (35x35 modules) -> 8 -> 4."""
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    stages, stem = INCEPTION_V3_TABLE, INCEPTION_V3_STEM
    if cifar:
        stem = _cifar_stem(stem)
        reductions = (InceptionB, InceptionD)
        stages = tuple(dataclasses.replace(s, blocks=tuple(dataclasses.replace(b, padding=1) if isinstance(b, reductions) else b for b in s.blocks))
                       for s in stages)  # fmt: skip
    return InceptionV3Spec(num_classes=num_classes, in_chans=in_chans, stem=stem, stages=stages, drop_rate=drop_rate,
                           resolution=32 if cifar else 299)  # fmt: skip


# Published single-crop top-1 of the weights torchvision:googlenet / torchvision:inception_v3 load. The
# GoogLeNet paper reports top-5 only (6.67% error for its 7-model, 144-crop ILSVRC 2014 entry; 10.07% for
# one model, one crop, Table 3); Inception v3's Table 3 ends at 21.2% top-1 / 5.6% top-5 error, single crop.
ENTRIES = (
    Entry(
        name="googlenet",
        family="googlenet",
        paper=GOOGLENET_PAPER,
        spec=googlenet,
        input_size=(3, 224, 224),
        published=(Published(top1=69.778, source="torchvision model card, googlenet IMAGENET1K_V1 (224 crop of a 256 resize)"),),
        representative=True,
        baseline=True,
    ),
    Entry(
        name="inception_v3",
        family="inception_v3",
        paper=INCEPTION_V3_PAPER,
        spec=inception_v3,
        input_size=(3, 299, 299),
        published=(Published(top1=77.294, source="torchvision model card, inception_v3 IMAGENET1K_V1 (299 crop of a 342 resize)"),),
        representative=True,
        baseline=True,
    ),
)

__all__ = [
    "GOOGLENET_STEM", "GOOGLENET_TABLE", "INCEPTION_V3_STEM", "INCEPTION_V3_TABLE", "Branch", "Conv", "GoogLeNetSpec",
    "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionModule", "InceptionStage",
    "InceptionV3Spec", "Module", "Pool", "conv", "googlenet", "inception_v3", "module_out_chs",
]  # fmt: skip
