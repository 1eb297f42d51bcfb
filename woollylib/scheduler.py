"""Learning-rate schedulers by name, and the LR range test.

    from woollylib import scheduler
    sched = scheduler.one_cycle(opt, max_lr=0.05, epochs=24, steps_per_epoch=len(train_loader),
                                pct_start=5 / 24)          # stepped by the engine, once per batch
    sched = scheduler.get_scheduler("plateau", opt)        # or "onecycle" / "none"
    scheduler.scheduler_steps_per_batch(sched)             # True -> the engine steps it per batch
    scheduler.step_epoch_scheduler(sched, test_loss)       # per-epoch ones: after evaluation

    result = scheduler.find_lr(model, train_loader, device=device, end_lr=10, num_iter=100)
    result.suggestion, result.method, result.lrs, result.losses   # curve for utils.visualize

OneCycleLR is torch's; the engine never steps it past its last step (``total_steps - 1``), so
its learning rate never goes below ``max_lr / div_factor / final_div_factor``. Run ``find_lr``
before attaching a scheduler to the optimizer (torch-lr-finder refuses otherwise); model and
optimizer are restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, ReduceLROnPlateau

__all__ = [
    "DEFAULT_SUGGESTION",
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

_PER_BATCH_TYPES = (OneCycleLR, CyclicLR)


def _positive(name: str, value, integer: bool = False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "an integer >= 1" if integer else "a number > 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


# ------------------------------------------------------------------------------- schedulers ---

def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: float,
    epochs: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    anneal_strategy: str = "linear",
    cycle_momentum: bool | None = None,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> OneCycleLR:
    """torch's OneCycleLR over ``epochs * steps_per_epoch`` batches (stepped per batch).

    The lr starts at ``max_lr / div_factor``, peaks at ``max_lr`` after ``pct_start`` of the
    steps, and ends at ``max_lr / div_factor / final_div_factor``. ``cycle_momentum=None`` cycles
    momentum (between ``base_momentum`` and ``max_momentum``) only if the optimizer has momentum
    > 0 or Adam betas.
    """
    _positive("max_lr", max_lr)
    _positive("epochs", epochs, integer=True)
    _positive("steps_per_epoch", steps_per_epoch, integer=True)
    _positive("div_factor", div_factor)
    _positive("final_div_factor", final_div_factor)
    if isinstance(pct_start, bool) or not isinstance(pct_start, (int, float)) or not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1) (fraction of steps spent warming up), got {pct_start!r}")
    if anneal_strategy not in ("linear", "cos"):
        raise ValueError(f"anneal_strategy must be 'linear' or 'cos', got {anneal_strategy!r}")
    if epochs * steps_per_epoch < 2:
        raise ValueError("OneCycle needs at least 2 steps in total (epochs * steps_per_epoch >= 2)")
    if cycle_momentum is None:
        defaults = optimizer.defaults
        cycle_momentum = defaults.get("momentum", 0) > 0 or "betas" in defaults
    return OneCycleLR(
        optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=pct_start,
        anneal_strategy=anneal_strategy, cycle_momentum=cycle_momentum, base_momentum=base_momentum,
        max_momentum=max_momentum, div_factor=div_factor, final_div_factor=final_div_factor,
        three_phase=three_phase,
    )


def reduce_on_plateau(
    optimizer: torch.optim.Optimizer,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 3,
    threshold: float = 1e-4,
    min_lr: float = 0.0,
    cooldown: int = 0,
) -> ReduceLROnPlateau:
    """torch's ReduceLROnPlateau, stepped once per epoch on the test loss (``mode="min"``):
    the lr is multiplied by ``factor`` after ``patience`` epochs without improvement."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' (loss) or 'max' (accuracy), got {mode!r}")
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ValueError(f"patience must be an integer >= 0 (epochs), got {patience!r}")
    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold,
                             min_lr=min_lr, cooldown=cooldown)


_SCHEDULERS = ("onecycle", "plateau", "none")


def list_schedulers() -> list[str]:
    """Names accepted by :func:`get_scheduler`."""
    return list(_SCHEDULERS)


