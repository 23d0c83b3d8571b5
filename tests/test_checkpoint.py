"""Checkpoints: the pickle-free state codec, weights with their sidecar, and atomic replacement."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import smallnets
from smallnets import checkpoint
from smallnets.checkpoint import load_state, read_sidecar, resolve_weights, save_state, save_weights
from smallnets.zoo import load_weights


def assert_same(a, b, where="state"):
    """Equal values of exactly the same types: tuples stay tuples, int keys stay ints, bits match."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], f"{where}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture
def keep_global_rng():
    """Tests here reseed the global generators: give them back as they were."""
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


# ---------------------------------------------------------------------------------------------
# State codec
# ---------------------------------------------------------------------------------------------


def test_every_supported_type_round_trips(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "ints": [0, -1, 2**63, -(2**70), 3**9000],  # the last one is past Python's 4300-digit str limit
        "floats": [0.1, -0.0, 1e308, 5e-324, math.nan, math.inf, -math.inf],
        "scalars": (True, False, None, "", "héllo ✓", b"", b"\x00\xffbytes"),
        "nested": {"tuple": (1, (2.0, [3, (4,)])), "empty": {}, "list": [], "tuple0": ()},
        0: "int key", 1: {2: {3: "deep int keys"}}, -5: None, (1, "a"): "tuple key", 2.5: "float key", None: "none key",
        "__dunder": "a key that looks like a placeholder", "a/b": 1,
        "tensors": {
            "float32": base, "float64": base.double(), "bfloat16": base.bfloat16(), "float16": base.half(),
            "uint8": torch.arange(256, dtype=torch.uint8), "int8": torch.tensor([-128, 127], dtype=torch.int8),
            "int64": torch.tensor([2**62, -(2**62)]), "bool": torch.tensor([True, False]),
            "complex128": torch.randn(3, dtype=torch.complex128),  # not a safetensors dtype: stored as raw bytes
            "zero_dim": torch.tensor(3.5), "empty": torch.zeros(0, 5), "transposed": base.t(),
            "strided": base[::2, 1::3], "expanded": torch.ones(3, 1).expand(3, 4), "nan": torch.tensor([math.nan, -math.inf]),
            "param": nn.Parameter(torch.ones(2)),
        },
        "numpy": {
            "f64": np.linspace(0, 1, 7), "u32": np.arange(5, dtype=np.uint32), "bool": np.array([True, False]),
            "f16": np.ones((2, 2), np.float16), "big_endian": np.arange(4, dtype=">i4"), "str": np.array(["ab", "c"]),
            "zero_dim": np.array(7, dtype=np.int16), "view": np.arange(12.0).reshape(3, 4)[:, ::2],
            "longdouble": np.array([1.5], dtype=np.longdouble), "complex": np.array([1 + 2j]),
        },
        "numpy_scalars": [
            np.float64(0.1), np.float32(1.5), np.float16(-2.0), np.int64(-3), np.uint64(2**64 - 1), np.bool_(True), np.str_("x"),
        ],
    }
    loaded = load_state(save_state(tmp_path / "s.safetensors", state))
    expected = dict(state)
    expected["tensors"] = {k: v.detach().clone() if isinstance(v, nn.Parameter) else v for k, v in state["tensors"].items()}
    assert_same(expected, loaded)
    assert all(t.is_contiguous() for t in loaded["tensors"].values())
    assert loaded["ints"][4] == 3**9000


def test_file_is_plain_safetensors_with_a_json_skeleton(tmp_path):
    path = save_state(tmp_path / "s.safetensors", {"state": {0: {"momentum_buffer": torch.ones(2)}}, "n": 1})
    with safe_open(path, framework="pt") as f:
        assert list(f.keys()) == ["state/0/momentum_buffer"]  # tensors are named by their place in the structure
        meta = f.metadata()
    assert meta["format"] == "smallnets.state" and meta["format_version"] == "1"
    skeleton = json.loads(meta["skeleton"])
    assert skeleton["n"] == 1 and skeleton["state"] == {"__dict__": [[0, {"momentum_buffer": {"__tensor__": "state/0/momentum_buffer"}}]]}


def test_colliding_tensor_paths_get_distinct_names(tmp_path):
    state = {"a/b": torch.zeros(1), "a": {"b": torch.ones(1)}, 0: torch.full((1,), 2.0), "0": torch.full((1,), 3.0)}
    assert_same(state, load_state(save_state(tmp_path / "s.safetensors", state)))


