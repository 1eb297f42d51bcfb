"""Experiments: one setting over several seeds, sweeps over a grid, and the comparison of run folders.

    from woollylib import experiments as ex
    ex.run_seeds({"dataset": "digits", "model": "compact", "epochs": 4}, seeds=[0, 1, 2], out="runs/base")
    ex.sweep({"dataset": "digits", "model": "compact", "epochs": 4, "model_opt.downsample": "stride"},
             {"augment": ["cifar", "none"], "ricap_beta": [0, 0.3]}, seeds=[0, 1], out="runs/ablation")
    ex.compare(["runs/ablation"])                 # runs/ablation/compare.md + PNGs beside it

    woollylib train --dataset digits --model compact --epochs 4 --seeds 0,1,2 --out runs/base
    woollylib sweep --dataset digits --model compact --axis augment=cifar,none --seeds 0,1 --out runs/abl
    woollylib sweep --spec sweep.json --out runs/abl --shard 1/2      # this machine: runs 0, 2, 4, ...
    woollylib sweep --spec sweep.json --out runs/abl --devices cuda:0,cuda:1
    woollylib compare runs/abl [--baseline NAME]

A sweep is a base configuration (flat settings as ``Settings.from_flat`` takes them, plus ``model``
and ``model_opt.KEY``), axes ``{option: [values]}`` crossed as a grid, and seeds. It expands to
ordinary run folders ``OUT/<config>/seed-N`` (``OUT/seed-N`` without axes), each trained exactly as
``woollylib train`` would (same defaults, same seeding), and writes ``OUT/sweep.json`` (the spec and
the expanded runs) before the first run. Rerunning the same command skips finished runs (metrics.json
holds all epochs) and resumes an interrupted one from its last.pt; a folder whose saved spec differs
is refused. ``shard=(I, N)``: only runs with ``index % N == I - 1``. ``devices``: one run per device
at a time, each in its own process (log in ``OUT/logs/``).

Comparison reads run folders only: headline figures come from metrics.json when it has them
(``final_test_acc``, ``val_chosen_test_acc``, ``train_time_s``), else from history.json.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "COMPARE_FILE",
    "SWEEP_FILE",
    "SweepSpec",
    "aggregate",
    "compare",
    "expand",
    "make_spec",
    "option_names",
    "parse_seeds",
    "parse_shard",
    "parse_value",
    "read_run",
    "run_seeds",
    "run_status",
    "select_shard",
    "sweep",
    "t_quantile",
    "train_run",
]

# files of a sweep / comparison folder (a run folder's own files are woollylib.run's)
SWEEP_FILE = "sweep.json"
COMPARE_FILE = "compare.md"
CURVES_PNG = "compare_curves{}.png"
PER_CLASS_PNG = "compare_per_class{}.png"
LOGS = "logs"
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
    from .config import GROUPS, flat_names

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
        from .models import list_models

        if value not in list_models():
            raise SweepError(f"unknown model {value!r}; the registered models are: {', '.join(list_models())}")
        return value
    if name.startswith(MODEL_OPT):
        if not name[len(MODEL_OPT):]:
            raise SweepError("model_opt. needs an option name: model_opt.KEY=VALUE (e.g. model_opt.downsample)")
        if isinstance(value, str):
            from .run import parse_model_options

            return parse_model_options([f"x={value}"])["x"]
        return value
    known = _fields()
    if name not in known or name in CONTROLLED:
        raise _unknown(name)
    f = known[name]
    kind, optional = _kind(f), "None" in str(f.type)
    choices = f.metadata.get("choices")
    expect = {"bool": "on/off", "int": "an integer", "float": "a number", "dict": "a JSON object",
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
            elif kind == "dict":
                value = json.loads(text)
            else:
                value = text
        except ValueError:
            raise bad from None
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "dict": lambda v: isinstance(v, dict),
          "str": lambda v: isinstance(v, (str, bool))}[kind]
    if not ok(value):
        raise bad
    if kind == "float":
        value = float(value)
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
            from .run import parse_model_options

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
    from .config import Settings, cli_defaults

    flat = {**cli_defaults(), **{k: v for k, v in run["options"].items() if k not in (MODEL, "model_opt")}}
    flat.update(seed=run["seed"], out_dir=None if out_dir is None else str(out_dir), **run_flags)
    try:
        return Settings.from_flat(**flat)
    except (TypeError, ValueError) as exc:
        raise SweepError(f"run {run['dir']}: {exc}") from exc


# ==============================================================================================
# one run


def run_status(path, epochs: int | None = None) -> str:
    """"new" (no run there), "done" (metrics.json written after all ``epochs``) or "partial"."""
    from .run import RunDir

    run = RunDir(path)
    if not run.is_run():
        return "new"
    try:
        metrics = run.read_metrics() or {}
    except ValueError:
        return "partial"
    if metrics.get("done") is True:
        return "done"
    if metrics and (epochs is None or metrics.get("epochs") == epochs):
        return "done"
    return "partial"


def train_run(run: dict, out_dir, device=None, *, overwrite: bool = False, verbose: bool = True,
              progress: bool = False, report: bool = False) -> dict:
    """Train one expanded run into ``out_dir`` as ``woollylib train`` does (its recipe: seed, data, model,
    Trainer, metrics.json); resume it when the folder holds an unfinished run. Returns metrics."""
    from .recipe import Recipe
    from .run import ModelSpec

    out_dir = Path(out_dir)
    status = run_status(out_dir)
    flags = {"overwrite": True} if overwrite and status != "new" else \
        {"resume": True} if status == "partial" else {}
    options = run["options"]
    recipe = Recipe(_settings(run, out_dir, progress=progress, verbose=verbose, **flags),
                    ModelSpec(options.get(MODEL) or _default_model(), dict(options.get("model_opt") or {})),
                    {"sweep_run": run["dir"]})
    result = recipe.train(device, verbose=False)
    if report:
        from .report import write_report

        write_report(out_dir, result.model, result.data, result.device, verbose=verbose)
    return result.metrics


def _default_model() -> str:
    from .config import DEFAULT_MODEL

    return DEFAULT_MODEL


# ==============================================================================================
# the sweep


def _epochs(run: dict) -> int:
    return _settings(run).schedule.epochs


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


def sweep(base=None, axes=None, seeds=(0,), out="runs/sweep", *, shard=None, devices=None,
          overwrite: bool = False, verbose: bool = True, progress: bool = False, report: bool = False) -> list[dict]:
    """Run the grid ``axes`` x ``seeds`` over ``base`` into ``out``; return the runs of this shard.

    ``base``: {option: value} (``woollylib.experiments.option_names()``; ``model``, ``model_opt.KEY``);
    ``axes``: {option: [values]}; ``seeds``: ints. Writes ``out/sweep.json`` first, then each run
    into ``out/<config>/seed-N``. Finished runs are skipped, an interrupted one resumes (the same
    call continues a sweep); a folder with another saved spec is refused unless ``overwrite`` (which
    also retrains this shard's runs from scratch). ``shard``: "I/N"; ``devices``: e.g.
    ["cuda:0", "cuda:1"] (one process per device; a single device trains in this process).
    """
    from .run import RunDir, atomic_write_json

    spec = make_spec(base, axes, seeds)
    runs = expand(spec)
    shard = parse_shard(shard)
    devices = _parse_devices(devices)
    out = Path(out)
    saved = read_sweep(out)
    if saved is not None and saved.get("spec") != spec.to_dict() and not overwrite:
        raise SweepError(f"{out} holds a sweep with another spec ({_spec_diff(saved.get('spec') or {}, spec.to_dict())}); "
                         f"use a new folder or --overwrite (overwrite=True) to replace it")
    if saved is None and RunDir(out).is_run():
        raise SweepError(f"{out} is a run folder; a sweep needs a folder of its own: choose another --out")
    if saved is None and out.is_dir() and any(out.iterdir()):
        raise SweepError(f"{out} is not empty and holds no {SWEEP_FILE}; choose a new or empty folder for the sweep")
    atomic_write_json({"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "spec": spec.to_dict(), "runs": runs},
                      out / SWEEP_FILE)
    mine = select_shard(runs, shard)
    todo = [r for r in mine if overwrite or run_status(out / r["dir"], _epochs(r)) != "done"]
    if verbose:
        where = f" (shard {shard[0]}/{shard[1]}: {len(mine)} of {len(runs)})" if shard else ""
        print(f"sweep {out}: {len(runs)} runs{where}; {len(mine) - len(todo)} done already, {len(todo)} to train",
              flush=True)
    if len(devices) > 1 and len(todo) > 1:
        _run_parallel(out, todo, devices, overwrite, verbose)
    else:
        for k, r in enumerate(todo, start=1):
            if verbose:
                print(f"[{k}/{len(todo)}] {out / r['dir']}", flush=True)
            train_run(r, out / r["dir"], devices[0] if devices else None, overwrite=overwrite, verbose=verbose,
                      progress=progress, report=report)
    return mine


def run_seeds(base=None, seeds=(0, 1, 2), out="runs/seeds", **kwargs) -> list[dict]:
    """The same settings once per seed into ``out/seed-0``, ``out/seed-1``, ... (a sweep without axes)."""
    return sweep(base, {}, seeds, out, **kwargs)


def _parse_devices(devices) -> list[str]:
    if devices is None:
        return []
    if isinstance(devices, str):
        devices = [d for d in devices.replace(" ", "").split(",") if d]
    return [str(d) for d in devices]


def _launch(out: Path, run: dict, device: str, overwrite: bool) -> int:
    """Train one run in a child process on ``device``; its output goes to OUT/logs/run-INDEX.log."""
    import subprocess

    logs = out / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from woollylib.experiments import _child; sys.exit(_child(sys.argv[1:]))"
    with open(logs / f"run-{run['index']}.log", "w", encoding="utf-8") as log:
        return subprocess.run([sys.executable, "-c", code, str(out), str(run["index"]), device,
                               "1" if overwrite else "0"], stdout=log, stderr=subprocess.STDOUT,
                              env=env, check=False).returncode


def _run_parallel(out: Path, runs: list[dict], devices: list[str], overwrite: bool, verbose: bool) -> None:
    """At most one run per device at a time; a device takes the next run as soon as it is free."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    free: queue.Queue = queue.Queue()
    for d in devices:
        free.put(d)

    def work(run):
        device = free.get()
        try:
            if verbose:
                print(f"[{run['index']}] {out / run['dir']} on {device}", flush=True)
            return run, device, _launch(out, run, device, overwrite)
        finally:
            free.put(device)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        results = list(pool.map(work, runs))
    failed = [(r, d, rc) for r, d, rc in results if rc != 0]
    if failed:
        shown = "; ".join(f"{r['dir']} on {d} (exit {rc}, see {out / LOGS}/run-{r['index']}.log)"
                          for r, d, rc in failed)
        raise SweepError(f"{len(failed)} of {len(runs)} runs failed: {shown}; fix the cause and rerun the same "
                         "command (finished runs are kept)")


def _child(argv) -> int:
    """Entry point of a child process of ``_run_parallel``: OUT INDEX DEVICE OVERWRITE."""
    out, index, device, overwrite = Path(argv[0]), int(argv[1]), argv[2], argv[3] == "1"
    saved = read_sweep(out)
    run = next(r for r in saved["runs"] if r["index"] == index)
    try:
        train_run(run, out / run["dir"], device, overwrite=overwrite, progress=False)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (the child reports any failure through its exit status)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


# ==============================================================================================
# statistics

# two-sided 95% Student t quantiles t_{0.975, df}, used when scipy is missing
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
         19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(q: float, df: int) -> float:
    """Student t quantile (scipy when installed; else the 0.975 table, interpolated in 1/df)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(q, df))
    except ImportError:
        pass
    if abs(q - 0.975) > 1e-12:
        raise ValueError("without scipy only the 0.975 quantile (95% intervals) is available")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo, hi, t_lo, t_hi = keys[-1], math.inf, _T975[keys[-1]], 1.959964
    else:
        lo = max(k for k in keys if k < df)
        hi = min(k for k in keys if k > df)
        t_lo, t_hi = _T975[lo], _T975[hi]
    x, x_lo, x_hi = 1 / df, 1 / lo, (0.0 if hi == math.inf else 1 / hi)
    return t_hi + (t_lo - t_hi) * (x - x_hi) / (x_lo - x_hi)


def aggregate(values) -> dict:
    """mean, std (sample, ddof=1), min, max, n and the 95% Student t interval of the mean
    (``ci95`` = [low, high]; None with fewer than two values). None values are left out."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if not n:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "ci95": None}
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    ci = None
    if n > 1:
        half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "min": min(xs), "max": max(xs), "ci95": ci}


