"""Plain fp32 training and testing: thin names over the one engine.

    from woollylib.bp import vanilla
    stats = vanilla.train(model, train_loader, optimizer, device=device, scheduler=sched, epoch=0)
    test = vanilla.test(model, test_loader, device=device)   # {'loss', 'acc', 'samples'}
"""

from __future__ import annotations

from .engine import evaluate, train_epoch

__all__ = ["test", "train"]


def train(model, loader, optimizer, *, device, **kw) -> dict:
    """One fp32 epoch: ``engine.train_epoch(..., amp=False)`` (other engine options pass through)."""
    return train_epoch(model, loader, optimizer, device=device, amp=False, **kw)


def test(model, loader, *, device, **kw) -> dict:
    """``engine.evaluate`` in fp32."""
    return evaluate(model, loader, device=device, amp=False, **kw)
