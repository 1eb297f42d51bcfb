"""Precision chosen from the hardware: CPU with/without native bf16, CUDA with/without, MPS (mocked),
and the Trainer/CLI path on a CPU without native bf16 (one warning, fp32, recorded in config.json)."""

import json
import types
import warnings

import pytest
import torch

from woollylib import precision
from woollylib.precision import (
    PrecisionWarning,
    choose_precision,
    cpu_info,
    resolve_channels_last,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AVX512_BF16 = {"cpu_name": "Test CPU", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
AMX = {"cpu_name": "Test CPU", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": True}
AVX512_NO_BF16 = {"cpu_name": "Test CPU", "avx2": True, "avx512_f": True, "avx512_bf16": False}
AVX2_ONLY = {"cpu_name": "Test CPU", "avx2": True, "avx512_f": False, "avx512_bf16": False}


def fake_cpu(monkeypatch, flags, capability, onednn=True):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: dict(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: onednn)


def fake_gpu(monkeypatch, name, major, minor=0, hip=None):
    props = types.SimpleNamespace(name=name, major=major, minor=minor)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.version, "hip", hip)


def no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        return fn()


# ---- CPU


@pytest.mark.parametrize("flags, capability, onednn, native", [
    (AVX512_BF16, "AVX512", True, True),
    (AMX, "AVX512", True, True),
    (AVX512_NO_BF16, "AVX512", True, False),   # AVX-512 without its bf16 extension
    (AVX2_ONLY, "AVX2", False, False),
    (AVX512_BF16, "AVX2", False, False),        # ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU
    (AVX512_BF16, "AVX512", False, False),      # ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU
    ({"cpu_name": "Arm", "bf16": True}, "DEFAULT", True, True),
    ({"cpu_name": "Arm", "bf16": False}, "DEFAULT", False, False),
])
def test_cpu_native_bf16_needs_the_instructions_and_kernels_that_use_them(monkeypatch, flags, capability,
                                                                          onednn, native):
    fake_cpu(monkeypatch, flags, capability, onednn)
    info = cpu_info()
    assert info.bf16_native is native and info.capability == capability and info.name == flags["cpu_name"]
    assert info.bf16_reason


def test_cpu_with_native_bf16(monkeypatch):
    fake_cpu(monkeypatch, AVX512_BF16, "AVX512")
    auto = no_warning(lambda: choose_precision("cpu"))  # without the model: fp32 (the choice is per model)
    assert auto.mode is False and not auto.scaler and "per model" in auto.reason
    for amp in (True, "on", "bf16"):
        p = no_warning(lambda amp=amp: choose_precision("cpu", amp))
        assert p.mode == "bf16" and p.scaler is False and p.dtype == torch.bfloat16
        assert p.bf16_native is True and p.cpu_capability == "AVX512" and "AVX-512-bf16" in p.reason
    assert no_warning(lambda: choose_precision("cpu", False)).mode is False
    assert no_warning(lambda: choose_precision("cpu", "off")).mode is False


def test_cpu_auto_is_bf16_for_models_without_grouped_convs_where_bf16_is_native(monkeypatch):
    """benchmarks/cpu_precision.py: bf16 trained the ResNets about 2x faster on an AVX-512-bf16 CPU, the
    depthwise compact net not at all; amp='auto' follows that measurement, without a warning."""
    from woollylib.models import get_model

    fake_cpu(monkeypatch, AVX512_BF16, "AVX512")
    for name in ("custom_resnet", "resnet18"):
        p = no_warning(lambda name=name: choose_precision("cpu", "auto", model=get_model(name)))
        assert p.mode == "bf16" and not p.scaler and p.requested == "auto" and "no grouped convolutions" in p.reason
    compact = get_model("compact")
    p = no_warning(lambda: choose_precision("cpu", "auto", model=compact))
    layer = precision.grouped_conv(compact)
    assert layer is not None and compact.get_submodule(layer).groups > 1
    assert p.mode is False and "grouped (depthwise)" in p.reason and repr(layer) in p.reason
    assert precision.grouped_conv(get_model("resnet18")) is None
    p = no_warning(lambda: choose_precision("cpu", True, model=get_model("compact")))
    assert p.mode == "bf16"  # asked for explicitly: honoured
    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    p = no_warning(lambda: choose_precision("cpu", "auto", model=get_model("custom_resnet")))
    assert p.mode is False and "emulated" in p.reason


def test_the_trainer_records_the_cpu_auto_choice(monkeypatch, tmp_path):
    from torch import nn

    from woollylib.training import Trainer

    fake_cpu(monkeypatch, AVX512_BF16, "AVX512")
    depthwise = nn.Sequential(nn.Conv2d(3, 3, 3, groups=3), nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
    for model, mode in ((_tiny_model(), "bf16"), (depthwise, False)):
        out = tmp_path / f"run-{mode}"
        t = Trainer(model, _tiny_data(), "cpu", epochs=1, lr=0.05, progress=False, verbose=False, out_dir=out)
        assert t.amp == mode and t.precision.requested == "auto"
        t.fit()
        recorded = json.loads((out / "config.json").read_text())["resolved"]["precision"]
        assert recorded["mode"] == mode and recorded["reason"] == t.precision.reason


def test_cpu_without_native_bf16_falls_back_to_fp32_with_one_warning(monkeypatch):
    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    with pytest.warns(PrecisionWarning) as record:
        p = choose_precision("cpu", True)
    assert len(record) == 1
    message = str(record[0].message)
    assert "fp32 instead of bf16" in message and "AVX2" in message and "slower than fp32" in message
    assert p.mode is False and p.scaler is False and p.dtype is None and p.bf16_native is False
    assert p.warning == message and p.requested is True
    # auto and off: fp32, silently
    assert no_warning(lambda: choose_precision("cpu", "auto")).mode is False
    assert no_warning(lambda: choose_precision("cpu", False)).mode is False


def test_cpu_explicit_bf16_is_honoured_with_the_warning_and_fp16_warned(monkeypatch):
    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    with pytest.warns(PrecisionWarning, match="without native bf16") as record:
        p = choose_precision("cpu", "bf16")
    assert len(record) == 1 and p.mode == "bf16" and not p.scaler
    with pytest.warns(PrecisionWarning, match="fp16 autocast trained") as record:
        p = choose_precision("cpu", "fp16")
    assert len(record) == 1 and p.mode == "fp16" and p.scaler and p.dtype == torch.float16
    fake_cpu(monkeypatch, AVX512_BF16, "AVX512")  # fp16 is slow on a bf16 CPU too
    with pytest.warns(PrecisionWarning):
        assert choose_precision("cpu", "fp16").mode == "fp16"


def test_emulated_avx2_cpu_has_no_native_bf16():
    """Under torch's own kernel overrides (how an AVX2 CPU is emulated here) the real detection says no."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = ("from woollylib.precision import cpu_info; i = cpu_info(); "
            "print(i.capability, i.bf16_native, i.overrides)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    capability, native, overrides = out.stdout.split(maxsplit=2)
    assert native == "False" and "ATEN_CPU_CAPABILITY=avx2" in overrides
    assert capability in ("AVX2", "DEFAULT")  # a CPU without AVX2 falls back to DEFAULT


# ---- CUDA (mocked)


def test_cuda_with_native_bf16_picks_bf16_without_scaler(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA H200", 9)
    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)  # the host CPU does not matter
    for amp in ("auto", True):
        p = no_warning(lambda amp=amp: choose_precision("cuda", amp))
        assert p.mode == "bf16" and p.scaler is False and p.device_name == "NVIDIA H200" and p.bf16_native
        assert "compute capability 9.0" in p.reason
    assert no_warning(lambda: choose_precision("cuda:0", "bf16")).mode == "bf16"
    p = no_warning(lambda: choose_precision("cuda", "fp16"))
    assert p.mode == "fp16" and p.scaler is True
    assert no_warning(lambda: choose_precision("cuda", False)).mode is False


def test_cuda_without_native_bf16_picks_fp16_with_scaler_and_warns_on_bf16(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4", 7, 5)
    for amp in ("auto", True):
        p = no_warning(lambda amp=amp: choose_precision("cuda", amp))
        assert p.mode == "fp16" and p.scaler is True and p.bf16_native is False and "no native bf16" in p.reason
    with pytest.warns(PrecisionWarning, match="Tesla T4 .*compute capability 7.5.*no native bf16") as record:
        p = choose_precision("cuda", "bf16")
    assert len(record) == 1 and p.mode == "bf16" and not p.scaler


def test_rocm_counts_as_native_bf16(monkeypatch):
    fake_gpu(monkeypatch, "AMD Instinct MI300X", 9, 4, hip="6.2")
    assert no_warning(lambda: choose_precision("cuda")).mode == "bf16"


# ---- MPS and errors


def test_mps_stays_fp32_unless_asked(monkeypatch):
    fake_cpu(monkeypatch, AVX2_ONLY, "DEFAULT")
    assert no_warning(lambda: choose_precision("mps")).mode is False
    with pytest.warns(PrecisionWarning, match="MPS"):
        assert choose_precision("mps", True).mode is False
    assert no_warning(lambda: choose_precision("mps", "fp16")).mode == "fp16"
    assert no_warning(lambda: choose_precision("mps", "bf16")).mode == "bf16"
    assert resolve_channels_last("mps") is False and resolve_channels_last("cpu") is True
    assert resolve_channels_last("cuda") is True and resolve_channels_last("cpu", "off") is False


@pytest.mark.parametrize("amp", ["fp8", 1.5, "half"])
def test_unknown_amp_is_an_error_naming_the_choices(amp):
    with pytest.raises(ValueError, match="amp must be 'auto'.*'bf16' or 'fp16'"):
        choose_precision("cpu", amp)
    with pytest.raises(ValueError, match="channels_last must be"):
        resolve_channels_last("cpu", "sometimes")


def test_warn_false_gives_the_same_choice_silently(monkeypatch):
    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    p = no_warning(lambda: choose_precision("cpu", True, warn=False))
    assert p.mode is False and p.warning  # the note is still recorded


def test_speed_defaults_delegates(monkeypatch):
    from woollylib.training import speed_defaults

    fake_cpu(monkeypatch, AVX512_BF16, "AVX512")
    assert speed_defaults("cpu", True) == ("bf16", True)
    assert speed_defaults("cpu") == (False, True)
    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    with pytest.warns(PrecisionWarning):
        assert speed_defaults("cpu", True, "off") == (False, False)


# ---- through the Trainer and the CLI


def _tiny_data(n=16):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, n, 8)]
    return batches, batches


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("native", [True, False])
def test_trainer_records_the_choice_and_warns_once(monkeypatch, tmp_path, native):
    from woollylib.training import Trainer

    if native:
        fake_cpu(monkeypatch, AVX512_BF16, "AVX512")
    else:
        fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = Trainer(_tiny_model(), _tiny_data(), "cpu", epochs=1, lr=0.05, amp=True, out_dir=tmp_path / "r",
                          progress=False, verbose=False)
        trainer.fit()
    ours = [w for w in record if issubclass(w.category, PrecisionWarning)]
    assert len(ours) == (0 if native else 1)
    assert trainer.amp == ("bf16" if native else False) and trainer.scaler is None
    resolved = json.loads((tmp_path / "r" / "config.json").read_text())["resolved"]
    rec = resolved["precision"]
    assert resolved["amp"] == trainer.amp and rec["mode"] == trainer.amp and rec["requested"] is True
    assert rec["device"] == "cpu" and rec["cpu_capability"] == ("AVX512" if native else "AVX2")
    assert rec["bf16_native"] is native and rec["reason"] and rec["label"] == ("bf16 autocast" if native else "fp32")


def test_cli_amp_on_a_cpu_without_native_bf16_trains_in_fp32_with_one_warning(monkeypatch, tmp_path, capsys):
    from woollylib import cli

    fake_cpu(monkeypatch, AVX2_ONLY, "AVX2", onednn=False)
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rc = cli.main(["train", "--dataset", "digits", "--model", "compact", "--epochs", "1", "--batch-size", "128",
                       "--lr", "0.05", "--amp", "--device", "cpu", "--out", str(out), "--report"])
    assert rc == 0
    ours = [w for w in record if issubclass(w.category, PrecisionWarning)]
    assert len(ours) == 1 and "fp32 instead of bf16" in str(ours[0].message)
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["engine"]["amp"] is True  # what was asked
    assert config["resolved"]["amp"] is False and config["resolved"]["precision"]["cpu_capability"] == "AVX2"
    report = (out / "report.md").read_text()
    assert "precision" in report and "fp32" in report and "AVX2" in report


AVX512_FLAGS = {"avx": True, "avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}


@pytest.mark.parametrize("flags, env, family", [
    (AVX512_FLAGS, None, "AVX512"),
    (AVX512_FLAGS, "AVX2", "AVX2"),              # the kernels the benchmark found crashing, on an AVX-512 CPU
    (AVX512_FLAGS, "avx2_vnni", "AVX2"),
    (AVX512_FLAGS, "AVX512_CORE_BF16", "AVX512"),
    (AVX512_FLAGS, "SSE41", "SSE41"),
    (AVX512_FLAGS, "DEFAULT", "AVX512"),
    ({**AVX512_FLAGS, "avx512_bw": False}, None, "AVX2"),  # AVX-512F alone is not oneDNN's avx512_core
    ({"avx": True, "avx2": True}, None, "AVX2"),
    ({"avx": True, "avx2": True}, "AVX512_CORE", "AVX2"),  # a cap above the CPU does not raise it
    ({"avx": True}, None, "AVX"),
    ({}, None, "SSE41"),
])
def test_onednn_isa_family_from_the_cpu_and_the_override(monkeypatch, flags, env, family):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if env is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", env)
    assert precision.onednn_isa_family() == family


def test_narrow_strided_1x1_convs_train_in_nchw_where_onednn_runs_avx2_kernels(monkeypatch):
    """channels_last + a 1x1 strided conv with 2-7 input channels crashes the backward pass of oneDNN's AVX2
    kernels (heap corruption: abort, segfault or hang; benchmarks/channels_last_hazard.py); such models train
    in NCHW with one warning there. The AVX2 path is forced here, so the check runs on every CPU."""
    from woollylib.models import get_model
    from woollylib.training import Trainer

    monkeypatch.setattr(precision, "onednn_isa_family", lambda: "AVX2")
    narrow, wide = get_model("compact", width=4), get_model("compact", width=8)
    assert precision.channels_last_hazard(narrow, "cpu") == "layer2.0.shortcut"  # Conv2d(4, 8, 1, stride=2)
    assert precision.channels_last_hazard(wide, "cpu") is None  # Conv2d(8, 16, 1, stride=2) trains in NHWC
    assert precision.channels_last_hazard(narrow, "cuda") is None
    one = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 1, stride=2), torch.nn.Conv2d(4, 4, 3, stride=2))
    assert precision.channels_last_hazard(one, "cpu") is None  # 1 input channel and 3x3 strided convs train
    assert resolve_channels_last("cpu", "off", narrow) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_channels_last("cpu", "auto", wide) is True
    for asked in ("auto", True):
        with pytest.warns(PrecisionWarning, match=r"'layer2.0.shortcut'.*fewer than 8 input channels.*AVX2.*NCHW") as seen:
            assert resolve_channels_last("cpu", asked, narrow) is False
        assert len(seen) == 1
    images = torch.rand(16, 3, 32, 32)
    labels = torch.arange(16) % 10
    pair = [(images, labels)] * 2
    with pytest.warns(PrecisionWarning, match="channels_last is off"):
        t = Trainer(narrow, (pair, pair), "cpu", epochs=1, lr=0.05, progress=False, verbose=False)
    assert t.channels_last is False
    history = t.fit()  # in channels_last on AVX2 kernels this step is the one that crashes
    assert len(history) == 1 and torch.isfinite(torch.tensor(history.train_loss)).all()
    monkeypatch.setattr(precision, "onednn_isa_family", lambda: "AVX512")
    assert precision.channels_last_hazard(narrow, "cpu") is None  # its AVX-512 kernels train (measured)


def test_the_narrow_model_trains_on_this_cpus_own_kernels():
    """The guard as this machine decides it: NCHW where oneDNN runs AVX2 kernels, NHWC elsewhere; either way
    the step must train (a wrong guard kills this process: the test then fails as a crashed worker)."""
    from woollylib.models import get_model
    from woollylib.training import Trainer

    narrow = get_model("compact", width=4)
    images = torch.rand(16, 3, 32, 32)
    pair = [(images, torch.arange(16) % 10)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        t = Trainer(narrow, (pair, pair), "cpu", epochs=1, lr=0.05, progress=False, verbose=False)
    assert t.channels_last is (precision.onednn_isa_family() != "AVX2" or not torch.backends.mkldnn.enabled)
    history = t.fit()
    assert len(history) == 1 and torch.isfinite(torch.tensor(history.train_loss)).all()
