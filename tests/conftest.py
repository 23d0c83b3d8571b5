"""Shared fixtures: the facts in tests/data (in the repository) and the large binary fixtures in
../shared (beside it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SMALLNETS_SHARED", REPO.parent / "shared"))
DATA = REPO / "tests" / "data"  # paper tables and key/shape manifests, with their sources (README.md there)

torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_path(*parts: str, module_level: bool = False) -> Path:
    """A binary fixture of ../shared: skips the test (or the whole module) with how to get it; fails under CI."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"reference file {path} is missing (CI must run with ../shared beside the clone)", pytrace=False)
        pytest.skip(f"binary fixture {path} not available: put the project's shared/ folder beside the clone "
                    f"or set SMALLNETS_SHARED to it (the facts in tests/data are checked without it)", allow_module_level=module_level)  # fmt: skip
    return path


@pytest.fixture
def interop_fixtures() -> Path:
    """The folder of binary interop fixtures (reference weights and logits) in ../shared."""
    return shared_path("reference", "interop", "torchvision__squeezenet1_1.weights.safetensors").parent


def load_facts(name: str) -> dict:
    """A JSON file of tests/data: these travel with the repository and never skip."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def paper_tables() -> dict:
    return load_facts("paper_tables.json")


def tiny_trained_run(tmp_path_factory) -> Path:
    """A real one-epoch run of MobileNetV2 0.35x (CIFAR stem) on a small image folder: the source
    run of the shrink commands' tests (prune, compress)."""
    from smallnets.training import RunConfig, Trainer
    from test_train import make_image_folder

    images = make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)
    out = tmp_path_factory.mktemp("runs")
    cfg = RunConfig.from_dict({
        "model": {"name": "mobilenet_v2", "width_mult": 0.35, "cifar": True},
        "data": {"path": str(images), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor",
                 "cache_dir": str(tmp_path_factory.mktemp("cache"))},
        "train": {"epochs": 1, "lr": 0.05, "precision": "fp32", "progress": False, "out": str(out), "name": "source"},
    })  # fmt: skip
    return Trainer(cfg).fit().run_dir


def file_snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (but a lock) and its bytes: to show a command left a run untouched."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}
