"""Pickle-free checkpoints: nested training state and model weights as safetensors files, never unpickled.

Two formats, both single safetensors files written atomically (temp file + rename):

* ``save_state`` / ``load_state`` ("smallnets.state"): any nested structure of dict, list, tuple,
  int, float, bool, None, str, bytes, tensors and numpy arrays/scalars — optimizer, scheduler,
  GradScaler and RNG states included. Tensors are stored under their path in the structure
  (``state/0/exp_avg``); the structure itself is a JSON skeleton with typed placeholders in the
  file's metadata, so it loads back exactly (int keys stay ints, tuples stay tuples, big ints
  never pass through float).
* ``save_weights`` / ``load_weights`` ("smallnets.weights"): a model's state dict plus a JSON
  sidecar (``NAME.json``) saying how to rebuild the model, its classes and preprocessing, and the
  sha256 of the weights file. The model identity is also in the safetensors metadata, so a lone
  ``.safetensors`` file can still be rebuilt.

``read_weights`` (and so ``load_weights``, eval, predict) also reads the compressed ``.sncz`` files of
``compress.packed``, whose header holds the same sidecar.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from smallnets._io import atomic_path, atomic_write_text
from smallnets.arch.spec import ArchSpec
from smallnets.rundir import WEIGHTS as RUN_WEIGHTS  # what a run directory is searched for, in order

__all__ = ["load_state", "load_tensors", "read_sidecar", "read_weights", "resolve_weights", "save_state", "save_weights", "weights_meta"]

STATE_FORMAT = "smallnets.state"
WEIGHTS_FORMAT = "smallnets.weights"
FORMAT_VERSION = 1

# dtypes safetensors stores natively; any other dtype is stored as its raw bytes (uint8) plus dtype and shape.
_NATIVE_TORCH = {
    getattr(torch, name)
    for name in (
        "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
        "uint16", "uint32", "uint64", "complex64", "float8_e4m3fn", "float8_e5m2",
    )
    if hasattr(torch, name)
}
_BIG_INT_BITS = 8192  # ints longer than this go through hex: Python refuses int<->decimal str past 4300 digits


# ---------------------------------------------------------------------------------------------
# The state codec
# ---------------------------------------------------------------------------------------------


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A private contiguous CPU copy: safetensors refuses views and shared storage, and the file must
    not see in-place updates made after the call (optimizer buffers, tied weights)."""
    return tensor.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)


def _where(path: tuple) -> str:
    return "state" + "".join(f"[{k!r}]" for k in path)


