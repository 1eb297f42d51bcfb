"""The epoch loop: history, progress, checkpoints and exact resume.

Usage (notebook)::

    from woollylib.training import train_test_loop, History
    history = train_test_loop(model, data, device, epochs=24, max_lr=0.05, out_dir="runs/r9")
    # ... Colab disconnects; rebuild model and data the same way, then
    history = train_test_loop(model, data, device, epochs=24, max_lr=0.05, out_dir="runs/r9", resume=True)
    History.load("runs/r9/history.json").best_epoch

Usage (script)::

    trainer = Trainer(model, (train_loader, test_loader), "cpu", epochs=4, lr=0.05, out_dir="runs/x")
    history = trainer.fit()
    # or with grouped settings (woollylib.config): every flat keyword is one of their fields
    trainer = Trainer(model, data, "cpu", settings=Settings(optim=OptimConfig(lr=0.05),
                                                            schedule=ScheduleConfig(epochs=4)))

After every epoch ``out_dir`` holds ``last.pt`` (everything needed to resume), ``best.pt``,
``history.json`` and ``config.json`` (see ``woollylib.run`` for the files). A fresh run refuses
a directory that already holds a run unless ``resume=True`` (continue it) or ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from . import resume
from .config import Settings
from .distributed import batchnorm_note
from .hooks import EarlyStopping, default_hooks
from .run import (
    BEST,
    CHECKPOINT_VERSION,
    CONFIG,
    CONFIG_FORMAT,
    CONFIG_VERSION,
    HISTORY,
    LAST,
    MANIFEST,
    METRICS_CSV,
    TENSORBOARD,
    History,
    ModelSpec,
    RunDir,
    SimulatedCrash,
    atomic_save,
    atomic_write_json,
    best_checkpoint,
    jsonable,
    load_checkpoint,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "History",
    "StopSignals",
    "Trainer",
    "TrainingInterrupted",
    "atomic_save",
    "atomic_write_json",
    "load_checkpoint",
    "speed_defaults",
    "train_test_loop",
]

# ----------------------------------------------------------------------------------------------
# RNG state and state-dict checks


# ----------------------------------------------------------------------------------------------
# Stop signals


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; ``signum`` says which (the CLI exits 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.signal_name = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


class StopSignals:
    """While active (main thread only), SIGINT and SIGTERM raise ``TrainingInterrupted``; inside
    ``holding()`` they wait until the block is done (a save in progress completes first)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._previous, self._held, self._pending = {}, 0, None

    def _handle(self, signum, frame):
        if self._held:
            self._pending = signum
            return
        raise TrainingInterrupted(signum)

    def __enter__(self) -> StopSignals:  # noqa: PYI034
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @contextlib.contextmanager
    def holding(self):
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if not self._held and self._pending is not None:
            signum, self._pending = self._pending, None
            raise TrainingInterrupted(signum)


_NO_SIGNALS = StopSignals()  # outside fit(): holding() only counts


# ----------------------------------------------------------------------------------------------
# Trainer


def _split_data(data) -> tuple[Any, Any, dict]:
    """(train_loader, test_loader, info) from a DataBundle-like object or a (train, test) pair."""
    if hasattr(data, "train_loader") and hasattr(data, "test_loader"):
        info = {}
        for key in ("name", "classes", "mean", "std"):
            if getattr(data, key, None) is not None:
                info[key] = jsonable(getattr(data, key))
        source = getattr(data, "train_source", None)
        if getattr(source, "image_size", None):  # what predict resizes new images to
            info["image_size"] = [int(v) for v in source.image_size]
        if getattr(data, "val_loader", None) is not None:
            info["val"] = jsonable(getattr(data, "val_info", None) or {"requested": "loader"})
        return data.train_loader, data.test_loader, info
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1], {}
    raise TypeError(
        f"data must be a DataBundle (from woollylib.preloading.get_data) or a (train_loader, test_loader) "
        f"pair, got {type(data).__name__}"
    )


