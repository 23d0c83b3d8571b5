"""The command line, run end to end in real subprocesses as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallnets", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_list_all_and_pattern():
    res = run("list")
    assert res.returncode == 0, res.stderr
    for name in ("mobilenet_v1", "mobilenet_v2", "squeezenet1_0", "densenet121", "shufflenet_v1", "xception", "efficientnet_b7"):
        assert name in res.stdout
    res = run("list", "efficientnet_b*", "--json")
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == [f"efficientnet_b{i}" for i in range(8)]
    assert rows[0]["input_size"] == [3, 224, 224] and rows[0]["top1"] == 77.1


def test_profile_with_knobs_json():
    res = run("profile", "mobilenet_v1", "--width-mult", "0.5", "--resolution", "160", "--json", "--no-latency", "--no-memory")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["knobs"] == {"width_mult": 0.5} and data["input_size"] == [3, 160, 160]
    assert 70e6 < data["macs"] < 80e6  # MobileNetV1 Table 7 family: 0.5 MobileNet-160 is 76M mult-adds
    assert "layers" not in data


def test_profile_knob_flags_parse_as_train_does():
    # a bare boolean flag is true, as in smallnets train; a CIFAR stem is profiled at 32 px
    res = run("profile", "mobilenet_v1", "--cifar", "--width-mult=0.5", "--json", "--no-latency", "--no-memory")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["knobs"] == {"cifar": True, "width_mult": 0.5} and data["input_size"] == [3, 32, 32]
    assert 40e6 < data["macs"] < 50e6
    import smallnets

    assert smallnets.profile(smallnets.create_model("mobilenet_v2", cifar=True), latency=False, memory=False).input_size == (3, 32, 32)


def test_profile_text_layers_and_latency():
    res = run("profile", "squeezenet1_1", "--resolution", "96", "--layers", "--runs", "3", "--bypass", "simple")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "median" in out and "p90" in out and "images/s" in out
    assert "conv1x1" in out and "conv3x3" in out  # per-kind breakdown
    assert "classifier" in out  # per-layer table lists conv10


def test_profile_bad_knob_is_a_clear_error():
    res = run("profile", "mobilenet_v1", "--widht-mult", "0.5", "--no-latency")
    assert res.returncode == 2
    assert "unknown knob 'widht_mult'" in res.stderr and "did you mean 'width_mult'" in res.stderr
    res = run("profile", "mobilenet_v1", "--width-mult", "-1", "--no-latency")
    assert res.returncode == 2 and "width_mult must be > 0, got -1" in res.stderr
    # a flag that collides with one of profile()'s own arguments is still named as an unknown knob
    res = run("profile", "densenet_cifar", "--input-size", "32", "--no-latency")
    assert res.returncode == 2 and "unknown knob 'input_size' for densenet_cifar" in res.stderr
    res = run("profile", "mobilenet_v1", "--width-mult", "inf", "--no-latency")
    assert res.returncode == 2 and "width_mult must be a finite number, got inf" in res.stderr and "Traceback" not in res.stderr
    res = run("profile", "mobilenett_v1")
    assert res.returncode == 2 and "did you mean 'mobilenet_v1'" in res.stderr


def test_compare_table_chart_and_json(tmp_path):
    chart = tmp_path / "chart.png"
    out_json = tmp_path / "cmp.json"
    res = run(
        "compare",
        "mobilenet_v1:width_mult=0.25@128",
        "shufflenet_v2:width_mult=0.5",
        "squeezenet1_1",
        "--chart",
        str(chart),
        "--json",
        str(out_json),
        "--max-seconds",
        "0.5",
    )
    assert res.returncode == 0, res.stderr
    assert "[3/3] squeezenet1_1" in res.stderr  # progress
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "input", "params"]
    assert any(line.startswith("shufflenet_v2:width_mult=0.5") and "60.3" in line for line in lines)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out_json.read_text())
    assert [r["label"] for r in data["rows"]] == ["mobilenet_v1:width_mult=0.25@128", "shufflenet_v2:width_mult=0.5", "squeezenet1_1"]
    assert data["rows"][0]["input_size"] == [3, 128, 128]
    assert data["environment"]["torch"]
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_compare_baselines_adds_the_classics_beside_the_efficient_nets(tmp_path):
    chart = tmp_path / "chart.png"
    res = run("compare", "squeezenet1_0", "--baselines", "--no-latency", "--json", "-", "--chart", str(chart))
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    classics = [r for r in rows.values() if r["baseline"]]
    assert not rows["squeezenet1_0"]["baseline"] and len({r["family"] for r in classics}) == len(classics) >= 7
    assert {"alexnet", "vgg", "resnet"} <= {r["family"] for r in classics}
    # the SqueezeNet paper's headline: AlexNet-level accuracy with 50x fewer parameters (61.1 M against 1.25 M)
    assert 48 < rows["alexnet"]["params"] / rows["squeezenet1_0"]["params"] < 50
    assert rows["alexnet"]["params"] == 61_100_840 and rows["alexnet"]["top1"] is not None
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_bad_spec():
    res = run("compare", "mobilenet_v1:width=0.5", "--no-latency", "--chart", "")
    assert res.returncode == 2 and "unknown knob 'width'" in res.stderr


@pytest.mark.slow
def test_compare_default_representatives(tmp_path):
    res = run("compare", "--json", "-", "--max-seconds", "0.5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len({r["family"] for r in rows}) == len(rows) >= 8
    assert (tmp_path / "smallnets-compare.png").exists()


def _tiny_folder(root, per_class: int = 4):
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (200 * c, 40 * i, 90)).save(root / name / f"{i}.png")
    return root


def test_train_refuses_a_misspelt_option_before_reading_the_data(tmp_path):
    data = _tiny_folder(tmp_path / "data")
    cache, out = tmp_path / "cache", tmp_path / "runs"
    common = ["--data", str(data), "--cache-dir", str(cache), "--out", str(out), "--pipeline", "tensor"]
    res = run("train", "mobilenet_v1", *common, "--epoch", "1")
    assert res.returncode == 2
    assert "unknown option --epoch" in res.stderr and "did you mean '--epochs'" in res.stderr
    res = run("train", "mobilenet_v1", *common, "--width-mult", "inf")
    assert res.returncode == 2 and "width_mult must be a finite number, got inf" in res.stderr
    res = run("train", "mobilenet_v1", *common, "--width-mult", "-1")
    assert res.returncode == 2 and "width_mult must be > 0, got -1" in res.stderr
    # nothing was listed, hashed, decoded, cached or written
    assert "listing" not in res.stderr + res.stdout and "decoding" not in res.stderr + res.stdout
    assert not cache.exists() and not out.exists()


def test_warnings_reach_the_terminal_as_plain_lines(tmp_path):
    data = _tiny_folder(tmp_path / "data")
    (data / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    res = run("train", "mobilenet_v1", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "runs"),
              "--pipeline", "tensor", "--epochs", "1", "--batch-size", "2", "--width-mult", "0.25", "--cifar",
              "--precision", "fp32", "--progress", "false")  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "skipped 1 file(s)" in line]
    assert lines and all(line.startswith("warning: smallnets.data: skipped") for line in lines), res.stderr
    assert "UserWarning" not in res.stderr and "warnings.warn" not in res.stderr


def test_too_small_resolutions_are_refused():
    res = run("compare", "mobilenet_v1@0", "--chart", "")
    assert res.returncode == 2 and "resolution (after @) must be a positive number of pixels, got 0 in 'mobilenet_v1@0'" in res.stderr
    res = run("profile", "xception", "--resolution", "10", "--no-latency")
    assert res.returncode == 2 and "input_size of xception must be at least 32x32 (total stride 32" in res.stderr
