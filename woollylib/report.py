"""Run report: ``report.md`` with the metrics table and every figure as a PNG next to it.

Usage::

    from woollylib.report import write_report
    write_report("runs/r9")                        # rebuilds model + data from config.json, last.pt
    write_report("runs/r9", model, data, device)   # or use what is in memory (notebook)

    woollylib report runs/r9                       # the same from the shell
    woollylib train ... --out runs/r9 --report     # at the end of training

A run directory (``woollylib.training``) holds ``history.json``, ``config.json``, ``last.pt``,
``best.pt`` and, from ``woollylib train``, ``metrics.json``. The curves need only the history;
the confusion matrix, per-class accuracy, misclassified images and Grad-CAM need the model and the
test set, rebuilt from ``config.json`` (model name and options, dataset) when not given. Whatever
cannot be made is listed in the report with the reason. Files written (all in ``run_dir``):
``report.md``, ``curves.png``, ``lr_schedule.png``, ``lr_finder.png`` (when ``lr_finder.json``
exists), ``confusion_matrix.png``, ``per_class_accuracy.png``, ``misclassified.png``, ``gradcam.png``.

This module imports only the standard library at import time (the CLI stays fast).
"""

from __future__ import annotations

import argparse
import ast
import json
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_report_arguments", "rebuild", "run_report", "write_metrics", "write_report"]

# what a figure can fail with (bad files, missing data, a model that cannot explain itself): the
# report is still written and says why the figure is missing
_EXPECTED = (ValueError, TypeError, KeyError, IndexError, RuntimeError, OSError, AttributeError)

FIGURES = {  # key -> (file name, heading in the report)
    "curves": ("curves.png", "Loss and accuracy"),
    "lr_finder": ("lr_finder.png", "LR range test"),
    "lr_schedule": ("lr_schedule.png", "Learning-rate schedule"),
    "confusion_matrix": ("confusion_matrix.png", "Confusion matrix (whole test set)"),
    "per_class_accuracy": ("per_class_accuracy.png", "Per-class accuracy"),
    "misclassified": ("misclassified.png", "Misclassified test images"),
    "gradcam": ("gradcam.png", "Grad-CAM of misclassified images"),
}


# ----------------------------------------------------------------------------------------------
# reading a run directory


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun the command that writes it or delete it") from exc


def _model_options(pairs) -> dict:
    """CLI ``--model-opt KEY=VALUE`` strings -> dict (values parsed as Python literals when possible)."""
    options = {}
    for pair in pairs or []:
        key, _, text = str(pair).partition("=")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def _model_spec(config: dict, num_classes: int | None) -> tuple[str, dict]:
    """(registry name, options) of the run's model from config.json (CLI or notebook runs)."""
    from .models import get_model, list_models

    cli = config.get("cli") or {}
    if cli.get("model"):
        return str(cli["model"]), _model_options(cli.get("model_opt"))
    if config.get("model_name"):
        return str(config["model_name"]), dict(config.get("model_options") or {})
    # older/other runs: the registered model whose class and parameter count match
    cls, params = config.get("model"), config.get("parameters")
    for name in list_models():
        try:
            candidate = get_model(name, num_classes=num_classes or 10)
        except (TypeError, ValueError):
            continue
        if type(candidate).__name__ == cls and sum(p.numel() for p in candidate.parameters()) == params:
            return name, {}
    raise ValueError(
        f"config.json names no registered model (class {cls!r}, {params} parameters); pass model= to write_report"
    )


def _rebuild_model(run_dir: Path, config: dict, device, weights: str):
    from .models import get_model
    from .training import load_checkpoint

    num_classes = len((config.get("data") or {}).get("classes") or []) or None
    name, options = _model_spec(config, num_classes)
    ckpt = load_checkpoint(run_dir / f"{weights}.pt", map_location="cpu")
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    if num_classes is None:  # the last 2-D weight is the classifier: (num_classes, features)
        num_classes = [v for v in state.values() if getattr(v, "ndim", 0) == 2][-1].shape[0]
    model = get_model(name, num_classes=num_classes, **options)
    model.load_state_dict(state)
    model.to(device).eval()
    epoch = ckpt.get("epoch")
    label = f"{weights}.pt" + (f" (epoch {epoch})" if epoch is not None else "")
    return model, label


