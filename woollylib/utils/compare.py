"""Moved: ``compare_optimizers`` lives in ``woollylib.experiments.optimizers``; this path keeps working."""

from ..experiments.optimizers import (
    DEFAULT_KW,  # now woollylib.experiments.optimizers.DEFAULT_KW
    DEFAULT_LRS,  # now woollylib.experiments.optimizers.DEFAULT_LRS
    compare_optimizers,  # now woollylib.experiments.optimizers.compare_optimizers
)

__all__ = ["DEFAULT_KW", "DEFAULT_LRS", "compare_optimizers"]
