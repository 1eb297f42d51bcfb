"""Latency of the demo app for one image: ``woollylib app`` serving a 1-epoch digits run, asked through
gradio_client (upload + predict + answer), the median of 20 requests, with Grad-CAM off and on.

    python benchmarks/app_latency.py                 # needs pip install 'woollylib[app]'
    python benchmarks/app_latency.py --requests 50

The server is a subprocess on a free 127.0.0.1 port, stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the app did not answer on {url} within {timeout} s")


def main(argv: list[str] | None = None) -> None:
    import torch
    from gradio_client import Client, handle_file
    from PIL import Image

    from woollylib.precision import cpu_info
    from woollylib.recipe import Recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args(argv)
    cpu = cpu_info()
    print(f"CPU {cpu.name}, torch kernels {cpu.capability}, {torch.get_num_threads()} threads; torch {torch.__version__}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        result = Recipe.from_flat(model="compact", model_opt={"width": 8}, dataset="digits", epochs=1, batch_size=64,
                                  lr=0.05, seed=0, out_dir=str(out), progress=False, verbose=False).train("cpu")
        image = Path(tmp) / "digit.png"
        Image.fromarray(result.data.test_source.images[0]).save(image)
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
        proc = subprocess.Popen([sys.executable, "-m", "woollylib", "app", str(out), "--port", str(port)], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait(url, proc)
            client = Client(url, verbose=False)
            for cam in (False, True):
                client.predict(handle_file(str(image)), 3, cam, "layer3", "gradcam", 0.5, api_name="/predict")  # warm
                times = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    client.predict(handle_file(str(image)), 3, cam, "layer3", "gradcam", 0.5, api_name="/predict")
                    times.append(time.perf_counter() - t0)
                print(f"app latency, one 32x32 image, Grad-CAM {'on ' if cam else 'off'}: median "
                      f"{1000 * statistics.median(times):.1f} ms of {args.requests} (min {1000 * min(times):.1f}, "
                      f"max {1000 * max(times):.1f})", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
