"""More than one process: torchrun's environment, the process group, DDP, and reductions.

Commands (one machine with 4 GPUs; two machines with 8 each)::

    torchrun --standalone --nproc-per-node=4 -m woollylib train --dataset cifar10 --batch-size 512 --out runs/r9
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m woollylib train ...          # and --node-rank 1 on the second machine

Python (a script started by torchrun)::

    from woollylib.distributed import setup, session
    with session(device="auto") as dist:        # the group is torn down on every exit path
        dist.rank, dist.world_size, dist.device  # cuda:LOCAL_RANK under CUDA, else cpu
        history = train_test_loop(model, data, dist.device, ...)   # rank 0 writes, every rank trains

Without torchrun's RANK / WORLD_SIZE variables nothing of this exists: world size 1, no process
group, no DDP, the device chosen as on one process. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import DistributedError

__all__ = ["BACKENDS", "Dist", "DistEnv", "check_sync_bn", "env", "resolve_backend", "resolve_dist_device",
           "session", "setup", "split_batch"]

BACKENDS = ("auto", "nccl", "gloo")
DEFAULT_TIMEOUT_S = 600.0  # the settings' default (woollylib.config EngineConfig.dist_timeout)


@dataclass(frozen=True)
class DistEnv:
    """torchrun's variables: global rank, rank on this machine, number of processes in all."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def launched(self) -> bool:
        return self.world_size > 1


def _int_var(environ, name: str, default: int) -> int:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name}={text!r} is not an integer; it is set by torchrun "
                               "(unset it to train on one process)") from None


def env(environ=None) -> DistEnv:
    """RANK, LOCAL_RANK and WORLD_SIZE from ``environ`` (default ``os.environ``), checked."""
    environ = os.environ if environ is None else environ
    world = _int_var(environ, "WORLD_SIZE", 1)
    rank = _int_var(environ, "RANK", 0)
    local = _int_var(environ, "LOCAL_RANK", rank if "RANK" in environ else 0)
    if world < 1:
        raise DistributedError(f"WORLD_SIZE={world}: the number of processes must be >= 1")
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world}); start the processes "
                               "with torchrun, which sets both")
    if local < 0 or local > rank:
        raise DistributedError(f"LOCAL_RANK={local} must be in 0..RANK ({rank}); start the processes with torchrun")
    if world > 1 and "MASTER_ADDR" not in environ and "TORCHELASTIC_RUN_ID" not in environ:
        raise DistributedError(f"WORLD_SIZE={world} but MASTER_ADDR is not set: start the processes with torchrun "
                               "(torchrun --standalone --nproc-per-node=N -m woollylib train ...)")
    return DistEnv(rank, local, world)


