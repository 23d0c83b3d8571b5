"""``smallnets pick``: the zoo configurations inside a budget (MACs, parameters, bytes, latency),
ranked by the best accuracy evidence there is.

Candidates are the configurations the papers published an accuracy for (every ``Published``
record of the registry: a model, its knobs and input size), every point of the sweeps given
(their measured validation accuracy) and the families' knob grid (:data:`KNOB_GRID`: the
multipliers and input sizes the papers sweep, with no accuracy figure of their own). At ``resolution`` (default: each configuration's own) the
exact counts come from the profiler (built on the meta device: nothing is allocated); latency is
measured on this machine (batch 1, fp32 eager, the same measurement as ``smallnets profile``)
only for configurations inside the count limits, and cached (counts too) in the cache folder's ``pick.json``
(keyed by configuration, input size, torch version and threads). The ranking keeps the evidence
apart, because a CIFAR-10 accuracy measured here and a published ImageNet one do not compare:
measured points first (by their validation top-1; one network measured by several sweeps is one
row, the mean of its measurements), then published ones (by the paper's top-1,
dataset named), then the grid's (largest MACs first: within a family the bigger network inside the
budget is the usual bet; ``--data`` measures it). A budget nothing meets gets an error naming the nearest candidates and by how
much each misses.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smallnets._io import atomic_write_text

__all__ = ["GRID_RESOLUTIONS", "KNOB_GRID", "Candidate", "parse_amount", "pick"]

_UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_amount(name: str, text: str | float | int, *, bytes_: bool = False) -> float:
    """``50M`` -> 5e7, ``1.5G`` -> 1.5e9, ``300k``; with ``bytes_`` a trailing B too: ``2MB``, ``500kB`` (SI units)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMG]?)" + ("B?" if bytes_ else "") + r"\s*", str(text))
        if not m:
            unit = "bytes, e.g. 2MB, 500kB" if bytes_ else "a count, e.g. 50M, 1.5G, 300k"
            raise ValueError(f"{name} must be {unit}, got {text!r}")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {text!r}")
    return value


@dataclass
class Candidate:
    name: str
    knobs: dict[str, Any]
    input_size: tuple[int, int, int]
    evidence: str  # "measured" | "published" | "none" (the knob grid's)
    top1: float | None
    source: str
    dataset: str
    params: int = 0
    macs: int = 0
    fp32_bytes: int = 0
    latency_ms: float | None = None
    misses: dict[str, float] = field(default_factory=dict)  # limit -> value / limit, for those exceeded
    measured_top1: float | None = None  # with --data: trained here briefly
    run_dir: str | None = None
    measurements: list[float] = field(default_factory=list)  # measured: each sweep point's top-1 (several sweeps, one network)

    @property
    def label(self) -> str:
        knobs = ",".join(f"{k}={v}" for k, v in self.knobs.items() if k != "cifar")
        return f"{self.name}{':' + knobs if knobs else ''}@{self.input_size[1]}"


# The knobs pick explores beyond the published configurations, each as its paper sweeps it.
KNOB_GRID: dict[str, dict[str, tuple]] = {
    "mobilenet_v1": {"width_mult": (0.25, 0.5, 0.75, 1.0)},  # MobileNetV1 Table 6 and Figures 4-5 (alpha x rho)
    "mobilenet_v2": {"width_mult": (0.35, 0.5, 0.75, 1.0, 1.4)},  # MobileNetV2 Figure 5 (0.35-1.4 x 96-224 px)
    "shufflenet_v2": {"width_mult": (0.5, 1.0, 1.5, 2.0)},  # ShuffleNet V2 Table 8
    "squeezenet": {"squeeze_ratio": (0.125, 0.25, 0.5, 0.75, 1.0)},  # SqueezeNet Figure 3(a)
}
# Input sizes explored for configurations whose own is 224 px when no --resolution is given:
# MobileNetV1's resolution multiplier (Table 7).
GRID_RESOLUTIONS = (224, 192, 160, 128)


