"""The one training engine (woollylib.bp): oracles for losses, RICAP, AMP skip rule, NaN stop, syncs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from woollylib import bp
from woollylib.bp import engine, losses, ricap
from woollylib.bp.engine import NonFiniteLossError, evaluate, train_epoch
from woollylib.bp.optimizer import get_optimizer, list_optimizers
from woollylib.scheduler import one_cycle

torch.set_num_threads(1)


def batches(n_batches=4, batch=8, shape=(3, 4, 4), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(n_batches)]


def linear_model(in_features=48, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes))


class CountingModel(nn.Module):
    def __init__(self, in_features=48, classes=3):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes))
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.net(x)


# ------------------------------------------------------------------------------ losses ---

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("a", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch_and_the_definition(reduction, a):
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(7, 5, generator=g), torch.randint(0, 5, (7,), generator=g)
    ours = losses.cross_entropy(label_smoothing=a, reduction=reduction)(logits, labels)
    theirs = nn.CrossEntropyLoss(label_smoothing=a, reduction=reduction)(logits, labels)
    target = torch.full((7, 5), a / 5)                       # others a/K, target 1 - a + a/K
    target[torch.arange(7), labels] = 1 - a + a / 5
    per_sample = -(target * F.log_softmax(logits, 1)).sum(1)
    by_hand = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours, by_hand)


def test_loss_option_errors():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.cross_entropy(1.0)
    with pytest.raises(ValueError, match="reduction"):
        losses.cross_entropy(0.1, reduction="avg")
    with pytest.raises(TypeError):
        losses.cross_entropy("0.1")


def test_l1_penalty_is_sum_of_abs_params():
    model = linear_model()
    expected = sum(p.abs().sum() for p in model.parameters())
    torch.testing.assert_close(losses.l1_penalty(model), expected)
    weights_only = model[1].weight.abs().sum()
    torch.testing.assert_close(losses.l1_penalty(model, include_bias=False), weights_only)


def test_engine_l1_option_adds_the_penalty_gradient():
    data = batches(1)
    model, ref = linear_model(), linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train_epoch(model, data, opt, device="cpu", l1=0.01, progress=False)
    x, y = data[0]
    loss = F.cross_entropy(ref(x), y) + 0.01 * sum(p.abs().sum() for p in ref.parameters())
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_grad_clip_limits_the_step():
    data = [(torch.randn(8, 3, 4, 4) * 100, torch.randint(0, 3, (8,)))]
    model, ref = linear_model(), linear_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    train_epoch(model, data, opt, device="cpu", grad_clip=0.5, progress=False)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert step.norm().item() == pytest.approx(0.5, rel=1e-4)
    F.cross_entropy(ref(data[0][0]), data[0][1]).backward()
    assert torch.cat([p.grad.flatten() for p in ref.parameters()]).norm() > 0.5  # clipping was active


# ------------------------------------------------------------------------------- RICAP ---

@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7])
def test_ricap_geometry_weights_and_labels_against_direct_computation(seed):
    B, C, X, Y = 6, 2, 10, 8
    images = torch.arange(B * C * X * Y, dtype=torch.float32).reshape(B, C, X, Y)
    labels = torch.arange(B) * 10
    mixed, labels_k, weights = ricap.ricap_batch(images, labels, 0.3, np.random.default_rng(seed))
    d = ricap.ricap_draws(B, X, Y, 0.3, np.random.default_rng(seed))   # the same draws
    w, h = d.sizes[0]
    assert 0 <= w <= X and 0 <= h <= Y
    assert d.sizes == ((w, h), (X - w, h), (w, Y - h), (X - w, Y - h))
    for (wk, hk), (xk, yk) in zip(d.sizes, d.offsets):
        assert 0 <= xk <= X - wk and 0 <= yk <= Y - hk
    assert mixed.shape == images.shape
    assert sum(weights) == pytest.approx(1.0)
    assert weights == pytest.approx([wk * hk / (X * Y) for wk, hk in d.sizes])
    for k in range(4):
        assert torch.equal(labels_k[k], labels[torch.from_numpy(d.perms[k])])
        assert sorted(d.perms[k].tolist()) == list(range(B))
    # pixel by pixel: which patch covers (r, c), and where it comes from
    for i in range(B):
        for r in range(X):
            for c in range(Y):
                k = (0 if r < w else 1) + (0 if c < h else 2)
                rr, cc = (r if r < w else r - w), (c if c < h else c - h)
                src = d.perms[k][i]
                xk, yk = d.offsets[k]
                assert torch.equal(mixed[i, :, r, c], images[src, :, xk + rr, yk + cc])


def test_ricap_uses_global_numpy_state_when_no_generator():
    images, labels = torch.randn(4, 3, 6, 6), torch.arange(4)
    np.random.seed(5)
    a = ricap.ricap_batch(images, labels)
    np.random.seed(5)
    b = ricap.ricap_batch(images, labels)
    assert torch.equal(a[0], b[0]) and a[2] == b[2]


def test_ricap_one_forward_of_b_images_and_mixed_loss_and_accuracy():
    data = batches(3, batch=8)
    model = CountingModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)      # lr 0: the model stays as it is
    stats = train_epoch(model, data, opt, device="cpu", ricap_beta=0.3, progress=False,
                        generator=np.random.default_rng(11))
    assert model.batch_sizes == [8, 8, 8]                  # one forward per batch, B images
    rng = np.random.default_rng(11)
    loss_sum = correct = 0.0
    with torch.no_grad():
        for x, y in data:
            mixed, labels_k, weights = ricap.ricap_batch(x, y, 0.3, rng)
            out = model.net(mixed)
            loss_sum += sum(wk * F.cross_entropy(out, yk).item() for wk, yk in zip(weights, labels_k)) * 8
            correct += sum(wk * (out.argmax(1) == yk).sum().item() for wk, yk in zip(weights, labels_k))
    assert stats["loss"] == pytest.approx(loss_sum / 24, rel=1e-6)
    assert stats["acc"] == pytest.approx(100 * correct / 24, rel=1e-6)
    assert stats["samples"] == 24


# ----------------------------------------------------------------------- engine basics ---

def test_loss_is_mean_per_sample_and_evaluate_matches_direct_computation():
    data = [(torch.randn(n, 3, 4, 4), torch.randint(0, 3, (n,))) for n in (8, 8, 3)]  # uneven last batch
    model = linear_model()
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    stats = evaluate(model, data, device="cpu")
    with torch.no_grad():
        out = model(x)
    assert stats["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert stats["acc"] == pytest.approx(100 * (out.argmax(1) == y).float().mean().item())
    assert stats["samples"] == 19
    tta = evaluate(model, data, device="cpu", tta_flip=True)
    with torch.no_grad():
        out2 = (model(x) + model(x.flip(3))) / 2
    assert tta["loss"] == pytest.approx(F.cross_entropy(out2, y).item(), rel=1e-6)
    model.train()
    evaluate(model, data, device="cpu")
    assert model.training                                   # mode restored
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    tr = train_epoch(model, data, opt, device="cpu", progress=False)
    assert tr["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)


def test_tiny_model_learns_a_tiny_problem():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 3, 6, 6, generator=g)

    def make(n):
        y = torch.randint(0, 3, (n,), generator=g)
        return centers[y] + 0.8 * torch.randn(n, 3, 6, 6, generator=g), y

    (xtr, ytr), (xte, yte) = make(512), make(256)
    train = list(zip(xtr.split(32), ytr.split(32)))
    test = list(zip(xte.split(64), yte.split(64)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3))
    opt = get_optimizer("sgd", model, lr=0.05, weight_decay=5e-4, nesterov=True, no_decay_bn_bias=True)
    sched = one_cycle(opt, max_lr=0.1, epochs=3, steps_per_epoch=len(train))
    first = evaluate(model, test, device="cpu")
    for epoch in range(3):
        stats = train_epoch(model, train, opt, device="cpu", scheduler=sched, label_smoothing=0.05,
                            progress=False, epoch=epoch)
    result = evaluate(model, test, device="cpu")
    assert result["acc"] > 90 and result["loss"] < first["loss"] / 2
    assert stats["acc"] > 85


def test_ricap_bf16_and_channels_last_options_run_and_learn():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (256,), generator=g)
    x = torch.randn(256, 3, 8, 8, generator=g) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    train = list(zip(x.split(32), y.split(32)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(3):
        stats = train_epoch(model, train, opt, device="cpu", ricap_beta=0.3, amp=True, channels_last=True,
                            progress=False, epoch=epoch)
    assert math.isfinite(stats["loss"])
    assert evaluate(model, train, device="cpu", amp="bf16", channels_last=True)["acc"] > 90


def test_progress_callable_called_at_refresh_points():
    seen = []
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train_epoch(model, batches(7), opt, device="cpu", progress=seen.append, refresh_every=3)
    assert [s["batch"] for s in seen] == [3, 6, 7]
    assert all({"loss", "acc", "lr"} <= set(s) for s in seen)


def test_progress_bar_mode_runs():
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = train_epoch(model, batches(3), opt, device="cpu", progress=True, epoch=0, refresh_every=2)
    assert stats["samples"] == 24 and len(stats["lrs"]) == 3


def _count_host_reads(monkeypatch, fn):
    """Names of the tensor-to-host reads (item/tolist/float/int/bool/index/numpy) made by fn()."""
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return reads


def test_no_per_batch_host_sync(monkeypatch):
    """Reading a tensor to the host (item/tolist/float/int/bool) happens only at refreshes."""
    data = batches(40, batch=4)
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = one_cycle(opt, max_lr=0.05, epochs=1, steps_per_epoch=40)
    out = {}

    def run():
        out["stats"] = train_epoch(model, data, opt, device="cpu", scheduler=sched, grad_clip=1.0,
                                   label_smoothing=0.1, progress=False, refresh_every=20)

    reads = _count_host_reads(monkeypatch, run)
    assert len(out["stats"]["lrs"]) == 40
    assert reads == ["tolist"] * 3   # after batch 20, batch 40, and the epoch end


def test_fp16_steps_read_the_host_only_where_a_bare_grad_scaler_loop_does(monkeypatch):
    """fp16 + GradScaler: per step, the engine reads no more than scaler.step itself does."""
    data = batches(10, batch=4)

    def bare():
        model = linear_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu")
        for x, y in data:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()

    def ours():
        model = linear_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        sched = one_cycle(opt, max_lr=0.05, epochs=1, steps_per_epoch=10)
        train_epoch(model, data, opt, device="cpu", scheduler=sched, amp="fp16",
                    scaler=torch.amp.GradScaler("cpu"), progress=False, refresh_every=5)

    bare_reads, our_reads = _count_host_reads(monkeypatch, bare), _count_host_reads(monkeypatch, ours)
    assert len(bare_reads) >= 10                               # scaler.step reads its inf flags each step
    assert sorted(our_reads) == sorted(bare_reads + ["tolist"] * 3)   # + refreshes at 5, 10 and the end


# --------------------------------------------------------------------- AMP and NaN stop ---

class InfGrad:
    """Make the gradients of ``param`` infinite on chosen steps (the loss stays finite)."""

    def __init__(self, param, bad_steps):
        self.bad_steps, self.step = set(bad_steps), 0
        param.register_hook(self)

    def __call__(self, grad):
        bad = self.step in self.bad_steps
        self.step += 1
        return torch.full_like(grad, math.inf) if bad else grad


@pytest.mark.parametrize("amp", ["fp16", False])
def test_scheduler_does_not_advance_on_steps_the_scaler_skipped(amp):
    data = batches(6)
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = one_cycle(opt, max_lr=0.1, epochs=2, steps_per_epoch=6)
    scaler = torch.amp.GradScaler("cpu")
    InfGrad(model[1].weight, bad_steps={1, 2, 4})
    weights = []

    def snapshot(info):
        weights.append(model[1].weight.detach().clone())

    stats = train_epoch(model, data, opt, device="cpu", scheduler=sched, amp=amp, scaler=scaler,
                        progress=snapshot, refresh_every=1)
    assert sched.last_epoch == 6 - 3                        # three skipped steps, three real ones
    lrs = stats["lrs"]
    assert lrs[1] == lrs[2] == lrs[3] and lrs[4] == lrs[5]  # lr held through the skipped steps
    assert lrs[0] < lrs[1] < lrs[5]                          # and advanced after real steps (warm-up)
    assert torch.equal(weights[1], weights[0]) and torch.equal(weights[2], weights[0])
    assert not torch.equal(weights[3], weights[2])
    assert scaler.get_scale() < 65536.0


def test_make_scaler_and_amp_modes():
    cpu = torch.device("cpu")
    assert engine.make_scaler(cpu, True) is None           # CPU: bf16, no scaler
    assert isinstance(engine.make_scaler(cpu, "fp16"), torch.amp.GradScaler)
    assert engine.amp_dtype(True, cpu) == torch.bfloat16
    assert engine.amp_dtype(True, torch.device("cuda")) == torch.float16
    assert engine.amp_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    assert engine.amp_dtype(False, cpu) is None
    with pytest.raises(ValueError, match="amp must be one of"):
        engine.amp_dtype("fp8", cpu)


def test_nan_loss_stops_with_epoch_batch_and_lr():
    data = batches(12)
    data[5] = (torch.full_like(data[5][0], math.nan), data[5][1])
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = one_cycle(opt, max_lr=0.1, epochs=1, steps_per_epoch=12)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = one_cycle(ref_opt, max_lr=0.1, epochs=1, steps_per_epoch=12)
    for _ in range(5):
        ref_opt.step()
        ref.step()
    with pytest.raises(NonFiniteLossError) as info:
        train_epoch(model, data, opt, device="cpu", scheduler=sched, epoch=3, progress=False, refresh_every=4)
    err = info.value
    assert (err.epoch, err.batch) == (3, 5)
    assert err.lr == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert "epoch 3" in str(err) and "batch 5" in str(err) and isinstance(err, FloatingPointError)


def test_nan_in_last_batch_is_caught_at_epoch_end():
    data = batches(3)
    data[2] = (torch.full_like(data[2][0], math.inf), data[2][1])
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as info:
        train_epoch(model, data, opt, device="cpu", progress=False, refresh_every=50)
    assert info.value.batch == 2 and info.value.lr == pytest.approx(0.1) and info.value.epoch is None


# --------------------------------------------------------------------------- bad input ---

@pytest.mark.parametrize("bad, error, match", [
    ([torch.randn(4, 3)], TypeError, "pairs"),
    ([(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4))], ValueError, "exactly 2"),
    ([(np.zeros((4, 3), np.float32), np.zeros(4, np.int64))], TypeError, "torch tensors"),
    ([(torch.zeros(4, 3, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))], TypeError, "float images"),
    ([(torch.randn(4, 3), torch.zeros(4))], TypeError, "integer class"),
    ([(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))], ValueError, "do not match"),
    ([], ValueError, "no batches"),
])
def test_bad_batches_are_clear_errors(bad, error, match):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=match):
        train_epoch(model, bad, opt, device="cpu", progress=False)
    with pytest.raises(error, match=match):
        evaluate(model, bad, device="cpu")


def test_ricap_needs_4d_images():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        train_epoch(model, [(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))], opt, device="cpu",
                    ricap_beta=0.3, progress=False)


@pytest.mark.parametrize("kw, match", [
    ({"amp": "fp8"}, "amp must be"),
    ({"grad_clip": 0}, "grad_clip"),
    ({"l1": -1.0}, "l1 must be"),
    ({"ricap_beta": -0.3}, "beta must be"),
    ({"refresh_every": 0}, "refresh_every"),
    ({"label_smoothing": 0.1, "criterion": nn.CrossEntropyLoss()}, "not both"),
    ({"label_smoothing": 1.5}, "label_smoothing"),
    ({"device": "tpu"}, "device"),
])
def test_bad_options_are_clear_errors(kw, match):
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw = {"device": "cpu", **kw}
    with pytest.raises(ValueError, match=match):
        train_epoch(model, batches(1), opt, progress=False, **kw)


# -------------------------------------------------------------------------- optimizers ---

def bn_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 2))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("AdamW", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop),
                                       ("adagrad", torch.optim.Adagrad)])
def test_get_optimizer_builds_each_kind(name, cls):
    model = bn_model()
    opt = get_optimizer(name, model, lr=0.01, weight_decay=1e-4)
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 1e-4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_no_decay_for_batchnorm_and_bias():
    model = bn_model()
    opt = get_optimizer("sgd", model, lr=0.1, weight_decay=5e-4, nesterov=True, no_decay_bn_bias=True)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}
    assert ids(decay["params"]) == {id(model[0].weight), id(model[3].weight)}
    assert ids(no_decay["params"]) == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    assert opt.param_groups[0]["nesterov"] is True


def test_optimizer_errors():
    model = bn_model()
    with pytest.raises(ValueError, match="known optimizers.*sgd"):
        get_optimizer("lion", model, lr=0.1)
    for lr in (0, -0.1):
        with pytest.raises(ValueError, match="lr must be > 0"):
            get_optimizer("sgd", model, lr=lr)
    with pytest.raises(ValueError, match="weight_decay"):
        get_optimizer("sgd", model, lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="nesterov"):
        get_optimizer("adam", model, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum > 0"):
        get_optimizer("sgd", model, lr=0.1, momentum=0, nesterov=True)
    with pytest.raises(TypeError, match="nn.Module"):
        get_optimizer("sgd", [torch.zeros(1)], lr=0.1)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        get_optimizer("sgd", frozen, lr=0.1)
    assert list_optimizers() == ["adagrad", "adam", "adamw", "rmsprop", "sgd"]


# ------------------------------------------------------------------ thin entry points ---

def test_thin_entry_points_are_the_engine():
    data = batches(2)
    seen = CountingModel()
    opt = torch.optim.SGD(seen.parameters(), lr=0.0)
    s1 = bp.vanilla.train(seen, data, opt, device="cpu", progress=False)
    s2 = bp.ricap.train(seen, data, opt, device="cpu", progress=False, generator=np.random.default_rng(0))
    s3 = bp.autocast.train(seen, data, opt, device="cpu", progress=False)
    assert s1["samples"] == s2["samples"] == s3["samples"] == 16
    assert s2["loss"] != s1["loss"]                     # RICAP really mixed
    assert bp.vanilla.test(seen, data, device="cpu")["loss"] == pytest.approx(s1["loss"], rel=1e-6)
    assert bp.autocast.make_scaler("cpu") is None
    with pytest.raises(ValueError, match="vanilla"):
        bp.autocast.train(seen, data, opt, device="cpu", amp=False)
    cfg = bp.EngineConfig(label_smoothing=0.1, grad_clip=2.0)
    assert bp.train_epoch(seen, data, opt, device="cpu", progress=False, **cfg.kwargs())["samples"] == 16
