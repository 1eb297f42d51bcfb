"""The one training engine: ``train_epoch`` and ``evaluate`` over any iterable of (images, labels).

    from woollylib.bp.engine import train_epoch, evaluate, make_scaler
    scaler = make_scaler(device, amp=True)               # fp16 on CUDA; None where not needed
    for epoch in range(epochs):
        stats = train_epoch(model, train_loader, optimizer, device=device, scheduler=sched,
                            amp=True, scaler=scaler, ricap_beta=0.3, label_smoothing=0.1,
                            grad_clip=1.0, epoch=epoch)  # {'loss', 'acc', 'lrs', 'samples'}
        test = evaluate(model, test_loader, device=device)  # {'loss', 'acc', 'samples'}

    images, labels = unpack_batch(batch, index)          # the engine's check of one batch

Switches, not copies: mixed precision (``amp``), RICAP (``ricap_beta``), label smoothing, an L1
penalty, gradient clipping and channels_last are options of the same loop. Losses are means per
sample; accuracies are percentages. Running sums live on the device and are read only every
``refresh_every`` batches (progress bar / non-finite check) and at the end of the epoch.

Mixed precision (``amp``): False = fp32; True = fp16 + GradScaler on CUDA, bf16 elsewhere;
"fp16" = fp16 + GradScaler on any device; "bf16" = bf16 autocast without scaler. With a
GradScaler, a step the scaler skipped (inf/NaN gradients: ``scaler.step`` does not call
``optimizer.step``) does not advance the learning-rate scheduler. The engine learns of it from an
optimizer step hook, so the fp16 path makes only the one host sync per step that
``GradScaler.step`` itself makes.

Schedulers: per-batch schedulers (OneCycleLR; see ``bp.schedule.scheduler_steps_per_batch``)
are stepped here, never past their ``total_steps``; per-epoch ones (ReduceLROnPlateau) are left to
the caller (``bp.schedule.step_epoch_scheduler(sched, test_loss)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .._checks import check_choice, check_int, check_non_negative, check_positive
from ..device import as_device, evaluating
from ..errors import DataError, NonFiniteLossError
from . import losses
from .mixing import check_beta, ricap_batch, ricap_correct, ricap_loss
from .schedule import can_step, scheduler_steps_per_batch

__all__ = [
    "AMP_MODES",
    "EngineConfig",
    "NonFiniteLossError",
    "amp_dtype",
    "as_device",
    "evaluate",
    "make_scaler",
    "train_epoch",
    "unpack_batch",
]

AMP_MODES = (False, True, "fp16", "bf16")


@dataclass
class EngineConfig:
    """The engine's switches, e.g. ``train_epoch(model, loader, opt, device=d, **cfg.kwargs())``."""

    amp: bool | str = False          # False | True | "fp16" | "bf16"
    ricap_beta: float | None = None  # None = off; 0.3 in the paper
    label_smoothing: float = 0.0     # torch's definition, in [0, 1)
    l1: float = 0.0                  # coefficient of sum |params| added to the loss
    grad_clip: float | None = None   # max global L2 norm of the gradients; None = off
    channels_last: bool = False      # NHWC memory format for model and images

    def kwargs(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------- options ---

def amp_dtype(amp, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = no autocast)."""
    check_choice("amp", amp, AMP_MODES, hint="True picks fp16 on CUDA, bf16 elsewhere")
    if amp is False:
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16" or device.type == "cuda":
        return torch.float16
    return torch.bfloat16


def make_scaler(device, amp) -> torch.amp.GradScaler | None:
    """A GradScaler when ``amp`` means fp16 on ``device``, else None. Create it once per run and
    pass it to every ``train_epoch`` (its scale carries over; checkpoint ``scaler.state_dict()``)."""
    device = as_device(device)
    return torch.amp.GradScaler(device.type) if amp_dtype(amp, device) == torch.float16 else None


def _check_train_options(label_smoothing, l1, grad_clip, ricap_beta, refresh_every, criterion):
    if label_smoothing and criterion is not None:
        raise ValueError("pass either criterion= or label_smoothing=, not both "
                         "(build the criterion with bp.losses.cross_entropy(label_smoothing=...))")
    check_non_negative("l1", l1, hint="e.g. 1e-5; 0 turns it off")
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip, hint="None = off, else a max gradient norm, e.g. 1.0")
    if ricap_beta is not None and ricap_beta != 0:
        check_beta(ricap_beta)
    check_int("refresh_every", refresh_every, hint="batches")


# ---------------------------------------------------------------------------------- batches ---

def unpack_batch(batch, index: int, need_4d: bool = False):
    """Check that batch number ``index`` is an (images, labels) pair of tensors; return it.

    Images must be float (B, ...) (``need_4d``: (B, C, H, W)), labels integer (B,), B >= 1; anything
    else raises a TypeError or ``DataError`` (a ValueError) saying what the loader must yield.
    """
    if not isinstance(batch, (tuple, list)):
        raise TypeError(f"batch {index} is a {type(batch).__name__}; the loader must yield (images, labels) "
                        "pairs, e.g. DataLoader(TensorDataset(images, labels)) or woollylib.preloading loaders")
    if len(batch) != 2:
        raise DataError(f"batch {index} has {len(batch)} items; the loader must yield exactly 2, "
                        "(images, labels): wrap it to drop the extra items")
    images, labels = batch
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"batch {index} holds ({type(images).__name__}, {type(labels).__name__}); "
                        "images and labels must be torch tensors (use torch.as_tensor / ToTensorV2)")
    if not images.is_floating_point():
        raise TypeError(f"batch {index}: images have dtype {images.dtype}; the engine needs float images, "
                        "normalised (e.g. with the transforms in woollylib.preloading)")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"batch {index}: labels have dtype {labels.dtype}; use integer class indices (int64)")
    if labels.ndim != 1 or images.ndim < 2 or labels.shape[0] != images.shape[0]:
        raise DataError(f"batch {index}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not "
                        "match; expected images (B, ...) and labels (B,)")
    if need_4d and images.ndim != 4:
        raise DataError(f"batch {index}: RICAP and channels_last need images (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise DataError(f"batch {index} is empty; drop empty batches from the loader")
    return images, labels


def _to_device(images, labels, device, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, dtype=torch.long, non_blocking=True)


def _no_batches() -> DataError:
    return DataError("the loader yielded no batches; check the dataset size and batch_size/drop_last")


def _acc_dtype(device):
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _make_bar(progress, loader, epoch, desc):
    if progress is not True:
        return None
    from tqdm.auto import tqdm

    total = len(loader) if hasattr(loader, "__len__") else None
    label = f"{desc} {epoch}" if epoch is not None else desc
    return tqdm(total=total, desc=label, leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------------------------ train ---

class _StepCounter:
    """Counts the optimizer's real steps: ``GradScaler.step`` skips ``optimizer.step`` on inf/NaN
    gradients, so no count means a skipped step, learnt without reading anything from the device."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.count = 0
        self._handle = optimizer.register_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


@dataclass
class _Step:
    """The fixed parts of one epoch's step: what to compute and how to apply the gradients."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    criterion: object
    dtype: torch.dtype | None            # autocast dtype, None = fp32
    scaler: torch.amp.GradScaler | None
    ricap_beta: float | None
    l1: float
    grad_clip: float | None
    channels_last: bool
    generator: object
    counter: _StepCounter | None = None  # real optimizer steps, with a scaler

    def batch(self, batch, index: int):
        """(images, labels, mix) on the device; mix = (labels_k, weights) under RICAP, else None."""
        images, labels = unpack_batch(batch, index, need_4d=bool(self.ricap_beta) or self.channels_last)
        images, labels = _to_device(images, labels, self.device, False)
        mix = None
        if self.ricap_beta:
            images, labels_k, weights = ricap_batch(images, labels, self.ricap_beta, self.generator)
            mix = (labels_k, weights)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels, mix

    def forward(self, images, labels, mix):
        """(logits, criterion loss, loss with the L1 term) under autocast."""
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            output = self.model(images)
            loss = ricap_loss(self.criterion, output, *mix) if mix is not None else self.criterion(output, labels)
        total = loss + self.l1 * losses.l1_penalty(self.model) if self.l1 else loss
        return output, loss, total

    def backward_and_step(self, total) -> bool:
        """Backward, clip, optimizer step; True if the scaler skipped the step (inf/NaN gradients)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            total.backward()
            self._clip()
            self.optimizer.step()
            return False
        before = self.counter.count
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (step would unscale anyway)
        self._clip()
        self.scaler.step(self.optimizer)      # reads the inf/NaN flags: the one host sync of the step
        self.scaler.update()
        return self.counter.count == before

    def _clip(self) -> None:
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)