def _steps_per_epoch(loader) -> int:
    try:
        n = len(loader)
    except TypeError as exc:
        raise TypeError(
            f"the train loader ({type(loader).__name__}) has no len(); the scheduler needs the number of "
            "batches per epoch: use a DataLoader/DeviceLoader or give the loader a __len__"
        ) from exc
    if n < 1:
        raise ValueError("the train loader yields no batches; check the dataset size and batch_size/drop_last")
    return n


def speed_defaults(device, amp="auto", channels_last="auto") -> tuple[bool | str, bool]:
    """``(amp, channels_last)`` to train with on ``device``: ``"auto"`` and ``True`` resolved from the
    hardware by ``woollylib.precision`` (amp: False | "bf16" | "fp16"; channels_last: bool).

    CUDA: bf16 where native (compute capability >= 8), else fp16 + GradScaler; NHWC. CPU: fp32 and
    NHWC (1.1-1.5x faster for every model here); ``amp=True`` is bf16 only where the CPU has native
    bf16, fp32 with a warning elsewhere. MPS: both off. ``choose_precision`` also says why.
    """
    from .precision import choose_precision, resolve_channels_last

    return choose_precision(device, amp).mode, resolve_channels_last(device, channels_last)


def _is_scheduler(obj) -> bool:
    """A torch learning-rate scheduler instance (LRScheduler, ReduceLROnPlateau, or anything that steps
    an ``optimizer`` it holds)."""
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    return isinstance(obj, (LRScheduler, ReduceLROnPlateau)) or (
        not isinstance(obj, str) and callable(getattr(obj, "step", None))
        and isinstance(getattr(obj, "optimizer", None), torch.optim.Optimizer))


def _scheduler_kind(scheduler) -> str:
    """The schedule name recorded in config.json for a scheduler instance."""
    from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau

    if isinstance(scheduler, OneCycleLR):
        return "onecycle"
    if isinstance(scheduler, ReduceLROnPlateau):
        return "plateau"
    return type(scheduler).__name__.lower()


def _scheduler_instance(flat: dict, optimizer):
    """Pop a scheduler *instance* from ``flat`` (names stay); return it and the optimizer to train with
    (the one the scheduler steps)."""
    scheduler = flat.get("scheduler")
    if scheduler is None or isinstance(scheduler, str):
        return None, optimizer
    if not _is_scheduler(scheduler):
        raise TypeError(
            f"scheduler must be a name ('onecycle', 'plateau', 'none') or a torch scheduler instance such as "
            f"torch.optim.lr_scheduler.OneCycleLR(optimizer, ...), got {type(scheduler).__name__}"
        )
    if optimizer is not None and optimizer is not scheduler.optimizer:
        raise ValueError(
            f"the scheduler ({type(scheduler).__name__}) steps another optimizer than optimizer=; build the "
            "scheduler on the optimizer you pass: scheduler = OneCycleLR(optimizer, ...)"
        )
    flat["scheduler"] = _scheduler_kind(scheduler)
    group = scheduler.optimizer.param_groups[0]
    for key in ("lr", "max_lr"):
        peak = group.get("max_lr", group.get("initial_lr", group["lr"]))
        given = flat.get(key)
        if given is not None and not math.isclose(float(given), float(peak), rel_tol=1e-6):
            raise ValueError(
                f"got {key}={given} but the {type(scheduler).__name__} scheduler's optimizer has lr {peak:g}; the "
                f"scheduler sets the learning rate: drop {key}= (or build the scheduler with max_lr={given})"
            )
    return scheduler, scheduler.optimizer


