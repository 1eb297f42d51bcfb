"""select_device / resolve_device / seed_everything."""

import random

import numpy as np
import pytest
import torch

from woollylib.device import resolve_device, seed_everything, select_device


def test_select_device_prefers_cuda_then_mps_then_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device() == torch.device("cpu")
    assert "Using device: cpu" in capsys.readouterr().out

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device(verbose=False) == torch.device("mps")
    assert capsys.readouterr().out == ""

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Fake GPU")
    assert select_device() == torch.device("cuda")
    assert "cuda (Fake GPU)" in capsys.readouterr().out


def test_resolve_device_names_and_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available.*available: \\['cpu'\\]"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        select_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_seed_everything_reproduces_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    assert seed_everything(123) == 123
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            seed_everything(bad)
