"""MobileNetV1's central claim, measured: depthwise separable vs full 3x3 convolutions.

Builds mobilenet_v1 (separable) and the paper's "Conv MobileNet" (separable=False) at the same
width and resolution, and reports params, mult-adds and measured CPU latency of both in the same
run, with the ratios (paper, Table 4: 4.2M vs 29.3M params, 569M vs 4866M mult-adds).

    python benchmarks/separable_saving.py [--resolution 224] [--width-mult 1.0] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import smallnets
from smallnets._io import atomic_write_text
from smallnets.compare import environment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/separable_saving.json")
    args = parser.parse_args(argv)

    size = (3, args.resolution, args.resolution)
    rows = {}
    for label, separable in (("separable", True), ("full 3x3", False)):
        print(f"profiling mobilenet_v1 {label} ...", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        report = smallnets.profile(
            "mobilenet_v1", size, runs=args.runs, warmup=3, max_seconds=30, threads=args.threads, memory=False,
            width_mult=args.width_mult, separable=separable,
        )
        rows[label] = report
    sep, full = rows["separable"], rows["full 3x3"]
    print(f"\nMobileNetV1 width {args.width_mult} at {args.resolution}px, batch 1, fp32, {sep.latency.threads} threads, torch {torch.__version__}")
    print(f"{'':<12}{'params':>14}{'MACs':>16}{'median ms':>11}{'p90 ms':>9}")
    for label, r in rows.items():
        print(f"{label:<12}{r.params:>14,}{r.macs:>16,}{r.latency.median_ms:>11.2f}{r.latency.p90_ms:>9.2f}")
    ratios = {
        "params": full.params / sep.params,
        "macs": full.macs / sep.macs,
        "latency": full.latency.median_ms / sep.latency.median_ms,
    }
    print(f"{'full/sep':<12}{ratios['params']:>13.2f}x{ratios['macs']:>15.2f}x{ratios['latency']:>10.2f}x")
    kinds = sep.by_kind()
    print(f"\nseparable model: 1x1 convolutions hold {kinds['conv1x1']['macs_percent']:.2f}% of mult-adds (paper: 94.86%)")
    payload = {
        "benchmark": "separable_saving",
        "environment": environment(),
        "config": vars(args),
        "rows": {k: {"params": r.params, "macs": r.macs, "latency": r.to_dict(layers=False)["latency"]} for k, r in rows.items()},
        "ratios_full_over_separable": ratios,
        "conv1x1_macs_percent": kinds["conv1x1"]["macs_percent"],
    }
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
