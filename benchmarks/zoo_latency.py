"""Inference latency of one model per family on this machine, in three execution settings.

For each model: fp32 NCHW (the baseline), fp32 channels_last and bf16 channels_last, batch 1
(and --batch), median and p90 over warmed-up runs, with speed-ups against the baseline measured
in the same run. Prints a table and writes JSON.

    python benchmarks/zoo_latency.py [NAMES...] [--batch 1] [--runs 20] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import smallnets
from smallnets._io import atomic_write_text
from smallnets.compare import ModelSpec, default_specs, environment

SETTINGS = (
    ("fp32 NCHW", torch.float32, False),
    ("fp32 NHWC", torch.float32, True),
    ("bf16 NHWC", torch.bfloat16, True),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="model specs (default: one per family)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/zoo_latency.json")
    args = parser.parse_args(argv)

    specs = [ModelSpec.parse(n) for n in args.names] or default_specs()
    results = []
    for i, spec in enumerate(specs, 1):
        torch.manual_seed(0)
        model = smallnets.create_model(spec.name, **spec.knobs).eval()
        macs = smallnets.count_macs(model, spec.input_size)
        row = {"model": spec.label, "input_size": list(spec.input_size), "macs": macs, "settings": {}}
        for label, dtype, channels_last in SETTINGS:
            print(f"[{i}/{len(specs)}] {spec.label}: {label}", file=sys.stderr, flush=True)
            lat = smallnets.profiler.measure_latency(
                model, spec.input_size, batch_size=args.batch, runs=args.runs, warmup=3,
                max_seconds=args.max_seconds, threads=args.threads, dtype=dtype, channels_last=channels_last,
            )
            row["settings"][label] = {"median_ms": lat.median_ms, "p90_ms": lat.p90_ms, "runs": lat.runs, "threads": lat.threads}
        results.append(row)

    base = SETTINGS[0][0]
    print(f"\nbatch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads; median ms (speed-up vs {base})")
    header = f"{'model':<22}{'input':>8}{'GMACs':>8}" + "".join(f"{s[0]:>22}" for s in SETTINGS)
    print(header)
    for row in results:
        cells = []
        for label, *_ in SETTINGS:
            med = row["settings"][label]["median_ms"]
            speedup = row["settings"][base]["median_ms"] / med
            row["settings"][label]["speedup_vs_baseline"] = speedup
            cells.append(f"{med:>13.2f} ({speedup:.2f}x)")
        print(f"{row['model']:<22}{row['input_size'][1]:>8}{row['macs'] / 1e9:>8.2f}" + "".join(f"{c:>22}" for c in cells))
    atomic_write_text(args.out, json.dumps({"benchmark": "zoo_latency", "environment": environment(), "config": vars(args), "rows": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
