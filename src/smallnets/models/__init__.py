"""The zoo's modules, built from specs: ``build_model(spec)`` picks the family's class by spec type."""

from __future__ import annotations

from torch import nn

from smallnets.arch.densenet import DenseNetSpec
from smallnets.arch.efficientnet import EfficientNetSpec
from smallnets.arch.mobilenet import MobileNetV1Spec, MobileNetV2Spec
from smallnets.arch.shufflenet import ShuffleNetV1Spec, ShuffleNetV2Spec
from smallnets.arch.spec import ArchSpec
from smallnets.arch.squeezenet import SqueezeNetSpec
from smallnets.arch.xception import XceptionSpec
from smallnets.models.densenet import DenseNet
from smallnets.models.efficientnet import EfficientNet
from smallnets.models.mobilenet import MobileNetV1, MobileNetV2
from smallnets.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from smallnets.models.squeezenet import SqueezeNet
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
}


def build_model(spec: ArchSpec) -> nn.Module:
    """The module a spec describes, freshly initialised; ``model.spec`` is the spec."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec must be an ArchSpec (e.g. smallnets.model_spec('mobilenet_v2')), got {type(spec).__name__}")
    cls = BUILDERS.get(type(spec))
    if cls is None:
        raise ValueError(f"spec type must be one of {', '.join(t.__name__ for t in BUILDERS)}; got {type(spec).__name__}")
    return cls(spec)
