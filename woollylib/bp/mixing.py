"""RICAP batch mixing (Random Image Cropping And Patching, Takahashi et al., 2018): the draws,
the patched batch, and the mixed loss and accuracy. ``bp.ricap`` is the training entry point.

    from woollylib.bp.mixing import ricap_batch, ricap_loss, ricap_correct
    mixed, labels_k, weights = ricap_batch(images, labels, beta=0.3)
    out = model(mixed)                                  # ONE forward of B images
    loss = ricap_loss(criterion, out, labels_k, weights)
    correct = ricap_correct(out, labels_k, weights)     # area-weighted count

Per batch (images B x C x I_x x I_y, I_x = dim 2, I_y = dim 3): w = round(I_x * Beta(b, b)),
h = round(I_y * Beta(b, b)); the four patches have sizes (w, h), (I_x - w, h), (w, I_y - h),
(I_x - w, I_y - h); patch k is cropped at a random offset from its own random permutation of the
batch; the patches are tiled (0 | 1 along dim 2 on top, 2 | 3 below along dim 3);
weight_k = area_k / (I_x * I_y); loss = sum_k weight_k * CE(out, labels_k), and accuracy is mixed
with the same weights. All draws are host-side (numpy), in the paper's reference order, so
nothing here waits for the GPU; with ``generator=None`` the global ``np.random`` state is used, so
``seed_everything`` makes RICAP reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_positive

__all__ = ["DEFAULT_BETA", "RicapDraws", "check_beta", "ricap_batch", "ricap_correct", "ricap_draws", "ricap_loss"]

DEFAULT_BETA = 0.3  # Beta(b, b) parameter of the paper; small b -> mostly one dominant patch


@dataclass(frozen=True)
class RicapDraws:
    """The random numbers of one RICAP batch: patch sizes, crop offsets and permutations."""

    sizes: tuple[tuple[int, int], ...]    # (size along dim 2, size along dim 3) of patches 0..3, pixels
    offsets: tuple[tuple[int, int], ...]  # crop corner (dim 2, dim 3) of patch k in its source image
    perms: np.ndarray                     # (4, B) int64: source image of each output image, per patch


def check_beta(beta) -> float:
    """``beta`` as a float if it is a number > 0."""
    return float(check_positive("RICAP beta", beta, hint="the paper uses 0.3"))


def ricap_draws(batch_size: int, size_x: int, size_y: int, beta: float = DEFAULT_BETA,
                generator: np.random.Generator | None = None) -> RicapDraws:
    """Draw RICAP's random numbers in the reference order (beta, beta, then per patch: permutation,
    x offset, y offset). ``generator`` is a ``numpy.random.Generator`` or None."""
    beta = check_beta(beta)
    rng = generator
    beta_fn = np.random.beta if rng is None else rng.beta
    perm_fn = np.random.permutation if rng is None else rng.permutation
    int_fn = np.random.randint if rng is None else rng.integers
    w = int(np.round(size_x * beta_fn(beta, beta)))
    h = int(np.round(size_y * beta_fn(beta, beta)))
    sizes = ((w, h), (size_x - w, h), (w, size_y - h), (size_x - w, size_y - h))
    perms, offsets = [], []
    for wk, hk in sizes:
        perms.append(perm_fn(batch_size))
        offsets.append((int(int_fn(0, size_x - wk + 1)), int(int_fn(0, size_y - hk + 1))))
    return RicapDraws(sizes=sizes, offsets=tuple(offsets), perms=np.stack(perms).astype(np.int64))


def ricap_batch(images: torch.Tensor, labels: torch.Tensor, beta: float = DEFAULT_BETA,
                generator: np.random.Generator | None = None):
    """Patch four random crops of four permutations of the batch into B new images.

    Returns ``(mixed_images (B, C, I_x, I_y), [labels_k] * 4, [weight_k] * 4)``; weights are Python
    floats (area fractions) that sum to 1.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"RICAP needs images of shape (B, C, H, W), got {getattr(images, 'shape', type(images))}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"RICAP needs labels of shape ({images.shape[0]},), got {getattr(labels, 'shape', None)}")
    size_x, size_y = images.shape[2], images.shape[3]
    draws = ricap_draws(images.shape[0], size_x, size_y, beta, generator)
    perms = torch.from_numpy(draws.perms).to(images.device, non_blocking=True)  # one small copy
    crops, labels_k, weights = [], [], []
    for k, ((wk, hk), (xk, yk)) in enumerate(zip(draws.sizes, draws.offsets)):
        crops.append(images[:, :, xk:xk + wk, yk:yk + hk][perms[k]])
        labels_k.append(labels[perms[k]])
        weights.append(wk * hk / (size_x * size_y))
    mixed = torch.cat((torch.cat((crops[0], crops[1]), 2), torch.cat((crops[2], crops[3]), 2)), 3)
    return mixed, labels_k, weights


def ricap_loss(criterion, output: torch.Tensor, labels_k, weights) -> torch.Tensor:
    """sum_k weight_k * criterion(output, labels_k) (criterion returns the batch mean)."""
    return sum(w * criterion(output, lab) for w, lab in zip(weights, labels_k))


def ricap_correct(output: torch.Tensor, labels_k, weights) -> torch.Tensor:
    """Weighted count of correct predictions: sum_k weight_k * #(argmax(output) == labels_k)."""
    pred = output.argmax(1)
    return sum(w * (pred == lab).sum() for w, lab in zip(weights, labels_k))

