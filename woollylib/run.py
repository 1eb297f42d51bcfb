"""The run directory: the one module that names, writes and reads a run's files.

    from woollylib.run import RunDir, History, ModelSpec
    run = RunDir("runs/r9")
    run.holds_run()                  # the woollylib files already there ([] for a new folder)
    config = run.read_config()       # config.json in the current layout (older layouts upgraded)
    history = run.read_history()     # History of the completed epochs
    ckpt = run.load("last")          # torch.load(weights_only=True) with errors that name the file
    model = ModelSpec.from_dict(config["model"]).build()   # the run's architecture, untrained

Files of a run (every one written atomically: temp file in the folder, fsync, ``os.replace``):

    config.json      settings, model spec, data description, resolved device/precision
    last.pt          model, optimizer, scheduler, scaler, epoch, history, RNG states, config
    best.pt          weights of the best epoch (highest validation accuracy with a validation split,
                     else highest test accuracy: chosen on the test set), with epoch and config
    history.json     per-epoch curves (History)
    metrics.csv      the same, one row per epoch: epoch, lr, train/val/test loss and accuracy, seconds
    metrics.json     whole-test-set figures of the final weights
    lr_finder.json   LR range test curve and suggestion (+ lr_finder.png)
    report.md        the report, with the figures in FIGURE_FILES beside it
    tensorboard/     TensorBoard event files (with ``tensorboard=True``)

``config.json`` format 2: ``{"format": "woollylib-run", "version": 2, "model": ModelSpec,
"settings": Settings.to_dict(), "resolved": {...}, "data": {...}, "extra": {...}}``. Format 1
(woollylib 0.1: flat keys, the CLI's arguments under "cli") is read and upgraded.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import Settings

__all__ = [
    "BEST",
    "CHECKPOINT_VERSION",
    "CONFIG",
    "CONFIG_FORMAT",
    "CONFIG_VERSION",
    "FIGURE_FILES",
    "HISTORY",
    "LAST",
    "LR_FINDER",
    "LR_FINDER_PNG",
    "METRICS",
    "METRICS_CSV",
    "REPORT",
    "TENSORBOARD",
    "History",
    "ModelSpec",
    "RunDir",
    "RunLock",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "best_checkpoint",
    "jsonable",
    "load_checkpoint",
    "upgrade_config",
]

CONFIG, LAST, BEST, HISTORY, METRICS = "config.json", "last.pt", "best.pt", "history.json", "metrics.json"
LR_FINDER, LR_FINDER_PNG, REPORT = "lr_finder.json", "lr_finder.png", "report.md"
METRICS_CSV, TENSORBOARD = "metrics.csv", "tensorboard"  # per-epoch table; TensorBoard event folder
METRICS_CSV_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                       "seconds")
FIGURE_FILES = {  # report figures, by key
    "curves": "curves.png",
    "lr_finder": LR_FINDER_PNG,
    "lr_schedule": "lr_schedule.png",
    "confusion_matrix": "confusion_matrix.png",
    "per_class_accuracy": "per_class_accuracy.png",
    "misclassified": "misclassified.png",
    "gradcam": "gradcam.png",
}
RUN_MARKERS = (LAST, BEST, HISTORY)  # a folder with any of these holds a run (also one of format 1)
LOCK = ".woollylib.lock"
OWN_FILES = (CONFIG, LAST, BEST, HISTORY, METRICS_CSV, METRICS, LR_FINDER, REPORT, LOCK, *FIGURE_FILES.values())


def _is_temp(name: str) -> bool:
    """A temp file of an atomic write (``.NAME.XXXX.tmp``) of one of the run files."""
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in OWN_FILES)
CONFIG_FORMAT, CONFIG_VERSION = "woollylib-run", 2
CHECKPOINT_VERSION = 1

# ---------------------------------------------------------------------------------- history ---


@dataclass
class History:
    """Per-epoch curves of one run (epochs are 1-based when reported, lists are 0-based).

    ``val_loss``/``val_acc`` are empty without a validation split. ``best_epoch`` is the epoch
    ``best.pt`` holds: the highest validation accuracy with a split (``val_chosen_epoch``), else the
    highest test accuracy (``peak_test_epoch``: chosen on the test set, so not a model selection).
    """

    train_loss: list[float] = field(default_factory=list)  # mean per sample
    train_acc: list[float] = field(default_factory=list)  # percent, 0..100
    test_loss: list[float] = field(default_factory=list)  # mean per sample
    test_acc: list[float] = field(default_factory=list)  # percent, 0..100
    lr: list[float] = field(default_factory=list)  # learning rate of every optimizer step
    epoch_time: list[float] = field(default_factory=list)  # seconds per epoch (train + val + test)
    val_loss: list[float] = field(default_factory=list)  # mean per sample; [] without a validation split
    val_acc: list[float] = field(default_factory=list)  # percent, 0..100

    def __len__(self) -> int:
        return len(self.train_loss)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    @property
    def has_val(self) -> bool:
        return bool(self.val_acc)

    @property
    def protocol(self) -> str:
        """"validation" (decisions on the validation split) or "test-only" (no split)."""
        return "validation" if self.has_val else "test-only"

    @property
    def val_chosen_epoch(self) -> int | None:
        """1-based epoch with the highest validation accuracy (earliest on ties); None without a split."""
        return int(np.argmax(self.val_acc)) + 1 if self.val_acc else None

    @property
    def peak_test_epoch(self) -> int | None:
        """1-based epoch with the highest test accuracy (chosen on the test set: optimistic)."""
        return int(np.argmax(self.test_acc)) + 1 if self.test_acc else None

    @property
    def best_epoch(self) -> int | None:
        """The epoch best.pt holds: ``val_chosen_epoch`` with a split, else ``peak_test_epoch``."""
        return self.val_chosen_epoch if self.has_val else self.peak_test_epoch

    @property
    def best_test_acc(self) -> float | None:
        """Test accuracy of ``best_epoch`` (with a split: of the epoch chosen on validation)."""
        best = self.best_epoch
        return self.test_acc[best - 1] if best is not None else None

    def epochs_without_improvement(self) -> int:
        """Epochs since the lowest validation loss (0 when the last epoch has it, or without a split)."""
        if not self.val_loss:
            return 0
        return len(self.val_loss) - (int(np.argmin(self.val_loss)) + 1)

    @property
    def final_test_acc(self) -> float | None:
        return self.test_acc[-1] if self.test_acc else None

    def append(self, *, train_loss, train_acc, test_loss, test_acc, lrs, epoch_time, val_loss=None,
               val_acc=None) -> None:
        if (val_loss is None) != (val_acc is None) or (val_acc is None and self.val_acc) or \
                (val_acc is not None and len(self.val_acc) != len(self.train_loss)):
            raise ValueError("validation figures must be given for every epoch of a run or for none")
        self.train_loss.append(float(train_loss))
        self.train_acc.append(float(train_acc))
        self.test_loss.append(float(test_loss))
        self.test_acc.append(float(test_acc))
        self.lr.extend(float(x) for x in lrs)
        self.epoch_time.append(float(epoch_time))
        if val_acc is not None:
            self.val_loss.append(float(val_loss))
            self.val_acc.append(float(val_acc))

    def rows(self) -> list[dict]:
        """One dict per epoch (metrics.csv): epoch, lr (of its last step), losses, accuracies, seconds."""
        lrs = self.lr
        per = len(lrs) // len(self) if len(self) and len(lrs) % len(self) == 0 else None
        out = []
        for i in range(len(self)):
            out.append({
                "epoch": i + 1,
                "lr": lrs[(i + 1) * per - 1] if per else None,
                "train_loss": self.train_loss[i], "train_acc": self.train_acc[i],
                "val_loss": self.val_loss[i] if self.has_val else None,
                "val_acc": self.val_acc[i] if self.has_val else None,
                "test_loss": self.test_loss[i], "test_acc": self.test_acc[i],
                "seconds": self.epoch_time[i] if i < len(self.epoch_time) else None,
            })
        return out

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
            raise FileNotFoundError(f"no history file at {path}; a run writes it to <out_dir>/{HISTORY}")
        return cls.from_dict(_read_json(path))


# ------------------------------------------------------------------------------ atomic files ---


FAULT_ENV = "WOOLLYLIB_FAULT_AT"  # test instrumentation: "N" or "N:kill" -> crash at write boundary N
_fault_count = [0]  # boundaries passed in this process (only counted while FAULT_ENV is set)


class SimulatedCrash(BaseException):
    """Raised at the write boundary named by ``WOOLLYLIB_FAULT_AT`` (tests of the commit order)."""


def _boundary(what: str) -> None:
    """A point between two disk operations; crashes here when ``WOOLLYLIB_FAULT_AT`` names it."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _fault_count[0] += 1
    at, _, mode = spec.partition(":")
    if _fault_count[0] == int(at):
        if mode == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise SimulatedCrash(f"write boundary {at} ({what})")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(fileobj)`` on a temp file in the same directory, fsync, then os.replace.
    The file gets the mode the umask gives a new file (mkstemp alone would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _boundary(f"before {path.name}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _boundary(f"{path.name} written, not yet in place")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _boundary(f"after {path.name}")
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def metrics_csv(history: History) -> str:
    """metrics.csv's text: a header and one row per epoch (empty cells where a figure does not exist)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS_CSV_COLUMNS)
    for row in history.rows():
        w.writerow(["" if row[k] is None else (row[k] if k == "epoch" else repr(float(row[k])))
                    for k in METRICS_CSV_COLUMNS])
    return buf.getvalue()


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` (a text's UTF-8 encoding, a PNG) atomically."""
    return _atomic_write(path, lambda f: f.write(data))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it may be truncated: rerun the command that "
                         "writes it, or delete it") from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Load a woollylib checkpoint with ``weights_only=True``; clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; start a fresh run (resume=False) or point out_dir at a run "
            f"directory that holds {LAST}"
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
    if path.name == LAST:
        missing = [k for k in ("epoch", "history", "optimizer") if k not in ckpt]
        if missing or not isinstance(ckpt.get("epoch"), int) or not isinstance(ckpt.get("history"), dict):
            raise ValueError(f"checkpoint {path} lacks {missing or 'a valid epoch/history'}; it cannot be resumed: "
                             "delete it to start the run again (--resume then begins at epoch 1)")
    return ckpt


def jsonable(value: Any) -> Any:
    """Turn a config value into plain JSON (dict/list/str/int/float/bool/None)."""
    if value is None or isinstance(value, (bool, int, str, float)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return jsonable(value.tolist())
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    return repr(value)


# ------------------------------------------------------------------------------- model spec ---

SPEC_ATTR = "woollylib_spec"  # the recipe woollylib.models.get_model keeps on the model


@dataclass
class ModelSpec:
    """How to rebuild a run's model: registry ``name``, its ``options``, ``num_classes``
    (and, for the record, the class name and parameter count)."""

    name: str | None
    options: dict = field(default_factory=dict)
    num_classes: int | None = None
    cls: str | None = None
    parameters: int | None = None

    @classmethod
    def of(cls, model: nn.Module) -> ModelSpec:
        """The spec of ``model`` (name None when it was not built by ``woollylib.models.get_model``)."""
        recipe = getattr(model, SPEC_ATTR, None)
        recipe = recipe if isinstance(recipe, dict) and "name" in recipe else {}
        return cls(name=recipe.get("name"), options=dict(recipe.get("options") or {}),
                   num_classes=recipe.get("num_classes"), cls=type(model).__name__,
                   parameters=sum(p.numel() for p in model.parameters()))

    def build(self, num_classes: int | None = None) -> nn.Module:
        """A fresh model of this architecture (``num_classes`` overrides a missing count)."""
        from .models import get_model

        if not self.name:
            raise ValueError(f"the run's model ({self.cls or 'unknown class'}) was not built by "
                             "woollylib.models.get_model, so it cannot be rebuilt; pass model=")
        return get_model(self.name, num_classes=self.num_classes or num_classes or 10, **self.options)

    def to_dict(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict | None) -> ModelSpec:
        if not isinstance(d, dict):
            raise ValueError(f"the model entry of {CONFIG} must be a JSON object, got {type(d).__name__}")  # noqa: TRY004
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as norm=gn


def parse_model_options(pairs) -> dict:
    """CLI ``--model-opt KEY=VALUE`` strings -> dict (values parsed as Python literals when possible)."""
    return {key: _literal(text) for key, _, text in (str(p).partition("=") for p in pairs or [])}


# --------------------------------------------------------------------------- config layouts ---

def upgrade_config(config) -> dict:
    """``config.json`` content in the current layout (format 1 is upgraded by ``woollylib._compat``; errors name
    the problem)."""
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG} must hold a JSON object, got {type(config).__name__}")  # noqa: TRY004
    if config.get("format") == CONFIG_FORMAT:
        if config.get("version") != CONFIG_VERSION:
            raise ValueError(f"{CONFIG} has format version {config.get('version')!r}; this woollylib reads "
                             f"version {CONFIG_VERSION}: upgrade woollylib")
        for key in ("model", "settings"):
            if not isinstance(config.get(key), dict):
                raise ValueError(f"{CONFIG} has no valid {key!r} entry")  # noqa: TRY004
        return config
    from ._compat import upgrade_format1  # woollylib 0.1's first layout

    old = upgrade_format1(config, CONFIG)
    return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "model": ModelSpec(**old["model"]).to_dict(),
            "settings": Settings.from_dict(old["settings"]).to_dict(), "resolved": old["resolved"],
            "data": old["data"], "extra": old["extra"]}