@dataclass
class _Running:
    """One epoch's running sums on the device, read on the host only at refreshes."""

    stats: torch.Tensor  # [sum of loss * batch size, weighted correct count, first bad batch or -1]
    lrs: list = field(default_factory=list)
    samples: int = 0
    last: tuple = (0.0, 0.0)  # (loss, acc) at the last refresh

    @classmethod
    def on(cls, device) -> _Running:
        return cls(torch.tensor([0.0, 0.0, -1.0], dtype=_acc_dtype(device), device=device))

    @torch.no_grad()
    def add(self, index: int, output, labels, mix, loss, total) -> None:
        stats, batch_size = self.stats, output.shape[0]
        correct = ricap_correct(output, *mix) if mix is not None else (output.argmax(1) == labels).sum()
        bad = torch.where((stats[2] < 0) & ~torch.isfinite(total.detach()), float(index), stats[2])
        stats.copy_(torch.stack((stats[0] + loss.detach().to(stats.dtype) * batch_size,
                                 stats[1] + correct.to(stats.dtype), bad)))
        self.samples += batch_size

    def read(self, epoch) -> tuple[float, float]:
        """(mean loss, accuracy %) so far; raises NonFiniteLossError at the first bad batch."""
        loss_sum, correct, bad = self.stats.tolist()  # the only host read of the running sums
        if bad >= 0:
            raise NonFiniteLossError(epoch, int(bad), self.lrs[int(bad)])
        self.last = (loss_sum / self.samples, 100.0 * correct / self.samples)
        return self.last


