"""What is read back is verified: damaged, foreign and linked run files, user folders, stale locks.

One small run is trained once; every case works on its own copy (shutil.copytree) and checks the exit
status, that the message names the file (and the field, for JSON) with the way out, and that a refused
command left every file as it was.
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from woollylib import cli
from woollylib import run as run_module
from woollylib.run import RunDir, RunLock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = ["train", "--dataset", "digits", "--loader", "device", "--model", "compact", "--model-opt", "width=8",
         "--batch-size", "64", "--lr", "0.2", "--epochs", "2", "--no-progress", "--device", "cpu"]
FIND_LR = ["find-lr", *TRAIN[1:TRAIN.index("--lr")], "--num-iter", "12", "--end-lr", "1", "--device", "cpu"]
V2 = Path(__file__).parent / "data" / "runs_v2" / "cli_run"


def train(out, *extra):
    return cli.main([*TRAIN, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 2-epoch run with its report, a run of another model and one of the same model (seed 1)."""
    root = tmp_path_factory.mktemp("trust")
    assert train(root / "base") == 0
    assert cli.main(["report", str(root / "base"), "--device", "cpu"]) == 0
    assert train(root / "wide", "--epochs", "1", "--model-opt", "width=16") == 0
    assert train(root / "twin", "--epochs", "1", "--seed", "1") == 0
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "image.png")
    return root


@pytest.fixture
def copy(runs, tmp_path):
    def make(name="base"):
        target = tmp_path / name
        shutil.copytree(runs / name, target, symlinks=True)
        return target

    return make


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (links as links, never followed) with its content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = p.read_bytes()
    return out


# ------------------------------------------------------------------------------------ damage ---

