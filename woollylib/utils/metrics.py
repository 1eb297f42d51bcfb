"""Evaluation helpers over a WHOLE loader: predictions, confusion matrix, per-class accuracy, misclassified.

Usage::

    from woollylib.utils import metrics
    probs, labels = metrics.predict(model, data.test_loader, device, tta_flip=True)
    cm = metrics.confusion_matrix((probs, labels))          # (K, K) int64, rows = true class
    acc = metrics.per_class_accuracy(cm)                    # (K,) percent
    wrong = metrics.misclassified(model, data, device, limit=20)   # data = DataBundle (mean/std/classes)
    wrong.images[0]        # HWC float in [0, 1] (pixel space), wrong.inputs[0] normalised CHW for Grad-CAM
    metrics.summary(model, data.test_loader, device, classes=data.classes)   # JSON-able dict

Loaders yield ``(images float (B,C,H,W) normalised, labels int64 (B,))``; batches are consumed in
loader order, so use the (unshuffled) test loader when indices matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .._checks import check_int
from ..bp.engine import unpack_batch
from ..device import evaluating, model_device
from ..preloading.transforms import denormalize

__all__ = [
    "Misclassified",
    "Predictions",
    "confusion_matrix",
    "denormalize",
    "misclassified",
    "per_class_accuracy",
    "predict",
    "summary",
]


class Predictions(NamedTuple):
    """Softmax probabilities (N, K) float32 and true labels (N,) int64, both on the CPU."""

    probs: torch.Tensor
    labels: torch.Tensor

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    @property
    def confidence(self) -> torch.Tensor:
        return self.probs.max(dim=1).values

    @property
    def accuracy(self) -> float:
        """Percent correct, 0..100."""
        return 100.0 * (self.preds == self.labels).float().mean().item() if len(self.labels) else float("nan")


def _loader_of(loader):
    """Accept a DataBundle (its test_loader) or a loader."""
    return loader.test_loader if hasattr(loader, "test_loader") else loader


@torch.no_grad()
def _batch_probs(model: nn.Module, images: torch.Tensor, tta_flip: bool) -> torch.Tensor:
    logits = model(images).float()
    if tta_flip:  # average the logits with the horizontally flipped image's, as the engine's evaluate
        logits = (logits + model(images.flip(-1)).float()) / 2
    return logits.softmax(dim=1)


def _iterate(model, loader, device, tta_flip):
    """Yield (images on cpu, labels cpu, probs cpu) per batch with the model in eval mode."""
    with evaluating(model):
        for index, batch in enumerate(_loader_of(loader)):
            images, labels = unpack_batch(batch, index)
            probs = _batch_probs(model, images.to(device, non_blocking=True), tta_flip)
            yield images, labels.cpu().long(), probs.cpu()


def predict(
    model: nn.Module, loader, device: str | torch.device | None = None, tta_flip: bool = False
) -> Predictions:
    """Softmax probabilities and labels over the whole loader.

    ``tta_flip``: softmax of the mean of the logits of each image and its horizontal flip (the same
    rule as ``bp.engine.evaluate``, so accuracies agree with the training history).
    """
    device = model_device(model, device)
    all_probs, all_labels = [], []
    for _, labels, probs in _iterate(model, loader, device, tta_flip):
        all_probs.append(probs)
        all_labels.append(labels)
    if not all_probs:
        raise ValueError("the loader yielded no batches; nothing to predict")
    return Predictions(torch.cat(all_probs), torch.cat(all_labels))


def _preds_labels(model_or_preds, loader, device, tta_flip) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(predicted class (N,), true class (N,), K if known) from a model+loader or from predictions."""
    if isinstance(model_or_preds, nn.Module):
        if loader is None:
            raise ValueError("pass loader= when giving a model (or pass predict(...) output instead)")
        p = predict(model_or_preds, loader, device, tta_flip=tta_flip)
        return p.preds.numpy(), p.labels.numpy(), p.probs.shape[1]
    if isinstance(model_or_preds, (tuple, list)) and len(model_or_preds) == 2:
        scores, labels = (torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x for x in model_or_preds)
        labels = labels.cpu().long().numpy()
        if scores.ndim == 2:
            return scores.argmax(dim=1).cpu().numpy(), labels, scores.shape[1]
        if scores.ndim == 1:
            return scores.cpu().long().numpy(), labels, None
    raise TypeError(
        "expected a model (with loader=) or a (probs (N,K) | preds (N,), labels (N,)) pair such as "
        f"predict(...)'s result, got {type(model_or_preds).__name__}"
    )