# ==============================================================================================
# reading run folders

HEADLINE = {  # figure -> (label, unit)
    "final_test_acc": ("final test accuracy", "%"),
    "val_chosen_test_acc": ("test accuracy at the epoch chosen on validation", "%"),
    "final_train_loss": ("final train loss", ""),
    "train_time_s": ("training time", "s"),
}


def read_run(path, name: str | None = None) -> dict:
    """One run folder as a record: its configuration, seed, dataset, curves, metrics and headline
    figures (metrics.json's when present, else from history.json)."""
    from .config import Settings
    from .run import HISTORY, RunDir

    run = RunDir(path)
    config = run.read_config()
    curves = run.read_json(HISTORY, required=True)
    metrics = run.read_metrics() or {}
    settings = Settings.from_dict(config["settings"])
    model = config.get("model") or {}
    view = {k: v for k, v in settings.flat().items() if k not in NOT_IDENTITY}
    view["model"] = model.get("name") or model.get("cls")
    for k, v in (model.get("options") or {}).items():
        view[MODEL_OPT + k] = v
    dataset = (config.get("data") or {}).get("name") or settings.data.dataset
    view["dataset"] = dataset
    test_acc, train_loss = curves.get("test_acc") or [], curves.get("train_loss") or []
    final = metrics.get("final_test_acc", test_acc[-1] if test_acc else None)
    seconds = metrics.get("train_time_s", sum(curves.get("epoch_time") or []) or None)
    return {
        "path": str(run.path), "name": name if name is not None else run.path.name, "seed": settings.run.seed,
        "dataset": dataset, "view": view, "curves": curves, "metrics": metrics,
        "protocol": metrics.get("protocol"),
        "final_test_acc": final,
        "val_chosen_test_acc": metrics.get("val_chosen_test_acc"),
        "final_train_loss": train_loss[-1] if train_loss else None,
        "train_time_s": seconds,
        "epochs": len(test_acc),
        "per_class_accuracy": metrics.get("per_class_accuracy"),
    }


