"""Sweeps: a grid of zoo configurations trained with one recipe, each point an ordinary run
directory, resumable, with a table, JSON and accuracy-against-cost plots (Pareto front marked).

A sweep file (TOML or JSON)::

    [sweep]
    name = "mobilenet_v1_width"          # the sweep's directory under out
    title = "MobileNetV1 Table 6: width multiplier"
    out = "runs/sweeps"                  # default: runs/sweeps

    [base]                               # one run configuration, as `smallnets train --config`
    model = { name = "mobilenet_v1", cifar = true }
    data = { path = "cifar10-train-jpg.tar.gz", limit_per_class = 500 }
    train = { epochs = 10, optimizer = "sgd" }

    [grid]                               # the cartesian product of these dotted keys ...
    "model.width_mult" = [1.0, 0.75, 0.5, 0.25]

    [[point]]                            # ... and / or points of their own (an id and dotted keys)
    id = "shallow"
    "model.name" = "mobilenet_v1"

    [[paper]]                            # optional: the paper's figures, printed beside ours
    id = "width_mult=0.75"
    top1 = 68.4
    macs = 325e6

Every point trains in ``out/name/ID`` (the trainer's own run directory). Running the sweep again
skips finished points, resumes an interrupted one from its checkpoint and trains the rest; a point
whose directory was trained with another configuration is refused (the file was edited: rename
the sweep or the point). After each point its costs are counted (parameters, MACs at the point's
resolution, fp32 bytes, the weights file) and its latency measured once on this machine (batch 1,
cached in the point's ``cost.json`` with the torch version and threads it was measured with).
``sweep.json`` / ``sweep.md`` / ``sweep.png`` in the sweep directory are rewritten after every
point. Under ``torchrun`` every process walks the same points (the trainer spreads each over
them); only the first writes the sweep's files and measures latency.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smallnets._io import atomic_write_text

__all__ = ["SweepPoint", "SweepSpec", "load_sweep", "pareto_front", "point_trainer", "run_sweep", "sweep_rows"]

SECTIONS = ("model", "data", "train")
POINT_FILE = "sweep_point.json"
COST_FILE = "cost.json"
_ID = re.compile(r"[^A-Za-z0-9._=,+-]+")


@dataclass
class SweepPoint:
    id: str
    overrides: dict[str, Any]  # dotted keys: "model.width_mult" -> 0.5

    def config(self, base: Mapping[str, Any]) -> dict[str, Any]:
        cfg = copy.deepcopy({k: dict(base.get(k) or {}) for k in SECTIONS})
        for key, value in self.overrides.items():
            section, name = key.split(".", 1)
            cfg[section][name] = value
        return cfg


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    points: list[SweepPoint]
    title: str = ""
    out: str = "runs/sweeps"
    paper: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None  # the file it was read from

    @property
    def directory(self) -> Path:
        return Path(self.out) / self.name


def _check_key(key: str, where: str) -> None:
    section = key.split(".", 1)[0]
    if "." not in key or section not in SECTIONS or not key.split(".", 1)[1]:
        raise ValueError(f"{where} key must be SECTION.NAME with SECTION one of {', '.join(SECTIONS)} (e.g. model.width_mult), got {key!r}")


def _point_id(overrides: Mapping[str, Any]) -> str:
    parts = [f"{k.split('.', 1)[1]}={v}" for k, v in overrides.items()]
    return _ID.sub("_", ",".join(parts)) or "base"


def load_sweep(source: str | os.PathLike | Mapping[str, Any], *, out: str | os.PathLike | None = None,
               data: str | os.PathLike | None = None) -> SweepSpec:  # fmt: skip
    """A :class:`SweepSpec` from a sweep file (.toml / .json) or a dict of the same shape;
    ``out`` / ``data`` replace the file's output folder and data path (``[base] data.path``)."""
    from smallnets.training.config import check_run_name, load_config_file

    path = None
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        raw = load_config_file(path)
    unknown = set(raw) - {"sweep", "base", "grid", "point", "paper"}
    if unknown:
        raise ValueError(f"sweep file sections must be sweep, base, grid, point, paper; got unknown {sorted(unknown)}")
    head = dict(raw.get("sweep") or {})
    bad = set(head) - {"name", "title", "out"}
    if bad:
        raise ValueError(f"[sweep] keys are name, title, out; got unknown {sorted(bad)}")
    name = head.get("name") or (path.stem if path is not None else None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"[sweep] name must be a non-empty string, got {name!r}")
    check_run_name(name)
    base = dict(raw.get("base") or {})
    if set(base) - set(SECTIONS):
        raise ValueError(f"[base] sections are {', '.join(SECTIONS)}; got unknown {sorted(set(base) - set(SECTIONS))}")
    if data is not None:
        base["data"] = {**dict(base.get("data") or {}), "path": os.fspath(data)}
    grid = dict(raw.get("grid") or {})
    for key, values in grid.items():
        _check_key(key, "[grid]")
        if not isinstance(values, list) or not values:
            raise ValueError(f"[grid] {key} must be a non-empty list of values, got {values!r}")
    points: list[SweepPoint] = []
    if grid:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            overrides = dict(zip(keys, combo))
            points.append(SweepPoint(_point_id(overrides), overrides))
    for i, entry in enumerate(raw.get("point") or []):
        if not isinstance(entry, Mapping):
            raise ValueError(f"[[point]] {i + 1} must be a table of dotted keys, got {entry!r}")
        entry = dict(entry)
        pid = entry.pop("id", None)
        for key in entry:
            _check_key(key, f"[[point]] {i + 1}")
        if pid is not None and (not isinstance(pid, str) or not pid or _ID.search(pid)):
            raise ValueError(f"[[point]] {i + 1} id must be letters, digits and ._=,+- only, got {pid!r}")
        points.append(SweepPoint(pid or _point_id(entry), entry))
    if not points:
        points = [SweepPoint("base", {})]
    ids = [p.id for p in points]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"sweep points must have distinct ids, got {dupes} more than once")
    paper = list(raw.get("paper") or [])
    allowed = {"id", *(c[0] for c in PAPER_COLUMNS), *PAPER_NOTES}
    for i, entry in enumerate(paper):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str) or set(entry) - allowed:
            got = sorted(set(entry) - allowed) if isinstance(entry, Mapping) and isinstance(entry.get("id"), str) else entry
            raise ValueError(f"[[paper]] {i + 1} must be a table with a string id and any of {', '.join(sorted(allowed - {'id'}))}; got {got!r}")
        for key in set(entry) & {c[0] for c in PAPER_COLUMNS}:
            if isinstance(entry[key], bool) or not isinstance(entry[key], (int, float)) or entry[key] < 0:
                raise ValueError(f"[[paper]] {entry['id']!r} {key} must be a non-negative number, got {entry[key]!r}")
    spec = SweepSpec(name=name, base=base, points=points, title=str(head.get("title") or name),
                     out=os.fspath(out) if out is not None else str(head.get("out") or "runs/sweeps"), paper=paper,
                     source=None if path is None else os.fspath(path))  # fmt: skip
    from smallnets.registry import resolve_knobs
    from smallnets.training.config import RunConfig

    for p in spec.points:  # every point's configuration is checked before anything trains
        try:
            model = p.config(spec.base)["model"]
            if model.get("name") and model.get("spec") is None:
                resolve_knobs(model["name"], {k: v for k, v in model.items() if k not in ("name", "spec")})
            RunConfig.from_dict(p.config(spec.base), where=f"sweep point {p.id!r}")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"sweep point {p.id!r}: {exc}") from None
    return spec


