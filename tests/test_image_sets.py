"""Image sets of `smallnets eval --split all` and `smallnets predict`, read from real folders and archives made here:
symbolic links (loops, links between classes, links leaving the folder) and truncated archives, through
image_sets' functions and the real command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smallnets.cli import main
from smallnets.data import make_eval_transform
from smallnets.data.image_sets import archive_batches, find_images, list_labelled
from smallnets.training import RunConfig, Trainer

CLASSES = ("bird", "cat", "dog")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: the machine's cores are shared
links = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symbolic links")


def make_tree(root: Path, classes=CLASSES, per_class: int = 4, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: 16 px PNGs of random pixels with a colour per class."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.random.default_rng(seed + 100 * c + i).integers(0, 100, (16, 16, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    return root


def make_tar(src: Path, dest: Path) -> Path:
    mode = "w:gz" if dest.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(dest, mode) as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=p.relative_to(src).as_posix(), recursive=False)
    return dest


def looped(root: Path) -> Path:
    """A tree with a loop (cat/up -> ..), links to another class's folder and file, and a duplicate in the class."""
    make_tree(root)
    (root / "cat" / "up").symlink_to("..")
    (root / "cat" / "dogs").symlink_to(root / "dog", target_is_directory=True)
    (root / "cat" / "stolen.png").symlink_to(Path("..") / "dog" / "000.png")
    (root / "cat" / "again.png").symlink_to("001.png")
    return root


def with_link_out(root: Path, elsewhere: Path) -> Path:
    """A tree with a folder link and a file link leading outside it (and a loop out there)."""
    make_tree(root)
    extra = make_tree(elsewhere, classes=("more",), per_class=3, seed=50)
    (root / "cat" / "more").symlink_to(extra / "more", target_is_directory=True)
    (root / "dog" / "outside.png").symlink_to(extra / "more" / "000.png")
    (extra / "more" / "loop").symlink_to(extra, target_is_directory=True)
    return root


def per_class(files) -> dict[str, int]:
    return {c: files.labels.count(i) for i, c in enumerate(files.classes)}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real command line, in this process (an uncaught exception fails the test with its traceback)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def eval_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``smallnets eval ARGS`` on the CPU, without a confusion-matrix PNG."""
    return run_cli(capsys, "eval", *args, "--device", "cpu", "--confusion", "")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny real run (one epoch) on a 3-class tree: a run directory with weights, sidecar and split.json."""
    base = tmp_path_factory.mktemp("imagesets")
    data = make_tree(base / "data")
    config = RunConfig.from_dict({
        "model": {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True},
        "data": {"path": str(data), "batch_size": 4, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(base / "cache")},
        "train": {"epochs": 1, "lr": 0.1, "precision": "fp32", "progress": False, "out": str(base / "runs"), "name": "run",
                  "threads": 1, "device": "cpu"},
    })  # fmt: skip
    threads = torch.get_num_threads()
    try:
        yield {"run": Trainer(config).fit().run_dir, "data": data}
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# image_sets' functions
# ---------------------------------------------------------------------------------------------


