"""Training figures: learning curves from per-epoch records and confusion matrices, as PNG files.

matplotlib is imported inside the functions and drives a ``Figure`` on an Agg canvas directly,
so importing smallnets neither imports matplotlib nor changes its global backend or pyplot state.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smallnets._io import atomic_path

__all__ = ["plot_confusion", "plot_learning_curves", "plot_shrink_table"]

_LABEL_CHARS = 24  # class names longer than this are shortened on the axes


def _png_path(out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in .png, got {str(out)!r}")
    return out


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path, dpi: int) -> Path:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"records must be a list of dicts or an existing metrics .jsonl file, got {str(path)!r}")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path}:{n} is not a JSON line: {err}") from None
    return records


def _epoch_records(records: Sequence[Any]) -> list[Mapping]:
    """Records in epoch order; a resumed run may log an epoch twice, and the last record wins."""
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"records[{i}] must be a dict, got {type(r).__qualname__}")
    if not any(r.get("epoch") is not None for r in records):
        return list(records)  # no epoch numbers: plot in logging order, numbered from 1
    by_epoch = {r["epoch"]: r for r in records if r.get("epoch") is not None}  # summary lines without an epoch are skipped
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: Sequence[Mapping], key: str) -> np.ndarray:
    values = []
    for i, r in enumerate(records):
        v = r.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"records[{i}][{key!r}] must be a number or None, got {v!r}")
        values.append(math.nan if v is None else float(v))
    return np.asarray(values, dtype=float)


def plot_learning_curves(
    records: Sequence[Mapping[str, Any]] | str | os.PathLike,
    out_png: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Loss and accuracy (train and validation) and the learning rate against epoch, as a PNG.

    ``records`` are per-epoch dicts (``epoch, train_loss, train_acc, val_loss, val_top1, val_top5,
    lr, images_per_s, elapsed_s``; any may be missing or None) or the path of a metrics .jsonl file
    with one such dict per line.
    """
    out = _png_path(out_png)
    if isinstance(records, (str, os.PathLike)):
        records = _read_jsonl(Path(records))
    if isinstance(records, Mapping) or not isinstance(records, Sequence):
        raise ValueError(f"records must be a list of dicts or a metrics .jsonl path, got {type(records).__qualname__}")
    records = _epoch_records(records)
    if not records:
        raise ValueError("records must hold at least one epoch record, got none")
    epochs = _series(records, "epoch") if "epoch" in records[0] else np.arange(1, len(records) + 1, dtype=float)
    marker = "o" if len(records) <= 40 else None  # dots help read short runs; long runs are lines

    fig = _new_figure(8.0, 8.5)
    grid = fig.add_gridspec(3, 1, height_ratios=(3, 3, 1.4))
    ax_loss = fig.add_subplot(grid[0])
    ax_acc = fig.add_subplot(grid[1], sharex=ax_loss)
    ax_lr = fig.add_subplot(grid[2], sharex=ax_loss)

    def draw(ax, key: str, label: str, color: str, style: str = "-") -> np.ndarray | None:
        y = _series(records, key)
        if np.isnan(y).all():
            return None
        ax.plot(epochs, y, style, color=color, marker=marker, markersize=3, linewidth=1.6, label=label)
        return y

    def finish(ax, ylabel: str, drawn: list) -> None:
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if any(y is not None for y in drawn):
            ax.legend(loc="best", fontsize=9)
        else:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="gray")

    losses = [draw(ax_loss, "train_loss", "train", "tab:blue"), draw(ax_loss, "val_loss", "validation", "tab:orange")]
    ax_loss.set_title("Loss", loc="left", fontsize=11)
    finish(ax_loss, "loss", losses)

    top1 = _series(records, "val_top1")
    accs = [
        draw(ax_acc, "train_acc", "train top-1", "tab:blue"),
        draw(ax_acc, "val_top1", "validation top-1", "tab:orange"),
        draw(ax_acc, "val_top5", "validation top-5", "tab:orange", "--"),
    ]
    known = np.concatenate([a[~np.isnan(a)] for a in accs if a is not None] or [np.zeros(0)])
    percent = known.size > 0 and known.max() > 1.0  # fractions (0-1) or percentages, as logged
    if not np.isnan(top1).all():
        best = int(np.nanargmax(top1))
        ax_acc.plot(epochs[best], top1[best], "*", color="tab:red", markersize=12, zorder=5)
        span = np.nanmax(epochs) - np.nanmin(epochs)
        side = (epochs[best] - np.nanmin(epochs)) / span if span > 0 else 0.5
        ax_acc.annotate(  # aligned away from the nearer edge so the note stays inside the axes
            f"best {top1[best]:.{1 if percent else 3}f} @ epoch {epochs[best]:g}", (epochs[best], top1[best]),
            xytext=(0, -18), textcoords="offset points", fontsize=8, color="tab:red",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            ha="right" if side > 0.8 else "left" if side < 0.2 else "center",
        )
    ax_acc.set_title("Accuracy", loc="left", fontsize=11)
    finish(ax_acc, "accuracy" if known.size == 0 else "accuracy (%)" if percent else "accuracy (fraction)", accs)

    lrs = [draw(ax_lr, "lr", "learning rate", "tab:green")]
    finish(ax_lr, "learning rate", lrs)
    if ax_lr.get_legend() is not None:
        ax_lr.get_legend().remove()  # one line: the y label says what it is
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.set_xlabel("epoch")
    if np.all(np.isnan(epochs) | (epochs == np.round(epochs))):
        from matplotlib.ticker import MaxNLocator

        ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_acc):
        ax.tick_params(labelbottom=False)

    notes = []
    speed = _series(records, "images_per_s")
    if not np.isnan(speed).all():
        notes.append(f"median {np.nanmedian(speed):,.0f} images/s")
    elapsed = _series(records, "elapsed_s")
    if not np.isnan(elapsed).all():
        notes.append(f"{np.nanmax(elapsed) / 60:,.1f} min elapsed")
    if notes:
        ax_lr.set_title(", ".join(notes), loc="right", fontsize=8, color="dimgray")
    fig.suptitle(title or f"Learning curves ({len(records)} epochs)", fontsize=13)
    return _save(fig, out, dpi=120)


