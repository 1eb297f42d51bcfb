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
* horizontal flip with probability 1/2 (A.HorizontalFlip);
* with probability ``cutout_p`` one ``cutout`` x ``cutout`` hole (clipped to the image size) whose
  top-left corner is uniform over the positions that keep it fully inside the image, filled with the
  mean colour rounded to 0-255 (A.CoarseDropout(num_holes_range=(1, 1), hole_*_range=(16, 16))).
* Normalize(mean, std) at the very end.

Where the time goes: the set stays uint8 (150 MB for 50,000 CIFAR images; the numpy array is shared,
not copied, on the CPU). Every random number of an epoch is drawn at once on the CPU from
``torch.Generator`` seeded by (seed, epoch) and sent to the device in one copy per epoch, so a batch
needs no host sync. Each batch is sorted by (flip, x-offset): the rows (with the y-offset and the
vertical padding folded into the row index) come in with ONE index_select of contiguous rows, the
flips are one slice op, the x-crop is one slice copy per offset (at most 2*(2*crop_pad+1) ops per
batch, not per image), the holes are one index_put, the sort is undone with one index_select of
uint8 rows, and the only float pass is the final normalise (copy + multiply-add, vectorised along
rows). No per-image Python anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

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


class DeviceLoader:
    """Iterable of ``(images, labels)`` batches built on ``device`` from a dataset held there.

    source: an ImageSource (``.images`` uint8 (N, H, W, C), ``.labels``) or an ``(images, labels)`` pair.
    mean, std: per channel on the 0-1 scale (None: computed from the images, without a float copy).
    train: shuffle + augment (crop/flip/cutout); else the set in order, no augmentation.
    layout: storage layout on the device, "nhwc" (default; zero-copy from numpy on the CPU) or "nchw".
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
        layout: str = "nhwc",
    ) -> None:
        images, labels = (source.images, source.labels) if hasattr(source, "images") else source
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(
                f"images must be uint8 (N, H, W, C), got {images.dtype} {tuple(images.shape)}; "
                "convert with np.asarray(x * 255, np.uint8) or use preloading.from_arrays"
            )
        n, h, w, c = images.shape
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) to match the images, got {tuple(labels.shape)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"layout must be 'nhwc' or 'nchw', got {layout!r}")
        if storage not in (torch.uint8, torch.float16, torch.bfloat16):
            raise TypeError(f"storage must be torch.uint8, torch.float16 or torch.bfloat16, got {storage}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype (of the yielded images) must be a float dtype, got {dtype}")
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode must be one of {sorted(k for k in _PAD_MODES if isinstance(k, str))} "
                             f"or a cv2.BORDER_* int, got {pad_mode!r}")
        crop_pad, cutout = int(crop_pad), int(cutout)
        if not 0 <= crop_pad < min(h, w):
            raise ValueError(f"crop_pad must be in [0, {min(h, w) - 1}] for {h}x{w} images, got {crop_pad}")
        if cutout < 0 or not 0.0 <= cutout_p <= 1.0:
            raise ValueError(f"cutout must be >= 0 px and cutout_p in [0, 1], got {cutout}, {cutout_p}")
        if mean is None or std is None:
            from .stats import channel_stats  # DATA's helper: chunked, no float copy

            stats = channel_stats(images.numpy() if images.device.type == "cpu" else images.cpu().numpy(),
                                  verbose=False)
            mean = stats["mean"] if mean is None else mean
            std = stats["std"] if std is None else std
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise ValueError(f"mean and std need {c} values on the 0-1 scale, std > 0; got {mean}, {std}")

        self.device = resolve_device(device)
        self.batch_size, self.train = int(batch_size), bool(train)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.augment = self.train
        self.crop_pad = crop_pad if self.augment else 0
        self.pad_mode = _PAD_MODES[pad_mode]
        self.flip = bool(flip) and self.augment
        self.cutout = min(cutout, h, w) if (self.augment and cutout_p > 0) else 0  # A clips holes to the image
        self.cutout_p = float(cutout_p)
        self.channels_last, self.dtype, self.storage, self.layout = bool(channels_last), dtype, storage, layout
        self.dataset_size, self.image_shape = n, (c, h, w)
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self.epoch = 0

        # normalise: x_norm = x_pixel * scale + bias, with x_pixel in 0-255
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
        dev = self.device
        self._pad_fill = torch.tensor(pad_v, dtype=storage, device=dev)  # (C,)
        self._cut_fill = torch.tensor(cut_v, dtype=storage, device=dev)

        # ---- the set on the device, as rows: nhwc rows are (W*C) bytes, nchw rows are W bytes
        self._images = self._store(images, scale, bias)
        self._rows = self._images.view(n * (h if layout == "nhwc" else c * h), -1)
        self._labels = labels.to(device=dev, dtype=torch.int64)
        if self._scale is not None:  # per-element constants, tiled along a row (vectorisable)
            self._scale_c = torch.tensor(scale, device=dev)
            self._bias_c = torch.tensor(bias, device=dev)
            self._scale_row = self._scale_c.repeat(w)  # (W*C,) for channels_last output memory
            self._bias_row = self._bias_c.repeat(w)

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
        return n // b if self.drop_last else math.ceil(n / b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``: its order and augmentation depend only on (seed, epoch)."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return (f"DeviceLoader(n={self.dataset_size}, batch_size={self.batch_size}, train={self.train}, "
                f"device={self.device}, crop_pad={self.crop_pad}, pad_mode={self.pad_mode!r}, flip={self.flip}, "
                f"cutout={self.cutout}, cutout_p={self.cutout_p}, storage={self.storage}, layout={self.layout!r})")

    # ------------------------------------------------------------------------------------------------
    def _generator(self, epoch: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed & (2**63 - 1), epoch & (2**63 - 1)]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _plan(self, epoch: int) -> dict[str, Any]:
        """All indices of one epoch, drawn on the CPU at once, sent to the device in one go."""
        g = self._generator(epoch)
        n, bs = self.dataset_size, self.batch_size
        c, h, w = self.image_shape
        used = (n // bs) * bs if self.drop_last else n
        perm = torch.randperm(n, generator=g)[:used] if self.shuffle else torch.arange(used)
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
        rows_per = h if self.layout == "nhwc" else c * h
        y = _border_index(torch.arange(h)[None, :] + dy[order][:, None] - p, h, self.pad_mode)  # (used, H)
        if self.layout == "nhwc":
            rowid = img[:, None] * rows_per + y
        else:
            rowid = (img[:, None, None] * c + torch.arange(c)[None, :, None]) * h + y[:, None, :]
        plan["rowid"] = rowid.reshape(-1)
        if self.pad_mode == "constant" and p:
            off = torch.arange(h)[None, :] + dy[order][:, None] - p
            bad = ((off < 0) | (off >= h)).nonzero()  # (k, 2): sorted position, output row
            per_batch = torch.bincount(bad[:, 0] // bs, minlength=nb)
            plan["bad_off"] = [0, *torch.cumsum(per_batch, 0).tolist()]
            plan["bad_pos"] = bad[:, 0] - (bad[:, 0] // bs) * bs
            plan["bad_row"] = bad[:, 1]
        if self.cutout:
            cs = self.cutout
            app = torch.rand(used, generator=g) < self.cutout_p
            cy = torch.randint(0, h - cs + 1, (used,), generator=g)
            cx = torch.randint(0, w - cs + 1, (used,), generator=g)
            pos = app.nonzero().squeeze(1)  # positions with a hole (order-free: all draws are iid)
            plan["cut_off"] = [0, *torch.cumsum(torch.bincount(pos // bs, minlength=nb), 0).tolist()]
            plan["cut_pos"] = pos - (pos // bs) * bs
            plan["cut_y"] = cy[pos][:, None] + torch.arange(cs)[None, :]  # (k, cs)
            plan["cut_x"] = cx[pos][:, None] + torch.arange(cs)[None, :]
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
            if "rowid" in plan:
                x = self._augmented(plan, i, s, e)
            else:
                x = self._images.index_select(0, plan["img"][s:e]) if self.shuffle else self._images[s:e]
            yield self._finish(x), labels

    def _augmented(self, plan: dict[str, Any], i: int, s: int, e: int) -> torch.Tensor:
        c, h, w = self.image_shape
        b, p, nhwc = e - s, self.crop_pad, self.layout == "nhwc"
        shape = (b, h, w, c) if nhwc else (b, c, h, w)
        wdim = 2 if nhwc else 3
        t = self._rows.index_select(0, plan["rowid"][s * h * (1 if nhwc else c):e * h * (1 if nhwc else c)])
        t = t.view(shape)
        if "bad_off" in plan:  # constant padding: rows that fell outside the image
            a, z = plan["bad_off"][i], plan["bad_off"][i + 1]
            if z > a:
                pix = t if nhwc else t.permute(0, 2, 3, 1)  # (b, H, W, C) view
                pix[plan["bad_pos"][a:z], plan["bad_row"][a:z]] = self._pad_fill
        counts = plan["counts"][i]
        k_dx = 2 * p + 1
        n_plain = sum(counts[:k_dx])
        if n_plain < b:  # flipped images are the tail of the sorted batch
            t[n_plain:] = t[n_plain:].flip(wdim)
        if p:
            tp = torch.empty((b, h, w + 2 * p, c) if nhwc else (b, c, h, w + 2 * p), dtype=t.dtype, device=t.device)
            tp.narrow(wdim, p, w).copy_(t)
            if self.pad_mode == "constant":
                fill = self._pad_fill.view(1, 1, 1, c) if nhwc else self._pad_fill.view(1, c, 1, 1)
                tp.narrow(wdim, 0, p).copy_(fill.expand_as(tp.narrow(wdim, 0, p)))
                tp.narrow(wdim, w + p, p).copy_(fill.expand_as(tp.narrow(wdim, 0, p)))
            else:
                cols = _border_index(torch.arange(-p, 0), w, self.pad_mode).tolist()
                cols_r = _border_index(torch.arange(w, w + p), w, self.pad_mode).tolist()
                tp.narrow(wdim, 0, p).copy_(_cols(t, wdim, cols))
                tp.narrow(wdim, w + p, p).copy_(_cols(t, wdim, cols_r))
            x = torch.empty_like(t)
            j = 0
            for k, cnt in enumerate(counts):  # one slice copy per (flip, dx) run
                if cnt:
                    x[j:j + cnt] = tp[j:j + cnt].narrow(wdim, k % k_dx, w)
                    j += cnt
        else:
            x = t
        if self.cutout:
            a, z = plan["cut_off"][i], plan["cut_off"][i + 1]
            if z > a:
                pix = x if nhwc else x.permute(0, 2, 3, 1)
                pos = plan["cut_pos"][a:z]
                pix[pos[:, None, None], plan["cut_y"][a:z][:, :, None], plan["cut_x"][a:z][:, None, :]] = self._cut_fill
        return x.view(b, -1).index_select(0, plan["inv"][s:e]).view(shape)  # undo the sort

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
            rows.mul_(self._scale_row).add_(self._bias_row)
        else:
            out.view(b, c, h * w).mul_(self._scale_c[:, None]).add_(self._bias_c[:, None])
        return out if work == self.dtype else out.to(self.dtype, memory_format=fmt)


def _cols(t: torch.Tensor, dim: int, cols: list[int]) -> torch.Tensor:
    """Columns ``cols`` of t along dim, as contiguous-run slices where possible (a few columns)."""
    return torch.cat([t.narrow(dim, j, 1) for j in cols], dim=dim)
