"""report.md from run directories: every link is a real PNG, numbers match the run's files and a rebuilt model."""

from __future__ import annotations

import argparse
import json
import re
import shutil

import numpy as np
import pytest
import torch

from woollylib import cli
from woollylib.report import add_report_arguments, rebuild, write_report
from woollylib.training import History
from woollylib.utils import metrics

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One CLI run: compact net, 2 epochs of digits (~5 s)."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    argv = ["train", "--dataset", "digits", "--model", "compact", "--epochs", "2", "--batch-size", "64",
            "--lr", "0.2", "--no-progress", "--out", str(out), "--device", "cpu"]  # compared with CPU results
    assert cli.main(argv) == 0
    return out


def links(report) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text(encoding="utf-8"))


def assert_links_are_pngs(report):
    found = links(report)
    assert found
    for link in found:
        assert not link.startswith(("/", "http")) and ".." not in link, link  # relative, next to report.md
        path = report.parent / link
        assert path.is_file(), link
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 2000, link


def test_report_of_a_cli_run_rebuilds_model_and_data(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    report = write_report(run, device="cpu", verbose=False)
    assert report == run / "report.md"
    assert_links_are_pngs(report)
    assert set(links(report)) == {"curves.png", "lr_schedule.png", "confusion_matrix.png",
                                  "per_class_accuracy.png", "misclassified.png", "gradcam.png"}
    text = report.read_text()
    history = History.load(run / "history.json")
    saved = json.loads((run / "metrics.json").read_text())
    assert f"| final test accuracy | {history.test_acc[-1]:.2f} % (epoch 2) |" in text
    assert f"{history.best_test_acc:.2f} % (epoch {history.best_epoch})" in text
    assert "compact (CompactNet), 55,818 parameters" in text
    assert "| optimizer | sgd, momentum 0.9 |" in text and "| batch size | 64 |" in text
    assert "Not included" not in text
    # the per-class table counts the whole test split (360 digits) and matches metrics.json
    rows = re.findall(r"^\| (\d) \| ([\d.]+) % \| (\d+) \|", text, flags=re.MULTILINE)
    assert len(rows) == 10 and sum(int(r[2]) for r in rows) == 360
    for name, acc, _ in rows:
        assert float(acc) == pytest.approx(saved["per_class_accuracy"][name], abs=0.05)


def test_rebuilt_model_reproduces_the_run_accuracy(run_dir):
    model, data, label = rebuild(run_dir, device="cpu")
    assert label == "last.pt (epoch 2)"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert metrics.predict(model, data.test_loader, "cpu").accuracy == pytest.approx(saved["accuracy"], abs=1e-6)
    best, _, best_label = rebuild(run_dir, device="cpu", weights="best")
    ckpt = torch.load(run_dir / "best.pt", weights_only=True, map_location="cpu")
    assert best_label == f"best.pt (epoch {ckpt['epoch']})"
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in best.state_dict().items())
    with pytest.raises(ValueError, match="'last' or 'best'"):
        rebuild(run_dir, weights="final")


def test_report_with_the_model_in_memory_and_best_weights_label(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    model, data, _ = rebuild(run, device="cpu", weights="best")
    report = write_report(run, model, data, "cpu", n_misclassified=4, layers=["layer3"], verbose=False)
    assert_links_are_pngs(report)
    text = report.read_text()
    assert "weights: the model passed in" in text and "The first 4 misclassified" in text
    # the confusion matrix of an in-memory model is computed, not read from metrics.json
    assert "Weights of the last epoch (metrics.json)" not in text


def test_history_only_run_gets_curves_and_says_what_is_missing(tmp_path):
    History(train_loss=[2.0, 1.0], train_acc=[30.0, 60.0], test_loss=[1.8, 1.1], test_acc=[35.0, 58.0],
            lr=[0.01, 0.05, 0.02, 0.001], epoch_time=[1.6, 1.4]).save(tmp_path / "history.json")
    (tmp_path / "lr_finder.json").write_text(json.dumps(
        {"lrs": list(np.geomspace(1e-5, 1, 30)), "losses": list(np.linspace(2.3, 1.0, 30)),
         "suggestion": 0.01, "method": "valley"}))
    report = write_report(tmp_path, verbose=False)
    assert_links_are_pngs(report)
    assert set(links(report)) == {"curves.png", "lr_schedule.png", "lr_finder.png"}
    text = report.read_text()
    assert "| final test accuracy | 58.00 % (epoch 2) |" in text
    assert "| training time | 3.0 s (1.5 s per epoch, train + test) |" in text
    assert "## Not included" in text and "config.json" in text


def test_missing_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.json"):
        write_report(tmp_path)


def test_cli_helpers_parse_and_run(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    parser = argparse.ArgumentParser(prog="woollylib")
    sub = parser.add_subparsers(dest="command")
    add_report_arguments(sub.add_parser("report"))
    train = add_report_arguments(sub.add_parser("train"), train=True)
    assert train.parse_args([]).report is None and train.parse_args(["--report"]).report is True
    args = parser.parse_args(["report", str(run), "--weights", "best", "--misclassified", "3",
                              "--layers", "layer2", "layer3", "--device", "cpu"])
    assert args.func(args) == 0
    text = (run / "report.md").read_text()
    assert "The first 3 misclassified" in text and "best.pt" in text
    assert_links_are_pngs(run / "report.md")
    args = parser.parse_args(["report", str(run), "--misclassified", "0"])
    with pytest.raises(ValueError, match="--misclassified"):
        args.func(args)
