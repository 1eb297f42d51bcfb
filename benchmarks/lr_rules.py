"""Which LR range-test suggestion rule leads to the best short one-cycle run?

    OMP_NUM_THREADS=1 python benchmarks/lr_rules.py                  # every model, ~40 min on 2 busy cores
    OMP_NUM_THREADS=1 python benchmarks/lr_rules.py --models compact --seeds 0 1 2 3
    python benchmarks/lr_rules.py --quick                            # smoke run: compact, 1 epoch, 2 lrs

For each registered model on digits (batch 32, the notebook augmentation of ``main.download_data``):
one LR range test (``main.max_lr``'s settings: SGD momentum 0.9, 1e-7 -> 10 over 100 batches) from
the seeded initial weights, every rule of ``woollylib.scheduler.SUGGESTIONS`` read off that curve,
then one short one-cycle run per lr (``train_test_loop``: SGD momentum 0.9, no weight decay) from the same
initial weights at each rule's lr and at each lr of a max_lr grid. Printed: test accuracy per rule,
the grid's best, and per rule the mean shortfall against it (accuracy points) over models and seeds.
The ResNets run ``--resnet-epochs`` (default 1) epochs with bf16 autocast on the CPU (2.6-3x faster
there) for seed 0, the compact net ``--epochs`` (default 2) in fp32 for seeds 0, 1, 2. Results: benchmarks/results/lr_rules.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_model(name: str, seed: int, epochs: int, amp, grid, device: str) -> dict:
    from woollylib import main
    from woollylib.scheduler import SUGGESTIONS, find_lr, suggest_lr

    data = main.download_data("digits", batch_size=32, seed=seed, verbose=False)
    model = main.select_model(name, device, data=data, seed=seed, summary=False)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    curve = find_lr(model, data.train_loader, "sgd", device=device, momentum=0.9, verbose=False)
    finder_s = time.perf_counter() - t0
    rules = {rule: suggest_lr(curve.lrs, curve.losses, rule)[0] for rule in SUGGESTIONS}
    accs: dict[float, float] = {}

    def train(lr: float) -> float:
        key = float(f"{lr:.6g}")
        if key not in accs:
            model.load_state_dict(init)
            history = main.train_test_loop(model, data, device, max_lr=key, epochs=epochs, seed=seed, amp=amp,
                                           progress=False, verbose=False)
            accs[key] = history.test_acc[-1]
            print(f"  {name:<14} seed {seed}  max_lr {key:<9.3g} -> {accs[key]:6.2f}%", flush=True)
        return accs[key]

    t0 = time.perf_counter()
    by_rule = {rule: {"lr": lr, "acc": train(lr)} for rule, lr in rules.items()}
    by_grid = {lr: train(lr) for lr in grid}
    best_lr = max(by_grid, key=by_grid.get)
    return {"model": name, "seed": seed, "epochs": epochs, "amp": amp, "finder_s": round(finder_s, 1),
            "train_s": round(time.perf_counter() - t0, 1), "rules": by_rule,
            "grid": {str(k): v for k, v in by_grid.items()}, "grid_best": {"lr": best_lr, "acc": by_grid[best_lr]}}


def table(results: list[dict]) -> str:
    from woollylib.scheduler import SUGGESTIONS

    lines = [f"{'model':<14} {'seed':>4}  " + "  ".join(f"{r:>18}" for r in SUGGESTIONS) + f"  {'grid best':>18}"]
    for r in results:
        cells = [f"{r['rules'][k]['acc']:6.2f}% @ {r['rules'][k]['lr']:<8.3g}" for k in SUGGESTIONS]
        best = f"{r['grid_best']['acc']:6.2f}% @ {r['grid_best']['lr']:<8.3g}"
        lines.append(f"{r['model']:<14} {r['seed']:>4}  " + "  ".join(f"{c:>18}" for c in cells) + f"  {best:>18}")
    lines.append("")
    lines.append("mean shortfall against the grid's best (accuracy points; lower is better), worst case:")
    for k in SUGGESTIONS:
        gaps = [r["grid_best"]["acc"] - r["rules"][k]["acc"] for r in results]
        lines.append(f"  {k:<10} {sum(gaps) / len(gaps):6.2f}  (worst {max(gaps):6.2f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    from woollylib.models import list_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="seeds of the compact net")
    p.add_argument("--resnet-seeds", nargs="*", type=int, default=[0], help="seeds of the ResNets")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the compact net")
    p.add_argument("--resnet-epochs", type=int, default=1, help="epochs of the ResNets")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="compact net, 1 epoch, grid 0.03 and 0.3")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lr_rules.json"))
    args = p.parse_args(argv)
    models = args.models or list_models()
    grid = (0.03, 0.3) if args.quick else GRID
    if args.quick:
        models, args.epochs, args.seeds = ["compact"], 1, [0]
    print(f"LR suggestion rules on digits; {cpu_name()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}", flush=True)
    results = []
    for name in models:
        resnet = name != "compact"
        epochs = args.resnet_epochs if resnet else args.epochs
        amp = (True if args.device == "cpu" else "auto") if resnet else False
        for seed in (args.resnet_seeds if resnet else args.seeds):
            results.append(run_model(name, seed, epochs, amp, grid, args.device))
    print()
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "device": args.device, "results": results}, indent=1))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
