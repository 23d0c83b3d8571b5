"""int8 post-training static quantization of an exported model, on ONNX Runtime.

``quantize(model_or_weights, calibration, "model.int8.onnx")``:

1. the fp32 model is exported as ``smallnets.export.export_onnx`` does (BatchNorm folded);
2. the graph is pre-processed as ONNX Runtime's quantizer needs (``quant_pre_process``: shape
   inference and graph optimisation, which also fuses Conv + activation patterns first);
   without this step the quantized graph runs 3-4x *slower* than fp32 on this CPU;
3. activation ranges are calibrated on ``calibration`` images prepared with the model's own
   evaluation preprocessing (``minmax``, ``percentile`` or ``entropy``);
4. ONNX Runtime's static quantizer writes a QDQ graph: int8 weights quantized per output channel
   and symmetrically (per-tensor weights ruin depthwise convolutions, whose filters' ranges differ
   by orders of magnitude), uint8 activations with zero points (the u8s8 kernels of x86 VNNI).
   Op types named in ``keep_fp32`` stay in fp32 (for example ``Sigmoid``/``Mul`` of SiLU and
   squeeze-and-excitation when their quantize/dequantize pairs cost more than they save);
5. the file's metadata is the fp32 export's plus ``precision=int8`` and the settings used, and
   the int8 graph is checked against the fp32 one on ``check_images`` (top-1 agreement).

Why ONNX Runtime: its QDQ graphs run on its x86 int8 kernels (VNNI) in the same runtime a
deployment uses without PyTorch, and ``benchmarks/inference.py`` measures it against the
alternatives on this machine.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from smallnets._checks import check_bool, check_choice, check_int, check_range
from smallnets._io import atomic_path, check_new_file

__all__ = ["CALIBRATION_METHODS", "ActivationRanges", "QuantizeReport", "calibration_files", "quantize", "quantize_onnx"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass
class QuantizeReport:
    path: str
    bytes: int
    fp32_bytes: int
    method: str
    calibration_images: int
    per_channel: bool
    keep_fp32: list[str]
    ops: dict[str, int]  # the written QDQ graph
    ops_as_run: dict[str, int]  # what ONNX Runtime runs after its fusions (QLinearConv, QLinearAdd, ...)
    top1_agreement: float | None  # int8 vs fp32 on the check images
    check_images: int
    seconds: float
    fp32_path: str | None = None
    notes: list[str] = field(default_factory=list)
    # with activation_ranges: labels given / matched, and the quantized activation tensors that carry them of all
    carried_ranges: dict[str, int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        q = sum(v for k, v in self.ops_as_run.items() if k in ("QuantizeLinear", "DequantizeLinear"))
        int8 = sum(v for k, v in self.ops_as_run.items() if k.startswith("QLinear") or k in ("QGemm", "MatMulInteger", "ConvInteger"))
        out = [f"wrote {self.path} ({self.bytes:,} bytes, int8; fp32 {self.fp32_bytes:,} bytes: {self.fp32_bytes / max(self.bytes, 1):.2f}x smaller)",
               f"calibration: {self.calibration_images} images, {self.method}; weights int8 per {'channel' if self.per_channel else 'tensor'} "
               f"symmetric, activations uint8" + (f"; kept in fp32: {', '.join(self.keep_fp32)}" if self.keep_fp32 else ""),
               f"as ONNX Runtime runs it: {int8} int8 ops, {q} quantize/dequantize nodes left: "
               + ", ".join(f"{k} {v}" for k, v in sorted(self.ops_as_run.items(), key=lambda kv: -kv[1]))]  # fmt: skip
        if self.top1_agreement is not None:
            out.append(f"check: int8 and fp32 agree on the top-1 class of {100 * self.top1_agreement:.1f}% of {self.check_images} images")
        if self.carried_ranges is not None:
            c = self.carried_ranges
            out.append(f"activation ranges: {c['quantized_carrying']} of the {c['quantized']} quantized activation tensors carry the given "
                       f"ranges ({c['matched_labels']} of {c['labels']} labels matched), the rest calibrated")  # fmt: skip
        out += [f"note: {n}" for n in self.notes]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def calibration_files(run_dir: str | os.PathLike, count: int, seed: int = 0) -> list[str]:
    """``count`` image files of a run's data that are not in its validation split (split.json),
    drawn evenly over the classes with ``seed``: calibration never sees a validation image."""
    from smallnets.rundir import RunDir

    check_int("count", count)
    past = RunDir(Path(run_dir)).read_back()
    split = past.split or {}
    val = set(split.get("val_files") or [])
    if not val:
        raise ValueError(f"{run_dir}: its split.json lists no validation files, so calibration images cannot be kept "
                         "off them; pass calibration images yourself (--calib-data)")  # fmt: skip
    data = (split.get("source") or {}).get("path") or past.config.data.path
    if (split.get("source") or {}).get("kind") not in (None, "folder", "archive"):
        raise ValueError(f"{run_dir}: calibration from the run's data reads class folders and archives, not {data!r}; "
                         "pass calibration images yourself (--calib-data)")  # fmt: skip
    from smallnets.data.sources import ArchiveSource, FolderSource, is_archive

    source = ArchiveSource(Path(data)) if is_archive(Path(data)) else FolderSource(Path(data), follow_links=past.config.data.follow_links)
    catalog = source.catalog(None)  # the listing the trainer split: names as split.json records them
    by_class: dict[int, list[str]] = {}
    for name, label, part in zip(catalog.names, catalog.labels, catalog.parts):
        if part != "train" or name in val:  # a val/ folder of the data is held out too
            continue
        by_class.setdefault(label, []).append(name)
    if not by_class:
        raise ValueError(f"{run_dir}: its data {data!r} holds no training image outside the validation split; pass calibration images yourself (--calib-data)")
    rng = random.Random(seed)
    for names in by_class.values():
        rng.shuffle(names)
    picked: list[str] = []
    while len(picked) < count and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(picked) < count:
                picked.append(by_class[label].pop())
    if isinstance(source, ArchiveSource):
        return [f"{data}::{n}" for n in picked]
    return [os.path.join(str(data), *n.split("/")) for n in picked]


def _images_array(images, preprocessing: dict, limit: int | None = None) -> np.ndarray:
    """float32 NCHW of image files / folders (or ``ARCHIVE::member`` names), or an array passed through."""
    from smallnets.imaging import UnreadableImageError, decode_image, eval_pixels, load_image, norm_constants_np, normalize_np

    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"calibration must be image paths or a float NCHW array, got an array of shape {images.shape}")
        return images.astype(np.float32, copy=False)[:limit]
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    archive_members = [i for i in items if isinstance(i, str) and "::" in i]
    pixels, skipped = [], []
    if archive_members:
        from smallnets.data.sources import ArchiveSource

        by_archive: dict[str, list[str]] = {}
        for item in archive_members:
            arch, member = item.split("::", 1)
            by_archive.setdefault(arch, []).append(member)
        for arch, members in by_archive.items():
            for name, data in ArchiveSource(Path(arch)).read(members[:limit]):
                try:
                    if not isinstance(data, bytes):
                        raise UnreadableImageError(name, str(data))
                    pixels.append(eval_pixels(decode_image(data, name), preprocessing))
                except UnreadableImageError as e:
                    skipped.append(e.name)
    others = [i for i in items if not (isinstance(i, str) and "::" in i)]
    if others:
        from smallnets.data.listing import find_images

        for p in find_images(others):
            if limit is not None and len(pixels) >= limit:
                break
            try:
                pixels.append(eval_pixels(load_image(p), preprocessing))
            except UnreadableImageError as e:
                skipped.append(e.name)
    if skipped:
        warnings.warn(f"left out {len(skipped)} unreadable image(s): {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}", stacklevel=3)
    if not pixels:
        raise ValueError("calibration must name at least one readable image, got none")
    shift, scale = norm_constants_np(preprocessing["mean"], preprocessing["std"])
    return normalize_np(np.stack(pixels[:limit] if limit else pixels), shift, scale)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a float32 array, in batches."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int | None):
        self.x, self.name, self.batch = x, input_name, batch or 32
        self.fixed = batch is not None
        self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        chunk = self.x[self.i : self.i + self.batch]
        self.i += self.batch
        if self.fixed and len(chunk) < self.batch:
            chunk = np.concatenate([chunk, self.x[: self.batch - len(chunk)]])
        return {self.name: chunk}

    def rewind(self):
        self.i = 0


def _names_after_preprocessing(source, pre, wanted: Sequence[str]) -> list[str]:
    """The pre-processed graph's names of the source graph's nodes ``wanted`` (the pre-processing
    renames nodes): the node computing the same output tensor, else the one reading the same weight."""
    by_name = {n.name: n for n in source.graph.node}
    inits = {i.name for i in pre.graph.initializer}
    by_output = {o: n.name for n in pre.graph.node for o in n.output}
    by_weight = {i: n.name for n in pre.graph.node for i in n.input[1:] if i in inits}
    out = []
    for name in wanted:
        node = by_name[name]
        match = next((by_output[o] for o in node.output if o in by_output), None)
        if match is None:
            match = next((by_weight[i] for i in node.input[1:] if i in by_weight), None)
        if match is None:
            raise ValueError(f"keep_fp32 node {name!r} ({node.op_type}) has no counterpart in the pre-processed graph; name its op type instead")
        out.append(match)
    return out


@dataclass
class ActivationRanges:
    """Activation ranges to write into an int8 file instead of calibrated ones (the ranges a
    quantization-aware training run trained with). Keyed by labels of the caller's (QAT's observer
    names, ``LAYER.output``): ``ranges`` the (min, max) to use; ``reference`` each label's fp32
    statistics (:class:`smallnets.qat.TensorStats`: min, max, mean, per-image shape) on the first
    ``images`` calibration images. :func:`quantize_onnx` measures every tensor of the graph on the
    same images and gives each label the tensors whose statistics are its reference (the same
    shape; min, max and mean within ``rtol`` of the range's width; the nearest), so that no name
    has to survive export and ONNX Runtime's pre-processing."""

    ranges: Mapping[str, tuple[float, float]]
    reference: Mapping[str, Any]  # label -> TensorStats
    images: int
    rtol: float = 1e-3

    def match(self, measured: Mapping[str, Any]) -> dict[str, str]:
        """{ONNX tensor: label} for the tensors of ``measured`` ({tensor: TensorStats}) a label's reference matches."""
        by_shape: dict[tuple, list[tuple[str, Any]]] = {}
        for tensor, st in measured.items():
            by_shape.setdefault(tuple(st.shape), []).append((tensor, st))
        best: dict[str, tuple[float, str]] = {}  # tensor -> (distance, label)
        for label, ref in self.reference.items():
            if label not in self.ranges:
                continue
            tol = self.rtol * max(ref.high - ref.low, 1e-12)
            for tensor, st in by_shape.get(tuple(ref.shape), []):
                dist = max(abs(st.low - ref.low), abs(st.high - ref.high), abs(st.mean - ref.mean))
                # a pass-through (Reshape, Identity) holds the same values: it takes the same range
                if dist <= tol and (tensor not in best or dist < best[tensor][0]):
                    best[tensor] = (dist, label)
        return {t: label for t, (_, label) in best.items()}


def _tensor_stats(model_path: Path, x: np.ndarray, input_name: str, batch: int | None) -> dict:
    """{tensor: TensorStats} of every float tensor of the graph at ``model_path`` on images ``x``
    (ONNX Runtime, graph optimisations off so that every tensor is computed as named)."""
    import onnx
    import onnxruntime as ort

    from smallnets.qat import TensorStats

    model = onnx.load(os.fspath(model_path))
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    acc: dict[str, list] = {}
    step = batch or 8
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        n = len(chunk)
        if batch is not None and n < batch:  # a fixed-batch export: padded; only the real images count
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - n, axis=0)])
        for name, value in [(input_name, chunk), *zip(names, session.run(names, {input_name: chunk}))]:  # the image is quantized too
            if not (isinstance(value, np.ndarray) and value.dtype == np.float32 and value.ndim >= 1 and len(value) == len(chunk)):
                continue
            v = value[:n]
            lo, hi, total = float(v.min()), float(v.max()), float(v.sum(dtype=np.float64))
            if name in acc:
                a = acc[name]
                a[0], a[1], a[2], a[3] = min(a[0], lo), max(a[1], hi), a[2] + total, a[3] + v.size
            else:
                acc[name] = [lo, hi, total, v.size, tuple(v.shape[1:])]
    return {k: TensorStats(lo, hi, total / count, shape) for k, (lo, hi, total, count, shape) in acc.items()}


