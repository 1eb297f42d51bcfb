"""The run directory: the one module that names, writes and reads a run's files.

    from woollylib.run import RunDir, History, ModelSpec
    run = RunDir("runs/r9")
    run.holds_run()                  # the woollylib files already there ([] for a new folder)
    config = run.read_config()       # config.json in the current layout (older layouts upgraded)
    history = run.read_history()     # History of the completed epochs
    ckpt = run.load("last")          # torch.load(weights_only=True) with errors that name the file
    model = ModelSpec.from_dict(config["model"]).build()   # the run's architecture, untrained

Files of a run (every one written atomically: temp file in the folder, fsync, ``os.replace``):

    manifest.json    the marker of a run: its id, the epoch, the model spec and the sha256 of every file read
                     back (written right after last.pt; checkpoints also carry a checksum of their own content)
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
import time
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
    "MANIFEST",
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
    "check_outputs",
    "jsonable",
    "load_checkpoint",
    "payload_sha256",
    "upgrade_config",
    "write_outputs",
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
MANIFEST = "manifest.json"  # the marker of a run: its id, epoch, model spec and the checksum of every file read back
MANIFEST_FORMAT, MANIFEST_VERSION = "woollylib-manifest", 1
VERIFIED = (CONFIG, LAST, BEST, HISTORY, METRICS_CSV, METRICS, LR_FINDER)  # files the manifest holds checksums of
LOCK = ".woollylib.lock"
OUTPUTS = ".woollylib-outputs.json"  # outside a run (find-lr, compare --out): checksums of the files woollylib wrote
OWN_FILES = (CONFIG, LAST, BEST, HISTORY, METRICS_CSV, METRICS, LR_FINDER, REPORT, MANIFEST, LOCK,
             *FIGURE_FILES.values())


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
        """The history from its JSON form; errors name the field and the entry that is wrong."""
        if not isinstance(d, dict):
            raise TypeError(f"a history must be a JSON object of per-epoch lists, got {_json_kind(d)}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown history keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        out = {}
        for k in names:
            values = d.get(k, [])
            if not isinstance(values, list):
                raise TypeError(f"field {k!r} must be a list of numbers, got {_json_kind(values)}")
            for i, x in enumerate(values):
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    raise ValueError(f"field {k!r}, entry {i}: {x!r} is not a number")  # noqa: TRY004
            out[k] = [float(x) for x in values]
        n = len(out["train_loss"])
        for k in ("train_acc", "test_loss", "test_acc", *(("val_loss", "val_acc") if out["val_acc"] else ())):
            if len(out[k]) != n:
                raise ValueError(f"field {k!r} has {len(out[k])} entries and 'train_loss' {n}: one per epoch each")
        return cls(**out)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the history as JSON (atomically) and return the path."""
        return atomic_write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no history file at {path}; a run writes it to <out_dir>/{HISTORY}")
        try:
            return cls.from_dict(_read_json(path))
        except TypeError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        except ValueError as exc:
            raise ValueError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc


def _json_kind(value) -> str:
    """How a JSON value reads in a message: 'a list', 'a string', 'null'."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


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


def new_run_id() -> str:
    """A run's id: random, made once when a fresh run starts and kept by every resume."""
    import secrets

    return secrets.token_hex(8)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _link_error(path: Path) -> FileExistsError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return FileExistsError(
        f"{path} is a symbolic link (to {target}); woollylib never writes or deletes through a link in a run "
        "folder: replace the link with a real file or folder (or remove it), or choose another --out/out_dir")


def _atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(fileobj)`` on a temp file in the same directory, fsync, then os.replace.
    The file gets the mode the umask gives a new file (mkstemp alone would make it 0600). A symbolic
    link at ``path`` is refused (never replaced, never written through)."""
    path = Path(path)
    if path.is_symlink():
        raise _link_error(path)
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


def json_bytes(obj: Any) -> bytes:
    """The bytes ``atomic_write_json`` writes for ``obj`` (indented JSON and a newline)."""
    return (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode("utf-8")


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    data = json_bytes(obj)
    return _atomic_write(path, lambda f: f.write(data))


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


CHECKSUM = "sha256"  # a checkpoint's own checksum of its content (payload_sha256 of the rest)


def payload_sha256(obj: Any) -> str:
    """sha256 of a checkpoint's content: every tensor's dtype, shape and bytes and every other value's repr,
    walked in key order (a dict's ``CHECKSUM`` entry left out), so it is the same however torch.save packs it."""
    import hashlib

    h = hashlib.sha256()

    def feed(x, top=False):
        if torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k, v in x.items():
                if not (top and k == CHECKSUM):
                    h.update(repr(k).encode() + b":")
                    feed(v)
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr((type(x).__name__, x)).encode() + b",")

    feed(obj, top=True)
    return h.hexdigest()


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
    return _parse_json(path.read_bytes(), path)


