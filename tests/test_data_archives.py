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
