"""The notebook API: one call per step of a write-up, thin glue over the woollylib modules.

Usage (Colab: ``pip install woollylib``; runs on CUDA when there is one)::

    from woollylib import main
    device = main.select_device()                        # cuda > mps > cpu, printed
    data = main.download_data("cifar10", batch_size=512)  # loaders, classes, channel statistics
    main.show_random_samples(data)                        # every show_/plot_ returns a Figure
    main.show_augmentations(data)
    model = main.select_model("custom_resnet", device)    # prints the torchsummary table
    lr = main.max_lr(model, data)                         # LR range test: shows the curve, returns the lr
    history = main.train_test_loop(model, data, device, max_lr=lr, epochs=24, out_dir="runs/r9")
    main.show_accuracy_loss(history)
    main.plot_misclassified(model, data, device, no_misclf=10)
    main.plot_misclassified(model, data, device, grad_CAM=True, layers=["layer2", "layer3"])
    main.show_confusion_matrix(model, data, device)
    histories = main.compare_optimizers(model, data, device, epochs=3)
    main.show_adversarial(model, data, device, epsilon=8 / 255)
    main.write_report("runs/r9", model, data, device)      # runs/r9/report.md + PNGs

Figures are built outside pyplot's registry and never ``plt.show()``-n: in a notebook the returned
Figure is displayed once (as the cell's value; use ``display(fig)`` for several in one cell), in a
script pass ``save_path=`` to write a PNG. ``max_lr`` and ``compare_optimizers`` return values, so
they display their figure themselves when running in a notebook (``show=``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .device import evaluating, model_device, select_device

__all__ = [
    "compare_optimizers",
    "download_data",
    "max_lr",
    "plot_misclassified",
    "select_device",
    "select_model",
    "show_accuracy_loss",
    "show_adversarial",
    "show_augmentations",
    "show_class_samples",
    "show_confusion_matrix",
    "show_image_rgb",
    "show_lr_schedule",
    "show_per_class_accuracy",
    "show_random_samples",
    "train_test_loop",
    "write_report",
]

# digits are not CIFAR photos: flips turn 2 into a mirror glyph and a 16 px cutout hides the digit,
# so their default augmentation is a +-2 px shift and a small rotation.
DIGITS_AUGMENT = [("pad_crop", {"size": 32, "padding": 2}), ("rotate", {"limit": (-10.0, 10.0)})]


# ----------------------------------------------------------------------------------------------
# notebook display


def _kernel():
    """The running IPython kernel shell, or None in a plain script / terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def _figure_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _displayable(fig):
    """Make a returned Figure render as one PNG in a Jupyter kernel, even if pyplot was never loaded.

    (Without pyplot's inline backend, IPython knows no PNG formatter for Figure and prints only
    ``<Figure size ...>``.) An already registered formatter (the inline backend's) is kept.
    """
    shell = _kernel()
    if shell is not None:
        from matplotlib.figure import Figure

        png = shell.display_formatter.formatters["image/png"]
        try:
            png.lookup_by_type(Figure)
        except KeyError:
            png.for_type(Figure, _figure_png)
    return fig


def _show(fig, show: bool | None) -> None:
    """Display ``fig`` now (for functions that return something else): in a kernel by default."""
    if show is None:
        show = _kernel() is not None
    if show and _kernel() is not None:
        from IPython.display import display

        display(_displayable(fig))


def _alias(name: str, value, alias: str, alias_value):
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ValueError(f"got {name}={value!r} and {alias}={alias_value!r}; pass only one of them")
    return alias_value


def _model_device(model: nn.Module, device) -> torch.device:
    return model_device(model, device)


def _stages(model: nn.Module) -> list[str]:
    from .models import get_stages

    try:
        return list(get_stages(model))
    except ValueError:
        return []


