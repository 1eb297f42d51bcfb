"""Prediction throughput of a trained run on this machine: images/s at batch 1 and 256, from arrays and files.

    python benchmarks/predict_speed.py                       # a 1-epoch digits run of compact and custom_resnet
    python benchmarks/predict_speed.py --models compact --device cpu

Each model is trained for one epoch on digits into a temporary run folder, then ``Predictor.from_run`` predicts
the 360 test images: from a uint8 array at batch 1 and 256, and from PNG files at batch 256 (reading and
preparing included); the best of 3 rounds. Rows are printed as they are measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rate(fn, n: int, rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> None:
    import torch
    from PIL import Image

    from woollylib.precision import cpu_info
    from woollylib.predict import Predictor
    from woollylib.recipe import Recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="compact,custom_resnet")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda > mps > cpu)")
    args = ap.parse_args(argv)
    cpu = cpu_info()
    print(f"CPU {cpu.name}, torch kernels {cpu.capability}, {torch.get_num_threads()} threads; torch {torch.__version__}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            out = Path(tmp) / name
            result = Recipe.from_flat(model=name, dataset="digits", epochs=1, batch_size=64, lr=0.05, seed=0,
                                      out_dir=str(out), progress=False, verbose=False).train(args.device,
                                                                                              verbose=False)
            images = result.data.test_source.images
            files = Path(tmp) / f"{name}-png"
            files.mkdir()
            for i, img in enumerate(images):
                Image.fromarray(img).save(files / f"{i:03d}.png")
            p = Predictor.from_run(out, device=args.device)
            p.predict(images[:8])  # warm-up
            one = rate(lambda p=p, images=images: [p.predict(images[i:i + 1], batch_size=1) for i in range(64)], 64)
            many = rate(lambda p=p, images=images: p.predict(images, batch_size=256), len(images))
            from_files = rate(lambda p=p, files=files: p.predict(files, batch_size=256), len(images))
            print(f"{name:<14} on {p.device}: batch 1 {one:8,.0f} img/s   batch 256 {many:8,.0f} img/s   "
                  f"PNG files, batch 256 {from_files:8,.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
