"""A Gradio demo of a trained run: upload an image, see the top classes, toggle Grad-CAM, browse mistakes.

    woollylib app runs/digits                       # http://127.0.0.1:7860
    woollylib app runs/digits --port 7861 --weights last --share
    woollylib app runs/digits --space space/        # a folder for a hosted Space: python space/app.py

    from woollylib import main
    main.app("runs/digits")                         # the same, from a notebook (port=, share=, weights=)

    from woollylib.app import build_app
    demo = build_app("runs/digits")                 # the gr.Blocks, to launch or mount yourself

The page has an image upload with up to 10 examples from the run's test set, the top-k classes (k on a
slider), a Grad-CAM overlay (stage, method and opacity), a gallery of misclassified test images with their
true and predicted labels (when the run's data set can be rebuilt on this machine), and the run's headline
metrics and protocol. Predictions go through ``woollylib.predict.Predictor`` (the run's own classes,
mean/std and image size), maps through ``woollylib.utils.gradcam``. A file that is no image gets a message
in the page; the server keeps serving. Gradio is the optional extra ``pip install 'woollylib[app]'``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import WoollylibError

__all__ = ["DemoContent", "PortInUseError", "build_app", "check_port", "launch_app", "load_content",
           "make_blocks", "run_summary", "write_space"]

GRADIO_HINT = "the demo app needs gradio: pip install 'woollylib[app]'"
SHOWN_SIZE = 256  # px: 32x32 images and overlays are enlarged (nearest) to this for the page


class PortInUseError(WoollylibError, OSError):
    """The port the app should listen on is taken (the message suggests a free one)."""


def _gradio():
    try:
        import gradio as gr
    except ImportError as exc:
        raise ImportError(f"{GRADIO_HINT} ({exc})") from None
    return gr


# ---------------------------------------------------------------------------------- content ---

@dataclass
class DemoContent:
    """Everything the page shows: a Predictor and the run's examples, mistakes and summary."""

    predictor: object                        # woollylib.predict.Predictor
    title: str
    summary: str                             # Markdown: headline metrics and protocol
    examples: list[str] = field(default_factory=list)             # PNG files from the test set
    misclassified: list[tuple[str, str]] = field(default_factory=list)  # (PNG file, "true 3 → 8 (71%)")
    gallery_note: str = ""                   # why there is no gallery (no data set here), else ""
    stages: list[str] = field(default_factory=list)
    default_stage: str | None = None


def _percent(value) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def run_summary(config: dict, metrics: dict | None, weights_label: str = "") -> str:
    """Markdown of a run's headline metrics and protocol (config.json and metrics.json contents)."""
    model = config.get("model") or {}
    settings = config.get("settings") or {}
    data = config.get("data") or {}
    dataset = data.get("name") or (settings.get("data") or {}).get("dataset") or "?"
    options = ", ".join(f"{k}={v}" for k, v in (model.get("options") or {}).items())
    params = model.get("parameters")
    rows = [("model", f"`{model.get('name', '?')}`" + (f" ({options})" if options else "")
             + (f", {params:,} parameters" if isinstance(params, int) else "")),
            ("dataset", (f"{dataset}: {len(data.get('classes') or [])} classes, "
                        f"{'x'.join(str(v) for v in data.get('image_size') or (32, 32))} images"))]
    if weights_label:
        rows.append(("weights", weights_label))
    m = metrics or {}
    if metrics is None:
        rows.append(("test accuracy", "not measured (metrics.json is missing: the run did not finish)"))
    else:
        rows.append(("test accuracy", (f"**{_percent(m.get('accuracy'))}** on {m.get('samples', '?')} test images "
                                      f"({m.get('model_weights', 'last epoch')})")))
        rows.append(("epochs", str(m.get("epochs", (settings.get("schedule") or {}).get("epochs", "?")))))
        if m.get("protocol") == "validation":
            rows.append(("protocol", (f"validation: best.pt and every decision used the validation split; the "
                                     f"epoch chosen there ({m.get('val_chosen_epoch')}) has val "
                                     f"{_percent(m.get('val_chosen_val_acc'))}, test "
                                     f"{_percent(m.get('val_chosen_test_acc'))}")))
        else:
            rows.append(("protocol", (f"test-only: no validation split, nothing was chosen; the headline is the "
                                     f"final epoch (peak {_percent(m.get('peak_test_acc'))} at epoch "
                                     f"{m.get('peak_test_epoch')} was chosen on the test set: optimistic)")))
    optim = settings.get("optim") or {}
    sched = settings.get("schedule") or {}
    if optim:
        rows.append(("training", (f"{optim.get('name')} lr {optim.get('lr')}, {sched.get('name')} schedule, "
                                 f"batch {(settings.get('data') or {}).get('batch_size')}, seed "
                                 f"{(settings.get('run') or {}).get('seed')}")))
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    per_class = m.get("per_class_accuracy")
    if isinstance(per_class, dict) and per_class:
        lines += ["", "**Per-class test accuracy**", "",
                  "| " + " | ".join(map(str, per_class)) + " |", "|" + "---|" * len(per_class),
                  "| " + " | ".join(f"{v:.1f}" if isinstance(v, (int, float)) else str(v)
                                    for v in per_class.values()) + " |"]
    return "\n".join(lines)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text))[:40] or "x"


