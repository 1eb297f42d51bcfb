"""Albumentations dataset and a reproducible DataLoader with ``set_epoch``.

Usage::

    from woollylib.preloading import make_loader, train_transforms, load_source, CIFAR10_MEAN, CIFAR10_STD
    src = load_source("digits")
    loader = make_loader(src, train_transforms(CIFAR10_MEAN, CIFAR10_STD), batch_size=64, train=True, seed=0)
    for epoch in range(3):
        loader.set_epoch(epoch)            # optional: epochs count up by themselves otherwise
        for images, labels in loader:      # float32 (B, 3, H, W) normalised, int64 (B,)
            ...

Randomness: every batch's augmentation is seeded from (seed, epoch, batch index), and the shuffle
order from (seed, epoch). So a seeded run reproduces exactly, including a resume at epoch e after
``set_epoch(e)``, with any num_workers (0 and 2 workers give the same batches), each batch and each
epoch gets fresh augmentation, and workers never repeat each other. (albumentations 2.0.8 copies the
Compose's RNG state into every worker, so without this both workers of num_workers=2 produced
identical augmentations.) ``seed=None`` draws the seed from torch's global RNG, so
``seed_everything(s)`` makes such runs reproducible too.

Workers: ``num_workers=None`` picks ``default_num_workers()``: 0 on machines with 2 CPU cores or fewer
(measured on a 2-core box: the main process alone was fastest end to end), else min(8, cores - 1).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .._checks import check_int
from .sources import ImageSource

__all__ = ["AlbumentationsDataset", "EpochSampler", "SeededDataLoader", "default_num_workers", "make_loader", "seed_worker"]


def _derive(*keys: int) -> int:
    """A 32-bit seed from integer keys (numpy SeedSequence: well mixed, stable across versions)."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(1)[0])


_SHUFFLE, _AUGMENT, _WORKERS = 0, 1, 2  # stream tags for _derive


# ----------------------------------------------------------------------------------------------------
# Dataset


