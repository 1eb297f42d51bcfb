"""Mixed-precision training and testing: thin names over the one engine.

    from woollylib.bp import autocast
    scaler = autocast.make_scaler(device)        # GradScaler for fp16 on CUDA, None for bf16/CPU
    stats = autocast.train(model, loader, optimizer, device=device, scaler=scaler, scheduler=sched)
    test = autocast.test(model, test_loader, device=device)

``amp=True`` means fp16 + GradScaler on CUDA and bf16 on other devices; pass ``amp="bf16"`` for
bf16 on CUDA (no scaler needed). Skipped fp16 steps do not advance the scheduler.
"""

from __future__ import annotations

from . import engine
from .engine import evaluate, train_epoch

__all__ = ["make_scaler", "test", "train"]


def make_scaler(device, amp=True):
    """``engine.make_scaler``: a GradScaler when ``amp`` means fp16 on ``device``, else None."""
    return engine.make_scaler(device, amp)


def train(model, loader, optimizer, *, device, amp=True, **kw) -> dict:
    """One mixed-precision epoch: ``engine.train_epoch(..., amp=amp)``."""
    if amp is False:
        raise ValueError("bp.autocast.train is the mixed-precision entry point; use bp.vanilla.train for fp32")
    return train_epoch(model, loader, optimizer, device=device, amp=amp, **kw)


def test(model, loader, *, device, amp=True, **kw) -> dict:
    """``engine.evaluate`` under autocast."""
    return evaluate(model, loader, device=device, amp=amp, **kw)
