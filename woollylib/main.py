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
    main.compare_runs("runs/ablation")                   # compare.md of a sweep (woollylib compare)
    main.show_adversarial(model, data, device, epsilon=8 / 255)
    main.write_report("runs/r9", model, data, device)      # runs/r9/report.md + PNGs
    main.app("runs/r9")                                   # a Gradio demo page of the run (port=7860)

Every figure is pyplot's current figure when it is returned (``plt.savefig``/``plt.show()`` act on
it) and is displayed exactly once in a notebook: as the cell's value, after ``plt.show()``, or in a
loop; nothing blocks in a script (pass ``save_path=`` to write a PNG). ``max_lr`` and ``compare_optimizers`` return values, so
they display their figure themselves when running in a notebook (``show=``).

Each function here has one signature. The course notebooks' call shapes (``train_test_loop(model,
device, train_loader, test_loader, EPOCHS, ...)``, loaders + class names, the four lists of
``show_accuracy_loss``) and the course's helper names are translated by ``woollylib.course``
(``@course.accepts``); the data a body gets is a DataBundle or a ``course.Data`` view of what was passed.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import course
from .config import (
    DEFAULT_MODEL,  # select_model(device): the ResNet-9 layout of the 24-epoch recipe
)
from .course import (  # the course notebooks' helper names (aliases live in course.py only)
    display_cifar_data_samples,
    display_cifar_misclassified_data,
    get_cifar_statistics,
    get_misclassified_data,
    select_cuda,
    visualize_cifar_augmentation,
    visualize_confusion_matrix,
)
from .device import evaluating, model_device, select_device
from .export import (  # a trained run as a portable file, and back (woollylib.export)
    export,
    load_model,
)
from .predict import (
    predict,  # class names with probabilities from a run folder (woollylib.predict)
)

__all__ = [
    "DEFAULT_MODEL",
    "app",
    "compare_optimizers",
    "compare_runs",
    "display_cifar_data_samples",
    "display_cifar_misclassified_data",
    "download_data",
    "export",
    "get_cifar_statistics",
    "get_misclassified_data",
    "load_model",
    "max_lr",
    "plot_misclassified",
    "predict",
    "select_cuda",
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
    "visualize_cifar_augmentation",
    "visualize_confusion_matrix",
    "write_report",
]

# digits are not CIFAR photos: flips turn 2 into a mirror glyph and a 16 px cutout hides the digit,
# so their default augmentation is a +-2 px shift and a small rotation.
DIGITS_AUGMENT = [("pad_crop", {"size": 32, "padding": 2}), ("rotate", {"limit": (-10.0, 10.0)})]


# ----------------------------------------------------------------------------------------------
# notebook display


def _kernel():
    """The running IPython kernel shell, or None in a plain script / terminal IPython."""
    from .utils.visualize import _kernel as kernel

    return kernel()


def _displayable(fig):
    """Make a returned Figure render as one PNG in a Jupyter kernel, even if pyplot was never loaded."""
    from .utils.visualize import displayable

    shell = _kernel()
    return displayable(fig, shell) if shell is not None else fig


def _show(fig, show: bool | None) -> None:
    """Display ``fig`` now (for functions that return something else): in a kernel by default."""
    if show is None:
        show = _kernel() is not None
    if show and _kernel() is not None:
        from IPython.display import display

        display(_displayable(fig))


