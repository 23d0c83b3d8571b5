"""Cost profiler: parameters, mult-adds, model size, activation memory and measured latency.

Counting convention (the papers'): MACs are the multiply-accumulates of convolution and fully
connected layers only, for one image; BatchNorm, activations, pooling, elementwise adds and SE
rescales are not counted. FLOPs = 2 x MACs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from smallnets._checks import check_int, check_positive
from smallnets.progress import format_bytes

MACS_CONVENTION = (
    "MACs = multiply-accumulates of conv and linear layers only, batch 1 (the papers' mult-adds); "
    "BatchNorm, activations, pooling, elementwise adds and SE rescales are not counted; FLOPs = 2 x MACs"
)


@dataclass(frozen=True)
class LayerCost:
    name: str  # module path in the model, e.g. "stages.3.0.pw.conv"
    kind: str  # conv1x1 / conv3x3 / depthwise3x3 / grouped1x1 / fc ...
    in_shape: tuple[int, ...]  # without the batch dimension
    out_shape: tuple[int, ...]
    weights: int  # weight elements only (no bias), as MobileNetV1 Table 2 counts
    params: int  # weights + bias
    macs: int


def layer_kind(module: nn.Module) -> str:
    """Classify a conv / linear layer the way the papers break costs down."""
    if isinstance(module, nn.Linear):
        return "fc"
    k = "x".join(str(s) for s in module.kernel_size)
    if module.groups == 1:
        return f"conv{k}"
    if module.groups == module.in_channels:
        return f"depthwise{k}"
    return f"grouped{k}"


def count_layers(model: nn.Module, input_size=(3, 224, 224)) -> list[LayerCost]:
    """Run one image of ``input_size`` through ``model`` (eval, no grad) and cost every conv / linear call."""
    records: list[LayerCost] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        batch = output.shape[0]
        per_output = module.weight[0].numel()  # (in / groups) * kernel area, or in_features
        weights = module.weight.numel()
        bias = module.bias.numel() if module.bias is not None else 0
        records.append(
            LayerCost(
                name=names[module],
                kind=layer_kind(module),
                in_shape=tuple(inputs[0].shape[1:]),
                out_shape=tuple(output.shape[1:]),
                weights=weights,
                params=weights + bias,
                macs=output.numel() // batch * per_output,
            )
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records


def count_params(model: nn.Module) -> int:
    """Trainable parameters (conv/linear weights and biases, BN affine; not BN running statistics)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size=(3, 224, 224)) -> int:
    return sum(r.macs for r in count_layers(model, input_size))


# --------------------------------------------------------------------------------------------
# Activation memory


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages produced by operators that are alive at once.

    Storages are keyed by address and released when the last tensor viewing them is freed, so
    in-place ops and views cost nothing and the peak is the real high-water mark of a forward.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:  # empty tensor
            return
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]


def peak_activation_bytes(model: nn.Module, input_size=(3, 224, 224), batch_size: int = 1) -> int:
    """High-water mark of activation memory during one inference forward (input included, weights not)."""
    device, dtype = _device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tracker = _LiveTensorBytes()
            with tracker:
                x = torch.zeros((batch_size, *input_size), device=device, dtype=dtype)
                out = model(x)
                del x, out
        return tracker.peak
    finally:
        model.train(was_training)


def saved_activation_bytes(model: nn.Module, input_size=(3, 224, 224), batch_size: int = 2) -> int:
    """Bytes autograd keeps for the backward pass of one training forward (parameters excluded).

    This is what gradient checkpointing trades for recomputation. Measured in train mode with a
    batch of 2 (BatchNorm needs more than one value per channel) and reported for that batch.
    """
    device, dtype = _device_dtype(model)
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in param_storages:
            saved[key] = storage.nbytes()
        return t

    was_training = model.training
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point() or "running" in k}
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = torch.zeros((batch_size, *input_size), device=device, dtype=dtype, requires_grad=False)
            out = model(x)
            del out
    finally:
        model.load_state_dict(state, strict=False)  # undo the BatchNorm statistics update
        model.train(was_training)
    return sum(saved.values())


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, (param.dtype if param.is_floating_point() else torch.float32)


