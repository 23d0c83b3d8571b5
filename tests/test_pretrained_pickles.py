"""A checkpoint pickle that needs anything but tensors is refused saying what and why, never with torch's
advice to re-run with weights_only=False (or to allowlist the global)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from smallnets.cli import main
from smallnets.pretrained import read_checkpoint

ADVICE = ("weights_only=False", "`weights_only` set to `False`", "add_safe_globals", "safe_globals", "two options", "\x1b[")


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def _assert_no_advice(message: str) -> None:
    for advice in ADVICE:
        assert advice not in message, f"{advice!r} in {message!r}"


def test_a_pickle_that_calls_code_is_refused_naming_it(tmp_path, capfd):
    evil = tmp_path / "evil.pth"
    torch.save({"weights": Payload()}, evil)
    with pytest.raises(ValueError) as err:
        read_checkpoint(evil)
    message = str(err.value)
    assert str(evil) in message and "refused" in message
    assert "'print'" in message and "rather than a tensor" in message and "would call that code" in message and "never runs" in message
    _assert_no_advice(message)
    rc = main(["convert", str(evil), str(tmp_path / "out.safetensors")])
    captured = capfd.readouterr()
    assert rc == 2 and "'print'" in captured.err and "pickled code ran" not in captured.out + captured.err
    _assert_no_advice(captured.err)


def test_other_refused_pickles_say_what_was_refused(tmp_path):
    arrays = tmp_path / "numpy.pth"
    torch.save({"w": np.zeros(3)}, arrays)  # a numpy array is rebuilt by calling numpy: refused too
    with pytest.raises(ValueError, match=r"numpy\S*_reconstruct") as err:
        read_checkpoint(arrays)
    _assert_no_advice(str(err.value))
    legacy = tmp_path / "legacy.pth"
    with open(legacy, "wb") as f:  # a plain pickle, not torch.save's zip: an instruction the tensor-only reader refuses
        pickle.dump({"x": Payload()}, f, protocol=4)
    with pytest.raises(ValueError, match="refused") as err:
        read_checkpoint(legacy)
    _assert_no_advice(str(err.value))
    broken = tmp_path / "broken.pth"
    broken.write_bytes((tmp_path / "numpy.pth").read_bytes()[:60])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint") as err:
        read_checkpoint(broken)
    _assert_no_advice(str(err.value))
