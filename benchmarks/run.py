"""woollylib benchmark suite: one command, a table on stdout, JSON in benchmarks/results/.

    python benchmarks/run.py                 # full run (7.5-8 min on a 2-core CPU)
    python benchmarks/run.py --quick         # smoke run (~1-2 min): small sizes, same code paths
    python benchmarks/run.py --only data,imports --device cuda

Sections (each prints "unavailable: <why>" instead of crashing when a module it needs is missing):
  data      images/s of the Albumentations DataLoader (workers 0 and 2), woollylib's DeviceLoader and
            airbench.CifarLoader, all fed the same synthetic 50,000-image CIFAR-shaped uint8 set
            (airbench through its train.pt cache format), as ratios measured in the same run.
  train     images/s of woollylib's engine (bp.engine.train_epoch) vs a bare PyTorch loop on the same
            batches, model, optimizer and precision (resnet18, custom_resnet; fp32, channels_last, bf16
            only where the device has native bf16 (else skipped with the reason), fp16 + GradScaler on CUDA).
  flops     share of the measured matmul FLOP/s that a training step reaches:
            (FLOPs of one training step per image, torch.utils.flop_counter) x images/s / GEMM FLOP/s,
            GEMM = best of torch.mm and a 1x1 conv (oneDNN), measured next to every train configuration.
  precision amp=True as woollylib.precision resolves it on this machine vs amp off (custom_resnet, NHWC).
  compile   eager vs torch.compile(mode="default"): compilation time apart from steady-state images/s.
  imports   `import woollylib` and `from woollylib import main` vs `import torch`, fresh subprocesses.
  memory    peak resident memory of one epoch over the 50,000-image set through each loader
            (one subprocess per loader; the process tree sampled with psutil, + getrusage).
  digits    time to 98% test accuracy on digits with the recommended recipe (custom_resnet, batch 32,
            one-cycle max_lr 0.05 over one epoch, SGD Nesterov, channels_last, amp=True as resolved here, DeviceLoader
            with the data layer's default augmentation for digits: none).

The JSON and the table start with the machine: CPU model, torch's CPU kernels (and any
ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA override), native bf16, threads, GPU, torch version.
Threads: the machine's (torch.get_num_threads()); set OMP_NUM_THREADS to change it. Figures depend on
the machine and on what else runs on it: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import MEAN, STD, Table, fmt_rate, synthetic_cifar, unavailable

BATCH = 512  # images per batch for the data section (airbench's default is 500)
# train: a warm-up step slower than SLOW_STEP_S (a slow CPU: a 2-core AVX2 one takes 5-13 s for
# custom_resnet and resnet18 at batch 128) times its steps at SLOW_BATCH images instead of 128, so that
# the whole benchmark stays under 10 minutes there; each row prints its batch, steps and rounds
SLOW_STEP_S = 2.5
SLOW_BATCH = 32


def machine(device: str) -> dict:
    """What the figures were measured on: CPU model and torch's kernels, native bf16, threads, GPU."""
    from woollylib.precision import choose_precision, cpu_info

    cpu = cpu_info()
    out = {"platform": platform.platform(), "cpu": cpu.name, "cpu_capability": cpu.capability,
           "cpu_bf16_native": cpu.bf16_native, "cpu_bf16_reason": cpu.bf16_reason,
           "kernel_overrides": cpu.overrides or None, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "device": device, "gpu": None}
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        out.update(gpu=torch.cuda.get_device_name(index), gpu_compute_capability=f"{major}.{minor}",
                   gpu_bf16_native=choose_precision(device, "auto", warn=False).bf16_native)
    return out


def bf16_skip_reason(device: str) -> str | None:
    """Why bf16 rows are skipped on ``device`` (None: it computes bf16 natively)."""
    from woollylib.precision import choose_precision, cpu_info

    if torch.device(device).type == "cpu":
        info = cpu_info()
        return None if info.bf16_native else f"skipped: no native bf16 ({info.bf16_reason})"
    p = choose_precision(device, "auto", warn=False)
    return None if p.bf16_native else f"skipped: {p.device_name} has no native bf16"


# ----------------------------------------------------------------------------------------------------
# data: images/s of each loader


