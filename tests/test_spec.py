"""Architectures as values: specs round-trip through JSON, build the zoo's models, and a hand-edited
spec (widths no knob describes, as a pruned model's) trains, saves and reloads from its files alone."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

import smallnets
from smallnets.arch.spec import ArchSpec
from smallnets.registry import model_info

SPEC_MODELS = [n for n in smallnets.list_models() if model_info(n).spec_builder is not None]


@pytest.mark.parametrize("name", SPEC_MODELS)
def test_every_spec_round_trips_through_json_and_builds_the_zoo_model(name):
    spec = smallnets.model_spec(name, num_classes=10)
    again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and type(again) is type(spec)
    with torch.device("meta"):
        built, zoo = smallnets.build_model(again), smallnets.create_model(name, num_classes=10)
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in zoo.state_dict().items()]
    assert zoo.spec == spec and spec.resolution == model_info(name).input_size[1]


def test_scaling_is_a_function_of_the_spec():
    from smallnets.arch.inverted import scale_depth, scale_width

    base = smallnets.model_spec("efficientnet_b0")
    for c in ("efficientnet_b3", "efficientnet_b7"):
        info = model_info(c)
        scaled = scale_width(scale_depth(base, info.fixed["depth_mult"]), info.fixed["width_mult"], neck="expand4")
        assert scaled.stages == smallnets.model_spec(c).stages and scaled.neck_chs == smallnets.model_spec(c).neck_chs


def _custom_v2_dict() -> dict:
    """A MobileNetV2 hand-edited as JSON: widths block by block that no width_mult gives."""
    d = smallnets.model_spec("mobilenet_v2", width_mult=0.35, cifar=True, num_classes=4).to_dict()
    d["stages"][1][0]["hidden_chs"] = 37  # expansion of one block only
    d["stages"][2][1]["hidden_chs"] = 50
    d["stages"][2][2]["hidden_chs"] = 11
    d["stages"][3][0]["out_chs"] = 20  # a stage's width, carried through its shortcut blocks
    for block in d["stages"][3][1:]:
        block.update(in_chs=20, out_chs=20, hidden_chs=44)
    d["stages"][4][0]["in_chs"] = 20
    d["neck_chs"] = 200
    return d


def test_a_hand_edited_spec_trains_saves_and_reloads_from_its_files_alone(tmp_path):
    spec = ArchSpec.from_dict(_custom_v2_dict())
    torch.manual_seed(0)
    model = smallnets.model_from_spec(spec)
    assert model.stages[3][1].expand.conv.weight.shape == (44, 20, 1, 1) and model.neck.conv.out_channels == 200
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3] * 2)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    path = smallnets.save_weights(model.eval(), tmp_path / "custom.safetensors", classes=["a", "b", "c", "d"])
    assert smallnets.read_sidecar(path)["spec"] == spec.to_dict() and smallnets.read_sidecar(path)["model"] is None
    loaded = smallnets.load_weights(path).eval()
    assert loaded.spec == spec
    probe = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(probe), loaded(probe))
    path.with_suffix(".json").unlink()  # the file's own metadata carries the spec too
    with torch.no_grad():
        assert torch.equal(model(probe), smallnets.load_weights(path).eval()(probe))


def test_an_inconsistent_spec_is_refused_naming_the_place():
    d = _custom_v2_dict()
    d["stages"][4][0]["in_chs"] = 24  # stage 3 ends with 20 channels
    with pytest.raises(ValueError, match=r"stages\[4\]\[0\].in_chs must be the previous layer's 20 channels, got 24"):
        ArchSpec.from_dict(d)
    d = _custom_v2_dict()
    d["stages"][3][0]["shortcut"] = True  # a shortcut around a stride-2 block
    with pytest.raises(ValueError, match="a shortcut needs stride 1 and in_chs == out_chs"):
        ArchSpec.from_dict(d)
    d = _custom_v2_dict()
    d["stages"][0][0]["hiden_chs"] = 8
    with pytest.raises(ValueError, match="unknown field 'hiden_chs' for Inverted"):
        ArchSpec.from_dict(d)
    with pytest.raises(ValueError, match="spec type must be one of"):
        ArchSpec.from_dict({**d, "type": "MobileNetV9Spec"})


def test_a_model_whose_spec_does_not_describe_its_weights_is_not_saved(tmp_path):
    model = smallnets.create_model("mobilenet_v2", width_mult=0.35, cifar=True, num_classes=4)
    model.classifier.fc = torch.nn.Linear(model.num_features, 5)  # changed behind the spec's back
    with pytest.raises(ValueError, match=r"model.spec does not describe the model's weights \(first difference: 'classifier.fc"):
        smallnets.save_weights(model, tmp_path / "w.safetensors")
    assert not list(tmp_path.iterdir())


def test_weights_saved_before_specs_still_load(tmp_path):
    # a file as smallnets wrote them before the spec was recorded: name and knobs only
    model = smallnets.create_model("mobilenet_v1", width_mult=0.25, cifar=True, num_classes=3).eval()
    path = smallnets.save_weights(model, tmp_path / "old.safetensors")
    with safetensors.safe_open(path, framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    del metadata["spec"]
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    del sidecar["spec"]
    import hashlib

    sidecar["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    loaded = smallnets.load_weights(path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.spec == model.spec


@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_1", "densenet121", "shufflenet_v2", "xception", "efficientnet_b0"])
def test_the_model_names_its_classifier_layer(name):
    # what a fine-tune replaces for new classes: declared by the model, not guessed from key order
    with torch.device("meta"):
        model = smallnets.create_model(name, num_classes=7)
    prefix = model.classifier_layer()
    assert prefix.startswith("classifier") and model.state_dict()[f"{prefix}.weight"].shape[0] == 7
