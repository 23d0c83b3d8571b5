"""The compressed weights file (``.sncz``): shared weights as codebooks and bit-packed or Huffman-coded
cluster indices, pruned positions as coded relative offsets (Deep Compression, Han et al. 2016,
sec. 2 and 4), everything else as raw bytes; one file with a JSON header and a SHA-256.

Layout (integers little-endian; docs/compressed_format.md has the full specification)::

    magic     8 bytes   b"SNCZ\\r\\n\\x1a\\n"
    version   uint32    2
    length    uint64    bytes of the header
    header    zlib-deflated UTF-8 JSON {"format": "smallnets.packed", "version": 2, "meta": ..., "blobs": N, "tensors": [...]}
              (version 1, still read: the same JSON, not deflated)
    blobs     N bytes   the tensors' data, each part at the [offset, length] its header entry names
    sha256    32 bytes  SHA-256 of every byte before it

``meta`` is the sidecar ``checkpoint.save_weights`` writes (``checkpoint.weights_meta``: model,
spec, classes, preprocessing, versions ...) or null. Each tensor has an ``encoding``:

* ``dense``: its raw bytes in C order, dtype as recorded (``float32``, ``int64``, ``bool`` ...).
* ``sparse``: a pruned tensor that is not shared, losslessly: the raw bytes of its non-zero elements
  (an element is zero when all its bytes are: -0.0 is kept as a value) in C order, and their
  positions as the ``shared`` sparse layout codes them. Taken where smaller than ``dense``.
* ``shared``: a float32 codebook of k values and, per position, a symbol. ``layout`` ``dense``
  codes every position (symbol k = a pruned zero, present only when the tensor has zeros);
  ``sparse`` codes the non-zero positions only, with a second stream of their positions: the gap
  to the previous non-zero position minus one, in fields of ``field`` bits whose largest value
  2**field - 1 is a filler (advance that many positions, no weight), as in the paper's sec. 2. The
  writer takes the smaller layout (``sparse="auto"``) and the best field width.

A stream (``indices``, ``positions``) is ``fixed`` (every symbol in ``width`` bits) or ``huffman``
(canonical code, one uint8 code length per symbol of the alphabet stored before it); with
``huffman=True`` a stream is Huffman-coded when that is smaller, code table included.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smallnets._io import atomic_path
from smallnets.compress import huffman as hcode  # (write_packed's huffman= is the on/off switch)

__all__ = ["MAGIC", "SUFFIX", "decode_packed", "is_packed", "packed_summary", "read_packed", "write_packed"]

MAGIC = b"SNCZ\r\n\x1a\n"  # PNG-style: a text-mode transfer (CR/LF, ^Z) changes it
SUFFIX = ".sncz"
FORMAT = "smallnets.packed"
VERSION = 2
READS = (1, 2)  # version 1: the header's JSON not deflated
_MAX_HEADER = 256 << 20  # a deflated header that inflates past this is refused (a zip bomb, not a model)
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST = 32
_MAX_FIELD = 12  # widest position field tried for Huffman coding (a 4096-entry code table)


# ---------------------------------------------------------------------------------------------
# Streams of symbols
# ---------------------------------------------------------------------------------------------


class _Blobs:
    """The blob area being written: parts appended in order, each addressed by [offset, length]."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        ref = [self.size, len(data)]
        self.parts.append(data)
        self.size += len(data)
        return ref


def _width(alphabet: int) -> int:
    return max(1, (alphabet - 1).bit_length())


def _fixed_stream(symbols: np.ndarray, alphabet: int) -> tuple[dict, list[bytes]]:
    width = _width(alphabet)
    data, nbits = hcode.pack_bits(symbols, width)
    return {"coding": "fixed", "count": int(symbols.size), "width": width, "nbits": nbits}, [data]


def _huffman_stream(symbols: np.ndarray, alphabet: int) -> tuple[dict, list[bytes]]:
    lengths = hcode.build_code(np.bincount(symbols, minlength=alphabet))
    data, nbits = hcode.encode(symbols, lengths)
    return {"coding": "huffman", "count": int(symbols.size), "alphabet": alphabet, "nbits": nbits}, [lengths.astype(np.uint8).tobytes(), data]