def _rate(batches, max_images: int, warmup: int = 1) -> tuple[float, int]:
    """images/s over up to max_images images after `warmup` batches (touching every batch's data)."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for x, _y in it:
        n += len(x)
        if n >= max_images:
            break
    return n / (time.perf_counter() - t0), n


def bench_data(quick: bool, device: str) -> dict:
    """Round-robin rounds over all loaders, best round per loader: a burst of load elsewhere on the
    machine then hits every loader alike instead of deciding one ratio."""
    from woollylib.preloading import (
        DeviceLoader,
        from_arrays,
        make_loader,
        train_transforms,
    )

    n = 10_000 if quick else 50_000
    rounds = 2 if quick else 3
    images, labels = synthetic_cifar(n)
    src = from_arrays(images, labels, name="synthetic")
    out: dict = {"n_images": n, "batch_size": BATCH, "threads": torch.get_num_threads(), "rounds": rounds}
    albu_images = 2_048 if quick else 8_192  # per round; ~6-15k img/s: about a second each

    def epoch_rate(loader) -> float:
        t0, k = time.perf_counter(), 0
        for x, _y in loader:
            k += len(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return k / (time.perf_counter() - t0)

    loaders: dict = {}
    for workers in (0, 2):  # not persistent: workers must not keep prefetching while others are timed;
        # each round starts them afresh and _rate's warm-up batch keeps their start-up out of the timing
        loaders[f"albumentations_w{workers}"] = make_loader(src, train_transforms(MEAN, STD), BATCH, train=True,
                                                           num_workers=workers, seed=0, persistent_workers=False)
    variants = {"device_loader": {}, "device_loader_channels_last": {"channels_last": True},
                "device_loader_reflect": {"pad_mode": "reflect_101"},  # airbench's padding
                "device_loader_fp16_out": {"dtype": torch.float16, "channels_last": True}}  # airbench's output
    for key, kw in variants.items():
        loaders[key] = DeviceLoader(src, BATCH, train=True, mean=MEAN, std=STD, device=device, seed=0, **kw)
    try:
        import airbench
    except ImportError as exc:  # pragma: no cover - depends on the environment
        out["airbench"] = unavailable(f"airbench not installed ({exc}); pip install airbench")
        airbench = None
    tmp = tempfile.TemporaryDirectory()
    if airbench is not None:
        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                    "classes": [str(i) for i in range(10)]}, os.path.join(tmp.name, "train.pt"))
        gpu = device if device.startswith("cuda") else "cpu"
        loaders["airbench"] = airbench.CifarLoader(tmp.name, train=True, batch_size=BATCH, gpu=gpu,
                                                   aug={"flip": True, "translate": 4, "cutout": 16})
        out["airbench_first_epoch"] = epoch_rate(loaders["airbench"])  # also pre-normalises/pre-pads the set
        out["airbench_note"] = "fp16 channels_last output, reflect padding, cutout 16 on every image"
    for key in variants:
        epoch_rate(loaders[key])  # warm-up epoch
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key, loader in loaders.items():
            rate = _rate(loader, albu_images)[0] if key.startswith("albumentations") else epoch_rate(loader)
            best[key] = max(best.get(key, 0.0), rate)
            gc.collect()  # an abandoned DataLoader iterator shuts its workers down here
    tmp.cleanup()
    out.update(best)
    dev = out["device_loader"]
    out["ratio_device_vs_albumentations_w0"] = dev / out["albumentations_w0"]
    out["ratio_device_vs_albumentations_w2"] = dev / out["albumentations_w2"]
    if isinstance(out.get("airbench"), float):
        out["ratio_device_vs_airbench"] = dev / out["airbench"]
        out["ratio_device_fp16_channels_last_vs_airbench"] = out["device_loader_fp16_out"] / out["airbench"]
    return out


# ----------------------------------------------------------------------------------------------------
# train: engine vs bare loop; flops: share of GEMM FLOP/s


MODES = {  # name: (channels_last, amp)
    "fp32": (False, False),
    "channels_last": (True, False),
    "bf16": (False, "bf16"),
    "channels_last+bf16": (True, "bf16"),
    "channels_last+fp16": (True, "fp16"),  # CUDA only (fp16 + GradScaler is the CPU's slowest mode)
}


def _batches(bs: int, steps: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from woollylib.preloading import DeviceLoader

    images, labels = synthetic_cifar(bs * steps, seed=1)
    dl = DeviceLoader((images, labels), bs, train=True, mean=MEAN, std=STD, device=device, seed=0)
    return [(x, y) for x, y in dl]


def _bare_loop(model, batches, opt, channels_last, amp, device):
    """The loop a user would write: the engine's job done with no extras."""
    dev = torch.device(device)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    for x, y in batches:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = torch.float16 if amp == "fp16" else torch.bfloat16
        with torch.autocast(dev.type, dtype=dtype, enabled=bool(amp)):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _engine_loop(model, batches, opt, channels_last, amp, device):
    from woollylib.bp.engine import make_scaler, train_epoch

    train_epoch(model, batches, opt, device=device, amp=amp, channels_last=channels_last, progress=False,
                scaler=make_scaler(device, amp))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


