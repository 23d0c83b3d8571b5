"""Every registered model: builds, runs, learns (gradients everywhere), is deterministic in eval."""

from __future__ import annotations

import pytest
import torch

import smallnets
from smallnets.profiler import count_params

# Models above this many parameters (at 10 classes) run only with -m slow; the default run keeps
# a representative of every family.
SLOW_PARAMS = 15_000_000


def _zoo():
    params = []
    for name in smallnets.list_models():
        with torch.device("meta"):
            n = count_params(smallnets.create_model(name, num_classes=10))
        marks = [pytest.mark.slow] if n > SLOW_PARAMS else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def _small_input(name: str) -> tuple[int, int, int]:
    info = smallnets.model_info(name)
    # Smallest side that survives the network's downsampling (Xception's unpadded stem, 7x7 stems;
    # the 299- and 331-px Inception-style stems and reductions need 75 px).
    side = 32 if info.input_size[1] <= 32 else 96 if info.input_size[1] >= 299 else 64
    return (info.input_size[0], side, side)


@pytest.mark.parametrize("name", _zoo())
def test_forward_backward_deterministic(name):
    torch.manual_seed(0)
    # Stochastic depth can drop a whole branch for a batch of 2, zeroing its gradient by design.
    knobs = {"drop_path_rate": 0.0} if "drop_path_rate" in smallnets.model_info(name).knobs else {}
    model = smallnets.create_model(name, num_classes=7, **knobs)
    x = torch.randn(2, *_small_input(name))

    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient reached {missing[:5]}"
    assert all(p.grad.abs().sum() > 0 for p in model.parameters()), "some parameter got an all-zero gradient"

    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("name", _zoo())
def test_num_classes_and_in_chans(name):
    with torch.device("meta"):
        model = smallnets.create_model(name, num_classes=3, in_chans=1)
    c, h, w = smallnets.model_info(name).input_size
    out = model(torch.empty(1, 1, h, w, device="meta"))
    assert out.shape == (1, 3)
    assert model.smallnets_config == {
        "name": name,
        "num_classes": 3,
        "in_chans": 1,
        "knobs": dict(smallnets.model_info(name).knobs),
    }


@pytest.mark.parametrize("name", _zoo())
def test_forward_features_and_stages(name):
    """forward_features gives num_features channels; each stage's output feeds the next."""
    with torch.device("meta"):
        model = smallnets.create_model(name, num_classes=10)
    c, h, w = smallnets.model_info(name).input_size
    x = torch.empty(1, c, h, w, device="meta")
    feats = model.forward_features(x)
    assert feats.ndim == 4 and feats.shape[1] == model.num_features
    y = model.stem(x)
    for stage in model.stages:
        y = stage(y)
    assert model.neck(y).shape == feats.shape


@pytest.mark.parametrize("name", _zoo())
def test_cifar_stem_keeps_4x4(name):
    """cifar=True: a 32x32 image ends as a 4x4 map (total stride 8)."""
    info = smallnets.model_info(name)
    if "cifar" not in info.knobs:
        pytest.fail(f"{name} has no cifar knob")
    with torch.device("meta"):
        model = smallnets.create_model(name, num_classes=10, cifar=True)
    feats = model.forward_features(torch.empty(1, 3, 32, 32, device="meta"))
    # Designs native to 32x32 keep their paper's layout (DenseNet Table 2: three blocks, 8x8 at the end).
    assert feats.shape[-2:] == ((8, 8) if info.input_size[1:] == (32, 32) else (4, 4))


def test_every_family_has_one_representative():
    families = {smallnets.model_info(n).family for n in smallnets.list_models()}
    reps = [smallnets.model_info(n).family for n in smallnets.list_models() if smallnets.model_info(n).representative]
    assert sorted(reps) == sorted(families)
    assert families >= {"mobilenet_v1", "mobilenet_v2", "squeezenet", "densenet", "shufflenet_v1", "shufflenet_v2", "xception", "efficientnet"}
