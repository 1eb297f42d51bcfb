"""Grouped training settings: every option with its unit and default, written once.

    from woollylib.config import OptimConfig, ScheduleConfig, EngineConfig, DataConfig, RunConfig, Settings
    s = Settings(optim=OptimConfig(lr=0.05, weight_decay=5e-4, nesterov=True),
                 schedule=ScheduleConfig(epochs=24), engine=EngineConfig(ricap_beta=0.3))
    Trainer(model, data, device, settings=s)               # or the flat keywords below
    Settings.from_flat(lr=0.05, epochs=24, ricap_beta=0.3)  # the same from flat names
    s.to_dict(); Settings.from_dict(d)                       # config.json's "settings" entry

Each field's ``flat`` name is the keyword of ``Trainer``/``train_test_loop`` and the ``dest`` of its
``woollylib train`` flag; ``add_arguments`` builds the flags and their help from the fields.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "DEFAULT_MODEL",
    "DataConfig",
    "EngineConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "Settings",
    "add_arguments",
    "flat_names",
]


DEFAULT_MODEL = "custom_resnet"  # the model of `woollylib train` and main.select_model(device): ResNet-9 layout


def setting(default, help: str, *, flag: str | None = None, flat: str | None = None, cli: str = "value",
            choices=None, parse=None, cli_default=MISSING, const="on"):
    """A settings field. ``help``: meaning and unit; ``flag``: the CLI flag (default --field-name);
    ``flat``: the flat keyword (default the field name); ``cli``: "value" | "switch" (store_true) |
    "optional" (flag alone means ``const``) | "none" (no flag); ``parse``: argparse type; ``cli_default``:
    the command's default where Python requires the value (``lr``, ``epochs``)."""
    meta = {"help": help, "flag": flag, "flat": flat, "cli": cli, "choices": choices, "parse": parse,
            "cli_default": cli_default, "const": const}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------- parsers ---