def quantize_onnx(
    fp32_onnx: str | os.PathLike,
    out: str | os.PathLike,
    calibration,
    *,
    method: str = "minmax",
    percentile: float = 99.999,
    per_channel: bool = True,
    keep_fp32: Sequence[str] = (),
    calibration_count: int | None = 512,
    check_images=None,
    overwrite: bool = False,
    preprocess: bool = True,
    activation_ranges: ActivationRanges | None = None,
) -> QuantizeReport:
    """int8 QDQ from an fp32 ONNX file written by ``smallnets export`` (its metadata gives the
    preprocessing for ``calibration``; see the module docstring). ``activation_ranges``: ranges
    of one's own (a QAT run's) for the tensors they match, calibrated ranges for the rest."""
    check_choice("method", method, CALIBRATION_METHODS)
    check_range("percentile", percentile, 90.0, 100.0, low_open=True)
    check_bool("per_channel", per_channel)
    check_bool("overwrite", overwrite)
    check_bool("preprocess", preprocess)
    if calibration_count is not None:
        check_int("calibration_count", calibration_count)
    if isinstance(keep_fp32, str) or not all(isinstance(k, str) for k in keep_fp32):
        raise ValueError(f"keep_fp32 must be a list of ONNX op types or node names, got {keep_fp32!r}")
    out = check_new_file("out", out, ".onnx", overwrite)

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from smallnets.export import _op_counts
    from smallnets.runtime import OnnxClassifier

    started = time.perf_counter()
    fp32 = OnnxClassifier(fp32_onnx)
    if fp32.precision != "fp32":
        raise ValueError(f"fp32_onnx must be an fp32 export, got a {fp32.precision} file {os.fspath(fp32_onnx)!r}")
    x = _images_array(calibration, fp32.preprocessing, calibration_count)
    source = onnx.load(os.fspath(fp32_onnx))
    op_types = {n.op_type for n in source.graph.node}
    names = {n.name for n in source.graph.node}
    unknown = [k for k in keep_fp32 if k not in op_types and k not in names]
    if unknown:
        raise ValueError(f"keep_fp32 names {unknown} which are neither op types nor node names of the graph (op types: {sorted(op_types)})")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="smallnets-quantize-") as work:
        work = Path(work)
        pre = work / "pre.onnx"
        if preprocess:
            quant_pre_process(os.fspath(fp32_onnx), os.fspath(pre), skip_symbolic_shape=False)
        else:
            pre = Path(fp32_onnx)
            notes.append("not pre-processed (preprocess=False): ONNX Runtime's quantizer saw the graph as exported")
        pre_model = onnx.load(os.fspath(pre))
        exclude_types = [k for k in keep_fp32 if k in op_types]
        exclude_nodes = [n.name for n in pre_model.graph.node if n.op_type in exclude_types]
        exclude_nodes += _names_after_preprocessing(source, pre_model, [k for k in keep_fp32 if k in names])
        calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
        extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        if method == "entropy":
            extra["CalibNumBins"] = 2048
        carried = None
        if activation_ranges is not None:
            measured = _tensor_stats(pre, x[: activation_ranges.images], fp32.input_name, fp32.batch)
            tensors = activation_ranges.match(measured)
            extra["TensorQuantOverrides"] = {
                t: [{"rmin": np.float32(activation_ranges.ranges[label][0]), "rmax": np.float32(activation_ranges.ranges[label][1])}]
                for t, label in tensors.items()
            }  # fmt: skip
            carried = {"labels": len(activation_ranges.ranges), "matched_labels": len(set(tensors.values())), "tensors": len(tensors)}
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT logs each per-channel skip of a 1-D tensor (pre-activation BN) as a warning on the root logger
        with atomic_path(out) as tmp:
            try:
                quantize_static(os.fspath(pre), os.fspath(tmp), _Reader(x, fp32.input_name, fp32.batch), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calib_method, nodes_to_exclude=exclude_nodes or None, extra_options=extra)  # fmt: skip
            finally:
                root.setLevel(level)
            model = onnx.load(os.fspath(tmp))
            props = {p.key: p.value for p in source.metadata_props}
            import json

            props["smallnets.precision"] = "int8"
            props["smallnets.quantization"] = json.dumps({
                "backend": "onnxruntime", "format": "QDQ", "weights": "int8 symmetric per-channel" if per_channel else "int8 symmetric per-tensor",
                "activations": "uint8 asymmetric", "method": method, **({"percentile": percentile} if method == "percentile" else {}),
                "calibration_images": int(len(x)), "keep_fp32": list(keep_fp32), "preprocessed": preprocess,
            })  # fmt: skip
            del model.metadata_props[:]
            onnx.helper.set_model_props(model, props)
            onnx.save_model(model, os.fspath(tmp))
            agreement, n_check = None, 0
            if check_images is not None:
                xc = _images_array(check_images, fp32.preprocessing)
                int8 = OnnxClassifier(tmp)
                agreement = float((fp32(xc).argmax(1) == int8(xc).argmax(1)).mean())
                n_check = len(xc)
            ops = _op_counts(model)
            if carried is not None:
                weights_ = {i.name for i in model.graph.initializer}
                quantized = {n.input[0].removesuffix("_QuantizeLinear_Input") for n in model.graph.node  # (a graph output, renamed)
                             if n.op_type == "QuantizeLinear" and n.input[0] not in weights_}  # fmt: skip
                carried.update(quantized=len(quantized), quantized_carrying=len(quantized & set(extra["TensorQuantOverrides"])))
            size = tmp.stat().st_size
            from smallnets.runtime import runtime_ops

            as_run = runtime_ops(tmp)
            fused = [k for k in keep_fp32 if k in op_types and as_run.get(f"QLinear{k}", 0)]
            if fused:
                notes.append(f"kept out of quantization but still run in int8: {', '.join(fused)} (ONNX Runtime fuses a "
                             "dequantize -> op -> quantize chain between quantized neighbours into QLinear ops)")  # fmt: skip
            kept_convs = sum(1 for n in source.graph.node if n.op_type == "Conv" and ("Conv" in keep_fp32 or n.name in keep_fp32))
            if kept_convs:
                notes.append(f"{as_run.get('Conv', 0)} of the {kept_convs} convolution(s) kept in fp32 run in fp32: smallnets' runtime loads "
                             "this file without ONNX Runtime's WeightBiasQuantization transformer (which would quantize them at load "
                             "time); another ONNX Runtime user must pass disabled_optimizers=['WeightBiasQuantization'] too")  # fmt: skip
    return QuantizeReport(path=os.fspath(out), bytes=size, fp32_bytes=Path(fp32_onnx).stat().st_size, method=method,
                          calibration_images=int(len(x)), per_channel=per_channel, keep_fp32=list(keep_fp32), ops=ops, ops_as_run=as_run,
                          top1_agreement=agreement, check_images=n_check, seconds=round(time.perf_counter() - started, 2),
                          fp32_path=os.fspath(fp32_onnx), notes=notes, carried_ranges=carried)  # fmt: skip


