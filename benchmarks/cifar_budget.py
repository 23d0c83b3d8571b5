"""Accuracy under a time budget: best CIFAR-10 validation top-1 after N minutes of training here.

Trains zoo configurations with ``smallnets train`` on the shared CIFAR-10 archive (45,000 train /
5,000 validation images: a fixed stratified split, seed 0) with a hard stop at ``--minutes`` of
training time (``--max-minutes``; validation and saving are not counted), and reports the best
validation top-1, when each accuracy level was first reached, and images/s. The learning curves
are copied next to the JSON.

    python benchmarks/cifar_budget.py [--minutes 30] [--config mobilenet_v1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from smallnets._io import atomic_write_text
from smallnets.compare import environment

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"

# Recipes: the model with its knobs, and the epochs that fit the 30-minute budget on a 2-core CPU
# at the throughput measured for it (the cosine schedule must reach its end inside the budget):
# MobileNetV1 0.5x ~440 img/s (bf16, channels-last), ShuffleNet V2 1.0x ~300 img/s (bf16, NCHW:
# channels-last BatchNorm over 24-58 channels is slower on this CPU). SqueezeNet trains fastest
# here (~1,100 img/s) but, without BatchNorm, collapses at learning rates >= 0.02.
COMMON = ["--batch-size", "128", "--lr", "0.15", "--warmup-epochs", "0.5", "--label-smoothing", "0.1", "--weight-decay", "5e-4"]
CONFIGS = {
    "mobilenet_v1": ["mobilenet_v1", "--cifar", "true", "--width-mult", "0.5", "--epochs", "16", *COMMON],
    "shufflenet_v2": ["shufflenet_v2", "--cifar", "true", "--epochs", "11", "--channels-last", "false", *COMMON],
}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS), help="recipes to run (default: all)")
    parser.add_argument("--data", default=str(ARCHIVE))
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cifar_budget.json"))
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the existing run directories")
    args = parser.parse_args(argv)
    results = []
    for key in args.config or list(CONFIGS):
        name = f"budget-{key}"
        run = Path(args.runs) / name
        cmd = [sys.executable, "-m", "smallnets", "train", *CONFIGS[key], "--data", args.data, "--val-fraction", "0.1",
               "--max-minutes", str(args.minutes), "--out", args.runs, "--name", name]  # fmt: skip
        if not args.report_only:
            if run.exists():
                shutil.rmtree(run)
            print("$ smallnets train " + " ".join(cmd[4:]), flush=True)
            done = subprocess.run(cmd)
            if done.returncode != 0:
                print(f"{key}: smallnets train exited with {done.returncode}", file=sys.stderr)
                return done.returncode
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        best = max(history, key=lambda r: r.get("val_top1") or 0)
        reached = {}
        for level in (70, 80, 85, 90):
            hit = next((r for r in history if (r.get("val_top1") or 0) >= level), None)
            reached[str(level)] = None if hit is None else {"epoch": hit["epoch"], "minutes": round(hit["elapsed_s"] / 60, 2)}
        curve = Path(args.out).with_name(f"cifar_budget_{key}.png")
        shutil.copyfile(run / "curves.png", curve)
        status = json.loads((run / "run.json").read_text())
        results.append({
            "config": key, "command": "smallnets train " + " ".join(cmd[4:]), "best_val_top1": best["val_top1"],
            "best_epoch": best["epoch"], "epochs_done": len(history), "train_minutes": round(status["train_time_s"] / 60, 2),
            "status": status["status"], "images_per_s": history[-1]["images_per_s"], "reached": reached, "curve": curve.name,
            "history": history,
        })  # fmt: skip
    # recipes run on another occasion (same budget) stay in the report
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    if previous.get("minutes") == args.minutes:
        done_now = {r["config"] for r in results}
        results = [r for r in previous.get("results", []) if r["config"] not in done_now] + results
    print(f"\nCIFAR-10, 45k train / 5k val (seed 0), budget {args.minutes:g} min of training")
    print(f"{'recipe':<14}{'best top-1':>11}{'epochs':>8}{'minutes':>9}{'img/s':>8}   reached 80% / 85%")
    for r in results:
        def at(level):
            hit = r["reached"][level]
            return "-" if hit is None else f"ep {hit['epoch']} ({hit['minutes']:.1f} min)"

        print(f"{r['config']:<14}{r['best_val_top1']:>10.2f}%{r['epochs_done']:>8}{r['train_minutes']:>9.1f}{r['images_per_s']:>8.0f}   {at('80')} / {at('85')}")
    atomic_write_text(args.out, json.dumps({"benchmark": "cifar_budget", "environment": environment(), "minutes": args.minutes, "results": results}, indent=2))
    print(f"wrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
