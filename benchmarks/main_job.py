"""The README's main job over several seeds: the figures the README quotes, with their spread.

    python benchmarks/main_job.py                   # seeds 0, 1, 2 (~1 min each on a 2-core CPU)
    python benchmarks/main_job.py --seeds 0,1,2,3,4
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/main_job.py   # AVX2 kernels on a newer CPU

Each seed runs the whole command as a user does (a fresh process, `woollylib train ... --report`):

    woollylib train --dataset digits --model compact --epochs 7 --batch-size 32 --lr 0.2 --loader device \
        --out OUT --report --seed S

and reports its wall seconds (the whole command: Python, torch, data, training, report), the seconds of the
7 training epochs (history.json) and the final test accuracy (metrics.json); then min, median and max of
each over the seeds, with the CPU and torch's kernels. Rows are printed as each seed finishes; the JSON
(benchmarks/results/main_job-<stamp>.json) is rewritten after each. Extra arguments after `--` are added to
the command (e.g. `-- --amp bf16`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMMAND = ["train", "--dataset", "digits", "--model", "compact", "--epochs", "7", "--batch-size", "32", "--lr", "0.2",
           "--loader", "device", "--report", "--no-progress"]


def one_seed(seed: int, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "woollylib", *COMMAND, "--seed", str(seed), "--out", str(out), *extra]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if res.returncode:
            return {"seed": seed, "exit": res.returncode, "error": (res.stderr or res.stdout).strip().splitlines()[-3:]}
        history = json.loads((out / "history.json").read_text())
        metrics = json.loads((out / "metrics.json").read_text())
        resolved = json.loads((out / "config.json").read_text()).get("resolved", {})
    return {"seed": seed, "exit": 0, "wall_s": wall, "train_s": sum(history["epoch_time"]),
            "test_acc": metrics["accuracy"], "precision": (resolved.get("precision") or {}).get("label"),
            "channels_last": resolved.get("channels_last")}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    import torch

    from woollylib.precision import cpu_info

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cpu = cpu_info()
    report = {"machine": {"cpu": cpu.name, "capability": cpu.capability, "bf16_native": cpu.bf16_native,
                          "overrides": cpu.overrides or None, "cpus": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__},
              "command": "woollylib " + " ".join(COMMAND + extra), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "seeds": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"main_job-{time.strftime('%Y%m%d-%H%M%S')}.json"
    print(f"{report['command']}\nCPU {cpu.name}, torch kernels {cpu.capability}"
          f"{' (' + cpu.overrides + ')' if cpu.overrides else ''}, {os.cpu_count()} CPUs", flush=True)
    for seed in seeds:
        r = one_seed(seed, extra)
        report["seeds"].append(r)
        if r["exit"]:
            print(f"seed {seed}: exit {r['exit']}: {' / '.join(r['error'])}", flush=True)
        else:
            print(f"seed {seed}: {r['test_acc']:.2f}% test accuracy, {r['wall_s']:.1f} s wall, {r['train_s']:.1f} s "
                  f"training ({r['precision']}, channels_last {r['channels_last']})", flush=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, path)
    done = [r for r in report["seeds"] if not r["exit"]]
    if done:
        report["summary"] = {k: spread([r[k] for r in done]) for k in ("test_acc", "wall_s", "train_s")}
        s = report["summary"]
        print(f"over {len(done)} seed(s): test accuracy {s['test_acc']['min']:.2f}-{s['test_acc']['max']:.2f}% "
              f"(median {s['test_acc']['median']:.2f}), wall {s['wall_s']['min']:.1f}-{s['wall_s']['max']:.1f} s, "
              f"training {s['train_s']['min']:.1f}-{s['train_s']['max']:.1f} s", flush=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}", flush=True)
    return report


if __name__ == "__main__":
    main()
