"""Compound scaling (Tan & Le 2019, EfficientNet, Eq. 3): depth, width and resolution grow together by phi."""

from __future__ import annotations

from typing import NamedTuple

from smallnets._checks import check_positive, check_range


class CompoundScale(NamedTuple):
    depth: float  # multiplier on the number of blocks in every stage (alpha ** phi)
    width: float  # multiplier on every layer's channels (beta ** phi)
    resolution: float  # multiplier on the input side (gamma ** phi)

    def input_side(self, base: int = 224) -> int:
        """The scaled input side for a base resolution, rounded to the nearest pixel."""
        return int(round(base * self.resolution))


def compound_scaling(phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15) -> CompoundScale:
    """(depth, width, resolution) multipliers ``(alpha**phi, beta**phi, gamma**phi)``.

    The defaults are the grid-searched EfficientNet constants (alpha * beta**2 * gamma**2 ~= 2, so
    each unit of ``phi`` roughly doubles the mult-adds). The multipliers apply to any family that
    takes ``depth_mult`` and ``width_mult``: EfficientNet Table 3 scales MobileNetV1/V2 this way,
    e.g. ``s = compound_scaling(1); create_model('mobilenet_v2', depth_mult=s.depth,
    width_mult=s.width)`` at ``s.input_side(224)`` pixels.
    """
    check_range("phi", phi, -10, 10)
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        check_positive(name, value)
    return CompoundScale(depth=alpha**phi, width=beta**phi, resolution=gamma**phi)
