"""The checkpoint formats smallnets converts: which model and knobs each fills, and its published preprocessing.

One row per torchvision / timm weight layout (``torchvision:mobilenet_v2``, ``timm:tf_efficientnet_b3``),
with the evaluation sizes, interpolation and normalisation the reference library publishes for it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from smallnets._norm import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD

__all__ = ["FORMATS", "OWN", "WeightFormat", "get_format", "imagenet_classes", "list_formats"]


def _prep(crop: int, resize: int, interpolation: str, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Any]:
    """Published evaluation preprocessing: resize the short side to ``resize``, center-crop ``crop``."""
    return {"crop": crop, "resize": resize, "interpolation": interpolation, "mean": list(mean), "std": list(std)}


def _timm_prep(crop: int, crop_pct: float, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation: str = "bicubic") -> dict[str, Any]:
    return _prep(crop, int(crop / crop_pct), interpolation, mean, std)  # timm: floor(crop / crop_pct)


@dataclass(frozen=True)
class WeightFormat:
    """One checkpoint layout: which smallnets model (and knobs) it fills, and how its inputs are prepared."""

    name: str  # "torchvision:mobilenet_v2"
    model: str  # smallnets zoo name
    knobs: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    first_module: str  # the checkpoint's first module (tells the libraries' layouts apart)
    detect: bool = True  # False: same keys and shapes as another format; only chosen when named
    url: str | None = None  # published weights, where known (torch.hub names carry a SHA-256 prefix: NAME-<hex>.pth)
    sha256: str | None = None
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    classes: tuple[str, ...] | None = None  # class names that travel with the weights (smallnets' own files)
    num_classes: int | None = None  # outputs of the classifier, where a sidecar records them (smallnets' own files)
    spec: Mapping[str, Any] | None = None  # the recorded architecture (smallnets' own files: a pruned model's own widths)
    # checkpoint keys (fnmatch patterns) of parts the layout has no place for and that do not change its output:
    # torchvision's GoogLeNet / Inception v3 files keep the auxiliary classifiers used only in training
    drop_keys: tuple[str, ...] = ()

    def kept(self, state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``state_dict`` without the keys ``drop_keys`` matches, and the sorted keys left out."""
        if not self.drop_keys:
            return dict(state_dict), []
        dropped = sorted(k for k in state_dict if any(fnmatch.fnmatchcase(k, pat) for pat in self.drop_keys))
        gone = set(dropped)
        return {k: v for k, v in state_dict.items() if k not in gone}, dropped


