"""`woollylib` command: train end-to-end on digits (tiny budget), resume, find-lr, error messages."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from woollylib import cli
from woollylib.training import History

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# compact net (55k parameters): 2 epochs on digits reach ~90% in a few seconds on this CPU
FAST = ["--dataset", "digits", "--model", "compact", "--batch-size", "32", "--lr", "0.2", "--no-progress"]


def run(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_module_imports_cheaply():
    code = "import sys, woollylib.cli; print(sorted(m for m in ('torch', 'numpy', 'albumentations') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_parser_has_one_function_per_command():
    parser = cli.get_args_parser()
    assert parser.parse_args(["train"]).func is cli.train
    assert parser.parse_args(["find-lr"]).func is cli.find_lr
    assert parser.parse_args(["report", "runs/x"]).func.__name__ == "run_report"
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_train_end_to_end_on_digits_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["train", *FAST, "--epochs", "2", "--out", str(out)], capsys)
    assert code == 0, err
    assert {"last.pt", "best.pt", "history.json", "config.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    history = History.load(out / "history.json")
    assert len(history) == 2 and history.test_acc[-1] > 60  # chance is 10%, ~90% measured
    metrics = json.loads((out / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == metrics["samples"] == 360  # the whole digits test split
    assert metrics["accuracy"] == pytest.approx(100 * np.trace(cm) / cm.sum())
    assert metrics["accuracy"] == pytest.approx(history.test_acc[-1])
    assert len(metrics["per_class_accuracy"]) == 10
    assert "test accuracy" in stdout and "epoch   2/2" in stdout
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["config"]["model"]["name"] == "compact" and ckpt["epoch"] == 2
    optim = ckpt["config"]["settings"]["optim"]
    assert (optim["name"], optim["lr"], optim["momentum"]) == ("sgd", 0.2, 0.9)

    # a fresh run into the same directory refuses and leaves every file as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(["train", *FAST, "--epochs", "1", "--out", str(out)], capsys)
    assert code == 2 and "already holds a run" in err and "--resume" in err
    # resuming with a contradicting setting is refused too
    code, _, err = run(["train", "--out", str(out), "--resume", "--lr", "0.1"], capsys)
    assert code == 2 and "--lr 0.1 (the run used 0.2)" in err
    code, _, err = run(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"], capsys)
    assert code == 2 and "epochs: run has 2, now 3" in err  # a one-cycle schedule has a fixed length
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # --resume takes every setting from the run (model compact, lr 0.2, ...): all 2 epochs are done,
    # so it only re-evaluates and rewrites metrics.json
    code, stdout, err = run(["train", "--out", str(out), "--resume", "--no-progress"], capsys)
    assert code == 0, err
    assert "Resuming" in stdout and "after epoch 2/2" in stdout
    assert History.load(out / "history.json") == history  # nothing retrained, nothing rewritten
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(metrics["accuracy"])


def test_train_resume_continues_an_interrupted_cli_run(tmp_path, capsys, monkeypatch):
    """Ctrl-C in epoch 2 (raised by the engine) exits 130; --resume finishes the run."""
    from woollylib.bp import engine

    out = tmp_path / "run"
    real = engine.train_epoch

    def interrupt_in_epoch_2(*args, epoch=None, **kw):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(engine, "train_epoch", interrupt_in_epoch_2)
    code, stdout, _ = run(["train", *FAST, "--epochs", "2", "--scheduler", "none", "--out", str(out)], capsys)
    assert code == 130 and "interrupted during epoch 2" in stdout
    assert len(History.load(out / "history.json")) == 1 and not (out / "metrics.json").exists()
    monkeypatch.setattr(engine, "train_epoch", real)
    code, stdout, err = run(["train", "--out", str(out), "--resume", "--no-progress"], capsys)
    assert code == 0, err
    assert "after epoch 1/2" in stdout and "epoch   2/2" in stdout
    assert len(History.load(out / "history.json")) == 2 and (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs: must be an integer >= 1"),
        (["--lr", "0"], "--lr: must be a finite number > 0"),
        (["--lr", "-1"], "--lr: must be a finite number > 0"),
        (["--scheduler", "cosine"], "invalid choice: 'cosine'"),
        (["--lr", "0.1", "--find-lr"], "not allowed with argument"),
    ],
)
def test_train_argument_errors(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "sgdd"], "unknown optimizer 'sgdd'"),
        (["--model", "resnet1"], "unknown model 'resnet1'"),
        (["--dataset", "folder"], "--dataset folder needs --data-dir"),
        (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
        (["--resume"], "no checkpoint"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_train_errors_exit_2_with_a_clear_message(tmp_path, args, message, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", *FAST, "--epochs", "1", "--out", str(out), *args], capsys)
    assert code == 2 and message in err
    assert not (out / "last.pt").exists()


def test_train_folder_dataset_layout_error(tmp_path, capsys):
    (tmp_path / "imgs" / "train" / "a").mkdir(parents=True)
    code, _, err = run(["train", *FAST, "--dataset", "folder", "--data-dir", str(tmp_path / "imgs")], capsys)
    assert code == 2 and "train/ and test/" in err


def test_train_on_an_image_folder(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls, channel in (("red", 0), ("blue", 2)):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
                pixels[..., channel] += 180
                Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "run"
    code, _, err = run(
        ["train", *FAST, "--dataset", "folder", "--data-dir", str(tmp_path / "imgs"), "--batch-size", "8",
         "--epochs", "1", "--out", str(out)],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["blue", "red"] and metrics["samples"] == 8


def test_find_lr_prints_suggestion_and_saves_curve(tmp_path, capsys):
    code, out, err = run(
        ["find-lr", "--dataset", "digits", "--model", "compact", "--batch-size", "32", "--num-iter", "30",
         "--end-lr", "1", "--out", str(tmp_path)],
        capsys,
    )
    assert code == 0, err
    assert "suggested lr:" in out
    curve = json.loads((tmp_path / "lr_finder.json").read_text())
    assert len(curve["lrs"]) == len(curve["losses"]) > 5
    assert curve["lrs"][0] < curve["suggestion"] < curve["lrs"][-1] <= 1.0
    assert (tmp_path / "lr_finder.png").stat().st_size > 1000  # utils.visualize.plot_lr_finder's figure
    suggested = float(out.split("suggested lr:")[1].split()[0])
    assert suggested == pytest.approx(curve["suggestion"], rel=1e-3)


def test_train_divergence_exits_1_naming_epoch_batch_lr(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", *FAST[:-3], "--lr", "1e8", "--no-progress", "--epochs", "1", "--out", str(out)], capsys)
    assert code == 1
    assert "non-finite loss at epoch 1, batch" in err and "lr=" in err
    assert not (out / "last.pt").exists() and not (out / "history.json").exists()


def test_train_find_lr_and_report_then_report_command(tmp_path, capsys):
    """--find-lr keeps its curve in the run, --report writes report.md; `woollylib report` redoes it."""
    import re

    out = tmp_path / "run"
    args = ["train", *FAST[:-3], "--find-lr", "--epochs", "1", "--no-progress", "--out", str(out), "--report"]
    code, _, err = run(args, capsys)
    assert code == 0, err
    curve = json.loads((out / "lr_finder.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["optim"]["lr"] == pytest.approx(curve["suggestion"])  # the run trained at the suggested lr
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "lr_finder.png" in links and "confusion_matrix.png" in links
    for name in links:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    (out / "report.md").unlink()
    code, _, err = run(["report", str(out), "--misclassified", "4", "--device", "cpu"], capsys)
    assert code == 0, err
    assert (out / "report.md").is_file()
    code, _, err = run(["report", str(tmp_path / "nope")], capsys)
    assert code == 2 and "nope" in err