def flip_tensor_byte(path: Path) -> None:
    """Flip one bit inside the first tensor's data of a torch.save zip (the model's first weight)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def edit_json(change):
    def damage(path: Path) -> None:
        d = json.loads(path.read_text())
        path.write_text(json.dumps(change(d)))

    return damage


def set_width(d):
    d["model"]["options"]["width"] = 16
    return d


def first_epoch_loss(d):
    d["train_loss"][0] = 0.001
    return d


DAMAGE = {
    "bitflip": flip_tensor_byte,
    "truncated": truncate,
    "garbage": lambda p: p.write_bytes(b"PK\x03\x04 not a checkpoint"),
    "empty": lambda p: p.write_bytes(b""),
    "json-bitflip": lambda p: p.write_bytes(p.read_bytes().replace(b"1", b"7", 1)),
    "json-list": lambda p: p.write_text("[1, 2]"),
    "edited-width": edit_json(set_width),
    "edited-loss": edit_json(first_epoch_loss),
    "edited-accuracy": edit_json(lambda d: {**d, "accuracy": 99.9}),
}

# (file, damage, command, exit status, words the message must hold); command "resume" that exits 0 repairs
CASES = [
    ("last.pt", "bitflip", "resume", 2, ["last.pt is damaged", "--overwrite"]),
    ("last.pt", "bitflip", "report", 2, ["last.pt is damaged", "--weights best"]),
    ("last.pt", "bitflip", "predict", 2, ["last.pt is damaged", "--weights best"]),
    ("last.pt", "bitflip", "recipe", 2, ["last.pt is damaged", "weights='best'"]),
    ("last.pt", "truncated", "resume", 2, ["last.pt", "corrupt", "--overwrite"]),
    ("last.pt", "truncated", "report", 2, ["last.pt", "corrupt"]),
    ("last.pt", "truncated", "predict", 2, ["last.pt", "corrupt"]),
    ("last.pt", "garbage", "resume", 2, ["last.pt", "corrupt"]),
    ("last.pt", "garbage", "predict", 2, ["last.pt", "corrupt"]),
    ("last.pt", "empty", "resume", 2, ["last.pt", "corrupt"]),
    ("last.pt", "empty", "report", 2, ["last.pt", "corrupt"]),
    ("best.pt", "bitflip", "resume", 0, ["repaired", "best.pt"]),  # the best epoch is the last: rebuilt from last.pt
    ("best.pt", "bitflip", "report-best", 2, ["best.pt is damaged", "--weights last"]),
    ("best.pt", "bitflip", "predict-best", 2, ["best.pt is damaged", "--weights last"]),
    ("best.pt", "bitflip", "recipe-best", 2, ["best.pt is damaged", "weights='last'"]),
    ("best.pt", "truncated", "resume", 0, ["repaired", "best.pt"]),
    ("best.pt", "truncated", "predict-best", 2, ["best.pt", "corrupt"]),
    ("best.pt", "garbage", "report-best", 2, ["best.pt", "corrupt"]),
    ("history.json", "json-bitflip", "resume", 0, ["repaired", "history.json"]),
    ("history.json", "json-bitflip", "report", 2, ["history.json does not match its checksum", "--resume"]),
    ("history.json", "truncated", "resume", 0, ["repaired", "history.json"]),
    ("history.json", "truncated", "report", 2, ["history.json", "--resume"]),
    ("history.json", "json-list", "report", 2, ["history.json", "--resume"]),
    ("history.json", "edited-loss", "resume", 0, ["repaired", "history.json"]),
    ("history.json", "edited-loss", "report", 2, ["history.json does not match", "--resume"]),
    ("metrics.csv", "truncated", "resume", 0, ["repaired", "metrics.csv"]),
    ("config.json", "edited-width", "resume", 0, ["repaired", "config.json"]),
    ("config.json", "edited-width", "report", 2, ["config.json does not match", "--resume"]),
    ("config.json", "edited-width", "predict", 2, ["config.json does not match", "--resume"]),
    ("config.json", "edited-width", "recipe", 2, ["config.json does not match", "resume=True"]),
    ("config.json", "truncated", "resume", 0, ["repaired", "config.json"]),
    ("config.json", "truncated", "report", 2, ["config.json", "--resume"]),
    ("config.json", "json-list", "predict", 2, ["config.json", "--resume"]),
    ("metrics.json", "edited-accuracy", "report", 2, ["metrics.json does not match", "--resume"]),
    ("metrics.json", "truncated", "report", 2, ["metrics.json", "--resume"]),
    ("metrics.json", "truncated", "resume", 0, []),  # the finished run's resume writes it again
    ("manifest.json", "truncated", "resume", 2, ["manifest.json cannot be read", "delete it"]),
    ("manifest.json", "truncated", "report", 2, ["manifest.json cannot be read", "delete it"]),
    ("manifest.json", "truncated", "predict", 2, ["manifest.json cannot be read"]),
    ("manifest.json", "garbage", "resume", 2, ["manifest.json cannot be read"]),
    ("manifest.json", "json-list", "overwrite", 2, ["did not write"]),  # no longer proves a run
]


def run_command(command: str, out: Path, image: Path):
    """Exit status of a command on the run ``out`` (the Python API's errors count as 2)."""
    if command == "resume":
        return train(out, "--resume")
    if command == "overwrite":
        return train(out, "--overwrite", "--epochs", "1")
    if command.startswith("report"):
        weights = "best" if command.endswith("best") else "last"
        return cli.main(["report", str(out), "--device", "cpu", "--weights", weights])
    if command.startswith("predict"):
        weights = "best" if command.endswith("best") else "last"
        return cli.main(["predict", str(out), str(image), "--device", "cpu", "--weights", weights])
    if command.startswith("recipe"):
        from woollylib.recipe import Recipe

        try:
            Recipe.from_run(out).load("best" if command.endswith("best") else "last", "cpu", data=False)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    raise AssertionError(command)


@pytest.mark.parametrize(("name", "damage", "command", "code", "words"), CASES,
                         ids=[f"{n}-{d}-{c}" for n, d, c, _, _ in CASES])
def test_a_damaged_run_file_is_named_and_never_used(copy, runs, capsys, name, damage, command, code, words):
    out = copy()
    DAMAGE[damage](out / name)
    before = snapshot(out)
    assert run_command(command, out, runs / "image.png") == code
    text = capsys.readouterr()
    message = text.err if code else text.out
    for w in words:
        assert w in message, (w, message)
    assert "Traceback" not in text.err and "History.from_dict" not in text.err
    if code:
        assert snapshot(out) == before  # refused before anything changed
    else:  # repaired from last.pt: the run reads back whole again
        run = RunDir(out)
        assert run.read_history().epochs == 2 and run.load("best")["epoch"] == 2 and run.read_metrics()
        if name in ("history.json", "config.json", "metrics.csv"):
            assert (out / name).read_bytes() == (runs / "base" / name).read_bytes()


# ------------------------------------------------------------------- checkpoints of others ---

@pytest.mark.parametrize("command", ["resume", "report", "predict", "recipe"])
@pytest.mark.parametrize("source", ["wide", "twin", "v2"])
def test_a_checkpoint_of_another_run_or_model_is_refused_never_adopted(copy, runs, capsys, source, command):
    out = copy()
    donor = V2 / "last.pt" if source == "v2" else runs / source / "last.pt"
    shutil.copy(donor, out / "last.pt")
    before = snapshot(out)
    assert run_command(command, out, runs / "image.png") == 2
    err = capsys.readouterr().err
    expected = "carries no run id and checksum" if source == "v2" else "belongs to another run"
    assert "last.pt" in err and expected in err and "never adopted" in err
    assert snapshot(out) == before and json.loads((out / "config.json").read_text())["model"]["options"] == {"width": 8}


@pytest.mark.parametrize("command", ["resume", "report", "predict"])
def test_a_run_of_an_earlier_format_refuses_a_checkpoint_of_another_model(copy, runs, tmp_path, capsys, command):
    out = tmp_path / "v2"
    shutil.copytree(V2, out)
    shutil.copy(runs / "wide" / "last.pt", out / "last.pt")
    before = snapshot(out)
    assert run_command(command, out, runs / "image.png") == 2
    err = capsys.readouterr().err
    assert "holds another model than the run's (config.json)" in err and "'width': 16" in err
    assert snapshot(out) == before


def test_a_run_of_an_earlier_format_resumes_unchecked_with_one_note(tmp_path, capsys):
    out = tmp_path / "v2"
    shutil.copytree(V2, out)
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("run of an earlier woollylib (no manifest.json)") == 1
    manifest = RunDir(out).manifest()  # written by the resumed epoch: checked from now on
    assert manifest["epoch"] == 2 and set(manifest["files"]) >= {"last.pt", "best.pt", "history.json", "config.json"}
    assert RunDir(out).load("best")["run_id"] == manifest["run_id"]  # its old best.pt joined the run


def test_a_run_without_its_manifest_still_resumes(copy, capsys):
    out = copy()
    (out / "manifest.json").unlink()
    assert train(out, "--resume") == 0
    assert "no manifest.json" in capsys.readouterr().out


def test_a_checkpoint_saved_in_another_container_keeps_its_checksum(copy):
    out = copy()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    torch.save(ckpt, out / "last.pt", _use_new_zipfile_serialization=False)  # other bytes, the same tensors
    assert train(out, "--resume") == 0


def test_a_missing_last_pt_is_named_not_restarted(copy, capsys):
    out = copy()
    (out / "last.pt").unlink()
    before = snapshot(out)
    assert train(out, "--resume") == 2
    err = capsys.readouterr().err
    assert "last.pt is missing" in err and "records epoch 2" in err and snapshot(out) == before


def test_the_manifest_holds_id_epoch_model_and_checksums(runs):
    m = RunDir(runs / "base").manifest()
    twin = RunDir(runs / "twin").manifest()
    assert m["epoch"] == 2 and len(m["run_id"]) == 16 and m["run_id"] != twin["run_id"]
    assert m["model"]["options"] == {"width": 8}
    assert set(m["files"]) == {"last.pt", "best.pt", "history.json", "metrics.csv", "config.json", "metrics.json"}
    last = torch.load(runs / "base" / "last.pt", weights_only=True)
    assert last["run_id"] == m["run_id"] and m["files"]["last.pt"] == last["sha256"]
    assert run_module.payload_sha256(last) == last["sha256"]
    for name in ("history.json", "config.json", "metrics.json"):
        assert m["files"][name] == run_module.sha256_bytes((runs / "base" / name).read_bytes())


def test_a_resume_keeps_the_run_id(copy):
    out = copy()
    rid = RunDir(out).manifest()["run_id"]
    assert train(out, "--resume", "--epochs", "2") == 0
    assert RunDir(out).manifest()["run_id"] == rid


# -------------------------------------------------------------------- folders of the user ---

USER_FOLDERS = {
    "history": {"history.json": '{"train_loss": [1.0]}'},
    "config": {"config.json": '{"lr": 0.1}'},
    "config-format": {"config.json": '{"format": "woollylib-run"}'},
    "history-config-report": {"history.json": "{}", "config.json": "{}", "report.md": "# my report"},
    "best-report-curves": {"best.pt": "weights", "report.md": "# mine", "curves.png": "png"},
    "best": {"best.pt": "my weights"},
    "curves": {"curves.png": "my figure"},
    "metrics-csv": {"metrics.csv": "a,b\n1,2\n"},
    "manifest": {"manifest.json": '{"name": "my web app", "icons": []}'},
    "manifest-like": {"manifest.json": '{"format": "woollylib-manifest"}', "history.json": "{}"},
    "lr-finder": {"lr_finder.json": "{}", "lr_finder.png": "png"},
}


@pytest.mark.parametrize("flags", [(), ("--overwrite",), ("--resume",)], ids=["fresh", "overwrite", "resume"])
@pytest.mark.parametrize("files", list(USER_FOLDERS), ids=list(USER_FOLDERS))
def test_a_folder_of_user_files_is_never_a_run(tmp_path, capsys, files, flags):
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in USER_FOLDERS[files].items():
        (out / name).write_text(text)
    before = snapshot(out)
    assert train(out, *flags) == 2
    err = capsys.readouterr().err
    assert ("holds no woollylib run" in err) if flags == ("--resume",) else ("woollylib did not write" in err), err
    assert snapshot(out) == before


@pytest.mark.parametrize("user", [("lr_finder.json",), ("lr_finder.png",), ("lr_finder.json", "lr_finder.png")])
def test_find_lr_never_replaces_a_users_curve(tmp_path, capsys, user):
    out = tmp_path / "mine"
    out.mkdir()
    for name in user:
        (out / name).write_text("mine")
    before = snapshot(out)
    assert cli.main([*FIND_LR, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / user[0]} exists and woollylib did not write it" in err and snapshot(out) == before


def test_find_lr_never_writes_into_a_run_and_replaces_its_own_curve(copy, tmp_path, capsys):
    run = copy()
    before = snapshot(run)
    args = FIND_LR
    assert cli.main([*args, "--out", str(run)]) == 2
    assert "is a run folder" in capsys.readouterr().err and snapshot(run) == before
    out = tmp_path / "curves"
    assert cli.main([*args, "--out", str(out)]) == 0
    assert cli.main([*args, "--out", str(out)]) == 0  # its own files: replaced
    (out / "lr_finder.png").write_bytes(b"edited by hand")
    assert cli.main([*args, "--out", str(out)]) == 2
    assert (out / "lr_finder.png").read_bytes() == b"edited by hand"


@pytest.mark.parametrize("user", ["compare.md", "compare_curves.png"])
def test_compare_never_replaces_a_users_file(runs, tmp_path, capsys, user):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / user).write_text("mine")
    before = snapshot(out)
    assert cli.main(["compare", str(runs / "base"), str(runs / "twin"), "--out", str(out)]) == 2
    assert f"{out / user} exists and woollylib did not write it" in capsys.readouterr().err
    assert snapshot(out) == before


def test_compare_replaces_its_own_files(runs, tmp_path):
    out = tmp_path / "cmp"
    for _ in range(2):
        assert cli.main(["compare", str(runs / "base"), str(runs / "twin"), "--out", str(out)]) == 0
    assert (out / "compare.md").read_text().startswith("# Comparison")


# ------------------------------------------------------------------------------- symlinks ---

LINKED = ["tensorboard", "tensorboard/events.out.tfevents.1.host", "history.json", "last.pt", "best.pt",
          "config.json", "metrics.json", "manifest.json", "curves.png"]


@pytest.mark.parametrize("command", ["overwrite", "resume", "report"])
@pytest.mark.parametrize("linked", LINKED)
def test_a_linked_run_file_or_folder_is_refused_and_nothing_is_followed(copy, tmp_path, capsys, linked, command):
    out = copy()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "events.out.tfevents.99.other").write_bytes(b"another experiment")
    if linked == "tensorboard":
        (out / "tensorboard").symlink_to(shared, target_is_directory=True)
        target = shared
    elif linked.startswith("tensorboard/"):
        (out / "tensorboard").mkdir()
        target = shared / "events.out.tfevents.99.other"
        (out / linked).symlink_to(target)
    else:
        target = shared / linked
        shutil.move(out / linked, target)
        (out / linked).symlink_to(target)
    before, shared_before = snapshot(out), snapshot(shared)
    assert run_command(command, out, tmp_path) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and str(out / linked) in err
    assert snapshot(out) == before and snapshot(shared) == shared_before


