"""``smallnets report``: one self-contained HTML page of a training run (learning curves, confusion
matrix and per-class accuracy on its validation split, cost profile, configuration) or of a sweep
(its points with the Pareto front marked, the paper's figures beside ours, the Pareto plots).

The page needs nothing but itself to be read: plots are PNG data URIs drawn on an Agg canvas (see
``smallnets.plots``), the CSS is inline, there is no script, font or link to the network. Every
string that comes from a run (class names, paths, configuration values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import tempfile
import urllib.parse
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from smallnets._io import atomic_write_text
from smallnets.rundir import RunDir

__all__ = ["REPORT", "SWEEP_JSON", "write_report"]

REPORT = "report.html"  # the default page, inside the directory it reports on
SWEEP_JSON = "sweep.json"  # what makes a folder a sweep directory (smallnets.sweep.write_sweep)
SWEEP_PNG = "sweep.png"
_CONFUSION_PLOT_MAX = 100  # classes: beyond this a heat map is unreadable; the per-class table stays
_CONFUSION_TABLE_MAX = 30  # classes: the counts as an HTML table up to this many
_EPOCHS_OPEN = 30  # the per-epoch table starts unfolded up to this many epochs
_PARETO_AXES = {"macs": "MACs", "params": "params", "fp32_bytes": "bytes", "latency_ms": "latency"}  # as sweep.format_rows names them


def write_report(path: str | os.PathLike, out: str | os.PathLike | None = None, *, evaluate: bool = True) -> Path:
    """Write the HTML report of a run directory (config.json) or a sweep directory (sweep.json) to
    ``out`` (default: ``path/report.html``), atomically; returns its path.

    ``evaluate=False`` leaves out a run's confusion matrix and per-class accuracy (they evaluate its
    weights on its validation split). A sweep page links each point's own report where one exists.
    """
    from smallnets._checks import check_bool

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a run or sweep directory, got {type(path).__qualname__}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path ending in .html or None, got {type(out).__qualname__}")
    check_bool("evaluate", evaluate)
    root = Path(path)
    is_run, is_sweep = RunDir.is_run(root), (root / SWEEP_JSON).is_file()
    if not (is_run or is_sweep):
        found = "does not exist" if not root.exists() else "is not a folder" if not root.is_dir() else "holds neither"
        raise ValueError(f"path must be a run directory (holding config.json) or a sweep directory (holding {SWEEP_JSON}), "
                         f"got {os.fspath(path)!r} ({found})")  # fmt: skip
    target = root / REPORT if out is None else Path(out)
    if target.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"out must end in .html, got {os.fspath(target)!r}")
    page = _run_page(root, evaluate=evaluate) if is_run else _sweep_page(root, target)
    atomic_write_text(target, page)
    return target


# --- HTML pieces ----------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1d2430; --muted: #5b6675; --line: #d9dee5; --band: #f5f7fa; --accent: #2f6fb2; --front: #fff4d6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1200px; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
p.sub, p.note, footer { color: var(--muted); }
p.note { margin: 6px 0; }
nav { margin: 12px 0 0; font-size: 13px; }
nav a { margin-right: 14px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 13px; font-weight: 600; color: white;
         background: #7a8594; vertical-align: middle; }
.badge.finished { background: #2e8b57; } .badge.running { background: #2f6fb2; }
.badge.interrupted, .badge.paused, .badge.time-budget { background: #c77c0e; } .badge.diverged { background: #b33a3a; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 140px; }
.card .k { color: var(--muted); font-size: 12px; } .card .v { font-size: 20px; font-weight: 600; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.front td { background: var(--front); }
table.kv th { white-space: nowrap; }
.columns { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 0 24px; align-items: start; }
.columns table { width: 100%; }
.bar { display: inline-block; height: 9px; background: var(--accent); border-radius: 2px; vertical-align: middle; }
code, pre { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
pre { background: var(--band); padding: 8px; overflow: auto; max-height: 420px; margin: 4px 0; }
img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
details > summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, fmt: str = "{:.2f}", div: float = 1.0) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return fmt.format(value / div)


def _cell(value: Any, *, numeric: bool = False) -> str:
    return f'<td class="n">{value}</td>' if numeric else f"<td>{value}</td>"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[bool] = (), row_classes: Sequence[str] = (),
           css: str = "") -> str:  # fmt: skip
    """An HTML table; ``head`` is escaped here, cells are HTML already (escape them where they are made)."""
    numeric = list(numeric) + [False] * (len(head) - len(numeric))
    lines = [f'<table class="{css}">' if css else "<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        lines.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(_cell(c, numeric=n) for c, n in zip(row, numeric)) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _kv_table(items: Iterable[tuple[str, str]]) -> str:
    """Two columns, a name and its value (HTML already)."""
    return '<table class="kv"><tbody>' + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items) + "</tbody></table>"


def _value(value: Any, fold: int = 120) -> str:
    """A configuration value as HTML: scalars as text, lists and mappings as JSON (folded when long)."""
    if isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(value, default=str)
        if len(text) <= fold:
            return f"<code>{_e(text)}</code>"
        return f"<details><summary>{_e(type(value).__name__)} of {len(value)}</summary><pre>{_e(json.dumps(value, indent=1, default=str))}</pre></details>"
    if value is None:
        return "—"
    return _e(value)


def _config_tables(sections: Mapping[str, Any]) -> str:
    """One name-value table per section, side by side where the page is wide enough."""
    parts = []
    for name, section in sections.items():
        if isinstance(section, Mapping):
            content = _kv_table((str(k), _value(v)) for k, v in section.items()) if section else '<p class="note">(empty)</p>'
        else:
            content = f"<p>{_value(section)}</p>"
        parts.append(f"<div><h3>{_e(name)}</h3>{content}</div>")
    return '<div class="columns">' + "\n".join(parts) + "</div>"


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _img(path: Path, alt: str) -> str:
    return f'<img src="{_png_uri(path)}" alt="{_e(alt)}">'


def _page(title: str, header: str, nav: Sequence[tuple[str, str]], body: Sequence[str], source: Path) -> str:
    from smallnets import __version__

    links = "".join(f'<a href="#{_e(anchor)}">{_e(label)}</a>' for anchor, label in nav)
    when = _dt.datetime.now().isoformat(timespec="seconds")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<header>{header}<nav>{links}</nav></header>", *body,
        f"<footer><p>Written by smallnets {_e(__version__)} on {_e(when)} from <code>{_e(source)}</code>.</p></footer>",
        "</body></html>", "",
    ])  # fmt: skip


def _section(anchor: str, title: str, *content: str) -> str:
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>\n' + "\n".join(content) + "\n</section>"


def _badge(status: Any) -> str:
    text = str(status or "unknown")
    return f'<span class="badge {_e(text.replace(" ", "-"))}">{_e(text)}</span>'


# --- a training run -------------------------------------------------------------------------------


def _model_title(model_cfg: Mapping[str, Any]) -> str:
    """``name (knob=value, ...)`` with the knobs that differ from the zoo entry's defaults."""
    name = str(model_cfg.get("name") or "custom model")
    knobs = {k: v for k, v in model_cfg.items() if k not in ("name", "spec") and v is not None}
    try:
        from smallnets.registry import list_models, model_info

        if name in list_models():
            defaults = model_info(name).knobs
            knobs = {k: v for k, v in knobs.items() if k not in defaults or defaults[k] != v}
    except (ImportError, ValueError):
        pass
    return name + (f" ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else "")


def _read_records(run: RunDir) -> list[Mapping[str, Any]]:
    from smallnets.plots import _epoch_records, _read_jsonl

    return _epoch_records(_read_jsonl(run.metrics_jsonl)) if run.metrics_jsonl.is_file() else []


def _curves_section(records: Sequence[Mapping[str, Any]], title: str, tmp: Path) -> str:
    from smallnets.plots import plot_learning_curves

    if not records:
        return _section("curves", "Learning curves", '<p class="note">No epoch has finished yet (metrics.jsonl holds no record).</p>')
    png = plot_learning_curves(records, tmp / "curves.png", title=title)
    head = ["epoch", "train loss", "train top-1 (%)", "val loss", "val top-1 (%)", "val top-5 (%)", "lr", "images/s", "epoch (s)"]
    rows = [[_num(r.get("epoch"), "{:g}"), _num(r.get("train_loss"), "{:.4f}"), _num(r.get("train_acc")), _num(r.get("val_loss"), "{:.4f}"),
             _num(r.get("val_top1")), _num(r.get("val_top5")), _num(r.get("lr"), "{:.3g}"), _num(r.get("images_per_s"), "{:,.0f}"),
             _num(r.get("epoch_s"), "{:.1f}")] for r in records]  # fmt: skip
    tops = [r.get("val_top1") for r in records]
    scored = [i for i, t in enumerate(tops) if isinstance(t, (int, float))]
    best = max(scored, key=lambda i: tops[i]) if scored else None
    classes = ["front" if i == best else "" for i in range(len(records))]
    fold = " open" if len(records) <= _EPOCHS_OPEN else ""
    table = _table(head, rows, numeric=[True] * len(head), row_classes=classes, css="epochs")
    note = f'<p class="note">Highlighted: the best validation top-1 (epoch {_num(records[best].get("epoch"), "{:g}")}).</p>' if best is not None else ""
    return _section("curves", "Learning curves", _img(png, "learning curves"),
                    f"<details{fold}><summary>per-epoch metrics ({len(records)} epochs, metrics.jsonl)</summary>{table}{note}</details>")  # fmt: skip


def _evaluation_section(run: RunDir, recorded_top1: Any, tmp: Path) -> str:
    from smallnets.evaluation import evaluate_weights
    from smallnets.plots import plot_confusion

    title = "Validation split: confusion matrix and per-class accuracy"
    if run.weights() is None:
        return _section("evaluation", title, '<p class="note">No weights yet (best.safetensors / last.safetensors): nothing to evaluate.</p>')
    try:
        result = evaluate_weights(run.path, split="val", progress=False)
    except (OSError, ValueError, TypeError) as exc:  # the data moved, say: the rest of the report still stands
        warnings.warn(f"could not evaluate {run.path} on its validation split: {exc}", stacklevel=3)
        return _section("evaluation", title, f'<p class="note">Could not evaluate the weights on the validation split: {_e(exc)}</p>')
    d = result.details
    classes = list(result.classes) or [str(i) for i in range(len(result.confusion))]
    counts = result.confusion.tolist()
    same = {True: "the same files as the run's split.json", False: "NOT the files of the run's split.json"}.get(d.get("split_matches_run"), "not checked")
    summary = _kv_table([
        ("weights", f"<code>{_e(d.get('weights'))}</code>" + (f" (epoch {_e(d['epoch'])})" if d.get("epoch") is not None else "")),
        ("evaluated", _e(d.get("evaluated"))), ("split", _e(same)), ("precision", f"{_e(d.get('precision'))} on {_e(d.get('device'))}"),
        ("top-1", f"{result.top1:.2f}%" + (f" (recorded in training: {recorded_top1:.2f}%)" if isinstance(recorded_top1, (int, float)) else "")),
        ("top-5", f"{result.top5:.2f}%" + ("" if len(classes) >= 5 else f" (k = {len(classes)}: the model has {len(classes)} classes)")),
        ("loss", f"{result.loss:.4f}"), ("images", f"{result.count:,}"),
    ])  # fmt: skip
    notes = "".join(f'<p class="note">note: {_e(n)}</p>' for n in d.get("notes") or [])
    parts = [summary, notes]
    if len(classes) <= _CONFUSION_PLOT_MAX:
        epoch = f", epoch {d['epoch']}" if d.get("epoch") is not None else ""
        png = plot_confusion(result.confusion, classes, tmp / "confusion.png", title=f"{d.get('model')}{epoch}, validation split")
        parts.append(_img(png, "confusion matrix"))
    else:
        parts.append(f'<p class="note">{len(classes)} classes: the confusion matrix is not drawn (unreadable beyond {_CONFUSION_PLOT_MAX}); '
                     "the per-class table below lists every class.</p>")  # fmt: skip
    acc, support = result.per_class, result.support
    rows = []
    for i, c in enumerate(classes):
        a = acc.get(c)
        wrong = [(n, j) for j, n in enumerate(counts[i]) if j != i and n > 0]
        n_wrong, j_wrong = max(wrong) if wrong else (0, None)
        bar = f'<span class="bar" style="width:{a * 0.8:.0f}px"></span> ' if a is not None else ""
        rows.append([_e(c), bar + (f"{a:.1f}%" if a is not None else "—"), f"{counts[i][i]:,}", f"{support.get(c, 0):,}",
                     f"{_e(classes[j_wrong])} ({n_wrong:,})" if j_wrong is not None else "—"])  # fmt: skip
    parts.append("<h3>Per-class accuracy</h3>")
    parts.append(_table(["class", "top-1", "correct", "images", "most often predicted instead"], rows, numeric=[False, True, True, True, False],
                        css="per-class"))  # fmt: skip
    if len(classes) <= _CONFUSION_TABLE_MAX:
        head = ["true \\ predicted", *classes]
        matrix = [[f"<b>{_e(c)}</b>", *(f"<b>{n:,}</b>" if i == j else (f"{n:,}" if n else "·") for j, n in enumerate(counts[i]))]
                  for i, c in enumerate(classes)]  # fmt: skip
        parts.append(f"<details><summary>confusion matrix as counts</summary>{_table(head, matrix, numeric=[False] + [True] * len(classes), css='confusion')}</details>")
    return _section("evaluation", title, *parts)


def _cost_section(run: RunDir, model_title: str) -> str:
    from smallnets.export import _input_size
    from smallnets.profiler import profile
    from smallnets.progress import format_bytes
    from smallnets.zoo import load_weights

    weights = run.weights()
    if weights is None:
        return _section("cost", "Cost profile", '<p class="note">No weights yet: the cost profile is counted from them.</p>')
    model = load_weights(weights)
    size = _input_size(model, (getattr(model, "smallnets_meta", None) or {}).get("preprocessing"))  # the side it was trained at
    rep = profile(model, size, latency=False, file=weights)
    items = [
        ("model", _e(model_title)),
        ("input", _e("x".join(map(str, rep.input_size)))),
        ("params", f"{rep.params:,} ({rep.params / 1e6:.2f} M)"),
        ("MACs", f"{rep.macs:,} ({rep.macs / 1e6:.1f} M mult-adds)"), ("FLOPs", f"{rep.flops / 1e9:.3f} G (2 x MACs)"),
        ("size", _e(" / ".join(f"{format_bytes(v, digits=2)} {k}" for k, v in rep.size_bytes.items()))),
    ]  # fmt: skip
    if rep.nonzero_params is not None and rep.nonzero_params < rep.params:
        items.append(("non-zero", f"{rep.nonzero_params:,} ({100 * (1 - rep.nonzero_params / max(rep.params, 1)):.1f}% of the parameters are zero)"))
    if rep.file_bytes is not None:
        items.append(("on disk", f"{_e(format_bytes(rep.file_bytes, digits=2))} (<code>{_e(Path(weights).name)}</code>)"))
    if rep.peak_activation_bytes is not None:
        items.append(("activations", f"{_e(format_bytes(rep.peak_activation_bytes, digits=2))} peak (inference, batch 1)"))
    if rep.saved_activation_bytes is not None:
        items.append(("for backward", f"{_e(format_bytes(rep.saved_activation_bytes, digits=2))} saved (training, batch 2)"))
    kinds = [[_e(k), f"{v['layers']:,}", f"{v['macs']:,}", f"{v['macs_percent']:.2f}%", f"{v['weights']:,}", f"{v['weights_percent']:.2f}%"]
             for k, v in rep.by_kind().items()]  # fmt: skip
    total = rep.macs or 1
    layers = [[f"<code>{_e(r.name)}</code>", _e(r.kind), _e("x".join(map(str, r.out_shape))), f"{r.params:,}", f"{r.macs:,}", f"{100 * r.macs / total:.2f}%"]
              for r in rep.layers]  # fmt: skip
    return _section(
        "cost", "Cost profile", _kv_table(items),
        f'<p class="note">{_e(rep.conventions["macs"])}. Latency is not measured here (<code>smallnets profile</code> / <code>bench</code> do).</p>',
        "<h3>By layer kind</h3>", _table(["kind", "layers", "MACs", "MACs %", "weights", "weights %"], kinds, numeric=[False] + [True] * 5, css="kinds"),
        f"<details><summary>every layer ({len(layers)} conv / linear layers)</summary>"
        + _table(["layer", "kind", "output", "params", "MACs", "%"], layers, numeric=[False, False, True, True, True, True], css="layers") + "</details>",
    )  # fmt: skip


def _split_items(split: Mapping[str, Any] | None) -> str:
    if not split:
        return '<p class="note">No split.json.</p>'
    source = split.get("source") or {}
    items = [("method", _e(split.get("method"))), ("seed", _e(split.get("seed"))), ("fraction", _e(split.get("fraction"))),
             ("source", f"<code>{_e(source.get('path'))}</code> ({_e(source.get('kind'))})" if source else "—"),
             ("images", f"{_e(split.get('num_train'))} train, {_e(split.get('num_val'))} validation")]  # fmt: skip
    counts = split.get("counts") or {}
    parts = [_kv_table(items)]
    if isinstance(counts.get("train"), Mapping):
        names = list(counts["train"])
        val = counts.get("val") or {}
        rows = [[_e(c), f"{counts['train'][c]:,}", f"{val.get(c, 0):,}"] for c in names]
        parts.append(f"<details><summary>images per class ({len(names)} classes)</summary>{_table(['class', 'train', 'validation'], rows, numeric=[False, True, True])}</details>")
    return "\n".join(parts)


def _run_page(root: Path, *, evaluate: bool) -> str:
    run = RunDir(root)
    raw = run.read_config_dict()
    info = run.read_run_info() or {}
    records = _read_records(run)
    model_title = _model_title(raw.get("model") or {})
    status = info.get("status") or ("not started" if not records else "unknown")
    epochs_asked = (raw.get("train") or {}).get("epochs")
    tops = [r["val_top1"] for r in records if isinstance(r.get("val_top1"), (int, float))]
    best_top1 = info.get("best_top1", max(tops) if tops else None)
    last = records[-1] if records else {}

    cards = [("best val top-1", _num(best_top1, "{:.2f}%")), ("epochs", f"{len(records)}" + (f" / {epochs_asked}" if epochs_asked else "")),
             ("last val loss", _num(last.get("val_loss"), "{:.4f}")), ("train time", _num(info.get("train_time_s"), "{:,.0f} s"))]  # fmt: skip
    env = info.get("environment") or {}
    header = "\n".join([
        f"<h1>{_e(model_title)} {_badge(status)}</h1>",
        f'<p class="sub">Training run <code>{_e(root)}</code>' + (f", updated {_e(info['updated'])}" if info.get("updated") else "")
        + (f"; {_e(', '.join(f'{k} {v}' for k, v in env.items() if v is not None))}" if env else "") + "</p>",
        f'<p class="note">{_e(info["message"])}</p>' if info.get("message") else "",
        '<div class="cards">' + "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>' for k, v in cards) + "</div>",
    ])  # fmt: skip
    nav = [("curves", "learning curves"), ("evaluation", "per-class accuracy"), ("cost", "cost"), ("config", "configuration")]
    with tempfile.TemporaryDirectory(prefix="smallnets-report-") as tmp:
        body = [_curves_section(records, model_title, Path(tmp))]
        if evaluate:
            body.append(_evaluation_section(run, best_top1, Path(tmp)))
        else:
            nav.remove(("evaluation", "per-class accuracy"))
        body.append(_cost_section(run, model_title))
    sections = {k: raw[k] for k in ("model", "data", "train", "resolved") if k in raw}
    sections.update({k: v for k, v in raw.items() if k not in sections})
    run_items = {k: v for k, v in info.items() if k not in ("environment",)}
    body.append(_section("config", "Configuration (config.json)", _config_tables(sections), "<h3>validation split (split.json)</h3>",
                         _split_items(run.read_split()), "<h3>run.json</h3>", _kv_table((k, _value(v)) for k, v in run_items.items())))  # fmt: skip
    return _page(f"{model_title}: {status}", header, nav, body, root)


# --- a sweep --------------------------------------------------------------------------------------


def _href(target: Path, page: Path) -> str:
    """``target`` relative to the folder of ``page``, as a URL path."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(page.parent))
    return urllib.parse.quote(Path(rel).as_posix(), safe="/")


def _overrides(overrides: Any) -> str:
    if not isinstance(overrides, Mapping) or not overrides:
        return "—"
    return "<br>".join(f"<code>{_e(k)} = {_e(json.dumps(v, default=str))}</code>" for k, v in overrides.items())


def _sweep_page(root: Path, page: Path) -> str:
    from smallnets.progress import format_bytes
    from smallnets.sweep import format_paper, paper_columns, plot_sweep

    where = root / SWEEP_JSON
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"sweep file {str(where)!r} is not valid JSON: {err}") from None
    rows = data.get("rows") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        got = f"{type(data).__name__}" + (f" with rows {type(rows).__name__}" if isinstance(data, Mapping) else "")
        raise ValueError(f"sweep file {str(where)!r} must hold a mapping with a list of rows (smallnets sweep writes it), got {got}")  # noqa: TRY004 (bad file content)
    rows = [r for r in rows if isinstance(r, Mapping)]
    title = str(data.get("title") or data.get("name") or root.name)
    paper = {str(p.get("id")): p for p in data.get("paper") or [] if isinstance(p, Mapping)}
    ids = {str(r.get("id")) for r in rows}

    head = ["point", "status", "epochs", "val top-1 (%)", "params", "MACs", "fp32 MB", "weights file", "latency b1 (ms)", "input", "overrides", "Pareto"]
    columns = paper_columns(list(paper.values()))
    if paper:
        head += [f"paper {c[1]}" for c in columns]
    table_rows, classes, linked = [], [], 0
    for r in rows:
        pid = str(r.get("id"))
        report = root / pid / REPORT
        name = _e(pid)
        if report.is_file():
            name, linked = f'<a href="{_e(_href(report, page))}">{name}</a>', linked + 1
        front = [a for a in r.get("pareto") or [] if a in _PARETO_AXES]
        size = r.get("input_size")
        cells = [name, _badge(r.get("status")), _num(r.get("epochs"), "{:g}"), _num(r.get("top1")),
                 f'<span title="{_num(r.get("params"), "{:,}")}">{_num(r.get("params"), "{:.2f} M", 1e6)}</span>',
                 f'<span title="{_num(r.get("macs"), "{:,}")}">{_num(r.get("macs"), "{:.1f} M", 1e6)}</span>',
                 _num(r.get("fp32_bytes"), "{:.2f}", 1e6), _e(format_bytes(r["weights_bytes"], digits=2)) if isinstance(r.get("weights_bytes"), int) else "—",
                 _num(r.get("latency_ms")), _e("x".join(map(str, size))) if isinstance(size, list) else "—", _overrides(r.get("overrides")),
                 ("★ " + _e(", ".join(_PARETO_AXES[a] for a in front))) if front else ""]  # fmt: skip
        if paper:
            p = paper.get(pid, {})
            cells += [format_paper(p, c) for c in columns]
        table_rows.append(cells)
        classes.append("front" if front else "")
    numeric = [False, False, True, True, True, True, True, True, True, True, False, False] + [True] * len(columns)
    finished = sum(1 for r in rows if r.get("status") == "finished")
    points = [_table(head, table_rows, numeric=numeric, row_classes=classes, css="sweep"),
              '<p class="note">★ highlighted rows are on the Pareto front of the axes named: no other point costs at most as much '
              "with a higher validation top-1. MACs count conv and linear mult-adds, as the papers do; latency is batch 1 on the "
              "machine that ran the sweep." + (" The paper's figures are its own data set's (usually ImageNet): compare trends, not values." if paper else "") + "</p>",
              f'<p class="note">{linked} of {len(rows)} points link their own report; <code>smallnets report {_e(root)}/POINT</code> writes one.</p>']  # fmt: skip
    unmatched = [p for pid, p in paper.items() if pid not in ids]
    if unmatched:
        points.append("<h3>The paper's figures for points not in this sweep</h3>")
        points.append(_table(["id", *(c[1] for c in columns)], [[_e(p.get("id")), *(format_paper(p, c) for c in columns)] for p in unmatched],
                             numeric=[False] + [True] * len(columns), css="paper-only"))  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="smallnets-report-") as tmp:
        png = root / SWEEP_PNG
        if png.is_file():
            plot, said = png, f"{SWEEP_PNG} of the sweep directory"
        else:  # plot_sweep reads these keys of every row
            axes = [{k: r.get(k) for k in ("id", "top1", "macs", "params", "fp32_bytes", "latency_ms")} for r in rows]
            plot, said = plot_sweep(axes, Path(tmp) / SWEEP_PNG, title=title), f"drawn from {SWEEP_JSON}"
        if plot is None:
            figure = ['<p class="note">No point has a validation top-1 yet: nothing to plot.</p>']
        else:
            figure = [_img(plot, "validation top-1 against cost, Pareto front"),
                      f'<p class="note">Validation top-1 against MACs, parameters, fp32 bytes and latency; the Pareto front joined in red ({_e(said)}).</p>']  # fmt: skip
        body = [_section("points", f"Points ({len(rows)})", *points), _section("pareto", "Accuracy against cost", *figure)]
    env = data.get("environment") or {}
    body.append(_section("config", "Base configuration", _config_tables(data.get("base") or {}),
                         "<h3>environment</h3>", _kv_table((k, _value(v)) for k, v in env.items()) if env else '<p class="note">not recorded</p>'))  # fmt: skip
    header = "\n".join([
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Sweep <code>{_e(data.get("name") or root.name)}</code> in <code>{_e(root)}</code>: {finished} of {len(rows)} points finished'
        + (f"; from <code>{_e(data['source'])}</code>" if data.get("source") else "") + "</p>",
    ])  # fmt: skip
    return _page(title, header, [("points", "points"), ("pareto", "Pareto plots"), ("config", "configuration")], body, root)
