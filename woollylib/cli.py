"""The ``woollylib`` command.

    woollylib train --dataset digits --model custom_resnet --epochs 2 --batch-size 32 --lr 0.05 --out runs/digits
    woollylib train --dataset cifar10 --model custom_resnet --epochs 24 --batch-size 512 --find-lr --out runs/r9
    woollylib train --out runs/r9 --resume                 # continue an interrupted run exactly
    woollylib find-lr --dataset cifar10 --model resnet18   # LR range test alone, prints the suggestion
    woollylib sweep --dataset digits --model compact --axis augment=cifar,none --seeds 0,1,2 --out runs/aug
    woollylib compare runs/aug                            # runs/aug/compare.md: means, spreads, verdicts
    woollylib app runs/digits --port 7860                 # a Gradio demo page of a trained run

``train`` writes into ``--out``: ``last.pt``, ``best.pt``, ``history.json``, ``config.json`` (after
every epoch) and ``metrics.json`` (test accuracy, per-class accuracy, confusion matrix) at the end.
Exit status: 0 done, 1 training diverged (non-finite loss), 2 bad arguments or files (also a full or
read-only disk), 130 Ctrl-C, 143 SIGTERM (both after the epoch in progress is saved or dropped).

Layout (torchvision-reference style): ``get_args_parser()`` builds one sub-parser per command and
each command is one function ``<command>(args) -> int``; add a command with ``_add_<name>_parser``.
This module imports only the standard library; torch and friends load inside the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import fields
from pathlib import Path

from .config import DEFAULT_MODEL
from .errors import ConfigError, NonFiniteLossError, WoollylibError

__all__ = ["DEFAULT_MODEL", "app", "compare", "find_lr", "get_args_parser", "main", "sweep", "train", "train_defaults"]

# Defaults of `train`: the settings' own (woollylib.config) plus the model and device.
# Options that may differ when resuming (they do not change the run's results).
RESUME_FREE = {"device", "workers", "out_dir", "resume", "overwrite", "progress", "epochs", "report", "compile",
               "dist_backend", "dist_timeout"}


def train_defaults() -> dict:
    """``{dest: default}`` of every ``train`` option (parser defaults are None, so a resume can tell
    given from default)."""
    from .config import cli_defaults

    return {**cli_defaults(), "model": DEFAULT_MODEL, "model_opt": [], "find_lr": False, "device": "auto",
            "report": False}


class CLIError(ConfigError):
    """A usage problem reported as 'woollylib: error: ...' with exit status 2."""


# ----------------------------------------------------------------------------------------------
# Parsers


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .config import DataConfig, RunConfig, add_arguments

    g = p.add_argument_group("data")
    add_arguments(g, DataConfig)
    add_arguments(g, RunConfig, skip=("out_dir", "resume", "overwrite", "tensorboard"))  # --seed
    g.add_argument("--device", help="cpu | cuda | cuda:N | mps | auto (default: auto)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .config import OptimConfig, add_arguments, key_value

    g = p.add_argument_group("model and optimizer")
    g.add_argument("--model", help=f"registered model name (default: {DEFAULT_MODEL})")
    g.add_argument("--model-opt", action="append", type=key_value, metavar="KEY=VALUE",
                   help="model option, repeatable")
    add_arguments(g, OptimConfig, skip=("lr",))


def _add_train_parser(sub) -> None:
    from .config import (
        EngineConfig,
        OptimConfig,
        RunConfig,
        ScheduleConfig,
        add_arguments,
        positive_float,
    )

    p = sub.add_parser(
        "train",
        help="train a model, writing checkpoints, history and metrics into --out",
        description="Train a model; checkpoints after every epoch; --resume continues exactly.",
    )
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("schedule")
    add_arguments(g, ScheduleConfig)
    lr = g.add_mutually_exclusive_group()
    lr_field = next(f for f in fields(OptimConfig) if f.name == "lr")
    lr.add_argument("--lr", type=positive_float, help=f"{lr_field.metadata['help']} (default: "
                                                      f"{lr_field.metadata['cli_default']})")
    lr.add_argument("--find-lr", action="store_true", default=None, help="pick the lr with the LR range test")
    add_arguments(p.add_argument_group("engine"), EngineConfig)
    g = p.add_argument_group("run directory")
    add_arguments(g, RunConfig, skip=("seed",))
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    from .report import add_report_arguments

    add_report_arguments(g, train=True)
    g.add_argument("--seeds", metavar="S1,S2,...",
                   help="one run per seed into OUT/seed-S (a sweep without axes; rerun to continue)")
    p.set_defaults(func=train)


def _add_sweep_parser(sub) -> None:
    from .config import EngineConfig, ScheduleConfig, add_arguments, positive_float

    p = sub.add_parser(
        "sweep",
        help="train a grid of configurations x seeds into OUT/<config>/seed-N (resumable)",
        description="Cross the --axis values as a grid over the base configuration (the ordinary train "
                    "flags, or --spec FILE), once per seed. OUT/sweep.json lists the runs; rerun the same "
                    "command to continue: finished runs are skipped, an interrupted one resumes.",
    )
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("schedule")
    add_arguments(g, ScheduleConfig)
    g.add_argument("--lr", type=positive_float, help="learning rate (the one-cycle peak) (default: 0.05)")
    add_arguments(p.add_argument_group("engine"), EngineConfig)
    g = p.add_argument_group("sweep")
    g.add_argument("--spec", metavar="FILE", help='JSON file {"base": {...}, "axes": {"NAME": [values]}, '
                                                  '"seeds": [0, 1]}; flags given here override its base')
    g.add_argument("--axis", action="append", metavar="NAME=V1,V2",
                   help="an axis of the grid, repeatable (e.g. --axis augment=cifar,none --axis "
                        "model_opt.downsample=stride,dilation)")
    g.add_argument("--seeds", metavar="S1,S2,...", help="seeds of every configuration (default: 0)")
    g.add_argument("--out", dest="out_dir", default="runs/sweep", help="the sweep folder (default: runs/sweep)")
    g.add_argument("--overwrite", action="store_true", help="replace a sweep with another spec in --out and "
                                                            "retrain this shard's runs")
    g.add_argument("--shard", metavar="I/N", help="run only the runs with index %% N == I-1 (several machines, "
                                                 "no coordinator)")
    g.add_argument("--devices", metavar="D1,D2,...", help="one run per device at a time, e.g. cuda:0,cuda:1")
    g.add_argument("--report", action="store_true", help="report.md in every run folder")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    p.set_defaults(func=sweep)


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare run and sweep folders: compare.md with means, spreads, paired differences, curves",
        description="Write compare.md (and PNGs beside it) from run folders, sweep folders or folders of runs.",
    )
    p.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--out", dest="out_dir", help="folder for compare.md (default: the one folder given, else "
                                                 "./compare)")
    p.add_argument("--baseline", metavar="NAME", help="configuration the others are measured against "
                                                      "(default: the first)")
    p.set_defaults(func=compare)


def _add_find_lr_parser(sub) -> None:
    p = sub.add_parser(
        "find-lr",
        help="run the LR range test alone and print the suggested learning rate",
        description="LR range test (torch-lr-finder); the model and optimizer are left untouched.",
    )
    from .config import positive_float as _positive_float
    from .config import positive_int as _positive_int

    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("range test")
    g.add_argument("--start-lr", type=_positive_float, default=1e-7, help="(default: 1e-7)")
    g.add_argument("--end-lr", type=_positive_float, default=10.0, help="(default: 10)")
    g.add_argument("--num-iter", type=_positive_int, default=100, help="steps of the test (default: 100)")
    g.add_argument("--step-mode", choices=["exp", "linear"], default="exp", help="(default: exp)")
    from .scheduler import DEFAULT_SUGGESTION, SUGGESTIONS

    g.add_argument("--suggestion", choices=list(SUGGESTIONS), default=DEFAULT_SUGGESTION,
                   help=f"rule that reads the lr off the curve (default: {DEFAULT_SUGGESTION})")
    g.add_argument("--out", dest="out_dir", help="folder for lr_finder.json and lr_finder.png (default: print only)")
    p.set_defaults(func=find_lr)


def _add_predict_parser(sub) -> None:
    from .config import positive_int as _positive_int

    p = sub.add_parser(
        "predict",
        help="predict image files or folders with a trained run",
        description="Class names with probabilities for images (any size and mode PIL reads; folders are "
                    "searched recursively), prepared as the run's data was. Only the run folder is needed.",
    )
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--weights", choices=["last", "best"], default="last", help="which checkpoint (default: last)")
    p.add_argument("--top-k", type=_positive_int, default=3, help="classes per image (default: 3)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--device", help="cpu | cuda | mps (default: cuda > mps > cpu)")
    p.add_argument("--out", dest="out", help="also write the predictions to a .csv or .json file")
    p.set_defaults(func=predict)


def predict(args: argparse.Namespace) -> int:
    """``woollylib predict``: a table of predictions; unreadable images are named and skipped (exit 2 at the end)."""
    from .predict import Predictor, write_predictions

    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise CLIError(f"--out {args.out}: write predictions to a .csv or a .json file")
    predictor = Predictor.from_run(args.run_dir, args.weights, args.device)
    errors: list[str] = []
    predictions = predictor.predict(args.inputs, top_k=args.top_k, batch_size=args.batch_size, errors=errors)
    width = max([len(p.source) for p in predictions] + [6])
    print(f"{'image':<{width}}  class  probability  top {args.top_k}")
    for pr in predictions:
        others = ", ".join(f"{c} {q:.1%}" for c, q in pr.top)
        print(f"{pr.source:<{width}}  {pr.label:<5}  {pr.probability:11.2%}  {others}")
    if args.out:
        print(f"wrote {write_predictions(predictions, args.out)}")
    for e in errors:
        print(f"woollylib predict: skipped {e}", file=sys.stderr)
    if not predictions and not errors:
        raise CLIError("no images found in " + ", ".join(args.inputs) + " (searched for "
                       "*.png, *.jpg, *.jpeg, *.bmp, *.gif, *.webp, *.tif)")
    return 2 if errors else 0


def _add_export_parser(sub) -> None:
    from .export import FORMATS

    p = sub.add_parser(
        "export",
        help="export a trained run as ONNX, TorchScript or a self-describing .pt bundle",
        description="Write the run's model as a portable file, checked against PyTorch on real inputs before it "
                    "is written (ONNX: pip install 'woollylib[export]').",
    )
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--format", choices=list(FORMATS), default="pt", help="(default: pt, for woollylib.load_model)")
    p.add_argument("--out", help="the file to write (default: RUN/model.onnx, RUN/model.torchscript.pt, RUN/model.pt)")
    p.add_argument("--weights", choices=["last", "best"], default="last", help="which checkpoint (default: last)")
    p.set_defaults(func=export_command)


def export_command(args: argparse.Namespace) -> int:
    """``woollylib export``: the checked file, or exit 2 with the reason (nothing half-written)."""
    from .export import ExportCheckError, export

    try:
        export(args.run_dir, args.format, args.out, weights=args.weights)
    except (ExportCheckError, ImportError) as exc:
        raise CLIError(str(exc)) from exc
    return 0


def _add_app_parser(sub) -> None:
    p = sub.add_parser(
        "app",
        help="serve a Gradio demo of a trained run (upload, top-k, Grad-CAM, misclassified gallery)",
        description="A web page for a trained run: upload an image or pick a test-set example, see the top-k "
                    "classes, toggle Grad-CAM (stage, method, opacity), browse misclassified test images and the "
                    "run's metrics. --space DIR writes a folder for a hosted Space instead (python DIR/app.py). "
                    "Needs the extra: pip install 'woollylib[app]'.",
    )
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default: 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--weights", choices=["last", "best"], default=None,
                   help="which checkpoint (default: best when the run has best.pt, else last)")
    p.add_argument("--device", help="cpu | cuda | mps (default: cuda > mps > cpu)")
    p.add_argument("--examples", type=int, default=10, help="test-set examples on the page, at most 10 (default: 10)")
    p.add_argument("--misclassified", type=int, default=12, help="images in the gallery (default: 12)")
    p.add_argument("--space", metavar="DIR", help="write a ready Space folder (app.py, requirements.txt, model, "
                                                  "examples) to DIR instead of serving")
    p.set_defaults(func=app)


def app(args: argparse.Namespace) -> int:
    """``woollylib app``: serve the demo page, or write a Space folder with ``--space``."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CLIError("the demo app needs gradio: pip install 'woollylib[app]'") from None
    from .app import launch_app, write_space

    if args.space:
        out = write_space(args.run_dir, args.space, args.weights, args.device, args.examples, args.misclassified)
        print(f"wrote {out}: run it with  cd {out} && pip install -r requirements.txt && python app.py")
        return 0
    launch_app(args.run_dir, port=args.port, share=args.share, host=args.host, weights=args.weights,
               device=args.device, n_examples=args.examples, n_misclassified=args.misclassified)
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    """The ``woollylib`` parser; each sub-command's function is ``args.func``."""
    parser = argparse.ArgumentParser(
        prog="woollylib",
        description="Train and explain image classifiers on CIFAR-10-sized data.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"woollylib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train_parser(sub)
    _add_find_lr_parser(sub)
    _add_sweep_parser(sub)
    _add_compare_parser(sub)
    _add_predict_parser(sub)
    _add_export_parser(sub)
    _add_app_parser(sub)
    from .report import add_report_arguments

    add_report_arguments(sub.add_parser(
        "report",
        help="write report.md with the metrics table and every figure for a run directory",
        description="Write RUN_DIR/report.md and its PNG figures, ready to paste into a write-up.",
    ))
    return parser


# ----------------------------------------------------------------------------------------------
# Shared helpers


def _fill_defaults(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def _recipe(args: argparse.Namespace):
    """The run's Recipe from parsed (and default-filled) arguments: its settings and model spec."""
    from .config import Settings, flat_names
    from .recipe import Recipe
    from .run import ModelSpec, parse_model_options

    settings = Settings.from_flat(**{k: getattr(args, k) for k in flat_names() if hasattr(args, k)})
    return Recipe(settings, ModelSpec(args.model, parse_model_options(args.model_opt)))


# ----------------------------------------------------------------------------------------------
# Commands


def _saved_arguments(config: dict) -> dict:
    """The ``train`` arguments a saved run was made with (its settings and model)."""
    from .config import Settings

    saved = Settings.from_dict(config["settings"]).flat()
    model = config.get("model") or {}
    saved["model"] = model.get("name")
    saved["model_opt"] = [f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}"
                          for k, v in (model.get("options") or {}).items()]
    from ._compat import format1_model_opt

    if format1_model_opt(config) is not None:
        saved["model_opt"] = format1_model_opt(config)
    return saved


def _resolve_resume(args: argparse.Namespace, out: Path) -> argparse.Namespace:
    """Fill the options from the saved run; refuse explicitly given options that contradict it."""
    from .config import switch
    from .run import LAST, RunDir

    run = RunDir(out)
    try:
        run.manifest()  # a damaged manifest is named, not taken for "no run"
        run.check_links()
    except (OSError, ValueError) as exc:
        raise CLIError(f"--resume: {exc}") from exc
    if not run.is_run():
        raise CLIError(f"--resume: {out} holds no woollylib run (no checkpoint {LAST}, no config.json); start a fresh run "
                       "without --resume")
    try:
        config = run.resume_config()
    except (OSError, ValueError) as exc:
        raise CLIError(f"--resume: {exc}") from exc
    saved = _saved_arguments(config)
    conflicts = []
    if args.find_lr:  # the found lr is saved as lr; resuming never reruns the test
        conflicts.append(f"--find-lr (the run uses its found lr {saved.get('lr')})")
    for key, value in saved.items():
        given = getattr(args, key, None)
        if key in RESUME_FREE or given is None:
            continue
        if switch(given) != switch(value) and not (key == "model_opt" and given == []):
            conflicts.append(f"--{key.replace('_', '-')} {given} (the run used {value})")
    if conflicts:
        raise CLIError(
            "--resume continues the run with its own settings; drop " + ", ".join(conflicts)
            + f" or start a new run with another --out (see {out / 'config.json'})"
        )
    for key, value in saved.items():
        if getattr(args, key, None) is None and key not in ("out_dir", "resume", "overwrite", "progress", "verbose"):
            setattr(args, key, value)
    args.find_lr = False
    return _fill_defaults(args, train_defaults())


def train(args: argparse.Namespace) -> int:
    """``woollylib train``: the run's recipe built and fitted (after a range test with --find-lr), metrics
    written, and with --report the report; under torchrun on every rank, rank 0 writing."""
    defaults = train_defaults()
    dataset = args.dataset or defaults["dataset"]
    model_name = args.model or defaults["model"]
    out = Path(args.out_dir) if args.out_dir else Path("runs") / f"{dataset}-{model_name}"
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass only one")
    if args.resume == "auto":  # continue the run in --out if there is one, else start it
        from .run import RunDir

        args.resume = RunDir(out).is_run()
        print(f"--resume auto: {'continuing the run in' if args.resume else 'starting a new run in'} {out}")
    if getattr(args, "seeds", None):
        return _train_seeds(args, out)
    from .distributed import session

    backend, timeout = args.dist_backend or defaults["dist_backend"], args.dist_timeout or defaults["dist_timeout"]
    with contextlib.ExitStack() as stack:
        dist = stack.enter_context(session(args.device, backend, timeout))  # torn down on every exit path
        if not dist.is_writer:  # rank 0 prints
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        return _train_on(args, out, defaults, dist)


def _train_on(args: argparse.Namespace, out: Path, defaults: dict, dist) -> int:
    from .run import RunDir

    if args.resume:
        args = _resolve_resume(args, out)
    else:
        args = _fill_defaults(args, defaults)
        RunDir(out).check_fresh(args.overwrite, flags=("--resume", "--overwrite"))
    args.out_dir = str(out)
    if not 0.0 <= args.label_smoothing < 1.0:
        raise CLIError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    recipe = _recipe(args)
    recipe.extra["find_lr"] = bool(args.find_lr)
    print(f"Using device: {dist.device}")
    result = recipe.train(dist.device, find_lr=bool(args.find_lr), dist=dist)  # under the run folder's lock
    if not dist.is_writer:  # rank 0 writes the metrics and the report
        return 0
    from .recipe import headline

    summary, history = result.metrics, result.history
    print(f"{headline(summary, history)}; {len(history)} epochs in {summary['train_time_s']:.1f} s; wrote {out}/")
    if args.report:
        from .report import write_report

        write_report(out, result.model, result.data, result.device)
    return 0


def _sweep_base(args: argparse.Namespace) -> dict:
    """The options given on the command line, as a sweep's base (names of woollylib.experiments)."""
    from .config import flat_names
    from .experiments import CONTROLLED

    base = {k: getattr(args, k) for k in flat_names() if k not in CONTROLLED and getattr(args, k, None) is not None}
    if args.model:
        base["model"] = args.model
    for pair in args.model_opt or []:
        key, _, value = pair.partition("=")
        base[f"model_opt.{key}"] = value
    return base


def _train_seeds(args: argparse.Namespace, out: Path) -> int:
    """``woollylib train ... --seeds 0,1,2``: one run per seed into OUT/seed-N."""
    from .experiments import run_seeds

    if args.find_lr:
        raise CLIError("--find-lr with --seeds would pick another lr per seed; find it once (woollylib find-lr) "
                       "and pass --lr")
    if args.seed is not None:
        raise CLIError("pass either --seed or --seeds, not both")
    run_seeds(_sweep_base(args), args.seeds, out, overwrite=bool(args.overwrite), report=bool(args.report),
              progress=args.progress is not False, devices=[args.device] if args.device else None)
    print(f"wrote {out}/seed-*; compare them with: woollylib compare {out}")
    return 0


def sweep(args: argparse.Namespace) -> int:
    """``woollylib sweep``: the grid x seeds into --out, resumable, optionally sharded or on several devices."""
    import json

    from .experiments import sweep as run_sweep

    spec = {}
    if args.spec:
        try:
            spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CLIError(f"--spec {args.spec}: {exc}") from exc
        unknown = sorted(set(spec) - {"base", "axes", "seeds"}) if isinstance(spec, dict) else ["(not an object)"]
        if unknown:
            raise CLIError(f"--spec {args.spec}: unknown keys {unknown}; a spec holds base, axes and seeds")
    if args.seed is not None:
        raise CLIError("a sweep takes --seeds S1,S2,... (not --seed)")
    base = {**(spec.get("base") or {}), **_sweep_base(args)}
    axes = dict(spec.get("axes") or {})
    for pair in args.axis or []:
        name, sep, values = pair.partition("=")
        if not sep:
            raise CLIError(f"--axis takes NAME=V1,V2, got {pair!r} (e.g. --axis augment=cifar,none)")
        if name in axes:
            raise CLIError(f"axis {name!r} is given twice (in --spec and --axis?); give it once")
        axes[name] = values
    seeds = args.seeds if args.seeds is not None else spec.get("seeds", [0])
    devices = args.devices or ([args.device] if args.device else None)
    run_sweep(base, axes, seeds, args.out_dir, shard=args.shard, devices=devices, overwrite=args.overwrite,
              progress=args.progress is not False, report=bool(args.report))
    print(f"sweep done: {args.out_dir}; compare with: woollylib compare {args.out_dir}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """``woollylib compare DIR...``: compare.md with the table, paired differences and figures."""
    from .experiments import compare as write_compare

    write_compare(args.paths, args.out_dir, baseline=args.baseline)
    return 0


def find_lr(args: argparse.Namespace) -> int:
    """``woollylib find-lr``: LR range test alone; prints the suggestion, saves the curve with --out."""
    from .device import resolve_device
    from .recipe import save_lr_finder
    from .scheduler import find_lr as range_test

    args = _fill_defaults(args, train_defaults())
    if args.out_dir:  # refused before the test runs: a run folder, or files woollylib did not write
        from .run import LR_FINDER, LR_FINDER_PNG, check_outputs

        check_outputs(args.out_dir, (LR_FINDER, LR_FINDER_PNG), "find-lr")
    recipe = _recipe(args)
    device = resolve_device(args.device)
    print(f"Using device: {device}")
    data, model = recipe.build(device)
    result = range_test(
        model,
        data.train_loader,
        optimizer=recipe.optimizer(model, args.start_lr),
        device=device,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_iter=args.num_iter,
        step_mode=args.step_mode,
        suggestion=args.suggestion,
        verbose=False,
    )
    print(f"suggested lr: {float(result.suggestion):.4g} ({result.method})")
    if args.out_dir:
        save_lr_finder(result, Path(args.out_dir))
    return 0


# ----------------------------------------------------------------------------------------------
# Entry point


def _os_error(exc: OSError) -> str:
    import errno

    where = exc.filename or ""
    what = exc.strerror or str(exc)
    fix = {errno.ENOSPC: "free some space or choose another --out",
           errno.EROFS: "the file system is read-only: choose a writable --out",
           errno.EACCES: "no permission: choose an --out you can write, or fix its permissions",
           errno.EDQUOT: "over the disk quota: free some space or choose another --out"}.get(exc.errno)
    return f"{what}: {where}" + (f" ({fix})" if fix and fix not in what else "")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run the command, return the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", 2)
        print(f"woollylib: {getattr(exc, 'signal_name', None) or 'interrupted'}", file=sys.stderr)
        return 128 + signum
    except NonFiniteLossError as exc:
        notes = "".join(f"\n{n}" for n in getattr(exc, "__notes__", []))
        print(f"woollylib {args.command}: error: {exc}{notes}", file=sys.stderr)
        return 1
    except (WoollylibError, ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"woollylib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only, no permission, unreadable image: the path and the fix
        print(f"woollylib {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
