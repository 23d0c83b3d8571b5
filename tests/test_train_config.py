"""Run configuration: files, overrides, unknown keys and types; optimizer groups; schedules; EMA; mixing."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import smallnets
from smallnets.data import DataConfig
from smallnets.training.config import RunConfig, TrainConfig, build_dataclass, check_train_config, load_config_file
from smallnets.training.config import split_options
from smallnets.training.ema import ModelEMA
from smallnets.training.mixing import mix_batch
from smallnets.training.optim import Schedule, build_optimizer, param_groups


def test_toml_file_sections_and_knobs(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "mobilenet_v2"\nwidth_mult = 0.5\ncifar = true\n[data]\npath = "x"\nbatch_size = 64\n[train]\nepochs = 3\noptimizer = "adamw"\nbetas = [0.9, 0.99]\n')
    cfg = RunConfig.from_dict(load_config_file(path))
    assert cfg.model.name == "mobilenet_v2" and cfg.model.knobs == {"width_mult": 0.5, "cifar": True}
    assert cfg.data.batch_size == 64 and cfg.train.epochs == 3 and cfg.train.betas == (0.9, 0.99)
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"epoch": 3}, "unknown key 'epoch' in config [train]; did you mean 'epochs'"),
        ("train", {"epochs": "three"}, "epochs must be an integer, got 'three'"),
        ("train", {"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ("train", {"optimizer": "adam"}, "optimizer must be one of 'sgd', 'adamw', 'rmsprop'; got 'adam'"),
        ("train", {"nesterov": "maybe"}, "nesterov must be true or false, got 'maybe'"),
        ("train", {"label_smoothing": 1.5}, "label_smoothing must be in [0.0, 1.0), got 1.5"),
        ("data", {"path": "x", "batch_sise": 3}, "unknown key 'batch_sise' in config [data]; did you mean 'batch_size'"),
    ],
)
def test_bad_config_is_refused_with_key_rule_and_value(section, values, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_dict({"model": {"name": "mobilenet_v2"}, "data": {"path": "x"}, section: values})
    assert message in str(err.value)


def test_unknown_section_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="unknown section 'trian'.*did you mean 'train'"):
        RunConfig.from_dict({"trian": {}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_config_file(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")


def test_strings_from_the_command_line_are_typed():
    # the command line hands every value over as a string: split_options parses them by field type
    data, train, knobs = split_options({"epochs": "5", "lr": "0.05", "ema": "true", "grad_clip": "none", "betas": "0.8,0.9",
                                        "batch_size": "16", "mean": "0.5,0.5,0.5", "std": "0.25 0.25 0.25", "width_mult": "0.5"})  # fmt: skip
    cfg = build_dataclass(TrainConfig, train, where="flags")
    assert (cfg.epochs, cfg.lr, cfg.ema, cfg.grad_clip, cfg.betas) == (5, 0.05, True, None, (0.8, 0.9))
    assert data == {"batch_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    assert knobs == {"width_mult": "0.5"}  # knobs are typed by the model's own parser (cli.parse_value)
    with pytest.raises(ValueError, match="lr must be a finite number, got nan"):
        split_options({"lr": "nan"})
    with pytest.raises(ValueError, match="epochs must be an integer, got '2.5'"):
        split_options({"epochs": "2.5"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": -1}, "epochs must be an integer >= 1, got -1"),
        ({"epochs": "3"}, "epochs must be an integer, got '3'"),
        ({"epochs": 3.0}, "epochs must be an integer, got 3.0"),
        ({"epochs": True}, "epochs must be an integer, got True"),
        ({"lr": -1}, "lr must be > 0, got -1"),
        ({"lr": "0.1"}, "lr must be a number, got '0.1'"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"momentum": float("inf")}, "momentum must be a finite number, got inf"),
        ({"warmup_epochs": 40}, "warmup_epochs must be in [0.0, 30.0], got 40.0"),
        ({"ema": "yes"}, "ema must be true or false, got 'yes'"),
        ({"ema": 1}, "ema must be true or false, got 1"),
        ({"optimizer": "adam"}, "optimizer must be one of 'sgd', 'adamw', 'rmsprop'; got 'adam'"),
        ({"schedule": 3}, "schedule must be a string, got 3"),
        ({"betas": (0.9,)}, "betas must be 2 values, got (0.9,)"),
        ({"betas": (0.9, "0.99")}, "betas must be a number, got '0.99'"),
        ({"betas": (0.9, 1.0)}, "betas must be in [0.0, 1.0), got 1.0"),
        ({"threads": 0}, "threads must be an integer >= 1, got 0"),
        ({"max_minutes": float("inf")}, "max_minutes must be a finite number, got inf"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ({"device": "cudax"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'cudax'"),
        ({"out": None}, "out must be a string, got None"),
        ({"freeze": "backbone"}, "freeze, backbone_lr_scale and pretrained_format apply to fine-tuning"),
    ],
)
def test_train_config_validates_itself(values, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**values)
    assert message in str(err.value)


def test_train_config_normalises_numbers_and_keeps_valid_values():
    cfg = TrainConfig(epochs=3, lr=1, warmup_epochs=1, betas=[0.9, 0.99], device="cuda:1", max_minutes=2)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and isinstance(cfg.warmup_epochs, float)
    assert cfg.betas == (0.9, 0.99) and cfg.max_minutes == 2.0 and isinstance(cfg.max_minutes, float)
    assert TrainConfig() == TrainConfig(**{f: getattr(TrainConfig(), f) for f in TrainConfig.__dataclass_fields__})
    cfg = TrainConfig()
    cfg.epochs = "3"  # a config edited after construction is checked again where it is used
    with pytest.raises(ValueError, match="epochs must be an integer, got '3'"):
        check_train_config(cfg)


def test_config_files_refuse_strings_for_numbers(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "mobilenet_v2"\n[data]\npath = "x"\n[train]\nlr = "0.1"\n')
    with pytest.raises(ValueError, match="lr must be a number, got '0.1'"):
        RunConfig.from_dict(load_config_file(path))
    path.write_text('[model]\nname = "mobilenet_v2"\n[data]\npath = "x"\nbatch_size = "64"\n')
    with pytest.raises(ValueError, match="batch_size must be an integer, got '64'"):
        RunConfig.from_dict(load_config_file(path))
    path.write_text('[model]\nname = "mobilenet_v2"\n[data]\npath = "x"\n[train]\nema = "true"\n')
    with pytest.raises(ValueError, match="ema must be true or false, got 'true'"):
        RunConfig.from_dict(load_config_file(path))
    path.write_text('[model]\nname = "mobilenet_v2"\n[data]\npath = "x"\n[train]\nepochs = 3\nlr = 1\nwarmup_epochs = 1\n')
    cfg = RunConfig.from_dict(load_config_file(path))  # an integer is a number too
    assert cfg.train.lr == 1.0 and cfg.train.warmup_epochs == 1.0 and cfg.train.epochs == 3
    with pytest.raises(ValueError, match="lr must be a number, got '0.1'"):
        smallnets.train("mobilenet_v1", "x", lr="0.1")  # the Python API is typed as well


def test_data_config_refuses_non_finite_normalisation():
    with pytest.raises(ValueError, match=r"mean must be finite numbers \(no nan or inf\), got \(nan, 0.5, 0.5\)"):
        DataConfig(path="x", mean=(float("nan"), 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"std must be finite numbers \(no nan or inf\), got \(inf, 0.5, 0.5\)"):
        DataConfig(path="x", mean=(0.5, 0.5, 0.5), std=(float("inf"), 0.5, 0.5))


def test_weight_decay_skips_norm_bias_and_optionally_depthwise():
    model = smallnets.create_model("mobilenet_v1", width_mult=0.25, num_classes=10, cifar=True)
    groups = param_groups(model, 1e-4)
    decayed, skipped = groups[0]["names"], groups[1]["names"]
    assert all(not n.endswith("bias") and ".bn." not in n for n in decayed)
    assert any(".dw.conv.weight" in n for n in decayed)
    assert any(".bn." in n for n in skipped) and "classifier.fc.bias" in skipped
    groups = param_groups(model, 1e-4, decay_depthwise=False)
    assert not any(".dw.conv.weight" in n for n in groups[0]["names"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = build_optimizer(model, TrainConfig(optimizer="rmsprop"), lr=0.01)
    assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["eps"] == 1e-3


def test_schedules():
    cfg = TrainConfig(epochs=10, warmup_epochs=1, warmup_factor=0.1, schedule="cosine", min_lr=0.0)
    s = Schedule(cfg, steps_per_epoch=10)
    assert s.factor(0, 1.0) == pytest.approx(0.1)
    assert s.factor(5, 1.0) == pytest.approx(0.55)
    assert s.factor(10, 1.0) == pytest.approx(1.0)
    assert s.factor(55, 1.0) == pytest.approx(0.5)
    assert s.factor(100, 1.0) == pytest.approx(0.0, abs=1e-12)
    step = Schedule(TrainConfig(epochs=10, schedule="step", step_epochs=3, gamma=0.1), 10)
    assert [round(step.factor(e * 10, 1.0), 6) for e in (0, 2, 3, 6, 9)] == [1.0, 1.0, 0.1, 0.01, 0.001]
    exp = Schedule(TrainConfig(epochs=10, schedule="exponential", decay_rate=0.97, decay_epochs=2.4), 10)
    assert exp.factor(24, 1.0) == pytest.approx(0.97) and exp.factor(48, 1.0) == pytest.approx(0.97**2)


def test_ema_tracks_weights_and_copies_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    before = ema.module[0].weight.clone()
    ema.update(model)  # first update: decay capped at 2/11
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, before * d + model[0].weight * (1 - d))
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)


def test_mixup_and_cutmix_targets_are_seeded_and_sum_to_one():
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 4
    for cfg in (TrainConfig(mixup=0.2), TrainConfig(cutmix=1.0), TrainConfig(mixup=0.2, cutmix=1.0)):
        a = mix_batch(x, y, 4, cfg, torch.Generator().manual_seed(3))
        b = mix_batch(x, y, 4, cfg, torch.Generator().manual_seed(3))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.allclose(a[1].sum(1), torch.ones(8))
        assert not torch.equal(a[0], x)
    same, targets = mix_batch(x, y, 4, TrainConfig(), torch.Generator())
    assert same is x and targets is None