def _model_device(model: nn.Module, device) -> torch.device:
    return model_device(model, device)


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
    It also unpacks as ``train_data, test_data, train_loader, test_loader, classes = download_data(...)``.
    ``augment="auto"``: the CIFAR preset (pad-4 crop, flip, 16 px cutout) for photos, a small shift
    and rotation for digits; ``False`` for none, or a ``build_transforms`` spec. Other keywords go to
    ``woollylib.preloading.get_data`` (``batch_size``, ``loader="device"``, ``test_fraction``...).
    """
    from .preloading import get_data

    if "dataloader_args" in kwargs:  # the course's DataLoader keywords
        kwargs = course.download_kwargs(kwargs.pop("dataloader_args"), {"batch_size": batch_size, **kwargs})
        batch_size = kwargs.pop("batch_size")
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


@course.accepts(course.samples("n"))
def show_random_samples(data, n: int = 16, *, ncols: int = 8, seed: int | None = None, split: str = "train",
                        save_path=None):
    """``n`` random images with their class names (Figure).

    ``data``: a DataBundle (its ``split``), or a loader/dataset (``show_random_samples(train_loader,
    classes)``); ``mean``/``std`` default to the bundle's or the Normalize of the loader's transform.
    """
    from .utils import visualize as viz

    return _displayable(viz.plot_random_samples(data.for_plots(split, max(n, 256)), n=n, ncols=ncols, seed=seed,
                                                split=split, save_path=save_path))


@course.accepts(course.samples("per_class"))
def show_class_samples(data, per_class: int = 6, *, seed: int | None = None, split: str = "train", save_path=None):
    """One row of ``per_class`` examples for each class (Figure); ``data`` as in show_random_samples."""
    from .utils import visualize as viz

    return _displayable(viz.plot_class_samples(data.for_plots(split, 2048), per_class=per_class, seed=seed,
                                               split=split, save_path=save_path))


@course.accepts(course.image_rgb)
def show_image_rgb(data, index: int = 0, *, split: str = "train", save_path=None):
    """An image and its R, G, B channels. ``data``: DataBundle/ImageSource/loader/dataset (image ``index``) or an image."""
    from .utils import visualize as viz

    if data.image is not None:
        return _displayable(viz.plot_image_channels(data.image, save_path=save_path))
    images, labels, names = data.pixels(split, index + 1 if index >= 0 else 10**9)
    if not -len(images) <= index < len(images):
        raise ValueError(f"index {index} is out of range: the {split} split has {len(images)} images")
    label = int(labels[index])
    name = names[label] if names and 0 <= label < len(names) else str(label)
    title = f"{split} image {index} ({name}) and its channels"
    image = images[index]
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] in (1, 3):
        image = image.unsqueeze(0)
    return _displayable(viz.plot_image_channels(image, title=title, save_path=save_path))


@course.accepts(course.augmentations)
def show_augmentations(data, transform=None, *, n_images: int = 4, seed: int = 0, save_path=None):
    """Each train transform alone, then the whole pipeline, on the same images (Figure).

    ``data``: a DataBundle, a loader/dataset whose dataset has the raw images (woollylib's, or
    torchvision's ``.data``) and an Albumentations ``.transform``, or uint8 images (N, H, W, 3).
    """
    from .utils import visualize as viz

    return _displayable(viz.plot_augmentations(data, transform, n_images=n_images, seed=seed, save_path=save_path))


# ----------------------------------------------------------------------------------------------
# model and learning rate


@course.accepts(course.model_choice)
def select_model(name: str = DEFAULT_MODEL, device=None, num_classes: int | None = None, *, data=None,
                 seed: int | None = None, summary: bool = True, input_size: Sequence[int] | None = None,
                 **options) -> nn.Module:
    """Build a registered model (``woollylib.models.list_models()``), move it to ``device``, print its summary.

    ``select_model(device)`` builds the default model, ``DEFAULT_MODEL`` = "custom_resnet" (the
    ResNet-9 layout); ``select_model("resnet18", device)`` any other. ``num_classes``: default the
    number of classes of ``data`` when given, else 10. ``options`` go to the model
    (``norm="gn"``...). ``seed`` seeds Python/NumPy/torch first, for the same initial weights on
    every run. The recipe is kept on the model (``model.woollylib_spec``) so a run directory can
    rebuild it for its report.
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


@course.accepts(course.lr_test)
def max_lr(model: nn.Module, data, device=None, *, optimizer: str | torch.optim.Optimizer = "sgd", criterion=None,
           start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100, suggestion: str | None = None,
           show: bool | None = None, save_path=None, **optimizer_kw) -> float:
    """LR range test on the train loader; plots the curve and returns the suggested lr.

    ``max_lr(model, data)``, ``max_lr(model, train_loader, device)`` or with the course's objects
    ``max_lr(model, train_loader, optimizer, criterion, device)`` (any order after the loader).
    ``optimizer``: a name (default "sgd", momentum 0.9) or an optimizer without a scheduler yet;
    ``suggestion``: the rule (default ``woollylib.scheduler.DEFAULT_SUGGESTION``, see the README).
    Use the result as ``max_lr`` of the one-cycle schedule. The model and its weights are left as
    they were. The curve is displayed in a notebook (``show=None``) and written to ``save_path``.
    This body gets the train loader (``woollylib.course`` takes it from a DataBundle or a pair).
    """
    from .scheduler import DEFAULT_SUGGESTION, find_lr
    from .utils import visualize as viz

    device = _model_device(model, device)
    model.to(device)
    if optimizer == "sgd":
        optimizer_kw.setdefault("momentum", 0.9)
    result = find_lr(model, data, optimizer, criterion, device=device, start_lr=start_lr, end_lr=end_lr,
                     num_iter=num_iter, suggestion=suggestion or DEFAULT_SUGGESTION, **optimizer_kw)
    fig = viz.plot_lr_finder(result, save_path=save_path)
    _show(fig, show)
    return float(result.suggestion)


# ----------------------------------------------------------------------------------------------
# training


@course.accepts(course.training)
def train_test_loop(model: nn.Module, data, device=None, *, epochs: int | None = None, max_lr: float | None = None,
                    optimizer=None, scheduler=None, criterion=None, **kwargs):
    """Train and test for ``epochs`` (alias ``EPOCHS``) epochs; return the History.

    ``data``: a DataBundle or ``(train_loader, test_loader)``. The course's call shapes work too
    (``woollylib.course``: the arguments after the model recognised by type, in any order)::

        train_test_loop(model, data, device, max_lr=0.05, epochs=24)                # a DataBundle
        train_test_loop(model, device, train_loader, test_loader, 0.05, EPOCHS)     # the PyTorch examples' order
        train_test_loop(model, device, train_loader, test_loader, EPOCHS, optimizer, scheduler, criterion)

    An int is the number of epochs (no default: pass it), a float ``max_lr`` (the one-cycle peak),
    an optimizer instance is trained as it is, a scheduler instance (OneCycleLR/CyclicLR: stepped per
    batch; ReduceLROnPlateau: per epoch on the validation loss (the training loss without a split); others: per epoch) replaces the one-cycle
    schedule, a loss module or callable is the ``criterion``. Every ``Trainer`` option works as a
    keyword (``weight_decay``, ``nesterov``, ``amp``, ``ricap_beta``, ``label_smoothing``,
    ``out_dir``, ``resume``, ``seed``...); ``device`` defaults to the model's. With ``out_dir`` the
    run directory also gets ``metrics.json`` (whole test set), like ``woollylib train``.
    """
    from . import training

    objects = {"optimizer": optimizer, "scheduler": scheduler, "criterion": criterion}
    extra = {k: v for k, v in objects.items() if v is not None}
    return training.train_test_loop(model, data, _model_device(model, device), epochs=epochs, max_lr=max_lr,
                                    **extra, **kwargs)


@course.accepts(course.curves)
def show_accuracy_loss(history, *, title: str | None = None, save_path=None):
    """Train/test loss and accuracy per epoch (Figure).

    ``show_accuracy_loss(history)`` (a History, its dict, or a run directory) or the four lists
    ``show_accuracy_loss(train_losses, train_acc, test_losses, test_acc)``; train lists recorded
    per batch (k values per test value) are averaged per epoch.
    """
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
    from .run import HISTORY
    from .training import History

    if isinstance(history, str | os.PathLike):
        path = Path(history)
        return History.load(path / HISTORY if path.is_dir() else path)
    if isinstance(history, dict):
        return History.from_dict(history)
    return history


# ----------------------------------------------------------------------------------------------
# evaluation and explanation


def _stages(model: nn.Module) -> list[str]:
    from .models import get_stages

    try:
        return list(get_stages(model))
    except ValueError:
        return []


def _check_layers(model: nn.Module, layers, argument: str = "layers") -> list:
    """Validate stages up front (names or modules): a missing one raises ValueError listing the stages."""
    from .utils.gradcam import resolve_stage

    layers = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not layers:
        raise ValueError(f"{argument} is empty; name at least one stage of the model: {_stages(model)}")
    for layer in layers:
        if isinstance(layer, nn.Module):
            if not any(layer is m for m in model.modules()):
                raise ValueError(f"{argument}: the {type(layer).__name__} passed is not a part of this "
                                 f"{type(model).__name__}; pass e.g. model.layer4[-1] of the same model")
            continue
        try:
            resolve_stage(model, layer)
        except ValueError:
            import difflib

            from .utils.gradcam import list_stages

            stages = _stages(model) or list_stages(model)
            close = difflib.get_close_matches(str(layer), stages, n=1)
            raise ValueError(
                f"{type(model).__name__} has no stage {layer!r}; the stages it has are: {', '.join(stages)}. "
                f"Pass some of them as {argument}=..." + (f" (the closest name is {close[0]!r})" if close else "")
            ) from None
    return layers


def default_layers(model: nn.Module, count: int = 2) -> list[str]:
    """The model's last ``count`` named stages (where Grad-CAM is most telling), e.g. layer3, layer4; for a
    model that declares none (torchvision's), its last conv stage with spatial extent (``default_stage``)."""
    from .utils.gradcam import default_stage

    stages = _stages(model)
    return stages[-count:] if stages else [default_stage(model)]


@course.accepts(course.misclassified)
def plot_misclassified(model: nn.Module, data, device=None, *, no_misclf: int | None = None, plot_size=None,
                       grad_CAM: bool = False, layers=None, method: str = "gradcam", target: str = "pred",
                       ncols: int | None = None, save_path=None):
    """The first ``no_misclf`` (default 10) misclassified test images (true, predicted, confidence) as a Figure.

    ``plot_misclassified(model, data, device)`` or ``plot_misclassified(model, test_loader, classes,
    device, no_misclf=20, plot_size=(4, 5), grad_CAM=True)`` (positional arguments after the data
    are recognised by type). ``plot_size``: (rows, columns) of the grid (default 5 columns).
    ``grad_CAM=True`` adds one row of ``method`` heatmaps per stage in ``layers`` (names such as
    "layer3" or modules such as ``model.layer4[-1]``; default the model's last two stages) under
    each row of images, explaining the predicted class (``target="true"``: the true one). Fewer
    misclassified images than asked: all of them are shown. Aliases: ``n``, ``gradcam``.
    """
    from .utils import visualize as viz

    if plot_size is not None:
        if (not isinstance(plot_size, (tuple, list)) or len(plot_size) != 2
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in plot_size)):
            raise ValueError(f"plot_size is (rows, columns) of the grid, e.g. (4, 5); got {plot_size!r}")
        rows, cols = plot_size
        no_misclf = rows * cols if no_misclf is None else no_misclf
        if no_misclf > rows * cols:
            raise ValueError(f"plot_size={tuple(plot_size)} holds {rows * cols} images but no_misclf={no_misclf}; "
                             f"use plot_size=({-(-no_misclf // cols)}, {cols})")
        ncols = cols if ncols is None else ncols
    no_misclf = 10 if no_misclf is None else no_misclf
    if isinstance(no_misclf, bool) or not isinstance(no_misclf, int) or no_misclf < 1:
        raise ValueError(f"no_misclf must be a positive integer, got {no_misclf!r}")
    if target not in ("pred", "true"):
        raise ValueError(f"target must be 'pred' (explain the prediction) or 'true' (the true class), got {target!r}")
    device = _model_device(model, device)
    test = data.loader("test")
    mean, std = data.stats("test")
    if not grad_CAM:
        return _displayable(viz.plot_misclassified(model, test, device, n=no_misclf, ncols=ncols or 5, mean=mean,
                                                   std=std, classes=data.classes, save_path=save_path))
    layers = _check_layers(model, layers if layers is not None else default_layers(model))
    return _displayable(viz.plot_gradcam(model, test, device, stages=layers, n=no_misclf, method=method,
                                         target=target, mean=mean, std=std, classes=data.classes, ncols=ncols,
                                         save_path=save_path))