def test_unsupported_types_name_the_path(tmp_path):
    with pytest.raises(TypeError, match=r"state\['a'\]\[1\]\['b'\] has unsupported type builtins\.object"):
        save_state(tmp_path / "s.safetensors", {"a": [0, {"b": object()}]})
    for bad, kind in [(bytearray(b"x"), "bytearray"), ({1, 2}, "set"), (torch.float32, "dtype"), (np.array([None]), "object")]:
        with pytest.raises(TypeError, match=kind):
            save_state(tmp_path / "s.safetensors", {"x": bad})
    with pytest.raises(TypeError, match="key of unsupported type"):
        save_state(tmp_path / "s.safetensors", {torch.ones(1): 1})
    assert not list(tmp_path.iterdir())  # nothing written, no temp files left


def test_load_state_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path must be an existing state file"):
        load_state(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_state(tmp_path / "junk.safetensors")
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    save_weights(model, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="load it with load_weights"):
        load_state(tmp_path / "w.safetensors")
    path = save_state(tmp_path / "s.safetensors", {"x": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_state(path)


def test_rng_states_round_trip(tmp_path, keep_global_rng):
    gen = torch.Generator().manual_seed(3)
    bitgen = np.random.default_rng(5)
    random.seed(1)
    np.random.seed(2)
    np.random.randn()  # leaves a cached gaussian in the legacy state
    state = {
        "torch": torch.get_rng_state(), "generator": gen.get_state(), "python": random.getstate(),
        "numpy": np.random.get_state(), "pcg64": bitgen.bit_generator.state,
    }
    loaded = load_state(save_state(tmp_path / "rng.safetensors", state))
    assert_same(state, loaded)
    assert loaded["pcg64"]["state"]["state"] > 2**64  # big ints survive as ints

    draws = lambda: (torch.rand(3), torch.rand(3, generator=gen), random.random(), np.random.randn(), bitgen.random())  # noqa: E731
    expected = draws()
    torch.set_rng_state(loaded["torch"])
    gen.set_state(loaded["generator"])
    random.setstate(loaded["python"])
    np.random.set_state(loaded["numpy"])
    bitgen.bit_generator.state = loaded["pcg64"]
    assert_same(expected, draws())


def _scheduler_zoo(opt):
    linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=2)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    return {
        "lambda": torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch),
        "sequential": torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[2]),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),  # holds float('inf')
        "onecycle": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10),
    }


def test_scheduler_and_scaler_state_dicts_round_trip(tmp_path):
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {name: s.state_dict() for name, s in _scheduler_zoo(opt).items()}
    state["scaler"] = torch.amp.GradScaler("cpu").state_dict()
    assert state["lambda"]["lr_lambdas"] == [None]
    assert_same(state, load_state(save_state(tmp_path / "sched.safetensors", state)))


def _toy_model():
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def _warmup_cosine(opt):
    sched = torch.optim.lr_scheduler
    return sched.SequentialLR(opt, [sched.LinearLR(opt, 0.1, total_iters=2), sched.CosineAnnealingLR(opt, 6)], milestones=[2])


