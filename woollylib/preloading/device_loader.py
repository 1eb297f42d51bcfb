"""DeviceLoader: the whole dataset on the device, augmented a whole batch at a time.

Usage::

    from woollylib.preloading import DeviceLoader, load_source, CIFAR10_MEAN, CIFAR10_STD

    src = load_source("cifar10", train=True)               # uint8 (N, 32, 32, 3)
    train = DeviceLoader(src, 512, train=True, mean=CIFAR10_MEAN, std=CIFAR10_STD, device="cuda", seed=0)
    for epoch in range(24):
        train.set_epoch(epoch)                              # randomness = f(seed, epoch): exact resume
        for images, labels in train:                        # float32 (512, 3, 32, 32) normalised, int64 (512,)
            ...
    test = DeviceLoader(test_src, 1000, train=False, mean=CIFAR10_MEAN, std=CIFAR10_STD, device="cuda")

A drop-in for the Albumentations DataLoader of ``make_loader`` with the training preset of
``train_transforms`` (same distributions, checked by tests/test_device_loader.py):

* pad ``crop_pad`` px on every side (``pad_mode``: "constant" filled with ``pad_fill`` = the mean colour
  rounded to 0-255, like the preset's PadIfNeeded(border_mode=cv2.BORDER_CONSTANT, fill=mean); or
  "reflect_101" (cv2.BORDER_REFLECT_101 = torch "reflect", airbench's choice), "reflect", "replicate",
  "wrap"; cv2 BORDER_* integers are accepted), then a crop back to H x W at an offset uniform over the
  (2*crop_pad+1)^2 positions (A.RandomCrop);
* horizontal flip with probability 1/2 (A.HorizontalFlip; done before the crop here: with a symmetric
  border, flip(crop(x, dx)) = crop(flip(x), 2*crop_pad - dx) and dx is uniform, so the distribution
  of (image, offset, flip) is the preset's);
* with probability ``cutout_p`` one ``cutout`` x ``cutout`` hole (clipped to the image size) whose
  top-left corner is uniform over the positions that keep it fully inside the image, filled with the
  mean colour rounded to 0-255 (A.CoarseDropout(num_holes_range=(1, 1), hole_*_range=(16, 16))).
* Normalize(mean, std) at the very end.

Where the time goes (and the bytes): the set stays uint8 (150 MB for 50,000 CIFAR images), stored
in the layout of the output (NHWC for channels_last: the numpy array itself on the CPU, no copy; else
NCHW: a transposing last pass costs more than all the rest). Every random number of an epoch is drawn
at once on the CPU from a ``torch.Generator`` seeded by (seed, epoch) and sent to the device in one
copy, so a batch needs no host sync. Each batch is sorted by (flip, x-offset) and then:
one index_select of contiguous rows (the y-offset and the vertical border folded into the row ids,
from a (2*crop_pad+1, rows) table); one flip of the flipped tail; a copy into a reused canvas whose
constant border was filled once; one slice copy per (flip, x-offset) run (at most 2*(2*crop_pad+1)
per batch, never per image); the holes written as runs of contiguous values through a sliding-window
view (one index_put); the sort undone by one index_select of uint8 images; and a single float pass,
copy + addcmul with constants tiled along the memory rows. About 2-3 us per image on one core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .._checks import check_choice, check_int, check_range
from ..device import resolve_device

__all__ = ["DeviceLoader"]

_PAD_MODES = {"constant": "constant", "reflect_101": "reflect_101", "reflect101": "reflect_101",
              "reflect": "reflect", "replicate": "replicate", "edge": "replicate", "wrap": "wrap",
              0: "constant", 1: "replicate", 2: "reflect", 3: "wrap", 4: "reflect_101"}  # ints: cv2.BORDER_*


def _border_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map coordinates i (any ints, |overshoot| < n) into [0, n) like cv2's border modes.
    For "constant" out-of-range coordinates are clamped (the caller overwrites them with the fill)."""
    if mode == "reflect_101":  # gfedcb|abcdefgh|gfedcba
        return torch.where(i < 0, -i, torch.where(i >= n, 2 * (n - 1) - i, i))
    if mode == "reflect":  # fedcba|abcdefgh|hgfedcb
        return torch.where(i < 0, -i - 1, torch.where(i >= n, 2 * n - 1 - i, i))
    if mode == "wrap":
        return i % n
    return i.clamp(0, n - 1)  # replicate, constant


