"""The compressed weights file (.sncz): bit-exact round trips of shared, pruned and dense tensors,
loading through load_weights / eval / predict / profile, its size, and refusal of damaged files."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import smallnets
from smallnets.checkpoint import read_weights, resolve_weights, weights_meta
from smallnets.compress.packed import MAGIC, packed_summary, read_packed, write_packed
from smallnets.compress.sharing import share_weights

CLASSES = [f"c{i}" for i in range(10)]
PREPROCESSING = {"pipeline": "tensor", "image_size": 32, "resize": 32, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _prune(model: nn.Module, fraction: float) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and int(fraction * module.weight.numel()):
                w = module.weight
                w[w.abs() <= w.abs().flatten().kthvalue(int(fraction * w.numel())).values] = 0
    return model


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _assert_bit_identical(state: dict, expected: dict) -> None:
    assert list(state) == list(expected)
    for k, v in expected.items():
        assert state[k].dtype == v.dtype and state[k].shape == v.shape and _bits(state[k]) == _bits(v), k


@pytest.fixture(scope="module")
def squeezenet():
    torch.manual_seed(0)
    model = smallnets.create_model("squeezenet1_1", num_classes=10, cifar=True).eval()
    with torch.no_grad():  # BatchNorm-free SqueezeNet: give the biases some values; nothing else to do
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def pruned_shared(squeezenet):
    """SqueezeNet 1.1 with 60% of every layer pruned, shared at 8 bits (conv) / 5 bits (classifier)."""
    return share_weights(_prune(copy.deepcopy(squeezenet), 0.6), bits=8, fc_bits=5)


def _write(path, model, shared, **kw):
    return write_packed(path, model, weights_meta(model, classes=CLASSES, preprocessing=PREPROCESSING), shared=shared, **kw)


@pytest.mark.parametrize("options", [{}, {"huffman": False}, {"sparse": True}, {"sparse": False}, {"huffman": False, "sparse": True}])
def test_round_trip_is_bit_exact(pruned_shared, tmp_path, options):
    model, shared = pruned_shared
    path = _write(tmp_path / "m.sncz", model, shared, **options)
    meta, state = read_packed(path)
    _assert_bit_identical(state, model.state_dict())
    assert meta == json.loads(json.dumps(weights_meta(model, classes=CLASSES, preprocessing=PREPROCESSING))) | {"created": meta["created"]}
    layouts = {t["layout"] for t in packed_summary(path)["tensors"].values() if t["encoding"] == "shared"}
    forced = options.get("sparse", "auto")
    assert layouts == {"sparse"} if forced is True else layouts == {"dense"} if forced is False else layouts <= {"sparse", "dense"}


def test_load_weights_eval_mode_logits_equal_the_shared_model(pruned_shared, tmp_path):
    model, shared = pruned_shared
    path = _write(tmp_path / "m.sncz", model, shared)
    loaded = smallnets.load_weights(path).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.smallnets_meta["classes"] == CLASSES and loaded.smallnets_meta["path"] == str(path)
    assert resolve_weights(path) == path
    # a given model, and the file's bytes under another name: recognised by its magic
    again = smallnets.load_weights(path, model=smallnets.create_model("squeezenet1_1", num_classes=10, cifar=True))
    _assert_bit_identical(again.state_dict(), model.state_dict())
    renamed = tmp_path / "renamed.safetensors"
    renamed.write_bytes(path.read_bytes())
    _assert_bit_identical(read_weights(renamed)[2], model.state_dict())


def test_mobilenet_v2_with_batchnorm_round_trips(tmp_path):
    torch.manual_seed(1)
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # BatchNorm statistics and num_batches_tracked (int64) move
    model.eval()
    shared_model, shared = share_weights(_prune(model, 0.5), bits=5, fc_bits=4)
    path = _write(tmp_path / "mnv2.sncz", shared_model, shared)
    _assert_bit_identical(read_packed(path)[1], shared_model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(smallnets.load_weights(path).eval()(x), shared_model(x))
    summary = packed_summary(path)
    assert summary["tensors"]["stem.bn.num_batches_tracked"] == {"encoding": "dense", "bytes": 8, "numel": 1, "dtype": "int64"}
    assert sum(summary["parts"].values()) == summary["bytes"] == path.stat().st_size


def test_dense_dtypes_and_odd_shapes_round_trip(tmp_path):
    state = {
        "f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 2).bfloat16(), "f64": torch.randn(3).double(),
        "i64": torch.tensor(7), "i8": torch.tensor([-3, 4], dtype=torch.int8), "flag": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5), "neg0": torch.tensor([-0.0, 0.0]),
    }
    path = write_packed(tmp_path / "d.sncz", state, None)
    meta, back = read_packed(path)
    assert meta is None
    _assert_bit_identical(back, state)
    # a float16 layer shared: the codebook is float32 but holds exactly the float16 values
    layer = nn.Sequential(nn.Conv2d(4, 8, 3)).half()
    shared_model, shared = share_weights(layer, bits=3)
    path = write_packed(tmp_path / "h.sncz", shared_model, None, shared=shared)
    _assert_bit_identical(read_packed(path)[1], shared_model.state_dict())
    with pytest.raises(ValueError, match="no sidecar and no smallnets metadata"):
        smallnets.load_weights(tmp_path / "h.sncz")


def test_pruned_4bit_squeezenet_is_much_smaller_than_fp32(squeezenet, tmp_path):
    fp32 = smallnets.save_weights(squeezenet, tmp_path / "fp32.safetensors", classes=CLASSES, preprocessing=PREPROCESSING)
    model, shared = share_weights(_prune(copy.deepcopy(squeezenet), 0.5), bits=4)
    packed = _write(tmp_path / "p50-4bit.sncz", model, shared)
    ratio = fp32.stat().st_size / packed.stat().st_size
    # measured 10.7x (2,917,128 vs 271,410 bytes): a 4-bit index (~3 bits with Huffman) and the positions of
    # half the weights (~1 bit per position, random-init magnitudes) instead of 32 bits per weight
    assert ratio > 8, ratio
    parts = packed_summary(packed)["parts"]
    assert parts["codebooks"] < 2000 and parts["dense"] < 20_000  # 26 layers x 16 float32; biases stay dense


def test_write_checks_its_arguments(pruned_shared, tmp_path):
    model, shared = pruned_shared
    path = _write(tmp_path / "m.sncz", model, shared)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        _write(path, model, shared)
    assert _write(path, model, shared, overwrite=True) == path
    with pytest.raises(ValueError, match=r"path must end in \.sncz"):
        _write(tmp_path / "m.safetensors", model, shared)
    with pytest.raises(ValueError, match="sparse must be 'auto', True or False, got 1"):
        _write(tmp_path / "x.sncz", model, shared, sparse=1)
    with pytest.raises(ValueError, match="meta must be strict JSON"):
        write_packed(tmp_path / "x.sncz", model, {"x": float("nan")}, shared=shared)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.get_parameter(next(iter(shared))).add_(1e-3)
    with pytest.raises(ValueError, match="does not hold its shared weights"):
        _write(tmp_path / "x.sncz", changed, shared)
    with pytest.raises(ValueError, match="shared names 'nope.weight', which is not in the state dict"):
        write_packed(tmp_path / "x.sncz", model, None, shared={"nope.weight": shared[next(iter(shared))]})
    assert not (tmp_path / "x.sncz").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.sncz"]  # no temp files left


# ---------------------------------------------------------------------------------------------
# Damaged files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_file(pruned_shared, tmp_path_factory):
    model, shared = pruned_shared
    return _write(tmp_path_factory.mktemp("packed") / "good.sncz", model, shared)


def _damaged(good_file, tmp_path, data: bytes):
    path = tmp_path / "bad.sncz"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("where", ["header", "blobs", "checksum", "version"])
def test_a_flipped_byte_is_refused(good_file, tmp_path, where):
    data = bytearray(good_file.read_bytes())
    header_len = struct.unpack_from("<Q", data, 12)[0]
    at = {"header": 20 + header_len // 2, "blobs": (20 + header_len + len(data)) // 2, "checksum": len(data) - 5, "version": 8}[where]
    data[at] ^= 0x10
    path = _damaged(good_file, tmp_path, bytes(data))
    for load in (read_packed, smallnets.load_weights):
        with pytest.raises(ValueError, match="checksum mismatch: the file was modified or truncated") as err:
            load(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("keep", [0.5, 0.999, 30 / 1e9])
def test_a_truncated_file_is_refused(good_file, tmp_path, keep):
    data = good_file.read_bytes()
    path = _damaged(good_file, tmp_path, data[: max(8, int(len(data) * keep))])
    with pytest.raises(ValueError, match=rf"{path.name}: checksum mismatch: the file was modified or truncated"):
        smallnets.load_weights(path)


def test_wrong_magic_and_other_files_are_refused(good_file, tmp_path):
    data = good_file.read_bytes()
    path = _damaged(good_file, tmp_path, b"SNCX" + data[4:])
    with pytest.raises(ValueError, match=r"bad\.sncz is not a smallnets compressed \(\.sncz\) file: it starts with b'SNCX"):
        smallnets.load_weights(path)
    path.write_bytes(data.replace(b"\r\n", b"\n", 1))  # a text-mode transfer
    with pytest.raises(ValueError, match="not a smallnets compressed"):
        read_packed(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a smallnets compressed"):
        read_packed(path)


def _resealed(data: bytes, header: bytes | None = None, version: int = 2) -> bytes:
    """A file with another header (or version) and a valid checksum: what a buggy writer would make."""
    length = struct.unpack_from("<Q", data, 12)[0]
    old = data[20 : 20 + length]
    header = old if header is None else header
    body = MAGIC + struct.pack("<IQ", version, len(header)) + header + data[20 + length : -32]
    return body + hashlib.sha256(body).digest()


def _header(data: bytes) -> dict:
    assert struct.unpack_from("<I", data, 8)[0] == 2
    return json.loads(zlib.decompress(data[20 : 20 + struct.unpack_from("<Q", data, 12)[0]]))


def test_bad_header_json_and_newer_versions_are_refused(good_file, tmp_path):
    data = good_file.read_bytes()
    path = _damaged(good_file, tmp_path, _resealed(data, zlib.compress(b'{"format": "smallnets.packed", "tensors": [}')))
    with pytest.raises(ValueError, match=r"bad\.sncz: the header is not valid JSON"):
        smallnets.load_weights(path)
    path.write_bytes(_resealed(data, version=3))
    with pytest.raises(ValueError, match="has format version 3; this smallnets reads versions 1, 2"):
        read_packed(path)
    header = _header(data)
    entry = next(t for t in header["tensors"] if t["encoding"] == "shared")
    entry["codebook"][1] = 10**9
    path.write_bytes(_resealed(data, zlib.compress(json.dumps(header).encode())))
    with pytest.raises(ValueError, match=r"malformed header: .*codebook = .* runs past"):
        read_packed(path)
    entry["codebook"][1] = 4
    entry["nonzero"] += 1
    path.write_bytes(_resealed(data, zlib.compress(json.dumps(header).encode())))
    with pytest.raises(ValueError, match="malformed file: tensor"):
        read_packed(path)


def test_the_header_is_deflated_and_version_1_files_still_read(good_file, tmp_path):
    data = good_file.read_bytes()
    header = _header(data)
    plain = json.dumps(header).encode()
    assert struct.unpack_from("<Q", data, 12)[0] < len(plain) / 2  # the spec and the tensor table deflate well
    header["version"] = 1
    path = _damaged(good_file, tmp_path, _resealed(data, json.dumps(header).encode(), version=1))  # what 0.x wrote
    old_meta, old_state = read_packed(path)
    meta, state = read_packed(good_file)
    assert old_meta == meta and old_state.keys() == state.keys()
    assert all(torch.equal(old_state[k], state[k]) for k in state)
    for bad, why in ((b"not deflate", "does not inflate"), (zlib.compress(plain)[:-4], "incomplete"),
                     (zlib.compress(plain) + b"x", "followed by other bytes")):  # fmt: skip
        path.write_bytes(_resealed(data, bad))
        with pytest.raises(ValueError, match=f"bad\\.sncz: malformed header: .*{why}"):
            read_packed(path)


# ---------------------------------------------------------------------------------------------
# eval, predict and profile take the file directly
# ---------------------------------------------------------------------------------------------


def test_predict_eval_and_profile_accept_a_compressed_file(pruned_shared, tmp_path):
    model, shared = pruned_shared
    packed = _write(tmp_path / "m.sncz", model, shared)
    plain = smallnets.save_weights(model, tmp_path / "m.safetensors", classes=CLASSES, preprocessing=PREPROCESSING)
    rng = np.random.default_rng(0)
    for c in CLASSES[:3]:
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    a = smallnets.predict(packed, tmp_path / "data", top_k=3)
    b = smallnets.predict(plain, tmp_path / "data", top_k=3)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b] and len(a) == 6 and all(p.ok for p in a)
    ev = smallnets.evaluate_weights(packed, tmp_path / "data", device="cpu", progress=False)
    assert torch.equal(ev.confusion, smallnets.evaluate_weights(plain, tmp_path / "data", device="cpu", progress=False).confusion)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "smallnets", "profile", "--pretrained", str(packed), "--json", "--no-latency", "--no-memory"],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["params"] == smallnets.count_params(model)


def test_a_2m_weight_layer_packs_and_unpacks_in_seconds(tmp_path):
    torch.manual_seed(0)
    model = _prune(nn.Sequential(nn.Linear(2048, 1024)), 0.6)
    model, shared = share_weights(model, bits=5, inplace=True)
    start = time.perf_counter()
    path = write_packed(tmp_path / "big.sncz", model, None, shared=shared)
    mid = time.perf_counter()
    _, state = read_packed(path)
    end = time.perf_counter()
    _assert_bit_identical(state, model.state_dict())
    assert mid - start < 30 and end - mid < 15, (mid - start, end - mid)
