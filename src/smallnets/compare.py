"""Side-by-side cost of zoo configurations: params, MACs, size, measured latency, published top-1."""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from smallnets._checks import check_positive
from smallnets._io import atomic_path, atomic_write_text
from smallnets.profiler import profile
from smallnets.registry import list_models, model_info, resolve_knobs

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(?::(?P<knobs>[^@]*))?(?:@(?P<res>\d+))?$")


@dataclass(frozen=True)
class ModelSpec:
    """A zoo configuration: ``name[:knob=value,...][@resolution]``, e.g. ``mobilenet_v1:width_mult=0.5@160``."""

    name: str
    knobs: dict[str, Any]
    resolution: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        m = _SPEC.match(text.strip())
        if not m:
            raise ValueError(f"model spec must look like name[:knob=value,...][@resolution], got {text!r}")
        knobs: dict[str, Any] = {}
        for item in filter(None, (m["knobs"] or "").split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"knob in model spec must be key=value, got {item!r} in {text!r}")
            knobs[key.strip().replace("-", "_")] = parse_value(value.strip())
        resolution = int(m["res"]) if m["res"] is not None else None
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution (after @) must be a positive number of pixels, got {resolution} in {text!r}")
        spec = cls(m["name"], knobs, resolution)
        resolve_knobs(spec.name, spec.knobs)  # fail early on unknown names and knobs
        return spec

    @property
    def input_size(self) -> tuple[int, int, int]:
        c, h, w = model_info(self.name).input_size
        return (c, self.resolution, self.resolution) if self.resolution is not None else (c, h, w)

    @property
    def label(self) -> str:
        text = self.name
        if self.knobs:
            text += ":" + ",".join(f"{k}={v}" for k, v in self.knobs.items())
        if self.resolution is not None:
            text += f"@{self.resolution}"
        return text


def parse_value(text: str) -> Any:
    """'0.5' -> 0.5, '3' -> 3, 'true' -> True, 'none' -> None, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class CompareRow:
    label: str
    name: str
    family: str
    knobs: dict[str, Any]
    input_size: tuple[int, int, int]
    params: int
    macs: int
    size_fp32_bytes: int
    latency_median_ms: float | None
    latency_p90_ms: float | None
    top1: float | None  # published top-1 (%) on `dataset`, None when no paper reports this config
    dataset: str | None
    top1_source: str | None
    baseline: bool = False  # a classic network (AlexNet, VGG, ResNet, ...), not an efficient one


def default_specs() -> list[ModelSpec]:
    """One representative of every efficient family (the classic baselines are added by ``--baselines``)."""
    return [ModelSpec(n, {}) for n in list_models() if model_info(n).representative and not model_info(n).baseline]


def baseline_specs() -> list[ModelSpec]:
    """One representative of every classic family (AlexNet, VGG, GoogLeNet / Inception, ResNet, ...),
    each at its paper's input size."""
    return [ModelSpec(n, {}) for n in list_models() if model_info(n).representative and model_info(n).baseline]


def compare(
    specs: Sequence[ModelSpec | str] | None = None,
    *,
    baselines: bool = False,
    latency: bool = True,
    max_seconds: float = 2.0,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CompareRow]:
    """Profile each configuration (default: one per efficient family) and attach its published
    top-1; ``baselines`` adds one representative of every classic family (those not given already)."""
    check_positive("max_seconds", max_seconds)
    specs = [ModelSpec.parse(s) if isinstance(s, str) else s for s in (specs or default_specs())]
    if baselines:
        given = {(s.name, tuple(sorted(s.knobs.items())), s.input_size) for s in specs}
        specs += [b for b in baseline_specs() if (b.name, (), b.input_size) not in given]
    rows = []
    for i, spec in enumerate(specs, 1):
        if progress:
            progress(f"[{i}/{len(specs)}] {spec.label}")
        info = model_info(spec.name)
        report = profile(
            spec.name,
            spec.input_size,
            latency=latency,
            memory=False,
            warmup=2,
            runs=20,
            max_seconds=max_seconds,
            threads=threads,
            **spec.knobs,
        )
        pub = info.published_for(spec.knobs, spec.input_size)
        lat = report.latency
        rows.append(
            CompareRow(
                label=spec.label,
                name=spec.name,
                family=info.family,
                knobs=dict(spec.knobs),
                input_size=spec.input_size,
                params=report.params,
                macs=report.macs,
                size_fp32_bytes=report.size_bytes["fp32"],
                latency_median_ms=lat.median_ms if lat else None,
                latency_p90_ms=lat.p90_ms if lat else None,
                top1=pub.top1 if pub else None,
                dataset=pub.dataset if pub else None,
                top1_source=pub.source if pub else None,
                baseline=info.baseline,
            )
        )
    return rows