# ------------------------------------------------------------- check before you destroy ---

@pytest.mark.parametrize("name", ["config.json", "history.json", "last.pt", "metrics.csv", "report.md", "tensorboard"])
def test_overwrite_checks_every_path_before_it_removes_anything(copy, capsys, name):
    out = copy()
    path = out / name
    if name == "tensorboard":
        path.write_text("a file where a folder belongs")
    else:
        path.unlink()
        path.mkdir()
        (path / "inside").write_text("x")
    before = snapshot(out)
    assert train(out, "--overwrite", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert str(path) in err and "changes nothing" in err
    assert snapshot(out) == before


def legacy(copy):
    """The run without its manifest: the JSON files are checked field by field only."""
    out = copy()
    (out / "manifest.json").unlink()
    return out


REPORT_INPUTS = [
    ("lr_finder.json", '{"lrs": [0.1, 0.2', "lr_finder.json is not valid JSON"),
    ("lr_finder.json", '{"lrs": ["a", 0.2], "losses": [1, 2], "suggestion": 0.1}', "field 'lrs'"),
    ("lr_finder.json", '{"lrs": [0.1, 0.2], "losses": [1], "suggestion": 0.1}', "fields 'lrs' and 'losses'"),
    ("lr_finder.json", '{"lrs": [0.1], "losses": [1], "suggestion": "big"}', "field 'suggestion'"),
    ("lr_finder.json", "[]", "lr_finder.json must hold a JSON object"),
    ("history.json", "[1, 2]", "history.json: a history must be a JSON object"),
    ("history.json", '{"train_loss": ["a"]}', "field 'train_loss', entry 0: 'a' is not a number"),
    ("history.json", '{"train_loss": 3}', "field 'train_loss' must be a list of numbers"),
    ("history.json", '{"train_loss": [1.0, 2.0], "train_acc": [1.0], "test_loss": [1, 1], "test_acc": [1, 1]}',
     "field 'train_acc' has 1 entries"),
    ("metrics.json", "[]", "metrics.json must hold a JSON object"),
    ("metrics.json", '{"accuracy": "a"}', "field 'accuracy' must be a number"),
    ("metrics.json", '{"confusion_matrix": [[1, 2]]}', "field 'confusion_matrix'"),
]


@pytest.mark.parametrize(("name", "content", "words"), REPORT_INPUTS)
def test_report_checks_its_inputs_before_it_replaces_a_figure(copy, capsys, name, content, words):
    out = legacy(copy)
    (out / name).write_text(content)
    before = snapshot(out)
    assert cli.main(["report", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert words in err and str(out / name) in err, err
    assert "could not convert" not in err and "expects a dict" not in err
    assert snapshot(out) == before  # curves.png and the rest untouched


# ------------------------------------------------------------------------------------ locks ---

@pytest.fixture
def lock(tmp_path):
    return tmp_path / ".woollylib.lock"


@pytest.mark.parametrize("content", [b"", b"garbage", b'{"pid": "x"}', b"[]", b'{"host": "h"}'],
                         ids=["empty", "garbage", "pid-string", "list", "no-pid"])
def test_an_empty_or_garbage_lock_is_stale_and_taken_over(lock, capsys, content):
    lock.write_bytes(content)
    with RunLock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    out = capsys.readouterr().out
    assert "stale lock" in out and "empty or not a woollylib lock" in out and "pid None" not in out
    assert not lock.exists()


def test_a_lock_that_is_a_folder_is_reported_with_the_command_that_clears_it(lock):
    lock.mkdir()
    with pytest.raises(FileExistsError, match=r"is a folder.*stale.*rmdir"):
        RunLock(lock).acquire()
    assert lock.is_dir()


@pytest.fixture
def sleeper():
    procs = []

    def start(*argv):
        p = subprocess.Popen(list(argv))
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_lock_of_a_live_process_that_is_not_woollylib_is_stale(lock, sleeper, capsys):
    p = sleeper("sleep", "60")
    lock.write_text(json.dumps({"pid": p.pid, "host": socket.gethostname()}))
    with RunLock(lock):
        pass
    assert "which is not a woollylib process" in capsys.readouterr().out


def test_a_lock_whose_pid_was_reused_is_stale(lock, sleeper, capsys):
    p = sleeper(sys.executable, "-c", "import time; time.sleep(60)")
    started = run_module._start_time(p.pid)
    lock.write_text(json.dumps({"pid": p.pid, "host": socket.gethostname(), "started": started - 1}))
    with RunLock(lock):
        pass
    assert "now belongs to another process" in capsys.readouterr().out


def test_a_live_writers_lock_is_refused_with_the_way_out(lock, sleeper):
    p = sleeper(sys.executable, "-c", "import time; time.sleep(60)")
    lock.write_text(json.dumps({"pid": p.pid, "host": socket.gethostname(),
                                "started": run_module._start_time(p.pid)}))
    with pytest.raises(FileExistsError, match=rf"pid {p.pid} on .*wait for it.*stale: clear it with: rm '"):
        RunLock(lock).acquire()
    assert lock.exists()


def test_a_lock_of_another_host_is_refused_with_the_way_out(lock):
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 5}))
    with pytest.raises(FileExistsError, match=r"pid 1 on elsewhere.*rm '"):
        RunLock(lock).acquire()