def get_scheduler(name: str | None, optimizer: torch.optim.Optimizer, *, max_lr: float | None = None,
                  epochs: int | None = None, steps_per_epoch: int | None = None, **kw):
    """Build a scheduler by name: "onecycle" (needs ``max_lr``, ``epochs``, ``steps_per_epoch``),
    "plateau" (those three are ignored), or "none"/None (returns None). ``kw`` go to the builder."""
    key = "none" if name is None else (name.lower().replace("_", "").replace("-", "") if isinstance(name, str) else name)
    if key == "onecycle":
        missing = [n for n, v in (("max_lr", max_lr), ("epochs", epochs), ("steps_per_epoch", steps_per_epoch))
                   if v is None]
        if missing:
            raise ValueError(f"the 'onecycle' scheduler needs {missing} (steps_per_epoch = len(train_loader))")
        return one_cycle(optimizer, max_lr, epochs, steps_per_epoch, **kw)
    if key == "plateau":
        return reduce_on_plateau(optimizer, **kw)
    if key == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r}; known schedulers: {list_schedulers()}")


def scheduler_steps_per_batch(scheduler) -> bool:
    """True if ``scheduler`` is stepped after every batch (OneCycleLR, CyclicLR, or anything with a
    ``steps_per_batch = True`` attribute), False if once per epoch (or None)."""
    if scheduler is None:
        return False
    flag = getattr(scheduler, "steps_per_batch", None)
    if flag is not None:
        return bool(flag)
    return isinstance(scheduler, _PER_BATCH_TYPES)


def step_epoch_scheduler(scheduler, metric: float | None = None) -> None:
    """Step a per-epoch scheduler after evaluation (ReduceLROnPlateau needs ``metric``, the test
    loss); does nothing for None or per-batch schedulers (the engine steps those)."""
    if scheduler is None or scheduler_steps_per_batch(scheduler):
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        if metric is None:
            raise ValueError("ReduceLROnPlateau needs the epoch's test loss: step_epoch_scheduler(sched, test_loss)")
        scheduler.step(metric)
    else:
        scheduler.step()


# -------------------------------------------------------------------------- LR range test ---

class LRCurveTooShortError(ValueError):
    """The LR range test curve has too few points for a suggestion; ``lrs``/``losses`` hold it."""

    def __init__(self, message: str, lrs=(), losses=()):
        super().__init__(message)
        self.lrs, self.losses = list(lrs), list(losses)


@dataclass
class LRFinderResult:
    """Outcome of :func:`find_lr`: the whole curve and the suggested learning rate."""

    lrs: list[float]           # learning rate of each iteration
    losses: list[float]        # smoothed training loss of each iteration
    suggestion: float          # suggested learning rate (use it as max_lr of OneCycle)
    method: str                # "valley" or "steepest"
    index: int                 # position of the suggestion in lrs/losses
    skip_start: int = 0        # points left out at the start when suggesting
    skip_end: int = 0          # points left out at the end when suggesting
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


MIN_POINTS = 3  # fewest points (after skipping) a suggestion is computed from

SUGGESTIONS = ("valley", "steepest", "minimum")  # rules of suggest_lr
DEFAULT_SUGGESTION = "valley"  # the rule find_lr and main.max_lr use (benchmarks/lr_rules.py)


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


def suggest_lr(lrs, losses, method: str = DEFAULT_SUGGESTION, skip_start: int | None = None,
               skip_end: int | None = None) -> tuple[float, int]:
    """Suggest a learning rate from a range-test curve; return ``(lr, index into lrs)``.

    "steepest" (torch-lr-finder): the point of most negative ``np.gradient(losses)``, default skip
    10 first / 5 last points. "valley" (fastai): see ``_valley``, default skip ``len // 10`` first /
    5 last points. "minimum" (fastai): a tenth of the lr of the lowest loss (the recorded lr
    nearest to it), same default skips as "valley". Fewer than 3 points left raises :class:`LRCurveTooShortError` (a ValueError).
    """
    if method not in SUGGESTIONS:
        raise ValueError(f"unknown suggestion method {method!r}; use one of {SUGGESTIONS}")
    lrs, losses = [float(v) for v in lrs], [float(v) for v in losses]
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} vs {len(losses)})")
    if skip_start is None:
        skip_start = 10 if method == "steepest" else len(lrs) // 10
    if skip_end is None:
        skip_end = 5
    if skip_start < 0 or skip_end < 0:
        raise ValueError("skip_start and skip_end must be >= 0")
    kept = losses[skip_start:len(losses) - skip_end]
    if len(kept) < MIN_POINTS:
        raise LRCurveTooShortError(
            f"the LR range test curve has {len(losses)} points; after skipping {skip_start} at the start and "
            f"{skip_end} at the end only {len(kept)} remain, fewer than {MIN_POINTS}: raise num_iter, lower "
            "end_lr or raise diverge_th (the test stops early when the loss diverges), or lower skip_start/skip_end",
            lrs, losses)
    if method == "steepest":
        local = int(np.gradient(np.array(kept)).argmin())
    elif method == "minimum":  # the curve's point nearest (log scale) to a tenth of the lowest loss's lr
        target = np.log(lrs[skip_start + int(np.argmin(kept))] / 10)
        index = int(np.argmin(np.abs(np.log(np.array(lrs)) - target)))
        return lrs[index], index
    else:
        local = _valley(kept)
    index = skip_start + local
    return lrs[index], index


