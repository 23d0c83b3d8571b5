"""The ``smallnets`` command line: list, profile, compare, train, eval, predict and convert."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

# torch is imported by the commands that need it: `smallnets predict / eval MODEL.onnx` and
# `--version` run on a runtime-only install (ONNX Runtime, numpy, pillow; no torch)
DTYPE_NAMES = ("bfloat16", "float16", "float32")  # smallnets._precision.DTYPES' keys


def _knobs_from_extra(extra: Sequence[str]) -> dict:
    """Leftover ``--some-knob VALUE`` / ``--some-knob=VALUE`` / bare ``--some-knob`` (true) flags as
    ``{'some_knob': value}``: the same parsing as ``smallnets train``'s knob flags."""
    from smallnets.compare import parse_value

    return {key: True if value is None else parse_value(value) for key, value in _flag_pairs(extra)}


def _flag_pairs(extra: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--some-flag VALUE`` / ``--some-flag=VALUE`` / bare ``--some-flag`` into (some_flag, raw)."""
    pairs, i = [], 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or len(flag) == 2:
            raise ValueError(f"expected an option like --width-mult 0.5 (or a bare --cifar for true), got {flag!r}")
        key, sep, value = flag[2:].partition("=")
        if not sep:
            if i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                value = extra[i + 1]
                i += 1
            else:
                value = None  # a bare flag: true for booleans
        pairs.append((key.replace("-", "_"), value))
        i += 1
    return pairs


EXIT_CODES = {"finished": 0, "time budget": 0, "interrupted": 130}  # a run's status as the command's exit code


def cmd_train(args, extra) -> int:
    from smallnets.compare import parse_value
    from smallnets.training.config import RunConfig, load_config_file, split_options
    from smallnets.training.trainer import Trainer, TrainingDiverged

    extra = list(extra)
    # MODEL is taken here rather than by argparse, which would swallow the value of an unknown
    # option (`--progress false`) as the positional.
    model_name = extra.pop(0) if extra and not extra[0].startswith("--") else None
    options = {}
    for key, value in _flag_pairs(extra):
        options[key] = "true" if value is None else value
    data_opts, train_opts, knob_opts = split_options(options)
    if args.resume:
        if model_name or args.data or args.config or data_opts or knob_opts:
            raise ValueError("--resume continues a run with its own model, data and settings; give only --resume RUN (and --epochs, --max-minutes, --threads, --progress)")
        trainer = Trainer.resume(args.resume, **train_opts)
    else:
        raw = load_config_file(args.config) if args.config else {}
        raw = {k: dict(v) for k, v in raw.items()}
        model = raw.setdefault("model", {})
        if model_name:
            model["name"] = model_name
        model.update({k: parse_value(v) for k, v in knob_opts.items()})
        data = raw.setdefault("data", {})
        if args.data:
            data["path"] = args.data
        data.update(data_opts)
        raw.setdefault("train", {}).update(train_opts)
        if not model.get("name"):
            raise ValueError("model must be given: smallnets train MODEL --data PATH (see smallnets list)")
        if not data.get("path"):
            raise ValueError("--data must be given: an image folder, a .tar/.tar.gz archive, cifar10 or cifar100")
        run_config = RunConfig.from_dict(raw, where=args.config or "command line")
        _check_model_before_data(run_config.model.name, run_config.model.knobs, pretrained=run_config.train.pretrained is not None)
        trainer = Trainer(run_config)
    try:
        result = trainer.fit()
    except TrainingDiverged as exc:
        print(f"smallnets train: error: {exc}", file=sys.stderr)
        return 1
    if trainer.dist.is_main:
        best = f", best val top-1 {result.best_top1:.2f}%" if result.best_top1 is not None else ""
        print(f"{result.status}: {result.epochs_done} epoch(s){best}; run directory {result.run_dir}")
    from smallnets.distributed import shutdown

    shutdown()
    return EXIT_CODES.get(result.status, 0)


def _check_model_before_data(name: str, knobs: dict, *, pretrained: bool) -> None:
    """Refuse a misspelt option or a bad knob before any data is listed, hashed or decoded.

    Every flag that is neither a data nor a training option is taken as a model knob, so a typo
    such as ``--epoch`` would otherwise surface only when the model is built after the data.
    """
    from smallnets._checks import suggest
    from smallnets.data.config import DataConfig
    from smallnets.registry import model_info
    from smallnets.training.config import TrainConfig, field_types

    info = model_info(name)
    options = [*field_types(DataConfig), *field_types(TrainConfig)]
    for key in knobs:
        if key not in info.knobs and key not in info.fixed:
            flags = [f"--{k.replace('_', '-')}" for k in [*options, *info.knobs]]
            flag = f"--{key.replace('_', '-')}"
            accepted = ", ".join(f"--{k.replace('_', '-')}" for k in info.knobs) or "none"
            raise ValueError(f"unknown option {flag}: not a data or training option, nor a knob of {name}{suggest(flag, flags)} "
                             f"(knobs of {name}: {accepted}; see smallnets train --help)")  # fmt: skip
    if not pretrained:  # knob values are checked by building the model without memory
        import torch

        from smallnets.zoo import create_model

        with torch.device("meta"):
            create_model(name, **knobs)


def _finetune_options(extra: Sequence[str], command: str, reserved: Sequence[str], hint: str) -> tuple[dict, dict]:
    """(data, train) options for a shrink command's fine-tunes: any data or training flag, except
    those the command sets itself (``reserved``); anything else is refused with close matches."""
    from smallnets.training.config import split_options

    options = {key: "true" if value is None else value for key, value in _flag_pairs(extra)}
    data_opts, train_opts, knob_opts = split_options(options)
    if knob_opts:
        from smallnets._checks import suggest
        from smallnets.data.config import DataConfig
        from smallnets.training.config import TrainConfig, field_types

        flag = f"--{next(iter(knob_opts)).replace('_', '-')}"
        known = [f"--{k.replace('_', '-')}" for k in [*field_types(DataConfig), *field_types(TrainConfig)]]
        raise ValueError(f"unknown option {flag}: {command} takes its own options and data / training options for the fine-tune{suggest(flag, known)}")
    for key in reserved:
        if key in train_opts:
            raise ValueError(f"--{key} is set by {command} itself ({hint})")
    return data_opts, train_opts


def cmd_prune(args, extra) -> int:
    from smallnets.compress.workflow import format_table, prune_run

    data_opts, train_opts = _finetune_options(extra, "prune", ("epochs", "name", "out", "pretrained", "teacher", "resume"),
                                              "use --finetune-epochs, --name, --out, --distill")  # fmt: skip
    report = prune_run(args.run, target_macs=args.target_macs, ratio=args.ratio, criterion=args.criterion, scope=args.scope,
                       max_ratio=args.max_ratio,
                       protect=args.protect or (), finetune_epochs=args.finetune_epochs, distill=args.distill, name=args.name,
                       out=args.out, train_overrides=train_opts, data_overrides=data_opts, latency=not args.no_latency,
                       multiple_of=args.multiple_of, recalibrate_batches=args.recalibrate_batches)  # fmt: skip
    print(format_table(report["rows"]))
    print(f"run directory {report['run_dir']} ({report['json']}, {report['png']})")
    return EXIT_CODES.get(report["status"], 0)


def cmd_compress(args, extra) -> int:
    from smallnets.compress.deep import compress_run, format_ratios
    from smallnets.compress.workflow import format_table

    data_opts, train_opts = _finetune_options(extra, "compress", ("epochs", "name", "out", "pretrained", "teacher", "resume", "ema"),
                                              "use --finetune-epochs, --name, --out")  # fmt: skip
    report = compress_run(args.run, prune=args.prune, bits=args.bits, fc_bits=args.fc_bits, huffman=args.huffman,
                          finetune_epochs=args.finetune_epochs, name=args.name, out=args.out, train_overrides=train_opts,
                          data_overrides=data_opts, latency=not args.no_latency)  # fmt: skip
    if not report["rows"]:
        print(f"{report['status']}: compress stopped in a fine-tune; {report['run_dir']} holds what was done", file=sys.stderr)
    else:
        print(format_table(report["rows"]))
        print(format_ratios(report["rows"]))
        print(f"folder {report['run_dir']} ({report['json']}, {report['png']})")
    return EXIT_CODES.get(report["status"], 0)


def cmd_list_formats(args) -> int:
    from smallnets.pretrained import FORMATS, list_formats

    names = list_formats(args.pattern)
    rows = [FORMATS[n] for n in names]
    if args.json:
        print(json.dumps([{"format": f.name, "model": f.model, "knobs": dict(f.knobs), "preprocessing": dict(f.preprocessing),
                           "url": f.url, "detected": f.detect} for f in rows], indent=2))  # fmt: skip
        return 0
    models = [f.model + (":" + ",".join(f"{k}={v}" for k, v in f.knobs.items()) if f.knobs else "") for f in rows]
    width, mwidth = max((len(n) for n in names), default=6), max((len(m) for m in models), default=15)
    print(f"{'format':<{width}}  {'smallnets model':<{mwidth}}  {'resize/crop':>11}  published weights")
    for f, model in zip(rows, models):
        prep = f"{f.preprocessing['resize']}/{f.preprocessing['crop']}"
        print(f"{f.name:<{width}}  {model:<{mwidth}}  {prep:>11}  {'yes' if f.url else '-'}{'' if f.detect else '  (name it: not detected)'}")
    return 0


def cmd_list(args) -> int:
    from smallnets.registry import list_models, model_info

    if args.formats:
        return cmd_list_formats(args)
    names = list_models(args.pattern)
    if args.json:
        out = []
        for n in names:
            info = model_info(n)
            pub = info.published_for()
            out.append(
                {
                    "name": n,
                    "family": info.family,
                    "input_size": list(info.input_size),
                    "knobs": dict(info.knobs),
                    "top1": pub.top1 if pub else None,
                    "paper": info.paper,
                }
            )
        print(json.dumps(out, indent=2))
        return 0
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    print(f"{'model':<{width}}  {'family':<14}{'input':>9}{'top-1':>8}  knobs")
    for n in names:
        info = model_info(n)
        pub = info.published_for()
        top1 = f"{pub.top1:.1f}" if pub and pub.top1 is not None and pub.dataset == "imagenet" else "-"
        knobs = ", ".join(info.knobs)
        print(f"{n:<{width}}  {info.family:<14}{info.input_size[1]:>5}x{info.input_size[2]:<3}{top1:>8}  {knobs}")
    return 0


def _print_profile(report, args) -> int:
    if args.json:
        print(json.dumps(report.to_dict(layers=args.layers), indent=2))
        return 0
    print(report.summary())
    print()
    print(report.kind_table())
    if args.layers:
        print()
        print(report.layer_table())
    print(f"\n{report.conventions['macs']}")
    return 0


def cmd_profile(args, extra) -> int:
    from smallnets._precision import DTYPES
    from smallnets.profiler import default_input_size, profile
    from smallnets.registry import resolve_knobs

    knobs = _knobs_from_extra(extra)
    if args.pretrained and str(args.pretrained).endswith(".onnx"):  # an exported / quantized file: its counts, bytes as stored, ORT latency
        from smallnets.profiler import profile_onnx

        for flag, value in (("name", args.name), ("--format", args.format), ("--resolution", args.resolution), ("--num-classes", args.num_classes),
                            ("--in-chans", args.in_chans), ("--dtype", args.dtype if args.dtype != "float32" else None),
                            ("--channels-last", args.channels_last or None)):  # fmt: skip
            if value is not None:
                raise ValueError(f"{flag} cannot be combined with an ONNX file (the file fixes the model, its input and its precision), got {value!r}")
        if knobs:
            raise ValueError(f"model knobs cannot be combined with an ONNX file, got {', '.join('--' + k.replace('_', '-') for k in knobs)}")
        report = profile_onnx(args.pretrained, latency=not args.no_latency, batch_size=args.batch_size, runs=args.runs, threads=args.threads)
        return _print_profile(report, args)
    if args.pretrained:
        # the model is the checkpoint's: its format's knobs and classes, at the format's crop size
        from smallnets.pretrained import load_pretrained

        if args.in_chans is not None:
            raise ValueError("--in-chans cannot be combined with --pretrained: the checkpoint fixes the input channels")
        target = load_pretrained(args.name, args.pretrained, format=args.format, num_classes=args.num_classes,
                                 offline=args.offline or None, **knobs)  # fmt: skip
        meta = target.smallnets_meta
        side = args.resolution or meta["preprocessing"]["crop"]
        input_size, knobs = (3, side, side), {}
        knobs["file"] = (meta.get("pretrained") or {}).get("path")  # its size on disk goes into the report
        print(f"{meta['pretrained']['format']} -> {target.smallnets_config['name']}" + ("" if args.resolution else f", {side}x{side} px (the checkpoint's eval crop)"),
              file=sys.stderr if args.json else sys.stdout)  # fmt: skip
    else:
        if args.name is None:
            raise ValueError("profile needs a zoo model name (e.g. mobilenet_v2), or --pretrained SOURCE")
        resolve_knobs(args.name, knobs)  # an unknown flag is named as such, before profile() sees it
        c, h, w = default_input_size(args.name, knobs)
        if args.in_chans is not None:
            c = args.in_chans
        if args.resolution is not None:
            h = w = args.resolution
        for key, value in (("num_classes", args.num_classes), ("in_chans", args.in_chans)):
            if value is not None:
                knobs[key] = value
        target, input_size = args.name, (c, h, w)
    report = profile(
        target,
        input_size,
        latency=not args.no_latency,
        memory=not args.no_memory,
        batch_size=args.batch_size,
        runs=args.runs,
        threads=args.threads,
        dtype=DTYPES[args.dtype],
        channels_last=args.channels_last,
        **knobs,
    )
    return _print_profile(report, args)


def cmd_compare(args) -> int:
    from smallnets.compare import compare, format_table, plot_comparison, write_json

    rows = compare(
        args.names or None,
        baselines=args.baselines,
        latency=not args.no_latency,
        max_seconds=args.max_seconds,
        threads=args.threads,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    if args.json == "-":
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_table(rows))
        if args.json:
            write_json(rows, args.json)
            print(f"\nwrote {args.json}")
    if args.chart:
        plot_comparison(rows, args.chart)
        print(f"{'' if args.json == '-' else chr(10)}chart: {args.chart}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def _default_confusion_png(target: str, weights: str) -> str:
    """RUN/confusion.png for a run directory, else beside the weights: NAME-confusion.png."""
    from pathlib import Path

    from smallnets.rundir import RunDir

    if Path(target).is_dir():
        return str(RunDir(target).confusion)
    w = Path(weights)
    return str(w.with_name(f"{w.stem}-confusion.png"))


def _per_class_table(result, limit: int = 25) -> list[str]:
    """Per-class accuracy, worst first (classes without images last)."""
    acc, support = result.per_class, result.support
    order = sorted(acc, key=lambda c: (acc[c] is None, acc[c] if acc[c] is not None else 0.0, c))
    shown = order if len(order) <= limit else order[:20]
    width = max(5, *(len(c) for c in shown))
    lines = [f"  {'class':<{width}}  {'top-1':>6}  {'images':>6}"]
    for c in shown:
        a = f"{acc[c]:.1f}%" if acc[c] is not None else "-"
        lines.append(f"  {c:<{width}}  {a:>6}  {support[c]:>6}")
    if len(shown) < len(order):
        lines.append(f"  ... {len(order) - len(shown)} more classes (--json lists every class)")
    return lines


def _expand_eval_targets(targets: Sequence[str]) -> list[str]:
    """The models to evaluate: a `smallnets quantize` directory that is not a training run stands for
    the files of its report (source weights, fp32 and int8 ONNX), in the report's order."""
    from pathlib import Path

    from smallnets.rundir import RunDir

    out: list[str] = []
    for t in targets:
        report = Path(t) / "quantize.json"
        if Path(t).is_dir() and report.is_file() and not RunDir.is_run(t):
            files = [r.get("file") for r in json.loads(report.read_text(encoding="utf-8")).get("rows", [])]
            out.extend(f for f in files if f and Path(f).exists())
        else:
            out.append(t)
    return out


def _eval_side_by_side(args, targets: list[str]) -> int:
    """Several models on the same images: one table (precision, bytes on disk, top-1 / top-5, loss, change from the first)."""
    import os
    import warnings
    from pathlib import Path

    from smallnets.checkpoint import resolve_weights
    from smallnets.evaluation import evaluate_weights

    if args.confusion:
        raise ValueError("confusion must not be given with several models (one matrix per model: evaluate them one at a time)")
    results = []
    for t in targets:
        with warnings.catch_warnings(record=True) as caught:
            r = evaluate_weights(t, args.data, split=args.split, batch_size=args.batch_size, device=args.device,
                                 precision=args.precision, workers=args.workers, progress=sys.stderr.isatty())  # fmt: skip
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        results.append((t, r))
    evaluated = {r.details["evaluated"] for _, r in results}
    if args.json:
        print(json.dumps([{**r.to_dict(), "bytes": os.path.getsize(resolve_weights(Path(r.details["weights"])))} for _, r in results], indent=2))
        return 0
    first = results[0][1].top1
    print("| model | file | precision | bytes on disk | top-1 (%) | top-5 (%) | loss | top-1 change |")
    print("|---|---|---|---|---|---|---|---|")
    base_bytes = None
    for t, r in results:
        d = r.details
        size = os.path.getsize(resolve_weights(Path(d["weights"])))
        base_bytes = base_bytes or size
        change = "—" if r is results[0][1] else f"{r.top1 - first:+.2f}"
        print(f"| {d['model']} | {d['weights']} | {d['precision']} | {size:,} ({size / base_bytes:.2f}x) | {r.top1:.2f} | {r.top5:.2f} | "
              f"{r.loss:.4f} | {change} |")  # fmt: skip
    print()
    if len(evaluated) == 1:
        print(f"all on the {next(iter(evaluated))}")
    else:
        print("NOT the same images: " + "; ".join(f"{t}: {r.details['evaluated']}" for t, r in results))
    return 0


def cmd_eval(args) -> int:
    import warnings

    from smallnets.evaluation import evaluate_weights
    from smallnets.plots import plot_confusion

    targets = _expand_eval_targets(args.weights)
    if len(targets) > 1:
        return _eval_side_by_side(args, targets)
    if not targets:
        raise ValueError(f"weights must name a model; {args.weights[0]!r} holds none")
    args.weights = targets[0]
    with warnings.catch_warnings(record=True) as caught:  # files left out: one plain line each on stderr
        result = evaluate_weights(args.weights, args.data, split=args.split, batch_size=args.batch_size, device=args.device,
                                  precision=args.precision, workers=args.workers, progress=sys.stderr.isatty())  # fmt: skip
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    d = result.details
    png = args.confusion if args.confusion is not None else _default_confusion_png(args.weights, d["weights"])
    if png:
        where = "validation split" if d["split"] == "val" else "all images"
        epoch = f", epoch {d['epoch']}" if d.get("epoch") is not None else ""
        plot_confusion(result.confusion, result.classes, png, title=f"{d['model']}{epoch} on {d['data']} ({where})")
    if args.json:
        print(json.dumps({**result.to_dict(), "confusion_png": png or None}, indent=2))
        return 0
    epoch = f", epoch {d['epoch']}" if d.get("epoch") is not None else ""
    same = {True: "; the same files as the run's split.json", False: "; NOT the files of the run's split.json"}.get(d.get("split_matches_run"), "")
    if d.get("split_matches_run") is True and d.get("changed_val_files") is None:  # names matched; split.json records no content
        same = "; the same file names as the run's split.json (their content could not be checked: split.json records none)"
    print(f"weights    {d['weights']} ({d['model']}{epoch})")
    print(f"data       {d['evaluated']}{same}")
    print(f"precision  {d['precision']} on {d['device']}")
    print()
    print(f"top-1   {result.top1:6.2f}%")
    print(f"top-5   {result.top5:6.2f}%" + ("" if len(result.classes) >= 5 else f"  (k = {len(result.classes)}: the model has {len(result.classes)} classes)"))
    print(f"loss    {result.loss:.4f}")
    print(f"images  {result.count}")
    print()
    print("per-class accuracy, worst first:")
    print("\n".join(_per_class_table(result)))
    for note in d["notes"]:
        print(f"note: {note}")
    if png:
        print(f"confusion matrix: {png}")
    return 0


def cmd_convert(args) -> int:
    import os
    from pathlib import Path

    from smallnets.checkpoint import save_weights
    from smallnets.pretrained import load_pretrained, local_source

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"OUT must end in .safetensors, got {args.out!r}")
    targets = (out, out.with_suffix(".json"))  # the weights and their sidecar

    def check_targets(source: Path | None) -> None:
        """Never the file being read (any name for it: symlink, hard link, '..'); an existing output only with --force."""
        for target in targets:
            if source is not None and target.exists() and os.path.samefile(target, source):
                raise ValueError(f"{str(target)!r} is the input {str(source)!r} (the same file); convert never replaces "
                                 "the file it reads, even with --force: choose another OUT")  # fmt: skip
        existing = [t for t in targets if t.exists() or t.is_symlink()]
        if existing and not args.force:
            raise FileExistsError(f"{existing[0]} already exists; pass --force to replace it, or choose another OUT")

    check_targets(local_source(args.source))  # before anything is downloaded or converted
    model = load_pretrained(args.model, args.source, format=args.format, num_classes=args.num_classes,
                            strict=False if args.partial else None, sha256=args.sha256, offline=args.offline or None)  # fmt: skip
    meta = model.smallnets_meta
    check_targets(Path(meta["pretrained"]["path"]))  # the file actually read (a URL's cached copy, a run's weights)
    report = meta["load_report"]
    save_weights(model, args.out, classes=meta["classes"], preprocessing=meta["preprocessing"],
                 extra={"pretrained": meta["pretrained"], "load_report": report})  # fmt: skip
    cfg = model.smallnets_config
    knobs = ", ".join(f"{k}={v}" for k, v in cfg["knobs"].items() if v is not None) or "defaults"
    params = sum(p.numel() for p in model.parameters())
    print(f"{meta['pretrained']['format']} -> {cfg['name']} ({knobs}), {cfg['num_classes']} classes, {params / 1e6:.3f}M params")
    prep = meta["preprocessing"]
    print(f"preprocessing: resize {prep['resize']} ({prep['interpolation']}), center crop {prep['crop']}, mean {prep['mean']}, std {prep['std']}")
    for title in ("missing", "unexpected", "shape_mismatch", "reinitialised"):
        if report.get(title):
            print(f"{title.replace('_', ' ')} ({len(report[title])}): {', '.join(report[title][:8])}")
    print(f"wrote {args.out} and {args.out.rsplit('.', 1)[0]}.json")
    return 0


