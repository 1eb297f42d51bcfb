"""RICAP training: the engine with ``ricap_beta`` on, and the batch-mixing functions it uses.

    from woollylib.bp import ricap
    stats = ricap.train(model, loader, optimizer, device=device, beta=0.3, scheduler=sched)

    mixed, labels_k, weights = ricap.ricap_batch(images, labels, beta=0.3)
    out = model(mixed)                                  # ONE forward of B images
    loss = ricap.ricap_loss(criterion, out, labels_k, weights)

The mixing itself (draws, patch sizes, weights) is described in ``woollylib.bp.mixing``.
"""

from __future__ import annotations

from .engine import train_epoch
from .mixing import (
    DEFAULT_BETA,
    RicapDraws,
    ricap_batch,
    ricap_correct,
    ricap_draws,
    ricap_loss,
)

__all__ = ["DEFAULT_BETA", "RicapDraws", "ricap_batch", "ricap_correct", "ricap_draws", "ricap_loss", "train"]


def train(model, loader, optimizer, *, device, beta: float = DEFAULT_BETA, **kw) -> dict:
    """One RICAP training epoch: ``engine.train_epoch(..., ricap_beta=beta)``."""
    return train_epoch(model, loader, optimizer, device=device, ricap_beta=beta, **kw)
