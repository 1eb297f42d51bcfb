"""The built wheel must ship every module of the package (woollylib 0.0.5 shipped 5 of 26)."""

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _source_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "woollylib").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _clean_env() -> dict:
    """This environment (CUDA and library paths, HOME for caches) without what could put the checkout
    on sys.path: the subprocess must import the installed wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(MPLBACKEND="Agg", NO_ALBUMENTATIONS_UPDATE="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", "data"),
    )
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    wheels = list(out.glob("woollylib-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_every_subpackage_has_init():
    for folder in (ROOT / "woollylib").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), f"{folder} is not a package"


def test_wheel_contains_every_module(wheel):
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.endswith(".py")}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "woollylib").rglob("*.py")}
    assert expected - shipped == set()
    assert not any(n.startswith("tests/") for n in shipped)


def test_installed_wheel_imports_every_module(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    modules = _source_modules()
    script = textwrap.dedent(
        f"""
        import importlib, sys
        sys.path.insert(0, {str(target)!r})
        import woollylib
        assert woollylib.__file__.startswith({str(target)!r}), woollylib.__file__
        for name in {modules!r}:
            importlib.import_module(name)
        print(woollylib.__version__, len({modules!r}))
        """
    )
    # run outside the source tree so the checkout cannot shadow the installed wheel
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=tmp_path, capture_output=True, text=True,
        env=_clean_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from woollylib import __version__

    assert result.stdout.split()[0] == __version__


def test_import_has_no_side_effects():
    code = textwrap.dedent(
        """
        import random, sys
        state = random.getstate()
        import woollylib
        assert random.getstate() == state, "import woollylib touched the RNG"
        heavy = [m for m in ("torch", "albumentations", "matplotlib", "pytorch_grad_cam") if m in sys.modules]
        assert not heavy, f"import woollylib loaded {heavy}"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_albumentations_argument_warnings_fail_the_suite():
    """pytest.ini turns albumentations' 'invalid/ignored argument' warnings into errors, so a
    pipeline built with 1.x argument names cannot pass the tests silently."""
    import albumentations as A

    with pytest.raises(UserWarning, match="are not valid for transform CoarseDropout"):
        A.CoarseDropout(max_holes=1, fill_value=0)
    with pytest.raises(UserWarning, match="special case of Affine"):
        A.ShiftScaleRotate()
