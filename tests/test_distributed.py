"""More than one process: torchrun + DDP on CPU (gloo), sharding, one writer, resume across world sizes.

Each launch is ``python -m torch.distributed.run`` with 2 CPU processes (OMP_NUM_THREADS=1) on the
digits data and the compact model; one launch checks several things to keep the file short.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from woollylib import distributed
from woollylib.distributed import (
    DistEnv,
    resolve_backend,
    resolve_dist_device,
    split_batch,
)
from woollylib.errors import DistributedError
from woollylib.preloading.loaders import EpochSampler, rank_positions
from woollylib.preloading.shard import ShardedEpochSampler
from woollylib.run import LAST
from woollylib.training import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
N_TEST = 360  # digits test images
BATCH = 64    # global batch of every run here

# The script every launch runs: jobs of Trainer runs, per-rank results to JSON, rank 0's weights to .pt.
SCRIPT = textwrap.dedent('''
    import hashlib, json, os, shutil, sys, time
    import torch
    from woollylib.bp.engine import evaluate
    from woollylib.distributed import session
    from woollylib.models import get_model
    from woollylib.preloading import get_data, load_digits
    from woollylib.preloading.shard import shard_loader
    from woollylib.training import Trainer

    cfg = json.loads(open(sys.argv[1]).read())
    dump = cfg["dump"]

    def weights_hash(model):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    with session("cpu", "gloo", cfg.get("timeout_s", 60)) as dist:
        results = {}
        for job in cfg["jobs"]:
            torch.manual_seed(0)
            data = get_data((load_digits(True, image_size=16).subset(range(512)), load_digits(False, image_size=16)),
                            batch_size=BATCH_SIZE, seed=0, verbose=False, num_workers=0, augment=cfg.get("augment", "none"))
            model = get_model("compact", num_classes=10, **{**cfg.get("model", {}), **job.get("model", {})})
            try:
                t = Trainer(model, data, "cpu", epochs=job["epochs"], lr=0.05, out_dir=job["out"], progress=False,
                            resume=job.get("resume", False), seed=0, **{**cfg.get("kw", {}), **job.get("kw", {})})
            except ValueError as exc:  # every rank refuses, none waits for the others
                results[job["key"]] = {"error": str(exc)}
                continue
            h = t.fit(stop_after=job.get("stop_after"))
            share = shard_loader(t.test_loader, dist.rank, dist.world_size, train=False)
            local = evaluate(t.eval_net, share, device="cpu")["samples"]
            results[job["key"]] = {"hash": weights_hash(t.model), "local_test": local,
                                   "test": t.evaluate(t.test_loader)["samples"], "epochs": len(h),
                                   "steps": t.scheduler.last_epoch, "acc": h.test_acc[-1],
                                   "sd_keys": sorted(t.model.state_dict())[:3]}
            if dist.rank == 0:
                torch.save(t.model.state_dict(), os.path.join(dump, job["key"] + ".pt"))
                if job.get("copy_to"):
                    shutil.copytree(job["out"], job["copy_to"])
            dist.barrier()
            if job.get("hang_rank") == dist.rank:  # this rank stops answering; the others must give up
                json.dump(results, open(os.path.join(dump, f"rank{dist.rank}.json"), "w"))
                time.sleep(600)
        json.dump(results, open(os.path.join(dump, f"rank{dist.rank}.json"), "w"))
'''.replace("BATCH_SIZE", str(BATCH)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(*args, nproc=2, timeout=240, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *map(str, args)]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _launch(tmp_path, jobs, timeout=240, **cfg):
    dump = tmp_path / "dump"
    dump.mkdir(exist_ok=True)
    (tmp_path / "job.py").write_text(SCRIPT)
    (tmp_path / "cfg.json").write_text(json.dumps({"dump": str(dump), "jobs": jobs, **cfg}))
    proc = _torchrun("--standalone", tmp_path / "job.py", tmp_path / "cfg.json")
    out, _ = proc.communicate(timeout=timeout)
    ranks = [json.loads((dump / f"rank{r}.json").read_text()) if (dump / f"rank{r}.json").exists() else None
             for r in range(2)]
    return proc.returncode, out, ranks, dump


def _max_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts' float tensors (integer ones must be equal)."""
    assert a.keys() == b.keys()
    worst = 0.0
    for k, v in a.items():
        if v.is_floating_point():
            worst = max(worst, (v - b[k]).abs().max().item())
        else:
            assert torch.equal(v, b[k]), k
    return worst