def _report(progress, bar, batches: int, running: _Running) -> None:
    loss, acc = running.last
    info = {"batch": batches, "loss": loss, "acc": acc, "lr": running.lrs[-1]}
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.2f}", lr=f"{info['lr']:.3g}", refresh=False)
    elif callable(progress):
        progress(info)


def _epoch_step(model, optimizer, device, criterion, amp, scaler, ricap_beta, label_smoothing, l1,
                grad_clip, channels_last, generator) -> _Step:
    """The step of an epoch with these options: loss, precision, scaler, model memory format."""
    dtype = amp_dtype(amp, device)
    if scaler is None and dtype == torch.float16:
        scaler = torch.amp.GradScaler(device.type)  # fresh each epoch: prefer make_scaler() once per run
    if scaler is not None and not scaler.is_enabled():
        scaler = None
    if criterion is None:
        criterion = losses.cross_entropy(label_smoothing)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return _Step(model, optimizer, device, criterion, dtype, scaler, ricap_beta or None, l1, grad_clip,
                 channels_last, generator)


def train_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    *,
    device,
    criterion=None,
    scheduler=None,
    amp=False,
    scaler: torch.amp.GradScaler | None = None,
    ricap_beta: float | None = None,
    label_smoothing: float = 0.0,
    l1: float = 0.0,
    grad_clip: float | None = None,
    channels_last: bool = False,
    progress=True,
    epoch: int | None = None,
    refresh_every: int = 20,
    generator=None,
) -> dict:
    """Train ``model`` for one pass over ``loader``; return ``dict(loss, acc, lrs, samples)``.

    loss: mean criterion loss per sample (without the L1 term; RICAP: the mixed loss), acc: % of
    correct predictions (RICAP: area-weighted), lrs: learning rate of group 0 used at every step,
    samples: images seen. ``criterion(logits, labels)`` must return the batch mean; default
    cross-entropy with ``label_smoothing``. ``progress``: True = tqdm.auto bar, False = silent, a
    callable = called with ``dict(batch, loss, acc, lr)`` at every refresh. ``generator``: numpy
    Generator for RICAP draws. Raises :class:`NonFiniteLossError` (found at the next refresh).
    """
    device = as_device(device)
    _check_train_options(label_smoothing, l1, grad_clip, ricap_beta, refresh_every, criterion)
    step = _epoch_step(model, optimizer, device, criterion, amp, scaler, ricap_beta, label_smoothing, l1,
                       grad_clip, channels_last, generator)
    step_sched = scheduler_steps_per_batch(scheduler)
    model.train()
    running = _Running.on(device)
    bar = _make_bar(progress, loader, epoch, "train")
    step.counter = _StepCounter(optimizer) if step.scaler is not None else None
    try:
        index = -1
        for index, batch in enumerate(loader):
            images, labels, mix = step.batch(batch, index)
            output, loss, total = step.forward(images, labels, mix)
            running.lrs.append(float(optimizer.param_groups[0]["lr"]))
            skipped = step.backward_and_step(total)
            if step_sched and not skipped and can_step(scheduler):
                scheduler.step()
            running.add(index, output, labels, mix, loss, total)
            if bar is not None:
                bar.update(1)
            if (index + 1) % refresh_every == 0:
                running.read(epoch)
                _report(progress, bar, index + 1, running)
        if index < 0:
            raise _no_batches()
        running.read(epoch)
        _report(progress, bar, index + 1, running)
    finally:
        if step.counter is not None:
            step.counter.remove()
        if bar is not None:
            bar.close()
    loss, acc = running.last
    return {"loss": loss, "acc": acc, "lrs": running.lrs, "samples": running.samples}


