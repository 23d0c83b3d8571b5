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


@pytest.mark.parametrize("entry", [pytest.param(e, id=e["id"]) for e in TABLES])
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


@pytest.mark.parametrize("fmt", sorted(MANIFESTS))
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


@pytest.mark.parametrize("fixture", FIXTURES)
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


# torchvision's InceptionAux heads, as its published files hold them (googlenet.py / inception.py: aux1 / aux2
# after inception4a / 4d, AuxLogits after Mixed_6e; BasicConv2d = conv + bn, fc1 / fc2 or fc)
def _bn(prefix: str, chs: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (chs,), f"{prefix}.bias": (chs,), f"{prefix}.running_mean": (chs,), f"{prefix}.running_var": (chs,),
            f"{prefix}.num_batches_tracked": ()}  # fmt: skip


GOOGLENET_AUX = {
    **{k: v for aux, chs in (("aux1", 512), ("aux2", 528)) for k, v in {
        f"{aux}.conv.conv.weight": (128, chs, 1, 1), **_bn(f"{aux}.conv.bn", 128), f"{aux}.fc1.weight": (1024, 2048), f"{aux}.fc1.bias": (1024,),
        f"{aux}.fc2.weight": (1000, 1024), f"{aux}.fc2.bias": (1000,)}.items()},
}  # fmt: skip
INCEPTION_V3_AUX = {"AuxLogits.conv0.conv.weight": (128, 768, 1, 1), **_bn("AuxLogits.conv0.bn", 128), "AuxLogits.conv1.conv.weight": (768, 128, 5, 5),
                    **_bn("AuxLogits.conv1.bn", 768), "AuxLogits.fc.weight": (1000, 768), "AuxLogits.fc.bias": (1000,)}  # fmt: skip


def test_published_files_with_auxiliary_heads_are_detected_and_load_without_them(tmp_path):
    # the numeric fixture with torchvision's auxiliary heads added, saved as torch.save writes a published .pth
    weights = shared_path("reference", "interop", "classic", "torchvision__googlenet.weights.safetensors")
    io = safetensors.torch.load_file(str(weights.parent / "torchvision__googlenet.io.safetensors"))
    src = read_checkpoint(weights)
    num_classes = io["logits"].shape[1]
    gen = torch.Generator().manual_seed(0)
    aux = {k: torch.randn(shape, generator=gen) if shape else torch.tensor(0) for k, shape in GOOGLENET_AUX.items()}
    aux = {k: (v[:num_classes] if k.endswith(("fc2.weight", "fc2.bias")) else v) for k, v in aux.items()}
    path = tmp_path / "googlenet-with-aux.pth"
    torch.save({**src, **aux}, path)
    assert detect_format(read_checkpoint(path)) == "torchvision:googlenet"
    model = load_pretrained("googlenet", path).eval()
    report = model.smallnets_meta["load_report"]
    assert report["dropped"] == sorted(GOOGLENET_AUX) and report["unexpected"] == [] and report["missing"] == []
    with torch.no_grad():
        out = model(io["input"])
    assert float((out - io["logits"]).norm() / io["logits"].norm()) < 1e-4
    # Inception v3's AuxLogits, from the key / shape manifest
    inc = {**_manifest_state("torchvision:inception_v3"), **{k: torch.empty(v, device="meta") for k, v in INCEPTION_V3_AUX.items()}}
    assert detect_format(inc) == "torchvision:inception_v3"
    assert get_format("torchvision:inception_v3").kept(inc)[1] == sorted(INCEPTION_V3_AUX)
    # what the formats table publishes for both
    for name, file in (("googlenet", "googlenet-1378be20.pth"), ("inception_v3", "inception_v3_google-0cc3c7bd.pth")):
        assert get_format(f"torchvision:{name}").url == f"https://download.pytorch.org/models/{file}"