def _pixel_fill(fill: Any, mean: tuple[float, ...], channels: int, what: str) -> tuple[float, ...]:
    """A fill value in 0-255 pixel units, one per channel; "mean" is the mean colour rounded (the preset's)."""
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"{what} must be 'mean', a number or a tuple of {channels} numbers (0-255), got {fill!r}")
        return tuple(float(round(m * 255.0)) for m in mean)
    vals = (float(fill),) * channels if isinstance(fill, (int, float)) else tuple(float(v) for v in fill)
    if len(vals) != channels:
        raise ValueError(f"{what} needs {channels} values (one per channel, 0-255), got {fill!r}")
    return vals


_CHANNELS = (1, 3)  # the channel counts that tell an image layout: grey or RGB


def _as_set(source: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, H, W, C), labels (N,)) as tensors from an ImageSource or a pair.

    NHWC is the reading; an array whose last dimension is not 1 or 3 but whose second is
    ((N, 3, H, W), (N, 1, H, W)) is NCHW and is read through a permuted view (no copy here)."""
    images, labels = (source.images, source.labels) if hasattr(source, "images") else source
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(
            f"images must be uint8 (N, H, W, C) or (N, C, H, W) with C = 1 or 3, got {images.dtype} "
            f"{tuple(images.shape)}; convert with np.asarray(x * 255, np.uint8) or use preloading.from_arrays"
        )
    if images.shape[-1] not in _CHANNELS and images.shape[1] in _CHANNELS:
        images = images.permute(0, 2, 3, 1)  # NCHW -> NHWC view
    elif images.shape[-1] not in _CHANNELS and images.shape[-1] > 4:
        raise ValueError(
            f"images of shape {tuple(images.shape)} have neither 1 or 3 channels last (N, H, W, C) nor second "
            "(N, C, H, W); pass uint8 images in one of those layouts, e.g. x.transpose(0, 2, 3, 1) for NCHW")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},) to match the images, got {tuple(labels.shape)}")
    return images, labels


def _mean_std(mean: Any, std: Any, images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0-1 scale; a missing one is computed from the images."""
    if mean is None or std is None:
        from .stats import channel_stats  # chunked: no float copy of the set

        stats = channel_stats(images.numpy() if images.device.type == "cpu" else images.cpu().numpy(),
                              verbose=False)
        mean = stats["mean"] if mean is None else mean
        std = stats["std"] if std is None else std
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    c = images.shape[-1]
    if len(mean) != c or len(std) != c or min(std) <= 0:
        raise ValueError(f"mean and std need {c} values on the 0-1 scale, std > 0; got {mean}, {std}")
    return mean, std