# --------------------------------------------------------------------------------------------
# Latency


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    mean_ms: float
    throughput: float  # images per second at the median
    runs: int
    warmup: int
    batch_size: int
    threads: int
    dtype: str
    memory_format: str
    device: str
    torch_version: str
    cpu: str


def measure_latency(
    model: nn.Module,
    input_size=(3, 224, 224),
    *,
    batch_size: int = 1,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 10.0,
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    device: str | torch.device = "cpu",
) -> Latency:
    """Median / p90 wall time of an inference forward after ``warmup`` runs.

    Stops early (but after at least 3 timed runs) once ``max_seconds`` of timed runs have passed,
    so huge models at high resolution stay quick to profile; ``runs`` in the result is the count
    actually timed. The model is copied, never modified.
    """
    check_int("batch_size", batch_size, 1)
    check_int("warmup", warmup, 0)
    check_int("runs", runs, 1)
    check_positive("max_seconds", max_seconds)
    if threads is not None:
        check_int("threads", threads, 1)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype, memory_format=memory_format)
    x = torch.randn((batch_size, *input_size), device=device, dtype=dtype).contiguous(memory_format=memory_format)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        times: list[float] = []
        with torch.inference_mode():
            for _ in range(warmup):
                net(x)
            sync()
            budget_end = time.perf_counter() + max_seconds
            for i in range(runs):
                start = time.perf_counter()
                net(x)
                sync()
                end = time.perf_counter()
                times.append(end - start)
                if end > budget_end and i >= 2:
                    break
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    times_ms = sorted(t * 1e3 for t in times)
    median = statistics.median(times_ms)
    return Latency(
        median_ms=median,
        p90_ms=_percentile(times_ms, 90),
        mean_ms=statistics.fmean(times_ms),
        throughput=batch_size / (median / 1e3),
        runs=len(times_ms),
        warmup=warmup,
        batch_size=batch_size,
        threads=used_threads,
        dtype=str(dtype).removeprefix("torch."),
        memory_format="channels_last" if channels_last else "contiguous",
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        torch_version=torch.__version__,
        cpu=platform.processor() or platform.machine(),
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# --------------------------------------------------------------------------------------------
# The report

BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass
class CostReport:
    model: str
    input_size: tuple[int, int, int]
    params: int  # trainable parameters
    macs: int
    size_bytes: dict[str, int]  # parameters stored at fp32 / fp16 / int8
    peak_activation_bytes: int | None  # inference forward, batch 1, input included
    saved_activation_bytes: int | None  # kept for backward in training, batch 2
    layers: list[LayerCost]
    latency: Latency | None
    knobs: dict = field(default_factory=dict)
    nonzero_params: int | None = None  # trainable parameters that are not exactly zero (a pruned model's are fewer)
    file_bytes: int | None = None  # the weights file's size on disk, when profiled from one (a .sncz: as stored)
    file: str | None = None
    stored: str | None = None  # how the file holds the model when it is not smallnets weights: "ONNX int8 (QDQ) on ONNX Runtime"
    conventions: dict = field(
        default_factory=lambda: {
            "macs": MACS_CONVENTION,
            "params": "trainable parameters: conv/linear weights and biases, BatchNorm affine; not running statistics",
            "size": "every parameter at 4 / 2 / 1 bytes (BatchNorm running statistics fold into the convs on export)",
            "nonzero_params": "trainable parameters that are not exactly zero: what a sparse (pruned) file stores",
            "file_bytes": "the size of the weights file on disk, measured (a compressed .sncz as stored)",
            "peak_activation": "high-water mark of operator outputs alive at once in one eval forward at batch 1, input included",
            "saved_activation": "tensors autograd saves for backward in one train-mode forward at batch 2",
        }
    )

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def by_kind(self) -> dict[str, dict[str, float]]:
        """MACs and weights per layer kind with their shares in percent (MobileNetV1 Table 2)."""
        total_macs = sum(r.macs for r in self.layers) or 1
        total_weights = sum(r.weights for r in self.layers) or 1
        kinds: dict[str, dict[str, float]] = {}
        for r in self.layers:
            k = kinds.setdefault(r.kind, {"layers": 0, "macs": 0, "weights": 0})
            k["layers"] += 1
            k["macs"] += r.macs
            k["weights"] += r.weights
        for k in kinds.values():
            k["macs_percent"] = 100 * k["macs"] / total_macs
            k["weights_percent"] = 100 * k["weights"] / total_weights
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["macs"]))

    def to_dict(self, layers: bool = True) -> dict:
        out = {
            "model": self.model,
            "knobs": self.knobs,
            "input_size": list(self.input_size),
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "size_bytes": dict(self.size_bytes),
            "nonzero_params": self.nonzero_params,
            "file_bytes": self.file_bytes,
            "file": self.file,
            "stored": self.stored,
            "peak_activation_bytes": self.peak_activation_bytes,
            "saved_activation_bytes": self.saved_activation_bytes,
            "by_kind": self.by_kind(),
            "latency": asdict(self.latency) if self.latency else None,
            "conventions": dict(self.conventions),
        }
        if layers:
            out["layers"] = [asdict(r) for r in self.layers]
        return out

    def summary(self) -> str:
        rows = [
            ("model", f"{self.model}" + (f" ({_fmt_knobs(self.knobs)})" if self.knobs else "")),
            ("input", "x".join(map(str, self.input_size))),
            ("params", f"{self.params:,} ({self.params / 1e6:.2f} M)"),
            ("MACs", f"{self.macs:,} ({self.macs / 1e6:.1f} M mult-adds)"),
            ("FLOPs", f"{self.flops / 1e9:.3f} G (2 x MACs)"),
            ("size", " / ".join(f"{format_bytes(v, digits=2)} {k}" for k, v in self.size_bytes.items())),
        ]
        if self.nonzero_params is not None and self.nonzero_params < self.params:
            rows.insert(3, ("non-zero", f"{self.nonzero_params:,} ({100 * (1 - self.nonzero_params / max(self.params, 1)):.1f}% of the parameters are zero)"))
        if self.file_bytes is not None:
            rows.append(("on disk", f"{format_bytes(self.file_bytes, digits=2)} ({self.file})"))
        if self.stored:
            rows.append(("stored as", self.stored))
        if self.peak_activation_bytes is not None:
            rows.append(("activations", f"{format_bytes(self.peak_activation_bytes, digits=2)} peak (inference, batch 1)"))
        if self.saved_activation_bytes is not None:
            rows.append(("for backward", f"{format_bytes(self.saved_activation_bytes, digits=2)} saved (training, batch 2)"))
        if self.latency:
            lat = self.latency
            rows.append(
                (
                    "latency",
                    f"{lat.median_ms:.2f} ms median, {lat.p90_ms:.2f} ms p90 ({lat.runs} runs after {lat.warmup} warm-up; "
                    f"batch {lat.batch_size}, {lat.threads} threads, {lat.dtype}, {lat.memory_format}, {lat.device}, torch {lat.torch_version})",
                )
            )
            rows.append(("throughput", f"{lat.throughput:.1f} images/s"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def kind_table(self) -> str:
        lines = [f"{'kind':<16}{'layers':>7}{'MACs':>16}{'MACs %':>9}{'weights':>13}{'weights %':>11}"]
        for kind, k in self.by_kind().items():
            lines.append(
                f"{kind:<16}{k['layers']:>7}{k['macs']:>16,}{k['macs_percent']:>8.2f}%{k['weights']:>13,}{k['weights_percent']:>10.2f}%"
            )
        return "\n".join(lines)

    def layer_table(self) -> str:
        total = self.macs or 1
        name_w = max([len("layer")] + [len(r.name) for r in self.layers])
        lines = [f"{'layer':<{name_w}}  {'kind':<14}{'output':>16}{'params':>12}{'MACs':>15}{'%':>7}"]
        for r in self.layers:
            shape = "x".join(map(str, r.out_shape))
            lines.append(f"{r.name:<{name_w}}  {r.kind:<14}{shape:>16}{r.params:>12,}{r.macs:>15,}{100 * r.macs / total:>6.2f}%")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def profile(
    model: nn.Module | str,
    input_size=None,
    *,
    latency: bool = True,
    memory: bool = True,
    batch_size: int = 1,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 10.0,
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    device: str | torch.device = "cpu",
    file: str | os.PathLike | None = None,
    **knobs,
) -> CostReport:
    """Cost report of a model (a module, or a zoo name built with ``knobs``) at ``input_size``.

    ``input_size`` is (C, H, W); it defaults to the zoo entry's paper resolution, or 3x224x224.
    Counts (params, MACs, size, per-layer table) are exact; activation memory and latency are
    measured on this machine (``latency=False`` / ``memory=False`` skip them). ``file``: the weights
    file the model was loaded from, whose size on disk the report gives (a pruned or compressed
    file's real cost); non-zero parameters are always counted, so sparsity shows.
    """
    from smallnets.registry import list_models
    from smallnets.zoo import create_model

    if isinstance(model, str):
        name = model
        # counts alone: built on the meta device (no weights drawn; VGG-16's 138 M or PolyNet's 95 M take seconds to initialise)
        with torch.device("meta") if not (latency or memory) else contextlib.nullcontext():
            net = create_model(name, **knobs)
        net_knobs = {k: v for k, v in knobs.items()}
        built_with = net.smallnets_config["knobs"]
    else:
        if knobs:
            raise TypeError(f"knobs ({', '.join(knobs)}) can only be given with a model name, not a built model")
        net = model
        cfg = getattr(model, "smallnets_config", None)
        name = cfg["name"] if cfg else type(model).__name__
        net_knobs = {}
        built_with = cfg["knobs"] if cfg else {}
    if input_size is None:
        input_size = default_input_size(name, built_with) if name in list_models() else (3, 224, 224)
    input_size = _check_input_size(input_size)
    check_input_side(net, input_size, name=name)
    layers = count_layers(net, input_size)
    n_params = sum(p.numel() for p in net.parameters())
    meta = next(net.parameters()).is_meta if n_params else False
    return CostReport(
        model=name,
        input_size=input_size,
        params=count_params(net),
        macs=sum(r.macs for r in layers),
        size_bytes={k: n_params * b for k, b in BYTES_PER_PARAM.items()},
        peak_activation_bytes=peak_activation_bytes(net, input_size) if memory and not meta else None,
        saved_activation_bytes=saved_activation_bytes(net, input_size) if memory and not meta else None,
        layers=layers,
        latency=(
            measure_latency(
                net,
                input_size,
                batch_size=batch_size,
                warmup=warmup,
                runs=runs,
                max_seconds=max_seconds,
                threads=threads,
                dtype=dtype,
                channels_last=channels_last,
                device=device,
            )
            if latency and not meta
            else None
        ),
        knobs=net_knobs,
        nonzero_params=None if meta else sum(int(torch.count_nonzero(p)) for p in net.parameters() if p.requires_grad),
        file_bytes=None if file is None else Path(file).stat().st_size,
        file=None if file is None else str(file),
    )


def profile_onnx(
    path: str | os.PathLike,
    *,
    latency: bool = True,
    batch_size: int = 1,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 10.0,
    threads: int | None = None,
) -> CostReport:
    """Cost report of an exported or quantized ONNX file: the counts (params, MACs, per-layer
    table) of the architecture its metadata records, its real size on disk as stored (int8 weights
    for a quantized file), and latency measured on ONNX Runtime at the file's input size. The
    activation memory is the PyTorch model's and is left out (ONNX Runtime plans its own)."""
    import dataclasses

    from smallnets.arch.spec import ArchSpec
    from smallnets.onnx_module import OnnxModule
    from smallnets.zoo import build_model

    module = OnnxModule(path, threads=threads)
    md = module.runner.metadata
    if not md.get("spec"):
        raise ValueError(f"path must be an ONNX file exported by smallnets (its metadata records the architecture), got {os.fspath(path)!r} "
                         "which has no smallnets.spec")  # fmt: skip
    with torch.device("meta"):
        net = build_model(ArchSpec.from_dict(md["spec"]))
    cfg = md.get("config") or {}
    net.smallnets_config = {"name": cfg.get("name") or md.get("model") or Path(path).stem, "num_classes": net.spec.num_classes,
                            "in_chans": net.spec.in_chans, "knobs": cfg.get("knobs") or {}}  # fmt: skip
    shape = (md.get("input") or {}).get("shape") or []
    crop = int((module.runner.preprocessing or {}).get("crop") or 224)
    input_size = tuple(int(v) for v in shape[1:]) if len(shape) == 4 else (net.spec.in_chans, crop, crop)
    report = profile(net, input_size, latency=False, memory=False, file=path)
    precision = module.runner.precision
    quant = md.get("quantization") or {}
    stored = f"ONNX {precision}" + (f" ({quant.get('format', 'QDQ')}, {quant.get('weights', 'int8 weights')})" if precision == "int8" else "") + " on ONNX Runtime"
    lat = None
    if latency:
        if isinstance(shape[0] if shape else None, int) and shape[0] != batch_size:
            raise ValueError(f"batch_size must be {shape[0]} for {os.fspath(path)!r} (exported with a fixed batch), got {batch_size}")
        lat = measure_latency(module, input_size, batch_size=batch_size, warmup=warmup, runs=runs, max_seconds=max_seconds, threads=threads)
        lat = dataclasses.replace(lat, dtype=precision, device=f"cpu, ONNX Runtime {_ort_version()}",
                                  threads=threads if threads is not None else (os.cpu_count() or 1))  # ORT's default: one per core
    return dataclasses.replace(report, latency=lat, stored=stored)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def default_input_size(name: str, knobs: Mapping[str, Any]) -> tuple[int, int, int]:
    """The input a zoo model is profiled at by default: the paper's resolution, 32 px for a CIFAR stem."""
    from smallnets.registry import model_info

    return (3, 32, 32) if knobs.get("cifar") is True else tuple(model_info(name).input_size)


def _meta_forward(fn, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` with every parameter and buffer of ``net`` swapped for a meta tensor: shapes only,
    no arithmetic and no memory, whatever the input side."""

    class _Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, inp):
            return fn(inp)

    state = {f"net.{k}": v.to("meta") for k, v in [*net.named_parameters(), *net.named_buffers()]}
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(_Call(), state, (x.to("meta"),))
    finally:
        net.train(was_training)


def _total_stride(side: int, out_side: int) -> int:
    """The power of two a ``side`` px input shrinks by to ``out_side``: unpadded layers (PolyNet's stem,
    SqueezeNet's ceil-mode pools) take a few pixels more than the strides alone (1024 -> 30 is stride 32)."""
    return 2 ** max(0, round(math.log2(side / out_side)))


def min_input_side(net: nn.Module, in_chans: int = 3) -> tuple[int, int]:
    """(smallest input side, total stride) of a zoo model.

    The total stride is measured at a 1024 px input (on meta tensors: shapes only). Below it the
    last stages see maps that padding alone keeps alive (Xception at 10 px ends 1x1 from its
    second stage on); a network with unpadded layers (SqueezeNet's 7x7 stem and ceil-mode pools)
    needs a few pixels more, the smallest side at which its forward still runs.
    """
    big = 1024
    out = _meta_forward(net.forward_features, net, torch.empty(1, in_chans, big, big))
    stride = _total_stride(big, out.shape[-1])
    side = stride
    while side < big:
        try:
            _meta_forward(net.forward_features, net, torch.empty(1, in_chans, side, side))
            break
        except RuntimeError:  # "output size is too small" from an unpadded conv or pool
            side += 1
    return side, stride


def check_input_side(net: nn.Module, input_size: tuple[int, int, int], *, name: str) -> None:
    """Refuse an input too small for a zoo model's total stride, naming the minimum."""
    if not hasattr(net, "forward_features"):  # any other module: its own forward will say
        return
    big = 1024
    stride = _total_stride(big, _meta_forward(net.forward_features, net, torch.empty(1, input_size[0], big, big)).shape[-1])
    if min(input_size[1:]) >= stride:
        try:  # runs at the requested size: at least the smallest side that runs (the search is for the message)
            _meta_forward(net.forward_features, net, torch.empty(1, *input_size))
            return
        except RuntimeError:
            pass
    side, stride = min_input_side(net, input_size[0])
    if min(input_size[1:]) < side:
        raise ValueError(f"input_size of {name} must be at least {side}x{side} (total stride {stride}: smaller maps vanish), "
                         f"got {input_size[1]}x{input_size[2]}")  # fmt: skip


def _check_input_size(input_size) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"input_size must be (channels, height, width) of positive ints, got {input_size!r}")
    return size


def _fmt_knobs(knobs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items())
