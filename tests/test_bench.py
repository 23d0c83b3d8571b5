"""smallnets.bench and `smallnets bench`: every backend measured side by side, as table, JSON and plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import smallnets
from smallnets.bench import BACKENDS, bench, write_bench
from smallnets.export import export_onnx


def tiny():
    return smallnets.create_model("mobilenet_v1", num_classes=4, width_mult=0.25, cifar=True).eval()


def test_every_backend_is_timed_at_every_batch_with_memory_and_the_best_torch_path_named(tmp_path):
    backends = [b for b in BACKENDS if b != "compile"]
    report = bench(tiny(), backends=backends, batches=[1, 3], rounds=1, runs=2, warmup=1, calib=8, work_dir=tmp_path / "work")
    assert {(r.backend, r.batch) for r in report.rows} == {(b, n) for b in backends for n in (1, 3)}
    assert all(r.median_ms > 0 and r.p90_ms >= r.median_ms and r.images_per_s > 0 for r in report.rows)
    assert all(report.row("best-torch", n).note in ("= eager", "= torchscript", "= bf16") for n in (1, 3))
    assert all(report.row(b, 1).peak_mb is not None for b in backends if b != "best-torch")
    assert any("calibrated on random inputs" in n for n in report.notes)
    table = report.table()
    assert all(f"| {b} |" in table for b in backends) and "b3 vs eager" in table
    assert set(report.files) == {"ort", "ort-plain", "ort-int8", "ort-int8-default"}
    from smallnets.runtime import OnnxClassifier

    assert OnnxClassifier(report.files["ort-int8"]).precision == "int8"
    out_json, png = write_bench(report, tmp_path / "b.json")
    again = json.loads(out_json.read_text())
    assert again["rows"][0]["backend"] == report.rows[0].backend and png.stat().st_size > 10_000


def test_an_onnx_file_runs_on_onnx_runtime_only(tmp_path):
    export_onnx(tiny(), tmp_path / "m.onnx")
    report = bench(tmp_path / "m.onnx", backends=["ort"], batches=[2], rounds=1, runs=2)
    assert [(r.backend, r.batch) for r in report.rows] == [("ort", 2)] and report.input_size == [3, 32, 32]
    with pytest.raises(ValueError, match="an .onnx target runs on ONNX Runtime only"):
        bench(tmp_path / "m.onnx", backends=["eager"], batches=[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backends": ["eager", "tensorrt"]}, "backends must be some of"),
        ({"backends": []}, "backends must be some of"),
        ({"batches": [0]}, r"batches must be integers >= 1, got \[0\]"),
        ({"runs": 0}, "runs must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench(tiny(), **kwargs)
    with pytest.raises(ValueError, match="is no existing path and no zoo model"):
        bench("no/such/run")


def test_bench_from_the_command_line(tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "smallnets", "bench", "squeezenet1_1", "--backends", "eager,ort", "--batch", "1",
                          "--runs", "2", "--rounds", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "squeezenet1_1 at [3, 224, 224]" in res.stdout and "| ort |" in res.stdout
    assert json.loads(out.read_text())["rows"][1]["backend"] == "ort" and out.with_suffix(".png").is_file()
    res = subprocess.run([sys.executable, "-m", "smallnets", "bench", "squeezenet1_1", "--batch", "1,x"], capture_output=True, text=True)
    assert res.returncode == 2 and "--batch must be comma-separated integers" in res.stderr
