"""Quantization-aware training (QAT): fine-tuning a model while it sees the int8 rounding it will
be deployed with, so that the weights learn to live with it.

What is simulated is what :func:`smallnets.quantization.quantize_onnx` deploys (ONNX Runtime's
QDQ format, the scheme of Jacob et al., CVPR 2018):

- weights of every Conv2d and Linear: per output channel, symmetric int8 in [-127, 127], scale
  ``max|w| / 127`` (as ONNX Runtime computes it), after the BatchNorm that follows a convolution
  has been folded into it;
- activations: uint8, asymmetric, the range an observer tracks (exponential moving average of each
  batch's min / max, widened to contain 0: ONNX Runtime's min-max calibration), once per tensor:
  at the output of every activation (ReLU, ReLU6, SiLU, Sigmoid ...), of every convolution that no
  ReLU / ReLU6 follows (linear bottlenecks; and before SiLU, which ONNX Runtime runs as Sigmoid and
  Mul on the quantized convolution output), of every Linear layer (the logits too), of every block
  whose own computation (a residual add, a concatenation, a squeeze-and-excitation product, a
  channel shuffle) produced its output, and at the input of a Conv2d / Linear that receives a
  tensor nothing quantized yet (the image, a pooling's output).

Convolution + BatchNorm pairs train as in Jacob et al. Section 3.2 / torch.ao's ``ConvBn2d``: the
quantized weight is the one folded with the running statistics, ``W * gamma / sqrt(var + eps)``,
and while BatchNorm still learns its statistics the convolution's output is divided by that
factor again before BatchNorm normalises it with the batch's own statistics. After
``freeze_bn`` (a fraction of the QAT steps) BatchNorm uses its running statistics, exactly as the
folded deployed convolution does; after ``freeze_observers`` the activation ranges stop moving.

The model keeps its modules, parameter names and spec: :func:`prepare_qat` wraps ``forward`` of
the layers it quantizes (an attribute of the instance, not part of the state dict) and adds
forward hooks; :meth:`QatController.remove` restores the model to plain fp32. Weights saved during
QAT are ordinary smallnets weights, which the trainer, ``load_weights`` and the exporters read as
they are. The fake quantization runs in fp32 (``torch.fake_quantize_*``, straight-through gradients
inside the range, zero outside), also under bf16 autocast.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from smallnets._checks import check_choice, check_range

W_QMIN, W_QMAX = -127, 127  # ONNX Runtime's symmetric int8 weights
A_QMIN, A_QMAX = 0, 255  # uint8 activations
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.LeakyReLU, nn.Tanh)
# activations ONNX Runtime folds into the quantized convolution before them (Relu, Clip): the
# convolution's output is quantized only after them. Any other (SiLU = Sigmoid + Mul ...) reads a
# quantized convolution output, its full pre-activation range on the uint8 grid.
ABSORBED = (nn.ReLU, nn.ReLU6)
CALIBRATION_STATISTICS = ("minmax", "mean")  # how calibrate() sets a range: the extremes, or the mean of each batch's extremes


def fake_quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded to per-output-channel symmetric int8 (scale ``max|w| / 127``) and back, in fp32."""
    w32 = w.float()
    amax = w32.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = amax / W_QMAX
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w32, scale, zero, 0, W_QMIN, W_QMAX)


@dataclass(frozen=True)
class TensorStats:
    """fp32 statistics of one activation tensor over some images."""

    low: float
    high: float
    mean: float
    shape: tuple[int, ...] | None  # per image (C, H, W)


