"""Evaluation and prediction of a real trained run: `smallnets eval` / `smallnets predict` and their Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import smallnets
from smallnets.data import DataConfig, build_data
from smallnets.training import RunConfig, Trainer

CLASSES = ("circle", "dots", "square", "stripes")  # sorted, as class folders are read
# One thread here and in the subprocesses: on a machine whose cores are shared, OpenMP threads
# spin-waiting for a busy core make a 16 px training step 100x slower.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def make_images(root: Path, per_class: int, seed: int) -> Path:
    """A learnable 4-class set of 16 px PNGs: each class has its own colour plus noise (dots: a grid)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            img[..., c % 3] += 150
            if name == "dots":
                img[::2, ::2] = 255
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny real run (trained once for the module), its data and a separate test set."""
    base = tmp_path_factory.mktemp("evalpredict")
    data = make_images(base / "shapes", per_class=12, seed=0)
    config = RunConfig.from_dict({
        "model": {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True},
        "data": {"path": str(data), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(base / "cache")},
        "train": {"epochs": 6, "lr": 0.1, "precision": "fp32", "progress": False, "out": str(base / "runs"), "name": "run",
                  "threads": 1, "device": "cpu"},
    })  # fmt: skip
    threads = torch.get_num_threads()
    try:
        result = Trainer(config).fit()  # sets one thread process-wide, kept for this module's in-process calls
        test = make_images(base / "testset" / "test", per_class=5, seed=7).parent  # ROOT/test/<class>/...
        records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        yield {"run": result.run_dir, "data": data, "test": test, "records": records, "base": base}
    finally:
        torch.set_num_threads(threads)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallnets", *args], capture_output=True, text=True, timeout=300, env=ENV)


def test_eval_run_reproduces_the_recorded_validation(trained):
    run, records = trained["run"], trained["records"]
    best = json.loads((run / "best.json").read_text())["extra"]["metrics"]  # the record of the epoch best.safetensors holds
    res = cli("eval", str(run), "--data", str(trained["data"]))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"top-1   {best['val_top1']:6.2f}%" in out and "images  12" in out
    assert "validation split" in out and "the same files as the run's split.json" in out
    table = out[out.index("per-class accuracy, worst first:") :].splitlines()[2:6]
    accs = [float(line.split()[1].rstrip("%")) for line in table]
    assert sorted(line.split()[0] for line in table) == list(CLASSES) and accs == sorted(accs)  # worst first
    png = run / "confusion.png"
    assert f"confusion matrix: {png}" in out
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 200

    # the last weights, their split named explicitly, against the last epoch's record, exactly
    res = cli("eval", str(run / "last.safetensors"), "--data", str(trained["data"]), "--split", "val", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)  # stdout holds the JSON alone
    assert got["top1"] == records[-1]["val_top1"] and got["top5"] == records[-1]["val_top5"]
    assert got["loss"] == pytest.approx(records[-1]["val_loss"], rel=1e-6)
    assert got["count"] == 12 and got["split"] == "val" and got["split_matches_run"] is True
    assert set(got["per_class"]) == set(CLASSES) and got["support"] == {c: 3 for c in CLASSES}
    assert np.array(got["confusion"]).sum() == 12 and got["classes"] == list(CLASSES)
    assert got["confusion_png"] == str(run / "last-confusion.png") and Path(got["confusion_png"]).is_file()


def test_eval_every_image_of_a_separate_test_set(trained, tmp_path):
    test = trained["test"]
    res = cli("eval", str(trained["run"]), "--data", str(test), "--json", "--confusion", str(tmp_path / "c.png"))
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["split"] == "all" and got["count"] == 20 and got["support"] == {c: 5 for c in CLASSES}  # the default for other data
    assert got["evaluated"].startswith(f"every image of {test / 'test'}")
    with Image.open(tmp_path / "c.png") as img:
        assert img.format == "PNG"
    # the same set as a plain class tree and as a .tar.gz with a top-level folder: the same numbers
    archive = tmp_path / "test.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(test / "test", arcname="holdout")
    for source in (test / "test", archive):
        again = smallnets.evaluate_weights(trained["run"], source, device="cpu")
        assert again.count == 20 and torch.equal(again.confusion, torch.tensor(got["confusion"]))
        assert again.loss == pytest.approx(got["loss"], rel=1e-6)
    # an unreadable image is left out, counted and named; the others are evaluated
    broken = shutil.copytree(test, tmp_path / "with_bad")
    (broken / "test" / "dots" / "zz.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\).*unreadable image.*zz\.png"):
        partial = smallnets.evaluate_weights(trained["run"], broken, device="cpu")
    assert partial.count == 20 and partial.details["skipped"]["total"] == 1


def test_eval_class_checks(trained, tmp_path):
    strange = make_images(tmp_path / "strange", per_class=1, seed=3)
    os.rename(strange / "circle", strange / "cat")
    res = cli("eval", str(trained["run"]), "--data", str(strange))
    assert res.returncode == 2 and not res.stdout
    assert "the model does not know: 'cat'" in res.stderr and "Model classes (4): 'circle', 'dots', 'square', 'stripes'" in res.stderr
    # a subset of the model's classes is matched by name and said so
    subset = tmp_path / "subset"
    for c in ("square", "dots"):
        shutil.copytree(trained["test"] / "test" / c, subset / c)
    result = smallnets.evaluate_weights(trained["run"], subset, device="cpu")
    assert result.count == 10 and result.classes == list(CLASSES)
    assert result.support == {"circle": 0, "dots": 5, "square": 5, "stripes": 0}
    assert result.per_class["circle"] is None and any("2 of the model's 4 classes" in n for n in result.details["notes"])
    full = smallnets.evaluate_weights(trained["run"], trained["test"], device="cpu")
    assert torch.equal(result.confusion[[1, 2]], full.confusion[[1, 2]])  # the same rows, under the model's indices


def test_eval_api_on_a_copy_of_the_data_and_bad_arguments(trained, tmp_path):
    copy = shutil.copytree(trained["data"], tmp_path / "copy")
    result = smallnets.evaluate_weights(trained["run"] / "last.safetensors", copy, split="val", device="cpu")
    assert result.top1 == trained["records"][-1]["val_top1"] and result.details["split_matches_run"] is True
    assert any("not the run's data" in n for n in result.details["notes"])
    # weights inside a run, on that run's data: its validation split, never its training images
    assert smallnets.evaluate_weights(trained["run"] / "last.safetensors", trained["data"]).count == 12
    assert smallnets.evaluate_weights(trained["run"] / "last.safetensors", trained["data"], split="all").count == 48
    archive = tmp_path / "shapes.tar.gz"  # an archive of the same tree, inside a top-level folder
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(trained["data"], arcname="shapes")
    packed = smallnets.evaluate_weights(trained["run"] / "last.safetensors", archive, split="val", device="cpu")
    assert packed.top1 == trained["records"][-1]["val_top1"] and packed.details["split_matches_run"] is True
    # other pixels, same names: the same split, prepared with the model's statistics rather than the copy's
    img = np.asarray(Image.open(copy / "circle" / "000.png")).copy()
    Image.fromarray(255 - img).save(copy / "circle" / "000.png")
    changed = smallnets.evaluate_weights(trained["run"], copy, split="val", device="cpu")
    assert changed.count == 12 and any("preprocessed as the model expects" in n for n in changed.details["notes"])
    with pytest.raises(ValueError, match="split must be one of 'val', 'all'; got 'test'"):
        smallnets.evaluate_weights(trained["run"], copy, split="test")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        smallnets.evaluate_weights(trained["run"], copy, batch_size=0)
    with pytest.raises(FileNotFoundError, match="data must be an existing folder"):
        smallnets.evaluate_weights(trained["run"], tmp_path / "nowhere")
    lone = tmp_path / "lone"
    lone.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(trained["run"] / f"best{suffix}", lone / f"best{suffix}")
    with pytest.raises(ValueError, match="split='val' needs the run's data configuration"):
        smallnets.evaluate_weights(lone / "best.safetensors", trained["data"], split="val")
    assert smallnets.evaluate_weights(lone / "best.safetensors", trained["test"]).count == 20  # lone weights: every image


def test_eval_names_the_validation_files_whose_content_changed(trained, tmp_path):
    run = trained["run"]
    split = json.loads((run / "split.json").read_text())
    assert len(split["val_files_content_sha256"]) == len(split["val_files"]) == 12  # recorded by the run, per file
    copy = shutil.copytree(trained["data"], tmp_path / "copy")
    changed = split["val_files"][3]
    img = np.asarray(Image.open(copy / changed)).copy()
    Image.fromarray(255 - img).save(copy / changed)  # the same name, other pixels
    result = smallnets.evaluate_weights(run, copy, split="val", device="cpu")
    assert result.details["split_matches_run"] is False and result.details["changed_val_files"] == [changed]
    assert any("1 of the 12 validation files changed since the run" in n and changed in n for n in result.details["notes"])
    res = cli("eval", str(run), "--data", str(copy), "--split", "val")
    assert res.returncode == 0, res.stderr
    assert "NOT the files of the run's split.json" in res.stdout and "the same files" not in res.stdout and changed in res.stdout
    # a split.json from before file contents were recorded: still read, and said to be unchecked
    old = shutil.copytree(run, tmp_path / "old-run")
    del split["val_files_content_sha256"]
    (old / "split.json").write_text(json.dumps(split))
    result = smallnets.evaluate_weights(old, copy, split="val", device="cpu")
    assert result.details["split_matches_run"] is True and result.details["changed_val_files"] is None  # the same names
    assert any("content cannot be checked" in n for n in result.details["notes"])


def test_predict_cli_top_k_matches_eval_and_skips_bad_files(trained, tmp_path):
    test = trained["test"] / "test"
    single = test / "square" / "000.png"
    res = cli("predict", str(trained["run"]), str(single), str(test), "--top-k", "3", "--json")
    assert res.returncode == 0, res.stderr
    preds = json.loads(res.stdout)
    assert [p["path"] for p in preds] == [str(single)] + [str(test / c / f"{i:03d}.png") for c in CLASSES for i in range(5)]
    for p in preds:
        probs = [s["probability"] for s in p["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all(s["label"] == CLASSES[s["index"]] for s in p["predictions"])
    # top-1 labels give the confusion matrix that evaluation of every image gives
    confusion = torch.zeros(4, 4, dtype=torch.int64)
    for p in preds[1:]:
        confusion[CLASSES.index(Path(p["path"]).parent.name), p["predictions"][0]["index"]] += 1
    assert torch.equal(confusion, smallnets.evaluate_weights(trained["run"], trained["test"], device="cpu").confusion)

    # text layout, and an unreadable file reported and skipped
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = cli("predict", str(trained["run"]), str(single), str(bad), str(test / "dots"))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert len(lines) == 6 and lines[0].startswith(f"{single}:") and str(bad) not in res.stdout
    top = {s.split()[0]: float(s.split()[1].rstrip("%")) for s in lines[0].split(":", 1)[1].split(",")}
    assert len(top) == 4 and 99.5 <= sum(top.values()) <= 100.5  # --top-k 5 of 4 classes: all of them
    assert f"skipped {bad}" in res.stderr and "not a readable image" in res.stderr and "1 of 7 file(s)" in res.stderr


def test_predict_api_equals_the_model_on_validation_tensors(trained):
    run = trained["run"]
    raw = json.loads((run / "config.json").read_text())
    bundle = build_data(DataConfig(**raw["data"]), device="cpu", progress=False)
    model = smallnets.load_weights(run).eval()
    with torch.no_grad():
        expected = torch.cat([torch.softmax(model(x), 1) for x, _ in bundle.val])
    files = [trained["data"] / name for name in bundle.val_files()]
    preds = smallnets.predict(model, files, top_k=4, batch_size=bundle.val.batch_size)
    assert [p.path for p in preds] == [str(f) for f in files] and all(p.ok for p in preds)
    got = torch.zeros_like(expected)
    for row, p in enumerate(preds):
        for s in p.predictions:
            got[row, s.index] = s.probability
    assert torch.equal(got, expected)  # same tensors in, same batches: bit-identical
    assert not model.training
    # weights path form, a model without preprocessing, bad arguments
    assert smallnets.predict(run, files[:2], top_k=1)[0].predictions[0].index == int(expected[0].argmax())
    bare = smallnets.create_model("mobilenet_v1", num_classes=4, width_mult=0.25, cifar=True)
    with pytest.raises(ValueError, match=r"smallnets_meta\['preprocessing'\]"):
        smallnets.predict(bare, files[:1])
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        smallnets.predict(model, files[:1], top_k=0)
    with pytest.raises(FileNotFoundError, match="images: no such file or directory"):
        smallnets.predict(model, [trained["base"] / "missing.png"])


def test_plot_comparison_leaves_pyplot_alone(tmp_path):
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
from smallnets.compare import CompareRow, plot_comparison
row = CompareRow("m", "mobilenet_v1", "mobilenet", {{}}, (3, 224, 224), 4_200_000, 569_000_000, 16_800_000, 12.0, 13.0, 70.6, "imagenet", None)
plot_comparison([row], {str(tmp_path / "chart.png")!r})
assert "matplotlib.pyplot" not in sys.modules and matplotlib.get_backend() == "svg", matplotlib.get_backend()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "chart.png") as img:
        assert img.format == "PNG"
