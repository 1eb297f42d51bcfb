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
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_report_arguments", "headline", "protocol_summary", "rebuild", "run_report", "write_metrics", "write_report"]

# what a figure can fail with (bad files, missing data, a model that cannot explain itself): the
# report is still written and says why the figure is missing
_EXPECTED = (ValueError, TypeError, KeyError, IndexError, RuntimeError, OSError, AttributeError)

HEADINGS = {  # figure key (woollylib.run.FIGURE_FILES) -> heading in the report
    "curves": "Loss and accuracy",
    "lr_finder": "LR range test",
    "lr_schedule": "Learning-rate schedule",
    "confusion_matrix": "Confusion matrix (whole test set)",
    "per_class_accuracy": "Per-class accuracy",
    "misclassified": "Misclassified test images",
    "gradcam": "Grad-CAM of misclassified images",
}


# ----------------------------------------------------------------------------------------------
# reading a run directory


def _rebuild_model(run, config: dict, device, weights: str):
    from .run import ModelSpec

    ckpt = run.load(weights, map_location="cpu")
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    spec = ModelSpec.from_dict(config["model"])
    # the last 2-D weight is the classifier: (num_classes, features)
    num_classes = spec.num_classes or [v for v in state.values() if getattr(v, "ndim", 0) == 2][-1].shape[0]
    model = spec.build(num_classes)
    model.load_state_dict(state)
    model.to(device).eval()
    epoch = ckpt.get("epoch")
    label = f"{weights}.pt" + (f" (epoch {epoch})" if epoch is not None else "")
    return model, label


def _rebuild_data(config: dict, device, data_root):
    from .config import Settings, load_data
    from .preloading import list_sources

    settings = Settings.from_dict(config["settings"])
    info = config.get("data") or {}
    data_cfg = settings.data
    if info.get("name") in list_sources() and data_cfg.dataset != info["name"] and data_cfg.dataset != "folder":
        data_cfg.dataset = info["name"]  # a notebook run: the bundle's own source
    elif info.get("name") not in list_sources() and data_cfg.dataset != "folder":
        raise ValueError(f"config.json names no known dataset ({info.get('name')!r}); pass data= to write_report")
    batch = (config.get("resolved") or {}).get("batch_size") or 128
    data = load_data(data_cfg, device, seed=0, augment=False, download=False, data_root=data_root, verbose=False,
                     batch_size=int(batch))
    saved = info.get("mean")
    if saved and max(abs(a - b) for a, b in zip(saved, data.mean)) > 1e-3:
        raise ValueError(
            f"the rebuilt {data_cfg.dataset} data is normalised with mean {data.mean}, the run used {tuple(saved)}; "
            "pass the run's data= to write_report"
        )
    return data


def rebuild(run_dir, device=None, weights: str = "last", data_root=None):
    """(model with the run's ``weights`` in eval mode, test DataBundle, label of the weights) of a run."""
    from .device import resolve_device
    from .run import CONFIG, RunDir

    run = RunDir(run_dir)
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    config = run.read_config(required=False)
    if config is None:
        raise FileNotFoundError(f"{run / CONFIG} is missing; pass model= and data= to write_report")
    device = resolve_device(device)
    model, label = _rebuild_model(run, config, device, weights)
    return model, _rebuild_data(config, device, data_root), label


def protocol_summary(history, config: dict | None = None) -> dict:
    """The headline figures and how they were chosen (metrics.json's protocol keys).

    "validation": best.pt and every decision used the validation split; ``val_chosen_test_acc`` is
    the test accuracy of the epoch chosen on validation. "test-only": nothing was chosen; the
    headline is ``final_test_acc``, and ``peak_test_acc`` was chosen on the test set (optimistic).
    """
    n = len(history)
    settings = (config or {}).get("settings") or {}
    patience = (settings.get("schedule") or {}).get("patience")
    planned = (settings.get("schedule") or {}).get("epochs")
    chosen = history.val_chosen_epoch
    peak = history.peak_test_epoch
    return {
        "protocol": history.protocol,
        "epochs": n,
        "final_test_acc": history.final_test_acc,
        "final_val_acc": history.val_acc[-1] if history.has_val else None,
        "val_chosen_epoch": chosen,
        "val_chosen_val_acc": history.val_acc[chosen - 1] if chosen else None,
        "val_chosen_test_acc": history.test_acc[chosen - 1] if chosen else None,
        "peak_test_acc": history.test_acc[peak - 1] if peak else None,
        "peak_test_epoch": peak,
        "peak_test_note": "chosen on the test set: an optimistic figure, not a model selection",
        "best_epoch": history.best_epoch,  # the epoch best.pt holds
        "best_chosen_on": "validation accuracy" if history.has_val else "test accuracy",
        "best_test_acc": history.best_test_acc,
        "stopped_early": bool(patience is not None and history.has_val and n < (planned or n + 1)
                              and history.epochs_without_improvement() >= patience),
    }


