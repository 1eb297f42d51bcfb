"""One process against two (torchrun, gloo) on this CPU: compact model, digits, global batch 64.

    python benchmarks/distributed_cpu.py            # launches the three runs and prints the table

Each run trains 3 epochs (Albumentations loader, the digits augmentation, fp32) and reports the
training images per second of wall time over epochs 2-3 (each epoch: 1,437 training images plus the
evaluation of 360 test images). Run it on an idle machine: the figure is wall-clock time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCHS, BATCH = 3, 64


def _worker(out: str) -> None:
    import torch

    from woollylib.models import get_model
    from woollylib.preloading import get_data
    from woollylib.training import Trainer

    torch.manual_seed(0)
    data = get_data("digits", batch_size=BATCH, seed=0, verbose=False, num_workers=0)
    model = get_model("compact", num_classes=10)
    t = Trainer(model, data, "cpu", epochs=EPOCHS, lr=0.05, progress=False, verbose=False, seed=0)
    h = t.fit()
    if t.dist.rank == 0:
        seconds = sum(h.epoch_time[1:])
        n = len(data.train_source) * (EPOCHS - 1)
        Path(out).write_text(json.dumps({"world_size": t.dist.world_size, "img_s": n / seconds}))


def _run(label: str, cmd: list[str], threads: int) -> dict:
    out = tempfile.mktemp(suffix=".json")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    subprocess.run([*cmd, __file__, "--worker", out], env=env, check=True, capture_output=True)
    result = json.loads(Path(out).read_text())
    print(f"{label:<40} {result['img_s']:8,.0f} img/s", flush=True)
    return result


def main() -> None:
    py = [sys.executable]
    _run("1 process, 1 thread", py, 1)
    _run("1 process, 2 threads", py, 2)
    _run("2 processes (torchrun, gloo), 1 thread each", [*py, "-m", "torch.distributed.run", "--standalone",
                                                         "--nproc-per-node=2"], 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        main()