class _Encoder:
    """Walks a structure once: returns its JSON skeleton and collects the tensors it points to."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def key_for(self, path: tuple) -> str:
        base = "/".join(str(k) for k in path) or "."
        key, n = base, 1
        while key in self.tensors:  # keys such as "0" and 0, or ones containing "/", can collide
            key, n = f"{base}~{n}", n + 1
        return key

    def add(self, path: tuple, tensor: torch.Tensor) -> str:
        key = self.key_for(path)
        self.tensors[key] = tensor
        return key

    def encode(self, value: Any, path: tuple = ()) -> Any:
        # Order matters: numpy float64 is a float subclass, bool is an int subclass.
        if isinstance(value, np.generic):
            return self.numpy_scalar(value, path)
        if value is None or type(value) in (bool, str):
            return value
        if type(value) is int:
            return {"__int__": hex(value)} if value.bit_length() > _BIG_INT_BITS else value
        if type(value) is float:
            return value if math.isfinite(value) else {"__float__": repr(value)}  # 'nan', 'inf', '-inf'
        if type(value) is list:
            return [self.encode(v, (*path, i)) for i, v in enumerate(value)]
        if type(value) is tuple:
            return {"__tuple__": [self.encode(v, (*path, i)) for i, v in enumerate(value)]}
        if isinstance(value, dict):  # OrderedDict / defaultdict load back as plain dicts
            return self.mapping(value, path)
        if type(value) is bytes:
            return {"__bytes__": self.add(path, torch.from_numpy(np.frombuffer(value, dtype=np.uint8).copy()))}
        if isinstance(value, torch.Tensor):
            return self.tensor(value, path)
        if isinstance(value, np.ndarray):
            return self.ndarray(value, path)
        raise TypeError(
            f"{_where(path)} has unsupported type {type(value).__module__}.{type(value).__qualname__}; "
            "save_state stores dict, list, tuple, int, float, bool, None, str, bytes, torch.Tensor and numpy arrays/scalars"
        )

    def mapping(self, value: dict, path: tuple) -> Any:
        plain = all(type(k) is str and not k.startswith("__") for k in value)
        items = [(k, self.encode(v, (*path, k))) for k, v in value.items()]
        if plain:
            return dict(items)
        # Non-str keys (optimizer state uses ints) or keys that look like placeholders: keep (key, value) pairs.
        return {"__dict__": [[self.key(k, path), v] for k, v in items]}

    def key(self, key: Any, path: tuple) -> Any:
        if key is None or type(key) in (bool, int, float, str):
            return self.encode(key, path)
        if type(key) is tuple:
            return {"__tuple__": [self.key(k, path) for k in key]}
        raise TypeError(
            f"{_where(path)} has a key of unsupported type {type(key).__qualname__} ({key!r}); "
            "keys may be str, int, float, bool, None or tuples of those"
        )

    def tensor(self, value: torch.Tensor, path: tuple) -> dict:
        if value.layout != torch.strided or value.is_quantized or value.is_meta:
            kind = f"{value.layout} {'quantized ' if value.is_quantized else ''}tensor on {value.device}"
            raise TypeError(f"{_where(path)} is a {kind}; only dense tensors with data can be saved")
        t = _cpu_copy(value.resolve_conj().resolve_neg())
        if t.dtype in _NATIVE_TORCH:
            return {"__tensor__": self.add(path, t)}
        try:
            raw = t.reshape(-1).view(torch.uint8)
        except RuntimeError as err:
            raise TypeError(f"{_where(path)} is a tensor of dtype {t.dtype}, which cannot be stored: {err}") from None
        return {"__tensor__": self.add(path, raw), "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}

    def ndarray(self, value: np.ndarray, path: tuple) -> dict:
        dt = value.dtype
        if dt.hasobject or dt.fields is not None:
            raise TypeError(f"{_where(path)} is a numpy array of dtype {dt}; object and structured arrays cannot be stored")
        a = np.array(value, copy=True, order="C")  # a private contiguous copy (views of one array must not share memory)
        if dt.isnative and (dt.kind in "biu" or (dt.kind == "f" and dt.itemsize <= 8) or dt == np.complex64):
            return {"__ndarray__": self.add(path, torch.from_numpy(a))}
        raw = torch.from_numpy(a.reshape(-1).view(np.uint8))
        return {"__ndarray__": self.add(path, raw), "dtype": dt.str, "shape": list(a.shape)}

    def numpy_scalar(self, value: np.generic, path: tuple) -> dict:
        dt = value.dtype
        if dt.hasobject or dt.fields is not None:
            raise TypeError(f"{_where(path)} is a numpy scalar of dtype {dt}; object and structured scalars cannot be stored")
        # The scalar's own bytes: exact for every dtype (float16, longdouble, datetime64, str_ ...).
        return {"__npscalar__": dt.str, "hex": np.asarray(value).tobytes().hex()}


def _decode(node: Any, tensors: Mapping[str, torch.Tensor], file: Path) -> Any:
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(v, tensors, file) for v in node]
    if type(node) is not dict:
        raise ValueError(f"{file}: malformed state skeleton node {node!r}")
    markers = [k for k in node if k.startswith("__")]
    if not markers:
        return {k: _decode(v, tensors, file) for k, v in node.items()}
    kind = markers[0]

    def tensor(name: str) -> torch.Tensor:
        if name not in tensors:
            raise ValueError(f"{file}: the skeleton refers to tensor {name!r}, which is not in the file")
        return tensors[name]

    if kind == "__tuple__":
        return tuple(_decode(v, tensors, file) for v in node[kind])
    if kind == "__dict__":
        return {_decode(k, tensors, file): _decode(v, tensors, file) for k, v in node[kind]}
    if kind == "__float__":
        return float(node[kind])
    if kind == "__int__":
        return int(node[kind], 16)
    if kind == "__bytes__":
        return tensor(node[kind]).numpy().tobytes()
    if kind == "__tensor__":
        t = tensor(node[kind])
        if "dtype" in node:
            dtype = getattr(torch, node["dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{file}: unknown tensor dtype {node['dtype']!r}")
            t = t.view(dtype).reshape(node["shape"])
        return t
    if kind == "__ndarray__":
        t = tensor(node[kind])
        if "dtype" not in node:
            return t.numpy()
        dtype = np.dtype(node["dtype"])
        if dtype.hasobject:
            raise ValueError(f"{file}: refusing numpy object dtype {node['dtype']!r}")
        return t.numpy().view(dtype).reshape(node["shape"])
    if kind == "__npscalar__":
        dtype = np.dtype(node[kind])
        if dtype.hasobject:
            raise ValueError(f"{file}: refusing numpy object dtype {node[kind]!r}")
        return np.frombuffer(bytes.fromhex(node["hex"]), dtype=dtype)[0]
    raise ValueError(f"{file}: unknown placeholder {kind!r} in the state skeleton (written by a newer smallnets?)")


def _read_safetensors(data: bytes, file: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file already read into memory."""
    try:
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 or 8 + n > len(data):
            raise ValueError("header runs past the end of the file")
        header = json.loads(data[8 : 8 + n])
        tensors = safetensors.torch.load(data)
    except Exception as err:  # SafetensorError, JSON errors, short files
        raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    return dict(header.get("__metadata__") or {}), tensors