def _parse_json(data: bytes, path: Path):
    try:
        return json.loads(data.decode("utf-8"))
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
            f"{str(exc).splitlines()[0] if str(exc) else ''}); {_way_out(path.name)}"
        ) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"checkpoint {path} has no 'model' entry; it was not written by woollylib.training")
    saved = ckpt.get(CHECKSUM)
    if saved is not None and payload_sha256(ckpt) != saved:
        raise ValueError(f"checkpoint {path} is damaged: its content does not match the checksum saved with it (a "
                         f"bit flip on the disk, or a partial copy); {_way_out(path.name)}")
    if path.name == LAST:
        missing = [k for k in ("epoch", "history", "optimizer") if k not in ckpt]
        if missing or not isinstance(ckpt.get("epoch"), int) or not isinstance(ckpt.get("history"), dict):
            raise ValueError(f"checkpoint {path} lacks {missing or 'a valid epoch/history'}; it cannot be resumed: "
                             "start a fresh run (--overwrite / overwrite=True)")
    return ckpt


def _way_out(name: str) -> str:
    """What to do about a damaged or foreign run file ``name``."""
    return {
        LAST: "use the other checkpoint for a report or predictions (--weights best / weights='best'); training "
              "cannot continue from best.pt, so start a fresh run (--overwrite / overwrite=True)",
        BEST: "use the other checkpoint (--weights last / weights='last'); --resume rewrites best.pt when the "
              "best epoch is the last one",
        CONFIG: "--resume (resume=True) writes it again from last.pt",
        HISTORY: "--resume (resume=True) writes it again from last.pt",
        METRICS_CSV: "--resume (resume=True) writes it again from last.pt",
        METRICS: "--resume (resume=True) of the finished run writes it again",
        LR_FINDER: "delete it (the report then leaves the LR range test out)",
    }.get(name, "start a fresh run")


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
MAX_PARAMETERS = 10**9  # a model spec beyond this is refused before it is built


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
        classes = self.num_classes or num_classes or 10
        try:  # counted on the meta device first: an absurd width is refused before any memory is taken
            with torch.device("meta"):
                n = sum(p.numel() for p in get_model(self.name, num_classes=classes, **self.options).parameters())
        except (RuntimeError, NotImplementedError, AttributeError):
            n = 0
        if n > MAX_PARAMETERS:
            raise ValueError(f"model {self.name!r} with options {self.options} has {n:,} parameters, more than "
                             f"{MAX_PARAMETERS:,} ({4 * MAX_PARAMETERS / 2**30:.0f} GiB of float32 weights); choose "
                             "smaller options (e.g. width)")
        return get_model(self.name, num_classes=classes, **self.options)

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

