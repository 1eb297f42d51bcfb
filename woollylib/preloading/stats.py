"""Per-channel statistics on the [0, 1] scale, computed in chunks (no float copy of the dataset).

Usage::

    from woollylib.preloading import channel_stats, load_source
    stats = channel_stats(load_source("digits"))   # prints a [digits-train] block: count, shape, min..var
    stats["mean"], stats["std"]                      # (r, g, b) tuples of floats in [0, 1]

std and var are population values (ddof=0, numpy's default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "channel_stats"]

# CIFAR-10 train split, [0, 1] scale (channel_stats of load_cifar10(train=True))
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_CHUNK = 2048  # images per chunk: 2048 * 32*32*3 values


def _uint8_stats(x: np.ndarray, chunk: int) -> dict[str, tuple[float, ...]]:
    # exact: a 256-bin histogram per channel, accumulated chunk by chunk
    hist = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].reshape(-1, 3)
        for c in range(3):
            hist[c] += np.bincount(block[:, c], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1).astype(np.float64)
    mean = (hist * values).sum(axis=1) / n
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
    lo = np.array([values[np.flatnonzero(h)[0]] for h in hist])
    hi = np.array([values[np.flatnonzero(h)[-1]] for h in hist])
    return _pack(mean, var, lo, hi)


def _float_stats(x: np.ndarray, chunk: int) -> dict[str, tuple[float, ...]]:
    # two passes in float64, one chunk at a time: the mean, then the squared deviations
    total = np.zeros(3)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    count = 0
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].reshape(-1, 3).astype(np.float64)
        total += block.sum(axis=0)
        lo, hi = np.minimum(lo, block.min(axis=0)), np.maximum(hi, block.max(axis=0))
        count += len(block)
    mean = total / count
    sq = np.zeros(3)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].reshape(-1, 3).astype(np.float64)
        sq += ((block - mean) ** 2).sum(axis=0)
    return _pack(mean, sq / count, lo, hi)


def _pack(mean, var, lo, hi) -> dict[str, tuple[float, ...]]:
    def t(a):
        return tuple(float(v) for v in a)

    return {"mean": t(mean), "std": t(np.sqrt(var)), "var": t(var), "min": t(lo), "max": t(hi)}


def channel_stats(
    source_or_images: Any, verbose: bool = True, label: str | None = None, chunk_size: int = _CHUNK
) -> dict[str, tuple[float, float, float]]:
    """Mean, std, var, min, max per channel (r, g, b) on the [0, 1] scale.

    source_or_images: an ImageSource, or an array (N, H, W, 3) that is uint8 (0-255) or float (0-1).
    Returns ``dict(mean=(r, g, b), std=..., var=..., min=..., max=...)`` of Python floats and, when
    ``verbose``, prints them (image count, shape, then min, max, mean, std, var per channel).
    """
    obj = source_or_images
    images = getattr(obj, "images", None)
    if images is None:  # torchvision datasets keep their images in .data (an ndarray's .data is its buffer)
        images = obj if isinstance(obj, np.ndarray) or hasattr(obj, "detach") else getattr(obj, "data", obj)
    name = label or getattr(obj, "name", None) or (type(obj).__name__ if hasattr(obj, "data") else "images")
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray) and not isinstance(images, (list, tuple)):
        raise TypeError(
            f"channel_stats needs images: an ImageSource, an array (N, H, W, 3), or a dataset with .data "
            f"(a torchvision CIFAR10); got a {type(obj).__name__}"
        )
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"channel_stats needs RGB images of shape (N, H, W, 3), got {images.shape}; "
            "convert with from_arrays(images, labels) first (grayscale: repeat the channel 3 times)"
        )
    if len(images) == 0:
        raise ValueError("channel_stats got an empty image set (N = 0)")
    if images.dtype == np.uint8:
        stats = _uint8_stats(images, chunk_size)
    elif np.issubdtype(images.dtype, np.floating):
        stats = _float_stats(images, chunk_size)
    else:
        raise TypeError(f"images must be uint8 (0-255) or float (0-1), got dtype {images.dtype}")
    if verbose:
        print(f"[{name}]")
        print(f" - Total {name} Images: {len(images)}")
        print(f" - Image Shape: {tuple(images.shape[1:])} (H, W, C)")
        for key in ("min", "max", "mean", "std", "var"):
            print(f" - {key}: {tuple(round(v, 4) for v in stats[key])}")
    return stats
