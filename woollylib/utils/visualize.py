"""Every plot of a write-up, as functions that return a matplotlib Figure.

Usage::

    from woollylib.utils import visualize as viz
    viz.plot_random_samples(data, n=16)                 # data: DataBundle, ImageSource or (x, y)
    viz.plot_class_samples(data, per_class=6)
    viz.plot_image_channels(data.train_source.images[0])
    viz.plot_augmentations(data)                        # each train transform alone, then all
    viz.plot_history(history)                           # History or its to_dict()
    viz.plot_lr_finder(find_lr_result); viz.plot_lr_schedule(history.lr, steps_per_epoch=98)
    viz.plot_misclassified(model, data, device, n=10)
    viz.plot_gradcam(model, data, device, stages=("layer3", "layer4"), n=8)
    viz.plot_confusion_matrix(model, data, device); viz.plot_per_class_accuracy(model, data, device)
    viz.plot_optimizer_comparison(histories)            # {"sgd": History, "adam": History}
    viz.plot_adversarial(model, images, labels, data.mean, data.std, epsilon=8 / 255)

Each function takes ``save_path=None`` (PNG written when given, parent folders created) and never
calls ``plt.show()``. The returned Figure is pyplot's current figure, so ``plt.savefig(...)`` and
``plt.show()`` act on it; in a notebook each figure is displayed exactly once, whether it is the
cell's value, followed by ``plt.show()``, made in a loop or passed to ``display()`` (a displayed
figure leaves pyplot, so the end of the cell does not show it again). In a script with a
non-interactive backend (Agg) nothing blocks and only the latest woollylib figure stays in pyplot,
so many figures never accumulate. ``release(fig)`` takes a figure out of pyplot without showing it
(for code that only writes files). Images are always shown in pixel space (de-normalised), with
class names when they are known.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..device import evaluating, model_device
from ..preloading.transforms import denormalize

_DPI = 110  # dots per inch of saved PNGs
_TITLE = 9  # points, per-image titles


@functools.cache
def _figure_class():
    """``WoollyFigure``, built on first use so importing this module does not import matplotlib."""
    from matplotlib.figure import Figure

    class WoollyFigure(Figure):
        """A matplotlib Figure made by woollylib (a notebook displays it once, see the module doc)."""

    WoollyFigure.__module__, WoollyFigure.__qualname__ = __name__, "WoollyFigure"  # picklable by name
    return WoollyFigure


def __getattr__(name):
    if name == "WoollyFigure":
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# plumbing


def _figure(width: float, height: float):
    """A new pyplot figure (the current one); outside a notebook, with a non-interactive backend,
    the previous woollylib figures leave pyplot first (they stay valid Figures)."""
    import matplotlib.pyplot as plt

    if _kernel() is None and plt.get_fignums():
        for manager in plt._pylab_helpers.Gcf.get_all_fig_managers():
            fig = manager.canvas.figure
            if isinstance(fig, _figure_class()) and fig.canvas.required_interactive_framework is None:
                plt.close(fig)
    return plt.figure(FigureClass=_figure_class(), figsize=(width, height), dpi=_DPI, layout="constrained")


def _finish(fig, save_path):
    if save_path is not None:
        path = Path(save_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight", facecolor="white")
    return displayable(fig)


def release(fig):
    """Take ``fig`` out of pyplot (not shown by ``plt.show()`` or a notebook's end of cell); returns it."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)  # a no-op for a figure pyplot does not hold
    return fig


def _kernel():
    """The running IPython kernel shell (Jupyter, Colab), or None in a script / terminal IPython."""
    import sys

    if "IPython" not in sys.modules:  # no IPython loaded: certainly no kernel
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def _figure_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _png_once(fig) -> bytes:
    """The PNG a notebook shows; the figure then leaves pyplot so the end of the cell does not show it again."""
    png = _figure_png(fig)
    release(fig)
    return png


def displayable(fig, shell=None):
    """Make woollylib figures render as one PNG each in a kernel (``shell``: default the running one).

    The formatter is registered for :class:`WoollyFigure` only, so pyplot's own figures keep the
    inline backend's; displaying a woollylib figure also takes it out of pyplot (shown once).
    """
    shell = shell if shell is not None else _kernel()
    if shell is not None:
        png = shell.display_formatter.formatters["image/png"]
        if png.type_printers.get(_figure_class()) is not _png_once:
            png.for_type(_figure_class(), _png_once)
    return fig


def _grid(fig, n: int, ncols: int):
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.axis("off")
    return axes[:n]


def _show(ax, image, title=None, fontsize=_TITLE, color="black"):
    img = np.asarray(image)
    ax.imshow(img if img.ndim == 3 and img.shape[-1] == 3 else img.squeeze(), cmap="gray",
              vmin=0, vmax=1 if img.dtype != np.uint8 else 255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize, color=color)


def to_hwc01(images) -> np.ndarray:
    """(N, H, W, C) float32 in [0, 1] from uint8/float NHWC arrays or NCHW/CHW pixel tensors."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        x = x.unsqueeze(0) if x.ndim == 3 else x
        arr = x.permute(0, 2, 3, 1).numpy()
    else:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _class_names(classes, k: int | None = None) -> list[str] | None:
    if classes is None:
        return [str(i) for i in range(k)] if k is not None else None
    return [str(c) for c in classes]


def _name(classes, i) -> str:
    return classes[int(i)] if classes is not None and 0 <= int(i) < len(classes) else str(int(i))


def _source(data, split: str = "train"):
    """(images uint8/float NHWC, labels (N,), classes|None, name) from the accepted data kinds."""
    src = getattr(data, f"{split}_source", None)
    if src is not None:
        classes = getattr(data, "classes", None) or getattr(src, "classes", None)
        return src.images, np.asarray(src.labels), classes, getattr(data, "name", "")
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, np.asarray(data.labels), getattr(data, "classes", None), getattr(
            data, "name", "")
    if isinstance(data, tuple | list) and len(data) in (2, 3):
        images, labels = data[0], data[1]
        images = to_hwc01(images) if isinstance(images, torch.Tensor) else np.asarray(images)
        classes = data[2] if len(data) == 3 else None
        return images, np.asarray(labels), classes, ""
    raise TypeError(
        "data must be a DataBundle, an ImageSource (images, labels, classes) or a tuple "
        f"(images NHWC in pixel space, labels[, classes]); got {type(data).__name__}."
    )


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _rng(seed):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------
# data


def plot_random_samples(data, n: int = 16, *, ncols: int = 8, seed: int | None = None,
                        split: str = "train", save_path=None):
    """``n`` random images with their class names (pixel space)."""
    images, labels, classes, name = _source(data, split)
    if len(images) == 0:
        raise ValueError("the data holds no images to show.")
    n = min(n, len(images))
    idx = _rng(seed).choice(len(images), size=n, replace=False)
    ncols = min(ncols, n)
    fig = _figure(1.4 * ncols, 1.55 * math.ceil(n / ncols) + 0.4)
    for ax, i in zip(_grid(fig, n, ncols), idx):
        _show(ax, to_hwc01(images[i])[0], _name(classes, labels[i]))
    fig.suptitle(f"{n} random {split} images" + (f" of {name}" if name else ""), fontsize=11)
    return _finish(fig, save_path)


def plot_class_samples(data, per_class: int = 6, *, seed: int | None = None, split: str = "train",
                       save_path=None):
    """One row per class with ``per_class`` random examples of it."""
    images, labels, classes, name = _source(data, split)
    ks = sorted(set(labels.tolist()) | set(range(len(classes) if classes else 0)))
    rng = _rng(seed)
    fig = _figure(1.1 * per_class + 1.2, 1.1 * len(ks) + 0.5)
    axes = fig.subplots(len(ks), per_class, squeeze=False)
    for r, k in enumerate(ks):
        members = np.flatnonzero(labels == k)
        pick = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for c in range(per_class):
            ax = axes[r, c]
            if c < len(pick):
                _show(ax, to_hwc01(images[pick[c]])[0])
            else:
                ax.axis("off")
            if c == 0:
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_ylabel(f"{_name(classes, k)}\n({len(members)})", fontsize=9, rotation=0,
                              ha="right", va="center")
    fig.suptitle(f"{split.capitalize()} samples per class" + (f" of {name}" if name else "")
                 + " (images in the class in brackets)", fontsize=11)
    return _finish(fig, save_path)


def plot_image_channels(image, *, title: str | None = None, save_path=None):
    """An RGB image and its R, G and B channels (each shown in its own colour, with its mean)."""
    img = to_hwc01(image)[0]
    if img.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3); got shape {img.shape}.")
    fig = _figure(8.4, 2.5)
    axes = fig.subplots(1, 4)
    _show(axes[0], img, "RGB", fontsize=10)
    for c, (ax, cname) in enumerate(zip(axes[1:], ("Red", "Green", "Blue"))):
        only = np.zeros_like(img)
        only[..., c] = img[..., c]
        _show(ax, only, f"{cname} channel (mean {img[..., c].mean():.2f})", fontsize=10)
    fig.suptitle(title or f"Image channels ({img.shape[0]}x{img.shape[1]} pixels)", fontsize=11)
    return _finish(fig, save_path)


def _display_only(t) -> bool:
    return type(t).__name__ in ("Normalize", "ToTensorV2", "ToTensor", "ToFloat")


def _pixels_from_output(out, normalize) -> np.ndarray:
    """A pipeline output (tensor CHW or array HWC, maybe normalised) -> HWC float in [0, 1]."""
    arr = out.detach().cpu().permute(1, 2, 0).numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    if normalize is not None and arr.dtype != np.uint8:
        # albumentations "standard" Normalize: x = (p - mean) / std with p in [0, 1]
        chw = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return to_hwc01(denormalize(chw, normalize.mean, normalize.std))[0]
    return to_hwc01(arr)[0]


def plot_augmentations(data, transform=None, *, n_images: int = 4, seed: int = 0,
                       save_path=None):
    """Each transform of an Albumentations pipeline alone (p=1), then the whole pipeline.

    ``data`` is a DataBundle (its train images and ``train_transform``) or images/ImageSource with
    ``transform`` an ``A.Compose``. Normalize/ToTensorV2 are display steps: they are not shown
    alone, and the full-pipeline row is de-normalised back to pixels. Rows are transforms,
    columns the same ``n_images`` images.
    """
    import albumentations as A

    if transform is None:
        transform = getattr(data, "train_transform", None)
        if transform is None:
            raise ValueError("pass transform= (an albumentations Compose) for these images.")
    if isinstance(data, np.ndarray | torch.Tensor):
        images = to_hwc01(data)
    else:
        images = to_hwc01(_source(data)[0])
    rng = _rng(seed)
    pick = rng.choice(len(images), size=min(n_images, len(images)), replace=False)
    originals = [(images[i] * 255).round().astype(np.uint8) for i in pick]
    steps = list(getattr(transform, "transforms", [transform]))
    normalize = next((t for t in steps if type(t).__name__ == "Normalize"), None)
    shown = [t for t in steps if not _display_only(t)]

    rows: list[tuple[str, list[np.ndarray]]] = [("original", [o / 255.0 for o in originals])]
    for j, t in enumerate(shown):
        alone = copy.deepcopy(t)
        alone.p = 1.0
        label = type(t).__name__
        try:
            pipe = A.Compose([alone], seed=seed + j)
            outs = [pipe(image=o)["image"] for o in originals]
        except (ValueError, RuntimeError, IndexError):  # e.g. a crop bigger than the raw image: apply after the earlier steps
            pipe = A.Compose([*copy.deepcopy(shown[:j]), alone], seed=seed + j)
            outs = [pipe(image=o)["image"] for o in originals]
            label += "\n(after previous)"
        rows.append((f"{label}\n(p={t.p:g})", [_pixels_from_output(o, None) for o in outs]))
    full = A.Compose(copy.deepcopy(steps), seed=seed + 1000)
    rows.append(("all together", [_pixels_from_output(full(image=o)["image"], normalize)
                                  for o in originals]))

    ncols = len(originals)
    fig = _figure(1.5 * ncols + 1.6, 1.5 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, outs) in enumerate(rows):
        for c, out in enumerate(outs):
            _show(axes[r, c], out)
            if c == 0:
                axes[r, c].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle("Augmentations: each transform alone (forced p=1), then the whole pipeline",
                 fontsize=11)
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------------------------
# training curves


def _curves(history) -> dict[str, list[float]]:
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if not isinstance(history, Mapping):
        raise TypeError(f"expected a History or a dict of lists; got {type(history).__name__}.")
    return {k: list(v) for k, v in history.items() if isinstance(v, Sequence | np.ndarray)}


def plot_history(history, *, title: str | None = None, save_path=None):
    """Train/validation/test loss and accuracy per epoch (History or dict with train_loss, test_acc...).

    The star marks the epoch best.pt holds: chosen on validation accuracy when the run has a
    validation split, else the peak test accuracy (labelled as chosen on the test set)."""
    h = _curves(history)
    if not any(h.get(k) for k in ("train_loss", "test_loss", "train_acc", "test_acc")):
        raise ValueError("the history has no train_loss/test_loss/train_acc/test_acc values yet.")
    fig = _figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, kind, unit in ((ax_loss, "loss", "cross-entropy per sample"), (ax_acc, "acc", "%")):
        for split, style in (("train", "-o"), ("val", "-^"), ("test", "-s")):
            ys = h.get(f"{split}_{kind}") or []
            if ys:
                xs = np.arange(1, len(ys) + 1)
                name = "validation" if split == "val" else split
                ax.plot(xs, ys, style, ms=3 if len(ys) < 40 else 0, label=f"{name} "
                        f"(last {ys[-1]:.3g}{'%' if kind == 'acc' else ''})")
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_ylabel(f"{'loss' if kind == 'loss' else 'accuracy'} ({unit})")
        ax.set_title("Loss" if kind == "loss" else "Accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    test_acc, val_acc = h.get("test_acc") or [], h.get("val_acc") or []
    if val_acc:
        best = int(np.argmax(val_acc))
        ax_acc.plot([best + 1], [val_acc[best]], "*", color="tab:red", ms=11, zorder=3,
                    label=f"chosen on validation: epoch {best + 1}\n(test {test_acc[best]:.2f}%)")
        ax_acc.legend(fontsize=9)
    elif test_acc:
        best = int(np.argmax(test_acc))
        ax_acc.plot([best + 1], [test_acc[best]], "*", color="tab:red", ms=11, zorder=3,
                    label=f"peak test {test_acc[best]:.2f}% @ epoch {best + 1}\n(chosen on the test set)")
        ax_acc.legend(fontsize=9)
    fig.suptitle(title or "Training curves", fontsize=12)
    return _finish(fig, save_path)


def plot_lr_finder(result, *, skip_start: int = 0, skip_end: int = 0, title: str | None = None,
                   save_path=None):
    """LR range test: loss against learning rate (log scale) with the suggestion marked.

    ``result`` has ``lrs``/``losses`` (and optionally ``suggestion``, ``method``), e.g.
    ``woollylib.scheduler.find_lr``'s result, or is a dict with "lr"/"loss" lists.
    """
    get = result.get if isinstance(result, Mapping) else (lambda k, d=None: getattr(result, k, d))
    lrs = list(get("lrs", None) or get("lr", None) or [])
    losses = list(get("losses", None) or get("loss", None) or [])
    if not lrs or len(lrs) != len(losses):
        raise ValueError(f"need equally long lrs and losses; got {len(lrs)} and {len(losses)}.")
    end = len(lrs) - skip_end if skip_end else len(lrs)
    lrs, losses = np.asarray(lrs[skip_start:end], float), np.asarray(losses[skip_start:end], float)
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    ax.plot(lrs, losses, lw=1.5, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    suggestion = get("suggestion", None)
    if suggestion is not None and np.isfinite(suggestion):
        i = int(np.argmin(np.abs(np.log(lrs) - np.log(suggestion))))
        method = get("method", None)
        ax.axvline(suggestion, color="tab:red", ls="--", lw=1)
        ax.plot([suggestion], [losses[i]], "o", color="tab:red", ms=8,
                label=f"suggested lr {suggestion:.2e}" + (f" ({method})" if method else ""))
    finite = losses[np.isfinite(losses)]
    if finite.size:  # keep the divergence tail from flattening the interesting part
        lo, hi = finite.min(), min(finite.max(), finite[0] * 2 if finite[0] > 0 else finite.max())
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.1 * (hi - lo + 1e-12))
    ax.legend(fontsize=9)
    ax.set_title(title or "LR range test")
    return _finish(fig, save_path)


def plot_lr_schedule(lrs, *, steps_per_epoch: int | None = None, title: str | None = None,
                     save_path=None):
    """Learning rate per optimiser step (a list, or a History's ``lr``)."""
    if hasattr(lrs, "lr") and not isinstance(lrs, Sequence):
        lrs = lrs.lr
    elif isinstance(lrs, Mapping):
        lrs = lrs.get("lr") or lrs.get("lrs") or []
    lrs = np.asarray(list(lrs), float)
    if lrs.size == 0:
        raise ValueError("no learning rates to plot: pass one value per optimiser step.")
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    x = np.arange(len(lrs), dtype=float)
    if steps_per_epoch:
        x = x / steps_per_epoch
    ax.plot(x, lrs, lw=1.5)
    peak = int(np.argmax(lrs))
    ax.plot([x[peak]], [lrs[peak]], "v", color="tab:red",
            label=f"max {lrs[peak]:.3g} at {'epoch' if steps_per_epoch else 'step'} {x[peak]:.3g}")
    ax.set_xlabel("epoch" if steps_per_epoch else "optimiser step")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0, top=1.1 * lrs.max() if lrs.max() > 0 else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or f"Learning-rate schedule ({len(lrs)} steps)")
    return _finish(fig, save_path)


def plot_optimizer_comparison(histories: Mapping, *, title: str | None = None, save_path=None):
    """Train/test loss and accuracy of several runs (``{"sgd": History, ...}``) on shared axes."""
    if not histories:
        raise ValueError("histories is empty: pass {optimizer name: History or dict}.")
    fig = _figure(10.5, 7)
    axes = fig.subplots(2, 2)
    panels = (("train_loss", "Train loss", "loss"), ("test_loss", "Test loss", "loss"),
              ("train_acc", "Train accuracy", "accuracy (%)"),
              ("test_acc", "Test accuracy", "accuracy (%)"))
    for ax, (key, name, ylabel) in zip(axes.ravel(), panels):
        for opt, hist in histories.items():
            ys = _curves(hist).get(key) or []
            if ys:
                ax.plot(np.arange(1, len(ys) + 1), ys, "-o", ms=3,
                        label=f"{opt} ({ys[-1]:.3g}{'%' if 'acc' in key else ''})")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Optimizer comparison (same initial weights; last value in brackets)",
                 fontsize=12)
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------------------------
# evaluation


