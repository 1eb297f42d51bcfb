"""Mixed precision chosen from the hardware, with the reason.

    from woollylib.precision import choose_precision, cpu_info
    p = choose_precision("cuda")           # amp="auto": bf16 where the GPU has it natively, else fp16
    p.mode, p.scaler, p.reason             # ('bf16', False, 'NVIDIA H200 (compute capability 9.0) ...')
    p = choose_precision("cpu", amp=True)  # fp32 and one PrecisionWarning on a CPU without native bf16
    p.to_dict()                            # what config.json records under "resolved"/"precision"
    cpu_info().bf16_native                 # AVX-512-bf16/AMX (or Arm bf16) used by torch's kernels

``amp`` is "auto" | True | False | "bf16" | "fp16" ("on"/"off" are True/False). ``mode`` is the
engine's ``amp=`` value: False (fp32), "bf16" (autocast, no GradScaler) or "fp16" (autocast with a
GradScaler).

=======  =====================================  ===========================================
device   "auto" / True                          warned about
=======  =====================================  ===========================================
CUDA     bf16 where native (compute capability  "bf16" on a GPU that only emulates it
         >= 8: A100, H100, RTX 30xx+), else
         fp16 + GradScaler (T4, V100)
CPU      auto: bf16 where native and the model  True or "bf16" without native bf16 (True
         has no grouped convolution, else fp32  falls back to fp32); "fp16" (any CPU)
         (measured: benchmarks/cpu_precision.py)
         True: bf16 where native, else fp32
MPS      fp32 ("bf16"/"fp16" as asked)          True (stays fp32)
=======  =====================================  ===========================================

A CPU has native bf16 when its instruction set has it (AVX-512-bf16 or AMX-bf16; Arm: bf16) and
torch's kernels use it: ATen runs its AVX-512 kernels (``torch.backends.cpu.get_cpu_capability()``,
lowered by ``ATEN_CPU_CAPABILITY``) and oneDNN has bf16 kernels (lowered by ``ONEDNN_MAX_CPU_ISA``).
"""

from __future__ import annotations

import os
import platform
import warnings
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "AMP_CHOICES",
    "CpuInfo",
    "Precision",
    "PrecisionWarning",
    "channels_last_hazard",
    "choose_precision",
    "cpu_info",
    "onednn_isa_family",
    "resolve_channels_last",
]

AMP_CHOICES = ("auto", True, False, "bf16", "fp16")

# Measured costs quoted by the warnings (training images/s, batch 32, channels_last, 2 torch threads).
BF16_EMULATED_CPU_COST = ("bf16 autocast trained 14-17x slower than fp32 on a 2-core AVX2 CPU "
                          "(custom_resnet 2.7 vs 44.9 img/s, resnet18 1.9 vs 26.6, compact 37 vs 527)")
FP16_CPU_COST = ("fp16 autocast trained 6-14x slower than fp32 on a 2-core AMD EPYC CPU with AVX-512-bf16 "
                 "(custom_resnet 1.1 vs 15.5 img/s, compact 9.0 vs 59.3) and as slow on AVX2")
BF16_EMULATED_GPU_COST = "GPUs before compute capability 8.0 (T4, V100) compute bf16 through fp32 and run slower than fp16"


class PrecisionWarning(UserWarning):
    """The precision asked for is slow on this hardware (or was replaced by fp32)."""


# ------------------------------------------------------------------------------------- CPU ---

@dataclass(frozen=True)
class CpuInfo:
    name: str            # model name, e.g. "AMD EPYC"
    arch: str            # platform.machine(), e.g. "x86_64"
    capability: str      # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, DEFAULT, ...
    bf16_hardware: bool  # the instruction set has bf16 (AVX-512-bf16, AMX-bf16, Arm bf16)
    bf16_native: bool    # ... and torch's kernels use it (see the module docstring)
    bf16_reason: str     # why bf16_native is what it is
    threads: int         # torch.get_num_threads()
    overrides: str = ""  # kernel overrides set in the environment, e.g. "ATEN_CPU_CAPABILITY=avx2"


