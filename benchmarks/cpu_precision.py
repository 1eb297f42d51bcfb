"""bf16 autocast against fp32 on this CPU, for every registered model: what amp="auto" is decided by.

    python benchmarks/cpu_precision.py                      # every model: speed + digits over 3 seeds (~10 min)
    python benchmarks/cpu_precision.py --models compact,custom_resnet --seeds 0,1
    python benchmarks/cpu_precision.py --quick              # smoke run: compact, 1 seed, tiny sizes

For each model, channels_last (as the trainer runs it on the CPU):
  speed     training images/s of the engine in fp32 and in bf16 autocast, on the same batches and initial
            weights (batch 64 of synthetic 32x32 images; 3 interleaved rounds of 3 timed steps after a warm-up
            step; the median round).
  digits    one short one-cycle run on the digits set per seed (SGD Nesterov, wd 5e-4, batch 32, the model's
            recipe below) in fp32 and in bf16: final test accuracy and training seconds, mean and min-max.
  decision  bf16 "pays" when it trains >= 1.15x faster and its mean accuracy is within the noise of fp32's
            (|difference| <= max(1 point, the larger seed spread)); printed beside what
            ``woollylib.precision.choose_precision(cpu, "auto", model=...)`` picks, so a rule that disagrees
            with the measurement shows.

Only meaningful on a CPU with native bf16 (AVX-512-bf16 or AMX-bf16, torch's AVX512 kernels); elsewhere the
bf16 rows measure emulation, and the run says so. Each row is printed as soon as it is measured and the JSON
(benchmarks/results/cpu_precision-<stamp>.json) rewritten after each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
HERE = Path(__file__).resolve().parent
for p in (str(HERE.parent), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch

# the digits recipe per model: (epochs, max_lr); batch 32, SGD Nesterov, wd 5e-4, one-cycle
RECIPES = {"compact": (3, 0.2), "custom_resnet": (1, 0.05), "resnet18": (1, 0.05), "resnet34": (1, 0.05)}
SPEEDUP_NEEDED = 1.15


def _save(path: Path, report: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)


def speed(name: str, quick: bool) -> dict:
    import run as bench  # benchmarks/run.py: batches, model copies and the engine loop

    from woollylib.models import get_model

    bs, steps, rounds = (16, 1, 1) if quick else (64, 3, 3)
    batches = bench._batches(bs, steps + 1, "cpu")
    torch.manual_seed(0)
    model0 = get_model(name)
    nets = {amp: bench._fresh(model0, True, "cpu") for amp in (False, "bf16")}
    for amp, (model, opt) in nets.items():
        bench._engine_nhwc(model, batches[:1], opt, amp, "cpu")  # warm-up
    rates: dict = {False: [], "bf16": []}
    for _ in range(rounds):  # interleaved: noise hits both alike
        for amp, (model, opt) in nets.items():
            rates[amp].append(bench._engine_nhwc(model, batches[1:], opt, amp, "cpu"))
    fp32, bf16 = statistics.median(rates[False]), statistics.median(rates["bf16"])
    return {"batch_size": bs, "timed_steps": steps, "rounds": rounds, "fp32_img_s": fp32, "bf16_img_s": bf16,
            "ratio_bf16_vs_fp32": bf16 / fp32}


def digits(name: str, seed: int, amp, quick: bool) -> dict:
    from woollylib.models import get_model
    from woollylib.preloading import get_data
    from woollylib.training import train_test_loop

    epochs, lr = RECIPES.get(name, (1, 0.05))
    if quick:
        epochs = 1
    data = get_data("digits", batch_size=32, loader="device", seed=seed, verbose=False)
    torch.manual_seed(seed)
    model = get_model(name, num_classes=len(data.classes))
    hist = train_test_loop(model, data, "cpu", epochs=epochs, max_lr=lr, optimizer="sgd", nesterov=True,
                           weight_decay=5e-4, amp=amp, channels_last=True, seed=seed, progress=False, verbose=False)
    return {"test_acc": hist.test_acc[-1], "train_s": sum(hist.epoch_time), "epochs": epochs, "max_lr": lr}


def summarise(runs: list[dict]) -> dict:
    accs, secs = [r["test_acc"] for r in runs], [r["train_s"] for r in runs]
    return {"n": len(runs), "acc_mean": statistics.fmean(accs), "acc_min": min(accs), "acc_max": max(accs),
            "s_mean": statistics.fmean(secs), "s_min": min(secs), "s_max": max(secs)}


def decide(sp: dict, fp32: dict, bf16: dict) -> tuple[bool, str]:
    """Whether bf16 pays for this model here, and why (see the module docstring)."""
    noise = max(1.0, fp32["acc_max"] - fp32["acc_min"], bf16["acc_max"] - bf16["acc_min"])
    diff = bf16["acc_mean"] - fp32["acc_mean"]
    ratio = sp["ratio_bf16_vs_fp32"]
    if ratio < SPEEDUP_NEEDED:
        return False, f"bf16 trains at {ratio:.2f}x fp32's speed (needs >= {SPEEDUP_NEEDED}x)"
    if abs(diff) > noise:
        return False, f"bf16 is {ratio:.2f}x faster but its accuracy differs by {diff:+.2f} points (noise {noise:.2f})"
    return True, f"bf16 is {ratio:.2f}x faster, accuracy {diff:+.2f} points (noise {noise:.2f})"


def main(argv: list[str] | None = None) -> dict:
    from woollylib.models import get_model, list_models
    from woollylib.precision import choose_precision, cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(list_models()), help="comma-separated registered models")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds for the digits runs")
    ap.add_argument("--quick", action="store_true", help="smoke run: compact, 1 seed, tiny sizes")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON")
    args = ap.parse_args(argv)
    models = ["compact"] if args.quick else [m.strip() for m in args.models.split(",") if m.strip()]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s.strip()]
    cpu = cpu_info()
    report: dict = {"machine": {"cpu": cpu.name, "capability": cpu.capability, "bf16_native": cpu.bf16_native,
                                "bf16_reason": cpu.bf16_reason, "threads": torch.get_num_threads(),
                                "overrides": cpu.overrides or None, "torch": torch.__version__},
                    "quick": args.quick, "seeds": seeds, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cpu_precision-{'quick-' if args.quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    print(f"CPU {cpu.name}, torch kernels {cpu.capability}, {torch.get_num_threads()} threads; native bf16: "
          f"{'yes' if cpu.bf16_native else 'no'} ({cpu.bf16_reason})", flush=True)
    if not cpu.bf16_native:
        print("note: this CPU emulates bf16, so the bf16 rows measure emulation", flush=True)
    _save(path, report)
    for name in models:
        rec: dict = report["models"].setdefault(name, {})
        rec["speed"] = sp = speed(name, args.quick)
        print(f"{name:<14} speed   fp32 {sp['fp32_img_s']:7.1f} img/s  bf16 {sp['bf16_img_s']:7.1f} img/s  "
              f"ratio {sp['ratio_bf16_vs_fp32']:.2f}x  (batch {sp['batch_size']}, median of {sp['rounds']})", flush=True)
        _save(path, report)
        for label, amp in (("fp32", False), ("bf16", "bf16")):
            runs = rec.setdefault(f"digits_{label}", [])
            for seed in seeds:
                runs.append({"seed": seed, **digits(name, seed, amp, args.quick)})
                _save(path, report)
            s = rec[f"summary_{label}"] = summarise(runs)
            print(f"{name:<14} digits  {label}: test acc {s['acc_mean']:6.2f}% ({s['acc_min']:.2f}-{s['acc_max']:.2f}), "
                  f"train {s['s_mean']:5.1f} s ({s['s_min']:.1f}-{s['s_max']:.1f}), n={s['n']}, "
                  f"{runs[0]['epochs']} epoch(s) at max_lr {runs[0]['max_lr']}", flush=True)
            _save(path, report)
        pays, why = decide(sp, rec["summary_fp32"], rec["summary_bf16"])
        auto = choose_precision("cpu", "auto", model=get_model(name), warn=False)
        rec["decision"] = {"bf16_pays": pays, "why": why, "auto_picks": auto.label, "auto_reason": auto.reason,
                           "agrees": pays == (auto.mode == "bf16") or not cpu.bf16_native}
        print(f"{name:<14} measured: {'bf16' if pays else 'fp32'} ({why}); amp='auto' picks {auto.label}"
              f"{'' if rec['decision']['agrees'] else '  <-- DISAGREES with the measurement'}", flush=True)
        _save(path, report)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _save(path, report)
    print(f"wrote {path}", flush=True)
    return report


if __name__ == "__main__":
    main()
