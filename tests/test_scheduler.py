"""Schedulers and the LR range test (woollylib.scheduler) against torch / torch-lr-finder oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau

from woollylib import scheduler
from woollylib.bp.engine import train_epoch
from woollylib.scheduler import (
    LRCurveTooShortError,
    find_lr,
    get_scheduler,
    one_cycle,
    scheduler_steps_per_batch,
    step_epoch_scheduler,
    suggest_lr,
)

torch.set_num_threads(1)


def batches(n_batches=5, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 12, generator=g)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 3, (batch,), generator=g)
        out.append((centers[y] + 0.5 * torch.randn(batch, 12, generator=g), y))
    return out


def model_(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


# ------------------------------------------------------------------------------ OneCycle ---

@pytest.mark.parametrize("knobs", [
    {"pct_start": 0.3, "anneal_strategy": "linear"},
    {"pct_start": 0.25, "anneal_strategy": "cos", "div_factor": 10.0, "final_div_factor": 100.0,
     "three_phase": True},
])
def test_one_cycle_driven_by_engine_matches_torch_and_never_steps_past_the_end(knobs):
    data, epochs = batches(5), 3
    model = model_()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = one_cycle(opt, max_lr=0.2, epochs=epochs, steps_per_epoch=len(data), **knobs)
    lrs = []
    for epoch in range(epochs):
        lrs += train_epoch(model, data, opt, device="cpu", scheduler=sched, progress=False, epoch=epoch)["lrs"]

    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9)
    ref = OneCycleLR(ref_opt, max_lr=0.2, epochs=epochs, steps_per_epoch=len(data), **knobs)
    expected = []
    for step in range(epochs * len(data)):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        if step < epochs * len(data) - 1:
            ref.step()
    assert lrs == pytest.approx(expected, rel=1e-12)
    div, final = knobs.get("div_factor", 25.0), knobs.get("final_div_factor", 1e4)
    assert expected[0] == pytest.approx(0.2 / div)
    assert expected[-1] == pytest.approx(0.2 / div / final)
    assert 0.15 < max(expected) <= 0.2 + 1e-12
    # one more epoch: no step past the end, the lr stays at its final (positive) value
    extra = train_epoch(model, data, opt, device="cpu", scheduler=sched, progress=False)["lrs"]
    assert extra == pytest.approx([expected[-1]] * len(data), rel=1e-12)
    assert sched.last_epoch == sched.total_steps - 1
    assert min(lrs + extra) > 0


def test_unguarded_torch_one_cycle_would_go_wrong():
    """The guard matters: torch raises when stepped past total_steps."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = OneCycleLR(opt, max_lr=0.1, total_steps=3)
    with pytest.raises(ValueError):
        for _ in range(4):
            opt.step()
            sched.step()


def test_one_cycle_momentum_only_when_the_optimizer_has_it():
    p = [nn.Parameter(torch.zeros(1))]
    assert one_cycle(torch.optim.SGD(p, lr=0.1, momentum=0.9), 0.1, 1, 10).cycle_momentum
    assert not one_cycle(torch.optim.SGD(p, lr=0.1), 0.1, 1, 10).cycle_momentum
    assert not one_cycle(torch.optim.Adagrad(p, lr=0.1), 0.1, 1, 10).cycle_momentum
    assert one_cycle(torch.optim.Adam(p, lr=0.1), 0.1, 1, 10).cycle_momentum


@pytest.mark.parametrize("kw, match", [
    ({"max_lr": 0}, "max_lr"),
    ({"epochs": 0}, "epochs"),
    ({"steps_per_epoch": 2.5}, "steps_per_epoch"),
    ({"pct_start": 1.0}, "pct_start"),
    ({"anneal_strategy": "exp"}, "anneal_strategy"),
    ({"div_factor": -1}, "div_factor"),
    ({"epochs": 1, "steps_per_epoch": 1}, "at least 2 steps"),
])
def test_one_cycle_bad_input(kw, match):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    args = {"max_lr": 0.1, "epochs": 2, "steps_per_epoch": 5, **kw}
    with pytest.raises(ValueError, match=match):
        one_cycle(opt, **args)


# ----------------------------------------------------------------- by name, per epoch ---