@course.accepts(course.model_and_data)
def show_confusion_matrix(model: nn.Module, data, device=None, *, save_path=None):
    """Confusion matrix over the whole test set, counts and % of each true class (Figure).

    ``show_confusion_matrix(model, data, device)`` or ``(model, test_loader, classes, device)``.
    """
    from .utils import visualize as viz

    return _displayable(viz.plot_confusion_matrix(model, data.loader("test"), _model_device(model, device),
                                                  classes=data.classes, save_path=save_path))


@course.accepts(course.model_and_data)
def show_per_class_accuracy(model: nn.Module, data, device=None, *, save_path=None):
    """Test accuracy of each class, with the overall accuracy as a line (Figure); arguments as show_confusion_matrix."""
    from .utils import visualize as viz

    return _displayable(viz.plot_per_class_accuracy(model, data.loader("test"), _model_device(model, device),
                                                    classes=data.classes, save_path=save_path))


@course.accepts(course.optimizers)
def compare_optimizers(model: nn.Module, data, device=None, optimizers: Sequence[str] = ("sgd", "adam", "adamw",
                       "rmsprop", "adagrad"), epochs: int = 3, *, show: bool | None = None, save_path=None,
                       **kwargs) -> dict:
    """Train a copy of ``model`` per optimizer from the same initial weights; plot and return the histories.

    ``data``: a DataBundle or ``(train_loader, test_loader)``; ``epochs`` (alias ``EPOCHS``, default 3)
    per optimizer. Returns ``{optimizer name: History}``; ``model`` itself is not changed. The
    comparison figure is displayed in a notebook (``show=None``) and written to ``save_path``. With
    ``out_dir=`` every optimizer's run is an ordinary run folder ``out_dir/optimizer-<name>/seed-<seed>``
    and ``out_dir/compare.md`` compares them (baseline: the first optimizer), as ``compare_runs`` does.
    Other keywords go to ``woollylib.experiments.optimizers.compare_optimizers`` (``lrs={"adam": 1e-3}``,
    ``scheduler``, ``seed``, ``overwrite``...).
    """
    from .experiments.optimizers import compare_optimizers as compare
    from .utils import visualize as viz

    histories = compare(model, data, optimizers=optimizers, epochs=epochs, device=_model_device(model, device),
                        **kwargs)
    fig = viz.plot_optimizer_comparison(histories, save_path=save_path)
    _show(fig, show)
    if kwargs.get("out_dir") is not None and histories:
        from .experiments import compare as write_compare

        write_compare([kwargs["out_dir"]], baseline=f"optimizer-{str(next(iter(histories))).lower()}",
                      verbose=kwargs.get("verbose", True))
    return histories


