"""Inference speed of every family across backends, side by side in one run (issue 13's benchmark).

    python benchmarks/inference.py [--models mobilenet_v1 mobilenet_v2 ...] [--batches 1 32]
        [--threads 2] [--rounds 3] [--runs 10] [--cifar-runs RUN ...] [--out benchmarks/results/inference.json]

For each model at its paper resolution (224 px; ImageNet head, random weights: speed does not
depend on the weights' values) and each CIFAR-trained run given (32 px, with validation
accuracy), at batch 1 and 32: PyTorch eager fp32 (the baseline), smallnets' best PyTorch path,
ONNX Runtime fp32 on a plain ``torch.onnx.export`` and on smallnets' export, smallnets int8 and
ONNX Runtime's quantizer with its defaults (``smallnets.bench``). Also the machine's measured fp32
and int8 GEMM peaks and the fraction of peak each model reaches. Prints tables, writes JSON and a
plot per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import smallnets  # noqa: E402
from smallnets._io import atomic_write_text  # noqa: E402
from smallnets.bench import DEFAULT_BACKENDS, bench, plot_bench  # noqa: E402

MODELS = ["mobilenet_v1", "mobilenet_v2", "squeezenet1_1", "shufflenet_v2", "efficientnet_b0", "densenet121"]
INT8_BACKENDS = ("ort-int8", "ort-int8-default")


def fp32_gemm_peak(n: int = 1024, runs: int = 10) -> float:
    """Best fp32 GEMM rate (GFLOP/s) of torch.mm (oneDNN / MKL) at n x n x n on this machine's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _ort_gemm(op: str, n: int, runs: int, threads: int | None) -> float:
    """Best rate (G ops/s, a multiply-add counted as 2) of one ONNX Runtime GEMM node at n x n x n."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from smallnets.runtime import session_options

    rng = np.random.default_rng(0)
    if op == "MatMulInteger":  # u8 x s8 -> s32: the VNNI kernels int8 convolutions run on
        a_type, w = TensorProto.UINT8, rng.integers(-127, 127, (n, n), dtype=np.int8)
        a, out_type = rng.integers(0, 255, (n, n), dtype=np.uint8), TensorProto.INT32
        w_type = TensorProto.INT8
    else:
        a_type, w = TensorProto.FLOAT, rng.standard_normal((n, n)).astype(np.float32)
        a, out_type, w_type = rng.standard_normal((n, n)).astype(np.float32), TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", a_type, [n, n])], [helper.make_tensor_value_info("y", out_type, [n, n])],
        initializer=[helper.make_tensor("w", w_type, [n, n], w.tobytes(), raw=True)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"a": a})
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"a": a})
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def gemm_peaks(threads: int, n: int = 2048, runs: int = 10) -> dict:
    """The machine's measured GEMM peaks: fp32 the best of torch.mm and ONNX Runtime's MatMul, int8
    ONNX Runtime's MatMulInteger (u8 x s8), each at n x n x n on ``threads`` threads."""
    torch_fp32 = fp32_gemm_peak(n, runs)
    ort_fp32 = _ort_gemm("MatMul", n, runs, threads)
    ort_int8 = _ort_gemm("MatMulInteger", n, runs, threads)
    return {"fp32_gflops": max(torch_fp32, ort_fp32), "int8_gops": ort_int8, "torch_mm_fp32_gflops": torch_fp32,
            "ort_matmul_fp32_gflops": ort_fp32, "ort_matmulinteger_int8_gops": ort_int8, "n": n, "threads": threads}  # fmt: skip


