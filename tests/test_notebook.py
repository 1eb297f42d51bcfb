"""examples/quickstart.ipynb executes top to bottom in a fresh kernel, each figure shown exactly once.

The kernel is this interpreter's ("python3"; jupyter_client starts it with sys.executable), in a
temporary working directory, without MPLBACKEND=Agg so matplotlib behaves as in Jupyter.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def _kernel_name() -> str:
    """'python3' when jupyter finds a kernel spec (ipykernel installs one into the venv)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:  # a bare environment: register this interpreter's kernel in sys.prefix
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix)
    return "python3"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path_factory.mktemp("quickstart")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    # the kernel keeps the threads of this process (one per core, or the xdist worker's share)
    env.update(NO_ALBUMENTATIONS_UPDATE="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    client = NotebookClient(nb, kernel_name=_kernel_name(), timeout=600,  # per cell: a guard against a hang, not a speed test
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(env=env)
    return nb, workdir, time.perf_counter() - start


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source


def test_notebook_executes_without_errors(executed):
    # how long it takes is a figure of the machine, stated in the README, not a test
    nb, _, _ = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def _images(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def test_every_figure_is_displayed_once_as_png(executed):
    nb, _, _ = executed
    figure_cells = [c for c in nb.cells if c.cell_type == "code"
                    and re.search(r"main\.(show_|plot_|max_lr|compare_optimizers)", c.source)]
    assert len(figure_cells) >= 12
    for cell in figure_cells:
        assert _images(cell) == 1, f"{_images(cell)} images for: {cell.source}"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "")
            # a Figure without a PNG formatter would only print its repr
            assert not (text.startswith("<Figure") and "image/png" not in out["data"]), cell.source


def test_notebook_leaves_a_run_directory_with_a_report(executed):
    nb, workdir, _ = executed
    run = workdir / "runs" / "digits-compact"
    for name in ("last.pt", "best.pt", "history.json", "config.json", "metrics.json", "report.md"):
        assert (run / name).is_file(), name
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (run / "report.md").read_text())
    assert len(links) >= 6
    for link in links:
        assert (run / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the lr the notebook printed is the one the run trained with
    lr_cell = next(c for c in nb.cells if "main.max_lr(" in c.source)
    shown = float(next(o for o in lr_cell.outputs if o.output_type == "execute_result")["data"]["text/plain"])
    import json

    assert json.loads((run / "config.json").read_text())["settings"]["optim"]["lr"] == pytest.approx(shown)
