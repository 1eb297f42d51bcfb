"""Grad-CAM and friends for a batch of images, per named stage, on top of ``pytorch_grad_cam``.

Usage::

    from woollylib.utils.gradcam import compute_cams, overlay, list_cam_methods

    cams = compute_cams(model, images, stages=("layer3", "layer4"), method="gradcam")
    stage = default_stage(model)              # any model: the last conv stage with a map > 1x1 at 32x32
    list_stages(torchvision_resnet18)         # ['conv1', 'layer1', 'layer2', 'layer3', 'layer4']
    cams["layer3"].shape                      # (B, H, W) float32 in [0, 1], one map per image
    pixels = data.denormalize(images)         # (B, 3, H, W) in [0, 1]: overlay in pixel space
    shown = overlay(pixels[0], cams["layer3"][0], alpha=0.5)   # (H, W, 3) float32 in [0, 1]

``images`` are the *normalised* tensors the model eats. The target is the predicted class of each
image unless ``targets`` gives one class index per image. Hooks are released on exit (the library's
context manager), the model's train/eval mode, ``requires_grad`` flags and ``.grad`` tensors are
restored, and the call works inside ``torch.no_grad()``. Everything runs on the model's device.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..._checks import check_range
from ...device import evaluating, model_device

__all__ = ["compute_cams", "default_stage", "explain_mode", "list_cam_methods", "list_stages", "model_device",
           "overlay", "resolve_stage"]

# name -> class name in pytorch_grad_cam (resolved lazily: the import is heavy)
_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "hirescam": "HiResCAM",
    "ablationcam": "AblationCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "kpcacam": "KPCA_CAM",
    "randomcam": "RandomCAM",
}
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "kpca": "kpcacam"}


def list_cam_methods() -> list[str]:
    """Names accepted by ``compute_cams(method=...)`` (case, '-', '_' and spaces are ignored)."""
    return list(_METHODS)


def _method_class(method: str):
    key = str(method).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in _METHODS:
        raise ValueError(
            f"Unknown CAM method {method!r}. Known methods: {', '.join(_METHODS)}. "
            "Pass one of these names as method=..."
        )
    import pytorch_grad_cam

    return key, getattr(pytorch_grad_cam, _METHODS[key])


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def list_stages(model: nn.Module) -> list[str]:
    """The stages Grad-CAM can target, in forward order: the model's ``stage_names``, else its top-level
    children that hold a convolution (inside a lone container such as ``features``, its children)."""
    from ...models import get_stages

    if getattr(model, "stage_names", None):
        return list(get_stages(model))
    prefix, module = "", model
    while True:
        convs = [(n, m) for n, m in module.named_children() if _has_conv(m)]
        if len(convs) != 1 or not list(convs[0][1].children()):
            return [prefix + n for n, _ in convs]
        prefix, module = f"{prefix}{convs[0][0]}.", convs[0][1]


def _input_channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return int(getattr(model, "in_channels", None) or (conv.in_channels if conv is not None else 3))


def default_stage(model: nn.Module, input_size=None) -> str:
    """The default Grad-CAM stage of any model: the last of :func:`list_stages` whose feature map is
    larger than 1x1 at the model's input size, as pytorch-grad-cam users pick ``model.layer4[-1]``.

    ``input_size``: (C, H, W), or a batch of images (its size is used); default (the model's input
    channels, 32, 32). torchvision's resnet18 at 32x32 gives 'layer3' (layer4 is 1x1 there).
    """
    names = list_stages(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no convolutional stage to explain; pass the layer as a "
                         "module of the model, e.g. stages=[model.features[-1]]")
    if isinstance(input_size, torch.Tensor):
        x = (input_size if input_size.ndim == 4 else input_size[None])[:1].detach().float()
    else:
        c, h, w = input_size if input_size is not None else (_input_channels(model), 32, 32)
        x = torch.zeros(1, int(c), int(h), int(w))
    sizes = _map_sizes(model, x.to(model_device(model)), {n: resolve_stage(model, n) for n in names})
    for name in reversed(names):
        if name in sizes and sizes[name][0] * sizes[name][1] > 1:
            return name
    raise ValueError(f"no stage of {type(model).__name__} ({', '.join(names)}) has a feature map larger than 1x1 "
                     f"on {x.shape[-2]}x{x.shape[-1]} images: pass larger images (input_size=) or a layer module")


def resolve_stage(model: nn.Module, stage: str | nn.Module) -> nn.Module:
    """The sub-module called ``stage`` (registry stage name, or a dotted attribute path).

    Models that declare ``stage_names`` go through ``woollylib.models.get_stage``; any module also
    accepts ``model.get_submodule(stage)`` paths, so ``"layer3"`` or ``"layer3.1"`` both work.
    A missing stage raises ValueError listing the model's stages, with the closest as a suggestion.
    """
    if isinstance(stage, nn.Module):
        return stage
    stage = str(stage)
    if getattr(model, "stage_names", None):
        from ...models import get_stage

        with contextlib.suppress(ValueError, KeyError, AttributeError):
            return get_stage(model, stage)
    if stage:
        with contextlib.suppress(AttributeError):
            return model.get_submodule(stage)
    stages = list_stages(model)
    close = difflib.get_close_matches(stage, stages, n=1, cutoff=0.5)
    raise ValueError(
        f"{type(model).__name__} has no stage {stage!r}{f'; did you mean {close[0]!r}?' if close else '.'} "
        f"Its stages: {', '.join(stages) or 'none with a convolution'}. Pass one of these (or a dotted "
        "path such as 'layer3.1', or a module such as model.layer3[-1]) as stages=..."
    )


@contextlib.contextmanager
def explain_mode(model: nn.Module):
    """Eval mode with gradients enabled; restores mode, requires_grad flags and ``.grad`` after.

    Parameters are frozen inside, so explaining a batch never touches the optimiser's gradients
    and skips the weight-gradient work; gradients still flow to the activations through the input.
    """
    params = list(model.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with evaluating(model), torch.enable_grad():
            yield model
    finally:
        for p, flag, grad in saved:
            p.requires_grad_(flag)
            p.grad = grad


def _targets(targets, n: int, num_outputs: int | None):
    if targets is None:
        return None
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if isinstance(targets, int | np.integer):
        labels = [int(targets)] * n
    else:
        labels = [int(t) for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]
    if len(labels) != n:
        raise ValueError(
            f"targets has {len(labels)} labels for {n} images: give one class index per image "
            "(or None to explain the predicted class)."
        )
    if num_outputs is not None and any(not 0 <= t < num_outputs for t in labels):
        raise ValueError(
            f"targets must be class indices in [0, {num_outputs}); got {sorted(set(labels))}."
        )
    return [ClassifierOutputTarget(t) for t in labels]


def _map_sizes(model: nn.Module, x: torch.Tensor, modules: dict) -> dict:
    """Spatial (H, W) of each module's output for input ``x`` (one no-grad forward; non-maps left out)."""
    sizes, hooks = {}, []
    for name, module in modules.items():
        def hook(_m, _i, output, name=name):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                sizes.setdefault(name, tuple(output.shape[-2:]))
        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sizes


