"""Quantization-aware training: the simulation is ONNX Runtime's int8 model, it trains through the
trainer with BatchNorm and the ranges frozen on schedule, leaves the model a plain one afterwards,
and `smallnets quantize --qat-epochs` turns a run into a QAT run with its int8 file; calibration
images come off the validation split of a train/-only archive too."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import smallnets
from conftest import file_snapshot, tiny_trained_run
from smallnets.export import export_onnx
from smallnets.qat import Observer, TensorStats, fake_quantize_weight, prepare_qat
from smallnets.quantization import ActivationRanges, calibration_files, quantize_onnx
from test_export import FAMILIES, randomized


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return tiny_trained_run(tmp_path_factory)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallnets", *args], capture_output=True, text=True, timeout=600)


def ort_activation_scales(path: Path) -> list[float]:
    q = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    return sorted(float(inits[n.input[1]]) for n in q.graph.node if n.op_type == "QuantizeLinear")


@pytest.mark.parametrize("name,knobs", [("mobilenet_v1", {"width_mult": 0.25, "cifar": True}), ("mobilenet_v2", {"width_mult": 0.35, "cifar": True})])
def test_the_simulation_quantizes_the_tensors_onnx_runtime_quantizes_with_its_scales(name, knobs, tmp_path):
    torch.manual_seed(0)
    model = randomized(smallnets.create_model(name, num_classes=10, **knobs))
    x = torch.randn(16, 3, 32, 32)
    export_onnx(model, tmp_path / "m.onnx")
    quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", x.numpy())
    with torch.no_grad():
        fp32 = model(x).numpy()
    ctrl = prepare_qat(model)
    ctrl.calibrate([x])
    assert not hasattr(x, "_smallnets_int8")  # the caller's batch is left as it was
    ours = sorted(o.qparams()[0] for o in ctrl.observers.values() if o.low is not None)
    theirs = ort_activation_scales(tmp_path / "q.onnx")
    assert len(ours) == len(theirs) and np.allclose(ours, theirs, rtol=1e-5)  # the same tensors, the same grids
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    int8 = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        simulated = model(x).numpy()
    # the simulation is the int8 model up to a rare one-step rounding flip; fp32 is not
    assert np.abs(simulated - int8).mean() < 0.8 * np.abs(fp32 - int8).mean()
    # per-channel symmetric weights, ONNX Runtime's grid: max|w| / 127
    w = torch.randn(8, 4, 3, 3)
    q = fake_quantize_weight(w)
    steps = (q / (w.abs().flatten(1).amax(1) / 127).view(-1, 1, 1, 1)).detach()
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4


def activation_scales_by_tensor(path: Path) -> dict[str, float]:
    q = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    return {n.input[0].removesuffix("_QuantizeLinear_Input"): float(inits[n.input[1]]) for n in q.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}  # fmt: skip


def test_trained_ranges_go_into_the_int8_file_by_tensor_whatever_its_onnx_name(tmp_path):
    torch.manual_seed(0)
    model = randomized(smallnets.create_model("efficientnet", num_classes=10, width_mult=0.5, depth_mult=0.5, cifar=True))
    x = torch.randn(16, 3, 32, 32)
    export_onnx(model, tmp_path / "m.onnx")
    ctrl = prepare_qat(model)
    ctrl.calibrate([x])
    ctrl.observers["stem.conv.input"].high *= 3  # the controller's own (trained) ranges are not what the reference measures
    trained = {k: v for k, v in ctrl.ranges().items() if v is not None}
    reference = ctrl.measure([x[:8], x[8:]])
    assert ctrl.ranges()["stem.conv.input"] == trained["stem.conv.input"]  # measuring left the trained ranges as they were
    assert reference["stem.conv.input"].high * 3 == pytest.approx(trained["stem.conv.input"][1])
    assert reference["stem.conv.input"].mean == pytest.approx(float(x.mean()), rel=1e-5) and reference["stem.conv.input"].shape == (3, 32, 32)
    # ranges of our own, 2x the measured ones but for one tensor: each lands on its own tensor
    ours = {k: (2 * r.low, 2 * r.high) for k, r in reference.items()}
    label = "stages.3.0.se.reduce.input"  # the squeeze-and-excitation pooling's output
    ours[label] = (0.0, 7.5)
    plain = quantize_onnx(tmp_path / "m.onnx", tmp_path / "plain.onnx", x.numpy())
    carried = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", x.numpy(), activation_ranges=ActivationRanges(ours, reference, images=16))
    assert plain.carried_ranges is None
    c = carried.carried_ranges
    assert c["quantized_carrying"] == c["quantized"] == len(reference) and "activation ranges:" in str(carried)
    before, after = activation_scales_by_tensor(tmp_path / "plain.onnx"), activation_scales_by_tensor(tmp_path / "q.onnx")
    assert before.keys() == after.keys()
    ratios = sorted(after[t] / before[t] for t in before)
    assert sum(abs(r - 2) < 1e-4 for r in ratios) == len(ratios) - 1  # every tensor on the doubled grid but one ...
    assert 7.5 / 255 in [pytest.approx(after[t], rel=1e-6) for t in after]  # ... which took its own range


def test_ranges_match_the_tensor_of_the_same_shape_and_statistics():
    ref = {"a": TensorStats(0.0, 4.0, 1.0, (8, 4, 4)), "b": TensorStats(-2.0, 2.0, 0.0, (8, 4, 4)), "c": TensorStats(0.0, 9.0, 3.0, (8,)),
           "gate": TensorStats(0.0, 1.0, 0.2, (8, 1, 1))}  # fmt: skip
    ranges = ActivationRanges(ranges={"a": (0.0, 1.0), "b": (-1.0, 1.0), "gate": (0.0, 1.0)}, reference=ref, images=8)
    measured = {"t_a": TensorStats(0.0, 4.0001, 1.0, (8, 4, 4)), "t_a_copy": TensorStats(0.0, 4.0, 1.0, (8, 4, 4)),
                "t_a_flat": TensorStats(0.0, 4.0, 1.0, (128,)), "t_b": TensorStats(-2.0, 2.1, 0.0, (8, 4, 4)),
                "t_c": TensorStats(0.0, 9.0, 3.0, (8,)), "t_gate": TensorStats(0.0, 1.0, 0.2, (8, 1, 1)),
                "t_other_gate": TensorStats(0.0, 1.0, 0.5, (8, 1, 1))}  # fmt: skip
    # a and its same-shape copy, not its flattened one; b is 2.5% of its width off (outside 1e-3); c has no range to give;
    # two saturated sigmoids of the same range are told apart by their means
    assert ranges.match(measured) == {"t_a": "a", "t_a_copy": "a", "t_gate": "gate"}
    assert ActivationRanges(ranges.ranges, ref, images=8, rtol=0.05).match(measured)["t_b"] == "b"


@pytest.mark.parametrize("name,knobs,side", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_trains_quantized_and_is_restored_to_plain_fp32(name, knobs, side):
    torch.manual_seed(0)
    model = randomized(smallnets.create_model(name, num_classes=5, **knobs))
    x = torch.randn(4, 3, side, side)
    with torch.no_grad():
        before = model(x)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl = prepare_qat(model)
    assert set(model.state_dict()) == set(keys)  # the same parameters and buffers: saved and reloaded as ever
    ctrl.freeze_batchnorm()  # BatchNorm on running statistics: the deployed computation
    model.train()
    loss = model(x).logsumexp(1).mean()
    loss.backward()  # straight-through: every quantized layer gets a gradient
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    model.eval()
    with torch.no_grad():
        simulated = model(x)
    assert not torch.equal(simulated, before) and torch.allclose(simulated, before, atol=0.25 * float(before.abs().max()))
    with pytest.raises(ValueError, match="already prepared"):
        prepare_qat(model)
    ctrl.remove()
    with torch.no_grad():
        assert torch.equal(model(x), before)  # frozen BatchNorm did not move: exactly the fp32 model again
    assert all(torch.equal(v, keys[k]) for k, v in model.state_dict().items())


def test_batchnorm_and_ranges_freeze_on_schedule():
    torch.manual_seed(0)
    model = smallnets.create_model("mobilenet_v2", num_classes=5, width_mult=0.35, cifar=True)
    ctrl = prepare_qat(model, freeze_bn=0.5, freeze_observers=0.75)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    obs = ctrl.observers["stem.conv.input"]
    model.train()
    ctrl.start(model, 4)
    seen = []
    for step in range(4):
        mean = bn.running_mean.clone()
        model(torch.randn(4, 3, 32, 32) * (step + 1))
        seen.append((not torch.equal(mean, bn.running_mean), obs.high))
        ctrl.after_step(model, step)
    moved = [m for m, _ in seen]
    assert moved == [True, True, False, False] and ctrl.bn_frozen and ctrl.observers_frozen
    highs = [h for _, h in seen]
    assert highs[0] < highs[1] < highs[2] and highs[3] == highs[2]  # the range grows with the inputs until it freezes
    with pytest.raises(ValueError, match=r"freeze_bn must be in \[0.0, 1.0\], got 1.5"):
        prepare_qat(smallnets.create_model("mobilenet_v1", num_classes=5, cifar=True), freeze_bn=1.5)


def test_observer_ranges_contain_zero_and_follow_the_moving_average():
    obs = Observer(momentum=0.5)
    obs(torch.tensor([1.0, 3.0]), training=True)
    obs(torch.tensor([1.0, 5.0]), training=True)
    assert (obs.low, obs.high) == (1.0, 4.0)
    scale, zero = obs.qparams()
    assert zero == 0 and scale == pytest.approx(4.0 / 255)  # [0, 4]: zero is representable
    y = obs(torch.tensor([0.005, 1.0, 9.0]), training=False)  # eval: not updated; rounded to the grid, clipped to the range
    assert (obs.low, obs.high) == (1.0, 4.0)
    assert float(y[0]) == 0.0 and float(y[1]) == pytest.approx(64 * scale) and float(y[2]) == pytest.approx(4.0)
    extremes = Observer(mode="minmax")  # what the export's min-max calibration takes: the extremes over every batch
    extremes(torch.tensor([1.0, 3.0]), training=True)
    extremes(torch.tensor([-2.0, 2.0]), training=True)
    assert (extremes.low, extremes.high) == (-2.0, 3.0)
    with pytest.raises(ValueError, match="ranges must be one of"):
        prepare_qat(smallnets.create_model("mobilenet_v1", num_classes=5, cifar=True), ranges="kl")


def test_calibration_images_come_off_the_validation_split_of_a_train_only_archive(tmp_path):
    from smallnets.training import RunConfig, Trainer
    from test_train import make_image_folder

    images = make_image_folder(tmp_path / "shapes", per_class=8)
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # CIFAR's shared layout: train/<class>/...
        tar.add(images, arcname="train")
    cfg = RunConfig.from_dict({
        "model": {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True},
        "data": {"path": str(archive), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": 1, "precision": "fp32", "progress": False, "out": str(tmp_path / "runs"), "name": "arc"},
    })  # fmt: skip
    run = Trainer(cfg).fit().run_dir
    val = set(json.loads((Path(run) / "split.json").read_text())["val_files"])
    files = calibration_files(run, 100)
    names = [f.split("::", 1)[1] for f in files]
    assert all(f.startswith(f"{archive}::train/") for f in files)
    assert len(files) == 32 - len(val) and not set(names) & val  # every training image, no validation one
    report = quantize_onnx(export_onnx(run, tmp_path / "m.onnx").path, tmp_path / "q.onnx", files[:8])
    assert report.calibration_images == 8


def test_quantize_with_qat_epochs_writes_a_training_run_with_its_int8_file(trained, tmp_path):
    before = file_snapshot(trained)
    res = run_cli("quantize", str(trained), "--qat-epochs", "2", "--calib", "16", "--out", str(tmp_path), "--name", "qat",
                  "--lr", "0.002", "--progress", "false", "--no-latency")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert file_snapshot(trained) == before
    out = tmp_path / "qat"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "best.safetensors", "model.onnx", "model.int8.onnx", "quantize.json", "quantize.png"} <= names
    report = json.loads((out / "quantize.json").read_text())
    assert [r["stage"] for r in report["rows"]] == ["source, PyTorch fp32", "after 2 QAT epoch(s), PyTorch fp32", "ONNX Runtime fp32",
                                                   "ONNX Runtime int8 (QAT)"]  # fmt: skip
    qat = report["settings"]["qat"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and qat["simulated_int8_top1_best"] == max(m["val_top1"] for m in metrics)
    assert qat["lr"] == pytest.approx(0.002) and qat["precision"] == "fp32" and qat["layers"]["folded_conv_bn"] > 0
    assert "simulated int8 top-1" in res.stdout and "| ONNX Runtime int8 (QAT) |" in res.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["model"]["name"] == "mobilenet_v2"
    # the int8 file's activation grids are the ones QAT trained with (qat_ranges.json), not calibrated afresh
    saved = json.loads((out / "qat_ranges.json").read_text())
    assert saved["frozen"] and saved["statistic"] == "ema" and qat["export_ranges"] == "trained"
    grids = {Observer(low=lo, high=hi).qparams()[0] for lo, hi in saved["ranges"].values()}
    carried = report["settings"]["quantize"]["carried_ranges"]
    assert carried["quantized_carrying"] == carried["quantized"]
    assert all(any(abs(s - g) <= 1e-6 * g for g in grids) for s in activation_scales_by_tensor(out / "model.int8.onnx").values())
    assert report["settings"]["activation_ranges"].startswith("trained") and qat["freeze_bn"] == 0.0
    # the QAT run quantized again (no --qat-epochs) keeps its trained ranges; --export-ranges calibrated calibrates afresh
    for how, expect in (("trained", "trained"), ("calibrated", "calibrated")):
        res = run_cli("quantize", str(out), "--calib", "16", "--out", str(tmp_path), "--name", f"again-{how}", "--export-ranges", how, "--no-latency")
        assert res.returncode == 0, res.stderr
        again = json.loads((tmp_path / f"again-{how}" / "quantize.json").read_text())["settings"]
        assert again["activation_ranges"].startswith(expect) and (("activation ranges:" in res.stdout) == (how == "trained"))
    reloaded = smallnets.load_weights(out)  # an ordinary run: its weights reload as any run's
    assert not any("_qat" in m.__dict__ for m in reloaded.modules())
    # training options need --qat-epochs; and a second run into the same name is refused
    res = run_cli("quantize", str(trained), "--lr", "0.01", "--out", str(tmp_path), "--name", "x")
    assert res.returncode == 2 and "add --qat-epochs N" in res.stderr and not (tmp_path / "x").exists()
    res = run_cli("quantize", str(trained), "--qat-epochs", "1", "--out", str(tmp_path), "--name", "qat", "--progress", "false")
    assert res.returncode == 2 and "already" in res.stderr
