"""Device selection and seeding. Nothing here runs at import time."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "select_device"]


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
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed
