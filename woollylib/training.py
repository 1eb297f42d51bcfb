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

``out_dir`` holds, after every epoch (each file written atomically: temp file + ``os.replace``):

- ``last.pt``: model, optimizer, scheduler, scaler, epoch, history, RNG states, config
  (torchvision-reference contents; loads with ``torch.load(path, weights_only=True)``);
- ``best.pt``: model weights of the epoch with the highest test accuracy, with epoch and config;
- ``history.json`` and ``config.json``.

A fresh run refuses to start in a directory that already holds a run unless ``resume=True``
(continue it) or ``overwrite=True`` (replace it once the first new epoch is done).
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKPOINT_VERSION",
    "History",
    "Trainer",
    "atomic_save",
    "atomic_write_json",
    "load_checkpoint",
    "speed_defaults",
    "train_test_loop",
]

CHECKPOINT_VERSION = 1
RUN_FILES = ("last.pt", "best.pt", "history.json", "config.json", "metrics.json")

# ----------------------------------------------------------------------------------------------
# History


@dataclass
class History:
    """Per-epoch curves of one run (epochs are 1-based when reported, lists are 0-based)."""

    train_loss: list[float] = field(default_factory=list)  # mean per sample
    train_acc: list[float] = field(default_factory=list)  # percent, 0..100
    test_loss: list[float] = field(default_factory=list)  # mean per sample
    test_acc: list[float] = field(default_factory=list)  # percent, 0..100
    lr: list[float] = field(default_factory=list)  # learning rate of every optimizer step
    epoch_time: list[float] = field(default_factory=list)  # seconds per epoch (train + test)

    def __len__(self) -> int:
        return len(self.train_loss)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    @property
    def best_epoch(self) -> int | None:
        """1-based epoch with the highest test accuracy (earliest on ties); None when empty."""
        if not self.test_acc:
            return None
        return int(np.argmax(self.test_acc)) + 1

    @property
    def best_test_acc(self) -> float | None:
        return max(self.test_acc) if self.test_acc else None

    def append(self, *, train_loss, train_acc, test_loss, test_acc, lrs, epoch_time) -> None:
        self.train_loss.append(float(train_loss))
        self.train_acc.append(float(train_acc))
        self.test_loss.append(float(test_loss))
        self.test_acc.append(float(test_acc))
        self.lr.extend(float(x) for x in lrs)
        self.epoch_time.append(float(epoch_time))

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        if not isinstance(d, dict):
            raise TypeError(f"History.from_dict expects a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown history keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        return cls(**{k: [float(x) for x in d.get(k, [])] for k in names})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the history as JSON (atomically) and return the path."""
        return atomic_write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no history file at {path}; a run writes it to <out_dir>/history.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); it may be truncated, rerun or delete it") from exc
        return cls.from_dict(data)


# ----------------------------------------------------------------------------------------------
# Atomic files and checkpoints


def _atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(fileobj)`` on a temp file in the same directory, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Load a woollylib checkpoint with ``weights_only=True``; clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; start a fresh run (resume=False) or point out_dir at a run "
            "directory that holds last.pt"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, disallowed globals...
        raise ValueError(
            f"checkpoint {path} is corrupt or not a woollylib checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it, or resume from another run "
            "directory"
        ) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"checkpoint {path} has no 'model' entry; it was not written by woollylib.training")
    return ckpt


def _rng_state() -> dict:
    """Global RNG states as weights_only-loadable objects (tensors, ints, lists)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _jsonable(value: Any) -> Any:
    """Turn a config value into plain JSON (dict/list/str/int/float/bool/None)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _jsonable(value.tolist())
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    return repr(value)


def _state_dict_mismatch(expected: dict, got: dict) -> str:
    """Human summary of key/shape differences between two state dicts ('' when compatible)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} model keys missing from the checkpoint (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint keys the model does not have (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# Trainer


def _split_data(data) -> tuple[Any, Any, dict]:
    """(train_loader, test_loader, info) from a DataBundle-like object or a (train, test) pair."""
    if hasattr(data, "train_loader") and hasattr(data, "test_loader"):
        info = {}
        for key in ("name", "classes", "mean", "std"):
            if getattr(data, key, None) is not None:
                info[key] = _jsonable(getattr(data, key))
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


def _registry_spec(model: nn.Module) -> dict:
    """``model_name``/``model_options`` of a model built by ``woollylib.models.get_model`` (so a
    report can rebuild exactly this architecture); empty for other models."""
    spec = getattr(model, "woollylib_spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        return {}
    return {"model_name": spec["name"], "model_options": dict(spec.get("options") or {})}


def speed_defaults(device, amp="auto", channels_last="auto") -> tuple[bool | str, bool]:
    """Resolve ``"auto"`` for ``amp`` and ``channels_last`` on ``device``; other values pass through.

    Chosen from measurements (benchmarks/run.py): on CUDA, fp16 autocast with a GradScaler and
    channels_last are the standard fast path for convnets. On the CPU, channels_last trained 1.1-1.5x
    faster for every model here (compact 1,299 -> 2,004 img/s, custom_resnet 162 -> 183, resnet18
    78 -> 112), while bf16 autocast helps only CPUs with native bf16 and the ResNets (custom_resnet
    1.9x on an AVX-512-bf16 CPU) and slows the depthwise compact net: it stays opt-in (``amp=True``).
    MPS: both off.
    """
    device = torch.device(device)
    if isinstance(amp, str) and amp == "auto":
        amp = device.type == "cuda"
    if isinstance(channels_last, str):
        if channels_last != "auto":
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        channels_last = device.type in ("cuda", "cpu")
    return amp, bool(channels_last)


class Trainer:
    """Train ``model`` for ``epochs`` epochs with checkpoints after each epoch.

    Args (units in brackets):
        model: an ``nn.Module`` returning logits; moved to ``device``.
        data: a ``DataBundle`` or a ``(train_loader, test_loader)`` pair of iterables of
            ``(images float (B,C,H,W), labels int64 (B,))``.
        device: ``torch.device``/name/None ("auto" = cuda > mps > cpu).
        epochs: total epochs of the run (on resume, the same total; None = from the checkpoint).
        optimizer: name for ``bp.optimizer.get_optimizer`` ("sgd", "adam", ...) or an Optimizer.
        lr / max_lr: learning rate (peak of the one-cycle schedule); give one of them.
        momentum, weight_decay, nesterov: optimizer options (weight_decay is L2 per step).
        scheduler: "onecycle" (per batch) | "plateau" (per epoch, on the test loss) | "none" | None.
        scheduler_kwargs: extra options for ``scheduler.get_scheduler`` (pct_start, div_factor, ...).
        amp: "auto" | False | True | "bf16" | "fp16" (see the engine). "auto" = fp16 autocast with a
            GradScaler on CUDA, off elsewhere (see ``speed_defaults``).
        channels_last: "auto" | True | False; "auto" = on for CUDA and CPU, off for MPS.
        ricap_beta, label_smoothing, l1, grad_clip: engine options.
        out_dir: run directory for checkpoints and history (None = keep nothing on disk).
        resume: continue the run saved in ``out_dir/last.pt`` exactly where it stopped.
        overwrite: allow a fresh run to replace the run already in ``out_dir``.
        seed: seed Python/NumPy/torch at the start of a fresh run (not on resume: RNG is restored).
        progress: engine progress bar (True/False/callable); verbose: one summary line per epoch.
        config: extra JSON-able entries stored in the checkpoint config (e.g. CLI arguments).
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        device: str | torch.device | None = None,
        epochs: int | None = None,
        *,
        optimizer: str | torch.optim.Optimizer = "sgd",
        lr: float | None = None,
        max_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        no_decay_bn_bias: bool = False,
        scheduler: str | None = "onecycle",
        scheduler_kwargs: dict | None = None,
        amp: bool | str = "auto",
        ricap_beta: float | None = None,
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        grad_clip: float | None = None,
        channels_last: bool | str = "auto",
        tta_flip: bool = False,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        seed: int | None = None,
        progress: bool | Any = True,
        verbose: bool = True,
        config: dict | None = None,
    ):
        from .device import resolve_device

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.train_loader, self.test_loader, data_info = _split_data(data)
        self.device = resolve_device(device)
        amp, channels_last = speed_defaults(self.device, amp, channels_last)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = bool(resume)
        self.overwrite = bool(overwrite)
        self.progress = progress
        self.verbose = verbose
        self.seed = seed

        # ---- validate everything before touching the disk
        if self.resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir=<the run directory that holds last.pt>")
        if self.resume and self.overwrite:
            raise ValueError("resume=True and overwrite=True contradict each other; pass only one")
        ckpt = None
        if self.resume:
            ckpt = load_checkpoint(self.out_dir / "last.pt", map_location=self.device)
            if epochs is None:
                epochs = ckpt.get("config", {}).get("epochs")
        elif self.out_dir is not None and not self.overwrite:
            existing = [n for n in ("last.pt", "best.pt", "history.json") if (self.out_dir / n).exists()]
            if existing:
                raise FileExistsError(
                    f"{self.out_dir} already holds a run ({', '.join(existing)}); pass resume=True to continue "
                    "it, overwrite=True to replace it, or choose another out_dir"
                )
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.epochs = int(epochs)
        if lr is not None and max_lr is not None and lr != max_lr:
            raise ValueError(f"got lr={lr} and max_lr={max_lr}; pass only one (max_lr is the one-cycle peak)")
        lr = max_lr if max_lr is not None else lr
        if isinstance(optimizer, torch.optim.Optimizer):
            if lr is None:
                lr = float(optimizer.param_groups[0]["lr"])
        elif lr is None:
            raise ValueError("pass lr= (or max_lr=) > 0; woollylib.scheduler.find_lr suggests one")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"the learning rate must be a finite number > 0, got {lr!r}")
        self.lr = float(lr)
        sched_name = "none" if scheduler is None else str(scheduler).lower()
        self.scheduler_name = sched_name
        self.amp = amp

        self.model = model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = _steps_per_epoch(self.train_loader)

        # ---- optimizer, scheduler, scaler
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer = optimizer
            opt_name = type(optimizer).__name__.lower()
        elif isinstance(optimizer, str):
            from .bp.optimizer import get_optimizer

            self.optimizer = get_optimizer(
                optimizer,
                self.model,
                lr=self.lr,
                momentum=momentum,
                weight_decay=weight_decay,
                nesterov=nesterov,
                no_decay_bn_bias=no_decay_bn_bias,
            )
            opt_name = optimizer.lower()
        else:
            raise TypeError(f"optimizer must be a name such as 'sgd' or a torch.optim.Optimizer, got {optimizer!r}")
        from .scheduler import get_scheduler

        self.scheduler = get_scheduler(
            sched_name,
            self.optimizer,
            max_lr=self.lr,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            **(scheduler_kwargs or {}),
        )
        from .bp.engine import make_scaler

        self.scaler = make_scaler(self.device, amp)  # validates amp; None unless fp16
        self.engine_options = {
            "amp": amp,
            "ricap_beta": ricap_beta,
            "label_smoothing": label_smoothing,
            "l1": l1,
            "grad_clip": grad_clip,
            "channels_last": channels_last,
        }
        self.tta_flip = tta_flip
        self.config = _jsonable(
            {
                "model": type(model).__name__,
                **_registry_spec(model),
                "parameters": sum(p.numel() for p in model.parameters()),
                "epochs": self.epochs,
                "optimizer": opt_name,
                "lr": self.lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
                "no_decay_bn_bias": no_decay_bn_bias,
                "scheduler": sched_name,
                "scheduler_kwargs": scheduler_kwargs or {},
                "steps_per_epoch": self.steps_per_epoch,
                "batch_size": getattr(self.train_loader, "batch_size", None),
                **self.engine_options,
                "tta_flip": tta_flip,
                "seed": seed,
                "device": str(self.device),
                "data": data_info,
                **(config or {}),
            }
        )
        self.history = History()
        self.start_epoch = 0  # completed epochs (advances as fit() runs)
        self._saved = False
        if ckpt is not None:
            self._restore(ckpt)

    def _restore(self, ckpt: dict) -> None:
        path = self.out_dir / "last.pt"
        saved = ckpt.get("config", {})
        mismatch = _state_dict_mismatch(self.model.state_dict(), ckpt["model"])
        if mismatch:
            raise ValueError(
                f"checkpoint {path} was saved from a different model (saved model: {saved.get('model')!r}, "
                f"this model: {type(self.model).__name__!r}): {mismatch}; build the same model as the run, or "
                "start a new run in another out_dir"
            )
        # keys that define the run; a one-cycle schedule is also fixed by its length
        keys = ["optimizer", "scheduler", "lr", "steps_per_epoch"]
        if self.scheduler_name == "onecycle":
            keys.append("epochs")
        diffs = [
            f"{k}: run has {saved[k]!r}, now {self.config[k]!r}"
            for k in keys
            if k in saved and saved[k] != self.config[k]
        ]
        if diffs:
            raise ValueError(
                f"cannot resume {path} with different settings ({'; '.join(diffs)}); use the run's settings "
                "(see its config.json) or start a new run in another out_dir"
            )
        self.model.load_state_dict(ckpt["model"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt.get("scaler") is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(
                f"checkpoint {path} does not match this optimizer/scheduler ({exc}); use the run's settings "
                "(see its config.json) or start a new run in another out_dir"
            ) from exc
        self.history = History.from_dict(ckpt["history"])
        self.start_epoch = int(ckpt["epoch"])
        self._rng_to_restore = ckpt.get("rng")
        if self.verbose:
            print(f"Resuming {path} after epoch {self.start_epoch}/{self.epochs}")

    # ---- saving

    def checkpoint(self, epoch: int) -> dict:
        """The checkpoint dict after ``epoch`` completed epochs (torch.load(weights_only=True)-safe)."""
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "history": self.history.to_dict(),
            "rng": _rng_state(),
            "config": self.config,
        }

    def _save(self, epoch: int, is_best: bool) -> None:
        if self.out_dir is None:
            return
        first_save = not self._saved
        self._saved = True
        atomic_save(self.checkpoint(epoch), self.out_dir / "last.pt")
        self.history.save(self.out_dir / "history.json")
        if is_best:
            best = {
                "version": CHECKPOINT_VERSION,
                "model": self.model.state_dict(),
                "epoch": epoch,
                "test_acc": self.history.test_acc[-1],
                "test_loss": self.history.test_loss[-1],
                "config": self.config,
            }
            atomic_save(best, self.out_dir / "best.pt")
        if first_save:
            atomic_write_json(self.config, self.out_dir / "config.json")
            if self.overwrite and not self.resume:  # results of the replaced run are stale now
                (self.out_dir / "metrics.json").unlink(missing_ok=True)

    # ---- the loop

    def fit(self, stop_after: int | None = None) -> History:
        """Run the remaining epochs and return the history.

        ``stop_after``: stop once this many epochs (in total) are done, leaving a resumable run
        (the schedule still spans ``epochs``). A non-finite loss raises the engine's
        ``NonFiniteLossError`` (epoch, batch, lr); Ctrl-C re-raises ``KeyboardInterrupt``. In both
        cases ``last.pt`` and ``history.json`` hold the last completed epoch.
        """
        from .bp.engine import NonFiniteLossError, evaluate, train_epoch
        from .scheduler import scheduler_steps_per_batch, step_epoch_scheduler

        end = self.epochs if stop_after is None else min(int(stop_after), self.epochs)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        rng = getattr(self, "_rng_to_restore", None)
        if rng is not None:
            _set_rng_state(rng)
            self._rng_to_restore = None
        elif self.seed is not None and self.start_epoch == 0:
            from .device import seed_everything

            seed_everything(self.seed)
        per_batch = self.scheduler is not None and scheduler_steps_per_batch(self.scheduler)
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch + 1, end + 1):
                for loader in (self.train_loader, self.test_loader):
                    if hasattr(loader, "set_epoch"):
                        loader.set_epoch(epoch - 1)
                t0 = time.perf_counter()
                tr = train_epoch(
                    self.model,
                    self.train_loader,
                    self.optimizer,
                    device=self.device,
                    scheduler=self.scheduler if per_batch else None,
                    scaler=self.scaler,
                    progress=self.progress,
                    epoch=epoch,
                    **self.engine_options,
                )
                te = evaluate(
                    self.model,
                    self.test_loader,
                    device=self.device,
                    amp=self.engine_options["amp"],
                    tta_flip=self.tta_flip,
                )
                step_epoch_scheduler(self.scheduler, te["loss"])  # no-op for per-batch ones
                seconds = time.perf_counter() - t0
                best_before = self.history.best_test_acc
                self.history.append(
                    train_loss=tr["loss"],
                    train_acc=tr["acc"],
                    test_loss=te["loss"],
                    test_acc=te["acc"],
                    lrs=tr["lrs"],
                    epoch_time=seconds,
                )
                self._save(epoch, is_best=best_before is None or te["acc"] > best_before)
                self.start_epoch = epoch  # a later fit() call continues from here
                if self.verbose:
                    lr_now = tr["lrs"][-1] if tr["lrs"] else self.optimizer.param_groups[0]["lr"]
                    print(
                        f"epoch {epoch:>3}/{self.epochs}  train loss {tr['loss']:.4f} acc {tr['acc']:6.2f}%  "
                        f"test loss {te['loss']:.4f} acc {te['acc']:6.2f}%  lr {lr_now:.3g}  {seconds:.1f} s",
                        flush=True,
                    )
        except KeyboardInterrupt:
            if self.verbose:
                print(self._stop_note(f"interrupted during epoch {epoch}"), flush=True)
            raise
        except NonFiniteLossError as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(self._stop_note("training stopped", diverged=True))
            raise
        return self.history

    def _stop_note(self, what: str, diverged: bool = False) -> str:
        done = len(self.history)
        advice = (
            "lower the learning rate (or set grad_clip) and start a new run"
            if diverged
            else "continue with resume=True (CLI: --resume)"
        )
        if self.out_dir is None:
            return f"{what}; {done} completed epochs are in trainer.history (no out_dir, nothing saved)"
        if done == 0:
            return f"{what} before the first epoch ended; nothing was written to {self.out_dir}"
        return (
            f"{what}; {self.out_dir / 'last.pt'} and history.json hold epoch {done}/{self.epochs}; {advice}"
        )


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
    label_smoothing, out_dir, resume, overwrite, seed, ...).
    """
    return Trainer(model, data, device, epochs, max_lr=max_lr, **kwargs).fit()