def _check_format(meta: Mapping[str, str], expected: str, file: Path) -> None:
    found = meta.get("format")
    if found != expected:
        hint = {STATE_FORMAT: "; load it with load_state", WEIGHTS_FORMAT: "; load it with load_weights"}.get(found, "")
        raise ValueError(f"{file} must be a {expected!r} file, but its metadata says format={found!r}{hint}")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        version = None
    if version is None or version > FORMAT_VERSION:
        raise ValueError(f"{file} has format_version {meta.get('format_version')!r}; this smallnets reads versions <= {FORMAT_VERSION}")


def save_state(path: str | os.PathLike, state: Any) -> Path:
    """Write ``state`` (optimizer/scheduler/scaler/RNG states, counters ...) as one safetensors file.

    Everything is encoded before anything is written, and the file is replaced atomically: a
    failure leaves the previous file intact. Tensors come back on the CPU, detached, and without
    shared storage (each occurrence is stored as its own contiguous copy).
    """
    path = Path(path)
    encoder = _Encoder()
    skeleton = encoder.encode(state)
    metadata = {"format": STATE_FORMAT, "format_version": str(FORMAT_VERSION), "skeleton": json.dumps(skeleton, allow_nan=False)}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(encoder.tensors, tmp, metadata=metadata)
    return path


def load_state(path: str | os.PathLike) -> Any:
    """Read back what ``save_state`` wrote (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing state file, got {str(path)!r}")
    meta, tensors = _read_safetensors(path.read_bytes(), path)
    _check_format(meta, STATE_FORMAT, path)
    try:
        skeleton = json.loads(meta["skeleton"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: the state skeleton in the metadata is missing or not JSON ({err})") from None
    try:
        return _decode(skeleton, tensors, path)
    except (KeyError, TypeError, IndexError, RuntimeError) as err:  # a skeleton edited by hand or by another tool
        raise ValueError(f"{path}: malformed state skeleton ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------
# Model weights with a JSON sidecar
# ---------------------------------------------------------------------------------------------


def _to_json(value: Any, where: str) -> Any:
    """Strict-JSON form of a sidecar field: tuples become lists, non-finite floats a {"__float__": ...} marker."""
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        value = value.item()
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} must have str keys to be stored as JSON, got key {k!r} ({type(k).__name__})")
            out[k] = _to_json(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} must be JSON-like (dict with str keys, list, tuple, str, int, float, bool, None), "
        f"got {type(value).__qualname__}; store tensors and other state with save_state"
    )


def _dump_sidecar(sidecar: Mapping[str, Any]) -> str:
    """Strict JSON, one top-level key per line (a 1000-name class list stays one line)."""
    lines = (f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False, ensure_ascii=False)}" for k, v in sidecar.items())
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _from_json_hook(obj: dict) -> Any:
    if obj.keys() == {"__float__"}:
        return float(obj["__float__"])
    return obj


def _model_config(model: nn.Module, config: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = config if config is not None else getattr(model, "smallnets_config", None)
    if cfg is None:
        raise ValueError(
            f"model ({type(model).__name__}) has no smallnets_config (it was not built by smallnets.create_model); "
            "pass config={'name': ..., 'num_classes': ..., 'in_chans': ..., 'knobs': {...}}"
        )
    arg = "config" if config is not None else "model.smallnets_config"
    has_spec = isinstance(getattr(model, "spec", None), ArchSpec)
    if not isinstance(cfg, Mapping) or not (isinstance(cfg.get("name"), str) or (cfg.get("name") is None and has_spec)):
        raise ValueError(f"{arg} must be a dict with a str 'name' (or None for a model built from a spec), got {cfg!r}")
    for key in ("num_classes", "in_chans"):
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{arg}[{key!r}] must be an integer >= 1, got {v!r}")
    knobs = cfg.get("knobs", {})
    if not isinstance(knobs, Mapping):
        raise ValueError(f"{arg}['knobs'] must be a dict, got {knobs!r}")
    knobs = _to_json(dict(knobs), f"{arg}['knobs']")
    return {"name": cfg["name"], "num_classes": cfg["num_classes"], "in_chans": cfg["in_chans"], "knobs": knobs}


def _check_spec_describes(model: nn.Module, spec: ArchSpec) -> None:
    """The sidecar must never lie: the spec, built (on meta tensors), has the model's keys and shapes."""
    from smallnets.models import build_model

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != actual:
        diff = sorted(set(expected) ^ set(actual)) or [k for k in expected if expected[k] != actual[k]]
        key = diff[0]
        raise ValueError(f"model.spec does not describe the model's weights (first difference: {key!r}, spec {expected.get(key)} vs model "
                         f"{actual.get(key)}); set model.spec to the architecture the model has")  # fmt: skip


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel/DDP (``.module``) and torch.compile (``._orig_mod``) wrappers,
    so that the saved keys carry no wrapper prefix and load into a plain model."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _versions() -> tuple[str, str]:
    from smallnets import __version__  # lazily: smallnets/__init__ may import this module

    return __version__, str(torch.__version__)


