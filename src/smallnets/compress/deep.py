"""Deep Compression of a trained run (Han, Mao and Dally, ICLR 2016): magnitude pruning with
retraining, k-means weight sharing with centroid fine-tuning, Huffman coding; each stage written to
a file and measured from it, as in the paper's Table 1 (and SqueezeNet's Table 2).

``compress_run`` (``smallnets compress RUN``) reads the source run only and makes one new folder::

    NEW/prune/            run directory of the pruning fine-tune (GradualPruning hook)
    NEW/share/            run directory of the centroid fine-tune (CentroidFineTuning hook)
    NEW/pruned.sncz       the pruned weights at full precision, zeros stored sparsely (lossless)
    NEW/shared.sncz       the shared weights: codebooks + fixed-width indices, no Huffman coding
    NEW/compressed.sncz   the same weights with Huffman-coded index and position streams
    NEW/compress.json     settings, rows (bytes on disk, ratio to fp32, validation top-1 ...), environment
    NEW/compress.png      the rows as bar charts
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smallnets.compress import workflow

__all__ = ["compress_run", "format_ratios"]

WEIGHTS_NOTE = (
    "each phase's model is its run's last.safetensors (the end of its schedule: with gradual pruning the "
    "best-validation epoch can be an earlier, less sparse one) and its top-1 the last metrics record's val_top1; "
    "the fp32 row is the source's best.safetensors (else last) and its run.json best_top1"
)


def _check_args(prune: object, bits: object, fc_bits: object, huffman: object, finetune_epochs: object, latency: object) -> None:
    if isinstance(prune, bool) or not isinstance(prune, (int, float)) or not 0 <= prune < 1:
        raise ValueError(f"prune must be in [0, 1), got {prune!r}")
    for name, value in (("bits", bits), ("fc_bits", fc_bits)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
            raise ValueError(f"{name} must be an integer in 1..16, got {value!r}")
    if not isinstance(finetune_epochs, int) or isinstance(finetune_epochs, bool) or finetune_epochs < 1:
        raise ValueError(f"finetune_epochs must be an integer >= 1, got {finetune_epochs!r}")
    for name, value in (("huffman", huffman), ("latency", latency)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")


def _zeros(model: nn.Module) -> tuple[int, int]:
    """(zero weights, weights) over the prunable weights (conv and linear), as GradualPruning counts them."""
    from smallnets.compress.sparsity import prunable_weights

    weights = prunable_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def _meta(model: nn.Module, stage: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar a .sncz records: the phase's weights' own classes and preprocessing, the stage in ``extra``."""
    from smallnets.checkpoint import weights_meta

    meta = model.smallnets_meta
    return weights_meta(model, classes=meta.get("classes"), preprocessing=meta.get("preprocessing"),
                        extra={"deep_compression": stage, **settings})  # fmt: skip


def _last_top1(result) -> float | None:
    return (result.last or {}).get("val_top1")


