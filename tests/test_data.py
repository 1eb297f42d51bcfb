"""Data sources, statistics, loaders and get_data, with their error paths.

Oracles: numpy for statistics, scikit-learn's own digits for the embedded set, hand-written CIFAR
batch files for the CIFAR-10 reader, and the raw uint8 images for what the loaders yield.
"""

from __future__ import annotations

import pickle
import tracemalloc
import urllib.error
from unittest import mock

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from woollylib import preloading as P
from woollylib.preloading import loaders as L

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def digits_train():
    return P.load_digits(train=True)


def tiny_source(n: int = 12, same_image: bool = False, seed: int = 0) -> P.ImageSource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    if same_image:
        images[:] = images[0]
    return P.from_arrays(images, np.arange(n) % 3, classes=["a", "b", "c"], name="tiny")


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


# ----------------------------------------------------------------------------------------------------
# Statistics


def test_channel_stats_match_numpy_uint8_and_float(capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 9, 7, 3), dtype=np.uint8)
    images[..., 2] //= 2  # channels differ
    ref = images.astype(np.float64) / 255.0
    for data in (images, ref.astype(np.float32), torch.from_numpy(images)):
        stats = P.channel_stats(data, verbose=False, chunk_size=5)  # chunks of 5 images, last one partial
        for key, fn in (("mean", np.mean), ("std", np.std), ("var", np.var), ("min", np.min), ("max", np.max)):
            np.testing.assert_allclose(stats[key], fn(ref, axis=(0, 1, 2)), rtol=1e-6, atol=1e-7, err_msg=key)
        assert all(isinstance(v, float) for v in stats["mean"])
    P.channel_stats(P.from_arrays(images, np.arange(37) % 2, name="rand"), verbose=True)
    out = capsys.readouterr().out
    assert "[rand]" in out and "Total rand Images: 37" in out
    for key in ("min", "max", "mean", "std", "var"):
        assert f" - {key}: (" in out


def test_channel_stats_works_in_chunks_without_a_float_copy():
    images = np.random.default_rng(1).integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)  # 6 MB
    float32_copy = images.size * 4  # 24 MB
    tracemalloc.start()
    try:
        P.channel_stats(images, verbose=False, chunk_size=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < float32_copy / 4


def test_channel_stats_bad_input():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        P.channel_stats(np.zeros((4, 3, 8, 8), np.uint8), verbose=False)
    with pytest.raises(ValueError, match="empty"):
        P.channel_stats(np.zeros((0, 8, 8, 3), np.uint8), verbose=False)
    with pytest.raises(TypeError, match="dtype int32"):
        P.channel_stats(np.zeros((2, 8, 8, 3), np.int32), verbose=False)


def test_cifar_constants():
    assert P.CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and P.CIFAR10_STD == (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_split_and_stratification(digits_train):
    from sklearn.datasets import load_digits as sk_digits

    test = P.load_digits(train=False)
    assert digits_train.images.shape == (1437, 32, 32, 3) and test.images.shape == (360, 32, 32, 3)
    assert digits_train.images.dtype == np.uint8 and digits_train.labels.dtype == np.int64
    assert digits_train.classes == [str(d) for d in range(10)] and digits_train.num_classes == 10
    assert np.array_equal(digits_train.images[..., 0], digits_train.images[..., 2])  # gray as RGB
    assert digits_train.images.min() == 0 and digits_train.images.max() == 255
    total = np.bincount(sk_digits().target, minlength=10)
    n_train = np.bincount(digits_train.labels, minlength=10)
    n_test = np.bincount(test.labels, minlength=10)
    np.testing.assert_array_equal(n_train + n_test, total)  # a partition of the 1,797 images
    assert np.all(np.abs(n_test - 0.2 * total) <= 1)  # stratified: 20 % of every class


def test_digits_upscaling_preserves_the_images():
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    test = P.load_digits(train=False, test_fraction=0.25, seed=3)
    bunch = sk_digits()
    _, idx = train_test_split(np.arange(1797), test_size=0.25, random_state=3, stratify=bunch.target)
    idx = np.sort(idx)
    np.testing.assert_array_equal(test.labels, bunch.target[idx])
    # each 32x32 image, averaged back over its 4x4 blocks, matches its own 8x8 original
    back = test.images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(idx), -1)
    orig = bunch.images[idx].reshape(len(idx), -1)
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(back, orig)]
    assert min(corr) > 0.9