def weights_meta(
    model: nn.Module,
    *,
    config: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar ``save_weights`` writes for ``model``, with ``sha256`` None (the digest of a file not
    yet written); arguments as there. The compressed format (``compress.packed``) records it in its header."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
    model = _unwrap(model)
    cfg = _model_config(model, config)
    if classes is not None:
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be a list of str, got {classes!r}"[:300])
        if len(classes) != cfg["num_classes"]:
            raise ValueError(f"classes must name num_classes={cfg['num_classes']} outputs, got {len(classes)} names")
        classes = list(classes)
    for name, value in (("preprocessing", preprocessing), ("extra", extra)):
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a dict or None, got {type(value).__qualname__}")
    spec = getattr(model, "spec", None)
    if isinstance(spec, ArchSpec):
        _check_spec_describes(model, spec)
    smallnets_version, torch_version = _versions()
    return {
        "format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "model": cfg["name"], "num_classes": cfg["num_classes"],
        "in_chans": cfg["in_chans"], "knobs": cfg["knobs"], "spec": spec.to_dict() if isinstance(spec, ArchSpec) else None,
        "classes": classes, "preprocessing": _to_json(preprocessing, "preprocessing"), "extra": _to_json(extra, "extra"),
        "smallnets_version": smallnets_version, "torch_version": torch_version, "sha256": None,
        "params": sum(p.numel() for p in model.parameters()),  # parameters() already skips tied duplicates
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    config: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model's state dict (parameters and buffers) to ``path`` and a sidecar ``path.with_suffix('.json')``.

    ``config`` (name, num_classes, in_chans, knobs) defaults to ``model.smallnets_config``.
    ``classes`` names the outputs in order; ``preprocessing`` (mean, std, input size ...) and
    ``extra`` are free JSON-like dicts. Both files are written to temp files first and renamed
    only once both are complete.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    sidecar = weights_meta(model, config=config, classes=classes, preprocessing=preprocessing, extra=extra)
    tensors = {}
    for key, value in _unwrap(model).state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state_dict entry {key!r} is a {type(value).__qualname__}; save_weights stores tensors only")
        if value.dtype not in _NATIVE_TORCH or value.layout != torch.strided:
            raise TypeError(f"model state_dict entry {key!r} is a {value.layout} {value.dtype} tensor, which safetensors cannot store")
        tensors[key] = _cpu_copy(value)

    identity = ("model", "num_classes", "in_chans", "knobs", "spec", "classes", "preprocessing")
    metadata = {"format": WEIGHTS_FORMAT, "format_version": str(FORMAT_VERSION)}
    metadata.update({k: sidecar[k] if isinstance(sidecar[k], str) else json.dumps(sidecar[k], allow_nan=False) for k in identity})
    metadata["model"] = sidecar["model"] or ""  # safetensors metadata holds strings: "" = built from a spec
    metadata.update(smallnets_version=sidecar["smallnets_version"], torch_version=sidecar["torch_version"])

    sidecar_path = path.with_suffix(".json")
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)
        sidecar["sha256"] = _file_sha256(tmp)
        # Inside the weights block: both temp files are complete before either is renamed.
        atomic_write_text(sidecar_path, _dump_sidecar(sidecar))
    return path


def resolve_weights(path: str | os.PathLike) -> Path:
    """The weights file ``path`` names: the file itself (.safetensors, .sncz compressed, or an .onnx
    export), or in a run directory best.safetensors, else last.safetensors."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"path {str(path)!r} is a directory without weights: expected {' or '.join(RUN_WEIGHTS)} in it")
    if path.suffix not in (".safetensors", ".sncz", ".onnx"):
        raise ValueError(f"path must be a .safetensors file or a run directory (or a .sncz compressed file, or an exported .onnx), got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing weights file, got {str(path)!r}")
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a weights file (``path`` may be the .json, the .safetensors or a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = resolve_weights(path)
    if path.suffix not in (".json", ".safetensors"):
        raise ValueError(f"path must be a .json sidecar, a .safetensors file or a run directory, got {str(path)!r}")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"no sidecar for {str(path)!r}: {str(sidecar)!r} does not exist")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"), object_hook=_from_json_hook)
    except ValueError as err:
        raise ValueError(f"sidecar {str(sidecar)!r} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"sidecar {str(sidecar)!r} must hold a JSON object, got {type(meta).__name__}")
    _check_format({**meta, "format_version": str(meta.get("format_version"))}, WEIGHTS_FORMAT, sidecar)
    return meta


def _meta_from_metadata(metadata: Mapping[str, str], file: Path) -> dict[str, Any] | None:
    """Sidecar-like dict from the safetensors metadata, for a weights file whose sidecar is gone."""
    if "format" not in metadata:
        return None  # a plain safetensors file: loadable into a given model
    _check_format(metadata, WEIGHTS_FORMAT, file)
    meta: dict[str, Any] = {"format": WEIGHTS_FORMAT, "format_version": int(metadata["format_version"])}
    try:
        meta["model"] = metadata["model"] or None
        for key in ("num_classes", "in_chans", "knobs", "classes", "preprocessing"):
            meta[key] = json.loads(metadata[key], object_hook=_from_json_hook)
        meta["spec"] = json.loads(metadata["spec"]) if "spec" in metadata else None  # files from before specs have none
    except (KeyError, ValueError) as err:
        raise ValueError(f"{file}: smallnets metadata is incomplete or not JSON ({err})") from None
    meta.update(extra=None, sha256=None)
    meta.update({k: metadata.get(k) for k in ("smallnets_version", "torch_version")})
    return meta


def recorded_knobs(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A sidecar's knobs as ``create_model`` takes them (JSON has no tuples: tuple-valued knobs get their type back)."""
    from smallnets.registry import model_info

    if meta.get("model") is None:  # built from a spec: no zoo knobs
        return {}
    info = model_info(meta["model"])
    knobs = dict(meta.get("knobs") or {})
    knobs.update({k: tuple(v) for k, v in knobs.items() if isinstance(v, list) and isinstance(info.knobs.get(k), tuple)})
    return knobs


def _mismatch(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in own)  # the file's own order is not stable across loads
    shapes = [k for k, v in own.items() if k in tensors and isinstance(v, torch.Tensor) and v.shape != tensors[k].shape]
    return missing, unexpected, shapes


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "floating-point" if dtype.is_floating_point else "integer"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def conform_state(
    state: Mapping[str, torch.Tensor], own: Mapping[str, Any], *, where: str, names: Mapping[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """``state`` (model key -> tensor) cast to the dtypes of the model's state dict ``own``: every path
    that loads weights into a model goes through here.

    A tensor must be of its parameter's or buffer's kind: floating point for float tensors (float16,
    bfloat16, float64 ... are cast), integer for integer buffers (BatchNorm's num_batches_tracked),
    bool for bool. Anything else (a float weight stored as int32 or bool) is refused naming the key,
    the dtype found and the dtype expected. NaN or inf values warn. ``names`` gives a key's name in the
    file where it differs (a converted checkpoint); ``where`` names the file in messages.
    """
    out: dict[str, torch.Tensor] = {}
    wrong: list[str] = []
    nonfinite: list[str] = []
    for key, tensor in state.items():
        target = own.get(key)
        if not isinstance(target, torch.Tensor):
            out[key] = tensor
            continue
        name = names.get(key, key) if names else key
        if _dtype_kind(tensor.dtype) != _dtype_kind(target.dtype):
            model = f" (the model's {key})" if name != key else ""
            wrong.append(f"{name!r} is {_dtype_name(tensor.dtype)}, expected {_dtype_name(target.dtype)}{model}")
            continue
        cast = tensor.to(target.dtype)
        if cast.is_floating_point() and cast.device.type != "meta" and not bool(torch.isfinite(cast).all()):
            nonfinite.append(repr(name))
        out[key] = cast
    if wrong:
        more = f"; ... ({len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise ValueError(
            f"{where}: {len(wrong)} tensor(s) have a dtype that does not fit the model: {'; '.join(wrong[:5])}{more}. "
            "A parameter or buffer loads only from a tensor of its own kind (floating point: float16, bfloat16, "
            "float32 and float64 are cast; integer for integer buffers such as num_batches_tracked)"
        )
    if nonfinite:
        more = f", ... ({len(nonfinite) - 5} more)" if len(nonfinite) > 5 else ""
        warnings.warn(
            f"{where}: {len(nonfinite)} tensor(s) hold NaN or inf values: {', '.join(nonfinite[:5])}{more}; "
            "the model's outputs will not be meaningful",
            stacklevel=3,
        )
    return out


def _listing(title: str, items: list[str], limit: int = 10) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): {', '.join(items[:limit])}{more}"


def read_weights(path: str | os.PathLike) -> tuple[Path, dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(file, sidecar-or-metadata, tensors) of weights saved by ``save_weights``; the sidecar's sha256 is
    checked against the very bytes read. ``path``: a .safetensors file, a run directory, or a compressed
    .sncz file (``compress.packed``: meta and checksum inside; the tensors come back decoded)."""
    file = resolve_weights(path)
    data = file.read_bytes()  # one read: the bytes hashed are the bytes loaded
    from smallnets.compress import packed  # here, not at import: the format is only read when met

    if file.suffix == packed.SUFFIX or packed.is_packed(data):  # by name (a wrong magic is then refused) or by magic
        meta, tensors = packed.decode_packed(data, file)
        if meta is not None:
            _check_format({**meta, "format_version": str(meta.get("format_version"))}, WEIGHTS_FORMAT, file)
        return file, meta, tensors
    sidecar = file.with_suffix(".json")
    meta = read_sidecar(sidecar) if sidecar.is_file() else None
    if meta is not None and meta.get("sha256") is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != meta["sha256"]:
            raise ValueError(
                f"{file}: sha256 {actual} does not match {meta['sha256']} in {sidecar.name}; the file was "
                "modified or truncated after it was saved (or the sidecar belongs to another file)"
            )
    metadata, tensors = _read_safetensors(data, file)
    del data
    if meta is None:
        meta = _meta_from_metadata(metadata, file)
    return file, meta, tensors


def load_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], file: Path, *, strict: bool) -> dict[str, list[str]]:
    """Load ``tensors`` into ``model`` (dtypes conformed); strict refuses any difference, otherwise the
    keys present in both with equal shapes load and the rest is returned as the report."""
    missing, unexpected, misshaped = _mismatch(model, tensors)
    own = model.state_dict()
    shapes = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}" for k in misshaped]
    if strict and (missing or unexpected or shapes):
        raise ValueError(
            f"{file} does not match the model ({type(model).__name__}):"
            + (_listing("missing from the file", missing) if missing else "")
            + (_listing("unexpected in the file", unexpected) if unexpected else "")
            + (_listing("shape mismatch", shapes) if shapes else "")
            + "\nPass strict=False to load only the keys that match."
        )
    skip = {*unexpected, *misshaped}
    model.load_state_dict(conform_state({k: t for k, t in tensors.items() if k not in skip}, own, where=str(file)), strict=strict)
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": shapes}
