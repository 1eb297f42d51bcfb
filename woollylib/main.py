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

Every figure is pyplot's current figure when it is returned (``plt.savefig``/``plt.show()`` act on
it) and is displayed exactly once in a notebook: as the cell's value, after ``plt.show()``, or in a
loop; nothing blocks in a script (pass ``save_path=`` to write a PNG). ``max_lr`` and ``compare_optimizers`` return values, so
they display their figure themselves when running in a notebook (``show=``).
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .device import evaluating, model_device, select_device

__all__ = [
    "DEFAULT_MODEL",
    "compare_optimizers",
    "compare_runs",
    "display_cifar_data_samples",
    "download_data",
    "get_cifar_statistics",
    "get_misclassified_data",
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
    "visualize_cifar_augmentation",
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


def _alias(name: str, value, alias: str, alias_value):
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ValueError(f"got {name}={value!r} and {alias}={alias_value!r}; pass only one of them")
    return alias_value


def _model_device(model: nn.Module, device) -> torch.device:
    return model_device(model, device)


# ----------------------------------------------------------------------------------------------
# call shapes: what was passed is recognised by its type

_DEVICE_NAME = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?|auto)$")


def _is_device(x) -> bool:
    return isinstance(x, torch.device) or (isinstance(x, str) and bool(_DEVICE_NAME.match(x.lower())))


def _is_bundle(x) -> bool:
    return hasattr(x, "train_loader") and hasattr(x, "test_loader")


def _is_classes(x) -> bool:
    """Class names: a dict {index: name} or a non-empty list/tuple of strings."""
    if isinstance(x, Mapping):
        return len(x) > 0 and all(isinstance(v, str) for v in x.values())
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, str) for v in x)


def _is_loader(x) -> bool:
    """A loader or dataset: any iterable/indexable of (images, labels) that is not a value of another kind."""
    if x is None or isinstance(x, (str, bytes, Mapping, torch.Tensor, np.ndarray, nn.Module, numbers.Number)):
        return False
    if _is_classes(x) or _is_bundle(x):
        return False
    if isinstance(x, (tuple, list)) and len(x) == 2 and all(_is_loader(v) for v in x):
        return False  # a (train_loader, test_loader) pair
    return hasattr(x, "__iter__") or hasattr(x, "__getitem__")