def _sd_close(a: dict, b: dict, one_epoch: float):
    """Equal up to float32 reduction order: 2 processes sum their gradients in another order, and how far
    that drifts depends on the CPU's kernels and the thread count (2e-5 on one CPU at 2 threads, 1.4e-4 on
    another at 1 thread after 16 SGD steps). So the drift is held against what one epoch of training
    moves the weights (``one_epoch``, > 1e-2): a wrong resume or a missing epoch is that large."""
    drift = _max_diff(a, b)
    assert drift < one_epoch / 20, f"weights differ by {drift:.3g}, one epoch of training moves them {one_epoch:.3g}"


def _one_process(out, epochs, stop_after=None, resume=False):
    """The same run as the script's, on this (single) process at the global batch."""
    from woollylib.models import get_model
    from woollylib.preloading import get_data, load_digits

    torch.manual_seed(0)  # 512 training images of 16 x 16 px: 8 global batches of 64 per epoch
    data = get_data((load_digits(True, image_size=16).subset(range(512)), load_digits(False, image_size=16)),
                    batch_size=BATCH, seed=0, verbose=False, num_workers=0, augment="none")
    model = get_model("compact", num_classes=10, norm="gn")
    t = Trainer(model, data, "cpu", epochs=epochs, lr=0.05, out_dir=out, progress=False, verbose=False,
                resume=resume, seed=0)
    t.fit(stop_after=stop_after)
    return t


# ------------------------------------------------------------------------------- launches ---

def test_two_processes_equal_one_at_the_same_global_batch_and_resume_across_world_sizes(tmp_path):
    """gn (batch-independent): 2 processes x 32 == 1 process x 64; 1 + 1 epochs resumed == 2 straight;
    a 1-process checkpoint resumes on 2 processes and a 2-process one on 1; every test image once."""
    # one process: epoch 1 (kept as a copy for the 2-process resume), then epoch 2
    one = _one_process(tmp_path / "one", 2, stop_after=1)
    shutil.copytree(tmp_path / "one", tmp_path / "one_e1")
    one = _one_process(tmp_path / "one", 2, resume=True)
    ref = {k: v.clone() for k, v in one.model.state_dict().items()}
    steps_1p = one.scheduler.last_epoch

    jobs = [
        {"key": "straight", "out": str(tmp_path / "straight"), "epochs": 2},
        {"key": "e1", "out": str(tmp_path / "split"), "epochs": 2, "stop_after": 1,
         "copy_to": str(tmp_path / "two_e1")},
        {"key": "resumed", "out": str(tmp_path / "split"), "epochs": 2, "resume": True},
        {"key": "from_one", "out": str(tmp_path / "one_e1"), "epochs": 2, "resume": True},
        {"key": "other_model", "out": str(tmp_path / "split"), "epochs": 2, "resume": True, "model": {"width": 16}},
        # RICAP draws from each rank's RNG: a resume must give every rank back its own states
        {"key": "ricap", "out": str(tmp_path / "ricap"), "epochs": 2, "kw": {"ricap_beta": 0.3}},
        {"key": "ricap_e1", "out": str(tmp_path / "ricap_split"), "epochs": 2, "stop_after": 1, "kw": {"ricap_beta": 0.3}},
        {"key": "ricap_resumed", "out": str(tmp_path / "ricap_split"), "epochs": 2, "resume": True,
         "kw": {"ricap_beta": 0.3}},
    ]
    rc, out, ranks, dump = _launch(tmp_path, jobs, model={"norm": "gn"})
    assert rc == 0, out
    r0, r1 = ranks
    for key in ("straight", "resumed", "from_one"):
        assert r0[key]["hash"] == r1[key]["hash"], f"{key}: the processes hold different weights"
        assert r0[key]["test"] == N_TEST and r0[key]["local_test"] + r1[key]["local_test"] == N_TEST
        assert {r0[key]["local_test"], r1[key]["local_test"]} == {N_TEST // 2}
        assert r0[key]["steps"] == steps_1p  # the schedule counts global steps
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in r0[key]["sd_keys"])
    for r in (r0, r1):
        assert "saved from a different model" in r["other_model"]["error"]
    straight = torch.load(dump / "straight.pt", weights_only=True)
    after_one = torch.load(dump / "e1.pt", weights_only=True)  # the tolerance tells one epoch apart
    one_epoch = _max_diff(after_one, ref)
    assert one_epoch > 1e-2
    _sd_close(straight, ref, one_epoch)                                                   # 2 x B/2 == 1 x B
    _sd_close(torch.load(dump / "resumed.pt", weights_only=True), straight, one_epoch)    # 1 + 1 == 2 on 2 procs
    _sd_close(torch.load(dump / "from_one.pt", weights_only=True), ref, one_epoch)        # 1 proc -> 2 procs
    assert r0["ricap_resumed"]["hash"] == r1["ricap_resumed"]["hash"] == r0["ricap"]["hash"]  # bit for bit
    saved = torch.load(tmp_path / "ricap_split" / "last.pt", weights_only=True)
    assert len(saved["rng_ranks"]) == 2 and not torch.equal(saved["rng_ranks"][0]["torch"], saved["rng_ranks"][1]["torch"])

    # only rank 0 wrote: one history with both epochs; the 2-process checkpoint loads into a plain
    # model and resumes on this single process with the same schedule
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert len(history["test_acc"]) == 2
    two_to_one = _one_process(tmp_path / "two_e1", 2, resume=True)
    assert two_to_one.scheduler.last_epoch == steps_1p
    _sd_close(two_to_one.model.state_dict(), ref, one_epoch)


