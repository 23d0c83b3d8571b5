"""The training engine: one process or many (torchrun + DistributedDataParallel).

A run directory holds everything about a run, each file written atomically:

    config.json          the resolved configuration (what was asked, after defaults)
    run.json             status (running / finished / interrupted / diverged / time budget), environment
    split.json           the validation split (seed, fraction, per-class counts, val files)
    metrics.jsonl/.csv   one record per epoch
    curves.png           learning curves
    last.safetensors     deployable weights (the EMA weights when EMA is on) + last.json sidecar
    best.safetensors     the weights of the best validation top-1 so far + best.json
    state.safetensors    trainer state: raw weights, optimizer, EMA, grad scaler, RNG of every
                         rank and the position (epoch, batch); no pickle anywhere
    .lock                while a process trains (or resumes) the run: one owner at a time (rundir.py)

``--resume RUN`` reloads state.safetensors and continues at the saved batch: the batches of an
epoch are a pure function of (seed, epoch) and every random state is restored, so a resumed run
ends with the same weights as an uninterrupted one.

A first Ctrl-C (or SIGTERM) stops after the current step and saves; a second one stops at once
(raised as KeyboardInterrupt; during a save, once the checkpoint is complete) with run.json saying
'interrupted' and where the last checkpoint stands. A resume after SIGKILL removes the killed
process's unfinished temporary files and notes the kill in run.json ("previous_session").
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import smallnets
from smallnets._io import atomic_write_text
from smallnets.checkpoint import load_state, save_state, save_weights
from smallnets.data import DataConfig, build_data
from smallnets.evaluation import EvalResult, autocast_context, evaluate
from smallnets.registry import model_info
from smallnets.zoo import create_model
from smallnets import distributed as distr
from smallnets.training.config import ModelConfig, RunConfig, TrainConfig, build_dataclass, check_train_config, coerce, field_types
from smallnets.training.optim import ModelEMA, Schedule, build_optimizer, mix_batch, resolved_lr
from smallnets.training.rundir import RunDirectoryInUse, RunLock, remove_temp_files
from smallnets.progress import Progress, format_duration

METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
    "images_per_s", "epoch_s", "elapsed_s", "wall_s",
)  # fmt: skip


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # finished | interrupted | time budget
    epochs_done: int
    best_top1: float | None
    last: dict[str, Any] | None  # the last epoch's metrics record


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions faster than fp32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision must be fp32 or bf16 on CPU (fp16 needs a GPU), got 'fp16'")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


SMALL_INPUT_PX = 64  # images this small (or smaller) want a model's small-input stem: an ImageNet one ends at 2x2 or 1x1

from smallnets._precision import AMP_DTYPES  # noqa: E402  (one table for every precision; move up with the imports)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    """Train a zoo model on a data set; ``Trainer(config).fit()`` or ``Trainer.resume(run).fit()``."""

    def __init__(self, config: RunConfig, *, run_dir: str | Path | None = None, _resume_state: dict | None = None):
        self.config = config
        cfg = config.train
        check_train_config(cfg)
        if not config.model.name:
            raise ValueError("model name must be given (e.g. 'mobilenet_v2'), got ''")
        model_info(config.model.name)  # unknown names fail here, before any data is read
        if not config.data.path:
            raise ValueError("data must be given: a folder, a .tar/.tar.gz archive, 'cifar10' or 'cifar100'; got ''")
        self.dist, self.device = distr.init_distributed(cfg.device)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        if cfg.sync_bn and self.device.type != "cuda":
            raise ValueError(f"sync_bn needs CUDA devices (torch's SyncBatchNorm runs on GPUs only), got device {str(self.device)!r}")
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp_dtype = AMP_DTYPES[self.precision]
        self._seed_everything(cfg.seed + self.dist.rank)
        # the run directory is claimed before anything is read or written: of two runs with the
        # same name, the second fails here, having written nothing
        self._lock: RunLock | None = None
        self._created_dirs: list[Path] = []
        resume = _resume_state is not None
        self._previous_session: dict | None = None  # a resumed run whose last session was killed
        self.run_dir = Path(self._on_main(lambda: self._claim_existing(Path(run_dir), tidy=True) if resume else self._claim_new(run_dir)))
        self._claimed = True  # on every rank (rank 0 holds the lock): fit() re-claims collectively
        try:
            self._setup(_resume_state)
        except BaseException:
            self._abandon_claim()
            raise

    def _setup(self, _resume_state: dict | None) -> None:
        config, cfg = self.config, self.config.train
        if not self.dist.is_main:
            distr.barrier(self.dist)  # rank 0 downloads / decodes / extracts first; the rest hit its caches
        # a fine-tune normalises as the checkpoint was trained (unless mean / std are given); the
        # resolved values go into the run's config, which a resume follows as it is
        pretrained = self._resolve_pretrained(loading=_resume_state is None) if cfg.pretrained else None
        if pretrained is not None and config.data.mean is None and _resume_state is None:
            prep = pretrained[1].preprocessing
            config = self.config = dataclasses.replace(config, data=dataclasses.replace(config.data, mean=tuple(prep["mean"]), std=tuple(prep["std"])))
        # the trainer decides the memory format of batches and model alike
        data_cfg = dataclasses.replace(config.data, channels_last=cfg.channels_last)
        self.data = build_data(data_cfg, seed=cfg.seed, device=self.device, rank=self.dist.rank,
                               world_size=self.dist.world_size, progress=cfg.progress and self.dist.is_main)  # fmt: skip
        if self.dist.is_main:
            distr.barrier(self.dist)
        self.classes = list(self.data.classes)
        self.num_classes = len(self.classes)
        knobs = dict(config.model.knobs)
        self.pretrained_report: dict | None = None
        self.chosen_knobs: dict[str, Any] = {}  # knobs the trainer set because the user left them open
        size = self.data.preprocessing.get("image_size")
        if pretrained is not None:
            self.model = self._pretrained_model(config.model.name, knobs, *pretrained)
        else:
            knobs = self._choose_stem(config.model.name, knobs, size)
            self.model = create_model(config.model.name, num_classes=self.num_classes, **knobs)
        self.model_config = self.model.smallnets_config
        if pretrained is not None and self.dist.is_main:
            self._warn_imagenet_stem(size)
        self.frozen_modules = freeze_layers(self.model, cfg.freeze) if cfg.freeze else []
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.dist.enabled:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.steps_per_epoch = len(self.data.train)  # build_data refuses a split with no batch
        self.global_batch = config.data.batch_size * self.dist.world_size
        self.base_lr = resolved_lr(cfg, self.global_batch)
        self.optimizer = build_optimizer(self.model, cfg, self.base_lr)
        self.schedule = Schedule(cfg, self.steps_per_epoch)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema else None
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.ddp: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward_model = torch.compile(self.ddp) if cfg.compile else self.ddp

        # position and history
        self.epoch = 0
        self.batch = 0  # next batch within self.epoch
        self.global_step = 0
        self.best_top1: float | None = None
        self.history: list[dict] = []
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "labelled": 0, "time": 0.0}
        self.train_time = 0.0  # seconds spent training (excludes evaluation and saving)
        self._wall_offset = 0.0  # wall-clock seconds of earlier sessions of this run (resume)
        self._wall_t0: float | None = None
        self._stop: str | None = None
        self._saving = False  # inside _save: a second Ctrl-C waits for the checkpoint to be complete
        self._abort_pending = False
        self._aborting = False  # a second Ctrl-C is being handled: further ones are ignored
        self._saved_position: tuple[int, int, int] | None = None  # (epoch, batch, step) of state.safetensors

        if _resume_state is not None:
            self._load_state(_resume_state)
        else:
            self._write_new_run_dir()

    # --- construction helpers -----------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: str | Path, **overrides: Any) -> Trainer:
        """Continue the run in ``run_dir`` from its state.safetensors.

        ``overrides`` may change settings that do not alter the results (progress, threads,
        max_minutes, epochs to extend a finished run); anything else is refused.
        """
        run_dir = Path(run_dir)
        state_path = run_dir / "state.safetensors"
        if not state_path.is_file():
            raise FileNotFoundError(f"resume must name a run directory with state.safetensors, got {str(run_dir)!r} (no {state_path.name})")
        raw = json.loads((run_dir / "config.json").read_text())
        allowed = {"progress", "threads", "max_minutes", "epochs", "device", "out", "name"}
        for key in overrides:
            if key not in allowed:
                raise ValueError(f"resume overrides must be among {', '.join(sorted(allowed))} (others would change the results), got {key!r}")
        raw["train"].update(overrides)
        config = RunConfig.from_dict(raw, where=str(run_dir / "config.json"))
        state = load_state(state_path)
        return cls(config, run_dir=run_dir, _resume_state=state)

    def _resolve_pretrained(self, *, loading: bool):
        """(path, format, checkpoint or None) of ``train.pretrained``; the checkpoint is read when loading
        (a resumed run takes every weight from its own state) or when its format must be detected."""
        from smallnets.pretrained import detect_format, get_format, read_checkpoint, resolve_source

        cfg = self.config.train
        path, fmt = resolve_source(cfg.pretrained, format=cfg.pretrained_format, progress=cfg.progress and self.dist.is_main)
        src = read_checkpoint(path) if loading or fmt is None else None  # read once: for detection and loading alike
        if fmt is None:
            fmt = get_format(detect_format(src))
        return path, fmt, src if loading else None

    def _pretrained_model(self, name: str, knobs: dict, path, fmt, src) -> nn.Module:
        """The model with the checkpoint's knobs (the user's win) and, unless resuming, its weights; a new classifier."""
        from smallnets.pretrained import apply_checkpoint

        cfg = self.config.train
        model = create_model(name, num_classes=self.num_classes, **{**fmt.knobs, **knobs})
        if src is not None:
            apply_checkpoint(model, src, fmt, source=cfg.pretrained, path=path)
            self.pretrained_report = {"format": fmt.name, "source": cfg.pretrained, **model.smallnets_meta["load_report"]}
            if self.dist.is_main and cfg.progress:
                new = model.smallnets_meta["load_report"]["reinitialised"]
                print(f"loaded {fmt.name} weights from {cfg.pretrained}" + (f"; new classifier ({', '.join(new)})" if new else ""),
                      file=sys.stderr, flush=True)  # fmt: skip
        return model

    def _choose_stem(self, name: str, knobs: dict, size: int | None) -> dict:
        """Small images through an ImageNet stem end in a 1x1 map and train to chance: with no ``cifar``
        given and no pretrained weights needing that stem, take the model's small-input stem."""
        defaults = model_info(name).knobs
        if "cifar" in knobs or defaults.get("cifar") is not False or size is None or size > SMALL_INPUT_PX:
            return knobs
        self.chosen_knobs = {"cifar": True, "why": f"{size} px images; no cifar given and no pretrained weights"}
        return {**knobs, "cifar": True}

    def _warn_imagenet_stem(self, size: int | None) -> None:
        if self.model_config["knobs"].get("cifar") is not False or size is None or size > SMALL_INPUT_PX:
            return
        info = self.model.feature_info() if hasattr(self.model, "feature_info") else []
        stride = info[-1]["stride"] if info else 32
        side = max(1, -(-size // stride))
        warnings.warn(f"{self.config.model.name} keeps the ImageNet stem its pretrained weights need: at {size} px its last feature map "
                      f"is {side}x{side} (stride {stride}); --image-size 96 or more usually trains better", stacklevel=4)  # fmt: skip

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # --- the run directory ------------------------------------------------------------------

    def _on_main(self, fn):
        """``fn()`` on rank 0, its result (or its error) on every rank."""
        outcome = error = None
        if self.dist.is_main:
            try:
                outcome = ("ok", fn())
            except (OSError, ValueError) as exc:
                error, outcome = exc, ("error", f"{type(exc).__name__}: {exc}")
        outcome = distr.broadcast_object(outcome, self.dist)
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise RuntimeError(f"rank 0 failed: {outcome[1]}")
        return outcome[1]

    def _make_dirs(self, path: Path) -> None:
        """``mkdir -p path``, remembering which folders this trainer created (removed again if it fails to start)."""
        missing = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        self._created_dirs.extend(missing)

    def _claim_new(self, run_dir) -> str:
        cfg = self.config.train
        if run_dir is None and cfg.name is None:
            # an automatic name is claimed by creating it: two runs started in the same second get two directories
            base = Path(cfg.out) / f"{self.config.model.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
            self._make_dirs(base.parent)
            run_dir, i = base, 1
            while True:
                try:
                    run_dir.mkdir()
                    self._created_dirs.append(run_dir)
                    break
                except FileExistsError:
                    run_dir, i = base.with_name(f"{base.name}-{i}"), i + 1
        else:
            run_dir = Path(run_dir) if run_dir is not None else Path(cfg.out) / cfg.name
            self._make_dirs(run_dir)
        try:
            self._lock = RunLock.claim(run_dir)
        except RunDirectoryInUse:
            self._abandon_claim()
            raise
        if (run_dir / "state.safetensors").exists():
            self._abandon_claim()
            raise FileExistsError(f"run directory {str(run_dir)!r} already holds a run; use --resume {run_dir} or another --name")
        return str(run_dir)

    def _claim_existing(self, run_dir: Path, *, tidy: bool = False) -> str:
        self._lock = RunLock.claim(run_dir)
        if tidy:
            self._tidy_after_previous_session(run_dir)
        return str(run_dir)

    def _tidy_after_previous_session(self, run_dir: Path) -> None:
        """A resume holds the lock, so no earlier session is alive: its unfinished temporary files are
        debris, and a run.json still saying 'running' means that session was killed (or crashed)."""
        removed = remove_temp_files(run_dir)
        try:
            info = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("status") == "running":
            self._previous_session = {"status": "killed", "pid": info.get("pid"), "last_update": info.get("updated"),
                                      "epoch": info.get("epoch"), "batch": info.get("batch"), "temp_files_removed": removed}  # fmt: skip
            pid = f" (pid {info['pid']})" if info.get("pid") is not None else ""
            warnings.warn(f"the previous session of this run{pid} was killed: its run.json still said 'running' (last update "
                          f"{info.get('updated')}); continuing from its last checkpoint; removed {len(removed)} unfinished "
                          f"temporary file(s)", stacklevel=4)  # fmt: skip
        elif removed:
            warnings.warn(f"removed {len(removed)} unfinished temporary file(s) from {run_dir}: {', '.join(removed)}", stacklevel=4)

    def _abandon_claim(self) -> None:
        """Give the directory up after a failed start: the lock, and the folders this trainer made if still empty."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        for d in sorted(set(self._created_dirs), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty (or not ours any more): leave it
        self._created_dirs = []

    def _release(self) -> None:
        self._claimed = False
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _write_new_run_dir(self) -> None:
        run_dir = self.run_dir
        if self.dist.is_main:
            atomic_write_text(run_dir / "config.json", json.dumps(self.resolved_config(), indent=2))
            split = self.data.split_json()
            atomic_write_text(run_dir / "split.json", json.dumps(split, indent=2))
        shards = distr.gather_objects(self._shard_record(), self.dist)
        if self.dist.is_main:
            atomic_write_text(run_dir / "shards.json", json.dumps({"epoch": 0, "ranks": shards}))
            self._write_run_json("running")
        self._created_dirs = []  # the directory is a run now: kept whatever happens next
        distr.barrier(self.dist)

    def _shard_record(self) -> dict:
        """Which training images this process sees in the first epoch (lists kept up to 100k images)."""
        indices = [int(i) for i in self.data.train.epoch_indices(0)]
        digest = hashlib.sha256(json.dumps(indices).encode()).hexdigest()
        record = {"rank": self.dist.rank, "count": len(indices), "sha256": digest}
        if self.data.num_train <= 100_000:
            record["indices"] = indices
        return record

    def weights_digest(self) -> str:
        """sha256 of this process's parameters: equal on every rank when DDP kept replicas in step.

        (BatchNorm running statistics are per-process: DDP re-broadcasts rank 0's at each forward.)
        """
        h = hashlib.sha256()
        for key, value in sorted(self.model.named_parameters()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def resolved_config(self) -> dict:
        out = self.config.to_dict()
        out["model"] = {"name": self.config.model.name, **self.model_config["knobs"]}
        out["resolved"] = {
            "lr": self.base_lr,
            "global_batch": self.global_batch,
            "precision": self.precision,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "steps_per_epoch": self.steps_per_epoch,
            "pipeline": self.data.pipeline,
            "num_train": self.data.num_train,
            "num_val": self.data.num_val,
        }
        if self.chosen_knobs:
            out["resolved"]["chosen_knobs"] = dict(self.chosen_knobs)
        return out

    def _write_run_json(self, status: str, message: str | None = None, *, position: tuple[int, int, int] | None = None) -> None:
        if not self.dist.is_main:
            return
        epoch, batch, step = position if position is not None else (self.epoch, self.batch, self.global_step)
        info = {
            "status": status,
            "message": message,
            "model": self.config.model.name,
            "epoch": epoch,
            "batch": batch,
            "global_step": step,
            "best_top1": self.best_top1,
            "train_time_s": round(self.train_time, 3),
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
            "environment": {
                "smallnets": smallnets.__version__,
                "torch": torch.__version__,
                "python": sys.version.split()[0],
                "device": str(self.device),
                "threads": torch.get_num_threads(),
                "world_size": self.dist.world_size,
                "precision": self.precision,
            },
            "skipped_files": self.data.skipped,
            "pid": os.getpid(),  # of the process writing it: a resume tells a killed session from a live one
        }
        if self._previous_session is not None:
            info["previous_session"] = self._previous_session
        if self.pretrained_report is not None:
            info["pretrained"] = self.pretrained_report
        atomic_write_text(self.run_dir / "run.json", json.dumps(info, indent=2))

    # --- state ----------------------------------------------------------------------------------

    def _state(self) -> dict:
        rng = distr.gather_objects(_rng_state(self.device), self.dist)
        state = {
            "format": "smallnets.trainer-state",
            "format_version": 1,
            "position": {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step},
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng,
            "best_top1": self.best_top1,
            "history": self.history,
            "partial": dict(self.partial),
            "train_time": self.train_time,
            "wall_time": self._wall_now(),
            "world_size": self.dist.world_size,
        }
        return state

    def _wall_now(self) -> float:
        """Wall-clock seconds of this run so far: validation, saving and earlier sessions included."""
        return self._wall_offset if self._wall_t0 is None else time.perf_counter() - self._wall_t0

    def _load_state(self, state: dict) -> None:
        if state.get("format") != "smallnets.trainer-state":
            raise ValueError(f"resume state must be a smallnets trainer state, got format {state.get('format')!r}")
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"resume must use the same number of processes as the run (world_size {state['world_size']}), got {self.dist.world_size}"
            )
        pos = state["position"]
        self.epoch, self.batch, self.global_step = int(pos["epoch"]), int(pos["batch"]), int(pos["global_step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][self.dist.rank], self.device)
        self.best_top1 = state["best_top1"]
        self.history = list(state["history"])
        self.partial = dict(state["partial"])
        self.train_time = float(state["train_time"])
        self._wall_offset = float(state.get("wall_time", self.train_time))
        self._saved_position = (self.epoch, self.batch, self.global_step)

    def _save(self, *, best: bool = False) -> None:
        """Trainer state first, then the deployable weights: a crash between them loses nothing.

        A second Ctrl-C while this runs is held back until both are written (state and weights stay
        a pair), then raised as KeyboardInterrupt."""
        self._saving = True
        try:
            self._write_checkpoint(best=best)
        finally:
            self._saving = False
        if self._abort_pending:
            raise KeyboardInterrupt

    def _write_checkpoint(self, *, best: bool) -> None:
        state = self._state()  # every rank takes part (RNG gather)
        position = (self.epoch, self.batch, self.global_step)
        if not self.dist.is_main:
            self._saved_position = position
            return
        save_state(self.run_dir / "state.safetensors", state)
        self._saved_position = position
        deploy = self.ema.module if self.ema else self.model
        extra = {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step, "run": str(self.run_dir),
                 "metrics": self.history[-1] if self.history else None, "ema": self.ema is not None}  # fmt: skip
        save_weights(deploy, self.run_dir / "last.safetensors", classes=self.classes,
                     preprocessing=self.data.preprocessing, extra=extra)  # fmt: skip
        if best:
            save_weights(deploy, self.run_dir / "best.safetensors", classes=self.classes,
                         preprocessing=self.data.preprocessing, extra=extra)  # fmt: skip

    def _write_metrics(self) -> None:
        if not self.dist.is_main:
            return
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        rows = [",".join(METRIC_COLUMNS)]
        for r in self.history:
            rows.append(",".join("" if r.get(c) is None else f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in METRIC_COLUMNS))
        atomic_write_text(self.run_dir / "metrics.csv", "\n".join(rows) + "\n")
        try:
            from smallnets.plots import plot_learning_curves

            plot_learning_curves(self.history, self.run_dir / "curves.png", title=f"{self.config.model.name} ({self.run_dir.name})")
        except Exception as exc:  # a plotting problem must never end a training run
            print(f"warning: could not draw curves.png: {exc}", file=sys.stderr)

    # --- the loop --------------------------------------------------------------------------------

    def _request_stop(self, signum, frame) -> None:
        if self._aborting or self._abort_pending:
            return
        if self._stop is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a new save
            if self._saving:
                self._abort_pending = True  # raised when the checkpoint being written is complete
                if self.dist.is_main:
                    print("SIGINT again: stopping once the checkpoint being written is complete", file=sys.stderr, flush=True)
                return
            raise KeyboardInterrupt
        self._stop = signal.Signals(signum).name
        if self.dist.is_main:
            print(f"\n{self._stop} received: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def _stem_note(self) -> str:
        if "cifar" not in self.chosen_knobs:
            return ""
        return f" (small-input stem, cifar=True, for {self.data.preprocessing['image_size']} px images; cifar=False for the ImageNet stem)"

    def _record_abort(self) -> None:
        cfg = self.config.train
        if self._saved_position is None:
            message = "a second SIGINT stopped the run before its first checkpoint; start it again"
        else:
            e, b, _ = self._saved_position
            message = (f"a second SIGINT stopped the run; the last checkpoint (epoch {e} batch {b}) is complete: "
                       f"smallnets train --resume {self.run_dir} continues from it")  # fmt: skip
        self._write_run_json("interrupted", message, position=self._saved_position or (0, 0, 0))
        if self.dist.is_main and cfg.progress:
            print(message, file=sys.stderr, flush=True)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        ls = self.config.train.label_smoothing
        if soft is None:
            return nn.functional.cross_entropy(logits, y, label_smoothing=ls)
        soft = soft * (1.0 - ls) + ls / self.num_classes
        return torch.sum(-soft * nn.functional.log_softmax(logits, dim=1), dim=1).mean()

    def _mix_generator(self) -> torch.Generator:
        g = torch.Generator()
        seed = self.config.train.seed
        for part in (self.dist.rank, self.epoch, self.batch):  # a pure function of the position
            seed = (seed * 1_000_003 + part) % 2**63
        g.manual_seed(seed)
        return g

    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train until the configured epochs are done (or ``max_steps`` more optimizer steps, a
        signal, or the time budget), saving as it goes. Returns where the run stands."""
        cfg = self.config.train
        old_handlers = {}
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._request_stop)
        steps_left = max_steps
        status = "finished"
        try:
            if not self._claimed:  # a second fit() of this trainer: its first gave the directory up at the end
                self._on_main(lambda: self._claim_existing(self.run_dir))
                self._claimed = True
            self._write_run_json("running")
            # wall-clock seconds of this run, validation and saving included, carried over a resume
            self._wall_t0 = time.perf_counter() - self._wall_offset
            if self.dist.is_main and cfg.progress:
                print(
                    f"training {self.config.model.name}{self._stem_note()} on {self.data.num_train} images ({self.num_classes} classes, "
                    f"{self.data.pipeline} pipeline), validating on {self.data.num_val}; {self.steps_per_epoch} steps/epoch, "
                    f"batch {self.global_batch}, lr {self.base_lr:.4g}, {self.precision}, {self.device}, "
                    f"{self.dist.world_size} process(es); run: {self.run_dir}",
                    file=sys.stderr,
                    flush=True,
                )
            while self.epoch < cfg.epochs:
                outcome = self._train_epoch(steps_left)
                if outcome["steps"] is not None and steps_left is not None:
                    steps_left -= outcome["steps"]
                if outcome["stopped"]:
                    status = outcome["stopped"]
                    self._save()
                    self._write_run_json(status, outcome.get("message"))
                    if self.dist.is_main and cfg.progress:
                        print(f"{status}: saved at epoch {self.epoch} batch {self.batch}; continue with: smallnets train --resume {self.run_dir}",
                              file=sys.stderr, flush=True)  # fmt: skip
                    break
                self._end_epoch()
            else:
                self._write_run_json("finished")
            digests = distr.gather_objects(self.weights_digest(), self.dist)
            self.replica_digests = digests
            if self.dist.enabled and self.dist.is_main:
                info = json.loads((self.run_dir / "run.json").read_text())
                info["replica_weights_sha256"] = digests
                info["replicas_identical"] = len(set(digests)) == 1
                atomic_write_text(self.run_dir / "run.json", json.dumps(info, indent=2))
            distr.barrier(self.dist)  # no process leaves (and tears down its group) while rank 0 still writes
        except TrainingDiverged as exc:
            self._write_run_json("diverged", str(exc))
            raise
        except KeyboardInterrupt:
            # a second Ctrl-C (or one outside a handler): record where the files stand, then let it through
            self._aborting = True
            self._record_abort()
            raise
        finally:
            self._release()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        return TrainResult(self.run_dir, status, len(self.history), self.best_top1, self.history[-1] if self.history else None)

    def _train_epoch(self, max_steps: int | None) -> dict:
        cfg = self.config.train
        self.ddp.train()
        for module in self.frozen_modules:  # frozen layers keep their BatchNorm statistics too
            module.eval()
        total = self.steps_per_epoch
        prog = Progress(f"epoch {self.epoch + 1}/{cfg.epochs}", total, unit="steps", rate_unit="img", initial=self.batch,
                        enabled=cfg.progress and self.dist.is_main)  # fmt: skip
        done = 0
        t_start = time.perf_counter()
        t_last = t_start
        partial = self.partial
        for x, y in self.data.train.epoch_batches(self.epoch, start=self.batch):
            lr = self.schedule.apply(self.optimizer, self.global_step, self.base_lr)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x, soft = mix_batch(x, y, self.num_classes, cfg, self._mix_generator())
            with autocast_context(self.device, self.amp_dtype):
                logits = self.forward_model(x)
                loss = self._loss(logits.float(), y, soft)
            # one collective per step: the loss (finite check, logging) and any stop request
            stop_flag = 1.0 if self._stop else 0.0
            if self.dist.is_main and cfg.max_minutes is not None and self.train_time + (time.perf_counter() - t_start) >= cfg.max_minutes * 60:
                stop_flag = 2.0
            packed = distr.all_reduce_sum(torch.stack([loss.detach().double(), torch.tensor(stop_flag, dtype=torch.float64, device=loss.device)]), self.dist)
            loss_value = float(packed[0]) / self.dist.world_size
            if not math.isfinite(loss_value):
                self.train_time += time.perf_counter() - t_start
                prog.close()
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {self.epoch + 1}, batch {self.batch} (lr {lr:.4g}); stopped. "
                    f"The last good checkpoint in {self.run_dir} is kept. Try a lower --lr, --grad-clip 1.0, or --precision fp32."
                )
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            n = y.shape[0]
            partial["loss_sum"] += loss_value * n
            partial["seen"] += n
            if soft is None:
                partial["correct"] += int((logits.detach().argmax(1) == y).sum())
                partial["labelled"] += n
            self.batch += 1
            self.global_step += 1
            done += 1
            now = time.perf_counter()
            partial["time"] += now - t_last
            t_last = now
            prog.update(1, items=n * self.dist.world_size, loss=partial["loss_sum"] / max(1, partial["seen"]), lr=lr)
            if packed[1] >= 2.0:
                self.train_time += now - t_start
                prog.close()
                return {"stopped": "time budget", "steps": done, "message": f"max_minutes={cfg.max_minutes} reached"}
            if packed[1] >= 1.0:
                self.train_time += now - t_start
                prog.close()
                return {"stopped": "interrupted", "steps": done, "message": f"{self._stop or 'signal'} received"}
            if max_steps is not None and done >= max_steps:
                self.train_time += now - t_start
                prog.close()
                return {"stopped": "paused", "steps": done, "message": f"max_steps={max_steps} reached"}
        self.train_time += time.perf_counter() - t_start
        prog.close()
        return {"stopped": None, "steps": done}

    def _end_epoch(self) -> None:
        cfg = self.config.train
        partial = self.partial
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": partial["loss_sum"] / max(1, partial["seen"]),
            "train_acc": 100.0 * partial["correct"] / partial["labelled"] if partial["labelled"] else None,
            "images_per_s": partial["seen"] * self.dist.world_size / partial["time"] if partial["time"] > 0 else None,
            "epoch_s": partial["time"],
            "elapsed_s": self.train_time,
        }
        last_epoch = self.epoch + 1 == cfg.epochs
        is_best = False
        if (self.epoch + 1) % cfg.eval_every == 0 or last_epoch:
            result = self.validate()
            record.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
            if self.best_top1 is None or result.top1 > self.best_top1:
                self.best_top1 = result.top1
                is_best = True
        record["wall_s"] = self._wall_now()
        self.history.append(record)
        self.epoch += 1
        self.batch = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "labelled": 0, "time": 0.0}
        if self.dist.is_main and cfg.progress:
            val = f", val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}%" if "val_top1" in record else ""
            ips = record["images_per_s"]
            print(
                f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}{val}, "
                f"{ips:.0f} img/s, {format_duration(self.train_time)} elapsed" if ips else f"epoch {record['epoch']} done",
                file=sys.stderr,
                flush=True,
            )
        self._save(best=is_best)
        self._write_metrics()
        self._write_run_json("running")

    def validate(self) -> EvalResult:
        model = self.ema.module if self.ema else self.model
        return evaluate(model, self.data.val, self.num_classes, classes=self.classes, device=self.device,
                        amp_dtype=self.amp_dtype, channels_last=self.config.train.channels_last, dist_info=self.dist)  # fmt: skip


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def freeze_layers(model: nn.Module, freeze: str) -> list[nn.Module]:
    """Stop gradients to the backbone (``'backbone'``: all but the classifier) or to the stem and every
    stage up to and including ``freeze`` (e.g. ``'stages.2'``); returns the frozen modules."""
    stage_names = [f"stages.{i}" for i in range(len(getattr(model, "stages", [])))]
    if freeze == "backbone":
        frozen = [m for n, m in model.named_children() if n != "classifier"]
    elif freeze in stage_names:
        last = stage_names.index(freeze)
        frozen = [model.stem, *list(model.stages)[: last + 1]]
    elif freeze == "stem" and hasattr(model, "stem"):
        frozen = [model.stem]
    else:
        raise ValueError(f"freeze must be 'backbone', 'stem' or one of {', '.join(stage_names)}, got {freeze!r}")
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def split_options(options: dict[str, Any], *, parse_strings: bool = True) -> tuple[dict, dict, dict]:
    """Sort flat keyword options into (data, train, model knobs) by the dataclasses' field names.

    ``parse_strings`` (the command line's case: every value is text) parses data and training
    values by their field's type, '0.1' -> 0.1; the configs themselves take typed values only.
    Knobs are left as they are (the model's own parser types them).
    """
    data_fields, train_fields = field_types(DataConfig), field_types(TrainConfig)
    data, train, knobs = {}, {}, {}
    for key, value in options.items():
        if key in train_fields:  # also channels_last, a data field too: the trainer sets it for model and batches alike
            train[key] = coerce(key, value, train_fields[key], parse_strings=True) if parse_strings else value
        elif key in data_fields:
            data[key] = coerce(key, value, data_fields[key], parse_strings=True) if parse_strings else value
        else:
            knobs[key] = value
    return data, train, knobs


