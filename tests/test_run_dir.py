"""Run directories: names stay inside out/, one process at a time owns a run directory."""

from __future__ import annotations

import json
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
