"""DeviceLoader: shapes, alignment, exact geometry, augmentation statistics vs the Albumentations preset.

Oracle: every source pixel encodes where it came from (R = 1 + 7*y, G = 3 + 7*x, B = 10 + 20*label),
with mean 0.5 so the fill colour is 128, a value no coordinate code takes. From an augmented image we
decode (dy, dx, flip, hole) and rebuild it independently with numpy (np.pad + slicing), and we decode
the preset's output (``train_transforms``) the same way to compare the distributions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from woollylib.preloading.device_loader import DeviceLoader
from woollylib.preloading.transforms import train_transforms

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.2, 0.3)
FILL = round(0.5 * 255)  # 128: the preset's mean colour (pad and cutout)
H = W = 32


def coded_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    labels = np.random.default_rng(seed).integers(0, 10, n)
    y, x = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img = np.empty((n, H, W, 3), np.uint8)
    img[..., 0] = 1 + 7 * y
    img[..., 1] = 3 + 7 * x
    img[..., 2] = (10 + 20 * labels)[:, None, None]
    return img, labels


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Normalised (B, 3, H, W) -> uint8 (B, H, W, 3), asserting the values are exact pixel levels."""
    px = (x.float() * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255
    assert torch.allclose(px, px.round(), atol=2e-3)
    return px.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def decode(img: np.ndarray) -> tuple[int, int, bool, np.ndarray]:
    """(dy, dx, flip, hole mask) of one augmented coded image, in the A.RandomCrop-then-flip convention."""
    r, g = img[..., 0].astype(int), img[..., 1].astype(int)
    ok = (r != FILL) & (g != FILL)
    ys, xs = np.nonzero(ok)
    sy, sx = (r[ok] - 1) // 7, (g[ok] - 3) // 7
    dys = sy - ys + 4
    assert (dys == dys[0]).all()
    flip = bool(len(xs) > 1 and np.corrcoef(xs, sx)[0, 1] < 0)
    dxs = sx + xs - 27 if flip else sx - xs + 4
    assert (dxs == dxs[0]).all()
    dy, dx = int(dys[0]), int(dxs[0])
    src_y = np.arange(H)[:, None] + dy - 4
    src_x = (W - 1 - np.arange(W) if flip else np.arange(W))[None, :] + dx - 4
    inside = (src_y >= 0) & (src_y < H) & (src_x >= 0) & (src_x < W)
    return dy, dx, flip, inside & ~ok  # fill pixels that padding does not explain: the hole


def reference(src: np.ndarray, dy: int, dx: int, flip: bool, mode: str = "constant") -> np.ndarray:
    """numpy oracle: PadIfNeeded(40) + crop at (dy, dx) + optional flip."""
    kw = {"constant_values": FILL} if mode == "constant" else {}
    padded = np.pad(src, ((4, 4), (4, 4), (0, 0)), mode=mode, **kw)
    out = padded[dy:dy + H, dx:dx + W]
    return out[:, ::-1] if flip else out


def loader(n=600, bs=128, **kw) -> tuple[DeviceLoader, np.ndarray, np.ndarray]:
    img, lab = coded_images(n)
    kw.setdefault("seed", 0)
    kw.setdefault("train", True)
    kw.setdefault("device", "cpu")  # compared with numpy on the host, also on a machine with a GPU
    return DeviceLoader((img, lab), bs, mean=MEAN, std=STD, **kw), img, lab


def params_of(batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    dec = [decode(im) for b in batches for im in b]
    holes = np.stack([d[3] for d in dec])
    return {"dy": np.array([d[0] for d in dec]), "dx": np.array([d[1] for d in dec]),
            "flip": np.array([d[2] for d in dec]), "holes": holes}


# ----------------------------------------------------------------------------------------------------


def test_shapes_dtype_len_and_drop_last():
    dl, _, _ = loader(n=300, bs=128)
    assert len(dl) == 2 and dl.dataset_size == 300 and dl.mean == MEAN and dl.std == STD
    sizes = [(x.shape, x.dtype, y.shape, y.dtype) for x, y in dl]
    assert sizes == [((128, 3, 32, 32), torch.float32, (128,), torch.int64)] * 2
    dl, _, _ = loader(n=300, bs=128, drop_last=False)
    assert len(dl) == 3 and [len(y) for _, y in dl] == [128, 128, 44]
    ev, _, _ = loader(n=300, bs=128, train=False)
    assert len(ev) == 3 and [len(y) for _, y in ev] == [128, 128, 44]


def test_eval_is_the_set_in_order_exactly_normalised():
    dl, img, lab = loader(n=300, bs=128, train=False)
    xs, ys = zip(*dl)
    assert np.array_equal(to_pixels(torch.cat(xs)), img)
    assert np.array_equal(torch.cat(ys).numpy(), lab)


def test_labels_stay_aligned_and_every_image_once_per_epoch():
    dl, _, lab = loader(n=640, bs=128)
    seen = []
    for x, y in dl:
        px = to_pixels(x)
        for im, label in zip(px, y.tolist()):
            b = im[..., 2][(im[..., 0] != FILL)]
            assert (b == 10 + 20 * label).all()
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) == sorted(lab.tolist())  # a permutation of the set


@pytest.mark.parametrize("mode,np_mode", [("constant", "constant"), ("reflect_101", "reflect"), (2, "symmetric"),
                                          ("replicate", "edge"), ("wrap", "wrap")])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_crop_flip_match_numpy_exactly(mode, np_mode, layout):
    dl, img, _ = loader(n=256, bs=128, cutout=0, pad_mode=mode, layout=layout)
    for x, y in dl:
        for im in to_pixels(x):
            # offsets from the centre pixel, which is always inside the image
            r, g = int(im[16, 16, 0]), int(im[16, 16, 1])
            flip = int(im[16, 17, 1]) < g
            dy = (r - 1) // 7 - 16 + 4
            dx = (g - 3) // 7 + 16 - 27 if flip else (g - 3) // 7 - 16 + 4
            src = img[np.nonzero(img[:, 0, 0, 2] == im[16, 16, 2])[0][0]]
            assert np.array_equal(im, reference(src, dy, dx, flip, np_mode))


def test_cutout_is_one_clipped_square_filled_with_the_mean():
    dl, img, _ = loader(n=512, bs=256, cutout_p=1.0)
    for x, _ in dl:
        for im in to_pixels(x):
            dy, dx, flip, hole = decode(im)
            ys, xs = np.nonzero(hole)
            assert len(ys) and ys.max() - ys.min() < 16 and xs.max() - xs.min() < 16
            ref = reference(img[0], dy, dx, flip)  # all images share R, G
            assert np.array_equal(im[~hole][:, :2], ref[~hole][:, :2])
            assert (im[hole] == FILL).all()


def test_statistics_match_the_albumentations_preset():
    # ours: 4096 images; theirs: 3000 through the train_transforms preset (same mean fill, p=0.5)
    dl, img, _ = loader(n=4096, bs=512, seed=3)
    ours = params_of([to_pixels(x) for x, _ in dl])
    tf = train_transforms(MEAN, STD, seed=1)
    theirs_px = [to_pixels(torch.stack([tf(image=im)["image"] for im in img[:3000]]))]
    theirs = params_of(theirs_px)
    for p in (ours, theirs):
        n = len(p["flip"])
        assert abs(p["flip"].mean() - 0.5) < 4 * math.sqrt(0.25 / n)
        for k in ("dy", "dx"):
            counts = np.bincount(p[k], minlength=9)
            assert counts.shape == (9,)
            chi2 = (((counts - n / 9) ** 2) / (n / 9)).sum()
            assert chi2 < 27.9  # chi-square, 8 dof, p = 0.0005
        assert abs(p["holes"].any((1, 2)).mean() - 0.5) < 0.05  # hole probability (p=0.5, some hide in padding)
    # hole area and where holes fall: per-row and per-column frequency profiles
    area_o, area_t = ours["holes"].sum((1, 2)), theirs["holes"].sum((1, 2))
    assert abs(area_o.mean() - area_t.mean()) < 8  # mean ~ 0.5 * (256 - overlap with padding)
    assert np.abs(np.bincount(area_o // 32, minlength=9)[:9] / len(area_o)
                  - np.bincount(area_t // 32, minlength=9)[:9] / len(area_t)).max() < 0.04
    freq_o, freq_t = ours["holes"].mean(0), theirs["holes"].mean(0)  # (H, W): P(pixel is in a hole)
    for axis in (0, 1):
        assert np.abs(freq_o.mean(axis) - freq_t.mean(axis)).max() < 0.05
    # joint (dy, dx, flip) independence: the flip rate does not depend on the offset
    for dx in range(9):
        sel = ours["dx"] == dx
        assert abs(ours["flip"][sel].mean() - 0.5) < 0.12


def test_seed_epoch_determinism():
    def epoch(dl):
        return [(x.clone(), y.clone()) for x, y in dl]

    a, _, _ = loader(n=300, bs=128, seed=7)
    b, _, _ = loader(n=300, bs=128, seed=7)
    e0a, e0b = epoch(a), epoch(b)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(e0a, e0b))
    e1 = epoch(a)  # a second pass is the next epoch: different order and augmentation
    assert not torch.equal(e0a[0][1], e1[0][1]) and not torch.equal(e0a[0][0], e1[0][0])
    b.set_epoch(1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(e1, epoch(b)))
    a.set_epoch(0)
    assert torch.equal(epoch(a)[1][0], e0a[1][0])
    c, _, _ = loader(n=300, bs=128, seed=8)
    assert not torch.equal(epoch(c)[0][0], e0a[0][0])
    torch.manual_seed(0)
    d1 = loader(n=300, bs=128, seed=None)[0]
    torch.manual_seed(0)
    d2 = loader(n=300, bs=128, seed=None)[0]
    assert d1.seed == d2.seed  # seed=None follows torch's global RNG (seed_everything covers it)


def test_layouts_storage_and_output_formats_agree():
    ref = [x for x, _ in loader(n=300, bs=128)[0]]
    for kw in ({"layout": "nhwc"}, {"channels_last": True}, {"layout": "nchw", "channels_last": True}):
        got = [x for x, _ in loader(n=300, bs=128, **kw)[0]]
        assert all(torch.equal(g, r) for g, r in zip(got, ref))
        assert got[0].is_contiguous(memory_format=torch.channels_last) == kw.get("channels_last", False)
    assert ref[0].is_contiguous()
    for storage, tol in ((torch.float16, 4e-3), (torch.bfloat16, 2e-2)):
        dl = loader(n=300, bs=128, storage=storage)[0]
        assert dl._images.dtype == storage  # kept normalised on the device
        got = [x for x, _ in dl]
        assert got[0].dtype == torch.float32
        assert all((g - r).abs().max() <= tol for g, r in zip(got, ref))
    out = [x for x, _ in loader(n=300, bs=128, dtype=torch.bfloat16)[0]]
    assert out[0].dtype == torch.bfloat16 and (out[0].float() - ref[0]).abs().max() <= 2e-2


def test_uint8_storage_shares_the_source_memory_on_cpu():
    img, lab = coded_images(100)
    dl = DeviceLoader((img, lab), 50, train=True, mean=MEAN, std=STD, seed=0, channels_last=True, device="cpu")
    assert dl.layout == "nhwc" and dl._images.data_ptr() == torch.from_numpy(img).data_ptr()  # no copy
    assert DeviceLoader((img, lab), 50, train=True, mean=MEAN, std=STD).layout == "nchw"  # auto: output's


def test_mean_std_default_to_the_data_and_errors_name_the_fix():
    img, lab = coded_images(64)
    dl = DeviceLoader((img, lab), 32, train=False)
    assert np.allclose(dl.mean, img.reshape(-1, 3).mean(0) / 255, atol=1e-4)
    with pytest.raises(TypeError, match="uint8"):
        DeviceLoader((img.astype(np.float32), lab), 32, train=True, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader((img, lab[:-1]), 32, train=True, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="pad_mode"):
        DeviceLoader((img, lab), 32, train=True, mean=MEAN, std=STD, pad_mode="mirror")
    with pytest.raises(ValueError, match="crop_pad"):
        DeviceLoader((img, lab), 32, train=True, mean=MEAN, std=STD, crop_pad=40)


def test_nchw_uint8_arrays_are_read_as_nchw_and_nhwc_stays_the_default():
    img, lab = coded_images(64)  # NHWC
    nchw = np.ascontiguousarray(img.transpose(0, 3, 1, 2))
    for train in (False, True):
        a = list(DeviceLoader((img, lab), 16, train=train, mean=MEAN, std=STD, seed=0))
        b = list(DeviceLoader((nchw, lab), 16, train=train, mean=MEAN, std=STD, seed=0))
        assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))
    assert DeviceLoader((nchw, lab), 16, train=False).image_shape == (3,) + img.shape[1:3]
    grey = np.ascontiguousarray(img[..., :1].transpose(0, 3, 1, 2))  # (N, 1, H, W)
    assert DeviceLoader((grey, lab), 16, train=False, mean=(0.5,), std=(0.25,)).image_shape == (1,) + img.shape[1:3]
    tiny = np.zeros((4, 3, 8, 3), np.uint8)  # either reading fits: NHWC wins (3x8 RGB images)
    assert DeviceLoader((tiny, np.zeros(4)), 2, train=False, mean=MEAN, std=STD, crop_pad=0, cutout=0).image_shape == (3, 3, 8)
    with pytest.raises(ValueError, match=r"\(4, 5, 8, 8\).*\(N, H, W, C\).*\(N, C, H, W\)"):
        DeviceLoader((np.zeros((4, 5, 8, 8), np.uint8), np.zeros(4)), 2, train=False, mean=MEAN, std=STD)