def accuracy(run: Path, work: Path, calib: int, qat_epochs: int = 0, qat_precision: str = "fp32", qat_max_minutes: float | None = None,
             qat_threshold: float = 0.0, qat_freeze_bn: float = 0.0) -> dict:  # fmt: skip
    """Validation top-1 of a CIFAR-trained run: PyTorch fp32, ONNX Runtime fp32, int8 PTQ (calibrated
    on training images) and, with ``qat_epochs``, int8 after quantization-aware training where PTQ
    lost more than ``qat_threshold`` points against ONNX Runtime fp32 (QAT where PTQ loses)."""
    from smallnets.quantization import quantize_run

    t0 = time.time()
    report = quantize_run(run, calib=calib, out=work, name=f"{run.name}-int8", latency=False)
    rows = {r["stage"]: r["top1"] for r in report["rows"]}
    out = {"fp32": rows["PyTorch fp32 (eager)"], "onnx_fp32": rows["ONNX Runtime fp32"], "int8_ptq": rows["ONNX Runtime int8"],
           "int8_qat": None, "int8_file": report["quantize"].path, "ops_as_run": report["quantize"].ops_as_run,
           "bytes": {r["stage"]: r["bytes"] for r in report["rows"]}, "ptq_seconds": round(time.time() - t0, 1)}  # fmt: skip
    out["ptq_loss"] = out["onnx_fp32"] - out["int8_ptq"]  # against the true fp32 graph (the eager row runs in the run's precision)
    if qat_epochs and out["ptq_loss"] <= qat_threshold:
        out["qat"] = f"not run: post-training quantization lost {out['ptq_loss']:.2f} points (threshold {qat_threshold})"
    elif qat_epochs:
        t0 = time.time()
        q = quantize_run(run, calib=calib, out=work, name=f"{run.name}-qat", latency=False, qat_epochs=qat_epochs, freeze_bn=qat_freeze_bn,
                         train_overrides={"precision": qat_precision, "progress": False, "max_minutes": qat_max_minutes})  # fmt: skip
        qrows = {r["stage"]: r["top1"] for r in q["rows"]}
        out["int8_qat"] = qrows["ONNX Runtime int8 (QAT)"]
        out["qat_fp32"] = qrows[f"after {qat_epochs} QAT epoch(s), PyTorch fp32"]
        out["qat"] = {**{k: v for k, v in q["qat"].items() if k != "layers"}, "seconds": round(time.time() - t0, 1)}
    return out


def summarise(name: str, report, macs: int, peaks: dict) -> dict:
    out = {"model": name, "macs": macs, "input_size": report.input_size, "rows": [r.__dict__ for r in report.rows], "notes": report.notes}
    for r in out["rows"]:
        rate = 2 * macs * r["batch"] / (r["median_ms"] / 1e3) / 1e9
        peak = peaks["int8_gops"] if r["backend"] in INT8_BACKENDS else peaks["fp32_gflops"]
        r["gops"] = rate
        r["fraction_of_peak"] = rate / peak
    goals = {}
    for b in sorted({r.batch for r in report.rows}):
        plain, ours, best, int8, dflt = (report.row(k, b) for k in ("ort-plain", "ort", "best-torch", "ort-int8", "ort-int8-default"))
        fastest = min((r for r in (ours, best) if r), key=lambda r: r.median_ms, default=None)
        if plain and fastest:
            goals[f"b{b}_fastest_fp32_vs_ort_plain"] = plain.median_ms / fastest.median_ms
        if ours and int8:
            goals[f"b{b}_int8_vs_ort_fp32"] = ours.median_ms / int8.median_ms
        if dflt and int8:
            goals[f"b{b}_int8_vs_ort_default_int8"] = dflt.median_ms / int8.median_ms
    out["goals"] = goals
    return out


