"""Export a smallnets model to ONNX, with what a deployment needs in the file, checked on the spot.

``export_onnx(model_or_weights, "model.onnx")``:

1. BatchNorm is folded into the convolution before it: in PyTorch by ``fold_batchnorm`` (every
   Conv2d directly followed by a BatchNorm2d in an ``nn.Sequential``, as in every ConvNormAct),
   and in the graph by the exporter's optimiser wherever else a Conv feeds a BatchNormalization
   (DenseNet's bottleneck). DenseNet's pre-activation BatchNorms, which follow a concatenation or
   a pooling, have no convolution to go into and stay as BatchNormalization nodes, which ONNX
   Runtime runs as a per-channel multiply-add.
2. The model is exported with ``torch.onnx.export`` (the TorchDynamo exporter and its ONNX
   optimiser: constant folding, dead-code and redundant-op removal), input ``images`` NCHW float,
   output ``logits``, the batch dimension dynamic or fixed.
3. The file's metadata (``smallnets.*``, read back by ``smallnets.runtime``) carries the class
   names, the evaluation preprocessing, the model's config and spec, the source weights' SHA-256,
   the precision and the smallnets version.
4. ONNX Runtime runs the written file on check inputs (real images when given, else a seeded
   normal batch) and its logits are compared with PyTorch's: fp32 must agree within 1e-4 of the
   largest logit (``ExportCheck``); fp16 within 1e-2 and the same top-1.

The file is written to a temporary name and renamed only once complete and checked; an existing
file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smallnets._checks import check_bool, check_choice, check_int
from smallnets._io import atomic_path, check_new_file
from smallnets.onnx_module import OnnxModule

__all__ = ["ExportCheck", "ExportReport", "OnnxModule", "export_onnx", "fold_batchnorm"]

PRECISIONS = ("fp32", "fp16")
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # max |ORT - PyTorch| over the largest |logit| of the check batch
FORMAT_VERSION = "1"


# ---------------------------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------------------------


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d computing ``bn(conv(x))`` in eval mode: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta."""
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                      bias=True, padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)  # fmt: skip
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + shift)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm2d that directly follows a Conv2d in an
    ``nn.Sequential`` folded into it (the BatchNorm becomes ``nn.Identity``, so module names and the
    model's structure stay). Returns the copy; ``model`` is not changed. Folding needs the running
    statistics, so the result is for inference only."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):  # fmt: skip
                seq._modules[a] = _fold_pair(conv, bn)
                seq._modules[b] = nn.Identity()
    return folded


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


@dataclass
class ExportCheck:
    """ONNX Runtime against PyTorch on the same inputs."""

    inputs: str  # what was run: "8 images of PATH" or "random normal batch of 4 (seed 0)"
    batch: int
    max_abs_diff: float
    max_abs_logit: float
    rel_diff: float  # max_abs_diff / max_abs_logit
    tolerance: float
    top1_agreement: float  # fraction of inputs whose top-1 class is the same
    passed: bool


@dataclass
class ExportReport:
    path: str
    bytes: int
    precision: str
    opset: int
    batch: int | str  # an int, or "dynamic"
    input_shape: list[Any]
    ops: dict[str, int]  # node count by op type in the written graph
    source: str
    source_sha256: str
    seconds: float  # export + check
    check: ExportCheck | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        top = sorted(self.ops.items(), key=lambda kv: (-kv[1], kv[0]))
        ops = ", ".join(f"{k} {v}" for k, v in top)
        out = [
            f"wrote {self.path} ({self.bytes:,} bytes, {self.precision}, opset {self.opset}, batch {self.batch}, input {self.input_shape})",
            f"graph: {sum(self.ops.values())} nodes: {ops}",
        ]
        c = self.check
        if c is not None:
            verdict = "passed" if c.passed else "FAILED"
            out.append(f"check {verdict}: ONNX Runtime vs PyTorch on {c.inputs}: max |diff| {c.max_abs_diff:.3g} "
                       f"= {c.rel_diff:.2g} of the largest logit (tolerance {c.tolerance:g}), top-1 agreement {100 * c.top1_agreement:.1f}%")  # fmt: skip
        out += [f"note: {n}" for n in self.notes]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _load(model_or_weights) -> tuple[nn.Module, str, str, str]:
    """(model, source, its sha256, what the digest is of)."""
    from smallnets.zoo import load_weights

    if isinstance(model_or_weights, (str, os.PathLike)):
        from smallnets.checkpoint import _file_sha256, resolve_weights

        file = resolve_weights(Path(model_or_weights))
        if file.suffix == ".onnx":
            raise ValueError(f"model_or_weights must be smallnets weights (.safetensors, .sncz or a run directory), got the ONNX file {str(file)!r}")
        model = load_weights(file)
        return model, str(file), _file_sha256(file), "file"
    if isinstance(model_or_weights, OnnxModule):
        raise TypeError("model_or_weights is already an ONNX model (OnnxModule); export the PyTorch model or its weights")
    if isinstance(model_or_weights, nn.Module):
        h = hashlib.sha256()
        for key, value in model_or_weights.state_dict().items():
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
        meta = getattr(model_or_weights, "smallnets_meta", None) or {}
        return model_or_weights, meta.get("path", "<model object>"), h.hexdigest(), "state_dict"
    raise TypeError(f"model_or_weights must be a torch.nn.Module or a weights path, got {type(model_or_weights).__qualname__}")


def _input_size(model: nn.Module, preprocessing: dict | None) -> tuple[int, int, int]:
    cfg = getattr(model, "smallnets_config", None) or {}
    in_chans = int(cfg.get("in_chans", 3))
    if preprocessing and preprocessing.get("crop"):
        return (in_chans, int(preprocessing["crop"]), int(preprocessing["crop"]))
    from smallnets.profiler import default_input_size
    from smallnets.registry import list_models

    name = cfg.get("name")
    if name in list_models():
        c, h, w = default_input_size(name, cfg.get("knobs", {}))
        return (in_chans, h, w)
    raise ValueError("the model carries no preprocessing (smallnets_meta['preprocessing']) and is no zoo model, "
                     "so its input size is unknown; pass input_size=(C, H, W)")  # fmt: skip


def _default_preprocessing(model: nn.Module, input_size: tuple[int, int, int]) -> dict:
    """What ``smallnets train`` records for a model trained at this size (ImageNet statistics)."""
    from smallnets._norm import IMAGENET_MEAN, IMAGENET_STD
    from smallnets.imaging import EVAL_CROP_FRACTION, INTERPOLATION

    crop = input_size[1]
    resize = crop if crop <= 64 else int(round(crop / EVAL_CROP_FRACTION))
    return {"resize": resize, "crop": crop, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "interpolation": INTERPOLATION}


def _check_inputs(images, preprocessing: dict, input_size, batch: int | None, seed: int = 0) -> tuple[np.ndarray, str]:
    if images is None:
        n = batch or 4
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n, *input_size)).astype(np.float32), f"a random normal batch of {n} (seed {seed})"
    from smallnets.data.listing import find_images
    from smallnets.imaging import eval_pixels, load_image, norm_constants_np, normalize_np

    paths = find_images(images)[: (batch or 8)]
    shift, scale = norm_constants_np(preprocessing["mean"], preprocessing["std"])
    x = normalize_np(np.stack([eval_pixels(load_image(p), preprocessing) for p in paths]), shift, scale)
    if batch and len(x) < batch:
        x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
    where = f" of {os.fspath(images)}" if isinstance(images, (str, os.PathLike)) else ""
    return x, f"{len(paths)} image(s){where}"


