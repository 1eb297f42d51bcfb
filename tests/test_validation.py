"""The validation protocol: a stratified seeded split, decisions on validation only, metrics.csv."""

import builtins
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from woollylib import cli
from woollylib.config import DataConfig
from woollylib.models import get_model
from woollylib.preloading import get_data, load_digits
from woollylib.preloading.split import indices_sha256, stratified_split
from woollylib.recipe import load_data
from woollylib.report import protocol_summary
from woollylib.run import METRICS_CSV, History, RunDir
from woollylib.training import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digits(loader="device", **kw):
    return get_data("digits", batch_size=64, loader=loader, seed=0, verbose=False, **kw)


def small_model():
    torch.manual_seed(0)
    return get_model("compact", num_classes=10, width=8)


def rows_of(data_source):
    """Each image as bytes, to compare image sets."""
    return {img.tobytes() for img in data_source.images}


# ---------------------------------------------------------------------------------- the split ---


def test_split_is_stratified_disjoint_and_reproducible():
    labels = load_digits(train=True).labels
    split = stratified_split(labels, 0.1, seed=3)
    sizes = np.bincount(labels)
    per_class = np.bincount(labels[split.val], minlength=10)
    np.testing.assert_array_equal(per_class, np.floor(sizes * 0.1 + 0.5))  # round(0.1 x class size)
    assert np.intersect1d(split.train, split.val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([split.train, split.val])), np.arange(len(labels)))
    again = stratified_split(labels, 0.1, seed=3)
    np.testing.assert_array_equal(again.val, split.val)
    assert again.info()["sha256"] == split.info()["sha256"] == indices_sha256(split.val[::-1])
    assert not np.array_equal(stratified_split(labels, 0.1, seed=4).val, split.val)
    counted = stratified_split(labels, 300, seed=0)
    assert len(counted.val) == 300
    np.testing.assert_allclose(np.bincount(labels[counted.val]), sizes * 300 / len(labels), atol=1)


@pytest.mark.parametrize("bad, words", [
    (0, "at least 1"), (0.0, "must be > 0"), (-0.2, "must be > 0"), (0.6, "more than half"),
    (800, "more than half of the 1437 training images"), (5, "leaves no validation image of class"),
    ("0.1", "a fraction such as 0.1"), (True, "a fraction such as 0.1"),
])
def test_bad_split_sizes_are_refused_with_the_numbers(bad, words):
    with pytest.raises((ValueError, TypeError), match=words):
        digits(val_split=bad)


def test_a_class_left_without_training_images_is_refused():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 1)
    with pytest.raises(ValueError, match=r"leaves no (validation|training) image of class '2' \(1 images\)"):
        stratified_split(labels, 0.5)


@pytest.mark.parametrize("loader", ["device", "albumentations"])
def test_get_data_holds_out_the_split_with_test_time_transforms(loader):
    full = digits(loader)
    data = digits(loader, val_split=0.1, augment="crop")
    assert len(data.train_source) + len(data.val_source) == len(full.train_source)
    assert not rows_of(data.train_source) & rows_of(data.val_source)
    assert data.val_info["count"] == len(data.val_source) == 144 + 1  # digits: 14 or 15 per class
    # no augmentation on the validation images: two passes give the same batches
    for loader_ in (data.val_loader,):
        if hasattr(loader_, "set_epoch"):
            loader_.set_epoch(0)
        a = torch.cat([x for x, _ in loader_])
        if hasattr(loader_, "set_epoch"):
            loader_.set_epoch(5)
        b = torch.cat([x for x, _ in loader_])
        torch.testing.assert_close(a, b)
    assert sum(len(y) for _, y in data.val_loader) == len(data.val_source)
    assert data.with_val_split(0.1).val_info["sha256"] == data.val_info["sha256"]
    assert data.with_val_split(0.1, val_seed=7).val_info["sha256"] != data.val_info["sha256"]


def test_arrays_and_a_folders_own_val_directory(tmp_path):
    src = load_digits(train=True)
    from woollylib.preloading import from_arrays

    arrays = from_arrays(src.images[:200], src.labels[:200])
    test = from_arrays(src.images[200:260], src.labels[200:260])
    data = get_data((arrays, test), batch_size=32, loader="device", seed=0, verbose=False, val_split=40)
    assert len(data.val_source) == 40 and len(data.train_source) == 160
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                value = (40 if c == "a" else 200) + i + (50 if split == "val" else 0)
                Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / split / c / f"{i}.png")
    folder = load_data(DataConfig(dataset="folder", data_dir=str(tmp_path), batch_size=4, loader="device",
                                  val_split=0.25), verbose=False)
    assert folder.val_info["requested"] == "source" and len(folder.val_source) == 4  # val/, not a split
    assert len(folder.train_source) == 12 and len(folder.test_source) == 4