# --- running -----------------------------------------------------------------------------------


DONE = ("finished", "diverged")  # a point the sweep does not train again


def _status(run_dir: Path) -> str | None:
    info = run_dir / "run.json"
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def _requested(spec: SweepSpec, point: SweepPoint) -> dict:
    return {"sweep": spec.name, "id": point.id, "overrides": point.overrides, "config": point.config(spec.base)}


def _check_same_point(run_dir: Path, requested: dict) -> None:
    f = run_dir / POINT_FILE
    if not f.is_file():
        if (run_dir / "config.json").is_file():
            raise FileExistsError(f"{run_dir} holds a run that is not this sweep's point {requested['id']!r}; move it or rename the sweep")
        return
    recorded = json.loads(f.read_text())
    if recorded.get("config") != requested["config"]:
        raise ValueError(f"sweep point {requested['id']!r} was trained in {run_dir} with another configuration "
                         f"({recorded.get('config')} against {requested['config']}); the sweep file changed: rename the sweep or the point")  # fmt: skip


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_sweep(spec: SweepSpec | str | os.PathLike, *, only: Sequence[str] | None = None, latency: bool = True,
              progress: bool = True, dry_run: bool = False) -> dict:  # fmt: skip
    """Train every point of ``spec`` that is not finished (``only``: these ids), then count and
    measure each; returns ``{"directory", "rows", "table", "json", "md", "png"}``."""
    from smallnets.progress import format_duration
    from smallnets.training.config import RunConfig

    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    points = spec.points
    if only:
        known = {p.id for p in points}
        missing = [i for i in only if i not in known]
        if missing:
            raise ValueError(f"only names unknown points {missing}; the sweep's points are {sorted(known)}")
        points = [p for p in points if p.id in only]
    root = spec.directory
    say = (lambda msg: print(msg, flush=True)) if progress and _is_main() else (lambda msg: None)
    if dry_run:
        for p in points:
            say(f"{p.id}: {_status(root / p.id) or 'to train'}  {p.overrides}")
        return {"directory": os.fspath(root), "rows": [], "points": [p.id for p in points]}
    root.mkdir(parents=True, exist_ok=True)
    if _is_main():
        atomic_write_text(root / "sweep_spec.json", json.dumps({**asdict(spec), "points": [asdict(p) for p in spec.points]}, indent=1, default=str))
    started = time.perf_counter()
    trained_epochs, trained_seconds = 0, 0.0
    todo_epochs = sum(RunConfig.from_dict(p.config(spec.base)).train.epochs for p in points if _status(root / p.id) not in DONE)
    from smallnets.training.trainer import TrainingDiverged

    diverged = []
    for i, point in enumerate(points, 1):
        run_dir = root / point.id
        status = _status(run_dir)
        if status in DONE:  # (a point to train is checked by point_trainer)
            _check_same_point(run_dir, _requested(spec, point))
        cfg = RunConfig.from_dict(point.config(spec.base))
        if status == "finished":
            say(f"sweep {spec.name}: point {i}/{len(points)} {point.id}: finished before, skipped")
        elif status == "diverged":
            say(f"sweep {spec.name}: point {i}/{len(points)} {point.id}: diverged before (its run.json says where), skipped; "
                f"delete {run_dir} or change its recipe to train it again")  # fmt: skip
            diverged.append(point.id)
        else:
            eta = ""
            if trained_epochs:
                eta = f", about {format_duration(trained_seconds / trained_epochs * todo_epochs)} left"
            say(f"sweep {spec.name}: point {i}/{len(points)} {point.id} ({cfg.train.epochs} epochs){eta}")
            t0 = time.perf_counter()
            trainer = point_trainer(spec, point, progress=progress)
            if trainer.epoch or trainer.batch:
                say(f"  resuming {point.id} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
            try:
                trainer.fit()
            except TrainingDiverged as exc:  # a finding about the recipe, not a reason to stop the other points
                say(f"  {point.id} diverged: {exc}; the sweep goes on")
                diverged.append(point.id)
            trained_seconds += time.perf_counter() - t0
            trained_epochs += cfg.train.epochs
            todo_epochs -= cfg.train.epochs
        if _is_main():
            _point_cost(run_dir, latency=latency)
            written = write_sweep(spec)
    if not _is_main():
        return {"directory": os.fspath(root), "rows": [], "diverged": diverged}
    if written.get("mixed_environments"):
        say(f"note: {written['mixed_environments']}")
    say(f"sweep {spec.name}: {len(points)} point(s) in {format_duration(time.perf_counter() - started)}; {written['md']}")
    return {**written, "diverged": diverged}


def point_trainer(spec: SweepSpec, point: SweepPoint, *, progress: bool = True):
    """The trainer of one point: its checkpoint resumed where there is one, else a new run in
    ``spec.directory / point.id`` (marked as the sweep's point)."""
    from smallnets.training.config import RunConfig
    from smallnets.training.trainer import Trainer

    run_dir = spec.directory / point.id
    requested = _requested(spec, point)
    if run_dir.exists():
        _check_same_point(run_dir, requested)
    if (run_dir / "state.safetensors").is_file():
        return Trainer.resume(run_dir, progress=progress)
    cfg = RunConfig.from_dict(point.config(spec.base))
    cfg.train.out, cfg.train.name = os.fspath(spec.directory), point.id
    cfg.train.progress = cfg.train.progress and progress
    trainer = Trainer(cfg)
    if _is_main():
        atomic_write_text(Path(trainer.run_dir) / POINT_FILE, json.dumps(requested, indent=1, default=str))
    return trainer


def _point_cost(run_dir: Path, *, latency: bool) -> dict:
    """Counts and (once, cached) latency of a finished point."""
    import torch

    from smallnets.profiler import count_macs, count_params, measure_latency
    from smallnets.rundir import RunDir
    from smallnets.zoo import load_weights

    f = run_dir / COST_FILE
    cached = json.loads(f.read_text()) if f.is_file() else {}
    weights = RunDir(run_dir).weights()
    if weights is None:
        return cached
    env = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if cached.get("weights_bytes") == Path(weights).stat().st_size and (not latency or cached.get("latency_env") == env):
        return cached  # counted (and timed) before: a finished point's costs do not change
    model = load_weights(weights).eval()
    from smallnets.export import _input_size

    size = _input_size(model, (getattr(model, "smallnets_meta", None) or {}).get("preprocessing"))  # the side it was trained at
    cost = {"input_size": list(size), "params": count_params(model), "macs": count_macs(model, size),
            "fp32_bytes": 4 * sum(p.numel() for p in model.parameters()), "weights_bytes": Path(weights).stat().st_size}  # fmt: skip
    if latency and (cached.get("latency_env") != env or cached.get("latency_ms") is None or cached.get("input_size") != list(size)):
        lat = measure_latency(model, size, batch_size=1, runs=30, max_seconds=10.0)
        cost.update(latency_ms=lat.median_ms, latency_p90_ms=lat.p90_ms, latency_env=env)
    elif cached.get("latency_ms") is not None:
        cost.update({k: cached[k] for k in ("latency_ms", "latency_p90_ms", "latency_env") if k in cached})
    if cost != cached:
        atomic_write_text(f, json.dumps(cost, indent=1))
    return cost


# --- results -----------------------------------------------------------------------------------


def _best(run_dir: Path) -> tuple[float | None, int]:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None, 0
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tops = [r["val_top1"] for r in records if r.get("val_top1") is not None]
    return (max(tops) if tops else None), len(records)


# What a point's numerics depend on beyond its configuration: a seeded run repeats exactly only with
# all of these the same (bf16 reductions change order with the thread count: MobileNetV1's narrow
# network moved 4.8 points between 1 and 2 threads, the README's Table 5).
TRAINED_WITH = ("device", "threads", "world_size", "precision", "torch")


def _trained_with(run_dir: Path) -> dict | None:
    f = run_dir / "run.json"
    if not f.is_file():
        return None
    env = json.loads(f.read_text()).get("environment") or {}
    return {k: env.get(k) for k in TRAINED_WITH}


def mixed_environments(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """A sentence naming which points were trained under which settings, when the trained points
    differ in any of :data:`TRAINED_WITH`; None when they agree."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.get("trained_with") and r["top1"] is not None:
            groups.setdefault(json.dumps(r["trained_with"], sort_keys=True), []).append(r["id"])
    if len(groups) < 2:
        return None
    keys = [json.loads(k) for k in groups]
    differ = [k for k in TRAINED_WITH if len({json.dumps(e.get(k)) for e in keys}) > 1]
    parts = ["; ".join(f"{k} {e.get(k)}" for k in differ) + ": " + ", ".join(ids) for e, ids in zip(keys, groups.values())]
    return ("the points were trained under different settings (" + " | ".join(parts) + "); a seeded run repeats exactly only "
            "under the same ones, so small differences between these points may be the settings, not the configurations")


def sweep_rows(spec: SweepSpec) -> list[dict]:
    """One row per point: its overrides, status, best validation top-1, epochs and costs."""
    rows = []
    for p in spec.points:
        run_dir = spec.directory / p.id
        top1, epochs = _best(run_dir)
        cost = json.loads((run_dir / COST_FILE).read_text()) if (run_dir / COST_FILE).is_file() else {}
        rows.append({"id": p.id, "overrides": p.overrides, "status": _status(run_dir) or "not started", "top1": top1, "epochs": epochs,
                     **{k: cost.get(k) for k in ("params", "macs", "fp32_bytes", "weights_bytes", "latency_ms", "input_size")},
                     "trained_with": _trained_with(run_dir)})  # fmt: skip
    axes = ("macs", "params", "fp32_bytes", "latency_ms")
    for axis in axes:
        front = set(pareto_front([r for r in rows if r["top1"] is not None and r[axis] is not None], axis))
        for r in rows:
            r.setdefault("pareto", [])
            if r["id"] in front:
                r["pareto"].append(axis)
    return rows


def pareto_front(rows: Sequence[Mapping[str, Any]], cost: str, score: str = "top1") -> list[str]:
    """Ids of the rows no other row beats: at most their ``cost`` with a higher ``score``, or lower cost at the same score."""
    front = []
    for r in rows:
        dominated = any((o[cost] <= r[cost] and o[score] > r[score]) or (o[cost] < r[cost] and o[score] >= r[score]) for o in rows if o is not r)
        if not dominated:
            front.append(r["id"])
    return front


# What a [[paper]] row may give beside its id: (key, column heading, format, divisor). A figure may
# report top-5 or model size instead of top-1 (SqueezeNet's Figure 3): columns follow the rows.
PAPER_COLUMNS = (("top1", "top-1 (%)", "{:.1f}", 1.0), ("top5", "top-5 (%)", "{:.1f}", 1.0), ("macs", "MACs", "{:.0f} M", 1e6),
                 ("params", "params", "{:.2f} M", 1e6), ("mb", "size (MB)", "{:.1f}", 1.0))  # fmt: skip
PAPER_NOTES = ("source", "note")


def paper_columns(paper: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, float]]:
    """The PAPER_COLUMNS some row of ``paper`` gives, in their order (top-1, MACs and params when none does)."""
    given = [c for c in PAPER_COLUMNS if any(c[0] in row for row in paper)]
    return given or [c for c in PAPER_COLUMNS if c[0] in ("top1", "macs", "params")]


def format_paper(row: Mapping[str, Any], column: tuple[str, str, str, float]) -> str:
    return _num(row.get(column[0]), column[2], column[3])


def format_rows(rows: Sequence[Mapping[str, Any]], paper: Sequence[Mapping[str, Any]] = ()) -> str:
    by_id = {str(p.get("id")): p for p in paper}
    has_paper = bool(by_id)
    columns = paper_columns(paper)
    head = ["point", "status", "epochs", "val top-1 (%)", "params", "MACs", "fp32 MB", "latency b1 (ms)", "Pareto"]
    if has_paper:
        head += [f"paper {c[1]}" for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["id"], r["status"], str(r["epochs"]), "—" if r["top1"] is None else f"{r['top1']:.2f}",
                 "—" if r["params"] is None else f"{r['params'] / 1e6:.2f} M", "—" if r["macs"] is None else f"{r['macs'] / 1e6:.1f} M",
                 "—" if r["fp32_bytes"] is None else f"{r['fp32_bytes'] / 1e6:.2f}", "—" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}",
                 ", ".join({"macs": "MACs", "params": "params", "fp32_bytes": "bytes", "latency_ms": "latency"}[a] for a in r["pareto"]) or ""]  # fmt: skip
        if has_paper:
            p = by_id.get(r["id"], {})
            cells += [format_paper(p, c) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(v, fmt: str, div: float = 1.0) -> str:
    return "—" if v is None else fmt.format(float(v) / div)


def write_sweep(spec: SweepSpec) -> dict:
    """sweep.json, sweep.md and sweep.png of the points trained so far."""
    from smallnets.compare import environment

    rows = sweep_rows(spec)
    root = spec.directory
    table = format_rows(rows, spec.paper)
    mixed = mixed_environments(rows)
    payload = {"name": spec.name, "title": spec.title, "source": spec.source, "base": spec.base, "paper": spec.paper,
               "environment": environment(), "mixed_environments": mixed, "rows": rows}  # fmt: skip
    atomic_write_text(root / "sweep.json", json.dumps(payload, indent=1, default=str) + "\n")
    atomic_write_text(root / "sweep.md", f"# {spec.title}\n\n{table}\n" + (f"\nNote: {mixed}.\n" if mixed else ""))
    png = plot_sweep(rows, root / "sweep.png", title=spec.title)
    return {"directory": os.fspath(root), "rows": rows, "table": table, "mixed_environments": mixed, "json": os.fspath(root / "sweep.json"),
            "md": os.fspath(root / "sweep.md"), "png": None if png is None else os.fspath(png)}  # fmt: skip


AXES = (("macs", "mult-adds (millions)", 1e6), ("params", "parameters (millions)", 1e6), ("fp32_bytes", "fp32 size (MB)", 1e6),
        ("latency_ms", "latency, batch 1 (ms, this machine)", 1.0))  # fmt: skip


def plot_sweep(rows: Sequence[Mapping[str, Any]], path, title: str = "") -> Path | None:
    """Validation top-1 against MACs, parameters, bytes and latency; the Pareto front joined and
    its points filled. None when no point has a validation top-1 yet."""
    import matplotlib
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from smallnets._io import atomic_path

    scored = [r for r in rows if r["top1"] is not None]
    if not scored:
        return None
    fig = Figure(figsize=(13, 9.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    for ax, (key, label, div) in zip(axes, AXES):
        pts = [r for r in scored if r[key] is not None]
        if not pts:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{label}: not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        front = set(pareto_front(pts, key))
        rightmost = max(r[key] for r in pts)
        for r in pts:
            on = r["id"] in front
            ax.scatter(r[key] / div, r["top1"], s=55, color="tab:red" if on else "tab:blue", edgecolors="black", linewidths=0.5,
                       alpha=0.9 if on else 0.5, zorder=3)  # fmt: skip
            right = len(pts) > 1 and r[key] == rightmost  # its label goes to the left, inside the axes
            ax.annotate(r["id"], (r[key] / div, r["top1"]), xytext=(-4 if right else 4, 4), textcoords="offset points", fontsize=7,
                        ha="right" if right else "left")  # fmt: skip
        line = sorted((r for r in pts if r["id"] in front), key=lambda r: r[key])
        ax.plot([r[key] / div for r in line], [r["top1"] for r in line], color="tab:red", lw=1.2, zorder=2, label="Pareto front")
        values = [r[key] for r in pts]
        if min(values) > 0 and max(values) / min(values) > 8:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.set_xlabel(label)
        ax.set_ylabel("validation top-1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")  # where it covers the fewest points
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return out
