"""Archives as training data, read from real files written here: truncated and corrupt ones, and how reading them is reported."""

from __future__ import annotations

import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smallnets.data import DataConfig, build_data
from smallnets.data.sources import ArchiveSource


def make_tree(root: Path, classes=("a", "b"), per_class: int = 15) -> Path:
    """``root/<class>/<i>.png``: small PNGs of random pixels (they do not compress)."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.random.default_rng(100 * c + i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    return root


def make_tar(src: Path, dest: Path) -> Path:
    mode = "w:gz" if dest.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(dest, mode) as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=p.relative_to(src).as_posix(), recursive=False)
    return dest


def cfg(path: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), batch_size=8, workers=0, **kw)


def test_reading_an_archive_into_a_log_writes_few_lines(tmp_path, capsys):
    archive = make_tar(make_tree(tmp_path / "tree"), tmp_path / "set.tar.gz")
    start = time.perf_counter()
    ArchiveSource(archive).catalog(None, progress=True)
    elapsed = time.perf_counter() - start
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reading set.tar.gz")]
    # the first update, one line per 10 s period (however slow this machine is today) and the end, once
    assert 1 <= len(lines) <= 2 + int(elapsed // 10), lines
    assert sum("(100%)" in line for line in lines) == 1, lines


def _offsets(tar_path: Path) -> tuple[int, int, int]:
    """Of a member in the middle of a plain tar: its header's offset, a byte inside its header, a byte inside its data."""
    with tarfile.open(tar_path) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
    m = files[len(files) // 2]
    assert m.size > 100
    return m.offset, m.offset + 100, m.offset_data + m.size // 2


def _truncated(src: Path, dest: Path, size: int) -> Path:
    dest.write_bytes(src.read_bytes()[:size])
    return dest


@pytest.mark.parametrize("cut", ["at a header", "inside a header", "inside a member's data"])
@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_a_truncated_plain_tar_is_refused_naming_the_file(tmp_path, cut, pipeline):
    whole = make_tar(make_tree(tmp_path / "tree"), tmp_path / "whole.tar")
    size = dict(zip(["at a header", "inside a header", "inside a member's data"], _offsets(whole)))[cut]
    bad = _truncated(whole, tmp_path / "cut.tar", size)
    with pytest.raises(ValueError, match=r"cut\.tar'.*truncated or corrupt"):
        build_data(cfg(bad, tmp_path, pipeline=pipeline), progress=False)
    assert len(build_data(cfg(whole, tmp_path, pipeline=pipeline), progress=False).classes) == 2  # the whole one reads


@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_a_truncated_tar_gz_is_refused_naming_the_file(tmp_path, pipeline):
    tree = make_tree(tmp_path / "tree")
    whole = make_tar(tree, tmp_path / "whole.tar.gz")
    cut_stream = _truncated(whole, tmp_path / "cut.tar.gz", whole.stat().st_size * 2 // 3)  # a download cut short
    plain = make_tar(tree, tmp_path / "whole.tar")
    import gzip

    cut_tar = tmp_path / "cut-inside.tgz"  # a complete gzip stream of a tar cut at a member's header
    cut_tar.write_bytes(gzip.compress(plain.read_bytes()[: _offsets(plain)[0]]))
    for bad in (cut_stream, cut_tar):
        with pytest.raises(ValueError, match=rf"{bad.name}'.*truncated or corrupt"):
            build_data(cfg(bad, tmp_path, pipeline=pipeline), progress=False)


def test_train_on_a_truncated_archive_exits_with_a_message_not_a_traceback(tmp_path):
    import subprocess
    import sys

    whole = make_tar(make_tree(tmp_path / "tree"), tmp_path / "whole.tar.gz")
    bad = _truncated(whole, tmp_path / "cut.tar.gz", whole.stat().st_size // 2)
    res = subprocess.run([sys.executable, "-m", "smallnets", "train", "mobilenet_v1", "--data", str(bad), "--cifar", "true",
                          "--width-mult", "0.25", "--epochs", "1", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                          "--progress", "false", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "cut.tar.gz" in res.stderr and "truncated or corrupt" in res.stderr


def test_a_zip_is_refused_clearly_and_a_truncated_one_is_called_so(tmp_path):
    tree = make_tree(tmp_path / "tree")
    whole = tmp_path / "set.zip"
    with zipfile.ZipFile(whole, "w") as z:
        for p in sorted(tree.rglob("*.png")):
            z.write(p, p.relative_to(tree).as_posix())
    with pytest.raises(ValueError, match=r"set\.zip': \.zip archives are not read; extract it"):
        build_data(cfg(whole, tmp_path), progress=False)
    bad = _truncated(whole, tmp_path / "cut.zip", whole.stat().st_size // 2)
    with pytest.raises(ValueError, match=r"cut\.zip'.*truncated or corrupt"):
        build_data(cfg(bad, tmp_path), progress=False)


@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_the_split_record_holds_each_validation_file_s_sha256(tmp_path, pipeline):
    import hashlib

    tree = make_tree(tmp_path / "tree")
    for source in (tree, make_tar(tree, tmp_path / "tree.tar.gz")):
        record = build_data(cfg(source, tmp_path, pipeline=pipeline), progress=False).split_json()
        expected = [hashlib.sha256((tree / name).read_bytes()).hexdigest() for name in record["val_files"]]
        assert record["val_files_content_sha256"] == expected and len(expected) == 4