def _is_seed_dir(p: Path) -> bool:
    return re.fullmatch(r"seed-\d+", p.name) is not None


def collect(paths) -> tuple[list[dict], list[str]]:
    """Run records from run folders, sweep folders (their sweep.json) and folders of run folders;
    and notes on what was listed but not found."""
    from .run import HISTORY, RunDir

    records, notes = [], []
    for p in [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; pass run folders or sweep folders (woollylib sweep --out)")
        saved = read_sweep(p)
        found = []
        if saved is not None:
            for r in saved["runs"]:
                d = p / r["dir"]
                if RunDir(d).has(HISTORY):
                    found.append((d, r["name"] or p.name))
                else:
                    notes.append(f"{d} (run {r['index']} of the sweep) has not finished an epoch yet; left out")
        elif RunDir(p).is_run():
            found.append((p, p.parent.name if _is_seed_dir(p) else p.name))
        elif p.is_dir():
            for d in sorted(x for x in p.rglob(HISTORY)):
                d = d.parent
                if RunDir(d).is_run():
                    rel = d.relative_to(p)
                    label = str(rel.parent if _is_seed_dir(d) else rel)
                    found.append((d, p.name if label == "." else label))
        if not found:
            raise SweepError(f"{p} holds no run folder (history.json + config.json) and no {SWEEP_FILE}")
        records += [read_run(d, name) for d, name in found]
    return records, notes


# ==============================================================================================
# the comparison


def _groups(records) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["name"], []).append(r)
    return out


