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
    best.pt          weights of the best epoch, with epoch and config
    history.json     per-epoch curves (History)
    metrics.json     whole-test-set figures of the final weights
    lr_finder.json   LR range test curve and suggestion (+ lr_finder.png)
    report.md        the report, with the figures in FIGURE_FILES beside it

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
    "REPORT",
    "History",
    "ModelSpec",
    "RunDir",
    "atomic_save",
    "atomic_write_json",
    "jsonable",
    "load_checkpoint",
    "upgrade_config",
]

CONFIG, LAST, BEST, HISTORY, METRICS = "config.json", "last.pt", "best.pt", "history.json", "metrics.json"
LR_FINDER, LR_FINDER_PNG, REPORT = "lr_finder.json", "lr_finder.png", "report.md"
FIGURE_FILES = {  # report figures, by key
    "curves": "curves.png",
    "lr_finder": LR_FINDER_PNG,
    "lr_schedule": "lr_schedule.png",
    "confusion_matrix": "confusion_matrix.png",
    "per_class_accuracy": "per_class_accuracy.png",
    "misclassified": "misclassified.png",
    "gradcam": "gradcam.png",
}
RUN_MARKERS = (LAST, BEST, HISTORY)  # a folder with any of these holds a run
CONFIG_FORMAT, CONFIG_VERSION = "woollylib-run", 2
CHECKPOINT_VERSION = 1

# ---------------------------------------------------------------------------------- history ---


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
            raise FileNotFoundError(f"no history file at {path}; a run writes it to <out_dir>/{HISTORY}")
        return cls.from_dict(_read_json(path))


# ------------------------------------------------------------------------------ atomic files ---


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

_V1_SETTINGS = {  # format 1 key -> (group, field)
    "optimizer": ("optim", "name"), "lr": ("optim", "lr"), "momentum": ("optim", "momentum"),
    "weight_decay": ("optim", "weight_decay"), "nesterov": ("optim", "nesterov"),
    "no_decay_bn_bias": ("optim", "no_decay_bn_bias"), "scheduler": ("schedule", "name"),
    "epochs": ("schedule", "epochs"), "scheduler_kwargs": ("schedule", "options"),
    "amp": ("engine", "amp"), "channels_last": ("engine", "channels_last"),
    "ricap_beta": ("engine", "ricap_beta"), "label_smoothing": ("engine", "label_smoothing"),
    "l1": ("engine", "l1"), "grad_clip": ("engine", "grad_clip"), "tta_flip": ("engine", "tta_flip"),
}
_V1_CLI_DATA = ("dataset", "data_dir", "batch_size", "loader", "augment", "workers")


def upgrade_config(config) -> dict:
    """``config.json`` content in the current layout (format 1 is upgraded; errors name the problem)."""
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG} must hold a JSON object, got {type(config).__name__}")  # noqa: TRY004
    if config.get("format") == CONFIG_FORMAT:
        if config.get("version") != CONFIG_VERSION:
            raise ValueError(f"{CONFIG} has format version {config.get('version')!r}; this woollylib reads "
                             f"version {CONFIG_VERSION}: upgrade woollylib")
        return config
    if "optimizer" not in config and "cli" not in config:
        raise ValueError(f"{CONFIG} is not a woollylib run configuration (no settings in it)")
    cli = config.get("cli") or {}
    groups: dict[str, dict] = {"optim": {}, "schedule": {}, "engine": {}, "data": {}, "run": {}}
    for key, (group, name) in _V1_SETTINGS.items():
        if key in config:
            groups[group][name] = config[key]
    options = dict(groups["schedule"].get("options") or {})
    if "pct_start" in options:
        groups["schedule"]["pct_start"] = options.pop("pct_start")
    groups["schedule"]["options"] = options
    for key in _V1_CLI_DATA:
        if key in cli:
            groups["data"][key] = cli[key]
    if cli:  # format 1 recorded the resolved engine switches; the CLI's arguments say what was asked
        groups["engine"]["amp"] = cli.get("amp", groups["engine"].get("amp"))
        groups["engine"]["channels_last"] = cli.get("channels_last", groups["engine"].get("channels_last"))
    groups["run"]["seed"] = config.get("seed")
    data = config.get("data") or {}
    if cli.get("model"):
        name, options = cli["model"], parse_model_options(cli.get("model_opt"))
    else:
        name, options = config.get("model_name"), dict(config.get("model_options") or {})
    spec = ModelSpec(name=name, options=options, num_classes=len(data.get("classes") or []) or None,
                     cls=config.get("model"), parameters=config.get("parameters"))
    return {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "model": spec.to_dict(),
        "settings": Settings.from_dict(groups).to_dict(),
        "resolved": {k: config.get(k) for k in ("device", "steps_per_epoch", "batch_size", "amp", "channels_last")},
        "data": data,
        "extra": {k: v for k, v in config.items() if k == "cli"},
    }


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

    def holds_run(self) -> list[str]:
        """Names of the files that make this folder a run ([] when it holds none)."""
        return [n for n in RUN_MARKERS if (self.path / n).exists()]

    def check_fresh(self, overwrite: bool = False, flags: tuple[str, str] = ("resume=True", "overwrite=True")):
        """Refuse to start a fresh run over an existing one unless ``overwrite``."""
        existing = self.holds_run()
        if existing and not overwrite:
            resume, replace = flags
            raise FileExistsError(
                f"{self.path} already holds a run ({', '.join(existing)}); pass {resume} to continue it, "
                f"{replace} to replace it, or choose another {'--out' if resume.startswith('--') else 'out_dir'}"
            )

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

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

