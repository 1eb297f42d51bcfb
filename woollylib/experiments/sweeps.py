"""Running a sweep: one run as ``woollylib train`` trains it, the grid over shards, and one process
per device (``_child`` is the entry point of those processes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .spec import (
    MODEL,
    SWEEP_FILE,
    SWEEP_FORMAT,
    SWEEP_VERSION,
    SweepError,
    _settings,
    _spec_diff,
    expand,
    make_spec,
    parse_shard,
    read_sweep,
    select_shard,
)

# child processes' logs, inside the sweep folder
LOGS = "logs"


# ==============================================================================================
# one run


def run_status(path, epochs: int | None = None) -> str:
    """"new" (no run there), "done" (metrics.json written after all ``epochs``) or "partial"."""
    from ..run import RunDir

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
    from ..recipe import Recipe
    from ..run import ModelSpec

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
        from ..report import write_report

        write_report(out_dir, result.model, result.data, result.device, verbose=verbose)
    return result.metrics


def _default_model() -> str:
    from ..config import DEFAULT_MODEL

    return DEFAULT_MODEL


# ==============================================================================================
# the sweep


def _epochs(run: dict) -> int:
    return _settings(run).schedule.epochs


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
    from ..run import RunDir, atomic_write_json

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
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds woollylib/
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
