"""The data pipeline on real files built here: layouts, bad files, splits, the tensor cache, augmentation, sharding, CIFAR."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import pickle
import struct
import tarfile
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from smallnets.data import DataConfig, UnreadableImageError, build_data, load_image, make_eval_transform
from smallnets.data import cache as cache_mod
from smallnets.data import cifar as cifar_mod
from smallnets.data.download import ChecksumError, download

# ---------------------------------------------------------------------------------------------
# Builders of test data: real image files, trees, archives


def _pixels(seed: int, w: int, h: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path: Path, seed: int, size=(12, 12), kind: str = "rgb") -> Path:
    """A real image file; ``kind`` picks the mode the file is stored in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rgb = Image.fromarray(_pixels(seed, w, h))
    if kind == "rgb":
        rgb.save(path)
    elif kind == "gray":
        rgb.convert("L").save(path)
    elif kind == "rgba":
        rgb.convert("RGBA").save(path)
    elif kind == "la":
        rgb.convert("LA").save(path)
    elif kind == "palette":
        rgb.convert("P").save(path)
    elif kind == "bilevel":
        rgb.convert("1").save(path)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, format="JPEG")
    elif kind == "gray16":
        Image.fromarray((np.random.default_rng(seed).integers(0, 65536, (h, w))).astype(np.uint16)).save(path)
    else:
        raise AssertionError(kind)
    return path


def make_tree(root: Path, counts: dict[str, int], *, size=(12, 12), prefix: str = "", seed: int = 0, ext: str = ".png") -> list[str]:
    """``root/prefix<class>/<i>.png`` for each class; returns the relative names written."""
    names = []
    for c, (cls, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            rel = f"{prefix}{cls}/{i:03d}{ext}"
            write_image(root / rel, seed + 1000 * c + i, size)
            names.append(rel)
    return names


def make_tar(src: Path, dest: Path, arc_prefix: str = "") -> Path:
    mode = "w:gz" if dest.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(dest, mode) as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=arc_prefix + p.relative_to(src).as_posix(), recursive=False)
    return dest


def cfg_for(path, tmp_path: Path, **kw) -> DataConfig:
    kw.setdefault("batch_size", 8)
    kw.setdefault("workers", 0)
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **kw)


def all_val(bundle) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*bundle.val)
    return torch.cat(xs), torch.cat(ys)


def epoch(loader, e: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.epoch_batches(e, start))


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


# ---------------------------------------------------------------------------------------------
# Config and images


def test_config_validates_and_names_the_field():
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0.0, 1.0\), got 1.5"):
        DataConfig(path="x", val_fraction=1.5)
    with pytest.raises(ValueError, match="pipeline must be one of .*did you mean 'tensor'"):
        DataConfig(path="x", pipeline="tensr")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        DataConfig(path="x", batch_size=0)
    with pytest.raises(ValueError, match="flip must be True or False, got 1"):
        DataConfig(path="x", flip=1)
    with pytest.raises(ValueError, match="unknown DataConfig key 'batchsize'; did you mean 'batch_size'"):
        DataConfig.from_dict({"path": "x", "batchsize": 4})
    cfg = DataConfig.from_dict({"path": "x", "cutout": 8})
    assert cfg.cutout == 8 and json.loads(json.dumps(cfg.to_dict()))["path"] == "x"