@course.accepts(course.run_paths)
def compare_runs(*paths, out=None, baseline: str | None = None, verbose: bool = True) -> Path:
    """Write ``compare.md`` (and its PNGs) for run folders and sweep folders; return its path.

    ``compare_runs("runs/ablation")`` or ``compare_runs("runs/a", "runs/b", out="runs/cmp",
    baseline="a")``: configurations as mean ± std over seeds, the paired difference to the baseline
    with its 95% interval and a verdict, curves with a band over seeds, per-class accuracy
    (``woollylib.experiments.compare``; ``woollylib compare`` from the shell).
    """
    from .experiments import compare as write_compare

    return write_compare(list(paths), out, baseline=baseline, verbose=verbose)


@course.accepts(course.adversarial)
def show_adversarial(model: nn.Module, data, device=None, epsilon: float = 8 / 255, *, attack: str = "fgsm",
                     n: int = 6, layer: str | None = None, method: str = "gradcam", save_path=None, **attack_kw):
    """Clean vs adversarial test images (``attack`` "fgsm"/"pgd", L-inf ``epsilon`` in [0, 1] pixel units).

    ``show_adversarial(model, data, device, 8/255)`` or ``(model, test_loader, classes, device)``.
    Uses the first ``n`` correctly classified images of the test set; rows: predictions, the
    perturbation, Grad-CAM at ``layer`` (default the last stage) of the clean and adversarial image.
    """
    from .utils import visualize as viz

    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0 (a pixel budget on [0, 1], e.g. 8/255), got {epsilon}")
    device = _model_device(model, device)
    if layer is not None:
        _check_layers(model, [layer], "layer")
    mean, std = data.stats("test")
    images, labels = _correct_examples(model, data.loader("test"), device, n)
    return _displayable(viz.plot_adversarial(model, images, labels, mean, std, epsilon=epsilon,
                                             attack=attack, classes=data.classes, stage=layer, method=method, n=n,
                                             save_path=save_path, **attack_kw))


