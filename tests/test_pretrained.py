"""Pretrained checkpoints: the reference fixtures reproduce their logits; every manifest format loads."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import safetensors.torch
import torch

import smallnets
from smallnets.pretrained import (
    FORMATS,
    PretrainedMismatch,
    convert_state_dict,
    detect_format,
    get_format,
    imagenet_classes,
    load_pretrained,
    read_checkpoint,
    source_modules,
)

from conftest import SHARED, load_facts

# the key/shape manifests are facts in tests/data; the numeric fixtures are binaries in ../shared,
# and the tests that read them ask for the interop_fixtures fixture (skips with how to get them)
MANIFESTS = load_facts("manifests.json")
INTEROP = SHARED / "reference" / "interop"
FIXTURES = sorted(f"{fmt.replace(':', '__')}" for fmt in ("timm:legacy_xception", "timm:mobilenetv1_100", "torchvision:densenet121",
                  "torchvision:efficientnet_b0", "torchvision:mobilenet_v2", "torchvision:shufflenet_v2_x0_5", "torchvision:squeezenet1_1"))  # fmt: skip


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


@pytest.mark.usefixtures("interop_fixtures")
@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_logits_match_the_reference(fixture):
    fmt = fixture.replace("__", ":")
    weights = INTEROP / f"{fixture}.weights.safetensors"
    io = safetensors.torch.load_file(str(INTEROP / f"{fixture}.io.safetensors"))
    # the format is detected from the keys alone (tf_ variants aside, which must be named)
    src = read_checkpoint(weights)
    assert detect_format(src) == fmt
    model = load_pretrained(get_format(fmt).model, weights).eval()
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == io["logits"].shape
    assert _rel(out, io["logits"]) < 1e-4
    assert model.smallnets_meta["pretrained"]["format"] == fmt
    assert model.smallnets_meta["load_report"]["missing"] == [] and model.smallnets_meta["load_report"]["unexpected"] == []


def _manifest_state(fmt: str) -> dict[str, torch.Tensor]:
    """The format's keys and shapes as meta tensors, in a shuffled order (safetensors files store keys sorted)."""
    items = [(k, torch.empty(shape, dtype=getattr(torch, dtype), device="meta")) for k, shape, dtype in MANIFESTS[fmt]["state_dict"]]
    random.Random(0).shuffle(items)
    return dict(items)


@pytest.mark.parametrize("fmt", sorted(MANIFESTS))
def test_manifest_formats_convert_key_for_key(fmt):
    spec = get_format(fmt)
    src = _manifest_state(fmt)
    # the library's module order is recovered from the key names alone
    order = []
    for key, _, _ in MANIFESTS[fmt]["state_dict"]:
        module = key.rpartition(".")[0]
        if not order or order[-1] != module:
            order.append(module)
    assert [m for m, _ in source_modules(list(src))] == order
    with torch.device("meta"):
        model = smallnets.create_model(spec.model, **spec.knobs)
    state, report = convert_state_dict(src, model, strict=True)
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    assert set(state) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == MANIFESTS[fmt]["num_params"]
    if spec.detect:
        assert detect_format(src) == fmt


