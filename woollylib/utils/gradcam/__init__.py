"""Class-activation maps (Grad-CAM and friends) per named stage, and pixel-space overlays.

Usage::

    from woollylib.utils.gradcam import compute_cams, overlay
    cams = compute_cams(model, images, stages=("layer3", "layer4"), method="gradcam++")
    rgb = overlay(data.denormalize(images[0]), cams["layer4"][0])
    compute_cams(model, images, stages=default_stage(model))   # any model, torchvision's included
"""

from __future__ import annotations

from .core import (
           compute_cams,
           default_stage,
           explain_mode,
           list_cam_methods,
           list_stages,
           overlay,
           resolve_stage,
)

__all__ = ["compute_cams", "default_stage", "explain_mode", "list_cam_methods", "list_stages", "overlay",
           "resolve_stage"]
