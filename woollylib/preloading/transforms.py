"""Albumentations 2.x pipelines: the CIFAR presets and any pipeline built by name.

Usage::

    from woollylib.preloading import train_transforms, test_transforms, build_transforms, list_transforms
    from woollylib.preloading import denormalize, normalize
    from woollylib.preloading import CIFAR10_MEAN, CIFAR10_STD

    train_tf = train_transforms(CIFAR10_MEAN, CIFAR10_STD)  # pad 40 + crop 32, flip, cutout 16, Normalize
    test_tf = test_transforms(CIFAR10_MEAN, CIFAR10_STD)    # Normalize, ToTensorV2
    list_transforms()   # ['affine', 'brightness_contrast', 'coarse_dropout', 'horizontal_flip', ...]
    tf = build_transforms(["pad_crop", "horizontal_flip", {"name": "rotate", "limit": 10}], mean, std)
    tf = build_transforms({"affine": {"rotate": (-5, 5)}, "coarse_dropout": {"size": 8, "p": 1.0}}, mean, std)
    tf = build_transforms(None, mean, std, horizontal_flip=True, to_gray={"p": 0.1})
    out = tf(image=uint8_hwc)["image"]                      # float32 tensor (3, H, W), normalised
    pixels = denormalize(batch, mean, std)                  # (B, 3, H, W) or (3, H, W) back to [0, 1]

Every pipeline is a :class:`WorkerSeededCompose`: in any DataLoader worker it reseeds itself from
torch's per-worker seed, so workers and epochs never repeat each other's augmentations (plain
albumentations copies one generator state into every worker). Every pipeline ends with
Normalize(mean, std) + ToTensorV2, so geometry and cutout always act on
pixels (0-255): a fill of "mean" is the dataset mean colour, i.e. 0 after Normalize. Parameters use
albumentations' own names (plus ``size`` for coarse_dropout and the pad_crop options); defaults come
from ``transform_defaults(name)``, a fresh dict on every call, so no caller can change another's.
"""

from __future__ import annotations

import inspect
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = [
    "WorkerSeededCompose",
    "build_transforms",
    "denormalize",
    "list_transforms",
    "normalize",
    "test_transforms",
    "train_transforms",
    "transform_defaults",
]


# ----------------------------------------------------------------------------------------------------
# Catalogue: canonical name -> (albumentations class, defaults). Built fresh on every call.


