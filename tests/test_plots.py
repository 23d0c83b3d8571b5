"""Figures: learning curves and confusion matrices come out as valid, readable-sized PNGs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from smallnets.plots import plot_confusion, plot_learning_curves


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()  # a complete, uncorrupted file
    with Image.open(path) as image:
        image.load()
        return image.size


def _records(epochs=12):
    out = []
    for e in range(1, epochs + 1):
        out.append({
            "epoch": e, "train_loss": 2.3 * math.exp(-e / 4) + 0.1, "train_acc": 100 * (1 - math.exp(-e / 3)),
            "val_loss": 2.3 * math.exp(-e / 4) + 0.3, "val_top1": 90 * (1 - math.exp(-e / 3)), "val_top5": 99 * (1 - math.exp(-e / 2)),
            "lr": 0.1 * 0.5 * (1 + math.cos(math.pi * e / epochs)), "images_per_s": 4000.0 + e, "elapsed_s": 20.0 * e,
        })
    return out


def test_learning_curves_from_records(tmp_path):
    out = plot_learning_curves(_records(), tmp_path / "curves.png", title="toy run")
    width, height = _png_size(out)
    assert 800 <= width <= 2000 and 800 <= height <= 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]  # no temp file left


def test_learning_curves_from_jsonl_with_gaps_and_resumed_epochs(tmp_path):
    records = _records(6)
    records[2]["val_loss"] = None  # not evaluated that epoch
    del records[3]["lr"]
    lines = [json.dumps(r) for r in records[:4]] + [""] + [json.dumps({**records[3], "train_loss": 0.5})]  # epoch 4 logged twice
    lines += [json.dumps(r) for r in records[4:]] + [json.dumps({"test_top1": 88.0})]  # a summary line without an epoch
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = plot_learning_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert _png_size(out)[0] >= 800


def test_learning_curves_with_little_data(tmp_path):
    out = plot_learning_curves([{"train_loss": 1.0}, {"train_loss": 0.7, "lr": None}], tmp_path / "c.png")  # no epoch numbers
    assert _png_size(out)[1] >= 800
    fractions = [{"epoch": e, "train_acc": 0.5 + 0.05 * e, "val_top1": 0.4 + 0.05 * e} for e in range(3)]
    assert _png_size(plot_learning_curves(fractions, tmp_path / "f.png"))[0] >= 800


def test_learning_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one epoch record"):
        plot_learning_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"out_png must end in \.png, got '.*c\.jpg'"):
        plot_learning_curves(_records(), tmp_path / "c.jpg")
    with pytest.raises(ValueError, match=r"records\[1\]\['val_top1'\] must be a number or None, got 'high'"):
        plot_learning_curves([{"epoch": 1}, {"epoch": 2, "val_top1": "high"}], tmp_path / "c.png")
    (tmp_path / "m.jsonl").write_text('{"epoch": 1}\n{"epoch": 2,\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2 is not a JSON line"):
        plot_learning_curves(tmp_path / "m.jsonl", tmp_path / "c.png")
    with pytest.raises(FileNotFoundError, match="existing metrics .jsonl file"):
        plot_learning_curves(tmp_path / "none.jsonl", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def _confusion(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(1.5, size=(n, n)) + np.diag(rng.poisson(40, size=n))


@pytest.mark.parametrize("n", [3, 10, 20, 100])
def test_confusion_sizes_scale_with_classes(tmp_path, n):
    classes = [f"class_{i}" for i in range(n)]
    classes[-1] = "a class name far too long to print in full on an axis"
    out = plot_confusion(_confusion(n).tolist(), classes, tmp_path / "cm.png", title=f"{n} classes")
    width, height = _png_size(out)
    assert 500 <= width <= 3500 and 500 <= height <= 3500
    assert abs(width - height) < 0.3 * width  # a square heat map, not a squashed one
    if n == 100:
        assert width >= 1800  # room for 100 labels


def test_confusion_accepts_tensors_and_raw_counts(tmp_path):
    matrix = torch.tensor(_confusion(5))
    assert _png_size(plot_confusion(matrix, None, tmp_path / "a.png"))[0] > 500
    assert _png_size(plot_confusion(matrix.numpy(), list("abcde"), tmp_path / "b.png", normalize=False))[0] > 500
    empty_row = np.array([[3, 1], [0, 0]])  # a class with no samples must not divide by zero
    assert _png_size(plot_confusion(empty_row, ["x", "y"], tmp_path / "c.png"))[0] > 300


def test_confusion_errors(tmp_path):
    with pytest.raises(ValueError, match=r"square 2-D array of counts, got shape \(2, 3\)"):
        plot_confusion([[1, 2, 3], [4, 5, 6]], ["a", "b"], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="classes must name the matrix's 2 classes"):
        plot_confusion([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="finite counts >= 0"):
        plot_confusion([[1, -1], [0, 1]], ["a", "b"], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="normalize must be True or False"):
        plot_confusion([[1, 0], [0, 1]], ["a", "b"], tmp_path / "cm.png", normalize="yes")
    assert not list(tmp_path.iterdir())


def test_no_matplotlib_side_effects(tmp_path):
    """Importing smallnets does not import matplotlib; plotting does not touch pyplot or the global backend."""
    code = (
        "import sys, smallnets, smallnets.plots, smallnets.checkpoint\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n"
        "import matplotlib; before = dict.__getitem__(matplotlib.rcParams, 'backend')  # raw: reading it resolves it\n"
        "smallnets.plots.plot_confusion([[2, 1], [0, 3]], ['a', 'b'], sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == before, 'backend changed'\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cm.png")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _png_size(tmp_path / "cm.png")[0] > 300