@dataclass
class Observer:
    """Min / max of one activation tensor: while training an EMA over batches with ``momentum`` (the
    first batch sets it); while calibrating (``forced``) the extremes over every batch."""

    momentum: float = 0.01
    frozen: bool = False
    forced: bool = False  # observe in eval mode too (calibration before training)
    mode: str = "ema"  # "ema": moving average of each batch's extremes; "minmax": the extremes over every batch seen
    low: float | None = None
    high: float | None = None
    batches: int = 0
    # while calibrating: the mean and the per-image shape seen (what tells one tensor from another of the same range)
    total: float = 0.0
    count: int = 0
    shape: tuple[int, ...] | None = None
    calibration: str = "minmax"  # while calibrating: "minmax" the extremes over every batch, "mean" the mean of each batch's
    _sums: tuple[float, float, int] = (0.0, 0.0, 0)

    def update(self, x: torch.Tensor) -> None:
        x32 = x.detach().float()
        lo, hi = torch.aminmax(x32)
        lo, hi = float(lo), float(hi)
        if self.forced:
            self.total += float(x32.sum(dtype=torch.float64))
            self.count += x32.numel()
            self.shape = tuple(x.shape[1:])
        if self.forced and self.calibration == "mean":  # the mean of each batch's extremes: what a moving average settles at
            self._sums = (lo, hi, 1) if self.low is None else (self._sums[0] + lo, self._sums[1] + hi, self._sums[2] + 1)
            self.low, self.high = self._sums[0] / self._sums[2], self._sums[1] / self._sums[2]
        elif self.low is None:
            self.low, self.high = lo, hi
        elif self.forced or self.mode == "minmax":  # calibration (or minmax ranges): min / max over every batch, as ONNX Runtime's MinMax calibrater takes them
            self.low, self.high = min(self.low, lo), max(self.high, hi)
        else:
            self.low += self.momentum * (lo - self.low)
            self.high += self.momentum * (hi - self.high)
        self.batches += 1

    def qparams(self) -> tuple[float, int]:
        """(scale, zero point) of uint8 over [min(low, 0), max(high, 0)], as ONNX Runtime computes them."""
        lo, hi = min(self.low, 0.0), max(self.high, 0.0)
        scale = (hi - lo) / (A_QMAX - A_QMIN)
        if scale <= 0 or not math.isfinite(scale):
            return 1.0, 0
        zero = int(round(A_QMIN - lo / scale))
        return scale, max(A_QMIN, min(A_QMAX, zero))

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if (training and not self.frozen) or self.forced:
            self.update(x)
        if self.low is None:  # nothing to simulate yet
            return x
        if self.forced:  # calibrating on the fp32 values: marked as observed, not changed (a view: the caller's tensor stays unmarked)
            return _mark(x.view_as(x))
        scale, zero = self.qparams()
        return _mark(torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, A_QMIN, A_QMAX).to(x.dtype))


MARK = "_smallnets_int8"  # set on a tensor that holds int8 values already (ONNX Runtime quantizes each tensor once)


def _mark(x: torch.Tensor) -> torch.Tensor:
    setattr(x, MARK, True)
    return x


def _quantized(x) -> bool:
    return getattr(x, MARK, False)


