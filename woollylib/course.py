"""The course notebooks' call shapes, translated into main.py's canonical calls (one adapter).

main.py writes each function once, with one signature (``train_test_loop(model, data, device,
max_lr=0.05, epochs=24)``). The course notebooks call the same functions in the PyTorch examples'
order and with their own objects::

    train_test_loop(model, device, train_loader, test_loader, EPOCHS, optimizer, scheduler, criterion)
    plot_misclassified(model, test_loader, classes, device, no_misclf=20, plot_size=(4, 5))
    show_accuracy_loss(train_losses, train_acc, test_losses, test_acc)
    show_random_samples(train_loader, classes)      # mean/std read from the Normalize of its transform

Here, and only here, what was passed is recognised by its type and put where the canonical
function wants it; a call of neither shape is a TypeError that says what was passed where and shows
the call to write. ``accepts(translate)`` puts a translation in front of a canonical function of
main.py; the course's helper names (``get_misclassified_data``, ``display_cifar_data_samples``,
``visualize_cifar_augmentation``, ``get_cifar_statistics``) are defined at the end. This module
imports nothing of main.py: main.py applies it.
"""

from __future__ import annotations

import functools
import numbers
import re
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .device import model_device

__all__ = ["Data", "accepts", "display_cifar_data_samples", "get_cifar_statistics", "get_misclassified_data",
           "visualize_cifar_augmentation"]

_CANONICAL: dict = {}  # name -> the adapted function of main.py (what the course aliases call)


def accepts(translate):
    """Decorate a canonical function ``fn``: every call goes through ``translate(fn, *args, **kwargs)``."""
    def decorate(fn):
        @functools.wraps(fn)
        def adapted(*args, **kwargs):
            return translate(fn, *args, **kwargs)

        _CANONICAL[fn.__name__] = adapted
        return adapted

    return decorate