@pytest.mark.parametrize("kind", ["gray", "rgba", "la", "palette", "bilevel", "cmyk", "gray16"])
def test_load_image_converts_every_mode_to_rgb(tmp_path, kind):
    path = write_image(tmp_path / f"x.{'jpg' if kind == 'cmyk' else 'png'}", 3, (10, 7), kind)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (10, 7)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    good = write_image(tmp_path / "good.jpg", 1, (20, 20)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    for name in ("empty.png", "text.jpg", "cut.jpg"):
        with pytest.raises(UnreadableImageError, match=name):
            load_image(tmp_path / name)


def test_make_eval_transform_checks_its_dict():
    with pytest.raises(ValueError, match="missing 'mean'"):
        make_eval_transform({"resize": 8, "crop": 8, "std": [1, 1, 1]})
    with pytest.raises(ValueError, match=r"preprocessing\['resize'\] must be >= "):
        make_eval_transform({"resize": 7, "crop": 8, "mean": [0, 0, 0], "std": [1, 1, 1]})


# ---------------------------------------------------------------------------------------------
# Layouts, bad files and errors


def _bad_files(root: Path) -> None:
    """Four files to skip and five odd-but-valid images, inside class folder 'a'."""
    good = write_image(root / "tmp.jpg", 99, (12, 12)).read_bytes()
    (root / "tmp.jpg").unlink()
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "a" / "garbage.jpg").write_bytes(b"\x00\x01 not a jpeg at all" * 10)
    (root / "a" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "a" / "notes.txt").write_text("hello")
    for i, kind in enumerate(["gray", "rgba", "palette", "gray16"]):
        write_image(root / "a" / f"odd_{kind}.png", 500 + i, (12, 12), kind)
    write_image(root / "a" / "odd_cmyk.jpg", 600, (12, 12), "cmyk")
    (root / "README").write_text("top-level file")
    (root / ".DS_Store").write_bytes(b"junk")  # hidden: ignored silently


def test_bad_files_are_skipped_counted_and_named_tensor_path(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 6, "b": 6})
    _bad_files(root)
    with pytest.warns(UserWarning, match=r"skipped 5 file\(s\).*1 empty file.*1 not an image file.*1 outside class folders.*2 unreadable image"):
        bundle = build_data(cfg_for(root, tmp_path, pipeline="tensor"), progress=False)
    assert bundle.skipped["total"] == 5
    assert bundle.skipped["by_reason"] == {"empty file": 1, "not an image file": 1, "outside class folders": 1, "unreadable image": 2}
    assert any("truncated.jpg" in e for e in bundle.skipped["examples"])
    assert bundle.num_train + bundle.num_val == 6 + 5 + 6  # the odd modes were converted, not skipped
    # the second build reads the decode failures from the cache and reports them again
    with pytest.warns(UserWarning, match="skipped 5"):
        again = build_data(cfg_for(root, tmp_path, pipeline="tensor"), progress=False)
    assert again.skipped == bundle.skipped


def test_bad_files_through_loader_workers_are_dropped_by_collate(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 6, "b": 6})
    _bad_files(root)
    cfg = cfg_for(root, tmp_path, pipeline="loader", image_size=16, workers=2, val_fraction=0.5, batch_size=4)
    with pytest.warns(UserWarning, match="skipped 3"):  # found while listing: empty, .txt, README
        bundle = build_data(cfg, progress=False)
    assert bundle.num_train + bundle.num_val == 6 + 7 + 6  # the two undecodable files are only found by workers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = sum(len(y) for _, y in bundle.train.epoch_batches(0)) + sum(len(y) for _, y in bundle.val)
    assert seen == 6 + 5 + 6
    messages = " ".join(str(w.message) for w in caught)
    assert "garbage.jpg" in messages and "truncated.jpg" in messages
    assert bundle.skipped["by_reason"]["unreadable image"] == 2 and bundle.skipped["total"] == 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(bundle.train.epoch_batches(1))
    assert bundle.skipped["total"] == 5 and not [w for w in caught if "garbage" in str(w.message)]  # counted and named once


