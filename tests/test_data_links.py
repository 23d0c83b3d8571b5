"""Symbolic links inside a class-folder tree, made for real here: loops, links between classes, links leaving the folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smallnets.data import DataConfig, build_data

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symbolic links")


def make_tree(root: Path, classes=("bird", "cat", "dog"), per_class: int = 4, seed: int = 0) -> Path:
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.random.default_rng(seed + 100 * c + i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    return root


def build(path: Path, tmp_path: Path, **kw):
    """build_data and the warnings it gave."""
    kw.setdefault("pipeline", "tensor")
    cfg = DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), batch_size=4, workers=0, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = build_data(cfg, progress=False)
    return bundle, " ".join(str(w.message) for w in caught)


def per_class(bundle) -> dict[str, int]:
    counts = bundle.split["counts"]
    return {c: counts["train"][c] + counts["val"][c] for c in bundle.classes}


@pytest.mark.parametrize("pipeline", ["tensor", "loader"])
def test_a_link_to_a_parent_folder_is_a_loop_skipped_with_a_warning(tmp_path, pipeline):
    data = make_tree(tmp_path / "data")
    (data / "cat" / "up").symlink_to("..")
    bundle, warned = build(data, tmp_path, pipeline=pipeline)
    assert per_class(bundle) == {"bird": 4, "cat": 4, "dog": 4}  # not cat: 4 + every other class's files
    assert not any("/up/" in n for n in bundle.val_files())
    assert "symlink loop" in warned and "cat/up" in warned


def test_links_to_other_parts_of_the_folder_never_relabel_their_files(tmp_path):
    data = make_tree(tmp_path / "data")
    (data / "cat" / "dogs").symlink_to(data / "dog", target_is_directory=True)  # a folder of another class
    (data / "cat" / "stolen.png").symlink_to(Path("..") / "dog" / "000.png")  # a file of another class
    (data / "cat" / "again.png").symlink_to("001.png")  # a duplicate within the class: could land in train and val
    bundle, warned = build(data, tmp_path)
    assert per_class(bundle) == {"bird": 4, "cat": 4, "dog": 4}
    assert bundle.skipped["by_reason"] == {"link to a path already listed under its own name": 3}
    assert all(name in warned for name in ("cat/dogs", "cat/stolen.png", "cat/again.png"))
    # a link into a hidden folder of the tree is the only way its files are listed: it is followed
    pool = data / ".pool"
    pool.mkdir()
    os.replace(data / "bird" / "003.png", pool / "b.png")
    (data / "bird" / "003.png").symlink_to(Path("..") / ".pool" / "b.png")
    bundle, _ = build(data, tmp_path)
    assert per_class(bundle)["bird"] == 4


def test_links_leaving_the_folder_are_followed_only_when_asked(tmp_path):
    data = make_tree(tmp_path / "data")
    extra = make_tree(tmp_path / "elsewhere", classes=("more",), per_class=3, seed=50)
    (data / "cat" / "more").symlink_to(extra / "more", target_is_directory=True)
    (data / "dog" / "outside.png").symlink_to(extra / "more" / "000.png")
    (extra / "more" / "loop").symlink_to(extra, target_is_directory=True)  # a loop outside the folder
    (extra / "more" / "back").symlink_to(data / "bird", target_is_directory=True)  # and a way back into it
    bundle, warned = build(data, tmp_path)
    assert per_class(bundle) == {"bird": 4, "cat": 4, "dog": 4}
    assert "link outside the data folder" in warned and "follow_links=True" in warned and "cat/more" in warned
    bundle, warned = build(data, tmp_path, follow_links=True)
    assert per_class(bundle) == {"bird": 4, "cat": 4 + 3, "dog": 4 + 1}  # labelled by the folder the link is in
    assert "cat/more/loop (symlink loop" in warned and "cat/more/back (link to a path already listed" in warned
    with pytest.raises(ValueError, match="follow_links must be True or False, got 'yes'"):
        DataConfig(path=str(data), follow_links="yes")


def test_class_folders_that_are_all_links_out_say_how_to_follow_them(tmp_path):
    store = make_tree(tmp_path / "store", classes=("a", "b"))
    data = tmp_path / "data"
    data.mkdir()
    for c in ("a", "b"):
        (data / c).symlink_to(store / c, target_is_directory=True)
    with pytest.raises(ValueError, match=r"2 link\(s\) outside the data folder were not followed.*follow_links=True"):
        build(data, tmp_path)
    bundle, _ = build(data, tmp_path, follow_links=True)
    assert per_class(bundle) == {"a": 4, "b": 4}
