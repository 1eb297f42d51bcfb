"""The one training engine: ``train_epoch`` and ``evaluate`` over any iterable of (images, labels).

    from woollylib.bp.engine import train_epoch, evaluate, make_scaler
    scaler = make_scaler(device, amp=True)               # fp16 on CUDA; None where not needed
    for epoch in range(epochs):
        stats = train_epoch(model, train_loader, optimizer, device=device, scheduler=sched,
                            amp=True, scaler=scaler, ricap_beta=0.3, label_smoothing=0.1,
                            grad_clip=1.0, epoch=epoch)  # {'loss', 'acc', 'lrs', 'samples'}
        test = evaluate(model, test_loader, device=device)  # {'loss', 'acc', 'samples'}

Switches, not copies: mixed precision (``amp``), RICAP (``ricap_beta``), label smoothing, an L1
penalty, gradient clipping and channels_last are options of the same loop. Losses are means per
sample; accuracies are percentages. Running sums live on the device and are read only every
``refresh_every`` batches (progress bar / non-finite check) and at the end of the epoch.

Mixed precision (``amp``): False = fp32; True = fp16 + GradScaler on CUDA, bf16 elsewhere;
"fp16" = fp16 + GradScaler on any device; "bf16" = bf16 autocast without scaler. With a
GradScaler, a step the scaler skipped (inf/NaN gradients) does not advance the learning-rate
scheduler; the engine reads the same inf/NaN flags the scaler's ``step`` reads, so the fp16 path
makes the one host sync per step that any GradScaler loop makes, and no other.

Schedulers: per-batch schedulers (OneCycleLR; see ``woollylib.scheduler.scheduler_steps_per_batch``)
are stepped here, never past their ``total_steps``; per-epoch ones (ReduceLROnPlateau) are left to
the caller (``woollylib.scheduler.step_epoch_scheduler(sched, test_loss)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import losses
from .ricap import _check_beta, ricap_batch, ricap_correct, ricap_loss

__all__ = [
    "AMP_MODES",
    "EngineConfig",
    "NonFiniteLossError",
    "amp_dtype",
    "evaluate",
    "make_scaler",
    "train_epoch",
]

AMP_MODES = (False, True, "fp16", "bf16")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf: ``epoch``, ``batch`` (0-based index in the epoch), ``lr``."""

    def __init__(self, epoch, batch: int, lr: float | None):
        super().__init__(epoch, batch, lr)
        self.epoch, self.batch, self.lr = epoch, batch, lr

    def __str__(self) -> str:
        where = f"epoch {self.epoch}, " if self.epoch is not None else ""
        return (f"non-finite loss at {where}batch {self.batch} (lr={self.lr:.4g}): lower the learning rate, "
                f"set grad_clip (e.g. 1.0), or turn fp16 amp off" if self.lr is not None else
                f"non-finite loss at {where}batch {self.batch}: lower the learning rate or set grad_clip")


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
    if amp not in AMP_MODES or (isinstance(amp, str) and amp not in ("fp16", "bf16")):
        raise ValueError(f"amp must be one of {AMP_MODES} (True picks fp16 on CUDA, bf16 elsewhere), got {amp!r}")
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
    device = _device(device)
    return torch.amp.GradScaler(device.type) if amp_dtype(amp, device) == torch.float16 else None


def _device(device) -> torch.device:
    if device is None or device == "auto":
        from ..device import resolve_device

        return resolve_device(device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'mps' or a torch.device") from exc


def _check_train_options(label_smoothing, l1, grad_clip, ricap_beta, refresh_every, criterion):
    if label_smoothing and criterion is not None:
        raise ValueError("pass either criterion= or label_smoothing=, not both "
                         "(build the criterion with bp.losses.cross_entropy(label_smoothing=...))")
    if isinstance(l1, bool) or not isinstance(l1, (int, float)) or l1 < 0:
        raise ValueError(f"l1 must be a number >= 0 (e.g. 1e-5; 0 turns it off), got {l1!r}")
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float))
                                  or not grad_clip > 0):
        raise ValueError(f"grad_clip must be None or a max gradient norm > 0 (e.g. 1.0), got {grad_clip!r}")
    if ricap_beta is not None and ricap_beta != 0:
        _check_beta(ricap_beta)
    if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
        raise ValueError(f"refresh_every must be an integer >= 1 (batches), got {refresh_every!r}")