def _onnx_predictions(args):
    """(paths, predictions) of an exported ONNX file on ONNX Runtime: no torch needed."""
    from smallnets.data.listing import find_images
    from smallnets.runtime import OnnxClassifier

    if args.pretrained:
        raise ValueError(f"--pretrained takes a zoo model name, not an ONNX file; got {args.weights!r}")
    if args.device not in ("auto", "cpu"):
        raise ValueError(f"device must be 'auto' or 'cpu' for an ONNX file (ONNX Runtime's CPU provider), got {args.device!r}")
    paths = find_images(args.images)
    model = OnnxClassifier(args.weights, threads=args.threads)
    return paths, model.iter_predictions(paths, top_k=args.top_k, batch_size=args.batch_size)


def _torch_predictions(args):
    """(paths, predictions) of smallnets weights (or a --pretrained checkpoint) on PyTorch."""
    import torch

    from smallnets.data.listing import find_images
    from smallnets.prediction import iter_predictions

    if args.pretrained:
        from smallnets.pretrained import load_pretrained

        if args.weights.startswith("-") or "." in args.weights or "/" in args.weights:
            raise ValueError(f"with --pretrained the first argument must be a zoo model name (e.g. mobilenet_v2), got {args.weights!r}")
        args.weights = load_pretrained(args.weights, args.pretrained, format=args.format, offline=args.offline or None).eval()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    paths = find_images(args.images)
    return paths, iter_predictions(args.weights, paths, top_k=args.top_k, batch_size=args.batch_size, device=args.device, workers=args.workers)


