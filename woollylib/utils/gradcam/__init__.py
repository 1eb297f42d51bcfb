"""Class-activation maps (Grad-CAM and friends) per named stage, and pixel-space overlays.

Usage::

    from woollylib.utils.gradcam import compute_cams, overlay
    cams = compute_cams(model, images, stages=("layer3", "layer4"), method="gradcam++")
    rgb = overlay(data.denormalize(images[0]), cams["layer4"][0])
"""

from __future__ import annotations

from .core import compute_cams, explain_mode, list_cam_methods, overlay, resolve_stage

__all__ = ["compute_cams", "explain_mode", "list_cam_methods", "overlay", "resolve_stage"]