def _warn_single_pixel_maps(model: nn.Module, x: torch.Tensor, layers: dict) -> dict:
    """Warn for a stage whose feature map is 1x1 at this input size: its CAM is one number, so the
    scaled heatmap is all zero. Names the deepest stage with a larger map. Returns the map sizes."""
    import warnings

    candidates = {}
    for name in list_stages(model):
        with contextlib.suppress(ValueError):
            candidates[name] = resolve_stage(model, name)
    sizes = _map_sizes(model, x, {**candidates, **layers})
    for name in layers:
        if sizes.get(name) == (1, 1):
            larger = [n for n in candidates if n in sizes and sizes[n][0] * sizes[n][1] > 1]
            hint = (f"; use a stage with a larger map, such as {larger[-1]!r} ({sizes[larger[-1]][0]}x"
                    f"{sizes[larger[-1]][1]})") if larger else "; use an earlier stage or larger images"
            warnings.warn(
                f"stage {name!r} has a 1x1 feature map on {x.shape[-2]}x{x.shape[-1]} images: its heatmaps "
                f"are constant (all zero after scaling){hint}", UserWarning, stacklevel=3)
    return sizes


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    stages: str | nn.Module | Iterable[str | nn.Module] = ("layer3",),
    method: str = "gradcam",
    targets: Sequence[int] | torch.Tensor | np.ndarray | int | None = None,
    *,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
) -> dict[str, np.ndarray]:
    """Class-activation maps of a batch for each stage.

    Args:
        model: classifier returning logits (B, K).
        images: normalised input batch (B, C, H, W) or one image (C, H, W); moved to the model's device.
        stages: stage name(s) (``"layer3"``) or modules; see :func:`resolve_stage`.
        method: one of :func:`list_cam_methods`.
        targets: class index per image (e.g. the true labels); ``None`` explains the prediction.
        aug_smooth / eigen_smooth: pytorch_grad_cam's test-time-augmentation / SVD smoothing.

    Returns:
        ``{stage_name: float32 array (B, H, W)}``, each map scaled to [0, 1] per image, at input
        resolution. Module stages are keyed by their qualified name in the model.
    """
    key, cam_class = _method_class(method)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, H, W); got {type(images).__name__}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W); got {tuple(images.shape)}.")
    if isinstance(stages, str | nn.Module):
        stages = [stages]
    stages = list(stages)
    if not stages:
        raise ValueError("stages is empty: name at least one stage, e.g. stages=('layer3',).")
    module_names = {id(m): n for n, m in model.named_modules()}
    layers = {}
    for stage in stages:  # resolve all first, so a bad name fails before any work
        name = stage if isinstance(stage, str) else module_names.get(id(stage), type(stage).__name__)
        layers[name] = resolve_stage(model, stage)

    device = model_device(model)
    # a fresh leaf that requires grad: gradients reach the stages even with frozen parameters
    x = images.detach().to(device).clone().requires_grad_(True)
    sizes = _warn_single_pixel_maps(model, x[:1].detach(), layers)
    out: dict[str, np.ndarray] = {}
    with explain_mode(model):
        cam_targets = None
        if targets is not None:
            with torch.no_grad():
                num_outputs = model(x[:1]).shape[-1]
            cam_targets = _targets(targets, x.shape[0], num_outputs)
        for name, layer in layers.items():
            with cam_class(model=model, target_layers=[layer]) as cam:
                if key == "scorecam":
                    cam.batch_size = 64  # masked images per forward pass
                try:
                    maps = cam(
                        input_tensor=x,
                        targets=cam_targets,
                        aug_smooth=aug_smooth,
                        eigen_smooth=eigen_smooth,
                    )
                except IndexError as err:  # the library's __exit__ would swallow an IndexError
                    raise ValueError(f"{method} failed on stage {name!r}: {err}") from err
            out[name] = np.asarray(maps, dtype=np.float32)
    _warn_constant_maps(out, sizes)
    return out


