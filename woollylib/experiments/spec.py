"""A sweep's spec: option names and values, seeds, shards, the grid and its runs, the saved sweep.json.

``make_spec(base, axes, seeds)`` checks and parses a sweep (every grid point must make valid
``Settings`` before anything runs); ``expand(spec)`` lists its runs in a fixed order, each an ordinary
run folder ``<config>/seed-N``. ``read_sweep(out)`` reads back what ``sweep`` wrote.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# the file of a sweep folder (a run folder's own files are woollylib.run's)
SWEEP_FILE = "sweep.json"
SWEEP_FORMAT, SWEEP_VERSION = "woollylib-sweep", 1

# set by the sweep for each run, never by the spec
CONTROLLED = ("out_dir", "resume", "overwrite", "progress", "verbose", "seed")
# not part of what a configuration *is* (left out of "what differs")
NOT_IDENTITY = {"out_dir", "resume", "overwrite", "progress", "verbose", "seed", "workers", "data_dir"}
MODEL, MODEL_OPT = "model", "model_opt."


class SweepError(ConfigError):
    """A sweep or comparison that cannot go ahead as asked (the message says what to change)."""


class SweepTypeError(SweepError, TypeError):
    """A value of the wrong type for its option (the message names the option and the type)."""


# ==============================================================================================
# options and their values


def _fields() -> dict[str, Any]:
    from ..config import GROUPS, flat_names

    out = {}
    for name, (group, attr) in flat_names().items():
        out[name] = next(f for f in fields(GROUPS[group]) if f.name == attr)
    return out


def option_names() -> list[str]:
    """Names a sweep's base and axes take: every setting's flat name (except the ones the sweep sets
    itself: seed, out_dir, resume, overwrite, progress, verbose), ``model`` and ``model_opt.KEY``."""
    return sorted(n for n in _fields() if n not in CONTROLLED) + [MODEL, MODEL_OPT + "KEY"]


def _unknown(name: str, what: str = "option") -> SweepError:
    valid = option_names()
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if name == "seed":
        hint = " (seeds are given apart: seeds=[0, 1] / --seeds 0,1)"
    return SweepError(f"unknown {what} {name!r}{hint}; the valid names are: {', '.join(valid)}")


def _kind(f) -> str:
    ann = str(f.type)
    if re.search(r"\bint\b", ann) and re.search(r"\bfloat\b", ann):
        return "number"  # val_split: a fraction (0.1) or a count (5000)
    for kind in ("bool", "int", "float", "dict", "str"):
        if re.search(rf"\b{kind}\b", ann):
            return kind
    return "str"  # Any: amp, channels_last (words)


_WORDS = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}


def parse_value(name: str, value):
    """``value`` (text from the command line, or a JSON value) as option ``name``'s type; a wrong
    type or choice is a ``SweepError`` that names the option and what it takes."""
    if name == MODEL:
        if not isinstance(value, str):
            raise SweepTypeError(f"model must be a registered model name (text), got {value!r}")
        from ..models import list_models

        if value not in list_models():
            raise SweepError(f"unknown model {value!r}; the registered models are: {', '.join(list_models())}")
        return value
    if name.startswith(MODEL_OPT):
        if not name[len(MODEL_OPT):]:
            raise SweepError("model_opt. needs an option name: model_opt.KEY=VALUE (e.g. model_opt.downsample)")
        if isinstance(value, str):
            from ..run import parse_model_options

            return parse_model_options([f"x={value}"])["x"]
        return value
    known = _fields()
    if name not in known or name in CONTROLLED:
        raise _unknown(name)
    f = known[name]
    kind, optional = _kind(f), "None" in str(f.type)
    choices = f.metadata.get("choices")
    expect = {"bool": "on/off", "int": "an integer", "float": "a number", "number": "a number", "dict": "a JSON object",
              "str": "text"}[kind] + (" or none" if optional else "") + (f" (one of {', '.join(choices)})"
                                                                         if choices else "")
    bad = SweepTypeError(f"option {name}: expected {expect}, got {value!r} ({f.metadata.get('help', '')})")
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null") and optional):
        if optional:
            return None
        raise bad
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind == "bool":
                if text.lower() not in _WORDS:
                    raise bad
                value = _WORDS[text.lower()]
            elif kind == "int":
                value = int(text)
            elif kind == "float":
                value = float(text)
                if not math.isfinite(value):
                    raise bad
            elif kind == "number":
                value = int(text) if text.isdigit() else float(text)
            elif kind == "dict":
                value = json.loads(text)
            else:
                value = text
        except ValueError:
            raise bad from None
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "dict": lambda v: isinstance(v, dict),
          "str": lambda v: isinstance(v, (str, bool))}[kind]
    if not ok(value):
        raise bad
    if kind == "float":
        value = float(value)
    parse = f.metadata.get("parse")
    if kind == "number" and parse is not None:  # the CLI's own check (e.g. a split fraction in (0, 1))
        import argparse

        try:
            value = parse(str(value))
        except argparse.ArgumentTypeError as exc:
            raise SweepTypeError(f"option {name}: {exc}") from None
    if choices and str({True: "on", False: "off"}.get(value, value)) not in choices:
        raise bad
    return value


def parse_seeds(seeds) -> list[int]:
    """``"0,1,2"`` or an iterable of ints -> a list of distinct ints (in the order given)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if isinstance(seeds, str):
        seeds = [s for s in seeds.replace(" ", "").split(",") if s]
    out = []
    for s in seeds or []:
        try:
            value = int(s)
        except (TypeError, ValueError):
            raise SweepTypeError(f"seeds must be integers such as 0,1,2; got {s!r}") from None
        if isinstance(s, float) and s != value:
            raise SweepTypeError(f"seeds must be integers such as 0,1,2; got {s!r}")
        if value in out:
            raise SweepError(f"seed {value} is given twice; each seed makes one run")
        out.append(value)
    if not out:
        raise SweepError("no seeds: give at least one (seeds=[0] / --seeds 0,1,2)")
    return out


