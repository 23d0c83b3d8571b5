"""One cache root for everything smallnets keeps: $SMALLNETS_CACHE, else $XDG_CACHE_HOME/smallnets,
else ~/.cache/smallnets; pretrained weights and decoded data sets both live under it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smallnets._paths import cache_root
from smallnets.data import DataConfig, build_data
from smallnets.data.cache import default_cache_root
from smallnets.pretrained import default_cache_dir, fetch_checkpoint


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A home folder of its own and neither variable set."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SMALLNETS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


def test_the_home_cache_when_nothing_is_set(env):
    assert cache_root() == env / ".cache" / "smallnets"


def test_xdg_cache_home_is_honoured(env, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "smallnets"


def test_smallnets_cache_wins_over_xdg_and_expands_the_home(env, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SMALLNETS_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.setenv("SMALLNETS_CACHE", "~/somewhere")
    assert cache_root() == env / "somewhere"


def test_empty_variables_count_as_unset_and_a_relative_xdg_is_ignored(env, monkeypatch):
    monkeypatch.setenv("SMALLNETS_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_root() == env / ".cache" / "smallnets"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: relative paths are invalid
    assert cache_root() == env / ".cache" / "smallnets"


def test_weights_and_data_share_the_root(env, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "smallnets"
    assert default_cache_dir() == root / "weights"
    assert default_cache_root(None) == root  # the data cache used to ignore XDG_CACHE_HOME
    assert default_cache_root(tmp_path / "given") == tmp_path / "given"  # an explicit cache_dir still wins
    # offline, a URL is looked up under the root's weights/ folder, and the error names where
    with pytest.raises(FileNotFoundError, match="not in the cache") as err:
        fetch_checkpoint("https://example.org/models/w.pth", offline=True)
    assert str(root / "weights") in str(err.value)


def test_a_decoded_data_set_is_cached_under_xdg(env, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(data / cls / f"{i}.png")
    build_data(DataConfig(path=str(data), pipeline="tensor", batch_size=4, workers=0), progress=False)
    assert list((tmp_path / "xdg" / "smallnets" / "tensors").glob("*.safetensors"))
    assert not (env / ".cache").exists()