def _cpu_flags() -> dict:
    """CPU features as {name: bool} (torch's cpuinfo where available, else /proc/cpuinfo)."""
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is not None:
        try:
            return dict(get())
        except (RuntimeError, AttributeError):  # pragma: no cover - torch built without cpuinfo
            pass
    flags: dict = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("flags", "features") and not flags:
                    flags.update({name: True for name in value.split()})
                elif key == "model name" and "cpu_name" not in flags:
                    flags["cpu_name"] = value.strip()
    except OSError:
        pass
    return flags


def _onednn_bf16() -> bool | None:
    """Whether oneDNN has bf16 kernels on this CPU (None: torch does not say)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch without oneDNN
        return None


def _overrides() -> str:
    """The CPU kernel overrides set in the environment (empty when none)."""
    keys = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
    return ", ".join(f"{k}={os.environ[k]}" for k in keys if os.environ.get(k))


def cpu_info() -> CpuInfo:
    """This CPU's name, torch's kernel capability and whether bf16 is native here."""
    flags = _cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    arch = platform.machine() or str(flags.get("architecture", ""))
    name = str(flags.get("cpu_name") or platform.processor() or arch or "unknown CPU")
    onednn = _onednn_bf16()
    if any(flags.get(k) for k in ("avx512_bf16", "amx_bf16")):
        hardware = True
        have = "AMX-bf16" if flags.get("amx_bf16") else "AVX-512-bf16"
        if not capability.upper().startswith("AVX512"):
            native, reason = False, (f"the CPU has {have} but torch runs its {capability} kernels here "
                                     "(ATEN_CPU_CAPABILITY lowers them)")
        elif onednn is False:
            native, reason = False, (f"the CPU has {have} but oneDNN runs without bf16 kernels here "
                                     "(ONEDNN_MAX_CPU_ISA lowers them)")
        else:
            native, reason = True, f"{have} with torch's {capability} kernels"
    elif any(flags.get(k) for k in ("bf16", "sve_bf16")):  # Arm
        hardware = True
        native = onednn is not False
        reason = "Arm bf16 instructions" if native else "the CPU has Arm bf16 but oneDNN does not use it here"
    else:
        hardware, native = False, False
        reason = f"the CPU has no AVX-512-bf16 or AMX-bf16 instructions (torch kernels: {capability})"
    return CpuInfo(name=name, arch=arch, capability=capability, bf16_hardware=hardware, bf16_native=native,
                   bf16_reason=reason, threads=torch.get_num_threads(), overrides=_overrides())


# ------------------------------------------------------------------------------------ choice ---

@dataclass(frozen=True)
class Precision:
    mode: bool | str        # False | "bf16" | "fp16": the engine's amp= value
    scaler: bool            # a GradScaler is needed (fp16)
    reason: str             # why this mode, one sentence
    requested: bool | str   # the amp asked for ("auto", True, False, "bf16", "fp16")
    device: str             # e.g. "cuda:0", "cpu"
    device_name: str        # GPU or CPU model name
    bf16_native: bool | None  # the device computes bf16 natively (None for MPS: not known)
    cpu_capability: str     # torch.backends.cpu.get_cpu_capability()
    warning: str | None = None  # the PrecisionWarning given, if any

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None = fp32)."""
        return {False: None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.mode]

    @property
    def label(self) -> str:
        """'fp32' | 'bf16 autocast' | 'fp16 autocast + GradScaler'."""
        return {False: "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler"}[self.mode]

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def _normalise_amp(amp):
    if isinstance(amp, str):
        amp = {"on": True, "off": False}.get(amp.lower(), amp.lower())
    if amp is None:
        amp = False
    if isinstance(amp, bool) or amp in ("auto", "bf16", "fp16"):
        return amp
    raise ValueError(f"amp must be 'auto', True/'on', False/'off', 'bf16' or 'fp16', got {amp!r}")


def _cuda_facts(device: torch.device) -> tuple[str, bool, str]:
    """(GPU name, native bf16, compute capability text) of ``device``."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    if getattr(torch.version, "hip", None):
        return props.name, True, "ROCm"
    return props.name, props.major >= 8, f"compute capability {props.major}.{props.minor}"


def grouped_conv(model) -> str | None:
    """The name of the first grouped (e.g. depthwise) convolution of ``model``, else None."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd) and module.groups > 1:
            return name or type(module).__name__
    return None