def _knob_key(name: str, knobs: Mapping[str, Any], size: Sequence[int]) -> str:
    from smallnets.registry import model_info, resolve_knobs

    info = model_info(name)
    return json.dumps([info.family, info.fixed, resolve_knobs(name, knobs), list(size)], sort_keys=True, default=str)


def _grid(resolution: int | None, grid: Mapping[str, Mapping[str, Sequence[Any]]]) -> list[Candidate]:
    import itertools

    from smallnets.profiler import default_input_size
    from smallnets.registry import model_info, resolve_knobs

    out = []
    for name, axes in grid.items():
        info = model_info(name)
        resolve_knobs(name, {k: v[0] for k, v in axes.items()})  # a knob the model lacks is named here
        for combo in itertools.product(*axes.values()):
            knobs = dict(zip(axes, combo))
            own = default_input_size(name, knobs)
            if resolution is not None:
                sizes = [(own[0], resolution, resolution)]
                if resolution <= 64 and "cifar" in info.knobs:
                    knobs["cifar"] = True
            else:
                sizes = [(own[0], r, r) for r in GRID_RESOLUTIONS] if own[1:] == (224, 224) else [own]
            out += [Candidate(name=name, knobs=dict(knobs), input_size=size, evidence="none", top1=None,
                              source="knob grid: no accuracy figure", dataset="") for size in sizes]  # fmt: skip
    return out


def _published(resolution: int | None) -> list[Candidate]:
    from smallnets.profiler import default_input_size
    from smallnets.registry import list_models, model_info

    out, seen = [], set()
    for name in list_models():
        info = model_info(name)
        for rec in info.published:
            knobs = dict(rec.knobs)
            size = tuple(rec.input_size) if rec.input_size else default_input_size(name, knobs)
            if resolution is not None:
                size = (size[0], resolution, resolution)
                if resolution <= 64 and "cifar" in info.knobs:
                    knobs["cifar"] = True  # small images: the CIFAR stem (what smallnets train would use)
            key = (info.family, json.dumps(model_info(name).fixed, sort_keys=True, default=str), json.dumps(knobs, sort_keys=True), size)
            if key in seen:  # the same network under two registry names (efficientnet / efficientnet_b0)
                continue
            seen.add(key)
            out.append(Candidate(name=name, knobs=knobs, input_size=size, evidence="published", top1=rec.top1, source=rec.source,
                                 dataset=rec.dataset))  # fmt: skip
    return out


def _measured(sweep_dirs: Sequence[str | os.PathLike]) -> list[Candidate]:
    out = []
    for d in sweep_dirs:
        f = Path(d) / "sweep.json"
        if not f.is_file():
            raise FileNotFoundError(f"sweeps must name sweep directories (holding sweep.json), got {os.fspath(d)!r}")
        data = json.loads(f.read_text())
        for row in data.get("rows", []):
            if row.get("top1") is None or row.get("params") is None:
                continue
            cfg = json.loads((Path(d) / row["id"] / "sweep_point.json").read_text())["config"]
            model = dict(cfg["model"])
            name = model.pop("name")
            model.pop("spec", None)
            out.append((row.get("epochs"), Candidate(name=name, knobs=model, input_size=tuple(row["input_size"]), evidence="measured", top1=row["top1"],
                                 source=f"sweep {data.get('name')} point {row['id']} ({row.get('epochs')} epochs)", dataset="your data",
                                 params=row["params"], macs=row["macs"], fp32_bytes=row["fp32_bytes"], latency_ms=row.get("latency_ms"),
                                 run_dir=os.fspath(Path(d) / row["id"]), measurements=[row["top1"]])))  # fmt: skip
    return _merge_measured(out)