def _has_scheduler(optimizer) -> bool:
    return any("initial_lr" in group for group in optimizer.param_groups)


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
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    from .bp.engine import _device, _unpack
    from .bp.losses import cross_entropy
    from .bp.optimizer import get_optimizer

    _positive("start_lr", start_lr)
    _positive("end_lr", end_lr)
    if not end_lr > start_lr:
        raise ValueError(f"end_lr ({end_lr}) must be greater than start_lr ({start_lr})")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 2:
        raise ValueError(f"num_iter must be an integer >= 2 (100 is usual), got {num_iter!r}")
    if step_mode not in ("exp", "linear"):
        raise ValueError(f"step_mode must be 'exp' or 'linear', got {step_mode!r}")
    if suggestion not in SUGGESTIONS:
        raise ValueError(f"unknown suggestion method {suggestion!r}; use one of {SUGGESTIONS}")
    if not 0 <= smooth_f < 1:
        raise ValueError(f"smooth_f must be in [0, 1), got {smooth_f!r}")
    _positive("diverge_th", diverge_th)
    if optimizer is None or isinstance(optimizer, str):
        optimizer = get_optimizer(optimizer or "sgd", model, lr=start_lr, **optimizer_kw)
    elif optimizer_kw:
        raise ValueError(f"optimizer keyword arguments {sorted(optimizer_kw)} only apply when optimizer is a name")
    if _has_scheduler(optimizer):
        raise ValueError(
            "the optimizer already has a learning-rate scheduler attached (e.g. OneCycleLR): run find_lr "
            "before building the scheduler, or pass a fresh optimizer (or a name such as 'sgd'); then build "
            "the OneCycle scheduler with max_lr = the suggestion")
    criterion = criterion if criterion is not None else cross_entropy()
    device = _device(device) if device is not None else next(model.parameters()).device

    class _Iter(TrainDataLoaderIter):  # any iterable of (images, labels), checked like the engine does
        count = 0

        def inputs_labels_from_batch(self, batch_data):
            _Iter.count += 1
            images, labels = _unpack(batch_data, _Iter.count - 1)
            return images, labels.long()

        @property
        def dataset(self):
            return getattr(self.data_loader, "dataset", None)

    was_training = model.training
    finder = LRFinder(model, optimizer, criterion, device=device)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its hints name methods we do not expose
            finder.range_test(_Iter(train_loader), start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                              step_mode=step_mode, smooth_f=smooth_f, diverge_th=diverge_th)
    finally:
        finder.reset()
        model.train(was_training)
    lrs = [float(v) for v in finder.history["lr"]]
    losses = [float(v) for v in finder.history["loss"]]
    lr, index = suggest_lr(lrs, losses, suggestion, skip_start, skip_end)
    start = skip_start if skip_start is not None else (10 if suggestion == "steepest" else len(lrs) // 10)
    result = LRFinderResult(lrs=lrs, losses=losses, suggestion=lr, method=suggestion, index=index,
                            skip_start=start, skip_end=5 if skip_end is None else skip_end)
    if verbose:
        stopped = " (stopped early: loss diverged)" if len(lrs) < num_iter else ""
        print(f"LR range test: {len(lrs)} iterations{stopped}; suggested lr ({suggestion}) = {lr:.3g}")
    return result
