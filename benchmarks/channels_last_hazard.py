"""Which CPU kernel paths crash in oneDNN's channels_last backward of a narrow strided 1x1 convolution?

    python benchmarks/channels_last_hazard.py                 # every ISA this CPU can run, 2-8 and 16 channels
    python benchmarks/channels_last_hazard.py --isa AVX2,DEFAULT --channels 4

The bare reproducer (no woollylib): Conv2d(C, 2C, kernel 1, stride 2), input and weights channels_last,
20 forward + backward steps at batch 16 on 16x16 images, in a fresh process per case with
ONEDNN_MAX_CPU_ISA set (oneDNN then runs the kernels of that instruction set, up to what the CPU has;
DEFAULT is the best the CPU has). A case "crashes" when the process dies by a signal or an abort
(heap corruption: `free(): invalid size`, `double free or corruption`), "hangs" past the timeout, or
"differs" when its gradients are not those of the same step in NCHW. woollylib's guard
(`woollylib.precision.channels_last_hazard`) is decided by this table: the README quotes it with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CASE = r"""
import sys, torch
c = int(sys.argv[1])
torch.manual_seed(0)
conv = torch.nn.Conv2d(c, 2 * c, 1, stride=2)
ref = torch.nn.Conv2d(c, 2 * c, 1, stride=2)
ref.load_state_dict(conv.state_dict())
conv = conv.to(memory_format=torch.channels_last)
worst = 0.0
for _ in range(20):
    x = torch.randn(16, c, 16, 16)
    xl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    conv(xl).square().sum().backward()
    ref(xr).square().sum().backward()
    worst = max(worst, (xl.grad - xr.grad).abs().max().item(), (conv.weight.grad - ref.weight.grad).abs().max().item())
    conv.zero_grad(); ref.zero_grad()
print("MAXDIFF", worst)
"""

ISAS = ("DEFAULT", "AVX512_CORE_AMX", "AVX512_CORE_BF16", "AVX512_CORE_VNNI", "AVX512_CORE", "AVX2", "AVX", "SSE41")


def run_case(isa: str, channels: int, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-c", CASE, str(channels)], env=env, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"result": "hangs", "seconds": timeout}
    seconds = time.perf_counter() - t0
    if res.returncode:
        tail = (res.stderr.strip().splitlines() or [""])[-1][:120]
        how = f"signal {-res.returncode}" if res.returncode < 0 else f"exit {res.returncode}"
        return {"result": "crashes", "how": how, "stderr": tail, "seconds": seconds}
    diff = float(res.stdout.split("MAXDIFF")[-1])
    return {"result": "trains" if diff < 1e-3 else "differs", "max_grad_diff": diff, "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    import torch

    from woollylib.precision import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", default=",".join(ISAS), help="comma-separated ONEDNN_MAX_CPU_ISA values")
    ap.add_argument("--channels", default="2,3,4,6,7,8,16", help="comma-separated input channel counts")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before a case counts as hanging")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON")
    args = ap.parse_args(argv)
    cpu = cpu_info()
    report = {"cpu": cpu.name, "capability": cpu.capability, "torch": torch.__version__,
              "onednn": torch.backends.mkldnn.is_available(), "cases": {}}
    print(f"CPU {cpu.name}, torch {torch.__version__}, ATen kernels {cpu.capability}", flush=True)
    channels = [int(c) for c in args.channels.split(",")]
    print(f"{'ONEDNN_MAX_CPU_ISA':<18} " + " ".join(f"C={c:<8}" for c in channels), flush=True)
    for isa in [s.strip().upper() for s in args.isa.split(",") if s.strip()]:
        row = report["cases"].setdefault(isa, {})
        cells = []
        for c in channels:
            row[str(c)] = r = run_case(isa, c, args.timeout)
            cells.append(f"{r['result']:<10}")
        print(f"{isa:<18} " + " ".join(cells), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"channels_last_hazard-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}", flush=True)
    return report


if __name__ == "__main__":
    main()
