"""benchmarks/gpu_check.py, the one command for a GPU machine: its plumbing, checked on the CPU (the dry run
runs every step at toy sizes; the real figures come only from a GPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gpu_check(load_benchmark):
    return load_benchmark("gpu_check")


def test_it_refuses_to_start_without_cuda(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "pass --dry-run" in err
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--skip", "bogus", "--out", str(tmp_path)])


def test_pytest_counts_are_read_from_the_closing_line(gpu_check):
    text = "....\nFAILED tests/test_x.py::t - boom\n= 1 failed, 486 passed, 12 skipped, 1 warning in 204.50s =\n"
    assert gpu_check._pytest_counts(text) == {"passed": 486, "failed": 1, "skipped": 12, "errors": 0}
    assert gpu_check._pytest_counts("12 tests collected in 3.1s")["collected"] == 12


def test_the_dry_run_runs_every_step_and_writes_json_and_summary(tmp_path):
    # the suite step is left out here (this test is part of the suite); its counting is tested above
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--skip", "suite",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=400, cwd=ROOT, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    (path,) = tmp_path.glob("gpu_check-*.json")
    report = json.loads(path.read_text())
    assert report["dry_run"] is True and report["machine"]["device"] == "cpu" and "finished" in report
    steps = report["steps"]
    assert steps["suite"] == {"skipped": "--skip"}
    assert steps["cuda_tests"]["ok"] and steps["cuda_tests"]["collected"] >= 12
    assert steps["main_job"]["ok"] and steps["main_job"]["report"] and 0 <= steps["main_job"]["test_accuracy"] <= 100
    assert steps["train_speed"]["compact/fp32"]["img_s"] > 0
    assert steps["device_loader"]["img_s"] > 0 and steps["device_loader"]["device"] == "cpu"
    assert steps["ddp"]["ok"] and steps["ddp"]["backend"] == "gloo" and steps["ddp"]["world_size"] == 1
    summary = path.with_suffix(".md").read_text()
    assert "dry run" in summary and "| ddp | ok:" in summary and "| suite | skipped: --skip |" in summary
