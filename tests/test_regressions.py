"""Regressions: each test pins a bug that a user hit or could hit through the public API."""

import json

import pytest
import torch

from woollylib import main
from woollylib.models import get_model
from woollylib.models.custom_resnet import CustomResNet
from woollylib.report import rebuild
from woollylib.training import train_test_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return main.download_data("digits", batch_size=64, verbose=False)


def test_digits_with_the_device_loader_and_default_augment():
    data = main.download_data("digits", batch_size=64, loader="device", verbose=False)
    images, labels = next(iter(data.train_loader))
    assert images.shape == (64, 3, 32, 32) and labels.dtype == torch.int64
    with pytest.raises(ValueError, match="loader_kw"):
        main.download_data("digits", batch_size=64, loader="device", augment=["hflip"], verbose=False)


def test_loader_pair_with_out_dir_writes_metrics(digits, tmp_path):
    model = get_model("compact")
    history = main.train_test_loop(model, (digits.train_loader, digits.test_loader), "cpu", max_lr=0.05,
                                   epochs=1, out_dir=tmp_path / "run", progress=False, verbose=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["samples"] == 360 and metrics["accuracy"] == pytest.approx(history.test_acc[-1])


def test_report_rebuilds_the_exact_architecture_of_a_python_run(digits, tmp_path):
    """A run from woollylib.training with a non-default model option: the rebuild must not fall back
    to the default options of a same-sized model (compact with dilation == compact with stride in
    parameter count and state-dict keys)."""
    torch.manual_seed(0)
    model = get_model("compact", downsample="dilation")
    train_test_loop(model, digits, "cpu", epochs=1, max_lr=0.05, out_dir=tmp_path / "run", progress=False,
                    verbose=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model"]["name"], config["model"]["options"]) == ("compact", {"downsample": "dilation"})
    rebuilt, _ = rebuild(tmp_path / "run", "cpu", "last", None)[:2]
    assert rebuilt.woollylib_spec["options"] == {"downsample": "dilation"}
    x = next(iter(digits.test_loader))[0]
    model.eval()
    torch.testing.assert_close(rebuilt(x), model(x))


def test_models_built_directly_check_num_classes():
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        CustomResNet(num_classes=0)
