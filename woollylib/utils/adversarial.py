"""Adversarial examples (FGSM, PGD) computed in pixel space, for a batch.

Usage::

    from woollylib.utils.adversarial import fgsm, pgd, attack_success_rate, evaluate_attack

    x_adv = fgsm(model, images, labels, epsilon=8 / 255, mean=data.mean, std=data.std)
    x_adv = pgd(model, images, labels, epsilon=8 / 255, mean=data.mean, std=data.std, steps=10)
    attack_success_rate(model, images, x_adv, labels)      # fraction of correct images now wrong
    evaluate_attack(model, data.test_loader, "pgd", 8 / 255, data.mean, data.std, max_batches=4)

Inputs and outputs are the *normalised* tensors the model eats; the attack itself runs on the
de-normalised pixels: ``epsilon`` and ``alpha`` are L-infinity budgets in pixel units of [0, 1]
(8/255 = eight grey levels), and the adversarial pixels are clipped to [0, 1]. ``mean``/``std``
``None`` means the images are already pixels in [0, 1]. The model is attacked in eval mode; its
mode, parameter gradients and ``requires_grad`` flags are restored, even under ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_finite, check_int, check_non_negative
from ..device import evaluating, model_device
from ..preloading.transforms import denormalize, normalize
from .gradcam.core import explain_mode

_Stats = Sequence[float] | torch.Tensor | None


def to_pixels(images: torch.Tensor, mean: _Stats, std: _Stats) -> torch.Tensor:
    """Normalised (B, C, H, W) -> pixel values (x * std + mean, not clipped), same device."""
    return denormalize(images, mean, std, clamp=False)


def to_normalised(pixels: torch.Tensor, mean: _Stats, std: _Stats) -> torch.Tensor:
    """Pixel values (B, C, H, W) -> normalised ((p - mean) / std), same device."""
    return normalize(pixels, mean, std)


def _check(images: torch.Tensor, labels: torch.Tensor, epsilon: float) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a (B, C, H, W) tensor of normalised inputs.")
    if len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images: give one per image.")
    check_finite("epsilon", epsilon, minimum=0, hint="an L-inf budget in pixel units of [0, 1], e.g. 8/255")


def _clean_pixels(model, images, labels, mean, std):
    """(device, labels on it, the clean images as pixels in [0, 1] on it)."""
    device = model_device(model)
    labels = torch.as_tensor(labels, device=device).long()
    return device, labels, to_pixels(images.detach().to(device).float(), mean, std).clamp(0, 1)


def _loss_grad(model, criterion, pixels, labels, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = pixels.detach().requires_grad_(True)
    loss = criterion(model(to_normalised(pixels, mean, std)), labels)
    (grad,) = torch.autograd.grad(loss, pixels)
    return grad, loss.detach()


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    mean: _Stats = None,
    std: _Stats = None,
    *,
    criterion=None,
) -> torch.Tensor:
    """Fast Gradient Sign Method: ``clip(x + epsilon * sign(grad_x loss), 0, 1)`` in pixel space.

    Returns the adversarial batch normalised with ``mean``/``std``, on the model's device.
    """
    _check(images, labels, epsilon)
    criterion = criterion or F.cross_entropy
    _, labels, clean = _clean_pixels(model, images, labels, mean, std)
    with explain_mode(model):
        grad, _ = _loss_grad(model, criterion, clean, labels, mean, std)
    adv = (clean + epsilon * grad.sign()).clamp(0, 1)
    return to_normalised(adv, mean, std).detach()


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    mean: _Stats = None,
    std: _Stats = None,
    *,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    criterion=None,
) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al.) in the L-inf ball of radius ``epsilon``.

    ``steps`` sign-gradient steps of size ``alpha`` (default ``2.5 * epsilon / steps``), each
    projected back into the ball around the clean pixels and into [0, 1]. ``random_start`` begins
    at a uniform point of the ball (drawn from ``generator``, on CPU, for reproducibility).
    Returns the adversarial batch normalised with ``mean``/``std``, on the model's device.
    """
    _check(images, labels, epsilon)
    check_int("steps", steps)
    alpha = 2.5 * epsilon / steps if alpha is None else alpha
    check_non_negative("alpha", alpha, hint="the pixel step size")
    criterion = criterion or F.cross_entropy
    device, labels, clean = _clean_pixels(model, images, labels, mean, std)
    adv = clean.clone()
    if random_start and epsilon > 0:
        noise = torch.rand(clean.shape, generator=generator).to(device) * 2 - 1
        adv = (clean + epsilon * noise).clamp(0, 1)
    with explain_mode(model):
        for _ in range(steps):
            grad, _ = _loss_grad(model, criterion, adv, labels, mean, std)
            adv = adv + alpha * grad.sign()
            adv = torch.min(torch.max(adv, clean - epsilon), clean + epsilon).clamp(0, 1)
    return to_normalised(adv, mean, std).detach()


ATTACKS = {"fgsm": fgsm, "pgd": pgd}


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with evaluating(model):
        return model(images.to(model_device(model))).argmax(1)


def attack_success_rate(
    model: nn.Module, clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor
) -> float:
    """Fraction (in [0, 1]) of the images the model got right that the attack makes it get wrong.

    Returns ``nan`` when the model got none of the clean images right.
    """
    labels = torch.as_tensor(labels, device=model_device(model)).long()
    correct = _predict(model, clean) == labels
    fooled = correct & (_predict(model, adversarial) != labels)
    n = int(correct.sum())
    return float(fooled.sum()) / n if n else float("nan")


def evaluate_attack(
    model: nn.Module,
    loader,
    attack: str = "fgsm",
    epsilon: float = 8 / 255,
    mean: _Stats = None,
    std: _Stats = None,
    *,
    max_batches: int | None = None,
    **attack_kw,
) -> dict:
    """Clean and adversarial accuracy (%) and success rate over (up to ``max_batches`` of) a loader.

    Returns ``dict(clean_acc, adv_acc, success_rate, samples, epsilon, attack)``.
    """
    if attack not in ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}.")
    fn = ATTACKS[attack]
    device = model_device(model)
    n = clean_ok = adv_ok = fooled = 0
    for i, (images, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        labels = labels.to(device)
        adv = fn(model, images, labels, epsilon, mean, std, **attack_kw)
        ok = _predict(model, images) == labels
        adv_hit = _predict(model, adv) == labels
        n += len(labels)
        clean_ok += int(ok.sum())
        adv_ok += int(adv_hit.sum())
        fooled += int((ok & ~adv_hit).sum())
    if n == 0:
        raise ValueError("the loader yielded no batches: nothing to attack.")
    return {
        "clean_acc": 100.0 * clean_ok / n,
        "adv_acc": 100.0 * adv_ok / n,
        "success_rate": fooled / clean_ok if clean_ok else float("nan"),
        "samples": n,
        "epsilon": float(epsilon),
        "attack": attack,
    }
