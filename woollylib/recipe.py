"""The recipe of a run: its settings and its model spec, built into model, data and trainer, trained
under one lock, and rebuilt from any run folder.

    from woollylib.recipe import Recipe
    recipe = Recipe.from_flat(model="compact", dataset="digits", epochs=7, batch_size=32, lr=0.2,
                              loader="device", out_dir="runs/digits", seed=0)
    result = recipe.train()             # seed -> data -> model -> Trainer.fit -> metrics.json, under the lock
    result.history, result.metrics, result.model, result.data

    again = Recipe.from_run("runs/digits")             # the same recipe back from config.json (any format)
    model, data, label = again.load(weights="best")   # those weights in eval mode + the test data, no download

``Recipe.from_flat`` starts from ``woollylib train``'s defaults, so a recipe written in Python and the
same command line make the same run. The CLI, sweeps, the notebook API, the report and predict/export
start from a recipe; none of them strings data, model and trainer together by hand.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, Settings, cli_defaults, load_data
from .run import ModelSpec, RunDir, upgrade_config

__all__ = ["Recipe", "RunResult", "headline", "protocol_summary", "save_lr_finder", "write_metrics"]


# ------------------------------------------------------------------------------------ results ---

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


def save_lr_finder(result, out) -> None:
    """``OUT/lr_finder.json`` (the curve and suggestion, read by the report) and ``OUT/lr_finder.png``."""
    from .run import LR_FINDER
    from .utils.visualize import plot_lr_finder

    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_lr_finder(result)
    png = run.save_figure(plot_lr_finder(result), "lr_finder")
    print(f"wrote {run / LR_FINDER} and {png}")


@dataclass
class RunResult:
    """What ``Recipe.train`` returns."""

    recipe: Recipe
    trainer: Any
    model: Any            # the plain trained module (trainer.model)
    data: Any             # the DataBundle it trained on
    device: Any
    history: Any
    metrics: dict | None  # metrics.json's content (None without a run folder, and on ranks > 0)
    found_lr: float | None = None
    seconds: float = 0.0  # of this session's fit()


# ------------------------------------------------------------------------------------- recipe ---

@dataclass
class Recipe:
    """Settings + model spec: everything a run is made from (``extra`` goes to config.json's "extra")."""

    settings: Settings = field(default_factory=lambda: Settings.from_flat(**cli_defaults()))
    model: ModelSpec = field(default_factory=lambda: ModelSpec(DEFAULT_MODEL))
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_flat(cls, model: str | None = None, model_opt: dict | None = None, *, num_classes: int | None = None,
                  extra: dict | None = None, **flat) -> Recipe:
        """A recipe from flat setting names over ``woollylib train``'s defaults (``lr=``, ``epochs=``...)."""
        settings = Settings.from_flat(Settings.from_flat(**cli_defaults()), **flat)
        spec = ModelSpec(name=model or DEFAULT_MODEL, options=dict(model_opt or {}), num_classes=num_classes)
        return cls(settings, spec, dict(extra or {}))

    @classmethod
    def from_config(cls, config: dict) -> Recipe:
        """The recipe a ``config.json`` content records (format 1 is upgraded)."""
        from .preloading import list_sources

        config = upgrade_config(config)
        settings = Settings.from_dict(config["settings"])
        spec = ModelSpec.from_dict(config["model"])
        name = (config.get("data") or {}).get("name")
        if settings.data.dataset != "folder" and name in list_sources() and settings.data.dataset != name:
            settings.data.dataset = name  # a notebook run: the data bundle's own source
        settings.run.resume = settings.run.overwrite = False
        return cls(settings, spec, dict(config.get("extra") or {}))

    @classmethod
    def from_run(cls, run_dir) -> Recipe:
        """The recipe of the run in ``run_dir`` (its config.json), with ``out_dir`` pointing there."""
        run = RunDir(run_dir)
        config = run.read_config(required=False)
        if config is None:
            from .run import CONFIG

            raise FileNotFoundError(f"{run / CONFIG} is missing: {run.path} holds no woollylib run configuration")
        recipe = cls.from_config(config)
        recipe.settings.run.out_dir = str(run.path)
        return recipe

    @property
    def out_dir(self) -> Path | None:
        out = self.settings.run.out_dir
        return Path(out) if out else None

    # ---- building

    def data(self, device=None, *, augment: bool = True, download: bool = True, data_root=None,
             verbose: bool = True, batch_size: int | None = None):
        """The DataBundle of these settings (``augment=False``: as a report or a prediction needs it)."""
        return load_data(self.settings.data, device, self.settings.run.seed, augment=augment, download=download,
                         data_root=data_root, verbose=verbose, batch_size=batch_size)

    def build_model(self, num_classes: int | None = None):
        """A fresh model of the spec (``num_classes`` where the spec has none: the data's)."""
        return self.model.build(num_classes)

    def build(self, device=None, *, verbose: bool = True):
        """(data, model) of a fresh run: the RNGs seeded first (``settings.run.seed``), then the data, then
        the model's initial weights, in the order ``woollylib train`` has always used."""
        from .device import seed_everything

        seed_everything(self.settings.run.seed)
        data = self.data(device, verbose=verbose)
        return data, self.build_model(len(data.classes))

    def optimizer(self, model, lr: float):
        """The settings' optimizer over ``model`` at ``lr`` (for an LR range test)."""
        from .bp.optimizer import get_optimizer

        o = self.settings.optim
        return get_optimizer(o.name, model, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
                             nesterov=bool(o.nesterov))

    def trainer(self, model, data, device=None, **kw):
        from .training import Trainer

        return Trainer(model, data, device, settings=self.settings, config=self.extra or None, **kw)

    # ---- training

    def train(self, device=None, *, find_lr: bool = False, dist=None, verbose: bool = True) -> RunResult:
        """Build and fit the run, write metrics.json (and, with ``find_lr``, lr_finder.json), all under the
        run folder's lock (held by rank 0 under torchrun). ``dist``: the process group's ``Dist`` when the
        caller set one up (``woollylib.distributed.session``), else none."""
        from .distributed import env

        out = self.out_dir
        lock = RunDir(out).lock() if out is not None and env().rank == 0 else contextlib.nullcontext()
        with lock:
            return self._train_locked(device, find_lr=find_lr, dist=dist, verbose=verbose)

    def _train_locked(self, device, *, find_lr: bool, dist, verbose: bool) -> RunResult:
        from .device import resolve_device

        device = resolve_device(device)
        data, model = self.build(device, verbose=verbose)
        found = None
        if find_lr:
            found = self._find_lr(model, data, device, dist)
            self.extra["find_lr"] = True
        trainer = self.trainer(model, data, device)
        t0 = time.perf_counter()
        history = trainer.fit()
        seconds = time.perf_counter() - t0
        metrics = None
        out = self.out_dir
        if out is not None and trainer.dist.is_writer and len(history):
            metrics = write_metrics(out, trainer.model, data, trainer.device, history,
                                    tta_flip=self.settings.engine.tta_flip, this_session_s=seconds,
                                    lr=self.settings.optim.lr, found_lr=found.suggestion if found else None)
            if found is not None:
                self._save_lr_finder(found)
        return RunResult(self, trainer, trainer.model, data, trainer.device, history, metrics,
                         float(found.suggestion) if found else None, seconds)

    def _find_lr(self, model, data, device, dist):
        """The LR range test from the model's initial weights; its suggestion becomes the run's lr (rank 0's
        under torchrun)."""
        from .scheduler import find_lr as range_test

        found = range_test(model, data.train_loader, optimizer=self.optimizer(model, 1e-7), device=device)
        lr = float(found.suggestion)
        self.settings.optim.lr = dist.broadcast_float(lr) if dist is not None else lr
        return found

    def _save_lr_finder(self, result) -> None:
        save_lr_finder(result, self.out_dir)

    # ---- a finished run

    def load(self, weights: str = "last", device=None, *, data: bool = True, data_root=None):
        """(model with the run's ``weights`` ("last" | "best") in eval mode, test DataBundle or None, label
        of the weights such as "best.pt (epoch 3)") of the run this recipe was read from."""
        from .device import resolve_device

        if self.out_dir is None:
            raise ValueError("this recipe has no run folder (settings.run.out_dir); use Recipe.from_run(DIR)")
        if weights not in ("last", "best"):
            raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
        device = resolve_device(device)
        run = RunDir(self.out_dir)
        ckpt = run.load(weights, map_location="cpu")
        state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
        # the last 2-D weight is the classifier: (num_classes, features)
        num_classes = self.model.num_classes or [v for v in state.values() if getattr(v, "ndim", 0) == 2][-1].shape[0]
        model = self.build_model(num_classes)
        model.load_state_dict(state)
        model.to(device).eval()
        epoch = ckpt.get("epoch")
        label = f"{weights}.pt" + (f" (epoch {epoch})" if epoch is not None else "")
        return model, (self.test_data(device, data_root) if data else None), label

    def test_data(self, device=None, data_root=None):
        """The run's data as a report needs it: no augmentation, no workers, nothing downloaded, normalised
        with the run's own statistics (checked against config.json)."""
        from .preloading import list_sources

        config = RunDir(self.out_dir).read_config(required=False) if self.out_dir is not None else None
        info = (config or {}).get("data") or {}
        if self.settings.data.dataset != "folder" and info and info.get("name") not in list_sources():
            raise ValueError(f"config.json names no known dataset ({info.get('name')!r}); pass data= to write_report")
        batch = ((config or {}).get("resolved") or {}).get("batch_size") or 128
        seed = self.settings.run.seed
        data = load_data(self.settings.data, device, 0 if seed is None else seed, augment=False, download=False,
                         data_root=data_root, verbose=False, batch_size=int(batch))
        saved = info.get("mean")
        if saved and max(abs(a - b) for a, b in zip(saved, data.mean)) > 1e-3:
            raise ValueError(
                f"the rebuilt {self.settings.data.dataset} data is normalised with mean {data.mean}, the run used "
                f"{tuple(saved)}; pass the run's data= to write_report")
        return data