def _huffman_bytes(counts: np.ndarray) -> int:
    """Bytes a Huffman-coded stream with these symbol counts takes, its code table included."""
    lengths = hcode.build_code(counts)
    return counts.size + -(-int(counts @ lengths) // 8)


def _stream(symbols: np.ndarray, alphabet: int, use_huffman: bool) -> tuple[dict, list[bytes]]:
    fixed = _fixed_stream(symbols, alphabet)
    if not use_huffman or symbols.size == 0:
        return fixed
    if _huffman_bytes(np.bincount(symbols, minlength=alphabet)) >= len(fixed[1][0]):
        return fixed
    return _huffman_stream(symbols, alphabet)


def _stream_bytes(parts: tuple[dict, list[bytes]]) -> int:
    return sum(len(p) for p in parts[1])


def _place(entry: dict, parts: list[bytes], blobs: _Blobs) -> dict:
    if entry["coding"] == "huffman":
        entry["lengths"] = blobs.add(parts[0])
        entry["data"] = blobs.add(parts[1])
    else:
        entry["data"] = blobs.add(parts[0])
    return entry


def _read_stream(entry: Any, blob, where: str) -> np.ndarray:
    if not isinstance(entry, dict) or entry.get("coding") not in ("fixed", "huffman"):
        raise ValueError(f"{where}: a stream must be a dict with coding 'fixed' or 'huffman'")
    count, nbits = _int(entry, "count", where), _int(entry, "nbits", where)
    data = blob(entry.get("data"), f"{where}.data")
    if entry["coding"] == "fixed":
        width = _int(entry, "width", where)
        if not 1 <= width <= hcode.MAX_LENGTH or nbits != count * width:
            raise ValueError(f"{where}: width {width} and nbits {nbits} do not fit {count} symbols")
        return hcode.unpack_fixed(data, width, count)
    alphabet = _int(entry, "alphabet", where)
    lengths = np.frombuffer(blob(entry.get("lengths"), f"{where}.lengths"), dtype=np.uint8)
    if lengths.size != alphabet:
        raise ValueError(f"{where}: the code table has {lengths.size} lengths for an alphabet of {alphabet}")
    return hcode.decode(data, lengths, count, nbits)


# ---------------------------------------------------------------------------------------------
# Positions: relative offsets with fillers
# ---------------------------------------------------------------------------------------------


def _skips(flat_mask: np.ndarray) -> np.ndarray:
    """Zeros skipped before each non-zero position (the gap to the previous one, minus one)."""
    pos = np.flatnonzero(flat_mask)
    return np.diff(pos, prepend=-1) - 1


def _offset_symbols(skips: np.ndarray, field: int) -> np.ndarray:
    cap = (1 << field) - 1
    fillers = skips // cap
    symbols = np.full(int(skips.size + fillers.sum()), cap, dtype=np.int64)
    symbols[np.cumsum(fillers + 1) - 1] = skips % cap  # each weight's symbol follows its fillers
    return symbols


def _positions_stream(skips: np.ndarray, use_huffman: bool) -> tuple[dict, list[bytes]]:
    """The cheapest field width (fixed: 1..16 bits; Huffman: 1.._MAX_FIELD) and coding for these skips."""
    def n_symbols(field: int) -> int:
        return int(skips.size + (skips // ((1 << field) - 1)).sum())

    sizes = {(f, "fixed"): -(-n_symbols(f) * f // 8) for f in range(1, 17)}
    if use_huffman:
        for f in range(1, _MAX_FIELD + 1):
            cap = (1 << f) - 1
            counts = np.bincount(skips % cap, minlength=cap + 1)
            counts[cap] += int((skips // cap).sum())
            sizes[(f, "huffman")] = _huffman_bytes(counts)
    field, coding = min(sizes, key=lambda key: (sizes[key], key[1] == "huffman", key[0]))
    symbols = _offset_symbols(skips, field)
    entry, parts = (_huffman_stream if coding == "huffman" else _fixed_stream)(symbols, 1 << field)
    entry["field"] = field
    return entry, parts


def _positions(symbols: np.ndarray, field: int, count: int, numel: int, where: str) -> np.ndarray:
    cap = (1 << field) - 1
    weight = symbols != cap
    if int(weight.sum()) != count:
        raise ValueError(f"{where}: the positions stream holds {int(weight.sum())} positions, expected {count}")
    advance = np.where(weight, symbols + 1, cap)
    pos = (np.cumsum(advance) - 1)[weight]
    if pos.size and (int(pos[-1]) >= numel or (symbols.size and not weight[-1])):
        raise ValueError(f"{where}: the positions run past the tensor's {numel} elements")
    return pos


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _raw(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _shared_entry(name: str, tensor: torch.Tensor, layer: Any, blobs: _Blobs, use_huffman: bool, sparse: bool | str) -> dict:
    codebook = layer.codebook.detach().to("cpu", torch.float32).contiguous()
    indices = layer.indices.detach().to("cpu").reshape(-1).numpy().astype(np.int64)
    if tuple(layer.indices.shape) != tuple(tensor.shape):
        raise ValueError(f"shared[{name!r}] has indices of shape {tuple(layer.indices.shape)}, but the tensor has {tuple(tensor.shape)}")
    k = codebook.numel()
    if k > 1 << 16 or (indices.size and (indices.max() >= k or indices.min() < -1)):
        raise ValueError(f"shared[{name!r}] has indices outside its {k}-entry codebook")
    if _raw(layer.weight().to(tensor.dtype)) != _raw(tensor):
        raise ValueError(
            f"state dict entry {name!r} does not hold its shared weights (codebook[indices], zeros where pruned); "
            "pass the SharedWeights of this very model (after fine-tuning: the same SharedWeights the hook updated), "
            "or write them into it first with shared.apply(model)"
        )
    mask = indices >= 0
    nonzero = int(mask.sum())
    entry: dict[str, Any] = {"encoding": "shared", "bits": int(layer.bits), "nonzero": nonzero, "codebook": blobs.add(_raw(codebook))}

    zero_symbol = nonzero < indices.size
    dense = _stream(np.where(mask, indices, k), k + zero_symbol, use_huffman) if sparse is not True else None
    split = None
    if sparse is not False:
        split = (_stream(indices[mask], max(k, 1), use_huffman), _positions_stream(_skips(mask), use_huffman))
    if dense is not None and (split is None or _stream_bytes(dense) <= _stream_bytes(split[0]) + _stream_bytes(split[1])):
        entry.update(layout="dense", indices=_place(*dense, blobs))
    else:
        entry.update(layout="sparse", indices=_place(*split[0], blobs), positions=_place(*split[1], blobs))
    return entry


def _zero_free(tensor: torch.Tensor) -> np.ndarray:
    """True at the elements whose bytes are not all zero (bitwise, so -0.0 and NaN payloads are values)."""
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    if not t.numel():
        return np.zeros(0, dtype=bool)
    return t.view(torch.uint8).numpy().reshape(t.numel(), -1).any(axis=1)


def _unshared_entry(tensor: torch.Tensor, blobs: _Blobs, use_huffman: bool, sparse: bool | str) -> dict:
    """``sparse`` (the non-zero elements' raw bytes + their positions) where the file is smaller for it,
    its longer header entry counted, else ``dense``."""
    raw = _raw(tensor)
    if sparse is not False and tensor.numel():
        mask = _zero_free(tensor)
        values = np.frombuffer(raw, dtype=np.uint8).reshape(mask.size, -1)[mask].tobytes()
        stream, parts = _positions_stream(_skips(mask), use_huffman)
        at = [blobs.size, len(raw)]  # offsets as long as the real ones will be
        sparse_entry = {"encoding": "sparse", "nonzero": int(mask.sum()), "values": at,
                        "positions": {**stream, **dict.fromkeys(("lengths", "data") if stream["coding"] == "huffman" else ("data",), at)}}  # fmt: skip
        extra = len(json.dumps(sparse_entry, separators=(",", ":"))) - len(json.dumps({"encoding": "dense", "data": at}, separators=(",", ":")))
        if len(values) + sum(map(len, parts)) + extra < len(raw):
            sparse_entry["values"] = blobs.add(values)
            sparse_entry["positions"] = _place(stream, parts, blobs)
            return sparse_entry
    return {"encoding": "dense", "data": blobs.add(raw)}


def write_packed(
    path: str | os.PathLike,
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None,
    *,
    shared: Mapping[str, Any] | None = None,
    huffman: bool = True,
    sparse: bool | str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write a model's state dict (or a state dict) to the compressed file ``path`` (``.sncz``).

    ``meta``: the sidecar to record, ``checkpoint.weights_meta(model, classes=..., ...)``, so that
    ``load_weights(path)`` can rebuild the model; None records none. ``shared``: the SharedWeights
    of ``share_weights`` (and fine-tuning): those tensors are stored as codebook + indices and must
    hold exactly those shared weights; every other tensor is stored as its raw bytes, all of them
    (``dense``) or those of its non-zero elements with their positions (``sparse``, where smaller:
    a pruned, unshared tensor). ``huffman``: Huffman-code the index and position streams where that
    is smaller. ``sparse``: "auto" (code the non-zero positions only where smaller, shared or not),
    True (every shared tensor in the sparse layout; the others as with "auto") or False (never).
    The file is written to a temporary file and renamed; an existing file is replaced only with
    ``overwrite=True``.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"path must end in {SUFFIX}, got {str(path)!r}")
    for name, value in (("huffman", huffman), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    if not (isinstance(sparse, bool) or sparse == "auto"):
        raise ValueError(f"sparse must be 'auto', True or False, got {sparse!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state = dict(model_or_state_dict)
    else:
        raise TypeError(f"model_or_state_dict must be a torch.nn.Module or a state dict, got {type(model_or_state_dict).__qualname__}")
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict (checkpoint.weights_meta(model)) or None, got {type(meta).__qualname__}")
    shared = dict(shared or {})
    for name in shared:
        if name not in state:
            raise ValueError(f"shared names {name!r}, which is not in the state dict")

    blobs = _Blobs()
    tensors = []
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.is_quantized:
            raise TypeError(f"state dict entry {name!r} must be a dense tensor, got {type(tensor).__qualname__}")
        entry: dict[str, Any] = {"name": name, "shape": list(tensor.shape), "dtype": _dtype_name(tensor.dtype)}
        if name in shared:
            entry.update(_shared_entry(name, tensor, shared[name], blobs, huffman, sparse))
        else:
            entry.update(_unshared_entry(tensor, blobs, huffman, sparse))
        tensors.append(entry)
    header = {"format": FORMAT, "version": VERSION, "meta": dict(meta) if meta is not None else None, "blobs": blobs.size, "tensors": tensors}
    try:
        text = json.dumps(header, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta must be strict JSON (str keys, no NaN or inf; checkpoint.weights_meta makes it so): {err}") from None
    text = zlib.compress(text, 9)  # spec + tensor table of a trained MobileNetV2: 49.6 KB as JSON, 6.7 KB deflated

    digest = hashlib.sha256()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for part in (_PREFIX.pack(MAGIC, VERSION, len(text)), text, *blobs.parts):
                f.write(part)
                digest.update(part)
            f.write(digest.digest())
    return path


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _int(entry: Mapping, key: str, where: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: {key!r} must be an integer >= 0, got {value!r}")
    return value


def _from_json_hook(obj: dict) -> Any:
    """Non-finite floats in the sidecar fields, as checkpoint writes them ({"__float__": "nan"})."""
    if obj.keys() == {"__float__"}:
        return float(obj["__float__"])
    return obj


def is_packed(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes at least) starts like a compressed weights file."""
    return data[: len(MAGIC)] == MAGIC


def _open(data: bytes, file: str) -> tuple[dict, memoryview]:
    """(header, blob area) of a compressed file's bytes, after checking magic, checksum and version."""
    if not is_packed(data):
        raise ValueError(f"{file} is not a smallnets compressed ({SUFFIX}) file: it starts with {bytes(data[:8])!r}, not {MAGIC!r}")
    if len(data) < _PREFIX.size + _DIGEST:
        raise ValueError(f"{file}: checksum mismatch: the file was modified or truncated ({len(data)} bytes is too short to hold one)")
    body, recorded = memoryview(data)[:-_DIGEST], bytes(data[-_DIGEST:])
    actual = hashlib.sha256(body).digest()
    if actual != recorded:
        raise ValueError(
            f"{file}: checksum mismatch: the file was modified or truncated (SHA-256 of its contents {actual.hex()[:16]}..., "
            f"recorded {recorded.hex()[:16]}...)"
        )
    _, version, length = _PREFIX.unpack_from(data)
    if version not in READS:
        raise ValueError(f"{file} has format version {version}; this smallnets reads versions {', '.join(map(str, READS))}")
    if _PREFIX.size + length > len(body):
        raise ValueError(f"{file}: malformed file: the header length {length} runs past the end of the file")
    text = bytes(body[_PREFIX.size : _PREFIX.size + length])
    if version >= 2:
        inflate = zlib.decompressobj()
        try:
            text = inflate.decompress(text, _MAX_HEADER)
        except zlib.error as err:
            raise ValueError(f"{file}: malformed header: it does not inflate ({err})") from None
        if inflate.unconsumed_tail:
            raise ValueError(f"{file}: malformed header: it inflates past {_MAX_HEADER} bytes")
        if not inflate.eof or inflate.unused_data:
            raise ValueError(f"{file}: malformed header: the deflated stream is incomplete or followed by other bytes")
    try:
        header = json.loads(text.decode("utf-8"), object_hook=_from_json_hook)
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{file}: the header is not valid JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("tensors"), list):
        raise ValueError(f"{file}: malformed header: expected a {FORMAT!r} object with a list of tensors")
    if header.get("meta") is not None and not isinstance(header["meta"], dict):
        raise ValueError(f"{file}: malformed header: meta must be an object or null")
    blob_area = body[_PREFIX.size + length :]
    if header.get("blobs") != len(blob_area):
        raise ValueError(f"{file}: malformed header: it names {header.get('blobs')!r} bytes of data, the file holds {len(blob_area)}")
    return header, blob_area


def _dtype(name: Any, where: str) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{where}: unknown dtype {name!r}")
    return dtype


def _shape(entry: Mapping, where: str) -> list[int]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"{where}: shape must be a list of integers >= 0, got {shape!r}")
    return shape


def _decode_tensor(entry: Any, blob, where: str) -> torch.Tensor:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a tensor entry must be an object")
    shape, dtype = _shape(entry, where), _dtype(entry.get("dtype"), where)
    numel = math.prod(shape)
    if entry.get("encoding") == "dense":
        raw = blob(entry.get("data"), f"{where}.data")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise ValueError(f"{where}: {len(raw)} bytes of data for {numel} {_dtype_name(dtype)} values")
        if numel == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
    if entry.get("encoding") == "sparse":
        return _decode_sparse(entry, blob, shape, dtype, numel, where)
    if entry.get("encoding") != "shared":
        raise ValueError(f"{where}: unknown encoding {entry.get('encoding')!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"{where}: a shared tensor must be floating point, got {_dtype_name(dtype)}")
    raw = blob(entry.get("codebook"), f"{where}.codebook")
    if len(raw) % 4:
        raise ValueError(f"{where}: the codebook is {len(raw)} bytes, not whole float32 values")
    codebook = np.frombuffer(raw, dtype="<f4")
    k, nonzero = codebook.size, _int(entry, "nonzero", where)
    if nonzero > numel:
        raise ValueError(f"{where}: {nonzero} non-zero values in a tensor of {numel}")
    if entry.get("layout") == "dense":
        symbols = _read_stream(entry.get("indices"), blob, f"{where}.indices")
        if symbols.size != numel or (symbols.size and symbols.max() > k) or int((symbols < k).sum()) != nonzero:
            raise ValueError(f"{where}: the index stream does not fit {numel} positions, {nonzero} non-zero, and a {k}-entry codebook")
        positions, indices = np.flatnonzero(symbols < k), symbols[symbols < k]
    elif entry.get("layout") == "sparse":
        indices = _read_stream(entry.get("indices"), blob, f"{where}.indices")
        positions = _positions_of(entry, blob, nonzero, numel, where)
        if indices.size != nonzero or (indices.size and indices.max() >= k):
            raise ValueError(f"{where}: the index stream does not fit {nonzero} non-zero values and a {k}-entry codebook")
    else:
        raise ValueError(f"{where}: unknown layout {entry.get('layout')!r}")
    flat = np.zeros(numel, dtype=np.float32)
    flat[positions] = codebook[indices]
    return torch.from_numpy(flat).reshape(shape).to(dtype)


def _positions_of(entry: Mapping, blob, nonzero: int, numel: int, where: str) -> np.ndarray:
    stream = entry.get("positions")
    field = stream.get("field") if isinstance(stream, dict) else None
    if not isinstance(field, int) or isinstance(field, bool) or not 1 <= field <= 16:
        raise ValueError(f"{where}.positions: field must be an integer in 1..16, got {field!r}")
    return _positions(_read_stream(stream, blob, f"{where}.positions"), field, nonzero, numel, f"{where}.positions")


def _decode_sparse(entry: Mapping, blob, shape: list[int], dtype: torch.dtype, numel: int, where: str) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    nonzero = _int(entry, "nonzero", where)
    if nonzero > numel:
        raise ValueError(f"{where}: {nonzero} non-zero values in a tensor of {numel}")
    values = blob(entry.get("values"), f"{where}.values")
    if len(values) != nonzero * itemsize:
        raise ValueError(f"{where}: {len(values)} bytes of values for {nonzero} non-zero {_dtype_name(dtype)} values")
    positions = _positions_of(entry, blob, nonzero, numel, where)
    flat = np.zeros((numel, itemsize), dtype=np.uint8)
    flat[positions] = np.frombuffer(values, dtype=np.uint8).reshape(nonzero, itemsize)
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(flat.reshape(-1)).view(dtype).reshape(shape)


def decode_packed(data: bytes, file: str | os.PathLike = "<bytes>") -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(meta, state dict) of a compressed file's bytes; ``file`` names it in messages."""
    file = str(file)
    header, area = _open(data, file)

    def blob(ref: Any, where: str) -> bytes:
        if not (isinstance(ref, list) and len(ref) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ref)):
            raise ValueError(f"{file}: malformed header: {where} must be [offset, length], got {ref!r}")
        if ref[0] + ref[1] > len(area):
            raise ValueError(f"{file}: malformed header: {where} = {ref} runs past the {len(area)} bytes of data")
        return bytes(area[ref[0] : ref[0] + ref[1]])

    state: dict[str, torch.Tensor] = {}
    for i, entry in enumerate(header["tensors"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in state:
            raise ValueError(f"{file}: malformed header: tensors[{i}] has a missing or repeated name {name!r}")
        try:
            state[name] = _decode_tensor(entry, blob, f"tensor {name!r}")
        except ValueError as err:
            raise ValueError(f"{file}: malformed file: {err}") from None
    return header["meta"], state


def read_packed(path: str | os.PathLike) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(meta, state dict) of a ``.sncz`` file: the shared tensors exactly as they were written, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing {SUFFIX} file, got {str(path)!r}")
    return decode_packed(path.read_bytes(), path)


def packed_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Where a compressed file's bytes go: per part (header, codebooks, indices, positions, values
    (of sparse tensors), dense, checksum; Huffman code tables count with their stream) and per tensor."""
    path = Path(path)
    data = path.read_bytes()
    header, _ = _open(data, str(path))

    def size(ref: Any) -> int:
        return ref[1] if isinstance(ref, list) and len(ref) == 2 else 0

    def stream_size(stream: Any) -> int:
        return size(stream.get("data")) + size(stream.get("lengths")) if isinstance(stream, dict) else 0

    parts = {"header": len(data) - _DIGEST - header["blobs"], "codebooks": 0, "indices": 0,
             "positions": 0, "values": 0, "dense": 0, "checksum": _DIGEST}  # fmt: skip
    tensors = {}
    for entry in header["tensors"]:
        if entry.get("encoding") == "shared":
            row = {"encoding": "shared", "layout": entry.get("layout"), "bits": entry.get("bits"), "nonzero": entry.get("nonzero"),
                   "codebook": size(entry.get("codebook")), "indices": stream_size(entry.get("indices")),
                   "indices_coding": entry["indices"].get("coding"), "positions": stream_size(entry.get("positions")),
                   "positions_coding": (entry.get("positions") or {}).get("coding")}  # fmt: skip
            row["bytes"] = row["codebook"] + row["indices"] + row["positions"]
            for part in ("codebook", "indices", "positions"):
                parts["codebooks" if part == "codebook" else part] += row[part]
        elif entry.get("encoding") == "sparse":
            row = {"encoding": "sparse", "nonzero": entry.get("nonzero"), "values": size(entry.get("values")),
                   "positions": stream_size(entry.get("positions")), "positions_coding": (entry.get("positions") or {}).get("coding")}  # fmt: skip
            row["bytes"] = row["values"] + row["positions"]
            parts["values"] += row["values"]
            parts["positions"] += row["positions"]
        else:
            row = {"encoding": "dense", "bytes": size(entry.get("data"))}
            parts["dense"] += row["bytes"]
        row["numel"] = math.prod(entry.get("shape") or [])
        row["dtype"] = entry.get("dtype")
        tensors[entry["name"]] = row
    return {"path": str(path), "bytes": len(data), "parts": parts, "tensors": tensors}
