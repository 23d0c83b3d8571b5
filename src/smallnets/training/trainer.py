"""The training loop: one process or many (torchrun + DistributedDataParallel), a model by name, by
spec or as an object, minimising a replaceable objective (objective.py), saving as it goes.

What the run directory holds, and how it is claimed and read back, is smallnets.rundir's. The
parts of a run live beside this file: the model (model_setup.py), optimizers and schedules
(optim.py), mixup / cutmix (mixing.py), EMA (ema.py), random states (rng.py), Ctrl-C handling
(signals.py), precision and threads (device.py), DDP (parallel.py), a distillation teacher
(teacher.py), step hooks (hooks.py).

Step hooks (``hooks=`` of :class:`Trainer` and ``Trainer.resume``) run inside the loop, on every
rank, with the unwrapped model (never the DDP or compiled wrapper). A hook is any object with any
subset of these methods; only those it has are called (:class:`smallnets.training.TrainHook`):

* ``start(model, total_steps)``: once per ``fit()``, before its first step (after a resume too,
  with the resumed weights in ``model``); ``total_steps`` = epochs x steps per epoch, the whole run's.
* ``after_backward(model, step)``: the gradients are ready and unscaled (after GradScaler.unscale_
  and gradient clipping, if any; under torchrun averaged over the ranks), before ``optimizer.step``.
* ``after_step(model, step)``: right after ``optimizer.step`` (also for a step fp16's GradScaler
  skipped), before the EMA update, so the EMA sees what the hook did.
* ``describe() -> dict``: recorded in config.json ("resolved" / "hooks") and run.json ("hooks").

``step`` is the 0-based global optimizer step (across epochs and resumes). A resume must be given
hooks of the same classes again, in the same order (as an objective of one's own).

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
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import smallnets
from smallnets import distributed as distr
from smallnets.checkpoint import load_state, save_state, save_weights
from smallnets.data import build_data
from smallnets.metrics import EvalResult, autocast_context, evaluate
from smallnets.fast_cpu import fp32_strided_depthwise
from smallnets.progress import Progress, format_duration
from smallnets.registry import model_info
from smallnets.rundir import RunDir
from smallnets.training import model_setup
from smallnets.training.config import ModelConfig, RunConfig, TrainConfig, check_train_config, split_options
from smallnets.training.device import AMP_DTYPES, cpu_threads, resolve_precision
from smallnets.training.ema import ModelEMA
from smallnets.training.hooks import Hooks
from smallnets.training.mixing import mix_batch, mix_generator
from smallnets.training.objective import Batch, CrossEntropy, describe
from smallnets.training.optim import Schedule, build_optimizer, resolved_lr
from smallnets.training.parallel import on_main, shard_record, weights_digest, wrap_model
from smallnets.training.rng import rng_state, seed_everything, set_rng_state
from smallnets.training.signals import StopRequests
from smallnets.training.teacher import announce, check_teacher_fits, distillation, load_teacher
from smallnets.zoo import create_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # finished | interrupted | time budget
    epochs_done: int
    best_top1: float | None
    last: dict[str, Any] | None  # the last epoch's metrics record


class Trainer:
    """Train a model on a data set; ``Trainer(config).fit()`` or ``Trainer.resume(run).fit()``.

    ``model``: a module built by smallnets (``create_model``, ``model_from_spec``: a hand-edited,
    pruned or otherwise changed architecture) with one output per class of the data, trained in
    place instead of the one ``config.model`` names (which must then be left empty); its spec goes
    into config.json, so the run resumes and its weights reload from the run's files alone.
    ``objective``: what is minimised, ``objective(logits, targets, batch) -> loss`` (see
    objective.py); default :class:`CrossEntropy` with ``config.train.label_smoothing``, or with
    ``config.train.teacher`` :class:`Distillation` from that teacher (``kd_weight``, ``kd_temperature``;
    an objective cannot be given beside it). ``hooks``: step hooks, see the module's docstring.

    ``config.train.threads`` holds while the trainer works (construction and ``fit()``); the
    caller's thread count is restored when either ends, by an error too.
    """

    def __init__(self, config: RunConfig, model: nn.Module | None = None, objective=None, *, hooks=(),
                 run_dir: str | Path | None = None, _resume_state: dict | None = None):  # fmt: skip
        if not isinstance(config, RunConfig):
            raise TypeError(f"config must be a RunConfig, got {type(config).__qualname__}")
        cfg = config.train
        check_train_config(cfg)
        config = self.config = self._with_model_record(config, model)
        if not config.data.path:
            raise ValueError("data must be given: a folder, a .tar/.tar.gz archive, 'cifar10' or 'cifar100'; got ''")
        if objective is not None and not callable(objective):
            raise TypeError(f"objective must be callable as objective(logits, targets, batch) -> loss, got {type(objective).__qualname__}")
        if objective is not None and cfg.teacher is not None:
            raise ValueError(f"teacher must not be given with an objective (got teacher={cfg.teacher!r} and a {type(objective).__qualname__}): "
                             "the config's teacher makes the objective Distillation; pass objective=Distillation(teacher, ...) alone instead")  # fmt: skip
        self.hooks = Hooks(hooks)
        self.objective = objective if objective is not None else CrossEntropy(cfg.label_smoothing)  # a teacher's replaces it in _setup
        self.dist, self.device = distr.init_distributed(cfg.device)
        if cfg.sync_bn and self.device.type != "cuda":
            raise ValueError(f"sync_bn needs CUDA devices (torch's SyncBatchNorm runs on GPUs only), got device {str(self.device)!r}")
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp_dtype = AMP_DTYPES[self.precision]
        self.name = model_setup.display_name(config.model)
        self.stops = StopRequests(announce=self.dist.is_main)
        with cpu_threads(cfg.threads):
            # every rank loads the teacher itself, before anything is written; and before seeding,
            # so that rebuilding it draws nothing from the student's random stream
            self._teacher = load_teacher(cfg.teacher, device=self.device) if cfg.teacher is not None else None
            self.teacher_record: dict | None = None
            seed_everything(cfg.seed + self.dist.rank)
            # the run directory is claimed before anything is read or written: of two runs with the
            # same name, the second fails here, having written nothing
            resume = _resume_state is not None
            self._previous_session: dict | None = None  # a resumed run whose last session was killed
            path = on_main(lambda: self._claim(run_dir, resume), self.dist)
            if not self.dist.is_main:
                self.rundir = RunDir(path)
            self.run_dir = self.rundir.path
            self._claimed = True  # on every rank (rank 0 holds the lock): fit() re-claims collectively
            try:
                self._setup(model, _resume_state)
            except BaseException:
                self.rundir.abandon()
                raise

    @staticmethod
    def _with_model_record(config: RunConfig, model: nn.Module | None) -> RunConfig:
        """The config with [model] describing what is trained: a given model's record, else as given (checked)."""
        if model is not None:
            if config.model != ModelConfig():
                raise ValueError(f"config.model must be left empty when a model object is given (the object is what is trained), "
                                 f"got {config.model.to_dict()!r:.200}")  # fmt: skip
            if config.train.pretrained:
                raise ValueError("pretrained must not be given with a model object: load the weights into the model first "
                                 "(smallnets.load_weights(path, model)), the trainer trains the object as it is")  # fmt: skip
            return dataclasses.replace(config, model=model_setup.record_of(model))
        if config.model.spec is None:
            if not config.model.name:
                raise ValueError("model name must be given (e.g. 'mobilenet_v2'), got ''")
            model_info(config.model.name)  # unknown names fail here, before any data is read
        elif config.train.pretrained:
            raise ValueError("pretrained must not be given with model.spec: a spec run starts from fresh weights")
        return config

    def _claim(self, run_dir, resume: bool) -> str:
        cfg = self.config.train
        if resume:
            self.rundir = RunDir(run_dir).claim()
            self._previous_session = self.rundir.tidy_after_previous_session()
        else:
            self.rundir = RunDir.create(run_dir, out=cfg.out, name=cfg.name, prefix=model_setup.run_name_prefix(self.config.model))
        return str(self.rundir.path)

    def _setup(self, given: nn.Module | None, _resume_state: dict | None) -> None:
        config, cfg = self.config, self.config.train
        if not self.dist.is_main:
            distr.barrier(self.dist)  # rank 0 downloads / decodes / extracts first; the rest hit its caches
        # a fine-tune normalises as the checkpoint was trained (unless mean / std are given); the
        # resolved values go into the run's config, which a resume follows as it is
        pretrained = None
        if cfg.pretrained:
            pretrained = model_setup.resolve_pretrained(cfg, loading=_resume_state is None, progress=cfg.progress and self.dist.is_main)
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
        if self._teacher is not None:
            self._setup_teacher(resuming=_resume_state is not None)
        self.pretrained_report: dict | None = None
        self.chosen_knobs: dict[str, Any] = {}  # knobs the trainer set because the user left them open
        self.model = self._build_model(given, pretrained)
        self.model_config = self.model.smallnets_config
        # what config.json records: a zoo run its resolved knobs, a spec run (or a given model) its spec
        self.model_record = config.model if config.model.spec is not None else ModelConfig(config.model.name, dict(self.model_config["knobs"]))
        self.frozen_modules = model_setup.freeze_layers(self.model, cfg.freeze) if cfg.freeze else []
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
        self.ddp, self.forward_model = wrap_model(self.model, self.dist, self.device, compile=cfg.compile)

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
        self._saved_position: tuple[int, int, int] | None = None  # (epoch, batch, step) of state.safetensors

        if _resume_state is not None:
            self._load_state(_resume_state)
        else:
            self._write_new_run_dir()

    def _setup_teacher(self, *, resuming: bool) -> None:
        """The distillation objective from config.train.teacher, checked against the data first."""
        config, cfg = self.config, self.config.train
        check_teacher_fits(self._teacher, self.classes, self.data.preprocessing.get("image_size"), config.data.path)
        if resuming:
            recorded = (self.rundir.read_config_dict().get("resolved") or {}).get("teacher") or {}
            now = self._teacher.meta.get("sha256")
            if recorded.get("sha256") and now and recorded["sha256"] != now:
                raise ValueError(f"teacher must be the weights the run started with to resume it: {self._teacher.file} has sha256 {now}, "
                                 f"config.json records {recorded['sha256']} ({recorded.get('file')})")  # fmt: skip
        self.objective, self.teacher_record = distillation(self._teacher, temperature=cfg.kd_temperature, weight=cfg.kd_weight,
                                                           label_smoothing=cfg.label_smoothing, student_preprocessing=self.data.preprocessing,
                                                           channels_last=cfg.channels_last)  # fmt: skip

    def _build_model(self, given: nn.Module | None, pretrained) -> nn.Module:
        config, cfg = self.config, self.config.train
        if given is not None or config.model.spec is not None:
            model = given if given is not None else model_setup.from_spec_record(config.model, where=f"{config.data.path} run config [model]")
            model_setup.check_fits_data(model, self.classes, config.data.path)
            return model
        size = self.data.preprocessing.get("image_size")
        knobs = dict(config.model.knobs)
        if pretrained is None:
            knobs, self.chosen_knobs = model_setup.choose_stem(config.model.name, knobs, size)
            return create_model(config.model.name, num_classes=self.num_classes, **knobs)
        model, self.pretrained_report = model_setup.pretrained_model(config.model.name, knobs, self.num_classes, cfg, *pretrained,
                                                                     announce=self.dist.is_main and cfg.progress)  # fmt: skip
        if self.dist.is_main:
            model_setup.warn_imagenet_stem(model, config.model.name, size)
        return model

    @classmethod
    def resume(cls, run_dir: str | Path, *, objective=None, hooks=(), **overrides: Any) -> Trainer:
        """Continue the run in ``run_dir`` from its state.safetensors.

        ``overrides`` may change settings that do not alter the results (progress, threads,
        max_minutes, epochs to extend a finished run); anything else is refused. A run trained with
        an objective of its own needs it again (``objective=``), and its hooks (``hooks=``, the same
        classes in the same order); the model and a config's teacher come from config.json.
        """
        run = RunDir(run_dir)
        if not run.state.is_file():
            raise FileNotFoundError(f"resume must name a run directory with {run.state.name}, got {str(run.path)!r} (no {run.state.name})")
        allowed = {"progress", "threads", "max_minutes", "epochs", "device", "out", "name"}
        for key in overrides:
            if key not in allowed:
                raise ValueError(f"resume overrides must be among {', '.join(sorted(allowed))} (others would change the results), got {key!r}")
        config = run.read_config(**overrides)
        resolved = run.read_config_dict().get("resolved") or {}
        default = "Distillation" if config.train.teacher is not None else describe(CrossEntropy(config.train.label_smoothing))["name"]
        recorded = (resolved.get("objective") or {}).get("name") or default
        given = describe(objective)["name"] if objective is not None else default
        if given != recorded:
            raise ValueError(f"objective must be the run's own to resume it: the run was trained with {recorded}, got {given}"
                             + ("; pass it again: Trainer.resume(run, objective=...)" if objective is None else ""))  # fmt: skip
        hooks = Hooks(hooks)
        recorded_hooks = [h.get("name") for h in resolved.get("hooks") or []]
        if hooks.names() != recorded_hooks:
            raise ValueError(f"hooks must be the run's own to resume it: the run was trained with [{', '.join(recorded_hooks)}], "
                             f"got [{', '.join(hooks.names())}]" + ("; pass them again: Trainer.resume(run, hooks=...)" if not hooks else ""))  # fmt: skip
        return cls(config, objective=objective, hooks=hooks.hooks, run_dir=run.path, _resume_state=load_state(run.state))

    # --- the run directory ------------------------------------------------------------------

    def _release(self) -> None:
        self._claimed = False
        self.rundir.release()

    def _write_new_run_dir(self) -> None:
        if self.dist.is_main:
            self.rundir.write_config(self.resolved_config())
            self.rundir.write_split(self.data.split_json())
        shards = distr.gather_objects(shard_record(self.data, self.dist.rank), self.dist)
        if self.dist.is_main:
            self.rundir.write_shards({"epoch": 0, "ranks": shards})
            self._write_run_json("running")
        self.rundir.keep()  # the directory is a run now: kept whatever happens next
        distr.barrier(self.dist)

    def weights_digest(self) -> str:
        """sha256 of this process's parameters: equal on every rank when DDP kept replicas in step."""
        return weights_digest(self.model)

    def resolved_config(self) -> dict:
        out = self.config.to_dict()
        out["model"] = self.model_record.to_dict()
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
        if not isinstance(self.objective, CrossEntropy):  # the default is not recorded: files as before
            out["resolved"]["objective"] = describe(self.objective)
        if self.teacher_record is not None:
            out["resolved"]["teacher"] = dict(self.teacher_record)
        if self.hooks:
            out["resolved"]["hooks"] = self.hooks.describe()
        return out

    def _write_run_json(self, status: str, message: str | None = None, *, position: tuple[int, int, int] | None = None) -> None:
        if not self.dist.is_main:
            return
        epoch, batch, step = position if position is not None else (self.epoch, self.batch, self.global_step)
        info = {
            "status": status,
            "message": message,
            "model": self.config.model.name or None,
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
        if self.hooks:
            info["hooks"] = self.hooks.describe()
        self.rundir.write_run_info(info)

    # --- state ----------------------------------------------------------------------------------

    def _state(self) -> dict:
        rng = distr.gather_objects(rng_state(self.device), self.dist)
        return {
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
        set_rng_state(state["rng"][self.dist.rank], self.device)
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
        with self.stops.saving_block():
            self._write_checkpoint(best=best)

    def _write_checkpoint(self, *, best: bool) -> None:
        state = self._state()  # every rank takes part (RNG gather)
        position = (self.epoch, self.batch, self.global_step)
        if not self.dist.is_main:
            self._saved_position = position
            return
        save_state(self.rundir.state, state)
        self._saved_position = position
        deploy = self.ema.module if self.ema else self.model
        extra = {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step, "run": str(self.run_dir),
                 "metrics": self.history[-1] if self.history else None, "ema": self.ema is not None}  # fmt: skip
        for path in (self.rundir.last, self.rundir.best) if best else (self.rundir.last,):
            save_weights(deploy, path, classes=self.classes, preprocessing=self.data.preprocessing, extra=extra)

    # --- the loop --------------------------------------------------------------------------------

    @property
    def _stop(self) -> str | None:
        """The signal asking this run to stop (SIGINT / SIGTERM), or None."""
        return self.stops.reason

    def _stem_note(self) -> str:
        if "cifar" not in self.chosen_knobs:
            return ""
        return f" (small-input stem, cifar=True, for {self.data.preprocessing['image_size']} px images; cifar=False for the ImageNet stem)"

    def _record_abort(self) -> None:
        if self._saved_position is None:
            message = "a second SIGINT stopped the run before its first checkpoint; start it again"
        else:
            e, b, _ = self._saved_position
            message = (f"a second SIGINT stopped the run; the last checkpoint (epoch {e} batch {b}) is complete: "
                       f"smallnets train --resume {self.run_dir} continues from it")  # fmt: skip
        self._write_run_json("interrupted", message, position=self._saved_position or (0, 0, 0))
        if self.dist.is_main and self.config.train.progress:
            print(message, file=sys.stderr, flush=True)

    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train until the configured epochs are done (or ``max_steps`` more optimizer steps, a
        signal, or the time budget), saving as it goes. Returns where the run stands."""
        with cpu_threads(self.config.train.threads), self.stops.installed():
            try:
                if not self._claimed:  # a second fit() of this trainer: its first gave the directory up at the end
                    on_main(lambda: str(self.rundir.claim().path), self.dist)
                    self._claimed = True
                status = self._run(max_steps)
            except TrainingDiverged as exc:
                self._write_run_json("diverged", str(exc))
                raise
            except KeyboardInterrupt:
                # a second Ctrl-C (or one outside a handler): record where the files stand, then let it through
                self.stops.aborting = True
                self._record_abort()
                raise
            finally:
                self._release()
        return TrainResult(self.run_dir, status, len(self.history), self.best_top1, self.history[-1] if self.history else None)

    def _run(self, max_steps: int | None) -> str:
        cfg = self.config.train
        steps_left = max_steps
        status = "finished"
        self._write_run_json("running")
        # wall-clock seconds of this run, validation and saving included, carried over a resume
        self._wall_t0 = time.perf_counter() - self._wall_offset
        if self.dist.is_main and cfg.progress:
            print(f"training {self.name}{self._stem_note()} on {self.data.num_train} images ({self.num_classes} classes, "
                  f"{self.data.pipeline} pipeline), validating on {self.data.num_val}; {self.steps_per_epoch} steps/epoch, "
                  f"batch {self.global_batch}, lr {self.base_lr:.4g}, {self.precision}, {self.device}, "
                  f"{self.dist.world_size} process(es); run: {self.run_dir}", file=sys.stderr, flush=True)  # fmt: skip
            if self.teacher_record is not None:
                print(announce(self.teacher_record, self.objective), file=sys.stderr, flush=True)
        self.hooks.call("start", self.model, cfg.epochs * self.steps_per_epoch)
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
            self.rundir.update_run_info(replica_weights_sha256=digests, replicas_identical=len(set(digests)) == 1)
        distr.barrier(self.dist)  # no process leaves (and tears down its group) while rank 0 still writes
        return status

    def _step_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits, loss, soft targets or None) of one batch: mixed, forwarded, scored by the objective."""
        cfg = self.config.train
        x, soft = mix_batch(x, y, self.num_classes, cfg, mix_generator(cfg.seed, self.dist.rank, self.epoch, self.batch))
        batch = Batch(inputs=x, labels=y, soft_targets=soft, epoch=self.epoch, step=self.global_step)
        detour = fp32_strided_depthwise() if cfg.fp32_strided_depthwise and self.device.type == "cpu" and not cfg.compile else nullcontext()
        with autocast_context(self.device, self.amp_dtype), detour:
            logits = self.forward_model(x)
            loss = self.objective(logits.float(), batch.targets, batch)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"objective must return a scalar loss tensor, got {type(loss).__qualname__}"
                            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))  # fmt: skip
        return logits, loss, soft

    def _train_epoch(self, max_steps: int | None) -> dict:
        cfg = self.config.train
        self.ddp.train()
        for module in self.frozen_modules:  # frozen layers keep their BatchNorm statistics too
            module.eval()
        prog = Progress(f"epoch {self.epoch + 1}/{cfg.epochs}", self.steps_per_epoch, unit="steps", rate_unit="img", initial=self.batch,
                        enabled=cfg.progress and self.dist.is_main)  # fmt: skip
        done = 0
        t_start = time.perf_counter()
        t_last = t_start
        partial = self.partial
        for x, y in self.data.train.epoch_batches(self.epoch, start=self.batch):
            lr = self.schedule.apply(self.optimizer, self.global_step, self.base_lr)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits, loss, soft = self._step_loss(x, y)
            # one collective per step: the loss (finite check, logging) and any stop request
            stop_flag = 1.0 if self.stops.reason else 0.0
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
            self._optimizer_step(loss, self.global_step)
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
            stopped = None
            if packed[1] >= 2.0:
                stopped = {"stopped": "time budget", "steps": done, "message": f"max_minutes={cfg.max_minutes} reached"}
            elif packed[1] >= 1.0:
                stopped = {"stopped": "interrupted", "steps": done, "message": f"{self.stops.reason or 'signal'} received"}
            elif max_steps is not None and done >= max_steps:
                stopped = {"stopped": "paused", "steps": done, "message": f"max_steps={max_steps} reached"}
            if stopped:
                self.train_time += now - t_start
                prog.close()
                return stopped
        self.train_time += time.perf_counter() - t_start
        prog.close()
        return {"stopped": None, "steps": done}

    def _optimizer_step(self, loss: torch.Tensor, step: int) -> None:
        """Backward, clipping, the update and the EMA, with the hooks between them (``step``: 0-based, global)."""
        grad_clip = self.config.train.grad_clip
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if grad_clip is not None or self.hooks.has("after_backward"):  # hooks see true gradients
                self.scaler.unscale_(self.optimizer)
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
            self.hooks.call("after_backward", self.model, step)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
            self.hooks.call("after_backward", self.model, step)
            self.optimizer.step()
        self.hooks.call("after_step", self.model, step)
        if self.ema is not None:
            self.ema.update(self.model)

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
            print(f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}{val}, "
                  f"{ips:.0f} img/s, {format_duration(self.train_time)} elapsed" if ips else f"epoch {record['epoch']} done",
                  file=sys.stderr, flush=True)  # fmt: skip
        self._save(best=is_best)
        if self.dist.is_main:
            self.rundir.write_metrics(self.history, title=f"{self.name} ({self.run_dir.name})")
        self._write_run_json("running")

    def validate(self) -> EvalResult:
        model = self.ema.module if self.ema else self.model
        return evaluate(model, self.data.val, self.num_classes, classes=self.classes, device=self.device,
                        amp_dtype=self.amp_dtype, channels_last=self.config.train.channels_last, dist_info=self.dist)  # fmt: skip