def cpu_auto_precision(cpu: CpuInfo, model=None) -> tuple[bool | str, str]:
    """``amp="auto"`` on the CPU: (mode, reason). bf16 autocast where the CPU computes bf16 natively and the
    model has no grouped convolution, else fp32.

    Decided by ``python benchmarks/cpu_precision.py`` (every registered model, channels_last, bf16 against
    fp32 in images/s and in test accuracy on digits over 3 seeds) on a 2-core AMD EPYC with AVX-512-bf16
    (Zen 4, 2026-12-04): custom_resnet, resnet18 and resnet34 trained 1.92x, 3.16x and 1.86x faster in bf16
    (batch 64) with accuracy within the seeds' spread, while the depthwise ``compact`` net gained nothing
    (0.96x; its digits runs took 5.0 s against 4.2 s). Without native bf16, bf16 is emulated (14-17x slower:
    fp32).
    """
    if not cpu.bf16_native:
        return False, f"fp32: {cpu.bf16_reason}, so bf16 would be emulated (slow)"
    if model is None:
        return False, ("fp32: on the CPU amp='auto' chooses bf16 per model (pass the model; amp=True or "
                       "'bf16' forces it)")
    layer = grouped_conv(model)
    if layer is not None:
        return False, (f"fp32: the model has grouped (depthwise) convolutions ({layer!r}), which bf16 does not "
                       f"speed up on the CPU (measured 0.96x for compact); amp=True or 'bf16' forces it")
    return "bf16", f"{cpu.name} has native bf16 ({cpu.bf16_reason}) and the model has no grouped convolutions"


def choose_precision(device, amp="auto", *, warn: bool = True, model=None) -> Precision:
    """The precision to train with on ``device`` for ``amp`` (see the module docstring).

    On the CPU, ``amp="auto"`` looks at ``model`` too (:func:`cpu_auto_precision`): bf16 where the CPU has
    native bf16 and the model has no grouped convolution, else fp32.

    Gives at most one ``PrecisionWarning`` (with ``warn``), naming the reason and the measured cost.
    """
    requested = _normalise_amp(amp)
    device = torch.device(device)
    cpu = cpu_info()
    note = None
    if device.type == "cuda":
        name, native, cc = _cuda_facts(device)
        bf16_native = native
        if requested is False:
            mode, reason = False, "amp off"
        elif requested in ("auto", True):
            mode = "bf16" if native else "fp16"
            reason = (f"{name} ({cc}) computes bf16 natively; no GradScaler needed" if native else
                      f"{name} ({cc}) has no native bf16; fp16 needs a GradScaler")
        elif requested == "bf16":
            mode = "bf16"
            reason = f"bf16 asked for; {name} ({cc}) " + ("computes it natively" if native else "emulates it")
            if not native:
                note = (f"amp='bf16' on {name} ({cc}), which has no native bf16: {BF16_EMULATED_GPU_COST}; "
                        "use amp='auto' (fp16 + GradScaler here)")
        else:
            mode, reason = "fp16", f"fp16 asked for on {name} ({cc})"
    elif device.type == "cpu":
        name, bf16_native = cpu.name, cpu.bf16_native
        if requested is False:
            mode, reason = False, "amp off"
        elif requested == "auto":
            mode, reason = cpu_auto_precision(cpu, model)
        elif requested in (True, "bf16"):
            if cpu.bf16_native:
                mode, reason = "bf16", f"{cpu.name} has native bf16 ({cpu.bf16_reason})"
            elif requested is True:
                mode, reason = False, f"{cpu.bf16_reason}: bf16 autocast would be slow"
                note = (f"amp=True: training in fp32 instead of bf16 on {cpu.name}: {cpu.bf16_reason}; "
                        f"{BF16_EMULATED_CPU_COST}. Pass amp='bf16' to force it, amp=False to silence this")
            else:
                mode, reason = "bf16", f"bf16 asked for without native bf16 ({cpu.bf16_reason})"
                note = (f"amp='bf16' on {cpu.name} without native bf16 ({cpu.bf16_reason}): "
                        f"{BF16_EMULATED_CPU_COST}. amp=False trains in fp32")
        else:
            mode, reason = "fp16", "fp16 asked for on the CPU"
            note = f"amp='fp16' on the CPU: {FP16_CPU_COST}. amp=False trains in fp32"
    elif device.type == "mps":
        name, bf16_native = "Apple MPS", None
        if requested in (False, "auto", True):
            mode = False
            reason = "amp off" if requested is False else "mixed precision is not chosen automatically on MPS"
            if requested is True:
                note = ("amp=True on MPS: training in fp32 (mixed precision is not chosen automatically on MPS); "
                        "pass amp='fp16' or amp='bf16' to use autocast")
        else:
            mode, reason = requested, f"{requested} asked for on MPS"
    else:
        raise ValueError(f"no precision rule for device {str(device)!r}; use 'cpu', 'cuda' or 'mps'")
    if note is not None and warn:
        warnings.warn(note, PrecisionWarning, stacklevel=2)
    return Precision(mode=mode, scaler=mode == "fp16", reason=reason, requested=requested, device=str(device),
                     device_name=name, bf16_native=bf16_native, cpu_capability=cpu.capability, warning=note)