def check_config(config: dict, where) -> dict:
    """A config read back (``where``: the file) checked as the command line checks its values: every setting
    (``woollylib.config.check_saved``), the model entry, and as many class names as the model has outputs."""
    from .config import check_saved

    check_saved(config.get("settings"), str(where))
    model = config.get("model") or {}
    if model.get("options") is not None and not isinstance(model["options"], dict):
        raise ValueError(f"{where}: field 'model.options' must be a JSON object, got {_json_kind(model['options'])}")
    n = model.get("num_classes")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ValueError(f"{where}: field 'model.num_classes' must be an integer >= 2, got {n!r}")
    classes = (config.get("data") or {}).get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
            raise ValueError(f"{where}: field 'data.classes' must be a list of class names")
        if n is not None and len(classes) != n:
            raise ValueError(f"{where}: field 'data.classes' has {len(classes)} names and the model "
                             f"{n} outputs (model.num_classes); they must match: restore the file or start a fresh run")
    return config


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

    def _manifest_state(self) -> tuple[str, Any]:
        """("absent", None) | ("run", manifest) | ("foreign", None): a manifest.json woollylib did not write |
        ("damaged", message): ours by name but unreadable or not JSON."""
        path = self.path / MANIFEST
        if path.is_symlink():
            return "damaged", str(_link_error(path))
        if not path.exists():
            return "absent", None
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:  # unreadable, truncated, a bit flip, a directory
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"not valid JSON: {exc}"
            return "damaged", (f"{path} cannot be read ({what}); it proves the folder is a woollylib run and holds the "
                               "checksums of its files: restore it, or delete it to use the run without these checks "
                               "(as a run of an earlier woollylib)")
        if not (isinstance(raw, dict) and raw.get("format") == MANIFEST_FORMAT and isinstance(raw.get("files"), dict)
                and "run_id" in raw and (raw["run_id"] is None or isinstance(raw["run_id"], str))):
            return "foreign", None  # a manifest.json of something else (a web app's): the user's file
        if raw.get("version") != MANIFEST_VERSION:
            return "damaged", (f"{path} has manifest version {raw.get('version')!r}; this woollylib reads version "
                               f"{MANIFEST_VERSION}: upgrade woollylib, or delete it to use the run without its checks")
        return "run", raw

    def manifest(self) -> dict | None:
        """manifest.json (None without one: a new folder, or a run of an earlier format); a damaged one raises
        ValueError naming it and the way out."""
        kind, value = self._manifest_state()
        if kind == "damaged":
            raise ValueError(value)
        return value if kind == "run" else None

    def is_legacy_run(self) -> bool:
        """A run of woollylib before manifests: config.json in a woollylib layout (format 1 or 2) and last.pt."""
        if (self.path / MANIFEST).exists() or not self.has(LAST) or not self.has(CONFIG):
            return False
        try:
            upgrade_config(self.read_json(CONFIG, verify=False))
        except (OSError, ValueError):
            return False
        return True

    def is_run(self) -> bool:
        """Whether woollylib's own marker proves the folder is a run: its manifest.json (with the run's id), or
        for a run of an earlier format its config.json and last.pt. File names alone never make a run."""
        kind, _ = self._manifest_state()
        return kind == "run" or (kind == "absent" and self.is_legacy_run())

    def holds_run(self) -> list[str]:
        """Names of the woollylib files that make this folder a run ([] when it holds none)."""
        if not self.is_run():
            return []
        return [n for n in (MANIFEST, CONFIG, LAST, BEST, HISTORY) if (self.path / n).exists()]

    def foreign_files(self) -> list[str]:
        """Entries of the folder that woollylib did not write."""
        if not self.path.is_dir():
            return []
        own = {*OWN_FILES, TENSORBOARD} if self.is_run() else {LOCK}
        return sorted(p.name for p in self.path.iterdir() if p.name not in own and not _is_temp(p.name))

    def check_links(self) -> None:
        """Refuse a run whose files or tensorboard/ (or an event file in it) are symbolic links, before anything
        is written or deleted: woollylib never writes or deletes through a link."""
        for name in (*OWN_FILES, TENSORBOARD):
            if (self.path / name).is_symlink():
                raise _link_error(self.path / name)
        board = self.path / TENSORBOARD
        if board.is_dir():
            for f in board.iterdir():
                if f.is_symlink():
                    raise _link_error(f)

    def check_replaceable(self) -> None:
        """--overwrite: every path it will replace or delete is a plain file (tensorboard/ a folder), the folder
        is writable and the manifest readable, so that a refusal leaves every file as it was."""
        self.check_links()
        for name in (*OWN_FILES, TENSORBOARD):
            p = self.path / name
            if p.exists() and (p.is_dir() != (name == TENSORBOARD)):
                kind = "folder" if p.is_dir() else "file"
                raise FileExistsError(f"{p} is a {kind}, where a run has a {'folder' if name == TENSORBOARD else 'file'}; "
                                      "woollylib changes nothing in this folder: move it away, or choose another --out")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PermissionError(13, "no permission to replace the run's files; fix the folder's permissions or "
                                      "choose another --out", str(self.path))
        self.manifest()  # a damaged manifest is named before anything changes

    def check_fresh(self, overwrite: bool = False, flags: tuple[str, str] = ("resume=True", "overwrite=True")):
        """Refuse to start a fresh run over an existing one unless ``overwrite``, and never over a folder
        of other files."""
        resume, replace = flags
        where = "--out" if resume.startswith("--") else "out_dir"
        kind, message = self._manifest_state()
        if kind == "damaged":
            raise ValueError(message)
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
        if existing:
            self.check_replaceable()
        elif self.path.is_dir():
            self.check_links()

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    # ---- keeping the folder whole

    def clean_temp(self) -> list[str]:
        """Remove the temp files an interrupted write left behind; return their names."""
        if not self.path.is_dir():
            return []
        stale = [p for p in self.path.iterdir() if _is_temp(p.name)]
        for p in stale:
            p.unlink(missing_ok=True)  # a link itself, never what it points to
        return [p.name for p in stale]

    def remove_run_files(self, keep: tuple[str, ...] = ()) -> None:
        """Remove exactly the files woollylib writes (``--overwrite``), except ``keep``; links are refused."""
        self.check_links()
        for name in OWN_FILES:
            if name != LOCK and name not in keep:
                (self.path / name).unlink(missing_ok=True)
        board = self.path / TENSORBOARD
        if TENSORBOARD not in keep and board.is_dir() and not board.is_symlink():
            import shutil

            shutil.rmtree(board)
        self.clean_temp()

    def prune_tensorboard(self, keep: str | None = None) -> None:
        """--overwrite: the replaced run's TensorBoard event files go with its other files (``keep``: the new
        run's own event file). A linked folder or event file is refused."""
        folder = self.path / TENSORBOARD
        if folder.is_symlink():
            raise _link_error(folder)
        if folder.is_dir():
            for f in folder.iterdir():
                if f.name != keep and f.name.startswith("events.out.tfevents") and f.is_file() and not f.is_symlink():
                    f.unlink()

    def remove_marker(self) -> None:
        """Undo the marker of a fresh run that completed no epoch (the folder is left as it was)."""
        (self.path / CONFIG).unlink(missing_ok=True)
        (self.path / MANIFEST).unlink(missing_ok=True)

    # ---- the manifest

    def write_manifest(self, run_id: str | None, epoch: int | None, config: dict | None, files: dict,
                       next_run_id: str | None = None) -> Path:
        """manifest.json: the run's id, the epoch last.pt holds, the model spec, the config and the sha256 of
        every file read back (checkpoints: ``payload_sha256``; other files: of their bytes)."""
        m = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "run_id": run_id, "epoch": epoch,
             "model": (config or {}).get("model"), "files": dict(sorted(files.items())), "config": config}
        if next_run_id:
            m["next_run_id"] = next_run_id
        path = atomic_write_json(jsonable(m), self.path / MANIFEST)
        self._manifest_written = True  # from now on a missing manifest means the folder went away
        return path

    def start(self, run_id: str, config: dict) -> None:
        """The marker of a fresh run: manifest.json (epoch 0, the config inside), then config.json."""
        data = json_bytes(config)
        self.write_manifest(run_id, 0, config, {CONFIG: sha256_bytes(data)})
        atomic_write_bytes(data, self.path / CONFIG)

    def announce(self, run_id: str) -> None:
        """--overwrite, before the new run's first last.pt: the manifest names the run that replaces this one, so
        a kill right after that last.pt resumes the new run (and any other last.pt stays refused)."""
        m = self.manifest() or {"run_id": None, "epoch": None, "files": {}, "config": None}
        self.write_manifest(m.get("run_id"), m.get("epoch"), m.get("config"), m["files"], next_run_id=run_id)

    def withdraw(self) -> None:
        """An --overwrite that failed before its first epoch: the manifest describes the old run alone again."""
        kind, m = self._manifest_state()
        if kind != "run" or not m.get("next_run_id"):
            return
        try:
            if torch.load(self.path / LAST, map_location="cpu", weights_only=True).get("run_id") == m["next_run_id"]:
                return  # the new run's last.pt is there: it resumes
        except Exception:  # noqa: BLE001, S110 - no readable last.pt: nothing of the new run to keep
            pass
        if m.get("run_id") is None and not m["files"]:
            (self.path / MANIFEST).unlink(missing_ok=True)  # a run of an earlier format had none
        else:
            self.write_manifest(m["run_id"], m.get("epoch"), m.get("config"), m["files"])

    def _record(self, name: str, data: bytes) -> None:
        """Add a result file's checksum (metrics.json, lr_finder.json) to the manifest of a run."""
        kind, m = self._manifest_state()
        if kind == "run" and m.get("run_id") is not None:
            self.write_manifest(m["run_id"], m.get("epoch"), m.get("config"), {**m["files"], name: sha256_bytes(data)})

    def _vanished(self, lost: str):
        """The run folder was removed (or moved) while the run wrote it: stop, and never recreate a partial one."""
        raise FileNotFoundError(f"the run folder {self.path} was removed or moved during the run ({lost}); nothing "
                                "more is written, so no partial folder passes for the run: restore the folder and "
                                "--resume (resume=True), or start again with another --out/out_dir")

    def _adopt_best(self, best: dict, run_id: str | None) -> dict | None:
        """best.pt of a run of an earlier format (no run id, no checksum) given this run's and saved again."""
        if best.get(CHECKSUM) is not None or not run_id:
            return None
        best["run_id"] = run_id
        best[CHECKSUM] = payload_sha256(best)
        self.save_best(best)
        return best

    def commit(self, ckpt: dict, best: dict | None, history: History, config: dict, write_config: bool) -> None:
        """Commit an epoch: last.pt, the manifest (with the checksums of the files that follow), best.pt (when
        ``best``), metrics.csv, history.json and with ``write_config`` config.json. A kill between two writes
        leaves last.pt, which carries everything the others are repaired from (``repair``)."""
        kind, old = self._manifest_state()
        if not self.path.is_dir() or (kind == "absent" and getattr(self, "_manifest_written", False)):
            done = ckpt["epoch"] - 1
            self._vanished(f"epoch {ckpt['epoch']} is not saved, and " + (
                f"the files of epochs 1-{done} went with it" if done > 1 else
                "the files of epoch 1 went with it" if done == 1 else "no epoch had been saved yet"))
        same = kind == "run" and old.get("run_id") == ckpt.get("run_id")
        files = {n: h for n, h in (old["files"].items() if same else ()) if n in (METRICS, LR_FINDER, BEST)}
        ckpt[CHECKSUM] = payload_sha256(ckpt)
        self.save_last(ckpt)
        files[LAST] = ckpt[CHECKSUM]
        if best is None and kind == "absent" and self.has(BEST):  # a run of an earlier format: its best.pt joins
            try:
                adopted = self._adopt_best(load_checkpoint(self.path / BEST), ckpt.get("run_id"))
            except ValueError:
                adopted = None
            if adopted is not None:
                files[BEST] = adopted[CHECKSUM]
        if best is not None:
            best[CHECKSUM] = files[BEST] = payload_sha256(best)
        csv, hist = metrics_csv(history).encode("utf-8"), json_bytes(history.to_dict())
        files[METRICS_CSV], files[HISTORY] = sha256_bytes(csv), sha256_bytes(hist)
        cfg = json_bytes(config) if write_config else (self.path / CONFIG).read_bytes() if self.has(CONFIG) else None
        if cfg is not None:
            files[CONFIG] = sha256_bytes(cfg)
        self.write_manifest(ckpt.get("run_id"), ckpt["epoch"], config, files)
        if best is not None:
            self.save_best(best)
        atomic_write_bytes(csv, self.path / METRICS_CSV)
        atomic_write_bytes(hist, self.path / HISTORY)
        if write_config:
            atomic_write_bytes(cfg, self.path / CONFIG)

    # ---- before the first epoch

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
        """The run's configuration for a resume: last.pt's own copy (it is written first in every epoch,
        checked against the manifest), else config.json, else the manifest's copy (a run that completed no
        epoch, killed between its two marker files)."""
        if self.has(LAST):
            return check_config(upgrade_config(self.load("last").get("config") or {}), f"the config in {self / LAST}")
        m = self.manifest()
        try:
            return self.read_config()
        except (OSError, ValueError):
            if m and isinstance(m.get("config"), dict):
                return check_config(upgrade_config(m["config"]), f"the config in {self / MANIFEST}")
            raise

    def run_id_of(self, ckpt: dict | None) -> str | None:
        """The id a resumed run keeps: its last.pt's, else its manifest's (None: a run of an earlier format)."""
        if ckpt is not None and ckpt.get("run_id"):
            return ckpt["run_id"]
        m = self.manifest()
        return m.get("run_id") if m else None

    def repair(self, ckpt: dict) -> list[str]:
        """Bring history.json, metrics.csv, best.pt, config.json and the manifest up to ``ckpt`` (the newest
        last.pt, already checked), which a kill between two writes may have left behind; return what was
        rewritten. A damaged best.pt that last.pt cannot rebuild is refused before anything is written."""
        fixed = []
        m = self.manifest()
        replacing = bool(m and ckpt.get("run_id") and ckpt["run_id"] == m.get("next_run_id")
                         and ckpt["run_id"] != m.get("run_id"))
        history = History.from_dict(ckpt["history"])
        best_epoch = history.best_epoch
        try:
            best = self.load("best") if self.has(BEST) else None
        except ValueError as exc:
            if best_epoch != ckpt["epoch"] and not replacing:
                raise ValueError(f"{exc}; last.pt cannot rebuild it (the best epoch, {best_epoch}, is not the last, "
                                 f"{ckpt['epoch']}): delete {self.path / BEST} to resume without it (it is written "
                                 "again at the next improvement)") from exc
            best = None
        if replacing:  # last.pt is the first epoch of the run that replaces this one (--overwrite): the old files go
            self.drop_results()
            best = best if best is not None and best.get("run_id") == ckpt["run_id"] else None
            m = None
        try:
            on_disk = self.read_history(verify=False).to_dict() if self.has(HISTORY) else None
        except (ValueError, TypeError):
            on_disk = None
        try:
            csv_ok = (self.path / METRICS_CSV).read_text(encoding="utf-8") == metrics_csv(history)
        except (OSError, UnicodeDecodeError):
            csv_ok = False
        if on_disk != history.to_dict() or not csv_ok:
            self.write_history(history)
            fixed.append(HISTORY if on_disk != history.to_dict() else METRICS_CSV)
        if best_epoch is not None and (best is None or best.get("epoch") != best_epoch) \
                and best_epoch == ckpt["epoch"]:
            best = best_checkpoint(ckpt["model"], ckpt["epoch"], history, ckpt.get("config"), ckpt.get("run_id"))
            best[CHECKSUM] = payload_sha256(best)
            self.save_best(best)
            fixed.append(BEST)
        elif best is None and replacing:
            (self.path / BEST).unlink(missing_ok=True)
        elif best is not None and self._adopt_best(best, ckpt.get("run_id")) is not None:
            fixed.append(BEST)
        try:
            config = self.read_json(CONFIG, verify=False)
        except (OSError, ValueError):
            config = None
        if ckpt.get("config") and config != ckpt["config"]:
            self.write_config(ckpt["config"])
            fixed.append(CONFIG)
        if ckpt.get("run_id") and ckpt.get(CHECKSUM):  # a run of an earlier format gets one at its next epoch
            files = {n: h for n, h in ((m or {}).get("files") or {}).items() if n in (METRICS, LR_FINDER)}
            files.update({LAST: ckpt[CHECKSUM], HISTORY: sha256_bytes((self.path / HISTORY).read_bytes()),
                          METRICS_CSV: sha256_bytes((self.path / METRICS_CSV).read_bytes())})
            if best is not None and best.get(CHECKSUM):
                files[BEST] = best[CHECKSUM]
            if self.has(CONFIG):
                files[CONFIG] = sha256_bytes((self.path / CONFIG).read_bytes())
            wanted = {"run_id": ckpt["run_id"], "epoch": ckpt["epoch"], "files": dict(sorted(files.items()))}
            if m is None or any(m.get(k) != v for k, v in wanted.items()) or m.get("next_run_id"):
                self.write_manifest(ckpt["run_id"], ckpt["epoch"], ckpt.get("config"), files)
                fixed.append(MANIFEST)
        return fixed

    # ---- reading (checked against the manifest)

    def _check_bytes(self, name: str, data: bytes) -> None:
        """Refuse a file whose bytes are not those the run's manifest records (no manifest: no check)."""
        m = self.manifest()
        if m is None or m.get("run_id") is None:
            return
        listed = m["files"].get(name)
        path = self.path / name
        if listed is None:
            raise ValueError(f"{path} is not recorded in {MANIFEST}: woollylib did not write it for this run (or the "
                             f"command writing it was interrupted); {_way_out(name)}")
        if sha256_bytes(data) != listed:
            raise ValueError(f"{path} does not match its checksum in {MANIFEST} (damaged, or edited since woollylib "
                             f"wrote it); {_way_out(name)}")

    def _check_checkpoint(self, name: str, ckpt: dict) -> None:
        """A checkpoint of this run: its own checksum was checked on loading; here its run id, its place in the
        manifest and its model spec. A checkpoint of another run or model is refused, never adopted."""
        path = self.path / name
        m = self.manifest()
        rid = ckpt.get("run_id")
        if m is not None and rid and rid == m.get("next_run_id") and rid != m.get("run_id"):
            if name == LAST and ckpt.get("epoch") == 1:
                return  # the first epoch of the run replacing this one (--overwrite killed right after it)
            raise ValueError(f"{path} belongs to the run that was replacing this one, at epoch {ckpt.get('epoch')}; "
                             f"{_way_out(name)}")
        if m is None or m.get("run_id") is None:  # a run of an earlier format: its config.json says the model
            try:
                run_model = upgrade_config(self.read_json(CONFIG, verify=False))["model"]
            except (OSError, ValueError, TypeError):
                return
            self._check_model(path, ckpt, run_model, CONFIG)
            return
        if rid is None or ckpt.get(CHECKSUM) is None:
            raise ValueError(f"{path} carries no run id and checksum: it was not saved by this run (id "
                             f"{m['run_id']}); a checkpoint of another run is never adopted: put this run's own "
                             f"{name} back, or {_way_out(name)}")
        if rid != m["run_id"]:
            raise ValueError(f"{path} belongs to another run (id {rid}; this folder's run is {m['run_id']}); a "
                             f"checkpoint of another run is never adopted: put this run's own {name} back, or "
                             f"{_way_out(name)}")
        self._check_model(path, ckpt, m.get("model"), MANIFEST)
        interrupted = name == LAST and ckpt.get("epoch") == (m.get("epoch") or 0) + 1  # killed before the manifest
        if m["files"].get(name) != ckpt[CHECKSUM] and not interrupted:
            raise ValueError(f"{path} (epoch {ckpt.get('epoch')}) is not the {name} that {MANIFEST} records (epoch "
                             f"{m.get('epoch')}): replaced, or an interrupted save; {_way_out(name)}")

    @staticmethod
    def _check_model(path: Path, ckpt: dict, run_model: dict | None, source: str) -> None:
        try:
            saved = upgrade_config(ckpt.get("config") or {})["model"]
        except ValueError:
            return
        if not isinstance(run_model, dict):
            return
        diffs = [f"{k} {saved.get(k)!r} (the run: {run_model.get(k)!r})" for k in ("name", "options", "num_classes",
                                                                                  "cls", "parameters")
                 if saved.get(k) is not None and run_model.get(k) is not None and saved.get(k) != run_model.get(k)]
        if diffs:
            raise ValueError(f"{path} holds another model than the run's ({source}): {'; '.join(diffs)}; it is never "
                             "adopted: put the run's own checkpoint back, or train that model in another --out/out_dir")

    def read_json(self, name: str, required: bool = False, verify: bool = True):
        path = self.path / name
        if path.is_symlink():
            raise _link_error(path)
        if not path.is_file():
            if required:
                raise FileNotFoundError(f"{path} is missing")
            return None
        data = path.read_bytes()
        if verify and name in VERIFIED:
            self._check_bytes(name, data)
        return _parse_json(data, path)

    def read_config(self, required: bool = True, verify: bool = True) -> dict | None:
        """config.json in the current layout (None when absent and not ``required``)."""
        if not required and not self.has(CONFIG):
            return None
        raw = self.read_json(CONFIG, required=True, verify=verify)
        try:
            config = upgrade_config(raw)
        except ValueError as exc:
            raise ValueError(f"{self.path / CONFIG}: {exc}") from exc
        return check_config(config, self.path / CONFIG)

    def read_history(self, verify: bool = True) -> History:
        path = self.path / HISTORY
        if verify and path.is_file():
            self._check_bytes(HISTORY, path.read_bytes())
        return History.load(path)

    def read_metrics(self) -> dict | None:
        m = self.read_json(METRICS)
        if m is not None and not isinstance(m, dict):
            raise ValueError(f"{self.path / METRICS} must hold a JSON object, got {_json_kind(m)}; {_way_out(METRICS)}")
        for key in ("accuracy", "final_test_acc", "val_chosen_test_acc", "train_time_s"):
            v = (m or {}).get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"{self.path / METRICS}: field {key!r} must be a number, got {v!r}; "
                                 f"{_way_out(METRICS)}")
        cm = (m or {}).get("confusion_matrix")
        if cm is not None and not (isinstance(cm, list) and all(
                isinstance(r, list) and len(r) == len(cm) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  for x in r) for r in cm)):
            raise ValueError(f"{self.path / METRICS}: field 'confusion_matrix' must be a square list of lists of "
                             f"counts; {_way_out(METRICS)}")
        return m

    def read_lr_finder(self) -> dict | None:
        d = self.read_json(LR_FINDER)
        if d is None:
            return None
        where = self.path / LR_FINDER
        if not isinstance(d, dict):
            raise ValueError(f"{where} must hold a JSON object, got {_json_kind(d)}; {_way_out(LR_FINDER)}")  # noqa: TRY004
        for key in ("lrs", "losses"):
            v = d.get(key)
            if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"{where}: field {key!r} must be a list of numbers, got {_json_kind(v)}; "
                                 f"{_way_out(LR_FINDER)}")
        if len(d["lrs"]) != len(d["losses"]):
            raise ValueError(f"{where}: fields 'lrs' and 'losses' have {len(d['lrs'])} and {len(d['losses'])} entries "
                             f"(one loss per lr); {_way_out(LR_FINDER)}")
        s = d.get("suggestion")
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))):
            raise ValueError(f"{where}: field 'suggestion' must be a number, got {s!r}; {_way_out(LR_FINDER)}")
        return d

    def load(self, which: str = "last", map_location="cpu", verify: bool = True) -> dict:
        """``last.pt`` or ``best.pt`` (``which`` = "last" | "best"), loaded with weights_only=True, its checksum
        and (``verify``) its run id, manifest entry and model spec checked."""
        if which not in ("last", "best"):
            raise ValueError(f"weights must be 'last' or 'best', got {which!r}")
        name = LAST if which == "last" else BEST
        if (self.path / name).is_symlink():
            raise _link_error(self.path / name)
        ckpt = load_checkpoint(self.path / name, map_location=map_location)
        if verify:
            self._check_checkpoint(name, ckpt)
        return ckpt

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
        if not self.path.is_dir():
            self._vanished("metrics.json is not written; the epochs saved there went with it")
        data = json_bytes(jsonable(summary))
        path = atomic_write_bytes(data, self.path / METRICS)
        self._record(METRICS, data)
        return path

    def write_lr_finder(self, result) -> Path:
        """lr_finder.json (curve and suggestion, read by the report) from a ``LRFinderResult``."""
        data = lr_finder_bytes(result)
        path = atomic_write_bytes(data, self.path / LR_FINDER)
        self._record(LR_FINDER, data)
        return path

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


