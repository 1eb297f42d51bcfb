"""Validators (woollylib._checks), exception classes (woollylib.errors), model device and mode helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from woollylib import _checks as C
from woollylib import errors
from woollylib.device import evaluating, kept_mode, model_device
from woollylib.preloading import denormalize, normalize


@pytest.mark.parametrize("check, args, bad, message", [
    (C.check_positive, (), 0, r"lr must be > 0 \(typical 0.05\), got 0$"),
    (C.check_positive, (), True, r"lr must be a number > 0 \(typical 0.05\), got True$"),
    (C.check_non_negative, (), -1.0, r"lr must be >= 0 \(typical 0.05\), got -1.0$"),
    (C.check_int, (), 2.0, r"lr must be a positive integer \(typical 0.05\), got 2.0$"),
    (C.check_finite, (), float("inf"), r"lr must be a finite number \(typical 0.05\), got inf$"),
    (C.check_range, (0, 1), 1, r"lr must be in \[0, 1\) \(typical 0.05\), got 1$"),
    (C.check_choice, (("a", "b"),), "c", r"lr must be one of 'a', 'b' \(typical 0.05\), got 'c'$"),
])
def test_checks_name_the_argument_the_rule_the_hint_and_the_value(check, args, bad, message):
    with pytest.raises(errors.ConfigError, match=message):
        check("lr", bad, *args, hint="typical 0.05")


def test_checks_accept_good_values_unchanged_and_type_errors_are_both_kinds():
    assert C.check_positive("x", np.float32(0.5)) == np.float32(0.5)
    assert C.check_int("n", np.int64(3)) == 3 and C.check_int("n", 0, minimum=0) == 0
    assert C.check_range("p", 1.0, 0, 1, closed="[]") == 1.0
    assert C.check_choice("amp", False, (False, True, "fp16")) is False
    with pytest.raises(errors.ConfigError, match="one of False, True"):
        C.check_choice("amp", 0, (False, True))                 # 0 is not False here
    with pytest.raises(errors.ConfigError, match="in \\(0, 1\\)"):
        C.check_range("p", 0, 0, 1, closed="()")
    for exc_type in (TypeError, ValueError, errors.WoollylibError):
        with pytest.raises(exc_type):
            C.check_positive("lr", "0.1")
    with pytest.raises(errors.ConfigError, match="an integer >= 2"):
        C.check_int("num_iter", 1, minimum=2)


def test_errors_keep_their_builtin_bases_and_import_without_torch():
    assert issubclass(errors.NonFiniteLossError, FloatingPointError)
    assert issubclass(errors.LRCurveTooShortError, ValueError)
    for cls in (errors.ConfigError, errors.DataError, errors.RunDirError):
        assert issubclass(cls, errors.WoollylibError) and issubclass(cls, ValueError)
    from woollylib.bp import NonFiniteLossError
    from woollylib.bp.engine import NonFiniteLossError as from_engine
    from woollylib.scheduler import LRCurveTooShortError
    assert NonFiniteLossError is from_engine is errors.NonFiniteLossError
    assert LRCurveTooShortError is errors.LRCurveTooShortError
    code = "import sys, woollylib.errors, woollylib._checks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_model_device_and_modes_restored_per_module():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert model_device(model) == torch.device("cpu") and model_device(model, "cpu") == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters, no buffers
    buffers_only = nn.BatchNorm1d(2).requires_grad_(False)
    buffers_only._parameters.clear()
    assert model_device(buffers_only) == torch.device("cpu")
    model.train()
    model[1].eval()  # a frozen norm layer stays frozen after the block
    with evaluating(model) as inner:
        assert inner is model and not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training
    with pytest.raises(RuntimeError), kept_mode(model):
        model.eval()
        raise RuntimeError("inside")
    assert model.training and not model[1].training


def test_denormalize_inverts_normalize_per_channel():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 4, 4, generator=g)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x = normalize(pixels, mean, std)
    by_hand = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(x, by_hand)
    torch.testing.assert_close(denormalize(x, mean, std), pixels)
    torch.testing.assert_close(denormalize(x[0], mean, std), pixels[0])       # (C, H, W) too
    assert denormalize(x * 10, mean, std).min() >= 0 and denormalize(x * 10, mean, std).max() <= 1
    assert denormalize(x * 10, mean, std, clamp=False).max() > 1
    torch.testing.assert_close(denormalize(pixels, None, None), pixels)      # None: already pixels
    with pytest.raises(ValueError, match="one per channel"):
        denormalize(x, (0.5, 0.5), std)
    with pytest.raises(ValueError, match=r"denormalize needs a tensor"):
        denormalize(x[0, 0], mean, std)