def headline(summary: dict, history) -> str:
    """The one line a finished run prints: the final test accuracy and how anything was chosen."""
    text = f"test accuracy {summary['accuracy']:.2f}% (final epoch)"
    if history.has_val:
        e = history.val_chosen_epoch
        text += (f"; chosen on validation: epoch {e} (val {history.val_acc[e - 1]:.2f}%, test "
                 f"{history.test_acc[e - 1]:.2f}%)")
        if summary.get("stopped_early"):
            text += "; stopped early"
    else:
        e = history.peak_test_epoch
        text += f"; peak {history.test_acc[e - 1]:.2f}% at epoch {e} (chosen on the test set)"
    return text


def write_metrics(out_dir, model, data, device, history, tta_flip: bool = False, **extra) -> dict:
    """Write ``out_dir/metrics.json`` (whole test set: accuracy, per-class, confusion matrix); return it.

    The same content as ``woollylib train`` writes, for runs made from Python.
    """
    from .run import RunDir
    from .utils import metrics

    test_loader = data.test_loader if hasattr(data, "test_loader") else data[1]  # bundle or (train, test)
    summary = metrics.summary(model, test_loader, device, classes=getattr(data, "classes", None),
                              tta_flip=tta_flip)
    try:
        config = RunDir(out_dir).read_config(False)
    except (OSError, ValueError):
        config = None
    summary.update({"model_weights": "last epoch", **protocol_summary(history, config)})
    summary.update({"train_time_s": float(sum(history.epoch_time)), **extra})  # all epochs, train + val + test
    RunDir(out_dir).write_metrics(summary)
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


def _flat_view(config: dict) -> dict:
    """The report's view of a config: settings by their flat names, the resolved switches, the model."""
    from .config import Settings

    if not config:
        return {}
    view = Settings.from_dict(config.get("settings") or {}).flat()
    view["scheduler_kwargs"] = {**(view.pop("scheduler_kwargs") or {}),
                                **({"pct_start": view["pct_start"]} if view.get("pct_start") is not None else {})}
    view.update({k: v for k, v in (config.get("resolved") or {}).items() if v is not None})
    model = config.get("model") or {}
    view.update(model=model.get("cls"), parameters=model.get("parameters"), data=config.get("data") or {})
    return view


