"""Which schedulers the engine steps per batch, when it may step them, and per-epoch stepping.

    from woollylib.bp.schedule import scheduler_steps_per_batch, step_epoch_scheduler, can_step
    scheduler_steps_per_batch(sched)        # True: OneCycleLR/CyclicLR, or steps_per_batch = True
    can_step(sched)                         # False once OneCycleLR reached its last step
    step_epoch_scheduler(sched, test_loss)  # after evaluation; a no-op for per-batch schedulers

The engine (``train_epoch``) steps per-batch schedulers after every optimizer step that was not
skipped, never past ``total_steps - 1``; per-epoch ones (ReduceLROnPlateau) are the caller's.
"""

from __future__ import annotations

from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, ReduceLROnPlateau

__all__ = ["can_step", "scheduler_steps_per_batch", "step_epoch_scheduler"]

_PER_BATCH_TYPES = (OneCycleLR, CyclicLR)


def scheduler_steps_per_batch(scheduler) -> bool:
    """True if ``scheduler`` is stepped after every batch (OneCycleLR, CyclicLR, or anything with a
    ``steps_per_batch = True`` attribute), False if once per epoch (or None)."""
    if scheduler is None:
        return False
    flag = getattr(scheduler, "steps_per_batch", None)
    if flag is not None:
        return bool(flag)
    return isinstance(scheduler, _PER_BATCH_TYPES)


def can_step(scheduler) -> bool:
    """False once a scheduler with ``total_steps`` (OneCycleLR) reached its last step."""
    total = getattr(scheduler, "total_steps", None)
    return total is None or scheduler.last_epoch < total - 1


def step_epoch_scheduler(scheduler, metric: float | None = None) -> None:
    """Step a per-epoch scheduler after evaluation (ReduceLROnPlateau needs ``metric``, the test
    loss); does nothing for None or per-batch schedulers (the engine steps those)."""
    if scheduler is None or scheduler_steps_per_batch(scheduler):
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        if metric is None:
            raise ValueError("ReduceLROnPlateau needs the epoch's validation (or training) loss: step_epoch_scheduler(sched, val_loss)")
        scheduler.step(metric)
    else:
        scheduler.step()
