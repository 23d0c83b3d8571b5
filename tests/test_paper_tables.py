"""Every entry of tests/data/paper_tables.json: our params and MACs against the papers'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import smallnets
from conftest import load_facts, shared_path


def _entries():
    return [pytest.param(e, id=e["id"]) for e in load_facts("paper_tables.json")["entries"]]


@pytest.mark.parametrize("entry", _entries())
def test_paper_table_entry(entry, paper_tables):
    with torch.device("meta"):  # shapes only: counting needs no real weights
        model = smallnets.create_model(entry["model"], num_classes=entry["num_classes"], **entry["kwargs"])
    report = smallnets.profile(model, tuple(entry["input_size"]), latency=False, memory=False)
    checked = 0
    for key, ours in (("params", report.params), ("macs", report.macs)):
        ref = entry.get(key)
        if ref is None:
            continue
        checked += 1
        assert abs(ours - ref["value"]) <= ref["tolerance"], (
            f"{entry['id']}: {key} {ours:,} vs reference {ref['value']:,} (tolerance {ref['tolerance']:,}; {entry['source']})"
        )
    assert checked, f"{entry['id']} has neither params nor macs"


def test_mobilenet_v1_layer_type_shares(paper_tables):
    """MobileNetV1 Table 2: 1x1 convolutions hold ~95% of the mult-adds and ~75% of the weights."""
    ref = paper_tables["layer_type_shares"]
    with torch.device("meta"):
        model = smallnets.create_model(ref["model"], **ref["kwargs"])
    kinds = smallnets.profile(model, tuple(ref["input_size"]), latency=False, memory=False).by_kind()
    assert set(kinds) == set(ref["mult_adds_percent"])
    for kind, share in ref["mult_adds_percent"].items():
        assert abs(kinds[kind]["macs_percent"] - share) <= ref["tolerance_points"], (kind, kinds[kind])
    for kind, share in ref["params_percent"].items():
        assert abs(kinds[kind]["weights_percent"] - share) <= ref["tolerance_points"], (kind, kinds[kind])


def test_a_clone_without_shared_still_checks_the_paper_figures(tmp_path):
    # the paper tables travel in tests/data: with nothing beside the clone, the entries still run
    # and none is skipped. A few entries stand for all (every entry runs the same code on
    # the same facts file; the full set runs in this suite itself, with or without shared/).
    env = {**os.environ, "SMALLNETS_SHARED": str(tmp_path / "no-shared-here"), "CI": ""}
    ids = ["mobilenet_v1-1.0-224", "squeezenet1_0", "squeezenet1_1"]
    assert set(ids) <= {e["id"] for e in load_facts("paper_tables.json")["entries"]}
    nodes = [f"{Path(__file__).resolve()}::test_paper_table_entry[{i}]" for i in ids]
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-rs", *nodes],
                         capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:]
    assert f"{len(ids)} passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize("name", ["paper_tables.json", "classic_tables.json", "manifests.json", "classic/manifests.json"])
def test_the_facts_in_tests_data_are_the_shared_references(name):
    # tests/data holds copies; when the shared folder is beside the clone, they must not drift apart
    shared = shared_path("reference", name if not name.endswith("manifests.json") else f"interop/{name}")
    assert json.loads(shared.read_text()) == load_facts(name)
