"""A trained run as a portable model file: ONNX, TorchScript, or a self-describing ``.pt`` bundle.

    from woollylib.export import export
    export("runs/digits", "onnx")                 # runs/digits/model.onnx (dynamic batch), checked with onnxruntime
    export("runs/digits", "torchscript")          # runs/digits/model.torchscript.pt
    path = export("runs/digits", "pt")            # runs/digits/model.pt: weights + spec + classes + mean/std + size

    import woollylib
    model = woollylib.load_model(path)            # a ready model in eval mode
    model.predict("seven.png")[0].label           # files, folders, arrays, tensors (woollylib.predict)
    model.classes, model.mean, model.std, model.image_size

    woollylib export runs/digits --format onnx --out digits.onnx --weights best

Every export is checked before it is reported done: the exported model's outputs on real inputs (the run's
test images when its data can be rebuilt, else a fixed batch of random images) equal PyTorch's within
``ATOL`` (and at two more batch sizes for ONNX's dynamic batch). A file that fails the check is not
written: exports go to a temporary file beside the target and replace it only once checked. ONNX needs
``pip install 'woollylib[export]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["ATOL", "BUNDLE_FORMAT", "FORMATS", "ExportCheckError", "export", "load_model"]

FORMATS = ("onnx", "torchscript", "pt")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt": ".pt"}
BUNDLE_FORMAT, BUNDLE_VERSION = "woollylib-model", 1
ATOL = 1e-4  # largest |logit difference| an export may show against PyTorch (fp32 reduction order)


class ExportCheckError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than ATOL (nothing was written)."""


def _check_inputs(predictor, run_dir, n: int = 64) -> torch.Tensor:
    """Up to ``n`` real inputs: the run's test images when the data can be rebuilt, else fixed random images."""
    from .recipe import Recipe

    try:
        data = Recipe.from_run(run_dir).test_data("cpu")
        images = data.test_source.images[:n]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        h, w = predictor.image_size
        images = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return predictor.prepare(images).cpu()


def _compare(name: str, ours, theirs, limit: float | None = None) -> float:
    limit = ATOL if limit is None else limit
    diff = float(np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64)).max())
    if not np.isfinite(diff) or diff > limit:
        raise ExportCheckError(f"the {name} export's outputs differ from PyTorch's by {diff:.3g} (allowed {limit:g}); "
                               "nothing was written")
    return diff


def _onnx(model, x, tmp: Path) -> float:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx and onnxruntime: pip install 'woollylib[export]' ({exc})") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notes of torch's exporter
        torch.onnx.export(model, (x[:2],), str(tmp), dynamo=False, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for batch in (x, x[:1], x[:7]):  # the batch dimension is dynamic
            worst = max(worst, _compare("ONNX", session.run(None, {"images": batch.numpy()})[0], model(batch)))
    return worst


def _torchscript(model, x, tmp: Path) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes; torch.jit's own deprecation notes
        traced = torch.jit.trace(model, x[:2], check_trace=False)
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
    with torch.no_grad():
        return max(_compare("TorchScript", loaded(b), model(b)) for b in (x, x[:1]))


def _bundle(model, predictor, config: dict, x, tmp: Path, label: str) -> float:
    from ._version import __version__
    from .run import ModelSpec

    torch.save({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "woollylib": __version__,
                "model": model.state_dict(), "spec": ModelSpec.from_dict(config["model"]).to_dict(),
                "classes": predictor.classes, "mean": predictor.mean.flatten().tolist(),
                "std": predictor.std.flatten().tolist(), "image_size": list(predictor.image_size),
                "weights": label, "config": config}, tmp)
    loaded = load_model(tmp, "cpu")
    with torch.no_grad():
        return _compare("pt bundle", loaded(x), model(x))


def export(run_dir, format: str = "pt", out=None, *, weights: str = "last", verbose: bool = True) -> Path:
    """Export the run's ``weights`` as ``format`` ("onnx" | "torchscript" | "pt") to ``out`` (default
    RUN/model.onnx, RUN/model.torchscript.pt, RUN/model.pt); checked against PyTorch before it is written."""
    from .predict import Predictor
    from .run import RunDir

    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    predictor = Predictor.from_run(run_dir, weights, "cpu")
    model = predictor.model.float().eval()
    run = RunDir(run_dir)
    out = Path(out) if out else run.path / f"model{SUFFIXES[fmt]}"
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; name the file to write, e.g. {out / ('model' + SUFFIXES[fmt])}")
    out.parent.mkdir(parents=True, exist_ok=True)
    x = _check_inputs(predictor, run.path)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "onnx":
            diff = _onnx(model, x, tmp)
        elif fmt == "torchscript":
            diff = _torchscript(model, x, tmp)
        else:
            ckpt = run.load(weights, map_location="cpu")
            diff = _bundle(model, predictor, run.read_config(), x, tmp, f"{weights}.pt (epoch {ckpt.get('epoch')})")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(f"{tmp.name}*"):  # an exporter's side files
            extra.unlink(missing_ok=True)
    if verbose:
        print(f"wrote {out} ({fmt}, {weights} weights; checked on {len(x)} images: max |logit difference| "
              f"{diff:.2g} <= {ATOL:g})")
    return out


def load_model(path, device=None):
    """A ``.pt`` bundle from ``export(..., "pt")`` as a ready model in eval mode, with ``.predict(inputs,
    top_k=3)``, ``.classes``, ``.mean``, ``.std`` and ``.image_size``."""
    from .device import resolve_device
    from .predict import Predictor
    from .run import ModelSpec

    path = Path(path)
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such model file") from None
    except Exception as exc:  # anything torch cannot read as a weights-only file
        raise ValueError(f"{path} is not a woollylib model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path} is not a woollylib model bundle (made by woollylib export --format pt); "
                         "a run folder's last.pt/best.pt is read with woollylib.predict.Predictor.from_run(RUN)")
    if bundle.get("version") != BUNDLE_VERSION:
        raise ValueError(f"{path} is a bundle of version {bundle.get('version')!r}; this woollylib reads version "
                         f"{BUNDLE_VERSION}: upgrade woollylib")
    device = resolve_device(device)
    model = ModelSpec.from_dict(bundle["spec"]).build(len(bundle["classes"]))
    model.load_state_dict(bundle["model"])
    model.to(device).eval()
    predictor = Predictor(model, bundle["classes"], bundle["mean"], bundle["std"], bundle["image_size"], device)
    model.predict = predictor.predict
    model.classes, model.image_size = predictor.classes, predictor.image_size
    model.mean, model.std = tuple(bundle["mean"]), tuple(bundle["std"])
    return model