def test_two_nodes_train_together_from_the_cli(tmp_path):
    """Two torchrun launchers (one process each) meet at a c10d rendezvous and run `-m woollylib train`
    with the device loader, BatchNorm, RICAP, label smoothing and gradient clipping; rank 0 writes the run
    folder."""
    port = _free_port()
    out = tmp_path / "run"
    common = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t",
              "-m", "woollylib", "train", "--dataset", "digits", "--model", "compact", "--epochs", "1",
              "--batch-size", str(BATCH), "--lr", "0.05", "--ricap", "0.3", "--label-smoothing", "0.1",
              "--grad-clip", "1.0", "--seed", "0", "--device", "cpu", "--loader", "device", "--out", out,
              "--no-progress",
              "--dist-timeout", "60"]
    procs = [_torchrun("--node-rank", str(r), *common, nproc=1) for r in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["batch_size"] == BATCH
    assert config["resolved"]["steps_per_epoch"] == 1437 // BATCH  # global batches (the device loader drops a short one)
    assert (out / LAST).exists() and (out / "metrics.json").exists()
    ckpt = torch.load(out / LAST, weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    lines = [line for o in outs for line in o.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 1, "\n".join(outs)  # printed by rank 0 only


def test_a_hung_rank_makes_the_others_fail_within_the_timeout(tmp_path):
    """Rank 1 stops answering after epoch 1 of 2: rank 0's next collective times out (10 s), it exits
    non-zero and torchrun ends rank 1; nothing hangs. BatchNorm + RICAP ranks agree after epoch 1."""
    jobs = [{"key": "e1", "out": str(tmp_path / "run"), "epochs": 2, "stop_after": 1, "hang_rank": 1},
            {"key": "e2", "out": str(tmp_path / "run"), "epochs": 2, "resume": True}]
    t0 = time.monotonic()
    rc, out, ranks, _ = _launch(tmp_path, jobs, timeout=180, timeout_s=10, kw={"ricap_beta": 0.3})
    assert rc != 0, out
    assert time.monotonic() - t0 < 120
    assert ranks[0] is None and ranks[1]["e1"]["hash"]  # rank 0 never finished epoch 2
    assert "rank 0/2" in out and "another rank probably failed" in out and "timed out" in out.lower(), out[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["test_acc"]) == 1  # epoch 1 stays resumable


# ------------------------------------------------------------------------------ unit tests ---

def test_env_parsing_and_its_errors():
    assert distributed.env({}) == DistEnv(0, 0, 1)
    assert distributed.env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "h"}) == DistEnv(3, 1, 4)
    with pytest.raises(DistributedError, match="RANK=4 is outside 0..3"):
        distributed.env({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "h"})
    with pytest.raises(DistributedError, match="WORLD_SIZE='two' is not an integer"):
        distributed.env({"WORLD_SIZE": "two"})
    with pytest.raises(DistributedError, match="MASTER_ADDR is not set"):
        distributed.env({"RANK": "0", "WORLD_SIZE": "2"})


def test_batch_split_and_its_error():
    assert split_batch(512, 4) == 128
    with pytest.raises(DistributedError, match=r"--batch-size 30 .* over 4 processes \(world size 4\).* 28 or 32"):
        split_batch(30, 4)


def test_device_contradictions_and_nccl_without_cuda():
    two = DistEnv(1, 1, 2)
    assert resolve_dist_device("auto", two, "gloo") == torch.device("cpu")
    with pytest.raises(DistributedError, match="'cpu' contradicts the nccl process group"):
        resolve_dist_device("cpu", two, "nccl")
    with pytest.raises(DistributedError, match="'cuda:0' contradicts LOCAL_RANK=1"):
        resolve_dist_device("cuda:0", two, "nccl")
    with pytest.raises(DistributedError, match="'cuda' with the gloo process group"):
        resolve_dist_device("cuda", two, "gloo")
    assert resolve_backend("auto", cuda=False) == "gloo" and resolve_backend("auto", cuda=True) == "nccl"
    with pytest.raises(DistributedError, match="nccl backend needs CUDA.*--dist-backend gloo"):
        resolve_backend("nccl", cuda=False)
    with pytest.raises(DistributedError, match="sync_bn"):
        distributed.check_sync_bn(True, torch.device("cpu"), 2)
    distributed.check_sync_bn(True, torch.device("cpu"), 1)  # one process: nothing to synchronise


def test_without_torchrun_nothing_changes(tmp_path, monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    x = torch.randn(32, 3, 8, 8)
    y = torch.randint(0, 3, (32,))
    pair = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    t = Trainer(model, (pair, pair), "cpu", epochs=1, lr=0.1, progress=False, verbose=False)
    assert t.dist.world_size == 1 and not t.dist.active and t.net is t.model and t.eval_net is t.model
    assert not torch.distributed.is_initialized()
    t.fit()
    assert t.dist.reduce_metrics({"loss": 1.0, "acc": 50.0, "samples": 3}) == {"loss": 1.0, "acc": 50.0, "samples": 3}
    assert t.dist.gather({"a": 1}) == [{"a": 1}]
    assert "rng_ranks" not in t.checkpoint(1)  # one process: rank 0's states are the only ones


def test_a_resume_takes_this_ranks_rng_states_and_notes_another_world_size(monkeypatch, capsys):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    pair = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))] * 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    t = Trainer(model, (pair, pair), "cpu", epochs=1, lr=0.1, progress=False, verbose=True)
    capsys.readouterr()
    rank0, rank1 = {"torch": torch.zeros(1)}, {"torch": torch.ones(1)}
    assert t._rng_of_this_rank({"rng": rank0}) is rank0 and "note" not in capsys.readouterr().out
    assert t._rng_of_this_rank({"rng": rank0, "rng_ranks": [rank0, rank1]}) is rank0  # saved by 2 processes
    assert "RNG states of 2 process(es) and this job has 1" in capsys.readouterr().out
    monkeypatch.setattr(type(t.dist), "rank", property(lambda self: 1))
    monkeypatch.setattr(type(t.dist), "world_size", property(lambda self: 2))
    assert t._rng_of_this_rank({"rng": rank0, "rng_ranks": [rank0, rank1]}) is rank1
    assert t._rng_of_this_rank({"rng": rank0}) is None  # a rank the saving job did not have: reseeded


