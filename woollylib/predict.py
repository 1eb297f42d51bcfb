"""Predict with a trained run: image files, folders, arrays or tensors -> class names with probabilities.

    from woollylib.predict import Predictor
    p = Predictor.from_run("runs/digits", weights="best")      # only the run folder: no data set, no download
    for pred in p.predict(["seven.png", "photos/"], top_k=3):   # files (any size and mode PIL reads), folders
        print(pred.source, pred.label, f"{pred.probability:.1%}", pred.top)
    p.predict(array_uint8_nhwc)   # numpy (N, H, W, 3) / (H, W) uint8; a float tensor (N, 3, H, W) in [0, 1]

    woollylib predict runs/digits seven.png photos/ --weights best --top-k 3 --out preds.csv

An image is prepared as the run's data was: converted to RGB, resized (bilinear) to the run's image size
when it differs, scaled to [0, 1] and normalised with the run's own mean and std.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["IMAGE_SUFFIXES", "Prediction", "Predictor", "UnreadableImage", "predict"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class UnreadableImage(ValueError):
    """An input that is no image PIL can read (its path and PIL's reason)."""


@dataclass
class Prediction:
    source: str                      # the file, or "array[3]"
    top: list[tuple[str, float]]     # (class, probability), most probable first
    index: int                       # the predicted class index

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]

    def to_dict(self) -> dict:
        return {"source": self.source, "label": self.label, "probability": self.probability, "index": self.index,
                "top": [{"class": c, "probability": p} for c, p in self.top]}