def _check_layers(model: nn.Module, layers: Sequence[str], argument: str = "layers") -> list[str]:
    """Validate stage names up front: a missing one raises ValueError listing the stages it has."""
    from .utils.gradcam import resolve_stage

    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError(f"{argument} is empty; name at least one stage of the model: {_stages(model)}")
    for layer in layers:
        try:
            resolve_stage(model, layer)
        except ValueError:
            have = ", ".join(_stages(model)) or "none declared (use submodule names such as 'features.7')"
            raise ValueError(
                f"{type(model).__name__} has no stage {layer!r}; the stages it has are: {have}. "
                f"Pass some of them as {argument}=..."
            ) from None
    return layers


def default_layers(model: nn.Module, count: int = 2) -> list[str]:
    """The model's last ``count`` named stages (where Grad-CAM is most telling), e.g. layer3, layer4."""
    stages = _stages(model)
    if not stages:
        raise ValueError(
            f"{type(model).__name__} declares no stage_names; pass layers=[...] with submodule names "
            "(e.g. 'features.7')"
        )
    return stages[-count:]


# ----------------------------------------------------------------------------------------------
# data


def download_data(
    name="cifar10",
    batch_size: int = 512,
    *,
    root: str | os.PathLike = "data",
    augment: Any = "auto",
    loader: str = "albumentations",
    seed: int | None = 0,
    device=None,
    verbose: bool = True,
    **kwargs,
):
    """Load a dataset ("cifar10" downloads ~163 MB once into ``root``; "digits" is offline).

    Returns the ``DataBundle``: ``train_loader``/``test_loader`` (batches of normalised float
    images (B, 3, H, W) and int64 labels), ``classes``, ``mean``/``std`` (0-1 scale), ``stats``.
    ``augment="auto"``: the CIFAR preset (pad-4 crop, flip, 16 px cutout) for photos, a small shift
    and rotation for digits; ``False`` for none, or a ``build_transforms`` spec. Other keywords go to
    ``woollylib.preloading.get_data`` (``batch_size``, ``loader="device"``, ``test_fraction``...).
    """
    from .preloading import get_data

    if isinstance(augment, str) and augment == "auto":
        augment = DIGITS_AUGMENT if name == "digits" and loader == "albumentations" else None
    if loader == "device" and augment is not None:
        raise ValueError(
            "augment= only applies to loader='albumentations'; the device loader takes "
            "loader_kw={'crop_pad': 4, 'flip': True, 'cutout': 16}"
        )
    extra = {"augment": augment} if loader == "albumentations" else {}
    return get_data(name, batch_size=batch_size, root=root, loader=loader, seed=seed, device=device,
                    verbose=verbose, **extra, **kwargs)


def show_random_samples(data, n: int = 16, *, ncols: int = 8, seed: int | None = None,
                        split: str = "train", save_path=None):
    """``n`` random images with their class names (Figure)."""
    from .utils import visualize as viz

    return _displayable(viz.plot_random_samples(data, n=n, ncols=ncols, seed=seed, split=split,
                                                save_path=save_path))


def show_class_samples(data, per_class: int = 6, *, seed: int | None = None, split: str = "train",
                       save_path=None):
    """One row of ``per_class`` examples for each class (Figure)."""
    from .utils import visualize as viz

    return _displayable(viz.plot_class_samples(data, per_class=per_class, seed=seed, split=split,
                                               save_path=save_path))


def show_image_rgb(data, index: int = 0, *, split: str = "train", save_path=None):
    """An image and its R, G, B channels. ``data``: DataBundle/ImageSource (image ``index``) or an image."""
    from .utils import visualize as viz

    source = getattr(data, f"{split}_source", None) or (data if hasattr(data, "labels") else None)
    if source is not None:
        if not -len(source.images) <= index < len(source.images):
            raise ValueError(f"index {index} is out of range: the {split} split has {len(source.images)} images")
        classes = getattr(source, "classes", None)
        label = int(source.labels[index])
        name = classes[label] if classes and 0 <= label < len(classes) else str(label)
        title = f"{split} image {index} ({name}) and its channels"
        return _displayable(viz.plot_image_channels(source.images[index], title=title, save_path=save_path))
    return _displayable(viz.plot_image_channels(data, save_path=save_path))


