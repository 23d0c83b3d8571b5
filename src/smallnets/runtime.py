"""Run an exported smallnets ONNX file with ONNX Runtime, without PyTorch.

``smallnets export`` writes the model's class names, its evaluation preprocessing (resize, crop,
mean, std, interpolation) and its provenance into the ONNX file's metadata (``smallnets.*``
keys). ``OnnxClassifier`` reads them back, prepares images exactly as the PyTorch side does
(``smallnets.imaging``: the same PIL resize and crop, the same float32 normalisation) and runs the
graph on ONNX Runtime's CPU provider. It needs only ``onnxruntime``, ``numpy`` and ``pillow``
(``pip install 'smallnets[runtime]'``)::

    from smallnets.runtime import OnnxClassifier

    model = OnnxClassifier("mnv2.onnx", threads=2)
    for p in model.predict(["cat.jpg", "photos/"], top_k=3):
        print(p.path, [(s.label, round(s.probability, 3)) for s in p.predictions])
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from smallnets._checks import check_int
from smallnets.imaging import UnreadableImageError, check_preprocessing, eval_pixels, load_image, norm_constants_np, normalize_np
from smallnets.predictions import ClassScore, Prediction

__all__ = ["METADATA_KEYS", "OnnxClassifier", "read_metadata", "runtime_ops", "softmax"]

PREFIX = "smallnets."
# The metadata an export writes (each value a string; the JSON ones parsed by read_metadata).
METADATA_KEYS = {
    "format_version": "text",  # "1"
    "version": "text",  # the smallnets version that exported it
    "model": "text",  # zoo name ("" for a spec of one's own)
    "config": "json",  # model.smallnets_config: name, num_classes, in_chans, knobs
    "spec": "json",  # the architecture spec (per-block widths, a pruned model's included) or null
    "classes": "json",  # class names in output order, or null
    "preprocessing": "json",  # resize, crop, mean, std, interpolation
    "input": "json",  # name, shape (batch as "batch" when dynamic), dtype, layout
    "precision": "text",  # fp32 | fp16 | int8
    "source": "text",  # the weights file exported, as given
    "source_sha256": "text",  # its SHA-256 (of the state dict's bytes when a model object was exported)
    "source_sha256_of": "text",  # "file" | "state_dict"
    "quantization": "json",  # int8 only: calibration method, images, per-channel, what was left in fp32
}


def read_metadata(props: Mapping[str, str]) -> dict[str, Any]:
    """The ``smallnets.*`` entries of an ONNX file's metadata, JSON values parsed; other keys kept as they are under ``other``."""
    out: dict[str, Any] = {}
    other = {}
    for key, value in props.items():
        if not key.startswith(PREFIX):
            other[key] = value
            continue
        name = key[len(PREFIX):]
        if METADATA_KEYS.get(name) == "json":
            try:
                out[name] = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"ONNX metadata {key!r} must be JSON, got {value[:80]!r} ({e})") from e
        else:
            out[name] = value
    if other:
        out["other"] = other
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _import_ort():
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("running an ONNX file needs onnxruntime: pip install 'smallnets[runtime]'", name="onnxruntime") from e
    return ort


def session_options(threads: int | None = None, *, optimization: str = "all"):
    """ONNX Runtime session options as smallnets runs them: ``threads`` intra-op threads (None: ORT's
    default, one per physical core), one inter-op thread, sequential execution, and the graph
    optimisation level ``optimization`` (``all`` | ``extended`` | ``basic`` | ``none``)."""
    ort = _import_ort()
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {', '.join(levels)}, got {optimization!r}")
    if threads is not None:
        check_int("threads", threads)
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads is not None:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are not the user's concern
    return so