def test_errors_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path '.*nowhere' does not exist"):
        build_data(cfg_for(tmp_path / "nowhere", tmp_path), progress=False)
    with pytest.raises(FileNotFoundError, match="did you mean 'cifar10'"):
        build_data(cfg_for("cifar-10", tmp_path), progress=False)
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="path must be a folder, a .tar/.tar.gz/.tgz archive"):
        build_data(cfg_for(tmp_path / "data.zip", tmp_path), progress=False)
    one = tmp_path / "one"
    make_tree(one, {"cat": 3, "dog": 0})
    with pytest.raises(ValueError, match=r"found 1 class \('cat'\).*at least 2 class folders"):
        build_data(cfg_for(one, tmp_path), progress=False)
    lonely = tmp_path / "lonely"
    make_tree(lonely, {"cat": 3, "dog": 1})
    with pytest.raises(ValueError, match=r"val_fraction=0.1: class 'dog' has 1 image; an automatic split needs at least 2"):
        build_data(cfg_for(lonely, tmp_path), progress=False)
    differ = tmp_path / "differ"
    make_tree(differ, {"a": 2, "b": 2}, prefix="train/")
    make_tree(differ, {"a": 2, "c": 2}, prefix="val/")
    with pytest.raises(ValueError, match=r"same class folders.*only in train: \['b'\], only in val: \['c'\]"):
        build_data(cfg_for(differ, tmp_path), progress=False)
    empty_val = tmp_path / "empty_val"
    make_tree(empty_val, {"a": 2, "b": 2}, prefix="train/")
    (empty_val / "val" / "a").mkdir(parents=True)
    (empty_val / "val" / "a" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="val/ folder holds no usable images"):
        build_data(cfg_for(empty_val, tmp_path), progress=False)
    mixed = tmp_path / "mixed"
    make_tree(mixed, {"a": 2, "b": 2}, prefix="train/")
    make_tree(mixed, {"x": 2}, prefix="other/")
    with pytest.raises(ValueError, match=r"found train/ beside other folders \['other'\]"):
        build_data(cfg_for(mixed, tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, world_size=2\), got 2"):
        build_data(cfg_for(one, tmp_path), rank=2, world_size=2, progress=False)


# ---------------------------------------------------------------------------------------------
# Splits


def test_split_is_deterministic_stratified_and_recorded(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 10, "b": 20, "c": 30})
    cfg = cfg_for(root, tmp_path, val_fraction=0.2, split_seed=7)
    one, two = build_data(cfg, progress=False), build_data(cfg, progress=False)
    assert one.val_files() == two.val_files() and one.split == two.split
    assert one.split["counts"]["val"] == {"a": 2, "b": 4, "c": 6}
    assert one.split["counts"]["train"] == {"a": 8, "b": 16, "c": 24}
    assert one.split["method"] == "stratified holdout" and one.split["seed"] == 7 and one.split["fraction"] == 0.2
    assert one.split["val_files_sha256"] == hashlib.sha256("\n".join(one.val_files()).encode()).hexdigest()
    record = json.loads(json.dumps(one.split_json()))
    assert record["val_files"] == one.val_files() and record["source"]["kind"] == "folder"
    other = build_data(dataclasses.replace(cfg, split_seed=8), progress=False)
    assert other.val_files() != one.val_files()
    assert other.split["counts"] == one.split["counts"]
    # the val images are exactly the files the record names
    x, _ = all_val(one)
    expected = torch.stack([make_eval_transform(one.preprocessing)(load_image(root / n)) for n in one.val_files()])
    assert torch.equal(x, expected)


def test_given_val_folder_and_limit_per_class(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 5, "b": 4}, prefix="train/")
    make_tree(root, {"a": 2, "b": 3}, prefix="val/", seed=50)
    make_tree(root, {"z": 2}, prefix="test/", seed=90)  # ImageNet-style unlabelled test/ is ignored
    bundle = build_data(cfg_for(root, tmp_path), progress=False)
    assert bundle.split["method"] == "given val folder" and bundle.split["seed"] is None
    assert bundle.val_files() == ["val/a/000.png", "val/a/001.png", "val/b/000.png", "val/b/001.png", "val/b/002.png"]
    assert (bundle.num_train, bundle.num_val) == (9, 5)
    limited = build_data(cfg_for(root, tmp_path, limit_per_class=2), progress=False)
    assert limited.split["counts"] == {"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 2}}
    assert limited.val_files() == ["val/a/000.png", "val/a/001.png", "val/b/000.png", "val/b/001.png"]


def test_train_folder_alone_is_split_automatically(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 10, "b": 10}, prefix="train/")
    bundle = build_data(cfg_for(root, tmp_path), progress=False)
    assert bundle.split["method"] == "stratified holdout" and bundle.num_val == 2
    assert all(n.startswith("train/") for n in bundle.val_files())


# ---------------------------------------------------------------------------------------------
# Archives and the tensor cache