def test_an_empty_lock_left_by_a_full_disk_does_not_block_the_run(copy, capsys):
    out = copy()
    (out / ".woollylib.lock").write_bytes(b"")
    assert train(out, "--resume") == 0
    text = capsys.readouterr().out
    assert "taking over the stale lock" in text and not (out / ".woollylib.lock").exists()


# ------------------------------------------------------- values read back, checked as the CLI checks ---

HOSTILE = [  # (where in the config, value, what the message says)
    ("settings.data.data_dir", "../../x", "without '..'"),
    ("settings.data.workers", 10**6, "must be at most"),
    ("settings.data.workers", -2, "must be an integer >= 0"),
    ("settings.schedule.epochs", -3, "must be an integer >= 1"),
    ("settings.schedule.epochs", 2.5, "must be an integer"),
    ("settings.optim.lr", "fast", "must be a number"),
    ("settings.optim.momentum", -1.0, "must be a number >= 0"),
    ("settings.data.batch_size", 0, "must be an integer >= 1"),
    ("settings.data.loader", "gpu", "must be one of albumentations, device"),
    ("settings.engine.amp", "fp8", "must be one of auto"),
    ("settings.engine.tta_flip", "yes", "must be true or false"),
    ("settings.data.val_split", 2.5, "val_split"),
    ("settings.engine.dist_timeout", float("inf"), "finite"),
    ("data.classes", ["a", "b", "c"], "has 3 names and the model 10 outputs"),
    ("model.num_classes", 1, "must be an integer >= 2"),
]


