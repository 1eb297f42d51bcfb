"""What every woollylib model shares: input checks, named stages, and a summary table.

    from woollylib.models import get_model, get_stages, get_stage, summary
    model = get_model("custom_resnet")
    list(get_stages(model))          # ['prep', 'layer1', 'layer2', 'layer3']
    get_stage(model, "layer3")       # the module Grad-CAM should hook
    summary(model)                   # prints the torchsummary table, returns parameter counts
"""

from __future__ import annotations

import contextlib
import difflib
import io

import torch
from torch import nn

from .._checks import check_int, is_int
from ..device import evaluating, model_device


def check_num_classes(num_classes) -> int:
    if not is_int(num_classes):
        raise TypeError(
            f"num_classes must be an int, got {type(num_classes).__name__} {num_classes!r}: "
            "pass the number of classes, e.g. num_classes=10"
        )
    if num_classes < 1:
        raise ValueError(
            f"num_classes must be at least 1, got {num_classes}: pass the number of classes of "
            "your data set (10 for CIFAR-10)"
        )
    return num_classes


class ImageClassifier(nn.Module):
    """Base class: subclasses set `stage_names` and call `self.check_input(x)` in `forward`.

    `forward` returns raw logits (B, num_classes) in every subclass; no softmax.
    """

    stage_names: tuple[str, ...] = ()

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        check_int("in_channels", in_channels, hint="3 for RGB")
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = in_channels

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless `x` is a (B, in_channels, H, W) batch."""
        if x.dim() == 4 and x.shape[1] == self.in_channels:
            return
        if x.dim() == 3:
            fix = "add a batch dimension with x.unsqueeze(0)"
        elif x.dim() == 4:
            fix = f"build the model with in_channels={x.shape[1]} or convert the images"
        else:
            fix = "pass images as (B, C, H, W)"
        raise ValueError(
            f"{type(self).__name__} expects a batch of shape (B, {self.in_channels}, H, W), "
            f"got {tuple(x.shape)}: {fix}"
        )


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside torch.compile / DataParallel / DistributedDataParallel wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def get_stages(model: nn.Module) -> dict[str, nn.Module]:
    """The model's named stages in forward order, e.g. {'layer1': ..., 'layer4': ...}.

    Works on any module that declares `stage_names` (every registered model does).
    """
    inner = _unwrap(model)
    names = getattr(inner, "stage_names", ())
    if not names:
        raise ValueError(
            f"{type(inner).__name__} declares no stage_names: use a model from "
            "woollylib.models.get_model, or set `stage_names = ('layer1', ...)` on your class"
        )
    return {n: getattr(inner, n) for n in names}


def get_stage(model: nn.Module, name: str) -> nn.Module:
    """The stage called `name` ("layer3"); ValueError listing the model's stages otherwise.

    For a model without `stage_names`, a dotted submodule path ("features.7") is accepted too.
    """
    inner = _unwrap(model)
    names = tuple(getattr(inner, "stage_names", ()))
    if name in names:
        return getattr(inner, name)
    if not names:
        with contextlib.suppress(AttributeError):
            return inner.get_submodule(name)
    have = ", ".join(names) if names else "none declared"
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    raise ValueError(
        f"{type(inner).__name__} has no stage {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
        f"its stages are: {have}. "
        "Pick one of those (later stages see more of the image, earlier ones are sharper)"
    )


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{'total': all parameters, 'trainable': those with requires_grad} (shared ones counted once)."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def summary(model: nn.Module, input_size=(3, 32, 32), device=None, print_fn=print) -> dict[str, int]:
    """Print the torchsummary table of `model` and return {'total': ..., 'trainable': ...}.

    Runs on the model's own device (torchsummary defaults to CUDA, which breaks on CPU-only or
    mixed machines), in eval mode so BatchNorm statistics are not touched, and restores the
    model's train/eval mode afterwards. `input_size` is (C, H, W) without the batch dimension.
    Devices other than cpu/cuda (mps, ...) are summarised on a CPU copy of the model.
    """
    from torchsummary import summary as ts_summary

    inner = _unwrap(model)
    device = torch.device(device) if device is not None else model_device(inner)
    target = inner
    if device.type not in ("cpu", "cuda"):
        import copy

        target, device = copy.deepcopy(inner).cpu(), torch.device("cpu")
    buf = io.StringIO()
    cuda_ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with evaluating(target), cuda_ctx, torch.no_grad(), contextlib.redirect_stdout(buf):
        ts_summary(target, tuple(input_size), device=device.type)
    print_fn(buf.getvalue().rstrip("\n"))
    return count_parameters(inner)