def train(model: str, data: str | os.PathLike, *, config: str | os.PathLike | dict | None = None, **options: Any) -> TrainResult:
    """Train a zoo model: ``smallnets.train('mobilenet_v2', 'images/', epochs=10, width_mult=0.5, cifar=True)``.

    Keyword options are fields of :class:`DataConfig` and :class:`TrainConfig`; any other keyword
    is a knob of the model. ``config`` (a JSON/TOML file or a dict with model/data/train sections)
    gives the starting values, which the keywords override.
    """
    from smallnets.training.config import load_config_file

    raw = {} if config is None else (dict(config) if isinstance(config, dict) else load_config_file(config))
    raw = {k: dict(v) for k, v in raw.items()} if raw else {}
    data_opts, train_opts, knobs = split_options(options, parse_strings=False)  # Python values are typed already
    raw.setdefault("model", {}).update({"name": model, **knobs})
    raw.setdefault("data", {}).update({"path": os.fspath(data), **data_opts})
    raw.setdefault("train", {}).update(train_opts)
    run_config = RunConfig.from_dict(raw)
    return Trainer(run_config).fit()


__all__ = ["ModelConfig", "RunConfig", "TrainConfig", "Trainer", "TrainResult", "TrainingDiverged", "build_dataclass", "train"]