def compare_logits(ref: np.ndarray, got: np.ndarray, tolerance: float, inputs: str) -> ExportCheck:
    ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    diff = float(np.abs(ref - got).max())
    scale = float(np.abs(ref).max()) or 1.0
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    rel = diff / scale
    return ExportCheck(inputs, len(ref), diff, scale, rel, tolerance, agree, bool(rel <= tolerance))


def _op_counts(model_proto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model_proto.graph.node))


def _torch_export(model: nn.Module, example: torch.Tensor, dynamic: bool, opset: int | None):
    """The ONNX ModelProto of ``model`` from the TorchDynamo exporter, optimised."""
    kwargs: dict[str, Any] = {"dynamo": True, "input_names": ["images"], "output_names": ["logits"], "optimize": True,
                              "verbose": False, "external_data": False}  # fmt: skip
    if dynamic:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    if opset is not None:
        kwargs["opset_version"] = opset
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:  # the exporter logs each optional op set it skips (torchvision's) as a warning
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and fallback chatter is not the user's concern
            program = torch.onnx.export(model, (example,), **kwargs)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return program.model_proto


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_onnx(
    model_or_weights: nn.Module | str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch: int | str = "dynamic",
    opset: int | None = None,
    precision: str = "fp32",
    check: bool = True,
    check_images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    input_size: tuple[int, int, int] | None = None,
    overwrite: bool = False,
    threads: int | None = None,
) -> ExportReport:
    """Export to ONNX (see the module docstring); returns what was written and how the check went.

    ``batch``: "dynamic" or a fixed batch size. ``precision``: fp32 | fp16 (int8: ``smallnets.quantize``).
    ``check_images``: image files or folders for the check (default: a seeded random batch).
    A failed check raises ValueError and leaves nothing at ``out``.
    """
    check_choice("precision", precision, PRECISIONS)
    dynamic = batch == "dynamic"
    if not dynamic:
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise ValueError(f"batch must be 'dynamic' or an integer >= 1, got {batch!r}")
        check_int("batch", batch)
    if opset is not None:
        check_int("opset", opset, minimum=18)  # the TorchDynamo exporter writes opset 18 and newer
    check_bool("check", check)
    check_bool("overwrite", overwrite)
    out = check_new_file("out", out, ".onnx", overwrite)

    import onnx

    from smallnets import __version__

    started = time.perf_counter()
    model, source, digest, digest_of = _load(model_or_weights)
    meta = dict(getattr(model, "smallnets_meta", None) or {})
    cfg = dict(getattr(model, "smallnets_config", None) or {})
    notes: list[str] = []
    preprocessing = meta.get("preprocessing")
    size = tuple(input_size) if input_size is not None else _input_size(model, preprocessing)
    if not preprocessing:
        preprocessing = _default_preprocessing(model, size)
        notes.append(f"the model carries no preprocessing; recorded ImageNet normalisation at {size[1]} px (resize {preprocessing['resize']})")
    from smallnets.imaging import check_preprocessing

    preprocessing = check_preprocessing(preprocessing)
    was_training = model.training
    try:
        deploy = fold_batchnorm(model).float().cpu()
    finally:
        model.train(was_training)
    if precision == "fp16":
        deploy = deploy.half()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    example = torch.zeros(batch if not dynamic else 2, *size, dtype=dtype)
    proto = _torch_export(deploy, example, dynamic, opset)

    spec = getattr(model, "spec", None)
    props = {
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "model": cfg.get("name") or "",
        "config": json.dumps(cfg),
        "spec": json.dumps(spec.to_dict() if hasattr(spec, "to_dict") else None),
        "classes": json.dumps(meta.get("classes")),
        "preprocessing": json.dumps(preprocessing),
        "input": json.dumps({"name": "images", "shape": ["batch" if dynamic else batch, *size], "dtype": "float16" if precision == "fp16" else "float32",
                             "layout": "NCHW", "output": "logits"}),  # fmt: skip
        "precision": precision,
        "source": source,
        "source_sha256": digest,
        "source_sha256_of": digest_of,
    }
    onnx.helper.set_model_props(proto, {f"smallnets.{k}": v for k, v in props.items()})
    proto.producer_name, proto.producer_version = "smallnets", __version__
    proto.doc_string = f"{cfg.get('name') or 'model'} exported by smallnets {__version__} from {source}"
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)

    with atomic_path(out) as tmp:
        onnx.save_model(proto, os.fspath(tmp))
        result = None
        if check:
            from smallnets.runtime import OnnxClassifier

            x, described = _check_inputs(check_images, preprocessing, size, None if dynamic else batch)
            with torch.no_grad():
                ref = model.eval()(torch.from_numpy(x)).float().numpy()
            model.train(was_training)
            got = OnnxClassifier(tmp, threads=threads)(x)  # the temporary file ends in .onnx too
            result = compare_logits(ref, got, TOLERANCE[precision], described)
            if precision == "fp16" and result.top1_agreement < 1.0:
                result.passed = False
            if not result.passed:
                raise ValueError(f"export check failed: ONNX Runtime's logits differ from PyTorch's by {result.rel_diff:.3g} of the "
                                 f"largest logit (tolerance {result.tolerance:g}), top-1 agreement {100 * result.top1_agreement:.1f}% "
                                 f"on {described}; nothing was written to {out}")  # fmt: skip
        size_bytes = tmp.stat().st_size
    return ExportReport(
        path=os.fspath(out), bytes=size_bytes, precision=precision, opset=int(opset_used), batch="dynamic" if dynamic else batch,
        input_shape=["batch" if dynamic else batch, *size], ops=_op_counts(proto), source=source, source_sha256=digest,
        seconds=round(time.perf_counter() - started, 2), check=result, notes=notes,
    )  # fmt: skip
