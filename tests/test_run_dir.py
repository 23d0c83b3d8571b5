"""Run directories: names stay inside out/, one process at a time owns a run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smallnets.training import RunConfig, TrainConfig, Trainer
from test_train import make_image_folder, run_config


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)


@pytest.mark.parametrize("name", ["../../escape", "..", ".", "", "/tmp/abs", "a/b", "a\\b", "nul\0byte"])
def test_a_run_name_is_one_path_component(name):
    with pytest.raises(ValueError) as err:
        TrainConfig(name=name)
    message = str(err.value)
    assert message.startswith("name must be a single folder name") and repr(name) in message


def test_good_names_and_the_config_file_route(tmp_path):
    for name in ("demo", "run-1.2_b", "a b", "..x"):
        assert TrainConfig(name=name).name == name
    with pytest.raises(ValueError, match=r"name must be a single folder name.*got '\.\./up'"):
        RunConfig.from_dict({"model": {"name": "mobilenet_v1"}, "data": {"path": "x"}, "train": {"name": "../up"}})


def test_cli_refuses_an_escaping_name_and_writes_nothing(images, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, "-m", "smallnets", "train", "mobilenet_v1", "--data", str(images), "--pipeline", "tensor",
                          "--cache-dir", str(tmp_path / "cache"), "--epochs", "1", "--name", "../../escape"],  # fmt: skip
                         cwd=work, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 2 and "name must be a single folder name" in res.stderr and "'../../escape'" in res.stderr
    assert "Traceback" not in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["work"] and not any(work.iterdir())  # no cache, no runs, no escape


def test_an_explicit_run_dir_is_used_as_given(images, tmp_path):
    where = tmp_path / "elsewhere" / "my run"
    trainer = Trainer(run_config(images, tmp_path / "runs", name="ignored", epochs=1), run_dir=where)
    result = trainer.fit(max_steps=1)
    assert result.run_dir == where and (where / "state.safetensors").is_file() and not (tmp_path / "runs" / "ignored").exists()
    assert json.loads((where / "run.json").read_text())["status"] == "paused"


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_a_run_directory_in_use_cannot_be_claimed_again(images, tmp_path):
    first = Trainer(run_config(images, tmp_path, name="same", epochs=1))
    run = first.run_dir
    before = _snapshot(run)
    with pytest.raises(FileExistsError, match=rf"run directory '{run}' is in use by process {os.getpid()} on "):
        Trainer(run_config(images, tmp_path, name="same", epochs=1, lr=0.01))
    assert _snapshot(run) == before  # the loser wrote nothing
    assert first.fit().status == "finished"  # the owner is unaffected; its claim ends with fit()
    assert not (run / ".lock").exists()
    with pytest.raises(FileExistsError, match="already holds a run; use --resume"):
        Trainer(run_config(images, tmp_path, name="same", epochs=1))
    # a resumed run claims the directory as well: two resumes cannot run at once
    resumed = Trainer.resume(run, epochs=2)
    with pytest.raises(FileExistsError, match="is in use by process"):
        Trainer.resume(run, epochs=2)
    assert resumed.fit().status == "finished" and not (run / ".lock").exists()


def test_two_processes_with_the_same_name(images, tmp_path):
    """The first process claims runs/same and waits; the second (the CLI) must fail and write nothing."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\n"
        "from smallnets.training import Trainer\n"
        "from test_train import run_config\n"
        f"t = Trainer(run_config(Path({str(images)!r}), Path({str(tmp_path)!r}), name='same', epochs=1))\n"
        "print('claimed', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(t.fit().status, flush=True)\n"
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "claimed", owner.stderr.read()
        run = tmp_path / "same"
        before = _snapshot(run)
        res = subprocess.run([sys.executable, "-m", "smallnets", "train", "mobilenet_v1", "--data", str(images), "--batch-size", "8",
                              "--val-fraction", "0.25", "--pipeline", "tensor", "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
                              "--lr", "0.01", "--precision", "fp32", "--out", str(tmp_path), "--width-mult", "0.25", "--cifar",
                              "--progress", "false", "--name", "same"], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"run directory '{run}' is in use by process {owner.pid}" in res.stderr and "finished" not in res.stdout
        assert _snapshot(run) == before
        out, err = owner.communicate("go\n", timeout=300)
    finally:
        owner.kill() if owner.poll() is None else None
    assert owner.returncode == 0 and out.strip() == "finished", err
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 0.05  # the owner's run, not the loser's


def test_automatic_names_are_claimed_by_creating_them(images, tmp_path):
    a = Trainer(run_config(images, tmp_path, name=None, epochs=1))
    b = Trainer(run_config(images, tmp_path, name=None, epochs=1))
    assert a.run_dir != b.run_dir and a.run_dir.parent == b.run_dir.parent == tmp_path
    assert b.run_dir.name.startswith("mobilenet_v1-")


def test_a_failed_start_leaves_no_directory_behind(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = RunConfig.from_dict({"model": {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True},
                               "data": {"path": str(empty), "pipeline": "tensor", "cache_dir": str(tmp_path / "c")},
                               "train": {"progress": False, "out": str(tmp_path / "runs"), "name": "x"}})  # fmt: skip
    with pytest.raises((ValueError, OSError)):
        Trainer(cfg)
    assert not (tmp_path / "runs").exists()
