"""Optimizer comparison: the same model, the same initial weights, the same batches, several optimizers.

Usage::

    from woollylib.experiments.optimizers import compare_optimizers
    from woollylib.utils.visualize import plot_optimizer_comparison

    histories = compare_optimizers(model, data, device="cpu", epochs=3,
                                   optimizers=("sgd", "adam", "adamw", "rmsprop", "adagrad"),
                                   lrs={"sgd": 0.05})        # others keep DEFAULT_LRS
    plot_optimizer_comparison(histories, save_path="optimizers.png")

Each optimizer trains a deep copy of ``model`` loaded with one snapshot of its initial state dict
(``model`` itself is not changed) with one ``woollylib.training.Trainer`` (no files, no output). With ``seed``
the torch RNG is re-seeded identically for every optimizer inside ``torch.random.fork_rng`` (so
shuffling, dropout and augmentation repeat and the caller's RNG state is left alone), and loaders
with ``set_epoch`` are re-wound per epoch. A run whose loss turns NaN/inf stops there (warned),
keeping the epochs it finished.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

# initial learning rates that train small CIFAR-style nets without a schedule
DEFAULT_LRS = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2}
# extra optimizer arguments per name (rmsprop with momentum 0.9 at 1e-3 often diverges; adamw
# without weight decay would be adam, so it keeps torch's default decoupled decay 0.01)
DEFAULT_KW = {"sgd": {"momentum": 0.9}, "rmsprop": {"momentum": 0.0},
              "adamw": {"weight_decay": 1e-2}}


def compare_optimizers(
    model: nn.Module,
    data=None,
    *,
    train_loader=None,
    test_loader=None,
    optimizers: Sequence[str] = ("sgd", "adam", "adamw", "rmsprop", "adagrad"),
    epochs: int = 3,
    device=None,
    lrs: Mapping[str, float] | None = None,
    optimizer_kw: Mapping[str, dict] | None = None,
    weight_decay: float | None = None,
    scheduler: str | None = None,
    seed: int | None = 0,
    amp=False,
    progress=False,
    verbose: bool = True,
    out_dir=None,
    overwrite: bool = False,
) -> dict:
    """Train a copy of ``model`` per optimizer from identical weights; return their histories.

    Args:
        model: the network; its initial weights are snapshotted once (``model`` stays untouched).
        data: a DataBundle (``train_loader``/``test_loader``), or pass the loaders directly.
        optimizers: names for ``woollylib.bp.get_optimizer``.
        epochs: epochs per optimizer.
        device: where to train (default: the model's device).
        lrs: learning rate per optimizer name (default :data:`DEFAULT_LRS`); with
            ``scheduler="onecycle"`` it is the peak (max_lr) of the cycle.
        optimizer_kw: extra ``get_optimizer`` arguments per name (merged over :data:`DEFAULT_KW`).
        weight_decay: weight decay for every optimizer (None: 0, except adamw's 0.01).
        scheduler: None (constant lr) or a ``woollylib.scheduler.get_scheduler`` name.
        seed: re-seed torch identically before each run (None: no seeding).
        amp, progress: passed to ``train_epoch``.
        out_dir: also keep each optimizer's run as an ordinary run folder
            ``out_dir/optimizer-<name>/seed-<seed>`` (checkpoints, history.json, config.json), which
            ``woollylib compare`` reads; ``overwrite``: replace runs already there.

    Returns:
        ``{name: History}`` in the order given (lists per epoch; ``lr`` per step).
    """
    import torch

    from ..bp.optimizer import get_optimizer
    from ..device import model_device
    from ..training import Trainer

    train_loader, test_loader, optimizers = _checked(data, train_loader, test_loader, optimizers, epochs)
    device = torch.device(device) if device is not None else model_device(model)
    lrs = {**DEFAULT_LRS, **(lrs or {})}
    initial = copy.deepcopy(model.state_dict())  # one snapshot: every run starts from it
    fork_devices = [device] if device.type == "cuda" else []

    histories = {}
    for name in optimizers:
        key = str(name).lower()
        net = copy.deepcopy(model)
        net.load_state_dict(initial)
        net.to(device)
        kw = _optimizer_kw(name, weight_decay, optimizer_kw)
        lr = lrs.get(key, lrs.get(name))
        if lr is None:
            raise ValueError(f"no learning rate for {name!r}: pass lrs={{{name!r}: ...}}.")
        with torch.random.fork_rng(devices=fork_devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            run_dir = None if out_dir is None else \
                Path(out_dir) / f"optimizer-{key}" / f"seed-{seed if seed is not None else 'none'}"
            trainer = Trainer(net, (train_loader, test_loader), device, epochs,
                              optimizer=get_optimizer(key, net, lr=lr, **kw), scheduler=scheduler or "none",
                              amp=amp, channels_last=False, progress=progress, verbose=False,
                              out_dir=run_dir, overwrite=overwrite and run_dir is not None and run_dir.exists(),
                              config={"compare_optimizers": {"seed": seed}})
            _train(trainer, name, epochs, verbose)
        histories[name] = trainer.history
    return histories


def _checked(data, train_loader, test_loader, optimizers, epochs):
    """The loaders (from ``data`` unless given) and the optimizer names, checked; else a ValueError."""
    from ..bp.optimizer import list_optimizers

    if data is not None:
        train_loader = train_loader or data.train_loader
        test_loader = test_loader or data.test_loader
    if train_loader is None or test_loader is None:
        raise ValueError("pass a DataBundle as data, or both train_loader= and test_loader=.")
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    unknown = [o for o in optimizers if str(o).lower() not in list_optimizers()]
    if unknown or not optimizers:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {list_optimizers()}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}.")
    return train_loader, test_loader, optimizers


def _optimizer_kw(name, weight_decay: float | None, optimizer_kw: Mapping[str, dict] | None) -> dict:
    """``get_optimizer`` arguments for ``name``: no decay, :data:`DEFAULT_KW`, ``weight_decay``, the user's."""
    kw = {"weight_decay": 0.0, **DEFAULT_KW.get(str(name).lower(), {})}
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    kw.update((optimizer_kw or {}).get(name, {}))
    return kw


def _train(trainer, name, epochs: int, verbose: bool) -> None:
    """``trainer.fit()`` (its lock, checks and stop signals), a line per epoch; a NaN/inf loss stops it (warned)."""
    from ..bp.engine import NonFiniteLossError
    from ..hooks import Hook

    class Line(Hook):
        def on_epoch_end(self, trainer, epoch, figures):
            train, test = figures["train"], figures["test"]
            print(f"{name:>8} epoch {epoch}/{epochs}: train loss {train['loss']:.4f} "
                  f"acc {train['acc']:.2f}% | test loss {test['loss']:.4f} "
                  f"acc {test['acc']:.2f}%")

    if verbose:
        trainer.hooks.append(Line())
    try:
        trainer.fit()
    except NonFiniteLossError as err:
        warnings.warn(f"{name}: {err}; stopped after {len(trainer.history)} epoch(s). Try a "
                      f"smaller lrs[{name!r}].", stacklevel=3)  # the caller of compare_optimizers
