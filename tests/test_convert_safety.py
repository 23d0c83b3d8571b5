"""`smallnets convert` never replaces its own input, and replaces an existing output only with --force."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from smallnets.cli import main

from conftest import shared_path

SQUEEZE = shared_path("reference", "interop", "torchvision__squeezenet1_1.weights.safetensors", module_level=True)
SHUFFLE = shared_path("reference", "interop", "torchvision__shufflenet_v2_x0_5.weights.safetensors", module_level=True)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _convert(capsys, *argv) -> tuple[int, str]:
    rc = main(["convert", *map(str, argv)])
    return rc, capsys.readouterr().err


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "squeezenet.safetensors"
    shutil.copyfile(SQUEEZE, path)
    return path


@pytest.mark.parametrize("force", [False, True])
def test_convert_refuses_to_write_over_its_own_source(tmp_path, capsys, source, force):
    before = _digest(source)
    rc, err = _convert(capsys, source, source, *(["--force"] if force else []))
    assert rc == 2
    assert "is the input" in err and str(source.name) in err and "even with --force" in err
    assert _digest(source) == before
    assert not source.with_suffix(".json").exists()
    # another name for the same file: a symlink, a hard link, a path with '..' in it
    link = tmp_path / "link.safetensors"
    link.symlink_to(source)
    hard = tmp_path / "hard.safetensors"
    os.link(source, hard)
    (tmp_path / "sub").mkdir()
    dotted = tmp_path / "sub" / ".." / source.name
    for out in (link, hard, dotted):
        rc, err = _convert(capsys, source, out, "--force")
        assert rc == 2 and "is the input" in err, (out, err)
    assert link.is_symlink() and os.path.samefile(link, source)
    assert _digest(source) == before and _digest(hard) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.safetensors", "link.safetensors", "squeezenet.safetensors", "sub"]


def test_convert_refuses_to_write_over_the_run_it_reads(tmp_path, capsys, source):
    run = tmp_path / "runs" / "x"
    assert _convert(capsys, source, run / "best.safetensors")[0] == 0
    before = _digest(run / "best.safetensors")
    # the run directory as the source resolves to best.safetensors: never replaced, even with --force
    rc, err = _convert(capsys, run, run / "best.safetensors", "--force")
    assert rc == 2 and "is the input" in err
    assert _digest(run / "best.safetensors") == before
    # nor is the sidecar, when the input is named like OUT's sidecar
    sidecar_named = tmp_path / "w.json"
    import torch

    from smallnets.pretrained import read_checkpoint

    torch.save(read_checkpoint(SQUEEZE), sidecar_named)  # a torch.save file that happens to end in .json
    saved = _digest(sidecar_named)
    rc, err = _convert(capsys, sidecar_named, tmp_path / "w.safetensors", "--force")
    assert rc == 2 and "is the input" in err and "w.json" in err
    assert _digest(sidecar_named) == saved and not (tmp_path / "w.safetensors").exists()


def test_convert_replaces_an_existing_output_only_with_force(tmp_path, capsys, source):
    run = tmp_path / "runs" / "x"
    out = run / "best.safetensors"
    assert _convert(capsys, source, out)[0] == 0
    weights, sidecar = _digest(out), _digest(out.with_suffix(".json"))
    # another model's weights over an existing run: refused, both files untouched
    rc, err = _convert(capsys, SHUFFLE, out)
    assert rc == 2
    assert f"{out} already exists" in err and "--force" in err
    assert _digest(out) == weights and _digest(out.with_suffix(".json")) == sidecar
    # a sidecar alone is an existing output too
    lone = tmp_path / "lone.safetensors"
    lone.with_suffix(".json").write_text("{}")
    rc, err = _convert(capsys, SHUFFLE, lone)
    assert rc == 2 and "lone.json already exists" in err and not lone.exists()
    assert lone.with_suffix(".json").read_text() == "{}"
    # --force replaces them: by rename (a hard link to the old file keeps the old bytes), no temp files left
    keep = tmp_path / "keep.safetensors"
    os.link(out, keep)
    rc, err = _convert(capsys, SHUFFLE, out, "--force")
    assert rc == 0, err
    assert _digest(keep) == weights and _digest(out) != weights
    assert os.stat(out).st_ino != os.stat(keep).st_ino
    assert sorted(p.name for p in run.iterdir()) == ["best.json", "best.safetensors"]
    import smallnets

    assert type(smallnets.load_weights(out)).__name__ == "ShuffleNetV2"
    rc, err = _convert(capsys, SHUFFLE, lone, "--force")
    assert rc == 0, err
    assert lone.is_file() and lone.with_suffix(".json").read_text() != "{}"


def test_convert_checks_out_before_reading_the_checkpoint(tmp_path, capsys):
    # OUT is checked first: a refusal costs no download or conversion
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"")
    rc, err = _convert(capsys, "https://example.invalid/never-fetched.safetensors", out, "--offline")
    assert rc == 2 and "already exists" in err
    rc, err = _convert(capsys, SQUEEZE, tmp_path / "x.pth")
    assert rc == 2 and "OUT must end in .safetensors" in err and "x.pth" in err
