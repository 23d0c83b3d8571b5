"""ONNX export (every family, BatchNorm folded, metadata, on-the-spot check), the torch-free
runtime (bit-identical preprocessing, predict), eval / predict of .onnx files, and int8 PTQ."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import smallnets
from conftest import tiny_trained_run
from smallnets import export as export_mod
from smallnets.export import OnnxModule, export_onnx, fold_batchnorm
from smallnets.runtime import OnnxClassifier

FAMILIES = [
    ("mobilenet_v1", {"width_mult": 0.25, "cifar": True}, 32),  # depthwise separable
    ("mobilenet_v2", {"width_mult": 0.35, "cifar": True}, 32),  # residual adds, ReLU6
    ("efficientnet", {"width_mult": 0.25, "depth_mult": 0.3, "same_padding": True}, 64),  # SiLU, SE, TF "SAME" padding
    ("shufflenet_v1", {"groups": 3, "width_mult": 0.5, "cifar": True}, 32),  # grouped 1x1 + shuffle
    ("shufflenet_v2", {"width_mult": 0.5, "cifar": True}, 32),  # split + concat + shuffle
    ("squeezenet", {"bypass": "complex", "cifar": True}, 32),  # Fire concatenation, conv bypass
    ("xception", {"middle_repeats": 1, "cifar": True}, 32),  # separable convs, conv shortcuts
    ("densenet_cifar", {"depth": 10, "growth_rate": 6}, 32),  # pre-activation BN over concatenations
]
IDS = [n for n, _, _ in FAMILIES]


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BatchNorm statistics and affine terms far from their init, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def ops(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return tiny_trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def trained_onnx(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "source.onnx"
    export_onnx(trained, out)
    return out


@pytest.mark.parametrize(("name", "knobs", "side"), FAMILIES, ids=IDS)
def test_every_family_exports_with_batchnorm_folded_and_matches_pytorch(name, knobs, side, tmp_path):
    model = randomized(smallnets.create_model(name, num_classes=7, **knobs))
    report = export_onnx(model, tmp_path / "m.onnx", input_size=(3, side, side))
    assert report.check.passed and report.check.rel_diff <= 1e-4 and report.check.top1_agreement == 1.0
    # BatchNorm is gone wherever a convolution feeds it alone; only DenseNet's pre-activation ones
    # stay (after a concatenation or pooling, or beside a concatenation that keeps the raw conv output)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
    assert not [n.name for n in bns if producer.get(n.input[0]) == "Conv" and readers[n.input[0]] == 1]
    assert bool(bns) == name.startswith("densenet")
    # the dynamic batch runs another size than the check's, to the same logits
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    got = OnnxClassifier(tmp_path / "m.onnx")(x.numpy())
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_fold_batchnorm_computes_the_same_and_leaves_the_model_alone():
    model = randomized(smallnets.create_model("mobilenet_v2", num_classes=5, width_mult=0.35, cifar=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is unchanged
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fold_batchnorm("mobilenet_v2")


def test_the_file_carries_classes_preprocessing_spec_and_the_source_digest(trained, trained_onnx):
    meta = json.loads((trained / "best.json").read_text()) if (trained / "best.json").exists() else json.loads((trained / "last.json").read_text())
    weights = trained / ("best.safetensors" if (trained / "best.safetensors").exists() else "last.safetensors")
    model = OnnxClassifier(trained_onnx)
    md = model.metadata
    assert model.classes == meta["classes"] and md["classes"] == meta["classes"]
    assert {k: md["preprocessing"][k] for k in ("resize", "crop", "mean", "std")} == {k: meta["preprocessing"][k] for k in ("resize", "crop", "mean", "std")}
    assert md["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() and md["source_sha256_of"] == "file"
    assert md["spec"] == meta["spec"] and md["model"] == "mobilenet_v2" and md["version"] == smallnets.__version__
    crop = meta["preprocessing"]["crop"]
    assert md["precision"] == "fp32" and md["input"]["shape"] == ["batch", 3, crop, crop]
    assert model.batch is None and model.precision == "fp32"


def test_fixed_batch_and_fp16_exports(tmp_path):
    model = randomized(smallnets.create_model("squeezenet1_1", num_classes=4, cifar=True))
    fixed = export_onnx(model, tmp_path / "b2.onnx", batch=2)
    runner = OnnxClassifier(tmp_path / "b2.onnx")
    assert fixed.batch == 2 and runner.batch == 2 and fixed.check.batch == 2
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)  # 5 = two full chunks and a padded one
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(runner(x) - ref).max() <= 1e-4 * np.abs(ref).max()
    half = export_onnx(model, tmp_path / "fp16.onnx", precision="fp16")
    runner = OnnxClassifier(tmp_path / "fp16.onnx")
    assert half.check.passed and half.check.tolerance == 1e-2 and runner.input_dtype is np.float16 and runner.precision == "fp16"
    assert half.bytes < 0.6 * fixed.bytes


def test_an_existing_file_is_kept_and_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    model = randomized(smallnets.create_model("mobilenet_v1", num_classes=3, width_mult=0.25, cifar=True))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        export_onnx(model, out)
    assert out.read_bytes() == b"precious"
    monkeypatch.setitem(export_mod.TOLERANCE, "fp32", -1.0)  # no difference passes
    with pytest.raises(ValueError, match="export check failed: .* nothing was written"):
        export_onnx(model, out, overwrite=True)
    assert out.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": 0}, "batch must be an integer >= 1, got 0"),
        ({"batch": "auto"}, "batch must be 'dynamic' or an integer >= 1, got 'auto'"),
        ({"opset": 11}, "opset must be an integer >= 18, got 11"),
        ({"precision": "int4"}, "precision must be one of"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, message, tmp_path):
    model = smallnets.create_model("mobilenet_v1", num_classes=3, width_mult=0.25, cifar=True)
    with pytest.raises(ValueError, match=message):
        export_onnx(model, tmp_path / "m.onnx", **kwargs)
    with pytest.raises(ValueError, match="out must end in .onnx, got"):
        export_onnx(model, tmp_path / "m.pt")


def _odd_images(root: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    specs = [("rgb.png", "RGB", (37, 50)), ("rgba.png", "RGBA", (64, 31)), ("grey.png", "L", (33, 33)), ("p.gif", "P", (40, 45)),
             ("grey16.png", "I;16", (35, 48)), ("photo.jpg", "RGB", (120, 90))]  # fmt: skip
    paths = []
    for name, mode, (w, h) in specs:
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
        else:
            img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
        img.save(root / name)
        paths.append(root / name)
    return paths


def test_runtime_preprocessing_is_bit_identical_to_the_pytorch_evaluation_input(trained_onnx, tmp_path):
    from smallnets.data import make_eval_transform

    exported = OnnxClassifier(trained_onnx).preprocessing
    for prep in (exported, {**exported, "resize": 40, "crop": 36, "interpolation": "bicubic"}):
        transform = make_eval_transform(prep)
        runner = OnnxClassifier(trained_onnx, preprocessing=prep)
        paths = _odd_images(tmp_path / "odd")
        ours = runner.preprocess(paths)
        theirs = torch.stack([transform(smallnets.data.load_image(p)) for p in paths]).numpy()
        assert ours.dtype == np.float32 and ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_runtime_predictions_match_pytorch_and_bad_files_are_reported(trained, trained_onnx, tmp_path):
    images = Path(json.loads((trained / "config.json").read_text())["data"]["path"])
    files = sorted(images.rglob("*.png"))[::5]
    ours = OnnxClassifier(trained_onnx).predict(files, top_k=3, batch_size=4)
    theirs = smallnets.predict(trained, files, top_k=3)
    assert [p.path for p in ours] == [p.path for p in theirs]
    for a, b in zip(ours, theirs):
        assert [s.label for s in a.predictions] == [s.label for s in b.predictions]
        assert np.allclose([s.probability for s in a.predictions], [s.probability for s in b.predictions], atol=1e-5)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = OnnxClassifier(trained_onnx).predict([files[0], bad])
    assert out[0].ok and not out[1].ok and "not a readable image" in out[1].error
    # the same file through the torch-side API (load_weights of an .onnx gives an OnnxModule)
    module = smallnets.load_weights(trained_onnx)
    assert isinstance(module, OnnxModule) and module.smallnets_meta["classes"] == OnnxClassifier(trained_onnx).classes
    via_torch = smallnets.predict(trained_onnx, files, top_k=3)
    assert [[s.label for s in p.predictions] for p in via_torch] == [[s.label for s in p.predictions] for p in ours]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallnets", *args], capture_output=True, text=True, timeout=600)


def test_export_predict_and_eval_from_the_command_line(trained, tmp_path):
    out = tmp_path / "m.onnx"
    images = Path(json.loads((trained / "config.json").read_text())["data"]["path"])
    res = run_cli("export", str(trained), str(out), "--check-images", str(images))
    assert res.returncode == 0, res.stderr
    assert "check passed: ONNX Runtime vs PyTorch on 8 image(s)" in res.stdout and f"wrote {out}" in res.stdout
    res = run_cli("export", str(trained), str(out))
    assert res.returncode == 2 and "already exists" in res.stderr
    res = run_cli("predict", str(out), str(images / "square"), "--top-k", "2", "--json")
    assert res.returncode == 0, res.stderr
    onnx_preds = json.loads(res.stdout)
    res = run_cli("predict", str(trained), str(images / "square"), "--top-k", "2", "--json")
    torch_preds = json.loads(res.stdout)
    assert [[s["label"] for s in p["predictions"]] for p in onnx_preds] == [[s["label"] for s in p["predictions"]] for p in torch_preds]
    res = run_cli("eval", str(out), "--data", str(images), "--split", "all", "--json", "--confusion", "")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    ref = json.loads(run_cli("eval", str(trained), "--data", str(images), "--split", "all", "--json", "--confusion", "").stdout)
    assert got["count"] == ref["count"] == len(list(images.rglob("*.png"))) and got["top1"] == ref["top1"]
    assert got["precision"] == "fp32 (ONNX Runtime)"
    # on its source run's own data the file, like the run, is scored on the validation split by default
    got = json.loads(run_cli("eval", str(out), "--data", str(images), "--json", "--confusion", "").stdout)
    ref = json.loads(run_cli("eval", str(trained), "--json", "--confusion", "").stdout)
    assert got["split"] == ref["split"] == "val" and got["count"] == ref["count"] < len(list(images.rglob("*.png")))


def test_int8_quantization_is_per_channel_calibrated_off_the_validation_split_and_agrees(trained, trained_onnx, tmp_path):
    from smallnets.quantization import calibration_files, quantize_onnx

    val = set(json.loads((trained / "split.json").read_text())["val_files"])
    calib = calibration_files(trained, 16)
    images = Path(json.loads((trained / "config.json").read_text())["data"]["path"])
    assert len(calib) == 16 and not {str(Path(c).relative_to(images)) for c in calib} & val
    assert len({Path(c).parent.name for c in calib}) == 4  # drawn over every class
    report = quantize_onnx(trained_onnx, tmp_path / "q.onnx", calib, check_images=images)
    q = onnx.load(str(tmp_path / "q.onnx"))
    runner = OnnxClassifier(tmp_path / "q.onnx")
    assert runner.precision == "int8" and runner.metadata["quantization"]["calibration_images"] == 16
    assert runner.classes == OnnxClassifier(trained_onnx).classes
    inits = {i.name: i for i in q.graph.initializer}
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:  # every conv's weight is int8, dequantized with one scale per output channel
        dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1])
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.data_type == onnx.TensorProto.INT8 and list(scale.dims) == [weight.dims[0]]
    assert report.bytes < 0.5 * report.fp32_bytes and report.top1_agreement >= 0.75
    assert "QuantizeLinear" in report.ops
    # what ONNX Runtime runs: every conv as QLinearConv, the residual adds as QLinearAdd
    assert report.ops_as_run["QLinearConv"] == ops(trained_onnx)["Conv"] and report.ops_as_run.get("QLinearAdd", 0) > 0
    assert "QLinearConv" in str(report)
    # an add between quantized neighbours is fused into QLinearAdd even when kept out: said so
    kept = quantize_onnx(trained_onnx, tmp_path / "k.onnx", calib, keep_fp32=["Add"])
    assert kept.ops_as_run.get("QLinearAdd", 0) > 0 and any("still run in int8: Add" in n for n in kept.notes)
    with pytest.raises(ValueError, match="keep_fp32 names \\['Softmax'\\] which are neither op types nor node names"):
        quantize_onnx(trained_onnx, tmp_path / "x.onnx", calib, keep_fp32=["Softmax"])
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_onnx(trained_onnx, tmp_path / "x.onnx", calib, method="kl")


def test_silu_and_squeeze_excitation_can_stay_in_fp32(tmp_path):
    from smallnets.quantization import quantize_onnx
    from smallnets.runtime import runtime_ops

    model = randomized(smallnets.create_model("efficientnet", num_classes=5, width_mult=0.25, depth_mult=0.3, cifar=True))
    export_onnx(model, tmp_path / "e.onnx")
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    full = quantize_onnx(tmp_path / "e.onnx", tmp_path / "q.onnx", x)
    assert full.ops_as_run.get("QLinearSigmoid", 0) > 0 and full.ops_as_run.get("QLinearMul", 0) > 0
    kept = quantize_onnx(tmp_path / "e.onnx", tmp_path / "k.onnx", x, keep_fp32=["Sigmoid", "Mul"])
    as_run = runtime_ops(tmp_path / "k.onnx")
    assert as_run == kept.ops_as_run and not as_run.get("QLinearSigmoid") and not as_run.get("QLinearMul")
    assert as_run["Sigmoid"] == full.ops_as_run["QLinearSigmoid"] and as_run["QLinearConv"] == full.ops_as_run["QLinearConv"]
    assert not kept.notes


def test_quantize_command_writes_a_new_directory_with_the_table_and_leaves_the_source_alone(trained, tmp_path):
    from conftest import file_snapshot

    before = file_snapshot(trained)
    res = run_cli("quantize", str(trained), "--calib", "16", "--out", str(tmp_path), "--name", "q")
    assert res.returncode == 0, res.stderr
    assert file_snapshot(trained) == before
    out = tmp_path / "q"
    assert {"model.onnx", "model.int8.onnx", "quantize.json", "quantize.png"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "quantize.json").read_text())
    stages = [r["stage"] for r in report["rows"]]
    assert stages == ["PyTorch fp32 (eager)", "ONNX Runtime fp32", "ONNX Runtime int8"]
    fp32, ort32, int8 = report["rows"]
    assert ort32["top1"] == fp32["top1"] and int8["bytes"] < 0.5 * ort32["bytes"]
    assert all(r["latency_b1_ms"] > 0 and r["latency_b32_ms"] > 0 for r in report["rows"])
    assert report["settings"]["calibration_images"] == 16 and report["settings"]["check_images"] > 0
    assert "| ONNX Runtime int8 |" in res.stdout
    res = run_cli("quantize", str(trained), "--calib", "16", "--out", str(tmp_path), "--name", "q")
    assert res.returncode == 2 and "already" in res.stderr
    assert OnnxClassifier(out / "model.int8.onnx").precision == "int8"


@pytest.mark.slow
def test_a_runtime_only_install_predicts_from_an_exported_file_without_torch(trained, trained_onnx, tmp_path):
    # a real venv with `pip install 'smallnets[runtime]'` only: onnxruntime, numpy, pillow, no torch
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, cli = venv / "bin" / "python", venv / "bin" / "smallnets"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", f"{root}[runtime]"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    images = Path(json.loads((trained / "config.json").read_text())["data"]["path"])
    res = subprocess.run([str(cli), "predict", str(trained_onnx), str(images / "square"), "--top-k", "2", "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    here = [[s["label"] for s in p["predictions"]] for p in json.loads(res.stdout)]
    assert here == [[s.label for s in p.predictions] for p in smallnets.predict(trained, images / "square", top_k=2)]
    res = subprocess.run([str(py), "-c", f"from smallnets.runtime import OnnxClassifier; print(OnnxClassifier({str(trained_onnx)!r}).classes)"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0 and "square" in res.stdout, res.stderr
    # what needs torch says so, and how to get it
    res = subprocess.run([str(cli), "train", "mobilenet_v2", "--data", str(images)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "this needs torch, which is not installed" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([str(py), "-c", "import smallnets; smallnets.create_model('mobilenet_v2')"], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "needs PyTorch, which is not installed" in res.stderr


def test_profile_and_eval_understand_quantized_files(trained, tmp_path):
    from smallnets.quantization import quantize_run

    report = quantize_run(trained, calib=16, out=tmp_path, name="q", latency=False)
    int8 = tmp_path / "q" / "model.int8.onnx"
    res = run_cli("profile", "--pretrained", str(int8), "--runs", "3", "--json")
    assert res.returncode == 0, res.stderr
    prof = json.loads(res.stdout)
    fp32 = smallnets.profile(smallnets.load_weights(trained), tuple(prof["input_size"]), latency=False, memory=False)
    assert prof["file_bytes"] == int8.stat().st_size and prof["macs"] == fp32.macs and prof["params"] == fp32.params
    assert "int8" in prof["stored"] and prof["latency"]["dtype"] == "int8" and prof["latency"]["median_ms"] > 0
    assert prof["file_bytes"] < 0.5 * fp32.size_bytes["fp32"]
    res = run_cli("profile", "mobilenet_v2", "--pretrained", str(int8))
    assert res.returncode == 2 and "name cannot be combined with an ONNX file" in res.stderr
    # eval: the file alone finds its source run (its validation split) through the metadata
    res = run_cli("eval", str(int8), "--json", "--confusion", "")
    assert res.returncode == 0, res.stderr
    alone = json.loads(res.stdout)
    rows = {r["stage"]: r for r in report["rows"]}
    assert alone["split"] == "val" and alone["top1"] == rows["ONNX Runtime int8"]["top1"]
    # the quantize directory: its three models side by side on the same images
    res = run_cli("eval", str(tmp_path / "q"))
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(lines) == 3 and "int8 (ONNX Runtime)" in lines[2] and "all on the validation split" in res.stdout
    assert f"{rows['ONNX Runtime int8']['top1']:.2f}" in lines[2]


def test_convolutions_kept_in_fp32_stay_fp32_when_onnx_runtime_runs_the_file(tmp_path):
    from smallnets.quantization import quantize_onnx
    from smallnets.runtime import runtime_ops

    model = randomized(smallnets.create_model("mobilenet_v1", num_classes=5, width_mult=0.25, cifar=True))
    export_onnx(model, tmp_path / "m.onnx")
    g = onnx.load(str(tmp_path / "m.onnx")).graph
    group = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1) for n in g.node if n.op_type == "Conv"}
    depthwise = [name for name, gr in group.items() if gr > 1]
    assert depthwise and len(depthwise) < len(group)
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    report = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", x, keep_fp32=depthwise)
    # ORT's WeightBiasQuantization would quantize them at load time; smallnets' runtime loads the file without it
    as_run = runtime_ops(tmp_path / "q.onnx")
    assert as_run["Conv"] == len(depthwise) and as_run["QLinearConv"] == len(group) - len(depthwise)
    assert report.ops_as_run == as_run and any(f"{len(depthwise)} of the {len(depthwise)} convolution(s) kept in fp32 run in fp32" in n for n in report.notes)
    runner = OnnxClassifier(tmp_path / "q.onnx")
    full = OnnxClassifier(tmp_path / "m.onnx")
    assert (runner(x).argmax(1) == full(x).argmax(1)).mean() >= 0.75
