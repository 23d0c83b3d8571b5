"""The profiler against costs computed by hand, and its measurements' bookkeeping."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import smallnets
from smallnets.profiler import count_layers, layer_kind, measure_latency, min_input_side, peak_activation_bytes, saved_activation_bytes


def _toy():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 16*16*8 outputs x 3*9      = 55,296 MACs
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # x 9 = 18,432
        nn.Conv2d(8, 16, 1, groups=2, bias=False),  # 16*16*16 x 4    = 16,384
        nn.Conv2d(16, 16, 1, stride=2, bias=False),  # 8*8*16 x 16     = 16,384
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # 160
    )


def test_counts_by_hand():
    layers = count_layers(_toy(), (3, 16, 16))
    assert [(r.name, r.kind, r.macs) for r in layers] == [
        ("0", "conv3x3", 55_296),
        ("3", "depthwise3x3", 18_432),
        ("4", "grouped1x1", 16_384),
        ("5", "conv1x1", 16_384),
        ("8", "fc", 160),
    ]
    assert [r.weights for r in layers] == [216, 72, 64, 256, 160]
    assert layers[0].params == 224 and layers[0].out_shape == (8, 16, 16)
    report = smallnets.profile(_toy(), (3, 16, 16), latency=False, memory=False)
    assert report.macs == 106_656 and report.flops == 2 * 106_656
    assert report.params == 224 + 16 + 72 + 64 + 256 + 170  # BN affine counted, running stats not
    assert report.size_bytes == {"fp32": 4 * report.params, "fp16": 2 * report.params, "int8": report.params}


def test_macs_scale_with_resolution_squared():
    model = _toy()
    assert smallnets.count_macs(model, (3, 32, 32)) - 160 == 4 * (smallnets.count_macs(model, (3, 16, 16)) - 160)


def test_layer_kind_rules():
    assert layer_kind(nn.Conv2d(32, 32, 5, groups=32)) == "depthwise5x5"
    assert layer_kind(nn.Conv2d(32, 64, 1, groups=4)) == "grouped1x1"
    assert layer_kind(nn.Conv2d(3, 64, 7)) == "conv7x7"
    assert layer_kind(nn.Linear(3, 4)) == "fc"


def test_by_kind_shares_sum_to_100():
    report = smallnets.profile(_toy(), (3, 16, 16), latency=False, memory=False)
    kinds = report.by_kind()
    assert sum(k["macs_percent"] for k in kinds.values()) == pytest.approx(100)
    assert sum(k["weights_percent"] for k in kinds.values()) == pytest.approx(100)
    assert list(kinds)[0] == "conv3x3"  # sorted by MACs, largest first


def test_peak_activation_bytes_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),  # in place: no new tensor
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),  # new tensor while the conv output is still alive
        nn.Conv2d(16, 4, 1),
    )
    plane = 32 * 32 * 4  # bytes of one fp32 channel
    # peak: input (3) + conv2 output (16) + relu output (16); conv1's output was freed already
    assert peak_activation_bytes(model, (3, 32, 32)) == (3 + 16 + 16) * plane
    assert peak_activation_bytes(model, (3, 32, 32), batch_size=4) == 4 * (3 + 16 + 16) * plane


def test_saved_activation_bytes_leaves_model_untouched():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    saved = saved_activation_bytes(model, (3, 8, 8))
    # conv saves its input (2x3x8x8), BN its input (2x8x8x8), ReLU its output (2x8x8x8)
    assert saved >= 4 * 2 * 64 * (3 + 8 + 8)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert model.training


def test_latency_bookkeeping():
    model = _toy()
    lat = measure_latency(model, (3, 16, 16), batch_size=4, warmup=1, runs=7, threads=1)
    assert lat.runs == 7 and lat.warmup == 1 and lat.batch_size == 4 and lat.threads == 1
    assert 0 < lat.median_ms <= lat.p90_ms
    assert lat.throughput == pytest.approx(4 / (lat.median_ms / 1e3))
    assert lat.dtype == "float32" and lat.memory_format == "contiguous" and lat.device == "cpu"
    assert lat.torch_version == torch.__version__
    assert torch.get_num_threads() >= 1


def test_latency_copies_model_for_dtype_and_layout():
    model = _toy()
    lat = measure_latency(model, (3, 16, 16), runs=3, warmup=0, dtype=torch.bfloat16, channels_last=True)
    assert lat.dtype == "bfloat16" and lat.memory_format == "channels_last"
    assert next(model.parameters()).dtype == torch.float32


def test_latency_time_budget_stops_early():
    lat = measure_latency(_toy(), (3, 16, 16), warmup=0, runs=10_000, max_seconds=0.05)
    assert 3 <= lat.runs < 10_000


def test_report_json_and_text():
    report = smallnets.profile("squeezenet1_1", 64, runs=3, warmup=1)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["model"] == "squeezenet1_1" and data["input_size"] == [3, 64, 64]
    assert data["macs"] == report.macs and len(data["layers"]) == len(report.layers)
    assert data["latency"]["runs"] == 3 and "conv and linear layers only" in data["conventions"]["macs"]
    assert data["peak_activation_bytes"] > 0 and data["saved_activation_bytes"] > 0
    text = report.summary()
    for word in ("params", "MACs", "latency", "threads", "p90", "fp16"):
        assert word in text
    assert "fire" in report.layer_table() or "stages" in report.layer_table()


def test_profile_by_name_uses_paper_resolution_and_knobs():
    report = smallnets.profile("mobilenet_v1", latency=False, memory=False, width_mult=0.5)
    assert report.input_size == (3, 224, 224) and report.knobs == {"width_mult": 0.5}
    assert abs(report.macs - 149e6) < 1e6  # MobileNetV1 Table 6


def test_profile_errors():
    with pytest.raises(ValueError, match=r"input_size must be \(channels, height, width\)"):
        smallnets.profile(_toy(), (16, 16), latency=False)
    with pytest.raises(TypeError, match="knobs"):
        smallnets.profile(_toy(), (3, 16, 16), width_mult=0.5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        measure_latency(_toy(), (3, 16, 16), batch_size=0)


@pytest.mark.parametrize("name, side, stride", [("xception", 32, 32), ("mobilenet_v1", 32, 32), ("squeezenet1_0", 21, 16), ("squeezenet1_1", 17, 16)])
def test_an_input_below_the_total_stride_is_refused_naming_the_minimum(name, side, stride):
    # Xception at 10 px used to run "fine": padding kept 1x1 maps alive from the second stage on
    net = smallnets.create_model(name)
    assert min_input_side(net) == (side, stride)
    with pytest.raises(ValueError, match=rf"input_size of {name} must be at least {side}x{side} \(total stride {stride}.*got {side - 1}x{side - 1}"):
        smallnets.profile(net, input_size=(3, side - 1, side - 1), latency=False, memory=False)
    assert smallnets.profile(net, input_size=(3, side, side), latency=False, memory=False).macs > 0


def test_a_cifar_stem_lowers_the_minimum():
    net = smallnets.create_model("mobilenet_v1", cifar=True, width_mult=0.25)
    assert min_input_side(net) == (8, 8)
