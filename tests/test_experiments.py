"""Seeds, sweeps and the comparison report (woollylib.experiments), on the embedded digits data.

Runs are tiny (compact net of width 8, one epoch, batch 128, device loader) and deterministic on the
CPU, so an interrupted-then-resumed sweep must give exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats

from woollylib import cli
from woollylib import experiments as ex
from woollylib.experiments import sweeps
from woollylib.run import HISTORY, LAST, METRICS, RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = {"dataset": "digits", "model": "compact", "model_opt.width": 8, "epochs": 1, "batch_size": 128,
        "lr": 0.05, "scheduler": "none", "loader": "device"}
AXES = {"augment": ["crop", "none"], "label_smoothing": [0, 0.1]}
SEEDS = [0, 1]
QUIET = {"verbose": False, "devices": ["cpu"]}


def results(out) -> dict:
    """{run dir: (history without times, metrics without times)} of every run of a sweep folder."""
    saved = json.loads((out / ex.SWEEP_FILE).read_text())
    found = {}
    for r in saved["runs"]:
        hist = json.loads((out / r["dir"] / HISTORY).read_text())
        metrics = json.loads((out / r["dir"] / METRICS).read_text())
        hist.pop("epoch_time")
        for k in ("train_time_s", "this_session_s"):
            metrics.pop(k, None)
        found[r["dir"]] = (hist, metrics)
    return found


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "sweep"
    ex.sweep(BASE, AXES, SEEDS, out, **QUIET)
    return out


def test_a_sweep_of_two_axes_and_two_seeds_makes_eight_run_folders(grid):
    saved = json.loads((grid / ex.SWEEP_FILE).read_text())
    assert saved["spec"]["axes"] == {"augment": ["crop", "none"], "label_smoothing": [0.0, 0.1]}
    dirs = [r["dir"] for r in saved["runs"]]
    assert len(dirs) == 8 == len(set(dirs))
    assert dirs[0] == "augment-crop_label_smoothing-0/seed-0"
    for r in saved["runs"]:
        run = RunDir(grid / r["dir"])
        assert run.has(LAST) and run.has(METRICS)
        settings = run.read_config()["settings"]
        assert settings["run"]["seed"] == r["seed"]
        assert settings["data"]["augment"] == r["values"]["augment"]
        assert settings["engine"]["label_smoothing"] == r["values"]["label_smoothing"]
        assert run.read_config()["model"]["options"] == {"width": 8}
    # same settings and seed as `woollylib train` would use: different seeds give different runs
    r = results(grid)
    assert r["augment-none_label_smoothing-0/seed-0"][0] != r["augment-none_label_smoothing-0/seed-1"][0]


def test_a_finished_sweep_is_skipped_when_run_again(grid, capsys, monkeypatch):
    monkeypatch.setattr(sweeps, "train_run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    ex.sweep(BASE, AXES, SEEDS, grid, devices=["cpu"])
    assert "8 done already, 0 to train" in capsys.readouterr().out


def test_aggregate_matches_numpy_and_scipy_on_the_runs_history(grid):
    records, _ = ex.collect([grid])
    groups = ex._groups(records)
    assert len(groups) == 4 and all(len(g) == 2 for g in groups.values())
    runs = groups["augment-none_label_smoothing-0"]
    accs = np.array([json.loads((grid / "augment-none_label_smoothing-0" / f"seed-{s}" / HISTORY).read_text())
                     ["test_acc"][-1] for s in SEEDS])
    got = ex.aggregate(r["final_test_acc"] for r in runs)
    assert got["n"] == 2 and got["mean"] == pytest.approx(accs.mean())
    assert got["std"] == pytest.approx(accs.std(ddof=1))
    assert got["min"] == accs.min() and got["max"] == accs.max()
    lo, hi = stats.t.interval(0.95, len(accs) - 1, loc=accs.mean(), scale=stats.sem(accs)) \
        if accs.std() > 0 else (accs.mean(), accs.mean())
    assert got["ci95"] == pytest.approx([lo, hi])
    losses = np.array([r["final_train_loss"] for r in runs])
    hist_losses = [json.loads((grid / "augment-none_label_smoothing-0" / f"seed-{s}" / HISTORY).read_text())
                   ["train_loss"][-1] for s in SEEDS]
    assert losses.tolist() == hist_losses


def test_aggregate_and_the_t_table_against_scipy(monkeypatch):
    xs = np.array([91.2, 92.5, 90.8, 93.1, 91.9])
    got = ex.aggregate(xs.tolist())
    assert got["std"] == pytest.approx(xs.std(ddof=1))
    assert got["ci95"] == pytest.approx(list(stats.t.interval(0.95, 4, loc=xs.mean(), scale=stats.sem(xs))))
    assert ex.aggregate([1.0])["ci95"] is None and ex.aggregate([])["n"] == 0
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    for df in (1, 2, 4, 9, 23, 50, 200):  # the fallback table, interpolated in 1/df
        assert ex.t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-3)


def test_an_interrupted_sweep_resumes_to_the_same_numbers(grid, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    saves = {"n": 0}
    real = RunDir.save_last

    def crash_after_third(self, ckpt):
        path = real(self, ckpt)
        saves["n"] += 1
        if saves["n"] == 3:  # run 3 has written last.pt, not yet history.json, best.pt, metrics.json
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(RunDir, "save_last", crash_after_third)
    with pytest.raises(KeyboardInterrupt):
        ex.sweep(BASE, AXES, SEEDS, out, **QUIET)
    monkeypatch.setattr(RunDir, "save_last", real)
    third = out / "augment-crop_label_smoothing-0.1" / "seed-0"
    assert (third / LAST).is_file() and not (third / METRICS).exists()
    assert ex.run_status(third, 1) == "partial"
    ex.sweep(BASE, AXES, SEEDS, out, **QUIET)
    assert results(out) == results(grid)


def test_two_shards_cover_the_grid_exactly(grid, tmp_path):
    out = tmp_path / "sweep"
    first = ex.sweep(BASE, AXES, SEEDS, out, shard="1/2", **QUIET)
    second = ex.sweep(BASE, AXES, SEEDS, out, shard=(2, 2), **QUIET)
    assert [r["index"] for r in first] == [0, 2, 4, 6] and [r["index"] for r in second] == [1, 3, 5, 7]
    assert results(out) == results(grid)
    with pytest.raises(ex.SweepError, match=r"1 <= I <= N"):
        ex.parse_shard("3/2")


def test_devices_run_one_at_a_time_each_and_all_runs_get_one(monkeypatch, tmp_path):
    import threading
    import time

    busy, seen, lock = set(), [], threading.Lock()

    def fake_launch(out, run, device, overwrite):
        with lock:
            assert device not in busy, f"{device} got two runs at once"
            busy.add(device)
            seen.append((run["index"], device))
        time.sleep(0.05)
        with lock:
            busy.discard(device)
        return 0

    monkeypatch.setattr(sweeps, "_launch", fake_launch)
    runs = ex.expand(ex.make_spec(BASE, AXES, SEEDS))
    ex._run_parallel(tmp_path, runs, ["cuda:0", "cuda:1"], False, verbose=False)
    assert sorted(i for i, _ in seen) == list(range(8)) and {d for _, d in seen} == {"cuda:0", "cuda:1"}
    monkeypatch.setattr(sweeps, "_launch", lambda out, run, device, overwrite: 1 if run["index"] == 5 else 0)
    with pytest.raises(ex.SweepError, match=r"1 of 8 runs failed: .*seed-1 .*run-5.log"):
        ex._run_parallel(tmp_path, runs, ["cuda:0", "cuda:1"], False, verbose=False)


def test_a_folder_with_another_spec_is_refused(grid):
    with pytest.raises(ex.SweepError, match=r"another spec \(axes.augment: saved \['crop', 'none'\], now "
                                            r"\['cifar', 'none'\]\); use a new folder or --overwrite"):
        ex.sweep(BASE, {**AXES, "augment": ["cifar", "none"]}, SEEDS, grid, **QUIET)


def test_bad_axes_and_values_name_the_fix():
    with pytest.raises(ex.SweepError, match=r"unknown axis 'ricap'.*valid names are: .*label_smoothing.*"
                                            r"ricap_beta.*model, model_opt.KEY"):
        ex.make_spec(BASE, {"ricap": [0, 0.3]})
    with pytest.raises(ex.SweepError, match=r"option lr: expected a number or none, got 'fast'"):
        ex.make_spec(BASE, {"lr": "0.1,fast"})
    with pytest.raises(ex.SweepError, match=r"option augment: expected text \(one of auto, cifar, crop, none\)"):
        ex.make_spec(BASE, {"augment": ["cifar", "mirror"]})
    with pytest.raises(ex.SweepError, match=r"option nesterov: expected on/off, got 'maybe'"):
        ex.make_spec({**BASE, "nesterov": "maybe"}, {})
    with pytest.raises(ex.SweepError, match="unknown model 'resnet9'; the registered models are: compact"):
        ex.make_spec(BASE, {"model": ["compact", "resnet9"]})
    with pytest.raises(ex.SweepError, match=r"seeds are given apart"):
        ex.make_spec(BASE, {"seed": [0, 1]})
    spec = ex.make_spec(BASE, ["ricap_beta=0,0.3", "optimizer=sgd,adam", "model_opt.downsample=stride,dilation"])
    assert spec.axes == {"ricap_beta": [0.0, 0.3], "optimizer": ["sgd", "adam"],
                         "model_opt.downsample": ["stride", "dilation"]}
    runs = ex.expand(spec)
    assert len(runs) == 8 and runs[-1]["options"]["model_opt"] == {"width": 8, "downsample": "dilation"}
    assert runs[-1]["dir"] == "ricap_beta-0.3_optimizer-adam_downsample-dilation/seed-0"


def _links(md):
    return re.findall(r"\]\(([^)]+)\)", md.read_text())


def test_compare_report_numbers_links_and_verdicts(grid, tmp_path):
    md = ex.compare([grid], baseline="augment-none_label_smoothing-0", verbose=False)
    text = md.read_text()
    assert md == grid / ex.COMPARE_FILE
    assert _links(md) and all((grid / x).is_file() for x in _links(md))
    assert "compare_per_class.png" in _links(md)  # metrics.json holds per-class accuracy
    assert "| configuration | augment | label_smoothing |" in text  # only what differs
    assert "| augment-none_label_smoothing-0 | none | 0 |" in text
    assert "| batch_size |" not in text
    for name in ("augment-crop_label_smoothing-0", "augment-none_label_smoothing-0.1"):
        accs = [json.loads((grid / name / f"seed-{s}" / METRICS).read_text())["final_test_acc"] for s in SEEDS]
        mean, std = np.mean(accs), np.std(accs, ddof=1)
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |") and "(n=" in line)
        assert f"{mean:.2f} ± {std:.2f} (n=2)" in row
        losses = [json.loads((grid / name / f"seed-{s}" / HISTORY).read_text())["train_loss"][-1] for s in SEEDS]
        assert f"{np.mean(losses):.4f} ± {np.std(losses, ddof=1):.4f} (n=2)" in row
        base = [json.loads((grid / "augment-none_label_smoothing-0" / f"seed-{s}" / METRICS).read_text())
                ["final_test_acc"] for s in SEEDS]
        d = np.subtract(accs, base)
        assert f"{d.mean():+.2f}" in row
        # two seeds: no interval and no verdict (at n=2 the t interval is about +-13 standard errors wide)
        assert "cannot tell: 2 paired seeds (needs 3 or more)" in row and "- (n < 3)" in row
        assert f"{min(accs):.2f}-{max(accs):.2f}" in row


def test_verdict_only_when_the_interval_excludes_zero():
    better = ex.paired_difference([{"seed": s, "a": 90.0 + s} for s in range(4)],
                                  [{"seed": s, "a": 92.0 + s + 0.1 * (s % 2)} for s in range(4)], "a")
    assert ex.verdict("x", "base", better).startswith("x is better than base by 2.05 points")
    unclear = ex.paired_difference([{"seed": s, "a": 90.0} for s in range(3)],
                                   [{"seed": 0, "a": 91.0}, {"seed": 1, "a": 89.0}, {"seed": 2, "a": 90.5}], "a")
    assert ex.verdict("x", "base", unclear).startswith("no detectable difference at n=3")
    assert ex.verdict("x", "b", ex.paired_difference([{"seed": 0, "a": 1.0}], [{"seed": 0, "a": 2.0}], "a")) \
        .startswith("cannot tell: 1 paired seed")
    two = ex.paired_difference([{"seed": s, "a": 90.0} for s in range(2)], [{"seed": 0, "a": 95.0}, {"seed": 1, "a": 96.0}], "a")
    assert ex.verdict("x", "b", two).startswith("cannot tell: 2 paired seeds (needs 3 or more)")


def test_compare_unmatched_seeds_datasets_and_val_keys(grid, tmp_path):
    import shutil

    # a run folder given alone, a configuration missing seed 1, and one of "another dataset"
    a = tmp_path / "a"
    shutil.copytree(grid / "augment-none_label_smoothing-0", a / "plain")
    shutil.copytree(grid / "augment-crop_label_smoothing-0" / "seed-0", a / "crop" / "seed-0")
    other = tmp_path / "b" / "cifar-run"
    shutil.copytree(grid / "augment-crop_label_smoothing-0.1" / "seed-0", other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["data"]["name"] = "cifar10"
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "manifest.json").unlink()  # a hand-edited run: checked no more (as a run of an earlier format)
    m = json.loads((a / "plain" / "seed-0" / METRICS).read_text())  # the validation keys, when present
    m.update(protocol="validation", val_chosen_test_acc=42.0, final_test_acc=40.0)
    (a / "plain" / "seed-0" / METRICS).write_text(json.dumps(m))
    (a / "plain" / "seed-0" / "manifest.json").unlink()
    md = ex.compare([a, other], out=tmp_path / "cmp", verbose=False)
    text = md.read_text()
    assert "different datasets" in text and "## Dataset: digits" in text and "## Dataset: cifar10" in text
    assert "seeds 1 of plain have no run in crop" in text
    assert "val-chosen test acc (%)" in text and "| 42.00 (n=1) |" in text
    other_acc = json.loads((a / "plain" / "seed-1" / METRICS).read_text())["final_test_acc"]
    assert f"{np.mean([40.0, other_acc]):.2f} ± {np.std([40.0, other_acc], ddof=1):.2f} (n=2)" in text
    assert all((tmp_path / "cmp" / x).is_file() for x in _links(md))
    assert {"compare_curves-digits.png", "compare_curves-cifar10.png"} <= set(_links(md))
    rec = ex.read_run(grid / "augment-none_label_smoothing-0" / "seed-0")
    assert rec["val_chosen_test_acc"] is None  # absent keys: fall back
    assert rec["final_test_acc"] == json.loads((grid / "augment-none_label_smoothing-0" / "seed-0" / HISTORY)
                                               .read_text())["test_acc"][-1]


def test_cli_sweep_seeds_and_compare(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": {"model_opt.width": 8, "scheduler": "none"}, "axes": {"augment": ["crop"]}}))
    out = tmp_path / "s"
    flags = ["--dataset", "digits", "--model", "compact", "--epochs", "1", "--batch-size", "128", "--lr", "0.05",
             "--loader", "device", "--device", "cpu", "--no-progress"]
    assert cli.main(["sweep", "--spec", str(spec), *flags, "--axis", "label_smoothing=0,0.1", "--seeds", "3",
                     "--out", str(out)]) == 0
    saved = json.loads((out / ex.SWEEP_FILE).read_text())
    assert [r["dir"] for r in saved["runs"]] == ["augment-crop_label_smoothing-0/seed-3",
                                                 "augment-crop_label_smoothing-0.1/seed-3"]
    assert cli.main(["compare", str(out)]) == 0 and (out / ex.COMPARE_FILE).is_file()
    assert cli.main(["sweep", *flags, "--axis", "ricap=0,0.3", "--out", str(tmp_path / "t")]) == 2
    assert "unknown axis 'ricap'" in capsys.readouterr().err
    assert cli.main(["sweep", "--spec", str(spec), *flags, "--axis", "label_smoothing=0,0.2", "--seeds", "3",
                     "--out", str(out)]) == 2
    assert "use a new folder or --overwrite" in capsys.readouterr().err
    seeds = tmp_path / "seeds"
    assert cli.main(["train", *flags, "--model-opt", "width=8", "--seeds", "0", "--out", str(seeds)]) == 0
    assert RunDir(seeds / "seed-0").has(METRICS)


def test_compare_optimizers_keeps_run_folders_and_writes_compare_md(tmp_path):
    import torch

    from woollylib import main
    from woollylib.models import get_model
    from woollylib.preloading import get_data

    data = get_data("digits", batch_size=128, loader="device", seed=0, verbose=False)
    torch.manual_seed(0)
    model = get_model("compact", num_classes=10, width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "opt"
    histories = main.compare_optimizers(model, data, "cpu", optimizers=["sgd", "adam"], epochs=1, show=False,
                                        out_dir=out, verbose=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    for name, h in histories.items():  # each run folder holds exactly the returned history
        saved = json.loads((out / f"optimizer-{name}" / "seed-0" / HISTORY).read_text())
        assert saved["test_acc"] == h.test_acc and saved["train_loss"] == h.train_loss
        assert RunDir(out / f"optimizer-{name}" / "seed-0").read_config()["settings"]["optim"]["name"] == name
    text = (out / ex.COMPARE_FILE).read_text()
    assert "| optimizer-sgd (baseline) |" in text and "| configuration | lr | optimizer |" in text
    assert text.index("| optimizer-sgd |") < text.index("| optimizer-adam |")
    assert all((out / x).is_file() for x in _links(out / ex.COMPARE_FILE))
    # the same folders compared again through the notebook call give the same file
    assert main.compare_runs(out, baseline="optimizer-sgd", verbose=False).read_text() == text
