"""The CPU bf16 detour for strided depthwise convs (smallnets.fast_cpu), measured: training steps
per second of one model with the detour on and off, alternating in one run.

Prints a table and writes benchmarks/results/depthwise_detour.json. Each variant: warm-up steps,
then ``--steps`` timed steps of forward + backward + SGD at batch ``--batch`` on random 32x32
images, bf16 autocast, channels-last, ``torch.get_num_threads()`` threads; rounds alternate so
that machine load hits both alike; the figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

import smallnets
from smallnets.fast_cpu import fp32_strided_depthwise

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mobilenet_v1": {"width_mult": 0.5}, "mobilenet_v2": {"width_mult": 0.5}, "shufflenet_v2": {"width_mult": 0.5}}


def rate(model, opt, x, y, steps: int, detour: bool) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16), (fp32_strided_depthwise() if detour else nullcontext()):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "depthwise_detour.json"))
    args = p.parse_args(argv)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = smallnets.create_model(name, num_classes=10, cifar=True, **MODELS[name]).train().to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch,))
        rate(model, opt, x, y, 3, True), rate(model, opt, x, y, 3, False)  # warm-up both paths
        on, off = [], []
        for _ in range(args.rounds):
            on.append(rate(model, opt, x, y, args.steps, True))
            off.append(rate(model, opt, x, y, args.steps, False))
        row = {"model": name, "knobs": {**MODELS[name], "cifar": True}, "detour_img_s": statistics.median(on),
               "plain_img_s": statistics.median(off), "rounds_on": on, "rounds_off": off}  # fmt: skip
        row["speedup"] = row["detour_img_s"] / row["plain_img_s"]
        rows.append(row)
        print(f"{name:<15} detour {row['detour_img_s']:7.0f} img/s   plain bf16 {row['plain_img_s']:7.0f} img/s   {row['speedup']:.2f}x", flush=True)
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(), "batch": args.batch,
           "steps": args.steps, "rounds": args.rounds, "dtype": "bf16 autocast", "memory_format": "channels_last", "input": "3x32x32"}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
