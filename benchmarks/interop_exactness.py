"""How exactly smallnets reproduces torchvision / timm models: logits of the shared interop fixtures.

Each fixture is a reference checkpoint (weights), an input batch and the reference library's
logits for it. smallnets detects the format from the keys, converts the checkpoint, runs the input
and compares: the maximum absolute logit error and the relative error ||ours - ref|| / ||ref||
(the issue's bar is 1e-4). Prints a table and writes JSON.

    python benchmarks/interop_exactness.py [--interop ../shared/reference/interop]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import safetensors.torch
import torch

from smallnets._io import atomic_write_text
from smallnets.compare import environment
from smallnets.pretrained import detect_format, get_format, load_pretrained, read_checkpoint

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interop", default=str(REPO.parent / "shared" / "reference" / "interop"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "interop_exactness.json"))
    args = parser.parse_args(argv)
    interop = Path(args.interop)
    fixtures = sorted(p.name.removesuffix(".weights.safetensors") for p in interop.glob("*.weights.safetensors"))
    if not fixtures:
        parser.error(f"--interop must hold *.weights.safetensors fixtures, found none in {interop}")
    rows = []
    for fixture in fixtures:
        weights = interop / f"{fixture}.weights.safetensors"
        io = safetensors.torch.load_file(str(interop / f"{fixture}.io.safetensors"))
        named = fixture.replace("__", ":")
        detected = detect_format(read_checkpoint(weights))
        model = load_pretrained(get_format(named).model, weights, format=named, progress=False).eval()
        with torch.no_grad():
            out = model(io["input"])
        ref = io["logits"]
        rows.append({
            "format": named, "detected": detected, "model": get_format(named).model, "input": list(io["input"].shape),
            "max_abs_error": float((out - ref).abs().max()), "relative_error": float((out - ref).norm() / ref.norm()),
            "max_abs_logit": float(ref.abs().max()),
        })  # fmt: skip
    print(f"interop fixtures in {interop}, torch {torch.__version__}, fp32 CPU")
    print(f"{'format':<30}{'detected':>10}{'input':>18}{'max |error|':>14}{'relative':>11}")
    for r in rows:
        shape = "x".join(map(str, r["input"]))
        print(f"{r['format']:<30}{'yes' if r['detected'] == r['format'] else 'NO':>10}{shape:>18}{r['max_abs_error']:>14.2e}{r['relative_error']:>11.2e}")
    worst = max(r["relative_error"] for r in rows)
    print(f"worst relative error {worst:.2e} (bar: 1e-4)")
    atomic_write_text(args.out, json.dumps({"benchmark": "interop_exactness", "environment": environment(), "rows": rows}, indent=2))
    print(f"wrote {os.path.relpath(args.out)}")
    return 0 if worst < 1e-4 and all(r["detected"] == r["format"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
