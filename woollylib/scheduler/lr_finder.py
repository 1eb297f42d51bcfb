"""The LR range test (torch-lr-finder's) and the learning-rate suggestion from its curve.

    from woollylib.scheduler import find_lr, suggest_lr
    result = find_lr(model, train_loader, device=device, end_lr=10, num_iter=100)
    result.suggestion, result.method, result.lrs, result.losses   # curve for utils.visualize
    lr, index = suggest_lr(result.lrs, result.losses, method="steepest")

Run ``find_lr`` before attaching a scheduler to the optimizer (torch-lr-finder refuses otherwise);
model and optimizer are restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .._checks import check_choice, check_int, check_positive, check_range
from ..bp.engine import unpack_batch
from ..bp.losses import cross_entropy
from ..bp.optimizer import get_optimizer
from ..device import as_device, kept_mode, model_device
from ..errors import LRCurveTooShortError

__all__ = ["DEFAULT_SUGGESTION", "MIN_POINTS", "SUGGESTIONS", "LRCurveTooShortError", "LRFinderResult", "find_lr",
           "suggest_lr"]


@dataclass
class LRFinderResult:
    """Outcome of :func:`find_lr`: the whole curve and the suggested learning rate."""

    lrs: list[float]           # learning rate of each iteration
    losses: list[float]        # smoothed training loss of each iteration
    suggestion: float          # suggested learning rate (use it as max_lr of OneCycle)
    method: str                # the rule: "valley", "steepest" or "minimum"
    index: int                 # position of the suggestion in lrs/losses
    skip_start: int = 0        # points left out at the start when suggesting
    skip_end: int = 0          # points left out at the end when suggesting
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


MIN_POINTS = 3  # fewest points (after skipping) a suggestion is computed from

SUGGESTIONS = ("valley", "steepest", "minimum")  # rules of suggest_lr
DEFAULT_SUGGESTION = "minimum"  # the rule find_lr and main.max_lr use (benchmarks/lr_rules.py)


def _valley(losses) -> int:
    """fastai's "valley": the longest (not necessarily contiguous) strictly decreasing run of the
    loss curve, found by dynamic programming over all earlier points; the suggestion sits a
    little before its middle (start + int(L/3) + int(L/6) with L = its span)."""
    n = len(losses)
    lds = [1] * n  # length of the longest decreasing sequence ending at i
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    # fastai's start is one before the valley when it begins at 0; never wrap around to the end
    return max(0, max_start + int(sections) + int(sections / 2))


def _check_method(method: str) -> str:
    if method not in SUGGESTIONS:
        raise ValueError(f"unknown suggestion method {method!r}; use one of {SUGGESTIONS}")
    return method


def _skips(method: str, n: int, skip_start: int | None, skip_end: int | None) -> tuple[int, int]:
    """Points left out at the start and the end: defaults 10 ("steepest") or n // 10 ("valley"), and 5."""
    start = (10 if method == "steepest" else n // 10) if skip_start is None else skip_start
    end = 5 if skip_end is None else skip_end
    check_int("skip_start", start, minimum=0)
    check_int("skip_end", end, minimum=0)
    return start, end


def suggest_lr(lrs, losses, method: str = DEFAULT_SUGGESTION, skip_start: int | None = None,
               skip_end: int | None = None) -> tuple[float, int]:
    """Suggest a learning rate from a range-test curve; return ``(lr, index into lrs)``.

    "steepest" (torch-lr-finder): the point of most negative ``np.gradient(losses)``, default skip
    10 first / 5 last points. "valley" (fastai): see ``_valley``, default skip ``len // 10`` first /
    5 last points. "minimum" (fastai): a tenth of the lr of the lowest loss (the recorded lr
    nearest to it; a curve whose loss never falls below its start warns and uses "valley"), same
    default skips as "valley". Fewer than 3 points left raises :class:`LRCurveTooShortError` (a ValueError).
    """
    _check_method(method)
    lrs, losses = [float(v) for v in lrs], [float(v) for v in losses]
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} vs {len(losses)})")
    skip_start, skip_end = _skips(method, len(lrs), skip_start, skip_end)
    kept = losses[skip_start:len(losses) - skip_end]
    if len(kept) < MIN_POINTS:
        raise LRCurveTooShortError(
            f"the LR range test curve has {len(losses)} points; after skipping {skip_start} at the start and "
            f"{skip_end} at the end only {len(kept)} remain, fewer than {MIN_POINTS}: raise num_iter, lower "
            "end_lr or raise diverge_th (the test stops early when the loss diverges), or lower skip_start/skip_end",
            lrs, losses)
    if method == "steepest":
        local = int(np.gradient(np.array(kept)).argmin())
    elif method == "minimum" and int(np.argmin(kept)) > 0:
        # the curve's point nearest (log scale) to a tenth of the lowest loss's lr
        target = np.log(lrs[skip_start + int(np.argmin(kept))] / 10)
        index = int(np.argmin(np.abs(np.log(np.array(lrs)) - target)))
        return lrs[index], index
    else:
        if method == "minimum":
            warnings.warn(
                "the LR range test loss never fell below its value at the start of the curve (flat or rising: "
                "raise num_iter or end_lr), so it has no minimum to read; suggesting by 'valley' instead",
                UserWarning, stacklevel=2)
        local = _valley(kept)
    index = skip_start + local
    return lrs[index], index