def test_digits_seed_determinism(digits_train):
    again = P.load_digits(train=True, seed=0)
    assert np.array_equal(again.images, digits_train.images) and np.array_equal(again.labels, digits_train.labels)
    other = P.load_digits(train=True, seed=1)
    assert not np.array_equal(other.images, digits_train.images)
    with pytest.raises(ValueError, match="test_fraction"):
        P.load_digits(test_fraction=1.5)


def test_load_source_by_name_and_unknown_name():
    assert P.list_sources() == ["cifar10", "digits"]
    src = P.load_source("digits", train=False, seed=0)
    assert len(src) == 360 and src.name == "digits-test"
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*\['cifar10', 'digits'\]"):
        P.load_source("mnist")
    with pytest.raises(TypeError, match="load_source"):
        P.load_source("digits", colour=True)


# ----------------------------------------------------------------------------------------------------
# CIFAR-10 (offline: the download is mocked)


def _cifar_help_checks(err: str, root) -> None:
    assert "cifar-10-python.tar.gz" in err
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in err
    assert str(root.resolve()) in err and "cifar-10-batches-py" in err


def test_cifar_offline_without_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        P.load_cifar10(train=True, root=tmp_path, download=False)
    _cifar_help_checks(str(info.value), tmp_path)


def test_cifar_download_failure_says_what_to_fetch_and_where(tmp_path):
    root = tmp_path / "data"
    offline = urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    patch = mock.patch("torchvision.datasets.cifar.download_and_extract_archive", side_effect=offline)
    with patch as dl, pytest.raises(FileNotFoundError) as info:
        P.load_source("cifar10", train=False, root=root, download=True)
    assert dl.call_count == 1 and dl.call_args.args[0] == P.CIFAR10_URL
    err = str(info.value)
    _cifar_help_checks(err, root)
    assert "download failed" in err and "name resolution" in err


def test_cifar_reader_converts_batches(tmp_path):
    # the torchvision file format: pickled dicts with 'data' (N, 3072) CHW-flattened and 'labels'
    folder = tmp_path / P.CIFAR10_FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    chw = {}
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]):
        chw[name] = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": chw[name].reshape(2, -1), "labels": [i % 10, (i + 1) % 10]}, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)
    # md5 checks pass for these stand-in files; everything else is torchvision's real reader
    with mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True), mock.patch(
        "torchvision.datasets.CIFAR10._check_integrity", return_value=True
    ):
        train = P.load_cifar10(train=True, root=tmp_path, download=False)
        test = P.load_source("cifar10", train=False, root=tmp_path, download=False)
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images[0], chw["data_batch_1"][0].transpose(1, 2, 0))
    np.testing.assert_array_equal(test.images[1], chw["test_batch"][1].transpose(1, 2, 0))
    assert train.labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and test.labels.tolist() == [5, 6]
    assert train.classes == classes and train.name == "cifar10-train"


# ----------------------------------------------------------------------------------------------------
# Arrays