@links
def test_list_labelled_never_gives_a_file_another_class_through_a_link(tmp_path):
    data = looped(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listing only records; it does not warn
        files = list_labelled(data)
    assert per_class(files) == {"bird": 4, "cat": 4, "dog": 4}  # not cat: 4 + every other class's files
    assert all(n.split("/")[0] == files.classes[label] for n, label in zip(files.names, files.labels))
    assert not any("/up/" in n or "/dogs/" in n for n in files.names)
    assert files.skiplog.counts == {"symlink loop": 1, "link to a path already listed under its own name": 3}
    assert any(e.startswith("cat/up (symlink loop") for e in files.skiplog.examples)


@links
def test_list_labelled_follows_links_out_of_the_folder_only_when_asked(tmp_path):
    data = with_link_out(tmp_path / "data", tmp_path / "elsewhere")
    files = list_labelled(data)
    assert per_class(files) == {"bird": 4, "cat": 4, "dog": 4}
    assert files.skiplog.counts == {"link outside the data folder (follow_links=True follows it)": 2}
    files = list_labelled(data, follow_links=True)
    assert per_class(files) == {"bird": 4, "cat": 4 + 3, "dog": 4 + 1}  # labelled by the folder the link is in
    assert files.skiplog.counts == {"symlink loop": 1}  # cat/more/loop
    # class folders that are all links out: said how to follow them
    store = make_tree(tmp_path / "store", classes=("a", "b"))
    only = tmp_path / "only-links"
    only.mkdir()
    for c in ("a", "b"):
        (only / c).symlink_to(store / c, target_is_directory=True)
    with pytest.raises(ValueError, match=r"2 link\(s\) outside the data folder were not followed.*follow_links=True"):
        list_labelled(only)
    assert per_class(list_labelled(only, follow_links=True)) == {"a": 4, "b": 4}


@links
def test_find_images_lists_every_file_once_under_its_own_name(tmp_path):
    data = looped(tmp_path / "data")
    with pytest.warns(UserWarning, match=r"skipped 4 file\(s\).*symlink loop.*cat/up"):
        found = find_images(data)
    assert found == [os.path.join(data, c, f"{i:03d}.png") for c in CLASSES for i in range(4)]
    out = with_link_out(tmp_path / "out", tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match=r"link outside the data folder"):
        assert len(find_images(out)) == 12
    with pytest.warns(UserWarning, match=r"symlink loop.*cat/more/loop"):
        assert len(find_images(out, follow_links=True)) == 12 + 3 + 1
    only = tmp_path / "only"
    only.mkdir()
    (only / "x.png").symlink_to(data / "bird" / "000.png")
    with pytest.raises(ValueError, match=r"contains no image files.*1 link\(s\) outside.*not followed"):
        find_images(only)
    assert find_images(only / "x.png") == [str(only / "x.png")]  # a file named on its own: read as named


def _cut_inside_a_header(whole: Path, dest: Path) -> Path:
    with tarfile.open(whole) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
    dest.write_bytes(whole.read_bytes()[: files[len(files) // 2].offset + 100])
    return dest


def test_a_truncated_archive_is_refused_at_listing_and_at_reading(tmp_path):
    tree = make_tree(tmp_path / "tree")
    whole = make_tar(tree, tmp_path / "whole.tar")
    bad = _cut_inside_a_header(whole, tmp_path / "cut.tar")
    with pytest.raises(ValueError, match=r"cut\.tar'.*truncated or corrupt"):
        list_labelled(bad)  # tarfile alone ends the member list there silently
    # the archive cut short between listing and reading (a download still being written, say)
    files = list_labelled(whole)
    transform = make_eval_transform({"resize": 16, "crop": 16, "mean": [0.5] * 3, "std": [0.25] * 3})
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"whole\.tar'.*truncated or corrupt"):
        list(archive_batches(whole, files.names, transform, 4))


# ---------------------------------------------------------------------------------------------
# The command line: smallnets eval --split all, smallnets predict
# ---------------------------------------------------------------------------------------------


@links
def test_eval_split_all_counts_each_image_once_in_its_own_class(run, tmp_path, capsys):
    data = looped(tmp_path / "data")
    code, out, err = eval_cli(capsys, str(run["run"]), "--data", str(data), "--split", "all", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["count"] == 12 and got["support"] == {c: 4 for c in CLASSES}
    assert got["skipped"]["by_reason"] == {"symlink loop": 1, "link to a path already listed under its own name": 3}
    assert "warning:" in err and "cat/up (symlink loop" in err
    out_data = with_link_out(tmp_path / "out", tmp_path / "elsewhere")
    code, out, err = eval_cli(capsys, str(run["run"]), "--data", str(out_data), "--split", "all", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["count"] == 12 and got["support"] == {c: 4 for c in CLASSES} and "link outside the data folder" in err


@links
def test_predict_lists_each_image_once(run, tmp_path, capsys):
    data = looped(tmp_path / "data")
    code, out, err = run_cli(capsys, "predict", str(run["run"]), str(data), "--json", "--device", "cpu")
    assert code == 0, err
    assert [p["path"] for p in json.loads(out)] == [os.path.join(data, c, f"{i:03d}.png") for c in CLASSES for i in range(4)]
    assert "warning:" in err and "cat/up (symlink loop" in err


@pytest.mark.parametrize("cut", ["inside a header", "inside a member's data"])
def test_eval_split_all_on_a_plain_tar_cut_short_exits_2_naming_it(run, tmp_path, capsys, cut):
    whole = make_tar(run["data"], tmp_path / "whole.tar")
    with tarfile.open(whole) as tar:
        m = [m for m in tar.getmembers() if m.isfile()][-3]
    bad = tmp_path / "cut.tar"
    bad.write_bytes(whole.read_bytes()[: m.offset + 100 if cut == "inside a header" else m.offset_data + m.size // 2])
    code, out, err = eval_cli(capsys, str(run["run"]), "--data", str(bad), "--split", "all")
    assert code == 2 and not out, out
    assert "smallnets eval: error:" in err and "cut.tar'" in err and "truncated or corrupt" in err
    code, _, err = eval_cli(capsys, str(run["run"]), "--data", str(whole), "--split", "all")
    assert code == 0, err  # the whole one reads


def test_eval_split_all_on_a_truncated_tar_gz_exits_2_without_a_traceback(run, tmp_path):
    whole = make_tar(run["data"], tmp_path / "whole.tar.gz")
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])  # a download cut short
    res = subprocess.run([sys.executable, "-m", "smallnets", "eval", str(run["run"]), "--data", str(bad), "--split", "all",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300, env=ENV)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr and not res.stdout, res.stderr
    assert "cut.tar.gz'" in res.stderr and "truncated or corrupt" in res.stderr


def test_eval_says_when_the_run_s_split_record_cannot_check_content(run, tmp_path, capsys):
    code, out, err = eval_cli(capsys, str(run["run"]), "--data", str(run["data"]), "--split", "val")
    assert code == 0, err
    assert "; the same files as the run's split.json" in out and "could not be checked" not in out
    old = shutil.copytree(run["run"], tmp_path / "old-run")  # a split.json from before file contents were recorded
    split = json.loads((old / "split.json").read_text())
    del split["val_files_content_sha256"]
    (old / "split.json").write_text(json.dumps(split))
    code, out, err = eval_cli(capsys, str(old), "--data", str(run["data"]), "--split", "val")
    assert code == 0, err
    data_line = next(line for line in out.splitlines() if line.startswith("data "))
    assert "the same files as the run's split.json" not in data_line
    assert "the same file names as the run's split.json" in data_line and "content could not be checked" in data_line