def _number(text: str, *, positive: bool, integer: bool = False):
    kind = "an integer" if integer else "a number"
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if positive and not value > 0:
        what = "an integer >= 1" if integer else "a finite number > 0"
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    if not positive and value < 0:
        raise argparse.ArgumentTypeError(f"must be {kind} >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    return _number(text, positive=True)


def nonneg_float(text: str) -> float:
    return _number(text, positive=False)


def positive_int(text: str) -> int:
    return _number(text, positive=True, integer=True)


def max_workers() -> int:
    """The most DataLoader worker processes a run may start: 2 per CPU core, at least 4."""
    import os

    return max(4, 2 * (os.cpu_count() or 1))


def worker_count(text: str) -> int:
    """``--workers``: 0 (load in the main process) up to ``max_workers()``."""
    value = _number(text, positive=False, integer=True)
    if value > max_workers():
        raise argparse.ArgumentTypeError(f"must be at most {max_workers()} (2 per CPU core), got {text}")
    return value


def fraction_or_count(text: str) -> float | int:
    """``--val-split``: a fraction such as 0.1 or a count such as 5000."""
    from .preloading.split import check_val_split

    try:
        value = int(text) if text.strip().isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1 or a count such as 5000, got {text!r}") from None
    try:
        return check_val_split(value)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_value(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r} (e.g. --model-opt norm=gn)")
    return text


def resume_word(text: str):
    """``--resume auto`` (``--resume`` alone is True)."""
    if str(text).strip().lower() != "auto":
        raise argparse.ArgumentTypeError(f"expected auto (or the flag alone), got {text!r}")
    return "auto"


def switch(text):
    """CLI words for a tri-state switch: off/on -> False/True; auto, bf16, fp16 pass through."""
    return {"off": False, "on": True}.get(text, text) if isinstance(text, str) else text


# --------------------------------------------------------------------------------- settings ---

@dataclass
class OptimConfig:
    name: str = setting("sgd", "optimizer: sgd | adam | adamw | rmsprop | adagrad", flag="--optimizer",
                        flat="optimizer")
    lr: float | None = setting(None, "learning rate (the one-cycle peak); woollylib.scheduler.find_lr "
                                    "suggests one", parse=positive_float, cli_default=0.05)
    momentum: float = setting(0.9, "SGD/RMSprop momentum", parse=nonneg_float)
    weight_decay: float = setting(0.0, "L2 coefficient added to the gradient every step", parse=nonneg_float)
    nesterov: bool = setting(False, "Nesterov momentum (SGD)", cli="switch")
    no_decay_bn_bias: bool = setting(False, "no weight decay on norm weights and biases", cli="none")


@dataclass
class ScheduleConfig:
    name: str = setting("onecycle", "learning-rate schedule: onecycle (per batch) | plateau (per epoch) | none",
                        flag="--scheduler", flat="scheduler", choices=["onecycle", "plateau", "none"])
    epochs: int | None = setting(None, "total epochs of the run (on resume: the run's)", parse=positive_int,
                                 cli_default=2)
    pct_start: float | None = setting(None, "one-cycle: fraction of all steps spent warming up "
                                            "(default: the scheduler's 0.3)", parse=positive_float)
    options: dict = setting({}, "extra woollylib.scheduler.get_scheduler options", flat="scheduler_kwargs",  # noqa: RUF009
                            cli="none")
    patience: int | None = setting(None, "early stopping: stop when the validation loss has not improved for N "
                                         "epochs (needs --val-split)", flag="--early-stop", parse=positive_int)

    def scheduler_kwargs(self) -> dict:
        kw = dict(self.options)
        if self.pct_start is not None:
            kw["pct_start"] = self.pct_start
        return kw


@dataclass
class EngineConfig:
    amp: Any = setting("auto", "mixed precision: auto | off | on | bf16 | fp16; auto = bf16 on GPUs with native "  # noqa: RUF009
                               "bf16, else fp16 + GradScaler; on a CPU with native bf16 bf16 unless the model has "
                               "grouped (depthwise) convolutions, else fp32; off on MPS; on = the same on CUDA, bf16 on "
                               "CPUs with native bf16, fp32 with a warning on others (woollylib.precision)", cli="optional",
                       choices=["auto", "off", "on", "bf16", "fp16"])
    channels_last: Any = setting("auto", "NHWC memory format: auto | on | off (auto = on for CUDA and CPU, off "  # noqa: RUF009
                                         "for MPS)", choices=["auto", "on", "off"])
    ricap_beta: float | None = setting(None, "RICAP with Beta(BETA, BETA) patch sizes (--ricap alone: the paper's "
                                             "0.3; off when not given)", flag="--ricap", parse=positive_float,
                                       cli="optional", const=0.3)
    label_smoothing: float = setting(0.0, "torch's label smoothing, in [0, 1)", parse=nonneg_float)
    l1: float = setting(0.0, "coefficient of the L1 penalty sum |w| added to the loss", cli="none")
    grad_clip: float | None = setting(None, "clip the gradients' global L2 norm to this value",
                                      parse=positive_float)
    tta_flip: bool = setting(False, "average the logits of each test image and its flip", flag="--tta",
                             cli="switch")
    compile: str | None = setting(None, "torch.compile the model once per run: default | reduce-overhead | "
                                        "max-autotune | off (the flag alone: default); checkpoints keep the plain "
                                        "weights", cli="optional", const="default",
                                  choices=["default", "reduce-overhead", "max-autotune", "off"])
    # more than one process (torchrun): ignored without torchrun's RANK/WORLD_SIZE (woollylib.distributed)
    sync_bn: bool = setting(False, "torchrun: BatchNorm statistics over the global batch (SyncBatchNorm, "
                                   "CUDA only)", cli="switch")
    dist_backend: str = setting("auto", "torchrun: process-group backend: auto (nccl with CUDA, else gloo) | "
                                        "nccl | gloo", choices=["auto", "nccl", "gloo"])
    dist_timeout: float = setting(600.0, "torchrun: seconds a collective waits for the other processes before "
                                         "failing", parse=positive_float)

    def __post_init__(self):
        self.amp, self.channels_last = switch(self.amp), switch(self.channels_last)
        from .compile import resolve_compile_mode

        self.compile = resolve_compile_mode(self.compile)  # None or a mode
        if not isinstance(self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


@dataclass
class DataConfig:
    dataset: str = setting("digits", "data set: digits | cifar10 | folder", choices=["digits", "cifar10", "folder"])
    data_dir: str | None = setting(None, "cifar10: download/cache folder (default: data); folder: DIR with "
                                         "train/<class>/* and test/<class>/* (or val/)")
    batch_size: int = setting(32, "images per step; under torchrun the global batch, split evenly over the "
                                  "processes (must be divisible by the world size)", parse=positive_int)
    loader: str = setting("albumentations", "batch loader", choices=["albumentations", "device"])
    augment: str = setting("auto", "train augmentation: cifar = pad-4 crop + flip + 16px cutout; crop = pad-2 "
                                   "crop only; auto = none for digits (flips and cutout destroy digits), cifar "
                                   "otherwise", choices=["auto", "cifar", "crop", "none"])
    workers: int | None = setting(None, "DataLoader worker processes (default: the loader's; at most 2 per CPU "
                                        "core)", parse=worker_count)
    val_split: float | int | None = setting(None, "hold out this fraction (0.1) or count (5000) of the training "
                                                  "images, stratified by class, for validation: best.pt, the "
                                                  "plateau schedule and early stopping then watch it, never the "
                                                  "test set (a folder's own val/ is used when present)",
                                            parse=fraction_or_count)
    val_seed: int | None = setting(None, "seed of the validation split (default: --seed)", parse=int)


@dataclass
class RunConfig:
    out_dir: str | None = setting(None, "run directory (default: runs/<dataset>-<model>)", flag="--out")
    seed: int | None = setting(None, "seed of Python/NumPy/torch at the start of a fresh run: shuffling, "
                                     "augmentation, RICAP draws, dropout, and the initial weights where woollylib "
                                     "builds the model (woollylib train, sweeps, Recipe); a model passed to Trainer or "
                                     "train_test_loop keeps the weights it has (build it seeded: "
                                     "main.select_model(..., seed=0)); None = leave the RNGs as they are", parse=int,
                               cli_default=0)
    resume: bool | str = setting(False, "continue the run in --out from last.pt; auto: continue it when --out "
                                        "holds a run, start one when it holds none (the run's settings must match)",
                                 cli="optional", const=True, parse=resume_word)
    overwrite: bool = setting(False, "replace the run already in --out", cli="switch")
    progress: bool = setting(True, "progress bars", cli="none")
    verbose: bool = setting(True, "one summary line per epoch", cli="none")
    tensorboard: bool = setting(False, "also write TensorBoard event files to OUT/tensorboard (needs pip install "
                                       "woollylib[tensorboard])", cli="switch")


GROUPS = {"optim": OptimConfig, "schedule": ScheduleConfig, "engine": EngineConfig, "data": DataConfig,
          "run": RunConfig}


def _flat(f) -> str:
    return f.metadata.get("flat") or f.name


def flat_names(group=None) -> dict[str, tuple[str, str]]:
    """``{flat name: (group, field)}`` of every setting (or of one group's class)."""
    classes = GROUPS.items() if group is None else [(k, v) for k, v in GROUPS.items() if v is group]
    return {_flat(f): (key, f.name) for key, cls in classes for f in fields(cls)}


@dataclass
class Settings:
    """All settings of a run, by group."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_flat(cls, base: Settings | None = None, **flat) -> Settings:
        """Settings from flat keywords (``lr=``, ``epochs=``, ``ricap_beta=``...) over ``base``."""
        names = flat_names()
        unknown = sorted(k for k in flat if k not in names)
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}; the settings are: {', '.join(sorted(names))}")
        groups = {key: asdict(getattr(base, key)) if base is not None else {} for key in GROUPS}
        for name, value in flat.items():
            key, attr = names[name]
            groups[key][attr] = value
        return cls(**{key: GROUPS[key](**values) for key, values in groups.items()})

    def to_dict(self) -> dict:
        return {key: asdict(getattr(self, key)) for key in GROUPS}

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        """Inverse of ``to_dict``; unknown keys are a ValueError naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"settings must be a JSON object, got {type(d).__name__}")  # noqa: TRY004
        groups = {}
        for key, group in GROUPS.items():
            values = d.get(key) or {}
            if not isinstance(values, dict):
                raise ValueError(f"settings[{key!r}] must be a JSON object, got {type(values).__name__}")  # noqa: TRY004
            valid = {f.name for f in fields(group)}
            unknown = sorted(set(values) - valid)
            if unknown:
                raise ValueError(f"settings[{key!r}] has unknown key(s) {unknown}; expected {sorted(valid)}")
            groups[key] = group(**values)
        return cls(**groups)

    def flat(self) -> dict:
        """``{flat name: value}`` of every setting."""
        return {name: getattr(getattr(self, key), attr) for name, (key, attr) in flat_names().items()}


def default_of(group, name: str, cli: bool = False):
    f = next(f for f in fields(group) if f.name == name)
    if cli and f.metadata.get("cli_default", MISSING) is not MISSING:
        return f.metadata["cli_default"]
    return f.default_factory() if f.default is MISSING else f.default


def check_saved(settings: dict, where: str) -> None:
    """Settings read back from a file (``where``: config.json, last.pt) checked as their CLI flags check them,
    and a saved data_dir that climbs out with '..' refused; errors name the file and the field."""
    if not isinstance(settings, dict):
        raise ValueError(f"{where}: 'settings' must be a JSON object")  # noqa: TRY004
    for key, group in GROUPS.items():
        saved = settings.get(key) or {}
        if not isinstance(saved, dict):
            raise ValueError(f"{where}: field 'settings.{key}' must be a JSON object, got {type(saved).__name__}")  # noqa: TRY004
        for f in fields(group):
            value, meta = saved.get(f.name), f.metadata
            if value is None or meta.get("cli") == "none" or f.name in ("out_dir", "resume", "overwrite"):
                continue  # how a run was started, not what it is
            problem = None
            if meta.get("cli") == "switch":
                problem = None if isinstance(value, bool) else "must be true or false"
            elif meta.get("choices") and key != "schedule":  # a notebook run records its scheduler instance's kind
                shown = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
                if shown not in meta["choices"] and not (f.name == "compile" and value is None):
                    problem = f"must be one of {', '.join(meta['choices'])}"
            elif meta.get("parse"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    problem = "must be a number"
                else:
                    try:
                        meta["parse"](str(value))
                    except (argparse.ArgumentTypeError, ValueError) as exc:
                        text = str(exc).split(", got")[0]
                        problem = "must be " + text.removeprefix("expected ") if text.startswith("expected ") \
                            else text
            if f.name == "data_dir" and (not isinstance(value, str) or ".." in value.replace("\\", "/").split("/")):
                problem = "must be a folder path without '..' (a saved path never climbs out); pass --data-dir DIR"
            if problem:
                raise ValueError(f"{where}: field 'settings.{key}.{f.name}' {problem}, got {value!r}; fix it (the "
                                 "command line checks the same) or start a fresh run")


def cli_defaults() -> dict:
    """``{flat name: default}`` of every setting as the ``woollylib`` command uses it."""
    return {name: default_of(GROUPS[key], attr, cli=True) for name, (key, attr) in flat_names().items()}


def add_arguments(parser, group, *, skip=()) -> None:
    """Add one flag per field of ``group`` (flags default to None so a resume tells given from default)."""
    for f in fields(group):
        meta = f.metadata
        if meta.get("cli") == "none" or f.name in skip:
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = default_of(group, f.name, cli=True)
        shown = {True: "on", False: "off", None: "none"}[default] if isinstance(default, bool) or default is None \
            else default
        kw: dict = {"dest": _flat(f), "default": None, "help": f"{meta['help']} (default: {shown})"}
        if meta.get("cli") == "switch":
            kw["action"] = "store_true"
        else:
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
            if meta.get("parse"):
                kw["type"] = meta["parse"]
            if meta.get("cli") == "optional":
                kw.update(nargs="?", const=meta.get("const", "on"))
        parser.add_argument(flag, **kw)