def show_augmentations(data, transform=None, *, n_images: int = 4, seed: int = 0, save_path=None):
    """Each train transform alone, then the whole pipeline, on the same images (Figure)."""
    from .utils import visualize as viz

    if transform is None and getattr(data, "train_transform", None) is None:
        raise ValueError(
            "this DataBundle has no albumentations pipeline (loader='device' augments on the device); "
            "pass transform=woollylib.preloading.train_transforms(data.mean, data.std)"
        )
    return _displayable(viz.plot_augmentations(data, transform, n_images=n_images, seed=seed,
                                               save_path=save_path))


# ----------------------------------------------------------------------------------------------
# model and learning rate


def select_model(name: str = "custom_resnet", device=None, num_classes: int | None = None, *,
                 data=None, seed: int | None = None, summary: bool = True,
                 input_size: Sequence[int] | None = None, **options) -> nn.Module:
    """Build a registered model (``woollylib.models.list_models()``), move it to ``device``, print its summary.

    ``num_classes``: default the number of classes of ``data`` when given, else 10. ``options``
    go to the model (``norm="gn"``...). ``seed`` seeds Python/NumPy/torch first, for the same
    initial weights on every run. The recipe is kept on the model (``model.woollylib_spec``)
    so a run directory can rebuild it for its report.
    """
    from .models import get_model
    from .models import summary as print_summary

    if num_classes is None:
        num_classes = len(data.classes) if data is not None else 10
    device = select_device(verbose=False) if device is None else _model_device(nn.Identity(), device)
    if seed is not None:
        from .device import seed_everything

        seed_everything(seed)
    model = get_model(name, num_classes=num_classes, **options).to(device)
    if summary:
        if input_size is None:
            input_size = (3, 32, 32)
            if data is not None and getattr(data, "train_source", None) is not None:
                h, w = data.train_source.images.shape[1:3]
                input_size = (3, h, w)
        print_summary(model, input_size=tuple(input_size), device=device)
    return model


def max_lr(model: nn.Module, data, device=None, *, optimizer: str = "sgd", start_lr: float = 1e-7,
           end_lr: float = 10.0, num_iter: int = 100, suggestion: str = "valley", show: bool | None = None,
           save_path=None, **optimizer_kw) -> float:
    """LR range test on ``data``'s train loader; plots the curve and returns the suggested lr.

    Use the result as ``max_lr`` of the one-cycle schedule. The model and its weights are left as
    they were. The curve is displayed in a notebook (``show=None``) and written to ``save_path``.
    """
    from .scheduler import find_lr
    from .utils import visualize as viz

    device = _model_device(model, device)
    model.to(device)
    loader = data.train_loader if hasattr(data, "train_loader") else data
    if optimizer == "sgd":
        optimizer_kw.setdefault("momentum", 0.9)
    result = find_lr(model, loader, optimizer, device=device, start_lr=start_lr, end_lr=end_lr,
                     num_iter=num_iter, suggestion=suggestion, **optimizer_kw)
    fig = viz.plot_lr_finder(result, save_path=save_path)
    _show(fig, show)
    return float(result.suggestion)


# ----------------------------------------------------------------------------------------------
# training


