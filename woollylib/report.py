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
# reading a run directory: woollylib.recipe rebuilds it


def rebuild(run_dir, device=None, weights: str = "last", data_root=None):
    """(model with the run's ``weights`` in eval mode, test DataBundle, label of the weights) of a run
    (``Recipe.from_run(run_dir).load(weights, device)``)."""
    from .recipe import Recipe

    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    return Recipe.from_run(run_dir).load(weights, device, data_root=data_root)


def protocol_summary(history, config: dict | None = None) -> dict:
    """metrics.json's protocol keys (``woollylib.recipe.protocol_summary``)."""
    from .recipe import protocol_summary as summary

    return summary(history, config)


def headline(summary: dict, history) -> str:
    """The line a finished run prints (``woollylib.recipe.headline``)."""
    from .recipe import headline as line

    return line(summary, history)


def write_metrics(out_dir, model, data, device, history, tta_flip: bool = False, **extra) -> dict:
    """Write ``out_dir/metrics.json`` (``woollylib.recipe.write_metrics``); return it."""
    from .recipe import write_metrics as write

    return write(out_dir, model, data, device, history, tta_flip=tta_flip, **extra)


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
                                 "test-only (no validation split): the headline is the final epoch; best.pt is the "
                                 "peak test epoch, chosen on the test set (optimistic: not a model selection)"))
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
    from .run import ModelSpec

    r = _Report(run_dir, n_misclassified)
    if model is None and weights in ("last", "best") and r.run.has(f"{weights}.pt"):
        r.run.load(weights)  # a damaged or foreign checkpoint is refused before any figure is replaced
    model_name = (r.config.get("model") or {}).get("name") or (ModelSpec.of(model).name if model is not None else None)
    r.file_figures()
    model, data = r.model_and_data(model, data, device, weights, data_root)
    classes = list(getattr(data, "classes", None) or (r.config.get("data") or {}).get("classes") or []) or None
    classes = r.confusion_figures(model, data, classes)
    if model is not None:
        r.misclassified_figures(model, data, layers, cam_method)
    path = r.run.write_report("\n".join(r.markdown(title, model_name, classes)))
    if verbose:
        print(f"wrote {path} with {len(r.made)} figures" + (f" ({len(r.skipped)} left out, see the report)"
                                                             if r.skipped else ""))
    return path