def _pm(stats: dict, digits: int = 2) -> str:
    if not stats["n"]:
        return "-"
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f} (n=1)"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} (n={stats['n']})"


def paired_difference(base: list[dict], other: list[dict], key: str) -> dict:
    """``other - base`` over the seeds both have: aggregate of the differences, the paired seeds, and
    the seeds of each side that have no partner."""
    a = {r["seed"]: r[key] for r in base if r.get(key) is not None}
    b = {r["seed"]: r[key] for r in other if r.get(key) is not None}
    common = sorted(set(a) & set(b), key=lambda s: (s is None, s))
    stats = aggregate([b[s] - a[s] for s in common])
    return {**stats, "seeds": common, "only_baseline": sorted(set(a) - set(b), key=str),
            "only_other": sorted(set(b) - set(a), key=str)}


def verdict(name: str, baseline: str, diff: dict, unit: str = "points") -> str:
    """Plain words for a paired difference: better/worse only when the 95% interval excludes 0."""
    n = diff["n"]
    if n < 2:
        return f"cannot tell: {n} paired seed{'s' if n != 1 else ''} (needs 2 or more)"
    lo, hi = diff["ci95"]
    if lo > 0 or hi < 0:
        word = "better" if diff["mean"] > 0 else "worse"
        return (f"{name} is {word} than {baseline} by {abs(diff['mean']):.2f} {unit} "
                f"(95% CI {lo:+.2f} to {hi:+.2f}, n={n})")
    return f"no detectable difference at n={n} (95% CI {lo:+.2f} to {hi:+.2f})"


