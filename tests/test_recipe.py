"""The recipe of a run: built and trained once, rebuilt from any run folder woollylib wrote (config format 1
in tests/data/runs_v1, today's format in tests/data/runs_v2) with the same model spec, data and settings."""

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from woollylib import cli
from woollylib.bp.engine import evaluate
from woollylib.config import Settings
from woollylib.recipe import Recipe
from woollylib.run import ModelSpec, RunDir, upgrade_config

DATA = Path(__file__).parent / "data"
TINY = {"dataset": "digits", "loader": "device", "batch_size": 64, "epochs": 1, "lr": 0.05, "seed": 0,
        "progress": False, "verbose": False}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_from_flat_starts_from_the_commands_defaults():
    r = Recipe.from_flat(model="compact", model_opt={"width": 8}, epochs=3)
    assert r.model == ModelSpec("compact", {"width": 8})
    assert r.settings.schedule.epochs == 3 and r.settings.optim.lr == 0.05 and r.settings.run.seed == 0
    assert Recipe().model.name == "custom_resnet" and Recipe().settings.data.dataset == "digits"
    with pytest.raises(TypeError, match="unknown setting"):
        Recipe.from_flat(epoch=3)


def test_train_then_from_run_rebuilds_the_same_recipe_model_and_data(tmp_path):
    out = tmp_path / "run"
    recipe = Recipe.from_flat(model="compact", model_opt={"width": 8}, out_dir=str(out), **TINY)
    result = recipe.train("cpu")
    assert len(result.history) == 1 and result.metrics == json.loads((out / "metrics.json").read_text())
    assert not (out / ".woollylib.lock").exists()  # released

    again = Recipe.from_run(out)
    assert again.model.name == "compact" and again.model.options == {"width": 8} and again.model.num_classes == 10
    for group in ("optim", "schedule", "engine", "data"):
        assert getattr(again.settings, group) == getattr(recipe.settings, group), group
    assert again.settings.run.seed == 0 and again.settings.run.out_dir == str(out)
    assert again.extra == {}

    model, data, label = again.load("last", "cpu")
    assert label == "last.pt (epoch 1)" and not model.training
    assert _same_state(model.state_dict(), result.model.state_dict())
    assert data.classes == result.data.classes and data.mean == result.data.mean
    # the same test images: the rebuilt model scores on the rebuilt data what the run wrote (the oracle is the
    # run's own whole-test-set evaluation in metrics.json)
    assert evaluate(model, data.test_loader, device="cpu")["acc"] == pytest.approx(result.metrics["accuracy"], abs=1e-6)


def test_a_fresh_build_repeats_the_seeded_initial_weights():
    recipe = Recipe.from_flat(model="compact", model_opt={"width": 8}, **TINY)
    (_, a), (_, b) = recipe.build("cpu", verbose=False), recipe.build("cpu", verbose=False)
    assert _same_state(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("folder", ["runs_v1/cli_run", "runs_v1/notebook_run", "runs_v2/cli_run"])
def test_every_committed_run_folder_is_rebuilt(folder):
    run = DATA / folder
    config = upgrade_config(json.loads((run / "config.json").read_text()))
    recipe = Recipe.from_run(run)
    assert recipe.model.name == config["model"]["name"] == "compact"
    assert recipe.model.options == {"width": 8}
    assert recipe.settings.to_dict()["optim"] == Settings.from_dict(config["settings"]).to_dict()["optim"]
    assert recipe.settings.data.dataset == "digits" and recipe.settings.schedule.epochs == 2
    model, data, label = recipe.load("last", "cpu")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert _same_state(model.state_dict(), ckpt["model"]) and label == "last.pt (epoch 1)"
    assert list(data.classes) == [str(c) for c in config["data"]["classes"]]
    best, no_data, best_label = recipe.load("best", "cpu", data=False)
    assert no_data is None and best_label.startswith("best.pt (epoch ")
    assert _same_state(best.state_dict(), torch.load(run / "best.pt", weights_only=True)["model"])


def test_todays_run_folder_resumes_to_the_uninterrupted_history(tmp_path):
    run = tmp_path / "cli_run"
    shutil.copytree(DATA / "runs_v2" / "cli_run", run)
    args = ["train", "--out", str(run), "--resume", "--no-progress", "--device", "cpu"]
    assert cli.main(args) == 0
    got = json.loads((run / "history.json").read_text())
    expected = json.loads((DATA / "runs_v2" / "cli_run.straight_history.json").read_text())
    assert got["lr"] == pytest.approx(expected["lr"], rel=1e-9)  # the schedule continued, not restarted
    # held to the drift of other CPUs' kernels (as test_run_compat explains), far below a wrong resume's
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=2e-3)
    assert len(got["test_acc"]) == 2 and (run / "metrics.json").exists()


def test_a_second_writer_is_refused_by_the_recipe(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    import subprocess
    import sys

    from woollylib.run import _start_time

    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a live writer
    try:
        (out / ".woollylib.lock").write_text(json.dumps({"pid": writer.pid, "host": socket.gethostname(),
                                                         "started": _start_time(writer.pid)}))
        recipe = Recipe.from_flat(model="compact", model_opt={"width": 8}, out_dir=str(out), **TINY)
        with pytest.raises(FileExistsError, match="being written by another woollylib process"):
            recipe.train("cpu")
    finally:
        writer.kill()
        writer.wait()
    assert sorted(p.name for p in out.iterdir()) == [".woollylib.lock"]  # nothing written


def test_load_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        Recipe.from_run(tmp_path)
    out = tmp_path / "run"
    Recipe.from_flat(model="compact", model_opt={"width": 8}, out_dir=str(out), **TINY).train("cpu")
    with pytest.raises(ValueError, match="'last' or 'best'"):
        Recipe.from_run(out).load("final")
    with pytest.raises(ValueError, match="no run folder"):
        Recipe.from_flat().load()
    assert RunDir(out).has("best.pt")