def quantize(
    model_or_weights: nn.Module | str | os.PathLike,
    calibration,
    out: str | os.PathLike,
    *,
    fp32_out: str | os.PathLike | None = None,
    batch: int | str = "dynamic",
    opset: int | None = None,
    overwrite: bool = False,
    **options,
) -> QuantizeReport:
    """Export ``model_or_weights`` to fp32 ONNX (kept at ``fp32_out`` when given) and quantize it
    to int8 at ``out`` with ``calibration`` images; ``options`` as ``quantize_onnx``."""
    from smallnets.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="smallnets-export-") as work:
        fp32 = Path(fp32_out) if fp32_out is not None else Path(work) / "fp32.onnx"
        export_onnx(model_or_weights, fp32, batch=batch, opset=opset, overwrite=overwrite)
        report = quantize_onnx(fp32, out, calibration, overwrite=overwrite, **options)
        if fp32_out is None:
            report.fp32_path = None
        return report


def _torch_latency(model: nn.Module, shape: tuple[int, ...], batch: int, runs: int = 20, warmup: int = 3) -> float:
    """Median ms of eager PyTorch fp32 (NCHW, no autograd) on a batch of zeros."""
    import torch

    x = torch.zeros(batch, *shape)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def quantize_run(
    source: str | os.PathLike,
    *,
    calib: int = 512,
    calib_data=None,
    method: str = "minmax",
    keep_fp32: Sequence[str] = (),
    batch: int | str = "dynamic",
    name: str | None = None,
    out: str | os.PathLike | None = None,
    latency: bool = True,
    check: int = 256,
    qat_epochs: int = 0,
    freeze_bn: float = 0.0,
    freeze_observers: float = 0.75,
    qat_ranges: str = "ema",
    qat_init: str = "minmax",
    export_ranges: str = "trained",
    train_overrides: Mapping[str, Any] | None = None,
    data_overrides: Mapping[str, Any] | None = None,
) -> dict:
    """``smallnets quantize RUN``: export the run's model, quantize it with ``calib`` training images
    (never validation ones; ``calib_data`` to name others), and write a new directory
    (``out/name``, default beside the source, ``SOURCE-int8``) holding ``model.onnx``,
    ``model.int8.onnx`` and ``quantize.json`` / ``quantize.png``: bytes on disk, latency at batch 1
    and 32 (eager PyTorch, ONNX Runtime fp32 and int8, measured here) and validation top-1 of each.
    The source run is only read.

    ``qat_epochs`` > 0: quantization-aware training first (``smallnets.qat``): the source's weights
    are fine-tuned for that many epochs with int8 fake quantization through the trainer, on the
    source's data and split (``train_overrides`` / ``data_overrides`` as for ``prune_run``; the
    learning rate a tenth of the source's unless given; fp32, as the simulation is exact there),
    BatchNorm frozen after ``freeze_bn`` and the activation ranges after ``freeze_observers`` of
    the steps; the ranges start from a calibration on 8 training batches, ``qat_init="minmax"``
    (the extremes, as ONNX Runtime calibrates) or ``"mean"`` (the mean of each batch's extremes:
    narrower, finer grids where a few images hold outliers). The new directory (default ``SOURCE-qat``) is then an ordinary training run, and the
    fine-tuned weights are exported and quantized into it as above; the report adds the simulated
    int8 top-1 before and after QAT. ``export_ranges="trained"`` (default) writes the activation
    ranges QAT trained with into the int8 file (also saved as ``qat_ranges.json``), matched to
    their ONNX tensors by :class:`ActivationRanges` (a QAT run given as ``source`` without
    ``qat_epochs`` is quantized with its saved ranges too); ``"calibrated"`` calibrates them afresh
    on the ``calib`` images like post-training quantization, whose extremes are not the grid the
    weights were trained on."""
    from smallnets.compress.workflow import _source, format_table, write_report
    from smallnets.evaluation import evaluate_weights
    from smallnets.export import export_onnx
    from smallnets.rundir import RunDir
    from smallnets.runtime import OnnxClassifier, latency as ort_latency
    from smallnets.zoo import load_weights

    check_int("calib", calib)
    check_int("check", check)
    check_choice("method", method, CALIBRATION_METHODS)
    check_int("qat_epochs", qat_epochs, minimum=0)
    check_choice("export_ranges", export_ranges, EXPORT_RANGES)
    from smallnets.qat import CALIBRATION_STATISTICS

    check_choice("qat_init", qat_init, CALIBRATION_STATISTICS)
    run = _source(source)
    qat = None
    if qat_epochs:
        qat = _qat_finetune(run, epochs=qat_epochs, name=name, out=out, freeze_bn=freeze_bn, freeze_observers=freeze_observers,
                            ranges_mode=qat_ranges, init=qat_init, train_overrides=train_overrides, data_overrides=data_overrides)  # fmt: skip
        dest = RunDir(qat["run_dir"]).claim()
    else:
        if train_overrides or data_overrides:
            raise ValueError("train_overrides and data_overrides apply to quantization-aware training: give qat_epochs >= 1 (--qat-epochs N)")
        dest = RunDir.create(out=out if out is not None else run.path.parent, name=name or f"{run.path.name}-int8")
    written: list[Path] = []
    try:
        if any((dest.path / f).exists() for f in ("model.onnx", "model.int8.onnx", "quantize.json")):
            raise FileExistsError(f"{dest.path} already holds a quantized model; choose another --name")
        weights = run.weights() if qat is None else dest.weights()
        eval_run = run.path if qat is None else dest.path
        fp32_path, int8_path = dest.path / "model.onnx", dest.path / "model.int8.onnx"
        written += [fp32_path, int8_path, dest.path / "quantize.json", dest.path / "quantize.png"]  # none of them exists (checked above)
        export = export_onnx(weights, fp32_path, batch=batch)
        calibration = calibration_files(run.path, calib) if calib_data is None else calib_data
        split = run.read_split() or {}
        data = (split.get("source") or {}).get("path")
        val_names = (split.get("val_files") or [])[:check]
        check_images = None
        if data and val_names and Path(data).is_dir():
            check_images = [os.path.join(data, *n.split("/")) for n in val_names]
        elif data and val_names:
            check_images = [f"{data}::{n}" for n in val_names]
        activation_ranges = None
        trained = None
        if export_ranges == "trained":
            trained = qat["ranges"] if qat is not None else _saved_qat_ranges(run.path)  # a QAT run quantized again keeps its ranges
        if trained is not None:
            calibration = _images_array(calibration, OnnxClassifier(fp32_path).preprocessing, calib)
            activation_ranges = _trained_ranges(weights, trained, calibration)
        report = quantize_onnx(fp32_path, int8_path, calibration, method=method, keep_fp32=keep_fp32,
                               calibration_count=calib, check_images=check_images, activation_ranges=activation_ranges)  # fmt: skip
        model = load_weights(weights).eval()
        shape = tuple(export.input_shape[1:])
        rows = []
        stages = [("PyTorch fp32 (eager)", weights), ("ONNX Runtime fp32", fp32_path), ("ONNX Runtime int8", int8_path)]
        if qat is not None:
            stages = [("source, PyTorch fp32", run.weights()), (f"after {qat_epochs} QAT epoch(s), PyTorch fp32", weights),
                      ("ONNX Runtime fp32", fp32_path), ("ONNX Runtime int8 (QAT)", int8_path)]  # fmt: skip
        for stage, path in stages:
            result = evaluate_weights(path, split="val", run=eval_run)
            row = {"stage": stage, "params": sum(p.numel() for p in model.parameters()), "macs": None, "bytes": Path(path).stat().st_size,
                   "file": os.fspath(path), "top1": result.top1, "loss": result.loss}  # fmt: skip
            if latency:
                if str(path).endswith(".safetensors"):
                    row["latency_b1_ms"], row["latency_b32_ms"] = (_torch_latency(model, shape, b) for b in (1, 32))
                else:
                    runner = OnnxClassifier(path)
                    row["latency_b1_ms"], row["latency_b32_ms"] = (ort_latency(runner, b)["median_ms"] for b in (1, 32))
            rows.append(row)
        from smallnets.profiler import count_macs

        macs = count_macs(model, shape)  # one model in three forms: the same MACs
        for row in rows:
            row["macs"] = macs
        settings = {"source": os.fspath(run.path), "weights": os.fspath(weights), "calibration_images": report.calibration_images,
                    "calibration": "training images off the validation split" if calib_data is None else os.fspath(calib_data)
                    if isinstance(calib_data, (str, os.PathLike)) else f"{report.calibration_images} given images",
                    "method": method, "keep_fp32": list(keep_fp32), "batch": batch, "top1_agreement": report.top1_agreement,
                    "check_images": report.check_images, "ops_as_run": report.ops_as_run, "export": export.to_dict(),
                    "quantize": report.to_dict()}  # fmt: skip
        settings["activation_ranges"] = "calibrated" if activation_ranges is None else "trained (quantization-aware training)"
        title = f"{run.path.name}: int8 post-training quantization"
        if qat is not None:
            settings["qat"] = {k: v for k, v in qat.items() if k not in ("run_dir", "ranges")}
            settings["qat"]["export_ranges"] = export_ranges
            title = f"{run.path.name}: int8 after {qat_epochs} epoch(s) of quantization-aware training"
        json_path, png = write_report(dest.path, "quantize", rows, title=title, settings=settings)
        dest.keep()
    except BaseException:
        for f in written:  # a failed run leaves no partial set behind; files it did not write are never touched
            f.unlink(missing_ok=True)
        if qat is None:
            dest.abandon()
        else:  # the QAT training run is kept (its weights are good); only the lock goes
            dest.release()
        raise
    dest.release()
    return {"run_dir": os.fspath(dest.path), "rows": rows, "table": format_table(rows), "json": os.fspath(json_path), "png": os.fspath(png),
            "export": export, "quantize": report, "qat": qat}  # fmt: skip


