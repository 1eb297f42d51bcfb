"""The demo app (``woollylib app``) in a real browser and through gradio_client: a digits run served on a free
loopback port, an uploaded test image's top class equal to the Predictor's, a Grad-CAM overlay, the gallery of
misclassified images, an unreadable upload answered in the page; a port in use; the Space folder served from
a fresh virtual environment.

Every server is a subprocess on 127.0.0.1 (``sys.executable -m woollylib app``, the checkout on PYTHONPATH),
waited for with a deadline and killed in its fixture's teardown; the browser is Debian's headless chromium
driven by selenium. Screenshots: ``<tmp_path>/woollylib_app.png``, copied to /tmp/woollylib_app.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from woollylib.predict import Predictor

gradio = pytest.importorskip("gradio", reason="the demo app needs gradio: pip install 'woollylib[app]'")
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOT = Path("/tmp/woollylib_app.png")
START_S = 90   # a server must answer within this (torch + gradio imports, the run's data and model)
WAIT_S = 30    # a page element or a request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(tmp: Path, pythonpath: bool = True) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp),
           "GRADIO_TEMP_DIR": str(tmp / "gradio"), "NO_ALBUMENTATIONS_UPDATE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = str(ROOT)
    else:
        env.pop("PYTHONPATH", None)
    return env


class Server:
    """A subprocess serving http://127.0.0.1:PORT/; ``stop()`` terminates it (then kills)."""

    def __init__(self, cmd, port: int, cwd, env, log: Path):
        self.port, self.url, self.log = port, f"http://127.0.0.1:{port}/", log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = START_S) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the app exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.answers():
                return self
            time.sleep(0.3)
        pytest.fail(f"the app did not answer on {self.url} within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# ------------------------------------------------------------------------------------ fixtures ---

@pytest.fixture(scope="module")
def images(tiny_run, tmp_path_factory):
    """Two digits test images as PNG files, and a text file named .png."""
    _, result = tiny_run
    folder = tmp_path_factory.mktemp("uploads")
    good = [folder / "test_007.png", folder / "test_123.png"]
    for path, i in zip(good, (7, 123)):
        Image.fromarray(result.data.test_source.images[i]).save(path)
    bad = folder / "notes.png"
    bad.write_text("this is a text file, not an image\n")
    return good, bad


@pytest.fixture(scope="module")
def predictor(tiny_run):
    out, _ = tiny_run
    return Predictor.from_run(out, "best", "cpu")  # the app's default: best.pt when the run has one


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    srv = Server([sys.executable, "-m", "woollylib", "app", str(out), "--port", str(port)], port, ROOT,
                 env_for(tmp), tmp / "server.log")
    try:
        yield srv.wait()
    finally:
        srv.stop()


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("no headless browser: apt-get install -y --no-install-recommends chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1200", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


# --------------------------------------------------------------------------------- the browser ---

def _wait(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        pytest.fail(f"the page did not show {what} within {WAIT_S} s")


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text.strip() if found else ""


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    box = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#wl-input input[type=file]"), "the upload box")
    box[0].send_keys(str(path))


def _shown_classes(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#wl-top dt')].map(e => e.textContent.trim())")


def test_the_page_in_a_browser(server, browser, images, predictor, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    (good, other), bad = images
    expected = predictor.predict(good, top_k=5)[0]
    browser.get(server.url)
    _wait(browser, lambda d: "compact on digits" in _text(d, "h1"), "the title")

    # upload -> the top class and the top-k list equal the Predictor's for the same file
    _upload(browser, good)
    _wait(browser, lambda d: _text(d, "#wl-top [data-testid=label-output-value]"), "a top class")
    assert _text(browser, "#wl-top [data-testid=label-output-value]") == expected.label
    assert _shown_classes(browser) == [c for c, _ in expected.top[:3]]        # k = 3 by default
    k_box = browser.find_element(By.CSS_SELECTOR, "#wl-topk input[type=number]")
    k_box.send_keys(Keys.CONTROL, "a")                                        # the user picks k = 5
    k_box.send_keys("5", Keys.ENTER)
    _wait(browser, lambda d: len(_shown_classes(d)) == 5, "5 classes")
    assert _shown_classes(browser) == [c for c, _ in expected.top]

    # Grad-CAM on -> an overlay image that the browser has loaded
    assert not browser.find_elements(By.CSS_SELECTOR, "#wl-overlay img")
    browser.find_element(By.CSS_SELECTOR, "#wl-cam input[type=checkbox]").click()
    loaded = "return [...document.querySelectorAll('#wl-overlay img')].map(i => i.complete ? i.naturalWidth : 0)"
    widths = _wait(browser, lambda d: [w for w in d.execute_script(loaded) if w > 0], "a Grad-CAM overlay")
    assert widths[0] >= 128                                   # enlarged from 32x32 for the page
    assert "Grad-CAM: gradcam on layer3" in _text(browser, "#wl-status")
    browser.save_screenshot(str(tmp_path / "woollylib_app.png"))
    shutil.copyfile(tmp_path / "woollylib_app.png", SHOT)

    # the misclassified gallery: images with "true X → Y (p%)" captions
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Misclassified").click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wl-gallery img")) >= 1, "gallery images")
    captions = [line for line in _text(browser, "#wl-gallery").splitlines() if line.startswith("true ")]
    classes = set(predictor.classes)
    assert captions and all(c.split()[1] in classes and c.split()[3] in classes and "→" in c for c in captions)
    assert all(c.split()[1] != c.split()[3] for c in captions)  # misclassified: true differs from predicted
    browser.save_screenshot(str(tmp_path / "woollylib_app_gallery.png"))

    # the run's metrics and protocol
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Run").click()
    _wait(browser, lambda d: "test accuracy" in _text(d, "#wl-summary"), "the run's metrics")
    summary = _text(browser, "#wl-summary")
    assert "protocol" in summary and "test-only" in summary and "digits" in summary

    # a text file named .png: an error in the page, and the server keeps answering
    browser.get(server.url)
    _upload(browser, bad)
    _wait(browser, lambda d: "cannot be read as an image" in _text(d, "#wl-status"), "the error message")
    assert "notes.png" in _text(browser, "#wl-status") and "Upload a PNG" in _text(browser, "#wl-status")
    assert server.proc.poll() is None and server.answers()
    browser.get(server.url)
    _upload(browser, other)
    _wait(browser, lambda d: _text(d, "#wl-top [data-testid=label-output-value]"), "a top class after the error")
    assert _text(browser, "#wl-top [data-testid=label-output-value]") == predictor.predict(other)[0].label


# ------------------------------------------------------------------------------ gradio_client ---

def _top(label: dict) -> list[str]:
    return [c["label"] for c in label["confidences"]]


def test_the_same_checks_through_gradio_client(server, images, predictor):
    (good, other), bad = images
    client = Client(server.url, verbose=False)
    assert {"/predict", "/misclassified"} <= set(client.view_api(print_info=False, return_format="dict")
                                                 ["named_endpoints"])
    expected = predictor.predict([good, other], top_k=4)
    for path, exp in zip((good, other), expected):
        label, shown, status = client.predict(handle_file(str(path)), 4, True, "layer3", "gradcam", 0.5,
                                              api_name="/predict")
        assert label["label"] == exp.label and _top(label) == [c for c, _ in exp.top]
        probs = [c["confidence"] for c in label["confidences"]]
        assert probs == pytest.approx([q for _, q in exp.top], abs=1e-5)
        overlay = Image.open(shown["value"] if isinstance(shown, dict) else shown)
        assert overlay.size[0] >= 128 and overlay.mode == "RGB"
        assert f"Predicted **{exp.label}**" in status

    gallery = client.predict(api_name="/misclassified")
    assert len(gallery) == 12
    for item in gallery:
        assert Image.open(item["image"]).size == (32, 32)
        true, pred = item["caption"].split()[1], item["caption"].split()[3]
        assert true in predictor.classes and pred in predictor.classes and true != pred

    label, shown, status = client.predict(handle_file(str(bad)), 3, False, "layer3", "gradcam", 0.5,
                                          api_name="/predict")
    assert not label and "notes.png cannot be read as an image" in status
    _, _, status = client.predict(handle_file(str(good)), 3, True, "nolayer", "gradcam", 0.5, api_name="/predict")
    assert status.startswith("**Error:**") and "nolayer" in status        # a bad stage: a message, no crash
    assert server.proc.poll() is None and server.answers()

    # latency of one image (upload + predict + answer), median of 20, Grad-CAM off
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        label, _, _ = client.predict(handle_file(str(good)), 3, False, "layer3", "gradcam", 0.5, api_name="/predict")
        times.append(time.perf_counter() - t0)
        assert label["label"] == expected[0].label
    median = statistics.median(times)
    print(f"\napp latency, one 32x32 image through gradio_client: median {1000 * median:.1f} ms of 20 "
          f"(min {1000 * min(times):.1f}, max {1000 * max(times):.1f})")
    assert median < 5.0


# ------------------------------------------------------------------------------ port, content ---

def test_a_port_in_use_names_a_free_one(tiny_run, tmp_path):
    out, _ = tiny_run
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "woollylib", "app", str(out), "--port", str(port)], cwd=ROOT,
                           env=env_for(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr and "pass --port " in r.stderr
    suggested = int(r.stderr.split("pass --port ")[1].split()[0])
    from woollylib.app import check_port

    assert suggested != port and check_port(suggested) == suggested


def test_without_the_data_set_the_gallery_says_so(tiny_run, tmp_path):
    """A run whose data set is not on this machine (CIFAR-10, not downloaded) still predicts; the gallery
    tab explains why it is empty."""
    from woollylib.app import load_content, make_blocks

    out, _ = tiny_run
    moved = tmp_path / "run"
    shutil.copytree(out, moved)
    config = json.loads((moved / "config.json").read_text())
    config["settings"]["data"].update(dataset="cifar10", data_dir=str(tmp_path / "no-data"))
    config["data"]["name"] = "cifar10"
    (moved / "config.json").write_text(json.dumps(config))
    (moved / "manifest.json").unlink()  # hand-edited: no longer the files the manifest vouches for
    content = load_content(moved, device="cpu", cache_dir=tmp_path / "cache")
    assert not content.misclassified and not content.examples
    assert "needs the run's test set (cifar10)" in content.gallery_note and "CIFAR-10 is not available" in \
        content.gallery_note
    make_blocks(content)  # the page builds


# ---------------------------------------------------------------------------------- the Space ---

def test_the_space_folder_runs_from_a_fresh_venv(tiny_run, images, predictor, tmp_path):
    """``--space DIR``, then ``python app.py`` in a new venv: woollylib installed from this checkout (pip
    install --no-deps -e, no network), the other requirements from the test environment (a .pth file), and
    ``pip install -r requirements.txt`` satisfied offline."""
    from woollylib._version import __version__

    out, _ = tiny_run
    space = tmp_path / "space"
    r = subprocess.run([sys.executable, "-m", "woollylib", "app", str(out), "--space", str(space)], cwd=ROOT,
                       env=env_for(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    names = {p.relative_to(space).as_posix() for p in space.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "model.pt", "config.json", "metrics.json",
            "misclassified.json"} <= names
    assert len([n for n in names if n.startswith("examples/")]) == 10
    assert len([n for n in names if n.startswith("misclassified/")]) == 12
    reqs = (space / "requirements.txt").read_text().split()
    assert reqs[0] == f"woollylib=={__version__}" and reqs[1].startswith("gradio>=")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = str(venv / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    parent = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "_test_env.pth").write_text("\n".join(parent) + "\n")  # torch, gradio, pip... of this environment
    env = env_for(tmp_path, pythonpath=False)
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input", "install", "--no-index"]
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=120)
    r = subprocess.run([*pip, "-r", "requirements.txt"], cwd=space, env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr        # everything satisfied, nothing fetched
    where = subprocess.run([py, "-c", "import woollylib; print(woollylib.__file__)"], cwd=space, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).resolve() == (ROOT / "woollylib" / "__init__.py").resolve()

    port = free_port()
    srv = Server([py, "app.py"], port, space,
                 {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}, tmp_path / "space.log")
    try:
        srv.wait()
        client = Client(srv.url, verbose=False)
        (good, _), _ = images
        label, shown, _status = client.predict(handle_file(str(good)), 3, True, "layer3", "gradcam", 0.5,
                                              api_name="/predict")
        exp = predictor.predict(good)[0]
        assert label["label"] == exp.label and _top(label) == [c for c, _ in exp.top]
        assert shown["value"] if isinstance(shown, dict) else shown
        gallery = client.predict(api_name="/misclassified")
        assert len(gallery) == 12 and all(g["caption"].startswith("true ") for g in gallery)
    finally:
        srv.stop()


def test_without_gradio_the_command_names_the_extra(tiny_run, monkeypatch, capsys):
    from woollylib import cli

    out, _ = tiny_run
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert cli.main(["app", str(out)]) == 2
    assert "pip install 'woollylib[app]'" in capsys.readouterr().err
