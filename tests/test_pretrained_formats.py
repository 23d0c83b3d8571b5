"""Every checkpoint format builds its model with the layer settings the reference library uses.

A state dict carries shapes, not settings: BatchNorm eps and momentum, TensorFlow "SAME" padding,
activations and pooling leave no trace in the keys, so a format can convert key for key and still
compute something else (torchvision's EfficientNet-B5..B7 use eps 1e-3, momentum 0.01; loaded with
PyTorch's defaults their outputs drift). The fixtures cover a few formats; this table covers all of
them, with the reference source of each fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import smallnets
from smallnets.layers import SamePad2d
from smallnets.pretrained import FORMATS, get_format


@dataclass(frozen=True)
class Ref:
    bn: tuple[float, float] | None  # (eps, momentum) of every BatchNorm (PyTorch convention); None: there is none
    tf_same: bool  # TensorFlow "SAME" padding (asymmetric where a stride needs it) in every strided conv
    acts: frozenset[str]  # activation modules
    pools: frozenset[tuple]  # (type, kernel, stride, padding, ceil_mode) of every max / average pooling layer


TORCH_BN = (1e-5, 0.1)  # nn.BatchNorm2d's defaults
RELU, RELU6, SILU_SE = frozenset({"ReLU"}), frozenset({"ReLU6"}), frozenset({"SiLU", "Sigmoid"})  # SE: SiLU inside, sigmoid gate
NO_POOL = frozenset()

REFERENCE: dict[str, Ref] = {}

# torchvision/models/squeezenet.py, SqueezeNet.__init__ (both versions): no BatchNorm, ReLU,
# nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
for v in ("1_0", "1_1"):
    REFERENCE[f"torchvision:squeezenet{v}"] = Ref(None, False, RELU, frozenset({("MaxPool2d", 3, 2, 0, True)}))
# torchvision/models/mobilenetv2.py, MobileNetV2.__init__: norm_layer defaults to nn.BatchNorm2d; ReLU6 everywhere
REFERENCE["torchvision:mobilenet_v2"] = Ref(TORCH_BN, False, RELU6, NO_POOL)
# torchvision/models/shufflenetv2.py: nn.BatchNorm2d, nn.ReLU, self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
for tag in ("x0_5", "x1_0", "x1_5", "x2_0"):
    REFERENCE[f"torchvision:shufflenet_v2_{tag}"] = Ref(TORCH_BN, False, RELU, frozenset({("MaxPool2d", 3, 2, 1, False)}))
# torchvision/models/densenet.py: nn.BatchNorm2d, nn.ReLU, pool0 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
# _Transition: nn.AvgPool2d(kernel_size=2, stride=2).  timm/models/densenet.py (timm:densenet*): the same
# (norm_layer=nn.BatchNorm2d / BatchNormAct2d at its defaults, act_layer=nn.ReLU, the same pools)
DENSE_POOLS = frozenset({("MaxPool2d", 3, 2, 1, False), ("AvgPool2d", 2, 2, 0, False)})
for depth in (121, 161, 169, 201):
    REFERENCE[f"torchvision:densenet{depth}"] = Ref(TORCH_BN, False, RELU, DENSE_POOLS)
    REFERENCE[f"timm:densenet{depth}"] = Ref(TORCH_BN, False, RELU, DENSE_POOLS)
# torchvision/models/efficientnet.py: EfficientNet.__init__ uses nn.BatchNorm2d when norm_layer is None
# (efficientnet_b0..b4 pass none); efficientnet_b5, _b6 and _b7 pass
# norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.01). MBConv: SiLU, SqueezeExcitation(activation=SiLU)
# with its default sigmoid gate; Conv2dNormActivation pads symmetrically
for i in range(8):
    REFERENCE[f"torchvision:efficientnet_b{i}"] = Ref(TORCH_BN if i <= 4 else (1e-3, 0.01), False, SILU_SE, NO_POOL)
# timm/models/efficientnet.py: _gen_mobilenet_v1 / _gen_mobilenet_v2 build
# norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)) (no bn args given: PyTorch's defaults) and
# act_layer=resolve_act_layer(kwargs, 'relu6'); pad_type '' (symmetric)
for tag in ("100", "125", "075", "050", "025", "100h"):
    REFERENCE[f"timm:mobilenetv1_{tag}"] = Ref(TORCH_BN, False, RELU6, NO_POOL)
for tag in ("100", "140", "075", "050", "035", "110d", "120d"):
    REFERENCE[f"timm:mobilenetv2_{tag}"] = Ref(TORCH_BN, False, RELU6, NO_POOL)
# timm/models/efficientnet.py: efficientnet_b0..b7 call _gen_efficientnet with no bn args (PyTorch's defaults),
# act 'swish' (SiLU), SqueezeExcite with a sigmoid gate, pad_type ''. tf_efficientnet_b0..b7 set
# kwargs['bn_eps'] = BN_EPS_TF_DEFAULT and kwargs['pad_type'] = 'same'; BN_EPS_TF_DEFAULT = 1e-3 in
# timm/models/_efficientnet_builder.py, and resolve_bn_args passes no momentum, so it stays 0.1
for i in range(8):
    REFERENCE[f"timm:efficientnet_b{i}"] = Ref(TORCH_BN, False, SILU_SE, NO_POOL)
    REFERENCE[f"timm:tf_efficientnet_b{i}"] = Ref((1e-3, 0.1), True, SILU_SE, NO_POOL)
# timm/models/xception.py (legacy_xception): nn.BatchNorm2d(c) at its defaults, nn.ReLU, Block ends in
# nn.MaxPool2d(3, strides, 1) where it strides
# torchvision's ResNet / ResNeXt: 3x3/s2 max-pool padded 1 after the 7x7 stem; plain BatchNorm2d
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d"):
    REFERENCE[f"torchvision:{_name}"] = Ref(TORCH_BN, False, RELU, frozenset({("MaxPool2d", 3, 2, 1, False)}))
REFERENCE["timm:legacy_xception"] = Ref(TORCH_BN, False, RELU, frozenset({("MaxPool2d", 3, 2, 1, False)}))
# timm/models/dpn.py: norm_layer = partial(BatchNormAct2d, eps=.001) (momentum stays 0.1), ReLU in the blocks,
# the neck CatBnAct with fc_act_layer=nn.ELU; InputBlock's pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
for _depth in (68, 92):
    REFERENCE[f"timm:dpn{_depth}"] = Ref((1e-3, 0.1), False, frozenset({"ReLU", "ELU"}), frozenset({("MaxPool2d", 3, 2, 1, False)}))
# torchvision/models/alexnet.py: no BatchNorm, nn.ReLU, nn.MaxPool2d(kernel_size=3, stride=2) three times
REFERENCE["torchvision:alexnet"] = Ref(None, False, RELU, frozenset({("MaxPool2d", 3, 2, 0, False)}))
# torchvision/models/vgg.py, make_layers: nn.MaxPool2d(kernel_size=2, stride=2) per "M", 3x3 convs padded 1 with
# nn.ReLU, and with batch_norm=True an nn.BatchNorm2d (its defaults) after every conv. No strided conv at all
for _name in ("vgg11", "vgg13", "vgg16", "vgg19"):
    REFERENCE[f"torchvision:{_name}"] = Ref(None, False, RELU, frozenset({("MaxPool2d", 2, 2, 0, False)}))
    REFERENCE[f"torchvision:{_name}_bn"] = Ref(TORCH_BN, False, RELU, frozenset({("MaxPool2d", 2, 2, 0, False)}))
# torchvision/models/googlenet.py: BasicConv2d's nn.BatchNorm2d(out_channels, eps=0.001), ReLU;
# maxpool1..3 = nn.MaxPool2d(3, stride=2, ceil_mode=True), maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True),
# Inception's branch4 nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
REFERENCE["torchvision:googlenet"] = Ref((1e-3, 0.1), False, RELU, frozenset({("MaxPool2d", 3, 2, 0, True), ("MaxPool2d", 2, 2, 0, True),
                                                                              ("MaxPool2d", 3, 1, 1, True)}))  # fmt: skip
# torchvision/models/inception.py: BasicConv2d eps=0.001; maxpool1/2 = nn.MaxPool2d(kernel_size=3, stride=2), the
# grid reductions' F.max_pool2d(x, kernel_size=3, stride=2), the branch pools F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
REFERENCE["torchvision:inception_v3"] = Ref((1e-3, 0.1), False, RELU, frozenset({("MaxPool2d", 3, 2, 0, False), ("AvgPool2d", 3, 1, 1, False)}))

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.LeakyReLU, nn.Mish, nn.ELU)


def test_the_reference_table_covers_every_format():
    assert sorted(REFERENCE) == sorted(FORMATS)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_builds_the_reference_layer_settings(fmt):
    spec, ref = get_format(fmt), REFERENCE[fmt]
    with torch.device("meta"):
        model = smallnets.create_model(spec.model, **spec.knobs)  # what load_pretrained, convert and train build
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    if ref.bn is None:
        assert not norms
    else:
        assert norms and all(isinstance(m, nn.BatchNorm2d) for m in norms)
        settings = {(m.eps, m.momentum) for m in norms}
        assert settings == {ref.bn}, f"{fmt}: BatchNorm (eps, momentum) {settings}, the reference uses {ref.bn}"
    # TF "SAME" padding is a SamePad2d part just before the (unpadded) conv of its ConvNormAct
    padded = [block for block in model.modules() if isinstance(getattr(block, "pad", None), SamePad2d)]
    for block in padded:  # the part pads for its conv's kernel and stride; the conv pads nothing itself
        pad, conv = block.pad, block.conv
        assert conv.padding == (0, 0) and (pad.kernel_size,) * 2 == conv.kernel_size and (pad.stride,) * 2 == conv.stride
    same = {block.conv for block in padded}
    strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1) and m.kernel_size != (1, 1)]
    assert strided or not ref.tf_same  # VGG downsamples only by max-pooling
    assert all((m in same) == ref.tf_same for m in strided), f"{fmt}: TF 'SAME' padding should be {ref.tf_same}"
    if ref.tf_same:  # at stride 1 an odd kernel's SAME padding is the symmetric one
        others = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m not in strided]
        assert all(m in same or m.padding == tuple(k // 2 for k in m.kernel_size) for m in others)
    acts = {type(m).__name__ for m in model.modules() if isinstance(m, ACTIVATIONS)}
    assert acts == ref.acts, f"{fmt}: activations {acts}, the reference uses {set(ref.acts)}"
    pools = {(type(m).__name__, m.kernel_size, m.stride, m.padding, m.ceil_mode)
             for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))}  # fmt: skip
    assert pools == ref.pools, f"{fmt}: pooling {pools}, the reference uses {set(ref.pools)}"


def test_the_settings_travel_with_converted_weights(tmp_path):
    # what convert writes (the sidecar's knobs) rebuilds the same layer settings in load_weights
    from smallnets.checkpoint import save_weights

    spec = get_format("torchvision:efficientnet_b5")
    with torch.device("meta"):
        meta_model = smallnets.create_model(spec.model, **spec.knobs)
    assert meta_model.smallnets_config["knobs"]["bn_eps"] == 1e-3 and meta_model.smallnets_config["knobs"]["bn_momentum"] == 0.01
    small = smallnets.create_model("efficientnet", width_mult=0.25, depth_mult=0.25, num_classes=3, bn_eps=1e-3, bn_momentum=0.01)
    back = smallnets.load_weights(save_weights(small, tmp_path / "w.safetensors"))
    assert {(m.eps, m.momentum) for m in back.modules() if isinstance(m, nn.BatchNorm2d)} == {(1e-3, 0.01)}