EXPORT_RANGES = ("trained", "calibrated")


QAT_RANGES_FILE = "qat_ranges.json"


def _saved_qat_ranges(run_dir: Path) -> dict | None:
    """The activation ranges a QAT run trained with (its ``qat_ranges.json``), None for another run."""
    import json

    path = Path(run_dir) / QAT_RANGES_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    ranges = data.get("ranges") if isinstance(data, dict) else None
    if not isinstance(ranges, dict) or not all(isinstance(v, list) and len(v) == 2 for v in ranges.values()):
        raise ValueError(f"{path} is not a QAT ranges file ({{'ranges': {{LABEL: [low, high]}}}}); remove it or pass export_ranges='calibrated'")
    return {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}


def _trained_ranges(weights, trained: Mapping[str, tuple[float, float]], x: np.ndarray, images: int = 32) -> ActivationRanges:
    """QAT's ``trained`` ranges with the fp32 reference that finds their ONNX tensors: ``weights``'
    observed tensors measured on the first ``images`` of the calibration array ``x``."""
    import torch

    from smallnets.qat import prepare_qat
    from smallnets.zoo import load_weights

    controller = prepare_qat(load_weights(weights).eval())
    first = x[:images]
    reference = controller.measure([torch.from_numpy(first[i : i + 8]) for i in range(0, len(first), 8)])
    return ActivationRanges(ranges={k: tuple(v) for k, v in trained.items()}, reference=reference, images=len(first))