def format_table(rows: Sequence[CompareRow]) -> str:
    header = ("model", "input", "params (M)", "MACs (M)", "size (MB)", "latency (ms)", "top-1 (%)")
    body = []
    for r in rows:
        top1 = f"{r.top1:.1f}" + ("" if r.dataset == "imagenet" else f" ({r.dataset})") if r.top1 is not None else "-"
        body.append(
            (
                r.label + (" (classic)" if r.baseline else ""),
                f"{r.input_size[1]}x{r.input_size[2]}",
                f"{r.params / 1e6:.2f}",
                f"{r.macs / 1e6:,.0f}",
                f"{r.size_fp32_bytes / 1e6:.1f}",
                f"{r.latency_median_ms:.1f}" if r.latency_median_ms is not None else "-",
                top1,
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)] if body else [len(h) for h in header]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)]
    return "\n".join(lines)


def _cpu() -> dict[str, Any]:
    """The CPU's model name and the vector / matrix extensions that decide int8 and bf16 speed (Linux: /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu": platform.processor() or None, "cpu_flags": None}
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"cpu": name, "cpu_flags": [f for f in wanted if f in flags]}


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        **_cpu(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(rows: Sequence[CompareRow], path) -> None:
    payload = {"environment": environment(), "rows": [asdict(r) for r in rows]}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def plot_comparison(rows: Sequence[CompareRow], path, title: str | None = None) -> None:
    """Published top-1 against MACs (log scale), bubble area proportional to parameters.

    A second panel puts the same accuracy against the latency measured here, when measured.
    Configurations without a published ImageNet top-1 are listed under the chart.
    """
    # A Figure on its own Agg canvas: no pyplot, so the caller's backend and pyplot state are left alone.
    import matplotlib
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rated = [r for r in rows if r.top1 is not None and r.dataset == "imagenet"]
    unrated = [r.label for r in rows if r not in rated]
    with_latency = [r for r in rated if r.latency_median_ms is not None]
    panels = 2 if with_latency else 1
    fig = Figure(figsize=(7 * panels, 5.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)
    families = sorted({r.family for r in rows})
    palette = matplotlib.colormaps["tab10" if len(families) <= 10 else "tab20"]
    colors = {f: palette(i % palette.N) for i, f in enumerate(families)}
    max_params = max((r.params for r in rated), default=1)
    fig_renderer = fig.canvas.get_renderer()

    def place_labels(ax, labels) -> None:
        """Each label above its marker, or below / right / left of it where that would overlap one placed before."""
        placed = []
        for text, radius in sorted(labels, key=lambda t: -t[0].xy[1]):
            for offset, ha, va in (((0, radius + 2), "center", "bottom"), ((0, -radius - 2), "center", "top"),
                                   ((radius + 3, 0), "left", "center"), ((-radius - 3, 0), "right", "center")):  # fmt: skip
                text.set_position(offset)
                text.set_ha(ha)
                text.set_va(va)
                box = text.get_window_extent(fig_renderer)
                if not any(box.overlaps(other) for other in placed):
                    break
            else:
                text.set_position((0, radius + 2))
                text.set_ha("center")
                text.set_va("bottom")
                box = text.get_window_extent(fig_renderer)
            placed.append(box)

    def scatter(ax, xs, xlabel):
        labels = []
        for r, x in zip(rated if xs is None else with_latency, xs or [r.macs / 1e6 for r in rated]):
            area = 60 + 1400 * r.params / max_params
            ax.scatter(x, r.top1, s=area, color=colors[r.family], alpha=0.55, edgecolors="black", linewidths=0.6,
                       marker="s" if r.baseline else "o")  # fmt: skip
            radius = (area / 3.1416) ** 0.5  # points
            text = ax.annotate(f"{r.label} ({r.params / 1e6:.1f}M)", (x, r.top1), xytext=(0, radius + 2), textcoords="offset points", fontsize=7)
            labels.append((text, radius))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.margins(x=0.12, y=0.12)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("published ImageNet top-1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        return labels

    drawn = [(axes[0][0], scatter(axes[0][0], None, "mult-adds (millions, log scale)"))]
    axes[0][0].set_title("Accuracy vs operations (bubble area = parameters)")
    if panels == 2:
        drawn.append((axes[0][1], scatter(axes[0][1], [r.latency_median_ms for r in with_latency], "measured latency, batch 1 (ms, log scale)")))
        env = environment()
        axes[0][1].set_title(f"Accuracy vs latency ({env['threads']} threads, torch {env['torch']})")
    classic = {r.family for r in rows if r.baseline}
    handles = [Line2D([], [], marker="s" if f in classic else "o", ls="", color=colors[f], label=f + (" (classic)" if f in classic else ""))
               for f in families]  # fmt: skip
    ncol = min(len(families), 4 * panels)  # what fits the figure's width
    legend_rows = -(-len(families) // ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.02))
    if title:
        fig.suptitle(title)
    note = f"no published ImageNet top-1: {', '.join(unrated)}" if unrated else ""
    fig.text(0.01, 0.005, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * legend_rows, 1, 1))
    for ax, labels in drawn:  # after the layout: the axes' final size decides what overlaps
        place_labels(ax, labels)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
