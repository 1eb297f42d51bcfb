"""A validation split held out of the training source: stratified by class, seeded, recorded.

    from woollylib.preloading.split import stratified_split
    split = stratified_split(source.labels, 0.1, seed=0)   # or a count: 5000
    train, val = source.subset(split.train), source.subset(split.val)
    split.info()   # {"requested": 0.1, "count": 144, "seed": 0, "sha256": "...", "per_class": [...]}

Each class gives ``round(fraction x its count)`` images (a count is shared out over the classes in
proportion to their sizes, largest remainders first), drawn by one ``numpy`` generator seeded with
``seed``: the same seed gives the same split on every machine. The hash is the SHA-256 of the
sorted validation indices, so a resumed or reported run can check it uses the same split.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

__all__ = ["ValSplit", "check_val_split", "indices_sha256", "stratified_split"]


@dataclass(frozen=True)
class ValSplit:
    train: np.ndarray  # sorted indices into the source kept for training
    val: np.ndarray  # sorted indices held out for validation
    requested: float | int
    seed: int
    per_class: tuple[int, ...]

    def info(self) -> dict:
        """What config.json records: enough to rebuild and to check the split."""
        return {"requested": self.requested, "count": len(self.val), "seed": int(self.seed),
                "sha256": indices_sha256(self.val), "per_class": [int(n) for n in self.per_class]}


def indices_sha256(indices) -> str:
    return hashlib.sha256(np.sort(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()


def check_val_split(val_split, n: int | None = None) -> float | int:
    """``val_split`` as a fraction in (0, 0.5] or a count in [1, n/2]; a clear error otherwise."""
    if isinstance(val_split, bool) or not isinstance(val_split, Real):
        raise TypeError(f"val_split must be a fraction such as 0.1 or a count such as 5000, got {val_split!r}")
    if isinstance(val_split, Integral) or (float(val_split).is_integer() and val_split >= 1):
        count = int(val_split)
        if count < 1:
            raise ValueError(f"val_split={val_split}: hold out at least 1 image (or leave val_split unset)")
        if n is not None and count > n // 2:
            raise ValueError(f"val_split={count} is more than half of the {n} training images; hold out at most "
                             f"{n // 2} (or a fraction <= 0.5)")
        return count
    frac = float(val_split)
    if not math.isfinite(frac) or frac <= 0:
        raise ValueError(f"val_split={val_split}: a fraction must be > 0 (e.g. 0.1), or leave val_split unset")
    if frac > 0.5:
        raise ValueError(f"val_split={val_split} holds out more than half of the training set; use a fraction "
                         "<= 0.5 (e.g. 0.1)")
    return frac


def _per_class_counts(class_sizes: np.ndarray, requested: float) -> np.ndarray:
    if isinstance(requested, float):
        # round half up, per class (numpy's round is half-to-even)
        return np.floor(class_sizes * requested + 0.5).astype(np.int64)
    exact = class_sizes * (requested / class_sizes.sum())
    counts = np.floor(exact).astype(np.int64)
    short = int(requested - counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")  # largest remainders first, ties to low labels
    counts[order[:short]] += 1
    return counts


def stratified_split(labels, val_split, seed: int = 0, classes: list[str] | None = None) -> ValSplit:
    """Hold out ``val_split`` (a fraction or a count) of ``labels``' indices, stratified by class."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    requested = check_val_split(val_split, n)
    num_classes = int(labels.max()) + 1 if n else 0
    if classes is not None:
        num_classes = max(num_classes, len(classes))
    sizes = np.bincount(labels, minlength=num_classes)
    counts = _per_class_counts(sizes, requested)
    names = classes or [str(c) for c in range(num_classes)]
    empty_val = [f"{names[c]!r} ({sizes[c]} images)" for c in range(num_classes) if sizes[c] and counts[c] == 0]
    empty_train = [f"{names[c]!r} ({sizes[c]} images)" for c in range(num_classes)
                   if sizes[c] and counts[c] >= sizes[c]]
    if empty_val:
        raise ValueError(f"val_split={val_split} leaves no validation image of class {', '.join(empty_val)}: "
                         f"{int(counts.sum())} of {n} images held out; hold out more (a larger fraction or count)")
    if empty_train:
        raise ValueError(f"val_split={val_split} leaves no training image of class {', '.join(empty_train)}; "
                         "hold out fewer")
    rng = np.random.default_rng(int(seed))
    val = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if counts[c]:
            val.append(rng.permutation(members)[: counts[c]])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return ValSplit(train=np.flatnonzero(mask), val=val_idx, requested=requested, seed=int(seed),
                    per_class=tuple(int(x) for x in counts))