def _qat_finetune(run, *, epochs: int, name: str | None, out, freeze_bn: float, freeze_observers: float, ranges_mode: str, init: str,
                  train_overrides: Mapping[str, Any] | None, data_overrides: Mapping[str, Any] | None) -> dict:  # fmt: skip
    """Quantization-aware fine-tuning of ``run``'s weights into a new run directory (see ``quantize_run``)."""
    from smallnets.compress.workflow import _finetune_config
    from smallnets.qat import prepare_qat
    from smallnets.training.trainer import Trainer
    from smallnets.zoo import load_weights

    overrides = {"precision": "fp32", **dict(train_overrides or {})}
    for key in ("ema", "compile"):
        if overrides.get(key):
            raise ValueError(f"{key} cannot be used with quantization-aware training (the fake-quantized layers are wrapped in place), got {key}=True")
    for key in ("teacher", "pretrained", "resume"):
        if overrides.get(key) is not None:
            raise ValueError(f"{key} is set by quantize itself for quantization-aware training, got {key}={overrides[key]!r}")
    overrides.update(ema=False, compile=False)
    config = _finetune_config(run, epochs=epochs, name=name or f"{run.path.name}-qat", out=out, distill=False,
                              train_overrides=overrides, data_overrides=dict(data_overrides or {}))  # fmt: skip
    model = load_weights(run.weights())
    controller = prepare_qat(model, freeze_bn=freeze_bn, freeze_observers=freeze_observers, ranges=ranges_mode)
    trainer = Trainer(config, model=model, hooks=[controller])
    try:
        calibrated = controller.calibrate(trainer.data.train.epoch_batches(0), max_batches=8, channels_last=config.train.channels_last,
                                          statistic=init)  # fmt: skip
        before = trainer.validate().top1  # the source's weights, simulated int8: what post-training quantization would give
        result = trainer.fit()
    finally:
        controller.remove()
    import json

    from smallnets._io import atomic_write_text

    # the ranges the weights were trained with (frozen after freeze_observers of the steps): written into the int8 file
    ranges = {k: list(v) for k, v in controller.ranges().items() if v is not None}
    atomic_write_text(Path(result.run_dir) / QAT_RANGES_FILE, json.dumps({"statistic": ranges_mode, "frozen": controller.observers_frozen, "ranges": ranges}, indent=1))
    return {"run_dir": os.fspath(result.run_dir), "epochs": epochs, "status": result.status, "freeze_bn": freeze_bn,
            "freeze_observers": freeze_observers, "ranges_statistic": ranges_mode, "ranges_init": init, "observer_calibration_images": calibrated, "simulated_int8_top1_before": before,
            "simulated_int8_top1_best": result.best_top1, "lr": trainer.base_lr, "precision": trainer.precision,
            "layers": controller.describe(), "ranges": ranges}  # fmt: skip
