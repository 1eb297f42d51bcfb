"""benchmarks/run.py reports as it goes: each row is printed and the results file rewritten as soon as it is
measured, so a run stopped half-way keeps what it measured (the sections themselves are replaced by stubs:
what is tested is the runner's plumbing, not a figure)."""

import json

import pytest


@pytest.fixture
def bench(load_benchmark):
    return load_benchmark("run")


def test_rows_are_printed_and_saved_before_a_stop(bench, monkeypatch, tmp_path, capsys):
    seen_on_disk = {}

    def imports(quick):
        return {"torch": 1.0, "woollylib": 1.1, "ratio_woollylib_vs_torch": 1.1}

    def train(quick, device, emit):
        out = {"batch_size": 8, "timed_steps": 1, "repeats": 1}
        out["custom_resnet/fp32"] = {"bare": 10.0, "engine": 9.9, "ratio": 0.99, "repeats": 1, "timed_steps": 1,
                                     "batch_size": 8}
        emit("custom_resnet/fp32", out)
        # the row is on stdout and in the file before the next one is measured
        printed = capsys.readouterr().out
        seen_on_disk.update(json.loads(next(tmp_path.glob("quick-*.json")).read_text()))
        seen_on_disk["printed"] = printed
        raise KeyboardInterrupt  # the user stops the run in the middle of the section

    monkeypatch.setattr(bench, "bench_imports", imports)
    monkeypatch.setattr(bench, "bench_train", train)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--quick", "--only", "imports,train", "--out", str(tmp_path)])
    printed = seen_on_disk.pop("printed")
    assert "woollylib benchmark (quick)" in printed and "imports: seconds" in printed
    assert "custom_resnet/fp32" in printed and "engine     9.9" in printed
    assert seen_on_disk["imports"]["woollylib"] == 1.1 and seen_on_disk["sections_done"] == ["imports"]
    assert seen_on_disk["train"]["custom_resnet/fp32"]["engine"] == 9.9
    saved = json.loads(next(tmp_path.glob("quick-*.json")).read_text())
    assert saved["train"]["custom_resnet/fp32"]["ratio"] == 0.99 and "finished" not in saved
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_finished_run_saves_every_section_and_prints_the_file(bench, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "bench_imports", lambda quick: {"torch": 1.0})
    monkeypatch.setattr(bench, "bench_memory", lambda quick, device: {"n_images": 5})

    def broken(quick, device):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(bench, "bench_precision", broken)
    report = bench.main(["--quick", "--only", "imports,precision,memory", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    saved = json.loads(next(tmp_path.glob("quick-*.json")).read_text())
    assert saved["sections_done"] == ["imports", "precision", "memory"] and "finished" in saved
    assert saved["precision"] == {"unavailable": "RuntimeError: no such kernel"} == report["precision"]
    assert "no such kernel" in out and "wrote " in out
    with pytest.raises(SystemExit, match="unknown section 'bogus'"):
        bench.main(["--only", "imports,bogus", "--out", str(tmp_path)])