@pytest.mark.parametrize("name, prefix", [("data.tar.gz", "top/"), ("data.tgz", "./"), ("data.tar", "")])
def test_archive_matches_the_folder(tmp_path, name, prefix):
    root = tmp_path / "data"
    make_tree(root, {"a": 4, "b": 4}, prefix="train/")
    make_tree(root, {"a": 2, "b": 2}, prefix="val/", seed=50)
    archive = make_tar(root, tmp_path / name, prefix)
    from_folder = build_data(cfg_for(root, tmp_path), progress=False)
    from_archive = build_data(cfg_for(archive, tmp_path), progress=False)
    assert from_archive.split["source"]["kind"] == "archive"
    assert from_archive.split["source"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [n.removeprefix("top/") for n in from_archive.val_files()] == from_folder.val_files()
    assert torch.equal(all_val(from_archive)[0], all_val(from_folder)[0])
    assert from_archive.preprocessing == from_folder.preprocessing


def test_archive_through_the_loader_path_is_extracted_once(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 4, "b": 4}, size=(20, 16))
    archive = make_tar(root, tmp_path / "d.tar.gz", "top/")
    cfg = cfg_for(archive, tmp_path, pipeline="loader", image_size=16, val_fraction=0.25)
    bundle = build_data(cfg, progress=False)
    extracted = list((tmp_path / "cache" / "extracted").iterdir())
    assert len(extracted) == 1 and (extracted[0] / ".complete").exists()
    assert bundle.split["source"]["kind"] == "archive" and bundle.num_val == 2
    x, _ = all_val(bundle)
    assert x.shape == (2, 3, 16, 16)
    assert build_data(cfg, progress=False).val_files() == bundle.val_files()


def test_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_tree(root, {"a": 6, "b": 6})
    cfg = cfg_for(root, tmp_path)
    first = build_data(cfg, progress=False)
    files = list((tmp_path / "cache" / "tensors").glob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "cache" / "tensors").glob(".*tmp*"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_mod, "decode_source", no_decoding)
    second = build_data(cfg, progress=False)
    assert torch.equal(all_val(second)[0], all_val(first)[0]) and second.preprocessing == first.preprocessing
    # a different decode setting, or different content, is a different cache
    with pytest.raises(AssertionError, match="decoded again"):
        build_data(dataclasses.replace(cfg, image_size=8), progress=False)
    write_image(root / "a" / "000.png", 12345)
    with pytest.raises(AssertionError, match="decoded again"):
        build_data(cfg, progress=False)