def train_test_loop(model: nn.Module, data, device=None, epochs: int | None = None,
                    max_lr: float | None = None, *, EPOCHS: int | None = None, **kwargs):
    """Train and test for ``epochs`` (alias ``EPOCHS``) epochs with one-cycle up to ``max_lr``; return the History.

    Thin wrapper of ``woollylib.training.train_test_loop`` (every ``Trainer`` option works:
    ``optimizer``, ``weight_decay``, ``nesterov``, ``scheduler``, ``amp``, ``ricap_beta``,
    ``label_smoothing``, ``out_dir``, ``resume``, ``overwrite``, ``seed``...). ``device`` defaults
    to the model's device. With ``out_dir`` the run directory also gets ``metrics.json`` (whole
    test set: accuracy, per-class accuracy, confusion matrix), like ``woollylib train``.
    """
    from . import training
    from .report import write_metrics

    epochs = _alias("epochs", epochs, "EPOCHS", EPOCHS)
    device = _model_device(model, device)
    history = training.train_test_loop(model, data, device, epochs=epochs, max_lr=max_lr, **kwargs)
    out_dir = kwargs.get("out_dir")
    if out_dir is not None and len(history):
        write_metrics(out_dir, model, data, device, history, tta_flip=bool(kwargs.get("tta_flip", False)))
    return history


def show_accuracy_loss(history, *, title: str | None = None, save_path=None):
    """Train/test loss and accuracy per epoch (Figure). ``history``: History, dict, or a run directory."""
    from .utils import visualize as viz

    return _displayable(viz.plot_history(_history(history), title=title, save_path=save_path))


def show_lr_schedule(history, *, save_path=None):
    """The learning rate of every optimiser step of a run (Figure)."""
    from .utils import visualize as viz

    h = _history(history)
    epochs = len(h.train_loss) if hasattr(h, "train_loss") else 0
    per_epoch = len(h.lr) // epochs if epochs and len(h.lr) % epochs == 0 else None
    return _displayable(viz.plot_lr_schedule(h.lr, steps_per_epoch=per_epoch, save_path=save_path))


def _history(history):
    from .training import History

    if isinstance(history, str | os.PathLike):
        path = Path(history)
        return History.load(path / "history.json" if path.is_dir() else path)
    if isinstance(history, dict):
        return History.from_dict(history)
    return history


# ----------------------------------------------------------------------------------------------
# evaluation and explanation


def plot_misclassified(model: nn.Module, data, device=None, no_misclf: int = 10, *, grad_CAM: bool = False,
                       layers: Sequence[str] | None = None, method: str = "gradcam", target: str = "pred",
                       ncols: int = 5, save_path=None, **kwargs):
    """The first ``no_misclf`` misclassified test images (true, predicted, confidence) as a Figure.

    ``grad_CAM=True`` adds one row of ``method`` heatmaps per stage in ``layers`` (default: the
    model's last two stages), explaining the predicted class (``target="true"``: the true one).
    Fewer misclassified images than asked: all of them are shown. Aliases: ``n``, ``gradcam``.
    """
    from .utils import visualize as viz

    no_misclf = kwargs.pop("n", no_misclf)  # aliases
    grad_CAM = bool(kwargs.pop("gradcam", grad_CAM))
    if kwargs:
        raise TypeError(f"plot_misclassified() got unexpected keyword arguments {sorted(kwargs)}")
    if isinstance(no_misclf, bool) or not isinstance(no_misclf, int) or no_misclf < 1:
        raise ValueError(f"no_misclf must be a positive integer, got {no_misclf!r}")
    device = _model_device(model, device)
    if not grad_CAM:
        return _displayable(viz.plot_misclassified(model, data, device, n=no_misclf, ncols=ncols,
                                                   save_path=save_path))
    layers = _check_layers(model, layers if layers is not None else default_layers(model))
    return _displayable(viz.plot_gradcam(model, data, device, stages=layers, n=no_misclf, method=method,
                                         target=target, save_path=save_path))


def show_confusion_matrix(model: nn.Module, data, device=None, *, save_path=None):
    """Confusion matrix over the whole test set, counts and % of each true class (Figure)."""
    from .utils import visualize as viz

    return _displayable(viz.plot_confusion_matrix(model, data, _model_device(model, device),
                                                  classes=getattr(data, "classes", None),
                                                  save_path=save_path))


