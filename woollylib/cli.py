"""The ``woollylib`` command.

    woollylib train --dataset digits --model custom_resnet --epochs 2 --batch-size 32 --lr 0.05 --out runs/digits
    woollylib train --dataset cifar10 --model custom_resnet --epochs 24 --batch-size 512 --find-lr --out runs/r9
    woollylib train --out runs/r9 --resume                 # continue an interrupted run exactly
    woollylib find-lr --dataset cifar10 --model resnet18   # LR range test alone, prints the suggestion

``train`` writes into ``--out``: ``last.pt``, ``best.pt``, ``history.json``, ``config.json`` (after
every epoch) and ``metrics.json`` (test accuracy, per-class accuracy, confusion matrix) at the end.
Exit status: 0 done, 1 training diverged (non-finite loss), 2 bad arguments or files, 130 Ctrl-C.

Layout (torchvision-reference style): ``get_args_parser()`` builds one sub-parser per command and
each command is one function ``<command>(args) -> int``; add a command with ``_add_<name>_parser``.
This module imports only the standard library; torch and friends load inside the commands.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

__all__ = ["TRAIN_DEFAULTS", "find_lr", "get_args_parser", "main", "train"]

# Defaults of `train` (every option's parser default is None, so a resume can tell given from default).
TRAIN_DEFAULTS = {
    "dataset": "digits",  # digits | cifar10 | folder
    "data_dir": None,  # cifar10: download/cache root (default "data"); folder: the image folder
    "model": "custom_resnet",
    "model_opt": [],  # KEY=VALUE options for get_model
    "epochs": 2,
    "batch_size": 32,  # images per step
    "optimizer": "sgd",
    "lr": 0.05,  # peak lr of the one-cycle schedule / lr of the other schedulers
    "find_lr": False,
    "momentum": 0.9,
    "weight_decay": 0.0,  # L2 coefficient
    "nesterov": False,
    "scheduler": "onecycle",
    "pct_start": None,  # one-cycle: fraction of steps spent warming up (None = scheduler default)
    "amp": "auto",  # auto: fp16 + GradScaler on CUDA, off on CPU/MPS (training.speed_defaults)
    "channels_last": "auto",  # auto: on for CUDA and CPU, off for MPS
    "ricap": None,  # RICAP beta (None = off; 0.3 in the paper)
    "label_smoothing": 0.0,
    "grad_clip": None,  # max gradient L2 norm
    "tta": False,  # flip test-time augmentation in evaluation
    "seed": 0,
    "loader": "albumentations",
    "augment": "auto",  # auto (digits: none, else cifar) | cifar | crop | none
    "workers": None,  # DataLoader worker processes (None = the loader's default)
    "device": "auto",
    "out": None,  # default runs/<dataset>-<model>
    "progress": True,
}
# --augment presets for each loader (get_data's augment= spec / DeviceLoader options)
ALBUMENTATIONS_AUGMENT = {"cifar": None, "crop": [("pad_crop", {"size": 32, "padding": 2})], "none": False}
DEVICE_AUGMENT = {
    "cifar": {},
    "crop": {"crop_pad": 2, "flip": False, "cutout": 0},
    "none": {"crop_pad": 0, "flip": False, "cutout": 0},
}
# Options that may differ when resuming (they do not change the run's results).
RESUME_FREE = {"device", "workers", "out", "resume", "overwrite", "progress", "epochs", "report"}


class CLIError(Exception):
    """A usage problem reported as 'woollylib: error: ...' with exit status 2."""


# ----------------------------------------------------------------------------------------------
# Parsers


def _key_value(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r} (e.g. --model-opt norm=gn)")
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["digits", "cifar10", "folder"], help="data set (default: digits)")
    g.add_argument(
        "--data-dir",
        help="cifar10: download/cache folder (default: data); folder: DIR with train/<class>/* and test/<class>/*",
    )
    g.add_argument("--batch-size", type=_positive_int, help="images per step (default: 32)")
    g.add_argument("--loader", choices=["albumentations", "device"], help="batch loader (default: albumentations)")
    g.add_argument(
        "--augment",
        choices=["auto", "cifar", "crop", "none"],
        help="train augmentation: cifar = pad-4 crop + flip + 16px cutout; crop = pad-2 crop only; "
        "auto = none for digits (flips and cutout destroy digits), cifar otherwise (default: auto)",
    )
    g.add_argument("--workers", type=int, help="DataLoader worker processes (default: the loader's)")
    g.add_argument("--seed", type=int, help="seed for weights, shuffling and augmentation (default: 0)")
    g.add_argument("--device", help="cpu | cuda | cuda:N | mps | auto (default: auto)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and optimizer")
    g.add_argument("--model", help="registered model name (default: custom_resnet)")
    g.add_argument(
        "--model-opt", action="append", type=_key_value, metavar="KEY=VALUE", help="model option, repeatable"
    )
    g.add_argument("--optimizer", help="sgd | adam | adamw | rmsprop | adagrad (default: sgd)")
    g.add_argument("--momentum", type=float, help="SGD/RMSprop momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float, help="L2 coefficient (default: 0)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)")


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model, writing checkpoints, history and metrics into --out",
        description="Train a model; checkpoints after every epoch; --resume continues exactly.",
    )
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=_positive_int, help="total epochs (default: 2)")
    lr = g.add_mutually_exclusive_group()
    lr.add_argument("--lr", type=_positive_float, help="(peak) learning rate (default: 0.05)")
    lr.add_argument("--find-lr", action="store_true", default=None, help="pick the lr with the LR range test")
    g.add_argument("--scheduler", choices=["onecycle", "plateau", "none"], help="(default: onecycle)")
    g.add_argument("--pct-start", type=float, help="one-cycle warm-up fraction of all steps")
    g = p.add_argument_group("engine")
    g.add_argument(
        "--amp",
        nargs="?",
        const="on",
        choices=["auto", "off", "on", "bf16", "fp16"],
        help="mixed precision; on: fp16+scaler on CUDA, bf16 on CPU (default: auto = on for CUDA, off otherwise)",
    )
    g.add_argument(
        "--channels-last",
        choices=["auto", "on", "off"],
        help="NHWC memory format (default: auto = on for CUDA and CPU, off for MPS)",
    )
    g.add_argument("--ricap", type=_positive_float, metavar="BETA", help="RICAP with Beta(BETA, BETA) (paper: 0.3)")
    g.add_argument("--label-smoothing", type=float, help="torch's label smoothing in [0, 1) (default: 0)")
    g.add_argument("--grad-clip", type=_positive_float, help="clip the gradient L2 norm to this value")
    g.add_argument("--tta", action="store_true", default=None, help="flip test-time augmentation when testing")
    g = p.add_argument_group("run directory")
    g.add_argument("--out", help="run directory (default: runs/<dataset>-<model>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    from .report import add_report_arguments

    add_report_arguments(g, train=True)
    p.set_defaults(func=train)


def _add_find_lr_parser(sub) -> None:
    p = sub.add_parser(
        "find-lr",
        help="run the LR range test alone and print the suggested learning rate",
        description="LR range test (torch-lr-finder); the model and optimizer are left untouched.",
    )
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("range test")
    g.add_argument("--start-lr", type=_positive_float, default=1e-7, help="(default: 1e-7)")
    g.add_argument("--end-lr", type=_positive_float, default=10.0, help="(default: 10)")
    g.add_argument("--num-iter", type=_positive_int, default=100, help="steps of the test (default: 100)")
    g.add_argument("--step-mode", choices=["exp", "linear"], default="exp", help="(default: exp)")
    g.add_argument("--suggestion", choices=["valley", "steepest"], default="valley", help="(default: valley)")
    g.add_argument("--out", help="folder for lr_finder.json and lr_finder.png (default: print only)")
    p.set_defaults(func=find_lr)


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


def _model_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs or []:
        key, _, text = pair.partition("=")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text  # a bare word such as norm=gn
    return options


def _folder_sources(data_dir):
    """(train, test) ImageSources from DIR/train and DIR/test (or DIR/val), ImageFolder layout."""
    from .preloading import load_folder

    if not data_dir:
        raise CLIError("--dataset folder needs --data-dir DIR with DIR/train/<class>/* and DIR/test/<class>/*")
    root = Path(data_dir)
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise CLIError(
            f"--data-dir {root} needs the sub-folders train/ and test/ (or val/), each with one folder per class"
        )
    train, test = load_folder(root / "train"), load_folder(test_dir)
    if train.classes != test.classes:
        raise CLIError(f"{root}/train has classes {train.classes} but {test_dir} has {test.classes}")
    return train, test


def _build(args):
    """(device, data bundle, model) from parsed args."""
    from .device import resolve_device, seed_everything
    from .models import get_model
    from .preloading import get_data

    device = resolve_device(args.device)
    print(f"Using device: {device}")
    seed_everything(args.seed)
    kw = {"batch_size": args.batch_size, "loader": args.loader, "seed": args.seed, "device": device}
    if args.workers is not None:
        kw["num_workers"] = args.workers
    name = args.dataset
    if name == "folder":
        name = _folder_sources(args.data_dir)
    elif args.data_dir:
        kw["root"] = args.data_dir
    augment = args.augment
    if augment == "auto":
        augment = "none" if args.dataset == "digits" else "cifar"
    if args.loader == "device":
        kw["loader_kw"] = DEVICE_AUGMENT[augment]
    else:
        kw["augment"] = ALBUMENTATIONS_AUGMENT[augment]
    data = get_data(name, **kw)
    model = get_model(args.model, num_classes=len(data.classes), **_model_options(args.model_opt))
    return device, data, model


def _optimizer(args, model, lr):
    from .bp.optimizer import get_optimizer

    return get_optimizer(
        args.optimizer,
        model,
        lr=lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=bool(args.nesterov),
    )


def _switch(text: str):
    return {"off": False, "on": True}.get(text, text)  # "auto", "bf16", "fp16" pass through


# ----------------------------------------------------------------------------------------------
# Commands


def _resolve_resume(args: argparse.Namespace, out: Path) -> argparse.Namespace:
    """Fill the options from the saved run; refuse explicitly given options that contradict it."""
    config_path = out / "config.json"
    if not (out / "last.pt").is_file():
        raise CLIError(f"--resume: no checkpoint {out / 'last.pt'}; start a fresh run without --resume")
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8")).get("cli", {})
    except (OSError, json.JSONDecodeError) as exc:
        raise CLIError(f"--resume: cannot read {config_path} ({exc}); the run directory is damaged") from exc
    conflicts = []
    for key, value in saved.items():
        given = getattr(args, key, None)
        if key in RESUME_FREE or given is None:
            continue
        if key == "find_lr":  # the found lr is saved as lr; resuming never reruns the test
            conflicts.append(f"--find-lr (the run uses its found lr {saved.get('lr')})")
        elif given != value:
            conflicts.append(f"--{key.replace('_', '-')} {given} (the run used {value})")
    if conflicts:
        raise CLIError(
            "--resume continues the run with its own settings; drop " + ", ".join(conflicts)
            + f" or start a new run with another --out (see {config_path})"
        )
    for key, value in saved.items():
        if getattr(args, key, None) is None and key not in ("out",):
            setattr(args, key, value)
    args.find_lr = False
    return _fill_defaults(args, TRAIN_DEFAULTS)


def train(args: argparse.Namespace) -> int:
    """``woollylib train``: build data and model, (find lr), fit with checkpoints, write metrics."""
    dataset = args.dataset or TRAIN_DEFAULTS["dataset"]
    model_name = args.model or TRAIN_DEFAULTS["model"]
    out = Path(args.out) if args.out else Path("runs") / f"{dataset}-{model_name}"
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass only one")
    if args.resume:
        args = _resolve_resume(args, out)
    else:
        args = _fill_defaults(args, TRAIN_DEFAULTS)
        existing = [n for n in ("last.pt", "best.pt", "history.json") if (out / n).exists()]
        if existing and not args.overwrite:
            raise CLIError(
                f"{out} already holds a run ({', '.join(existing)}); add --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
    args.out = str(out)
    if not 0.0 <= args.label_smoothing < 1.0:
        raise CLIError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")

    device, data, model = _build(args)
    found = None
    if args.find_lr:
        from .scheduler import find_lr as range_test

        result = range_test(
            model, data.train_loader, optimizer=_optimizer(args, model, 1e-7), device=device
        )
        found = args.lr = float(result.suggestion)  # find_lr prints the suggestion
        found_result = result  # saved into --out once the run has started there

    from .training import Trainer

    cli_args = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    scheduler_kwargs = {"pct_start": args.pct_start} if args.pct_start is not None else None
    trainer = Trainer(
        model,
        data,
        device,
        args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=bool(args.nesterov),
        scheduler=args.scheduler,
        scheduler_kwargs=scheduler_kwargs,
        amp=_switch(args.amp),
        channels_last=_switch(args.channels_last),
        ricap_beta=args.ricap,
        label_smoothing=args.label_smoothing,
        grad_clip=args.grad_clip,
        tta_flip=bool(args.tta),
        out_dir=out,
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=args.progress,
        config={"cli": cli_args},
    )
    t0 = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - t0

    from .report import write_metrics

    summary = write_metrics(out, trainer.model, data, device, history, tta_flip=bool(args.tta),
                            this_session_s=seconds, lr=args.lr, found_lr=found)
    if found is not None:
        _save_lr_finder(found_result, out)
    print(
        f"test accuracy {summary['accuracy']:.2f}% (best {history.best_test_acc:.2f}% at epoch "
        f"{history.best_epoch}); {len(history)} epochs in {summary['train_time_s']:.1f} s; wrote {out}/"
    )
    if args.report:
        from .report import write_report

        write_report(out, trainer.model, data, device)
    return 0


def _save_lr_finder(result, out: Path) -> None:
    """``lr_finder.json`` (the curve and suggestion, read by the report) and ``lr_finder.png``."""
    from .training import atomic_write_json
    from .utils.visualize import plot_lr_finder

    atomic_write_json(
        {
            "suggestion": float(result.suggestion),
            "method": result.method,
            "lrs": [float(x) for x in result.lrs],
            "losses": [float(x) for x in result.losses],
        },
        out / "lr_finder.json",
    )
    plot_lr_finder(result, save_path=out / "lr_finder.png")
    print(f"wrote {out / 'lr_finder.json'} and {out / 'lr_finder.png'}")


def find_lr(args: argparse.Namespace) -> int:
    """``woollylib find-lr``: LR range test alone; prints the suggestion, saves the curve with --out."""
    args = _fill_defaults(args, TRAIN_DEFAULTS)
    device, data, model = _build(args)
    from .scheduler import find_lr as range_test

    result = range_test(
        model,
        data.train_loader,
        optimizer=_optimizer(args, model, args.start_lr),
        device=device,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_iter=args.num_iter,
        step_mode=args.step_mode,
        suggestion=args.suggestion,
        verbose=False,
    )
    print(f"suggested lr: {float(result.suggestion):.4g} ({result.method})")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        _save_lr_finder(result, Path(args.out))
    return 0


# ----------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run the command, return the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("woollylib: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"woollylib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ != "NonFiniteLossError":
            raise
        notes = "".join(f"\n{n}" for n in getattr(exc, "__notes__", []))
        print(f"woollylib {args.command}: error: {exc}{notes}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