def _image_files(paths) -> list[Path]:
    """Files as given and the images of folders (sorted; recursively), in order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)
    return out


def read_image(path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file (any mode PIL reads: grayscale, palette, RGBA, CMYK)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy
    except FileNotFoundError:
        raise UnreadableImage(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnreadableImage(f"{path}: not an image PIL can read ({exc})") from None


class Predictor:
    """A model in eval mode with the classes, normalisation and input size of the run it came from."""

    def __init__(self, model, classes, mean, std, image_size=(32, 32), device=None):
        from .device import model_device

        self.model = model.eval()
        self.classes = [str(c) for c in classes]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.image_size = tuple(int(v) for v in image_size)
        self.device = torch.device(device) if device is not None else model_device(model)

    @classmethod
    def from_run(cls, run_dir, weights: str = "last", device=None) -> Predictor:
        """The run's ``weights`` ("last" | "best") with its classes, mean/std and image size (config.json)."""
        from .device import resolve_device
        from .recipe import Recipe
        from .run import BEST, CONFIG, LAST, RunDir

        run = RunDir(run_dir)
        if weights not in ("last", "best"):
            raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
        recipe = Recipe.from_run(run.path)  # no config.json: not a run folder
        name = {"last": LAST, "best": BEST}[weights]
        if not run.has(name):
            raise FileNotFoundError(f"{run / name} is missing: {run.path} has no {weights} weights"
                                    + (" (pass --weights last)" if weights == "best" else ""))
        device = resolve_device(device)
        model, _, _ = recipe.load(weights, device, data=False)
        info = (run.read_config() or {}).get("data") or {}
        missing = [k for k in ("classes", "mean", "std") if not info.get(k)]
        if missing:
            raise ValueError(f"{run / CONFIG} records no {', '.join(missing)} of the run's data; it cannot be used "
                             "to predict (train it again with this release)")
        size = info.get("image_size") or (32, 32)
        return cls(model, info["classes"], info["mean"], info["std"], size, device)

    # ---- inputs

    def prepare(self, images) -> torch.Tensor:
        """uint8 (H, W, 3) images (a list, of any sizes, or an (N, H, W, 3) array) -> normalised float
        (N, 3, h, w) at the run's image size, on the device."""
        xs = []
        for img in images:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)
            if tuple(x.shape[-2:]) != self.image_size:
                x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False,
                                                    antialias=True).clamp_(0.0, 1.0)
            xs.append(x)
        return ((torch.cat(xs) - self.mean) / self.std).to(self.device)

    def _items(self, inputs, errors: list):
        """(source, uint8 HWC image) of every input; unreadable files go to ``errors`` (path, reason)."""
        if isinstance(inputs, (str, Path)) or (isinstance(inputs, (list, tuple)) and inputs
                                               and all(isinstance(i, (str, Path)) for i in inputs)):
            for path in _image_files([inputs] if isinstance(inputs, (str, Path)) else inputs):
                try:
                    yield str(path), read_image(path)
                except UnreadableImage as exc:
                    errors.append(str(exc))
            return
        array = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        yield from ((f"array[{i}]", img) for i, img in enumerate(_as_uint8_nhwc(array)))

    # ---- predicting

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes of a prepared batch."""
        return torch.softmax(self.model(x).float(), dim=1)

    def predict(self, inputs, top_k: int = 3, batch_size: int = 256, errors: list | None = None) -> list[Prediction]:
        """Predictions for files/folders (a path or a list of them), a numpy array or a tensor of images.
        An unreadable file is skipped and its reason appended to ``errors`` (a list you pass), else raised."""
        k = max(1, min(int(top_k), len(self.classes)))
        collect = errors if errors is not None else []
        out: list[Prediction] = []
        batch: list = []

        def flush():
            probs = self.probabilities(self.prepare([img for _, img in batch])).cpu()
            values, indices = probs.topk(k, dim=1)
            for (source, _), v, i in zip(batch, values.tolist(), indices.tolist()):
                out.append(Prediction(source, [(self.classes[j], p) for j, p in zip(i, v)], i[0]))
            batch.clear()

        for item in self._items(inputs, collect):
            batch.append(item)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if collect and errors is None:
            raise UnreadableImage("; ".join(collect))
        return out


def _as_uint8_nhwc(array: np.ndarray) -> np.ndarray:
    """Arrays as uint8 (N, H, W, 3): (H, W), (H, W, C), (N, H, W), (N, H, W, C), (N, C, H, W); floats in [0, 1]."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"image arrays must be uint8 (0-255) or float (0-1), got {a.dtype}")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4)):
        a = a[None]
    if a.ndim == 3:  # (N, H, W) grayscale
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"images must be (H, W), (H, W, C), (N, H, W, C) or (N, C, H, W); got shape {a.shape}")
    if a.shape[-1] not in (1, 3, 4) and a.shape[1] in (1, 3, 4):
        a = a.transpose(0, 2, 3, 1)  # NCHW
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def predict(run_or_model, inputs, *, weights: str = "last", top_k: int = 3, device=None, classes=None, mean=None,
            std=None, image_size=(32, 32), errors: list | None = None) -> list[Prediction]:
    """One call: a run folder (``weights``) or a model (with ``classes``, ``mean``, ``std``) predicts ``inputs``."""
    if isinstance(run_or_model, (str, Path)):
        predictor = Predictor.from_run(run_or_model, weights, device)
    else:
        if classes is None or mean is None or std is None:
            raise TypeError("predict(model, ...) needs classes=, mean= and std= (the model's data); or pass a run "
                            "folder, which records them")
        predictor = Predictor(run_or_model, classes, mean, std, image_size, device)
    return predictor.predict(inputs, top_k=top_k, errors=errors)


def write_predictions(predictions: list[Prediction], path) -> Path:
    """``.csv`` (source, label, probability, top) or ``.json`` (a list of Prediction.to_dict())."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps([p.to_dict() for p in predictions], indent=1), encoding="utf-8")
    elif path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["source", "label", "probability", "top"])
            for p in predictions:
                w.writerow([p.source, p.label, f"{p.probability:.6f}", " ".join(f"{c}:{q:.6f}" for c, q in p.top)])
    else:
        raise ValueError(f"--out {path}: write predictions to a .csv or a .json file")
    return path