def _rebuild_data(config: dict, device, data_root):
    from .preloading import get_data, list_sources, load_folder

    cli = config.get("cli") or {}
    info = config.get("data") or {}
    name = cli.get("dataset") or info.get("name")
    batch = int(config.get("batch_size") or cli.get("batch_size") or 128)
    common = {"batch_size": batch, "augment": False, "verbose": False, "num_workers": 0}
    if name == "folder" or (name not in list_sources() and cli.get("data_dir")):
        root = Path(data_root or cli.get("data_dir") or "")
        test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
        if not (root / "train").is_dir() or test_dir is None:
            raise FileNotFoundError(f"the run's image folder {root} (train/ and test/) is not there; pass data_root=")
        data = get_data((load_folder(root / "train"), load_folder(test_dir)), **common)
    elif name in list_sources():
        root = data_root or cli.get("data_dir") or "data"
        data = get_data(name, root=root, download=False, **common)
    else:
        raise ValueError(f"config.json names no known dataset ({name!r}); pass data= to write_report")
    saved = info.get("mean")
    if saved and max(abs(a - b) for a, b in zip(saved, data.mean)) > 1e-3:
        raise ValueError(
            f"the rebuilt {name} data is normalised with mean {data.mean}, the run used {tuple(saved)}; "
            "pass the run's data= to write_report"
        )
    return data


def rebuild(run_dir, device=None, weights: str = "last", data_root=None):
    """(model with the run's ``weights`` in eval mode, test DataBundle, label of the weights) of a run."""
    from .device import resolve_device

    run_dir = Path(run_dir)
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    config = _read_json(run_dir / "config.json")
    if config is None:
        raise FileNotFoundError(f"{run_dir / 'config.json'} is missing; pass model= and data= to write_report")
    device = resolve_device(device)
    model, label = _rebuild_model(run_dir, config, device, weights)
    return model, _rebuild_data(config, device, data_root), label


def write_metrics(out_dir, model, data, device, history, tta_flip: bool = False, **extra) -> dict:
    """Write ``out_dir/metrics.json`` (whole test set: accuracy, per-class, confusion matrix); return it.

    The same content as ``woollylib train`` writes, for runs made from Python.
    """
    from .training import atomic_write_json
    from .utils import metrics

    test_loader = data.test_loader if hasattr(data, "test_loader") else data[1]  # bundle or (train, test)
    summary = metrics.summary(model, test_loader, device, classes=getattr(data, "classes", None),
                              tta_flip=tta_flip)
    summary.update({
        "model_weights": "last epoch",
        "epochs": len(history),
        "final_test_acc": history.test_acc[-1],
        "best_epoch": history.best_epoch,
        "best_test_acc": history.best_test_acc,
        "train_time_s": float(sum(history.epoch_time)),  # all epochs, train + test
        **extra,
    })
    atomic_write_json(summary, Path(out_dir) / "metrics.json")
    return summary


# ----------------------------------------------------------------------------------------------
# the report