def _merge_measured(cands: list[tuple[Any, Candidate]]) -> list[Candidate]:
    """One candidate per network and schedule: the same configuration at the same input size trained
    for as many epochs by several sweeps (MobileNetV1's α = 0.75 is Table 6's point and Table 5's
    narrow network) becomes one row whose top-1 is the mean of the measurements, every one of them
    named in its source. Other schedules stay rows of their own."""
    groups: dict[tuple, list[Candidate]] = {}
    for epochs, c in cands:
        groups.setdefault((_knob_key(c.name, c.knobs, c.input_size), epochs), []).append(c)
    out = []
    for same in groups.values():
        first = same[0]
        if len(same) > 1:
            first.source = f"mean of {len(same)}: " + "; ".join(f"{c.source}: {c.top1:.1f}" for c in same)
            first.measurements = [m for c in same for m in c.measurements]
            first.top1 = sum(first.measurements) / len(first.measurements)
            first.latency_ms = next((c.latency_ms for c in same if c.latency_ms is not None), None)
        out.append(first)
    return out


def _cache_path() -> Path:
    from smallnets._paths import cache_root

    return cache_root() / "pick.json"


def _key(c: Candidate, extra: Mapping[str, Any]) -> str:
    return json.dumps({"name": c.name, "knobs": c.knobs, "input": list(c.input_size), **extra}, sort_keys=True, default=str)


def _count(c: Candidate, cache: dict) -> None:
    import torch

    from smallnets.profiler import count_macs, count_params
    from smallnets.zoo import create_model

    key = _key(c, {"what": "counts"})
    if key not in cache:
        with torch.device("meta"):
            net = create_model(c.name, **c.knobs)
        n = sum(p.numel() for p in net.parameters())
        cache[key] = {"params": count_params(net), "macs": count_macs(net, c.input_size), "fp32_bytes": 4 * n}
    c.params, c.macs, c.fp32_bytes = (cache[key][k] for k in ("params", "macs", "fp32_bytes"))


def _latency(c: Candidate, cache: dict) -> None:
    import torch

    from smallnets.profiler import measure_latency
    from smallnets.zoo import create_model

    key = _key(c, {"what": "latency", "torch": torch.__version__, "threads": torch.get_num_threads()})
    if key not in cache:
        net = create_model(c.name, **c.knobs).eval()
        cache[key] = measure_latency(net, c.input_size, batch_size=1, runs=20, max_seconds=5.0).median_ms
    c.latency_ms = cache[key]


EVIDENCE_ORDER = ("measured", "published", "none")
LIMITS = (("max_macs", "macs", "MACs"), ("max_params", "params", "parameters"), ("max_bytes", "fp32_bytes", "fp32 bytes"),
          ("max_latency_ms", "latency_ms", "latency ms"))  # fmt: skip


def pick(*, max_macs=None, max_params=None, max_bytes=None, max_latency_ms=None, resolution: int | None = None,
         sweeps: Sequence[str | os.PathLike] = (), top: int = 10, published: bool = True,
         grid: Mapping[str, Mapping[str, Sequence[Any]]] | None = KNOB_GRID) -> dict:  # fmt: skip
    """The candidates inside every limit given, ranked (see the module docstring). ``grid``: the
    knob values to explore per model name (default :data:`KNOB_GRID`; None or {} for none).
    Returns ``{"candidates": [...], "considered": N, "limits": {...}}``; raises ValueError naming
    the nearest candidates when none fits."""
    from smallnets._checks import check_int

    limits = {}
    for arg, value in (("max_macs", max_macs), ("max_params", max_params), ("max_bytes", max_bytes), ("max_latency_ms", max_latency_ms)):
        if value is not None:
            limits[arg] = parse_amount(arg, value, bytes_=arg == "max_bytes") if arg != "max_latency_ms" else parse_amount(arg, value)
    if resolution is not None:
        check_int("resolution", resolution, minimum=8)
    check_int("top", top)
    cands = _measured(sweeps) + (_published(resolution) if published else [])
    if grid:
        known = {_knob_key(c.name, c.knobs, c.input_size) for c in cands if c.evidence == "published"}
        cands += [c for c in _grid(resolution, grid) if _knob_key(c.name, c.knobs, c.input_size) not in known]
    if not cands:
        raise ValueError("no candidates: give sweeps or keep the published configurations")
    cache_file = _cache_path()
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    for c in cands:
        if c.evidence != "measured":
            _count(c, cache)
        c.misses = {arg: getattr(c, attr) / limits[arg] for arg, attr, _ in LIMITS[:3] if arg in limits and getattr(c, attr) > limits[arg]}
    if "max_latency_ms" in limits:
        for c in cands:
            if not c.misses and c.latency_ms is None:
                _latency(c, cache)
            if c.latency_ms is not None and c.latency_ms > limits["max_latency_ms"]:
                c.misses["max_latency_ms"] = c.latency_ms / limits["max_latency_ms"]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_file, json.dumps(cache))
    fits = [c for c in cands if not c.misses]
    if not fits:
        nearest = sorted(cands, key=lambda c: max(c.misses.values()))[:3]
        detail = "; ".join(f"{c.label} ({', '.join(f'{a} {r:.2f}x the limit' for a, r in c.misses.items())})" for c in nearest)
        given = ", ".join(f"{k}={v:g}" for k, v in limits.items())
        raise ValueError(f"no configuration of the {len(cands)} considered fits every limit ({given}); nearest: {detail}")
    fits.sort(key=lambda c: (EVIDENCE_ORDER.index(c.evidence), -(c.top1 or 0.0), -c.macs if c.evidence == "none" else c.macs))
    return {"candidates": fits[:top], "fitting": len(fits), "considered": len(cands), "limits": limits, "resolution": resolution}