def _check_scheduler_instance(scheduler, model, lr, epochs, steps_per_epoch) -> None:
    from torch.optim.lr_scheduler import OneCycleLR

    mine = {id(p) for p in model.parameters()}
    if not any(id(p) in mine for g in scheduler.optimizer.param_groups for p in g["params"]):
        raise ValueError("the scheduler's optimizer holds none of the model's parameters; build the optimizer "
                         "after the model: optimizer = torch.optim.SGD(model.parameters(), ...)")
    if isinstance(scheduler, OneCycleLR) and scheduler.total_steps != epochs * steps_per_epoch:
        raise ValueError(
            f"the OneCycleLR scheduler spans {scheduler.total_steps} steps but this run has {epochs} epochs x "
            f"{steps_per_epoch} batches = {epochs * steps_per_epoch}; build it with OneCycleLR(optimizer, "
            f"max_lr={lr:g}, epochs={epochs}, steps_per_epoch=len(train_loader))"
        )


def _callable_name(fn) -> str:
    return type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", type(fn).__name__)


def _criterion(criterion, label_smoothing, device):
    """Check a ``criterion(outputs, labels) -> mean loss`` (a loss module or any callable); moved to ``device``."""
    if criterion is None:
        return None
    if isinstance(criterion, type) and issubclass(criterion, nn.Module):
        raise TypeError(f"criterion must be a loss instance, got the class {criterion.__name__}; "
                        f"pass criterion={criterion.__name__}()")
    if not callable(criterion):
        raise TypeError(f"criterion must be a loss module or a callable criterion(outputs, labels), "
                        f"got {type(criterion).__name__}")
    if label_smoothing:
        raise ValueError("pass either criterion= or label_smoothing=, not both (for smoothing pass "
                         "criterion=nn.CrossEntropyLoss(label_smoothing=...))")
    return criterion.to(device) if isinstance(criterion, nn.Module) else criterion


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"the learning rate must be a finite number > 0, got {lr!r}")
    return float(lr)


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    return int(epochs)


def _resolve_settings(settings, epochs, optimizer, flat) -> Settings:
    """The run's Settings from ``settings``, the positional epochs/optimizer and the flat keywords."""
    lr, max_lr = flat.pop("lr", None), flat.pop("max_lr", None)
    if lr is not None and max_lr is not None and lr != max_lr:
        raise ValueError(f"got lr={lr} and max_lr={max_lr}; pass only one (max_lr is the one-cycle peak)")
    lr = max_lr if max_lr is not None else lr
    if lr is not None:
        flat["lr"] = lr
    if epochs is not None:
        flat["epochs"] = epochs
    if isinstance(optimizer, str):
        flat["optimizer"] = optimizer
    elif optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a name such as 'sgd' or a torch.optim.Optimizer, got {optimizer!r}")
    if "scheduler" in flat:
        flat["scheduler"] = "none" if flat["scheduler"] is None else str(flat["scheduler"]).lower()
    s = Settings.from_flat(settings, **flat)
    if s.optim.lr is None:
        if isinstance(optimizer, torch.optim.Optimizer):
            group = optimizer.param_groups[0]  # a OneCycleLR/scheduler attached keeps its peak/base lr here
            s.optim.lr = float(group.get("max_lr", group.get("initial_lr", group["lr"])))
        elif not s.run.resume:
            raise ValueError("pass lr= (or max_lr=) > 0; woollylib.scheduler.find_lr suggests one")
    if isinstance(optimizer, torch.optim.Optimizer):
        s.optim.name = type(optimizer).__name__.lower()
    return s


