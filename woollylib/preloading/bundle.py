"""One call from a dataset name to loaders, classes and statistics.

Usage::

    from woollylib.preloading import get_data
    data = get_data("cifar10", batch_size=512, root="data", seed=0)   # prints the statistics
    data = get_data("digits", batch_size=64, augment=["horizontal_flip", "rotate"])  # a build_transforms spec
    data = get_data("digits", batch_size=64, augment="crop")         # a preset (preloading.augment)
    data = get_data("cifar10", batch_size=512, loader="device", device="cuda")  # batches made on the GPU
    data = get_data("cifar10", val_split=5000, seed=0)   # 5,000 training images held out: data.val_loader
    images, labels = next(iter(data.train_loader))   # float32 (B, 3, 32, 32) normalised, int64 (B,)
    train_data, test_data, train_loader, test_loader, classes = data   # unpacks too
    pixels = data.denormalize(images)                # back to [0, 1] for plotting

Normalisation uses the train split's own channel statistics (``data.stats``). The default
augmentation is the dataset's preset (``augment="auto"``: none for digits, the CIFAR preset of
pad-4 crop, flip and a 16 px cutout for the others), the same for both loaders.

``val_split`` (a fraction such as 0.1 or a count such as 5000) holds out that much of the training
source, stratified by class and seeded (``val_seed``, default ``seed``, else 0; see
``preloading.split``), read with the test-time transforms; ``data.val_info`` records it. An
``ImageSource`` as ``val_split`` is the validation set itself (a folder's own ``val/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_int
from .augment import AUGMENT_PRESETS, LOADERS, augment_preset, default_augment
from .loaders import make_loader
from .sources import ImageSource, load_source
from .split import stratified_split
from .stats import channel_stats
from .transforms import build_transforms, denormalize, test_transforms, train_transforms

__all__ = ["DataBundle", "get_data"]


@dataclass(eq=False)
class DataBundle:
    """Loaders plus everything needed to read their batches (classes, mean/std on the 0-1 scale)."""

    train_loader: Any
    test_loader: Any
    train_source: ImageSource
    test_source: ImageSource
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stats: dict = field(repr=False)
    train_transform: Any = field(default=None, repr=False)  # None for loader="device"
    test_transform: Any = field(default=None, repr=False)
    name: str = "data"
    val_loader: Any = None  # None without a validation split
    val_source: ImageSource | None = None
    val_info: dict | None = None  # requested, count, seed, sha256 of the indices (None: no split)
    build_args: dict | None = field(default=None, repr=False)  # get_data's arguments

    def with_val_split(self, val_split, val_seed: int | None = None) -> DataBundle:
        """The same data with ``val_split`` of the training source held out (a new bundle)."""
        if self.build_args is None:
            raise ValueError("this DataBundle was not made by get_data; call get_data(..., val_split=...) instead")
        return get_data(**{**self.build_args, "val_split": val_split, "val_seed": val_seed})

    def __iter__(self):
        """``train_data, test_data, train_loader, test_loader, classes = get_data(...)`` (the datasets
        the loaders read: an AlbumentationsDataset, or the ImageSource of a DeviceLoader)."""
        train = getattr(self.train_loader, "dataset", self.train_source)
        test = getattr(self.test_loader, "dataset", self.test_source)
        return iter((train, test, self.train_loader, self.test_loader, self.classes))

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo Normalize: (B, C, H, W) or (C, H, W) -> float tensor in [0, 1] on x's device."""
        return denormalize(x.detach() if isinstance(x, torch.Tensor) else x, self.mean, self.std)