# ------------------------------------------------------------------ outputs outside a run ---


def _outputs_ledger(folder: Path) -> dict:
    try:
        raw = json.loads((folder / OUTPUTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = raw.get("files") if isinstance(raw, dict) else None
    return files if isinstance(files, dict) else {}


def check_outputs(folder: str | os.PathLike, names, command: str) -> None:
    """Refuse, before anything is written, to replace a file in ``folder`` (not a run) that woollylib did not
    write there: a file is replaced only when its bytes are those woollylib recorded writing (``OUTPUTS``)."""
    folder = Path(folder)
    if RunDir(folder).is_run():
        raise FileExistsError(f"{folder} is a run folder; {command} never writes into a run (its files belong to the "
                              "run): choose another --out")
    ledger = _outputs_ledger(folder)
    for name in names:
        path = folder / name
        if path.is_symlink():
            raise _link_error(path)
        if path.exists() and (not path.is_file() or ledger.get(name) != sha256_bytes(path.read_bytes())):
            raise FileExistsError(f"{path} exists and woollylib did not write it (or it was changed since); {command} "
                                  "never replaces such a file: move it away, or choose another --out")


def write_outputs(folder: str | os.PathLike, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (name -> bytes) into ``folder`` atomically and record their checksums (``OUTPUTS``), so a
    later run of the same command may replace them; call ``check_outputs`` first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_bytes(data, folder / name) for name, data in files.items()]
    ledger = {**_outputs_ledger(folder), **{n: sha256_bytes(d) for n, d in files.items()}}
    atomic_write_json({"format": "woollylib-outputs", "files": dict(sorted(ledger.items()))}, folder / OUTPUTS)
    return paths


def lr_finder_bytes(result) -> bytes:
    """lr_finder.json's content from a ``LRFinderResult``: the curve and the suggestion."""
    return json_bytes({"suggestion": float(result.suggestion), "method": result.method,
                       "lrs": [float(x) for x in result.lrs], "losses": [float(x) for x in result.losses]})


def figure_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (white background, tight box)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def best_checkpoint(model_state: dict, epoch: int, history: History, config: dict | None,
                    run_id: str | None = None) -> dict:
    """best.pt's content: the weights of ``epoch`` with its test (and validation) figures and how it
    was chosen ("validation accuracy", or "test accuracy": chosen on the test set)."""
    out = {"version": CHECKPOINT_VERSION, "model": model_state, "epoch": epoch,
           "test_acc": history.test_acc[epoch - 1], "test_loss": history.test_loss[epoch - 1], "config": config,
           "chosen_on": "validation accuracy" if history.has_val else "test accuracy", "run_id": run_id}
    if history.has_val:
        out.update(val_acc=history.val_acc[epoch - 1], val_loss=history.val_loss[epoch - 1])
    return out


class RunLock:
    """``O_EXCL`` lock file holding the writer's pid, host and process start time. A lock that cannot be a
    live writer's (its process is gone or its pid was reused, or it is empty or garbage, as a crash while it
    was being written leaves it) is taken over with a note; one that is a folder, or of another host, is
    reported with the command that clears it. Re-entrant within one process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(owner, dict) and isinstance(owner.get("pid"), int) and isinstance(owner.get("host"), str)
        return owner if ok else None

    def _stale(self, owner: dict | None, me: dict) -> str | None:
        """Why the existing lock is stale (None: it may be a live writer's)."""
        if owner is None:
            time.sleep(0.2)  # a writer between creating the file and writing its pid
            owner = self._owner()
            if owner is None:
                return "it is empty or not a woollylib lock (left by a process that died while starting, e.g. on a full disk)"
        if owner.get("host") != me["host"]:
            return None
        pid = owner["pid"]
        if not _alive(pid):
            return f"process {pid}, which is no longer running"
        started = _start_time(pid)
        if owner.get("started") is not None and started is not None:
            return None if started == owner["started"] else f"process {pid}, whose pid now belongs to another process"
        if started is not None and not any(w in _cmdline(pid) for w in ("woollylib", "python", "ipykernel")):
            return f"process {pid}, which is not a woollylib process"
        return None

    def acquire(self) -> RunLock:
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _umask_mode())
            except FileExistsError:
                if self.path.is_dir() and not self.path.is_symlink():
                    raise FileExistsError(f"the lock {self.path} is a folder, not a woollylib lock file: it is stale; "
                                          f"clear it with: rmdir '{self.path}'") from None
                owner = self._owner()
                if owner is not None and {k: owner.get(k) for k in ("pid", "host")} == \
                        {k: me[k] for k in ("pid", "host")}:
                    return self  # this process holds it already (the CLI around the Trainer)
                why = self._stale(owner, me)
                if why is not None:
                    print(f"note: taking over the stale lock {self.path}: {why}")
                    self.path.unlink(missing_ok=True)
                    continue
                owner = owner or {}
                raise FileExistsError(
                    f"{self.path.parent} is being written by another woollylib process (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, see {self.path}); wait for it to finish or choose another --out/out_dir; if "
                    f"no woollylib process runs there, the lock is stale: clear it with: rm '{self.path}'"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise FileExistsError(f"cannot take the lock {self.path}; if no woollylib process runs there, clear it with: "
                              f"rm '{self.path}'")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:  # noqa: PYI034
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux /proc; None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


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