def _is_pair(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and all(_is_loader(v) for v in x)


def _is_scheduler(x) -> bool:
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    return isinstance(x, (LRScheduler, ReduceLROnPlateau)) or (
        callable(getattr(x, "step", None)) and isinstance(getattr(x, "optimizer", None), torch.optim.Optimizer))


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_float(x) -> bool:
    return isinstance(x, (float, np.floating))


def _describe(x) -> str:
    if isinstance(x, (str, numbers.Number, torch.device)) or x is None:
        return repr(x)
    if _is_classes(x):
        return f"the class names {_short(x)}"
    return f"a {type(x).__name__}"


def _short(x) -> str:
    text = repr(list(x.values()) if isinstance(x, Mapping) else list(x))
    return text if len(text) < 60 else text[:56] + "...]"


def _class_list(classes):
    if classes is None:
        return None
    if isinstance(classes, Mapping):
        return [str(classes[k]) for k in sorted(classes)]
    return [str(c) for c in classes]


def _sort_args(fname: str, args: tuple, slots: dict, given: dict, calls: str, first: int = 2) -> dict:
    """Assign positional ``args`` to the keyword ``slots`` ({name: type test}) by their type.

    ``given``: the keywords passed (None = not given); ``first``: the position of ``args[0]`` in the
    call, counting from 1 (for messages); None values are skipped. A value no slot takes, or a second value for a filled slot, is a TypeError that says
    what was passed where and shows ``calls``.
    """
    out = dict(given)
    origin = {k: "keyword" for k, v in given.items() if v is not None}
    for pos, value in enumerate(args, start=first):
        if value is None:
            continue
        name = next((k for k, test in slots.items() if test(value)), None)
        if name is None:
            raise TypeError(f"{fname}() got {_describe(value)} as argument {pos}, which is none of: "
                            f"{', '.join(slots)}. Write: {calls}")
        if out.get(name) is not None:
            raise TypeError(f"{fname}() got two values for {name}: {_describe(out[name])} ({origin[name]}) and "
                            f"{_describe(value)} (argument {pos}). Write: {calls}")
        out[name], origin[name] = value, f"argument {pos}"
    return out


# ----------------------------------------------------------------------------------------------
# data from a DataBundle, a loader (any iterable of batches) or a dataset


class _Data:
    """What the plots need, read from a DataBundle, a (train, test) pair, or one loader/dataset."""

    def __init__(self, fname: str, data, classes=None, mean=None, std=None):
        self.fname, self.bundle, self.given = fname, data if _is_bundle(data) else None, data
        if self.bundle is None and not (_is_pair(data) or _is_loader(data)):
            raise TypeError(f"{fname}() needs a DataBundle (main.download_data), a DataLoader or a dataset as "
                            f"its data; got {_describe(data)}")
        if classes is not None and not _is_classes(classes):
            raise TypeError(f"{fname}() got classes={_describe(classes)}; pass the class names as a list or tuple "
                            "of strings (e.g. data.classes)")
        self.classes = _class_list(classes)
        if self.classes is None:
            from .preloading.walk import classes_of

            self.classes = _class_list(getattr(self.bundle, "classes", None) or classes_of(self.loader("test")))
        self._mean, self._std = mean, std

    def loader(self, split: str):
        if self.bundle is not None:
            return getattr(self.bundle, f"{split}_loader")
        if _is_pair(self.given):
            return self.given[0 if split == "train" else 1]
        return self.given

    def stats(self, split: str = "test"):
        """(mean, std) of the Normalize the images went through; a clear error when unknown."""
        if self._mean is not None and self._std is not None:
            return tuple(self._mean), tuple(self._std)
        from .preloading.walk import NO_NORMALIZE, normalize_stats

        found = normalize_stats(self.bundle if self.bundle is not None else self.loader(split))
        if found == NO_NORMALIZE:
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # pixels already
        if found is None:
            raise ValueError(
                f"{self.fname}() cannot tell how the images of {_describe(self.loader(split))} were normalised "
                "(no transform with a Normalize step on its dataset); pass mean=(r, g, b), std=(r, g, b), the "
                "Normalize statistics on [0, 1] (e.g. woollylib.preloading.CIFAR10_MEAN/CIFAR10_STD)")
        return found

    def source(self, split: str):
        """(raw images NHWC, labels) of the split when they can be read without the loader, else None."""
        if self.bundle is not None and getattr(self.bundle, f"{split}_source", None) is not None:
            src = getattr(self.bundle, f"{split}_source")
            return src.images, np.asarray(src.labels)
        loader = self.loader(split)
        dataset = getattr(loader, "dataset", loader)
        src = getattr(dataset, "source", None)
        if src is not None and hasattr(src, "images") and hasattr(src, "labels"):
            return src.images, np.asarray(src.labels)
        images, labels = getattr(dataset, "data", None), getattr(dataset, "targets", None)
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3 and labels is not None:
            return images, np.asarray(labels)  # torchvision CIFAR10-like datasets
        return None

    def pixels(self, split: str, limit: int):
        """(images in [0, 1] NHWC or raw uint8, labels, classes) for the sample plots."""
        raw = self.source(split)
        if raw is not None:
            return raw[0], raw[1], self.classes
        loader = self.loader(split)
        batches = _batches(loader, limit, self.fname)
        images = torch.cat([b[0] for b in batches])[:limit].float().cpu()
        labels = torch.cat([torch.as_tensor(b[1]) for b in batches])[:limit].cpu()
        if images.ndim != 4:
            raise ValueError(f"{self.fname}() needs image batches (B, C, H, W); {_describe(loader)} gave "
                             f"{tuple(images.shape)}")
        mean, std = self.stats(split)
        from .utils.metrics import denormalize

        return denormalize(images, mean, std), labels.numpy(), self.classes

    def for_plots(self, split: str, limit: int):
        """What ``utils.visualize``'s sample plots take: the bundle itself, or an (images, labels, classes) tuple."""
        if self.bundle is not None and (self.given is not self.bundle or self.classes is None
                                        or self.classes == _class_list(self.bundle.classes)):
            return self.bundle
        return self.pixels(split, limit)


def _batches(loader, limit: int, fname: str) -> list:
    """Batches (images, labels) from a loader, or items from a dataset, until ``limit`` images."""
    out, count = [], 0
    is_dataset = not hasattr(loader, "batch_size") and hasattr(loader, "__getitem__") and hasattr(loader, "__len__")
    items = (loader[i] for i in range(len(loader))) if is_dataset else iter(loader)
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(f"{fname}() needs a loader of (images, labels) batches; it yielded {_describe(item)}")
        images, labels = item[0], item[1]
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{fname}() needs tensor images (end the transform with ToTensorV2 / ToTensor); "
                            f"got {_describe(images)}")
        if is_dataset:
            images, labels = images.unsqueeze(0), torch.as_tensor([int(labels)])
        out.append((images, labels))
        count += len(images)
        if count >= limit:
            break
    if not out:
        raise ValueError(f"{fname}(): the loader yielded no images")
    return out


