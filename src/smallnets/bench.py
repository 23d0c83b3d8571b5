"""Inference latency of one model across backends, measured side by side on this machine.

Backends (``BACKENDS``):

* ``eager``: PyTorch eager, fp32, NCHW, ``inference_mode`` (the baseline a user has);
* ``torchscript``: traced, frozen and ``optimize_for_inference`` (BatchNorm folded, oneDNN
  layouts), fp32;
* ``bf16``: BatchNorm folded, channels-last, bfloat16 weights and activations (AVX-512 BF16);
* ``compile``: ``torch.compile`` (Inductor, fp32): minutes of compilation on a small CPU, so only
  when asked for;
* ``best-torch``: the fastest of eager / torchscript / bf16 at each batch size, as measured in
  this run (smallnets' best PyTorch path; which one it was is reported);
* ``ort``: ONNX Runtime on ``smallnets export``'s fp32 file;
* ``ort-plain``: ONNX Runtime on a plain ``torch.onnx.export`` of the unmodified model (what one
  would do by hand);
* ``ort-int8``: ONNX Runtime on ``smallnets quantize``'s int8 QDQ file;
* ``ort-int8-default``: ONNX Runtime's own ``quantize_static`` with its defaults (no
  pre-processing, per-tensor weights, int8 activations), for comparison.

Timing is interleaved: ``rounds`` passes over the backends, ``runs`` timed calls each per pass
(after two untimed ones: the previous backend's threads settle), after warm-up, so that the
machine's drift hits every backend alike; the median and the 90th
percentile of all timed calls are reported with throughput. Peak memory is the process's peak
resident set (Linux ``VmHWM``, reset before each backend) above what it held before that backend
was built: its weights, workspace and activations for the largest batch.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smallnets._checks import check_int

__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "BenchReport", "bench", "best_torch", "prepare_torch"]

TORCH_BACKENDS = ("eager", "torchscript", "bf16", "compile")
ORT_BACKENDS = ("ort", "ort-plain", "ort-int8", "ort-int8-default")
BACKENDS = (*TORCH_BACKENDS, "best-torch", *ORT_BACKENDS)
DEFAULT_BACKENDS = ("eager", "torchscript", "bf16", "best-torch", "ort", "ort-plain", "ort-int8", "ort-int8-default")


def _rss_mb(field_name: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def prepare_torch(model: nn.Module, backend: str, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
    """A callable running ``model`` as ``backend`` (eager | torchscript | bf16 | compile) on fp32 NCHW input."""
    from smallnets.export import fold_batchnorm

    net = copy.deepcopy(model).eval().float()
    if backend == "eager":
        return net
    if backend == "torchscript":
        import warnings

        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, and still the fastest fp32 path here at batch 32
            return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, example)))
    if backend == "bf16":
        folded = fold_batchnorm(net).to(torch.bfloat16).to(memory_format=torch.channels_last)

        def run(x: torch.Tensor):
            return folded(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()

        return run
    if backend == "compile":
        compiled = torch.compile(fold_batchnorm(net))
        with torch.inference_mode():
            compiled(example)  # compile now, not inside the timed runs
        return compiled
    raise ValueError(f"backend must be one of {', '.join(TORCH_BACKENDS)}, got {backend!r}")


@dataclass
class BenchRow:
    backend: str
    batch: int
    median_ms: float
    p90_ms: float
    images_per_s: float
    peak_mb: float | None  # peak resident memory above the process before this backend was built
    note: str = ""


@dataclass
class BenchReport:
    model: str
    input_size: list[int]
    threads: int
    rows: list[BenchRow]
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self, backend: str, batch: int) -> BenchRow | None:
        return next((r for r in self.rows if r.backend == backend and r.batch == batch), None)

    def table(self) -> str:
        batches = sorted({r.batch for r in self.rows})
        backends = list(dict.fromkeys(r.backend for r in self.rows))
        base = {b: self.row("eager", b) or self.row(backends[0], b) for b in batches}
        head = "| backend | " + " | ".join(f"b{b} median / p90 (ms) | b{b} img/s | b{b} vs {base[b].backend}" for b in batches) + " | peak MB | note |"
        lines = [head, "|---" * (2 + 3 * len(batches)) + "|"]
        for name in backends:
            cells = []
            peak, note = None, ""
            for b in batches:
                r = self.row(name, b)
                if r is None:
                    cells += ["—", "—", "—"]
                    continue
                cells += [f"{r.median_ms:.2f} / {r.p90_ms:.2f}", f"{r.images_per_s:,.0f}", f"{base[b].median_ms / r.median_ms:.2f}x"]
                peak = r.peak_mb if r.peak_mb is not None else peak
                note = r.note or note
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {'—' if peak is None else f'{peak:.0f}'} | {note} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        out = [f"{self.model} at {self.input_size}, {self.threads} thread(s)", self.table()]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


# Calls left untimed at the start of every pass: on 2 cores the previous backend's worker threads
# (ONNX Runtime's spinning pool, PyTorch's OpenMP team) keep running for a few milliseconds after it
# returns, and timed at once the next backend's first calls measured that (batch-1 medians up to 2x
# off with 6 runs per pass; in deployment one backend runs alone).
SETTLE_RUNS = 2


def _time(fns: dict[str, Callable], make_input: Callable[[str], Any], *, rounds: int, runs: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    inputs = {k: make_input(k) for k in fns}
    with torch.inference_mode():
        for k, fn in fns.items():
            for _ in range(warmup):
                fn(inputs[k])
        for _ in range(rounds):
            for k, fn in fns.items():
                x = inputs[k]
                for _ in range(SETTLE_RUNS):  # untimed: the backend before this one may still hold the cores
                    fn(x)
                for _ in range(runs):
                    t = time.perf_counter()
                    fn(x)
                    times[k].append((time.perf_counter() - t) * 1e3)
    return times


def best_torch(model: nn.Module, input_size: Sequence[int], batch: int, *, runs: int = 10) -> tuple[str, Callable]:
    """The fastest of eager / torchscript / bf16 for ``model`` at ``batch`` on this machine, as (name, callable)."""
    example = torch.zeros(batch, *input_size)
    fns = {b: prepare_torch(model, b, example) for b in ("eager", "torchscript", "bf16")}
    times = _time(fns, lambda _: example, rounds=2, runs=runs, warmup=2)
    name = min(times, key=lambda k: float(np.median(times[k])))
    return name, fns[name]


def _plain_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """What a user would do by hand: ``torch.onnx.export`` of the model as it is, defaults otherwise."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(copy.deepcopy(model).eval(), (example,), os.fspath(path), dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))  # fmt: skip
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ort_default_int8(fp32_onnx: Path, out: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime's ``quantize_static`` with its defaults, on the graph as exported."""
    from onnxruntime.quantization import quantize_static

    import onnx

    from smallnets.quantization import _Reader

    import logging

    name = onnx.load(os.fspath(fp32_onnx)).graph.input[0].name
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process first is the point of this comparison, not news
    try:
        quantize_static(os.fspath(fp32_onnx), os.fspath(out), _Reader(calibration, name, None))
    finally:
        root.setLevel(level)


def _load_target(target) -> tuple[nn.Module | None, str, Path | None, Path | None]:
    """(model, description, run directory, onnx file)."""
    from smallnets.zoo import create_model, load_weights

    if isinstance(target, nn.Module):
        cfg = getattr(target, "smallnets_config", None) or {}
        return target, cfg.get("name") or type(target).__name__, None, None
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(f"target must be a model, a zoo name, weights, a run directory or an .onnx file, got {type(target).__qualname__}")
    p = Path(target)
    if p.suffix == ".onnx":
        return None, p.name, None, p
    if p.exists():
        from smallnets.rundir import RunDir

        run = p if p.is_dir() and RunDir.is_run(p) else (p.parent if RunDir.is_run(p.parent) else None)
        return load_weights(p).eval(), os.fspath(p), run, None
    from smallnets.registry import list_models

    if os.fspath(target) not in list_models():
        raise ValueError(f"target must be a run directory, a weights file, an .onnx file or a zoo model name; "
                         f"{os.fspath(target)!r} is no existing path and no zoo model")  # fmt: skip
    return create_model(os.fspath(target)).eval(), os.fspath(target), None, None


def bench(
    target: nn.Module | str | os.PathLike,
    *,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    batches: Sequence[int] = (1, 32),
    threads: int | None = None,
    input_size: Sequence[int] | None = None,
    rounds: int = 3,
    runs: int = 10,
    warmup: int = 3,
    calibration: np.ndarray | str | os.PathLike | Sequence | None = None,
    calib: int = 128,
    work_dir: str | os.PathLike | None = None,
) -> BenchReport:
    """Latency of ``target`` (a model, zoo name, weights file, run directory or .onnx file) on each of
    ``backends`` at each of ``batches`` (see the module docstring). int8 backends calibrate on
    ``calibration`` (images or a float NCHW array), else on a run's training images, else on
    random normal inputs (then the int8 figures are for speed only, and the report says so)."""
    from smallnets.compare import environment
    from smallnets.runtime import OnnxClassifier

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be some of {', '.join(BACKENDS)}, got {list(backends)!r}")
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batches must be integers >= 1, got {list(batches)!r}")
    for name, v in (("rounds", rounds), ("runs", runs)):
        check_int(name, v)
    check_int("warmup", warmup, minimum=0)
    if threads is not None:
        check_int("threads", threads)
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    model, described, run, onnx_file = _load_target(target)
    notes: list[str] = []
    if onnx_file is not None:
        wrong = [b for b in backends if b not in ("ort", "ort-int8")]
        if wrong:
            raise ValueError(f"an .onnx target runs on ONNX Runtime only: backends must be 'ort' (or 'ort-int8' for an int8 file), got {wrong}")
        runner = OnnxClassifier(onnx_file, threads=threads)
        size = [int(v) for v in runner.metadata.get("input", {}).get("shape", [0, 3, runner.preprocessing["crop"], runner.preprocessing["crop"]])[1:]]
        backends = [runner.precision == "int8" and "ort-int8" or "ort"]
    else:
        from smallnets.export import _input_size

        meta = getattr(model, "smallnets_meta", None) or {}
        size = list(input_size) if input_size is not None else list(_input_size(model, meta.get("preprocessing")))
    peaks: dict[str, float | None] = {}
    rows: list[BenchRow] = []
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="smallnets-bench-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fns_by_batch: dict[int, dict[str, Callable]] = {b: {} for b in batches}
        feeds: dict[str, str] = {}  # backend -> "torch" | "numpy"
        biggest = torch.zeros(max(batches), *size)

        def measure_peak(name: str, build: Callable[[], Callable], feed: str) -> Callable:
            _reset_peak()
            before = _rss_mb("VmRSS")
            fn = build()
            with torch.inference_mode():
                fn(biggest if feed == "torch" else biggest.numpy())
            after = _rss_mb("VmHWM")
            peaks[name] = None if before is None or after is None else max(after - before, 0.0)
            return fn

        onnx_paths: dict[str, Path] = {}
        if onnx_file is not None:
            onnx_paths[backends[0]] = onnx_file
        else:
            need_export = any(b in ("ort", "ort-int8") for b in backends)
            if need_export:
                from smallnets.export import export_onnx

                onnx_paths["ort"] = work / "model.onnx"
                export_onnx(model, onnx_paths["ort"], input_size=tuple(size), overwrite=True)
            if "ort-plain" in backends:
                onnx_paths["ort-plain"] = work / "plain.onnx"
                _plain_onnx(model, torch.zeros(2, *size), onnx_paths["ort-plain"])
            if any(b.startswith("ort-int8") for b in backends):
                from smallnets.quantization import _images_array, calibration_files, quantize_onnx

                if calibration is not None:
                    calib_x = _images_array(calibration, OnnxClassifier(onnx_paths["ort"]).preprocessing, calib)
                elif run is not None:
                    calib_x = _images_array(calibration_files(run, calib), OnnxClassifier(onnx_paths["ort"]).preprocessing, calib)
                else:
                    calib_x = np.random.default_rng(0).standard_normal((min(calib, 64), *size)).astype(np.float32)
                    notes.append("int8 calibrated on random inputs (no images given, no run): its latency holds, not its accuracy")
                if "ort-int8" in backends:
                    onnx_paths["ort-int8"] = work / "model.int8.onnx"
                    quantize_onnx(onnx_paths["ort"], onnx_paths["ort-int8"], calib_x, overwrite=True)
                if "ort-int8-default" in backends:
                    onnx_paths["ort-int8-default"] = work / "default.int8.onnx"
                    _ort_default_int8(onnx_paths["ort-plain"] if "ort-plain" in onnx_paths else onnx_paths["ort"], onnx_paths["ort-int8-default"], calib_x)
        if work_dir is not None:
            files = {k: os.fspath(v) for k, v in onnx_paths.items()}
        # the plain and default-quantized files carry no smallnets metadata: they run with our export's preprocessing
        prep = OnnxClassifier(onnx_paths["ort"] if "ort" in onnx_paths else next(iter(onnx_paths.values()))).preprocessing if onnx_paths else None
        chosen: dict[int, str] = {}
        for b in batches:
            example = torch.zeros(b, *size)
            for name in backends:
                if name == "best-torch":
                    pick, fn = best_torch(model, size, b, runs=max(3, runs // 2))
                    chosen[b] = pick
                    fns_by_batch[b][name], feeds[name] = fn, "torch"
                elif name in TORCH_BACKENDS:
                    if b == batches[0]:
                        fns_by_batch[b][name] = measure_peak(name, lambda n=name: prepare_torch(model, n, example), "torch")
                    else:
                        fns_by_batch[b][name] = prepare_torch(model, name, example) if name != "eager" else fns_by_batch[batches[0]][name]
                    feeds[name] = "torch"
                else:
                    if b == batches[0]:
                        fns_by_batch[b][name] = measure_peak(name, lambda n=name: OnnxClassifier(onnx_paths[n], threads=threads, preprocessing=prep), "numpy")
                    else:
                        fns_by_batch[b][name] = fns_by_batch[batches[0]][name]
                    feeds[name] = "numpy"
        for b in batches:
            x = torch.zeros(b, *size)
            times = _time(fns_by_batch[b], lambda k: x if feeds[k] == "torch" else x.numpy(), rounds=rounds, runs=runs, warmup=warmup)
            for name, t in times.items():
                med = float(np.median(t))
                rows.append(BenchRow(name, b, med, float(np.percentile(t, 90)), b * 1e3 / med, peaks.get(name),
                                     f"= {chosen[b]}" if name == "best-torch" else ""))  # fmt: skip
    if "ort-int8-default" in backends:
        notes.append("ort-int8-default: onnxruntime.quantization.quantize_static with its defaults on the plain export (no pre-processing)")
    return BenchReport(model=described, input_size=[int(v) for v in size], threads=threads, rows=rows, files=files, notes=notes,
                       environment=environment())  # fmt: skip


def plot_bench(report: BenchReport, out_png: str | os.PathLike) -> Path:
    """Bars of median latency per backend, one panel per batch size, with the ratio to eager."""
    from smallnets.plots import _new_figure, _png_path, _save

    out = _png_path(out_png)
    batches = sorted({r.batch for r in report.rows})
    fig = _new_figure(4.2 * len(batches), 0.45 * len({r.backend for r in report.rows}) + 1.6)
    axes = fig.subplots(1, len(batches), squeeze=False)[0]
    for ax, b in zip(axes, batches):
        rows = [r for r in report.rows if r.batch == b]
        base = report.row("eager", b) or rows[0]
        y = np.arange(len(rows))
        ax.barh(y, [r.median_ms for r in rows], color=["#8da0cb" if r.backend == base.backend else "#66c2a5" for r in rows])
        for yi, r in zip(y, rows):
            ax.text(r.median_ms, yi, f" {r.median_ms:.2f} ms ({base.median_ms / r.median_ms:.2f}x)", va="center", fontsize=7)
        ax.set_yticks(y, [r.backend + (f" {r.note}" if r.note else "") for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, max(r.median_ms for r in rows) * 1.6)
        ax.set_title(f"batch {b}: median latency (ms)", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{report.model} at {report.input_size[1]}x{report.input_size[2]}, {report.threads} thread(s)", fontsize=10)
    return _save(fig, out, 110)


def write_bench(report: BenchReport, out_json: str | os.PathLike) -> tuple[Path, Path]:
    from smallnets._io import atomic_write_text

    out_json = Path(out_json)
    atomic_write_text(out_json, json.dumps(report.to_dict(), indent=2) + "\n")
    return out_json, plot_bench(report, out_json.with_suffix(".png"))