def get_data(
    name: str | tuple[ImageSource, ImageSource] = "cifar10",
    batch_size: int = 512,
    root: str | os.PathLike = "data",
    download: bool = True,
    loader: str = "albumentations",
    seed: int | None = None,
    device: Any = None,
    num_workers: int | None = None,
    augment: str | list | dict | bool | None = "auto",
    test_batch_size: int | None = None,
    verbose: bool = True,
    loader_kw: dict | None = None,
    val_split: float | ImageSource | None = None,
    val_seed: int | None = None,
    **kw: Any,
) -> DataBundle:
    """Load a dataset and build its train/test loaders.

    name: a ``list_sources()`` name, or a ``(train_source, test_source)`` pair of ImageSources.
    loader: "albumentations" (a DataLoader over albumentations pipelines) or "device" (woollylib's
    DeviceLoader: whole batches augmented on ``device``). augment: a preset of ``AUGMENT_PRESETS``
    ("auto" = the dataset's default, "cifar", "crop", "none"; True/None = "cifar", False = "none"),
    or, for the albumentations loader, a ``build_transforms`` spec. ``loader_kw`` goes to
    make_loader / DeviceLoader (there it overrides the preset's options), ``kw`` to the source
    loader (e.g. ``test_fraction=`` for digits). ``val_split``/``val_seed``: see the module docstring.
    """
    build_args = {k: v for k, v in locals().items() if k not in ("kw", "val_split", "val_seed")}
    build_args.update(kw)
    check_int("batch_size", batch_size)
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; use 'albumentations' or 'device'")
    train_source, test_source, label = _sources(name, root, download, kw)
    train_source, val_source, val_info = _hold_out(train_source, val_split, val_seed, seed)
    stats = channel_stats(train_source, verbose=verbose)
    mean, std = stats["mean"], tuple(max(s, 1e-3) for s in stats["std"])  # guard a constant channel
    test_bs = test_batch_size or batch_size
    extra = dict(loader_kw or {})
    seeds = (None, None) if seed is None else (seed, seed + 1)
    preset = _preset(augment, loader, label)

    if loader == "device":
        from .device_loader import DeviceLoader

        options = {**(default_augment(label, "device", preset) if preset else {}), **extra}
        train_loader = DeviceLoader(train_source, batch_size, train=True, mean=mean, std=std, device=device,
                                    seed=seeds[0], **options)
        test_loader = DeviceLoader(test_source, test_bs, train=False, mean=mean, std=std, device=device,
                                   seed=seeds[1], **extra)
        val_loader = None if val_source is None else DeviceLoader(
            val_source, test_bs, train=False, mean=mean, std=std, device=device, seed=seeds[1], **extra)
        train_tf = test_tf = None
    else:
        size = train_source.image_size[0]
        if preset:
            train_tf = train_transforms(mean, std, size=size, **default_augment(label, "albumentations", preset))
        else:
            train_tf = build_transforms(augment, mean, std)
        test_tf = test_transforms(mean, std)
        common = dict(num_workers=num_workers, device=device, **extra)
        train_loader = make_loader(train_source, train_tf, batch_size, train=True, seed=seeds[0], **common)
        test_loader = make_loader(test_source, test_tf, test_bs, train=False, seed=seeds[1], **common)
        val_loader = None if val_source is None else make_loader(val_source, test_tf, test_bs, train=False,
                                                                 seed=seeds[1], **common)
    return DataBundle(
        train_loader=train_loader, test_loader=test_loader, train_source=train_source, test_source=test_source,
        classes=list(train_source.classes), mean=tuple(mean), std=tuple(std), stats=stats, train_transform=train_tf,
        test_transform=test_tf, name=label, val_loader=val_loader, val_source=val_source, val_info=val_info,
        build_args=build_args,
    )


def _hold_out(train_source: ImageSource, val_split, val_seed, seed):
    """(train, val, info): the validation set held out of ``train_source`` (or given as a source)."""
    if val_split is None:
        if val_seed is not None:
            raise ValueError("val_seed= needs val_split= (a fraction such as 0.1 or a count)")
        return train_source, None, None
    if isinstance(val_split, ImageSource):
        if val_split.classes != train_source.classes:
            raise ValueError(f"the validation source has classes {val_split.classes} but the training source "
                             f"{train_source.classes}")
        if val_split.image_size != train_source.image_size:
            raise ValueError(f"validation images are {val_split.image_size} but training images "
                             f"{train_source.image_size}; resize one")
        return train_source, val_split, {"requested": "source", "source": val_split.name, "count": len(val_split)}
    split_seed = val_seed if val_seed is not None else (seed if seed is not None else 0)
    split = stratified_split(train_source.labels, val_split, seed=split_seed, classes=train_source.classes)
    info = split.info()
    return (train_source.subset(split.train, name=train_source.name),
            train_source.subset(split.val, name=f"{train_source.name}-val"), info)


def _sources(name, root, download, kw) -> tuple[ImageSource, ImageSource, str]:
    """(train, test, dataset name) from a source name or a (train, test) pair, checked to match."""
    if isinstance(name, (tuple, list)) and len(name) == 2 and all(isinstance(s, ImageSource) for s in name):
        train_source, test_source = name
        label = train_source.name
    else:
        train_source = load_source(name, train=True, root=root, download=download, **kw)
        test_source = load_source(name, train=False, root=root, download=download, **kw)
        label = str(name)
    for src in (train_source, test_source):
        if len(src) == 0:
            raise ValueError(f"source {src.name!r} is empty: a dataset needs at least one image")
    if train_source.image_size != test_source.image_size:
        raise ValueError(f"train images are {train_source.image_size} but test images {test_source.image_size}; resize one split")
    return train_source, test_source, label


def _preset(augment, loader: str, dataset: str) -> str | None:
    """The preset name ``augment`` means on ``dataset``, or None for a build_transforms spec."""
    if augment is None or augment is True:
        return "cifar"
    if augment is False:
        return "none"
    if isinstance(augment, str):
        return augment_preset(dataset, augment)
    if loader == "device":
        raise ValueError(
            f"a build_transforms spec (augment={augment!r}) only applies to loader='albumentations'; the device "
            f"loader takes a preset ({', '.join(AUGMENT_PRESETS)}) or its options in "
            "loader_kw={'crop_pad': 4, 'flip': True, 'cutout': 16}")
    return None
