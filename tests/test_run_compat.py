"""Run directories written by woollylib 0.1 (config format 1, tests/data/runs_v1) still resume and report."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from woollylib import cli
from woollylib.models import get_model
from woollylib.preloading import get_data
from woollylib.report import write_report
from woollylib.run import RunDir, upgrade_config
from woollylib.training import History, Trainer

RUNS = Path(__file__).parent / "data" / "runs_v1"
# what woollylib 0.1's main.download_data("digits") used for the notebook run
DIGITS_TRAIN, DIGITS_TEST = 1437, 360  # the digits split's sizes: one image is 100/size points of accuracy
DIGITS_AUGMENT_V1 = [("pad_crop", {"size": 32, "padding": 2}), ("rotate", {"limit": (-10.0, 10.0)})]


@pytest.fixture
def copy_of(tmp_path):
    def make(name):
        target = tmp_path / name
        shutil.copytree(RUNS / name, target)
        return target

    return make


def assert_reaches(history: History, name: str):
    expected = json.loads((RUNS / f"{name}.straight_history.json").read_text())
    # The straight run was recorded on an AVX-512 CPU; kernels of other CPUs (AVX2 Zen 1 and Zen 2 were
    # measured) sum in another order. Over the resumed epoch that moves the train loss by up to 2e-5
    # relative, and the final weights' test loss by up to 0.5% and their accuracies by 1-2 images, since
    # evaluating once at the end amplifies the drift. A wrong resume moves the train loss much further:
    # a fresh optimizer by 1.5%, a fresh scheduler state by 0.7% (measured on the notebook run). So the train
    # loss and the learning rate are held tight and the end-of-epoch figures only to the drift.
    assert history.train_loss == pytest.approx(expected["train_loss"], rel=2e-4), "train_loss"
    assert history.lr == pytest.approx(expected["lr"], rel=1e-9), "lr"
    assert history.test_loss == pytest.approx(expected["test_loss"], rel=1e-2), "test_loss"
    for key, images, slack in (("train_acc", DIGITS_TRAIN, 2), ("test_acc", DIGITS_TEST, 3)):
        points = 100.0 / images  # one image's worth of accuracy
        assert getattr(history, key) == pytest.approx(expected[key], abs=slack * points * 1.01), key


def test_format_1_configs_upgrade_to_the_current_layout():
    cli_config = upgrade_config(json.loads((RUNS / "cli_run" / "config.json").read_text()))
    assert cli_config["model"] == {"name": "compact", "options": {"width": 8}, "num_classes": 10,
                                   "cls": "CompactNet", "parameters": 4554}
    settings = cli_config["settings"]
    assert settings["optim"]["name"] == "sgd" and settings["optim"]["lr"] == 0.05
    assert settings["schedule"] == {"name": "onecycle", "epochs": 2, "pct_start": None, "options": {}, "patience": None}
    assert settings["data"]["dataset"] == "digits" and settings["data"]["batch_size"] == 64
    assert settings["engine"]["amp"] == "auto" and settings["run"]["seed"] == 0  # what the command asked for
    notebook = upgrade_config(json.loads((RUNS / "notebook_run" / "config.json").read_text()))
    assert notebook["model"]["name"] == "compact" and notebook["model"]["options"] == {"width": 8}
    assert notebook["resolved"]["steps_per_epoch"] == 23 and notebook["data"]["name"] == "digits"


def test_cli_run_of_0_1_resumes_to_the_uninterrupted_result(copy_of, capsys):
    out = copy_of("cli_run")
    # compared with the CPU run's history: resumed on the CPU also where a GPU is the default
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress", "--device", "cpu"]) == 0
    assert "after epoch 1/2" in capsys.readouterr().out
    assert_reaches(RunDir(out).read_history(), "cli_run")


def test_notebook_run_of_0_1_resumes_to_the_uninterrupted_result(copy_of):
    out = copy_of("notebook_run")
    data = get_data("digits", batch_size=64, augment=DIGITS_AUGMENT_V1, seed=0, verbose=False)
    model = get_model("compact", width=8)
    history = Trainer(model, data, "cpu", out_dir=out, resume=True, progress=False, verbose=False).fit()
    assert_reaches(history, "notebook_run")
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("name", ["cli_run", "notebook_run"])
def test_runs_of_0_1_still_report(copy_of, name):
    out = copy_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # report warns for every figure it has to leave out
        path = write_report(out, device="cpu", verbose=False)
    text = path.read_text()
    assert "compact" in text and "4,554 parameters" in text
    for png in ("curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text
    assert "cannot rebuild" not in text