OPTIMIZERS = {  # (optimizer, scheduler) builders
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4), _warmup_cosine),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.95)), lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.8**e)),
    "rmsprop": (lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resuming_from_a_saved_state_is_bit_identical(tmp_path, name, keep_global_rng):
    make_opt, make_sched = OPTIMIZERS[name]

    def build(seed):
        torch.manual_seed(seed)
        model = _toy_model()
        opt = make_opt(model.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)  # its scale changes during the test
        return model, opt, make_sched(opt), scaler, torch.Generator().manual_seed(seed)

    def train(parts, steps):
        model, opt, sched, scaler, gen = parts
        for _ in range(steps):
            x = torch.randn(16, 8, generator=gen) * (1 + random.random() + np.random.rand())  # every RNG is in play
            y = torch.randint(0, 3, (16,), generator=gen)
            opt.zero_grad()
            scaler.scale(F.cross_entropy(model(x), y)).backward()  # dropout draws from the global torch RNG
            scaler.step(opt)
            scaler.update()
            sched.step()

    def snapshot(parts):
        model, opt, sched, scaler, gen = parts
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": gen.get_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            "epoch": 3,
        }

    random.seed(0)
    np.random.seed(0)
    reference = build(0)
    train(reference, 3)
    path = save_state(tmp_path / "ckpt.safetensors", snapshot(reference))
    train(reference, 4)

    resumed = build(1)  # different initial weights and generator: everything must come from the file
    state = load_state(path)
    model, opt, sched, scaler, gen = resumed
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    gen.set_state(state["rng"]["generator"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    train(resumed, 4)

    assert_same(snapshot(reference), snapshot(resumed))
    assert opt.state_dict()["param_groups"][0]["lr"] == reference[1].state_dict()["param_groups"][0]["lr"]


class _Exploding(dict):
    """A mapping that fails halfway through being walked."""

    def items(self):
        yield "fine", torch.ones(3)
        raise RuntimeError("boom halfway")


def test_failed_state_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = save_state(tmp_path / "s.safetensors", {"step": 1, "w": torch.zeros(4)})
    before = path.read_bytes()

    with pytest.raises(RuntimeError, match="boom halfway"):
        save_state(path, {"step": 2, "bad": _Exploding()})

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # a partial file in the temp location ...
        raise OSError("disk full")  # ... then the write fails

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, {"step": 2, "w": torch.ones(4)})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # no temp files left behind
    assert load_state(path)["step"] == 1


# ---------------------------------------------------------------------------------------------
# Weights and sidecar
# ---------------------------------------------------------------------------------------------

ZOO = {
    "mobilenet_v2": dict(width_mult=0.35, num_classes=10, cifar=True),
    "shufflenet_v2": dict(width_mult=0.5, num_classes=7, cifar=True),
}


def _trained(name, seed=0):
    """A zoo model whose BN statistics moved away from their defaults."""
    torch.manual_seed(seed)
    model = smallnets.create_model(name, **ZOO[name])
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_weights_rebuild_the_same_model(tmp_path, name, keep_global_rng):
    model = _trained(name)
    classes = [f"class {i}" for i in range(ZOO[name]["num_classes"])]
    preprocessing = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26), "input_size": (3, 32, 32)}
    extra = {"epoch": 3, "best_top1": 71.5}
    path = save_weights(model, tmp_path / f"{name}.safetensors", classes=classes, preprocessing=preprocessing, extra=extra)

    loaded = load_weights(path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert loaded.smallnets_config == model.smallnets_config
    meta = loaded.smallnets_meta
    assert meta["classes"] == classes and meta["preprocessing"]["mean"] == [0.49, 0.48, 0.45] and meta["extra"]["epoch"] == 3

    sidecar = read_sidecar(path)
    assert set(sidecar) == {
        "format", "format_version", "model", "num_classes", "in_chans", "knobs", "spec", "classes", "preprocessing", "extra",
        "smallnets_version", "torch_version", "sha256", "params", "created",
    }
    # the architecture itself is recorded (None for families not yet described by a spec)
    spec = getattr(model, "spec", None)
    assert sidecar["spec"] == (spec.to_dict() if spec is not None else None)
    assert (sidecar["format"], sidecar["format_version"], sidecar["model"]) == ("smallnets.weights", 1, name)
    assert sidecar["knobs"] == model.smallnets_config["knobs"] and sidecar["params"] == smallnets.count_params(model)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        assert set(f.keys()) == set(model.state_dict())  # parameters and buffers (BN running stats, counters)
    assert metadata["model"] == name and json.loads(metadata["knobs"]) == sidecar["knobs"]
    assert json.loads(metadata["classes"]) == classes


def test_lone_safetensors_file_still_rebuilds(tmp_path, keep_global_rng):
    model = _trained("mobilenet_v2")
    path = save_weights(model, tmp_path / "w.safetensors", classes=list("abcdefghij"))
    path.with_suffix(".json").unlink()
    loaded = load_weights(path)
    assert loaded.smallnets_meta["model"] == "mobilenet_v2" and loaded.smallnets_meta["classes"] == list("abcdefghij")
    assert loaded.smallnets_meta["sha256"] is None
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(model(x), loaded.eval()(x))
    with pytest.raises(FileNotFoundError, match="no sidecar"):
        read_sidecar(path)


def test_modified_or_truncated_file_is_refused(tmp_path):
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    path = save_weights(model, tmp_path / "w.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern in the last tensor: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="file was modified or truncated"):
        load_weights(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="file was modified or truncated"):
        load_weights(path)
    path.with_suffix(".json").unlink()  # without the sidecar a truncated file still fails clearly
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_weights(path)


def test_strict_mismatch_lists_the_keys(tmp_path):
    path = save_weights(smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True), tmp_path / "w.safetensors")
    other_head = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=5, cifar=True)
    with pytest.raises(ValueError, match=r"shape mismatch \(2\): classifier\.\S+: file \(10, \d+\) vs model \(5, \d+\)") as err:
        load_weights(path, other_head)
    assert "missing" not in str(err.value) and "strict=False" in str(err.value)

    other_family = smallnets.create_model("squeezenet1_1", num_classes=10)
    with pytest.raises(ValueError) as err:
        load_weights(path, other_family)
    message = str(err.value)
    assert f"missing from the file ({len(other_family.state_dict())}):" in message
    assert "unexpected in the file (" in message and "more)" in message  # long lists are cut at ten names

    # strict=False loads what matches (a new head for fine-tuning) and reports the rest.
    before = {k: v.clone() for k, v in other_head.state_dict().items()}
    loaded = load_weights(path, other_head, strict=False)
    assert loaded is other_head
    report = loaded.smallnets_meta["load_report"]
    assert report["missing"] == [] and report["unexpected"] == [] and len(report["shape_mismatch"]) == 2
    skipped = {line.split(":")[0] for line in report["shape_mismatch"]}
    source = load_weights(path).state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, before[key] if key in skipped else source[key]), key