def alias(name: str, value, alias: str, alias_value):
    """One value from a keyword and its alias (``epochs``/``EPOCHS``); both given and different: ValueError."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ValueError(f"got {name}={value!r} and {alias}={alias_value!r}; pass only one of them")
    return alias_value


# ----------------------------------------------------------------------------------------------
# what was passed, recognised by its type

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


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _is_source(x) -> bool:
    """An ImageSource (raw images + labels + classes), not a DataBundle."""
    return hasattr(x, "images") and hasattr(x, "labels") and not _is_bundle(x)


def _is_scheduler(x) -> bool:
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    return isinstance(x, (LRScheduler, ReduceLROnPlateau)) or (
        callable(getattr(x, "step", None)) and isinstance(getattr(x, "optimizer", None), torch.optim.Optimizer))


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_float(x) -> bool:
    return isinstance(x, (float, np.floating))


def describe(x) -> str:
    """How an argument is named in a message: its repr for small values, else its type."""
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
            raise TypeError(f"{fname}() got {describe(value)} as argument {pos}, which is none of: "
                            f"{', '.join(slots)}. Write: {calls}")
        if out.get(name) is not None:
            raise TypeError(f"{fname}() got two values for {name}: {describe(out[name])} ({origin[name]}) and "
                            f"{describe(value)} (argument {pos}). Write: {calls}")
        out[name], origin[name] = value, f"argument {pos}"
    return out


# ----------------------------------------------------------------------------------------------
# data from a DataBundle, a (train, test) pair, a loader (any iterable of batches), a dataset or an ImageSource


class Data:
    """What main.py's bodies read from their data: ``loader(split)``, ``classes``, ``stats(split)``, pixels.

    Made from a DataBundle, a (train, test) pair or one loader/dataset, with the class names and
    mean/std that came with it (else read from the bundle or the loader's Normalize); with
    ``images=True`` also from an ImageSource (``raw``) or one image array (``image``).
    """

    def __init__(self, fname: str, data, classes=None, mean=None, std=None, *, images: bool = False):
        self.fname, self.bundle, self.given = fname, data if _is_bundle(data) else None, data
        self.raw = data if images and _is_source(data) else None
        self.image = data if images and _is_array(data) else None
        if self.image is not None:
            self.classes = None
            return
        if self.bundle is None and self.raw is None and not (_is_pair(data) or _is_loader(data)):
            raise TypeError(f"{fname}() needs a DataBundle (main.download_data), a DataLoader or a dataset as "
                            f"its data; got {describe(data)}")
        if classes is not None and not _is_classes(classes):
            raise TypeError(f"{fname}() got classes={describe(classes)}; pass the class names as a list or tuple "
                            "of strings (e.g. data.classes)")
        self.classes = _class_list(classes)
        if self.classes is None and self.raw is not None:
            self.classes = _class_list(getattr(self.raw, "classes", None))
        elif self.classes is None:
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
                f"{self.fname}() cannot tell how the images of {describe(self.loader(split))} were normalised "
                "(no transform with a Normalize step on its dataset); pass mean=(r, g, b), std=(r, g, b), the "
                "Normalize statistics on [0, 1] (e.g. woollylib.preloading.CIFAR10_MEAN/CIFAR10_STD)")
        return found

    def source(self, split: str):
        """(raw images NHWC, labels) of the split when they can be read without the loader, else None."""
        if self.raw is not None:
            return self.raw.images, np.asarray(self.raw.labels)
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
            raise ValueError(f"{self.fname}() needs image batches (B, C, H, W); {describe(loader)} gave "
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
            raise TypeError(f"{fname}() needs a loader of (images, labels) batches; it yielded {describe(item)}")
        images, labels = item[0], item[1]
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{fname}() needs tensor images (end the transform with ToTensorV2 / ToTensor); "
                            f"got {describe(images)}")
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


# ----------------------------------------------------------------------------------------------
# the translations, one per canonical function of main.py (in its order)


def samples(count_name: str):
    """``show_random_samples``/``show_class_samples``: (data, classes, n) or (data, n, classes), any data."""
    def translate(fn, data, classes=None, count=None, *, mean=None, std=None, **kwargs):
        count = kwargs.pop(count_name, count)
        if _is_int(classes) and (count is None or _is_classes(count)):
            classes, count = count, classes
        if count is not None and (not _is_int(count) or count < 1):
            raise ValueError(f"{fn.__name__}() {count_name} must be a positive integer, got {count!r}")
        if count is not None:
            kwargs[count_name] = count
        return fn(Data(fn.__name__, data, classes, mean, std), **kwargs)

    return translate


def image_rgb(fn, data, index=0, classes=None, *, mean=None, std=None, **kwargs):
    """``show_image_rgb(data, index, classes)`` in either order; also an ImageSource or one image array."""
    if _is_classes(index) and (classes is None or _is_int(classes)):
        index, classes = (0 if classes is None else classes), index
    if not (_is_array(data) or _is_source(data) or _is_int(index)):
        raise TypeError(f"show_image_rgb() index must be an integer, got {describe(index)}")
    return fn(Data("show_image_rgb", data, classes, mean, std, images=True), index, **kwargs)


def augmentations(fn, data, transform=None, **kwargs):
    """``show_augmentations``: a DataBundle, uint8 images + a Compose, or a loader/dataset with both inside."""
    if _is_array(data):
        if transform is None:
            raise ValueError("show_augmentations(images, transform=...) needs the albumentations Compose to show")
        return fn(data, transform, **kwargs)
    if _is_bundle(data):
        if transform is None and getattr(data, "train_transform", None) is None:
            raise ValueError(
                "this DataBundle has no albumentations pipeline (loader='device' augments on the device); "
                "pass transform=woollylib.preloading.train_transforms(data.mean, data.std)"
            )
        return fn(data, transform, **kwargs)
    from .preloading.walk import datasets_in, transforms_of

    d = Data("show_augmentations", data)
    raw = d.source("train")
    if transform is None:
        transform = next((t for ds in datasets_in(d.loader("train")) for t in transforms_of(ds)
                          if hasattr(t, "transforms")), None)
    if raw is None or transform is None:
        raise ValueError(
            f"show_augmentations() cannot find the raw images and the albumentations pipeline of "
            f"{describe(data)}; pass a DataBundle, or show_augmentations(images_uint8_NHWC, transform=compose)")
    return fn(raw[0], transform, **kwargs)


def model_choice(fn, name=None, device=None, num_classes=None, **kwargs):
    """``select_model(device)``, ``select_model(device, num_classes)`` or ``select_model(name, device)``."""
    from .config import DEFAULT_MODEL as default

    if _is_device(name) or (name is None and device is not None):
        if device is not None and not _is_int(device):
            raise TypeError(f"select_model() got the device {describe(name)} first and then {describe(device)}; "
                            f"write select_model(device) or select_model('{default}', device)")
        if _is_int(device) and num_classes is None:
            num_classes = device
        name, device = default, name
    if name is not None and not isinstance(name, str):
        raise TypeError(f"select_model() takes a model name (e.g. '{default}') or a device first, got "
                        f"{describe(name)}; write select_model('{default}', device)")
    return fn(default if name is None else name, device, num_classes, **kwargs)


def lr_test(fn, model, data, *args, device=None, optimizer=None, criterion=None, **kwargs):
    """``max_lr(model, data)``, ``(model, train_loader, device)``, ``(model, train_loader, optimizer, criterion, device)``."""
    calls = "max_lr(model, data)  or  max_lr(model, train_loader, optimizer, criterion, device)"
    got = _sort_args("max_lr", args, {
        "device": _is_device, "optimizer": lambda x: isinstance(x, (torch.optim.Optimizer, str)),
        "criterion": lambda x: isinstance(x, nn.Module) or (callable(x) and not _is_loader(x)),
    }, {"device": device, "optimizer": optimizer, "criterion": criterion}, calls, first=3)
    if _is_device(data) and args and _is_loader(args[0]):
        raise TypeError(f"max_lr() got the device {describe(data)} before the loader; write: {calls}")
    loader = data.train_loader if _is_bundle(data) else (data[0] if _is_pair(data) else data)
    if not _is_loader(loader):
        raise TypeError(f"max_lr() needs the train data (a DataBundle or the train loader) second, got "
                        f"{describe(data)}; write: {calls}")
    objects = {k: got[k] for k in ("optimizer", "criterion") if got[k] is not None}
    return fn(model, loader, got["device"], **objects, **kwargs)


_TRAIN_CALLS = ("train_test_loop(model, data, device, max_lr=0.05, epochs=24)  or  "
                "train_test_loop(model, device, train_loader, test_loader, 0.05, epochs=24)")


COURSE_EPOCHS = 20  # the course's train_test_loop default, for its own call shape (loaders after the device)
_SCHEDULER_NAMES = {"onecycle": "onecycle", "onecyclelr": "onecycle", "one_cycle": "onecycle",
                    "reducelronplateau": "plateau", "plateau": "plateau", "none": "none"}


def _scheduler_name(value):
    """The course's ``lr_scheduler='OneCycle'`` / ``'ReduceLROnPlateau'`` as woollylib's scheduler names."""
    if not isinstance(value, str):
        return value
    key = value.strip().lower()
    if key not in _SCHEDULER_NAMES:
        raise ValueError(f"lr_scheduler={value!r}: use 'OneCycle', 'ReduceLROnPlateau' or None (woollylib's "
                         "scheduler='onecycle' | 'plateau' | 'none')")
    return _SCHEDULER_NAMES[key]


def training(fn, model, *args, epochs=None, max_lr=None, EPOCHS=None, device=None, optimizer=None,
             scheduler=None, criterion=None, lr_scheduler=None, **kwargs):
    """``train_test_loop``: any order after the model; an int is the epochs, a float max_lr, objects by type.
    ``lr_scheduler=`` is the course's name for ``scheduler=``; its loaders shape defaults to 20 epochs."""
    if lr_scheduler is not None:
        if scheduler is not None:
            raise TypeError("pass either scheduler= or the course's lr_scheduler=, not both")
        scheduler = _scheduler_name(lr_scheduler)
    if not isinstance(model, nn.Module):
        raise TypeError(f"train_test_loop() takes the model first, got {describe(model)}; write: {_TRAIN_CALLS}")
    loaders = [a for a in args if _is_loader(a)]
    others = tuple(None if _is_loader(a) else a for a in args)  # keeps the positions for messages
    got = _sort_args("train_test_loop", others, {
        "data": lambda x: _is_bundle(x) or _is_pair(x), "device": _is_device, "epochs": _is_int,
        "max_lr": _is_float, "scheduler": _is_scheduler,
        "optimizer": lambda x: isinstance(x, torch.optim.Optimizer),
        "criterion": lambda x: isinstance(x, nn.Module) or callable(x),
    }, {"data": None, "device": device, "epochs": alias("epochs", epochs, "EPOCHS", EPOCHS), "max_lr": max_lr,
        "scheduler": scheduler, "optimizer": optimizer, "criterion": criterion}, _TRAIN_CALLS)
    data = got.pop("data")
    if loaders:
        if data is not None or len(loaders) != 2:
            what = f"{len(loaders)} loader(s)" + (" and a DataBundle" if data is not None else "")
            raise TypeError(f"train_test_loop() got {what}; pass either the DataBundle or the train and the test "
                            f"loader (in that order). Write: {_TRAIN_CALLS}")
        data = tuple(loaders)
    if data is None:
        raise TypeError(f"train_test_loop() got no data; write: {_TRAIN_CALLS}")
    if got["epochs"] is None and loaders and not kwargs.get("resume"):
        print(f"train_test_loop: no epochs given; the course's default of {COURSE_EPOCHS} (pass EPOCHS= to choose)")
        got["epochs"] = COURSE_EPOCHS
    if got["epochs"] is None and not kwargs.get("resume"):
        raise TypeError("train_test_loop() needs the number of epochs (there is no default): pass epochs=24 (or "
                        f"EPOCHS=24); write: {_TRAIN_CALLS}")
    return fn(model, data, got.pop("device"), **got, **kwargs)


def curves(fn, history, train_acc=None, test_losses=None, test_acc=None, **kwargs):
    """``show_accuracy_loss(history)`` or the four lists ``(train_losses, train_acc, test_losses, test_acc)``."""
    lists = (history, train_acc, test_losses, test_acc)
    if any(v is not None for v in lists[1:]):
        if any(v is None for v in lists):
            raise TypeError("show_accuracy_loss() takes a History, or the four lists: "
                            "show_accuracy_loss(train_losses, train_acc, test_losses, test_acc)")
        history = _history_from_lists(*lists)
    return fn(history, **kwargs)


def _history_from_lists(train_losses, train_acc, test_losses, test_acc) -> dict:
    def values(name, xs):
        try:
            return [float(x.item() if hasattr(x, "item") else x) for x in xs]
        except (TypeError, ValueError):
            raise TypeError(f"show_accuracy_loss(): {name} must be a list of numbers, got {describe(xs)}") from None

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


_MISCLF_CALLS = ("plot_misclassified(model, data, device, no_misclf=10)  or  "
                 "plot_misclassified(model, test_loader, classes, device, no_misclf=20, plot_size=(4, 5))")


def misclassified(fn, model, data, *args, no_misclf=None, grad_CAM=False, device=None, classes=None, mean=None,
                  std=None, **kwargs):
    """``plot_misclassified(model, data, device)`` or ``(model, test_loader, classes, device)``; ``n``, ``gradcam``."""
    given = {"device": device, "classes": classes, "no_misclf": kwargs.pop("n", no_misclf)}  # aliases
    grad_CAM = bool(kwargs.pop("gradcam", grad_CAM))
    unknown = set(kwargs) - set(fn.__kwdefaults__ or {})
    if unknown:
        raise TypeError(f"plot_misclassified() got unexpected keyword arguments {sorted(unknown)}")
    data, args = _test_data(data, args)
    got = _sort_args("plot_misclassified", args, {"classes": _is_classes, "device": _is_device,
                                                  "no_misclf": _is_int}, given, _MISCLF_CALLS, first=3)
    return fn(model, Data("plot_misclassified", data, got["classes"], mean, std), got["device"],
              no_misclf=got["no_misclf"], grad_CAM=grad_CAM, **kwargs)


def model_and_data(fn, model, data, *args, device=None, classes=None, **kwargs):
    """``show_confusion_matrix``/``show_per_class_accuracy``: (model, data, device) or (model, test_loader, classes, device)."""
    fname = fn.__name__
    calls = f"{fname}(model, data, device)  or  {fname}(model, test_loader, classes, device)"
    data, args = _test_data(data, args)
    got = _sort_args(fname, args, {"classes": _is_classes, "device": _is_device},
                     {"device": device, "classes": classes}, calls, first=3)
    return fn(model, Data(fname, data, got["classes"]), got["device"], **kwargs)


def optimizers(fn, model, data, device=None, names=None, epochs=None, *, EPOCHS=None, **kwargs):
    """``compare_optimizers(model, data, device)`` or ``(model, device, data)``; ``EPOCHS`` for ``epochs``."""
    if _is_device(data) and (_is_bundle(device) or _is_pair(device)):
        data, device = device, data  # (model, device, data)
    if not (_is_bundle(data) or _is_pair(data)):
        raise TypeError("compare_optimizers() needs the train and the test data: a DataBundle or (train_loader, "
                        f"test_loader); got {describe(data)}")
    if names is not None:
        kwargs["optimizers"] = names
    epochs = alias("epochs", epochs, "EPOCHS", EPOCHS)
    return fn(model, data, device, **kwargs, **({} if epochs is None else {"epochs": epochs}))


def run_paths(fn, *paths, **kwargs):
    """``compare_runs("a", "b")`` or ``compare_runs(["a", "b"])``."""
    if len(paths) == 1 and isinstance(paths[0], (list, tuple)):
        paths = tuple(paths[0])
    return fn(*paths, **kwargs)


def adversarial(fn, model, data, *args, epsilon=None, device=None, classes=None, mean=None, std=None, **kwargs):
    """``show_adversarial(model, data, device, 8/255)`` or ``(model, test_loader, classes, device)``."""
    calls = "show_adversarial(model, data, device, epsilon=8/255)"
    data, args = _test_data(data, args)
    got = _sort_args("show_adversarial", args, {"device": _is_device, "classes": _is_classes,
                                                "epsilon": lambda x: _is_float(x) or _is_int(x)},
                     {"device": device, "classes": classes, "epsilon": None}, calls, first=3)
    epsilon = epsilon if got["epsilon"] is None else got["epsilon"]
    extra = {} if epsilon is None else {"epsilon": epsilon}
    return fn(model, Data("show_adversarial", data, got["classes"], mean, std), got["device"], **extra, **kwargs)


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
    d = Data("get_misclassified_data", loaders[0], None, mean, std)
    mean, std = d.stats("test")
    return metrics.misclassified(model, d.loader("test"), model_device(model, got["device"]), mean=mean, std=std,
                                 limit=limit, classes=d.classes)


def display_cifar_data_samples(data_set, number_of_samples: int = 16, classes=None, **kwargs):
    """The course's name for ``main.show_random_samples`` (``(data_set, number_of_samples, classes)``)."""
    return _CANONICAL["show_random_samples"](data_set, classes, number_of_samples, **kwargs)


def visualize_cifar_augmentation(data_set, data_transforms=None, **kwargs):
    """The course's name for ``main.show_augmentations`` (``(data_set, data_transforms)``)."""
    return _CANONICAL["show_augmentations"](data_set, data_transforms, **kwargs)


def display_cifar_misclassified_data(*args, **kwargs):
    """The course's name for ``main.plot_misclassified`` (the same call shapes)."""
    return _CANONICAL["plot_misclassified"](*args, **kwargs)


def visualize_confusion_matrix(*args, **kwargs):
    """The course's name for ``main.show_confusion_matrix`` (the same call shapes)."""
    return _CANONICAL["show_confusion_matrix"](*args, **kwargs)


def select_cuda(verbose: bool = True):
    """The course's ``select_cuda()``: the device to train on (CUDA when there is one), as ``main.select_device``."""
    from .device import select_device

    return select_device(verbose=verbose)


def download_kwargs(dataloader_args: dict | None, kwargs: dict) -> dict:
    """The course's ``download_data(dataloader_args=dict(shuffle=True, batch_size=32, num_workers=2,
    pin_memory=True))`` as woollylib's keywords: batch_size and num_workers are used; the training set is always
    shuffled and memory pinned for CUDA by the loader itself."""
    if not dataloader_args:
        return kwargs
    args = dict(dataloader_args)
    unknown = sorted(set(args) - {"shuffle", "batch_size", "num_workers", "pin_memory"})
    if unknown:
        raise TypeError(f"dataloader_args has {unknown}; woollylib takes batch_size and num_workers from it "
                        "(shuffle and pin_memory are decided by the loader)")
    out = dict(kwargs)
    if "batch_size" in args:
        out["batch_size"] = int(args["batch_size"])
    if "num_workers" in args:
        out["num_workers"] = int(args["num_workers"])
    return out


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