def _with_validation(trainer, data):
    """Hold out ``val_split`` (a DataBundle is rebuilt with it); set ``val_loader`` (None without a
    split) and check that early stopping has something to watch."""
    d = trainer.settings.data
    has_val = getattr(data, "val_loader", None) is not None
    if d.val_split is not None and not has_val:
        if not hasattr(data, "with_val_split"):
            raise ValueError(
                f"val_split={d.val_split!r} needs the data as a DataBundle from woollylib.preloading.get_data "
                "(it rebuilds the loaders without the held-out images); with your own loaders pass "
                "get_data(..., val_split=...) or a DataBundle with a val_loader")
        data = data.with_val_split(d.val_split, d.val_seed)
        trainer.train_loader, trainer.test_loader, trainer.data_info = _split_data(data)
    elif has_val and d.val_split is not None:
        given = (getattr(data, "val_info", None) or {}).get("requested")
        if given not in ("source", "loader") and given != d.val_split:
            raise ValueError(f"the data already holds out val_split={given!r} but val_split={d.val_split!r} "
                             "was passed; pass only one")
    elif has_val:
        requested = (getattr(data, "val_info", None) or {}).get("requested")
        d.val_split = requested if isinstance(requested, (int, float)) else None
    trainer.val_loader = getattr(data, "val_loader", None)
    if trainer.settings.schedule.patience is not None and trainer.val_loader is None:
        raise ValueError(
            f"early stopping (patience={trainer.settings.schedule.patience}) watches the validation loss, and "
            "this run has no validation split; pass val_split=0.1 (CLI: --val-split 0.1), or drop patience "
            "(never stop on the test set)")
    return data


def _run_config(trainer, model, extra) -> dict:
        """config.json's content (also kept in every checkpoint)."""
        trainer.settings.schedule.epochs, trainer.settings.optim.lr = trainer.epochs, trainer.lr
        return jsonable({
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "model": ModelSpec.of(model).to_dict(),
            "settings": trainer.settings.to_dict(),
            "resolved": {"device": str(trainer.device), "amp": trainer.amp, "channels_last": trainer.channels_last,
                         "precision": trainer.precision.to_dict(),
                         "steps_per_epoch": trainer.steps_per_epoch,
                         "batch_size": (getattr(trainer.train_loader, "batch_size", None) or 0) * trainer.dist.world_size
                         or None, "world_size": trainer.dist.world_size},
            "data": trainer.data_info,
            "extra": extra or {},
        })

    # ---- saving


def _stop_note(trainer, what: str, diverged: bool = False) -> str:
    done = trainer._saved_epoch if trainer.out_dir is not None else len(trainer.history)
    advice = (
        "lower the learning rate (or set grad_clip) and start a new run"
        if diverged
        else "continue with resume=True (CLI: --resume)"
    )
    if trainer.out_dir is None:
        return f"{what}; {done} completed epochs are in trainer.history (no out_dir, nothing saved)"
    if done == 0:
        return (f"{what} before the first epoch ended; no epoch was saved in {trainer.out_dir} (resume=True / "
                "--resume starts it again)")
    return f"{what}; {trainer.out_dir / LAST} and history.json hold epoch {done}/{trainer.epochs}; {advice}"


