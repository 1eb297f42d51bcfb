"""What survives what: kills at every write boundary, Ctrl-C/SIGTERM, foreign files, two writers,
full and read-only disks, damaged files."""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from woollylib import cli
from woollylib import run as run_module
from woollylib.run import FAULT_ENV, RunDir, SimulatedCrash
from woollylib.training import Trainer

# Every epoch must write best.pt too (the kill campaign needs its write boundaries in both epochs). Whether
# epoch 2's accuracy beats epoch 1's is a training outcome (18.33 -> 42.78 % on one CPU, a tie at 28.61 % at
# one thread on another), so the module forces the event: every epoch counts as an improvement.
TRAIN = ["train", "--dataset", "digits", "--loader", "device", "--model", "compact", "--model-opt", "width=8",
         "--batch-size", "64", "--lr", "0.2", "--epochs", "2", "--no-progress", "--device", "cpu"]


def train(out, *extra):
    return cli.main([*TRAIN, "--out", str(out), *extra])


def outcome(out):
    """What a finished run leaves: final weights, history without timings, metrics, best epoch."""
    last = torch.load(out / "last.pt", weights_only=True)
    history = json.loads((out / "history.json").read_text())
    history.pop("epoch_time")
    best = torch.load(out / "best.pt", weights_only=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return last["model"], history, best["epoch"], metrics["accuracy"], last["epoch"]


def assert_same_outcome(a, b):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    assert a[1:] == b[1:]


@pytest.fixture(scope="module", autouse=True)
def every_epoch_is_best():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "improves_best", staticmethod(lambda acc, best_before: True))
        yield


@pytest.fixture
def faults(monkeypatch):
    def arm(at):
        monkeypatch.setenv(FAULT_ENV, str(at))
        run_module._fault_count[0] = 0

    yield arm
    monkeypatch.delenv(FAULT_ENV, raising=False)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    os.environ[FAULT_ENV] = str(10**9)  # count the boundaries of an uninterrupted run
    run_module._fault_count[0] = 0
    try:
        assert train(out) == 0
    finally:
        os.environ.pop(FAULT_ENV)
    return outcome(out), run_module._fault_count[0]


def test_a_kill_at_every_write_boundary_resumes_to_the_uninterrupted_result(straight, faults, tmp_path, monkeypatch):
    expected, boundaries = straight
    assert expected[2] == 2  # best.pt moved in every epoch
    # 3 per write: the marker (manifest, config), 2 epochs x (last, manifest, best, metrics.csv, history), metrics
    # and its checksum in the manifest
    assert boundaries == 3 * (2 + 2 * 5 + 2)
    for at in range(1, boundaries + 1):
        out = tmp_path / f"kill-{at}"
        faults(at)
        with pytest.raises(SimulatedCrash):
            train(out)
        monkeypatch.delenv(FAULT_ENV)
        assert not list(out.glob(".*.tmp")) or RunDir(out).is_run()
        code = train(out, "--resume") if RunDir(out).is_run() else train(out)
        assert code == 0, f"kill at boundary {at} left {sorted(p.name for p in out.iterdir())}"
        assert_same_outcome(outcome(out), expected)
        assert not list(out.glob(".*.tmp")) and not (out / ".woollylib.lock").exists()


