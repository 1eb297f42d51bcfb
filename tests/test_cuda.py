"""CUDA-only paths: the precision chosen for the GPU, fp16 + GradScaler, bf16, pinned memory, the
DeviceLoader, Grad-CAM, summary, resume and the CLI on CUDA. They run where torch sees a CUDA GPU and
are reported as skipped, with the reason, elsewhere."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")


def native_bf16() -> bool:
    """The oracle: torch's own answer, without emulation."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def batches(n=4, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n * bs, 3, 16, 16, generator=g), torch.randint(0, 4, (n * bs,), generator=g)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n * bs, bs)]


def trainer(out=None, model=None, **kw):
    from woollylib.training import Trainer

    kw = {"epochs": 2, "lr": 0.05, "progress": False, "verbose": False, "out_dir": out, **kw}
    return Trainer(model if model is not None else tiny(), (batches(), batches(2, seed=1)), "cuda", **kw)


# ---- precision


def test_auto_precision_follows_the_gpu():
    from woollylib.precision import choose_precision

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        p = choose_precision("cuda")
    assert p.mode == ("bf16" if native_bf16() else "fp16") and p.scaler == (not native_bf16())
    assert p.device_name == torch.cuda.get_device_name() and p.bf16_native == native_bf16()
    t = trainer()
    assert t.amp == p.mode and (t.scaler is not None) == p.scaler and t.channels_last
    assert t.config["resolved"]["precision"]["mode"] == p.mode


@pytest.mark.parametrize("amp, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_autocast_dtype_on_cuda(amp, dtype):
    from woollylib.precision import PrecisionWarning

    seen = []
    model = tiny()
    model.conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # bf16 on a GPU that emulates it warns
        t = trainer(model=model, amp=amp, epochs=1)
    assert isinstance(t.scaler, torch.amp.GradScaler) == (amp == "fp16")
    history = t.fit()
    assert seen and set(seen) == {dtype}
    assert np.isfinite(history.train_loss[-1]) and next(t.model.parameters()).dtype == torch.float32


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path):
    out = tmp_path / "run"
    first = trainer(out, amp="fp16", seed=0)
    first.fit(stop_after=1)
    ckpt = torch.load(out / "last.pt", weights_only=True, map_location="cpu")
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 0
    resumed = trainer(out, amp="fp16", resume=True)
    assert resumed.scaler.get_scale() == ckpt["scaler"]["scale"]
    resumed.fit()
    assert torch.load(out / "last.pt", weights_only=True, map_location="cpu")["epoch"] == 2


def test_resume_on_cuda_continues_the_run(tmp_path):
    """1 + 1 epochs on CUDA give the run of 2 straight (same learning rates; losses up to GPU
    reduction-order noise)."""
    straight = trainer(tmp_path / "straight", seed=0).fit()
    trainer(tmp_path / "split", seed=0).fit(stop_after=1)
    resumed = trainer(tmp_path / "split", resume=True).fit()
    assert resumed.lr == straight.lr
    assert resumed.train_loss == pytest.approx(straight.train_loss, rel=2e-2)
    assert resumed.test_acc == pytest.approx(straight.test_acc, abs=15)  # 32 test images: 2 images = 6.25 %


# ---- data


def test_albumentations_loader_pins_memory_for_cuda():
    from woollylib.preloading import get_data

    for device in ("cuda", None):  # None: CUDA is the default device here
        data = get_data("digits", batch_size=32, seed=0, num_workers=0, verbose=False, device=device)
        assert data.train_loader.pin_memory and data.test_loader.pin_memory
        images, labels = next(iter(data.train_loader))
        assert images.is_pinned() and labels.is_pinned()
    cpu = get_data("digits", batch_size=32, seed=0, num_workers=0, verbose=False, device="cpu")
    assert not cpu.train_loader.pin_memory


@pytest.mark.parametrize("options", [{}, {"channels_last": True}, {"dtype": torch.float16}])
def test_device_loader_on_cuda_gives_the_cpu_loader_batches(options):
    """The augmentation plan is drawn on the CPU from (seed, epoch): both devices yield the same batches."""
    from woollylib.preloading.device_loader import DeviceLoader

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 200)
    kw = {"train": True, "mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26), "seed": 3, **options}
    on_gpu = DeviceLoader((images, labels), 64, device="cuda", **kw)
    on_cpu = DeviceLoader((images, labels), 64, device="cpu", **kw)
    for loader in (on_gpu, on_cpu):
        loader.set_epoch(1)
    pairs = list(zip(on_gpu, on_cpu, strict=True))
    assert len(pairs) == len(on_cpu) > 0
    for (xg, yg), (xc, yc) in pairs:
        assert xg.device.type == "cuda" and yg.device.type == "cuda" and xg.dtype == xc.dtype
        assert xg.is_contiguous(memory_format=torch.channels_last) == bool(options.get("channels_last"))
        torch.testing.assert_close(xg.cpu(), xc, atol=4e-3 if xc.dtype == torch.float16 else 1e-5, rtol=0)  # 2 fp16 ulps
        assert torch.equal(yg.cpu(), yc)


# ---- models and explanations


def test_summary_of_a_cuda_resident_model():
    from woollylib.models import get_model, summary

    model = get_model("compact").cuda()
    lines = []
    assert summary(model, print_fn=lines.append) == {"total": 55_818, "trainable": 55_818}
    assert "55,818" in "\n".join(lines) and next(model.parameters()).is_cuda


def test_grad_cam_on_cuda_matches_the_cpu(monkeypatch):
    from woollylib.models import get_model
    from woollylib.utils.gradcam import compute_cams

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convolutions, as on the CPU
    torch.manual_seed(0)
    model = get_model("compact").eval()
    images = torch.randn(4, 3, 32, 32)
    on_cpu = compute_cams(model, images, stages=("layer2", "layer3"))
    on_gpu = compute_cams(copy.deepcopy(model).cuda(), images.cuda(), stages=("layer2", "layer3"))
    for stage in ("layer2", "layer3"):
        assert on_gpu[stage].shape == (4, 32, 32)
        np.testing.assert_allclose(on_gpu[stage], on_cpu[stage], atol=1e-2)


def test_cli_run_and_report_on_cuda(tmp_path):
    from woollylib import cli

    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--model", "compact", "--epochs", "1", "--batch-size", "64",
            "--lr", "0.2", "--loader", "device", "--device", "cuda", "--no-progress", "--out", str(out), "--report"]
    assert cli.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["device"].startswith("cuda")
    assert config["resolved"]["precision"]["mode"] == ("bf16" if native_bf16() else "fp16")
    assert (out / "gradcam.png").read_bytes()[:4] == b"\x89PNG"
    assert "precision" in (out / "report.md").read_text()