def show_per_class_accuracy(model: nn.Module, data, device=None, *, save_path=None):
    """Test accuracy of each class, with the overall accuracy as a line (Figure)."""
    from .utils import visualize as viz

    return _displayable(viz.plot_per_class_accuracy(model, data, _model_device(model, device),
                                                    classes=getattr(data, "classes", None),
                                                    save_path=save_path))


def compare_optimizers(model: nn.Module, data, device=None, optimizers: Sequence[str] = ("sgd", "adam", "adamw",
                       "rmsprop", "adagrad"), epochs: int | None = None, *, EPOCHS: int | None = None,
                       show: bool | None = None, save_path=None, **kwargs) -> dict:
    """Train a copy of ``model`` per optimizer from the same initial weights; plot and return the histories.

    ``epochs`` (alias ``EPOCHS``, default 3) per optimizer.
    Returns ``{optimizer name: History}``; ``model`` itself is not changed. The comparison figure is
    displayed in a notebook (``show=None``) and written to ``save_path``. Other keywords go to
    ``woollylib.utils.compare.compare_optimizers`` (``lrs={"adam": 1e-3}``, ``scheduler``...).
    """
    from .utils import visualize as viz
    from .utils.compare import compare_optimizers as compare

    epochs = _alias("epochs", epochs, "EPOCHS", EPOCHS)
    epochs = 3 if epochs is None else epochs
    histories = compare(model, data, optimizers=optimizers, epochs=epochs,
                        device=_model_device(model, device), **kwargs)
    fig = viz.plot_optimizer_comparison(histories, save_path=save_path)
    _show(fig, show)
    return histories


def show_adversarial(model: nn.Module, data, device=None, epsilon: float = 8 / 255, *, attack: str = "fgsm",
                     n: int = 6, layer: str | None = None, method: str = "gradcam", save_path=None,
                     **attack_kw):
    """Clean vs adversarial test images (``attack`` "fgsm"/"pgd", L-inf ``epsilon`` in [0, 1] pixel units).

    Uses the first ``n`` correctly classified images of the test set; rows: predictions, the
    perturbation, Grad-CAM at ``layer`` (default the last stage) of the clean and adversarial image.
    """
    from .utils import visualize as viz

    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0 (a pixel budget on [0, 1], e.g. 8/255), got {epsilon}")
    device = _model_device(model, device)
    if layer is not None:
        _check_layers(model, [layer], "layer")
    images, labels = _correct_examples(model, data, device, n)
    return _displayable(viz.plot_adversarial(model, images, labels, data.mean, data.std, epsilon=epsilon,
                                             attack=attack, classes=getattr(data, "classes", None),
                                             stage=layer, method=method, n=n, save_path=save_path,
                                             **attack_kw))


@torch.no_grad()
def _correct_examples(model, data, device, n):
    """Up to ``n`` test images the model classifies correctly (padded with wrong ones if too few)."""
    right, wrong = [], []
    with evaluating(model):
        for images, labels in data.test_loader:
            pred, labels = model(images.to(device)).argmax(1).cpu(), labels.cpu()  # device loader: CUDA labels
            for i in range(len(labels)):
                (right if pred[i] == labels[i] else wrong).append((images[i], labels[i]))
            if len(right) >= n:
                break
    chosen = (right + wrong)[:n]
    if not chosen:
        raise ValueError("the test loader yielded no images to attack")
    return torch.stack([x for x, _ in chosen]), torch.stack([y for _, y in chosen]).long()


def write_report(run_dir, model: nn.Module | None = None, data=None, device=None, **kwargs) -> Path:
    """Write ``run_dir/report.md`` with the metrics table and every figure as a PNG; return its path.

    See ``woollylib.report.write_report`` (the in-memory ``model``/``data`` are used as they are).
    """
    from .report import write_report as _write

    return _write(run_dir, model, data, device, **kwargs)