class DeviceLoader:
    """Iterable of ``(images, labels)`` batches built on ``device`` from a dataset held there.

    source: an ImageSource (``.images`` uint8 (N, H, W, C), ``.labels``) or an ``(images, labels)`` pair;
        uint8 (N, C, H, W) arrays with C = 1 or 3 are read as NCHW (NHWC wins when both could be).
    mean, std: per channel on the 0-1 scale (None: computed from the images, without a float copy).
    train: shuffle + augment (crop/flip/cutout); else the set in order, no augmentation.
    layout: storage layout on the device: "nhwc" (zero-copy from numpy on the CPU), "nchw", or "auto"
        (default: the layout of the output, nhwc for channels_last, else nchw; a transposing last pass
        costs more than the rest of the pipeline on a CPU).
    storage: torch.uint8 (default) or torch.float16 / torch.bfloat16 to keep the set normalised.
    dtype: dtype of the yielded images (float32; float16/bfloat16 for a GPU with amp).
    channels_last: yield images in channels_last memory format (free with "nhwc" storage).
    seed: None draws one from torch's global RNG at construction (so ``seed_everything`` covers it).
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        train: bool,
        mean: Any = None,
        std: Any = None,
        *,
        device: str | torch.device | None = None,  # None/"auto": cuda > mps > cpu
        crop_pad: int = 4,  # px of padding per side; 0: no crop
        pad_mode: str | int = "constant",  # see module docstring; the preset pads with the mean colour
        pad_fill: Any = "mean",  # 0-255, for pad_mode="constant"
        flip: bool = True,
        cutout: int = 16,  # hole side, px; 0: no cutout
        cutout_p: float = 0.5,  # probability of a hole per image (the preset's CoarseDropout p)
        cutout_fill: Any = "mean",  # 0-255
        seed: int | None = None,
        shuffle: bool | None = None,  # default: train
        drop_last: bool | None = None,  # default: train
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        storage: torch.dtype = torch.uint8,
        layout: str = "auto",
    ) -> None:
        images, labels = _as_set(source)
        n, h, w, c = images.shape
        check_int("batch_size", batch_size)
        check_choice("layout", layout, ("auto", "nhwc", "nchw"))
        if layout == "auto":  # the layout of the output memory: the last pass then needs no transpose
            layout = "nhwc" if channels_last else "nchw"
        if storage not in (torch.uint8, torch.float16, torch.bfloat16):
            raise TypeError(f"storage must be torch.uint8, torch.float16 or torch.bfloat16, got {storage}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype (of the yielded images) must be a float dtype, got {dtype}")
        self.mean, self.std = _mean_std(mean, std, images)
        self.device = resolve_device(device)
        self.batch_size, self.train = int(batch_size), bool(train)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.augment = self.train
        self._set_augmentation(crop_pad, pad_mode, flip, cutout, cutout_p, (h, w))
        self.channels_last, self.dtype, self.storage, self.layout = bool(channels_last), dtype, storage, layout
        self.dataset_size, self.image_shape = n, (c, h, w)
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self.epoch = 0
        self.shard: tuple[int, int, bool] | None = None  # (rank, world size, train): set by preloading.shard
        self._scratch: dict[str, dict[str, torch.Tensor]] = {}  # per-batch-size work buffers
        scale, bias = self._set_constants(pad_fill, cutout_fill)
        self._images = self._store(images, scale, bias)  # the set on the device, as rows: nhwc rows
        self._rows = self._images.view(n * (h if layout == "nhwc" else c * h), -1)  # are W*C, nchw W
        self._labels = labels.to(device=self.device, dtype=torch.int64)

    # ------------------------------------------------------------------------------------------------
    def _set_augmentation(self, crop_pad, pad_mode, flip, cutout, cutout_p, size) -> None:
        """Check and keep the crop/flip/cutout options (all off for an evaluation loader)."""
        h, w = size
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode must be one of {sorted(k for k in _PAD_MODES if isinstance(k, str))} "
                             f"or a cv2.BORDER_* int, got {pad_mode!r}")
        crop_pad, cutout = int(crop_pad), int(cutout)
        if not 0 <= crop_pad < min(h, w):
            raise ValueError(f"crop_pad must be in [0, {min(h, w) - 1}] for {h}x{w} images, got {crop_pad}")
        check_int("cutout", cutout, minimum=0, hint="hole side in px; 0 turns it off")
        check_range("cutout_p", cutout_p, 0, 1, closed="[]", hint="probability of a hole per image")
        self.crop_pad = crop_pad if self.augment else 0
        self.pad_mode = _PAD_MODES[pad_mode]
        self.flip = bool(flip) and self.augment
        self.cutout = min(cutout, h, w) if (self.augment and cutout_p > 0) else 0  # A clips holes to the image
        self.cutout_p = float(cutout_p)

    def _set_constants(self, pad_fill, cutout_fill) -> tuple[list[float], list[float]]:
        """Fill values, normalisation constants and the row table on the device; (scale, bias) of
        x_norm = x_pixel * scale + bias with x_pixel in 0-255."""
        c, h, w = self.image_shape
        dev, storage = self.device, self.storage
        scale = [1.0 / (255.0 * s) for s in self.std]
        bias = [-m / s for m, s in zip(self.mean, self.std)]
        pad_px = _pixel_fill(pad_fill, self.mean, c, "pad_fill")
        cut_px = _pixel_fill(cutout_fill, self.mean, c, "cutout_fill")
        if storage == torch.uint8:
            pad_v, cut_v = pad_px, cut_px
            self._scale, self._bias = scale, bias
        else:  # stored normalised: fills are normalised too, the last step is a cast
            pad_v = tuple(p * s + b for p, s, b in zip(pad_px, scale, bias))
            cut_v = tuple(p * s + b for p, s, b in zip(cut_px, scale, bias))
            self._scale = self._bias = None
        self._pad_fill = torch.tensor(pad_v, dtype=storage, device=dev)  # (C,)
        self._cut_fill = torch.tensor(cut_v, dtype=storage, device=dev)
        self._pad_row = self._pad_fill.repeat(w)  # one nhwc row of padding (W*C,)
        self._cut_run = self._cut_fill.repeat(max(self.cutout, 1))  # one nhwc hole row (cutout*C,)
        # rows of an output image for each y-offset dy in [0, 2p]: (2p+1, H) or (2p+1, C*H) for nchw
        ytab = _border_index(torch.arange(h)[None, :] + torch.arange(2 * self.crop_pad + 1)[:, None]
                             - self.crop_pad, h, self.pad_mode)
        if self.layout == "nchw":
            ytab = (torch.arange(c)[None, :, None] * h + ytab[:, None, :]).reshape(len(ytab), c * h)
        self._rowtab = ytab.to(dev)
        if self._scale is not None:  # per-element constants, tiled along a row (vectorisable)
            self._scale_c = torch.tensor(scale, device=dev)
            self._bias_c = torch.tensor(bias, device=dev)
            self._scale_row = self._scale_c.repeat(w)  # (W*C,) for channels_last output memory
            self._bias_row = self._bias_c.repeat(w)
            self._scale_plane = self._scale_c[:, None].expand(c, h * w).contiguous()  # (C, H*W): a broadcast
            self._bias_plane = self._bias_c[:, None].expand(c, h * w).contiguous()  # of (C, 1) is 4x slower
        return scale, bias

    # ------------------------------------------------------------------------------------------------
    def _store(self, images: torch.Tensor, scale: list[float], bias: list[float]) -> torch.Tensor:
        """The set on the device in its storage layout/dtype; normalised storage is built in chunks."""
        dev = self.device
        if self.storage == torch.uint8:
            x = images if self.layout == "nhwc" else images.permute(0, 3, 1, 2)
            if dev.type == "cpu":
                return x.contiguous()  # no copy when it already is (shares the source's memory)
            return x.to(dev).contiguous()  # permute on the device, not on the host
        n, h, w, c = images.shape
        shape = (n, h, w, c) if self.layout == "nhwc" else (n, c, h, w)
        out = torch.empty(shape, dtype=self.storage, device=dev)
        s = torch.tensor(scale, device=dev)
        b = torch.tensor(bias, device=dev)
        for i in range(0, n, 4096):  # 4096 images: ~50 MB of float32 at a time, never the whole set
            chunk = images[i:i + 4096].to(dev).float().mul_(s).add_(b)
            out[i:i + 4096] = chunk if self.layout == "nhwc" else chunk.permute(0, 3, 1, 2)
        return out

    def __len__(self) -> int:
        n, b = self.dataset_size, self.batch_size
        if self.shard is not None:
            return math.ceil(len(self._shard_positions()) / b)
        return n // b if self.drop_last else math.ceil(n / b)

    def _shard_positions(self) -> torch.Tensor:
        """Positions of this rank's items in the one-process order of an epoch (see preloading.shard)."""
        from .loaders import shard_positions

        rank, world, train = self.shard
        return torch.from_numpy(shard_positions(self.dataset_size, self.batch_size, rank, world, self.drop_last, train))

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``: its order and augmentation depend only on (seed, epoch)."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return (f"DeviceLoader(n={self.dataset_size}, batch_size={self.batch_size}, train={self.train}, "
                f"device={self.device}, crop_pad={self.crop_pad}, pad_mode={self.pad_mode!r}, flip={self.flip}, "
                f"cutout={self.cutout}, cutout_p={self.cutout_p}, storage={self.storage}, layout={self.layout!r})")

    # ------------------------------------------------------------------------------------------------
    def _generator(self, epoch: int, *more: int) -> torch.Generator:
        keys = [self.seed & (2**63 - 1), epoch & (2**63 - 1), *more]
        state = np.random.SeedSequence(keys).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _plan(self, epoch: int) -> dict[str, Any]:
        """All indices of one epoch, drawn on the CPU at once, sent to the device in one go."""
        g = self._generator(epoch)
        n, bs = self.dataset_size, self.batch_size
        c, h, w = self.image_shape
        used = (n // bs) * bs if self.drop_last else n
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        perm = order[:used]
        if self.shard is not None:  # this rank's share of the one-process order; its own augmentation draws
            perm = order[self._shard_positions()]
            used = len(perm)
            if self.shard[0]:
                g = self._generator(epoch, self.shard[0])
        nb = len(self)
        plan: dict[str, Any] = {"nb": nb, "used": used}
        p = self.crop_pad
        k_dx = 2 * p + 1
        if not (self.augment and (p or self.flip or self.cutout)):
            plan["img"] = perm
            plan["labels_idx"] = perm
            return self._to_device(plan)
        # iid draws per position; the same stream order whatever the options
        dy = torch.randint(0, k_dx, (used,), generator=g)
        dx = torch.randint(0, k_dx, (used,), generator=g)
        fl = torch.randint(0, 2, (used,), generator=g) if self.flip else torch.zeros(used, dtype=torch.int64)
        # sort each batch by (flip, dx): those become contiguous runs handled by slice ops
        batch = torch.arange(used) // bs
        key = fl * k_dx + dx
        order = torch.argsort(batch * (2 * k_dx) + key, stable=True)
        counts = torch.bincount(batch * (2 * k_dx) + key, minlength=nb * 2 * k_dx).view(nb, 2 * k_dx)
        plan["counts"] = counts.tolist()  # CPU: no device sync
        inv = torch.empty(used, dtype=torch.int64)
        inv[order] = torch.arange(used)
        plan["inv"] = inv - batch * bs  # output position j <- sorted position inv[j] within the batch
        img = perm[order]
        plan["img"], plan["labels_idx"] = img, perm
        nhwc = self.layout == "nhwc"
        plan["dy"] = dy[order]  # row ids are built per batch from the (2p+1, rows) table: small tensors
        local = torch.arange(used) - batch * bs  # sorted position within its batch
        if self.pad_mode == "constant" and p:  # rows that fall in the padding: overwritten with the fill
            d = plan["dy"] - p  # < 0: the top -d rows are padding; > 0: the bottom d rows
            nbad = d.abs()
            q = torch.repeat_interleave(torch.arange(used), nbad)  # one entry per padding row
            k = torch.arange(len(q)) - torch.repeat_interleave(torch.cumsum(nbad, 0) - nbad, nbad)
            yb = torch.where(d[q] < 0, k, h - 1 - k)
            plan["bad_off"] = _offsets(q // bs, nb, 1 if nhwc else c)
            if nhwc:
                plan["bad_rows"] = local[q] * h + yb
            else:
                ch = torch.arange(c)[None, :]
                plan["bad_rows"] = ((local[q][:, None] * c + ch) * h + yb[:, None]).reshape(-1)
                plan["bad_ch"] = ch.expand(len(q), c).reshape(-1)
        if self.cutout:  # holes as runs of contiguous values: cs rows (x C planes) per hole
            cs = self.cutout
            app = torch.rand(used, generator=g) < self.cutout_p
            cy = torch.randint(0, h - cs + 1, (used,), generator=g)
            cx = torch.randint(0, w - cs + 1, (used,), generator=g)
            q = app.nonzero().squeeze(1)  # positions with a hole (any positions: all draws are iid)
            r = torch.arange(cs)[None, :]
            if nhwc:  # start of each run in the flat (b, H, W, C) batch; runs of cs*C values
                starts = local[q][:, None] * (h * w * c) + (cy[q][:, None] + r) * (w * c) + cx[q][:, None] * c
            else:  # flat (b, C, H, W) batch; runs of cs values, one per (channel, row)
                starts = (local[q][:, None, None] * (c * h * w) + torch.arange(c)[None, :, None] * (h * w)
                          + (cy[q][:, None, None] + r[:, None, :]) * w + cx[q][:, None, None])
            plan["cut_off"] = _offsets(q // bs, nb, cs * (1 if nhwc else c))
            plan["cut_starts"] = starts.reshape(-1)
        return self._to_device(plan)

    def _to_device(self, plan: dict[str, Any]) -> dict[str, Any]:
        dev = self.device
        if dev.type == "cpu":
            return plan
        for k, v in plan.items():
            if isinstance(v, torch.Tensor):
                plan[k] = v.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else v.to(dev)
        return plan

    # ------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1  # without set_epoch, successive passes are successive epochs
        plan = self._plan(epoch)
        bs, used = self.batch_size, plan["used"]
        for i in range(plan["nb"]):
            s, e = i * bs, min((i + 1) * bs, used)
            labels = self._labels.index_select(0, plan["labels_idx"][s:e])
            if "dy" in plan:
                x = self._augmented(plan, i, s, e)
            else:
                x = self._images.index_select(0, plan["img"][s:e]) if (self.shuffle or self.shard) \
                    else self._images[s:e]
            yield self._finish(x), labels

    def _buffers(self, b: int) -> dict[str, torch.Tensor]:
        """Scratch tensors for a batch of b (internal only; never yielded). Constant padding is filled once."""
        key = f"b{b}"
        if key not in self._scratch:
            c, h, w = self.image_shape
            p, nhwc = self.crop_pad, self.layout == "nhwc"
            kw = {"dtype": self.storage, "device": self.device}
            shape = (b, h, w, c) if nhwc else (b, c, h, w)
            bufs = {"x": torch.empty(shape, **kw), "u": torch.empty(shape, **kw)}
            if p:
                tp = torch.empty((b, h, w + 2 * p, c) if nhwc else (b, c, h, w + 2 * p), **kw)
                if self.pad_mode == "constant":
                    tp.copy_((self._pad_fill.view(1, 1, 1, c) if nhwc else self._pad_fill.view(1, c, 1, 1)).expand_as(tp))
                bufs["tp"] = tp
            self._scratch[key] = bufs
        return self._scratch[key]

    def _augmented(self, plan: dict[str, Any], i: int, s: int, e: int) -> torch.Tensor:
        c, h, w = self.image_shape
        b, p, nhwc = e - s, self.crop_pad, self.layout == "nhwc"
        shape = (b, h, w, c) if nhwc else (b, c, h, w)
        wdim = 2 if nhwc else 3
        bufs = self._buffers(b)
        rows_per = h if nhwc else c * h
        # row ids: image * rows_per + table[dy] (the y-offset and the vertical border folded in)
        rowid = self._rowtab.index_select(0, plan["dy"][s:e]).add_((plan["img"][s:e] * rows_per).view(b, 1))
        t = self._rows.index_select(0, rowid.view(-1))  # (b*rows, row length): contiguous rows
        if "bad_off" in plan:  # constant padding: rows that fell outside the image get the fill
            a, z = plan["bad_off"][i], plan["bad_off"][i + 1]
            if z > a:
                vals = self._pad_row if nhwc else self._pad_fill[plan["bad_ch"][a:z]][:, None]
                t.index_put_((plan["bad_rows"][a:z],), vals)
        t = t.view(shape)
        counts = plan["counts"][i]
        k_dx = 2 * p + 1
        n_plain = sum(counts[:k_dx])
        if n_plain < b:  # flipped images are the tail of the sorted batch
            t[n_plain:] = t[n_plain:].flip(wdim)
        if p:
            tp = bufs["tp"]
            tp.narrow(wdim, p, w).copy_(t)
            if self.pad_mode != "constant":  # (constant: the border was filled once, never written)
                cols = _border_index(torch.arange(-p, 0), w, self.pad_mode).tolist()
                cols_r = _border_index(torch.arange(w, w + p), w, self.pad_mode).tolist()
                tp.narrow(wdim, 0, p).copy_(_cols(t, wdim, cols))
                tp.narrow(wdim, w + p, p).copy_(_cols(t, wdim, cols_r))
            x = bufs["x"]
            j = 0
            for k, cnt in enumerate(counts):  # one slice copy per (flip, dx) run
                if cnt:
                    x[j:j + cnt] = tp[j:j + cnt].narrow(wdim, k % k_dx, w)
                    j += cnt
        else:
            x = t
        if self.cutout:
            a, z = plan["cut_off"][i], plan["cut_off"][i + 1]
            if z > a:  # every hole row is a run of values: write them through a sliding-window view
                run = self.cutout * (c if nhwc else 1)
                flat = x.view(-1)
                win = flat.as_strided((flat.numel() - run + 1, run), (1, 1))
                vals = self._cut_run if nhwc else self._cut_fill.view(1, c, 1).expand(
                    (z - a) // (c * self.cutout), c, self.cutout).reshape(-1, 1)
                win.index_put_((plan["cut_starts"][a:z],), vals)
        u = bufs["u"]
        torch.index_select(x.view(b, -1), 0, plan["inv"][s:e], out=u.view(b, -1))  # undo the sort
        return u

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Storage batch -> normalised float (B, C, H, W) in the requested memory format; one float pass."""
        c, h, w = self.image_shape
        b = x.shape[0]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        # uint8 -> float32 arithmetic (one rounding at the end for a 16-bit output dtype)
        work = self.dtype if (self._scale is None or self.dtype == torch.float64) else torch.float32
        out = torch.empty((b, c, h, w), dtype=work, device=x.device, memory_format=fmt)
        out.copy_(x if self.layout == "nchw" else x.permute(0, 3, 1, 2))
        if self._scale is None:
            return out
        if self.channels_last:  # memory is (B, H, W, C): multiply-add along rows of W*C (vectorised)
            rows = out.permute(0, 2, 3, 1).view(b * h, w * c)
            torch.addcmul(self._bias_row, rows, self._scale_row, out=rows)
        else:
            planes = out.view(b, c, h * w)
            torch.addcmul(self._bias_plane, planes, self._scale_plane, out=planes)
        return out if work == self.dtype else out.to(self.dtype, memory_format=fmt)


def _offsets(batch_of_item: torch.Tensor, nb: int, per_item: int) -> list[int]:
    """Start of each batch's items in a flat per-epoch array (items sorted by batch), times per_item."""
    counts = torch.bincount(batch_of_item, minlength=nb) * per_item
    return [0, *torch.cumsum(counts, 0).tolist()]


def _cols(t: torch.Tensor, dim: int, cols: list[int]) -> torch.Tensor:
    """Columns ``cols`` of t along dim, as contiguous-run slices where possible (a few columns)."""
    return torch.cat([t.narrow(dim, j, 1) for j in cols], dim=dim)
