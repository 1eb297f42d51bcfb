"""Backpropagation: one engine with switches, thin named entry points, losses and optimizers.

    from woollylib import bp
    opt = bp.get_optimizer("sgd", model, lr=0.05, weight_decay=5e-4, nesterov=True)
    stats = bp.train_epoch(model, loader, opt, device=device, amp=True, ricap_beta=0.3)
    test = bp.evaluate(model, test_loader, device=device)

Modules: ``engine`` (the loop), ``vanilla`` / ``autocast`` / ``ricap`` (thin entry points),
``losses`` (label-smoothed cross-entropy, L1 penalty), ``optimizer`` (optimizers by name).
"""

from __future__ import annotations

from . import autocast, engine, losses, optimizer, ricap, vanilla
from .engine import EngineConfig, NonFiniteLossError, evaluate, make_scaler, train_epoch
from .losses import cross_entropy, l1_penalty
from .optimizer import get_optimizer, list_optimizers
from .ricap import ricap_batch

__all__ = [
    "EngineConfig",
    "NonFiniteLossError",
    "autocast",
    "cross_entropy",
    "engine",
    "evaluate",
    "get_optimizer",
    "l1_penalty",
    "list_optimizers",
    "losses",
    "make_scaler",
    "optimizer",
    "ricap",
    "ricap_batch",
    "train_epoch",
    "vanilla",
]
