"""One process or many (torchrun + DistributedDataParallel): the model wrappers, rank 0's jobs, and
the records that show replicas stayed in step (weights digests, each rank's shard)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from smallnets import distributed as distr


def on_main(fn: Callable[[], Any], info: distr.DistInfo) -> Any:
    """``fn()`` on rank 0, its result (or its error) on every rank."""
    outcome = error = None
    if info.is_main:
        try:
            outcome = ("ok", fn())
        except (OSError, ValueError) as exc:
            error, outcome = exc, ("error", f"{type(exc).__name__}: {exc}")
    outcome = distr.broadcast_object(outcome, info)
    if error is not None:
        raise error
    if outcome[0] == "error":
        raise RuntimeError(f"rank 0 failed: {outcome[1]}")
    return outcome[1]


def wrap_model(model: nn.Module, info: distr.DistInfo, device: torch.device, *, compile: bool) -> tuple[nn.Module, nn.Module]:
    """(ddp, forward_model): the model's DistributedDataParallel wrapper (the model itself in one
    process) and what the loop calls (torch.compile'd when asked)."""
    ddp: nn.Module = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return ddp, torch.compile(ddp) if compile else ddp


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's parameters: equal on every rank when DDP kept replicas in step.

    (BatchNorm running statistics are per-process: DDP re-broadcasts rank 0's at each forward.)
    """
    h = hashlib.sha256()
    for key, value in sorted(model.named_parameters()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def shard_record(data, rank: int) -> dict:
    """Which training images this process sees in the first epoch (lists kept up to 100k images)."""
    indices = [int(i) for i in data.train.epoch_indices(0)]
    digest = hashlib.sha256(json.dumps(indices).encode()).hexdigest()
    record = {"rank": rank, "count": len(indices), "sha256": digest}
    if data.num_train <= 100_000:
        record["indices"] = indices
    return record
