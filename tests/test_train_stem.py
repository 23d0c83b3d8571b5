"""Small images get the small-input (CIFAR) stem unless the user or the pretrained weights say otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallnets.training import RunConfig, Trainer
from test_train import make_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)


def config(data: Path, out: Path, *, knobs: dict | None = None, data_opts: dict | None = None, **train) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"name": "mobilenet_v1", "width_mult": 0.25, **(knobs or {})},
        "data": {"path": str(data), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(out / "cache"), **(data_opts or {})},
        "train": {"epochs": 1, "lr": 0.05, "precision": "fp32", "progress": False, "out": str(out), **train},
    })  # fmt: skip


def test_small_images_get_the_small_input_stem_and_the_first_line_says_so(images, tmp_path, capfd):
    trainer = Trainer(config(images, tmp_path, name="auto", progress=True))
    assert trainer.model_config["knobs"]["cifar"] is True
    trainer.fit(max_steps=1)
    first = next(line for line in capfd.readouterr().err.splitlines() if line.startswith("training "))
    assert first.startswith("training mobilenet_v1 (small-input stem, cifar=True, for 16 px images; cifar=False for the ImageNet stem) on ")
    saved = json.loads((trainer.run_dir / "config.json").read_text())
    assert saved["model"]["cifar"] is True
    assert saved["resolved"]["chosen_knobs"] == {"cifar": True, "why": "16 px images; no cifar given and no pretrained weights"}
    # a resume follows the recorded config: the same model, and nothing chosen again
    resumed = Trainer.resume(trainer.run_dir)
    assert resumed.model_config["knobs"]["cifar"] is True and "chosen_knobs" not in resumed.resolved_config()["resolved"]
    resumed._release()


def test_an_explicit_choice_or_large_images_keep_the_imagenet_stem(images, tmp_path):
    explicit = Trainer(config(images, tmp_path, name="explicit", knobs={"cifar": False}))
    assert explicit.model_config["knobs"]["cifar"] is False and "chosen_knobs" not in explicit.resolved_config()["resolved"]
    large = Trainer(config(images, tmp_path, name="large", data_opts={"image_size": 72}))
    assert large.model_config["knobs"]["cifar"] is False


def test_pretrained_weights_with_the_imagenet_stem_warn_on_small_images(images, tmp_path):
    source = Trainer(config(images, tmp_path, name="source", knobs={"cifar": False})).fit().run_dir
    with pytest.warns(UserWarning, match=r"mobilenet_v1 keeps the ImageNet stem its pretrained weights need: at 16 px its last "
                                         r"feature map is 1x1 \(stride 32\); --image-size 96 or more usually trains better"):
        tuned = Trainer(config(images, tmp_path, name="tuned", pretrained=str(source)))
    assert tuned.model_config["knobs"]["cifar"] is False