def test_get_scheduler_names_and_stepping_kind():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    oc = get_scheduler("onecycle", opt, max_lr=0.1, epochs=2, steps_per_epoch=4)
    assert isinstance(oc, OneCycleLR) and oc.total_steps == 8 and scheduler_steps_per_batch(oc)
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    pl = get_scheduler("plateau", opt2, max_lr=0.1, epochs=2, steps_per_epoch=4, patience=1)
    assert isinstance(pl, ReduceLROnPlateau) and not scheduler_steps_per_batch(pl)
    assert get_scheduler("none", opt2) is None and get_scheduler(None, opt2) is None
    assert not scheduler_steps_per_batch(None)
    assert scheduler.list_schedulers() == ["onecycle", "plateau", "none"]
    with pytest.raises(ValueError, match="known schedulers.*onecycle"):
        get_scheduler("cosine", opt2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        get_scheduler("onecycle", opt2, max_lr=0.1, epochs=2)


def test_plateau_is_stepped_per_epoch_on_the_test_loss_not_by_the_engine():
    model = model_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = scheduler.reduce_on_plateau(opt, factor=0.5, patience=1)
    lrs = train_epoch(model, batches(3), opt, device="cpu", scheduler=sched, progress=False)["lrs"]
    assert lrs == [0.1, 0.1, 0.1]                              # the engine leaves it alone
    for loss in (1.0, 0.9, 0.95, 0.95):                       # two epochs without improvement
        step_epoch_scheduler(sched, loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"validation \(or training\) loss"):
        step_epoch_scheduler(sched)
    step_epoch_scheduler(None, 1.0)                            # no-op


def test_plateau_bad_input():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for kw in ({"factor": 1.5}, {"mode": "up"}, {"patience": -1}):
        with pytest.raises(ValueError):
            scheduler.reduce_on_plateau(opt, **kw)


# ---------------------------------------------------------------------- LR range test ---

def test_find_lr_restores_weights_and_optimizer_state():
    data = batches(4)
    model = model_()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    train_epoch(model, data, opt, device="cpu", progress=False)  # non-empty momentum buffers, BN stats
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    momentum = {k: v["momentum_buffer"].clone() for k, v in opt_state["state"].items()}
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]

    result = find_lr(model, data, opt, start_lr=1e-5, end_lr=1.0, num_iter=30, verbose=False)

    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = opt.state_dict()
    assert after["param_groups"] == groups                    # lr, momentum, no 'initial_lr' left
    for k, v in after["state"].items():
        assert torch.equal(v["momentum_buffer"], momentum[k])
    assert not model.training                                  # mode restored
    assert len(result.lrs) == len(result.losses) == 30
    ratios = np.array(result.lrs[1:]) / np.array(result.lrs[:-1])
    assert np.allclose(ratios, ratios[0]) and ratios[0] > 1    # exponential steps
    assert result.lrs[0] == pytest.approx(1e-5)
    assert result.method == "minimum" and result.suggestion == result.lrs[result.index]
    # the optimizer is still usable for OneCycle afterwards
    one_cycle(opt, max_lr=result.suggestion, epochs=1, steps_per_epoch=4)


def test_find_lr_linear_mode_named_optimizer_and_steepest():
    model = model_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(model, batches(3), "adam", start_lr=1e-4, end_lr=0.1, num_iter=25, step_mode="linear",
                     suggestion="steepest", verbose=False)      # loader shorter than num_iter: restarted
    diffs = np.diff(result.lrs)
    assert np.allclose(diffs, diffs[0]) and diffs[0] > 0
    assert result.method == "steepest" and 10 <= result.index < 20
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_find_lr_refuses_an_optimizer_with_a_scheduler_attached():
    model = model_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    one_cycle(opt, max_lr=0.1, epochs=1, steps_per_epoch=5)
    with pytest.raises(ValueError, match="before building the scheduler"):
        find_lr(model, batches(2), opt, num_iter=10, verbose=False)