def test_shards_cover_each_global_batch_exactly_once():
    """The ranks' samplers together give, per global step, the one-process batch; test shards r::W."""
    one = [k[0] for k in EpochSampler(100, 16, shuffle=True, seed=3)]
    shards = [ShardedEpochSampler(100, 8, True, 3, r, 2) for r in range(2)]
    got = [[k[0] for k in s] for s in shards]
    assert len(got[0]) + len(got[1]) == 100 and len(shards[0]) == len(got[0])
    for step in range(7):  # 6 full global batches of 16, then 4 images split 2 + 2
        lo, hi = step * 16, min(step * 16 + 16, 100)
        assert sorted(got[0][step * 8:step * 8 + 8] + got[1][step * 8:step * 8 + 8]) == sorted(one[lo:hi])
    firsts = [k[2] for k in ShardedEpochSampler(100, 8, True, 3, 1, 2)]
    assert firsts == [i % 8 == 0 for i in range(len(firsts))]
    test = [[k[0] for k in ShardedEpochSampler(10, 4, False, 0, r, 3, train=False)] for r in range(3)]
    assert test == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        rank_positions(34, 16, 0, 4)
    assert np.array_equal(rank_positions(32, 16, 1, 2), np.r_[8:16, 24:32])


def test_device_loader_shards_the_one_process_order():
    from woollylib.preloading import DeviceLoader

    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(8, 1).repeat(8, 2).repeat(3, 3)
    labels = np.arange(40)
    from woollylib.preloading.shard import shard_loader

    one = DeviceLoader((images, labels), 8, train=True, mean=(0.5,) * 3, std=(0.5,) * 3, device="cpu", seed=1,
                       crop_pad=0, flip=False, cutout=0)
    parts = [shard_loader(one, r, 2, train=True) for r in range(2)]
    for p in parts:
        p.set_epoch(2)
    one.set_epoch(2)
    ref = [lab.tolist() for _, lab in one]
    got = [[lab.tolist() for _, lab in p] for p in parts]
    assert len(parts[0]) == len(one) == 5
    assert [sorted(a + b) for a, b in zip(*got)] == [sorted(r) for r in ref]
    test = DeviceLoader((images, labels), 16, train=False, mean=(0.5,) * 3, std=(0.5,) * 3, device="cpu")
    shards = [torch.cat([lab for _, lab in shard_loader(test, r, 3, train=False)]).tolist() for r in range(3)]
    assert sorted(x for sh in shards for x in sh) == list(range(40)) and shards[1] == list(range(1, 40, 3))
    with pytest.raises(DistributedError, match=r"--batch-size 8 \(the global batch\).*world size 3"):
        shard_loader(one, 0, 3, train=True)

