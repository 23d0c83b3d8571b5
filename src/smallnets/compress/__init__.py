"""Shrink a trained model: structured pruning (physically smaller convolutions), unstructured
magnitude pruning, Deep Compression (k-means weight sharing + Huffman coding, Han et al. 2016) and
the compressed file format that holds the result."""

from __future__ import annotations

import importlib
from typing import Any

# The public names and the submodule each lives in. Loaded on first use: ``checkpoint`` reads the
# compressed format through ``compress.packed`` and must not pull the pruning tracer in with it.
_EXPORTS = {
    "prune": "structured", "PruneReport": "structured", "trace_channels": "structured", "ChannelGraph": "structured",
    "rebuild_pruned": "structured", "recalibrate_batchnorm": "structured",
    "prune_magnitude": "sparsity", "magnitude_masks": "sparsity", "apply_masks": "sparsity", "sparsity_report": "sparsity",
    "cubic_sparsity": "sparsity", "GradualPruning": "sparsity",
    "share_weights": "sharing", "SharedWeights": "sharing", "CentroidFineTuning": "sharing",
    "write_packed": "packed", "read_packed": "packed", "packed_summary": "packed", "is_packed": "packed",
    "prune_run": "workflow", "compress_run": "deep",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallnets.compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"smallnets.compress.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