def _carry(results: dict, earlier: dict | None) -> None:
    """Entries of an earlier run that this one did not measure again, each marked with its date."""
    if not earlier:
        return
    when = (earlier.get("environment") or {}).get("date")
    for part in ("models", "cifar"):
        have = {e["model"] for e in results[part] if not e.get("carried_over_from")}
        results[part] = [e for e in results[part] if not e.get("carried_over_from")]
        for e in earlier.get(part, []):
            if e["model"] not in have:
                results[part].append({**e, "carried_over_from": e.get("carried_over_from") or when})
    results["peaks_of_carried_over"] = earlier.get("peaks_of_carried_over") or earlier.get("peaks")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    ap.add_argument("--cifar-runs", nargs="*", default=[], type=Path, help="CIFAR-trained run directories (32 px, with accuracy)")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--qat-epochs", type=int, default=2, help="quantization-aware training epochs for each CIFAR run (0: none)")
    ap.add_argument("--qat-precision", default="fp32", choices=("fp32", "bf16"), help="precision of the QAT fine-tune")
    ap.add_argument("--qat-threshold", type=float, default=0.0, help="run QAT only where PTQ loses more than this many points (default: any loss)")
    ap.add_argument("--qat-freeze-bn", type=float, default=0.0, help="QAT: BatchNorm frozen after this fraction of the steps (default: 0, from the start)")
    ap.add_argument("--qat-max-minutes", type=float, default=None, help="time budget of each QAT fine-tune (the best epoch so far is kept)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference.json")
    ap.add_argument("--carry-over", action="store_true", help="keep the entries of --out that this run does not measure again "
                                                                  "(marked with the date they were measured)")
    ap.add_argument("--peaks-only", action="store_true", help="measure the GEMM peaks again and update the fractions of peak in --out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.peaks_only:
        results = json.loads(args.out.read_text())
        results["peaks"] = peaks = gemm_peaks(args.threads)
        for entry in results["models"] + results["cifar"]:
            for r in entry["rows"]:
                r["fraction_of_peak"] = r["gops"] / (peaks["int8_gops"] if r["backend"] in INT8_BACKENDS else peaks["fp32_gflops"])
        atomic_write_text(args.out, json.dumps(results, indent=2, default=str) + "\n")
        print(json.dumps(peaks))
        return 0
    started = time.time()
    peaks = gemm_peaks(args.threads)
    print(f"GEMM peaks at {args.threads} thread(s): fp32 {peaks['fp32_gflops']:.0f} GFLOP/s, int8 {peaks['int8_gops']:.0f} GOP/s", flush=True)
    results = {"benchmark": "inference", "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "peaks": peaks, "models": [], "cifar": []}  # fmt: skip
    results["settings"]["cifar_runs"] = [str(p) for p in args.cifar_runs]
    earlier = json.loads(args.out.read_text()) if args.carry_over and args.out.is_file() else None
    with tempfile.TemporaryDirectory(prefix="smallnets-inference-") as work:
        work = Path(work)
        targets = [(m, smallnets.create_model(m).eval(), None) for m in args.models] + [(p.name, p, p) for p in args.cifar_runs]
        for name, target, run in targets:
            t0 = time.time()
            report = bench(target, backends=args.backends, batches=args.batches, threads=args.threads, rounds=args.rounds, runs=args.runs,
                           calib=min(args.calib, 128) if run is None else args.calib)  # fmt: skip
            model = target if run is None else smallnets.load_weights(run)
            macs = smallnets.count_macs(model, tuple(report.input_size))
            entry = summarise(name, report, macs, peaks)
            entry["seconds"] = round(time.time() - t0, 1)
            print(f"\n{report}\n{json.dumps(entry['goals'])}  ({entry['seconds']} s)", flush=True)
            png = args.out.with_name(f"inference_{name}.png" if run is None else f"inference_cifar_{name}.png")
            plot_bench(report, png)
            if run is not None:
                entry["accuracy"] = accuracy(run, work, args.calib, args.qat_epochs, args.qat_precision, args.qat_max_minutes, args.qat_threshold, args.qat_freeze_bn)
                print(f"accuracy: {json.dumps({k: v for k, v in entry['accuracy'].items() if k not in ('ops_as_run', 'bytes')})}", flush=True)
                results["cifar"].append(entry)
            else:
                results["models"].append(entry)
            results["environment"] = report.environment
            results["wall_s"] = round(time.time() - started, 1)
            _carry(results, earlier)
            atomic_write_text(args.out, json.dumps(results, indent=2, default=str) + "\n")  # after every model: a cut-off run keeps what it measured
    print(f"wrote {args.out} ({results['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
