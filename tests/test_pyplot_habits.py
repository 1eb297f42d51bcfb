"""Figures behave as pyplot users expect, in a fresh kernel (nbclient) as in Jupyter/Colab.

Each habit must show every figure exactly once: the call as the cell's value, the call followed
by ``plt.show()``, calls in a loop (with or without ``plt.show()``), ``display(fig)``; and
``plt.savefig`` after a call writes the real figure. Plain pyplot figures keep behaving as before.
"""

from __future__ import annotations

import nbformat
import pytest
from test_course_notebook import _run

CELLS = {
    "setup": "import numpy as np\nfrom torch import nn\nfrom woollylib import main\nfrom woollylib.utils import visualize as viz\n"
             "cm = np.array([[50, 3, 1], [4, 40, 6], [2, 5, 44]])\nlrs = [0.01, 0.1, 0.05, 0.01]",
    "value_before_pyplot": "viz.plot_confusion_matrix(cm)",  # pyplot first imported by woollylib, inside the call
    "import": "import matplotlib.pyplot as plt\nlen(plt.get_fignums())",
    "value": "viz.plot_confusion_matrix(cm, classes=['a', 'b', 'c'])",
    "show": "viz.plot_confusion_matrix(cm)\nplt.show()",
    "loop": "for k in range(3):\n    viz.plot_lr_schedule(lrs[: k + 2])",
    "loop_show": "for k in range(3):\n    viz.plot_lr_schedule(lrs[: k + 2])\n    plt.show()",
    "display": "fig = viz.plot_lr_schedule(lrs)\ndisplay(fig)",
    "display_loop": "for k in range(2):\n    display(viz.plot_lr_schedule(lrs))",
    "main_value": "main.show_accuracy_loss({'train_loss': [2.0, 1.0], 'test_loss': [1.5, 1.1], "
                  "'train_acc': [30.0, 60.0], 'test_acc': [40.0, 55.0]})",
    "current": "fig = viz.plot_confusion_matrix(cm)\nplt.gcf() is fig",
    "data": "data = main.download_data('digits', batch_size=256, seed=0, verbose=False)\n"
            "model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))",
    "savefig": "main.show_confusion_matrix(model, data, 'cpu', save_path='cm_ref.png')\nplt.savefig('cm.png')",
    "plain_pyplot": "plt.plot([1, 3, 2]);",
    "nothing_left": "len(plt.get_fignums())",
}


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def _value(cell) -> str:
    return next(o for o in cell.outputs if o.output_type == "execute_result")["data"]["text/plain"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("habits")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS.values()]
    _run(nb, workdir)
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    return dict(zip(CELLS, nb.cells)), workdir


@pytest.mark.parametrize("name, images", [
    ("value_before_pyplot", 1), ("value", 1), ("show", 1), ("loop", 3), ("loop_show", 3), ("display", 1),
    ("display_loop", 2), ("main_value", 1), ("current", 1), ("savefig", 1), ("plain_pyplot", 1),
    ("setup", 0), ("import", 0), ("data", 0), ("nothing_left", 0),
])
def test_each_figure_is_shown_exactly_once(executed, name, images):
    cells, _ = executed
    assert _images(cells[name]) == images, (name, [o.output_type for o in cells[name].outputs])


def test_returned_figure_is_pyplot_current_and_cells_leave_nothing_open(executed):
    cells, _ = executed
    assert _value(cells["current"]) == "True"
    assert _value(cells["import"]) == "0" and _value(cells["nothing_left"]) == "0"


def test_plt_savefig_after_a_call_writes_the_real_figure(executed):
    _, workdir = executed
    real, saved = (workdir / "cm_ref.png").stat().st_size, (workdir / "cm.png").stat().st_size
    assert real > 20_000  # a blank figure of that size is about 2.4 KB
    assert 0.6 < saved / real < 1.6, (saved, real)
