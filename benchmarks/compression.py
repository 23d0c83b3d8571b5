"""Shrinking a trained CIFAR-10 model: structured pruning against its alternatives, Deep Compression,
and knowledge distillation, on a fixed split of the shared CIFAR-10 archive.

1. structured: MODEL (CIFAR stem) trained for --epochs, pruned to --target-macs of its MACs
   (``smallnets prune``'s prune_run: l1, per_layer, its default) and fine-tuned for --finetune-epochs;
   the same prune fine-tuned with the unpruned model as teacher; global ranking capped at --max-ratio
   of each channel space (and with --uncapped-global, uncapped). In the same run and on the same split: the unpruned model; the same pruned widths trained from scratch for
   the same total epochs; a uniformly thinner model (``width_mult`` chosen by bisection for the
   same MACs) for the same total epochs; and Torch-Pruning (pip ``torch-pruning``; its
   MagnitudePruner with L1 importance at the same MACs target, the same fine-tune through the
   same trainer). CPU latency (fp32, batch 1 and 32) of each, timed interleaved (rounds over all the
   table's models), twice: eager PyTorch (NCHW, what a user runs by default: the tables' latency
   columns) and deployed (TorchScript frozen and optimised for
   inference: BatchNorm folded, oneDNN layouts; ``deployed`` in the JSON). Channel widths are
   rounded to multiples of --multiple-of (8), which oneDNN's kernels run faster.
2. deep: ``smallnets compress`` (compress_run) of trained SqueezeNet 1.1 and MobileNetV2 runs
   (magnitude pruning to 75% / 80% zeros over --deep-finetune-epochs, then as many epochs of
   centroid fine-tuning; 8-bit convolutions, 5-bit classifier, Huffman: the
   AlexNet recipe of the paper; MobileNetV2's dense BatchNorm tensors, 0.27 MB, need the extra
   sparsity for 10x): bytes on disk of each stage,
   measured from the files, against the fp32 safetensors file. SqueezeNet (no BatchNorm) trains with
   AdamW: with SGD its conv10 + ReLU head collapses to a constant in the first steps on CIFAR-10
   (loss stuck at ln 10) at every learning rate tried (0.005-0.04).
3. distill: a small student with and without the unpruned model of part 1 as teacher, same
   epochs, several seeds.

Every stage runs through the library's own commands' functions (Trainer, prune_run, compress_run),
so the figures are what a user gets. Parts not in --parts are kept from the JSON being replaced
(with their settings under "carried_over"). Prints tables, writes JSON and plots:

    python benchmarks/compression.py [--parts structured deep distill] [--per-class 800] [--epochs 15]
        [--finetune-epochs 5] [--models mobilenet_v2 shufflenet_v2] [--seeds 0 1 2] [--prune P]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import smallnets
from smallnets._io import atomic_write_text
from smallnets.compare import environment
from smallnets.compress.workflow import format_table, measure_stage, prune_run
from smallnets.profiler import count_macs
from smallnets.training import RunConfig, Trainer

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"
RESULTS = REPO / "benchmarks" / "results"
MODELS = {  # part 1's models: (zoo name, knobs, the train options that differ from COMMON)
    "mobilenet_v2": ("mobilenet_v2", {"cifar": True}, {}),
    "shufflenet_v2": ("shufflenet_v2", {"cifar": True}, {"channels_last": False}),  # NCHW trains faster here (train_throughput.py)
}
COMMON = {"lr": 0.1, "warmup_epochs": 1.0, "label_smoothing": 0.1, "weight_decay": 5e-4, "progress": True}
SIZE = (3, 32, 32)
DEEP_PRUNE = {"squeezenet1_1": 0.75, "mobilenet_v2": 0.8}  # part 2's sparsity per model (--prune: one for all)
SQUEEZENET = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05}  # see the docstring (part 2)


def interleaved_latency(models: list[torch.nn.Module], batch: int, *, deployed: bool, rounds: int = 7, runs: int = 7) -> list[float]:
    """Median ms of a forward of each model, timed in ``rounds`` round-robin over the models (``runs``
    timed forwards each per round, after warm-up) so that the machine's drift hits every model alike.
    ``deployed``: traced, frozen and optimised for inference by TorchScript (BatchNorm folded,
    oneDNN layouts) instead of eager NCHW."""
    import copy
    import statistics

    x = torch.randn(batch, *SIZE)
    nets = []
    with torch.inference_mode(False):
        for model in models:
            net = copy.deepcopy(model).eval()
            nets.append(torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x))) if deployed else net)
    times: list[list[float]] = [[] for _ in nets]
    with torch.inference_mode():
        for net in nets:
            for _ in range(3):
                net(x)
        for _ in range(rounds):
            for net, mine in zip(nets, times):
                for _ in range(runs):
                    start = time.perf_counter()
                    net(x)
                    mine.append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def data_config(args, work: Path) -> dict:
    return {"path": str(args.archive), "batch_size": args.batch_size, "val_fraction": 0.1, "limit_per_class": args.per_class,
            "pipeline": "tensor", "cache_dir": str(work / "cache")}  # fmt: skip


def train(model_cfg: dict | None, model, epochs: int, name: str, args, work: Path, seed: int = 0, **train):
    cfg = RunConfig.from_dict({"model": model_cfg or {}, "data": data_config(args, work),
                               "train": {**COMMON, "epochs": epochs, "out": str(work / "runs"), "name": name, "seed": seed, **train}})  # fmt: skip
    print(f"== {name}: {epochs} epochs", file=sys.stderr, flush=True)
    trainer = Trainer(cfg, model=model)
    result = trainer.fit()
    return trainer, result


def _scaled_shufflenet_v2(knobs: dict, factor: float):
    """ShuffleNet v2 1.0x with every unit's width times ``factor`` (multiples of 16, halves as the paper's):
    the paper's widths are four fixed columns (Table 5), so a same-MACs thinner model is made from the spec."""
    import dataclasses

    from smallnets.registry import model_spec

    spec = model_spec("shufflenet_v2", 10, 3, **knobs)
    stages, chs = [], spec.stem.out_chs
    for stage in spec.stages:
        units = []
        for unit in stage:
            out = max(16, round(unit.out_chs * factor / 16) * 16)
            units.append(dataclasses.replace(unit, in_chs=chs, out_chs=out, mid_chs=out // 2, left_chs=out // 2))
            chs = out
        stages.append(tuple(units))
    return dataclasses.replace(spec, stages=tuple(stages))


def same_macs_thinner(name: str, knobs: dict, target: int) -> tuple[str, dict | None, torch.nn.Module | None]:
    """The uniformly thinner model whose MACs are closest to ``target`` from below (bisection): a
    ``width_mult`` where the family has a continuous one (widths round to 8), else (ShuffleNet v2)
    every width scaled. (label, model config or None, model or None)."""
    scaled = name == "shufflenet_v2"

    def macs(f: float) -> int:
        model = (smallnets.model_from_spec(_scaled_shufflenet_v2(knobs, f)) if scaled
                 else smallnets.create_model(name, num_classes=10, width_mult=f, **knobs))  # fmt: skip
        return count_macs(model, SIZE)

    lo, hi = 0.1, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        if macs(mid) > target:
            hi = mid
        else:
            lo = mid
    f = round(lo, 4)
    if not scaled:
        return f"width_mult {f}", {"name": name, **knobs, "width_mult": f}, None
    model = smallnets.model_from_spec(_scaled_shufflenet_v2(knobs, f))
    model.smallnets_config["name"] = name
    return f"every width x{f}", None, model


def torch_pruning_state(model: torch.nn.Module, target_ratio: float) -> dict:
    """Torch-Pruning's MagnitudePruner (L1, global off: its default uniform ratio per layer) stepped until
    the MACs fall to ``target_ratio``; the pruned model's state dict (the same modules, fewer channels)."""
    import torch_pruning as tp

    model = model.eval()
    example = torch.zeros(1, *SIZE)
    base, _ = tp.utils.count_ops_and_params(model, example)
    head = model.get_submodule(model.classifier_layer())
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1), iterative_steps=50,
                                       pruning_ratio=0.9, ignored_layers=[head])  # fmt: skip
    for _ in range(50):
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, example)
        if macs <= target_ratio * base:
            break
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def structured(args, work: Path) -> list[dict]:
    from smallnets.compress.structured import rebuild_pruned

    out = []
    total = args.epochs + args.finetune_epochs
    for key in args.models:
        name, knobs, extra = MODELS[key]
        _, unpruned = train({"name": name, **knobs}, None, args.epochs, f"{key}-unpruned", args, work, **extra)
        report = prune_run(unpruned.run_dir, target_macs=args.target_macs, finetune_epochs=args.finetune_epochs, name=f"{key}-pruned",
                           train_overrides=extra, latency=False, multiple_of=args.multiple_of)  # fmt: skip
        rows = report["rows"]
        rows[2]["stage"] = f"pruned per_layer + {args.finetune_epochs} epoch(s) fine-tune"
        pruned = smallnets.load_weights(report["run_dir"])
        # the same prune fine-tuned with the unpruned model as teacher, and global ranking capped (uncapped too if asked)
        variants = [("distilled", {"distill": True}, f"pruned per_layer + {args.finetune_epochs} epoch(s) fine-tune, unpruned teacher"),
                    ("global-cap", {"scope": "global", "max_ratio": args.max_ratio},
                     f"pruned global, max_ratio {args.max_ratio} + {args.finetune_epochs} epoch(s)")]  # fmt: skip
        if args.uncapped_global:
            variants.append(("global", {"scope": "global"}, f"pruned global + {args.finetune_epochs} epoch(s)"))
        for suffix, options, label in variants:
            other = prune_run(unpruned.run_dir, target_macs=args.target_macs, finetune_epochs=args.finetune_epochs, name=f"{key}-pruned-{suffix}",
                              train_overrides=extra, latency=False, multiple_of=args.multiple_of, **options)  # fmt: skip
            rows.append({**other["rows"][2], "stage": label, "prune_settings": other["settings"]})
        # the same widths from scratch, for as many epochs as the unpruned model and its fine-tune together
        scratch = smallnets.model_from_spec(pruned.spec)
        scratch.smallnets_config["name"] = name
        _, res = train(None, scratch, total, f"{key}-scratch", args, work, **extra)
        rows.append(measure_stage(f"same widths from scratch, {total} epochs", smallnets.load_weights(res.run_dir), SIZE,
                                  file=res.run_dir / "best.safetensors", top1=res.best_top1, latency=False))  # fmt: skip
        # a uniformly thinner model of the same MACs
        label, thin_cfg, thin_model = same_macs_thinner(name, knobs, rows[2]["macs"])
        _, res = train(thin_cfg, thin_model, total, f"{key}-thin", args, work, **extra)
        rows.append(measure_stage(f"{label}, {total} epochs", smallnets.load_weights(res.run_dir), SIZE,
                                  file=res.run_dir / "best.safetensors", top1=res.best_top1, latency=False))  # fmt: skip
        # Torch-Pruning at the same target, the same fine-tune through the same trainer
        try:
            source = smallnets.load_weights(unpruned.run_dir)
            state = torch_pruning_state(source, args.target_macs)
            tp_model = rebuild_pruned(smallnets.load_weights(unpruned.run_dir), state)
            _, res = train(None, tp_model, args.finetune_epochs, f"{key}-torch-pruning", args, work, lr=COMMON["lr"] / 10,
                           warmup_epochs=0, **extra)  # fmt: skip
            rows.append(measure_stage(f"Torch-Pruning + {args.finetune_epochs} epoch(s) fine-tune", smallnets.load_weights(res.run_dir),
                                      SIZE, file=res.run_dir / "best.safetensors", top1=res.best_top1, latency=False))  # fmt: skip
        except Exception as err:  # noqa: BLE001 - reported in the table, not hidden
            rows.append({"stage": f"Torch-Pruning: {type(err).__name__}: {err}"[:160]})
        # latency once for the whole table, interleaved (a timing pass per model drifted up to 1.5x on this VM)
        timed = [(i, smallnets.load_weights(r.get("file") or unpruned.run_dir)) for i, r in enumerate(rows) if i != 1 and "macs" in r]
        for deployed in (False, True):
            for batch in (1, 32):
                for (i, _), ms in zip(timed, interleaved_latency([m for _, m in timed], batch, deployed=deployed)):
                    if deployed:
                        rows[i].setdefault("deployed", {})[f"latency_b{batch}_ms"] = ms
                    else:
                        rows[i][f"latency_b{batch}_ms"] = ms
        rows[1]["latency_note"] = "not timed: the fine-tuned row below has its shapes"
        for r in rows:
            r.setdefault("model", key)
        print(f"\n{key} (CIFAR stem), {args.per_class}/class, {args.epochs} + {args.finetune_epochs} epochs, target {args.target_macs} of the MACs")
        print(format_table([r for r in rows if "macs" in r]))
        print("deployed (TorchScript frozen) latency, ms, b1 / b32: "
              + "; ".join(f"{r['stage']}: {r['deployed']['latency_b1_ms']:.2f} / {r['deployed']['latency_b32_ms']:.1f}" for r in rows if "deployed" in r))
        out.append({"model": key, "rows": rows, "prune_settings": report["settings"]})
    return out