class _Report:
    """The figures of one report as they are made (``made``) or left out with the reason (``skipped``)."""

    def __init__(self, run_dir, n_misclassified: int):
        from .run import HISTORY, RunDir

        self.run = RunDir(run_dir)
        if not self.run.has(HISTORY):
            raise FileNotFoundError(
                f"{self.run.path} holds no {HISTORY}; point write_report at a run directory "
                "(woollylib train --out DIR, or train_test_loop(..., out_dir=DIR))"
            )
        self.run.check_links()  # every file it reads is checked before any figure is replaced
        self.history = self.run.read_history()
        self.config = self.run.read_config(required=False) or {}
        self.metrics_json = self.run.read_metrics()
        self.lr_json = self.run.read_lr_finder()
        self.n = n_misclassified
        self.made: dict[str, Path] = {}
        self.skipped: list[str] = []
        self.cm, self.wrong_count, self.weights_label = None, None, "the model passed in"

    def attempt(self, key, build) -> None:
        from .utils import visualize as viz

        try:
            self.made[key] = self.run.save_figure(viz.release(build()), key)  # saved, never shown in a notebook
        except _EXPECTED as exc:  # one figure failing must not lose the report; say why instead
            self.skipped.append(f"{HEADINGS[key]}: {type(exc).__name__}: {exc}")
            warnings.warn(f"report: {HEADINGS[key]} skipped ({exc})", stacklevel=4)

    def file_figures(self) -> None:
        """The figures that need only the run's files: curves, LR range test, LR schedule."""
        from .utils import visualize as viz

        h = self.history
        if h.train_loss:
            self.attempt("curves", lambda: viz.plot_history(h, title=f"Training curves: {self.run.path.name}"))
        lr_json = self.lr_json
        if lr_json:
            self.attempt("lr_finder", lambda: viz.plot_lr_finder(lr_json))
        if h.lr:
            spe = (self.config.get("resolved") or {}).get("steps_per_epoch")
            self.attempt("lr_schedule", lambda: viz.plot_lr_schedule(h.lr, steps_per_epoch=spe))

    def model_and_data(self, model, data, device, weights, data_root):
        """The model and test data of the model figures: as given, else rebuilt from the run (or None)."""
        if model is None:
            try:
                model, rebuilt, self.weights_label = rebuild(self.run.path, device, weights, data_root)
                if weights == "best" and not self.history.has_val:
                    self.weights_label += ", chosen on the test set: these test-set figures are optimistic"
                data = data if data is not None else rebuilt
            except _EXPECTED as exc:
                self.skipped.append(f"model figures (confusion matrix, misclassified, Grad-CAM): cannot rebuild the "
                                    f"model/data ({type(exc).__name__}: {exc})")
                return None, data
        if data is None:
            try:
                from .device import resolve_device
                from .recipe import Recipe

                data = Recipe.from_run(self.run.path).test_data(resolve_device(device), data_root)
            except _EXPECTED as exc:
                self.skipped.append(f"model figures: cannot rebuild the test data ({type(exc).__name__}: {exc})")
                return None, None
        return model, data

    def confusion_figures(self, model, data, classes):
        """Confusion matrix and per-class accuracy: metrics.json's (last epoch) or computed; the classes."""
        m = self.metrics_json
        tta = bool(((self.config.get("settings") or {}).get("engine") or {}).get("tta_flip"))
        if m and m.get("confusion_matrix") and (model is None or self.weights_label.startswith("last")):
            self.cm = m["confusion_matrix"]  # the last epoch's weights, as computed after training
            classes = classes or m.get("classes")
        elif model is not None:
            from .utils import metrics

            try:
                self.cm = metrics.confusion_matrix(model, data.test_loader, _device_of(model), tta_flip=tta)
            except _EXPECTED as exc:
                self.skipped.append(f"confusion matrix: {type(exc).__name__}: {exc}")
        if self.cm is not None:
            from .utils import visualize as viz

            self.attempt("confusion_matrix", lambda: viz.plot_confusion_matrix(self.cm, classes=classes))
            self.attempt("per_class_accuracy", lambda: viz.plot_per_class_accuracy(self.cm, classes=classes))
        return classes

    def misclassified_figures(self, model, data, layers, cam_method) -> None:
        from .utils import metrics
        from .utils import visualize as viz

        try:
            wrong = metrics.misclassified(model, data, _device_of(model), limit=self.n)
            self.wrong_count = len(wrong)
        except _EXPECTED as exc:
            self.skipped.append(f"misclassified images: {type(exc).__name__}: {exc}")
            return
        if len(wrong) == 0:
            self.skipped.append("misclassified images and Grad-CAM: every test image is classified correctly")
            return
        n = min(self.n, len(wrong))
        self.attempt("misclassified", lambda: viz.plot_misclassified(wrong, n=n))
        stages = layers
        if stages is None:
            from .models import get_stages

            try:
                stages = list(get_stages(model))[-2:]
            except ValueError as exc:
                self.skipped.append(f"Grad-CAM: {exc} (pass layers=)")
        if stages:
            self.attempt("gradcam", lambda: viz.plot_gradcam(model, stages=stages, wrong=wrong, n=n, method=cam_method))

    def markdown(self, title, model_name, classes) -> list[str]:
        m, cm = self.metrics_json, self.cm
        lines = [f"# {title or 'Run report: ' + self.run.path.name}", ""]
        view = _flat_view(self.config)
        lines += _table(_results_rows(self.history, view, m, model_name), ("result", "value")) + [""]
        settings = _settings_rows(view, m)
        if settings:
            lines += ["## Settings", ""] + _table(settings, ("setting", "value")) + [""]
        if cm is not None and classes and len(classes) == len(cm):
            lines += ["## Per class", ""] + _class_rows(cm, classes) + [""]
        for key, heading in HEADINGS.items():
            if key not in self.made:
                continue
            lines += [f"## {heading}", ""]
            if key in ("confusion_matrix", "per_class_accuracy") and m and cm is m.get("confusion_matrix"):
                lines += ["Weights of the last epoch (metrics.json).", ""]
            elif key in ("misclassified", "gradcam"):
                shown = min(self.n, self.wrong_count or 0)
                what = "true and predicted class, confidence" if key == "misclassified" else "explaining the prediction"
                lines += [f"The first {shown} misclassified test images ({what}; weights: {self.weights_label}).", ""]
            lines += [f"![{heading}]({self.made[key].name})", ""]
        if self.skipped:
            lines += ["## Not included", ""] + [f"- {s}" for s in self.skipped] + [""]
        return lines


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
