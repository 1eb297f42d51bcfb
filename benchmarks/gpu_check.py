"""The GPU check: everything that needs CUDA, in one command that fits a few minutes of a rare GPU.

    python benchmarks/gpu_check.py                    # on a machine with a CUDA GPU: about 5-8 min
    python benchmarks/gpu_check.py --skip suite       # without the whole test suite (about 2 min less)
    python benchmarks/gpu_check.py --dry-run          # on any machine: every step on the CPU at toy sizes

Steps, in this order (each one's result is printed and saved as soon as it ends, so a check stopped
half-way keeps what it measured; a step that fails is recorded and the next one runs):
  cuda_tests    tests/test_cuda.py (fp16 + GradScaler, bf16, pinned memory, DeviceLoader, Grad-CAM, resume,
                the CLI on CUDA): passed / failed / skipped counts and the failures' lines.
  suite         the whole suite where CUDA is available (`pytest -n N --dist loadfile`): every path that picks
                CUDA when it is there (select_device, the CLI's default device, pinned loaders) runs on it.
  main_job      the README's main job on CUDA (`woollylib train --dataset digits ... --device cuda --report`):
                wall seconds and the test accuracy.
  train_speed   engine training images/s of custom_resnet and resnet18, channels_last, in fp32, fp16 +
                GradScaler, bf16 and bf16 + torch.compile (compilation timed apart).
  device_loader DeviceLoader images/s over 50,000 synthetic CIFAR images on the GPU (batch 512, augmented).
  ddp           a 1-GPU torchrun job with the NCCL backend (`torchrun --nproc-per-node 1 -m woollylib train`).

Writes `gpu_check-<machine>-<stamp>.json` (the machine first: GPU, compute capability, driver, torch, CPU)
and a Markdown summary beside it in --out (default benchmarks/results/). Without CUDA it refuses to start
(exit 2) unless --dry-run is given; the dry run checks the plumbing on the CPU (gloo instead of NCCL, tiny
sizes, the CUDA tests only collected) and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch

STEPS = ("cuda_tests", "suite", "main_job", "train_speed", "device_loader", "ddp")
BUDGET_S = 480  # the whole check: 8 minutes; a step is not started once the budget is spent


class Check:
    """Context of one check: where it runs (CUDA, or the CPU for a dry run) and how big."""

    def __init__(self, dry_run: bool, workers: int):
        self.dry = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.workers = workers
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg"}

    def run(self, cmd: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str, float]:
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=cwd or ROOT, env=self.env, capture_output=True, text=True,
                                 timeout=timeout, check=False)
            code, text = res.returncode, res.stdout + res.stderr
        except subprocess.TimeoutExpired as exc:
            code = 124
            text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            text += f"\n[timed out after {timeout:.0f} s]"
        return code, text, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ steps ---

def _pytest_counts(text: str) -> dict:
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
    lines = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1] if lines else ""):
        counts["errors" if word.startswith("error") else word] = int(n)
    collected = re.findall(r"(\d+) tests? collected", text)
    if collected:
        counts["collected"] = int(collected[-1])
    return counts


def step_cuda_tests(c: Check, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider", "-rfE"]
    if c.dry:
        cmd.append("--collect-only")
    code, text, wall = c.run(cmd, timeout)
    failures = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return {"ok": code == 0, "exit": code, "wall_s": wall, **_pytest_counts(text), "failures": failures[:20],
            "tail": text.strip().splitlines()[-3:]}


def step_suite(c: Check, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
    cmd += ["--collect-only"] if c.dry else ["-n", str(c.workers), "--dist", "loadfile"]
    code, text, wall = c.run(cmd, timeout)
    failures = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return {"ok": code == 0, "exit": code, "wall_s": wall, "workers": c.workers, **_pytest_counts(text),
            "failures": failures[:30], "tail": text.strip().splitlines()[-3:]}


def step_main_job(c: Check, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        epochs = "1" if c.dry else "2"
        cmd = [sys.executable, "-m", "woollylib", "train", "--dataset", "digits", "--model",
               "compact" if c.dry else "custom_resnet", "--epochs", epochs, "--batch-size", "32", "--lr", "0.05",
               "--loader", "device", "--device", c.device, "--no-progress", "--out", str(out), "--report"]
        code, text, wall = c.run(cmd, timeout)
        result = {"ok": code == 0, "exit": code, "wall_s": wall, "command": " ".join(cmd[1:]).replace(str(out), "OUT")}
        if (out / "metrics.json").exists():
            result["test_accuracy"] = json.loads((out / "metrics.json").read_text())["accuracy"]
        if (out / "config.json").exists():
            resolved = json.loads((out / "config.json").read_text()).get("resolved", {})
            result["resolved"] = {k: resolved.get(k) for k in ("device", "amp", "channels_last", "precision")
                                  if k in resolved}
        result["report"] = (out / "report.md").exists()
        if code:
            result["tail"] = text.strip().splitlines()[-8:]
    return result


def step_train_speed(c: Check, timeout: float) -> dict:
    import run as bench  # benchmarks/run.py: the same batches, model copies and engine loop

    from woollylib.compile import compile_model
    from woollylib.models import get_model

    bs, steps = (8, 1) if c.dry else (512, 8)
    batches = bench._batches(bs, steps + 1, c.device)
    modes = {"fp32": False, "fp16": "fp16", "bf16": "bf16", "bf16+compile": "bf16"}
    if c.dry:  # autocast fp16 on the CPU is slow, and compiling needs a C++ compiler: plumbing only
        modes = {"fp32": False, "bf16": "bf16"}
    out: dict = {"batch_size": bs, "timed_steps": steps, "channels_last": True, "ok": True}
    t_end = time.perf_counter() + timeout
    for name in ("compact",) if c.dry else ("custom_resnet", "resnet18"):
        torch.manual_seed(0)
        model0 = get_model(name)
        for mode, amp in modes.items():
            key = f"{name}/{mode}"
            if time.perf_counter() > t_end:
                out[key] = {"unavailable": "out of time"}
                continue
            try:
                model, opt = bench._fresh(model0, True, c.device)
                net = compile_model(model, "default") if mode.endswith("compile") else model
                t0 = time.perf_counter()
                bench._engine_nhwc(net, batches[:1], opt, amp, c.device)  # warm-up (and compilation)
                first = time.perf_counter() - t0
                rate = max(bench._engine_nhwc(net, batches[1:], opt, amp, c.device) for _ in range(1 if c.dry else 3))
                out[key] = {"img_s": rate, "first_step_s": first}
            except Exception as exc:  # noqa: BLE001 - one mode failing must not hide the others
                out[key] = {"unavailable": f"{type(exc).__name__}: {exc}"}
                out["ok"] = False
    return out


def step_device_loader(c: Check, timeout: float) -> dict:
    from _common import MEAN, STD, synthetic_cifar

    from woollylib.preloading import DeviceLoader

    n = 2_000 if c.dry else 50_000
    images, labels = synthetic_cifar(n)
    loader = DeviceLoader((images, labels), 512, train=True, mean=MEAN, std=STD, device=c.device, seed=0,
                          channels_last=True)
    best = 0.0
    for _ in range(1 if c.dry else 3):
        t0, k = time.perf_counter(), 0
        for x, _y in loader:
            k += len(x)
        if c.device == "cuda":
            torch.cuda.synchronize()
        best = max(best, k / (time.perf_counter() - t0))
    return {"ok": True, "img_s": best, "n_images": n, "batch_size": 512, "device": str(x.device)}


def step_ddp(c: Check, timeout: float) -> dict:
    backend = "gloo" if c.dry else "nccl"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m",
               "woollylib", "train", "--dataset", "digits", "--model", "compact", "--epochs", "1", "--batch-size",
               "64", "--lr", "0.2", "--loader", "device", "--dist-backend", backend, "--no-progress", "--out", str(out)]
        code, text, wall = c.run(cmd, timeout)
        result = {"ok": code == 0, "exit": code, "wall_s": wall, "backend": backend}
        if (out / "config.json").exists():
            config = json.loads((out / "config.json").read_text())
            result["resolved_device"] = config.get("resolved", {}).get("device")
            result["world_size"] = config.get("resolved", {}).get("world_size")
        if (out / "metrics.json").exists():
            result["test_accuracy"] = json.loads((out / "metrics.json").read_text())["accuracy"]
        if code:
            result["tail"] = text.strip().splitlines()[-8:]
    return result


RUNNERS = {"cuda_tests": step_cuda_tests, "suite": step_suite, "main_job": step_main_job,
           "train_speed": step_train_speed, "device_loader": step_device_loader, "ddp": step_ddp}
TIMEOUTS = {"cuda_tests": 150, "suite": 300, "main_job": 120, "train_speed": 150, "device_loader": 60, "ddp": 120}


# ---------------------------------------------------------------------------------------- report ---

def machine(device: str) -> dict:
    import run as bench

    m = bench.machine(device)
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        m.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                 gpu_count=torch.cuda.device_count())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=False)
            m["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            m["driver"] = None
    return m


def summary(report: dict) -> str:
    m = report["machine"]
    where = (f"{m.get('gpu')} (compute capability {m.get('gpu_compute_capability')}, {m.get('gpu_memory_gib')} GiB, "
             f"driver {m.get('driver')}, CUDA {m.get('cuda')})" if m.get("gpu") else f"the CPU ({m.get('cpu')})")
    lines = [f"# GPU check{' (dry run: plumbing only, figures mean nothing)' if report['dry_run'] else ''}", "",
             f"On {where}; torch {m['torch']}, {report['started']}.", "", "| step | result |", "|---|---|"]
    for name in STEPS:
        r = report["steps"].get(name)
        if r is None:
            continue
        if "skipped" in r and isinstance(r["skipped"], str):
            text = f"skipped: {r['skipped']}"
        elif name in ("cuda_tests", "suite"):
            text = (f"{'ok' if r['ok'] else 'FAILED'}: {r.get('passed', 0)} passed, {r.get('failed', 0)} failed, "
                    f"{r.get('skipped', 0)} skipped" + (f", {r['collected']} collected" if "collected" in r else "")
                    + f" ({r['wall_s']:.0f} s)")
        elif name == "train_speed":
            rows = [f"{k} {v['img_s']:,.0f} img/s" + (f" (first step {v['first_step_s']:.1f} s)"
                                                     if k.endswith("compile") else "")
                    for k, v in r.items() if isinstance(v, dict) and "img_s" in v]
            rows += [f"{k}: {v['unavailable']}" for k, v in r.items() if isinstance(v, dict) and "unavailable" in v]
            text = f"batch {r['batch_size']}, channels_last: " + "; ".join(rows)
        elif name == "device_loader":
            text = f"{r['img_s']:,.0f} img/s ({r['n_images']:,} images, batch {r['batch_size']}, on {r['device']})"
        elif "error" in r:
            text = f"FAILED: {r['error']}"
        else:
            acc = f", test accuracy {r['test_accuracy']:.2f}%" if "test_accuracy" in r else ""
            text = f"{'ok' if r['ok'] else 'FAILED (exit ' + str(r['exit']) + ')'}: {r['wall_s']:.1f} s{acc}"
        lines.append(f"| {name} | {text} |")
    return "\n".join(lines) + "\n"


def _save(report: dict, json_path: Path) -> None:
    for path, text in ((json_path, json.dumps(report, indent=2, default=str)),
                       (json_path.with_suffix(".md"), summary(report))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="run every step on the CPU at toy sizes (plumbing only)")
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out ({', '.join(STEPS)})")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default 480)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="pytest-xdist workers for the suite")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and the summary")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(STEPS):
        ap.error(f"unknown step(s) {', '.join(sorted(skip - set(STEPS)))}; choose from {', '.join(STEPS)}")
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check needs a CUDA GPU and torch.cuda.is_available() is False here; run it on a machine with "
              "one, or pass --dry-run to check its plumbing on the CPU", file=sys.stderr)
        return 2
    check = Check(args.dry_run, args.workers)
    report = {"machine": machine(check.device), "dry_run": args.dry_run,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": args.budget, "steps": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9]+", "-", report["machine"].get("gpu") or "cpu-dry-run").strip("-").lower()
    json_path = out / f"gpu_check-{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    t_end = time.perf_counter() + args.budget
    for name in STEPS:
        left = t_end - time.perf_counter()
        if name in skip:
            report["steps"][name] = {"skipped": "--skip"}
        elif left < 10:
            report["steps"][name] = {"skipped": f"the {args.budget:.0f} s budget was spent"}
        else:
            print(f"[{name} ...]", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                report["steps"][name] = RUNNERS[name](check, min(TIMEOUTS[name], left))
            except Exception as exc:  # noqa: BLE001 - record and go on to the next step
                report["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                         "wall_s": time.perf_counter() - t0}
        _save(report, json_path)
        print(summary({**report, "steps": {name: report["steps"][name]}}).splitlines()[-1], flush=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _save(report, json_path)
    print(f"\n{summary(report)}\nwrote {json_path} and {json_path.with_suffix('.md').name}", flush=True)
    done = [r for r in report["steps"].values() if "ok" in r]
    return 0 if all(r["ok"] for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())