def _save_png(pixels, path: Path) -> str:
    from PIL import Image

    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    Image.fromarray(a).save(path)
    return str(path)


def _pick_examples(labels, n: int) -> list[int]:
    """Up to ``n`` test indices: the first image of each class in turn, then the next ones."""
    labels = np.asarray(labels)
    order: list[int] = []
    seen: dict[int, int] = {}
    for i, y in enumerate(labels.tolist()):
        if y not in seen:
            seen[y] = i
            order.append(i)
    order = sorted(order, key=lambda i: labels[i])[:n]  # by class
    chosen = set(order)
    return order + [i for i in range(len(labels)) if i not in chosen][: max(0, n - len(order))]


def _test_pixels(data):
    """(uint8 (N, H, W, 3) images, labels) of the test set, in loader order."""
    source = data.test_source
    images = getattr(source, "images", None)
    labels = getattr(source, "labels", None)
    if images is not None and labels is not None:
        return np.asarray(images), np.asarray(labels)
    xs, ys = [], []
    for x, y in data.test_loader:
        xs.append((data.denormalize(x).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        ys.append(y.cpu().numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _gallery_from(model, data, device, n: int, folder: Path) -> list[tuple[str, str]]:
    from .utils.metrics import misclassified

    wrong = misclassified(model, data, device, limit=n)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (img, t, p, c) in enumerate(zip(wrong.images, wrong.true, wrong.pred, wrong.confidence)):
        caption = f"true {data.classes[t]} → {data.classes[p]} ({100 * float(c):.0f}%)"
        out.append((_save_png(img, folder / f"{i:02d}_true-{_safe_name(data.classes[t])}.png"), caption))
    return out


def _weights_of(run, weights: str | None) -> str:
    if weights is None:
        from .run import BEST

        return "best" if run.has(BEST) else "last"
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    return weights


def load_content(run_dir, weights: str | None = None, device=None, n_examples: int = 10, n_misclassified: int = 12,
                 cache_dir=None) -> DemoContent:
    """The page's content for the run in ``run_dir``: its ``weights`` (default best.pt if present, else
    last.pt), up to ``n_examples`` test images and ``n_misclassified`` mistakes as PNG files in
    ``cache_dir`` (default: a new temporary folder). Without the data set, no examples and a gallery note."""
    from ._checks import check_int
    from .predict import Predictor
    from .recipe import Recipe
    from .run import RunDir
    from .utils.gradcam import default_stage, list_stages

    check_int("n_examples", n_examples, minimum=0, hint="up to 10 examples fit the page")
    check_int("n_misclassified", n_misclassified, minimum=0)
    run = RunDir(run_dir)
    weights = _weights_of(run, weights)
    predictor = Predictor.from_run(run.path, weights, device)
    recipe = Recipe.from_run(run.path)
    _, _, label = recipe.load(weights, "cpu", data=False)
    config = run.read_config()
    if cache_dir is None:
        cache_dir = tempfile.mkdtemp(prefix="woollylib-app-")
        atexit.register(shutil.rmtree, cache_dir, True)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    examples, gallery, note = [], [], ""
    try:
        data = recipe.test_data(predictor.device)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        data = None
        dataset = recipe.settings.data.dataset
        note = (f"The misclassified gallery needs the run's test set ({dataset}), which cannot be rebuilt on this "
                f"machine: {str(exc).splitlines()[0]}")
    if data is not None:
        images, labels = _test_pixels(data)
        (cache / "examples").mkdir(exist_ok=True)
        for j, i in enumerate(_pick_examples(labels, min(n_examples, 10))):
            name = f"{j:02d}_{_safe_name(data.classes[int(labels[i])])}.png"
            examples.append(_save_png(images[i], cache / "examples" / name))
        if n_misclassified:
            gallery = _gallery_from(predictor.model, data, predictor.device, n_misclassified, cache / "misclassified")
            if not gallery:
                note = "No test image is misclassified."
    model_name = (config.get("model") or {}).get("name", "model")
    dataset = (config.get("data") or {}).get("name") or recipe.settings.data.dataset
    stages = list_stages(predictor.model)
    return DemoContent(predictor, f"woollylib demo: {model_name} on {dataset}",
                       run_summary(config, run.read_metrics(), label), examples, gallery, note, stages,
                       default_stage(predictor.model, (3, *predictor.image_size)) if stages else None)


# ------------------------------------------------------------------------------- inference ---

class _Demo:
    """The page's callbacks over one Predictor (one request at a time touches the model: CAM hooks)."""

    def __init__(self, content: DemoContent):
        self.content = content
        self.p = content.predictor
        self.lock = threading.Lock()

    @staticmethod
    def _path(value):
        """The upload's file (the event runs with preprocess=False: a FileData dict), a path or an array."""
        if value is None:
            return None
        if isinstance(value, dict):
            return value.get("path")
        return value

    def _image(self, value) -> np.ndarray:
        from .predict import read_image

        value = self._path(value)
        if isinstance(value, (str, os.PathLike)):
            return read_image(value)
        from .predict import _as_uint8_nhwc

        return _as_uint8_nhwc(np.asarray(value))[0]

    def _shown(self, pixels) -> np.ndarray:
        """uint8 HWC enlarged (nearest) to about SHOWN_SIZE px, so small images stay crisp."""
        a = np.asarray(pixels)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        f = max(1, SHOWN_SIZE // max(a.shape[:2]))
        return np.repeat(np.repeat(a, f, axis=0), f, axis=1)

    def analyse(self, image, top_k=3, cam=False, stage=None, method="gradcam", alpha=0.5):
        """(top classes {class: probability}, overlay image or None, status Markdown) of one upload."""
        gr = _gradio()
        overlay_out = gr.update(value=None, visible=bool(cam))
        if self._path(image) is None:
            return None, overlay_out, "Upload an image or pick an example."
        try:
            pixels = self._image(image)
        except (ValueError, TypeError, OSError) as exc:
            from .predict import UnreadableImage

            path = self._path(image)
            name = Path(str(path)).name if isinstance(path, (str, os.PathLike)) else "the input"
            reason = "it is not an image file PIL can read" if isinstance(exc, UnreadableImage) else str(exc)
            return None, overlay_out, (f"**Error: {name} cannot be read as an image** ({reason}). "
                                       "Upload a PNG, JPEG, BMP, GIF or WebP image.")
        try:
            with self.lock:
                k = max(1, min(int(top_k or 1), len(self.p.classes)))
                x = self.p.prepare([pixels])
                probs = self.p.probabilities(x)[0].cpu()
                values, indices = probs.topk(k)
                top = {self.p.classes[i]: float(v) for v, i in zip(values.tolist(), indices.tolist())}
                status = (f"Predicted **{self.p.classes[indices[0]]}** ({100 * float(values[0]):.1f}%); "
                          f"image {pixels.shape[1]}x{pixels.shape[0]}, model input "
                          f"{self.p.image_size[1]}x{self.p.image_size[0]}.")
                if cam:
                    shown, note = self._overlay(x, stage or self.content.default_stage, method, float(alpha))
                    overlay_out = gr.update(value=shown, visible=True)
                    status += f" Grad-CAM: {method} on {stage or self.content.default_stage}." + note
        except Exception as exc:  # noqa: BLE001 (a bad stage/method or anything else: a message in the page, not a crash)
            traceback.print_exc()
            return None, overlay_out, f"**Error:** {exc}"
        return top, overlay_out, status

    def _overlay(self, x, stage: str, method: str, alpha: float):
        from .utils.gradcam import compute_cams, overlay

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cams = compute_cams(self.p.model, x, stages=stage, method=method)
        pixels = (x[0].cpu() * self.p.std[0] + self.p.mean[0]).clamp(0, 1).permute(1, 2, 0).numpy()
        rgb = overlay(pixels, cams[stage][0], alpha=alpha)
        note = "".join(f" Note: {w.message}" for w in caught if issubclass(w.category, UserWarning))
        return self._shown(rgb), note

    def gallery(self):
        return list(self.content.misclassified)


# ------------------------------------------------------------------------------------ page ---

CSS = """
#wl-input img, #wl-overlay img, #wl-gallery img { image-rendering: pixelated; }
#wl-input img { width: 100%; height: 100%; object-fit: contain; }
#wl-status { min-height: 3em; }
"""


def make_blocks(content: DemoContent):
    """The gr.Blocks page of ``content`` (launch it, or mount it in your own FastAPI app)."""
    gr = _gradio()
    from .utils.gradcam import list_cam_methods

    demo_fns = _Demo(content)
    k_max = len(content.predictor.classes)
    private = {"api_visibility": "private"}
    with gr.Blocks(title=content.title) as demo:
        gr.Markdown(f"# {content.title}")
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"), gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", label="Image (any size; resized to the model's input)",
                                     sources=["upload", "clipboard"], height=280, elem_id="wl-input")
                    button = gr.Button("Predict", variant="primary", elem_id="wl-predict")
                    top_k = gr.Slider(1, k_max, value=min(3, k_max), step=1, label="Top-k classes",
                                      elem_id="wl-topk")
                    with gr.Group():
                        cam = gr.Checkbox(value=False, label="Show Grad-CAM", elem_id="wl-cam")
                        with gr.Row():
                            stage = gr.Dropdown(content.stages, value=content.default_stage, label="Stage",
                                                elem_id="wl-stage")
                            method = gr.Dropdown(list_cam_methods(), value="gradcam", label="Method",
                                                 elem_id="wl-method")
                        alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity",
                                          elem_id="wl-alpha")
                    if content.examples:
                        gr.Examples(content.examples, inputs=image, label="Examples from the test set",
                                    examples_per_page=10)
                with gr.Column(scale=1):
                    status = gr.Markdown("Upload an image or pick an example.", elem_id="wl-status")
                    top = gr.Label(label="Top classes", elem_id="wl-top")
                    shown = gr.Image(label="Grad-CAM overlay", visible=False, interactive=False, height=280, format="png",
                                     elem_id="wl-overlay")
            with gr.Tab("Misclassified", id="misclassified"):
                if content.misclassified:
                    gr.Markdown(f"The first {len(content.misclassified)} misclassified test images "
                                "(caption: true class → predicted class, with the predicted class's probability).")
                gallery = gr.Gallery(label="Misclassified test images", columns=6,
                                     object_fit="contain", elem_id="wl-gallery",
                                     visible=bool(content.misclassified))
                gr.Markdown(content.gallery_note, elem_id="wl-gallery-note", visible=bool(content.gallery_note))
            with gr.Tab("Run", id="run"):
                gr.Markdown(content.summary, elem_id="wl-summary")
        inputs = [image, top_k, cam, stage, method, alpha]
        outputs = [top, shown, status]
        button.click(demo_fns.analyse, inputs, outputs, api_name="predict", preprocess=False)
        image.change(demo_fns.analyse, inputs, outputs, preprocess=False, **private)
        for control in (cam, stage, method, top_k, alpha):  # a slider's change: dragged or typed
            control.change(demo_fns.analyse, inputs, outputs, preprocess=False, trigger_mode="always_last",
                           **private)
        demo.load(demo_fns.gallery, None, gallery, api_name="misclassified")
    demo.woollylib_cache = [str(Path(p).parent) for p in content.examples[:1]] + \
                           [str(Path(p).parent) for p, _ in content.misclassified[:1]]
    return demo


def build_app(run_dir, weights: str | None = None, device=None, n_examples: int = 10, n_misclassified: int = 12):
    """The demo page (gr.Blocks) of the run in ``run_dir``; ``weights`` default: best.pt if present, else last."""
    _gradio()
    return make_blocks(load_content(run_dir, weights, device, n_examples, n_misclassified))


# ---------------------------------------------------------------------------------- launch ---

def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_port(port: int, host: str = "127.0.0.1") -> int:
    """``port`` when it can be bound on ``host``; else PortInUseError naming a free port to use instead."""
    from ._checks import check_int

    check_int("port", port, minimum=1, hint="a TCP port such as 7860")
    if port > 65535:
        raise ValueError(f"port must be at most 65535, got {port}")
    if _port_free(host, port):
        return port
    other = next((p for p in range(port + 1, min(port + 100, 65536)) if _port_free(host, p)), None)
    hint = f"; pass --port {other} (port={other}), which is free" if other else "; pass another --port"
    raise PortInUseError(f"port {port} on {host} is already in use (another app or server is listening there){hint}")


def _serve(demo, port: int, share: bool, host: str, block: bool, allowed=()):
    check_port(port, host)
    print(f"woollylib app: serving on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=True,
                show_error=True, ssr_mode=False, allowed_paths=[p for p in allowed if p], theme="soft", css=CSS)
    return demo


def launch_app(run_dir, port: int = 7860, share: bool = False, host: str = "127.0.0.1", weights: str | None = None,
               device=None, n_examples: int = 10, n_misclassified: int = 12, block: bool = True):
    """Serve the demo of ``run_dir`` on ``host:port`` (``share``: also a public gradio.live link). The port is
    checked first; ``block=False`` returns the running gr.Blocks (``.close()`` stops it)."""
    _gradio()
    check_port(port, host)
    demo = build_app(run_dir, weights, device, n_examples, n_misclassified)
    return _serve(demo, port, share, host, block, demo.woollylib_cache)


# ----------------------------------------------------------------------------------- space ---

SPACE_APP = '''"""The woollylib demo of one trained run, for a hosted Space or any machine: python app.py

Serves http://$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860; a Space sets 0.0.0.0).
The model is model.pt: {{"model": state_dict, "config": the run's config.json}}, rebuilt with
woollylib.recipe.Recipe.from_config(config).build_model(num_classes).
"""

import json
import os
from pathlib import Path

import torch

from woollylib.app import DemoContent, make_blocks, run_summary, serve
from woollylib.predict import Predictor
from woollylib.recipe import Recipe
from woollylib.utils.gradcam import default_stage, list_stages

HERE = Path(__file__).resolve().parent


def load_predictor(device="cpu"):
    bundle = torch.load(HERE / "model.pt", map_location="cpu", weights_only=True)
    config, data = bundle["config"], bundle["config"]["data"]
    model = Recipe.from_config(config).build_model(len(data["classes"]))
    model.load_state_dict(bundle["model"])
    model.to(device).eval()
    return Predictor(model, data["classes"], data["mean"], data["std"], data.get("image_size") or (32, 32), device)


def content():
    predictor = load_predictor()
    config = json.loads((HERE / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((HERE / "metrics.json").read_text(encoding="utf-8")) if (HERE / "metrics.json").exists() else None
    gallery = json.loads((HERE / "misclassified.json").read_text(encoding="utf-8"))
    stages = list_stages(predictor.model)
    return DemoContent(
        predictor, {title!r}, run_summary(config, metrics, {weights!r}),
        examples=[str(p) for p in sorted((HERE / "examples").glob("*.png"))],
        misclassified=[(str(HERE / g["file"]), g["caption"]) for g in gallery],
        gallery_note="" if gallery else "No misclassified test images were bundled with this demo.",
        stages=stages, default_stage=default_stage(predictor.model, (3, *predictor.image_size)))


if __name__ == "__main__":
    serve(make_blocks(content()), host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
          port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), allowed=[str(HERE)])
'''

SPACE_README = """---
title: {title}
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
---

{title}: a woollylib {version} run ({summary_line}). Run it anywhere with

    pip install -r requirements.txt
    python app.py          # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address (default 127.0.0.1:7860)
"""


def serve(demo, port: int = 7860, host: str = "127.0.0.1", share: bool = False, allowed=(), block: bool = True):
    """Launch a page from :func:`make_blocks` on ``host:port`` after checking the port (the Space's app.py)."""
    return _serve(demo, port, share, host, block, allowed)


def write_space(run_dir, out_dir, weights: str | None = None, device=None, n_examples: int = 10,
                n_misclassified: int = 12) -> Path:
    """A ready folder for a hosted Space: app.py, requirements.txt (this release), README.md (Space card),
    model.pt + config.json + metrics.json, examples/ and misclassified/ (PNG) with misclassified.json."""
    import torch

    from ._version import __version__
    from .run import RunDir

    run = RunDir(run_dir)
    weights = _weights_of(run, weights)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: pass an empty or new --space folder")
    content = load_content(run.path, weights, device, n_examples, n_misclassified)
    tmp = Path(tempfile.mkdtemp(prefix=".space-", dir=out.parent if out.parent.exists() else None))
    try:
        config = run.read_config()
        ckpt = run.load(weights, map_location="cpu")
        state = {k.removeprefix("_orig_mod."): v.detach().cpu() for k, v in ckpt["model"].items()}
        torch.save({"model": state, "config": config}, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        metrics = run.read_metrics()
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        for sub in ("examples", "misclassified"):
            (tmp / sub).mkdir()
        for p in content.examples:
            shutil.copy2(p, tmp / "examples" / Path(p).name)
        gallery = []
        for p, caption in content.misclassified:
            shutil.copy2(p, tmp / "misclassified" / Path(p).name)
            gallery.append({"file": f"misclassified/{Path(p).name}", "caption": caption})
        (tmp / "misclassified.json").write_text(json.dumps(gallery, indent=1, ensure_ascii=False), encoding="utf-8")
        label = content.summary.split("| weights | ", 1)[-1].split(" |", 1)[0] if "| weights |" in content.summary \
            else f"{weights}.pt"
        (tmp / "app.py").write_text(SPACE_APP.format(title=content.title, weights=label), encoding="utf-8")
        gradio_version = _gradio().__version__
        major = int(gradio_version.split(".")[0])
        (tmp / "requirements.txt").write_text(
            f"woollylib=={__version__}\ngradio>=6.0,<{major + 1}\n", encoding="utf-8")
        acc = (metrics or {}).get("accuracy")
        (tmp / "README.md").write_text(SPACE_README.format(
            title=content.title, gradio=gradio_version, version=__version__,
            summary_line=f"test accuracy {acc:.2f}%" if isinstance(acc, (int, float)) else "not evaluated"),
            encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
