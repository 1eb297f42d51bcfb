"""examples/course_notebook.ipynb (the course notebooks' call shapes, on digits) runs in a fresh kernel.

Each step is checked: every figure is displayed as a PNG, the model learned, the misclassified
grid with Grad-CAM is an image. Also: a utils.visualize figure displays as a PNG in a fresh kernel
where pyplot was never imported.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebook import _kernel_name

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "course_notebook.ipynb"


def _run(nb, workdir):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    # the kernel keeps the threads of this process (one per core, or the xdist worker's share)
    env.update(NO_ALBUMENTATIONS_UPDATE="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    client = NotebookClient(nb, kernel_name=_kernel_name(), timeout=600, resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(env=env)
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    seconds = _run(nb, tmp_path_factory.mktemp("course"))
    return nb, seconds


def _cell(nb, text):
    return next(c for c in nb.cells if c.cell_type == "code" and text in c.source)


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def _value(cell) -> str:
    return next(o for o in cell.outputs if o.output_type == "execute_result")["data"]["text/plain"]


def test_course_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
    source = "\n".join(c.source for c in nb.cells)
    for call in ("train_test_loop(model, device, train_loader, test_loader, EPOCHS, optimizer, scheduler, criterion)",
                 "plot_misclassified(model, test_loader, classes, device, no_misclf=20, plot_size=(4, 5), grad_CAM=True)",
                 "train_data, test_data, train_loader, test_loader, classes = download_data("):
        assert call in source


def test_course_notebook_runs_each_step(executed):
    nb, _ = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    figure_cells = [c for c in nb.cells if c.cell_type == "code" and re.search(
        r"^(display_|show_|plot_|visualize_|max_LR = max_lr)", c.source, re.MULTILINE)]
    assert len(figure_cells) == 8
    for cell in figure_cells:
        assert _images(cell) == 1, f"{_images(cell)} images for: {cell.source}"
    stats = "".join(o.get("text", "") for o in _cell(nb, "get_cifar_statistics").outputs)
    assert "[Train]" in stats and "mean" in stats
    lr = float(_value(_cell(nb, "max_LR = max_lr")))
    assert 1e-4 < lr < 5
    log = "".join(o.get("text", "") for o in _cell(nb, "history = train_test_loop").outputs)
    assert "epoch   2/2" in log
    assert float(_value(_cell(nb, "test_acc[-1]"))) > 50  # learned (chance: 10%)
    cam = _cell(nb, "grad_CAM=True")
    png = next(o for o in cam.outputs if "image/png" in o.get("data", {}))
    import base64
    import struct

    width, height = struct.unpack(">II", base64.b64decode(png["data"]["image/png"])[16:24])
    assert height > width  # 4 blocks of (images, two Grad-CAM rows) x 5 columns: taller than wide
    assert int(_value(_cell(nb, "get_misclassified_data"))) > 0


def test_visualize_figures_display_as_png_in_a_fresh_kernel(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import sys\nimport numpy as np\nfrom woollylib.utils import visualize as viz\n"
                                  "'matplotlib.pyplot' in sys.modules"),
        nbformat.v4.new_code_cell("viz.plot_image_channels(np.full((8, 8, 3), 0.5))"),
    ]
    _run(nb, tmp_path)
    assert _value(nb.cells[0]) == "False"  # pyplot (and its inline backend) never touched
    assert _images(nb.cells[1]) == 1
