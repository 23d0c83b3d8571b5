"""PolyNet (Zhang, Li, Loy & Lin 2017, arXiv:1611.05725) as a spec: the Inception-ResNet stem and
reductions, PolyInception modules in three stages, and the Very Deep PolyNet's "10-20-10 mix".

The paper defines the modules as polynomials of an Inception residual block F (Section 3):
poly-2 ``I + F + F·F`` (one F, applied twice), mpoly-2 ``I + F + G·F`` (two blocks, chained),
2-way ``I + F + G`` (two blocks side by side), and their third-order forms poly-3, mpoly-3, 3-way.
It names the Very Deep PolyNet's mix (Section 5: 10 2-way modules in stage A; 10 poly-3 and 10
2-way, interleaved, in stage B; 5 poly-3 and 5 2-way, interleaved, in stage C) but leaves the
rest to its Inception-ResNet-v2 schema (Figure 5, "adapted from" Szegedy et al. 2017). What the
paper leaves open is taken from the authors' released model (github.com/open-mmlab/polynet,
Caffe deploy files, as ported layer for layer by Cadene's pretrainedmodels ``polynet``):

- Widths. The stem is Inception-v4's (Szegedy et al. 2017 Figure 3: 384 channels out); blocks A,
  B and C have Inception-ResNet-v2's branch widths; the stages are 384, 1152 and 2048 channels
  wide and reduction B is 256-256-256 / 256-256 / 256-384 plus the max-pool (the release's; the
  Inception-ResNet-v2 paper's are 1154 / 2048 with other reduction-B widths).
- Where BN goes. Every conv is conv (no bias) - BN - ReLU, except each block's closing 1x1 conv,
  conv - BN with no ReLU (Inception-ResNet-v2 has a biased linear 1x1 there). A module adds its
  paths to the identity and applies one ReLU to the sum.
- What poly-N shares. One block's branch convolutions serve all N applications; each application
  has its own BatchNorms and its own closing 1x1 conv + BN (the release). The k-th application
  takes the ReLU of the (k-1)-th one's output; mpoly-N chains N independent blocks the same way
  (not in the release: the same reading of the paper's ``G·F``).
- Residual scaling. Every path of a module but the identity is multiplied by one factor; the
  release's factors fall linearly from 1 at the first module of stage A to 0.7 at the last of
  stage C (40 modules, printed to 6 decimals: 1, 0.992308, ..., 0.7). ``scale_last`` sets the end.
- Head. Global average pooling (the release's 9x9 average pool at 331 px), dropout 0.2 (the
  release's; Inception-ResNet-v2's keep probability 0.8), a linear layer from 2048 features.
- Input. 331 px, the release's and the paper's single-crop evaluation size: stages A, B, C see
  39x39, 19x19 and 9x9 maps (35, 17, 8 at Figure 5's 299 px). The smallest input that runs is 75 px.

Training strategies of Section 5 (initialisation by insertion, stochastic paths) are not part of
the architecture and are not reproduced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from smallnets._checks import check_bool, check_choice, check_int, check_range
from smallnets.arch.spec import ArchSpec, Entry, Published, check_channels, check_stride

PAPER = "Zhang, Li, Loy & Lin 2017, PolyNet: A Pursuit of Structural Diversity in Very Deep Networks, arXiv:1611.05725"

KINDS = ("poly", "mpoly", "way")  # one block applied N times / N blocks chained / N blocks side by side
MODULE_TYPES = {  # the paper's module names -> (kind, order)
    "ir": ("way", 1),  # a plain Inception-ResNet unit, I + F
    "poly-2": ("poly", 2),
    "poly-3": ("poly", 3),
    "mpoly-2": ("mpoly", 2),
    "mpoly-3": ("mpoly", 3),
    "2-way": ("way", 2),
    "3-way": ("way", 3),
}


def _side(side: int, kernel: int, stride: int, pad: int) -> int:
    return (side + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True, kw_only=True)
class Conv:
    """conv (no bias) - BN - ReLU to ``out_chs``: ``kernel`` (height, width) at ``stride``; ``padded``
    pads kernel // 2 on each side ("same" at stride 1), else nothing ("valid")."""

    out_chs: int
    kernel: tuple[int, int] = (1, 1)  # (height, width)
    stride: int = 1
    padded: bool = True

    def __post_init__(self) -> None:
        where = f"Conv(out_chs={self.out_chs!r}, kernel={self.kernel!r})"
        check_channels(where, out_chs=self.out_chs)
        k = self.kernel
        if not isinstance(k, tuple) or len(k) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in k):
            raise ValueError(f"{where}: kernel must be (height, width), two integers >= 1, got {k!r}")
        check_stride(where, self.stride)
        if not isinstance(self.padded, bool):
            raise ValueError(f"{where}: padded must be True or False, got {self.padded!r}")
        if self.padded and not all(v % 2 for v in k):
            raise ValueError(f"{where}: a padded conv needs odd kernel sides, got {k!r}")

    @property
    def padding(self) -> tuple[int, int]:
        return (self.kernel[0] // 2, self.kernel[1] // 2) if self.padded else (0, 0)

    def out_side(self, h: int, w: int) -> tuple[int, int]:
        return _side(h, self.kernel[0], self.stride, self.padding[0]), _side(w, self.kernel[1], self.stride, self.padding[1])


def _chain_side(convs: tuple[Conv, ...], h: int, w: int) -> tuple[int, int]:
    for conv in convs:
        h, w = conv.out_side(h, w)
    return h, w


def _check_convs(where: str, convs: object) -> None:
    if not isinstance(convs, tuple) or not convs or not all(isinstance(c, Conv) for c in convs):
        raise ValueError(f"{where} must be a non-empty list of Conv, got {convs!r:.80}")


@dataclass(frozen=True, kw_only=True)
class Mixed:
    """Parallel branches concatenated in order: chains of convs and, at output position ``pool_at``
    (None: no pool), a 3x3 max-pool at ``pool_stride`` (padded by 1 if ``pool_padded``) that passes
    its input's channels through. Every branch must give the same map size."""

    branches: tuple[tuple[Conv, ...], ...]
    pool_at: int | None = None
    pool_stride: int = 2
    pool_padded: bool = False

    def __post_init__(self) -> None:
        where = "Mixed"
        if not isinstance(self.branches, tuple) or not self.branches:
            raise ValueError(f"{where}: branches must be a non-empty list of conv lists, got {self.branches!r:.80}")
        for i, branch in enumerate(self.branches):
            _check_convs(f"{where}: branches[{i}]", branch)
        if self.pool_at is not None:
            check_int("Mixed: pool_at", self.pool_at, 0)
            if self.pool_at > len(self.branches):
                raise ValueError(f"{where}: pool_at must be at most the {len(self.branches)} conv branches, got {self.pool_at}")
        check_stride(where, self.pool_stride)
        if not isinstance(self.pool_padded, bool):
            raise ValueError(f"{where}: pool_padded must be True or False, got {self.pool_padded!r}")
        for side in range(17, 25):  # every branch (and the pool) must agree on the output size, odd and even inputs
            sides = {_chain_side(b, side, side) for b in self.branches}
            if self.pool_at is not None:
                pooled = _side(side, 3, self.pool_stride, 1 if self.pool_padded else 0)
                sides.add((pooled, pooled))
            if len(sides) > 1:
                raise ValueError(f"{where}: every branch must give the same map size, got {sorted(sides)} from a {side}x{side} input")

    def out_chs(self, in_chs: int) -> int:
        return sum(b[-1].out_chs for b in self.branches) + (in_chs if self.pool_at is not None else 0)

    def out_side(self, h: int, w: int) -> tuple[int, int]:
        return _chain_side(self.branches[0], h, w)


@dataclass(frozen=True, kw_only=True)
class InceptionBlock:
    """An Inception residual block F: branches of stride-1 "same" convs, concatenated, then a 1x1
    conv - BN (no ReLU) back to ``chs``, the module's input and output width."""

    chs: int
    branches: tuple[tuple[Conv, ...], ...]

    def __post_init__(self) -> None:
        where = f"InceptionBlock(chs={self.chs!r})"
        check_channels(where, chs=self.chs)
        if not isinstance(self.branches, tuple) or not self.branches:
            raise ValueError(f"{where}: branches must be a non-empty list of conv lists, got {self.branches!r:.80}")
        for i, branch in enumerate(self.branches):
            _check_convs(f"{where}: branches[{i}]", branch)
            for j, conv in enumerate(branch):
                if conv.stride != 1 or not conv.padded:
                    raise ValueError(f"{where}: branches[{i}][{j}] must be stride 1 and padded (the sum keeps the input's size), "
                                     f"got stride {conv.stride}, padded={conv.padded}")  # fmt: skip

    @property
    def concat_chs(self) -> int:
        return sum(b[-1].out_chs for b in self.branches)


@dataclass(frozen=True, kw_only=True)
class PolyModule:
    """A PolyInception module: ``order`` applications of Inception blocks of shape ``block``,
    combined by ``kind`` (``"poly"``: one block's convs applied ``order`` times in a chain;
    ``"mpoly"``: ``order`` blocks chained; ``"way"``: ``order`` blocks side by side), each path
    times ``scale``, plus the identity, then ReLU."""

    kind: str
    order: int
    block: InceptionBlock
    scale: float = 1.0  # residual factor of every non-identity path

    def __post_init__(self) -> None:
        where = f"PolyModule(kind={self.kind!r}, order={self.order!r})"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(map(repr, KINDS))}; got {self.kind!r}")
        if not isinstance(self.order, int) or isinstance(self.order, bool) or self.order < 1:
            raise ValueError(f"{where}: order must be an integer >= 1, got {self.order!r}")
        if not isinstance(self.block, InceptionBlock):
            raise ValueError(f"{where}: block must be an InceptionBlock, got {self.block!r:.80}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 0 <= self.scale < float("inf"):
            raise ValueError(f"{where}: scale must be a finite number >= 0, got {self.scale!r}")


@dataclass(frozen=True, kw_only=True)
class PolyStage:
    """A stage: an optional reduction (the stride-2 ``Mixed`` that opens it), then its modules."""

    name: str  # its key in the state dict: stages.<name>
    reduction: Mixed | None
    modules: tuple[PolyModule, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "." in self.name:
            raise ValueError(f"PolyStage: name must be a non-empty string without '.', got {self.name!r}")
        if self.reduction is not None and not isinstance(self.reduction, Mixed):
            raise ValueError(f"PolyStage {self.name!r}: reduction must be a Mixed or None, got {self.reduction!r:.80}")
        if not isinstance(self.modules, tuple) or not all(isinstance(m, PolyModule) for m in self.modules):
            raise ValueError(f"PolyStage {self.name!r}: modules must be a list of PolyModule, got {self.modules!r:.80}")
        if not self.modules and self.reduction is None:
            raise ValueError(f"PolyStage {self.name!r}: a stage needs a reduction or at least one module")


@dataclass(frozen=True, kw_only=True)
class PolyNetSpec(ArchSpec):
    """Stem convs, stem mixes, the stages (each: reduction, PolyInception modules), GAP, dropout, FC."""

    family = "polynet"
    resolution: int = 331
    stem: tuple[Conv, ...]
    stem_mixed: tuple[Mixed, ...]
    stages: tuple[PolyStage, ...]
    drop_rate: float = 0.2  # dropout before the classifier (the release's)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        _check_convs(f"{name}: stem", self.stem)
        if not isinstance(self.stem_mixed, tuple) or not all(isinstance(m, Mixed) for m in self.stem_mixed):
            raise ValueError(f"{name}: stem_mixed must be a list of Mixed, got {self.stem_mixed!r:.80}")
        if not isinstance(self.stages, tuple) or not self.stages or not all(isinstance(s, PolyStage) for s in self.stages):
            raise ValueError(f"{name}: stages must be a non-empty list of PolyStage, got {self.stages!r:.80}")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: stage names must be unique, got {names}")
        for i, (stage, chs) in enumerate(zip(self.stages, self.stage_chs)):
            for j, module in enumerate(stage.modules):
                if module.block.chs != chs:
                    raise ValueError(f"{name}: stages[{i}].modules[{j}] ({stage.name}.{j}).block.chs must be the stage's {chs} channels, "
                                     f"got {module.block.chs}")  # fmt: skip

    @property
    def stem_chs(self) -> int:
        chs = self.stem[-1].out_chs
        for mixed in self.stem_mixed:
            chs = mixed.out_chs(chs)
        return chs

    @property
    def stage_chs(self) -> tuple[int, ...]:
        """Each stage's width (after its reduction)."""
        chs, out = self.stem_chs, []
        for stage in self.stages:
            chs = stage.reduction.out_chs(chs) if stage.reduction is not None else chs
            out.append(chs)
        return tuple(out)

    @property
    def modules(self) -> tuple[PolyModule, ...]:
        return tuple(m for stage in self.stages for m in stage.modules)

    @property
    def num_features(self) -> int:
        return self.stage_chs[-1]


def _conv(out_chs: int, kernel: tuple[int, int] = (1, 1), stride: int = 1, padded: bool = True) -> Conv:
    return Conv(out_chs=out_chs, kernel=kernel, stride=stride, padded=padded)


K3 = (3, 3)

# The stem (Inception-v4 Figure 3), map sides at 331 px (299 px in brackets).
STEM = (
    _conv(32, K3, stride=2, padded=False),  # 331 -> 165 (149)
    _conv(32, K3, padded=False),  # -> 163 (147)
    _conv(64, K3),  # -> 163 (147)
)
STEM_MIXED = (
    Mixed(branches=((_conv(96, K3, stride=2, padded=False),),), pool_at=0),  # -> 81 (73): max-pool | conv, 64 + 96
    Mixed(branches=(  # -> 79 (71): 96 + 96
        (_conv(64), _conv(96, K3, padded=False)),
        (_conv(64), _conv(64, (7, 1)), _conv(64, (1, 7)), _conv(96, K3, padded=False)),
    )),
    Mixed(branches=((_conv(192, K3, stride=2, padded=False),),), pool_at=0),  # -> 39 (35): max-pool | conv, 192 + 192 = 384
)
# Inception-ResNet-v2's blocks A, B, C (Szegedy et al. 2017 Figures 16, 17, 19), the release's stage widths.
BLOCK_A = InceptionBlock(chs=384, branches=((_conv(32), _conv(48, K3), _conv(64, K3)), (_conv(32), _conv(32, K3)), (_conv(32),)))
BLOCK_B = InceptionBlock(chs=1152, branches=((_conv(128), _conv(160, (1, 7)), _conv(192, (7, 1))), (_conv(192),)))
BLOCK_C = InceptionBlock(chs=2048, branches=((_conv(192), _conv(224, (1, 3)), _conv(256, (3, 1))), (_conv(192),)))
REDUCTION_A = Mixed(  # 39 -> 19 (35 -> 17): 384 + 384 + the pooled 384 = 1152
    branches=((_conv(256), _conv(256, K3), _conv(384, K3, stride=2, padded=False)), (_conv(384, K3, stride=2, padded=False),)),
    pool_at=2,
)
REDUCTION_B = Mixed(  # 19 -> 9 (17 -> 8): 256 + 256 + 384 + the pooled 1152 = 2048
    branches=(
        (_conv(256), _conv(256, K3), _conv(256, K3, stride=2, padded=False)),
        (_conv(256), _conv(256, K3, stride=2, padded=False)),
        (_conv(256), _conv(384, K3, stride=2, padded=False)),
    ),
    pool_at=3,
)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A row of the network's table: the reduction that opens the stage, its block, and its modules:
    ``pattern`` (module types of MODULE_TYPES) cycled over ``modules`` positions."""

    name: str
    reduction: Mixed | None
    block: InceptionBlock
    pattern: tuple[str, ...]
    modules: int


# Section 5's Very Deep PolyNet, the "10-20-10 mix" (poly-3 first where interleaved, as released).
VERY_DEEP_POLYNET = (
    Stage(name="a", reduction=None, block=BLOCK_A, pattern=("2-way",), modules=10),  # 39x39 at 331 (35x35 at 299)
    Stage(name="b", reduction=REDUCTION_A, block=BLOCK_B, pattern=("poly-3", "2-way"), modules=20),  # 19x19 (17x17)
    Stage(name="c", reduction=REDUCTION_B, block=BLOCK_C, pattern=("poly-3", "2-way"), modules=10),  # 9x9 (8x8)
)


def residual_scales(n: int, last: float) -> tuple[float, ...]:
    """The release's residual factors: linear from 1 at the first of ``n`` modules to ``last`` at the
    last one, rounded to 6 decimals as its deploy file prints them."""
    if n == 1:
        return (1.0,)
    return tuple(round(1.0 - (1.0 - last) * i / (n - 1), 6) for i in range(n))


def poly_stages(table: tuple[Stage, ...], scale_last: float) -> tuple[PolyStage, ...]:
    """The table's rows as stages of explicit modules, the residual factors running over the whole network."""
    scales = iter(residual_scales(sum(row.modules for row in table), scale_last))
    stages = []
    for row in table:
        modules = []
        for j in range(row.modules):
            kind, order = MODULE_TYPES[row.pattern[j % len(row.pattern)]]
            modules.append(PolyModule(kind=kind, order=order, block=row.block, scale=next(scales)))
        stages.append(PolyStage(name=row.name, reduction=row.reduction, modules=tuple(modules)))
    return tuple(stages)


def _padded(mixed: Mixed, *, stride: int | None = None) -> Mixed:
    """``mixed`` with every conv and its pool padded ("same"), at ``stride`` if given."""

    def conv(c: Conv, last: bool) -> Conv:
        return dataclasses.replace(c, padded=True, stride=stride if (last and stride is not None) else c.stride)

    branches = tuple(tuple(conv(c, j == len(b) - 1) for j, c in enumerate(b)) for b in mixed.branches)
    return dataclasses.replace(mixed, branches=branches, pool_padded=True, pool_stride=stride if stride is not None else mixed.pool_stride)


def cifar_stem(spec: PolyNetSpec) -> PolyNetSpec:
    """The 32-px adaptation: every unpadded conv and pool padded ("same"), the first stem conv and the
    first stem mix at stride 1; the last stem mix and the two reductions keep stride 2: 32 -> 16
    (stage A) -> 8 (B) -> 4 (C). Same weights as the ImageNet model."""
    stem = tuple(dataclasses.replace(c, stride=1, padded=True) for c in spec.stem)
    first, *rest = spec.stem_mixed
    stem_mixed = (_padded(first, stride=1), *(_padded(m) for m in rest))
    stages = tuple(dataclasses.replace(s, reduction=_padded(s.reduction)) if s.reduction is not None else s for s in spec.stages)
    return dataclasses.replace(spec, stem=stem, stem_mixed=stem_mixed, stages=stages, resolution=32)


def _pattern(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be module types separated by commas (e.g. 'poly-3,2-way'), got {value!r}")
    types = tuple(t.strip() for t in value.split(","))
    for t in types:
        check_choice(name, t, MODULE_TYPES)
    return types


def polynet(
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    modules_a: int = 10,
    modules_b: int = 20,
    modules_c: int = 10,
    pattern_a: str = "2-way",
    pattern_b: str = "poly-3,2-way",
    pattern_c: str = "poly-3,2-way",
    scale_last: float = 0.7,
    drop_rate: float = 0.2,
    cifar: bool = False,
) -> PolyNetSpec:
    """Very Deep PolyNet at 331x331, layer for layer the authors' release. ``modules_a/b/c``: modules
    per stage (10, 20, 10); ``pattern_a/b/c``: their types, comma-separated and cycled ("poly-3,2-way"
    interleaves them, poly-3 first), each one of MODULE_TYPES ('ir' is a plain Inception-ResNet unit);
    ``scale_last``: the last module's residual factor (the first is 1, linear in between; the
    release's 0.7); ``drop_rate``: dropout before the classifier (the release's 0.2); ``cifar``: the
    32-px adaptation of :func:`cifar_stem` (32 -> 16 -> 8 -> 4)."""
    counts = {"modules_a": modules_a, "modules_b": modules_b, "modules_c": modules_c}
    for name, value in counts.items():
        check_int(name, value, 1)
    patterns = {name: _pattern(name, value) for name, value in (("pattern_a", pattern_a), ("pattern_b", pattern_b), ("pattern_c", pattern_c))}
    check_range("scale_last", scale_last, 0.0, 1.0, low_open=True)
    check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
    check_bool("cifar", cifar)
    table = tuple(dataclasses.replace(row, modules=counts[f"modules_{row.name}"], pattern=patterns[f"pattern_{row.name}"]) for row in VERY_DEEP_POLYNET)
    spec = PolyNetSpec(num_classes=num_classes, in_chans=in_chans, stem=STEM, stem_mixed=STEM_MIXED,
                       stages=poly_stages(table, scale_last), drop_rate=drop_rate)  # fmt: skip
    return cifar_stem(spec) if cifar else spec


ENTRIES = (
    Entry(
        name="polynet",
        family="polynet",
        paper=PAPER,
        spec=polynet,
        input_size=(3, 331, 331),
        published=(
            Published(
                top1=81.29,
                params=95_366_600,
                source="PolyNet paper, single-model results: Very Deep PolyNet 18.71% single-crop val top-1 error (also the authors' "
                "open-mmlab/polynet README); params: the paper prints none, this is the count of the released model "
                "(imgclsmob's figure for Cadene's pretrainedmodels port)",
            ),
        ),
        representative=True,
        baseline=True,
    ),
)

__all__ = [
    "BLOCK_A", "BLOCK_B", "BLOCK_C", "MODULE_TYPES", "REDUCTION_A", "REDUCTION_B", "STEM", "STEM_MIXED", "VERY_DEEP_POLYNET",
    "Conv", "InceptionBlock", "Mixed", "PolyModule", "PolyNetSpec", "PolyStage", "Stage", "cifar_stem", "polynet", "residual_scales",
]  # fmt: skip