def latency(runner: "OnnxClassifier", batch: int, *, runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median and 90th-percentile wall time (ms) of one ``runner`` call on a batch of ``batch`` zeros,
    and images per second at the median."""
    import time

    check_int("batch", batch)
    check_int("runs", runs)
    shape = [int(d) if isinstance(d, int) else 0 for d in runner.metadata.get("input", {}).get("shape", [])[1:]]
    if len(shape) != 3 or not all(shape):
        crop = runner.preprocessing["crop"]
        shape = [3, crop, crop]
    x = np.zeros((batch, *shape), dtype=np.float32)
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t) * 1e3)
    med, p90 = float(np.median(times)), float(np.percentile(times, 90))
    return {"median_ms": med, "p90_ms": p90, "images_per_s": batch * 1e3 / med}


def disabled_optimizers(metadata: Mapping[str, Any]) -> list[str]:
    """ONNX Runtime graph transformers a smallnets int8 file must run without: with layers kept in
    fp32 (``smallnets quantize --keep-fp32``), ``WeightBiasQuantization``, which would otherwise
    quantize the fp32 weights of a convolution that sits between quantized tensors at load time
    and run it in int8 after all."""
    quant = metadata.get("quantization") or {}
    return ["WeightBiasQuantization"] if quant.get("keep_fp32") else []


def runtime_ops(path: str | os.PathLike, *, optimization: str = "all") -> dict[str, int]:
    """Node count by op type of the graph ONNX Runtime actually runs for ``path`` on this machine,
    after its fusions (QDQ -> QLinearConv, Conv + activation, NCHWc layouts): which layers really
    run in int8, and which quantize/dequantize pairs are left."""
    import tempfile

    import onnx

    ort = _import_ort()
    with tempfile.TemporaryDirectory(prefix="smallnets-ort-") as work:
        so = session_options(1, optimization=optimization)
        so.optimized_model_filepath = os.path.join(work, "as_run.onnx")
        props = {p.key: p.value for p in onnx.load(os.fspath(path), load_external_data=False).metadata_props}
        ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled_optimizers(read_metadata(props)))
        counts: dict[str, int] = {}
        for node in onnx.load(so.optimized_model_filepath).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class OnnxClassifier:
    """An exported image classifier on ONNX Runtime (CPU): ``model(x)`` logits, ``predict(images)``.

    ``path``: an ONNX file written by ``smallnets export`` (its metadata gives classes and
    preprocessing). A file from elsewhere runs too when ``preprocessing`` (and optionally
    ``classes``) are given. ``threads``: intra-op threads (default: ONNX Runtime's choice).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        optimization: str = "all",
        preprocessing: Mapping | None = None,
        classes: Sequence[str] | None = None,
    ):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be an .onnx file path, got {type(path).__qualname__}")
        self.path = Path(path)
        if self.path.suffix != ".onnx":
            raise ValueError(f"path must be an .onnx file, got {os.fspath(path)!r}")
        if not self.path.is_file():
            raise FileNotFoundError(f"path must be an existing .onnx file, got {os.fspath(path)!r}")
        ort = _import_ort()
        try:
            self.session = ort.InferenceSession(os.fspath(self.path), session_options(threads, optimization=optimization),
                                                providers=["CPUExecutionProvider"])  # fmt: skip
            self.metadata = read_metadata(self.session.get_modelmeta().custom_metadata_map)
            disabled = disabled_optimizers(self.metadata)
            if disabled:  # layers kept in fp32 on purpose: a session that leaves them so
                self.session = ort.InferenceSession(os.fspath(self.path), session_options(threads, optimization=optimization),
                                                    providers=["CPUExecutionProvider"], disabled_optimizers=disabled)  # fmt: skip
        except Exception as e:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf types
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e).strip()[:300]})") from e
        self.threads = threads
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shown = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise ValueError(f"{self.path}: an image classifier has one NCHW input, this graph has: {shown}")
        self.input_name = inputs[0].name
        self.input_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inputs[0].type)
        if self.input_dtype is None:
            raise ValueError(f"{self.path}: input {self.input_name!r} must be float or float16, got {inputs[0].type}")
        first = inputs[0].shape[0]
        self.batch = first if isinstance(first, int) and first > 0 else None  # None: any batch size
        self.output_name = self.session.get_outputs()[0].name
        prep = preprocessing if preprocessing is not None else self.metadata.get("preprocessing")
        if prep is None:
            raise ValueError(f"{self.path} carries no smallnets.preprocessing metadata (not written by smallnets export); "
                             "pass preprocessing={'resize': ..., 'crop': ..., 'mean': [...], 'std': [...]}")  # fmt: skip
        self.preprocessing = check_preprocessing(prep)
        names = classes if classes is not None else self.metadata.get("classes")
        self.classes = [str(c) for c in names] if names else []
        self._shift, self._scale = norm_constants_np(self.preprocessing["mean"], self.preprocessing["std"])

    @property
    def precision(self) -> str:
        return self.metadata.get("precision", "fp32" if self.input_dtype is np.float32 else "fp16")

    def __repr__(self) -> str:
        return f"OnnxClassifier({os.fspath(self.path)!r}, precision={self.precision!r}, batch={self.batch or 'dynamic'}, classes={len(self.classes)})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits (float32 [N, classes]) of a float32 NCHW batch prepared as ``preprocess`` prepares it.
        A file exported with a fixed batch runs any N: in chunks of its batch, the last one padded."""
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"x must be an NCHW batch (4 dimensions), got shape {x.shape}")
        x = x.astype(self.input_dtype, copy=False)
        if self.batch is None or len(x) == self.batch:
            return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0], dtype=np.float32)
        outs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), dtype=chunk.dtype)])
            outs.append(np.asarray(self.session.run([self.output_name], {self.input_name: chunk})[0][:n], dtype=np.float32))
        return np.concatenate(outs)

    def pixels(self, image: Image.Image | str | os.PathLike) -> np.ndarray:
        """uint8 HWC pixels of one image (a PIL image or a file) after the model's resize and crop."""
        img = load_image(image) if isinstance(image, (str, os.PathLike)) else image
        if not isinstance(img, Image.Image):
            raise TypeError(f"image must be a PIL image or a file path, got {type(image).__qualname__}")
        return eval_pixels(img, self.preprocessing)

    def preprocess(self, images: Iterable[Image.Image | str | os.PathLike]) -> np.ndarray:
        """float32 NCHW batch of ``images``, normalised: bit-identical to the PyTorch evaluation input."""
        stack = np.stack([self.pixels(i) for i in images])
        return normalize_np(stack, self._shift, self._scale)

    def iter_predictions(self, images: str | os.PathLike | Iterable[str | os.PathLike], *, top_k: int = 5,
                         batch_size: int = 32) -> Iterator[Prediction]:  # fmt: skip
        """Top-``top_k`` classes of every image (files, or directories walked for image files), in
        input order, one batch at a time; a file that cannot be read gives a Prediction with ``error``."""
        from smallnets.data.listing import find_images

        check_int("top_k", top_k)
        check_int("batch_size", batch_size)
        paths = find_images(images)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            results: dict[int, Prediction] = {}
            ok, pixels = [], []
            for i, p in enumerate(chunk):
                try:
                    pixels.append(self.pixels(p))
                    ok.append(i)
                except UnreadableImageError as e:
                    results[i] = Prediction(os.fspath(p), (), e.detail)
                except OSError as e:
                    results[i] = Prediction(os.fspath(p), (), f"{type(e).__name__}: {e.strerror or e}")
            if ok:
                probs = softmax(self(normalize_np(np.stack(pixels), self._shift, self._scale)).astype(np.float64))
                if self.classes and probs.shape[1] != len(self.classes):
                    raise ValueError(f"{self.path} has {probs.shape[1]} outputs but its metadata names {len(self.classes)} classes")
                k = min(top_k, probs.shape[1])
                for row, i in enumerate(ok):
                    order = np.argsort(-probs[row], kind="stable")[:k]
                    scores = tuple(ClassScore(self.classes[j] if self.classes else str(j), int(j), float(probs[row, j])) for j in order)
                    results[i] = Prediction(os.fspath(chunk[i]), scores)
            yield from (results[i] for i in sorted(results))

    def predict(self, images: str | os.PathLike | Iterable[str | os.PathLike], *, top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        return list(self.iter_predictions(images, top_k=top_k, batch_size=batch_size))
