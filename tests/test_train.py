"""The trainer on real image files: run directory, resume == uninterrupted, signals, NaN, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import smallnets
from smallnets.training import RunConfig, Trainer, TrainingDiverged

CLASSES = ("circle", "square", "stripes", "dots")


def make_image_folder(root: Path, per_class: int = 12, size: int = 16, seed: int = 0) -> Path:
    """A learnable 4-class set: each class has its own colour pattern plus noise, saved as PNG."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., c % 3] += 150
            if c == 3:
                img[::2, ::2] = 255
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes")


def run_config(data: Path, out: Path, **train) -> RunConfig:
    base = {
        "model": {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True, "drop_rate": 0.2},
        "data": {"path": str(data), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(out / "cache")},
        "train": {"epochs": 2, "lr": 0.05, "precision": "fp32", "progress": False, "out": str(out), "warmup_epochs": 0.5, **train},
    }
    return RunConfig.from_dict(base)


def test_run_directory_holds_everything(images, tmp_path):
    trainer = Trainer(run_config(images, tmp_path, name="full", ema=True, label_smoothing=0.1))
    result = trainer.fit()
    run = result.run_dir
    assert result.status == "finished" and result.epochs_done == 2
    for name in ("config.json", "run.json", "split.json", "shards.json", "metrics.jsonl", "metrics.csv", "curves.png",
                 "last.safetensors", "last.json", "best.safetensors", "best.json", "state.safetensors"):  # fmt: skip
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["val_top1"] <= 100 and r["images_per_s"] > 0 for r in records)
    csv = (run / "metrics.csv").read_text().splitlines()
    assert csv[0].startswith("epoch,step,lr,train_loss") and len(csv) == 3
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["classes"] == sorted(CLASSES) and config["model"]["width_mult"] == 0.25
    sidecar = json.loads((run / "last.json").read_text())
    assert sidecar["model"] == "mobilenet_v1" and sidecar["classes"] == sorted(CLASSES)
    assert sidecar["preprocessing"]["mean"] and sidecar["num_classes"] == 4
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    # the saved weights rebuild a model that validates exactly as the trainer's EMA model did
    model = smallnets.load_weights(run / "last.safetensors")
    assert smallnets.count_params(model) == smallnets.count_params(trainer.model)
    result_again = smallnets.evaluate(model, trainer.data.val, 4, device="cpu", channels_last=True)
    assert result_again.top1 == pytest.approx(records[-1]["val_top1"])


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last.safetensors"))


def _comparable(records):
    drop = {"images_per_s", "epoch_s", "elapsed_s", "wall_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_resume_mid_epoch_equals_uninterrupted(images, tmp_path):
    knobs = {"ema": True, "mixup": 0.4, "cutmix": 1.0, "mix_prob": 0.7, "epochs": 3}
    straight = Trainer(run_config(images, tmp_path, name="straight", **knobs)).fit()
    first = Trainer(run_config(images, tmp_path, name="split", **knobs))
    paused = first.fit(max_steps=first.steps_per_epoch + 2)  # stops inside the second epoch
    assert paused.status == "paused" and first.epoch == 1 and first.batch == 2
    resumed = Trainer.resume(paused.run_dir).fit()
    assert resumed.status == "finished"
    a, b = _final_weights(straight.run_dir), _final_weights(resumed.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = [json.loads(x) for x in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert _comparable(ha) == _comparable(hb)
    # wall time counts validation and saving on top of training time, and carries over the resume
    walls = [r["wall_s"] for r in hb]
    assert walls == sorted(walls) and all(r["wall_s"] >= r["elapsed_s"] for r in hb)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(images, tmp_path):
    trainer = Trainer(run_config(images, tmp_path, name="nan", epochs=3))
    trainer.fit(max_steps=trainer.steps_per_epoch + 1)  # one whole epoch: checkpoint written
    good = (trainer.run_dir / "last.safetensors").read_bytes()
    trainer.base_lr = 1e30  # what a wildly wrong --lr does
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf).*last good checkpoint"):
        trainer.fit()
    assert (trainer.run_dir / "last.safetensors").read_bytes() == good
    assert json.loads((trainer.run_dir / "run.json").read_text())["status"] == "diverged"


def test_bad_inputs_fail_before_training(images, tmp_path):
    with pytest.raises(ValueError, match="model name must be a registered model.*did you mean 'mobilenet_v2'"):
        Trainer(RunConfig.from_dict({"model": {"name": "mobilenet_v3"}, "data": {"path": str(images)}}))
    with pytest.raises(ValueError, match="batch_size=4096 with drop_last=True leaves no training batch"):
        Trainer(RunConfig.from_dict({
            "model": {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True},
            "data": {"path": str(images), "batch_size": 4096, "drop_last": True, "pipeline": "tensor", "cache_dir": str(tmp_path / "c")},
            "train": {"progress": False, "out": str(tmp_path)},
        }))  # fmt: skip
    with pytest.raises(ValueError, match="unknown knob 'widht_mult'"):
        Trainer(RunConfig.from_dict({"model": {"name": "mobilenet_v1", "widht_mult": 0.5}, "data": {"path": str(images), "pipeline": "tensor", "cache_dir": str(tmp_path / "c")}, "train": {"progress": False, "out": str(tmp_path)}}))


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "smallnets", *args], capture_output=True, text=True, timeout=300, **kw)