# ------------------------------------------------------------------------------ run directory ---


class RunDir:
    """A run directory: the names of its files and every read and write of them."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def figure_path(self, key: str) -> Path:
        return self.path / FIGURE_FILES[key]

    # ---- what is there

    def is_run(self) -> bool:
        """Whether the folder holds a woollylib run (its config.json marker, or a run of format 1)."""
        if any((self.path / n).exists() for n in RUN_MARKERS):
            return True
        try:
            raw = json.loads((self.path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(raw, dict) and raw.get("format") == CONFIG_FORMAT

    def holds_run(self) -> list[str]:
        """Names of the woollylib files that make this folder a run ([] when it holds none)."""
        if not self.is_run():
            return []
        return [n for n in (CONFIG, *RUN_MARKERS) if (self.path / n).exists()]

    def foreign_files(self) -> list[str]:
        """Entries of the folder that woollylib did not write."""
        if not self.path.is_dir():
            return []
        own = {*OWN_FILES, TENSORBOARD} if self.is_run() else {LOCK}
        return sorted(p.name for p in self.path.iterdir() if p.name not in own and not _is_temp(p.name))

    def check_fresh(self, overwrite: bool = False, flags: tuple[str, str] = ("resume=True", "overwrite=True")):
        """Refuse to start a fresh run over an existing one unless ``overwrite``, and never over a folder
        of other files."""
        resume, replace = flags
        where = "--out" if resume.startswith("--") else "out_dir"
        foreign = self.foreign_files()
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise FileExistsError(
                f"{self.path} holds files that woollylib did not write ({shown}); it never writes into such a "
                f"folder, even with {replace}: choose a new or empty {where}"
            )
        existing = self.holds_run()
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.path} already holds a run ({', '.join(existing)}); pass {resume} to continue it, "
                f"{replace} to replace it, or choose another {where}"
            )

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    # ---- keeping the folder whole

    def clean_temp(self) -> list[str]:
        """Remove the temp files an interrupted write left behind; return their names."""
        if not self.path.is_dir():
            return []
        stale = [p for p in self.path.iterdir() if _is_temp(p.name)]
        for p in stale:
            p.unlink(missing_ok=True)
        return [p.name for p in stale]

    def remove_run_files(self, keep: tuple[str, ...] = ()) -> None:
        """Remove exactly the files woollylib writes (``--overwrite``), except ``keep``."""
        for name in OWN_FILES:
            if name != LOCK and name not in keep:
                (self.path / name).unlink(missing_ok=True)
        if TENSORBOARD not in keep and (self.path / TENSORBOARD).is_dir():
            import shutil

            shutil.rmtree(self.path / TENSORBOARD)
        self.clean_temp()

    def prune_tensorboard(self, keep: str | None = None) -> None:
        """--overwrite: the replaced run's TensorBoard event files go with its other files (``keep``: the new
        run's own event file)."""
        folder = self.path / TENSORBOARD
        if folder.is_dir():
            for f in folder.iterdir():
                if f.name != keep and f.name.startswith("events.out.tfevents") and f.is_file():
                    f.unlink()

    def remove_marker(self) -> None:
        """Undo the marker of a fresh run that completed no epoch (the folder is left as it was)."""
        (self.path / CONFIG).unlink(missing_ok=True)

    def preflight(self, checkpoint_bytes: int) -> None:
        """Fail before the first epoch when the folder is not writable or has no room for the
        checkpoints (``checkpoint_bytes``: the size of one last.pt)."""
        import errno
        import shutil

        self.path.mkdir(parents=True, exist_ok=True)
        try:
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=f".{LAST}.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write into the run directory ({exc.strerror}); choose a writable "
                                     "--out/out_dir", str(self.path)) from exc
        need = 3 * checkpoint_bytes  # last.pt and its temp copy during a write, and best.pt
        free = shutil.disk_usage(self.path).free
        if free < need:
            raise OSError(errno.ENOSPC, f"no room for the checkpoints: {free / 2**20:.1f} MiB free, "
                                        f"{need / 2**20:.1f} MiB needed; free some space or choose another --out",
                          str(self.path))

    def lock(self) -> RunLock:
        """A lock file that keeps a second writer out (``with run.lock(): ...``)."""
        return RunLock(self.path / LOCK)

    def resume_config(self) -> dict:
        """The run's configuration for a resume: last.pt's own copy (it is written first in every epoch),
        else config.json (a run that completed no epoch)."""
        if self.has(LAST):
            return upgrade_config(self.load("last").get("config") or {})
        return self.read_config()

    def repair(self, ckpt: dict) -> list[str]:
        """Bring history.json, best.pt and config.json up to ``ckpt`` (the newest last.pt), which a kill
        between two writes may have left behind; return what was rewritten."""
        fixed = []
        history = History.from_dict(ckpt["history"])
        try:
            on_disk = self.read_history().to_dict() if self.has(HISTORY) else None
        except (ValueError, TypeError):
            on_disk = None
        try:
            csv_ok = (self.path / METRICS_CSV).read_text(encoding="utf-8") == metrics_csv(history)
        except (OSError, UnicodeDecodeError):
            csv_ok = False
        if on_disk != history.to_dict() or not csv_ok:
            self.write_history(history)
            fixed.append(HISTORY if on_disk != history.to_dict() else METRICS_CSV)
        best_epoch = history.best_epoch
        try:
            best = self.load("best") if self.has(BEST) else None
        except ValueError:
            best = None
        if best_epoch is not None and (best is None or best.get("epoch") != best_epoch) \
                and best_epoch == ckpt["epoch"]:
            self.save_best(best_checkpoint(ckpt["model"], ckpt["epoch"], history, ckpt.get("config")))
            fixed.append(BEST)
        try:
            config = self.read_json(CONFIG)
        except ValueError:
            config = None
        if ckpt.get("config") and config != ckpt["config"]:
            if config is not None:  # last.pt belongs to a run that replaced this one (--overwrite)
                self.drop_results()
            self.write_config(ckpt["config"])
            fixed.append(CONFIG)
        return fixed

    # ---- reading

    def read_json(self, name: str, required: bool = False):
        path = self.path / name
        if not path.is_file():
            if required:
                raise FileNotFoundError(f"{path} is missing")
            return None
        return _read_json(path)

    def read_config(self, required: bool = True) -> dict | None:
        """config.json in the current layout (None when absent and not ``required``)."""
        if not required and not self.has(CONFIG):
            return None
        raw = self.read_json(CONFIG, required=True)
        try:
            return upgrade_config(raw)
        except ValueError as exc:
            raise ValueError(f"{self.path / CONFIG}: {exc}") from exc

    def read_history(self) -> History:
        return History.load(self.path / HISTORY)

    def read_metrics(self) -> dict | None:
        return self.read_json(METRICS)

    def read_lr_finder(self) -> dict | None:
        return self.read_json(LR_FINDER)

    def load(self, which: str = "last", map_location="cpu") -> dict:
        """``last.pt`` or ``best.pt`` (``which`` = "last" | "best"), loaded with weights_only=True."""
        if which not in ("last", "best"):
            raise ValueError(f"weights must be 'last' or 'best', got {which!r}")
        return load_checkpoint(self.path / (LAST if which == "last" else BEST), map_location=map_location)

    # ---- writing

    def write_config(self, config: dict) -> Path:
        return atomic_write_json(config, self.path / CONFIG)

    def save_last(self, ckpt: dict) -> Path:
        return atomic_save(ckpt, self.path / LAST)

    def save_best(self, ckpt: dict) -> Path:
        return atomic_save(ckpt, self.path / BEST)

    def write_history(self, history: History) -> Path:
        """metrics.csv, then history.json (the same figures: one row per epoch, and the curves)."""
        atomic_write_bytes(metrics_csv(history).encode("utf-8"), self.path / METRICS_CSV)
        return history.save(self.path / HISTORY)

    def write_metrics(self, summary: dict) -> Path:
        return atomic_write_json(jsonable(summary), self.path / METRICS)

    def write_lr_finder(self, result) -> Path:
        """lr_finder.json (curve and suggestion, read by the report) from a ``LRFinderResult``."""
        return atomic_write_json(
            {"suggestion": float(result.suggestion), "method": result.method,
             "lrs": [float(x) for x in result.lrs], "losses": [float(x) for x in result.losses]},
            self.path / LR_FINDER,
        )

    def save_figure(self, fig, key: str, dpi: int = 110) -> Path:
        path = self.figure_path(key)
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight",
                                                 facecolor="white"))
        return path

    def write_report(self, text: str) -> Path:
        return _atomic_write(self.path / REPORT, lambda f: f.write(text.encode("utf-8")))

    def drop_results(self) -> None:
        """Remove the results of a replaced run (metrics, report, LR range test, figures)."""
        for name in (METRICS, LR_FINDER, REPORT, *FIGURE_FILES.values()):
            (self.path / name).unlink(missing_ok=True)