def test_run_directory_prefers_best_then_last(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="best.safetensors or last.safetensors"):
        resolve_weights(run)
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    save_weights(model, run / "last.safetensors", extra={"which": "last"})
    assert resolve_weights(run) == run / "last.safetensors"
    assert load_weights(run).smallnets_meta["extra"] == {"which": "last"}
    save_weights(model, run / "best.safetensors", extra={"which": "best"})
    assert load_weights(run).smallnets_meta["extra"] == {"which": "best"}
    assert read_sidecar(run)["extra"] == {"which": "best"}


class _Tied(nn.Module):
    """Decoder weight tied to the encoder's: two state-dict keys, one storage."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4, bias=False)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.decoder(self.encoder(x)) * self.scale


def test_custom_module_with_tied_weights_and_explicit_config(tmp_path):
    model = _Tied()
    with pytest.raises(ValueError, match="no smallnets_config.*pass config="):
        save_weights(model, tmp_path / "t.safetensors")
    config = {"name": "tied_toy", "num_classes": 4, "in_chans": 4, "knobs": {"sizes": (4, 4)}}
    path = save_weights(nn.DataParallel(model), tmp_path / "t.safetensors", config=config)  # saved without the "module." prefix
    assert read_sidecar(path)["knobs"] == {"sizes": [4, 4]} and read_sidecar(path)["params"] == 20
    fresh = load_weights(path, _Tied())
    assert fresh.decoder.weight is fresh.encoder.weight
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="cannot rebuild|registered model"):
        load_weights(path)  # 'tied_toy' is not in the zoo


def test_save_weights_argument_errors(tmp_path):
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    with pytest.raises(ValueError, match=r"path must end in \.safetensors, got '.*w\.pt'"):
        save_weights(model, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="classes must name num_classes=10 outputs, got 3"):
        save_weights(model, tmp_path / "w.safetensors", classes=["a", "b", "c"])
    with pytest.raises(TypeError, match=r"extra\['t'\] must be JSON-like.*Tensor"):
        save_weights(model, tmp_path / "w.safetensors", extra={"t": torch.ones(1)})
    with pytest.raises(TypeError, match="str keys"):
        save_weights(model, tmp_path / "w.safetensors", extra={1: "x"})
    with pytest.raises(ValueError, match=r"config\['num_classes'\] must be an integer >= 1, got 0"):
        save_weights(model, tmp_path / "w.safetensors", config={"name": "x", "num_classes": 0, "in_chans": 3})
    with pytest.raises(ValueError, match="must be a .safetensors file or a run directory"):
        load_weights(tmp_path / "w.bin")
    with pytest.raises(FileNotFoundError, match="existing weights file"):
        load_weights(tmp_path / "nope.safetensors")
    assert not list(tmp_path.iterdir())


def test_sidecar_is_strict_json(tmp_path):
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    extra = {"best": math.nan, "bounds": (-math.inf, math.inf), "np": np.float32(0.5), "count": np.int64(3)}
    path = save_weights(model, tmp_path / "w.safetensors", extra=extra)
    text = path.with_suffix(".json").read_text()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    json.loads(text, parse_constant=refuse)
    back = read_sidecar(path)["extra"]
    assert math.isnan(back["best"]) and back["bounds"] == [-math.inf, math.inf] and back["np"] == 0.5 and back["count"] == 3


def test_failed_weights_save_leaves_the_previous_pair(tmp_path, monkeypatch):
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True)
    path = save_weights(model, tmp_path / "w.safetensors", extra={"v": 1})
    before = path.read_bytes(), path.with_suffix(".json").read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)

    def fail(_path):
        raise OSError("disk full while hashing")

    monkeypatch.setattr(checkpoint, "_file_sha256", fail)  # fails after the new weights are written to the temp file
    with pytest.raises(OSError, match="disk full"):
        save_weights(model, path, extra={"v": 2})
    monkeypatch.undo()

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 64)
        raise OSError("disk full while writing")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_weights(model, path, extra={"v": 3})
    monkeypatch.undo()

    assert (path.read_bytes(), path.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json", "w.safetensors"]
    assert load_weights(path).smallnets_meta["extra"] == {"v": 1}
