"""The run directory owner: file names, atomic writes, the already-holds-a-run rule, model specs."""

import json

import pytest
import torch

from woollylib.models import get_model
from woollylib.run import (
    FIGURE_FILES,
    History,
    ModelSpec,
    RunDir,
    upgrade_config,
)


def test_model_spec_of_a_registered_model_rebuilds_the_same_architecture():
    model = get_model("compact", num_classes=7, width=8, downsample="dilation")
    spec = ModelSpec.of(model)
    assert (spec.name, spec.options, spec.num_classes, spec.cls) == ("compact", {"width": 8, "downsample": "dilation"},
                                                                     7, "CompactNet")
    rebuilt = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).build()
    rebuilt.load_state_dict(model.state_dict())
    assert spec.parameters == sum(p.numel() for p in rebuilt.parameters())
    with pytest.raises(ValueError, match="not built by woollylib.models.get_model"):
        ModelSpec.of(torch.nn.Linear(2, 2)).build()


def test_holds_run_and_check_fresh(tmp_path):
    run = RunDir(tmp_path)
    assert run.holds_run() == []
    run.check_fresh()
    run.write_history(History(train_loss=[1.0], train_acc=[50.0], test_loss=[1.0], test_acc=[50.0]))
    assert run.holds_run() == []  # a file name proves nothing: history.json alone is a foreign file
    with pytest.raises(FileExistsError, match="did not write.*history.json"):
        run.check_fresh(overwrite=True)
    run.start("0123456789abcdef", {"format": "woollylib-run", "version": 2, "model": {}, "settings": {}})
    assert run.holds_run() == ["manifest.json", "config.json", "history.json"]
    with pytest.raises(FileExistsError, match="already holds a run.*resume=True"):
        run.check_fresh()
    with pytest.raises(FileExistsError, match="--resume.*--overwrite.*--out"):
        run.check_fresh(flags=("--resume", "--overwrite"))
    run.check_fresh(overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_figures_and_results_are_written_and_dropped_by_name(tmp_path):
    import matplotlib.figure

    run = RunDir(tmp_path)
    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([0, 1])
    path = run.save_figure(fig, "curves")
    assert path.name == FIGURE_FILES["curves"] and path.read_bytes()[:4] == b"\x89PNG"
    run.write_metrics({"accuracy": 50.0})
    run.write_report("# r")
    (tmp_path / "notes.txt").write_text("mine")
    run.drop_results()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("bad", [None, [], {"format": "woollylib-run", "version": 99}, {"unrelated": 1}])
def test_config_of_the_wrong_shape_is_a_named_error(tmp_path, bad):
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="config.json"):
        RunDir(tmp_path).read_config()
    with pytest.raises(ValueError):
        upgrade_config(bad)


def test_binary_history_names_the_file(tmp_path):
    (tmp_path / "history.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="history.json is not valid JSON"):
        RunDir(tmp_path).read_history()