def train_candidates(result: dict, data: str | os.PathLike, *, minutes: float, count: int = 3, out: str | os.PathLike = "runs/pick",
                     epochs: int = 30) -> list[Candidate]:  # fmt: skip
    """Train the first ``count`` candidates on ``data`` for ``minutes`` each (one sweep, resumable:
    ``out/pick-…``), setting each candidate's ``measured_top1``."""
    from smallnets.sweep import load_sweep, run_sweep

    chosen = result["candidates"][:count]
    points = []
    for i, c in enumerate(chosen):
        point = {"id": f"{i + 1}-{re.sub(r'[^A-Za-z0-9._=,+-]+', '_', c.label)}", "model.name": c.name,
                 **{f"model.{k}": v for k, v in c.knobs.items()}, "data.image_size": c.input_size[1]}  # fmt: skip
        points.append(point)
    import hashlib

    digest = hashlib.sha256(json.dumps([points, os.fspath(data), minutes, epochs], sort_keys=True, default=str).encode()).hexdigest()[:10]
    spec = {"sweep": {"name": f"pick-{digest}", "title": "smallnets pick: candidates trained"},
            "base": {"data": {"path": os.fspath(data)}, "train": {"epochs": epochs, "max_minutes": float(minutes)}}, "point": points}  # fmt: skip
    result_sweep = run_sweep(load_sweep(spec, out=out), latency=False)
    for c, row in zip(chosen, result_sweep["rows"]):
        c.measured_top1, c.run_dir = row["top1"], os.fspath(Path(result_sweep["directory"]) / row["id"])
    return chosen


def format_candidates(cands: Sequence[Candidate]) -> str:
    head = ["#", "configuration", "evidence", "top-1 (%)", "params", "MACs", "fp32 MB", "latency b1 (ms)"]
    trained = any(c.measured_top1 is not None for c in cands)
    if trained:
        head.append("trained here: val top-1 (%)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, c in enumerate(cands, 1):
        ev = {"measured": f"measured ({c.source})", "published": f"published, {c.dataset} ({c.source})",
              "none": "none: knob grid (train with --data)"}[c.evidence]  # fmt: skip
        cells = [str(i), c.label, ev, "—" if c.top1 is None else f"{c.top1:.1f}", f"{c.params / 1e6:.2f} M", f"{c.macs / 1e6:.1f} M",
                 f"{c.fp32_bytes / 1e6:.2f}", "—" if c.latency_ms is None else f"{c.latency_ms:.2f}"]  # fmt: skip
        if trained:
            cells.append("—" if c.measured_top1 is None else f"{c.measured_top1:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(cands: Sequence[Candidate]) -> list[dict]:
    return [{**asdict(c), "label": c.label} for c in cands]