def parse_shard(shard) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)`` with 1 <= I <= N -> (I, N); None stays None."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise SweepError(f"--shard takes I/N (this machine's part I of N, 1-based), got {shard!r}") from None
    if not 1 <= i <= n:
        raise SweepError(f"--shard I/N needs 1 <= I <= N, got {i}/{n}")
    return i, n


def select_shard(runs: list[dict], shard) -> list[dict]:
    """The runs of shard ``I/N``: index % N == I - 1 (all runs without a shard)."""
    shard = parse_shard(shard)
    return list(runs) if shard is None else [r for r in runs if r["index"] % shard[1] == shard[0] - 1]


def _split_pairs(pairs) -> list[tuple[str, str]]:
    out = []
    for p in pairs or []:
        key, sep, value = str(p).partition("=")
        if not sep or not key:
            raise SweepError(f"expected NAME=VALUE, got {p!r} (e.g. --axis augment=cifar,none)")
        out.append((key.strip(), value))
    return out


# ==============================================================================================
# the spec


@dataclass
class SweepSpec:
    """A base configuration, the axes crossed as a grid, and the seeds of every grid point."""

    base: dict = field(default_factory=dict)    # flat settings + model + model_opt (a dict)
    axes: dict = field(default_factory=dict)    # option -> list of values (grid, in this order)
    seeds: list = field(default_factory=lambda: [0])

    def to_dict(self) -> dict:
        return json.loads(json.dumps({"base": self.base, "axes": self.axes, "seeds": self.seeds}))


def _parse_base(base) -> dict:
    out: dict = {}
    opts: dict = {}
    items = base.items() if isinstance(base, dict) else _split_pairs(base)
    for name, value in items:
        if name == "model_opt":  # a dict, or KEY=VALUE strings
            from ..run import parse_model_options

            opts.update(value if isinstance(value, dict) else parse_model_options(
                [value] if isinstance(value, str) else value))
        elif name.startswith(MODEL_OPT):
            opts[name[len(MODEL_OPT):]] = parse_value(name, value)
        else:
            out[name] = parse_value(name, value)
    if opts:
        out["model_opt"] = opts
    return out


def make_spec(base=None, axes=None, seeds=(0,)) -> SweepSpec:
    """Check and parse a sweep: ``base`` {option: value} (or ``["name=value", ...]``), ``axes``
    {option: [values] or "v1,v2"} (or ``["name=v1,v2", ...]``), ``seeds``."""
    parsed_base = _parse_base(base or {})
    if isinstance(axes, dict):
        axis_items = list(axes.items())
    else:
        axis_items = [(k, v) for k, v in _split_pairs(axes)]
    parsed_axes: dict = {}
    for name, values in axis_items:
        if name in parsed_axes:
            raise SweepError(f"axis {name!r} is given twice; list all its values once: {name}=a,b,c")
        if name == "seed":
            raise _unknown(name, "axis")
        if isinstance(values, str):
            values = [v for v in values.split(",")]
        if not isinstance(values, (list, tuple)) or not values:
            raise SweepError(f"axis {name!r} needs a list of values, e.g. {name}=a,b")
        try:
            parsed = [parse_value(name, v) for v in values]
        except SweepError as exc:
            if "unknown option" in str(exc):
                raise _unknown(name, "axis") from None
            raise
        if len({json.dumps(v) for v in parsed}) != len(parsed):
            raise SweepError(f"axis {name!r} repeats a value ({values}); each value makes one configuration")
        parsed_axes[name] = parsed
    spec = SweepSpec(parsed_base, parsed_axes, parse_seeds(seeds))
    for run in expand(spec):  # every grid point must make valid settings before anything runs
        _settings(run)
    return spec


def _fmt_value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return "+".join(f"{k}-{_fmt_value(x)}" for k, x in v.items()) or "none"
    return str(v)


def config_name(values: dict) -> str:
    """Folder name of a grid point: ``augment-none_ricap_beta-0.3`` (``model_opt.`` dropped)."""
    parts = [f"{k.removeprefix(MODEL_OPT)}-{_fmt_value(v)}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9._+-]", "-", "_".join(parts))


def expand(spec: SweepSpec) -> list[dict]:
    """The runs of a spec, in a fixed order (grid point by grid point, seeds inside):
    ``{"index", "name", "seed", "dir", "values", "options"}``."""
    runs, names = [], set()
    axes = list(spec.axes.items())
    for combo in itertools.product(*[values for _, values in axes]):
        values = {k: v for (k, _), v in zip(axes, combo)}
        name = config_name(values)
        if name in names:
            name = f"{name}-{len(names)}"
        names.add(name)
        options = json.loads(json.dumps(spec.base))
        for k, v in values.items():
            if k.startswith(MODEL_OPT):
                options.setdefault("model_opt", {})[k[len(MODEL_OPT):]] = v
            else:
                options[k] = v
        for seed in spec.seeds:
            runs.append({"index": len(runs), "name": name, "seed": seed,
                         "dir": f"{name}/seed-{seed}" if name else f"seed-{seed}", "values": values,
                         "options": options})
    return runs


def _settings(run: dict, out_dir=None, **run_flags):
    """The Settings of one run: ``woollylib train``'s defaults, the run's options, its seed."""
    from ..config import Settings, cli_defaults

    flat = {**cli_defaults(), **{k: v for k, v in run["options"].items() if k not in (MODEL, "model_opt")}}
    flat.update(seed=run["seed"], out_dir=None if out_dir is None else str(out_dir), **run_flags)
    try:
        return Settings.from_flat(**flat)
    except (TypeError, ValueError) as exc:
        raise SweepError(f"run {run['dir']}: {exc}") from exc


# ==============================================================================================
# the saved spec (OUT/sweep.json)


def _spec_diff(old: dict, new: dict) -> str:
    parts = []
    for key in ("base", "axes", "seeds"):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k, MISSING) != b.get(k, MISSING):
                    parts.append(f"{key}.{k}: saved {a.get(k, '(absent)')!r}, now {b.get(k, '(absent)')!r}")
        else:
            parts.append(f"{key}: saved {a!r}, now {b!r}")
    return "; ".join(parts)


def read_sweep(out) -> dict | None:
    """OUT/sweep.json (None when absent)."""
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SweepError(f"{path} is not valid JSON ({exc}); delete it to start the sweep again") from exc
    if not isinstance(saved, dict) or saved.get("format") != SWEEP_FORMAT:
        raise SweepError(f"{path} is not a woollylib sweep file")
    return saved
