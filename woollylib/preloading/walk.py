"""Look inside any loader or dataset: nested datasets, their augmentation pipelines, Normalize statistics.

Usage::

    from woollylib.preloading.walk import datasets_in, pipelines_in, normalize_stats, classes_of
    datasets_in(Subset(ConcatDataset([a, b]), idx))   # [the Subset, the ConcatDataset, a, b]
    pipelines_in(loader.dataset)                      # objects with set_random_seed (albumentations Compose)
    normalize_stats(loader)       # ((r, g, b), (r, g, b)) of its Normalize; NO_NORMALIZE; or None (unknown)
    classes_of(loader)            # the dataset's class names, or None

Works with woollylib's loaders, torch DataLoaders over user Datasets (``.transform``/``.transforms``
attributes; ``pipelines_in`` looks in every attribute, e.g. ``self.tf``), Subset/ConcatDataset nesting, torchvision datasets and Compose pipelines of
Albumentations or torchvision.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NO_NORMALIZE", "classes_of", "datasets_in", "normalize_stats", "pipelines_in", "transforms_of"]

NO_NORMALIZE = "no Normalize"  # normalize_stats: a pipeline was found and it does not normalise
_TRANSFORM_ATTRS = ("transform", "transforms", "train_transform", "test_transform")
_MAX_DEPTH = 8
_MAX_HELD = 32  # pipelines_in looks into lists/tuples/dicts of attributes up to this length


def datasets_in(obj: Any) -> list:
    """``obj`` (a loader's dataset or the loader itself) and every dataset nested in it, depth first:
    ``Subset.dataset``, ``ConcatDataset.datasets``, a loader's ``.dataset``."""
    found, seen = [], set()

    def visit(d, depth):
        if d is None or id(d) in seen or depth > _MAX_DEPTH or isinstance(d, (str, bytes)):
            return
        seen.add(id(d))
        found.append(d)
        visit(getattr(d, "dataset", None), depth + 1)
        for child in getattr(d, "datasets", None) or ():
            visit(child, depth + 1)

    visit(obj, 0)
    return found


def transforms_of(dataset: Any) -> list:
    """The transform objects a dataset holds in ``.transform``/``.transforms`` (and train/test_ variants)."""
    out = []
    for attr in _TRANSFORM_ATTRS:
        t = getattr(dataset, attr, None)
        if t is None or isinstance(t, (str, bytes)) or any(t is o for o in out):
            continue
        if isinstance(t, (list, tuple)):
            out.extend(t)
        else:
            out.append(t)
    return out


def _seedable(t) -> bool:
    return callable(getattr(t, "set_random_seed", None)) and not isinstance(t, type)


def pipelines_in(obj: Any) -> list:
    """Every transform with its own RNG (``set_random_seed``, as albumentations' Compose) that ``obj``'s
    datasets hold: in ``.transform``/``.transforms`` first, then in any other attribute (``self.tf``),
    alone or in a short list/tuple/dict."""
    out = []
    for d in datasets_in(obj):
        held = list(transforms_of(d))
        for value in (vars(d) if hasattr(d, "__dict__") else {}).values():
            if isinstance(value, dict):
                value = list(value.values())
            held.extend(value if isinstance(value, (list, tuple)) and len(value) <= _MAX_HELD else [value])
        for t in held:
            if _seedable(t) and not any(t is o for o in out):
                out.append(t)
    return out


def _steps(transform, depth=0):
    """The transform and every step nested in it (Compose/OneOf/StandardTransform ``.transforms``/``.transform``)."""
    if transform is None or depth > _MAX_DEPTH:
        return
    yield transform
    inner = getattr(transform, "transforms", None)
    if inner is None:
        inner = getattr(transform, "transform", None)
    if isinstance(inner, (list, tuple)):
        for t in inner:
            yield from _steps(t, depth + 1)
    elif inner is not None and inner is not transform and not isinstance(inner, (str, bytes)):
        yield from _steps(inner, depth + 1)


def _normalize_of(step):
    """(mean, std) of an Albumentations or torchvision Normalize step (0-1 pixel scale), else None."""
    if type(step).__name__ != "Normalize":
        return None
    mean, std = getattr(step, "mean", None), getattr(step, "std", None)
    if mean is None or std is None or getattr(step, "normalization", "standard") != "standard":
        return None
    as_tuple = (lambda v: tuple(float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)))
    mean, std = as_tuple(mean), as_tuple(std)
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return mean, std


def normalize_stats(obj: Any):
    """How ``obj``'s images are normalised: ``(mean, std)`` on the 0-1 scale, ``NO_NORMALIZE`` when
    its datasets have a transform without a Normalize step, or None when nothing can be read.

    ``obj``: a DataBundle, a loader with ``mean``/``std`` (DeviceLoader), a DataLoader (its
    dataset, nested datasets and their ``transform``s), a dataset, or a transform pipeline.
    """
    mean, std = getattr(obj, "mean", None), getattr(obj, "std", None)
    if mean is not None and std is not None and not callable(mean):
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    pipelines = [t for d in datasets_in(obj) for t in transforms_of(d)]
    if not pipelines and callable(obj) and not hasattr(obj, "__len__"):
        pipelines = [obj]  # a transform itself
    if not pipelines:
        return None
    for pipeline in pipelines:
        for step in _steps(pipeline):
            stats = _normalize_of(step)
            if stats is not None:
                return stats
    return NO_NORMALIZE


def classes_of(obj: Any):
    """Class names from ``obj`` or its datasets (``.classes``, or an ImageSource's), else None."""
    for d in datasets_in(obj):
        for holder in (d, getattr(d, "source", None)):
            classes = getattr(holder, "classes", None)
            if classes is not None and not callable(classes) and len(classes):
                return list(classes)
    return None