def _results_rows(history, config, metrics_json, model_name) -> list[tuple[str, str]]:
    rows = []
    n = len(history.test_acc)
    if n:
        rows.append(("protocol", "validation split: best.pt, the plateau schedule and early stopping watch the "
                                 "validation set, never the test set" if history.has_val else
                                 "test-only (no validation split): nothing is chosen on the test set; the headline "
                                 "is the final epoch"))
        rows.append(("final test accuracy", f"{history.test_acc[-1]:.2f} % (epoch {n})"))
        if history.has_val:
            chosen = history.val_chosen_epoch
            rows += [
                ("final validation accuracy", f"{history.val_acc[-1]:.2f} %"),
                ("test accuracy of the epoch chosen on validation",
                 f"{history.test_acc[chosen - 1]:.2f} % (epoch {chosen}, validation {history.val_acc[chosen - 1]:.2f} %)"),
            ]
        peak = history.peak_test_epoch
        rows += [
            ("peak test accuracy (chosen on the test set)", f"{history.test_acc[peak - 1]:.2f} % (epoch {peak})"),
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
        parts = "train + validation + test" if history.has_val else "train + test"
        rows.append(("training time", f"{_fmt_time(total)} ({per_epoch} per epoch, {parts})"))
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
    precision = config.get("precision")
    if isinstance(precision, dict) and precision.get("label"):
        rows.append(("precision", _precision_text(precision)))
    # engine switches: listed only when on (the table is for a write-up, not a config dump)
    for key, label in (("amp", "mixed precision"), ("ricap_beta", "RICAP beta"), ("label_smoothing", "label smoothing"),
                       ("l1", "L1 penalty"), ("grad_clip", "gradient clip (max L2 norm)"),
                       ("channels_last", "channels last"), ("tta_flip", "flip TTA in testing"),
                       ("compile", "torch.compile mode")):
        if config.get(key) and not (key == "amp" and isinstance(precision, dict)):  # older runs: amp only
            rows.append((label, _fmt(config[key])))
    for key in ("seed", "device"):
        if config.get(key) is not None:
            rows.append((key, _fmt(config[key])))
    return rows


def _precision_text(p: dict) -> str:
    """'bf16 autocast (asked: on): <reason>; CPU kernels AVX512' from config.json's resolved precision."""
    asked = {True: "on", False: "off"}.get(p.get("requested"), p.get("requested"))
    text = f"{p['label']} (asked: {asked}): {p.get('reason', '')}"
    if p.get("cpu_capability") and str(p.get("device", "")).startswith("cpu") and p["cpu_capability"] not in text:
        text += f"; CPU kernels {p['cpu_capability']}"
    return text


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
    from .run import HISTORY, ModelSpec, RunDir
    from .utils import visualize as viz

    run = RunDir(run_dir)
    run_dir = run.path
    if not run.has(HISTORY):
        raise FileNotFoundError(
            f"{run_dir} holds no {HISTORY}; point write_report at a run directory "
            "(woollylib train --out DIR, or train_test_loop(..., out_dir=DIR))"
        )
    history = run.read_history()
    config = run.read_config(required=False) or {}
    metrics_json = run.read_metrics()
    model_name = (config.get("model") or {}).get("name") or (ModelSpec.of(model).name if model is not None else None)
    made: dict[str, Path] = {}
    skipped: list[str] = []

    def attempt(key, build):
        try:
            made[key] = run.save_figure(build(), key)
        except _EXPECTED as exc:  # one figure failing must not lose the report; say why instead
            skipped.append(f"{HEADINGS[key]}: {type(exc).__name__}: {exc}")
            warnings.warn(f"report: {HEADINGS[key]} skipped ({exc})", stacklevel=3)

    # ---- figures from the files
    if history.train_loss:
        attempt("curves", lambda: viz.plot_history(history, title=f"Training curves: {run_dir.name}"))
    lr_json = run.read_lr_finder()
    if lr_json:
        attempt("lr_finder", lambda: viz.plot_lr_finder(lr_json))
    if history.lr:
        spe = (config.get("resolved") or {}).get("steps_per_epoch")
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
    tta = bool(((config.get("settings") or {}).get("engine") or {}).get("tta_flip"))

    cm = None
    if metrics_json and metrics_json.get("confusion_matrix") and (model is None or weights_label.startswith("last")):
        cm = metrics_json["confusion_matrix"]  # the last epoch's weights, as computed after training
        classes = classes or metrics_json.get("classes")
    elif model is not None:
        from .utils import metrics

        try:
            cm = metrics.confusion_matrix(model, data.test_loader, _device_of(model),
                                          tta_flip=tta)
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
    view = _flat_view(config)
    lines += _table(_results_rows(history, view, metrics_json, model_name), ("result", "value")) + [""]
    settings = _settings_rows(view, metrics_json)
    if settings:
        lines += ["## Settings", ""] + _table(settings, ("setting", "value")) + [""]
    if cm is not None and classes and len(classes) == len(cm):
        lines += ["## Per class", ""] + _class_rows(cm, classes) + [""]
    for key, heading in HEADINGS.items():
        if key not in made:
            continue
        name = made[key].name
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
    path = run.write_report("\n".join(lines))
    if verbose:
        print(f"wrote {path} with {len(made)} figures" + (f" ({len(skipped)} left out, see the report)"
                                                           if skipped else ""))
    return path


def _device_of(model):
    from .device import model_device

    return model_device(model)


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