@dataclass
class QatController:
    """What :func:`prepare_qat` did to a model, and the trainer hook that freezes BatchNorm and the
    observers at their points (``start`` and ``after_step``, see ``smallnets.training.hooks``)."""

    model: nn.Module
    freeze_bn: float
    freeze_observers: float
    observers: dict[str, Observer] = field(default_factory=dict)
    conv_bn: dict[str, str] = field(default_factory=dict)  # conv name -> BatchNorm name, folded while training
    weights: list[str] = field(default_factory=list)  # layers whose weights are fake-quantized
    bn_frozen: bool = False
    observers_frozen: bool = False
    simulating: bool = True  # False while calibrating: the fp32 model's values, as ONNX Runtime calibrates
    total_steps: int | None = None
    _handles: list = field(default_factory=list, repr=False)
    _patched: list = field(default_factory=list, repr=False)

    # --- trainer hooks -----------------------------------------------------------------------
    def start(self, model: nn.Module, total_steps: int) -> None:
        self.total_steps = int(total_steps)
        self._apply_freezes(0)

    def after_step(self, model: nn.Module, step: int) -> None:
        self._apply_freezes(step + 1)

    def _apply_freezes(self, done: int) -> None:
        total = self.total_steps or 0
        if not self.bn_frozen and done >= self.freeze_bn * total:
            self.freeze_batchnorm()
        if not self.observers_frozen and done >= self.freeze_observers * total:
            self.freeze_ranges()

    def freeze_batchnorm(self) -> None:
        """From now on BatchNorm uses its running statistics (and stops updating them), as deployed."""
        self.bn_frozen = True

    def freeze_ranges(self) -> None:
        self.observers_frozen = True
        for obs in self.observers.values():
            obs.frozen = True

    @torch.no_grad()
    def calibrate(self, batches, *, max_batches: int | None = None, channels_last: bool = False, statistic: str = "minmax") -> int:
        """Set the activation ranges from ``batches`` of images (iterable of tensors or (x, y)
        pairs), the fp32 model's activations in eval mode (BatchNorm on its running statistics).
        ``statistic="minmax"``: the min / max over every batch, as ONNX Runtime's min-max
        calibration measures them, so that the simulated int8 model is the one ``quantize_onnx``
        calibrated on the same images would build; ``"mean"``: the mean of each batch's min / max
        (where a moving average settles; narrower where a few images hold outliers, so finer
        grids for the rest). Returns the images seen. Training without it starts each range from
        its first training batch."""
        check_choice("statistic", statistic, CALIBRATION_STATISTICS)
        was = self.model.training
        self.model.eval()
        seen = 0
        self.simulating = False
        for obs in self.observers.values():
            obs.forced, obs.calibration = True, statistic
        try:
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                self.model(x)
                seen += int(x.shape[0])
        finally:
            self.simulating = True
            for obs in self.observers.values():
                obs.forced = False
            self.model.train(was)
        return seen

    @torch.no_grad()
    def measure(self, batches, *, max_batches: int | None = None, channels_last: bool = False) -> dict[str, TensorStats]:
        """Each observed tensor's fp32 statistics over ``batches`` (min, max, mean, per-image shape),
        measured as :meth:`calibrate` measures them, while the controller's own ranges (trained,
        perhaps frozen) stay as they are: what ``smallnets.quantization`` finds each observer's
        ONNX tensor by."""
        saved = {k: (o.low, o.high, o.batches) for k, o in self.observers.items()}
        for obs in self.observers.values():
            obs.low = obs.high = obs.shape = None
            obs.batches = obs.count = 0
            obs.total = 0.0
        try:
            self.calibrate(batches, max_batches=max_batches, channels_last=channels_last)
            return {k: TensorStats(o.low, o.high, o.total / o.count, o.shape) for k, o in self.observers.items() if o.low is not None}
        finally:
            for k, (low, high, n) in saved.items():
                obs = self.observers[k]
                obs.low, obs.high, obs.batches = low, high, n

    def describe(self) -> dict:
        used = sum(1 for o in self.observers.values() if o.low is not None)  # a block whose output a layer quantized needs none
        return {"freeze_bn": self.freeze_bn, "freeze_observers": self.freeze_observers, "observed_tensors": used,
                "folded_conv_bn": len(self.conv_bn), "quantized_weights": len(self.weights)}  # fmt: skip

    def ranges(self) -> dict[str, tuple[float, float] | None]:
        """Each observed tensor's (low, high), by ``LAYER.input`` / ``LAYER.output``."""
        return {k: (None if o.low is None else (o.low, o.high)) for k, o in self.observers.items()}

    def remove(self) -> nn.Module:
        """Undo :func:`prepare_qat`: the model computes in plain fp32 again (its weights as trained)."""
        for handle in self._handles:
            handle.remove()
        for module in self._patched:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_qat", None)
        self._handles.clear()
        self._patched.clear()
        return self.model


def _bn_is_running(bn: nn.BatchNorm2d, controller: QatController) -> bool:
    """True when BatchNorm normalises with its running statistics (frozen, or the model is evaluating)."""
    return controller.bn_frozen or not bn.training