def confusion_matrix(
    model_or_preds,
    loader=None,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    tta_flip: bool = False,
) -> np.ndarray:
    """(K, K) int64 counts over the whole loader: row = true class, column = predicted class."""
    preds, labels, k = _preds_labels(model_or_preds, loader, device, tta_flip)
    if num_classes is None:
        num_classes = k if k is not None else int(max(preds.max(initial=0), labels.max(initial=0))) + 1
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes or preds.max() >= num_classes):
        raise ValueError(f"labels/predictions outside 0..{num_classes - 1}; pass the right num_classes")
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(
    model_or_preds_or_cm,
    loader=None,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    tta_flip: bool = False,
) -> np.ndarray:
    """(K,) percent correct per true class (NaN for a class with no samples).

    Accepts a model (+loader), a predictions pair, or a confusion matrix (K, K) ndarray.
    """
    if isinstance(model_or_preds_or_cm, np.ndarray) and model_or_preds_or_cm.ndim == 2:
        cm = model_or_preds_or_cm
    else:
        cm = confusion_matrix(model_or_preds_or_cm, loader, device, num_classes, tta_flip)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / totals, np.nan)


def _normalisation(loader, mean, std, classes):
    """(mean, std, classes) from the arguments, else from a DataBundle or the loader's attributes."""
    if hasattr(loader, "test_loader"):
        mean = loader.mean if mean is None else mean
        std = loader.std if std is None else std
        classes = getattr(loader, "classes", None) if classes is None else classes
    mean = getattr(loader, "mean", None) if mean is None else mean
    std = getattr(loader, "std", None) if std is None else std
    if mean is None or std is None:
        raise ValueError("pass mean= and std= (the Normalize statistics on [0, 1]), or a DataBundle as loader")
    return mean, std, classes


@dataclass
class Misclassified:
    """Misclassified samples in loader order.

    images: (N, H, W, C) float32 in [0, 1] (pixel space, for plotting);
    inputs: (N, C, H, W) normalised float tensor on the CPU (model input, e.g. for Grad-CAM);
    true, pred: (N,) int64; confidence: (N,) softmax probability of ``pred``;
    indices: (N,) position of each sample in the loader's iteration order; classes: names or None.
    """

    images: np.ndarray
    inputs: torch.Tensor
    true: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray
    indices: np.ndarray
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.true)

    def titles(self) -> list[str]:
        """'true → pred (conf%)' strings for plot titles."""
        name = (lambda i: self.classes[i]) if self.classes else str
        return [f"{name(t)} → {name(p)} ({100 * c:.0f}%)" for t, p, c in zip(self.true, self.pred, self.confidence)]


def misclassified(
    model: nn.Module,
    loader,
    device: str | torch.device | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limit: int | None = None,
    tta_flip: bool = False,
    classes: Sequence[str] | None = None,
) -> Misclassified:
    """Collect up to ``limit`` misclassified samples (all when None), with pixel-space images.

    ``loader`` may be a DataBundle: its test loader, mean, std and classes are used. ``mean``/``std``
    are the per-channel statistics on [0, 1] used by Normalize (defaults: the loader's attributes).
    """
    mean, std, classes = _normalisation(loader, mean, std, classes)
    if limit is not None:
        check_int("limit", limit, minimum=0, hint="None collects them all")
    device = model_device(model, device)
    inputs, true, pred, conf, idx = [], [], [], [], []
    seen, found = 0, 0
    if limit != 0:
        for images, labels, probs in _iterate(model, loader, device, tta_flip):
            c, p = probs.max(dim=1)
            wrong = torch.nonzero(p != labels).flatten()
            if limit is not None:
                wrong = wrong[: limit - found]
            if len(wrong):
                inputs.append(images[wrong.to(images.device)].detach().float().cpu())
                true.append(labels[wrong])
                pred.append(p[wrong])
                conf.append(c[wrong])
                idx.append(wrong + seen)
                found += len(wrong)
            seen += len(labels)
            if limit is not None and found >= limit:
                break
    if inputs:
        x = torch.cat(inputs)
        t, pr, cf, ix = (torch.cat(v).numpy() for v in (true, pred, conf, idx))
    else:
        x = torch.empty(0)
        t, pr, ix = (np.empty(0, dtype=np.int64) for _ in range(3))
        cf = np.empty(0, dtype=np.float32)
    pixels = denormalize(x, mean, std).permute(0, 2, 3, 1).numpy() if len(x) else np.empty((0,), np.float32)
    return Misclassified(
        images=pixels,
        inputs=x,
        true=t.astype(np.int64),
        pred=pr.astype(np.int64),
        confidence=cf.astype(np.float32),
        indices=ix.astype(np.int64),
        classes=list(classes) if classes is not None else None,
    )


def summary(
    model: nn.Module,
    loader,
    device: str | torch.device | None = None,
    classes: Sequence[str] | None = None,
    tta_flip: bool = False,
) -> dict[str, Any]:
    """JSON-able metrics over the whole loader: accuracy, per-class accuracy, confusion matrix."""
    if hasattr(loader, "test_loader"):
        classes = getattr(loader, "classes", None) if classes is None else classes
    p = predict(model, loader, device, tta_flip=tta_flip)
    k = p.probs.shape[1]
    cm = confusion_matrix(p, num_classes=k)
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a model with {k} outputs; pass matching classes=")
    per_class = per_class_accuracy(cm)
    return {
        "samples": len(p.labels),
        "accuracy": float(p.accuracy),  # percent
        "tta_flip": bool(tta_flip),
        "classes": names,
        "per_class_accuracy": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, per_class)},
        "confusion_matrix": cm.tolist(),  # rows = true class, columns = predicted class
    }
