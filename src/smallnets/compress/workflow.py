"""Shrinking a trained run into a new run: what ``smallnets prune`` (and the other shrink commands)
do around the algorithms — read the source run, shrink its best weights, fine-tune them on the
run's own data and validation split (optionally with the source model as teacher), and measure
every stage the same way: parameters, MACs, bytes on disk, CPU latency at batch 1 and 32, and
validation top-1, as a table, JSON and a plot in the new run directory.

The source run is only read: the result is a new run directory, claimed exclusively like any
training run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from smallnets._io import atomic_write_text
from smallnets.rundir import RunDir

LATENCY_BATCHES = (1, 32)


def input_size_of(model: nn.Module) -> tuple[int, int, int]:
    """(channels, side, side) the model was trained at: its sidecar's preprocessing, else its spec's resolution."""
    meta = getattr(model, "smallnets_meta", None) or {}
    pre = meta.get("preprocessing") or {}
    side = pre.get("image_size") or pre.get("crop") or model.spec.resolution
    side = side[0] if isinstance(side, (list, tuple)) else side
    return (model.spec.in_chans, int(side), int(side))


def measure_stage(stage: str, model: nn.Module, input_size: tuple[int, int, int], *, file: str | os.PathLike | None = None,
                  top1: float | None = None, latency: bool = True, threads: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One row of a shrink table. ``bytes``: the size of ``file`` on disk (measured, never estimated;
    None without a file). Latency: fp32, NCHW, the median of timed runs after warm-up (profiler.measure_latency)."""
    from smallnets.profiler import count_macs, count_params, measure_latency

    row: dict[str, Any] = {"stage": stage, "params": count_params(model), "macs": count_macs(model, input_size),
                           "bytes": Path(file).stat().st_size if file is not None else None, "file": str(file) if file else None}  # fmt: skip
    for batch in LATENCY_BATCHES:
        row[f"latency_b{batch}_ms"] = (
            measure_latency(model, input_size, batch_size=batch, warmup=3, runs=15, max_seconds=5.0, threads=threads).median_ms if latency else None
        )
    row["top1"] = top1
    return row


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table, each figure with its ratio to the first row."""
    cols = [("params", "params"), ("macs", "MACs"), ("bytes", "bytes on disk"), ("latency_b1_ms", "latency b1 (ms)"),
            ("latency_b32_ms", "latency b32 (ms)"), ("top1", "val top-1 (%)")]  # fmt: skip
    base = rows[0] if rows else {}
    lines = ["| stage | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        cells = []
        for key, _ in cols:
            v = row.get(key)
            if v is None:
                cells.append("—")
            elif key == "top1":
                cells.append(f"{v:.2f}")
            else:
                text = f"{v:.2f}" if isinstance(v, float) else f"{v:,}"
                ratio = f" ({v / base[key]:.2f}x)" if row is not base and base.get(key) else ""
                cells.append(text + ratio)
        lines.append(f"| {row['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike, stem: str, rows: list[dict], *, title: str, settings: Mapping[str, Any]) -> tuple[Path, Path]:
    """``RUN/STEM.json`` (settings, rows, environment) and ``RUN/STEM.png`` (the plot), written atomically."""
    from smallnets.compare import environment
    from smallnets.plots import plot_shrink_table

    run_dir = Path(run_dir)
    report = {"title": title, "settings": dict(settings), "rows": rows, "environment": environment()}
    json_path = run_dir / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    png = plot_shrink_table(rows, run_dir / f"{stem}.png", title=title)
    return json_path, png


def _source(source: str | os.PathLike) -> RunDir:
    run = RunDir(source)
    if not RunDir.is_run(run.path):
        raise ValueError(f"source must be a run directory written by smallnets train (with config.json), got {str(source)!r}")
    if run.weights() is None:
        raise ValueError(f"source run {str(run.path)!r} holds no weights (best.safetensors or last.safetensors)")
    return run


def _finetune_config(run: RunDir, *, epochs: int, name: str | None, out: str | os.PathLike | None, distill: bool,
                     train_overrides: Mapping[str, Any], data_overrides: Mapping[str, Any]):  # fmt: skip
    """The source run's configuration for fine-tuning a shrunk model: same data, split seed and
    pipeline; ``epochs`` epochs at a tenth of the source's learning rate unless told otherwise;
    no pretrained weights or resume; the source as teacher with ``distill``."""
    from smallnets.training.config import ModelConfig, RunConfig

    past = run.read_back()
    cfg = past.config
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"finetune_epochs must be an integer >= 1, got {epochs!r}")
    source_path = ((past.split or {}).get("source") or {}).get("path")
    data_path = cfg.data.path if str(cfg.data.path) in ("cifar10", "cifar100") or not source_path else source_path
    train = {"epochs": epochs, "name": name, "out": str(out) if out is not None else str(run.path.parent), "pretrained": None,
             "freeze": None, "teacher": str(run.path) if distill else None, "warmup_epochs": 0}  # fmt: skip
    lr = past.resolved.get("lr")
    if lr is not None and "lr" not in train_overrides:
        train["lr"] = float(lr) / 10
    unknown = sorted(set(train_overrides) - {f.name for f in dataclasses.fields(type(cfg.train))})
    if unknown:
        raise ValueError(f"train_overrides must name training options, got {', '.join(map(repr, unknown))}")
    train_cfg = dataclasses.replace(cfg.train, **{**train, **train_overrides})
    data_cfg = dataclasses.replace(cfg.data, path=data_path, **data_overrides)
    return RunConfig(model=ModelConfig(), data=data_cfg, train=train_cfg)


def prune_run(
    source: str | os.PathLike,
    *,
    target_macs: float | None = None,
    ratio: float | None = None,
    criterion: str = "l1",
    scope: str = "per_layer",
    max_ratio: float | None = None,
    protect: Sequence[str] = (),
    finetune_epochs: int = 1,
    distill: bool = False,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    latency: bool = True,
    taylor_batches: int = 8,
    multiple_of: int = 1,
    recalibrate_batches: int = 20,
) -> dict[str, Any]:
    """Prune a run's best weights (``compress.structured.prune``), fine-tune them for
    ``finetune_epochs`` on the run's data (with the unpruned model as teacher when ``distill``) into
    a new run directory, and measure source, pruned and fine-tuned models alike. Returns the report
    (also ``NEW/prune.json`` and ``NEW/prune.png``)."""
    from smallnets.compress.structured import prune, recalibrate_batchnorm
    from smallnets.training.trainer import Trainer
    from smallnets.zoo import load_weights

    run = _source(source)
    config = _finetune_config(run, epochs=finetune_epochs, name=name, out=out, distill=distill,
                              train_overrides=dict(train_overrides or {}), data_overrides=dict(data_overrides or {}))  # fmt: skip
    weights = run.weights()
    model = load_weights(weights).eval()
    size = input_size_of(model)
    data = None
    if criterion == "taylor":  # gradients on the training images the run saw, through its own pipeline
        from itertools import islice

        from smallnets.data import build_data

        bundle = build_data(config.data, seed=config.train.seed, progress=False)
        data = list(islice(iter(bundle.train), taylor_batches))
    pruned, prune_report = prune(model, target_macs=target_macs, ratio=ratio, criterion=criterion, scope=scope, max_ratio=max_ratio, protect=protect,
                                 input_size=size, data=data, multiple_of=multiple_of)  # fmt: skip
    pruned.smallnets_config = {**pruned.smallnets_config, "name": (model.smallnets_meta or {}).get("model")}
    trainer = Trainer(config, model=pruned)
    recalibrated = 0
    if recalibrate_batches:  # the parent's BN statistics do not fit the thinner layers: measure them again first
        recalibrated = recalibrate_batchnorm(trainer.model, trainer.data.train.epoch_batches(0), max_batches=recalibrate_batches,
                                             channels_last=config.train.channels_last)  # fmt: skip
    before_finetune = trainer.validate().top1
    result = trainer.fit()
    new_run = RunDir(result.run_dir)
    tuned = load_weights(new_run.weights()).eval()
    source_top1 = _best_top1(run)
    rows = [
        measure_stage("unpruned", model, size, file=weights, top1=source_top1, latency=latency),
        measure_stage(f"pruned (BN recalibrated on {recalibrated} images)" if recalibrated else "pruned", pruned.eval(), size, file=new_run.weights(), top1=before_finetune, latency=latency),
        measure_stage(f"pruned + {finetune_epochs} epoch(s) fine-tune" + (" (distilled)" if distill else ""), tuned, size,
                      file=new_run.weights(), top1=result.best_top1, latency=latency),  # fmt: skip
    ]
    rows[1]["bytes"] = None  # the pruned weights before fine-tuning were never written: the same shapes as the row below
    settings = {"source": str(run.path), "weights": str(weights), "target_macs": target_macs, "ratio": ratio, "criterion": criterion,
                "scope": scope, "max_ratio": max_ratio, "protect": list(protect), "multiple_of": multiple_of, "bn_recalibration_images": recalibrated, "finetune_epochs": finetune_epochs, "distill": distill,
                "input_size": list(size), "prune": prune_report.to_dict()}  # fmt: skip
    title = f"{(model.smallnets_meta or {}).get('model') or 'model'} pruned to {prune_report.macs_ratio:.2f} of its MACs ({criterion}, {scope})"
    json_path, png = write_report(new_run.path, "prune", rows, title=title, settings=settings)
    return {"run_dir": str(new_run.path), "rows": rows, "settings": settings, "json": str(json_path), "png": str(png), "status": result.status}


def _best_top1(run: RunDir) -> float | None:
    """The best validation top-1 the run recorded (what its best.safetensors scored)."""
    info = run.read_run_info() or {}
    if info.get("best_top1") is not None:
        return float(info["best_top1"])
    path = run.file("metrics.jsonl")
    if not path.is_file():
        return None
    values = [json.loads(line).get("val_top1") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    values = [v for v in values if v is not None]
    return max(values) if values else None
