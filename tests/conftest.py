"""Shared fixtures: the reference material in ../shared (beside the repository)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SMALLNETS_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"reference file {path} is missing (CI must run with ../shared beside the clone)")
        pytest.skip(f"reference file {path} not available (set SMALLNETS_SHARED)")
    return path


@pytest.fixture(scope="session")
def paper_tables() -> dict:
    return json.loads(shared_path("reference", "paper_tables.json").read_text())
