"""Normalisation layers chosen by name, shared by every model family.

    from woollylib.models.norm import make_norm
    make_norm("bn", 64)   # BatchNorm2d(64)
    make_norm("gn", 64)   # GroupNorm(8, 64): 8 groups of 8 channels
    make_norm("ln", 64)   # GroupNorm(1, 64): layer norm over (C, H, W), per sample

All three have exactly 2 parameters per channel (scale and shift), so a model's parameter count
does not depend on the choice.
"""

from __future__ import annotations

import math

from torch import nn

NORMS = ("bn", "gn", "ln")
GN_GROUPS = 8  # groups for norm="gn" (fewer when the channel count is not a multiple of it)


def check_norm(norm: str) -> str:
    """Return `norm` lower-cased, or raise ValueError naming the accepted values."""
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise ValueError(
            f"unknown norm {norm!r}: use one of {', '.join(repr(n) for n in NORMS)} "
            "(BatchNorm, GroupNorm, GroupNorm with one group = layer norm)"
        )
    return norm.lower()


def make_norm(norm: str, channels: int, groups: int = GN_GROUPS) -> nn.Module:
    """A 2-d normalisation layer over `channels` feature maps.

    "bn": BatchNorm2d; "gn": GroupNorm with gcd(channels, groups) groups; "ln": GroupNorm(1, C).
    """
    norm = check_norm(norm)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        return nn.GroupNorm(math.gcd(channels, groups), channels)
    return nn.GroupNorm(1, channels)