def _warn_constant_maps(cams: dict[str, np.ndarray], sizes: dict) -> None:
    """Warn for a stage (with more than one pixel: 1x1 maps are warned about before) whose heatmaps are
    constant, so the figure shows nothing: the stage's gradients or activations are zero for those images."""
    import warnings

    for name, maps in cams.items():
        if sizes.get(name) == (1, 1) or maps.size == 0:
            continue
        flat = maps.reshape(len(maps), -1)
        constant = int((flat.max(axis=1) - flat.min(axis=1) == 0).sum())
        if constant:
            warnings.warn(
                f"stage {name!r} gave a constant heatmap for {constant} of {len(maps)} image(s): its gradients or "
                "activations are zero there, so the overlay shows nothing; try another stage or method "
                "(e.g. method='eigencam', which needs no gradients)", UserWarning, stacklevel=3)


def overlay(image, cam: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Heatmap ``cam`` (H, W) in [0, 1] blended over a pixel-space image.

    Args:
        image: (H, W, 3) or (H, W) array in [0, 1] (uint8 is divided by 255), or a (3, H, W) /
            (H, W, 3) tensor in [0, 1]. De-normalise first (``data.denormalize(x)``).
        alpha: weight of the heatmap (0 = image only, 1 = heatmap only).
        colormap: an OpenCV colormap name (``"jet"``, ``"turbo"``, ``"inferno"``...).

    Returns:
        float32 (H, W, 3) RGB in [0, 1].
    """
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    check_range("alpha", alpha, 0, 1, closed="[]", hint="the heatmap weight: 0 = image only, 1 = heatmap only")
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = np.clip(img.astype(np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != img.shape[:2]:
        raise ValueError(
            f"cam shape {cam.shape} does not match image size {img.shape[:2]}: use maps from "
            "compute_cams on the same images."
        )
    cmap = getattr(cv2, f"COLORMAP_{colormap.upper()}", None)
    if cmap is None:
        raise ValueError(f"Unknown OpenCV colormap {colormap!r}; try 'jet', 'turbo' or 'inferno'.")
    blended = show_cam_on_image(img, np.clip(cam, 0.0, 1.0), use_rgb=True, colormap=cmap,
                                image_weight=1.0 - alpha)
    return blended.astype(np.float32) / 255.0