def resolve_backend(backend: str | None = "auto", cuda: bool | None = None) -> str:
    """"nccl" or "gloo": auto = nccl where CUDA is available, else gloo; nccl without CUDA is an error."""
    backend = "auto" if backend is None else str(backend).lower()
    if backend not in BACKENDS:
        raise DistributedError(f"unknown process-group backend {backend!r}: use one of {', '.join(BACKENDS)}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise DistributedError("the nccl backend needs CUDA GPUs and this machine has none (torch.cuda.is_available() "
                               "is False); use --dist-backend gloo (or auto) to train on CPU processes")
    return backend


def resolve_dist_device(device, dist_env: DistEnv, backend: str) -> torch.device:
    """The device of this process: cuda:LOCAL_RANK with nccl, else cpu; a contradicting ``device`` is an error."""
    from .device import resolve_device

    asked = None if device in (None, "auto") else torch.device(device)
    local = dist_env.local_rank
    if backend == "nccl":
        if asked is not None and asked.type != "cuda":
            raise DistributedError(
                f"device {str(asked)!r} contradicts the nccl process group (CUDA is available): each process "
                f"trains on cuda:LOCAL_RANK (here cuda:{local}); drop --device (or pass cuda), or pass "
                "--dist-backend gloo to train on CPU processes")
        if asked is not None and asked.index is not None and asked.index != local:
            raise DistributedError(
                f"device {str(asked)!r} contradicts LOCAL_RANK={local}: each process trains on cuda:LOCAL_RANK; "
                "drop the index (--device cuda) or choose the GPUs with CUDA_VISIBLE_DEVICES")
        count = torch.cuda.device_count()
        if local >= count:
            raise DistributedError(f"LOCAL_RANK={local} but this machine has {count} CUDA device(s); start at most "
                                   f"{count} processes per machine (--nproc-per-node)")
        return torch.device("cuda", local)
    if asked is not None and asked.type != "cpu":
        raise DistributedError(
            f"device {str(asked)!r} with the gloo process group: gloo trains CPU processes here; drop --device "
            "(or pass cpu), or use --dist-backend nccl on CUDA GPUs")
    return resolve_device("cpu")


def split_batch(batch_size: int, world_size: int) -> int:
    """The per-process batch of a global ``batch_size``; an uneven split is an error naming a fix."""
    batch_size, world_size = int(batch_size), int(world_size)
    if batch_size % world_size:
        lower = max(world_size, batch_size - batch_size % world_size)
        upper = batch_size + world_size - batch_size % world_size
        raise DistributedError(
            f"--batch-size {batch_size} (the global batch) does not split evenly over {world_size} processes "
            f"(world size {world_size}); use a multiple of {world_size}, e.g. {lower} or {upper}")
    return batch_size // world_size


def check_sync_bn(sync_bn: bool, device: torch.device, world_size: int) -> None:
    if sync_bn and world_size > 1 and device.type != "cuda":
        raise DistributedError(f"sync_bn (SyncBatchNorm) runs on CUDA only and this process trains on {device}; "
                               "drop --sync-bn (each process then keeps its own BatchNorm statistics)")


def batchnorm_note(model, sync_bn: bool, world_size: int) -> str | None:
    """The note a run with BatchNorm under DDP gets (None without either): each process normalises with the
    statistics of its own share of the batch, so N processes do not train what 1 process does."""
    if world_size < 2 or sync_bn or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    return (f"note: BatchNorm under DDP: each of the {world_size} processes normalises with the statistics of its "
            f"own 1/{world_size} of every batch, so this run does not equal a 1-process run at the same global batch "
            "(and its results differ with the process count); --sync-bn (SyncBatchNorm, CUDA) shares the statistics, "
            "--model-opt norm=gn (GroupNorm, anywhere) needs none")


class Dist:
    """This process's place in the job; every method is a no-op (or the identity) on one process."""

    def __init__(self, dist_env: DistEnv, device: torch.device, backend: str | None = None, owned: bool = False,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S):
        self.env, self.device, self.backend, self.owned, self.timeout_s = dist_env, device, backend, owned, timeout_s

    rank = property(lambda self: self.env.rank)
    local_rank = property(lambda self: self.env.local_rank)
    world_size = property(lambda self: self.env.world_size)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run folder and prints; the others only train."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world_size={self.world_size}, device={self.device}, backend={self.backend})"

    # ---- collectives (each one names the likely cause when another rank is gone)

    def _collective(self, what: str, fn):
        try:
            return fn()
        except (RuntimeError, torch.distributed.DistError) as exc:
            raise DistributedError(
                f"rank {self.rank}/{self.world_size}: {what} with the other processes failed ({exc}); another "
                f"rank probably failed or was killed (see its error above) or took longer than the "
                f"{'process group' if self.timeout_s is None else f'{self.timeout_s:g} s'} timeout "
                "(dist_timeout)") from exc

    def barrier(self) -> None:
        if self.active:
            self._collective("a barrier", torch.distributed.barrier)

    def sum(self, values) -> list[float]:
        """Element-wise sum over the processes of a list of numbers (float64)."""
        values = [float(v) for v in values]
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        self._collective("an all-reduce", lambda: torch.distributed.all_reduce(t))
        return t.tolist()

    def broadcast_float(self, value: float) -> float:
        if not self.active:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        self._collective("a broadcast", lambda: torch.distributed.broadcast(t, 0))
        return float(t.item())

    def gather(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` on one process)."""
        if not self.active:
            return [obj]
        found: list = [None] * self.world_size
        self._collective("an all-gather", lambda: torch.distributed.all_gather_object(found, obj))
        return found

    def reduce_metrics(self, stats: dict) -> dict:
        """``{'loss', 'acc', 'samples', ...}`` of this rank -> the same over all ranks (means weighted by
        samples: every image counts once). Other keys are kept as they are."""
        if not self.active:
            return stats
        n = stats["samples"]
        loss_sum, correct, total = self.sum([stats["loss"] * n, stats["acc"] / 100.0 * n, n])
        return {**stats, "loss": loss_sum / total, "acc": 100.0 * correct / total, "samples": round(total)}

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: evaluation and checkpoints agree."""
        if not self.active:
            return
        for buf in module.buffers():
            if buf.is_floating_point() or buf.dtype in (torch.int64, torch.int32):
                self._collective("a buffer broadcast", lambda b=buf: torch.distributed.broadcast(b, 0))

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    # ---- the model

    def wrap(self, net: nn.Module) -> nn.Module:
        """``DistributedDataParallel(net)`` (parameters broadcast from rank 0); ``net`` on one process."""
        if not self.active:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return self._collective("wrapping the model in DDP",
                                lambda: DistributedDataParallel(net, device_ids=ids, output_device=ids[0] if ids else None))

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.owned = False


def setup(device=None, backend: str | None = "auto", timeout_s: float = DEFAULT_TIMEOUT_S, environ=None) -> Dist:
    """This process's ``Dist``: under torchrun the process group is initialised here (unless it already is;
    then it is reused and not owned) and the process is put on cuda:LOCAL_RANK; else world size 1 and
    ``device`` resolved as on one process."""
    dist_env = env(environ)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        group_backend = str(torch.distributed.get_backend()).lower()
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        dist_env = DistEnv(rank, dist_env.local_rank if dist_env.world_size == world else 0, world)
        return Dist(dist_env, resolve_dist_device(device, dist_env, "nccl" if "nccl" in group_backend else "gloo"),
                    group_backend, owned=False, timeout_s=None)  # the group's own timeout applies
    if not dist_env.launched:
        from .device import resolve_device

        return Dist(dist_env, resolve_device(device))
    if not torch.distributed.is_available():
        raise DistributedError("this torch build has no torch.distributed; install a standard torch wheel")
    name = resolve_backend(backend)
    dev = resolve_dist_device(device, dist_env, name)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        torch.distributed.init_process_group(name, timeout=datetime.timedelta(seconds=float(timeout_s)),
                                             rank=dist_env.rank, world_size=dist_env.world_size)
    except (RuntimeError, ValueError, torch.distributed.DistError) as exc:
        raise DistributedError(f"rank {dist_env.rank}: could not start the {name} process group of "
                               f"{dist_env.world_size} processes within {timeout_s:g} s ({exc})") from exc
    return Dist(dist_env, dev, name, owned=True, timeout_s=timeout_s)


@contextlib.contextmanager
def session(device=None, backend: str | None = "auto", timeout_s: float = DEFAULT_TIMEOUT_S, environ=None):
    """``with session(...) as dist:`` the ``setup`` Dist, whose process group is destroyed on every exit
    path (done, error, NaN loss, Ctrl-C) if it was created here."""
    dist = setup(device, backend, timeout_s, environ)
    try:
        yield dist
        if dist.owned and dist.active:  # every rank done before the group goes: gloo aborted a rank torn down
            dist.barrier()              # while the other still used the group (seen once under load)
    finally:
        dist.close()
