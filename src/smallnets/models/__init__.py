"""The zoo's modules, built from specs: ``build_model(spec)`` picks the family's class by spec type, and
``spec_for_shapes(spec, shapes)`` reads a spec's widths back from a state dict of its structure (a
pruned model's)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from smallnets.arch.densenet import DenseNetSpec
from smallnets.arch.dpn import DPNSpec
from smallnets.arch.efficientnet import EfficientNetSpec
from smallnets.arch.inception import GoogLeNetSpec, InceptionV3Spec
from smallnets.arch.mobilenet import MobileNetV1Spec, MobileNetV2Spec
from smallnets.arch.polynet import PolyNetSpec
from smallnets.arch.pyramidnet import PyramidNetSpec
from smallnets.arch.residual_attention import ResidualAttentionSpec
from smallnets.arch.resnet import ResNetSpec
from smallnets.arch.shufflenet import ShuffleNetV1Spec, ShuffleNetV2Spec
from smallnets.arch.spec import ArchSpec
from smallnets.arch.squeezenet import SqueezeNetSpec
from smallnets.arch.vgg import AlexNetSpec, VGGSpec
from smallnets.arch.xception import XceptionSpec
from smallnets.models import _inverted, densenet, resnet, shufflenet, squeezenet, xception
from smallnets.models.densenet import DenseNet
from smallnets.models.dpn import DPN
from smallnets.models.efficientnet import EfficientNet
from smallnets.models.inception import GoogLeNet, InceptionV3
from smallnets.models.mobilenet import MobileNetV1, MobileNetV2
from smallnets.models.polynet import PolyNet
from smallnets.models.pyramidnet import PyramidNet
from smallnets.models.residual_attention import ResidualAttentionNet
from smallnets.models.resnet import ResNet
from smallnets.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from smallnets.models.squeezenet import SqueezeNet
from smallnets.models.vgg import VGG, AlexNet
from smallnets.models.xception import Xception

BUILDERS: dict[type[ArchSpec], type[nn.Module]] = {
    MobileNetV1Spec: MobileNetV1,
    MobileNetV2Spec: MobileNetV2,
    EfficientNetSpec: EfficientNet,
    ShuffleNetV1Spec: ShuffleNetV1,
    ShuffleNetV2Spec: ShuffleNetV2,
    SqueezeNetSpec: SqueezeNet,
    XceptionSpec: Xception,
    DenseNetSpec: DenseNet,
    AlexNetSpec: AlexNet,
    VGGSpec: VGG,
    PolyNetSpec: PolyNet,
    ResNetSpec: ResNet,
    DPNSpec: DPN,
    GoogLeNetSpec: GoogLeNet,
    InceptionV3Spec: InceptionV3,
    PyramidNetSpec: PyramidNet,
    ResidualAttentionSpec: ResidualAttentionNet,
}


def build_model(spec: ArchSpec) -> nn.Module:
    """The module a spec describes, freshly initialised; ``model.spec`` is the spec."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec must be an ArchSpec (e.g. smallnets.model_spec('mobilenet_v2')), got {type(spec).__name__}")
    cls = BUILDERS.get(type(spec))
    if cls is None:
        raise ValueError(f"spec type must be one of {', '.join(t.__name__ for t in BUILDERS)}; got {type(spec).__name__}")
    return cls(spec)


RESPEC = {
    MobileNetV1Spec: _inverted.spec_for_shapes,
    MobileNetV2Spec: _inverted.spec_for_shapes,
    EfficientNetSpec: _inverted.spec_for_shapes,
    ShuffleNetV1Spec: shufflenet.spec_for_shapes,
    ShuffleNetV2Spec: shufflenet.spec_for_shapes,
    SqueezeNetSpec: squeezenet.spec_for_shapes,
    XceptionSpec: xception.spec_for_shapes,
    DenseNetSpec: densenet.spec_for_shapes,
    ResNetSpec: resnet.spec_for_shapes,
}


def spec_for_shapes(spec: ArchSpec, shapes: Mapping[str, tuple[int, ...]]) -> ArchSpec:
    """The spec of ``spec``'s structure whose widths give exactly these state-dict ``shapes`` (key ->
    shape): the architecture of a model whose channels were pruned. The new spec validates itself
    (a shortcut still needs equal widths, groups still divide them); a caller loads the state dict
    into ``build_model(new_spec)`` strictly, so any width the spec could not express is caught there."""
    fn = RESPEC.get(type(spec))
    if fn is None:
        raise ValueError(f"spec type must be one of {', '.join(t.__name__ for t in RESPEC)}; got {type(spec).__name__}")
    return fn(spec, shapes)
