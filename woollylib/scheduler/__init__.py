"""Learning-rate schedulers by name, and the LR range test.

    from woollylib import scheduler
    sched = scheduler.one_cycle(opt, max_lr=0.05, epochs=24, steps_per_epoch=len(train_loader),
                                pct_start=5 / 24)          # stepped by the engine, once per batch
    sched = scheduler.get_scheduler("plateau", opt)        # or "onecycle" / "none"
    scheduler.scheduler_steps_per_batch(sched)             # True -> the engine steps it per batch
    scheduler.step_epoch_scheduler(sched, test_loss)       # per-epoch ones: after evaluation

    result = scheduler.find_lr(model, train_loader, device=device, end_lr=10, num_iter=100)
    result.suggestion, result.method, result.lrs, result.losses   # curve for utils.visualize

Modules: ``schedules`` (OneCycle, plateau, by name), ``lr_finder`` (the range test and the
suggestion). The per-batch stepping rules live with the engine, in ``woollylib.bp.schedule``.
"""

from __future__ import annotations

from ..bp.schedule import scheduler_steps_per_batch, step_epoch_scheduler
from .lr_finder import (
    DEFAULT_SUGGESTION,
    MIN_POINTS,
    SUGGESTIONS,
    LRCurveTooShortError,
    LRFinderResult,
    find_lr,
    suggest_lr,
)
from .schedules import get_scheduler, list_schedulers, one_cycle, reduce_on_plateau

__all__ = [
    "DEFAULT_SUGGESTION",
    "MIN_POINTS",
    "SUGGESTIONS",
    "LRCurveTooShortError",
    "LRFinderResult",
    "find_lr",
    "get_scheduler",
    "list_schedulers",
    "one_cycle",
    "reduce_on_plateau",
    "scheduler_steps_per_batch",
    "step_epoch_scheduler",
    "suggest_lr",
]
