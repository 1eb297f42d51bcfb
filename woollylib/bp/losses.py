"""Losses for the engine: cross-entropy with torch's label smoothing, and an L1 weight penalty.

    from woollylib.bp import losses
    criterion = losses.cross_entropy(label_smoothing=0.1)          # mean over the batch
    loss = criterion(logits, labels) + 1e-5 * losses.l1_penalty(model)

Label smoothing follows ``nn.CrossEntropyLoss(label_smoothing=a)``: the target class gets
``1 - a + a/K`` and every other class ``a/K`` (K classes), and ``reduction`` is honoured.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_range

__all__ = ["REDUCTIONS", "cross_entropy", "l1_penalty"]

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(label_smoothing: float = 0.0, reduction: str = "mean") -> nn.CrossEntropyLoss:
    """Cross-entropy on logits with torch's label smoothing (``0 <= label_smoothing < 1``)."""
    check_range("label_smoothing", label_smoothing, 0, 1, hint="0 turns it off; 0.1 is usual")
    check_choice("reduction", reduction, REDUCTIONS)
    return nn.CrossEntropyLoss(label_smoothing=float(label_smoothing), reduction=reduction)


def l1_penalty(model: nn.Module, include_bias: bool = True) -> torch.Tensor:
    """Sum of absolute values of the trainable parameters (a differentiable scalar tensor).

    Multiply by a small coefficient (1e-6..1e-4) and add it to the loss; the engine does this for
    its ``l1=`` option. ``include_bias=False`` leaves 1-D parameters (biases, norm scales) out.
    """
    params = [p for p in model.parameters() if p.requires_grad and (include_bias or p.ndim > 1)]
    if not params:
        raise ValueError("l1_penalty: the model has no trainable parameters to penalise")
    return torch.stack([p.abs().sum() for p in params]).sum()