@torch.no_grad()
def _correct_examples(model, test_loader, device, n):
    """Up to ``n`` test images the model classifies correctly (padded with wrong ones if too few)."""
    right, wrong = [], []
    with evaluating(model):
        for images, labels in test_loader:
            pred, labels = model(images.to(device)).argmax(1).cpu(), labels.cpu()  # device loader: CUDA labels
            for i in range(len(labels)):
                (right if pred[i] == labels[i] else wrong).append((images[i], labels[i]))
            if len(right) >= n:
                break
    chosen = (right + wrong)[:n]
    if not chosen:
        raise ValueError("the test loader yielded no images to attack")
    return torch.stack([x for x, _ in chosen]), torch.stack([y for _, y in chosen]).long()


def app(run, *, port: int = 7860, share: bool = False, host: str = "127.0.0.1", weights: str | None = None,
        device=None, n_examples: int = 10, n_misclassified: int = 12, block: bool = True, space=None):
    """Serve the Gradio demo page of the run folder ``run`` (upload, top-k, Grad-CAM, misclassified gallery,
    metrics) on ``host:port``; ``block=False`` returns the running gr.Blocks (``.close()`` stops it).
    ``space=DIR`` writes a folder for a hosted Space instead and returns its path. ``weights``: "best" |
    "last" (default best.pt when the run has it). Needs ``pip install 'woollylib[app]'``."""
    from .app import launch_app, write_space

    if space is not None:
        return write_space(run, space, weights, device, n_examples, n_misclassified)
    return launch_app(run, port=port, share=share, host=host, weights=weights, device=device, n_examples=n_examples,
                      n_misclassified=n_misclassified, block=block)


def write_report(run_dir, model: nn.Module | None = None, data=None, device=None, **kwargs) -> Path:
    """Write ``run_dir/report.md`` with the metrics table and every figure as a PNG; return its path.

    See ``woollylib.report.write_report`` (the in-memory ``model``/``data`` are used as they are).
    """
    from .report import write_report as _write

    return _write(run_dir, model, data, device, **kwargs)

