"""Where an int8 model's time goes on ONNX Runtime, operator by operator, next to its fp32 export
(issue 13: why int8 is not 2x faster at batch 1).

    python benchmarks/int8_profile.py [--models mobilenet_v1 mobilenet_v2 squeezenet1_1] [--batches 1 32]
        [--threads 2] [--runs 30] [--out benchmarks/results/int8_profile.json]

For each model at 224 px (random weights, 64 random calibration images: speed does not depend on
the values): smallnets' fp32 export, its int8 quantization (``quantize_onnx``, as ``smallnets
quantize`` does it) and a mixed variant with the depthwise convolutions kept in fp32. Each file
runs under ONNX Runtime's profiler (``SessionOptions.enable_profiling``); per operator type the
kernel time per inference is summed over the timed runs (warm-up runs left out) and set against
the wall time of the run: what is left is the executor's own overhead. Prints a table per model
and batch and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import smallnets  # noqa: E402
from smallnets._io import atomic_write_text  # noqa: E402
from smallnets.compare import environment  # noqa: E402
from smallnets.export import export_onnx  # noqa: E402
from smallnets.quantization import quantize_onnx  # noqa: E402
from smallnets.runtime import session_options  # noqa: E402

MODELS = ["mobilenet_v1", "mobilenet_v2", "squeezenet1_1", "efficientnet_b0"]


def depthwise_nodes(path: Path) -> list[str]:
    """Names of the grouped convolutions with one input channel per group (depthwise) in an fp32 ONNX file."""
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    out = []
    for n in g.node:
        if n.op_type != "Conv":
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = inits.get(n.input[1])
        if group > 1 and w is not None and numpy_helper.to_array(w).shape[1] == 1:
            out.append(n.name)
    return out


def node_profile(path: Path, batch: int, threads: int, runs: int, warmup: int = 5) -> dict:
    """Kernel ms per inference by operator type, and the run's wall ms, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    so = session_options(threads)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal((batch, *inp.shape[1:])).astype(np.float32)
        walls = []
        for i in range(warmup + runs):
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            if i >= warmup:
                walls.append((time.perf_counter() - t) * 1e3)
        events = json.loads(Path(sess.end_profiling()).read_text())
    run_events = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start = run_events[warmup]["ts"] if len(run_events) > warmup else 0
    by_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] += e["dur"] / 1e3 / runs
            count[op] += 1
    run_ms = [e["dur"] / 1e3 for e in run_events[warmup:]]
    kernels = sum(by_op.values())
    return {"wall_ms": float(np.median(walls)), "run_ms": float(np.median(run_ms)) if run_ms else None, "kernel_ms": kernels,
            "ops": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "nodes_per_run": {k: v // runs for k, v in count.items()}}  # fmt: skip


def table(name: str, batch: int, profiles: dict[str, dict]) -> str:
    ops = sorted({op for p in profiles.values() for op in p["ops"]}, key=lambda op: -max(p["ops"].get(op, 0) for p in profiles.values()))
    head = "| operator | " + " | ".join(f"{k} ms (nodes)" for k in profiles) + " |"
    lines = [f"\n{name}, batch {batch}", head, "|---" * (len(profiles) + 1) + "|"]
    for op in ops:
        cells = [f"{p['ops'].get(op, 0):.3f} ({p['nodes_per_run'].get(op, 0)})" if op in p["ops"] else "—" for p in profiles.values()]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| kernels, total | " + " | ".join(f"{p['kernel_ms']:.3f}" for p in profiles.values()) + " |")
    lines.append("| wall per run | " + " | ".join(f"{p['wall_ms']:.3f}" for p in profiles.values()) + " |")
    lines.append("| outside kernels | " + " | ".join(f"{p['wall_ms'] - p['kernel_ms']:.3f} ({100 * (1 - p['kernel_ms'] / p['wall_ms']):.0f}%)" for p in profiles.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_profile.json")
    args = ap.parse_args(argv)
    results = {"benchmark": "int8_profile", "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "environment": environment(), "models": []}  # fmt: skip
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="smallnets-int8-profile-") as work:
        work = Path(work)
        for name in args.models:
            model = smallnets.create_model(name).eval()
            fp32 = work / f"{name}.onnx"
            export_onnx(model, fp32, check=False)
            calib = np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32)
            variants = {"fp32": fp32, "int8": work / f"{name}.int8.onnx"}
            quantize_onnx(fp32, variants["int8"], calib)
            dw = depthwise_nodes(fp32)
            if dw:
                variants["int8, depthwise fp32"] = work / f"{name}.int8-dwfp32.onnx"
                quantize_onnx(fp32, variants["int8, depthwise fp32"], calib, keep_fp32=dw)
            ops = {n.op_type for n in onnx.load(str(fp32)).graph.node}
            if {"Sigmoid", "Mul"} <= ops:  # SiLU and squeeze-and-excitation: the QDQ pairs users complain about
                variants["int8, Sigmoid + Mul fp32"] = work / f"{name}.int8-silufp32.onnx"
                quantize_onnx(fp32, variants["int8, Sigmoid + Mul fp32"], calib, keep_fp32=["Sigmoid", "Mul"])
            entry = {"model": name, "depthwise_convs": len(dw), "files": {k: v.stat().st_size for k, v in variants.items()}, "batches": {}}
            for batch in args.batches:
                profiles = {k: node_profile(v, batch, args.threads, args.runs if batch == 1 else max(5, args.runs // 4)) for k, v in variants.items()}
                entry["batches"][str(batch)] = profiles
                print(table(name, batch, profiles), flush=True)
            results["models"].append(entry)
            results["wall_s"] = round(time.time() - started, 1)
            atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