LOOPS = {"bare": _bare_loop, "engine": _engine_loop}


def _fresh(model0, channels_last, device):
    model = copy.deepcopy(model0).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model.train(), opt


def bench_train(quick: bool, device: str, emit=lambda key, out: None) -> dict:
    """``emit(key, out)`` is called as soon as a configuration's row is measured (the runner prints it)."""
    from woollylib.models import get_model

    bs, steps, reps = (16, 2, 1) if quick else (128, 3, 3)
    batches = _batches(bs, steps + 1, device)
    warm, timed = batches[:1], batches[1:]
    out: dict = {"batch_size": bs, "timed_steps": steps, "repeats": reps, "optimizer": "SGD nesterov",
                 "gemm_fp32_best": 0.0, "gemm_bf16_best": 0.0}
    models = ("custom_resnet",) if quick else ("custom_resnet", "resnet18")
    modes = ("fp32", "channels_last+bf16") if quick else tuple(MODES)
    cuda = torch.device(device).type == "cuda"
    skip_bf16 = bf16_skip_reason(device)
    for name in models:
        torch.manual_seed(0)
        model0 = get_model(name)
        for mode in modes:
            cl, amp = MODES[mode]
            if amp == "fp16" and not cuda:
                continue
            if amp == "bf16" and skip_bf16:
                out[f"{name}/{mode}"] = unavailable(skip_bf16)
                emit(f"{name}/{mode}", out)
                continue
            best = {"bare": 0.0, "engine": 0.0}
            # GEMM measured next to every configuration: the FLOP share uses the best of them all
            gkey, gdt = {False: ("gemm_fp32_best", torch.float32), "bf16": ("gemm_bf16_best", torch.bfloat16),
                         "fp16": ("gemm_fp16_best", torch.float16)}[amp]
            out.setdefault(gkey, 0.0)
            out[gkey] = max(out[gkey], _gemm_flops(gdt, device, True))
            # one warm model per loop, kept over the rounds (interleaved, so noise hits both alike)
            nets = {kind: _fresh(model0, cl, device) for kind in LOOPS}
            warm_s = {}
            for kind, loop in LOOPS.items():
                t0 = time.perf_counter()
                loop(nets[kind][0], warm, nets[kind][1], cl, amp, device)
                warm_s[kind] = time.perf_counter() - t0
            slow = max(warm_s.values()) > SLOW_STEP_S
            n, rounds, b = steps, reps, (min(SLOW_BATCH, bs) if slow else bs)
            run = [(x[:b], y[:b]) for x, y in timed[:n]]
            if b != bs:  # a warm-up at the new shape too (oneDNN plans its kernels per shape)
                for kind, loop in LOOPS.items():
                    loop(nets[kind][0], [(x[:b], y[:b]) for x, y in warm], nets[kind][1], cl, amp, device)
            for _ in range(rounds):
                for kind, loop in LOOPS.items():
                    t0 = time.perf_counter()
                    loop(nets[kind][0], run, nets[kind][1], cl, amp, device)
                    best[kind] = max(best[kind], b * n / (time.perf_counter() - t0))
            out[f"{name}/{mode}"] = {"bare": best["bare"], "engine": best["engine"],
                                     "ratio": best["engine"] / best["bare"], "repeats": rounds,
                                     "timed_steps": n, "batch_size": b}
            emit(f"{name}/{mode}", out)
    return out


