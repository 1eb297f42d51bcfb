"""seed_worker seeds the Albumentations pipeline of any dataset a DataLoader's workers hold."""

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from woollylib.preloading import seed_worker, train_transforms
from woollylib.preloading.walk import datasets_in, pipelines_in

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class UserDataset(Dataset):
    """The shape of a course notebook's own dataset: one image repeated, woollylib's train transforms."""

    def __init__(self, n=8, attr="transform"):
        self.image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        self.n, self.attr = n, attr
        setattr(self, attr, train_transforms(MEAN, STD))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return getattr(self, self.attr)(image=self.image)["image"], 0


def per_worker_batches(dataset, worker_init_fn):
    """Batch 0 comes from worker 0 and batch 1 from worker 1 (DataLoader's round robin)."""
    loader = DataLoader(dataset, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(0))
    batches = [x for x, _ in loader]
    return batches[0], batches[1]


def test_without_seed_worker_both_workers_augment_identically():
    # the bug's premise: albumentations copies the Compose's RNG state into every worker
    first, second = per_worker_batches(UserDataset(), None)
    assert torch.equal(first, second)


@pytest.mark.parametrize("wrap", ["plain", "transforms_attr", "subset", "concat"])
def test_seed_worker_gives_each_worker_its_own_augmentations(wrap):
    ds = UserDataset(attr="transforms" if wrap == "transforms_attr" else "transform")
    if wrap == "subset":
        ds = Subset(ds, list(range(8)))
    elif wrap == "concat":
        part = UserDataset(4)
        ds = ConcatDataset([part, part])
    first, second = per_worker_batches(ds, seed_worker)
    assert not torch.equal(first, second)
    # reproducible: the same loader seed gives the same batches
    again = per_worker_batches(ds, seed_worker)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])


def test_walk_finds_nested_datasets_and_pipelines():
    a, b = UserDataset(4), UserDataset(4, attr="transforms")
    outer = Subset(ConcatDataset([a, b]), [0, 5])
    assert [type(d).__name__ for d in datasets_in(outer)] == ["Subset", "ConcatDataset", "UserDataset", "UserDataset"]
    assert pipelines_in(outer) == [a.transform, b.transforms]
