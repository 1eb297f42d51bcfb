"""Opt-in torch.compile: the plain module behind it, checkpoints without the "_orig_mod." prefix,
resume with or without compile, and the CLI (flag, LR range test, report with Grad-CAM)."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from woollylib.compile import (
    COMPILE_MODES,
    compile_model,
    is_compiled,
    plain_state_dict,
    resolve_compile_mode,
    unwrap_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def tiny_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]  # one batch shape: one compile per mode
    return batches, batches[:2]


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the "eager" backend: the same OptimizedModule wrapper, prefixes and dynamo
    tracing, without inductor's C++ code generation (seconds instead of a minute per graph)."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, **{**kw, "backend": "eager"}))


def test_modes_and_errors():
    assert resolve_compile_mode(None) is None and resolve_compile_mode(False) is None
    assert resolve_compile_mode("off") is None
    assert resolve_compile_mode(True) == resolve_compile_mode("on") == "default"
    for mode in COMPILE_MODES:
        assert resolve_compile_mode(mode) == mode
    with pytest.raises(ValueError, match="compile must be one of default, reduce-overhead, max-autotune"):
        resolve_compile_mode("fast")
    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        compile_model(lambda x: x)


def test_unwrap_and_plain_state_dict():
    model = tiny_model()
    fast = compile_model(model, backend="eager")
    assert is_compiled(fast) and not is_compiled(model)
    assert compile_model(fast) is fast  # compiled once
    assert compile_model(model, None) is model
    assert unwrap_model(fast) is model and unwrap_model(model) is model
    assert unwrap_model(nn.DataParallel(fast)) is model
    assert all(k.startswith("_orig_mod.") for k in fast.state_dict())
    plain = plain_state_dict(fast)
    assert list(plain) == list(model.state_dict())
    # a state dict saved from a compiled model (or from DDP) loads into the plain module
    for saved in (fast.state_dict(), {f"module.{k}": v for k, v in fast.state_dict().items()}):
        fresh = tiny_model()
        fresh.load_state_dict(plain_state_dict(saved))
    # a compiled sub-module inside a plain model
    outer = nn.Sequential(compile_model(tiny_model(), backend="eager"))
    assert list(plain_state_dict(outer.state_dict())) == [f"0.{k}" for k in tiny_model().state_dict()]
    # a model with a child named "module" keeps it when not every key has the prefix
    odd = {"module.w": torch.zeros(1), "b": torch.zeros(1)}
    assert list(plain_state_dict(odd)) == ["module.w", "b"]


def test_missing_cpp_compiler_is_a_clear_error(monkeypatch):
    import torch._inductor.cpp_builder as builder

    def no_compiler():
        raise RuntimeError("no g++")

    monkeypatch.setattr(builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler.*apt-get install g\\+\\+"):
        compile_model(tiny_model())


def test_one_compiled_epoch_on_the_cpu_then_resume_without_compile(tmp_path):
    """The real compiler (inductor, C++ on the CPU): one epoch compiled, the second one plain."""
    from woollylib.training import Trainer

    out = tmp_path / "run"
    kw = {"epochs": 2, "lr": 0.05, "out_dir": out, "progress": False, "verbose": False, "seed": 0}
    trainer = Trainer(tiny_model(), tiny_data(), "cpu", compile="default", **kw)
    assert is_compiled(trainer.net) and not is_compiled(trainer.model)
    trainer.fit(stop_after=1)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["model"])
    plain = tiny_model()
    plain.load_state_dict(ckpt["model"])  # strict: the plain model's own keys
    torch.testing.assert_close(plain.state_dict(), trainer.model.state_dict())
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["engine"]["compile"] == "default"

    resumed = Trainer(tiny_model(), tiny_data(), "cpu", resume=True, **{k: v for k, v in kw.items() if k != "seed"})
    assert not is_compiled(resumed.net) and resumed.start_epoch == 1
    history = resumed.fit()
    assert len(history) == 2 and not any("_orig_mod" in k for k in torch.load(out / "best.pt", weights_only=True)["model"])


def test_resume_with_compile_and_with_a_model_the_caller_compiled(tmp_path, eager_compile):
    from woollylib.training import Trainer

    out = tmp_path / "run"
    kw = {"epochs": 2, "lr": 0.05, "out_dir": out, "progress": False, "verbose": False}
    Trainer(tiny_model(), tiny_data(), "cpu", seed=0, **kw).fit(stop_after=1)  # plain first epoch
    caller_compiled = torch.compile(tiny_model())
    resumed = Trainer(caller_compiled, tiny_data(), "cpu", resume=True, **kw)
    assert resumed.net is caller_compiled and resumed.model is caller_compiled._orig_mod
    resumed.fit()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not any("_orig_mod" in k for k in ckpt["model"])
    # an old checkpoint saved with the prefix resumes too
    ckpt["model"] = {f"_orig_mod.{k}": v for k, v in ckpt["model"].items()}
    ckpt["epoch"] = 1
    del ckpt["sha256"], ckpt["run_id"]  # as woollylib wrote it then: no checksum, no manifest
    torch.save(ckpt, out / "last.pt")
    (out / "manifest.json").unlink()
    again = Trainer(tiny_model(), tiny_data(), "cpu", resume=True, compile="default", **kw)
    assert again.start_epoch == 1 and is_compiled(again.net)


def test_trainer_refuses_an_unknown_mode():
    from woollylib.training import Trainer

    with pytest.raises(ValueError, match="compile must be one of"):
        Trainer(tiny_model(), tiny_data(), "cpu", epochs=1, lr=0.05, compile="fastest", progress=False)


def test_cli_compile_flag():
    from woollylib.cli import get_args_parser

    parse = get_args_parser().parse_args
    assert parse(["train", "--compile"]).compile == "default"
    assert parse(["train", "--compile", "max-autotune"]).compile == "max-autotune"
    assert parse(["train"]).compile is None
    res = subprocess.run([sys.executable, "-m", "woollylib.cli", "train", "--compile", "fastest"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "invalid choice: 'fastest'" in res.stderr


def test_lr_range_test_on_a_compiled_model(eager_compile):
    from woollylib.scheduler import find_lr

    model = tiny_model()
    fast = compile_model(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(fast, tiny_data()[0], device="cpu", num_iter=12, start_lr=1e-4, end_lr=1.0, verbose=False,
                     skip_start=1, skip_end=1)
    assert len(result.lrs) == 12 and result.suggestion > 0
    torch.testing.assert_close(model.state_dict(), before)  # the model is restored


def test_cli_compiled_run_report_with_grad_cam_and_resume(tmp_path, eager_compile, capsys):
    from woollylib import cli

    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--model", "compact", "--epochs", "2", "--batch-size", "256",
            "--device", "cpu", "--out", str(out), "--no-progress", "--scheduler", "none"]
    assert cli.main([*args, "--epochs", "1", "--compile", "--report"]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["model"])
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["engine"]["compile"] == "default"
    report = (out / "report.md").read_text()
    assert "torch.compile mode | default" in report and any(out.rglob("gradcam*.png"))
    # --resume may turn compile off: it does not change what the run computes
    assert cli.main(["train", "--out", str(out), "--resume", "--compile", "off", "--epochs", "2", "--no-progress"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["settings"]["engine"]["compile"] is None
