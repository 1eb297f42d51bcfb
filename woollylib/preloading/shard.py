"""One rank's share of a loader: no image twice, none left out.

    from woollylib.preloading.shard import shard_loader, rank_positions
    train = shard_loader(data.train_loader, rank, world_size, train=True)   # batch B -> B / world_size
    test = shard_loader(data.test_loader, rank, world_size, train=False)    # images rank, rank + W, ...

Training: every epoch's global order (the one a single process draws from (seed, epoch)) is cut
into global batches of B; rank r takes the r-th of W equal slices of each. So W processes at B / W
see, step by step, exactly the images of one process at B (a last short batch is split as evenly as
possible). Evaluation: rank r gets indices r, r + W, r + 2W, ... of the set, no padding, so the
summed loss and correct count over the ranks count every image exactly once.
"""

from __future__ import annotations

import copy

import torch

from ..errors import DistributedError
from .loaders import (
    _WORKERS,
    EpochSampler,
    SeededDataLoader,
    _derive,
    rank_positions,
    shard_positions,
)

__all__ = ["ShardedEpochSampler", "is_sharded", "rank_positions", "shard_loader", "shard_positions"]


class ShardedEpochSampler(EpochSampler):
    """An ``EpochSampler`` yielding rank ``rank``'s share of the global order (see module docstring).

    Augmentation seeds: rank 0 keeps the global batch's seed; rank r > 0 derives its own from it."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int, rank: int, world_size: int,
                 drop_last: bool = False, train: bool = True) -> None:
        super().__init__(size, batch_size, shuffle, seed)
        self.rank, self.world_size, self.train, self.drop_last = int(rank), int(world_size), bool(train), drop_last
        self.global_batch = self.batch_size * self.world_size if train else self.batch_size
        self._positions = shard_positions(self.size, self.batch_size, self.rank, self.world_size, drop_last, train)

    def __len__(self) -> int:
        return len(self._positions)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        whole = EpochSampler(self.size, self.global_batch, self.shuffle, self.seed)
        whole.set_epoch(epoch)
        keys = list(whole)  # (index, seed of its global batch, first of it) of the one-process order
        out, bs = [], self.batch_size
        for j, pos in enumerate(self._positions.tolist()):
            index, seed, _ = keys[pos]
            if self.rank and self.train:
                seed = _derive(seed, self.rank)
            out.append((index, seed, j % bs == 0))
        return iter(out)


def is_sharded(loader) -> bool:
    """Whether ``loader`` already yields one rank's share (made by ``shard_loader``)."""
    return getattr(loader, "shard", None) is not None or isinstance(getattr(loader, "sampler", None),
                                                                     ShardedEpochSampler)


def shard_loader(loader, rank: int, world_size: int, train: bool):
    """Rank ``rank``'s loader of ``loader`` (a woollylib ``SeededDataLoader`` or ``DeviceLoader``); a
    training loader's batch size is the global one divided by ``world_size`` (``split_batch``)."""
    from ..distributed import split_batch
    from .device_loader import DeviceLoader

    if world_size == 1 or is_sharded(loader):
        return loader
    batch = getattr(loader, "batch_size", None)
    local = split_batch(batch, world_size) if train else batch
    if isinstance(loader, DeviceLoader):
        out = copy.copy(loader)  # shares the set on the device
        out._scratch = {}
        out.batch_size = local
        out.shard = (int(rank), int(world_size), bool(train))
        len(out)  # an uneven last batch fails here, not mid-epoch
        return out
    if isinstance(loader, SeededDataLoader):
        s = loader.sampler
        sampler = ShardedEpochSampler(s.size, local, s.shuffle, s.seed, rank, world_size,
                                      drop_last=loader.drop_last, train=train)
        sampler.epoch = s.epoch
        return SeededDataLoader(
            loader.dataset, batch_size=local, sampler=sampler, num_workers=loader.num_workers,
            pin_memory=loader.pin_memory, drop_last=loader.drop_last,
            persistent_workers=loader.persistent_workers, worker_init_fn=loader.worker_init_fn,
            generator=torch.Generator().manual_seed(_derive(s.seed, 0, _WORKERS)))
    raise DistributedError(
        f"under torchrun the {'train' if train else 'test'} loader ({type(loader).__name__}) must be a woollylib "
        "loader (get_data / make_loader / DeviceLoader) so that each process gets its own share; build the "
        "data with woollylib.preloading.get_data")
