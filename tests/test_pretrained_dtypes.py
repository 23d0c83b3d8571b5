"""A tensor of the wrong kind of dtype is refused on every load path (naming the key, the dtype found and the
dtype expected); other float widths are cast, integer buffers stay integer, and NaN / inf weights warn."""

from __future__ import annotations

import warnings

import pytest
import safetensors.torch
import torch

import smallnets
from smallnets.checkpoint import save_weights
from smallnets.zoo import load_weights
from smallnets.cli import main
from smallnets.pretrained import load_pretrained, read_checkpoint

from conftest import shared_path

SQUEEZE = shared_path("reference", "interop", "torchvision__squeezenet1_1.weights.safetensors", module_level=True)
SHUFFLE = shared_path("reference", "interop", "torchvision__shufflenet_v2_x0_5.weights.safetensors", module_level=True)  # float16, counters int64

KEY = "features.0.weight"  # torchvision SqueezeNet 1.1's first conv, smallnets' stem.conv1.conv.weight
WRONG = [torch.int32, torch.int64, torch.bool]


def _write(tmp_path, name, tensors, metadata=None):
    path = tmp_path / name
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def _with(src, key, dtype):
    t = src[key]
    return {**src, key: (t * 100).to(dtype) if dtype != torch.bool else t > 0}


@pytest.mark.parametrize("dtype", WRONG, ids=str)
def test_a_float_weight_stored_as_int_or_bool_is_refused_by_convert(tmp_path, capsys, dtype):
    path = _write(tmp_path, "bad.safetensors", _with(read_checkpoint(SQUEEZE), KEY, dtype))
    out = tmp_path / "out.safetensors"
    rc = main(["convert", str(path), str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    found = str(dtype).removeprefix("torch.")
    assert f"'{KEY}' is {found}" in err and "expected float32" in err and "stem.conv1.conv.weight" in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match=rf"'{KEY}' is {found}, expected float32"):
        load_pretrained("squeezenet1_1", path)
    # predict --pretrained takes the same path
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 30, 200)).save(img)
    rc = main(["predict", "--pretrained", str(path), "squeezenet1_1", str(img)])
    assert rc == 2 and f"'{KEY}' is {found}" in capsys.readouterr().err


def test_other_float_widths_are_cast_and_integer_counters_stay_accepted(tmp_path):
    ref = load_pretrained("shufflenet_v2", SHUFFLE).eval()  # the fixture itself is float16 with int64 counters
    assert all(p.dtype == torch.float32 for p in ref.parameters())
    counters = {k: v for k, v in ref.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters and all(v.dtype == torch.int64 for v in counters.values())
    src = read_checkpoint(SHUFFLE)
    x = torch.randn(1, 3, 64, 64)
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        path = _write(tmp_path, f"{dtype}.safetensors", {k: v.to(dtype) if v.is_floating_point() else v for k, v in src.items()})
        model = load_pretrained("shufflenet_v2", path).eval()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), rtol=0.05, atol=0.05)
    # a counter stored as int32 is still an integer; as a float it is not
    tracked = next(k for k in src if k.endswith("num_batches_tracked"))
    load_pretrained("shufflenet_v2", _write(tmp_path, "i32.safetensors", {**src, tracked: src[tracked].to(torch.int32)}))
    with pytest.raises(ValueError, match=rf"'{tracked}' is float32, expected int64"):
        load_pretrained("shufflenet_v2", _write(tmp_path, "f32.safetensors", {**src, tracked: src[tracked].float()}))


def test_load_weights_and_smallnets_own_files_refuse_the_wrong_dtype(tmp_path):
    model = smallnets.create_model("squeezenet1_1", num_classes=3)
    good = save_weights(model, tmp_path / "good.safetensors")
    with safetensors.safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
    tensors = safetensors.torch.load_file(str(good))
    key = "stem.conv1.conv.weight"
    for dtype in WRONG:
        found = str(dtype).removeprefix("torch.")
        bad = _with(tensors, key, dtype)
        plain = _write(tmp_path, "plain.safetensors", bad)  # no smallnets metadata: loaded into a given model
        with pytest.raises(ValueError, match=rf"plain.safetensors: .*'{key}' is {found}, expected float32"):
            load_weights(plain, smallnets.create_model("squeezenet1_1", num_classes=3))
        lone = _write(tmp_path, "lone.safetensors", bad, metadata)  # smallnets metadata, sidecar gone: rebuilt
        with pytest.raises(ValueError, match=rf"'{key}' is {found}, expected float32"):
            load_weights(lone)
        with pytest.raises(ValueError, match=rf"'{key}' is {found}, expected float32"):
            load_pretrained(None, lone)  # smallnets' own weights as a pretrained source (fine-tuning)
        rc = main(["convert", str(lone), str(tmp_path / f"out-{found}.safetensors")])
        assert rc == 2
    # half precision loads into the float32 model
    half = _write(tmp_path, "half.safetensors", {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, metadata)
    loaded = load_weights(half)
    assert loaded.state_dict()[key].dtype == torch.float32
    torch.testing.assert_close(loaded.state_dict()[key], model.state_dict()[key], rtol=1e-3, atol=1e-3)


def test_nan_or_inf_weights_warn_naming_the_keys(tmp_path):
    src = read_checkpoint(SQUEEZE)
    nan = src[KEY].clone()
    nan[0, 0, 0, 0] = float("nan")
    inf = src["features.3.squeeze.weight"].clone()
    inf.view(-1)[5] = float("inf")
    path = _write(tmp_path, "nan.safetensors", {**src, KEY: nan, "features.3.squeeze.weight": inf})
    with pytest.warns(UserWarning, match=rf"2 tensor\(s\) hold NaN or inf values: '{KEY}', 'features.3.squeeze.weight'"):
        load_pretrained("squeezenet1_1", path)
    model = smallnets.create_model("squeezenet1_1", num_classes=3)
    with torch.no_grad():
        model.stem.conv1.conv.bias[1] = float("-inf")
    saved = save_weights(model, tmp_path / "own.safetensors")
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) hold NaN or inf values: 'stem.conv1.conv.bias'"):
        load_weights(saved)
    # finite weights load silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pretrained("squeezenet1_1", SQUEEZE)