def _test_data(data, args):
    """``(model, device, loader, ...)``: put the data first again."""
    if _is_device(data) and args and (_is_bundle(args[0]) or _is_loader(args[0]) or _is_pair(args[0])):
        data, args = args[0], (data, *args[1:])  # (model, device, loader, ...)
    return data, args


def _pair_or_bundle(fname: str, data):
    if _is_bundle(data) or _is_pair(data):
        return data
    raise TypeError(f"{fname}() needs the train and the test data: a DataBundle or (train_loader, test_loader); "
                    f"got {_describe(data)}")


# ----------------------------------------------------------------------------------------------
# data

from .config import (
    DEFAULT_MODEL,  # select_model(device): the ResNet-9 layout of the 24-epoch recipe
)


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


def _count_and_classes(fname, classes, count, count_name):
    """``show_x(data, classes, n)`` and ``show_x(data, n, classes)`` both: sort the two by type."""
    if _is_int(classes) and (count is None or _is_classes(count)):
        classes, count = count, classes
    if count is not None and (not _is_int(count) or count < 1):
        raise ValueError(f"{fname}() {count_name} must be a positive integer, got {count!r}")
    return classes, count


def show_random_samples(data, classes=None, n: int | None = None, *, ncols: int = 8, seed: int | None = None,
                        split: str = "train", mean=None, std=None, save_path=None):
    """``n`` (default 16) random images with their class names (Figure).

    ``data``: a DataBundle (its ``split``), or a loader/dataset (``show_random_samples(train_loader,
    classes)``); ``mean``/``std`` default to the bundle's or the Normalize of the loader's transform.
    """
    from .utils import visualize as viz

    classes, n = _count_and_classes("show_random_samples", classes, n, "n")
    n = 16 if n is None else n
    d = _Data("show_random_samples", data, classes, mean, std)
    return _displayable(viz.plot_random_samples(d.for_plots(split, max(n, 256)), n=n, ncols=ncols, seed=seed,
                                                split=split, save_path=save_path))


def show_class_samples(data, classes=None, per_class: int | None = None, *, seed: int | None = None,
                       split: str = "train", mean=None, std=None, save_path=None):
    """One row of ``per_class`` (default 6) examples for each class (Figure); ``data`` as in show_random_samples."""
    from .utils import visualize as viz

    classes, per_class = _count_and_classes("show_class_samples", classes, per_class, "per_class")
    per_class = 6 if per_class is None else per_class
    d = _Data("show_class_samples", data, classes, mean, std)
    return _displayable(viz.plot_class_samples(d.for_plots(split, 2048), per_class=per_class, seed=seed,
                                               split=split, save_path=save_path))


