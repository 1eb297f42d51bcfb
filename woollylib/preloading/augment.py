"""The training augmentation presets, one table for both loaders, and each dataset's default.

    from woollylib.preloading import default_augment, augment_preset, AUGMENT_PRESETS
    augment_preset("digits")                         # 'none'  ("auto" resolved for the dataset)
    augment_preset("cifar10")                        # 'cifar'
    default_augment("cifar10", "albumentations")     # {'padding': 4, 'flip': True, 'cutout': 16}: train_transforms(**)
    default_augment("cifar10", "device")             # {'crop_pad': 4, 'flip': True, 'cutout': 16}: DeviceLoader(**)
    default_augment("digits", "device", "crop")      # {'crop_pad': 2, 'flip': False, 'cutout': 0}
    get_data("digits", augment="crop")               # get_data takes the preset names too

Presets: "cifar" = pad 4 px + random crop, horizontal flip, one 16 px cutout hole (p = 0.5);
"crop" = pad 2 px + random crop only; "none" = no augmentation; "auto" = "none" for digits
(flips mirror the glyphs, a 16 px hole hides most of a digit), "cifar" for every other dataset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUGMENT_PRESETS", "augment_preset", "default_augment"]

# preset -> (pad px per side before the random crop, horizontal flip, cutout hole side px)
_PRESETS = {
    "cifar": (4, True, 16),
    "crop": (2, False, 0),
    "none": (0, False, 0),
}
AUGMENT_PRESETS = ("auto", *_PRESETS)
_NO_AUGMENT_DATASETS = ("digits",)  # "auto" means "none" for these, "cifar" for the others
LOADERS = ("albumentations", "device")


def dataset_key(dataset: Any) -> str:
    """A dataset name ("cifar10", "CIFAR-10", "digits-train", an ImageSource) in canonical form."""
    name = str(getattr(dataset, "name", dataset)).lower()
    for split in ("-train", "-test", "-val"):
        name = name.removesuffix(split)
    return name.replace("-", "").replace("_", "")


def augment_preset(dataset: Any, preset: str = "auto") -> str:
    """The preset name ``preset`` stands for on ``dataset`` ("auto" resolved: digits -> "none",
    anything else -> "cifar"); an unknown name raises ValueError listing the presets."""
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {preset!r}; use one of {', '.join(AUGMENT_PRESETS)} "
                         "(or, with the albumentations loader, a build_transforms spec)")
    if preset != "auto":
        return preset
    return "none" if dataset_key(dataset) in _NO_AUGMENT_DATASETS else "cifar"


def default_augment(dataset: Any, loader: str = "albumentations", preset: str = "auto") -> dict:
    """The options of ``preset`` on ``dataset`` for ``loader``: ``train_transforms`` keywords
    (padding, flip, cutout) for "albumentations", ``DeviceLoader`` keywords (crop_pad, flip,
    cutout) for "device". A fresh dict on every call."""
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; use 'albumentations' or 'device'")
    pad, flip, cutout = _PRESETS[augment_preset(dataset, preset)]
    key = "padding" if loader == "albumentations" else "crop_pad"
    return {key: pad, "flip": flip, "cutout": cutout}