def _conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    state = self._qat
    ctrl = state["controller"]
    if not _quantized(x):
        x = state["input"](x, self.training)
    if not ctrl.simulating:
        return nn.Conv2d.forward(self, x)  # (a paired BatchNorm applies itself: see _bn_forward)
    bn = state["bn"]
    if bn is None:
        return self._conv_forward(x, fake_quantize_weight(self.weight), self.bias)
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
    factor = gamma / torch.sqrt(bn.running_var + bn.eps)
    w = fake_quantize_weight(self.weight * factor.view(-1, 1, 1, 1))
    bias = self.bias if self.bias is not None else torch.zeros_like(bn.running_mean)
    if _bn_is_running(bn, ctrl):  # the deployed computation: one folded, quantized convolution
        return self._conv_forward(x, w, (bias - bn.running_mean) * factor + beta)
    # BatchNorm still learning (Jacob et al. Fig. C.8): undo the fold's scale, let BN normalise with batch statistics
    y = self._conv_forward(x, w, None)
    return y / factor.view(1, -1, 1, 1).to(y.dtype) + bias.view(1, -1, 1, 1).to(y.dtype)


def _bn_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    state = self._qat
    if not _bn_is_running(self, state["controller"]) or (state["paired"] and not state["controller"].simulating):
        return nn.BatchNorm2d.forward(self, x)
    if state["paired"]:
        return x  # its convolution applied it, folded
    # a BatchNorm of its own (DenseNet's pre-activation): running statistics, as deployed
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not _quantized(x):
        x = self._qat["input"](x, self.training)
    w = fake_quantize_weight(self.weight) if self._qat["controller"].simulating else self.weight
    return F.linear(x, w, self.bias)


def _silu_forward(self: nn.SiLU, x: torch.Tensor) -> torch.Tensor:
    return x * self._qat["sigmoid"](torch.sigmoid(x), self.training)


def _output_hook(observer: Observer):
    def hook(module, args, output):
        if isinstance(output, torch.Tensor) and not _quantized(output):
            return observer(output, module.training)
        return None

    return hook


RANGES = ("ema", "minmax")


