"""Training throughput on CIFAR-10: smallnets' pipeline against a plain PyTorch baseline, same run.

For each model, both train the same network (same initial weights, optimizer, schedule, batch and
epochs) on the same images (a fixed subset of the shared CIFAR-10 archive):

- baseline: a DataLoader whose workers decode every JPEG with PIL and apply per-sample transforms
  (pad-4 random crop, flip, to-tensor, normalise), fp32, NCHW — what a plain script does;
- smallnets: the decoded-once uint8 tensor cache, batched augmentation, bf16 autocast (where the
  CPU runs it fast), channels_last — what ``smallnets train`` does by default (ShuffleNet V2: NCHW,
  its faster layout here).

Images/s count training steps only (validation excluded); accuracy is top-1 on the same fixed
validation split after every epoch. Each seed changes the initial weights, augmentation draws and
batch order of both runs; the table gives mean and standard deviation over seeds, since top-1 after
a few epochs swings by several points between equivalent runs. Prints a table, writes JSON and a
PNG of validation top-1 per epoch (both pipelines, every seed).

    python benchmarks/train_throughput.py [--archive PATH] [--per-class 600] [--epochs 6] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import smallnets
from smallnets._io import atomic_write_text
from smallnets.compare import environment
from smallnets.data import DataConfig
from smallnets.metrics import evaluate
from smallnets.training import RunConfig, Trainer, TrainConfig
from smallnets.training.optim import Schedule, build_optimizer

MODELS = (  # three families, CIFAR stems (SqueezeNet, without BatchNorm, does not train at this lr)
    # (name, knobs, smallnets train overrides): ShuffleNet V2 trains faster NCHW on this CPU, since
    # channels-last BatchNorm over its thin (24-96 channel) layers is slower than the NCHW kernel
    ("mobilenet_v1", {"width_mult": 0.5, "cifar": True}, {}),
    ("mobilenet_v2", {"width_mult": 0.5, "cifar": True}, {}),
    ("shufflenet_v2", {"width_mult": 0.5, "cifar": True}, {"channels_last": False}),
)
REPO = Path(__file__).resolve().parents[1]


class FolderDataset(torch.utils.data.Dataset):
    """The plain way: a list of files, PIL decode and per-sample transforms in each worker."""

    def __init__(self, files, labels, train: bool, mean, std):
        self.files, self.labels, self.train = files, labels, train
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i]).convert("RGB")
        arr = np.asarray(img, dtype=np.uint8)
        if self.train:
            arr = np.pad(arr, ((4, 4), (4, 4), (0, 0)))
            y0, x0 = random.randint(0, 8), random.randint(0, 8)
            arr = arr[y0 : y0 + 32, x0 : x0 + 32]
            if random.random() < 0.5:
                arr = arr[:, ::-1]
        x = (arr.transpose(2, 0, 1).astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(x), self.labels[i]


def run_smallnets(name, knobs, overrides, data_cfg: DataConfig, train_cfg: TrainConfig, out: Path):
    train = {**train_cfg.__dict__, "out": str(out), **overrides}
    cfg = RunConfig.from_dict({"model": {"name": name, **knobs}, "data": data_cfg.to_dict(), "train": train})
    trainer = Trainer(cfg)
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    last = result.last
    return trainer, init, {
        "images_per_s": sum(r["images_per_s"] * r["epoch_s"] for r in trainer.history) / sum(r["epoch_s"] for r in trainer.history),
        "val_top1": last["val_top1"],
        "val_top1_per_epoch": [r["val_top1"] for r in trainer.history],
        "train_s": trainer.train_time,
        "precision": trainer.precision,
        "channels_last": trainer.config.train.channels_last,
    }


def run_baseline(name, knobs, trainer: Trainer, init_state, files, labels, val_files, val_labels, train_cfg: TrainConfig, workers: int):
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    model = smallnets.create_model(name, num_classes=10, **knobs)
    model.load_state_dict(init_state)
    mean, std = trainer.data.preprocessing["mean"], trainer.data.preprocessing["std"]
    batch = trainer.config.data.batch_size
    train_ds = FolderDataset(files, labels, True, mean, std)
    val_ds = FolderDataset(val_files, val_labels, False, mean, std)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                                         worker_init_fn=lambda i: random.seed(train_cfg.seed * 100 + i))  # fmt: skip
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=256, num_workers=workers)
    base_lr = trainer.base_lr
    opt = build_optimizer(model, train_cfg, base_lr)
    schedule = Schedule(train_cfg, len(loader))
    step, seen, busy, curve = 0, 0, 0.0, []
    for epoch in range(train_cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in loader:
            schedule.apply(opt, step, base_lr)
            loss = nn.functional.cross_entropy(model(x), y, label_smoothing=train_cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += y.shape[0]
        busy += time.perf_counter() - t0
        curve.append(evaluate(model, val_loader, 10).top1)  # not timed, as the trainer's validation
        print(f"  baseline epoch {epoch + 1}: {seen / busy:.0f} img/s so far, val top-1 {curve[-1]:.1f}%", file=sys.stderr, flush=True)
    return {"images_per_s": seen / busy, "val_top1": curve[-1], "val_top1_per_epoch": curve, "train_s": busy, "precision": "fp32"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(REPO.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"))
    parser.add_argument("--per-class", type=int, default=600, help="images per class used (train + val)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up before the cosine decay (both pipelines)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one pair of runs per model and seed")
    parser.add_argument("--models", nargs="*", help="subset of: " + ", ".join(n for n, _, _ in MODELS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    args = parser.parse_args(argv)
    if args.models and (unknown := set(args.models) - {n for n, _, _ in MODELS}):
        parser.error(f"--models must be among {', '.join(n for n, _, _ in MODELS)}; got {', '.join(sorted(unknown))}")

    work = Path(tempfile.mkdtemp(prefix="smallnets-bench-"))
    with tarfile.open(args.archive) as tar:  # the baseline reads plain files
        tar.extractall(work / "files", filter="data")
    data_cfg = DataConfig(path=args.archive, batch_size=args.batch_size, val_fraction=0.1, limit_per_class=args.per_class,
                          pipeline="tensor", cache_dir=str(work / "cache"))  # fmt: skip
    models = [m for m in MODELS if not args.models or m[0] in args.models]
    runs = []
    for seed in args.seeds:
        train_cfg = TrainConfig(epochs=args.epochs, lr=0.1, warmup_epochs=args.warmup_epochs, progress=True, seed=seed)
        for name, knobs, overrides in models:
            print(f"[{name} seed {seed}] smallnets pipeline", file=sys.stderr, flush=True)
            trainer, init, ours = run_smallnets(name, knobs, overrides, data_cfg, train_cfg, work / "runs")
            split = json.loads((trainer.run_dir / "split.json").read_text())
            val_names = set(split_val_files(split))
            files, labels, val_files, val_labels = [], [], [], []
            for c, cls in enumerate(trainer.classes):
                names = sorted(p for p in (work / "files").rglob(f"{cls}/*.jpg"))[: args.per_class]
                for p in names:
                    rel = p.relative_to(work / "files").as_posix()
                    (val_files if rel in val_names else files).append(p)
                    (val_labels if rel in val_names else labels).append(c)
            assert len(val_files) == trainer.data.num_val, (len(val_files), trainer.data.num_val)
            print(f"[{name} seed {seed}] baseline ({len(files)} train / {len(val_files)} val files)", file=sys.stderr, flush=True)
            base = run_baseline(name, knobs, trainer, init, files, labels, val_files, val_labels, train_cfg, args.workers)
            runs.append({"model": name, "seed": seed, "knobs": knobs, "overrides": overrides, "baseline": base, "smallnets": ours,
                         "speedup": ours["images_per_s"] / base["images_per_s"]})  # fmt: skip

    rows = [summarise([r for r in runs if r["model"] == name]) for name, _, _ in models]
    print(f"\nCIFAR-10 subset ({args.per_class}/class, 10% val), batch {args.batch_size}, {args.epochs} epochs "
          f"({args.warmup_epochs:g} warm-up), seeds {' '.join(map(str, args.seeds))}, {torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print("mean (sd) over seeds; top-1 after the last epoch; gap = ours - baseline, with its standard error")
    print(f"{'model':<30}{'baseline img/s':>15}{'smallnets img/s':>16}{'speed-up':>13}{'base top-1':>14}{'ours top-1':>14}{'gap':>15}")
    for r in rows:
        label = r["model"] + " " + ",".join(f"{k}={v}" for k, v in r["knobs"].items() if k != "cifar")
        b, o = r["baseline"], r["smallnets"]
        print(f"{label:<30}{b['images_per_s'][0]:>9.0f} ({b['images_per_s'][1]:>3.0f}){o['images_per_s'][0]:>10.0f} ({o['images_per_s'][1]:>3.0f})"
              f"{r['speedup'][0]:>7.2f}x ({r['speedup'][1]:.2f}){b['val_top1'][0]:>8.1f} ({b['val_top1'][1]:>3.1f}){o['val_top1'][0]:>8.1f} ({o['val_top1'][1]:>3.1f})"
              f"{r['gap'][0]:>+9.1f} ({r['gap'][1]:.1f})")  # fmt: skip
    out = {"benchmark": "train_throughput", "environment": environment(), "seeds": args.seeds, "per_class": args.per_class, "epochs": args.epochs,
           "warmup_epochs": args.warmup_epochs, "batch_size": args.batch_size, "baseline_workers": args.workers, "rows": rows, "runs": runs}  # fmt: skip
    atomic_write_text(args.out, json.dumps(out, indent=2))
    png = plot_curves(runs, [m[0] for m in models], Path(args.out).with_suffix(".png"))
    print(f"wrote {os.path.relpath(args.out)} and {os.path.relpath(png)}")
    return 0


def _mean_sd(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds; the top-1 gap's standard error treats seeds as paired."""
    gaps = [r["smallnets"]["val_top1"] - r["baseline"]["val_top1"] for r in runs]
    gap_mean, gap_sd = _mean_sd(gaps)
    return {
        "model": runs[0]["model"],
        "knobs": runs[0]["knobs"],
        "seeds": [r["seed"] for r in runs],
        "baseline": {k: _mean_sd([r["baseline"][k] for r in runs]) for k in ("images_per_s", "val_top1")},
        "smallnets": {k: _mean_sd([r["smallnets"][k] for r in runs]) for k in ("images_per_s", "val_top1")},
        "speedup": _mean_sd([r["speedup"] for r in runs]),
        "gap": (gap_mean, gap_sd / math.sqrt(len(gaps))),
    }


