"""Opt-in ``torch.compile`` and the plain module behind it.

    from woollylib.compile import compile_model, unwrap_model, plain_state_dict
    fast = compile_model(model, "max-autotune")   # torch.compile once; shares model's weights
    unwrap_model(fast) is model                   # the plain module (also through DDP/DataParallel)
    plain_state_dict(fast)                        # keys without the "_orig_mod." prefix
    plain_state_dict(torch.load("old.pt", weights_only=True)["model"])  # a compiled model's save

Modes: "default", "reduce-overhead" (CUDA graphs: less launch overhead for small batches),
"max-autotune" (searches kernels; long first compile). ``True``/"on" mean "default"; ``None``,
``False`` and "off" mean no compile. Compiling is lazy: the first forward pass in train mode and the
first in eval mode (or with a new batch shape) each compile, so an epoch's first batches are slow.
On the CPU torch's compiler needs a C++ compiler (g++ or clang++) on PATH.
"""

from __future__ import annotations

import sys

__all__ = ["COMPILE_MODES", "compile_model", "is_compiled", "plain_state_dict", "resolve_compile_mode",
           "unwrap_model"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
_PREFIX = "_orig_mod."


def resolve_compile_mode(value) -> str | None:
    """None/False/"off"/"none" -> None; True/"on" -> "default"; a mode passes through."""
    if value is None or value is False or (isinstance(value, str) and value.lower() in ("off", "none", "")):
        return None
    if value is True or (isinstance(value, str) and value.lower() == "on"):
        return "default"
    if isinstance(value, str) and value.lower() in COMPILE_MODES:
        return value.lower()
    raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, True/'on' (= default) or "
                     f"None/False/'off', got {value!r}")


def is_compiled(model) -> bool:
    """Whether ``model`` is a ``torch.compile`` wrapper (an ``OptimizedModule``)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded by any torch.compile call
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


def unwrap_model(model):
    """The plain module inside ``torch.compile``, DistributedDataParallel and DataParallel wrappers."""
    from torch import nn

    while True:
        if is_compiled(model):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def plain_state_dict(model_or_state) -> dict:
    """The state dict of the plain module: from a (compiled) module, or a saved state dict whose keys
    carry the ``_orig_mod.`` prefix (and ``module.`` when every key has it, as DDP saves)."""
    from torch import nn

    if isinstance(model_or_state, nn.Module):
        return unwrap_model(model_or_state).state_dict()
    state = dict(model_or_state)
    while True:
        if state and all(k.startswith(_PREFIX) for k in state):
            state = {k[len(_PREFIX):]: v for k, v in state.items()}
        elif state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        else:
            break
    # a compiled sub-module inside a plain model: "encoder._orig_mod.conv.weight"
    return {k.replace("." + _PREFIX, "."): v for k, v in state.items()}


def _check_cpp_compiler() -> None:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # pragma: no cover - a torch without inductor's builder: let torch say it
        return
    try:
        get_cpp_compiler()
    except Exception as exc:
        raise RuntimeError(
            "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH, and none was found "
            f"({type(exc).__name__}: {exc}); install one (Debian/Ubuntu: apt-get install g++; conda: conda "
            "install gxx) or train without compile"
        ) from exc


def compile_model(model, mode="default", *, backend: str = "inductor", **options):
    """``torch.compile(model, mode=mode)`` once: an already compiled model is returned as it is and
    ``mode=None`` returns ``model``. ``backend``/``options``: passed to ``torch.compile``."""
    import torch

    mode = resolve_compile_mode(mode)
    if mode is None or is_compiled(model):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"compile_model needs a torch.nn.Module, got {type(model).__name__}")
    on_cpu = any(p.device.type == "cpu" for p in model.parameters())
    if backend == "inductor" and on_cpu:
        _check_cpp_compiler()
    return torch.compile(model, mode=None if mode == "default" else mode, backend=backend, **options)
