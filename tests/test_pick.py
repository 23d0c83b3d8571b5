"""`smallnets pick`: exact counts against the limits, measured sweep points ranked before published
figures, latency measured once and cached, a clear error with the nearest candidates, and brief
training of the first candidates on real images."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import smallnets
from smallnets.pick import EVIDENCE_ORDER, GRID_RESOLUTIONS, parse_amount, pick, train_candidates
from smallnets.profiler import count_macs, count_params
from smallnets.sweep import load_sweep, run_sweep
from test_train import make_image_folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")  # one cache for the module: the zoo's configurations are counted once
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLNETS_CACHE", str(root))
        yield root


def test_every_candidate_fits_and_the_counts_are_the_profilers(cache):
    result = pick(max_macs="20M", max_bytes="6MB", resolution=16)
    cands = pick(max_macs="20M", max_bytes="6MB", resolution=16, top=1000)["candidates"]
    assert cands and result["fitting"] < result["considered"] and len(cands) == result["fitting"]
    assert [c.evidence for c in cands] == sorted((c.evidence for c in cands), key=EVIDENCE_ORDER.index)
    published = [c for c in cands if c.evidence == "published"]
    grid = [c for c in cands if c.evidence == "none"]
    assert published and grid and cands[: len(published)] == published and result["candidates"] == cands[:10]
    assert [c.top1 for c in published] == sorted((c.top1 for c in published), reverse=True)  # published evidence, best first
    assert [c.macs for c in grid] == sorted((c.macs for c in grid), reverse=True) and all(c.top1 is None for c in grid)
    for c in cands:
        assert c.macs <= 20e6 and c.fp32_bytes <= 6e6 and c.input_size == (3, 16, 16)
        model = smallnets.create_model(c.name, **c.knobs)
        assert c.params == count_params(model) and c.macs == count_macs(model, (3, 16, 16))
    assert (cache / "pick.json").is_file()  # counts cached for the next call


def test_the_knob_grid_adds_the_papers_multipliers_and_input_sizes_once(cache):
    grid = {"mobilenet_v1": {"width_mult": (0.25, 1.0)}}
    result = pick(max_macs="600M", grid=grid, published=False, top=1000)
    assert sorted((c.knobs["width_mult"], c.input_size[1]) for c in result["candidates"]) == [(w, r) for w in (0.25, 1.0) for r in sorted(GRID_RESOLUTIONS)]
    both = pick(max_macs="600M", grid=grid, top=1000)["candidates"]
    v1 = [c for c in both if c.name == "mobilenet_v1" and c.knobs.get("width_mult", 1.0) == 1.0 and c.input_size[1] == 224 and not c.knobs.get("separable") is False]
    assert [c.evidence for c in v1 if set(c.knobs) <= {"width_mult"}] == ["published"]  # Table 6's alpha = 1 at 224: listed once, with its figure
    with pytest.raises(ValueError, match="unknown knob 'width' for mobilenet_v1"):
        pick(max_macs="1G", grid={"mobilenet_v1": {"width": (0.5,)}})


def test_a_budget_nothing_meets_names_the_nearest(cache):
    with pytest.raises(ValueError, match=r"no configuration of the \d+ considered fits every limit .*nearest: .*x the limit"):
        pick(max_macs="1M", max_params="1k", resolution=16)
    with pytest.raises(ValueError, match="max_bytes must be bytes, e.g. 2MB, 500kB, got '2 apples'"):
        pick(max_bytes="2 apples")
    assert parse_amount("m", "1.5G") == 1.5e9 and parse_amount("b", "500kB", bytes_=True) == 5e5


def test_latency_is_measured_for_fitting_candidates_and_cached(cache):
    first = pick(max_macs="1M", max_latency_ms=1000, resolution=16)
    assert all(c.latency_ms is not None and c.latency_ms > 0 for c in first["candidates"])
    saved = json.loads((cache / "pick.json").read_text())
    latency_keys = [k for k in saved if '"what": "latency"' in k]
    assert len(latency_keys) == first["fitting"]  # measured only where the counts fit
    again = pick(max_macs="1M", max_latency_ms=1000, resolution=16)
    assert [c.latency_ms for c in again["candidates"]] == [c.latency_ms for c in first["candidates"]]  # read back, not re-measured
    with pytest.raises(ValueError, match="max_latency_ms"):
        pick(max_macs="1M", max_latency_ms=1e-6, resolution=16)


def test_measured_sweep_points_come_first_and_candidates_train_on_real_images(cache, tmp_path):
    images = make_image_folder(tmp_path / "shapes", per_class=6)
    spec = load_sweep({
        "sweep": {"name": "tiny"},
        "base": {"model": {"name": "mobilenet_v1", "cifar": True},
                 "data": {"path": str(images), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "c")},
                 "train": {"epochs": 1, "precision": "fp32", "progress": False}},
        "grid": {"model.width_mult": [0.25]},
    }, out=tmp_path / "sweeps")  # fmt: skip
    run_sweep(spec, latency=False, progress=False)
    result = pick(max_macs="20M", resolution=16, sweeps=[spec.directory])
    first = result["candidates"][0]
    assert first.evidence == "measured" and first.name == "mobilenet_v1" and first.knobs["width_mult"] == 0.25 and "sweep tiny" in first.source
    assert all(c.evidence != "measured" for c in result["candidates"][1:])
    trained = train_candidates(result, images, minutes=1.0, count=2, out=tmp_path / "pick", epochs=1)
    assert len(trained) == 2 and all(c.measured_top1 is not None and c.run_dir for c in trained)
    res = subprocess.run([sys.executable, "-m", "smallnets", "pick", "--max-macs", "20M", "--resolution", "16", "--sweeps", str(spec.directory),
                          "--top", "3", "--json", str(tmp_path / "pick.json")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "| 1 | mobilenet_v1:width_mult=0.25@16 | measured" in res.stdout
    saved = json.loads((tmp_path / "pick.json").read_text())
    assert saved["candidates"][0]["evidence"] == "measured" and saved["considered"] == result["considered"]
    res = subprocess.run([sys.executable, "-m", "smallnets", "pick", "--max-macs", "20M", "--resolution", "16", "--no-grid", "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout[res.stdout.index("{"):])["considered"] == pick(max_macs="20M", resolution=16, grid=None)["considered"] < result["considered"]


def test_one_network_measured_by_two_sweeps_is_one_row_with_the_mean(cache, tmp_path):
    images = make_image_folder(tmp_path / "shapes", per_class=6)
    dirs = []
    for name, seed, extra in (("first", 0, [0.25]), ("second", 1, [0.25, 0.5])):
        spec = load_sweep({
            "sweep": {"name": name},
            "base": {"model": {"name": "mobilenet_v1", "cifar": True},
                     "data": {"path": str(images), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "c")},
                     "train": {"epochs": 1, "precision": "fp32", "progress": False, "seed": seed}},
            "grid": {"model.width_mult": extra},
        }, out=tmp_path / "sweeps")  # fmt: skip
        dirs.append(run_sweep(spec, latency=False, progress=False))
    tops = [next(r["top1"] for r in d["rows"] if r["id"] == "width_mult=0.25") for d in dirs]
    cands = pick(max_macs="20M", resolution=16, sweeps=[d["directory"] for d in dirs], published=False, grid=None, top=10)["candidates"]
    assert sorted(c.knobs["width_mult"] for c in cands) == [0.25, 0.5]  # two networks, not three rows
    quarter = next(c for c in cands if c.knobs["width_mult"] == 0.25)
    assert quarter.measurements == tops and quarter.top1 == pytest.approx(sum(tops) / 2)
    assert quarter.source.startswith("mean of 2: ") and "sweep first" in quarter.source and "sweep second" in quarter.source
