"""Image sources: uint8 images (N, H, W, 3), int64 labels (N,) and class names, from anywhere.

Usage::

    from woollylib.preloading import load_source, from_arrays, load_folder, list_sources

    list_sources()                                   # ['cifar10', 'digits']
    train = load_source("cifar10", train=True, root="data")  # downloads cifar-10-python.tar.gz once
    test = load_source("digits", train=False, seed=0)        # embedded, offline, 360 images
    src = from_arrays(images, labels, classes=["cat", "dog"])  # numpy or torch, HWC or CHW
    src = load_folder("my_images/train", image_size=32)        # ImageFolder layout: root/<class>/<img>
    len(src), src.num_classes, src.images.shape              # N, K, (N, H, W, 3)

Every source keeps its images as uint8 (a CIFAR-10 train split is 150 MB that way, 600 MB as float32);
conversion to float happens per batch, after augmentation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_range

__all__ = [
    "CIFAR10_FILENAME",
    "CIFAR10_FOLDER",
    "CIFAR10_URL",
    "ImageSource",
    "from_arrays",
    "list_sources",
    "load_cifar10",
    "load_digits",
    "load_folder",
    "load_source",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILENAME = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"  # what the archive extracts to, inside root
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


# ----------------------------------------------------------------------------------------------------
# The container


@dataclass(eq=False, repr=False)
class ImageSource:
    """A labelled image set held in memory.

    images: uint8 (N, H, W, 3), pixel values 0-255; labels: int64 (N,) in [0, len(classes)).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)
    name: str = "source"

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
            raise TypeError(
                "ImageSource.images must be a uint8 numpy array (N, H, W, 3); "
                "use from_arrays(...) to convert floats, tensors or CHW layouts"
            )
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"ImageSource.images must have shape (N, H, W, 3), got {self.images.shape}; "
                "use from_arrays(...) to convert CHW layouts"
            )
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageSource.labels must have shape ({len(self.images)},) to match the images, "
                f"got {self.labels.shape}"
            )
        self.classes = [str(c) for c in self.classes]
        if not self.classes and len(self.labels):
            self.classes = [str(i) for i in range(int(self.labels.max()) + 1)]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, indices: Any, name: str | None = None) -> ImageSource:
        """A new source with the images at ``indices`` (array of ints or boolean mask); classes kept."""
        idx = np.asarray(indices)
        return ImageSource(self.images[idx], self.labels[idx], list(self.classes), name or self.name)

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"ImageSource(name={self.name!r}, n={len(self)}, size={h}x{w}, classes={self.num_classes})"


# ----------------------------------------------------------------------------------------------------
# In-memory arrays


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}") from exc


def from_arrays(images: Any, labels: Any, classes: list[str] | None = None, name: str = "arrays") -> ImageSource:
    """Validate and convert arrays (numpy or torch) into an ``ImageSource``.

    images: (N, H, W, 3) or (N, 3, H, W); uint8 0-255, or float in [0, 1] (rounded to uint8).
    labels: N integers in [0, num_classes); num_classes = len(classes) if given, else max(label) + 1.
    """
    x = _to_numpy(images, "images")
    y = _to_numpy(labels, "labels")
    if x.ndim != 4 or (x.shape[-1] != 3 and x.shape[1] != 3):
        hint = " (grayscale? repeat it: np.repeat(x[..., None], 3, axis=-1))" if x.ndim == 3 else ""
        raise ValueError(
            f"images must have shape (N, H, W, 3) or (N, 3, H, W), got {x.shape}{hint}"
        )
    if len(x) == 0:
        raise ValueError("images is empty (N = 0): a dataset needs at least one image")
    if x.shape[-1] != 3:  # channels first -> channels last
        x = x.transpose(0, 2, 3, 1)
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{lo}, {hi}]; divide 0-255 data by 255 "
                "or pass it as uint8"
            )
        x = np.rint(x * 255.0).astype(np.uint8)
    else:
        raise TypeError(
            f"images must be uint8 (0-255) or float (0-1), got dtype {x.dtype}; "
            "for integer 0-255 data use images.astype(np.uint8)"
        )
    x = np.ascontiguousarray(x)

    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels must have shape ({len(x)},) to match the images, got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    num_classes = len(classes) if classes is not None else int(y.max()) + 1
    if classes is not None and num_classes == 0:
        raise ValueError("classes is empty: give one name per class, or leave classes=None")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for {num_classes} classes, got {int(bad.sum())} outside "
            f"(min {int(y.min())}, max {int(y.max())}); pass classes= with one name per class, "
            "or remap the labels to 0..K-1"
        )
    counts = np.bincount(y, minlength=num_classes)
    if (counts > 0).sum() < 2:
        raise ValueError(f"the labels name {int((counts > 0).sum())} class(es); a classifier needs at least 2")
    if classes is None and (counts == 0).sum() > num_classes // 2:
        raise ValueError(
            f"labels span 0..{num_classes - 1} but {int((counts == 0).sum())} of those {num_classes} classes have "
            f"no image (only {int((counts > 0).sum())} are used; largest label {int(y.max())}): remap the labels to "
            "0..K-1, or pass classes= with one name per class if the empty classes are intended"
        )
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    return ImageSource(x, y, names, name)


# ----------------------------------------------------------------------------------------------------
# digits: scikit-learn's 1,797 real 8x8 handwritten digits, the embedded offline dataset


