"""Devices, seeding, and a model's device and train/eval mode. Nothing here runs at import time.

    from woollylib.device import select_device, resolve_device, seed_everything, model_device, evaluating
    device = select_device()                 # cuda > mps > cpu, printed
    device = resolve_device("auto")          # the same, silent; a name is checked for availability
    seed_everything(0)                       # python, numpy, torch (all devices)
    model_device(model)                      # where its parameters (or buffers) live; cpu if none
    with evaluating(model):                  # eval mode inside; every module's own mode restored
        logits = model(images)
    with kept_mode(model):                   # any mode changes inside are undone on exit
        ...
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn

from ._checks import check_int

__all__ = ["as_device", "evaluating", "kept_mode", "model_device", "resolve_device", "seed_everything",
           "select_device"]


def select_device(prefer: str | None = None, verbose: bool = True) -> torch.device:
    """Pick the best available device: CUDA, then Apple MPS, then CPU, and print the choice.

    ``prefer`` forces a device ("cpu", "cuda", "cuda:1", "mps"); asking for one that is not
    available raises a ``ValueError`` that says what is available.
    """
    if prefer is not None:
        device = resolve_device(prefer)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if verbose:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            print(f"Using device: {device} ({torch.cuda.get_device_name(index)})")
        else:
            print(f"Using device: {device}")
    return device


def _available() -> list[str]:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``None``/``"auto"``/a name/a ``torch.device`` into an available ``torch.device``."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return select_device(verbose=False)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use one of {_available()} or 'auto'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; available: {_available()}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist; available: {_available()}")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r} requested but MPS is not available; available: {_available()}")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; available: {_available()}")
    return dev


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy and PyTorch (all devices); return the seed.

    ``deterministic=True`` also asks cuDNN for deterministic kernels (slower on GPU).
    """
    seed = int(check_int("seed", seed, minimum=0))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def as_device(device) -> torch.device:
    """A ``torch.device`` from a name or device; None/"auto" picks one like :func:`resolve_device`.
    Unlike ``resolve_device`` a name is not checked for availability (the first use of it is)."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return resolve_device(device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'mps' or a torch.device") from exc


def model_device(model: nn.Module, device=None) -> torch.device:
    """``device`` resolved when given; else the device of the model's first parameter (or buffer),
    and the CPU for a model that has neither."""
    if device is not None:
        return resolve_device(device)
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def kept_mode(model: nn.Module):
    """Undo, on exit, any train/eval change made inside: every module gets its own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``model.eval()`` inside the block; on exit every module is back in its own train/eval mode."""
    with kept_mode(model):
        model.eval()
        yield model
