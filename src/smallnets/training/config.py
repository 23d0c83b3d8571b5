"""Typed run configuration (model, data, train), loadable from JSON/TOML files and CLI flags.

A run is described by three dataclasses, one per concern. Files hold the same three sections::

    [model]
    name = "mobilenet_v2"
    width_mult = 0.5         # every other key of [model] is a knob of the model
    cifar = true

    [data]
    path = "cifar10-train-jpg.tar.gz"

    [train]
    epochs = 30
    optimizer = "sgd"

Unknown keys and wrong types are refused with the key, the rule and the value. Each dataclass
checks itself when constructed (type, range, finiteness, choices), from Python, a file or the
command line alike; an integer counts as a number, a string never does (only the command line's
text is parsed, by ``split_options``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallnets._checks import check_choice, check_int, check_positive, check_range, suggest
from smallnets.data import DataConfig

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "exponential", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ModelConfig:
    name: str = ""  # a zoo name, see `smallnets list`
    knobs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of create_model
    # an architecture as a value (ArchSpec.to_dict(): a hand-edited or pruned model); when given it
    # is what is built, and name / knobs only say which zoo entry it came from
    spec: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"model.name must be a string, got {self.name!r}")
        if not isinstance(self.knobs, dict) or not all(isinstance(k, str) for k in self.knobs):
            raise ValueError(f"model knobs must be a mapping of knob names to values, got {self.knobs!r}")
        if self.spec is not None:
            from smallnets.arch.spec import ArchSpec

            if not isinstance(self.spec, dict):
                raise ValueError(f"model.spec must be a mapping (ArchSpec.to_dict()), got {type(self.spec).__name__}")
            ArchSpec.from_dict(self.spec)  # a wrong spec fails here, naming the field

    def to_dict(self) -> dict:
        """The [model] section: name, every knob, and the spec when there is one."""
        return {"name": self.name, **self.knobs, **({"spec": self.spec} if self.spec is not None else {})}


@dataclass
class TrainConfig:
    epochs: int = 30
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw | rmsprop
    lr: float | None = None  # peak learning rate; None: the optimizer's default scaled by global batch
    momentum: float = 0.9  # sgd momentum, rmsprop momentum
    nesterov: bool = True
    weight_decay: float | None = None  # None: 5e-4 sgd, 0.05 adamw, 1e-5 rmsprop
    decay_norm_and_bias: bool = False  # weight decay on BatchNorm and bias parameters too
    decay_depthwise: bool = True  # False: no decay on depthwise kernels (MobileNetV1 Section 4)
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    rmsprop_alpha: float = 0.9  # rmsprop smoothing (EfficientNet: decay 0.9)
    eps: float | None = None  # None: 1e-8 adamw, 1e-3 rmsprop (TensorFlow's convention)
    schedule: str = "cosine"  # cosine | step | exponential | constant (after warm-up)
    warmup_epochs: float = 0.0  # linear warm-up from warmup_factor * lr
    warmup_factor: float = 0.1
    min_lr: float = 0.0  # cosine floor
    step_epochs: float = 30.0  # step schedule: multiply by gamma every step_epochs
    gamma: float = 0.1  # step decay factor
    decay_rate: float = 0.97  # exponential: lr *= decay_rate every decay_epochs (EfficientNet: 0.97 / 2.4)
    decay_epochs: float = 2.4
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) mixing; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) box mixing; 0 = off (both on: one of them per batch)
    mix_prob: float = 1.0  # share of batches mixed when mixup or cutmix is on
    ema: bool = False  # keep an exponential moving average of the weights, validate and save it
    ema_decay: float = 0.999  # per optimizer step
    grad_clip: float | None = None  # max global L2 norm of gradients
    precision: str = "auto"  # auto (bf16 where the device runs it fast, else fp32) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    fp32_strided_depthwise: bool = True  # CPU bf16: strided depthwise convs in fp32 (5-15x faster backward; smallnets.fast_cpu)
    sync_bn: bool = False  # SyncBatchNorm across processes under torchrun
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # intra-op CPU threads; None: torch's default
    max_minutes: float | None = None  # stop (and save) after this much training time
    eval_every: int = 1  # validate every N epochs (and always after the last)
    out: str = "runs"  # parent folder of run directories
    name: str | None = None  # run directory name inside out (one folder, no '/'); None: MODEL-YYYYmmdd-HHMMSS
    progress: bool = True  # progress bar on stderr
    # transfer learning
    pretrained: str | None = None  # torchvision / timm checkpoint (file, https URL, FORMAT=PATH), or a smallnets run / weights file
    pretrained_format: str | None = None  # e.g. timm:tf_efficientnet_b0 (default: detected)
    freeze: str | None = None  # "backbone" (linear probe), or a stage ("stages.2"): it and all before it
    backbone_lr_scale: float = 1.0  # learning rate of the pretrained layers relative to the new classifier
    # knowledge distillation (Hinton et al. 2015): loss = kd_weight * T^2 * KL + (1 - kd_weight) * label loss
    teacher: str | None = None  # a run directory or a smallnets .safetensors weights file (with its sidecar)
    kd_weight: float = 0.5  # share of the KL term (alpha), in [0, 1]; 1: the teacher's soft targets alone
    kd_temperature: float = 4.0  # softmax temperature T of both distributions, > 0

    def __post_init__(self) -> None:
        # every field against its annotation (an integer is a number too: 1 -> 1.0), then the rules
        for name, tp in field_types(TrainConfig).items():
            setattr(self, name, coerce(name, getattr(self, name), tp))
        _check_train_values(self)


def check_train_config(cfg: TrainConfig) -> None:
    """Validate ``cfg`` again (a dataclass can be edited after construction); changes nothing."""
    for name, tp in field_types(TrainConfig).items():
        coerce(name, getattr(cfg, name), tp)
    _check_train_values(cfg)


def _check_train_values(cfg: TrainConfig) -> None:
    check_int("epochs", cfg.epochs, 1)
    check_range("backbone_lr_scale", cfg.backbone_lr_scale, 0.0, 1e3)
    if (cfg.freeze is not None or cfg.backbone_lr_scale != 1.0 or cfg.pretrained_format is not None) and not cfg.pretrained:
        raise ValueError("freeze, backbone_lr_scale and pretrained_format apply to fine-tuning: give pretrained=SOURCE too")
    check_range("kd_weight", cfg.kd_weight, 0, 1)
    check_positive("kd_temperature", cfg.kd_temperature)
    if cfg.teacher is None and (cfg.kd_weight != 0.5 or cfg.kd_temperature != 4.0):
        raise ValueError(f"kd_weight and kd_temperature apply to distillation: give teacher=RUN_OR_WEIGHTS too "
                         f"(got kd_weight={cfg.kd_weight!r}, kd_temperature={cfg.kd_temperature!r} without a teacher)")  # fmt: skip
    if cfg.teacher is not None and not cfg.teacher:
        raise ValueError("teacher must be a run directory or a smallnets .safetensors weights file, got ''")
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("schedule", cfg.schedule, SCHEDULES)
    check_choice("precision", cfg.precision, PRECISIONS)
    if cfg.lr is not None:
        check_positive("lr", cfg.lr)
    if cfg.weight_decay is not None:
        check_range("weight_decay", cfg.weight_decay, 0.0, 1.0)
    check_range("momentum", cfg.momentum, 0.0, 1.0, high_open=True)
    check_range("label_smoothing", cfg.label_smoothing, 0.0, 1.0, high_open=True)
    check_range("warmup_epochs", cfg.warmup_epochs, 0.0, float(cfg.epochs))
    check_range("warmup_factor", cfg.warmup_factor, 0.0, 1.0)
    check_range("min_lr", cfg.min_lr, 0.0, float("inf"))
    check_positive("step_epochs", cfg.step_epochs)
    check_range("gamma", cfg.gamma, 0.0, 1.0, low_open=True)
    check_range("decay_rate", cfg.decay_rate, 0.0, 1.0, low_open=True)
    check_positive("decay_epochs", cfg.decay_epochs)
    check_range("mixup", cfg.mixup, 0.0, float("inf"))
    check_range("cutmix", cfg.cutmix, 0.0, float("inf"))
    check_range("mix_prob", cfg.mix_prob, 0.0, 1.0)
    check_range("ema_decay", cfg.ema_decay, 0.0, 1.0, high_open=True)
    if cfg.grad_clip is not None:
        check_positive("grad_clip", cfg.grad_clip)
    if cfg.max_minutes is not None:
        check_positive("max_minutes", cfg.max_minutes)
    if cfg.threads is not None:
        check_int("threads", cfg.threads, 1)
    check_int("eval_every", cfg.eval_every, 1)
    check_int("seed", cfg.seed, 0)
    if len(cfg.betas) != 2:
        raise ValueError(f"betas must be two numbers, got {cfg.betas!r}")
    for b in cfg.betas:
        check_range("betas", b, 0.0, 1.0, high_open=True)
    if cfg.eps is not None:
        check_positive("eps", cfg.eps)
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", cfg.device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {cfg.device!r}")
    if cfg.name is not None:
        check_run_name(cfg.name)


def check_run_name(name: str) -> None:
    """A run name is one folder inside ``out``: '../x', '/abs' or 'a/b' would write elsewhere."""
    if name in ("", ".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise ValueError(f"name must be a single folder name (the run directory inside out): not empty, '.' or '..', "
                         f"no '/', '\\' or NUL; got {name!r}")  # fmt: skip


@dataclass
class RunConfig:
    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, raw: dict, *, where: str = "config") -> RunConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping with sections model, data, train; got {type(raw).__name__}")
        # "resolved" is what a run directory's config.json adds for reading (lr, classes, ...):
        # such a file can be passed back as a config to repeat the run.
        unknown = set(raw) - {"model", "data", "train", "resolved"}
        if unknown:
            key = sorted(unknown)[0]
            raise ValueError(f"unknown section {key!r} in {where}{suggest(key, ['model', 'data', 'train'])} (sections: model, data, train)")
        model_raw = dict(raw.get("model") or {})
        model = ModelConfig(name=model_raw.pop("name", None) or "", spec=model_raw.pop("spec", None), knobs=model_raw)
        train = build_dataclass(TrainConfig, dict(raw.get("train") or {}), where=f"{where} [train]")
        data_raw = dict(raw.get("data") or {})
        if not data_raw.get("path"):
            raise ValueError(f"data path must be given in {where} (an image folder, a .tar/.tar.gz archive, 'cifar10' or 'cifar100'), got {data_raw.get('path')!r}")
        data = build_dataclass(DataConfig, data_raw, where=f"{where} [data]")
        return cls(model=model, data=data, train=train)


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or TOML run configuration into a plain dict (sections model, data, train)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            return tomllib.loads(text)
        if p.suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config file {str(p)!r} is not valid {p.suffix[1:].upper()}: {exc}") from None
    raise ValueError(f"config file must end in .json or .toml, got {str(p)!r}")


# --- typed construction -------------------------------------------------------------------------


@functools.cache
def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def build_dataclass(cls, values: dict, *, where: str, parse_strings: bool = False):
    """``cls(**values)`` with unknown keys and wrong types refused; values are checked, not guessed.

    ``parse_strings``: the values are command-line text ('0.1', 'true', 'none', '0.9,0.99'), parsed
    by each field's type. A file or a Python call gives typed values: a string is no number there.
    """
    types_ = field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types_:
            raise ValueError(f"unknown key {key!r} in {where}{suggest(key, types_)} (known: {', '.join(types_)})")
        kwargs[key] = coerce(key, value, types_[key], parse_strings=parse_strings)
    return cls(**kwargs)


def coerce(name: str, value: Any, tp: Any, *, parse_strings: bool = False) -> Any:
    """``value`` checked against the annotation ``tp``: an int is accepted as a float (and returned
    as one), a list as a tuple, nothing else is converted; floats must be finite. With
    ``parse_strings``, command-line strings are parsed first."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if type(None) in options and (value is None or (parse_strings and isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(name, value, option, parse_strings=parse_strings)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{name} must not be None")
    if origin is tuple:
        args = typing.get_args(tp)
        if parse_strings and isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{name} must be {len(args)} values, got {value!r}")
        return tuple(coerce(name, v, a, parse_strings=parse_strings) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if parse_strings and isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):  # never a bool; an int is a number too
        rule = "an integer" if tp is int else "a number"
        if parse_strings and isinstance(value, str):
            try:
                value = tp(value)
            except ValueError:
                raise ValueError(f"{name} must be {rule}, got {value!r}") from None
        accepted = (int,) if tp is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ValueError(f"{name} must be {rule}, got {value!r}")
        if tp is float:
            value = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


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