# ---------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def plot_confusion(
    matrix: Any,
    classes: Sequence[str] | None,
    out_png: str | os.PathLike,
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Heat map of a confusion matrix (rows: true class, columns: predicted class) as a PNG.

    ``matrix`` is a square list of lists, numpy array or tensor of counts. With ``normalize``
    each row is shown as percent of its true class (recall on the diagonal). Cells are labelled
    up to 20 classes; beyond that the colours carry it and the class names shrink (readable up
    to about 100 classes).
    """
    out = _png_path(out_png)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False, got {normalize!r}")
    if hasattr(matrix, "detach"):  # a torch tensor, without importing torch here
        matrix = matrix.detach().cpu().numpy()
    try:
        counts = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"matrix must be a square 2-D array of counts: {err}") from None
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"matrix must be a square 2-D array of counts, got shape {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("matrix must hold finite counts >= 0")
    n = counts.shape[0]
    if classes is None:
        classes = [str(i) for i in range(n)]
    if isinstance(classes, str) or len(classes) != n:
        raise ValueError(f"classes must name the matrix's {n} classes, got {classes!r}"[:300])
    labels = [_short(str(c)) for c in classes]

    total = counts.sum()
    row_sums = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0) * 100 if normalize else counts
    vmax = 100.0 if normalize else max(counts.max(), 1.0)

    # Heat map side in inches: 0.45 a cell up to 20 classes, then growing slower (100 classes: ~18 in).
    side = min(max(min(0.45 * n, 9.0) + 0.11 * max(n - 20, 0), 3.5), 20.0)
    cell_pt = side * 72 / n
    label_fs = float(np.clip(cell_pt * 0.55, 4.5, 10))
    label_room = 0.6 * label_fs / 72 * max(len(s) for s in labels) + 0.9  # inches for the tick labels and axis name
    fig = _new_figure(side + label_room + 1.6, side + label_room + 1.0)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    if n > 30:  # vertical names pack tighter
        ax.set_xticks(range(n), labels, fontsize=label_fs, rotation=90, ha="center")
    else:
        ax.set_xticks(range(n), labels, fontsize=label_fs, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels, fontsize=label_fs)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(length=2 if n > 30 else 3.5)
    if n <= 20:
        text_fs = float(np.clip(cell_pt * 0.3, 6, 10))
        for i in range(n):
            for j in range(n):
                if counts[i, j] == 0:
                    continue  # blank means none: keeps the off-diagonal readable
                text = f"{shown[i, j]:.0f}%" + (f"\n{counts[i, j]:g}" if n <= 10 else "") if normalize else f"{counts[i, j]:g}"
                color = "white" if shown[i, j] > 0.55 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=text_fs, color=color, linespacing=1.1)
    bar = fig.colorbar(image, ax=ax, shrink=0.5 if n > 30 else 0.8 if n > 10 else 0.9, pad=0.02)
    bar.set_label("% of the true class" if normalize else "count")

    accuracy = np.trace(counts) / total * 100 if total else math.nan
    summary = f"{n} classes, {total:,.0f} samples, accuracy {accuracy:.1f}%" + (", rows sum to 100%" if normalize else "")
    ax.set_title(summary, fontsize=9, color="dimgray")
    fig.suptitle(title or "Confusion matrix", fontsize=13)
    return _save(fig, out, dpi=110)


# ---------------------------------------------------------------------------------------------
# Before / after tables of a shrunk model
# ---------------------------------------------------------------------------------------------

SHRINK_METRICS = (  # (key, axis label, lower is better)
    ("params", "parameters", True),
    ("macs", "MACs (mult-adds)", True),
    ("bytes", "bytes on disk", True),
    ("latency_b1_ms", "CPU latency, batch 1 (ms)", True),
    ("latency_b32_ms", "CPU latency, batch 32 (ms)", True),
    ("top1", "validation top-1 (%)", False),
)


def plot_shrink_table(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike, title: str | None = None, dpi: int = 110) -> Path:
    """One bar chart per metric (params, MACs, bytes on disk, latency at batch 1 and 32, top-1), a bar
    per row (``row["stage"]``), each labelled with its value and its ratio to the first row."""
    out = _png_path(out_png)
    if not rows:
        raise ValueError("rows must hold at least one stage, got none")
    metrics = [m for m in SHRINK_METRICS if any(r.get(m[0]) is not None for r in rows)]
    # stage names are wrapped, not cut: two rows may differ only in their last words
    labels = [textwrap.fill(str(r.get("stage", i)), 30, max_lines=3, placeholder="…") for i, r in enumerate(rows)]
    lines = max(label.count("\n") + 1 for label in labels)
    fig = _new_figure(3.2 * len(metrics) + 0.6, (0.3 + 0.2 * lines) * len(rows) + 1.6)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(rows))
    for ax, (key, label, _) in zip(axes, metrics):
        values = [r.get(key) for r in rows]
        base = values[0]
        shown = [float(v) if v is not None else 0.0 for v in values]
        ax.barh(y, shown, color=["#8da0cb"] + ["#66c2a5"] * (len(rows) - 1))
        for yi, v in zip(y, values):
            if v is None:
                continue
            text = f"{v:.1f}" if key == "top1" else (f"{v:.3g}" if isinstance(v, float) else f"{v:,}")
            if key != "top1" and base:
                text += f" ({v / base:.2f}x)"
            ax.text(v, yi, " " + text, va="center", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(0, max(shown) * 1.6 if max(shown) > 0 else 1)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out, dpi)
