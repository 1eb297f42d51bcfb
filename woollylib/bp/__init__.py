"""Backpropagation: one engine with switches, thin named entry points, losses and optimizers.

    from woollylib import bp
    opt = bp.get_optimizer("sgd", model, lr=0.05, weight_decay=5e-4, nesterov=True)
    stats = bp.train_epoch(model, loader, opt, device=device, amp=True, ricap_beta=0.3)
    test = bp.evaluate(model, test_loader, device=device)

Modules: ``engine`` (the loop), ``vanilla`` / ``autocast`` / ``ricap`` (thin entry points),
``mixing`` (RICAP's batch mixing), ``schedule`` (per-batch scheduler stepping), ``losses``
(label-smoothed cross-entropy, L1 penalty), ``optimizer`` (optimizers by name).
"""

from __future__ import annotations

from ..errors import NonFiniteLossError
from . import autocast, engine, losses, mixing, optimizer, ricap, schedule, vanilla
from .engine import EngineConfig, evaluate, make_scaler, train_epoch, unpack_batch
from .losses import cross_entropy, l1_penalty
from .mixing import ricap_batch
from .optimizer import get_optimizer, list_optimizers
from .schedule import scheduler_steps_per_batch, step_epoch_scheduler

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
    "mixing",
    "optimizer",
    "ricap",
    "ricap_batch",
    "schedule",
    "scheduler_steps_per_batch",
    "step_epoch_scheduler",
    "train_epoch",
    "unpack_batch",
    "vanilla",
]