def _check_range_test(start_lr, end_lr, num_iter, step_mode, suggestion, smooth_f, diverge_th) -> None:
    check_positive("start_lr", start_lr)
    check_positive("end_lr", end_lr)
    if not end_lr > start_lr:
        raise ValueError(f"end_lr ({end_lr}) must be greater than start_lr ({start_lr})")
    check_int("num_iter", num_iter, minimum=2, hint="100 is usual")
    check_choice("step_mode", step_mode, ("exp", "linear"))
    _check_method(suggestion)
    check_range("smooth_f", smooth_f, 0, 1)
    check_positive("diverge_th", diverge_th)


def _range_test_optimizer(model, optimizer, start_lr, optimizer_kw) -> torch.optim.Optimizer:
    """The optimizer to sweep: built by name, or the caller's one if no scheduler is attached to it."""
    if optimizer is None or isinstance(optimizer, str):
        return get_optimizer(optimizer or "sgd", model, lr=start_lr, **optimizer_kw)
    if optimizer_kw:
        raise ValueError(f"optimizer keyword arguments {sorted(optimizer_kw)} only apply when optimizer is a name")
    if any("initial_lr" in group for group in optimizer.param_groups):
        raise ValueError(
            "the optimizer already has a learning-rate scheduler attached (e.g. OneCycleLR): run find_lr "
            "before building the scheduler, or pass a fresh optimizer (or a name such as 'sgd'); then build "
            "the OneCycle scheduler with max_lr = the suggestion")
    return optimizer


def _batch_iter(train_loader):
    """torch-lr-finder's iterator over any iterable of (images, labels), checked like the engine does."""
    from torch_lr_finder import TrainDataLoaderIter

    class _Iter(TrainDataLoaderIter):
        count = 0

        def inputs_labels_from_batch(self, batch_data):
            self.count += 1
            images, labels = unpack_batch(batch_data, self.count - 1)
            return images, labels.long()

        @property
        def dataset(self):
            return getattr(self.data_loader, "dataset", None)

    return _Iter(train_loader)


def find_lr(
    model: torch.nn.Module,
    train_loader,
    optimizer: torch.optim.Optimizer | str | None = None,
    criterion=None,
    *,
    device=None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    step_mode: str = "exp",
    suggestion: str = DEFAULT_SUGGESTION,
    smooth_f: float = 0.05,
    diverge_th: float = 5.0,
    skip_start: int | None = None,
    skip_end: int | None = None,
    verbose: bool = True,
    **optimizer_kw,
) -> LRFinderResult:
    """LR range test (torch-lr-finder): raise the lr from ``start_lr`` to ``end_lr`` over ``num_iter``
    batches ("exp" or "linear" steps), record the smoothed loss, restore model and optimizer.

    ``optimizer``: an optimizer without a scheduler attached, or a name for
    ``bp.get_optimizer(name, model, lr=start_lr, **optimizer_kw)`` (default "sgd", momentum 0.9).
    ``train_loader``: any iterable of (images, labels); it is restarted when exhausted.
    """
    from torch_lr_finder import LRFinder

    _check_range_test(start_lr, end_lr, num_iter, step_mode, suggestion, smooth_f, diverge_th)
    optimizer = _range_test_optimizer(model, optimizer, start_lr, optimizer_kw)
    criterion = criterion if criterion is not None else cross_entropy()
    device = as_device(device) if device is not None else model_device(model)
    finder = LRFinder(model, optimizer, criterion, device=device)
    with kept_mode(model):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its hints name methods we do not expose
                finder.range_test(_batch_iter(train_loader), start_lr=start_lr, end_lr=end_lr,
                                  num_iter=num_iter, step_mode=step_mode, smooth_f=smooth_f,
                                  diverge_th=diverge_th)
        finally:
            finder.reset()
    lrs = [float(v) for v in finder.history["lr"]]
    losses = [float(v) for v in finder.history["loss"]]
    lr, index = suggest_lr(lrs, losses, suggestion, skip_start, skip_end)
    start, end = _skips(suggestion, len(lrs), skip_start, skip_end)
    result = LRFinderResult(lrs=lrs, losses=losses, suggestion=lr, method=suggestion, index=index,
                            skip_start=start, skip_end=end)
    if verbose:
        stopped = " (stopped early: loss diverged)" if len(lrs) < num_iter else ""
        print(f"LR range test: {len(lrs)} iterations{stopped}; suggested lr ({suggestion}) = {lr:.3g}")
    return result