def test_kill_in_epoch_one_of_an_overwrite_keeps_a_resumable_run(straight, faults, tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    (out / "lr_finder.json").write_text("{}")  # a result of the old run the new one does not make
    faults(6)  # right after the new run's epoch 1 last.pt (after the manifest names it): the old run's other files
    # are still there
    with pytest.raises(SimulatedCrash):
        train(out, "--overwrite")
    os.environ.pop(FAULT_ENV)
    assert train(out, "--resume") == 0
    assert_same_outcome(outcome(out), straight[0])
    assert not (out / "lr_finder.json").exists()  # the replaced run's files are gone, not mixed in


def test_sigterm_stops_like_ctrl_c_after_the_save_in_progress(tmp_path, monkeypatch, capsys, straight):
    out = tmp_path / "run"
    real = RunDir.save_last

    def term_during_epoch_1_save(self, ckpt):
        if ckpt["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while last.pt is being written
        return real(self, ckpt)

    monkeypatch.setattr(RunDir, "save_last", term_during_epoch_1_save)
    assert train(out) == 128 + signal.SIGTERM
    text = capsys.readouterr()
    assert "stopped by SIGTERM during epoch 1" in text.out and "hold epoch 1/2" in text.out
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert len(json.loads((out / "history.json").read_text())["test_acc"]) == 1
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(RunDir, "save_last", real)
    assert train(out, "--resume") == 0
    assert_same_outcome(outcome(out), straight[0])


def test_foreign_files_are_never_touched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("config.json", "metrics.json", "report.md", "curves.png", "notes.txt"):
        (out / name).write_text(f"my {name}")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ((), ("--overwrite",)):
        assert train(out, *extra) == 2
        assert "woollylib did not write" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_removes_exactly_the_files_of_the_run(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    for name in ("lr_finder.json", "lr_finder.png", "report.md", "gradcam.png"):
        (out / name).write_text("old")
    assert train(out, "--epochs", "1", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.json", "last.pt",
                                                    "manifest.json", "metrics.csv", "metrics.json"]


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, capsys):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".woollylib.lock"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a live writer
    try:
        lock.write_text(json.dumps({"pid": writer.pid, "host": socket.gethostname(),
                                    "started": run_module._start_time(writer.pid)}))
        assert train(out) == 2
        err = capsys.readouterr().err
        assert "being written by another woollylib process" in err and str(writer.pid) in err and "rm '" in err
    finally:
        writer.kill()
        writer.wait()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    assert train(out, "--epochs", "1") == 0
    assert f"process {dead}, which is no longer running" in capsys.readouterr().out and not lock.exists()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_os_errors_exit_2_with_the_path_and_the_fix(tmp_path, monkeypatch, capsys, err):
    out = tmp_path / "run"
    real = run_module.tempfile.mkstemp
    calls = []

    def failing_mkstemp(*args, **kw):
        calls.append(kw.get("prefix"))
        if len(calls) > 3:  # past the preflight and the marker: fails at epoch 1's last.pt
            raise OSError(err, os.strerror(err), str(kw.get("dir")))
        return real(*args, **kw)

    monkeypatch.setattr(run_module.tempfile, "mkstemp", failing_mkstemp)
    assert train(out) == 2
    text = capsys.readouterr().err
    assert os.strerror(err) in text and str(out) in text and "--out" in text and "Traceback" not in text


def test_no_room_or_no_write_permission_is_found_before_the_first_epoch(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    out = tmp_path / "run"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    assert train(out) == 2
    err = capsys.readouterr().err
    assert "no room for the checkpoints" in err and str(out) in err and "epoch" not in err.split("error:")[0]
    assert not (out / "last.pt").exists() and not (out / "config.json").exists()


@pytest.mark.parametrize("content", ["null", "[]", '{"cli": []}', "{}", b"\xff\xfe\x00\x01"])
def test_damaged_config_names_itself_and_resume_repairs_it(tmp_path, capsys, content):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    path = out / "config.json"
    good = path.read_bytes()
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = cli.main(["report", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "config.json" in err and "--resume" in err and "Traceback" not in err
    assert not (out / "report.md").exists() and not (out / "curves.png").exists()
    assert train(out, "--resume", "--epochs", "1") == 0
    assert path.read_bytes() == good


def test_last_pt_without_epoch_names_itself_and_the_way_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["epoch"]
    torch.save(ckpt, out / "last.pt")
    assert train(out, "--resume") == 2
    err = capsys.readouterr().err
    assert "last.pt is damaged" in err and "--overwrite" in err  # its own checksum no longer matches
    del ckpt["sha256"]
    torch.save(ckpt, out / "last.pt")
    assert train(out, "--resume") == 2
    err = capsys.readouterr().err
    assert "last.pt lacks ['epoch']" in err and "--overwrite" in err
    ckpt["epoch"] = 1  # a checkpoint without a checksum (an earlier format) in a run with a manifest
    torch.save(ckpt, out / "last.pt")
    assert train(out, "--resume") == 2
    assert "last.pt carries no run id and checksum" in capsys.readouterr().err


def test_stale_temp_files_are_removed_and_files_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    stale = out / ".last.pt.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    old = os.umask(0o022)
    try:
        assert train(out, "--resume", "--epochs", "1") == 0
    finally:
        os.umask(old)
    assert not stale.exists()
    for name in ("last.pt", "history.json", "config.json", "metrics.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    from woollylib.preloading import load_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
        Image.fromarray(ramp).save(tmp_path / cls / "x.png")
    src = load_folder(tmp_path)
    pixels = src.images[0, :, :, 0].astype(int)
    expected = np.round(ramp.astype(float) * 255 / 65535).astype(int)
    assert np.abs(pixels - expected).max() <= 1 and (pixels == 255).mean() < 0.01


def test_too_few_classes_and_mostly_empty_label_ranges_are_refused(tmp_path):
    import numpy as np
    from PIL import Image

    from woollylib.preloading import from_arrays, load_folder

    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "x.png")
    with pytest.raises(ValueError, match="1 class folder.*at least 2"):
        load_folder(tmp_path)
    x = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="1 class"):
        from_arrays(x, [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"99998 of those 100001 classes have no image.*largest label 100000"):
        from_arrays(x, [0, 1, 1, 100000])
    assert from_arrays(x, [0, 1, 1, 0]).num_classes == 2


def test_an_unreadable_image_names_its_path(tmp_path):
    from PIL import Image

    from woollylib.preloading import load_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "ok.png")
    (tmp_path / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(OSError, match=r"cannot read the image .*bad.png"):
        load_folder(tmp_path)


def test_non_finite_optimizer_options_are_refused_at_parsing(capsys):
    for flag in ("--momentum", "--weight-decay", "--grad-clip", "--ricap", "--label-smoothing"):
        with pytest.raises(SystemExit) as info:
            cli.main([*TRAIN, flag, "nan"])
        assert info.value.code == 2 and f"argument {flag}: must be a finite number" in capsys.readouterr().err
