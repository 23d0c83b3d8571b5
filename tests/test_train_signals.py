"""A killed run and a double Ctrl-C leave a run directory that resumes: real processes, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smallnets.checkpoint import load_state
from smallnets.training import Trainer
from test_train import make_image_folder

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)


def _train_args(images: Path, tmp_path: Path, name: str) -> list[str]:
    # far more epochs than the test lets it run: the process is stopped from outside
    return ["--data", str(images), "--batch-size", "8", "--val-fraction", "0.25", "--pipeline", "tensor",
            "--cache-dir", str(tmp_path / "cache"), "--epochs", "1000", "--lr", "0.05", "--precision", "fp32",
            "--out", str(tmp_path), "--width-mult", "0.25", "--cifar", "--progress", "false", "--name", name]  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen, deadline_s: float = 240.0) -> None:
    """Until ``path`` exists (the condition, not a duration, is what the test waits for)."""
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {path.name} appeared: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {deadline_s:.0f} s")
        time.sleep(0.02)


def _temp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def test_resume_after_sigkill_tidies_the_directory_and_records_the_kill(images, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "smallnets", "train", "mobilenet_v1", *_train_args(images, tmp_path, "killed")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    run = tmp_path / "killed"
    _wait_for(run / "state.safetensors", proc)
    proc.kill()
    proc.wait(timeout=60)
    # what a kill in the middle of an atomic write leaves: a hidden temporary file beside its target
    (run / ".state.safetensors.k1ll3d0x.tmp.safetensors").write_bytes(b"half a checkpoint")
    # the real kill may itself have landed mid-write and left one more: count what is there
    left = _temp_files(run)
    assert ".state.safetensors.k1ll3d0x.tmp.safetensors" in left
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # nobody said otherwise
    position = load_state(run / "state.safetensors")["position"]
    with pytest.warns(UserWarning, match=rf"previous session of this run \(pid {proc.pid}\) was killed.*removed {len(left)} unfinished temporary file"):
        trainer = Trainer.resume(run, epochs=position["epoch"] + 1, progress=False)
    assert _temp_files(run) == []
    result = trainer.fit()
    assert result.status == "finished" and result.epochs_done == position["epoch"] + 1
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["pid"] != proc.pid
    previous = info["previous_session"]
    assert previous["status"] == "killed" and previous["pid"] == proc.pid and sorted(previous["temp_files_removed"]) == left
    assert not (run / ".lock").exists()


def test_a_second_ctrl_c_while_saving_leaves_a_resumable_run(images, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from smallnets.training import Trainer\n"
        "from test_train import run_config\n"
        "class CtrlCWhileSaving(Trainer):\n"
        "    # the user presses Ctrl-C again while the checkpoint the first one asked for is being written\n"
        "    def _state(self):\n"
        "        if self._stop is not None and not getattr(self, 'pressed', False):\n"
        "            self.pressed = True\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return super()._state()\n"
        f"t = CtrlCWhileSaving(run_config(Path({str(images)!r}), Path({str(tmp_path)!r}), name='twice', epochs=1000))\n"
        "try:\n"
        "    t.fit()\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', flush=True)\n"
        "    sys.exit(130)\n"
        "print('fit returned', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "twice"
    _wait_for(run / "state.safetensors", proc)
    proc.send_signal(signal.SIGINT)  # the first Ctrl-C: stop at the next safe point
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130 and out.strip() == "KeyboardInterrupt", out + err  # the trainer let it through
    assert "Traceback" not in err and "SIGINT received" in err
    info = json.loads((run / "run.json").read_text())
    state = load_state(run / "state.safetensors")
    assert info["status"] == "interrupted" and "second SIGINT" in info["message"]
    assert (info["epoch"], info["batch"]) == (state["position"]["epoch"], state["position"]["batch"])
    sidecar = json.loads((run / "last.json").read_text())
    assert (sidecar["extra"]["epoch"], sidecar["extra"]["batch"]) == (info["epoch"], info["batch"])  # state and weights are a pair
    assert _temp_files(run) == [] and not (run / ".lock").exists()
    resumed = Trainer.resume(run, epochs=state["position"]["epoch"] + 1, progress=False).fit()
    assert resumed.status == "finished"