def _misclassified(model_or_wrong, data, device, n, mean, std, classes):
    from . import metrics

    if hasattr(model_or_wrong, "true") and hasattr(model_or_wrong, "inputs"):
        wrong = model_or_wrong
    else:
        if data is None:
            raise ValueError("pass data (a DataBundle or test loader) with the model.")
        wrong = metrics.misclassified(model_or_wrong, data, device, mean=mean, std=std, limit=n,
                                      classes=classes)
    classes = _class_names(classes if classes is not None else
                           (getattr(wrong, "classes", None) or getattr(data, "classes", None)))
    shown = min(n, len(wrong))
    if shown < n:
        warnings.warn(f"asked for {n} misclassified images but only {len(wrong)} exist; "
                      f"showing all {len(wrong)}.", stacklevel=3)
    return wrong, classes, shown


def _empty(fig, text, save_path):
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    return _finish(fig, save_path)


def plot_misclassified(model_or_wrong, data=None, device=None, *, n: int = 10, ncols: int = 5,
                       mean=None, std=None, classes=None, save_path=None):
    """Grid of misclassified test images titled true, predicted and confidence.

    ``model_or_wrong`` is a model (with ``data``: DataBundle or test loader + mean/std) or the
    result of ``metrics.misclassified``. Fewer than ``n`` existing? all of them are shown (and a
    warning says how many exist).
    """
    wrong, classes, shown = _misclassified(model_or_wrong, data, device, n, mean, std, classes)
    if shown == 0:
        return _empty(_figure(5, 1.5), "No misclassified images: every test image is right.",
                      save_path)
    ncols = min(ncols, shown)
    fig = _figure(1.9 * ncols, 2.15 * math.ceil(shown / ncols) + 0.4)
    for ax, i in zip(_grid(fig, shown, ncols), range(shown)):
        _show(ax, wrong.images[i], f"true: {_name(classes, wrong.true[i])}\npred: "
              f"{_name(classes, wrong.pred[i])} ({100 * wrong.confidence[i]:.0f}%)")
    note = f" (asked for {n}; only {shown} exist)" if shown < n else ""
    fig.suptitle(f"{shown} misclassified images{note}", fontsize=11)
    return _finish(fig, save_path)


