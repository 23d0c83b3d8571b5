"""The sweep results committed under benchmarks/results/sweeps/ (the README's tables) agree with
their own records and with today's code: every point's parameters and MACs are what the zoo builds
from the point's configuration, its top-1 is the best validation top-1 of its metrics, and
`smallnets pick` reads each sweep as measured evidence from a checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smallnets.pick import pick
from smallnets.profiler import count_macs, count_params
from smallnets.zoo import create_model

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "sweeps"
SWEEPS = sorted(p for p in RESULTS.iterdir() if (p / "sweep.json").is_file())


def test_the_papers_experiments_are_all_kept():
    assert {p.name for p in SWEEPS} >= {"mobilenet_v1_separable", "mobilenet_v1_narrow_shallow", "squeezenet_bypass",
                                        "squeezenet_design_space", "densenet_variants", "efficientnet_scaling"}  # fmt: skip


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.name)
def test_each_point_matches_its_records_and_the_zoo(sweep, monkeypatch, tmp_path):
    data = json.loads((sweep / "sweep.json").read_text())
    rows = [r for r in data["rows"] if r["status"] == "finished"]
    assert rows and len(rows) == len(data["rows"])
    for row in rows:
        point = sweep / row["id"]
        cfg = json.loads((point / "sweep_point.json").read_text())["config"]
        knobs = dict(cfg["model"])
        name = knobs.pop("name")
        with torch.device("meta"):
            net = create_model(name, num_classes=10, **knobs)
        size = (3, cfg["data"].get("image_size", 32), cfg["data"].get("image_size", 32))
        assert tuple(row["input_size"]) == size
        assert (row["params"], row["macs"]) == (count_params(net), count_macs(net, size)), row["id"]
        epochs = [json.loads(line) for line in (point / "metrics.jsonl").read_text().splitlines() if line.strip()]
        assert len(epochs) == row["epochs"] == cfg["train"]["epochs"]
        assert row["top1"] == max(e["val_top1"] for e in epochs)
        assert json.loads((point / "cost.json").read_text())["latency_ms"] == row["latency_ms"] is not None
    monkeypatch.setenv("SMALLNETS_CACHE", str(tmp_path))
    found = pick(max_macs="100G", sweeps=[sweep], published=False, grid=None, top=100)["candidates"]
    assert all(c.evidence == "measured" for c in found)
    assert {r["top1"] for r in rows} >= {m for c in found for m in c.measurements} and sum(len(c.measurements) for c in found) == len(rows)
