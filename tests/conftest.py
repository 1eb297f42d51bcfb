"""Shared test settings: headless matplotlib, no network for albumentations, small thread count."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Under pytest-xdist (`-n auto`) the workers share the cores: each gets its share of torch threads, and
# the subprocesses it starts (torchrun ranks, notebook kernels) inherit the same count, unless
# OMP_NUM_THREADS was set by the caller. Oversubscribed threads spin-wait and made small runs up to 10x slower.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a busy 2-core CPU two threads made the small training runs up to 10x slower (spin-waits)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def load_benchmark(monkeypatch):
    """``load_benchmark("run")``: the module benchmarks/run.py (its folder on sys.path, as when it is run)."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"woolly_benchmark_{name}", folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, mod)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(folder, RunResult) of a 1-epoch digits run of the compact net (width 8) made through the recipe."""
    from woollylib.recipe import Recipe

    out = tmp_path_factory.mktemp("tiny") / "run"
    result = Recipe.from_flat(model="compact", model_opt={"width": 8}, dataset="digits", batch_size=64, epochs=1,
                              lr=0.05, seed=0, out_dir=str(out), progress=False, verbose=False).train("cpu")
    return out, result