def test_sigint_saves_and_resume_finishes_the_same_run(images, tmp_path):
    common = ["--data", str(images), "--batch-size", "8", "--val-fraction", "0.25", "--pipeline", "tensor",
              "--cache-dir", str(tmp_path / "cache"), "--epochs", "3", "--lr", "0.05", "--precision", "fp32",
              "--out", str(tmp_path), "--width-mult", "0.25", "--cifar", "--warmup-epochs", "0.5"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "smallnets", "train", "mobilenet_v1", *common, "--name", "sig"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    run = tmp_path / "sig"
    deadline = time.time() + 120
    while not (run / "run.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    status = json.loads((run / "run.json").read_text())["status"]
    if proc.returncode == 0:  # the whole run finished before the signal landed: nothing to resume
        pytest.skip(f"run finished before SIGINT arrived ({status})")
    assert proc.returncode == 130, err
    assert status == "interrupted" and "resume" in err
    assert (run / "state.safetensors").is_file()
    done = _cli("train", "--resume", str(run), "--progress", "false")
    assert done.returncode == 0, done.stderr
    assert "finished: 3 epoch(s)" in done.stdout
    reference = _cli("train", "mobilenet_v1", *common, "--name", "ref", "--progress", "false")
    assert reference.returncode == 0, reference.stderr
    a, b = _final_weights(run), _final_weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


# (Once about 1 run in 10 on a loaded 2-core machine ended with one rank aborting at exit; since the
# barrier before the process group is destroyed, 70 runs under load passed.)
@pytest.mark.skipif(not shutil.which("torchrun"), reason="torchrun not on PATH")
def test_torchrun_two_processes(images, tmp_path):
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "smallnets", "train", "mobilenet_v1",
           "--data", str(images), "--batch-size", "4", "--val-fraction", "0.25", "--pipeline", "tensor",
           "--cache-dir", str(tmp_path / "cache"), "--epochs", "2", "--lr", "0.05", "--precision", "fp32",
           "--out", str(tmp_path / "runs"), "--name", "ddp", "--width-mult", "0.25", "--cifar",
           "--progress", "false", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["ddp"]  # one run directory, written by rank 0
    shards = json.loads((runs[0] / "shards.json").read_text())["ranks"]
    assert [s["rank"] for s in shards] == [0, 1]
    a, b = set(shards[0]["indices"]), set(shards[1]["indices"])
    assert a and b and not (a & b)  # disjoint shards
    info = json.loads((runs[0] / "run.json").read_text())
    assert info["status"] == "finished" and info["environment"]["world_size"] == 2
    assert info["replicas_identical"] is True and len(info["replica_weights_sha256"]) == 2
    assert done.stdout.count("finished:") == 1  # rank 0 alone reports