def _fmt_setting(v) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "on", False: "off", None: "none"}[v]
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt_setting(x)}" for k, x in v.items()) or "-"
    return str(v)


def _differing(groups: dict[str, list[dict]]) -> list[str]:
    views = [g[0]["view"] for g in groups.values()]
    keys = sorted({k for v in views for k in v})
    return [k for k in keys if len({json.dumps(v.get(k), sort_keys=True, default=str) for v in views}) > 1]


def _band_plot(groups: dict[str, list[dict]], title: str):
    """Loss and accuracy per epoch: the mean over seeds as a line, min..max over seeds as a band;
    colour = configuration, line style = split (train dashed, validation dotted, test solid)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    styles = {"train": "--", "val": ":", "test": "-"}
    for i, (name, runs) in enumerate(groups.items()):
        colour = colours[i % len(colours)]
        for ax, kind in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in styles.items():
                ys = [r["curves"].get(f"{split}_{kind}") or [] for r in runs]
                ys = [y for y in ys if y]
                if not ys:
                    continue
                length = min(len(y) for y in ys)
                arr = np.array([y[:length] for y in ys], dtype=float)
                xs = np.arange(1, length + 1)
                ax.plot(xs, arr.mean(0), style, color=colour, lw=1.8, marker="o" if length < 15 else None, ms=3)
                if len(arr) > 1:
                    ax.fill_between(xs, arr.min(0), arr.max(0), color=colour, alpha=0.15, lw=0)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    handles = [Line2D([], [], color=colours[i % 10], lw=3, label=f"{name} (n={len(runs)})")
               for i, (name, runs) in enumerate(groups.items())]
    present = {s for runs in groups.values() for r in runs for s in styles if r["curves"].get(f"{s}_acc")}
    handles += [Line2D([], [], color="0.3", ls=styles[s], label=s) for s in styles if s in present]
    for ax, label in ((ax_loss, "loss (per sample)"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_yscale("log")  # early test losses can be 100x the final ones
    ax_loss.set_title("Loss (log scale)")
    ax_acc.set_title("Accuracy")
    fig.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    fig.suptitle(f"{title}: mean over seeds, band = min..max", fontsize=11)
    return fig


def _per_class_plot(groups: dict[str, list[dict]], classes: list[str], title: str):
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(7, 0.8 * len(classes) * max(1, len(groups)) / 2 + 3), 4), dpi=110,
                 layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(groups)
    xs = np.arange(len(classes))
    for i, (name, runs) in enumerate(groups.items()):
        arr = np.array([[r["per_class_accuracy"].get(c) if r["per_class_accuracy"].get(c) is not None else np.nan
                         for c in classes] for r in runs], dtype=float)
        mean = np.nanmean(arr, axis=0)
        err = np.vstack([mean - np.nanmin(arr, 0), np.nanmax(arr, 0) - mean]) if len(arr) > 1 else None
        ax.bar(xs - 0.4 + width * (i + 0.5), mean, width, yerr=err, capsize=2, color=f"C{i % 10}",
               label=f"{name} (n={len(runs)})")
    ax.set_xticks(xs, classes, rotation=0 if len(classes) <= 12 else 60)
    ax.set_ylabel("test accuracy (%)")
    low = min(0.0, ax.get_ylim()[0])
    ax.set_ylim(low, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(f"{title}: per-class test accuracy (last epoch; mean over seeds, bars = min..max)", fontsize=11)
    return fig


def _save_png(fig, path: Path) -> Path:
    import io

    from .run import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    return atomic_write_bytes(buf.getvalue(), path)


def _section(groups, baseline, tag: str, out: Path, lines: list[str], verbose_name: str) -> None:
    groups = {baseline: groups[baseline], **{k: v for k, v in groups.items() if k != baseline}}  # baseline first
    names = list(groups)
    differ = [k for k in _differing(groups) if k != "dataset"]
    if len(names) > 1:
        lines += ["### What differs", ""]
        if differ:
            lines += ["| configuration | " + " | ".join(differ) + " |", "|---" * (len(differ) + 1) + "|"]
            for name, runs in groups.items():
                lines.append(f"| {name} | " + " | ".join(_fmt_setting(runs[0]["view"].get(k)) for k in differ) + " |")
        else:
            lines.append("The configurations have the same settings (they differ only in their folders).")
        lines.append("")
    same = {k: v for k, v in groups[names[0]][0]["view"].items() if k not in differ}
    lines += ["Common settings: " + ", ".join(f"{k}={_fmt_setting(v)}" for k, v in sorted(same.items())), ""]
    has_val = any(r["val_chosen_test_acc"] is not None for runs in groups.values() for r in runs)
    key = "val_chosen_test_acc" if has_val and all(r["val_chosen_test_acc"] is not None
                                                   for runs in groups.values() for r in runs) else "final_test_acc"
    head = ["configuration", "final test acc (%)"] + (["val-chosen test acc (%)"] if has_val else [])
    head += [f"Δ vs {baseline} (points)", "verdict", "final train loss", "training time (s)"]
    lines += ["### Results", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    notes = []
    for name, runs in groups.items():
        row = [name + (" (baseline)" if name == baseline else ""), _pm(aggregate(r["final_test_acc"] for r in runs))]
        if has_val:
            row.append(_pm(aggregate(r["val_chosen_test_acc"] for r in runs)))
        if name == baseline:
            row += ["-", "-"]
        else:
            diff = paired_difference(groups[baseline], runs, key)
            row += [f"{diff['mean']:+.2f}" + (f" [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]" if diff["ci95"]
                                               else "") if diff["n"] else "-", verdict(name, baseline, diff)]
            if diff["only_baseline"] or diff["only_other"]:
                notes.append(f"- {name}: paired seeds ({', '.join(map(str, diff['seeds']))}); "
                             + "; ".join(x for x in (
                                 f"seeds {', '.join(map(str, diff['only_baseline']))} of {baseline} have no run in "
                                 f"{name}" if diff["only_baseline"] else "",
                                 f"seeds {', '.join(map(str, diff['only_other']))} of {name} have no run in "
                                 f"{baseline}" if diff["only_other"] else "") if x))
        row += [_pm(aggregate(r["final_train_loss"] for r in runs), 4), _pm(aggregate(r["train_time_s"] for r in runs), 1)]
        lines.append("| " + " | ".join(row) + " |")
    what = "test accuracy at the validation-chosen epoch" if key == "val_chosen_test_acc" else "final test accuracy"
    lines += ["", (f"Mean ± sample std (n runs). Δ: {what} minus the baseline's, paired by seed, with its 95% "
                   "Student t interval; a verdict names a winner only when that interval excludes 0."), ""]
    if notes:
        lines += ["Unmatched seeds:", ""] + notes + [""]
    curves = CURVES_PNG.format(tag)
    _save_png(_band_plot(groups, verbose_name), out / curves)
    lines += ["### Curves", "", f"![training curves]({curves})", ""]
    all_runs = [r for runs in groups.values() for r in runs]
    if all(r["per_class_accuracy"] for r in all_runs):
        classes = list(all_runs[0]["per_class_accuracy"])
        if all(list(r["per_class_accuracy"]) == classes for r in all_runs):
            png = PER_CLASS_PNG.format(tag)
            _save_png(_per_class_plot(groups, classes, verbose_name), out / png)
            lines += ["### Per class", "", f"![per-class accuracy]({png})", ""]


def compare(paths, out=None, baseline: str | None = None, *, verbose: bool = True) -> Path:
    """Write ``compare.md`` (and its PNGs beside it) comparing the configurations found in ``paths``
    (run folders, sweep folders, folders of runs); return its path.

    ``out``: folder for the files (default: the folder given, when one sweep or folder of runs is
    given, else ``./compare``); ``baseline``: the configuration the others are measured against
    (default the first). Runs of different datasets are compared within each dataset.
    """
    from .run import RunDir, atomic_write_bytes

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise SweepError("nothing to compare: pass run folders or sweep folders")
    records, missing = collect(paths)
    if out is None:
        only = Path(paths[0])
        out = only if len(paths) == 1 and not RunDir(only).is_run() else Path("compare")
    out = Path(out)
    if RunDir(out).is_run():
        raise SweepError(f"{out} is a run folder; write the comparison elsewhere (--out DIR)")
    groups = _groups(records)
    if baseline is not None and baseline not in groups:
        raise SweepError(f"no configuration named {baseline!r}; the configurations are: {', '.join(groups)}")
    by_data: dict[str, dict[str, list[dict]]] = {}
    for name, runs in groups.items():
        datasets = {r["dataset"] for r in runs}
        if len(datasets) > 1:
            for d in sorted(datasets, key=str):
                by_data.setdefault(d, {})[f"{name} ({d})"] = [r for r in runs if r["dataset"] == d]
        else:
            by_data.setdefault(next(iter(datasets)), {})[name] = runs
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Comparison", "",
             f"{len(groups)} configuration(s), {len(records)} run(s), from " + ", ".join(f"`{p}`" for p in paths) + ".", ""]
    if missing:
        lines += ["Not included:", ""] + [f"- {m}" for m in missing] + [""]
    if len(by_data) > 1:
        lines += ["These runs were trained on different datasets (" + "; ".join(
            f"{d}: {', '.join(g)}" for d, g in by_data.items()) + "). Accuracies on different test sets say "
            "nothing about each other, so each dataset is compared on its own below.", ""]
    for d, g in by_data.items():
        base = baseline if baseline in g else next((n for n in g if n.startswith(f"{baseline} (")), None) \
            if baseline else None
        base = base or next(iter(g))
        tag = "" if len(by_data) == 1 else "-" + re.sub(r"[^A-Za-z0-9._-]", "-", str(d))
        lines += [f"## Dataset: {d}", ""] if len(by_data) > 1 else []
        _section(g, base, tag, out, lines, f"{d}" if d else "runs")
    text = "\n".join(lines)
    linked = re.findall(r"\]\(([^)]+)\)", text)
    missing_links = [x for x in linked if not (out / x).is_file()]
    if missing_links:  # every link must point at a file that exists
        raise RuntimeError(f"compare.md would link missing files {missing_links}")
    path = atomic_write_bytes(text.encode("utf-8"), out / COMPARE_FILE)
    if verbose:
        print(f"wrote {path} ({len(groups)} configurations, {len(records)} runs)")
    return path
