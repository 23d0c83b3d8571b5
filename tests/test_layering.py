"""The package's import structure: no import circle (imports inside functions count too), and the
layers of the README's Architecture section hold (the registry builds no model, arch/ has no torch)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import import_graph as ig  # noqa: E402

PACKAGE = ig.PACKAGE
import_graph, _cycles, _imports = ig.import_graph, ig.cycles, ig.imports

# The package face re-exports the public names; importing it is not a dependency of the layers.
FACES = {"smallnets"}


def test_there_is_no_import_circle():
    graph = {k: v - FACES for k, v in import_graph().items() if k not in FACES}
    assert _cycles(graph) == []


def test_the_registry_and_the_specs_build_no_model():
    graph = import_graph()
    for name in ["smallnets.registry", *[m for m in graph if m.startswith("smallnets.arch")]]:
        assert not any(m.startswith("smallnets.models") or m == "smallnets.zoo" for m in graph[name]), (name, sorted(graph[name]))
    for path in (PACKAGE / "arch").glob("*.py"):  # specs are plain values: no torch
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m == "torch" or m.startswith("torch.") for m in names), path.name


def test_the_models_know_no_registry_or_factory():
    graph = import_graph()
    for name in [m for m in graph if m.startswith("smallnets.models")]:
        assert not graph[name] & {"smallnets.registry", "smallnets.zoo", "smallnets.pretrained", "smallnets.checkpoint"}, (name, sorted(graph[name]))


def test_the_graph_reader_sees_function_level_imports(tmp_path):
    # a circle hidden behind an import inside a function is still a circle
    graph = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert _cycles(graph) == [["a", "b"]]
    src = tmp_path / "smallnets" / "x.py"
    src.parent.mkdir()
    src.write_text("def f():\n    from smallnets.y import g\n    return g\n")
    old, ig.SRC = ig.SRC, tmp_path
    try:
        assert _imports(src) == {"smallnets.y"}
        assert _imports(src, {"smallnets.y.g"}) == {"smallnets.y.g"}
    finally:
        ig.SRC = old


if __name__ == "__main__":
    pytest.main([__file__])