def train(model: str | nn.Module, data: str | os.PathLike, *, config: str | os.PathLike | dict | None = None, objective=None,
          hooks=(), **options: Any) -> TrainResult:  # fmt: skip
    """Train a model: ``smallnets.train('mobilenet_v2', 'images/', epochs=10, width_mult=0.5, cifar=True)``.

    ``model``: a zoo name, or a model object built by smallnets (``model_from_spec(spec)``; no knobs
    then). Keyword options are fields of :class:`DataConfig` and :class:`TrainConfig`; any other
    keyword is a knob of the model. ``config`` (a JSON/TOML file or a dict with model/data/train
    sections) gives the starting values, which the keywords override. ``objective``, ``hooks``: see
    :class:`Trainer`. Distillation: ``teacher='runs/big'`` (a run directory or weights file, as
    ``--teacher``), with ``kd_weight`` and ``kd_temperature``; a teacher module goes into
    ``objective=Distillation(teacher, ...)`` instead.
    """
    from smallnets.training.config import load_config_file

    if isinstance(options.get("teacher"), nn.Module):
        raise TypeError("teacher must be a run directory or a .safetensors weights file (a path, recorded so that the run resumes), "
                        "got a torch module; pass objective=Distillation(teacher, temperature=..., alpha=...) for a module")  # fmt: skip
    if isinstance(options.get("teacher"), os.PathLike):
        options["teacher"] = os.fspath(options["teacher"])

    raw = {} if config is None else (dict(config) if isinstance(config, dict) else load_config_file(config))
    raw = {k: dict(v) for k, v in raw.items()} if raw else {}
    data_opts, train_opts, knobs = split_options(options, parse_strings=False)  # Python values are typed already
    given = None
    if isinstance(model, nn.Module):
        if knobs or raw.get("model"):
            raise ValueError(f"model knobs apply to a zoo name; a model object is trained as it is, got {sorted(knobs or raw['model'])}")
        given, raw["model"] = model, {}
    else:
        raw.setdefault("model", {}).update({"name": model, **knobs})
    raw.setdefault("data", {}).update({"path": os.fspath(data), **data_opts})
    raw.setdefault("train", {}).update(train_opts)
    return Trainer(RunConfig.from_dict(raw), model=given, objective=objective, hooks=hooks).fit()


__all__ = ["ModelConfig", "RunConfig", "TrainConfig", "Trainer", "TrainResult", "TrainingDiverged", "train"]
