"""Every entry of ../shared/reference/paper_tables.json: our params and MACs against the papers'."""

from __future__ import annotations

import json

import pytest
import torch

import smallnets
from conftest import SHARED


def _entries():
    path = SHARED / "reference" / "paper_tables.json"
    if not path.exists():
        return [pytest.param(None, id="paper_tables.json-missing")]
    return [pytest.param(e, id=e["id"]) for e in json.loads(path.read_text())["entries"]]


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
