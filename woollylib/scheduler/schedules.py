"""Learning-rate schedulers by name: torch's OneCycleLR and ReduceLROnPlateau with checked options.

    from woollylib.scheduler import one_cycle, reduce_on_plateau, get_scheduler, list_schedulers
    sched = one_cycle(opt, max_lr=0.05, epochs=24, steps_per_epoch=len(train_loader),
                      pct_start=5 / 24)                    # stepped by the engine, once per batch
    sched = get_scheduler("plateau", opt)                  # or "onecycle" / "none"

OneCycleLR is torch's; the engine never steps it past its last step (``total_steps - 1``), so
its learning rate never goes below ``max_lr / div_factor / final_div_factor``.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau

from .._checks import check_choice, check_int, check_positive, check_range

__all__ = ["get_scheduler", "list_schedulers", "one_cycle", "reduce_on_plateau"]


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
    check_positive("max_lr", max_lr)
    check_int("epochs", epochs)
    check_int("steps_per_epoch", steps_per_epoch, hint="len(train_loader)")
    check_positive("div_factor", div_factor)
    check_positive("final_div_factor", final_div_factor)
    check_range("pct_start", pct_start, 0, 1, closed="()", hint="fraction of steps spent warming up")
    check_choice("anneal_strategy", anneal_strategy, ("linear", "cos"))
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
    """torch's ReduceLROnPlateau, stepped once per epoch on the validation loss (the training loss without a split) (``mode="min"``):
    the lr is multiplied by ``factor`` after ``patience`` epochs without improvement."""
    check_choice("mode", mode, ("min", "max"), hint="'min' for a loss, 'max' for an accuracy")
    check_range("factor", factor, 0, 1, closed="()")
    check_int("patience", patience, minimum=0, hint="epochs")
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