class AlbumentationsDataset(Dataset):
    """Items ``(image float32 (3, H, W), label int)`` of an ImageSource through an albumentations pipeline.

    ``transform`` is called as ``transform(image=uint8_hwc)["image"]``; it must end with ToTensorV2
    (every woollylib pipeline does). ``None`` gives unnormalised floats in [0, 1].
    The dataset also accepts keys ``(index, batch_seed, first)`` from ``EpochSampler``: on the first
    item of each batch it reseeds the pipeline with ``batch_seed``.
    """

    def __init__(self, source: ImageSource, transform: Any = None) -> None:
        if not isinstance(source, ImageSource):
            raise TypeError(f"source must be an ImageSource (see load_source/from_arrays), got {type(source).__name__}")
        if len(source) == 0:
            raise ValueError(f"source {source.name!r} is empty: a dataset needs at least one image")
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def reseed(self, seed: int) -> None:
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(seed) % 2**32)

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            index, batch_seed, first = key
            if first:
                self.reseed(batch_seed)
        else:
            index = key
        image = self.source.images[index]
        label = int(self.source.labels[index])
        if self.transform is None:
            return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0), label
        out = self.transform(image=image)["image"]
        if not isinstance(out, torch.Tensor):
            raise TypeError("the transform must end with ToTensorV2 (build it with build_transforms/train_transforms)")
        return out, label


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed python, numpy and every albumentations pipeline of the worker's
    dataset from the worker's own torch seed, so workers do not share the RNG state albumentations
    copied into them. Any Dataset works: a pipeline in any of its attributes (``.transform``,
    ``self.tf``...), nested in Subset/ConcatDataset too (``DataLoader(ds, num_workers=2,
    worker_init_fn=seed_worker)``). woollylib's own pipelines reseed themselves without it
    (WorkerSeededCompose); it is needed for plain ``A.Compose`` pipelines."""
    from .walk import datasets_in, pipelines_in, transforms_of

    info = get_worker_info()
    seed = info.seed % 2**32 if info is not None else torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    dataset = info.dataset if info is not None else None
    done = set()
    for d in datasets_in(dataset):
        if hasattr(d, "reseed"):  # woollylib's datasets reseed their own pipeline
            d.reseed(seed)
            done.update(id(t) for t in transforms_of(d))
    for k, pipeline in enumerate(pipelines_in(dataset)):
        if id(pipeline) not in done:  # the first with the worker seed itself, others each their own
            pipeline.set_random_seed(seed if k == 0 else _derive(seed, k, _WORKERS))


# ----------------------------------------------------------------------------------------------------
# Sampler and loader


def rank_positions(used: int, global_batch: int, rank: int, world_size: int) -> np.ndarray:
    """Positions (into an epoch's global order of ``used`` items) that rank ``rank`` trains on, in order."""
    full, rest = divmod(int(used), int(global_batch))
    local = global_batch // world_size
    pos = (np.arange(full)[:, None] * global_batch + rank * local + np.arange(local)[None, :]).reshape(-1)
    if rest:
        if rest < world_size:
            raise ValueError(
                f"the last batch of an epoch has {rest} image(s), fewer than the {world_size} processes, so some "
                f"would have no batch; drop it (drop_last=True) or choose another batch size")
        lo, hi = full * global_batch + rank * rest // world_size, full * global_batch + (rank + 1) * rest // world_size
        pos = np.concatenate([pos, np.arange(lo, hi)])
    return pos


def shard_positions(size: int, batch_size: int, rank: int, world_size: int, drop_last: bool = False,
                    train: bool = True) -> np.ndarray:
    """Positions into an epoch's one-process order of ``size`` items that rank ``rank`` takes: for training
    its slice of every global batch (``batch_size`` per rank), for evaluation ``rank, rank + W, ...``."""
    if not train:
        return np.arange(rank, size, world_size)
    global_batch = batch_size * world_size
    used = (size // global_batch) * global_batch if drop_last else size
    return rank_positions(used, global_batch, rank, world_size)


class EpochSampler(Sampler):
    """Yields ``(index, batch_seed, first_in_batch)`` keys; order and seeds derive from (seed, epoch).

    Each ``iter()`` uses the current epoch and then advances it by one; ``set_epoch(e)`` sets it.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = int(size), int(batch_size), bool(shuffle), int(seed)
        self.epoch = 0  # the epoch the next iter() produces

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(check_int("epoch", epoch, minimum=0))

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.shuffle:
            gen = torch.Generator().manual_seed(_derive(self.seed, epoch, _SHUFFLE))
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        n_batches = -(-self.size // self.batch_size)
        rng = np.random.default_rng(_derive(self.seed, epoch, _AUGMENT))
        batch_seeds = rng.integers(0, 2**32, size=n_batches, dtype=np.uint64).tolist()
        bs = self.batch_size
        return iter([(i, batch_seeds[pos // bs], pos % bs == 0) for pos, i in enumerate(order)])


class SeededDataLoader(DataLoader):
    """A DataLoader over an ``EpochSampler`` with ``set_epoch(epoch)`` and ``seed``/``epoch`` attributes."""

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``: shuffle, augmentation and worker seeds from (seed, epoch)."""
        self.sampler.set_epoch(epoch)

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will produce."""
        return self.sampler.epoch

    def __iter__(self):
        # worker base seeds (python/numpy inside workers) also follow (seed, epoch)
        if self.generator is not None:
            self.generator.manual_seed(_derive(self.sampler.seed, self.sampler.epoch, _WORKERS))
        return super().__iter__()


def default_num_workers() -> int:
    """0 on machines with <= 2 usable CPU cores (the main process alone was fastest there), else
    min(8, cores - 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores - 1)


def make_loader(
    source: ImageSource | AlbumentationsDataset,
    transform: Any,
    batch_size: int,
    train: bool,
    num_workers: int | None = None,
    seed: int | None = None,
    device: Any = None,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
) -> SeededDataLoader:
    """A reproducible loader of ``(images float32 (B, 3, H, W), labels int64 (B,))``.

    Shuffles only when ``train``. ``num_workers=None``: ``default_num_workers()``. ``pin_memory``
    defaults to True when ``device`` is CUDA (or, with ``device=None``, when CUDA is available).
    Workers persist across epochs when there are any. ``seed=None`` draws one from torch's global RNG.
    """
    check_int("batch_size", batch_size)
    dataset = source if isinstance(source, AlbumentationsDataset) else AlbumentationsDataset(source, transform)
    if isinstance(source, AlbumentationsDataset) and transform is not None:
        dataset.transform = transform
    if num_workers is None:
        num_workers = default_num_workers()
    check_int("num_workers", num_workers, minimum=0, hint="0 loads in the main process")
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    if pin_memory is None:
        kind = torch.device(device).type if device not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
        pin_memory = kind == "cuda"
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    sampler = EpochSampler(len(dataset), int(batch_size), shuffle=train, seed=seed)
    return SeededDataLoader(
        dataset,
        batch_size=int(batch_size),
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(_derive(seed, 0, _WORKERS)),
    )