def _fmt_time(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _table(rows: list[tuple[str, str]], header=("", "")) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return lines


def _results_rows(history, config, metrics_json, model_name) -> list[tuple[str, str]]:
    rows = []
    n = len(history.test_acc)
    if n:
        best = history.best_epoch
        rows += [
            ("final test accuracy", f"{history.test_acc[-1]:.2f} % (epoch {n})"),
            ("best test accuracy", f"{history.test_acc[best - 1]:.2f} % (epoch {best})"),
            ("final test loss", f"{history.test_loss[-1]:.4f}"),
            ("final train accuracy / loss", f"{history.train_acc[-1]:.2f} % / {history.train_loss[-1]:.4f}"),
        ]
    if metrics_json and metrics_json.get("accuracy") is not None:
        tta = " with flip TTA" if metrics_json.get("tta_flip") else ""
        rows.append(("whole test set (metrics.json)",
                     f"{metrics_json['accuracy']:.2f} % of {metrics_json.get('samples', '?')} images{tta}"))
    rows.append(("epochs", f"{n}" + (f" of {config['epochs']}" if config.get("epochs") not in (None, n) else "")))
    if history.epoch_time:
        total = sum(history.epoch_time)
        per_epoch = _fmt_time(total / len(history.epoch_time))
        rows.append(("training time", f"{_fmt_time(total)} ({per_epoch} per epoch, train + test)"))
    params = config.get("parameters")
    model = model_name or config.get("model") or "-"
    if config.get("model") and model_name and config["model"] != model_name:
        model += f" ({config['model']})"
    rows.append(("model", model + (f", {params:,} parameters" if isinstance(params, int) else "")))
    data = config.get("data") or {}
    if data.get("name"):
        classes = data.get("classes") or []
        rows.append(("data", f"{data['name']}" + (f", {len(classes)} classes" if classes else "")))
    return rows


def _settings_rows(config, metrics_json) -> list[tuple[str, str]]:
    rows = []
    opt = config.get("optimizer")
    if opt:
        extra = [f"momentum {config['momentum']}" if opt in ("sgd", "rmsprop") and config.get("momentum") else "",
                 "Nesterov" if config.get("nesterov") else "",
                 f"weight decay {config['weight_decay']:g}" if config.get("weight_decay") else ""]
        rows.append(("optimizer", opt + "".join(f", {e}" for e in extra if e)))
    if config.get("lr") is not None:
        peak = " (one-cycle peak)" if config.get("scheduler") == "onecycle" else ""
        found = (metrics_json or {}).get("found_lr")
        rows.append(("learning rate", f"{config['lr']:.4g}{peak}" + (" from the LR range test" if found else "")))
    if config.get("scheduler"):
        kw = config.get("scheduler_kwargs") or {}
        rows.append(("scheduler", config["scheduler"] + (f" ({_fmt(kw)})" if kw else "")))
    for key, label in (("batch_size", "batch size"), ("steps_per_epoch", "steps per epoch")):
        if config.get(key) is not None:
            rows.append((label, _fmt(config[key])))
    # engine switches: listed only when on (the table is for a write-up, not a config dump)
    for key, label in (("amp", "mixed precision"), ("ricap_beta", "RICAP beta"), ("label_smoothing", "label smoothing"),
                       ("l1", "L1 penalty"), ("grad_clip", "gradient clip (max L2 norm)"),
                       ("channels_last", "channels last"), ("tta_flip", "flip TTA in testing")):
        if config.get(key):
            rows.append((label, _fmt(config[key])))
    for key in ("seed", "device"):
        if config.get(key) is not None:
            rows.append((key, _fmt(config[key])))
    return rows


def _class_rows(cm, classes) -> list[str]:
    import numpy as np

    cm = np.asarray(cm)
    totals = cm.sum(axis=1)
    lines = ["| class | accuracy | test images | most often taken for |", "|---|---|---|---|"]
    for k in range(len(cm)):
        off = cm[k].copy()
        off[k] = 0
        confused = f"{classes[int(off.argmax())]} ({int(off.max())})" if off.max() > 0 else "-"
        acc = f"{100.0 * cm[k, k] / totals[k]:.1f} %" if totals[k] else "n/a"
        lines.append(f"| {classes[k]} | {acc} | {int(totals[k])} | {confused} |")
    return lines


def write_report(
    run_dir,
    model=None,
    data=None,
    device=None,
    *,
    weights: str = "last",
    n_misclassified: int = 10,
    layers=None,
    cam_method: str = "gradcam",
    data_root=None,
    title: str | None = None,
    verbose: bool = True,
) -> Path:
    """Write ``run_dir/report.md`` and its PNG figures; return the path of ``report.md``.

    Args:
        run_dir: a run directory with ``history.json`` (``woollylib train --out`` / ``out_dir=``).
        model, data: the trained model and its DataBundle; when None they are rebuilt from
            ``config.json`` and ``{weights}.pt`` (CIFAR-10 is read from ``data_root``/the run's
            ``--data-dir``, never downloaded).
        device: where to evaluate (default: cuda > mps > cpu, or the model's device).
        weights: "last" (the final epoch, as in metrics.json) or "best" (highest test accuracy).
        n_misclassified: images in the misclassified and Grad-CAM figures.
        layers: Grad-CAM stages (default: the model's last two stages); cam_method: e.g. "gradcam++".
    """
    from .training import History
    from .utils import visualize as viz

    run_dir = Path(run_dir)
    if not (run_dir / "history.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no history.json; point write_report at a run directory "
            "(woollylib train --out DIR, or train_test_loop(..., out_dir=DIR))"
        )
    history = History.load(run_dir / "history.json")
    config = _read_json(run_dir / "config.json") or {}
    metrics_json = _read_json(run_dir / "metrics.json")
    model_name = ((config.get("cli") or {}).get("model") or config.get("model_name")
                  or (getattr(model, "woollylib_spec", None) or {}).get("name"))
    made: dict[str, Path] = {}
    skipped: list[str] = []

    def save(key, fig):
        path = run_dir / FIGURES[key][0]
        fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
        made[key] = path

    def attempt(key, build):
        try:
            save(key, build())
        except _EXPECTED as exc:  # one figure failing must not lose the report; say why instead
            skipped.append(f"{FIGURES[key][1]}: {type(exc).__name__}: {exc}")
            warnings.warn(f"report: {FIGURES[key][1]} skipped ({exc})", stacklevel=3)

    # ---- figures from the files
    if history.train_loss:
        attempt("curves", lambda: viz.plot_history(history, title=f"Training curves: {run_dir.name}"))
    lr_json = _read_json(run_dir / "lr_finder.json")
    if lr_json:
        attempt("lr_finder", lambda: viz.plot_lr_finder(lr_json))
    if history.lr:
        spe = config.get("steps_per_epoch")
        attempt("lr_schedule", lambda: viz.plot_lr_schedule(history.lr, steps_per_epoch=spe))

    # ---- figures that need the model and the test set
    weights_label = "the model passed in"
    if model is None:
        try:
            model, data_rebuilt, weights_label = rebuild(run_dir, device, weights, data_root)
            data = data if data is not None else data_rebuilt
        except _EXPECTED as exc:
            skipped.append(f"model figures (confusion matrix, misclassified, Grad-CAM): cannot rebuild the "
                           f"model/data ({type(exc).__name__}: {exc})")
            model = None
    if model is not None and data is None:
        try:
            data = _rebuild_data(config, device, data_root)
        except _EXPECTED as exc:
            skipped.append(f"model figures: cannot rebuild the test data ({type(exc).__name__}: {exc})")
            model = None
    classes = list(getattr(data, "classes", None) or (config.get("data") or {}).get("classes") or []) or None

    cm = None
    if metrics_json and metrics_json.get("confusion_matrix") and (model is None or weights_label.startswith("last")):
        cm = metrics_json["confusion_matrix"]  # the last epoch's weights, as computed after training
        classes = classes or metrics_json.get("classes")
    elif model is not None:
        from .utils import metrics

        try:
            cm = metrics.confusion_matrix(model, data.test_loader, _device_of(model),
                                          tta_flip=bool(config.get("tta_flip")))
        except _EXPECTED as exc:
            skipped.append(f"confusion matrix: {type(exc).__name__}: {exc}")
    if cm is not None:
        attempt("confusion_matrix", lambda: viz.plot_confusion_matrix(cm, classes=classes))
        attempt("per_class_accuracy", lambda: viz.plot_per_class_accuracy(cm, classes=classes))

    wrong_count = None
    if model is not None:
        from .utils import metrics

        try:
            wrong = metrics.misclassified(model, data, _device_of(model), limit=n_misclassified)
            wrong_count = len(wrong)
        except _EXPECTED as exc:
            skipped.append(f"misclassified images: {type(exc).__name__}: {exc}")
            wrong = None
        if wrong is not None and len(wrong) == 0:
            skipped.append("misclassified images and Grad-CAM: every test image is classified correctly")
        elif wrong is not None:
            attempt("misclassified", lambda: viz.plot_misclassified(wrong, n=min(n_misclassified, len(wrong))))
            stages = layers
            if stages is None:
                from .models import get_stages

                try:
                    stages = list(get_stages(model))[-2:]
                except ValueError as exc:
                    skipped.append(f"Grad-CAM: {exc} (pass layers=)")
            if stages:
                attempt("gradcam", lambda: viz.plot_gradcam(model, stages=stages, wrong=wrong,
                                                            n=min(n_misclassified, len(wrong)),
                                                            method=cam_method))

    # ---- markdown
    lines = [f"# {title or 'Run report: ' + run_dir.name}", ""]
    lines += _table(_results_rows(history, config, metrics_json, model_name), ("result", "value")) + [""]
    settings = _settings_rows(config, metrics_json)
    if settings:
        lines += ["## Settings", ""] + _table(settings, ("setting", "value")) + [""]
    if cm is not None and classes and len(classes) == len(cm):
        lines += ["## Per class", ""] + _class_rows(cm, classes) + [""]
    for key, (name, heading) in FIGURES.items():
        if key not in made:
            continue
        lines += [f"## {heading}", ""]
        if key in ("confusion_matrix", "per_class_accuracy") and metrics_json and cm is metrics_json.get(
                "confusion_matrix"):
            lines += ["Weights of the last epoch (metrics.json).", ""]
        elif key in ("misclassified", "gradcam"):
            shown = min(n_misclassified, wrong_count or 0)
            what = "true and predicted class, confidence" if key == "misclassified" else "explaining the prediction"
            lines += [f"The first {shown} misclassified test images ({what}; weights: {weights_label}).", ""]
        lines += [f"![{heading}]({name})", ""]
    if skipped:
        lines += ["## Not included", ""] + [f"- {s}" for s in skipped] + [""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    if verbose:
        print(f"wrote {path} with {len(made)} figures" + (f" ({len(skipped)} left out, see the report)"
                                                           if skipped else ""))
    return path


def _device_of(model):
    for t in model.parameters():
        return t.device
    import torch

    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# command line


def add_report_arguments(parser: argparse.ArgumentParser, train: bool = False) -> argparse.ArgumentParser:
    """Add the report options to ``parser``.

    ``train=False``: the ``woollylib report RUN_DIR`` sub-command (sets ``func=run_report``).
    ``train=True``: only ``--report`` for ``woollylib train`` (default None, so a resume can tell
    given from default).
    """
    if train:
        parser.add_argument("--report", action="store_true", default=None,
                            help="write report.md with every figure into --out at the end")
        return parser
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (woollylib train --out)")
    g = parser.add_argument_group("report")
    g.add_argument("--weights", choices=["last", "best"], default="last",
                   help="checkpoint for the model figures (default: last, as metrics.json)")
    g.add_argument("--misclassified", type=int, default=10, metavar="N", help="misclassified images shown (default: 10)")
    g.add_argument("--layers", nargs="+", metavar="STAGE", help="Grad-CAM stages (default: the last two)")
    g.add_argument("--cam-method", default="gradcam", help="gradcam | gradcam++ | xgradcam | eigencam | ... ")
    g.add_argument("--data-dir", help="where the run's dataset is (default: the run's --data-dir or data)")
    g.add_argument("--device", help="cpu | cuda | cuda:N | mps | auto (default: auto)")
    parser.set_defaults(func=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    """``woollylib report RUN_DIR``: write the report; exit status 0."""
    if args.misclassified < 1:
        raise ValueError(f"--misclassified must be >= 1, got {args.misclassified}")
    write_report(args.run_dir, device=args.device, weights=args.weights, n_misclassified=args.misclassified,
                 layers=args.layers, cam_method=args.cam_method, data_root=args.data_dir)
    return 0


# kept for ``python -m woollylib.report RUN_DIR``
if __name__ == "__main__":  # pragma: no cover
    import sys

    _parser = add_report_arguments(argparse.ArgumentParser(prog="woollylib report"))
    _args = _parser.parse_args()
    sys.exit(_args.func(_args))