def deep(args, work: Path, trained: dict[str, Path]) -> list[dict]:
    from smallnets.compress.deep import compress_run

    out = []
    for key, (name, knobs, extra) in {"squeezenet1_1": ("squeezenet1_1", {"cifar": True}, SQUEEZENET), **MODELS}.items():
        if key not in args.deep_models:
            continue
        run = trained.get(key)
        if run is None:
            _, res = train({"name": name, **knobs}, None, args.epochs, f"{key}-dc-source", args, work, **extra)
            run = res.run_dir
        sparsity = args.prune if args.prune is not None else DEEP_PRUNE.get(key, 0.75)
        report = compress_run(run, prune=sparsity, bits=8, fc_bits=5, huffman=True, finetune_epochs=args.deep_finetune_epochs,
                              name=f"{key}-compressed", out=work / "runs")  # fmt: skip
        print(f"\nDeep Compression of {key}: prune {sparsity}, 8-bit convs, 5-bit FC, Huffman")
        print(json.dumps(report["settings"]["files"]))  # bytes per part of each file
        print(format_table(report["rows"]))
        out.append({"model": key, **{k: v for k, v in report.items() if k in ("rows", "settings")}})
    return out


def distill(args, work: Path, teacher: Path | None) -> dict:
    results = {"with_teacher": [], "without": []}
    for seed in args.seeds:
        for arm in ("without", "with_teacher"):
            extra = {"teacher": str(teacher)} if arm == "with_teacher" else {}
            _, res = train({"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True}, None, args.epochs, f"student-{arm}-{seed}", args,
                           work, seed=seed, **extra)  # fmt: skip
            results[arm].append(res.best_top1)
    mean = {k: statistics.mean(v) for k, v in results.items()}
    print(f"\ndistillation: mobilenet_v1 0.25x, {args.epochs} epochs, seeds {args.seeds}: without {mean['without']:.2f}%, "
          f"with teacher {mean['with_teacher']:.2f}% ({mean['with_teacher'] - mean['without']:+.2f})")  # fmt: skip
    return {"teacher": str(teacher), "top1": results, "mean": mean}


def merge_earlier(report: dict, earlier: dict) -> None:
    """Parts not run this time, and the models of a part this run did not redo, kept from the file
    being replaced, each marked ``carried_over`` with the settings it ran under."""
    for part in ("structured", "deep", "distill"):
        if part not in earlier:
            continue
        if part not in report:
            report[part] = earlier[part]
            report.setdefault("carried_over", {})[part] = {"settings": earlier.get("carried_over", {}).get(part, {}).get("settings", earlier["settings"]),
                                                           "wall_s": earlier.get("wall_s")}  # fmt: skip
        elif part != "distill":
            done = {entry["model"] for entry in report[part]}
            for entry in earlier[part]:
                if entry["model"] not in done:
                    report[part].append({**entry, "carried_over": {"settings": entry.get("carried_over", {}).get("settings", earlier["settings"])}})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["structured", "deep", "distill"], choices=["structured", "deep", "distill"])
    p.add_argument("--archive", type=Path, default=ARCHIVE)
    p.add_argument("--per-class", type=int, default=800, help="CIFAR-10 images per class (train + 10%% validation)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--deep-finetune-epochs", type=int, default=10, help="Deep Compression: epochs of each fine-tune (pruning, then centroids)")
    p.add_argument("--max-ratio", type=float, default=0.5, help="structured: the capped global row's max_ratio")
    p.add_argument("--uncapped-global", action="store_true", help="structured: add a row pruned by global ranking without a cap")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--prune", type=float, default=None, help="Deep Compression's magnitude-pruning sparsity (default: 0.75 SqueezeNet, 0.8 MobileNetV2)")
    p.add_argument("--multiple-of", type=int, default=8, help="structured pruning: kept widths rounded to a multiple of this")
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "shufflenet_v2"], choices=sorted(MODELS))
    p.add_argument("--deep-models", nargs="+", default=["squeezenet1_1", "mobilenet_v2"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=RESULTS / "compression.json")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="smallnets-compression-"))
    started = time.time()
    report = {"benchmark": "compression", "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "environment": environment()}  # fmt: skip
    trained: dict[str, Path] = {}
    if "structured" in args.parts:
        report["structured"] = structured(args, work)
        trained = {k: work / "runs" / f"{k}-unpruned" for k in args.models}
    if "deep" in args.parts:
        report["deep"] = deep(args, work, trained)
    if "distill" in args.parts:
        teacher = trained.get("mobilenet_v2")
        if teacher is None:
            _, res = train({"name": "mobilenet_v2", "cifar": True}, None, args.epochs, "teacher", args, work)
            teacher = res.run_dir
        report["distill"] = distill(args, work, teacher)
    report["wall_s"] = round(time.time() - started, 1)
    if args.out.exists():
        merge_earlier(report, json.loads(args.out.read_text()))
    atomic_write_text(args.out, json.dumps(report, indent=2, default=str) + "\n")
    from smallnets.plots import plot_shrink_table

    for part in report.get("structured", []):
        plot_shrink_table([r for r in part["rows"] if "macs" in r], args.out.with_name(f"compression_{part['model']}.png"),
                          title=f"{part['model']}: pruned to {args.target_macs} of its MACs vs alternatives")  # fmt: skip
    for part in report.get("deep", []):
        plot_shrink_table(part["rows"], args.out.with_name(f"compression_deep_{part['model']}.png"), title=f"Deep Compression: {part['model']}")
    print(f"wrote {args.out} (work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