def _formats() -> dict[str, WeightFormat]:
    out: list[WeightFormat] = []
    tv = "torchvision"
    hub = "https://download.pytorch.org/models/"
    out += [
        WeightFormat(f"{tv}:squeezenet1_0", "squeezenet1_0", {}, _prep(224, 256, "bilinear"), "features.0", url=hub + "squeezenet1_0-b66bff10.pth"),
        WeightFormat(f"{tv}:squeezenet1_1", "squeezenet1_1", {}, _prep(224, 256, "bilinear"), "features.0", url=hub + "squeezenet1_1-b8a52dc0.pth"),
        WeightFormat(f"{tv}:mobilenet_v2", "mobilenet_v2", {}, _prep(224, 256, "bilinear"), "features.0.0", url=hub + "mobilenet_v2-b0353104.pth"),
    ]
    shuffle_files = {"x0_5": "shufflenetv2_x0.5-f707e7126e.pth", "x1_0": "shufflenetv2_x1-5666bf0f80.pth",
                     "x1_5": "shufflenetv2_x1_5-3c479a10.pth", "x2_0": "shufflenetv2_x2_0-8be3c8ee.pth"}  # fmt: skip
    for tag, width, resize in (("x0_5", 0.5, 256), ("x1_0", 1.0, 256), ("x1_5", 1.5, 232), ("x2_0", 2.0, 232)):
        out.append(WeightFormat(f"{tv}:shufflenet_v2_{tag}", "shufflenet_v2", {"width_mult": width}, _prep(224, resize, "bilinear"), "conv1.0",
                                url=hub + shuffle_files[tag]))  # fmt: skip
    dense_files = {121: "densenet121-a639ec97.pth", 161: "densenet161-8d451a50.pth", 169: "densenet169-b2777c0a.pth", 201: "densenet201-c1103571.pth"}
    for depth in (121, 161, 169, 201):
        out.append(WeightFormat(f"{tv}:densenet{depth}", f"densenet{depth}", {}, _prep(224, 256, "bilinear"), "features.conv0",
                                url=hub + dense_files[depth]))  # fmt: skip
    # torchvision's EfficientNet B0-B7 (IMAGENET1K_V1): crop / resize sizes, bicubic. B5-B7 are built with
    # norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.01), B0-B4 with PyTorch's defaults
    # (torchvision/models/efficientnet.py, efficientnet_b5 / _b6 / _b7)
    tv_bn = {"bn_eps": 1e-3, "bn_momentum": 0.01}
    for i, (crop, resize) in enumerate(((224, 256), (240, 256), (288, 288), (300, 320), (380, 384), (456, 456), (528, 528), (600, 600))):
        out.append(WeightFormat(f"{tv}:efficientnet_b{i}", f"efficientnet_b{i}", tv_bn if i >= 5 else {}, _prep(crop, resize, "bicubic"),
                                "features.0.0", notes="BatchNorm eps 1e-3, momentum 0.01, as torchvision builds it" if i >= 5 else ""))  # fmt: skip
    tm = "timm"
    rel = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
    # timm's MobileNetV1 weights (ra4 recipe) are trained on inputs normalised with mean = std = 0.5;
    # 125 is evaluated at crop_pct 0.9 (075 / 050 / 025 have no published weights: the family's values)
    for tag, width in (("100", 1.0), ("125", 1.25), ("075", 0.75), ("050", 0.5), ("025", 0.25)):
        out.append(WeightFormat(f"{tm}:mobilenetv1_{tag}", "mobilenet_v1", {"width_mult": width} if width != 1.0 else {},
                                _timm_prep(224, 0.9 if tag == "125" else 0.875, INCEPTION_MEAN, INCEPTION_STD), "conv_stem"))  # fmt: skip
    out.append(WeightFormat(f"{tm}:mobilenetv1_100h", "mobilenet_v1", {"head_chs": 1024}, _timm_prep(224, 0.875, INCEPTION_MEAN, INCEPTION_STD),
                            "conv_stem", notes="MobileNetV1 with a 1x1 conv head (1024 -> 1024) before pooling"))  # fmt: skip
    v2_files = {"100": "mobilenetv2_100_ra-b33bc2c4.pth", "140": "mobilenetv2_140_ra-21a4e913.pth", "050": "mobilenetv2_050-3d30d450.pth"}
    for tag, width in (("100", 1.0), ("140", 1.4), ("075", 0.75), ("050", 0.5), ("035", 0.35)):
        out.append(WeightFormat(f"{tm}:mobilenetv2_{tag}", "mobilenet_v2", {"width_mult": width} if width != 1.0 else {},
                                _timm_prep(224, 0.875), "conv_stem", url=rel + v2_files[tag] if tag in v2_files else None))  # fmt: skip
    for tag, width, depth, file in (("110d", 1.1, 1.2, "mobilenetv2_110d_ra-77090ade.pth"), ("120d", 1.2, 1.4, "mobilenetv2_120d_ra-5987e2ed.pth")):
        out.append(WeightFormat(f"{tm}:mobilenetv2_{tag}", "mobilenet_v2", {"width_mult": width, "depth_mult": depth, "fix_stem_head": True},
                                _timm_prep(224, 0.875), "conv_stem", url=rel + file,
                                notes="width and depth scaled, stem, last conv and first / last rows fixed"))  # fmt: skip
    # timm EfficientNets: eval size and crop_pct of each default pretrained tag, and its file. The tf_ ports
    # set bn_eps=1e-3 and pad_type='same' only (timm/models/efficientnet.py): BN momentum stays 0.1
    timm_eff = {0: (224, 0.875, "efficientnet_b0_ra-3dd342df.pth"), 1: (224, 0.875, "efficientnet_b1-533bc792.pth"),
                2: (256, 0.875, "efficientnet_b2_ra-bcdf34b7.pth"), 3: (288, 0.875, "efficientnet_b3_ra2-cf984f9c.pth"),
                4: (320, 0.875, "efficientnet_b4_ra2_320-7eb33cd5.pth"), 5: (448, 1.0, None), 6: (528, 0.942, None), 7: (600, 0.949, None)}  # fmt: skip
    tf_eff = {0: (224, 0.875, "tf_efficientnet_b0_aa-827b6e33.pth"), 1: (240, 0.882, "tf_efficientnet_b1_aa-ea7a6ee0.pth"),
              2: (260, 0.890, "tf_efficientnet_b2_aa-60c94f97.pth"), 3: (300, 0.904, "tf_efficientnet_b3_aa-84b4657e.pth"),
              4: (380, 0.922, "tf_efficientnet_b4_aa-818f208c.pth"), 5: (456, 0.934, "tf_efficientnet_b5_ra-9a3e5369.pth"),
              6: (528, 0.942, "tf_efficientnet_b6_aa-80ba17e4.pth"), 7: (600, 0.949, "tf_efficientnet_b7_ra-6c08e654.pth")}  # fmt: skip
    for i in range(8):
        size, pct, file = timm_eff[i]
        out.append(WeightFormat(f"{tm}:efficientnet_b{i}", f"efficientnet_b{i}", {}, _timm_prep(size, pct), "conv_stem",
                                url=rel + file if file else None))  # fmt: skip
        size, pct, file = tf_eff[i]
        out.append(WeightFormat(f"{tm}:tf_efficientnet_b{i}", f"efficientnet_b{i}", {"same_padding": True, "bn_eps": 1e-3},
                                _timm_prep(size, pct), "conv_stem", detect=False, url=rel + file,
                                notes="ported from TensorFlow: 'SAME' padding and BatchNorm eps 1e-3; has the same keys as "
                                      f"timm:efficientnet_b{i}, so name it explicitly"))  # fmt: skip
    out.append(WeightFormat(f"{tm}:legacy_xception", "xception", {}, _timm_prep(299, 0.8975, INCEPTION_MEAN, INCEPTION_STD), "conv1",
                            aliases=(f"{tm}:xception",)))  # fmt: skip
    for depth in (121, 161, 169, 201):
        out.append(WeightFormat(f"{tm}:densenet{depth}", f"densenet{depth}", {}, _timm_prep(224, 0.875), "features.conv0", detect=False,
                                notes=f"the same layout as torchvision:densenet{depth}"))  # fmt: skip
    resnet_files = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth",
                    "resnet101": "resnet101-63fe2227.pth", "resnet152": "resnet152-394f9c45.pth",
                    "resnext50_32x4d": "resnext50_32x4d-7cdf4587.pth", "resnext101_32x8d": "resnext101_32x8d-8ba56ff5.pth"}  # fmt: skip
    for name, file in resnet_files.items():  # IMAGENET1K_V1
        out.append(WeightFormat(f"{tv}:{name}", name, {}, _prep(224, 256, "bilinear"), "conv1", url=hub + file))
    # timm DPN (the cypw/DPNs MXNet weights): mean 124/117/104 over 255, std 1 / (0.0167 * 255), bicubic, crop 0.875
    dpn_mean, dpn_std = (124 / 255, 117 / 255, 104 / 255), (1 / (0.0167 * 255),) * 3
    dpn_rel = "https://github.com/rwightman/pytorch-dpn-pretrained/releases/download/v0.1/"
    for depth, file in ((68, "dpn68-66bebafa7.pth"), (92, "dpn92_extra-b040e4a9b.pth")):
        out.append(WeightFormat(f"{tm}:dpn{depth}", f"dpn{depth}", {}, _timm_prep(224, 0.875, dpn_mean, dpn_std), "features.conv1_1.conv",
                                url=dpn_rel + file))  # fmt: skip
    # torchvision AlexNet and VGG (IMAGENET1K_V1): vgg*_bn differ from vgg* by their BN modules, so both are detected
    out.append(WeightFormat(f"{tv}:alexnet", "alexnet", {}, _prep(224, 256, "bilinear"), "features.0", url=hub + "alexnet-owt-7be5be79.pth"))
    vgg_files = {"vgg11": "vgg11-8a719046.pth", "vgg13": "vgg13-19584684.pth", "vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth",
                 "vgg11_bn": "vgg11_bn-6002323d.pth", "vgg13_bn": "vgg13_bn-abd245e5.pth", "vgg16_bn": "vgg16_bn-6c64b313.pth",
                 "vgg19_bn": "vgg19_bn-c79401a0.pth"}  # fmt: skip
    for name, file in vgg_files.items():
        out.append(WeightFormat(f"{tv}:{name}", name, {}, _prep(224, 256, "bilinear"), "features.0", url=hub + file))
    # torchvision GoogLeNet / Inception v3 (IMAGENET1K_V1), auxiliary classifiers off. Their pretrained builders set
    # transform_input=True, which re-normalises ImageNet-normalised input to (x - 0.5) / 0.5 inside the model:
    # smallnets' models have no such step, so the published pipeline is mean = std = 0.5 here, the same numbers.
    # The published files also hold the auxiliary heads (aux1.* / aux2.*, AuxLogits.*), used only in training
    # (torchvision drops them itself when aux_logits=False): they are left out on loading.
    tv_transform = "transform_input folded into the preprocessing (mean = std = 0.5); the auxiliary classifiers' keys are left out"
    out.append(WeightFormat(f"{tv}:googlenet", "googlenet", {}, _prep(224, 256, "bilinear", INCEPTION_MEAN, INCEPTION_STD), "conv1.conv",
                            url=hub + "googlenet-1378be20.pth", notes=tv_transform, drop_keys=("aux1.*", "aux2.*")))  # fmt: skip
    out.append(WeightFormat(f"{tv}:inception_v3", "inception_v3", {}, _prep(299, 342, "bilinear", INCEPTION_MEAN, INCEPTION_STD), "Conv2d_1a_3x3.conv",
                            url=hub + "inception_v3_google-0cc3c7bd.pth", notes=tv_transform, drop_keys=("AuxLogits.*",)))  # fmt: skip
    table = {}
    for f in out:
        table[f.name] = f
    return table


FORMATS: dict[str, WeightFormat] = _formats()
OWN = "smallnets"  # the format name of smallnets' own weights (save_weights, a run's best / last): see own_format
_ALIASES = {alias: f.name for f in FORMATS.values() for alias in f.aliases}


def list_formats(pattern: str | None = None) -> list[str]:
    """The checkpoint formats smallnets converts, e.g. ``list_formats("timm:*")``."""
    names = sorted(FORMATS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_format(name: str) -> WeightFormat:
    if not isinstance(name, str):
        raise TypeError(f"format must be a str like 'torchvision:mobilenet_v2', got {type(name).__qualname__}")
    key = _ALIASES.get(name, name)
    if key not in FORMATS:
        close = [n for n in FORMATS if name.split(":")[-1] in n]
        hint = f"; did you mean {', '.join(close[:4])}?" if close else "; see smallnets.pretrained.list_formats()"
        raise ValueError(f"format must be one of the known checkpoint formats (SOURCE:NAME), got {name!r}{hint}")
    return FORMATS[key]


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in the index order of torchvision and timm checkpoints."""
    text = resources.files("smallnets.pretrained").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise RuntimeError(f"smallnets/pretrained/imagenet_classes.txt must hold 1000 names, has {len(names)}")
    return names

