"""Peak resident memory of one epoch through one loader (run by run.py in a fresh subprocess).

    python benchmarks/_memory.py device_loader 50000 cpu
    -> {"tree_peak_mb": ..., "tree_pss_mb": ..., "self_peak_mb": ..., "torch_baseline_mb": ..., "data_mb": ..., "images_per_s": ...}

tree_peak_mb / tree_pss_mb: the process plus its DataLoader workers (RSS counts shared library
pages once per worker, PSS shares them out), sampled every 20 ms with psutil (the whole
tree at once: what the machine must hold); self_peak_mb: this process alone, from the kernel's
high-water mark (VmHWM; getrusage's ru_maxrss would carry over the parent's peak across exec).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import torch
from _common import MEAN, STD, synthetic_cifar


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over the process and its children, bytes. RSS counts pages shared by the
    workers (torch's libraries) once per process; PSS splits them: the machine's real cost."""
    rss = pss = 0
    for p in (proc, *proc.children(recursive=True)):
        try:
            rss += p.memory_info().rss
            pss += _pss(p.pid)
        except (psutil.Error, OSError):
            pass
    return rss, pss


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss  # no smaps: fall back to RSS


def self_peak_mb() -> float:
    """Peak RSS of this process in MiB: VmHWM (Linux), else getrusage (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def main(kind: str, n: int, device: str) -> None:
    proc = psutil.Process()
    baseline = proc.memory_info().rss / 2**20  # the interpreter with torch imported, before any data
    images, labels = synthetic_cifar(n)
    data_mb = images.nbytes / 2**20
    peak = list(tree_rss(proc))  # [rss, pss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss, pss = tree_rss(proc)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    tmp = None
    if kind.startswith("albumentations"):
        from woollylib.preloading import from_arrays, make_loader, train_transforms

        loader = make_loader(from_arrays(images, labels), train_transforms(MEAN, STD), 512, train=True,
                             num_workers=int(kind[-1]), seed=0)
    elif kind == "device_loader":
        from woollylib.preloading import DeviceLoader

        loader = DeviceLoader((images, labels), 512, train=True, mean=MEAN, std=STD, device=device, seed=0)
    elif kind == "airbench":
        import airbench

        tmp = tempfile.TemporaryDirectory()
        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                    "classes": [str(i) for i in range(10)]}, os.path.join(tmp.name, "train.pt"))
        del images  # airbench holds its own copy, loaded from train.pt
        loader = airbench.CifarLoader(tmp.name, train=True, batch_size=512, gpu="cpu" if device == "cpu" else device,
                                      aug={"flip": True, "translate": 4, "cutout": 16})
    else:
        raise SystemExit(f"unknown loader {kind!r}")
    t0, k = time.perf_counter(), 0
    for x, _y in loader:
        k += len(x)
    dt = time.perf_counter() - t0
    stop.set()
    rss, pss = tree_rss(proc)
    peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
    print(json.dumps({"tree_peak_mb": peak[0] / 2**20, "tree_pss_mb": peak[1] / 2**20, "self_peak_mb": self_peak_mb(), "torch_baseline_mb": baseline, "data_mb": data_mb,
                      "images": k, "images_per_s": k / dt}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "cpu")