def compress_run(
    source: str | os.PathLike,
    *,
    prune: float = 0.6,
    bits: int = 8,
    fc_bits: int = 5,
    huffman: bool = True,
    finetune_epochs: int = 1,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Deep Compression of a run's best weights into the new folder ``out/name`` (default: the
    source's parent / ``<source name>-compressed``; never an existing one).

    Phase 1: magnitude pruning to ``prune`` of the conv and linear weights on Zhu & Gupta's cubic
    schedule while fine-tuning for ``finetune_epochs`` (``GradualPruning``, updated every step, the
    target reached at three quarters of the steps); ``pruned.sncz``. Phase 2: per-layer k-means to
    2**bits values (2**fc_bits for linear layers), then ``finetune_epochs`` of centroid fine-tuning
    (``CentroidFineTuning``); ``shared.sncz`` and, with ``huffman``, ``compressed.sncz``. Both
    fine-tunes use the source's data and validation split at a tenth of its learning rate (unless
    ``train_overrides`` says otherwise), without EMA (the hooks' zeros and codebooks do not reach
    EMA weights). Returns the report, also written to ``NEW/compress.json`` / ``compress.png``.
    """
    from smallnets.training.config import check_train_config

    _check_args(prune, bits, fc_bits, huffman, finetune_epochs, latency)
    train_overrides, data_overrides = dict(train_overrides or {}), dict(data_overrides or {})
    if "ema" in train_overrides:
        raise ValueError("ema is set by compress itself (off: the pruning and sharing hooks do not reach EMA weights), "
                         f"got ema={train_overrides['ema']!r}")  # fmt: skip
    run = workflow._source(source)
    if name is not None and (not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..")):
        raise ValueError(f"name must be a folder name (no path separators), got {name!r}")
    new = Path(out if out is not None else run.path.parent) / (name or f"{run.path.name}-compressed")
    configs = {}
    for phase in ("prune", "share"):
        cfg = workflow._finetune_config(run, epochs=finetune_epochs, name=phase, out=new, distill=False,
                                        train_overrides=train_overrides, data_overrides=data_overrides)  # fmt: skip
        configs[phase] = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ema=False))
        check_train_config(configs[phase].train)  # a bad training flag is refused before any folder is made
    if new.exists():
        raise FileExistsError(f"{str(new)!r} exists: compress writes a new folder and never overwrites one; choose another --name or --out")
    new.parent.mkdir(parents=True, exist_ok=True)
    new.mkdir()  # exclusive: a second compress with this name fails here
    try:
        return _compress(run, new, configs, prune=prune, bits=bits, fc_bits=fc_bits, huffman=huffman,
                         finetune_epochs=finetune_epochs, latency=latency)  # fmt: skip
    except BaseException:
        if not any(p.is_file() for p in new.rglob("*")):  # a start that failed before writing anything leaves nothing
            for folder in sorted(new.rglob("*"), reverse=True):
                folder.rmdir()
            new.rmdir()
        raise


def _compress(run, new: Path, configs: dict, *, prune: float, bits: int, fc_bits: int, huffman: bool, finetune_epochs: int,
              latency: bool) -> dict[str, Any]:  # fmt: skip
    from smallnets.compress.packed import packed_summary, write_packed
    from smallnets.compress.sharing import CentroidFineTuning, share_weights
    from smallnets.compress.sparsity import GradualPruning
    from smallnets.rundir import RunDir
    from smallnets.training.device import cpu_threads
    from smallnets.training.trainer import Trainer
    from smallnets.zoo import load_weights

    source_weights = run.weights()
    model = load_weights(source_weights).eval()
    size = workflow.input_size_of(model)
    settings: dict[str, Any] = {"source": str(run.path), "weights": str(source_weights), "prune": prune, "bits": bits,
                                "fc_bits": fc_bits, "huffman": huffman, "finetune_epochs": finetune_epochs,
                                "input_size": list(size), "weights_used": WEIGHTS_NOTE}  # fmt: skip
    stage_settings = {"source": str(run.path), "prune": prune, "bits": bits, "fc_bits": fc_bits}

    # phase 1: prune while fine-tuning; every step an update of the schedule (cheap next to the step)
    pruning = GradualPruning(prune, begin=0.0, end=0.75, frequency=1)
    result = Trainer(configs["prune"], model=copy.deepcopy(model), hooks=[pruning]).fit()
    prune_dir = RunDir(result.run_dir)
    settings["runs"] = {"prune": str(prune_dir.path)}
    if result.status != "finished":
        return {"run_dir": str(new), "rows": [], "settings": settings, "json": None, "png": None, "status": result.status}
    pruned = load_weights(prune_dir.last).eval()
    zeros, total = _zeros(pruned)
    assert zeros == round(prune * total), f"the pruned weights are {zeros / total:.6f} sparse, scheduled {prune}"
    settings["sparsity"] = {"zeros": zeros, "weights": total, "fraction": zeros / total}
    pruned_file = write_packed(new / "pruned.sncz", pruned, _meta(pruned, "pruned", stage_settings), huffman=False)

    # phase 2: share, fine-tune the centroids (zeros stay zero), then code
    shared_model, shared = share_weights(pruned, bits=bits, fc_bits=fc_bits)
    share_trainer = Trainer(configs["share"], model=shared_model, hooks=[CentroidFineTuning(shared)])
    share_result = share_trainer.fit()
    share_dir = RunDir(share_result.run_dir)
    settings["runs"]["share"] = str(share_dir.path)
    if share_result.status != "finished":
        return {"run_dir": str(new), "rows": [], "settings": settings, "json": None, "png": None, "status": share_result.status}
    tuned = load_weights(share_dir.last).eval()
    params = dict(tuned.named_parameters())
    for key, layer in shared.items():
        weight = params[key].detach()
        assert bool((weight[~layer.mask] == 0).all()), f"{key}: a pruned weight is no longer zero"
        distinct = int(torch.unique(weight[weight != 0]).numel())
        assert distinct <= 2**layer.bits, f"{key}: {distinct} distinct values, more than 2**{layer.bits}"
    settings["shared"] = shared.summary()
    shared_file = write_packed(new / "shared.sncz", tuned, _meta(tuned, "shared", stage_settings), shared=shared, huffman=False)

    source_top1 = workflow._best_top1(run)
    rows = [
        workflow.measure_stage("fp32", model, size, file=source_weights, top1=source_top1, latency=latency),
        workflow.measure_stage("pruned", pruned, size, file=pruned_file, top1=_last_top1(result), latency=latency),
        workflow.measure_stage("shared", tuned, size, file=shared_file, top1=_last_top1(share_result), latency=latency),
    ]
    if huffman:
        coded_file = write_packed(new / "compressed.sncz", tuned, _meta(tuned, "Huffman-coded", stage_settings), shared=shared, huffman=True)
        decoded = load_weights(coded_file).eval()
        expected = tuned.state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in decoded.state_dict().items()), "compressed.sncz must decode to the shared weights"
        # the decoded weights in the share run's own model, scored on its validation split as its epochs were
        share_trainer.model.load_state_dict(decoded.state_dict())
        with cpu_threads(configs["share"].train.threads):
            coded_top1 = share_trainer.validate().top1
        assert coded_top1 == rows[-1]["top1"], f"decoding is lossless, yet top-1 {coded_top1} != {rows[-1]['top1']}"
        rows.append(workflow.measure_stage("Huffman-coded", decoded, size, file=coded_file, top1=coded_top1, latency=latency))
    for row in rows:
        row["ratio_to_fp32"] = rows[0]["bytes"] / row["bytes"]
        row["sparsity"] = zeros / total if row is not rows[0] else _zeros(model)[0] / total
    settings["files"] = {Path(r["file"]).name: packed_summary(r["file"])["parts"] for r in rows[1:]}
    name_of = (model.smallnets_meta or {}).get("model") or "model"
    title = (f"{name_of} Deep Compression: {prune:.0%} pruned, {bits}-bit conv / {fc_bits}-bit fc shared"
             + (", Huffman-coded" if huffman else "") + f" ({rows[-1]['ratio_to_fp32']:.1f}x smaller)")  # fmt: skip
    json_path, png = workflow.write_report(new, "compress", rows, title=title, settings=settings)
    return {"run_dir": str(new), "rows": rows, "settings": settings, "json": str(json_path), "png": str(png), "status": "finished"}


def format_ratios(rows: list[dict[str, Any]]) -> str:
    """``compression (fp32 bytes / stage bytes): pruned 2.1x, shared 7.4x, Huffman-coded 8.9x``."""
    return "compression (fp32 bytes / stage bytes): " + ", ".join(f"{r['stage']} {r['ratio_to_fp32']:.2f}x" for r in rows[1:])