def _unpack(batch, index: int, need_4d: bool = False):
    """Check one batch is an (images, labels) pair of tensors; return it."""
    if not isinstance(batch, (tuple, list)):
        raise TypeError(f"batch {index} is a {type(batch).__name__}; the loader must yield (images, labels) "
                        "pairs, e.g. DataLoader(TensorDataset(images, labels)) or woollylib.preloading loaders")
    if len(batch) != 2:
        raise ValueError(f"batch {index} has {len(batch)} items; the loader must yield exactly 2, "
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
        raise ValueError(f"batch {index}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not "
                         "match; expected images (B, ...) and labels (B,)")
    if need_4d and images.ndim != 4:
        raise ValueError(f"batch {index}: RICAP and channels_last need images (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"batch {index} is empty; drop empty batches from the loader")
    return images, labels


def _to_device(images, labels, device, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, dtype=torch.long, non_blocking=True)


def _found_inf(scaler, optimizer) -> bool | None:
    """Whether ``scaler.step(optimizer)`` is about to skip (inf/NaN gradients), after ``unscale_``.

    Reads the flags ``GradScaler.step`` itself reads, so the fp16 path costs one host sync per
    step, as a plain GradScaler loop does. None if this GradScaler keeps no such state.
    """
    state = getattr(scaler, "_per_optimizer_states", {}).get(id(optimizer), {})
    flags = state.get("found_inf_per_device")
    if not flags:
        return None
    return bool(sum(v.item() for v in flags.values()))


def _can_step(scheduler) -> bool:
    """False once a scheduler with ``total_steps`` (OneCycleLR) reached its last step."""
    total = getattr(scheduler, "total_steps", None)
    return total is None or scheduler.last_epoch < total - 1


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
    device = _device(device)
    _check_train_options(label_smoothing, l1, grad_clip, ricap_beta, refresh_every, criterion)
    dtype = amp_dtype(amp, device)
    if scaler is None and dtype == torch.float16:
        scaler = torch.amp.GradScaler(device.type)  # fresh each epoch: prefer make_scaler() once per run
    if scaler is not None and not scaler.is_enabled():
        scaler = None
    if criterion is None:
        criterion = losses.cross_entropy(label_smoothing)
    from ..scheduler import scheduler_steps_per_batch

    step_sched = scheduler is not None and scheduler_steps_per_batch(scheduler)
    use_ricap = bool(ricap_beta)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()

    # device-side running sums: [sum of loss * batch size, weighted correct count, first bad batch or -1]
    stats = torch.tensor([0.0, 0.0, -1.0], dtype=_acc_dtype(device), device=device)
    lrs: list[float] = []
    samples = 0
    scale = scaler.get_scale() if scaler is not None else None  # host float; no sync before 1st step
    bar = _make_bar(progress, loader, epoch, "train")
    last_read = (0.0, 0.0)

    def refresh(batches: int) -> None:
        nonlocal last_read
        loss_sum, correct, bad = stats.tolist()  # the only host read of the running sums
        if bad >= 0:
            if bar is not None:
                bar.close()
            raise NonFiniteLossError(epoch, int(bad), lrs[int(bad)])
        last_read = (loss_sum / samples, 100.0 * correct / samples)
        info = {"batch": batches, "loss": last_read[0], "acc": last_read[1], "lr": lrs[-1]}
        if bar is not None:
            bar.set_postfix(loss=f"{info['loss']:.4f}", acc=f"{info['acc']:.2f}", lr=f"{info['lr']:.3g}",
                            refresh=False)
        elif callable(progress):
            progress(info)

    try:
        index = -1
        for index, batch in enumerate(loader):
            images, labels = _unpack(batch, index, need_4d=use_ricap or channels_last)
            images, labels = _to_device(images, labels, device, False)
            if use_ricap:
                images, labels_k, weights = ricap_batch(images, labels, ricap_beta, generator)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch_size = images.shape[0]

            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                output = model(images)
                if use_ricap:
                    loss = ricap_loss(criterion, output, labels_k, weights)
                else:
                    loss = criterion(output, labels)
            total = loss + l1 * losses.l1_penalty(model) if l1 else loss

            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.zero_grad(set_to_none=True)
            skipped = False
            if scaler is not None:
                scaler.scale(total).backward()
                scaler.unscale_(optimizer)  # finds inf/NaN grads now (step would do it anyway)
                if grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                found = _found_inf(scaler, optimizer)  # the one host read step() makes too
                scaler.step(optimizer)  # re-reads the same flags with nothing queued: no extra wait
                scaler.update()
                if found is None:  # a GradScaler without per-optimizer state: ask the scale instead
                    new_scale = scaler.get_scale()
                    found, scale = new_scale < scale, new_scale  # it backs off only on a skipped step
                skipped = found
            else:
                total.backward()
                if grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
            if step_sched and not skipped and _can_step(scheduler):
                scheduler.step()

            with torch.no_grad():
                correct = (ricap_correct(output, labels_k, weights) if use_ricap
                           else (output.argmax(1) == labels).sum())
                bad = torch.where((stats[2] < 0) & ~torch.isfinite(total.detach()), float(index), stats[2])
                stats.copy_(torch.stack((stats[0] + loss.detach().to(stats.dtype) * batch_size,
                                         stats[1] + correct.to(stats.dtype), bad)))
            samples += batch_size
            if bar is not None:
                bar.update(1)
            if (index + 1) % refresh_every == 0:
                refresh(index + 1)
        if index < 0:
            raise ValueError("the loader yielded no batches; check the dataset size and batch_size/drop_last")
        refresh(index + 1)
    finally:
        if bar is not None:
            bar.close()
    return {"loss": last_read[0], "acc": last_read[1], "lrs": lrs, "samples": samples}


# --------------------------------------------------------------------------------- evaluate ---

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
    device = _device(device)
    dtype = amp_dtype(amp, device)
    criterion = criterion if criterion is not None else losses.cross_entropy()
    was_training = model.training
    model.eval()
    stats = torch.zeros(2, dtype=_acc_dtype(device), device=device)
    samples, index = 0, -1
    bar = _make_bar(progress, loader, None, "eval")
    try:
        for index, batch in enumerate(loader):
            images, labels = _unpack(batch, index, need_4d=channels_last or tta_flip)
            images, labels = _to_device(images, labels, device, channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                output = model(images)
                if tta_flip:
                    output = (output + model(images.flip(3))) / 2
                loss = criterion(output.float(), labels)
            batch_size = images.shape[0]
            stats += torch.stack((loss.to(stats.dtype) * batch_size, (output.argmax(1) == labels).sum().to(stats.dtype)))
            samples += batch_size
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if index < 0:
        raise ValueError("the loader yielded no batches; check the dataset size and batch_size/drop_last")
    loss_sum, correct = stats.tolist()
    return {"loss": loss_sum / samples, "acc": 100.0 * correct / samples, "samples": samples}