# ---------------------------------------------------------------------------------- the protocol ---


class CountingLoader:
    """Counts its passes: the test loader must only ever be evaluated, never decide anything."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0
        self.batch_size = getattr(loader, "batch_size", None)

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def test_with_a_split_best_pt_and_the_plateau_schedule_use_validation_only(tmp_path, monkeypatch):
    data = digits(val_split=0.2)
    data.test_loader = CountingLoader(data.test_loader)
    trainer = Trainer(small_model(), data, "cpu", 4, lr=0.5, scheduler="plateau",
                      scheduler_kwargs={"patience": 0, "factor": 0.5}, out_dir=tmp_path / "run", progress=False,
                      verbose=False)
    seen = []
    cls = type(trainer.scheduler)
    real = cls.step
    monkeypatch.setattr(cls, "step", lambda self, metric, *a, **k: (seen.append(metric), real(self, metric, *a, **k))[1])
    h = trainer.fit()
    assert seen == pytest.approx(h.val_loss) and seen != pytest.approx(h.test_loss)
    assert data.test_loader.passes == 4  # one evaluation per epoch, nothing more
    best = RunDir(tmp_path / "run").load("best")
    assert best["epoch"] == int(np.argmax(h.val_acc)) + 1 == h.val_chosen_epoch
    assert best["chosen_on"] == "validation accuracy" and best["val_acc"] == max(h.val_acc)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["val"]["sha256"] == data.val_info["sha256"] and saved["settings"]["data"]["val_split"] == 0.2


def test_without_a_split_nothing_is_chosen_on_the_test_set_and_the_outputs_say_so(tmp_path):
    h = History()
    for e, acc in enumerate([40.0, 70.0, 60.0]):
        h.append(train_loss=1.0, train_acc=50, test_loss=1.0, test_acc=acc, lrs=[0.1], epoch_time=1.0)
    s = protocol_summary(h, {"settings": {"schedule": {"epochs": 3}}})
    assert s["protocol"] == "test-only" and s["final_test_acc"] == 60.0 and s["val_chosen_test_acc"] is None
    assert s["peak_test_acc"] == 70.0 and "chosen on the test set" in s["peak_test_note"]
    v = History()
    for e in range(3):
        v.append(train_loss=1.0, train_acc=50, test_loss=1.0, test_acc=[40.0, 70.0, 60.0][e], lrs=[0.1],
                 epoch_time=1.0, val_loss=1.0, val_acc=[50.0, 45.0, 55.0][e])
    s = protocol_summary(v)
    assert s["protocol"] == "validation" and s["val_chosen_epoch"] == 3 and s["val_chosen_test_acc"] == 60.0
    assert v.best_epoch == 3 and v.best_test_acc == 60.0 and h.best_epoch == 2


def test_early_stopping_stops_when_the_validation_loss_stops_improving(tmp_path, monkeypatch):
    data = digits(val_split=0.2)
    trainer = Trainer(small_model(), data, "cpu", 8, lr=0.1, patience=2, out_dir=tmp_path / "run",
                      progress=False, verbose=True)
    val_losses = iter([1.0, 0.5, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1])
    real = trainer.evaluate

    def evaluate(loader):
        out = real(loader)
        return {**out, "loss": next(val_losses)} if loader is trainer.val_loader else out

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    h = trainer.fit()
    assert len(h) == 4 and h.val_loss == [1.0, 0.5, 0.6, 0.55]  # no improvement after epoch 2 for 2 epochs
    assert trainer.stopped_early
    again = Trainer(small_model(), data, "cpu", 8, lr=0.1, patience=2, out_dir=tmp_path / "run", resume=True,
                    progress=False, verbose=False)
    assert len(again.fit()) == 4  # a resumed run that stopped early stays stopped
    with pytest.raises(ValueError, match="watches the validation loss.*val_split=0.1"):
        Trainer(small_model(), digits(), "cpu", 2, lr=0.1, patience=2)


def test_resume_rebuilds_the_same_split_and_refuses_another(tmp_path):
    out = tmp_path / "run"
    Trainer(small_model(), digits(), "cpu", 2, lr=0.1, val_split=0.1, out_dir=out, progress=False,
            verbose=False).fit(stop_after=1)
    resumed = Trainer(small_model(), digits(), "cpu", 2, lr=0.1, val_split=0.1, out_dir=out, resume=True,
                      progress=False, verbose=False)
    assert resumed.config["data"]["val"] == json.loads((out / "config.json").read_text())["data"]["val"]
    assert len(resumed.fit().val_acc) == 2
    for kw in ({"val_split": 0.1, "val_seed": 9}, {}):
        with pytest.raises(ValueError, match="validation split: run has 144|validation split: run has 145"):
            Trainer(small_model(), digits(), "cpu", 2, lr=0.1, out_dir=out, resume=True, **kw)


def test_val_split_needs_a_data_bundle_and_one_value():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    pair = ([(x, y)], [(x, y)])
    with pytest.raises(ValueError, match="needs the data as a DataBundle"):
        Trainer(small_model(), pair, "cpu", 1, lr=0.1, val_split=0.1)
    with pytest.raises(ValueError, match="already holds out val_split=0.1 but val_split=0.2"):
        Trainer(small_model(), digits(val_split=0.1), "cpu", 1, lr=0.1, val_split=0.2)
    with pytest.raises(ValueError, match="val_seed= needs val_split="):
        digits(val_seed=3)


# ---------------------------------------------------------------------------------- logging ---


def test_metrics_csv_matches_history_json_and_is_repaired(tmp_path):
    out = tmp_path / "run"
    h = Trainer(small_model(), digits(val_split=0.1), "cpu", 2, lr=0.1, out_dir=out, progress=False,
                verbose=False).fit()
    rows = list(csv.DictReader((out / METRICS_CSV).open()))
    saved = json.loads((out / "history.json").read_text())
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert [float(r[key]) for r in rows] == saved[key] == getattr(h, key), key
    steps = len(h.lr) // 2
    assert [float(r["lr"]) for r in rows] == [h.lr[steps - 1], h.lr[-1]]
    assert [float(r["seconds"]) for r in rows] == saved["epoch_time"]
    (out / METRICS_CSV).write_text("epoch,lr\n1,")  # damaged
    assert RunDir(out).repair(torch.load(out / "last.pt", weights_only=True)) == [METRICS_CSV]
    assert [float(r["val_acc"]) for r in csv.DictReader((out / METRICS_CSV).open())] == h.val_acc
    test_only = Trainer(small_model(), digits(), "cpu", 1, lr=0.1, out_dir=tmp_path / "t", progress=False,
                        verbose=False)
    test_only.fit()
    row = next(csv.DictReader((tmp_path / "t" / METRICS_CSV).open()))
    assert row["val_loss"] == row["val_acc"] == "" and float(row["test_acc"]) == test_only.history.test_acc[0]


def test_tensorboard_event_files_and_the_missing_extra(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    h = Trainer(small_model(), digits(val_split=0.1), "cpu", 2, lr=0.1, out_dir=out, tensorboard=True,
                progress=False, verbose=False).fit()
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("acc/val")] == pytest.approx(h.val_acc)
    assert [e.step for e in acc.Scalars("loss/test")] == [1, 2]
    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match=r"pip install 'woollylib\[tensorboard\]'"):
        Trainer(small_model(), digits(), "cpu", 1, lr=0.1, out_dir=tmp_path / "x", tensorboard=True)
    assert not (tmp_path / "x").exists()  # refused before the disk is touched


def test_cli_val_split_and_early_stop(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--model", "compact", "--model-opt", "width=8", "--epochs",
                     "2", "--batch-size", "64", "--lr", "0.2", "--loader", "device", "--val-split", "0.1",
                     "--early-stop", "3", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "val loss" in text and "chosen on validation: epoch" in text
    m = json.loads((out / "metrics.json").read_text())
    h = RunDir(out).read_history()
    assert m["protocol"] == "validation" and m["val_chosen_epoch"] == h.val_chosen_epoch
    assert m["final_test_acc"] == h.test_acc[-1] and m["val_chosen_test_acc"] == h.test_acc[h.val_chosen_epoch - 1]
    with pytest.raises(SystemExit):
        cli.main(["train", "--val-split", "0.7", "--out", str(tmp_path / "bad")])
    assert "more than half" in capsys.readouterr().err
    assert cli.main(["train", "--early-stop", "2", "--out", str(tmp_path / "bad2"), "--epochs", "1",
                     "--no-progress", "--device", "cpu"]) == 2
    assert "--val-split 0.1" in capsys.readouterr().err and not RunDir(tmp_path / "bad2").holds_run()