def show_image_rgb(data, index: int = 0, classes=None, *, split: str = "train", mean=None, std=None,
                   save_path=None):
    """An image and its R, G, B channels. ``data``: DataBundle/ImageSource/loader/dataset (image ``index``) or an image."""
    from .utils import visualize as viz

    if _is_classes(index) and (classes is None or _is_int(classes)):
        index, classes = (0 if classes is None else classes), index
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return _displayable(viz.plot_image_channels(data, save_path=save_path))
    if hasattr(data, "images") and hasattr(data, "labels") and not _is_bundle(data):
        images, labels, names = data.images, np.asarray(data.labels), _class_list(classes or data.classes)
    else:
        if not _is_int(index):
            raise TypeError(f"show_image_rgb() index must be an integer, got {_describe(index)}")
        d = _Data("show_image_rgb", data, classes, mean, std)
        images, labels, names = d.pixels(split, index + 1 if index >= 0 else 10**9)
    if not -len(images) <= index < len(images):
        raise ValueError(f"index {index} is out of range: the {split} split has {len(images)} images")
    label = int(labels[index])
    name = names[label] if names and 0 <= label < len(names) else str(label)
    title = f"{split} image {index} ({name}) and its channels"
    image = images[index]
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] in (1, 3):
        image = image.unsqueeze(0)
    return _displayable(viz.plot_image_channels(image, title=title, save_path=save_path))


def show_augmentations(data, transform=None, *, n_images: int = 4, seed: int = 0, save_path=None):
    """Each train transform alone, then the whole pipeline, on the same images (Figure).

    ``data``: a DataBundle, a loader/dataset whose dataset has the raw images (woollylib's, or
    torchvision's ``.data``) and an Albumentations ``.transform``, or uint8 images (N, H, W, 3).
    """
    from .utils import visualize as viz

    if isinstance(data, (np.ndarray, torch.Tensor)):
        if transform is None:
            raise ValueError("show_augmentations(images, transform=...) needs the albumentations Compose to show")
        return _displayable(viz.plot_augmentations(data, transform, n_images=n_images, seed=seed,
                                                   save_path=save_path))
    if _is_bundle(data):
        if transform is None and getattr(data, "train_transform", None) is None:
            raise ValueError(
                "this DataBundle has no albumentations pipeline (loader='device' augments on the device); "
                "pass transform=woollylib.preloading.train_transforms(data.mean, data.std)"
            )
        return _displayable(viz.plot_augmentations(data, transform, n_images=n_images, seed=seed,
                                                   save_path=save_path))
    from .preloading.walk import datasets_in, transforms_of

    d = _Data("show_augmentations", data)
    raw = d.source("train")
    if transform is None:
        transform = next((t for ds in datasets_in(d.loader("train")) for t in transforms_of(ds)
                          if hasattr(t, "transforms")), None)
    if raw is None or transform is None:
        raise ValueError(
            f"show_augmentations() cannot find the raw images and the albumentations pipeline of "
            f"{_describe(data)}; pass a DataBundle, or show_augmentations(images_uint8_NHWC, transform=compose)")
    return _displayable(viz.plot_augmentations(raw[0], transform, n_images=n_images, seed=seed,
                                               save_path=save_path))


# ----------------------------------------------------------------------------------------------
# model and learning rate


def select_model(name: str | torch.device | None = None, device=None, num_classes: int | None = None, *,
                 data=None, seed: int | None = None, summary: bool = True,
                 input_size: Sequence[int] | None = None, **options) -> nn.Module:
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

    if _is_device(name) or (name is None and device is not None):
        if device is not None and not _is_int(device):
            raise TypeError(f"select_model() got the device {_describe(name)} first and then {_describe(device)}; "
                            f"write select_model(device) or select_model('{DEFAULT_MODEL}', device)")
        if _is_int(device) and num_classes is None:
            num_classes = device
        name, device = DEFAULT_MODEL, name
    if name is None:
        name = DEFAULT_MODEL
    if not isinstance(name, str):
        raise TypeError(f"select_model() takes a model name (e.g. '{DEFAULT_MODEL}') or a device first, got "
                        f"{_describe(name)}; write select_model('{DEFAULT_MODEL}', device)")
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


