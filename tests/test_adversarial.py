"""FGSM / PGD: pixel-space budget and range, loss goes up on a trained digits model, PGD >= FGSM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from woollylib.preloading import load_source
from woollylib.utils.adversarial import (
    attack_success_rate,
    evaluate_attack,
    fgsm,
    pgd,
    to_pixels,
)

MEAN, STD = (0.2, 0.2, 0.2), (0.3, 0.3, 0.3)  # pixel units


def digits_pixels(n: int = 600):
    """Real digits images (the embedded source) as float pixels (N, 3, 32, 32) in [0, 1] and labels."""
    src = load_source("digits", train=True)
    x = torch.from_numpy(src.images[:n]).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.as_tensor(np.asarray(src.labels[:n])).long()


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.layer2(self.layer1(x)).amax(dim=(2, 3)))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    pixels, labels = digits_pixels()
    x = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    model = SmallNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(12):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), labels[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == labels).float().mean().item()
    assert acc > 0.9, f"tiny digits model should fit its data, got {acc:.2f}"
    return model, x[:200], labels[:200]


def loss_of(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_fgsm_raises_loss_and_respects_budget_and_range(trained):
    model, x, y = trained
    eps = 8 / 255
    adv = fgsm(model, x, y, eps, MEAN, STD)
    assert adv.shape == x.shape and adv.dtype == torch.float32
    assert loss_of(model, adv, y) > loss_of(model, x, y) + 0.05
    clean_px, adv_px = to_pixels(x, MEAN, STD), to_pixels(adv, MEAN, STD)
    assert adv_px.min() >= -1e-6 and adv_px.max() <= 1 + 1e-6
    assert (adv_px - clean_px).abs().max() <= eps + 1e-5
    # FGSM moves each pixel by exactly eps (or 0 where the gradient is 0) unless clipped at 0 or 1
    moved = (adv_px - clean_px).abs()[(clean_px > eps) & (clean_px < 1 - eps)]
    assert ((moved - eps).abs() < 1e-5).float().mean() > 0.3
    assert (((moved - eps).abs() < 1e-5) | (moved < 1e-5)).all()
    # zero budget leaves the images alone
    torch.testing.assert_close(fgsm(model, x, y, 0.0, MEAN, STD), x, atol=1e-5, rtol=0)


def test_fgsm_matches_hand_computation(trained):
    model, x, y = trained
    eps = 0.05
    px = to_pixels(x, MEAN, STD).clamp(0, 1).requires_grad_(True)
    m, s = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    F.cross_entropy(model((px - m) / s), y).backward()
    expected = ((px + eps * px.grad.sign()).clamp(0, 1) - m) / s
    torch.testing.assert_close(fgsm(model, x, y, eps, MEAN, STD), expected.detach())


def test_pgd_at_least_as_strong_as_fgsm(trained):
    model, x, y = trained
    eps = 6 / 255
    adv_f = fgsm(model, x, y, eps, MEAN, STD)
    adv_p = pgd(model, x, y, eps, MEAN, STD, steps=10, generator=torch.Generator().manual_seed(0))
    assert loss_of(model, adv_p, y) >= loss_of(model, adv_f, y)
    rate_f = attack_success_rate(model, x, adv_f, y)
    rate_p = attack_success_rate(model, x, adv_p, y)
    assert 0 < rate_f <= rate_p <= 1
    px = to_pixels(adv_p, MEAN, STD)
    assert px.min() >= -1e-6 and px.max() <= 1 + 1e-6
    assert (px - to_pixels(x, MEAN, STD)).abs().max() <= eps + 1e-5


def test_success_rate_counts_only_correct_images(trained):
    model, x, y = trained
    with torch.no_grad():
        pred = model(x).argmax(1)
    wrong_labels = (pred + 1) % 10  # every clean image is "wrong" for these labels
    assert math.isnan(attack_success_rate(model, x, x, wrong_labels))
    assert attack_success_rate(model, x, x, y) == 0.0  # no perturbation fools nothing


def test_state_restored_and_works_under_no_grad(trained):
    model, x, y = trained
    model.train()
    model.head.bias.requires_grad_(False)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    try:
        with torch.no_grad():
            adv = pgd(model, x[:8], y[:8], 0.03, MEAN, STD, steps=2)
        assert model.training
        assert [p.requires_grad for p in model.parameters()] == [True] * 7 + [False]
        for p, g in zip(model.parameters(), grads):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g)
        assert not torch.equal(adv, x[:8])
    finally:
        model.eval()
        model.head.bias.requires_grad_(True)


def test_evaluate_attack_over_loader(trained):
    model, x, y = trained
    batches = list(zip(x.split(50), y.split(50)))
    res = evaluate_attack(model, batches, "fgsm", 8 / 255, MEAN, STD, max_batches=2)
    assert res["samples"] == 100 and res["adv_acc"] < res["clean_acc"]
    assert 0 < res["success_rate"] <= 1


def test_errors(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="epsilon must be"):
        fgsm(model, x, y, -0.1, MEAN, STD)
    with pytest.raises(ValueError, match="epsilon must be"):
        pgd(model, x, y, -1e-3, MEAN, STD)
    with pytest.raises(ValueError, match="one per image"):
        fgsm(model, x, y[:3], 0.1, MEAN, STD)
    with pytest.raises(ValueError, match="one per channel"):
        fgsm(model, x, y, 0.1, (0.5, 0.5), STD)
    with pytest.raises(ValueError, match="Unknown attack"):
        evaluate_attack(model, [], "cw")
