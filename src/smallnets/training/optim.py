"""Optimizers and learning-rate schedules for the trainer (EMA: ema.py; mixup / cutmix: mixing.py).

Parameter groups follow common practice for small networks: no weight decay on BatchNorm
parameters and biases, and optionally none on depthwise kernels (MobileNetV1 Section 4: "it was
important to put very little or no weight decay (l2 regularization) on the depthwise filters
since there are so few parameters in them").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smallnets.training.config import TrainConfig

# Reference learning rates for a global batch of 256 (linear scaling rule, Goyal et al. 2017).
BASE_LR = {"sgd": 0.1, "adamw": 1e-3, "rmsprop": 0.016}  # rmsprop: EfficientNet's 0.256 at batch 4096
DEFAULT_WD = {"sgd": 5e-4, "adamw": 0.05, "rmsprop": 1e-5}
DEFAULT_EPS = {"adamw": 1e-8, "rmsprop": 1e-3}


def resolved_lr(cfg: TrainConfig, global_batch: int) -> float:
    return cfg.lr if cfg.lr is not None else BASE_LR[cfg.optimizer] * global_batch / 256


def param_groups(model: nn.Module, weight_decay: float, *, decay_norm_and_bias: bool = False, decay_depthwise: bool = True) -> list[dict]:
    """Split parameters into decayed and not-decayed groups (names kept for inspection)."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
            is_bias = pname == "bias"
            is_depthwise = isinstance(module, nn.Conv2d) and module.groups == module.in_channels and module.groups > 1 and pname == "weight"
            skip = ((is_norm or is_bias) and not decay_norm_and_bias) or (is_depthwise and not decay_depthwise)
            (no_decay if skip else decay).append((f"{module_name}.{pname}".lstrip("."), p))
    groups = []
    if decay:
        groups.append({"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]})
    if no_decay:
        groups.append({"params": [p for _, p in no_decay], "weight_decay": 0.0, "names": [n for n, _ in no_decay]})
    return groups


def split_head(groups: list[dict], head_prefix: str, backbone_lr_scale: float) -> list[dict]:
    """Each group split into pretrained layers (``lr_scale = backbone_lr_scale``) and the new head (1.0)."""
    if backbone_lr_scale == 1.0:
        return groups
    out = []
    for g in groups:
        for is_head in (False, True):
            pairs = [(n, p) for n, p in zip(g["names"], g["params"]) if (n == head_prefix or n.startswith(head_prefix + ".")) == is_head]
            if pairs:
                out.append({**g, "params": [p for _, p in pairs], "names": [n for n, _ in pairs], "lr_scale": 1.0 if is_head else backbone_lr_scale})
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    wd = cfg.weight_decay if cfg.weight_decay is not None else DEFAULT_WD[cfg.optimizer]
    groups = param_groups(model, wd, decay_norm_and_bias=cfg.decay_norm_and_bias, decay_depthwise=cfg.decay_depthwise)
    groups = split_head(groups, "classifier", cfg.backbone_lr_scale)
    if not groups:
        raise ValueError("no trainable parameters: freeze leaves nothing to train")
    for g in groups:
        g.pop("names")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        eps = cfg.eps if cfg.eps is not None else DEFAULT_EPS["adamw"]
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=eps)
    eps = cfg.eps if cfg.eps is not None else DEFAULT_EPS["rmsprop"]
    return torch.optim.RMSprop(groups, lr=lr, alpha=cfg.rmsprop_alpha, eps=eps, momentum=cfg.momentum)


class Schedule:
    """Learning-rate factor as a pure function of the optimizer step: warm-up, then the decay.

    Being a function of the step alone (no hidden state), it resumes exactly from a step count.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.total = cfg.epochs * steps_per_epoch
        self.warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(self, step: int, base_lr: float) -> float:
        cfg = self.cfg
        if step < self.warmup:
            return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / self.warmup
        epoch = step / self.steps_per_epoch
        if cfg.schedule == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
            floor = cfg.min_lr / base_lr
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if cfg.schedule == "step":
            return cfg.gamma ** math.floor(epoch / cfg.step_epochs)
        if cfg.schedule == "exponential":
            return cfg.decay_rate ** math.floor(epoch / cfg.decay_epochs)
        return 1.0

    def apply(self, optimizer: torch.optim.Optimizer, step: int, base_lr: float) -> float:
        lr = base_lr * self.factor(step, base_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr
