"""woollylib's pipelines reseed themselves in any DataLoader's workers; seed_worker seeds plain
albumentations pipelines held in any attribute of any dataset."""

import itertools

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from woollylib.preloading import WorkerSeededCompose, seed_worker, train_transforms
from woollylib.preloading.walk import datasets_in, pipelines_in

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class UserDataset(Dataset):
    """The shape of a course notebook's own dataset: one image repeated, woollylib's train transforms."""

    def __init__(self, n=8, attr="transform", plain=False):
        self.image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        self.n, self.attr = n, attr
        tf = train_transforms(MEAN, STD)
        setattr(self, attr, A.Compose(tf.transforms) if plain else tf)  # plain: albumentations' own Compose

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        tf = getattr(self, self.attr)
        return (tf[0] if isinstance(tf, list) else tf)(image=self.image)["image"], 0


def per_worker_batches(dataset, worker_init_fn):
    """Batch 0 comes from worker 0 and batch 1 from worker 1 (DataLoader's round robin)."""
    loader = DataLoader(dataset, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(0))
    batches = [x for x, _ in loader]
    return batches[0], batches[1]


def test_plain_albumentations_workers_augment_identically():
    # the premise: albumentations copies a plain Compose's RNG state into every worker
    first, second = per_worker_batches(UserDataset(plain=True), None)
    assert torch.equal(first, second)


def streams(dataset, epochs=2, seed=None, **loader_kw):
    """One batch per worker and epoch (2 workers, 2 batches per epoch), as a list in order."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, generator=generator, **loader_kw)
    return [x for _ in range(epochs) for x, _ in loader]


@pytest.mark.parametrize("attr", ["tf", "transform"])
def test_woollylib_pipeline_reseeds_per_worker_and_epoch_in_a_user_dataloader(attr):
    ds = UserDataset(attr=attr)
    assert isinstance(ds.tf if attr == "tf" else ds.transform, WorkerSeededCompose)
    first = streams(ds, seed=0)  # no worker_init_fn
    assert len(first) == 4  # (epoch 1: worker 0, worker 1), (epoch 2: worker 0, worker 1)
    for a, b in itertools.combinations(first, 2):
        assert not torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(first, streams(ds, seed=0)))  # a seeded loader repeats
    assert not torch.equal(first[0], streams(ds, seed=1)[0])
    torch.manual_seed(5)
    by_global = streams(ds)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(by_global, streams(ds)))  # torch.manual_seed repeats too


def test_woollylib_pipeline_in_persistent_workers_continues_its_stream():
    batches = streams(UserDataset(attr="tf"), seed=0, persistent_workers=True)
    for a, b in itertools.combinations(batches, 2):
        assert not torch.equal(a, b)


def test_main_process_pipeline_keeps_its_seed():
    # num_workers=0: a plain Compose, seed= reproduces
    a, b = train_transforms(MEAN, STD, seed=3), train_transforms(MEAN, STD, seed=3)
    image = UserDataset().image
    outs = [(a(image=image)["image"], b(image=image)["image"]) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in outs) and not torch.equal(outs[0][0], outs[1][0])


@pytest.mark.parametrize("wrap", ["plain", "transforms_attr", "user_attr", "list_attr", "subset", "concat"])
def test_seed_worker_gives_each_worker_its_own_augmentations(wrap):
    attr = {"transforms_attr": "transforms", "user_attr": "tf"}.get(wrap, "transform")
    ds = UserDataset(attr=attr, plain=True)
    if wrap == "list_attr":  # pipelines in a list attribute of the user's own name
        ds.pipelines, ds.attr = [ds.transform], "pipelines"
        del ds.transform
    if wrap == "subset":
        ds = Subset(ds, list(range(8)))
    elif wrap == "concat":
        part = UserDataset(4, plain=True)
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
    c = UserDataset(4, attr="tf")
    c.extra = {"strong": A.Compose([A.HorizontalFlip()])}
    assert pipelines_in(c) == [c.tf, c.extra["strong"]]
