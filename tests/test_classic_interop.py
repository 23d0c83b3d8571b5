"""The classic baselines (issue 15): every classic_tables.json figure counted exactly, every
torchvision / timm manifest loading key for key, and the numeric fixtures reproducing their logits."""

from __future__ import annotations

import random

import pytest
import safetensors.torch
import torch

import smallnets
from conftest import load_facts, shared_path
from smallnets.pretrained import convert_state_dict, detect_format, get_format, load_pretrained, read_checkpoint, source_modules

MANIFESTS = load_facts("classic/manifests.json")
FIXTURES = ("torchvision__googlenet", "torchvision__resnet18")
# the shared reference figures (exact, from the reference implementations) and our own entries
# for the networks no reference library ships, from their papers' tables (tolerance of the rounding)
TABLES = load_facts("classic_tables.json")["entries"] + load_facts("classic_tables_added.json")["entries"]
# Issue 15 lands family by family: the reference figures of a family not in the zoo yet are listed
# here, so that the suite says what is missing instead of failing on it; a landed family must not be.
PENDING: set[str] = set()


def _pending(key: str) -> list:
    return [pytest.mark.xfail(reason=f"{key}: its family has not landed in the zoo yet (issue 15)", strict=True)] if key in PENDING else []


@pytest.mark.parametrize("entry", [pytest.param(e, id=e["id"], marks=_pending(e["id"])) for e in TABLES])
def test_classic_table_entry(entry):
    with torch.device("meta"):
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


def _manifest_state(fmt: str) -> dict[str, torch.Tensor]:
    """The format's keys and shapes as meta tensors, shuffled (safetensors files store keys sorted)."""
    items = [(k, torch.empty(shape, dtype=getattr(torch, dtype), device="meta")) for k, shape, dtype in MANIFESTS[fmt]["state_dict"]]
    random.Random(0).shuffle(items)
    return dict(items)


@pytest.mark.parametrize("fmt", [pytest.param(f, id=f, marks=_pending(f)) for f in sorted(MANIFESTS)])
def test_classic_manifests_convert_key_for_key(fmt):
    spec = get_format(fmt)
    src = _manifest_state(fmt)
    order = []
    for key, _, _ in MANIFESTS[fmt]["state_dict"]:
        module = key.rpartition(".")[0]
        if not order or order[-1] != module:
            order.append(module)
    assert [m for m, _ in source_modules(list(src))] == order  # the library's module order, from the key names alone
    with torch.device("meta"):
        model = smallnets.create_model(spec.model, **spec.knobs)
    state, report = convert_state_dict(src, model, strict=True)
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    assert set(state) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == MANIFESTS[fmt]["num_params"]
    if spec.detect:
        assert detect_format(src) == fmt


@pytest.mark.parametrize("fixture", [pytest.param(f, id=f, marks=_pending(f)) for f in FIXTURES])
def test_classic_fixture_logits_match_the_reference(fixture):
    weights = shared_path("reference", "interop", "classic", f"{fixture}.weights.safetensors")
    io = safetensors.torch.load_file(str(weights.parent / f"{fixture}.io.safetensors"))
    fmt = fixture.replace("__", ":")
    assert detect_format(read_checkpoint(weights)) == fmt
    model = load_pretrained(get_format(fmt).model, weights).eval()
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == io["logits"].shape
    assert float((out - io["logits"]).norm() / io["logits"].norm()) < 1e-4
    assert model.smallnets_meta["load_report"]["missing"] == [] and model.smallnets_meta["load_report"]["unexpected"] == []


def test_the_classic_fixture_list_is_what_shared_holds():
    folder = shared_path("reference", "interop", "classic", "manifests.json").parent
    assert sorted(FIXTURES) == sorted(p.name.removesuffix(".weights.safetensors") for p in folder.glob("*.weights.safetensors"))