class Trainer:
    """Train ``model`` for ``epochs`` epochs with checkpoints after each epoch.

    Args:
        model: an ``nn.Module`` returning logits; moved to ``device``.
        data: a ``DataBundle`` or a ``(train_loader, test_loader)`` pair of iterables of
            ``(images float (B,C,H,W), labels int64 (B,))``.
        device: ``torch.device``/name/None ("auto" = cuda > mps > cpu).
        epochs: total epochs of the run (on resume, the same total; None = from the checkpoint).
        settings: a ``woollylib.config.Settings`` (optim, schedule, engine, run groups).
        optimizer: a name (``settings.optim.name``) or a ``torch.optim.Optimizer`` instance.
        scheduler (flat keyword): a name (``settings.schedule.name``) or a torch scheduler instance
            built on the optimizer (OneCycleLR, CyclicLR: stepped per batch; ReduceLROnPlateau: per
            epoch on the validation loss, or the training loss without a split; any other: per epoch). Its optimizer is the one trained.
        criterion (flat keyword): ``criterion(outputs, labels) -> mean loss`` for training and test
            loss (a loss module such as ``nn.NLLLoss()`` or a callable); default cross-entropy.
        config: extra JSON-able entries kept in config.json under "extra".
        **flat: any setting by its flat name, over ``settings``: ``lr`` (alias ``max_lr``),
            ``momentum``, ``weight_decay``, ``nesterov``, ``no_decay_bn_bias``, ``scheduler``,
            ``scheduler_kwargs``, ``pct_start``, ``amp``, ``channels_last``, ``ricap_beta``,
            ``label_smoothing``, ``l1``, ``grad_clip``, ``tta_flip``, ``out_dir``, ``resume``,
            ``overwrite``, ``seed``, ``progress``, ``verbose``, ``compile`` (units and defaults:
            woollylib.config).

    ``trainer.model`` is the plain module (its weights are what checkpoints hold); ``trainer.net``
    is what trains and tests: ``torch.compile(model)`` once with ``compile="default"`` (or
    "reduce-overhead", "max-autotune"), else the model itself. ``trainer.precision`` says which
    precision was chosen for the device and why (``woollylib.precision``).

    Under torchrun (``woollylib.distributed``): ``trainer.dist`` is this process's rank, world size and
    device; ``trainer.net`` is the DDP-wrapped module, ``trainer.eval_net`` the unwrapped one that
    ``trainer.evaluate(loader)`` runs on this rank's share of any loader (sums all-reduced); the batch
    size of the train loader is the global one; rank 0 alone writes ``out_dir`` and prints.
    """

    def __init__(self, model: nn.Module, data, device=None, epochs: int | None = None, *,
                 settings: Settings | None = None, optimizer: str | torch.optim.Optimizer | None = None,
                 config: dict | None = None, hooks=(), **flat):
        from .compile import compile_model, is_compiled, unwrap_model
        from .precision import choose_precision, resolve_channels_last

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.train_loader, self.test_loader, self.data_info = _split_data(data)
        scheduler_instance, optimizer = _scheduler_instance(flat, optimizer)
        criterion, smoothing = flat.pop("criterion", None), flat.get("label_smoothing")
        s = self.settings = _resolve_settings(settings, epochs, optimizer, flat)
        data = _with_validation(self, data)
        self.dist = self._setup_distributed(device)  # one process: world size 1, the device resolved as always
        self.device = self.dist.device
        self.criterion = _criterion(criterion, smoothing, self.device)
        self.run_dir = RunDir(s.run.out_dir) if s.run.out_dir is not None else None
        self.out_dir = self.run_dir.path if self.run_dir is not None else None
        self.resume, self.overwrite, self.seed = s.run.resume, s.run.overwrite, s.run.seed
        self.progress, self.verbose = (s.run.progress, s.run.verbose) if self.dist.is_writer else (False, False)
        ckpt = resume.check_run_dir(self)  # everything is validated before the disk is touched
        self.resume = s.run.resume  # resume="auto" is decided now
        self.epochs = _check_epochs(s.schedule.epochs)
        self.lr = _check_lr(s.optim.lr)
        self.precision = choose_precision(self.device, s.engine.amp, model=model)  # one warning where it is slow
        self.amp = self.precision.mode
        self.channels_last = resolve_channels_last(self.device, s.engine.channels_last, model)
        self.model = unwrap_model(model).to(self.device)  # the plain module: checkpoints hold its weights
        note = batchnorm_note(self.model, s.engine.sync_bn, self.dist.world_size)
        if note and self.verbose:
            print(note)
        if s.engine.sync_bn and self.dist.active:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same keys as BatchNorm
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compile = s.engine.compile
        # the module that trains and tests: compiled once here (or as the caller compiled it)
        self.net = compile_model(self.model, self.compile) if self.compile else \
            (model if is_compiled(model) else self.model)
        self.steps_per_epoch = _steps_per_epoch(self.train_loader)
        self._build_optimizer(optimizer if isinstance(optimizer, torch.optim.Optimizer) else None)
        self._build_scheduler_and_scaler(scheduler_instance)
        self.scheduler_name = s.schedule.name
        self.tta_flip = bool(s.engine.tta_flip)
        self.engine_options = {
            "amp": self.amp, "ricap_beta": s.engine.ricap_beta, "label_smoothing": s.engine.label_smoothing,
            "l1": s.engine.l1, "grad_clip": s.engine.grad_clip, "channels_last": self.channels_last,
            "criterion": self.criterion,
        }
        if self.criterion is not None or scheduler_instance is not None:  # recorded by kind (not JSON-able)
            config = dict(config or {})
            if self.criterion is not None:
                config.setdefault("criterion", _callable_name(self.criterion))
            if scheduler_instance is not None:
                config.setdefault("scheduler", type(scheduler_instance).__name__)
        self.config = _run_config(self, self.model, config)
        self.history = History()
        self.start_epoch = 0  # completed epochs (advances as fit() runs)
        self._saved = False
        self._saved_epoch = 0  # the epoch last.pt holds (0: none written by this trainer yet)
        self._rng_to_restore = None
        self._reseed_rank = False
        self._resume_ckpt = ckpt
        self._signals = _NO_SIGNALS
        self.hooks = default_hooks(s, self.run_dir) + list(hooks)  # the epoch line, TensorBoard, early stopping
        self.should_stop = False  # a hook asks to end the run after the current epoch
        if ckpt is not None:
            resume.restore(self, ckpt)
        self.eval_net = self.net  # evaluation: every rank its own share, no collective per batch
        self._eval_shares: dict = {}  # id(loader) -> (loader, this rank's share of it)
        self.net = self.dist.wrap(self.net)  # DDP under torchrun (weights broadcast from rank 0)
        self.dist.barrier()  # every rank has checked the run folder before rank 0 writes to it

    # ---- construction steps

    def _setup_distributed(self, device):
        """The process group under torchrun (``woollylib.distributed``): this rank's device, its share of
        the data (the batch size is the global one), checks; world size 1 without torchrun."""
        from .distributed import check_sync_bn, setup
        from .preloading.shard import shard_loader

        e = self.settings.engine
        dist = setup(device, e.dist_backend, e.dist_timeout)
        if dist.active:
            check_sync_bn(e.sync_bn, dist.device, dist.world_size)
            self.train_loader = shard_loader(self.train_loader, dist.rank, dist.world_size, train=True)
        return dist  # evaluation loaders are sharded by evaluate()

    def _build_optimizer(self, instance) -> None:
        if instance is not None:
            self.optimizer = instance
            return
        from .bp.optimizer import get_optimizer

        o = self.settings.optim
        self.optimizer = get_optimizer(o.name, self.model, lr=self.lr, momentum=o.momentum,
                                       weight_decay=o.weight_decay, nesterov=o.nesterov,
                                       no_decay_bn_bias=o.no_decay_bn_bias)

    def _build_scheduler_and_scaler(self, instance=None) -> None:
        from .bp.engine import make_scaler
        from .scheduler import get_scheduler

        sch = self.settings.schedule
        if instance is not None:
            _check_scheduler_instance(instance, self.model, self.lr, self.epochs, self.steps_per_epoch)
            self.scheduler = instance
        else:
            self.scheduler = get_scheduler(sch.name, self.optimizer, max_lr=self.lr, epochs=self.epochs,
                                           steps_per_epoch=self.steps_per_epoch, **sch.scheduler_kwargs())
        self.scaler = make_scaler(self.device, self.amp)  # validates amp; None unless fp16

    def checkpoint(self, epoch: int, rng_ranks: list | None = None) -> dict:
        """The checkpoint dict after ``epoch`` completed epochs (``woollylib.resume.checkpoint``)."""
        return resume.checkpoint(self, epoch, rng_ranks)

    def _rng_of_this_rank(self, ckpt: dict) -> dict | None:
        return resume.rng_for_rank(ckpt, self.dist.rank, self.dist.world_size, self.verbose)

    def _save(self, epoch: int, is_best: bool) -> None:
        """Commit epoch ``epoch``: last.pt first (it carries history and config, so every later file can
        be repaired from it), then best.pt, history.json and, on the first save, config.json."""
        if self.run_dir is None:
            return
        # every rank's RNG states (RICAP draws, dropout, loader workers), so a resume continues each rank's
        rng_ranks = self.dist.gather(resume.rng_state()) if self.dist.active else None
        if not self.dist.is_writer:  # rank 0 writes; the others wait for it
            self._saved, self._saved_epoch = True, epoch
            self.dist.barrier()
            return
        with self._signals.holding():  # an interrupt waits until the files are consistent
            run = self.run_dir
            write_config = not self._saved and not getattr(self, "_marker_written", False)
            best = best_checkpoint(self.model.state_dict(), epoch, self.history, self.config, self.run_id) \
                if is_best else None
            run.commit(self.checkpoint(epoch, rng_ranks), best, self.history, self.config, write_config)
            self._saved, self._saved_epoch = True, epoch
            if write_config and self.overwrite and not self.resume:  # what is left of the replaced run is stale now
                run.remove_run_files(keep=(CONFIG, LAST, HISTORY, METRICS_CSV, MANIFEST, TENSORBOARD)
                                     + ((BEST,) if is_best else ()))
        self.dist.barrier()

    # ---- the loop

    def fit(self, stop_after: int | None = None) -> History:
        """Run the remaining epochs and return the history.

        ``stop_after``: stop once this many epochs (in total) are done, leaving a resumable run
        (the schedule still spans ``epochs``). A non-finite loss raises the engine's
        ``NonFiniteLossError`` (epoch, batch, lr); Ctrl-C re-raises ``KeyboardInterrupt``. In both
        cases ``last.pt`` and ``history.json`` hold the last completed epoch. SIGTERM (Colab, SLURM,
        ``timeout``) stops like Ctrl-C; either waits for a save in progress to finish.
        """
        end = self.epochs if stop_after is None else min(int(stop_after), self.epochs)
        with contextlib.ExitStack() as stack:
            stack.callback(self.dist.close)  # a process group made by this trainer ends with fit(), on any exit
            if self.run_dir is not None and self.dist.is_writer:
                stack.enter_context(self.run_dir.lock())  # the one writer, until the last hook is done
                resume.prepare_run_dir(self)
            self._signals = stack.enter_context(StopSignals())
            self.first_epoch, self.should_stop = self.start_epoch + 1, False
            try:
                for hook in self.hooks:
                    hook.on_fit_start(self)
                self._fit_epochs(end)
                for hook in self.hooks:
                    hook.on_fit_end(self)
                return self.history
            except BaseException as exc:
                for hook in self.hooks:
                    hook.on_stop(self, exc)
                crashed = isinstance(exc, SimulatedCrash)  # stands for a kill: nothing is cleaned up
                if self.run_dir is not None and not self._saved and not crashed and self.dist.is_writer:
                    if getattr(self, "_marker_written", False) and not self.run_dir.has(LAST):
                        self.run_dir.remove_marker()  # no epoch done: leave the folder as it was
                    elif self.overwrite and not self.resume:
                        self.run_dir.withdraw()  # the old run stays the folder's run
                raise

    def _fit_epochs(self, end: int) -> History:
        from .bp.engine import NonFiniteLossError

        resume.seed_or_restore_rng(self)
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch + 1, end + 1):
                if self.should_stop:
                    break
                self.run_epoch(epoch)
        except KeyboardInterrupt as exc:
            if self.verbose:
                what = getattr(exc, "signal_name", None) or "interrupted"
                print(_stop_note(self, f"{what} during epoch {epoch}"), flush=True)
            raise
        except NonFiniteLossError as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(_stop_note(self, "training stopped", diverged=True))
            raise
        return self.history

    def run_epoch(self, epoch: int) -> dict:
        """Train, validate (with a split) and test epoch ``epoch`` (1-based), record it, save, print;
        return its figures. Every decision (the plateau schedule, best.pt, early stopping) looks at the
        validation split; without one the plateau schedule watches the training loss and best.pt is the
        peak test epoch, labelled as chosen on the test set."""
        from .bp.engine import train_epoch
        from .scheduler import scheduler_steps_per_batch, step_epoch_scheduler

        for loader in (self.train_loader, self.val_loader, self.test_loader):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch - 1)
        per_batch = self.scheduler is not None and scheduler_steps_per_batch(self.scheduler)
        t0 = time.perf_counter()
        tr = train_epoch(self.net, self.train_loader, self.optimizer, device=self.device,
                         scheduler=self.scheduler if per_batch else None, scaler=self.scaler,
                         progress=self.progress, epoch=epoch, **self.engine_options)
        tr = self.dist.reduce_metrics(tr)  # every image once over the ranks (identity on one process)
        va = self.evaluate(self.val_loader) if self.val_loader is not None else None
        te = self.evaluate(self.test_loader)
        step_epoch_scheduler(self.scheduler, (va or tr)["loss"])  # never the test loss; no-op per batch
        seconds = time.perf_counter() - t0
        h = self.history
        chosen = h.val_acc if va is not None else h.test_acc
        best_before = max(chosen) if chosen else None
        h.append(train_loss=tr["loss"], train_acc=tr["acc"], test_loss=te["loss"], test_acc=te["acc"],
                 lrs=tr["lrs"], epoch_time=seconds, val_loss=va["loss"] if va else None,
                 val_acc=va["acc"] if va else None)
        now = va if va is not None else te
        self._save(epoch, is_best=self.improves_best(now["acc"], best_before))
        self.start_epoch = epoch  # a later fit() call continues from here
        figures = {"train": tr, "val": va, "test": te, "seconds": seconds}
        for hook in self.hooks:
            hook.on_epoch_end(self, epoch, figures)
        return figures

    @staticmethod
    def improves_best(acc: float, best_before: float | None) -> bool:
        """Whether an epoch's accuracy (validation, else test) replaces best.pt: the first epoch does, and
        a later one that is strictly higher (a tie keeps the earlier epoch)."""
        return best_before is None or acc > best_before

    @property
    def stopped_early(self) -> bool:
        """Early stopping: the validation loss has not improved for ``patience`` epochs."""
        return any(isinstance(h, EarlyStopping) and h.done(self) for h in self.hooks)

    def evaluate(self, loader) -> dict:
        """``{'loss', 'acc', 'samples'}`` of the current model on ``loader`` (test or validation); under
        torchrun every rank evaluates its own share and the sums are reduced, so each image counts once."""
        from .bp.engine import evaluate
        from .preloading.shard import shard_loader

        if self.dist.active:  # any loader (test, validation): this rank's share r::W, made once
            shares = self._eval_shares
            if id(loader) not in shares:
                shares[id(loader)] = (loader, shard_loader(loader, self.dist.rank, self.dist.world_size, train=False))
            loader = shares[id(loader)][1]
        self.dist.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics everywhere
        stats = evaluate(self.eval_net, loader, device=self.device, amp=self.amp, tta_flip=self.tta_flip,
                         criterion=self.criterion)
        return self.dist.reduce_metrics(stats)

def train_test_loop(
    model: nn.Module,
    data,
    device: str | torch.device | None = None,
    epochs: int | None = None,
    max_lr: float | None = None,
    **kwargs,
) -> History:
    """Train and test ``model`` on ``data`` for ``epochs`` epochs; return the ``History``.

    ``max_lr`` is the learning rate (the one-cycle peak with the default ``scheduler="onecycle"``).
    Every other keyword is a ``Trainer`` option (optimizer, scheduler, amp, ricap_beta,
    label_smoothing, out_dir, resume, overwrite, seed, settings, hooks, ...). With ``out_dir`` the run
    folder also gets ``metrics.json`` (the whole test set), as from ``woollylib train``.
    """
    from .hooks import RunResults

    hooks = list(kwargs.pop("hooks", ()))
    if kwargs.get("out_dir") is not None or (kwargs.get("settings") is not None and kwargs["settings"].run.out_dir):
        hooks.append(RunResults(data))
    return Trainer(model, data, device, epochs, max_lr=max_lr, hooks=hooks, **kwargs).fit()