_ISA_ORDER = ("SSE41", "AVX", "AVX2", "AVX512")


def onednn_isa_family() -> str:
    """The instruction-set family of oneDNN's CPU kernels here: "AVX512", "AVX2", "AVX" or "SSE41": the best
    this CPU has (AVX-512 needs F, BW, VL and DQ), lowered by ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``)."""
    flags = _cpu_flags()

    def has(*names):
        return all(flags.get(n) or flags.get(n.replace("_", "")) for n in names)

    if has("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"):
        best = "AVX512"
    elif has("avx2"):
        best = "AVX2"
    elif has("avx"):
        best = "AVX"
    else:
        best = "SSE41"
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if not cap or cap in ("ALL", "DEFAULT"):
        return best
    family = "AVX512" if cap.startswith(("AVX512", "AVX10")) else "AVX2" if cap.startswith("AVX2") else \
        "AVX" if cap.startswith("AVX") else "SSE41"
    return min(best, family, key=_ISA_ORDER.index)


def channels_last_hazard(model, device) -> str | None:
    """The name of a layer that oneDNN's CPU kernels cannot train in channels_last here, else None.

    On torch 2.14 a 1x1 convolution with a stride above 1 and 2-7 input channels (a narrow
    downsampling shortcut, e.g. ``compact`` at ``width`` < 8) corrupts the heap in its backward pass
    when input and weights are channels_last and oneDNN runs its AVX2 kernels: the process aborts,
    segfaults or hangs. ``python benchmarks/channels_last_hazard.py`` measured which kernel paths crash:
    on an AVX-512 CPU (AMD EPYC Zen 4) only ``ONEDNN_MAX_CPU_ISA=AVX2`` did (2, 3, 4, 6 and 7 channels);
    its AVX-512, AVX and SSE4.1 kernels trained, as did 8 and 16 channels; a Zen 1 AVX2 CPU crashed the
    same way. So the check applies only where :func:`onednn_isa_family` is "AVX2".
    """
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available() \
            or not torch.backends.mkldnn.enabled or onednn_isa_family() != "AVX2":
        return None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1) \
                and tuple(module.stride) != (1, 1) and 1 < module.in_channels // module.groups < 8:
            return name or type(module).__name__
    return None


def resolve_channels_last(device, channels_last="auto", model=None) -> bool:
    """``"auto"`` -> True on CUDA and the CPU (NHWC trained 1.1-1.5x faster for every model here),
    False on MPS; True/False/"on"/"off" pass through. With ``model``, NHWC on the CPU is turned off
    (one PrecisionWarning naming the layer) where :func:`channels_last_hazard` finds a layer that
    would crash the process."""
    if isinstance(channels_last, str):
        channels_last = {"on": True, "off": False}.get(channels_last, channels_last)
    if isinstance(channels_last, str):
        if channels_last != "auto":
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        channels_last = torch.device(device).type in ("cuda", "cpu")
    channels_last = bool(channels_last)
    layer = channels_last_hazard(model, device) if channels_last and model is not None else None
    if layer is not None:
        warnings.warn(f"channels_last is off for this model on the CPU: its layer {layer!r} (a 1x1 strided "
                      "convolution with fewer than 8 input channels) crashes the channels_last backward pass "
                      "of oneDNN's AVX2 kernels; training in NCHW instead (widen the layer to 8+ channels to get "
                      "NHWC back)",
                      PrecisionWarning, stacklevel=2)
        return False
    return channels_last