def cmd_predict(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if str(args.weights).endswith(".onnx"):
        paths, predictions = _onnx_predictions(args)
    else:
        paths, predictions = _torch_predictions(args)
    width = min(max(len(p) for p in paths), 60)
    failed, out = 0, []
    for pred in predictions:
        if not pred.ok:
            failed += 1
            print(f"smallnets predict: skipped {pred.path}: {pred.error}", file=sys.stderr, flush=True)
        elif args.json:
            out.append(pred.to_dict())
        else:
            scores = ", ".join(f"{s.label} {100 * s.probability:.1f}%" for s in pred.predictions)
            print(f"{pred.path + ':':<{width + 1}}  {scores}", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
    if failed:
        print(f"smallnets predict: {failed} of {len(paths)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def cmd_quantize(args, extra) -> int:
    from smallnets.quantization import quantize_run

    data_opts, train_opts = _finetune_options(extra, "quantize", ("epochs", "name", "out", "pretrained", "teacher", "resume"),
                                              "use --qat-epochs, --name, --out")  # fmt: skip
    if (data_opts or train_opts) and not args.qat_epochs:
        flags = " ".join(f"--{k.replace('_', '-')}" for k in [*data_opts, *train_opts])
        raise ValueError(f"training options ({flags}) apply to quantization-aware training: add --qat-epochs N (N >= 1)")
    keep = [k for part in (args.keep_fp32 or []) for k in part.split(",") if k]
    report = quantize_run(args.run, calib=args.calib, calib_data=args.calib_data, method=args.method, keep_fp32=keep,
                          name=args.name, out=args.out, latency=not args.no_latency, qat_epochs=args.qat_epochs,
                          freeze_bn=args.freeze_bn, freeze_observers=args.freeze_observers, qat_ranges=args.qat_ranges, qat_init=args.qat_init, export_ranges=args.export_ranges,
                          train_overrides=train_opts, data_overrides=data_opts)  # fmt: skip
    if report["qat"] is not None:
        q = report["qat"]
        after = "not validated (stopped before an epoch ended)" if q["simulated_int8_top1_best"] is None else f"{q['simulated_int8_top1_best']:.2f}% after (best epoch)"
        print(f"quantization-aware training: {q['epochs']} epoch(s) ({q['status']}), simulated int8 top-1 "
              f"{q['simulated_int8_top1_before']:.2f}% before, {after}")  # fmt: skip
    print(report["export"])
    print(report["quantize"])
    print()
    print(report["table"])
    print(f"directory {report['run_dir']} ({report['json']}, {report['png']})")
    return 0


def cmd_pick(args) -> int:
    from smallnets.pick import KNOB_GRID, format_candidates, pick, to_json, train_candidates

    if args.data is None and (args.train_minutes is not None or args.train_count is not None):
        raise ValueError("--train-minutes and --train-count apply to training candidates: add --data PATH")
    result = pick(max_macs=args.max_macs, max_params=args.max_params, max_bytes=args.max_bytes, max_latency_ms=args.max_latency_ms,
                  resolution=args.resolution, sweeps=args.sweeps, top=args.top, grid=None if args.no_grid else KNOB_GRID)  # fmt: skip
    if args.data is not None:
        train_candidates(result, args.data, minutes=5.0 if args.train_minutes is None else args.train_minutes,
                         count=3 if args.train_count is None else args.train_count, out=args.out)  # fmt: skip
    given = ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in result["limits"].items()) or "no limits"
    print(f"{result['fitting']} of {result['considered']} configurations fit ({given}); the first {len(result['candidates'])}:")
    print(format_candidates(result["candidates"]))
    if args.json:
        payload = json.dumps({**{k: v for k, v in result.items() if k != "candidates"}, "candidates": to_json(result["candidates"])}, indent=2, default=str)
        if args.json == "-":
            print(payload)
        else:
            from smallnets._io import atomic_write_text

            atomic_write_text(args.json, payload + "\n")
    return 0


def cmd_sweep(args) -> int:
    from smallnets.sweep import load_sweep, run_sweep

    spec = load_sweep(args.spec, out=args.out, data=args.data)
    only = [i for part in (args.only or []) for i in part.split(",") if i]
    result = run_sweep(spec, only=only or None, latency=not args.no_latency, progress=args.progress == "true", dry_run=args.dry_run)
    if not args.dry_run and result.get("table"):
        print()
        print(result["table"])
        print(f"sweep directory {result['directory']} ({result['json']}, {result['md']}, {result['png']})")
    if result.get("diverged"):
        print(f"smallnets sweep: {len(result['diverged'])} point(s) diverged (loss NaN or infinite): {', '.join(result['diverged'])}; "
              "their directories keep the last good checkpoint and the reason in run.json", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cmd_report(args) -> int:
    from smallnets.report import write_report

    print(write_report(args.path, args.out, evaluate=not args.no_eval))
    return 0


def cmd_bench(args) -> int:
    from smallnets.bench import DEFAULT_BACKENDS, bench, write_bench

    backends = [b for part in (args.backends or [",".join(DEFAULT_BACKENDS)]) for b in part.split(",") if b]
    try:
        batches = [int(b) for b in args.batch.split(",") if b]
    except ValueError:
        raise ValueError(f"--batch must be comma-separated integers, e.g. 1,32; got {args.batch!r}") from None
    target = args.target
    if str(target).endswith(".onnx") and args.backends is None:
        backends = ["ort"]
    report = bench(target, backends=backends, batches=batches, threads=args.threads, rounds=args.rounds, runs=args.runs,
                   calibration=args.calib_data, calib=args.calib)  # fmt: skip
    print(report)
    if args.json:
        out_json, png = write_bench(report, args.json)
        print(f"wrote {out_json} and {png}")
    return 0


def cmd_export(args) -> int:
    from smallnets.export import export_onnx

    batch = args.batch
    if batch != "dynamic":
        try:
            batch = int(batch)
        except ValueError:
            raise ValueError(f"--batch must be 'dynamic' or an integer >= 1, got {args.batch!r}") from None
    report = export_onnx(args.weights, args.out, batch=batch, opset=args.opset, precision="fp16" if args.fp16 else "fp32",
                         check=not args.no_check, check_images=args.check_images, overwrite=args.force)  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smallnets", description="Efficient CNNs exact to their papers: pick, profile, compare.")
    from smallnets import __version__

    parser.add_argument("--version", action="version", version=f"smallnets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list zoo models (optionally matching a wildcard pattern)")
    p.add_argument("pattern", nargs="?", help="e.g. 'mobilenet*' or 'efficientnet'")
    p.add_argument("--formats", action="store_true", help="list the torchvision / timm checkpoint formats instead (pattern: e.g. 'timm:*')")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "profile",
        help="params, MACs, size, activation memory and latency of one model",
        description="Any model knob can be given as a flag: --width-mult 0.5, --groups 8, --bypass simple, --separable false.",
    )
    p.add_argument("name", nargs="?", help="zoo model name (optional with --pretrained: the checkpoint format's model)")
    p.add_argument("--pretrained", metavar="SOURCE", help="profile the model a checkpoint fills: torchvision / timm file, https URL, FORMAT=PATH, or a smallnets run or weights file")
    p.add_argument("--format", help="checkpoint format with --pretrained, e.g. timm:tf_efficientnet_b3 (default: detected)")
    p.add_argument("--offline", action="store_true", help="with --pretrained: use the download cache only")
    p.add_argument("--resolution", type=int, help="input side in pixels (the resolution multiplier rho); default: the paper's (a CIFAR stem: 32; with --pretrained: the checkpoint's eval crop)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--layers", action="store_true", help="print the per-layer table")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--batch-size", type=int, default=1, help="batch for the latency measurement")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    p.add_argument("--runs", type=int, default=30, help="timed runs (after 5 warm-up runs)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-memory", action="store_true", help="skip the activation-memory measurement")

    p = sub.add_parser(
        "prune",
        allow_abbrev=False,
        help="structured pruning of a trained run: a physically smaller model, fine-tuned into a new run",
        description=(
            "Removes whole channels (every group that must go together: residual streams, concatenations, shuffles, "
            "grouped and depthwise convs, SE) from RUN's best weights until the MACs fall to --target-macs of the "
            "original (or --ratio of the channels are gone), fine-tunes the smaller model on RUN's data and "
            "validation split for --finetune-epochs (at a tenth of RUN's learning rate unless --lr is given; any "
            "data or training flag applies) and writes a new run directory with prune.json / prune.png: params, MACs, "
            "bytes on disk, CPU latency at batch 1 and 32 and validation top-1 before and after. RUN is never modified."
        ),
    )
    p.add_argument("run", help="a run directory written by smallnets train")
    p.add_argument("--target-macs", type=float, help="keep this fraction of the MACs, in (0, 1)")
    p.add_argument("--ratio", type=float, help="remove this fraction of the prunable channels, in (0, 1)")
    p.add_argument("--criterion", default="l1", help="l1 (filter norms), bn_scale (BatchNorm |gamma|) or taylor (first-order, on training batches)")
    p.add_argument("--scope", default="per_layer", help="per_layer (the same fraction from every channel space; default) or global (rank all channel groups together)")
    p.add_argument("--max-ratio", type=float, help="global scope: remove at most this fraction of any one channel space, in (0, 1]")
    p.add_argument("--protect", action="append", metavar="MODULE", help="module name or pattern whose channels stay (repeatable), e.g. stem")
    p.add_argument("--multiple-of", type=int, default=1, help="round each kept width down to a multiple of this (8: faster CPU kernels)")
    p.add_argument("--recalibrate-batches", type=int, default=20, help="training batches to re-measure BatchNorm statistics on before fine-tuning (0: none)")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--distill", action="store_true", help="fine-tune with the unpruned model as teacher (knowledge distillation)")
    p.add_argument("--name", help="name of the new run directory (default: MODEL-YYYYmmdd-HHMMSS)")
    p.add_argument("--out", help="parent folder of the new run directory (default: RUN's parent)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")

    p = sub.add_parser(
        "compress",
        allow_abbrev=False,
        help="Deep Compression of a trained run: pruning, weight sharing, Huffman coding, each stage measured on disk",
        description=(
            "Prunes --prune of RUN's conv and linear weights by magnitude while fine-tuning (NEW/prune), shares each "
            "layer's weights among 2**--bits values (2**--fc-bits for linear layers) by k-means and fine-tunes the "
            "centroids (NEW/share), and writes NEW/pruned.sncz, NEW/shared.sncz and, with --huffman, "
            "NEW/compressed.sncz, with compress.json / compress.png: bytes on disk of each file, its ratio to fp32 and "
            "validation top-1 (Deep Compression, Han et al. 2016, Table 1). Fine-tunes run on RUN's data and "
            "validation split for --finetune-epochs each (a tenth of RUN's learning rate unless --lr is given; any "
            "data or training flag applies). RUN is never modified, NEW never overwritten."
        ),
    )
    p.add_argument("run", help="a run directory written by smallnets train")
    p.add_argument("--prune", type=float, default=0.6, help="fraction of the conv and linear weights to prune, in [0, 1) (default: %(default)s)")
    p.add_argument("--bits", type=int, default=8, help="bits per shared conv weight: 2**bits values per layer (default: %(default)s)")
    p.add_argument("--fc-bits", type=int, default=5, help="bits per shared linear weight (default: %(default)s)")
    p.add_argument("--huffman", action="store_true", help="also Huffman-code the shared weights (NEW/compressed.sncz)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="epochs of each fine-tune (default: %(default)s)")
    p.add_argument("--name", help="name of the new folder (default: RUN's name + -compressed)")
    p.add_argument("--out", help="parent folder of the new folder (default: RUN's parent)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")

    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train a zoo model on an image folder, archive or CIFAR (one process or torchrun)",
        description=(
            "Every field of the data and train configuration is a flag (--epochs 30, --batch-size 128, "
            "--optimizer adamw, --ema, --precision bf16 ...); any other flag is a model knob "
            "(--width-mult 0.5, --cifar). Flags override --config FILE (JSON or TOML with [model], "
            "[data], [train] sections). Under torchrun every process runs the same command. "
            "Knowledge distillation: --teacher RUN_OR_WEIGHTS (a run directory or a smallnets .safetensors with its "
            "sidecar, trained on the same classes at the same input size) with --kd-weight 0.5 (the KL term's share, "
            "in [0, 1]) and --kd-temperature 4 (T > 0): the loss is kd_weight * T^2 * KL + (1 - kd_weight) * cross-entropy, "
            "the teacher frozen and shown each augmented batch; --resume loads it again from config.json."
        ),
    )
    p.usage = ("smallnets train MODEL --data PATH [--config FILE] [--teacher RUN_OR_WEIGHTS [--kd-weight W] [--kd-temperature T]] "
               "[--OPTION VALUE ...] [--KNOB VALUE ...]\n       smallnets train --resume RUN")
    p.add_argument("--data", help="image folder, .tar/.tar.gz archive, cifar10 or cifar100")
    p.add_argument("--config", help="JSON or TOML run configuration")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory")

    p = sub.add_parser(
        "sweep",
        help="train a grid of configurations (a sweep file), resumable; table, JSON and Pareto plots",
        description=(
            "Trains every point of SPEC (a .toml or .json sweep file, see smallnets.sweep and sweeps/) into OUT/NAME/POINT, "
            "skipping finished points and resuming interrupted ones, then counts each point's costs, measures its latency "
            "once and writes sweep.json, sweep.md and sweep.png (validation top-1 against MACs, parameters, bytes and "
            "latency, the Pareto front marked). Under torchrun every process runs it the same way."
        ),
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--out", help="parent folder of the sweep directory (default: the file's [sweep] out, else runs/sweeps)")
    p.add_argument("--data", help="the data set (replaces the file's data.path), e.g. ../shared/data/cifar10-train-jpg.tar.gz")
    p.add_argument("--only", action="append", metavar="IDS", help="train only these points (comma-separated ids)")
    p.add_argument("--dry-run", action="store_true", help="list the points and their state; train nothing")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement of each point")
    p.add_argument("--progress", choices=("true", "false"), default="true", help="progress lines (default: %(default)s)")

    p = sub.add_parser(
        "pick",
        help="the zoo configurations inside a budget (MACs, params, bytes, latency), ranked by accuracy evidence",
        description=(
            "Counts every configuration the papers published an accuracy for, every point of --sweeps and the families' knob "
            "grid (the multipliers and input sizes the papers sweep) at --resolution, keeps those inside every limit given "
            "(latency measured on this machine, cached), and ranks them: points measured in your sweeps first, then published "
            "ones (dataset named), then the grid's with no accuracy figure (largest MACs first). With --data it trains the first --train-count "
            "candidates for --train-minutes each and reports their measured validation top-1."
        ),
    )
    p.add_argument("--max-macs", metavar="N", help="e.g. 50M")
    p.add_argument("--max-params", metavar="N", help="e.g. 1M")
    p.add_argument("--max-bytes", metavar="B", help="fp32 weights, e.g. 2MB")
    p.add_argument("--max-latency-ms", type=float, metavar="MS", help="batch 1, fp32, this machine")
    p.add_argument("--resolution", type=int, help="input side in px (default: each configuration's own; <= 64 uses the CIFAR stem)")
    p.add_argument("--sweeps", nargs="*", default=[], metavar="DIR", help="sweep directories whose measured points are candidates too")
    p.add_argument("--top", type=int, default=10, help="candidates to print (default: %(default)s)")
    p.add_argument("--no-grid", action="store_true", help="leave out the knob grid: published configurations and --sweeps only")
    p.add_argument("--data", help="train the first candidates on this data set briefly")
    p.add_argument("--train-minutes", type=float, help="with --data: minutes per candidate (default: 5)")
    p.add_argument("--train-count", type=int, help="with --data: candidates to train (default: 3)")
    p.add_argument("--out", default="runs/pick", help="with --data: folder of the training sweep (default: %(default)s)")
    p.add_argument("--json", nargs="?", const="-", help="write JSON to PATH, or print it with no PATH")

    p = sub.add_parser(
        "report",
        help="one self-contained HTML page of a run or a sweep: curves, per-class accuracy, costs, Pareto front",
        description=(
            "For a run directory: the learning curves and per-epoch metrics, the confusion matrix and per-class accuracy of "
            "its weights on its validation split (--no-eval skips them), the cost profile and the configuration. For a sweep "
            "directory: its points with the Pareto front marked, the paper's figures beside ours, the Pareto plots and links "
            "to each point's own report. Plots are embedded: the page needs no network. Prints the path written."
        ),
    )
    p.add_argument("path", metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--out", metavar="FILE.html", help="where to write the page (default: RUN_OR_SWEEP_DIR/report.html)")
    p.add_argument("--no-eval", action="store_true", help="a run's page without the evaluation on its validation split")

    p = sub.add_parser("compare", help="table and chart of several models (default: one per family)")
    p.add_argument("names", nargs="*", help="model specs: name[:knob=value,...][@resolution], e.g. mobilenet_v1:width_mult=0.5@160")
    p.add_argument("--baselines", action="store_true",
                   help="add one classic network of each family (AlexNet, VGG, GoogLeNet, Inception v3, ResNet, ResNeXt, DPN, ...): "
                        "the networks the efficient ones are measured against")  # fmt: skip
    p.add_argument("--chart", default="smallnets-compare.png", help="PNG to write (default: %(default)s; '' for none)")
    p.add_argument("--json", nargs="?", const="-", help="write JSON to PATH, or print it with no PATH")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--max-seconds", type=float, default=2.0, help="timing budget per model (default: %(default)s)")
    p.add_argument("--threads", type=int)
    p = sub.add_parser(
        "eval",
        help="evaluate trained weights: top-1/top-5, loss, per-class accuracy, confusion matrix",
        description=(
            "RUN_OR_WEIGHTS is a run directory (best.safetensors, else last), a .safetensors file with its "
            "JSON sidecar, or a compressed .sncz file (smallnets compress). --split val rebuilds the run's validation split exactly as training did (the default "
            "on the run's own data); --split all evaluates every image of a class-folder tree or archive "
            "(ROOT/<class>/..., ROOT/test/<class>/... or ROOT/val/<class>/...) with the model's eval preprocessing "
            "(the default for other data and for a weights file)."
        ),
    )
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS", nargs="+",
                   help="one or more: several (or a `smallnets quantize` directory, which stands for its models) are compared side by side")
    p.add_argument("--data", help="image folder, .tar/.tar.gz archive, cifar10 or cifar100 (default: the run's data)")
    p.add_argument("--split", choices=("val", "all"), help="val: the run's validation split; all: every image of --data")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's evaluation batch, else 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the run's (fp32 for lone weights)")
    p.add_argument("--workers", type=int, help="decoding processes (default: up to 4 for large sets)")
    p.add_argument("--confusion", metavar="PNG", help="confusion-matrix PNG (default: RUN/confusion.png, or NAME-confusion.png beside the weights; '' for none)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON (nothing else on stdout)")

    p = sub.add_parser(
        "predict",
        help="top-k classes of image files with a trained model",
        description="Directories are walked recursively for image files (sorted). Unreadable files are reported on stderr and skipped (exit code 1).",
    )
    p.add_argument("weights", metavar="MODEL", help="run directory, .safetensors, compressed .sncz or exported .onnx (ONNX Runtime; "
                                                    "needs no torch); with --pretrained, a zoo model name")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's / ONNX Runtime's)")
    p.add_argument("--pretrained", metavar="SOURCE", help="torchvision / timm checkpoint (file, https URL, FORMAT=PATH) or a smallnets run or weights file")
    p.add_argument("--format", help="checkpoint format, e.g. timm:tf_efficientnet_b0 (default: detected)")
    p.add_argument("--offline", action="store_true", help="use the download cache only")
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--workers", type=int, help="decoding processes (default: up to 4 for large sets)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, predictions: [{label, index, probability}]}")

    p = sub.add_parser(
        "export",
        help="export to ONNX: BatchNorm folded, graph optimised, classes and preprocessing in the metadata, checked on ONNX Runtime",
        description=(
            "Writes OUT.onnx (to a temporary file, renamed once written and checked). ONNX Runtime's logits are compared "
            "with PyTorch's on the spot (fp32: within 1e-4 of the largest logit; fp16: 1e-2 and the same top-1); a failed "
            "check writes nothing and exits 2."
        ),
    )
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS", help="run directory, .safetensors or compressed .sncz")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--to", choices=("onnx",), default="onnx", help="export format (default: %(default)s)")
    p.add_argument("--fp16", action="store_true", help="half-precision weights and input")
    p.add_argument("--opset", type=int, help="ONNX opset, 18 or newer (default: the exporter's)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' or a fixed batch size (default: %(default)s)")
    p.add_argument("--check-images", nargs="+", metavar="IMAGE_OR_DIR", help="images for the check (default: a seeded random batch)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")

    p = sub.add_parser(
        "quantize",
        help="int8 post-training quantization of a trained run (ONNX Runtime QDQ, per-channel weights), with a before/after table",
        description=(
            "Exports RUN's model to ONNX, calibrates activation ranges on --calib training images (never validation "
            "images) and writes OUT/NAME (default: beside RUN, RUN-int8) with model.onnx, model.int8.onnx and "
            "quantize.json / quantize.png: bytes on disk, CPU latency at batch 1 and 32, validation top-1. With "
            "--qat-epochs N it fine-tunes RUN's weights with int8 fake quantization first (quantization-aware training, "
            "an ordinary training run in OUT/NAME) and quantizes the result."
        ),
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--calib", type=int, default=512, help="calibration images (default: %(default)s)")
    p.add_argument("--calib-data", metavar="IMAGES", help="calibration images of your own (files or folders) instead of the run's training images")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax", help="activation range calibration (default: %(default)s)")
    p.add_argument("--keep-fp32", action="append", metavar="OPS", help="ONNX op types or node names left in fp32, e.g. Sigmoid,Mul")
    p.add_argument("--qat-epochs", type=int, default=0, metavar="N",
                   help="quantization-aware training first: N epochs of int8 fake-quantized fine-tuning on RUN's data (default: 0, none); "
                        "any training option (--lr, --batch-size, --max-minutes ...) applies to it")  # fmt: skip
    p.add_argument("--freeze-bn", type=float, default=0.0, metavar="F", help="QAT: BatchNorm uses its running statistics after this fraction of the steps (default: %(default)s, from the start: a short fine-tune of a trained run has no statistics to learn, and learning them drifts them away from the ones the file folds)")
    p.add_argument("--freeze-observers", type=float, default=0.75, metavar="F", help="QAT: activation ranges stop moving after this fraction of the steps (default: %(default)s)")
    p.add_argument("--qat-ranges", choices=("ema", "minmax"), default="ema",
                   help="QAT: activation ranges as a moving average of each batch's min / max, or the extremes over every batch "
                        "(what the export's min-max calibration takes) (default: %(default)s)")  # fmt: skip
    p.add_argument("--qat-init", choices=("minmax", "mean"), default="minmax",
                   help="QAT: the ranges start from 8 training batches' extremes, or from the mean of each batch's extremes "
                        "(narrower where outliers are rare) (default: %(default)s)")  # fmt: skip
    p.add_argument("--export-ranges", choices=("trained", "calibrated"), default="trained",
                   help="QAT: the int8 file's activation ranges are the ones QAT trained with, or calibrated afresh on --calib "
                        "images as without QAT (default: %(default)s)")  # fmt: skip
    p.add_argument("--name", help="output directory name (default: RUN-int8, with --qat-epochs RUN-qat)")
    p.add_argument("--out", help="parent folder of the output directory (default: RUN's)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")

    p = sub.add_parser(
        "bench",
        help="inference latency across backends (PyTorch eager / TorchScript / bf16, ONNX Runtime fp32 and int8), side by side",
        description=(
            "TARGET: a run directory, weights file, zoo model name or .onnx file. Timed interleaved over the backends "
            "(median, p90, images/s, peak memory), printed as a table; --json writes it with a plot beside."
        ),
    )
    p.add_argument("target", metavar="MODEL_OR_RUN_OR_ONNX")
    p.add_argument("--backends", action="append", metavar="LIST", help="comma-separated, from: eager, torchscript, bf16, compile, "
                                                                        "best-torch, ort, ort-plain, ort-int8, ort-int8-default (default: all but compile)")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default: %(default)s)")
    p.add_argument("--threads", type=int, help="CPU threads for every backend (default: PyTorch's)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved passes over the backends (default: %(default)s)")
    p.add_argument("--runs", type=int, default=10, help="timed calls per backend per pass (default: %(default)s)")
    p.add_argument("--calib-data", metavar="IMAGES", help="int8 calibration images (default: a run's training images, else random inputs)")
    p.add_argument("--calib", type=int, default=128, help="int8 calibration images (default: %(default)s)")
    p.add_argument("--json", metavar="OUT.json", help="write the report as JSON, and a plot as OUT.png")

    p = sub.add_parser(
        "convert",
        help="convert a torchvision / timm checkpoint into smallnets safetensors + JSON sidecar",
        description=(
            "SOURCE is a .safetensors / .pth / .pt / .bin file (read without unpickling code), an https URL "
            "(cached, resumable, checked against --sha256) or FORMAT=PATH. The format is detected from the keys "
            "unless --format names it (TensorFlow ports such as timm:tf_efficientnet_b0 must be named)."
        ),
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("out", metavar="OUT.safetensors")
    p.add_argument("--format", help="e.g. torchvision:mobilenet_v2, timm:tf_efficientnet_b3 (default: detected)")
    p.add_argument("--model", help="smallnets model to fill (default: the format's)")
    p.add_argument("--num-classes", type=int, help="a new classifier for this many classes (re-initialised)")
    p.add_argument("--partial", action="store_true", help="load what fits and report the rest instead of failing")
    p.add_argument("--sha256", help="expected SHA-256 of the checkpoint file")
    p.add_argument("--offline", action="store_true", help="use the download cache only")
    p.add_argument("--force", action="store_true", help="replace OUT and its .json sidecar if they exist (never the input file)")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as the plain ``warning: ...`` lines a command-line user reads (no source line)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # restored on exit: main() may be called from Python
        return _dispatch(parser, args, extra)


def _dispatch(parser: argparse.ArgumentParser, args, extra) -> int:
    try:
        if args.command == "profile":
            return cmd_profile(args, extra)
        if args.command == "train":
            return cmd_train(args, extra)
        if args.command == "prune":
            return cmd_prune(args, extra)
        if args.command == "compress":
            return cmd_compress(args, extra)
        if args.command == "quantize":
            return cmd_quantize(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "list":
            return cmd_list(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "convert":
            return cmd_convert(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "pick":
            return cmd_pick(args)
        return cmd_compare(args)
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C while a run stops at its safe point, or any command
        print(f"smallnets {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # an optional dependency: say which install brings it
        extra = {"torch": "torch", "onnxruntime": "runtime", "onnx": "export", "onnxscript": "export", "torchao": "quantize"}.get(exc.name or "")
        if extra is None:
            raise
        hint = "pip install torch==2.13.0 (the CPU build), then pip install 'smallnets[torch]'" if extra == "torch" else f"pip install 'smallnets[{extra}]'"
        print(f"smallnets {args.command}: error: this needs {exc.name}, which is not installed: {hint}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as exc:  # OSError: missing files, failed downloads
        print(f"smallnets {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