def load_digits(train: bool = True, test_fraction: float = 0.2, seed: int = 0, image_size: int = 32) -> ImageSource:
    """scikit-learn's digits upscaled (bilinear) to image_size x image_size x 3 uint8, stratified split.

    The split depends only on (test_fraction, seed): train and test never overlap and each keeps the
    class proportions of the whole set (360 test / 1,437 train images at the defaults).
    """
    import torch
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    check_range("test_fraction", test_fraction, 0, 1, closed="()", hint="share of the images held out for testing")
    bunch = _sk_digits()
    pixels = bunch.images.astype(np.float32) / 16.0  # sklearn values are 0..16
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    idx = np.sort(idx_train if train else idx_test)
    small = torch.from_numpy(pixels[idx]).unsqueeze(1)  # (n, 1, 8, 8) in [0, 1]
    big = torch.nn.functional.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    big = (big.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).squeeze(1).numpy()
    images = np.ascontiguousarray(np.repeat(big[..., None], 3, axis=-1))
    classes = [str(d) for d in range(10)]
    return ImageSource(images, labels[idx], classes, f"digits-{'train' if train else 'test'}")


# ----------------------------------------------------------------------------------------------------
# CIFAR-10 through torchvision


def _cifar10_help(root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 is not available under {root} ({reason}).\n"
        f"To install it by hand: on a machine with internet access download\n"
        f"    {CIFAR10_URL}\n"
        f"(the file {CIFAR10_FILENAME}, about 163 MB, md5 {CIFAR10_MD5}), then EITHER\n"
        f"  - put {CIFAR10_FILENAME} in the folder {root}/ and call again with download=True "
        f"(it is verified and extracted without network access), OR\n"
        f"  - extract it there yourself (tar -xzf {CIFAR10_FILENAME} -C {root}) so that "
        f"{root / CIFAR10_FOLDER}/ holds data_batch_1 ... data_batch_5, test_batch and batches.meta.\n"
        f"Delete a partial {CIFAR10_FILENAME} left by an interrupted download first."
    )


def load_cifar10(train: bool = True, root: str | os.PathLike = "data", download: bool = True) -> ImageSource:
    """CIFAR-10 (50,000 train / 10,000 test 32x32 images) via ``torchvision.datasets.CIFAR10``.

    Downloads ``cifar-10-python.tar.gz`` into ``root`` when missing and ``download`` is true. When the
    data is neither there nor downloadable, raises ``FileNotFoundError`` saying which file to fetch
    and where to put it.
    """
    from torchvision.datasets import CIFAR10

    root_path = Path(root).expanduser().resolve()
    try:
        ds = CIFAR10(str(root_path), train=train, download=download)
    except Exception as exc:  # URLError, OSError, RuntimeError("Dataset not found or corrupted"), ...
        if download:
            reason = f"the download failed: {type(exc).__name__}: {exc}"
        else:
            reason = "download=False and the extracted files are missing or corrupted"
        raise FileNotFoundError(_cifar10_help(root_path, reason)) from exc
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8))
    labels = np.asarray(ds.targets, dtype=np.int64)
    return ImageSource(images, labels, list(ds.classes), f"cifar10-{'train' if train else 'test'}")


# ----------------------------------------------------------------------------------------------------
# Image folders (torchvision ImageFolder layout)


def load_folder(path: str | os.PathLike, image_size: int | tuple[int, int] = 32, name: str | None = None) -> ImageSource:
    """Read ``path/<class_name>/<image files>`` into memory, resized (bilinear) to ``image_size``.

    Classes are the sorted sub-folder names (torchvision's ImageFolder rule); images are converted to RGB.
    """
    from PIL import Image
    from torchvision.datasets import ImageFolder

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder {folder.resolve()} does not exist; expected the layout "
            f"{folder}/<class_name>/<image>.png (one sub-folder per class)"
        )
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        ds = ImageFolder(str(folder))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"no images found in {folder.resolve()} ({exc}); expected the layout "
            f"{folder}/<class_name>/<image>.png (one sub-folder per class, files .png/.jpg/...)"
        ) from exc
    if len(ds.classes) < 2:
        raise ValueError(f"{folder.resolve()} has {len(ds.classes)} class folder(s) ({', '.join(ds.classes)}); a "
                         "classifier needs at least 2: one sub-folder per class")
    images = np.empty((len(ds.samples), h, w, 3), dtype=np.uint8)
    for i, (file, _) in enumerate(ds.samples):
        try:
            with Image.open(file) as img:
                images[i] = _rgb8(img).resize((w, h), Image.BILINEAR)
        except OSError as exc:
            raise OSError(f"cannot read the image {file} ({exc}); replace or remove it") from exc
    labels = np.asarray(ds.targets, dtype=np.int64)
    return ImageSource(images, labels, list(ds.classes), name or folder.name)


def _rgb8(img):
    """An 8-bit RGB copy of ``img``; 16-bit and 32-bit modes are scaled to 0-255, not clipped."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return img.convert("RGB")


# ----------------------------------------------------------------------------------------------------
# Registry by name


def _loaders() -> dict[str, Callable[..., ImageSource]]:
    # a fresh dict per call: nothing module-level for callers to mutate
    return {
        "cifar10": lambda train, root, download, **kw: load_cifar10(train=train, root=root, download=download, **kw),
        "digits": lambda train, root, download, **kw: load_digits(train=train, **kw),
    }


def _canonical(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def list_sources() -> list[str]:
    """Names accepted by ``load_source``."""
    return sorted(_loaders())


def load_source(
    name: str, train: bool = True, root: str | os.PathLike = "data", download: bool = True, **kw: Any
) -> ImageSource:
    """Load a named source ("cifar10", "digits"); ``kw`` goes to its loader (e.g. ``seed=`` for digits)."""
    loaders = _loaders()
    key = _canonical(name)
    if key not in loaders:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {list_sources()} "
            "(for your own data use from_arrays(...) or load_folder(...))"
        )
    try:
        return loaders[key](train, root, download, **kw)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"load_source({name!r}): {exc}") from exc
        raise