def _catalogue() -> dict[str, tuple[str | None, dict[str, Any]]]:
    return {
        # pad to size + 2*padding, then a random size x size window (+-padding px translation)
        "pad_crop": (None, {"size": 32, "padding": 4, "border_mode": cv2.BORDER_CONSTANT, "fill": "mean"}),
        "horizontal_flip": ("HorizontalFlip", {"p": 0.5}),
        # one size x size hole (pixels), fully inside the image, filled with the mean colour
        "coarse_dropout": ("CoarseDropout", {"size": 16, "num_holes_range": (1, 1), "fill": "mean", "p": 0.5}),
        # successor of ShiftScaleRotate: translate +-6.25 % of the side, scale 0.9-1.1, rotate +-15 deg
        "affine": (
            "Affine",
            {
                "translate_percent": (-0.0625, 0.0625),
                "scale": (0.9, 1.1),
                "rotate": (-15.0, 15.0),
                "border_mode": cv2.BORDER_CONSTANT,
                "fill": "mean",
                "p": 0.5,
            },
        ),
        "rotate": ("Rotate", {"limit": (-15.0, 15.0), "border_mode": cv2.BORDER_CONSTANT, "fill": "mean", "p": 0.5}),
        "to_gray": ("ToGray", {"p": 0.2}),
        "brightness_contrast": ("RandomBrightnessContrast", {"brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}),
    }


_ALIASES = (  # alternative spellings -> canonical name (compared lower-case without "_" / "-")
    ("padcrop", "pad_crop"),
    ("randomcrop", "pad_crop"),
    ("crop", "pad_crop"),
    ("hflip", "horizontal_flip"),
    ("flip", "horizontal_flip"),
    ("horizontalflip", "horizontal_flip"),
    ("cutout", "coarse_dropout"),
    ("coarsedropout", "coarse_dropout"),
    ("affine", "affine"),
    ("shiftscalerotate", "affine"),
    ("rotate", "rotate"),
    ("togray", "to_gray"),
    ("grayscale", "to_gray"),
    ("brightnesscontrast", "brightness_contrast"),
    ("randombrightnesscontrast", "brightness_contrast"),
)


def list_transforms() -> list[str]:
    """Canonical names accepted by ``build_transforms`` (aliases: hflip, cutout, ShiftScaleRotate, ...)."""
    return sorted(_catalogue())


def _canonical(name: str) -> str:
    key = str(name).lower().replace("_", "").replace("-", "")
    if key in ("normalize", "totensorv2", "totensor"):
        raise ValueError(
            f"{name!r} is added at the end of every pipeline automatically (Normalize + ToTensorV2); "
            "remove it from the spec"
        )
    for alias, canonical in _ALIASES:
        if key == alias:
            return canonical
    raise ValueError(f"unknown transform {name!r}; known transforms: {list_transforms()}")


def transform_defaults(name: str) -> dict[str, Any]:
    """The default parameters of a named transform (a new dict: editing it changes nothing else)."""
    return dict(_catalogue()[_canonical(name)][1])


# ----------------------------------------------------------------------------------------------------
# Building


def _check_stats(mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        m = tuple(float(v) for v in mean)
        s = tuple(float(v) for v in std)
    except TypeError as exc:
        raise TypeError(f"mean and std must be 3 numbers each (r, g, b on the 0-1 scale), got {mean!r}, {std!r}") from exc
    if len(m) != 3 or len(s) != 3:
        raise ValueError(f"mean and std need 3 values (r, g, b), got {len(m)} and {len(s)}")
    if any(v <= 0 for v in s):
        raise ValueError(f"std must be positive, got {s}")
    if any(v < 0 or v > 1 for v in m):
        raise ValueError(f"mean must be on the 0-1 scale (e.g. CIFAR10_MEAN), got {m}")
    return m, s


def _mean_pixels(mean: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(round(v * 255.0) for v in mean)  # 0-255, what uint8 pixels hold


def _valid_params(cls_name: str) -> set[str]:
    return set(inspect.signature(getattr(A, cls_name).__init__).parameters) - {"self"}


def _make(name: str, params: dict[str, Any], fill: tuple[int, ...]) -> list[A.BasicTransform]:
    cls_name, defaults = _catalogue()[name]
    extras = {"size"} if name == "coarse_dropout" else set()
    allowed = set(defaults) if cls_name is None else _valid_params(cls_name) | extras
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"transform {name!r} has no parameter(s) {unknown}; valid: {sorted(allowed)}")
    kw = {**defaults, **params}
    for key in ("fill",):
        if isinstance(kw.get(key), str) and kw[key] == "mean":
            kw[key] = fill
    if name == "pad_crop":
        size, pad = int(kw["size"]), int(kw["padding"])
        if size < 1 or pad < 0:
            raise ValueError(f"pad_crop needs size >= 1 and padding >= 0, got size={size}, padding={pad}")
        return [
            A.PadIfNeeded(min_height=size + 2 * pad, min_width=size + 2 * pad, border_mode=kw["border_mode"],
                          fill=kw["fill"], p=1.0),
            A.RandomCrop(height=size, width=size, p=1.0),
        ]
    if name == "coarse_dropout":
        size = kw.pop("size")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        kw.setdefault("hole_height_range", (int(h), int(h)))
        kw.setdefault("hole_width_range", (int(w), int(w)))
    return [getattr(A, cls_name)(**kw)]


def _entries(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """Normalise a spec into [(name, params)], copying every params dict (the caller's stays untouched)."""
    if spec is None:
        return []
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        items = []
        for entry in spec:
            if isinstance(entry, str):
                items.append((entry, {}))
            elif isinstance(entry, dict):
                if "name" not in entry:
                    raise ValueError(f"transform dict {entry!r} needs a 'name' key, e.g. {{'name': 'rotate', 'limit': 10}}")
                items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
            elif isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
                items.append((entry[0], entry[1]))
            else:
                raise TypeError(f"cannot read transform spec entry {entry!r}; use a name, a (name, params) pair or a dict")
    else:
        raise TypeError(f"transform spec must be a list or a dict, got {type(spec).__name__}")
    out = []
    for name, params in items:
        if params is False:
            continue
        if params is None or params is True:
            params = {}
        if not isinstance(params, dict):
            raise TypeError(f"parameters of {name!r} must be a dict, got {params!r}")
        out.append((_canonical(name), dict(params)))
    return out


class WorkerSeededCompose(A.Compose):
    """An ``A.Compose`` that reseeds itself in each DataLoader worker, whatever Dataset holds it.

    On its first call in a worker process it seeds itself from ``get_worker_info().seed`` (torch's
    seed of that worker: different per worker and, with the usual non-persistent workers, per
    epoch; repeatable under ``torch.manual_seed`` or the loader's ``generator``) mixed with its own
    ``seed=``, unless it was already seeded in that worker (``seed_worker``, woollylib's per-batch
    seeding). In the main process (``num_workers=0``) it is a plain Compose.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_seed = self.seed  # the construction seed (None: 0), mixed into every worker's

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        info = get_worker_info()
        self._worker_seed = None if info is None else info.seed  # seeded in this worker: keep it

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        info = get_worker_info()
        if info is not None and info.seed != getattr(self, "_worker_seed", None):
            own = getattr(self, "_own_seed", None) or 0
            self.set_random_seed(int(np.random.SeedSequence([info.seed % 2**63, own % 2**63, 3]).generate_state(1)[0]))
        return super().__call__(*args, force_apply=force_apply, **data)


def build_transforms(
    spec: list | dict | None, mean: Any, std: Any, *, seed: int | None = None, **kwargs: Any
) -> WorkerSeededCompose:
    """Compose the named transforms in order, then Normalize(mean, std) and ToTensorV2.

    spec: a list of names / ``(name, params)`` pairs / ``{"name": ..., **params}`` dicts, or a dict
    ``{name: params | True | False}``; ``kwargs`` adds more ``name=params`` entries after it.
    mean, std: per-channel (r, g, b) on the 0-1 scale. seed: seeds the pipeline's RNG.
    Unknown names raise ValueError; unknown parameters raise TypeError listing the valid ones.
    """
    m, s = _check_stats(mean, std)
    fill = _mean_pixels(m)
    transforms: list[A.BasicTransform] = []
    for name, params in _entries(spec) + _entries(kwargs):
        transforms.extend(_make(name, params, fill))
    transforms += [A.Normalize(mean=m, std=s, max_pixel_value=255.0), A.ToTensorV2()]
    # strict: any argument albumentations does not know is an error, not a warning
    return WorkerSeededCompose(transforms, strict=True, seed=seed)


def train_transforms(
    mean: Any,
    std: Any,
    *,
    size: int = 32,  # output side, px
    padding: int = 4,  # crop translation, px (0: no crop)
    flip: bool = True,
    cutout: int = 16,  # hole side, px (0: no cutout)
    cutout_p: float = 0.5,  # probability of the hole per image
    extra: list | dict | None = None,  # more transforms, inserted before the cutout
    seed: int | None = None,
) -> WorkerSeededCompose:
    """The CIFAR training preset: PadIfNeeded(size+2*padding) + RandomCrop(size), HorizontalFlip,
    one cutout x cutout CoarseDropout filled with the mean colour (0-255), Normalize, ToTensorV2."""
    spec: list[tuple[str, dict[str, Any]]] = []
    if padding:
        spec.append(("pad_crop", {"size": size, "padding": padding}))
    if flip:
        spec.append(("horizontal_flip", {}))
    spec += _entries(extra)
    if cutout:
        spec.append(("coarse_dropout", {"size": cutout, "p": cutout_p}))
    return build_transforms(spec, mean, std, seed=seed)


def test_transforms(mean: Any, std: Any) -> WorkerSeededCompose:
    """Normalize(mean, std) + ToTensorV2: float32 (3, H, W) tensors."""
    return build_transforms(None, mean, std)


test_transforms.__test__ = False  # not a pytest test, even when imported into a test module


# ----------------------------------------------------------------------------------------------------
# Tensors: Normalize and its inverse


def _per_channel(value: Any, x: torch.Tensor, default: float, what: str) -> torch.Tensor:
    """mean/std as a (C, 1, 1) tensor on x's device; None gives ``default``, a scalar every channel."""
    c = x.shape[-3]
    if value is None:
        return torch.full((c, 1, 1), default, dtype=x.dtype, device=x.device)
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(c)
    if t.numel() != c:
        raise ValueError(f"{what}: mean/std have {t.numel()} values for {c}-channel images: give one per channel")
    return t.reshape(c, 1, 1)


def _float_images(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} needs a tensor (B, C, H, W) or (C, H, W), got {shape}")
    return x.to(torch.promote_types(x.dtype, torch.float32))


def denormalize(x: torch.Tensor, mean: Any, std: Any, *, clamp: bool = True) -> torch.Tensor:
    """Undo Normalize: ``x * std + mean`` per channel of (B, C, H, W) or (C, H, W) images, as float
    (float32, or float64 for float64 input) on x's device, clipped to [0, 1] unless ``clamp=False``.

    mean, std: per channel on the 0-1 scale (one number: every channel; None: 0 and 1). Differentiable.
    """
    x = _float_images(x, "denormalize")
    out = x * _per_channel(std, x, 1.0, "denormalize") + _per_channel(mean, x, 0.0, "denormalize")
    return out.clamp(0.0, 1.0) if clamp else out


def normalize(pixels: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """Normalize pixel images in [0, 1]: ``(pixels - mean) / std`` per channel (the inverse of
    :func:`denormalize` without clamping). Differentiable."""
    x = _float_images(pixels, "normalize")
    return (x - _per_channel(mean, x, 0.0, "normalize")) / _per_channel(std, x, 1.0, "normalize")