def test_from_arrays_layouts_and_dtypes():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    src = P.from_arrays(hwc, [0, 1, 2, 1, 0])
    assert np.array_equal(src.images, hwc) and src.labels.dtype == np.int64 and src.classes == ["0", "1", "2"]
    floats = rng.random((5, 3, 8, 6))  # CHW floats in [0, 1)
    src = P.from_arrays(torch.from_numpy(floats), torch.tensor([1, 1, 0, 0, 1]), classes=["x", "y"])
    np.testing.assert_array_equal(src.images, np.rint(floats.transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    assert src.images.shape == (5, 8, 6, 3) and src.num_classes == 2 and len(src) == 5
    assert src.subset([0, 2]).labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "images, labels, classes, err, match",
    [
        (np.zeros((4, 8, 8), np.uint8), [0] * 4, None, ValueError, r"\(N, H, W, 3\).*grayscale"),
        (np.zeros((4, 8, 8, 4), np.uint8), [0] * 4, None, ValueError, r"\(N, 3, H, W\)"),
        (np.zeros((4, 8, 8, 3), np.int32), [0] * 4, None, TypeError, "uint8"),
        (np.full((4, 8, 8, 3), 2.0), [0] * 4, None, ValueError, r"\[0, 1\]"),
        (np.full((4, 8, 8, 3), np.nan), [0] * 4, None, ValueError, r"\[0, 1\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), [], None, ValueError, "empty"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 2], None, ValueError, r"shape \(4,\)"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 2, 3], ["a", "b"], ValueError, r"\[0, 2\).*classes="),
        (np.zeros((4, 8, 8, 3), np.uint8), [0, -1, 1, 1], None, ValueError, r"outside.*min -1"),
        (np.zeros((4, 8, 8, 3), np.uint8), [0.5, 1, 1, 0], None, TypeError, "integers"),
    ],
)
def test_from_arrays_errors(images, labels, classes, err, match):
    with pytest.raises(err, match=match):
        P.from_arrays(images, np.asarray(labels), classes=classes)


# ----------------------------------------------------------------------------------------------------
# Folders


def test_load_folder_reads_and_resizes(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (10, 14), (200, 10, 50)).save(tmp_path / "cats" / "a.png")
    Image.new("L", (64, 64), 77).save(tmp_path / "dogs" / "b.png")
    Image.new("RGB", (40, 20), (1, 2, 3)).save(tmp_path / "dogs" / "c.jpg", quality=100)
    src = P.load_folder(tmp_path, image_size=16)
    assert src.images.shape == (3, 16, 16, 3) and src.images.dtype == np.uint8
    assert src.classes == ["cats", "dogs"] and src.labels.tolist() == [0, 1, 1]
    assert np.all(src.images[0] == (200, 10, 50)) and np.all(src.images[1] == 77)  # solid colours survive
    assert np.abs(src.images[2].astype(int) - (1, 2, 3)).max() <= 2
    assert P.load_folder(tmp_path, image_size=(8, 12)).images.shape == (3, 8, 12, 3)


def test_load_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*<class_name>"):
        P.load_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images found"):
        P.load_folder(tmp_path)  # exists, but no class folders


# ----------------------------------------------------------------------------------------------------
# Loaders


def test_loader_yields_normalised_batches_and_shuffles_only_for_training():
    src = tiny_source(10)
    test_tf = P.test_transforms(MEAN, STD)
    test_loader = P.make_loader(src, test_tf, batch_size=4, train=False, seed=0, num_workers=0)
    got = batches(test_loader)
    assert [len(y) for _, y in got] == [4, 4, 2] and len(test_loader) == 3
    x = torch.cat([b[0] for b in got])
    y = torch.cat([b[1] for b in got])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (10, 3, 32, 32)
    assert y.tolist() == src.labels.tolist()  # test order = source order
    expected = (src.images.astype(np.float64) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    train_loader = P.make_loader(src, test_tf, batch_size=4, train=True, seed=0, num_workers=0)
    order = torch.cat([b[0] for b in train_loader]).flatten(1)
    assert not torch.equal(order, x.flatten(1))  # shuffled...
    assert sorted(map(tuple, order.tolist())) == sorted(map(tuple, x.flatten(1).tolist()))  # ...a permutation


def test_seeded_run_reproduces_and_set_epoch_resumes():
    src = tiny_source(12)
    tf = P.train_transforms(MEAN, STD, cutout_p=1.0)
    run1 = P.make_loader(src, tf, batch_size=4, train=True, seed=5, num_workers=0)
    epochs1 = [batches(run1) for _ in range(3)]
    run2 = P.make_loader(src, P.train_transforms(MEAN, STD, cutout_p=1.0), batch_size=4, train=True, seed=5, num_workers=0)
    epochs2 = [batches(run2) for _ in range(3)]
    assert all(same(a, b) for a, b in zip(epochs1, epochs2))
    resumed = P.make_loader(src, P.train_transforms(MEAN, STD, cutout_p=1.0), batch_size=4, train=True, seed=5, num_workers=0)
    resumed.set_epoch(2)
    assert same(batches(resumed), epochs1[2]) and resumed.epoch == 3
    run1.set_epoch(1)
    assert same(batches(run1), epochs1[1])  # same loader, epoch replayed
    other = P.make_loader(src, tf, batch_size=4, train=True, seed=6, num_workers=0)
    assert not same(batches(other), epochs1[0])
    # seed=None draws from torch's global RNG: seed_everything-style seeding reproduces too
    torch.manual_seed(3)
    a = batches(P.make_loader(src, tf, batch_size=4, train=True, num_workers=0))
    torch.manual_seed(3)
    b = batches(P.make_loader(src, tf, batch_size=4, train=True, num_workers=0))
    assert same(a, b)


def test_consecutive_epochs_differ_in_order_and_augmentation():
    src = tiny_source(12, same_image=True)  # identical images: any pixel difference is augmentation
    loader = P.make_loader(src, P.train_transforms(MEAN, STD, cutout_p=1.0), 4, train=True, seed=0, num_workers=0)
    e0, e1 = batches(loader), batches(loader)
    assert [y.tolist() for _, y in e0] != [y.tolist() for _, y in e1]
    x0, x1 = torch.cat([b[0] for b in e0]), torch.cat([b[0] for b in e1])
    assert not torch.equal(x0, x1)
    assert len({tuple(v) for v in x0.flatten(1)[:, ::97].tolist()}) == 12  # every sample augmented apart


def test_two_workers_augment_differently_and_match_the_single_process_run():
    src = tiny_source(8, same_image=True)
    tf = P.train_transforms(MEAN, STD, cutout_p=1.0)
    # the measured albumentations 2.0.8 problem with a plain DataLoader: both workers repeat each other
    plain = batches(DataLoader(P.AlbumentationsDataset(src, A.Compose(tf.transforms)), batch_size=4, num_workers=2))
    assert torch.equal(plain[0][0], plain[1][0])
    # woollylib's pipeline reseeds itself per worker, even in a plain DataLoader
    own = batches(DataLoader(P.AlbumentationsDataset(src, tf), batch_size=4, num_workers=2))
    assert not torch.equal(own[0][0], own[1][0])
    loader = P.make_loader(src, tf, batch_size=4, train=False, seed=0, num_workers=2)
    assert loader.persistent_workers and loader.num_workers == 2
    assert loader.pin_memory == torch.cuda.is_available()  # pinned only where a GPU will read the batches
    e0 = batches(loader)  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(e0[0][0], e0[1][0])
    e1 = batches(loader)  # persistent workers, next epoch
    assert not torch.equal(e0[0][0], e1[0][0]) and not torch.equal(e0[1][0], e1[1][0])
    single = P.make_loader(src, tf, batch_size=4, train=False, seed=0, num_workers=0)
    assert same(batches(single), e0) and same(batches(single), e1)  # independent of the worker count


def test_seed_worker_reseeds_the_pipeline_from_the_worker_seed():
    ds = P.AlbumentationsDataset(tiny_source(2), P.train_transforms(MEAN, STD))
    fake = mock.Mock(seed=2**40 + 123, dataset=ds, id=0)
    with mock.patch.object(L, "get_worker_info", return_value=fake), mock.patch.object(ds.transform, "set_random_seed") as s:
        L.seed_worker(0)
    s.assert_called_once_with((2**40 + 123) % 2**32)


def test_loader_options_and_worker_defaults(monkeypatch):
    src = tiny_source(6)
    tf = P.test_transforms(MEAN, STD)
    assert P.make_loader(src, tf, 2, train=False, device="cuda", num_workers=0).pin_memory
    assert not P.make_loader(src, tf, 2, train=False, device="cpu", num_workers=0).pin_memory
    loader = P.make_loader(src, tf, 4, train=True, num_workers=0, drop_last=True, seed=0)
    assert len(loader) == 1 and loader.seed == 0 and not loader.persistent_workers
    monkeypatch.setattr(L.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert P.default_num_workers() == 0
    monkeypatch.setattr(L.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert P.default_num_workers() == 8


def test_loader_errors():
    src = tiny_source(4)
    tf = P.test_transforms(MEAN, STD)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            P.make_loader(src, tf, bad, train=True)
    with pytest.raises(ValueError, match="num_workers"):
        P.make_loader(src, tf, 2, train=True, num_workers=-1)
    empty = P.ImageSource(np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64), ["a"], "empty")
    with pytest.raises(ValueError, match="'empty' is empty"):
        P.make_loader(empty, tf, 2, train=True)
    with pytest.raises(TypeError, match="ImageSource"):
        P.AlbumentationsDataset(np.zeros((2, 32, 32, 3), np.uint8), tf)
    with pytest.raises(ValueError, match="epoch"):
        P.make_loader(src, tf, 2, train=True).set_epoch(-1)


# ----------------------------------------------------------------------------------------------------
# get_data


def test_get_data_digits_bundle_and_denormalize(capsys):
    data = P.get_data("digits", batch_size=64, seed=0, num_workers=0)
    assert "[digits-train]" in capsys.readouterr().out
    assert data.classes == [str(d) for d in range(10)] and data.name == "digits"
    assert len(data.train_source) == 1437 and len(data.test_source) == 360
    np.testing.assert_allclose(data.mean, data.train_source.images.reshape(-1, 3).mean(0) / 255.0, rtol=1e-9)
    assert data.stats["mean"] == data.mean
    x, y = next(iter(data.train_loader))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert isinstance(data.train_loader, P.SeededDataLoader) and hasattr(data.test_loader, "set_epoch")
    xt, _ = next(iter(data.test_loader))  # test loader: source order, Normalize only
    pixels = data.denormalize(xt)
    np.testing.assert_allclose(pixels.permute(0, 2, 3, 1).numpy(), data.test_source.images[:64] / 255.0, atol=1e-5)
    assert data.denormalize(xt[0]).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="denormalize"):
        data.denormalize(xt[:, :2])


def test_get_data_from_sources_and_options():
    train, test = tiny_source(8), tiny_source(4, seed=1)
    data = P.get_data((train, test), batch_size=4, augment=False, verbose=False, seed=0, num_workers=0)
    assert [type(t).__name__ for t in data.train_transform.transforms] == ["Normalize", "ToTensorV2"]
    custom = P.get_data((train, test), batch_size=4, augment=["hflip"], verbose=False, num_workers=0)
    assert type(custom.train_transform.transforms[0]).__name__ == "HorizontalFlip"
    preset = P.get_data((train, test), batch_size=4, verbose=False, num_workers=0)
    assert type(preset.train_transform.transforms[-3]).__name__ == "CoarseDropout"


def test_get_data_device_loader_path():
    data = P.get_data("digits", batch_size=64, loader="device", device="cpu", seed=0, verbose=False)
    assert isinstance(data.train_loader, P.DeviceLoader) and data.train_transform is None
    x, y = next(iter(data.train_loader))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, yt = next(iter(data.test_loader))  # in order, no augmentation: denormalize gives the pixels back
    assert yt.tolist() == data.test_source.labels[:64].tolist()
    pixels = data.denormalize(xt).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(pixels, data.test_source.images[:64] / 255.0, atol=1e-5)


def _names(tf):
    return [type(t).__name__ for t in tf.transforms]


def test_one_default_augmentation_per_dataset_for_both_loaders():
    assert P.augment_preset("digits") == P.augment_preset(P.load_digits(train=False)) == "none"
    assert P.augment_preset("cifar10") == P.augment_preset("CIFAR-10") == "cifar"
    assert P.augment_preset("digits", "crop") == "crop"
    digits = P.get_data("digits", batch_size=32, seed=0, num_workers=0, verbose=False)
    assert _names(digits.train_transform) == ["Normalize", "ToTensorV2"]      # digits: none
    device = P.get_data("digits", batch_size=32, loader="device", device="cpu", seed=0, verbose=False)
    dl = device.train_loader
    assert (dl.crop_pad, dl.flip, dl.cutout) == (0, False, 0)
    x, _ = next(iter(dl))  # no augmentation: every train image is a source image, normalised
    src = torch.from_numpy(device.train_source.images).permute(0, 3, 1, 2).float() / 255
    px = device.denormalize(x)
    assert all((src - im).abs().amax(dim=(1, 2, 3)).min() < 1e-5 for im in px[:4])
    train, test = tiny_source(8), tiny_source(4, seed=1)  # any other dataset: the CIFAR preset
    photos = P.get_data((train, test), batch_size=4, verbose=False, num_workers=0)
    assert _names(photos.train_transform)[:4] == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout"]
    photos_dev = P.get_data((train, test), batch_size=4, loader="device", device="cpu", verbose=False)
    assert (photos_dev.train_loader.crop_pad, photos_dev.train_loader.flip, photos_dev.train_loader.cutout) == (4, True, 16)


def test_augment_presets_by_name_for_both_loaders():
    train, test = tiny_source(8), tiny_source(4, seed=1)
    crop = P.get_data((train, test), batch_size=4, augment="crop", verbose=False, num_workers=0)
    assert _names(crop.train_transform) == ["PadIfNeeded", "RandomCrop", "Normalize", "ToTensorV2"]
    assert crop.train_transform.transforms[0].min_height == train.image_size[0] + 4   # 2 px per side
    dev = P.get_data((train, test), batch_size=4, augment="crop", loader="device", device="cpu", verbose=False)
    assert (dev.train_loader.crop_pad, dev.train_loader.flip, dev.train_loader.cutout) == (2, False, 0)
    assert P.default_augment("cifar10", "albumentations") == {"padding": 4, "flip": True, "cutout": 16}
    assert P.default_augment("cifar10", "device") == {"crop_pad": 4, "flip": True, "cutout": 16}
    assert P.default_augment("cifar10", "device", "none") == {"crop_pad": 0, "flip": False, "cutout": 0}
    tuned = P.get_data((train, test), batch_size=4, augment="cifar", loader="device", device="cpu",
                       verbose=False, loader_kw={"cutout": 0})              # loader_kw overrides the preset
    assert (tuned.train_loader.crop_pad, tuned.train_loader.cutout) == (4, 0)
    with pytest.raises(ValueError, match="unknown augment preset 'heavy'.*auto, cifar, crop, none"):
        P.get_data((train, test), batch_size=4, augment="heavy", verbose=False, num_workers=0)
    with pytest.raises(ValueError, match="loader_kw"):
        P.get_data((train, test), batch_size=4, augment=["hflip"], loader="device", device="cpu", verbose=False)
    with pytest.raises(ValueError, match="unknown loader"):
        P.default_augment("digits", "dali")


def test_get_data_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*cifar10"):
        P.get_data("imagenet", batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        P.get_data("digits", batch_size=0)
    with pytest.raises(ValueError, match="unknown loader"):
        P.get_data("digits", batch_size=8, loader="dali")