def set_in(config: dict, where: str, value) -> dict:
    *path, last = where.split(".")
    node = config
    for key in path:
        node = node[key]
    node[last] = value
    return config


@pytest.mark.parametrize(("where", "value", "words"), HOSTILE, ids=[f"{w}={v!r}" for w, v, _ in HOSTILE])
def test_a_hand_edited_config_is_checked_as_the_command_line_checks_it(copy, runs, capsys, where, value, words):
    out = legacy(copy)  # without the manifest nothing but these checks stands between the file and the run
    path = out / "config.json"
    path.write_text(json.dumps(set_in(json.loads(path.read_text()), where, value)))
    before = snapshot(out)
    for command in ("report", "predict"):
        assert run_command(command, out, runs / "image.png") == 2
        err = capsys.readouterr().err
        assert f"{path}: field '{where}'" in err and words in err and "Traceback" not in err, err
    assert snapshot(out) == before


@pytest.mark.parametrize(("where", "value", "words"), [*HOSTILE, ("model.options.width", 10**6, "parameters, more than")],
                         ids=[f"{w}={v!r}" for w, v, _ in HOSTILE] + ["width"])
def test_a_hand_edited_checkpoint_config_is_checked_on_resume(copy, capsys, where, value, words):
    out = legacy(copy)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["sha256"]  # as a checkpoint of an earlier woollylib: nothing but these checks
    set_in(ckpt["config"], where, value)
    torch.save(ckpt, out / "last.pt")
    (out / "config.json").write_text(json.dumps(ckpt["config"]))  # the same model in both: not another model's
    before = snapshot(out)
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err, err
    if where != "model.options.width":
        assert f"last.pt: field '{where}'" in err
    assert snapshot(out) == before


@pytest.mark.parametrize("workers", ["1000000000000", "-1", "many"])
def test_workers_beyond_the_bound_are_refused_at_parsing(capsys, workers):
    with pytest.raises(SystemExit) as info:
        cli.main([*TRAIN, "--workers", workers])
    assert info.value.code == 2 and "argument --workers" in capsys.readouterr().err


# ------------------------------------------------------------------------- a vanished folder ---

@pytest.mark.parametrize("after", [1, 2], ids=["after-epoch-1", "after-the-last-epoch"])
def test_a_run_folder_removed_during_the_run_is_noticed_not_recreated(tmp_path, monkeypatch, capsys, after):
    from woollylib.training import Trainer

    out = tmp_path / "run"
    real = Trainer.run_epoch

    def run_epoch_then_remove(self, epoch):
        figures = real(self, epoch)
        if epoch == after:
            shutil.rmtree(out)  # another shell, a cleanup script, a synced folder
        return figures

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch_then_remove)
    assert train(out) == 2
    err = capsys.readouterr().err
    assert f"the run folder {out} was removed or moved during the run" in err and "went with it" in err
    assert not out.exists()  # no partial folder that would pass for the run
