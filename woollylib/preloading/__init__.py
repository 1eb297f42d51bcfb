"""Data layer: image sources, channel statistics, albumentations pipelines, loaders.

Usage::

    from woollylib.preloading import get_data, list_sources, load_source, channel_stats
    data = get_data("digits", batch_size=64, seed=0)   # offline; "cifar10" downloads once into root
    for images, labels in data.train_loader:           # float32 (B, 3, 32, 32) normalised, int64 (B,)
        ...

Modules: ``sources`` (ImageSource, CIFAR-10, digits, arrays, folders), ``stats`` (channel_stats),
``transforms`` (presets, build_transforms, normalize/denormalize), ``augment`` (the augmentation
presets of both loaders, each dataset's default), ``loaders`` (AlbumentationsDataset, make_loader),
``bundle`` (DataBundle, get_data), ``device_loader`` (DeviceLoader: batches augmented on the GPU).
"""

from __future__ import annotations

from .augment import AUGMENT_PRESETS, augment_preset, default_augment
from .bundle import DataBundle, get_data
from .device_loader import DeviceLoader as DeviceLoader
from .loaders import (
    AlbumentationsDataset,
    EpochSampler,
    SeededDataLoader,
    default_num_workers,
    make_loader,
    seed_worker,
)
from .sources import (
    CIFAR10_FILENAME,
    CIFAR10_FOLDER,
    CIFAR10_URL,
    ImageSource,
    from_arrays,
    list_sources,
    load_cifar10,
    load_digits,
    load_folder,
    load_source,
)
from .stats import CIFAR10_MEAN, CIFAR10_STD, channel_stats
from .transforms import (
    WorkerSeededCompose,
    build_transforms,
    denormalize,
    list_transforms,
    normalize,
    test_transforms,
    train_transforms,
    transform_defaults,
)

__all__ = [
    "AUGMENT_PRESETS",
    "CIFAR10_FILENAME",
    "CIFAR10_FOLDER",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "AlbumentationsDataset",
    "DataBundle",
    "DeviceLoader",
    "EpochSampler",
    "ImageSource",
    "SeededDataLoader",
    "WorkerSeededCompose",
    "augment_preset",
    "build_transforms",
    "channel_stats",
    "default_augment",
    "default_num_workers",
    "denormalize",
    "from_arrays",
    "get_data",
    "list_sources",
    "list_transforms",
    "load_cifar10",
    "load_digits",
    "load_folder",
    "load_source",
    "make_loader",
    "normalize",
    "seed_worker",
    "test_transforms",
    "train_transforms",
    "transform_defaults",
]