def _timm_mobilenetv2_layout(width: float, depth: float = 1.0, fix_stem_head: bool = False) -> list[tuple[str, list[int]]]:
    """timm's MobileNetV2 state-dict keys and shapes, derived from timm's own rules (independently of smallnets):
    channels ``max(8, int(c * m + 4) // 8 * 8)`` (+8 below 90%), stage depth ``ceil(r * depth)``, and with
    ``fix_stem_head`` the stem (32), head (1280) and the first / last stages' depth unscaled."""

    def rc(c):
        new = max(8, int(c * width + 4) // 8 * 8)
        return new + 8 if new < 0.9 * c * width else new

    def bn(name, c):
        return [(f"{name}.{k}", [c]) for k in ("weight", "bias", "running_mean", "running_var")] + [(f"{name}.num_batches_tracked", [])]

    arch = [(1, 16, 1), (2, 24, 6), (3, 32, 6), (4, 64, 6), (3, 96, 6), (3, 160, 6), (1, 320, 6)]  # (repeats, channels, expansion)
    chs = 32 if fix_stem_head else rc(32)
    out = [("conv_stem.weight", [chs, 3, 3, 3]), *bn("bn1", chs)]
    for i, (r, c, e) in enumerate(arch):
        reps = r if fix_stem_head and i in (0, len(arch) - 1) else math.ceil(r * depth)
        for j in range(reps):
            p, o = f"blocks.{i}.{j}", rc(c)
            if e == 1:
                out += [(f"{p}.conv_dw.weight", [chs, 1, 3, 3]), *bn(f"{p}.bn1", chs), (f"{p}.conv_pw.weight", [o, chs, 1, 1]), *bn(f"{p}.bn2", o)]
            else:
                mid = chs * e
                out += [(f"{p}.conv_pw.weight", [mid, chs, 1, 1]), *bn(f"{p}.bn1", mid), (f"{p}.conv_dw.weight", [mid, 1, 3, 3]),
                        *bn(f"{p}.bn2", mid), (f"{p}.conv_pwl.weight", [o, mid, 1, 1]), *bn(f"{p}.bn3", o)]  # fmt: skip
            chs = o
    head = 1280 if fix_stem_head else max(1280, rc(1280))
    return out + [("conv_head.weight", [head, chs, 1, 1]), *bn("bn2", head), ("classifier.weight", [1000, head]), ("classifier.bias", [1000])]


@pytest.mark.parametrize(("fmt", "published_params"), [("timm:mobilenetv2_110d", 4.52e6), ("timm:mobilenetv2_120d", 5.83e6)])
def test_timm_depth_scaled_mobilenetv2_loads_key_for_key(fmt, published_params):
    # the layout rules reproduce the manifest's timm MobileNetV2s exactly, so they are trusted for 110d / 120d
    for name, width in (("timm:mobilenetv2_100", 1.0), ("timm:mobilenetv2_140", 1.4), ("timm:mobilenetv2_050", 0.5)):
        assert [(k, list(shape)) for k, shape, _ in MANIFESTS[name]["state_dict"]] == _timm_mobilenetv2_layout(width)
    spec = get_format(fmt)
    layout = _timm_mobilenetv2_layout(spec.knobs["width_mult"], spec.knobs["depth_mult"], fix_stem_head=True)
    items = [(k, torch.empty(shape, dtype=torch.int64 if k.endswith("tracked") else torch.float32, device="meta")) for k, shape in layout]
    random.Random(0).shuffle(items)
    src = dict(items)
    with torch.device("meta"):
        model = smallnets.create_model(spec.model, **spec.knobs)
    _, report = convert_state_dict(src, model, strict=True)
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(math.prod(s) for k, s in layout if not k.endswith(("running_mean", "running_var", "tracked")))
    assert abs(params - published_params) < 0.005e6  # timm's model card, rounded to 10k
    assert detect_format(src) == fmt
    assert spec.url and spec.url.endswith(".pth")


def test_a_checkpoint_for_another_model_is_refused_with_the_first_divergence():
    src = _manifest_state("torchvision:mobilenet_v2")
    with torch.device("meta"):
        model = smallnets.create_model("mobilenet_v2", width_mult=1.4)
    with pytest.raises(PretrainedMismatch, match=r"shape mismatch \(\d+\): stem.conv.weight"):
        convert_state_dict(src, model, strict=True)
    with torch.device("meta"):
        other = smallnets.create_model("shufflenet_v2")
    with pytest.raises(PretrainedMismatch, match=r"module \d+: checkpoint 'classifier.1' has \['bias', 'weight'\], model 'stages"):
        convert_state_dict(src, other)


def test_tf_variants_are_named_not_detected():
    assert not FORMATS["timm:tf_efficientnet_b0"].detect
    assert FORMATS["timm:tf_efficientnet_b0"].knobs == {"same_padding": True, "bn_eps": 1e-3}


def test_imagenet_classes_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet tissue"


# ------------------------------------------------------------------------------------------------
# Fine-tuning, conversion and prediction from the command line

SQUEEZE = INTEROP / "torchvision__squeezenet1_1.weights.safetensors"


def _tiny_run(tmp_path, model="squeezenet1_1", **train):
    from test_train import make_image_folder

    from smallnets.training import RunConfig, Trainer

    data = make_image_folder(tmp_path / "shapes", per_class=8, size=64)
    raw = {
        "model": {"name": model},
        "data": {"path": str(data), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": 1, "lr": 0.01, "precision": "fp32", "progress": False, "out": str(tmp_path), "pretrained": str(SQUEEZE), **train},
    }
    return Trainer(RunConfig.from_dict(raw))


@pytest.mark.usefixtures("interop_fixtures")
def test_linear_probe_trains_only_the_new_classifier(tmp_path):
    trainer = _tiny_run(tmp_path, name="probe", freeze="backbone")
    reference = load_pretrained("squeezenet1_1", SQUEEZE).state_dict()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    # the backbone arrives with the checkpoint's weights; the 4-class classifier is new
    assert all(torch.equal(before[k], reference[k]) for k in reference if not k.startswith("classifier"))
    assert before["classifier.conv10.conv.weight"].shape[0] == 4
    result = trainer.fit()
    after = trainer.model.state_dict()
    backbone = [k for k in after if not k.startswith("classifier")]
    assert all(torch.equal(after[k], before[k]) for k in backbone)  # weights and BN statistics alike
    assert not torch.equal(after["classifier.conv10.conv.weight"], before["classifier.conv10.conv.weight"])
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["pretrained"]["format"] == "torchvision:squeezenet1_1"
    assert info["pretrained"]["reinitialised"] == ["classifier.conv10.conv.weight", "classifier.conv10.conv.bias"]
    # inputs are normalised as the checkpoint was trained (not with the data set's own statistics),
    # and the run's config and the deployable weights' sidecar say so
    imagenet = get_format("torchvision:squeezenet1_1").preprocessing
    assert trainer.data.preprocessing["mean"] == list(imagenet["mean"]) and trainer.data.preprocessing["std"] == list(imagenet["std"])
    assert json.loads((result.run_dir / "config.json").read_text())["data"]["mean"] == list(imagenet["mean"])
    assert json.loads((result.run_dir / "last.json").read_text())["preprocessing"]["std"] == list(imagenet["std"])


@pytest.mark.usefixtures("interop_fixtures")
def test_fine_tune_normalisation_follows_the_checkpoint_unless_given(tmp_path):
    from smallnets.data import DataConfig

    mv1 = INTEROP / "timm__mobilenetv1_100.weights.safetensors"  # timm's MobileNetV1: mean = std = 0.5
    trainer = _tiny_run(tmp_path, "mobilenet_v1", name="mv1", pretrained=str(mv1))
    assert trainer.data.preprocessing["mean"] == [0.5] * 3 == trainer.data.preprocessing["std"]
    plain = _tiny_run(tmp_path, name="plain", pretrained=None)  # no checkpoint: the data set's own statistics
    assert plain.data.preprocessing["mean"] != [0.5] * 3 and plain.config.data.mean is None
    given = DataConfig(path=str(tmp_path / "shapes"), mean=(0.4, 0.4, 0.4), std=[0.2, 0.2, 0.2])
    assert given.std == (0.2, 0.2, 0.2)
    for bad, match in (({"std": (0.2, 0.0, 0.2), "mean": (0, 0, 0)}, "std must be three numbers > 0"),
                       ({"mean": (0.5, 0.5)}, "mean must be three numbers"), ({"mean": (0.5, 0.5, 0.5)}, "mean and std must be given together")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            DataConfig(path="x", **bad)


@pytest.mark.usefixtures("interop_fixtures")
def test_backbone_learning_rate_scale_and_stage_freezing(tmp_path):
    trainer = _tiny_run(tmp_path, name="scaled", backbone_lr_scale=0.1, freeze="stages.0")
    trainer.fit(max_steps=1)
    lrs = sorted({round(g["lr"] / trainer.base_lr, 6) for g in trainer.optimizer.param_groups if g["lr"] > 0})
    assert lrs[-1] == pytest.approx(10 * lrs[0])
    frozen = [n for n, p in trainer.model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("stem.", "stages.0.")) for n in frozen)
    with pytest.raises(ValueError, match="freeze must be 'backbone', 'stem' or one of stages.0"):
        _tiny_run(tmp_path, name="bad", freeze="stages.99")


@pytest.mark.usefixtures("interop_fixtures")
def test_fine_tune_from_a_smallnets_run(tmp_path):
    import shutil

    from smallnets.data.download import ChecksumError

    scratch = _tiny_run(tmp_path, name="first", pretrained=None)  # 4 classes, trained from scratch
    first = scratch.fit()
    model = load_pretrained(None, first.run_dir)  # a run directory: its best weights, model and knobs from the sidecar
    assert type(model).__name__ == "SqueezeNet" and model.smallnets_meta["pretrained"]["format"] == "smallnets"
    assert model.smallnets_meta["classes"] == scratch.classes and len(scratch.classes) == 4
    saved = smallnets.load_weights(first.run_dir).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    # a new task with 3 of the classes: the classifier is new, everything else is the run's
    three = tmp_path / "three"
    shutil.copytree(tmp_path / "shapes", three)
    shutil.rmtree(three / sorted(p.name for p in three.iterdir())[-1])
    from smallnets.training import RunConfig, Trainer

    raw = {"model": {"name": "squeezenet1_1"},
           "data": {"path": str(three), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(tmp_path / "cache")},
           "train": {"epochs": 1, "lr": 0.01, "precision": "fp32", "progress": False, "out": str(tmp_path), "name": "second",
                     "pretrained": str(first.run_dir / "last.safetensors")}}  # fmt: skip
    trainer = Trainer(RunConfig.from_dict(raw))
    assert trainer.pretrained_report["format"] == "smallnets"
    assert trainer.pretrained_report["reinitialised"] == ["classifier.conv10.conv.weight", "classifier.conv10.conv.bias"]
    last = smallnets.load_weights(first.run_dir / "last.safetensors").state_dict()
    assert all(torch.equal(trainer.model.state_dict()[k], last[k]) for k in last if not k.startswith("classifier"))
    # the first run's normalisation carries over
    assert trainer.data.preprocessing["mean"] == json.loads((first.run_dir / "last.json").read_text())["preprocessing"]["mean"]
    # a changed file is caught by the sidecar's digest; a torchvision format name contradicts it
    with pytest.raises(ValueError, match="contradicts"):
        load_pretrained(None, first.run_dir, format="torchvision:squeezenet1_1")
    tampered = tmp_path / "tampered"
    shutil.copytree(first.run_dir, tampered)
    with open(tampered / "best.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ChecksumError, match="does not match"):
        load_pretrained(None, tampered)


@pytest.mark.usefixtures("interop_fixtures")
def test_convert_then_predict_from_the_command_line(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    out = tmp_path / "mv2.safetensors"
    weights = INTEROP / "torchvision__mobilenet_v2.weights.safetensors"
    done = subprocess.run([sys.executable, "-m", "smallnets", "convert", str(weights), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torchvision:mobilenet_v2 -> mobilenet_v2" in done.stdout
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["preprocessing"]["crop"] == 224 and sidecar["extra"]["pretrained"]["format"] == "torchvision:mobilenet_v2"
    # the converted file gives the reference logits through load_weights
    io = safetensors.torch.load_file(str(INTEROP / "torchvision__mobilenet_v2.io.safetensors"))
    model = smallnets.load_weights(out).eval()
    with torch.no_grad():
        assert _rel(model(io["input"]), io["logits"]) < 1e-4
    img = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((300, 260, 3)) * 255).astype(np.uint8)).save(img)
    done = subprocess.run([sys.executable, "-m", "smallnets", "predict", "--pretrained", str(weights), "mobilenet_v2", str(img), "--top-k", "3", "--json"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    preds = json.loads(done.stdout)[0]["predictions"]
    assert len(preds) == 3 and sum(p["probability"] for p in preds) <= 1.0
    # refusals name the problem
    bad = subprocess.run([sys.executable, "-m", "smallnets", "convert", str(weights), str(tmp_path / "x.safetensors"), "--model", "shufflenet_v2"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "does not fit the model ShuffleNetV2" in bad.stderr


@pytest.mark.usefixtures("interop_fixtures")
def test_profile_a_checkpoint_from_the_command_line():
    import subprocess
    import sys

    weights = INTEROP / "timm__mobilenetv1_100.weights.safetensors"
    done = subprocess.run([sys.executable, "-m", "smallnets", "profile", "--pretrained", str(weights), "--json", "--no-latency", "--no-memory"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "timm:mobilenetv1_100 -> mobilenet_v1" in done.stderr
    assert report["input_size"] == [3, 224, 224]  # the format's published crop
    with torch.device("meta"):
        model = smallnets.create_model("mobilenet_v1", num_classes=read_checkpoint(weights)["classifier.weight"].shape[0])
    assert report["params"] == sum(p.numel() for p in model.parameters())
    done = subprocess.run([sys.executable, "-m", "smallnets", "profile", "mobilenet_v2", "--pretrained", str(weights), "--no-latency"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "does not fit the model MobileNetV2" in done.stderr
    done = subprocess.run([sys.executable, "-m", "smallnets", "profile"], capture_output=True, text=True)
    assert done.returncode == 2 and "profile needs a zoo model name" in done.stderr


@pytest.fixture
def weights_server(interop_fixtures):
    import hashlib
    import threading
    from http.server import ThreadingHTTPServer

    from test_data import _RangeHandler

    payload = (INTEROP / "torchvision__squeezenet1_1.weights.safetensors").read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.payload, httpd.ranges = payload, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/squeezenet1_1.safetensors"
    httpd.sha256 = hashlib.sha256(payload).hexdigest()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_url_sources_download_once_verify_and_work_offline(tmp_path, weights_server):
    from smallnets.data.download import ChecksumError

    cache = tmp_path / "cache"
    model = load_pretrained("squeezenet1_1", weights_server.url, sha256=weights_server.sha256, cache_dir=cache, progress=False)
    assert model.smallnets_meta["pretrained"]["format"] == "torchvision:squeezenet1_1"
    assert len(weights_server.ranges) == 1
    # cached: offline mode and a second load make no request
    load_pretrained("squeezenet1_1", weights_server.url, sha256=weights_server.sha256, cache_dir=cache, offline=True, progress=False)
    assert len(weights_server.ranges) == 1
    with pytest.raises(FileNotFoundError, match="offline: .* is not in the cache"):
        load_pretrained("squeezenet1_1", weights_server.url + "?v=2", cache_dir=cache, offline=True)
    with pytest.raises(ChecksumError):
        load_pretrained("squeezenet1_1", weights_server.url, sha256="0" * 64, cache_dir=tmp_path / "other", progress=False)
    assert not list((tmp_path / "other").glob("*.safetensors"))  # a file that fails its checksum is never kept
    with pytest.raises(ValueError, match="sha256 must be 64 lowercase hex digits"):
        load_pretrained("squeezenet1_1", weights_server.url, sha256="abc", cache_dir=cache)


@pytest.mark.usefixtures("interop_fixtures")
def test_pth_files_load_without_unpickling_code(tmp_path):
    src = read_checkpoint(SQUEEZE)
    good = tmp_path / "squeezenet1_1.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}}, good)  # wrapped, DataParallel prefix
    assert set(read_checkpoint(good)) == set(src)

    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    evil = tmp_path / "evil.pth"
    torch.save({"weights": Payload()}, evil)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        read_checkpoint(evil)


def test_hub_style_names_are_checked_against_their_sha256_prefix(tmp_path, weights_server):
    from smallnets.data.download import ChecksumError

    right = f"{weights_server.url.rsplit('/', 1)[0]}/squeezenet1_1-{weights_server.sha256[:8]}.safetensors"
    wrong = f"{weights_server.url.rsplit('/', 1)[0]}/squeezenet1_1-deadbeef.safetensors"
    assert load_pretrained("squeezenet1_1", right, cache_dir=tmp_path, progress=False).smallnets_meta["load_report"]["missing"] == []
    with pytest.raises(ChecksumError, match="does not start with deadbeef"):
        load_pretrained("squeezenet1_1", wrong, cache_dir=tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if "deadbeef" in p.name]  # the bad download is not kept


@pytest.mark.usefixtures("interop_fixtures")
def test_torchvision_legacy_densenet_keys_load(tmp_path):
    weights = INTEROP / "torchvision__densenet121.weights.safetensors"
    src = read_checkpoint(weights)
    legacy = {re.sub(r"(denselayer\d+\.)(norm|conv)([12])\.", r"\1\2.\3.", k): v for k, v in src.items()}
    assert any(".norm.1." in k for k in legacy)
    path = tmp_path / "densenet121-legacy.pth"
    torch.save(legacy, path)
    io = safetensors.torch.load_file(str(INTEROP / "torchvision__densenet121.io.safetensors"))
    model = load_pretrained("densenet121", path).eval()
    with torch.no_grad():
        assert _rel(model(io["input"]), io["logits"]) < 1e-4


@pytest.mark.usefixtures("interop_fixtures")
def test_a_format_name_alone_means_its_published_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"offline: https://download.pytorch.org/models/mobilenet_v2-b0353104.pth is not in the cache"):
        load_pretrained(None, "torchvision:mobilenet_v2", cache_dir=tmp_path, offline=True)
    with pytest.raises(ValueError, match="no published URL is known for timm:mobilenetv1_100"):
        load_pretrained(None, "timm:mobilenetv1_100", cache_dir=tmp_path, offline=True)
    with pytest.raises(ValueError, match="format must be one of the known checkpoint formats"):
        load_pretrained(None, SQUEEZE, format="torchvision:squeezenet9")


def test_list_formats_from_the_command_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "smallnets", "list", "--formats", "--json", "timm:tf_efficientnet_b*"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["format"] for r in rows] == [f"timm:tf_efficientnet_b{i}" for i in range(8)]
    assert all(r["knobs"] == {"same_padding": True, "bn_eps": 1e-3} and not r["detected"] for r in rows)
    assert rows[3]["preprocessing"]["crop"] == 300 and rows[3]["preprocessing"]["resize"] == 331  # timm: floor(300 / 0.904)


def test_the_fixture_list_is_what_shared_holds(interop_fixtures):
    assert FIXTURES == sorted(p.name.removesuffix(".weights.safetensors") for p in interop_fixtures.glob("*.weights.safetensors"))


def test_a_cache_folder_under_home_is_expanded(tmp_path, monkeypatch):
    from smallnets.pretrained.download import fetch_checkpoint

    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "models"))):
        fetch_checkpoint("https://example.org/w/net-0123abcd.pth", cache_dir="~/models", offline=True)
    assert not (tmp_path / "~").exists()
