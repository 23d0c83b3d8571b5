"""Building blocks shared by every family: conv-norm-act, channel rounding, SE, drop-path, shuffle."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


ModuleFactory = Callable[[], nn.Module]


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor stored so (and not also NCHW-contiguous), else contiguous_format."""
    cl = torch.channels_last
    return cl if x.dim() == 4 and x.is_contiguous(memory_format=cl) and not x.is_contiguous() else torch.contiguous_format


class SamePad2d(nn.Module):
    """TensorFlow's "SAME" padding for a conv of ``kernel_size`` / ``stride``: total pad
    ``max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0)``, the odd pixel at the bottom / right.
    Computed per input size (TF-ported EfficientNets need it at any stride); no parameters."""

    def __init__(self, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((-(-size // self.stride) - 1) * self.stride + (self.kernel_size - 1) * self.dilation + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(x, pads) if any(pads) else x

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


class ConvNormAct(nn.Sequential):
    """Conv2d, then optional norm, then optional activation; ``norm=None`` / ``act=None`` omit them.

    Padding defaults to ``dilation * (kernel_size - 1) // 2`` ("same" for odd kernels at stride 1);
    ``padding="same"`` is TensorFlow's "SAME" at any stride (asymmetric where the stride needs it).
    Depthwise is ``groups == in_chs``. The conv has a bias only when there is no norm after it,
    unless ``bias`` says otherwise. State-dict keys: ``conv.*``, ``bn.*``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        *,
        padding: int | str | None = None,
        dilation: int = 1,
        norm: ModuleFactory | None = nn.BatchNorm2d,
        act: ModuleFactory | None = nn.ReLU,
        bias: bool | None = None,
    ):
        super().__init__()
        check_divides("groups", groups, in_chs=in_chs, out_chs=out_chs)
        same = padding == "same"
        if same and stride == 1 and kernel_size % 2 == 1:
            padding, same = None, False  # stride 1, odd kernel: TF "SAME" is the symmetric padding
        if same:
            padding = 0
        elif padding is None:
            padding = dilation * (kernel_size - 1) // 2
        if bias is None:
            bias = norm is None
        if same:  # a part without parameters: the state-dict keys stay conv.*, bn.*
            self.pad = SamePad2d(kernel_size, stride, dilation)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=bias)
        if norm is not None:
            self.bn = norm(out_chs)
        if act is not None:
            self.act = act()


def check_divides(name: str, groups: int, **channels: int) -> None:
    """Raise ValueError unless ``groups`` divides every channel count given by keyword."""
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{name} must be a positive integer, got {groups!r}")
    for what, chs in channels.items():
        if chs % groups:
            raise ValueError(f"{name} must divide {what}: {chs} is not divisible by {name}={groups}")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as EfficientNet uses it: pool, 1x1 reduce, act, 1x1 expand, gate."""

    def __init__(self, chs: int, squeeze_chs: int, act: ModuleFactory = nn.SiLU, gate: ModuleFactory = nn.Sigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(chs, squeeze_chs, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeeze_chs, chs, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * scale


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: reshape channels to (groups, c/groups), transpose, flatten."""
    n, c, h, w = x.shape
    if memory_format(x) is torch.channels_last:
        # channels-last: shuffle the innermost (channel) axis and stay channels-last, rather than
        # letting reshape fall back to a contiguous NCHW copy that the next conv converts back
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.reshape(n, h, w, groups, c // groups).transpose(3, 4).reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ClassifierHead(nn.Module):
    """Global average pooling (no FC stack, as every efficient family does), dropout, linear."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.flatten(self.pool(x))))


class SmallNet(nn.Module):
    """Common shape of every zoo model: ``stem -> stages -> neck -> classifier``.

    ``forward_features`` returns the last feature map (before pooling); ``forward_head`` turns it
    into logits. ``stages`` is an ``nn.Sequential`` whose children are the network's stages, so
    their feature maps can be taken one by one. Subclasses set the four parts and
    ``num_features`` (channels of the final feature map).
    """

    stem: nn.Module
    stages: nn.Sequential
    neck: nn.Module
    classifier: nn.Module
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(self.stem(x)))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature map after each stage, in order (inputs for detection or segmentation heads)."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def feature_info(self, input_size: int = 64) -> list[dict]:
        """For each stage: its name (``stages.i``), output channels and stride (input side / output side),
        measured with one small forward pass of an ``input_size`` image."""
        in_chans = getattr(self, "smallnets_config", {}).get("in_chans", 3)
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                maps = self.forward_stages(torch.zeros(1, in_chans, input_size, input_size, device=param.device, dtype=param.dtype))
        finally:
            self.train(was_training)
        return [{"name": f"stages.{i}", "channels": m.shape[1], "stride": round(input_size / m.shape[-1])} for i, m in enumerate(maps)]

    def classifier_layer(self) -> str:
        """State-dict prefix of the layer that gives the class scores (the one a new number of
        classes replaces): the last layer with a weight inside ``classifier``, e.g. ``classifier.fc``
        (SqueezeNet: its conv10, ``classifier.conv.conv``)."""
        names = [n for n, m in self.classifier.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)]
        if not names:
            raise ValueError(f"{type(self).__name__}.classifier has no layer with weights")
        return "classifier" + (f".{names[-1]}" if names[-1] else "")

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def is_meta(model: nn.Module) -> bool:
    """True when the model's first parameter lives on the meta device (built under ``torch.device("meta")``)."""
    first = next(model.parameters(), None)
    return first is not None and first.is_meta


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convs, unit BN, small-normal linear layers: the usual ImageNet init.

    A model built on the meta device (shapes only: format detection, knob checks) has no values to
    set, so it is left alone; initialising its ~1,000 tensors would cost seconds through the device
    context's function mode and change nothing."""
    if is_meta(model):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