def _gemm_flops(dtype: torch.dtype, device: str, quick: bool) -> float:
    """Best FLOP/s of two GEMM routes: torch.mm (BLAS; MKL can pick slow paths on AMD CPUs) and a 1x1
    convolution (oneDNN on CPU), i.e. the same matrix product through the library the convs use."""
    n = 1024 if quick else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    x = torch.randn(16 if quick else 64, n // 2, 16, 16, device=device).to(dtype)
    w = torch.randn(n // 2, n // 2, 1, 1, device=device).to(dtype)
    conv_flops = 2 * x.shape[0] * 256 * (n // 2) ** 2
    best = 0.0
    with torch.no_grad():
        for _ in range(2 if quick else 4):
            for fn, flops in ((lambda: a @ b, 2 * n**3), (lambda: torch.nn.functional.conv2d(x, w), conv_flops)):
                fn()
                t0 = time.perf_counter()
                for _ in range(3):
                    fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = max(best, 3 * flops / (time.perf_counter() - t0))
    return best


def _train_flops_per_image(name: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from woollylib.models import get_model

    model = get_model(name).train()
    x = torch.randn(8, 3, 32, 32)
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    return fc.get_total_flops() / 8


def bench_flops(quick: bool, device: str, train: dict | None) -> dict:
    # best of now and of the measurement taken before the train section (noise only ever slows down)
    seen = train if isinstance(train, dict) else {}
    out: dict = {"gemm_fp32": max(_gemm_flops(torch.float32, device, quick), seen.get("gemm_fp32_best", 0.0))}
    skip_bf16 = bf16_skip_reason(device)
    if skip_bf16:
        out["gemm_bf16"] = unavailable(skip_bf16)
    else:
        try:
            out["gemm_bf16"] = max(_gemm_flops(torch.bfloat16, device, quick), seen.get("gemm_bf16_best", 0.0))
        except RuntimeError as exc:  # pragma: no cover - old CPUs
            out["gemm_bf16"] = unavailable(str(exc))
    if seen.get("gemm_fp16_best"):
        out["gemm_fp16"] = seen["gemm_fp16_best"]
    if not isinstance(train, dict) or "unavailable" in train:
        out["shares"] = unavailable("needs the train section")
        return out
    for name in ("custom_resnet", "resnet18"):
        if not any(k.startswith(name + "/") for k in train):
            continue
        per_img = _train_flops_per_image(name)
        out[f"{name}/train_flops_per_image"] = per_img
        for key, rec in train.items():
            if key.startswith(name + "/") and isinstance(rec, dict) and "engine" in rec:
                gemm = out["gemm_bf16"] if "bf16" in key else out.get("gemm_fp16") if "fp16" in key else out["gemm_fp32"]
                if isinstance(gemm, float):
                    out[f"{key}/share_of_gemm"] = per_img * rec["engine"] / gemm
    return out


# ----------------------------------------------------------------------------------------------------
# precision: amp=True as the trainer resolves it on this machine vs amp off; compile: torch.compile


def _engine_nhwc(model, batches, opt, amp, device) -> float:
    """One pass of the engine over ``batches`` (NHWC, GradScaler for fp16); images/s."""
    from woollylib.bp.engine import make_scaler, train_epoch

    t0 = time.perf_counter()
    train_epoch(model, batches, opt, device=device, amp=amp, channels_last=True, progress=False,
                scaler=make_scaler(device, amp))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return sum(len(x) for x, _ in batches) / (time.perf_counter() - t0)


def bench_precision(quick: bool, device: str) -> dict:
    """custom_resnet (NHWC) through the engine with amp=True as choose_precision resolves it here, and
    with amp off, interleaved: on a CPU without native bf16 amp=True must run at fp32 speed."""
    from woollylib.models import get_model
    from woollylib.precision import choose_precision

    bs, steps, reps = (16, 2, 1) if quick else (32, 4, 3)
    batches = _batches(bs, steps + 1, device)
    on = choose_precision(device, True, warn=False)
    out: dict = {"batch_size": bs, "timed_steps": steps, "amp_on_resolves_to": on.label, "reason": on.reason}
    torch.manual_seed(0)
    model0 = get_model("custom_resnet")
    best = {"on": 0.0, "off": 0.0}
    for _ in range(reps):
        for key, amp in (("on", on.mode), ("off", False)):  # interleaved
            model, opt = _fresh(model0, True, device)
            _engine_nhwc(model, batches[:1], opt, amp, device)  # warm-up
            best[key] = max(best[key], _engine_nhwc(model, batches[1:], opt, amp, device))
    out.update({"amp_on": best["on"], "amp_off": best["off"], "ratio_on_vs_off": best["on"] / best["off"]})
    return out


def bench_compile(quick: bool, device: str) -> dict:
    """Eager vs torch.compile (mode default) through the engine, NHWC, the device's auto precision:
    the first compiled step (compilation) is timed apart from the steady state."""
    from woollylib.compile import compile_model
    from woollylib.models import get_model
    from woollylib.precision import choose_precision

    cuda = torch.device(device).type == "cuda"
    name = "compact" if quick else "custom_resnet"
    bs, steps, reps = (16, 2, 1) if quick else ((256, 10, 3) if cuda else (32, 4, 2))
    amp = choose_precision(device, "auto", warn=False).mode
    batches = _batches(bs, steps, device)
    out: dict = {"model": name, "batch_size": bs, "timed_steps": steps, "amp": amp or "fp32", "mode": "default"}
    torch.manual_seed(0)
    model0 = get_model(name)
    model, opt = _fresh(model0, True, device)
    _engine_nhwc(model, batches[:1], opt, amp, device)  # warm-up
    out["eager"] = max(_engine_nhwc(model, batches, opt, amp, device) for _ in range(reps))
    model, opt = _fresh(model0, True, device)
    net = compile_model(model, "default")
    t0 = time.perf_counter()
    _engine_nhwc(net, batches[:1], opt, amp, device)  # compiles the training graph
    out["compile_s"] = time.perf_counter() - t0
    out["compiled"] = max(_engine_nhwc(net, batches, opt, amp, device) for _ in range(reps))
    out["ratio_compiled_vs_eager"] = out["compiled"] / out["eager"]
    return out


# ----------------------------------------------------------------------------------------------------
# imports


def _import_time(stmt: str) -> float:
    code = f"import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed")
    return float(res.stdout.strip().splitlines()[-1])


def bench_imports(quick: bool) -> dict:
    stmts = {"torch": "import torch", "woollylib": "import woollylib",
             "woollylib.main": "from woollylib import main"}
    times: dict[str, list[float]] = {k: [] for k in stmts}
    errors: dict[str, str] = {}
    for _ in range(3 if quick else 7):  # interleaved, medians
        for k, stmt in stmts.items():
            if k in errors:
                continue
            try:
                times[k].append(_import_time(stmt))
            except RuntimeError as exc:
                errors[k] = str(exc)
    out: dict = {}
    for k in stmts:
        out[k] = unavailable(errors[k]) if k in errors else statistics.median(times[k])
    for k in ("woollylib", "woollylib.main"):
        if isinstance(out[k], float):
            out[f"ratio_{k}_vs_torch"] = out[k] / out["torch"]
    return out


# ----------------------------------------------------------------------------------------------------
# memory: one subprocess per loader


def bench_memory(quick: bool, device: str) -> dict:
    n = 5_000 if quick else 50_000
    out: dict = {"n_images": n}
    for kind in ("albumentations_w0", "albumentations_w2", "device_loader", "airbench"):
        cmd = [sys.executable, str(Path(__file__).with_name("_memory.py")), kind, str(n), device]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            out[kind] = unavailable((res.stderr.strip().splitlines() or ["failed"])[-1])
        else:
            out[kind] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------------------------------
# digits: time to 98 %


def bench_digits(quick: bool, device: str) -> dict:
    from woollylib.models import get_model
    from woollylib.preloading import augment_preset, default_augment, get_data
    from woollylib.training import train_test_loop

    target = 98.0
    torch.manual_seed(0)
    # the data layer's default augmentation for digits (preloading.default_augment: none), as the
    # CLI and the notebook get it
    data = get_data("digits", batch_size=32, loader="device", seed=0, device=device, verbose=False)
    aug = default_augment("digits", "device")
    from woollylib.precision import choose_precision

    # amp=True as the trainer resolves it: bf16 where native (CPU or GPU), fp16 on older GPUs, else fp32
    cl, amp = True, choose_precision(device, True, warn=False).mode
    model = get_model("custom_resnet", num_classes=len(data.classes))
    epochs = 1
    t0 = time.perf_counter()
    hist = train_test_loop(model, data, device, epochs=epochs, max_lr=0.05, optimizer="sgd", nesterov=True,
                           weight_decay=5e-4, amp=amp, channels_last=cl, seed=0, progress=False, verbose=False)
    wall = time.perf_counter() - t0
    reached = None
    for e, acc in enumerate(hist.test_acc):
        if acc >= target:
            reached = sum(hist.epoch_time[:e + 1])
            break
    return {"recipe": f"custom_resnet, batch 32, one-cycle max_lr 0.05 over {epochs} epoch(s), SGD nesterov "
                      f"wd 5e-4, amp={amp or 'off (fp32)'}, channels_last={cl}, DeviceLoader with the default augmentation "
                      f"({augment_preset('digits')}: {aug})",
            "test_acc": list(hist.test_acc), "epoch_time_s": list(hist.epoch_time),
            "seconds_to_98": reached if reached is not None else unavailable(f"not reached in {epochs} epoch(s)"),
            "wall_s": wall}


# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, same code paths")
    ap.add_argument("--only", default="data,train,flops,precision,compile,imports,memory,digits",
                    help="comma-separated sections")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results")), help="folder for the JSON")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    report: dict = {"machine": machine(args.device), "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "sections_done": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{'quick' if args.quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    # what is measured is printed (and flushed) and saved at once: a run stopped half-way keeps it
    print(render_header(report), flush=True)
    _save(path, report)
    skip = bf16_skip_reason(args.device)
    if skip:
        print(f"bf16 rows {skip}", file=sys.stderr, flush=True)

    def train_row(key: str, partial: dict) -> None:
        report["train"] = partial
        t = Table()
        _train_row(t, key, partial[key], partial)
        print(t.render(), flush=True)
        _save(path, report)

    runners = {
        "data": lambda: bench_data(args.quick, args.device),
        "train": lambda: bench_train(args.quick, args.device, emit=train_row),
        "flops": lambda: bench_flops(args.quick, args.device, report.get("train")),
        "precision": lambda: bench_precision(args.quick, args.device),
        "compile": lambda: bench_compile(args.quick, args.device),
        "imports": lambda: bench_imports(args.quick),
        "memory": lambda: bench_memory(args.quick, args.device),
        "digits": lambda: bench_digits(args.quick, args.device),
    }
    for name in sections:
        t0 = time.perf_counter()
        if name == "train":  # its rows are printed one by one as they are measured
            print(render_section("train", {"train": {}}), flush=True)
        try:
            report[name] = runners[name]()
        except ImportError as exc:  # a missing optional package (e.g. the bench extra)
            report[name] = unavailable(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            report[name] = unavailable(f"{type(exc).__name__}: {exc}")
        if name != "train" or "unavailable" in report[name]:
            print(render_section(name, report), flush=True)
        report["sections_done"].append(name)
        _save(path, report)
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _save(path, report)
    print(f"\nwrote {path}", flush=True)
    return report


SECTIONS = ("data", "train", "flops", "precision", "compile", "imports", "memory", "digits")


def _save(path: Path, report: dict) -> None:
    """Write the results so far, atomically (a stop mid-write leaves the previous version)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    os.replace(tmp, path)


def render(r: dict) -> str:
    """The whole table of a report (the header, then every section it holds)."""
    return "\n".join([render_header(r)] + [render_section(name, r) for name in SECTIONS if name in r])


def render_header(r: dict) -> str:
    t = Table()
    m = r["machine"]
    t.title(f"woollylib benchmark ({'quick' if r['quick'] else 'full'}) - device {m['device']}, torch {m['torch']}")
    t.section("machine")
    t.row("CPU", f"{m.get('cpu', m.get('processor'))}, {m['cpus']} CPUs, {m['threads']} torch threads")
    if "cpu_capability" in m:
        kernels = m["cpu_capability"] + (f" ({m['kernel_overrides']})" if m.get("kernel_overrides") else "")
        t.row("CPU kernels (torch)", kernels)
        t.row("CPU native bf16", f"{'yes' if m['cpu_bf16_native'] else 'no'}: {m['cpu_bf16_reason']}")
    if m.get("gpu"):
        t.row("GPU", f"{m['gpu']} (compute capability {m.get('gpu_compute_capability')}, native bf16 "
                     f"{'yes' if m.get('gpu_bf16_native') else 'no'})")
    t.row("platform", f"{m['platform']}, Python {m['python']}")
    return t.render()


def _train_row(t: Table, k: str, v, tr: dict) -> None:
    if isinstance(v, dict) and "engine" in v:
        t.row(k, f"bare {v['bare']:7.1f}  engine {v['engine']:7.1f}  ratio {v['ratio']:.3f}  (batch "
                 f"{v.get('batch_size', tr.get('batch_size'))}, best of {v['repeats']} x {v['timed_steps']} steps)")
    elif isinstance(v, dict):
        t.row(k, v.get("unavailable", v))


def render_section(name: str, r: dict) -> str:
    """One section's block of the table."""
    t = Table()
    d = r.get("data")
    if name == "data" and d is not None:
        t.section(f"data: images/s, batch {BATCH}, {d.get('n_images', '?')} synthetic CIFAR images" if "n_images" in d
                  else "data")
        for k in ("albumentations_w0", "albumentations_w2", "device_loader", "device_loader_channels_last",
                  "device_loader_reflect", "device_loader_fp16_out", "airbench_first_epoch", "airbench"):
            if isinstance(d.get(k), dict):
                t.row(k, d[k].get("unavailable"))
                continue
            if k in d:
                t.row(k, fmt_rate(d[k]))
        for k in sorted(x for x in d if x.startswith("ratio")):
            t.row(k, f"{d[k]:.2f}x")
        if "unavailable" in d:
            t.row("data", d["unavailable"])
    tr = r.get("train")
    if name == "train" and tr is not None:
        t.section("train: images/s, engine vs bare loop (same batches, model, optimizer, precision)")
        if "unavailable" in tr:
            t.row("train", tr["unavailable"])
        for k, v in tr.items():
            if k != "unavailable":
                _train_row(t, k, v, tr)
    pr = r.get("precision")
    if name == "precision" and pr is not None:
        t.section("precision: custom_resnet NHWC, engine images/s, amp=True as resolved here vs amp off")
        if "unavailable" in pr:
            t.row("precision", pr["unavailable"])
        else:
            t.row("amp=True resolves to", f"{pr['amp_on_resolves_to']} ({pr['reason']})")
            t.row("amp on / off", f"{pr['amp_on']:7.1f} / {pr['amp_off']:7.1f} img/s  ratio {pr['ratio_on_vs_off']:.3f}")
    co = r.get("compile")
    if name == "compile" and co is not None:
        t.section("compile: torch.compile(mode='default') vs eager, engine images/s (compilation timed apart)")
        if "unavailable" in co:
            t.row("compile", co["unavailable"])
        else:
            t.row(f"{co['model']}, batch {co['batch_size']}, {co['amp']}", f"eager {co['eager']:8.1f}  compiled "
                  f"{co['compiled']:8.1f}  ratio {co['ratio_compiled_vs_eager']:.3f}")
            t.row("first compiled step (compilation)", f"{co['compile_s']:.1f} s")
    f = r.get("flops")
    if name == "flops" and f is not None:
        t.section("flops: measured GEMM and the share a training step reaches")
        for k, v in f.items():
            if k.startswith("gemm"):
                t.row(k, f"{v / 1e9:.1f} GFLOP/s" if isinstance(v, float) else v.get("unavailable", v))
            elif k.endswith("per_image"):
                t.row(k, f"{v / 1e9:.3f} GFLOP")
            elif k.endswith("share_of_gemm"):
                t.row(k, f"{100 * v:.1f} %")
            elif isinstance(v, dict):
                t.row(k, v.get("unavailable", v))
    im = r.get("imports")
    if name == "imports" and im is not None:
        t.section("imports: seconds in a fresh interpreter (median)")
        for k, v in im.items():
            t.row(k, f"{v:.3f}" + ("x" if k.startswith("ratio") else " s") if isinstance(v, float) else v)
    me = r.get("memory")
    if name == "memory" and me is not None:
        t.section(f"memory: peak RSS of one epoch over {me.get('n_images', '?')} images (process tree)")
        for k, v in me.items():
            if isinstance(v, dict) and "tree_peak_mb" in v:
                t.row(k, f"{v['tree_pss_mb']:5.0f} MB PSS tree, {v['tree_peak_mb']:5.0f} MB RSS tree, "
                         f"{v['self_peak_mb']:5.0f} MB main (torch {v['torch_baseline_mb']:.0f}, data {v['data_mb']:.0f})")
            elif isinstance(v, dict):
                t.row(k, v.get("unavailable", v))
    dg = r.get("digits")
    if name == "digits" and dg is not None:
        t.section("digits: time to 98% test accuracy")
        if "unavailable" in dg:
            t.row("digits", dg["unavailable"])
        else:
            s98 = dg["seconds_to_98"]
            t.row("seconds to 98%", f"{s98:.1f} s" if isinstance(s98, float) else s98)
            t.row("test acc per epoch", ", ".join(f"{a:.2f}" for a in dg["test_acc"]))
            t.row("recipe", dg["recipe"])
    return t.render()


if __name__ == "__main__":
    main()
