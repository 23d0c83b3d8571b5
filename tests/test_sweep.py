"""`smallnets sweep`: a grid of real training runs on image files, resumable point by point, with
exact costs, a Pareto front and its table / JSON / plot; bad sweep files are refused up front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import smallnets
from conftest import file_snapshot
from smallnets.profiler import count_macs, count_params
from smallnets.sweep import format_rows, load_sweep, pareto_front, point_trainer, run_sweep
from test_train import make_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)


def spec_text(images: Path, cache: Path) -> str:
    return f"""
[sweep]
name = "width"
title = "MobileNetV1 width on shapes"

[base]
model = {{ name = "mobilenet_v1", cifar = true }}
data = {{ path = "{images}", batch_size = 8, val_fraction = 0.25, pipeline = "tensor", cache_dir = "{cache}" }}
train = {{ epochs = 2, precision = "fp32", lr = 0.05, progress = false }}

[grid]
"model.width_mult" = [0.25, 0.5]

[[point]]
id = "small-input"
"model.width_mult" = 0.25
"data.image_size" = 12

[[paper]]
id = "width_mult=0.5"
top1 = 63.7
macs = 149e6
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallnets", *args], capture_output=True, text=True, timeout=600)


def test_a_sweep_trains_each_point_once_resumes_an_interrupted_one_and_reports_costs(images, tmp_path):
    path = tmp_path / "width.toml"
    path.write_text(spec_text(images, tmp_path / "cache"))
    spec = load_sweep(path, out=tmp_path / "sweeps")
    assert [p.id for p in spec.points] == ["width_mult=0.25", "width_mult=0.5", "small-input"]
    # one point is interrupted part-way through its first epoch, as a killed or stopped sweep leaves it
    paused = point_trainer(spec, spec.points[1], progress=False).fit(max_steps=1)
    assert paused.status == "paused"
    res = run_cli("sweep", str(path), "--out", str(tmp_path / "sweeps"), "--no-latency")
    assert res.returncode == 0, res.stderr
    assert "resuming width_mult=0.5 at epoch 1, batch 1" in res.stdout and "point 3/3 small-input" in res.stdout
    root = tmp_path / "sweeps" / "width"
    data = json.loads((root / "sweep.json").read_text())
    rows = {r["id"]: r for r in data["rows"]}
    assert all(r["status"] == "finished" and r["epochs"] == 2 and r["top1"] is not None for r in rows.values())
    for pid, width, side in (("width_mult=0.25", 0.25, 16), ("width_mult=0.5", 0.5, 16), ("small-input", 0.25, 12)):
        model = smallnets.create_model("mobilenet_v1", num_classes=4, width_mult=width, cifar=True)
        assert rows[pid]["params"] == count_params(model) and rows[pid]["macs"] == count_macs(model, (3, side, side))
        assert rows[pid]["input_size"] == [3, side, side] and rows[pid]["latency_ms"] is None
    assert rows["small-input"]["macs"] < rows["width_mult=0.25"]["macs"] < rows["width_mult=0.5"]["macs"]
    front = pareto_front(list(rows.values()), "macs")
    assert "small-input" in front  # the cheapest point is on the front whatever its accuracy
    assert all(("macs" in r["pareto"]) == (r["id"] in front) for r in rows.values())
    table = (root / "sweep.md").read_text()
    assert "| width_mult=0.5 | finished | 2 |" in table and "63.7" in table  # the paper's figure beside ours
    assert (root / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # again: every point finished, nothing trains and no run file changes
    before = {p: file_snapshot(root / p) for p in rows}
    res = run_cli("sweep", str(path), "--out", str(tmp_path / "sweeps"), "--no-latency")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("finished before, skipped") == 3
    assert {p: file_snapshot(root / p) for p in rows} == before
    # the file edited under a trained point: refused, not silently mixed
    path.write_text(spec_text(images, tmp_path / "cache").replace("epochs = 2", "epochs = 3"))
    res = run_cli("sweep", str(path), "--out", str(tmp_path / "sweeps"), "--no-latency")
    assert res.returncode == 2 and "another configuration" in res.stderr and "rename the sweep or the point" in res.stderr


def test_a_diverging_point_is_recorded_and_the_sweep_goes_on(images, tmp_path):
    path = tmp_path / "lr.toml"
    base = spec_text(images, tmp_path / "cache").split("[grid]")[0]
    path.write_text(base + '[[point]]\nid = "wild"\n"train.lr" = 1e12\n[[point]]\nid = "calm"\n"model.width_mult" = 0.25\n')
    spec = load_sweep(path, out=tmp_path / "sweeps")
    res = run_cli("sweep", str(path), "--out", str(tmp_path / "sweeps"), "--no-latency", "--progress", "false")
    assert res.returncode == 1 and "1 point(s) diverged (loss NaN or infinite): wild" in res.stderr, res.stderr
    rows = {r["id"]: r for r in json.loads((spec.directory / "sweep.json").read_text())["rows"]}
    assert rows["wild"]["status"] == "diverged" and rows["calm"]["status"] == "finished" and rows["calm"]["top1"] is not None
    assert "| wild | diverged |" in (spec.directory / "sweep.md").read_text()
    # again: the diverged point is not trained again (the same recipe would diverge the same way); nothing changes
    before = file_snapshot(spec.directory / "wild")
    again = run_sweep(spec, latency=False, progress=False)
    assert again["diverged"] == ["wild"] and file_snapshot(spec.directory / "wild") == before


def test_latency_is_measured_once_and_cached(images, tmp_path):
    path = tmp_path / "one.toml"
    path.write_text(spec_text(images, tmp_path / "cache").replace('[0.25, 0.5]', '[0.25]').split("[[point]]")[0])
    spec = load_sweep(path, out=tmp_path / "sweeps")
    first = run_sweep(spec, progress=False)
    cost = json.loads((spec.directory / "width_mult=0.25" / "cost.json").read_text())
    assert first["rows"][0]["latency_ms"] == cost["latency_ms"] > 0 and cost["latency_env"]["torch"]
    again = run_sweep(spec, progress=False)
    assert again["rows"][0]["latency_ms"] == cost["latency_ms"]  # not measured a second time


@pytest.mark.parametrize("text,message", [
    ('[sweep]\nname = "x"\n[grid]\n"width_mult" = [1]\n', "must be SECTION.NAME"),
    ('[sweep]\nname = "x"\n[grid]\n"model.width_mult" = 0.5\n', "must be a non-empty list"),
    ('[sweep]\nname = "x"\n[gird]\n', "unknown \\['gird'\\]"),
    ('[sweep]\nname = "x"\n[base]\nmodel = { name = "mobilenet_v1" }\n[grid]\n"model.widht_mult" = [0.5]\n', "unknown knob 'widht_mult'"),
    ('[sweep]\nname = "x"\n[[point]]\nid = "a"\n[[point]]\nid = "a"\n', "distinct ids"),
    ('[sweep]\nname = "a/b"\n', "name"),
])  # fmt: skip
def test_bad_sweep_files_are_refused_before_anything_trains(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_sweep(path, out=tmp_path)
    assert not (tmp_path / "x").exists()


SHIPPED = sorted((Path(__file__).parents[1] / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_the_shipped_sweeps_are_valid_and_name_their_papers_points(path, images, tmp_path):
    spec = load_sweep(path, out=tmp_path, data=images)  # every point's model knobs and run config checked
    assert spec.name == path.stem and spec.paper, "each shipped sweep reproduces a paper's table"
    assert {row["id"] for row in spec.paper} <= {p.id for p in spec.points}


def test_the_paper_columns_follow_what_its_figures_give():
    rows = [{"id": "sr0.125", "status": "finished", "epochs": 10, "top1": 30.0, "params": 7.2e5, "macs": 2e7, "fp32_bytes": 2.9e6,
             "latency_ms": None, "pareto": ["macs"]}]  # fmt: skip
    table = format_rows(rows, [{"id": "sr0.125", "top5": 80.3, "mb": 4.8}]).splitlines()
    assert table[0].endswith("| paper top-5 (%) | paper size (MB) |") and "paper MACs" not in table[0]
    assert table[2].endswith("| 80.3 | 4.8 |")
    assert "| paper top-1 (%) | paper MACs |" in format_rows(rows, [{"id": "x", "top1": 70.6, "macs": 5.69e8}]).splitlines()[0]


def test_pareto_front_keeps_the_points_nothing_beats():
    rows = [{"id": "a", "macs": 10, "top1": 50.0}, {"id": "b", "macs": 20, "top1": 60.0}, {"id": "c", "macs": 30, "top1": 55.0},
            {"id": "d", "macs": 20, "top1": 58.0}, {"id": "e", "macs": 5, "top1": 50.0}]  # fmt: skip
    assert pareto_front(rows, "macs") == ["b", "e"]  # a: e is cheaper at the same accuracy; c, d: b is as cheap or cheaper and better


def test_points_trained_under_different_thread_counts_are_named_in_the_results(images, tmp_path):
    import torch

    spec = load_sweep({
        "sweep": {"name": "threads"},
        "base": {"model": {"name": "mobilenet_v1", "cifar": True, "width_mult": 0.25},
                 "data": {"path": str(images), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "c")},
                 "train": {"epochs": 1, "progress": False}},
        "grid": {"train.seed": [0, 1, 2]},
    }, out=tmp_path / "sweeps")  # fmt: skip
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        same = run_sweep(spec, only=["seed=0", "seed=1"], latency=False, progress=False)
        assert same["mixed_environments"] is None  # one thread count so far: nothing to say
        torch.set_num_threads(2)
        mixed = run_sweep(spec, only=["seed=2"], latency=False, progress=False)
    finally:
        torch.set_num_threads(before)
    note = mixed["mixed_environments"]
    assert "threads 1: seed=0, seed=1" in note and "threads 2: seed=2" in note
    assert {r["id"]: r["trained_with"]["threads"] for r in mixed["rows"]} == {"seed=0": 1, "seed=1": 1, "seed=2": 2}
    root = Path(mixed["directory"])
    assert json.loads((root / "sweep.json").read_text())["mixed_environments"] == note
    assert f"Note: {note}." in (root / "sweep.md").read_text()