def plot_gradcam(model, data=None, device=None, *, stages: Sequence[str] | None = None,
                 n: int = 8, method: str = "gradcam", target: str = "pred", alpha: float = 0.5,
                 wrong=None, mean=None, std=None, classes=None, ncols: int | None = None, save_path=None):
    """Grad-CAM of misclassified images: first row the images, then one row per stage.

    ``target="pred"`` explains the (wrong) prediction, ``"true"`` the true class. ``wrong`` reuses a
    ``metrics.misclassified`` result instead of searching the test set again. ``ncols``: images
    per block of rows (a block = the images, then one row per stage); default all in one block.
    ``stages=None``: ``gradcam.default_stage`` (the last conv stage with a map larger than 1x1 at
    the images' size, for any model), named in the title.
    """
    from .gradcam import compute_cams, default_stage, overlay

    if target not in ("pred", "true"):
        raise ValueError(f"target must be 'pred' or 'true'; got {target!r}.")
    wrong, classes, shown = _misclassified(wrong if wrong is not None else model, data, device, n,
                                           mean, std, classes)
    if shown == 0:
        return _empty(_figure(5, 1.5), "No misclassified images to explain.", save_path)
    chosen = stages is None
    stages = [default_stage(model, wrong.inputs[:1])] if chosen else [stages] if isinstance(stages, str) else list(stages)
    cams = compute_cams(model, wrong.inputs[:shown], stages=stages, method=method,
                        targets=None if target == "pred" else wrong.true[:shown])
    per_block = shown if ncols is None else max(1, min(int(ncols), shown))
    blocks, rows = math.ceil(shown / per_block), len(stages) + 1
    fig = _figure(1.75 * per_block + 0.9, 1.8 * rows * blocks + 0.5)
    axes = fig.subplots(rows * blocks, per_block, squeeze=False)
    for i in range(shown):
        top, c = rows * (i // per_block), i % per_block
        _show(axes[top, c], wrong.images[i], f"true: {_name(classes, wrong.true[i])}\npred: "
              f"{_name(classes, wrong.pred[i])} ({100 * wrong.confidence[i]:.0f}%)")
        for r, stage in enumerate(cams, start=1):
            _show(axes[top + r, c], overlay(wrong.images[i], cams[stage][i], alpha=alpha))
    for b in range(blocks):
        for r, label in enumerate(["image", *cams]):
            axes[rows * b + r, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
    for i in range(shown, blocks * per_block):  # the unused places of the last block
        for r in range(rows):
            axes[rows * (i // per_block) + r, i % per_block].axis("off")
    sep = "\n" if per_block <= 4 else ", "  # narrow grids: two lines
    what = f"stage {stages[0]} (the default: the last with a map larger than 1x1)" if chosen else "one row per stage"
    fig.suptitle(f"{method} on misclassified images{sep}{what} "
                 f"(explaining the {'predicted' if target == 'pred' else 'true'} class)",
                 fontsize=11)
    return _finish(fig, save_path)


def plot_confusion_matrix(model_or_cm, data=None, device=None, *, classes=None, save_path=None):
    """Confusion matrix over the whole test set: counts and row-normalised (% of each true class).

    ``model_or_cm`` is a (K, K) count matrix (rows = true) or a model with ``data`` (a DataBundle
    or test loader): then every test batch is counted.
    """
    from . import metrics

    if isinstance(model_or_cm, torch.Tensor):
        model_or_cm = model_or_cm.detach().cpu().numpy()
    if isinstance(model_or_cm, np.ndarray | list) and np.asarray(model_or_cm).ndim == 2:
        cm = np.asarray(model_or_cm, dtype=np.int64)
    else:
        cm = metrics.confusion_matrix(model_or_cm, data, device)
    k = cm.shape[0]
    classes = _class_names(classes if classes is not None else getattr(data, "classes", None), k)
    total = int(cm.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(100.0 * cm / cm.sum(axis=1, keepdims=True))
    size = max(4.5, 0.5 * k + 2)
    fig = _figure(2 * size + 0.6, size)
    axes = fig.subplots(1, 2)
    for ax, mat, name, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "% of true class",
                                                              ".0f")):
        im = ax.imshow(mat, cmap="Blues", vmin=0)
        fig.colorbar(im, ax=ax, shrink=0.8, label=name)
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix ({name})")
        if k <= 25:
            thresh = mat.max() / 2 if mat.max() > 0 else 1
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center",
                            fontsize=7 if k > 12 else 8,
                            color="white" if mat[i, j] > thresh else "black")
    acc = 100.0 * np.trace(cm) / total if total else float("nan")
    fig.suptitle(f"Test set: N = {total} images, accuracy {acc:.2f}%", fontsize=12)
    fig.confusion_matrix = cm  # the counts shown, for reports and tests
    return _finish(fig, save_path)


def plot_per_class_accuracy(model_or_acc, data=None, device=None, *, classes=None, save_path=None):
    """Bar chart of accuracy (%) per true class, with the overall accuracy as a line.

    ``model_or_acc`` is per-class accuracies (K,) in %, a (K, K) confusion matrix, or a model with
    ``data`` (DataBundle or test loader).
    """
    from . import metrics

    overall = None
    if isinstance(model_or_acc, torch.Tensor):
        model_or_acc = model_or_acc.detach().cpu().numpy()
    arr = np.asarray(model_or_acc) if isinstance(model_or_acc, np.ndarray | list) else None
    if arr is not None and arr.ndim == 1:
        acc = arr.astype(float)
    else:
        cm = arr if arr is not None else metrics.confusion_matrix(model_or_acc, data, device)
        acc = metrics.per_class_accuracy(np.asarray(cm))
        overall = 100.0 * np.trace(cm) / max(1, np.sum(cm))
    k = len(acc)
    classes = _class_names(classes if classes is not None else getattr(data, "classes", None), k)
    fig = _figure(max(5.5, 0.6 * k + 1.5), 3.8)
    ax = fig.subplots()
    bars = ax.bar(range(k), np.nan_to_num(acc), color="tab:blue")
    ax.bar_label(bars, labels=[f"{a:.1f}" if np.isfinite(a) else "n/a" for a in acc], fontsize=8)
    if overall is not None:
        ax.axhline(overall, color="tab:red", ls="--", lw=1, label=f"overall {overall:.2f}%")
        ax.legend(fontsize=9, loc="upper right")
    ax.set_xticks(range(k), classes, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_xlabel("true class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("Per-class accuracy on the test set")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, save_path)


# ----------------------------------------------------------------------------------------------
# adversarial


def _probabilities(model, images) -> torch.Tensor:
    """Softmax of the model on ``images`` (eval mode, no gradients), on the CPU."""
    with evaluating(model), torch.no_grad():
        return model(images.to(model_device(model))).softmax(1).cpu()


def _draw_adversarial_columns(axes, labels, classes, probs, pixels, delta, cams) -> None:
    """One column per image: clean and adversarial predictions, the perturbation, the CAMs."""
    from .gradcam import overlay

    for c in range(len(labels)):
        y = int(labels[c])
        for r, (p, px) in enumerate(zip(probs, pixels)):
            pred = int(p[c].argmax())
            _show(axes[r, c], px[c], f"{'true: ' + _name(classes, y) + chr(10) if r == 0 else ''}"
                  f"pred: {_name(classes, pred)} ({100 * p[c, pred]:.0f}%)",
                  color="black" if pred == y else "tab:red")
        _show(axes[2, c], 0.5 + 0.5 * delta[c])
        if cams:
            _show(axes[3, c], overlay(pixels[0][c], cams["clean"][c]))
            _show(axes[4, c], overlay(pixels[1][c], cams["adv"][c]))


def plot_adversarial(model, images, labels, mean, std, *, epsilon: float = 8 / 255,
                     attack: str = "fgsm", adversarial=None, classes=None, stage=None,
                     method: str = "gradcam", n: int = 6, save_path=None, **attack_kw):
    """Clean vs adversarial images with predictions, the perturbation and Grad-CAM of each.

    Rows: clean (prediction), adversarial (prediction), perturbation (amplified to the full
    range), and, when ``stage`` is known, Grad-CAM of the clean and adversarial prediction.
    ``stage=None`` takes the model's last registered stage, else ``gradcam.default_stage`` (none
    when the model has no conv stage with a map larger than 1x1);
    ``adversarial`` reuses an attack result instead of running ``attack`` at ``epsilon``.
    """
    from . import adversarial as adv_mod
    from .gradcam import compute_cams, default_stage

    images, labels = images[:n], torch.as_tensor(labels).cpu()[:n]  # beside the CPU predictions
    n = len(images)
    if adversarial is None:
        if attack not in adv_mod.ATTACKS:
            raise ValueError(f"Unknown attack {attack!r}; choose one of {', '.join(adv_mod.ATTACKS)}.")
        adversarial = adv_mod.ATTACKS[attack](model, images, labels, epsilon, mean, std, **attack_kw)
    adversarial = adversarial[:n]
    p_clean, p_adv = _probabilities(model, images), _probabilities(model, adversarial)
    classes = _class_names(classes, p_clean.shape[1])
    px_clean = to_hwc01(denormalize(images.float().cpu(), mean, std))
    px_adv = to_hwc01(denormalize(adversarial.float().cpu(), mean, std))
    delta = px_adv - px_clean
    scale = max(float(np.abs(delta).max()), 1e-8)
    if stage is None and getattr(model, "stage_names", None):
        stage = list(model.stage_names)[-1]
    elif stage is None:
        with contextlib.suppress(ValueError):
            stage = default_stage(model, images)
    rows = ["clean", "adversarial", "perturbation"]
    cams = {}
    if stage is not None:
        cams["clean"] = compute_cams(model, images, stages=[stage], method=method)[str(stage)]
        cams["adv"] = compute_cams(model, adversarial, stages=[stage], method=method)[str(stage)]
        rows += [f"{method}\n{stage}\n(clean)", f"{method}\n{stage}\n(adversarial)"]
    fig = _figure(1.8 * n + 1.2, 1.9 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), n, squeeze=False)
    _draw_adversarial_columns(axes, labels, classes, (p_clean, p_adv), (px_clean, px_adv), delta / scale, cams)
    for r, label in enumerate(rows):
        axes[r, 0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    correct = p_clean.argmax(1) == labels
    fooled = int((correct & (p_adv.argmax(1) != labels)).sum())
    eps_txt = f"eps = {epsilon * 255:.1f}/255, " if epsilon is not None else ""
    fig.suptitle(f"{attack.upper()} adversarial examples ({eps_txt}perturbation x{0.5 / scale:.0f}): "
                 f"fooled {fooled} of {int(correct.sum())} correctly classified (red = wrong)",
                 fontsize=11)
    return _finish(fig, save_path)
