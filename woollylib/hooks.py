"""Trainer hooks: small objects called on a handful of events of ``Trainer.fit``.

    from woollylib.hooks import Hook
    class Every10(Hook):
        def on_epoch_end(self, trainer, epoch, figures):
            if epoch % 10 == 0:
                print(epoch, figures["test"]["acc"])
    Trainer(model, data, device, epochs=30, lr=0.05, hooks=[Every10()]).fit()

Events, in order (on every process under torchrun: a hook that writes checks ``trainer.dist.is_writer``):

    on_fit_start(trainer)                      the run folder is locked and ready; no epoch of this fit() yet
    on_epoch_end(trainer, epoch, figures)      epoch's files are saved; figures: {"train", "val", "test", "seconds"}
    on_fit_end(trainer)                        the last epoch is done (or early stopping ended the run)
    on_stop(trainer, exc)                      fit() ends by an exception: Ctrl-C/SIGTERM, a diverged loss

A hook stops the run after the current epoch with ``trainer.should_stop = True``. The trainer's own
extras are hooks too, added from its settings: the epoch line (``verbose``), TensorBoard (``tensorboard``)
and early stopping (``patience``); the recipe adds the one that writes metrics.json.
"""

from __future__ import annotations

import time

__all__ = ["EarlyStopping", "EpochLine", "Hook", "RunResults", "TensorBoard", "default_hooks", "headline",
           "protocol_summary", "write_metrics"]


class Hook:
    """The events of ``Trainer.fit`` (each a no-op here; override those you need)."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, figures: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass

    def on_stop(self, trainer, exc: BaseException) -> None:
        pass


class EpochLine(Hook):
    """One summary line per epoch: losses, accuracies, the learning rate, seconds."""

    def on_epoch_end(self, trainer, epoch, figures):
        if not trainer.verbose:
            return
        tr, va, te = figures["train"], figures["val"], figures["test"]
        lr_now = tr["lrs"][-1] if tr["lrs"] else trainer.optimizer.param_groups[0]["lr"]
        val = f"val loss {va['loss']:.4f} acc {va['acc']:6.2f}%  " if va is not None else ""
        print(f"epoch {epoch:>3}/{trainer.epochs}  train loss {tr['loss']:.4f} acc {tr['acc']:6.2f}%  {val}"
              f"test loss {te['loss']:.4f} acc {te['acc']:6.2f}%  lr {lr_now:.3g}  {figures['seconds']:.1f} s",
              flush=True)


class EarlyStopping(Hook):
    """Stop when the validation loss has not improved for ``patience`` epochs (never on the test set)."""

    def __init__(self, patience: int):
        self.patience = int(patience)

    def done(self, trainer) -> bool:
        return trainer.history.epochs_without_improvement() >= self.patience

    def on_fit_start(self, trainer):
        trainer.should_stop = trainer.should_stop or self.done(trainer)  # a resumed run that had stopped

    def on_epoch_end(self, trainer, epoch, figures):
        if self.done(trainer):
            trainer.should_stop = True

    def on_fit_end(self, trainer):
        h = trainer.history
        if self.done(trainer) and trainer.verbose:
            import numpy as np

            print(f"early stopping after epoch {len(h)}: the validation loss has not improved for "
                  f"{h.epochs_without_improvement()} epochs (patience {self.patience}; lowest "
                  f"{min(h.val_loss):.4f} at epoch {int(np.argmin(h.val_loss)) + 1})", flush=True)


class TensorBoard(Hook):
    """Every epoch's figures as TensorBoard scalars in OUT/tensorboard (``pip install woollylib[tensorboard]``);
    a replaced run's (``overwrite``) event files go with its other files."""

    def __init__(self):
        self.writer = None

    def on_fit_start(self, trainer):
        from torch.utils.tensorboard import SummaryWriter

        from .run import TENSORBOARD

        if trainer.dist.is_writer:
            self.writer = SummaryWriter(str(trainer.run_dir / TENSORBOARD))

    def on_epoch_end(self, trainer, epoch, figures):
        if self.writer is None:
            return
        if trainer.overwrite and not trainer.resume and epoch == trainer.first_epoch:  # the old run's files
            trainer.run_dir.prune_tensorboard(keep=self.file_name)
        for key, value in trainer.history.rows()[epoch - 1].items():
            if key != "epoch" and value is not None:
                group = "lr" if key == "lr" else f"{key.split('_')[1]}/{key.split('_')[0]}" if "_" in key else key
                self.writer.add_scalar(group, value, epoch)
        self.writer.flush()

    @property
    def file_name(self) -> str | None:
        from pathlib import Path

        return Path(self.writer.file_writer.event_writer._file_name).name if self.writer is not None else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_fit_end(self, trainer):
        self.close()

    def on_stop(self, trainer, exc):
        self.close()


def check_tensorboard(run_dir) -> None:
    """tensorboard=True needs a run directory and the tensorboard package (an optional extra)."""
    if run_dir is None:
        raise ValueError("tensorboard=True writes OUT/tensorboard; pass out_dir= (CLI: --out)")
    try:
        import tensorboard  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "tensorboard=True (--tensorboard) needs the tensorboard package: pip install 'woollylib[tensorboard]' "
            f"(or pip install tensorboard); {exc}") from exc


def default_hooks(settings, run_dir) -> list[Hook]:
    """The hooks a trainer's settings ask for: the epoch line, TensorBoard, early stopping."""
    hooks: list[Hook] = [EpochLine()]
    if settings.run.tensorboard:
        check_tensorboard(run_dir)
        hooks.append(TensorBoard())
    if settings.schedule.patience is not None:
        hooks.append(EarlyStopping(settings.schedule.patience))
    return hooks


# ------------------------------------------------------------------------------- run results ---

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


class RunResults(Hook):
    """At the end of ``fit()``, with a run folder, on the writing process: ``metrics.json`` (the last epoch's
    weights on the whole test set of ``data``; ``extra`` entries added). ``summary`` then holds its content
    and ``seconds`` the time of this ``fit()``."""

    def __init__(self, data, **extra):
        self.data, self.extra = data, extra
        self.summary, self.seconds, self._t0 = None, 0.0, None

    def on_fit_start(self, trainer):
        self._t0 = time.perf_counter()

    def on_fit_end(self, trainer):
        self.seconds = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        if trainer.run_dir is None or not trainer.dist.is_writer or not len(trainer.history):
            return
        self.summary = write_metrics(trainer.run_dir.path, trainer.model, self.data, trainer.device, trainer.history,
                                     tta_flip=trainer.tta_flip, this_session_s=self.seconds, **self.extra)