def best_checkpoint(model_state: dict, epoch: int, history: History, config: dict | None) -> dict:
    """best.pt's content: the weights of ``epoch`` with its test (and validation) figures and how it
    was chosen ("validation accuracy", or "test accuracy": chosen on the test set)."""
    out = {"version": CHECKPOINT_VERSION, "model": model_state, "epoch": epoch,
           "test_acc": history.test_acc[epoch - 1], "test_loss": history.test_loss[epoch - 1], "config": config,
           "chosen_on": "validation accuracy" if history.has_val else "test accuracy"}
    if history.has_val:
        out.update(val_acc=history.val_acc[epoch - 1], val_loss=history.val_loss[epoch - 1])
    return out


class RunLock:
    """``O_EXCL`` lock file holding the writer's pid and host; a lock of a dead process on this host is
    taken over (with a note). Re-entrant within one process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _umask_mode())
            except FileExistsError:
                owner = self._owner() or {}
                if owner == me:
                    return self  # this process holds it already (the CLI around the Trainer)
                if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    print(f"note: taking over the lock of process {owner.get('pid')}, which is no longer "
                          f"running ({self.path})")
                    self.path.unlink(missing_ok=True)
                    continue
                raise FileExistsError(
                    f"{self.path.parent} is being written by another woollylib process (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, see {self.path}); wait for it to finish or choose another --out/out_dir"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise FileExistsError(f"cannot take the lock {self.path}; delete it if no woollylib process runs there")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:  # noqa: PYI034
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