def max_lr(model: nn.Module, data, *args, device=None, optimizer: str | torch.optim.Optimizer | None = None,
           criterion=None, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
           suggestion: str | None = None, show: bool | None = None, save_path=None, **optimizer_kw) -> float:
    """LR range test on the train loader; plots the curve and returns the suggested lr.

    ``max_lr(model, data)``, ``max_lr(model, train_loader, device)`` or with the course's objects
    ``max_lr(model, train_loader, optimizer, criterion, device)`` (any order after the loader).
    ``optimizer``: a name (default "sgd", momentum 0.9) or an optimizer without a scheduler yet;
    ``suggestion``: the rule (default ``woollylib.scheduler.DEFAULT_SUGGESTION``, see the README).
    Use the result as ``max_lr`` of the one-cycle schedule. The model and its weights are left as
    they were. The curve is displayed in a notebook (``show=None``) and written to ``save_path``.
    """
    from .scheduler import DEFAULT_SUGGESTION, find_lr
    from .utils import visualize as viz

    calls = "max_lr(model, data)  or  max_lr(model, train_loader, optimizer, criterion, device)"
    got = _sort_args("max_lr", args, {
        "device": _is_device, "optimizer": lambda x: isinstance(x, (torch.optim.Optimizer, str)),
        "criterion": lambda x: isinstance(x, nn.Module) or (callable(x) and not _is_loader(x)),
    }, {"device": device, "optimizer": optimizer, "criterion": criterion}, calls, first=3)
    device, optimizer, criterion = got["device"], got["optimizer"] or "sgd", got["criterion"]
    if _is_device(data) and args and _is_loader(args[0]):
        raise TypeError(f"max_lr() got the device {_describe(data)} before the loader; write: {calls}")
    device = _model_device(model, device)
    model.to(device)
    loader = data.train_loader if _is_bundle(data) else (data[0] if _is_pair(data) else data)
    if not _is_loader(loader):
        raise TypeError(f"max_lr() needs the train data (a DataBundle or the train loader) second, got "
                        f"{_describe(data)}; write: {calls}")
    if optimizer == "sgd":
        optimizer_kw.setdefault("momentum", 0.9)
    result = find_lr(model, loader, optimizer, criterion, device=device, start_lr=start_lr, end_lr=end_lr,
                     num_iter=num_iter, suggestion=suggestion or DEFAULT_SUGGESTION, **optimizer_kw)
    fig = viz.plot_lr_finder(result, save_path=save_path)
    _show(fig, show)
    return float(result.suggestion)


# ----------------------------------------------------------------------------------------------
# training

_TRAIN_CALLS = ("train_test_loop(model, data, device, max_lr=0.05, epochs=24)  or  "
                "train_test_loop(model, device, train_loader, test_loader, 0.05, epochs=24)")