def test_too_short_curve_is_a_clear_error_and_model_still_restored():
    model = model_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LRCurveTooShortError, match="num_iter") as info:
        find_lr(model, batches(2), num_iter=12, suggestion="steepest", verbose=False)  # 12 - 10 - 5 < 3
    assert isinstance(info.value, ValueError) and len(info.value.lrs) == 12
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="fewer than 3"):
        suggest_lr([1e-3, 1e-2], [1.0, 0.5], "valley", skip_start=0, skip_end=0)


@pytest.mark.parametrize("kw, match", [
    ({"start_lr": 0}, "start_lr"),
    ({"start_lr": 1.0, "end_lr": 0.5}, "greater than start_lr"),
    ({"num_iter": 1}, "num_iter"),
    ({"step_mode": "cos"}, "step_mode"),
    ({"suggestion": "lowest"}, "suggestion method"),
    ({"smooth_f": 1.0}, "smooth_f"),
])
def test_find_lr_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        find_lr(model_(), batches(2), verbose=False, **kw)


def test_find_lr_rejects_bad_batches():
    with pytest.raises(TypeError, match="pairs"):
        find_lr(model_(), [torch.randn(8, 12)], num_iter=5, verbose=False)


# ------------------------------------------------------------------------- suggestions ---

def test_steepest_matches_torch_lr_finder_plot():
    import matplotlib

    matplotlib.use("Agg")
    from torch_lr_finder import LRFinder

    rng = np.random.default_rng(0)
    lrs = list(np.logspace(-6, 0, 60))
    losses = list(2.3 - 2 / (1 + np.exp(-(np.log10(lrs) + 3) * 2)) + 0.02 * rng.standard_normal(60))
    losses[-8:] = [v + 3 * i for i, v in enumerate(losses[-8:])]
    model = nn.Linear(2, 2)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-6), nn.CrossEntropyLoss())
    finder.history = {"lr": lrs, "loss": losses}
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()  # outside pyplot's registry: nothing leaks into other tests
    _, their_lr = finder.plot(skip_start=10, skip_end=5, suggest_lr=True, ax=ax)
    ours, index = suggest_lr(lrs, losses, "steepest")
    assert ours == their_lr and lrs[index] == ours


def test_valley_on_hand_computed_curves():
    # longest decreasing run 3 > 2.9 > 2.5 > 2 > 1.2 > 1.0 ends at 5 (length 6): fastai's start = 5 - 6,
    # sections = 6 / 3 = 2, index = -1 + 2 + int(1) = 2
    losses = [3, 2.9, 2.5, 2, 1.2, 1.0, 1.1, 3, 8]
    lrs = [10.0 ** (i - 8) for i in range(9)]
    assert suggest_lr(lrs, losses, "valley", skip_start=0, skip_end=0) == (lrs[2], 2)
    # the run need not be contiguous: 5 > 4 > 3 > 2 > 1 (indices 0,1,3,4,6) ends at 6 with length 5:
    # start = 1, sections = 5/3, index = 1 + 1 + int(0.83) = 2
    losses = [5, 4, 4.5, 3, 2, 2.2, 1, 6]
    assert suggest_lr(lrs[:8], losses, "valley", skip_start=0, skip_end=0)[1] == 2
    # skips shift the index back into the full curve
    noisy = [9, 9.5, 9.2] + [3, 2.9, 2.5, 2, 1.2, 1.0, 1.1, 3, 8]
    lrs12 = [10.0 ** (i - 11) for i in range(12)]
    assert suggest_lr(lrs12, noisy, "valley", skip_start=3, skip_end=0) == (lrs12[5], 5)
    # a curve that only rises never suggests past its start
    assert suggest_lr(lrs[:5], [1, 2, 3, 4, 5], "valley", skip_start=0, skip_end=0)[1] == 0
    assert suggest_lr(lrs[:4], [2, 1, 3, 4], "valley", skip_start=0, skip_end=0)[1] == 0  # fastai: -1


def test_suggest_lr_bad_input():
    with pytest.raises(ValueError, match="suggestion method"):
        suggest_lr([1, 2, 3], [1, 2, 3], "flat")
    with pytest.raises(ValueError, match="differ in length"):
        suggest_lr([1, 2, 3], [1, 2], "valley")
    assert math.isfinite(suggest_lr(list(range(1, 40)), list(range(40, 1, -1)), "valley")[0])