def plot_curves(runs: list[dict], models: list[str], out: Path) -> Path:
    """Validation top-1 per epoch: one panel per model, every seed, baseline grey, smallnets coloured."""
    from matplotlib.ticker import MaxNLocator

    from smallnets.plots import _new_figure, _save

    fig = _new_figure(4.2 * len(models), 3.4)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, name in zip(axes, models):
        mine = [r for r in runs if r["model"] == name]
        rates = {key: np.mean([r[key]["images_per_s"] for r in mine]) for key in ("baseline", "smallnets")}
        for r in mine:
            for key, style in (("baseline", {"color": "0.55", "ls": "--"}), ("smallnets", {"color": "tab:blue"})):
                curve = r[key]["val_top1_per_epoch"]
                label = f"{key} (mean {rates[key]:.0f} img/s)" if r is mine[0] else None
                ax.plot(range(1, len(curve) + 1), curve, lw=1.4, marker="o", ms=3, label=label, **style)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("validation top-1 (%)")
    return _save(fig, out, dpi=110)


def split_val_files(split: dict) -> list[str]:
    """Relative paths of the validation files recorded in a run's split.json."""
    files = split.get("val_files") or []
    return [f if "/" not in f or not f.startswith("./") else f[2:] for f in files]


if __name__ == "__main__":
    sys.exit(main())