def train_test_loop(model: nn.Module, *args, epochs: int | None = None, max_lr: float | None = None,
                    EPOCHS: int | None = None, device=None, optimizer=None, scheduler=None, criterion=None,
                    **kwargs):
    """Train and test for ``epochs`` (alias ``EPOCHS``) epochs; return the History.

    Both call shapes work, recognised by the arguments' types (any order after the model)::

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

    if not isinstance(model, nn.Module):
        raise TypeError(f"train_test_loop() takes the model first, got {_describe(model)}; write: {_TRAIN_CALLS}")
    loaders = [a for a in args if _is_loader(a)]
    others = tuple(None if _is_loader(a) else a for a in args)  # keeps the positions for messages
    got = _sort_args("train_test_loop", others, {
        "data": lambda x: _is_bundle(x) or _is_pair(x), "device": _is_device, "epochs": _is_int,
        "max_lr": _is_float, "scheduler": _is_scheduler,
        "optimizer": lambda x: isinstance(x, torch.optim.Optimizer),
        "criterion": lambda x: isinstance(x, nn.Module) or callable(x),
    }, {"data": None, "device": device, "epochs": _alias("epochs", epochs, "EPOCHS", EPOCHS), "max_lr": max_lr,
        "scheduler": scheduler, "optimizer": optimizer, "criterion": criterion}, _TRAIN_CALLS)
    data = got["data"]
    if loaders:
        if data is not None or len(loaders) != 2:
            what = f"{len(loaders)} loader(s)" + (" and a DataBundle" if data is not None else "")
            raise TypeError(f"train_test_loop() got {what}; pass either the DataBundle or the train and the test "
                            f"loader (in that order). Write: {_TRAIN_CALLS}")
        data = tuple(loaders)
    if data is None:
        raise TypeError(f"train_test_loop() got no data; write: {_TRAIN_CALLS}")
    if got["epochs"] is None and not kwargs.get("resume"):
        raise TypeError("train_test_loop() needs the number of epochs (there is no default): pass epochs=24 (or "
                        f"EPOCHS=24); write: {_TRAIN_CALLS}")
    device = _model_device(model, got["device"])
    extra = {k: got[k] for k in ("optimizer", "scheduler", "criterion") if got[k] is not None}
    return training.train_test_loop(model, data, device, epochs=got["epochs"], max_lr=got["max_lr"], **extra, **kwargs)


def show_accuracy_loss(history, train_acc=None, test_losses=None, test_acc=None, *, title: str | None = None,
                       save_path=None):
    """Train/test loss and accuracy per epoch (Figure).

    ``show_accuracy_loss(history)`` (a History, its dict, or a run directory) or the four lists
    ``show_accuracy_loss(train_losses, train_acc, test_losses, test_acc)``; train lists recorded
    per batch (k values per test value) are averaged per epoch.
    """
    from .utils import visualize as viz

    lists = (history, train_acc, test_losses, test_acc)
    if any(v is not None for v in lists[1:]):
        if any(v is None for v in lists):
            raise TypeError("show_accuracy_loss() takes a History, or the four lists: "
                            "show_accuracy_loss(train_losses, train_acc, test_losses, test_acc)")
        history = _history_from_lists(*lists)
    return _displayable(viz.plot_history(_history(history), title=title, save_path=save_path))


def _history_from_lists(train_losses, train_acc, test_losses, test_acc) -> dict:
    def values(name, xs):
        try:
            return [float(x.item() if hasattr(x, "item") else x) for x in xs]
        except (TypeError, ValueError):
            raise TypeError(f"show_accuracy_loss(): {name} must be a list of numbers, got {_describe(xs)}") from None

    out = {k: values(k, v) for k, v in (("train_losses", train_losses), ("train_acc", train_acc),
                                        ("test_losses", test_losses), ("test_acc", test_acc))}
    epochs = len(out["test_losses"]) or len(out["test_acc"])
    for key in ("train_losses", "train_acc"):
        xs = out[key]
        if epochs and len(xs) != epochs:
            if len(xs) % epochs:
                raise ValueError(f"show_accuracy_loss(): {key} has {len(xs)} values but the test lists {epochs}; "
                                 "pass one value per epoch (or per batch, the same number of batches each epoch)")
            k = len(xs) // epochs
            out[key] = [float(np.mean(xs[i * k:(i + 1) * k])) for i in range(epochs)]
    return {"train_loss": out["train_losses"], "train_acc": out["train_acc"], "test_loss": out["test_losses"],
            "test_acc": out["test_acc"]}


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


_MISCLF_CALLS = ("plot_misclassified(model, data, device, no_misclf=10)  or  "
                 "plot_misclassified(model, test_loader, classes, device, no_misclf=20, plot_size=(4, 5))")


def plot_misclassified(model: nn.Module, data, *args, no_misclf: int | None = None, plot_size=None,
                       grad_CAM: bool = False, layers=None, method: str = "gradcam", target: str = "pred",
                       ncols: int | None = None, device=None, classes=None, mean=None, std=None, save_path=None,
                       **kwargs):
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

    given = {"device": device, "classes": classes, "no_misclf": kwargs.pop("n", no_misclf)}  # aliases
    grad_CAM = bool(kwargs.pop("gradcam", grad_CAM))
    if kwargs:
        raise TypeError(f"plot_misclassified() got unexpected keyword arguments {sorted(kwargs)}")
    data, args = _test_data(data, args)
    got = _sort_args("plot_misclassified", args, {"classes": _is_classes, "device": _is_device,
                                                  "no_misclf": _is_int}, given, _MISCLF_CALLS, first=3)
    no_misclf = got["no_misclf"]
    if plot_size is not None:
        if (not isinstance(plot_size, (tuple, list)) or len(plot_size) != 2
                or not all(_is_int(v) and v > 0 for v in plot_size)):
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
    device = _model_device(model, got["device"])
    d = _Data("plot_misclassified", data, got["classes"], mean, std)
    test = d.loader("test")
    mean, std = d.stats("test")
    if not grad_CAM:
        return _displayable(viz.plot_misclassified(model, test, device, n=no_misclf, ncols=ncols or 5, mean=mean,
                                                   std=std, classes=d.classes, save_path=save_path))
    layers = _check_layers(model, layers if layers is not None else default_layers(model))
    return _displayable(viz.plot_gradcam(model, test, device, stages=layers, n=no_misclf, method=method,
                                         target=target, mean=mean, std=std, classes=d.classes, ncols=ncols,
                                         save_path=save_path))


_MODEL_DATA_CALLS = "{f}(model, data, device)  or  {f}(model, test_loader, classes, device)"


def _model_data_args(fname, model, data, args, device, classes):
    calls = _MODEL_DATA_CALLS.format(f=fname)
    given = {"device": device, "classes": classes}
    data, args = _test_data(data, args)
    got = _sort_args(fname, args, {"classes": _is_classes, "device": _is_device}, given, calls, first=3)
    return _Data(fname, data, got["classes"]), _model_device(model, got["device"])


def show_confusion_matrix(model: nn.Module, data, *args, device=None, classes=None, save_path=None):
    """Confusion matrix over the whole test set, counts and % of each true class (Figure).

    ``show_confusion_matrix(model, data, device)`` or ``(model, test_loader, classes, device)``.
    """
    from .utils import visualize as viz

    d, device = _model_data_args("show_confusion_matrix", model, data, args, device, classes)
    return _displayable(viz.plot_confusion_matrix(model, d.loader("test"), device, classes=d.classes,
                                                  save_path=save_path))


def show_per_class_accuracy(model: nn.Module, data, *args, device=None, classes=None, save_path=None):
    """Test accuracy of each class, with the overall accuracy as a line (Figure); arguments as show_confusion_matrix."""
    from .utils import visualize as viz

    d, device = _model_data_args("show_per_class_accuracy", model, data, args, device, classes)
    return _displayable(viz.plot_per_class_accuracy(model, d.loader("test"), device, classes=d.classes,
                                                    save_path=save_path))


def compare_optimizers(model: nn.Module, data, device=None, optimizers: Sequence[str] = ("sgd", "adam", "adamw",
                       "rmsprop", "adagrad"), epochs: int | None = None, *, EPOCHS: int | None = None,
                       show: bool | None = None, save_path=None, **kwargs) -> dict:
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

    if _is_device(data) and (_is_bundle(device) or _is_pair(device)):
        data, device = device, data  # (model, device, data)
    data = _pair_or_bundle("compare_optimizers", data)
    epochs = _alias("epochs", epochs, "EPOCHS", EPOCHS)
    epochs = 3 if epochs is None else epochs
    histories = compare(model, data, optimizers=optimizers, epochs=epochs,
                        device=_model_device(model, device), **kwargs)
    fig = viz.plot_optimizer_comparison(histories, save_path=save_path)
    _show(fig, show)
    if kwargs.get("out_dir") is not None and histories:
        from .experiments import compare as write_compare

        write_compare([kwargs["out_dir"]], baseline=f"optimizer-{str(next(iter(histories))).lower()}",
                      verbose=kwargs.get("verbose", True))
    return histories


def compare_runs(*paths, out=None, baseline: str | None = None, verbose: bool = True) -> Path:
    """Write ``compare.md`` (and its PNGs) for run folders and sweep folders; return its path.

    ``compare_runs("runs/ablation")`` or ``compare_runs("runs/a", "runs/b", out="runs/cmp",
    baseline="a")``: configurations as mean ± std over seeds, the paired difference to the baseline
    with its 95% interval and a verdict, curves with a band over seeds, per-class accuracy
    (``woollylib.experiments.compare``; ``woollylib compare`` from the shell).
    """
    from .experiments import compare as write_compare

    if len(paths) == 1 and isinstance(paths[0], (list, tuple)):
        paths = tuple(paths[0])
    return write_compare(list(paths), out, baseline=baseline, verbose=verbose)


def show_adversarial(model: nn.Module, data, *args, epsilon: float = 8 / 255, device=None, classes=None,
                     attack: str = "fgsm", n: int = 6, layer: str | None = None, method: str = "gradcam",
                     mean=None, std=None, save_path=None, **attack_kw):
    """Clean vs adversarial test images (``attack`` "fgsm"/"pgd", L-inf ``epsilon`` in [0, 1] pixel units).

    ``show_adversarial(model, data, device, 8/255)`` or ``(model, test_loader, classes, device)``.
    Uses the first ``n`` correctly classified images of the test set; rows: predictions, the
    perturbation, Grad-CAM at ``layer`` (default the last stage) of the clean and adversarial image.
    """
    from .utils import visualize as viz

    calls = "show_adversarial(model, data, device, epsilon=8/255)"
    given = {"device": device, "classes": classes, "epsilon": None}
    data, args = _test_data(data, args)
    got = _sort_args("show_adversarial", args, {"device": _is_device, "classes": _is_classes,
                                                "epsilon": lambda x: _is_float(x) or _is_int(x)}, given, calls,
                     first=3)
    epsilon = epsilon if got["epsilon"] is None else got["epsilon"]
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0 (a pixel budget on [0, 1], e.g. 8/255), got {epsilon}")
    device = _model_device(model, got["device"])
    if layer is not None:
        _check_layers(model, [layer], "layer")
    d = _Data("show_adversarial", data, got["classes"], mean, std)
    mean, std = d.stats("test")
    images, labels = _correct_examples(model, d.loader("test"), device, n)
    return _displayable(viz.plot_adversarial(model, images, labels, mean, std, epsilon=epsilon,
                                             attack=attack, classes=d.classes, stage=layer, method=method, n=n,
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


def write_report(run_dir, model: nn.Module | None = None, data=None, device=None, **kwargs) -> Path:
    """Write ``run_dir/report.md`` with the metrics table and every figure as a PNG; return its path.

    See ``woollylib.report.write_report`` (the in-memory ``model``/``data`` are used as they are).
    """
    from .report import write_report as _write

    return _write(run_dir, model, data, device, **kwargs)


# ----------------------------------------------------------------------------------------------
# the helper names of the course notebooks (aliases live here only)


def get_misclassified_data(model: nn.Module, *args, limit: int | None = None, mean=None, std=None):
    """``get_misclassified_data(model, device, test_loader)``: every misclassified test image, as
    ``woollylib.utils.metrics.Misclassified`` (``.inputs``, ``.images`` in pixels, ``.true``, ``.pred``)."""
    from .utils import metrics

    calls = "get_misclassified_data(model, device, test_loader)"
    loaders = [a for a in args if _is_loader(a) or _is_bundle(a)]
    got = _sort_args("get_misclassified_data", tuple(None if _is_loader(a) or _is_bundle(a) else a for a in args),
                     {"device": _is_device}, {"device": None}, calls)
    if len(loaders) != 1:
        raise TypeError(f"get_misclassified_data() needs one test loader (or DataBundle); write: {calls}")
    d = _Data("get_misclassified_data", loaders[0], None, mean, std)
    mean, std = d.stats("test")
    return metrics.misclassified(model, d.loader("test"), _model_device(model, got["device"]), mean=mean, std=std,
                                 limit=limit, classes=d.classes)


def display_cifar_data_samples(data_set, number_of_samples: int = 16, classes=None, **kwargs):
    """The course's name for :func:`show_random_samples` (``(data_set, number_of_samples, classes)``)."""
    return show_random_samples(data_set, classes, number_of_samples, **kwargs)


def visualize_cifar_augmentation(data_set, data_transforms=None, **kwargs):
    """The course's name for :func:`show_augmentations` (``(data_set, data_transforms)``)."""
    return show_augmentations(data_set, data_transforms, **kwargs)


def get_cifar_statistics(data_set, data_set_type: str = "Train") -> dict:
    """The course's name for ``woollylib.preloading.channel_stats``: prints and returns mean/std/var/min/max.

    ``data_set``: a DataBundle (its train or test images by ``data_set_type``), an ImageSource, a
    torchvision dataset (``.data``), a woollylib loader, or images (N, H, W, 3).
    """
    from .preloading import channel_stats

    split = "test" if str(data_set_type).lower().startswith("test") else "train"
    if _is_bundle(data_set):
        source = getattr(data_set, f"{split}_source")
    else:
        from .preloading.walk import datasets_in

        source = next((getattr(d, "source", None) for d in datasets_in(data_set)
                       if getattr(d, "source", None) is not None), data_set)  # woollylib's loaders/datasets
    return channel_stats(source, label=str(data_set_type))