def prepare_qat(model: nn.Module, *, freeze_bn: float = 0.0, freeze_observers: float = 0.75, momentum: float = 0.01,
                ranges: str = "ema") -> QatController:  # fmt: skip
    """Make ``model`` (in place) train with int8 fake quantization; returns the controller, which is
    also the trainer hook that freezes BatchNorm after ``freeze_bn`` and the activation ranges after
    ``freeze_observers`` of the training steps (fractions in [0, 1]; 0: from the start).
    ``freeze_bn`` defaults to 0: a short fine-tune of a trained model has no statistics to learn,
    and letting BatchNorm learn them from fake-quantized batches drifts them from the ones the
    file folds (EfficientNet-B0 on CIFAR, 1 epoch: int8 file 10.6% with 0.5, 29.6% with 0);
    Jacob et al.'s schedule (BatchNorm learning, then frozen) is for long QAT runs.
    ``ranges``: how an observer follows its tensor while training, ``"ema"`` (moving average of
    each batch's min / max, ``momentum``) or ``"minmax"`` (the extremes over every batch: the
    statistic ONNX Runtime's min-max calibration takes when the trained weights are exported, so
    that training sees the grid the file will use)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
    check_range("freeze_bn", freeze_bn, 0.0, 1.0)
    check_range("freeze_observers", freeze_observers, 0.0, 1.0)
    check_range("momentum", momentum, 0.0, 1.0, low_open=True)
    check_choice("ranges", ranges, RANGES)
    if any("_qat" in m.__dict__ for m in model.modules()):
        raise ValueError("model is already prepared for quantization-aware training (call remove() on its controller first)")
    ctrl = QatController(model, freeze_bn=float(freeze_bn), freeze_observers=float(freeze_observers))
    names = {m: n for n, m in model.named_modules()}

    def observer(key: str) -> Observer:
        return ctrl.observers.setdefault(key, Observer(momentum=momentum, mode=ranges))

    # Conv -> BatchNorm pairs (folded on export), and what follows each convolution
    pair_of: dict[nn.Module, nn.BatchNorm2d] = {}
    followed_by_activation: set[nn.Module] = set()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq)
        for i, mod in enumerate(mods):
            if not isinstance(mod, nn.Conv2d):
                continue
            j = i + 1
            if j < len(mods) and type(mods[j]) is nn.BatchNorm2d and mods[j].track_running_stats and mods[j].num_features == mod.out_channels:
                pair_of[mod] = mods[j]
                j += 1
            while j < len(mods) and isinstance(mods[j], (nn.Identity, nn.Dropout)):
                j += 1
            if j < len(mods) and isinstance(mods[j], ABSORBED):
                followed_by_activation.add(mod)
    paired_bn = set(pair_of.values())
    for module in list(model.modules()):
        name = names[module]
        if isinstance(module, nn.Conv2d) and type(module) is nn.Conv2d:
            bn = pair_of.get(module)
            module.__dict__["_qat"] = {"input": observer(f"{name}.input"), "bn": bn, "controller": ctrl}
            module.forward = types.MethodType(_conv_forward, module)
            ctrl._patched.append(module)
            ctrl.weights.append(name)
            if bn is not None:
                ctrl.conv_bn[name] = names[bn]
                bn.__dict__["_qat"] = {"controller": ctrl, "paired": True}
                bn.forward = types.MethodType(_bn_forward, bn)
                ctrl._patched.append(bn)
            if module not in followed_by_activation:  # a linear output: what ONNX Runtime quantizes after it
                tail = bn if bn is not None else module
                ctrl._handles.append(tail.register_forward_hook(_output_hook(observer(f"{names[tail]}.output"))))
        elif type(module) is nn.Linear:
            module.__dict__["_qat"] = {"input": observer(f"{name}.input"), "controller": ctrl}
            module.forward = types.MethodType(_linear_forward, module)
            # ONNX Runtime quantizes a Gemm's output too, the logits included
            ctrl._handles.append(module.register_forward_hook(_output_hook(observer(f"{name}.output"))))
            ctrl._patched.append(module)
            ctrl.weights.append(name)
        elif isinstance(module, ACTIVATIONS):
            if type(module) is nn.SiLU:  # ONNX Runtime runs it as Sigmoid and Mul: the sigmoid's output is quantized too
                module.__dict__["_qat"] = {"sigmoid": observer(f"{name}.sigmoid"), "controller": ctrl}
                module.forward = types.MethodType(_silu_forward, module)
                ctrl._patched.append(module)
            ctrl._handles.append(module.register_forward_hook(_output_hook(observer(f"{name}.output"))))
        elif type(module) is nn.BatchNorm2d and module not in paired_bn and module.track_running_stats:
            module.__dict__["_qat"] = {"controller": ctrl, "paired": False}  # pre-activation BatchNorm (DenseNet): frozen at the same point
            module.forward = types.MethodType(_bn_forward, module)
            ctrl._patched.append(module)
    # what a block computes outside its layers (a residual add, a concatenation, an SE product, a
    # shuffle): quantized at the block's output when nothing inside quantized it, as ONNX Runtime
    # quantizes the Add / Concat / Mul output that reaches the next block by every path
    for module in model.modules():
        if next(module.children(), None) is not None:
            name = names[module] or "model"
            ctrl._handles.append(module.register_forward_hook(_output_hook(observer(f"{name}.output"))))
    if not ctrl.weights:
        raise ValueError("model has no Conv2d or Linear layer to quantize")
    return ctrl


__all__ = ["Observer", "QatController", "TensorStats", "fake_quantize_weight", "prepare_qat"]