def test_auto_pipeline_follows_image_size(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    make_tree(small, {"a": 3, "b": 3}, size=(32, 32))
    make_tree(large, {"a": 3, "b": 3}, size=(80, 60), ext=".jpg")
    assert build_data(cfg_for(small, tmp_path, val_fraction=0.3), progress=False).pipeline == "tensor"
    big = build_data(cfg_for(large, tmp_path, val_fraction=0.3), progress=False)
    assert big.pipeline == "loader"
    assert big.preprocessing == {"pipeline": "loader", "image_size": 224, "resize": 256, "crop": 224, "interpolation": "bilinear",
                                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert build_data(cfg_for(large, tmp_path, val_fraction=0.3, image_size=32), progress=False).pipeline == "tensor"


# ---------------------------------------------------------------------------------------------
# Tensor path: augmentation, resumption, sharding, eval equivalence


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "data"
    make_tree(root, {"a": 17, "b": 13, "c": 11}, size=(12, 12))
    write_image(root / "c" / "wide.png", 77, (20, 14))  # not the native size: resized and center-cropped
    return root


def test_tensor_batches_are_a_function_of_seed_and_epoch(tree, tmp_path):
    cfg = cfg_for(tree, tmp_path, batch_size=8, cutout=4)
    bundle = build_data(cfg, seed=3, progress=False)
    train = bundle.train
    assert len(train) == -(-bundle.num_train // 8) and train.batch_size == 8
    e0 = epoch(train, 0)
    assert same_batches(e0, epoch(train, 0))
    assert same_batches(e0, epoch(build_data(cfg, seed=3, progress=False).train, 0))
    assert not same_batches(e0, epoch(train, 1))
    assert not same_batches(e0, epoch(build_data(cfg, seed=4, progress=False).train, 0))
    for start in (1, 3, len(train)):
        assert same_batches(epoch(train, 0, start), e0[start:])
    labels = torch.cat([y for _, y in e0])
    all_labels = train.labels[train.epoch_indices(0)]
    assert torch.equal(labels, all_labels) and sorted(train.epoch_indices(0).tolist()) == list(range(bundle.num_train))
    x = e0[0][0]
    assert x.dtype == torch.float32 and x.shape == (8, 3, 12, 12)
    with pytest.raises(ValueError, match="start must be an integer in"):
        train.epoch_batches(0, start=len(train) + 1)
    dropped = build_data(dataclasses.replace(cfg, drop_last=True, eval_batch_size=5), seed=3, progress=False)
    assert len(dropped.train) == bundle.num_train // 8 and all(len(y) == 8 for _, y in epoch(dropped.train, 0))
    assert [len(y) for _, y in dropped.val] == [5] * (bundle.num_val // 5) + ([bundle.num_val % 5] if bundle.num_val % 5 else [])


def test_tensor_augmentations_do_what_they_say(tree, tmp_path):
    """Flip only: every image is itself or its mirror; crop only: a shifted window of the zero-padded image."""
    base = build_data(cfg_for(tree, tmp_path, crop_padding=0, flip=False, batch_size=64), progress=False)
    plain = dict(zip(base.train.epoch_indices(0).tolist(), epoch(base.train, 0)[0][0]))
    shift, scale = base.train._shift, base.train._scale
    zero = (0 - shift) * scale  # a zero-padded pixel after normalisation, per channel [1, 3, 1, 1]

    flip = build_data(cfg_for(tree, tmp_path, crop_padding=0, flip=True, batch_size=64), progress=False)
    flipped = 0
    for i, x in zip(flip.train.epoch_indices(0).tolist(), epoch(flip.train, 0)[0][0]):
        assert torch.equal(x, plain[i]) or torch.equal(x, plain[i].flip(-1))
        flipped += not torch.equal(x, plain[i])
    assert 0 < flipped < len(plain)

    crop = build_data(cfg_for(tree, tmp_path, crop_padding=2, flip=False, batch_size=64), progress=False)
    for i, x in zip(crop.train.epoch_indices(0).tolist(), epoch(crop.train, 0)[0][0]):
        padded = zero[0].expand(3, 16, 16).clone()
        padded[:, 2:14, 2:14] = plain[i]
        windows = [padded[:, dy : dy + 12, dx : dx + 12] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(x, w) for w in windows)

    cut = build_data(cfg_for(tree, tmp_path, crop_padding=0, flip=False, cutout=4, batch_size=64), progress=False)
    for i, x in zip(cut.train.epoch_indices(0).tolist(), epoch(cut.train, 0)[0][0]):
        zeroed = (x == 0).all(0)
        assert 4 <= zeroed.sum() <= 16  # a 4x4 square, clipped at the border
        assert torch.equal(x[:, ~zeroed], plain[i][:, ~zeroed])

    cl = build_data(cfg_for(tree, tmp_path, crop_padding=0, flip=False, channels_last=True, batch_size=64), progress=False)
    x_cl = epoch(cl.train, 0)[0][0]
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_cl, epoch(base.train, 0)[0][0])
    assert all_val(cl)[0].is_contiguous(memory_format=torch.channels_last)


def test_shards_are_disjoint_and_equal(tree, tmp_path):
    world = 4
    bundles = [build_data(cfg_for(tree, tmp_path, batch_size=4), seed=1, rank=r, world_size=world, progress=False) for r in range(world)]
    n = bundles[0].num_train
    assert n % world  # the case that needs dropping
    for e in (0, 1):
        shards = [set(b.train.epoch_indices(e).tolist()) for b in bundles]
        assert all(len(s) == n // world for s in shards)
        assert all(not (a & b) for a, b in itertools.combinations(shards, 2))
        assert len(set.union(*shards)) == n - n % world
        assert len({len(b.train) for b in bundles}) == 1  # equal step counts
        assert sum(len(y) for b in bundles for _, y in b.train.epoch_batches(e)) == n - n % world
    dropped = [set(range(n)) - set.union(*[set(b.train.epoch_indices(e).tolist()) for b in bundles]) for e in range(4)]
    assert len(set.union(*dropped)) > n % world  # a different few are dropped each epoch
    val = [b.val.indices().tolist() for b in bundles]
    assert sorted(sum(val, [])) == list(range(bundles[0].num_val))
    assert sum(len(y) for b in bundles for _, y in b.val) == bundles[0].num_val


def test_eval_transform_equals_val_loader_tensor_path(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"a": 6, "b": 6}, prefix="train/")
    # val images of other sizes and modes: the cache resizes and center-crops them to the native 12 px
    for i, (size, kind) in enumerate([((20, 14), "rgb"), ((14, 30), "gray"), ((13, 13), "rgba"), ((12, 12), "palette")]):
        for cls in ("a", "b"):
            write_image(root / "val" / cls / f"{i}.png", 40 + i, size, kind)
    bundle = build_data(cfg_for(root, tmp_path), progress=False)
    assert bundle.pipeline == "tensor" and bundle.preprocessing["resize"] == bundle.preprocessing["crop"] == 12
    prep = json.loads(json.dumps(bundle.preprocessing))
    transform = make_eval_transform(prep)
    x, y = all_val(bundle)
    assert len(x) == 8
    for row, name in enumerate(bundle.val_files()):
        assert torch.equal(transform(load_image(root / name)), x[row]), name
        with Image.open(root / name) as img:
            assert torch.equal(transform(img), x[row]), name  # any PIL mode goes in
    assert y.tolist() == [bundle.classes.index(n.split("/")[1]) for n in bundle.val_files()]
    # mean/std were measured on the training images
    assert all(0.3 < m < 0.7 for m in prep["mean"]) and all(0.2 < s < 0.4 for s in prep["std"])


# ---------------------------------------------------------------------------------------------
# Loader path through real DataLoader workers


def test_loader_path_with_workers(tree, tmp_path):
    cfg = cfg_for(tree, tmp_path, pipeline="loader", image_size=10, workers=2, batch_size=6, cutout=3, val_fraction=0.2)
    bundle = build_data(cfg, seed=5, progress=False)
    train = bundle.train
    assert bundle.pipeline == "loader" and bundle.preprocessing["resize"] == round(10 / 0.875) == 11
    e0 = epoch(train, 0)
    assert [x.shape for x, _ in e0[:1]] == [(6, 3, 10, 10)]
    assert len(e0) == len(train) and sum(len(y) for _, y in e0) == bundle.num_train
    in_process = build_data(dataclasses.replace(cfg, workers=0), seed=5, progress=False).train
    assert same_batches(e0, epoch(in_process, 0))  # independent of the worker count
    assert same_batches(epoch(train, 0, start=2), e0[2:])
    assert not same_batches(e0, epoch(train, 1))
    transform = make_eval_transform(bundle.preprocessing)
    x, _ = all_val(bundle)
    expected = torch.stack([transform(load_image(tree / n)) for n in bundle.val_files()])
    assert torch.equal(x, expected)


# ---------------------------------------------------------------------------------------------
# CIFAR python format: restricted unpickling, download with resume and checksum


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2's cPickle wrote the official batches (str as BINSTRING, numpy.core spelling)."""
    out = bytearray(b"\x80\x02")

    def string(b: bytes) -> None:
        out.extend((b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b))

    def put(o) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                put(k)
                put(v)
            out.extend(b"u")
        elif isinstance(o, str):
            string(o.encode("latin1"))
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                put(v)
            out.extend(b"e")
        elif isinstance(o, np.ndarray):
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")
            string(b"b")
            out.extend(b"\x87R(K\x01(" + b"".join(b"J" + struct.pack("<i", d) for d in o.shape) + b"tcnumpy\ndtype\n")
            string(b"u1")
            out.extend(b"K\x00K\x01\x87R(K\x03")
            string(b"|")
            out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            string(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    put(obj)
    out.extend(b".")
    return bytes(out)


def fake_cifar10(path: Path, per_batch: int = 20) -> tuple[Path, np.ndarray]:
    """A small cifar-10-python.tar.gz of the official layout; returns it and the test batch images (N, 3072)."""
    rng = np.random.default_rng(0)
    files = {"batches.meta": py2_pickle({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072})}
    test = None
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        files[name] = py2_pickle({"batch_label": name, "labels": labels, "data": data, "filenames": [f"img{i}.png" for i in range(per_batch)]})
        test = data
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path, test


class _RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        payload = self.server.payload
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(payload):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        self.wfile.write(payload[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    archive, test_images = fake_cifar10(tmp_path / "served.tar.gz")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.payload, httpd.ranges, httpd.test_images = archive.read_bytes(), [], test_images
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-python.tar.gz"
    httpd.md5 = hashlib.md5(httpd.payload).hexdigest()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_cifar_downloads_verifies_and_uses_the_test_batch(tmp_path, server, monkeypatch):
    spec = dataclasses.replace(cifar_mod.CIFAR["cifar10"], url=server.url, md5=server.md5)
    monkeypatch.setitem(cifar_mod.CIFAR, "cifar10", spec)
    cfg = cfg_for("cifar10", tmp_path, root=str(tmp_path / "root"))
    bundle = build_data(cfg, progress=False)
    assert server.ranges == [None] and (tmp_path / "root" / "cifar-10-python.tar.gz").read_bytes() == server.payload
    assert bundle.pipeline == "tensor" and bundle.classes == [f"class{i}" for i in range(10)]
    assert (bundle.num_train, bundle.num_val) == (100, 20) and bundle.split["method"] == "official test batch"
    assert bundle.val_files()[:2] == ["test_batch/0", "test_batch/1"]
    x, y = all_val(bundle)
    pixels = torch.from_numpy(server.test_images.reshape(-1, 3, 32, 32))
    shift, scale = bundle.val._shift, bundle.val._scale
    assert torch.equal(x, (pixels.float() - shift) * scale) and y.tolist() == [i % 10 for i in range(20)]
    # present now: no second request, and a holdout can be carved from train instead
    holdout = build_data(dataclasses.replace(cfg, cifar_val="holdout", val_fraction=0.2), progress=False)
    assert len(server.ranges) == 1
    assert holdout.split["method"] == "stratified holdout" and (holdout.num_train, holdout.num_val) == (80, 20)
    assert all(not n.startswith("test_batch") for n in holdout.val_files())


def test_download_resumes_a_partial_file(tmp_path, server):
    dest = tmp_path / "cifar-10-python.tar.gz"
    half = len(server.payload) // 2
    dest.with_name(dest.name + ".part").write_bytes(server.payload[:half])
    download(server.url, dest, md5=server.md5, progress=False)
    assert server.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == server.payload and not dest.with_name(dest.name + ".part").exists()
    # a partial file that is in fact complete: the server answers 416, the checksum decides
    other = tmp_path / "again.tar.gz"
    other.with_name(other.name + ".part").write_bytes(server.payload)
    download(server.url, other, md5=server.md5, progress=False)
    assert server.ranges[-1] == f"bytes={len(server.payload)}-" and other.read_bytes() == server.payload


def test_download_checksum_mismatch(tmp_path, server):
    dest = tmp_path / "x.tar.gz"
    with pytest.raises(ChecksumError, match=f"md5 of the file downloaded from {server.url} is {server.md5}, expected 0+"):
        download(server.url, dest, md5="0" * 32, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_cifar_offline_says_where_to_put_the_files(tmp_path, monkeypatch):
    spec = dataclasses.replace(cifar_mod.CIFAR["cifar10"], url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setitem(cifar_mod.CIFAR, "cifar10", spec)
    with pytest.raises(FileNotFoundError, match=r"download failed .*place cifar-10-python.tar.gz \(md5 c58f3.*\) in .*root"):
        build_data(cfg_for("cifar10", tmp_path, root=str(tmp_path / "root")), progress=False)
    with pytest.raises(FileNotFoundError, match="download=False"):
        build_data(cfg_for("cifar10", tmp_path, root=str(tmp_path / "root"), download=False), progress=False)


def test_cifar_archive_with_wrong_checksum_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    fake_cifar10(root / "cifar-10-python.tar.gz")  # not the official bytes
    with pytest.raises(ChecksumError, match="md5 is .* expected c58f30108f718f92721af3b95e74349a"):
        build_data(cfg_for("cifar10", tmp_path, root=str(root)), progress=False)


def test_cifar_extracted_folder_is_checked_file_by_file(tmp_path, monkeypatch):
    archive, _ = fake_cifar10(tmp_path / "fake.tar.gz")
    root = tmp_path / "root"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    with pytest.raises(ChecksumError, match="data_batch_1: md5 is"):
        build_data(cfg_for("cifar10", tmp_path, root=str(root)), progress=False)
    folder = root / "cifar-10-batches-py"
    md5s = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    monkeypatch.setitem(cifar_mod.CIFAR, "cifar10", dataclasses.replace(cifar_mod.CIFAR["cifar10"], file_md5=md5s))
    bundle = build_data(cfg_for("cifar10", tmp_path, root=str(root), limit_per_class=3), progress=False)
    assert (bundle.num_train, bundle.num_val) == (30, 20)  # limit: 3 per class from train, 2 per class in test


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(ValueError, match=r"refusing to load global (__builtin__|builtins)\.print"):
        cifar_mod.load_batch(pickle.dumps({"data": Evil()}, protocol=2), "evil")
    with pytest.raises(ValueError, match="refusing to load global"):
        cifar_mod.load_batch(pickle.dumps({"x": dataclasses.field}), "evil")
    modern = pickle.dumps({"data": np.zeros((2, 3), np.uint8)}, protocol=4)  # numpy._core spelling
    assert cifar_mod.load_batch(modern, "ok")["data"].shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# The shared CIFAR-10 JPEG archive


def test_shared_cifar10_jpeg_archive(tmp_path):
    archive = shared_path("data", "cifar10-train-jpg.tar.gz")
    cfg = cfg_for(archive, tmp_path, limit_per_class=40, batch_size=64)
    bundle = build_data(cfg, progress=False)
    assert bundle.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert bundle.pipeline == "tensor" and bundle.preprocessing["image_size"] == 32
    assert bundle.split["source"]["sha256"] == "8d9ff5bdd3e0e7a88e7fd47015d0fc6f953a79831aee551f9630fe198d008405"
    assert bundle.split["counts"]["val"] == dict.fromkeys(bundle.classes, 4) and bundle.num_train == 360
    assert bundle.val_files()[0].startswith("train/airplane/00")
    mean, std = bundle.preprocessing["mean"], bundle.preprocessing["std"]
    assert all(abs(m - c) < 0.03 for m, c in zip(mean, (0.491, 0.482, 0.447)))  # CIFAR-10's published channel means
    assert all(abs(s - c) < 0.03 for s, c in zip(std, (0.247, 0.243, 0.261)))
    x, y = next(iter(bundle.train))
    assert x.shape == (64, 3, 32, 32) and y.dtype == torch.int64


@pytest.mark.slow
def test_shared_cifar10_full_cache_build_and_reuse(tmp_path, monkeypatch):
    archive = shared_path("data", "cifar10-train-jpg.tar.gz")
    cfg = cfg_for(archive, tmp_path, batch_size=256, workers=None)
    bundle = build_data(cfg, progress=False)
    assert (bundle.num_train, bundle.num_val, bundle.skipped["total"]) == (45_000, 5_000, 0)
    assert bundle.split["counts"]["val"] == dict.fromkeys(bundle.classes, 500)
    monkeypatch.setattr(cache_mod, "decode_source", lambda *a, **k: pytest.fail("decoded again"))
    again = build_data(cfg, progress=False)
    assert again.val_files() == bundle.val_files() and again.preprocessing == bundle.preprocessing
    assert sum(len(y) for _, y in again.train.epoch_batches(0)) == 45_000