# --------------------------------------------------------------------------------- evaluate ---

def _eval_sums(model, images, labels, criterion, dtype, tta_flip, sum_dtype) -> torch.Tensor:
    """[loss * batch size, correct count] of one batch in ``sum_dtype`` (TTA: mean logits of the
    image and its flip)."""
    with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        output = model(images)
        if tta_flip:
            output = (output + model(images.flip(3))) / 2
        loss = criterion(output.float(), labels)
    return torch.stack((loss.to(sum_dtype) * images.shape[0], (output.argmax(1) == labels).sum().to(sum_dtype)))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    device,
    criterion=None,
    amp=False,
    tta_flip: bool = False,
    channels_last: bool = False,
    progress=False,
) -> dict:
    """Mean loss per sample, accuracy (%) and sample count of ``model`` on ``loader``.

    ``criterion`` returns the batch mean (default plain cross-entropy); ``tta_flip`` averages the
    logits of the images and their horizontal flips. The model's train/eval mode is restored.
    """
    device = as_device(device)
    dtype = amp_dtype(amp, device)
    criterion = criterion if criterion is not None else losses.cross_entropy()
    stats = torch.zeros(2, dtype=_acc_dtype(device), device=device)
    samples, index = 0, -1
    bar = _make_bar(progress, loader, None, "eval")
    try:
        with evaluating(model):
            for index, batch in enumerate(loader):
                images, labels = unpack_batch(batch, index, need_4d=channels_last or tta_flip)
                images, labels = _to_device(images, labels, device, channels_last)
                stats += _eval_sums(model, images, labels, criterion, dtype, tta_flip, stats.dtype)
                samples += images.shape[0]
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if index < 0:
        raise _no_batches()
    loss_sum, correct = stats.tolist()
    return {"loss": loss_sum / samples, "acc": 100.0 * correct / samples, "samples": samples}
