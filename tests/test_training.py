"""Trainer / train_test_loop: exact resume, NaN stop, interrupt, atomic never-clobber files, best.pt."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from woollylib.bp import engine
from woollylib.bp.engine import NonFiniteLossError
from woollylib.training import History, Trainer, load_checkpoint, train_test_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_TRAIN, N_TEST, BATCH = 64, 32, 16  # 4 steps per epoch


class Tiny(nn.Module):
    """Conv + BN + dropout (uses the global torch RNG) + linear, on 3x8x8 images."""

    def __init__(self, width=4, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))))


def make_tensors(n, seed):
    """Class = the brightest channel, so the task is learnable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    return x, y


class EpochLoader:
    """Shuffling, flip-augmenting loader with the loaders' set_epoch(epoch) protocol.

    All randomness comes from (seed, epoch). ``fail`` = (epoch, batch, what) raises
    KeyboardInterrupt ("interrupt") or yields NaN images ("nan") at that point.
    """

    def __init__(self, x, y, batch_size=BATCH, shuffle=True, seed=0, fail=None):
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.epoch, self.fail = 0, fail

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 10_000 + self.epoch)
        order = torch.randperm(len(self.x), generator=g) if self.shuffle else torch.arange(len(self.x))
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.x[idx].clone()
            if self.shuffle:  # augmentation: random horizontal flips
                flip = torch.rand(len(idx), generator=g) < 0.5
                images[flip] = images[flip].flip(-1)
            if self.fail is not None and self.fail[:2] == (self.epoch, b):
                if self.fail[2] == "interrupt":
                    raise KeyboardInterrupt
                images[:] = float("nan")
            yield images, self.y[idx]


def loaders(fail=None):
    return EpochLoader(*make_tensors(N_TRAIN, 1), fail=fail), EpochLoader(*make_tensors(N_TEST, 2), shuffle=False)


def model_with_seed(seed, width=4):
    torch.manual_seed(seed)
    return Tiny(width)


# momentum + weight decay (optimizer state), OneCycle (scheduler state), RICAP (numpy global RNG),
# dropout (torch global RNG): everything exact resume has to carry.
OPTS = {"lr": 0.2, "weight_decay": 5e-4, "nesterov": True, "ricap_beta": 0.3, "progress": False, "verbose": False}


def fit(out_dir, epochs=4, model=None, fail=None, stop_after=None, resume=False, **kw):
    trainer = Trainer(
        model if model is not None else model_with_seed(0),
        loaders(fail),
        "cpu",
        epochs,
        out_dir=out_dir,
        resume=resume,
        seed=None if resume else 7,
        **{**OPTS, **kw},
    )
    return trainer, trainer.fit(stop_after=stop_after)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 epochs in one go (the oracle for resume)."""
    trainer, history = fit(tmp_path_factory.mktemp("straight"))
    return trainer.model.state_dict(), history


def assert_same_history(a: History, b: History):
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert getattr(a, name) == getattr(b, name), name
    assert len(a.epoch_time) == len(b.epoch_time)


def test_resume_two_plus_two_equals_four(straight, tmp_path):
    weights, history = straight
    assert len(history) == 4 and len(history.lr) == 16
    assert history.lr[-1] < history.lr[0] < 0.15 < max(history.lr) <= 0.2  # one cycle
    _, first = fit(tmp_path, stop_after=2)
    assert len(first) == 2 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    # a different initialisation and fresh global RNG: everything must come from last.pt
    torch.manual_seed(999)
    np.random.seed(999)
    trainer, resumed = fit(tmp_path, model=model_with_seed(123), resume=True)
    assert_same_weights(trainer.model.state_dict(), weights)
    assert_same_history(resumed, history)
    assert_same_history(History.load(tmp_path / "history.json"), history)


def test_fit_in_two_calls_on_one_trainer_equals_one_call(straight, tmp_path):
    weights, history = straight
    trainer = Trainer(model_with_seed(0), loaders(), "cpu", 4, out_dir=tmp_path, seed=7, **OPTS)
    trainer.fit(stop_after=1)
    trainer.fit(stop_after=3)
    again = trainer.fit()
    assert_same_weights(trainer.model.state_dict(), weights)
    assert_same_history(again, history)
    assert trainer.fit() is again and len(again) == 4  # nothing left to do


def test_interrupt_keeps_last_checkpoint_and_history_then_resumes_exactly(straight, tmp_path):
    weights, history = straight
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, fail=(2, 1, "interrupt"))  # set_epoch is 0-based: third epoch, second batch
    saved = History.load(tmp_path / "history.json")
    assert len(saved) == 2
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["history"] == saved.to_dict()
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind
    trainer, resumed = fit(tmp_path, model=model_with_seed(5), resume=True)
    assert_same_weights(trainer.model.state_dict(), weights)
    assert_same_history(resumed, history)


def test_nan_loss_stops_with_epoch_batch_lr_and_keeps_files(tmp_path):
    fit(tmp_path, stop_after=1)
    before = {name: digest(tmp_path / name) for name in ("last.pt", "best.pt", "history.json", "config.json")}
    with pytest.raises(NonFiniteLossError) as info:
        fit(tmp_path, fail=(1, 2, "nan"), resume=True)
    err = info.value
    assert (err.epoch, err.batch) == (2, 2)
    lr_at_batch = load_checkpoint(tmp_path / "last.pt")["history"]["lr"]  # epoch 1 only
    assert len(lr_at_batch) == 4 and err.lr > 0
    text = str(err)
    assert "epoch 2" in text and "batch 2" in text and "lr=" in text
    if hasattr(err, "add_note"):  # Python >= 3.11: where the last good state is
        assert any("last.pt" in note and "epoch 1/4" in note for note in err.__notes__)
    after = {name: digest(tmp_path / name) for name in before}
    assert after == before


def test_nan_lr_in_error_is_the_scheduled_one(straight, tmp_path):
    _, history = straight
    with pytest.raises(NonFiniteLossError) as info:
        fit(tmp_path, fail=(0, 3, "nan"))
    assert info.value.lr == pytest.approx(history.lr[3])
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "history.json").exists()


def test_checkpoints_load_weights_only_and_hold_everything(straight, tmp_path):
    trainer, history = fit(tmp_path, epochs=2)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng", "config"} <= set(last)
    assert last["epoch"] == 2 and last["history"] == history.to_dict()
    assert {"torch", "numpy", "python"} <= set(last["rng"])
    # OneCycle stepped per batch: 8 steps use lrs 0..7 and it never steps past its last (7)
    assert last["scheduler"]["last_epoch"] == last["scheduler"]["total_steps"] - 1 == 7
    assert_same_weights(last["model"], trainer.model.state_dict())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == last["config"] == json.loads(json.dumps(last["config"]))
    settings = config["settings"]
    assert settings["schedule"]["epochs"] == 2 and settings["optim"]["name"] == "sgd"
    assert settings["schedule"]["name"] == "onecycle"
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == history.best_epoch and best["test_acc"] == max(history.test_acc)
    assert History.load(tmp_path / "history.json").to_dict() == history.to_dict()


def test_best_pt_is_the_epoch_with_highest_test_accuracy(tmp_path, monkeypatch):
    scripted = iter([50.0, 70.0, 60.0, 70.0])  # tie at epoch 4 must not replace epoch 2
    snapshots = []
    real = engine.evaluate

    def fake_evaluate(model, loader, **kw):
        result = real(model, loader, **kw)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {**result, "acc": next(scripted)}

    monkeypatch.setattr(engine, "evaluate", fake_evaluate)
    _, history = fit(tmp_path, ricap_beta=None)
    assert history.test_acc == [50.0, 70.0, 60.0, 70.0] and history.best_epoch == 2
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["test_acc"] == 70.0
    assert_same_weights(best["model"], snapshots[1])
    assert not all(torch.equal(snapshots[1][k], snapshots[3][k]) for k in snapshots[1])


def test_fresh_run_never_clobbers_an_existing_run(tmp_path):
    fit(tmp_path, epochs=1)
    names = ("last.pt", "best.pt", "history.json", "config.json")
    before = {n: digest(tmp_path / n) for n in names}
    with pytest.raises(FileExistsError, match="resume=True.*overwrite=True"):
        fit(tmp_path, epochs=1)
    # overwrite=True, but the new run fails in its first epoch: the old run stays untouched
    with pytest.raises(NonFiniteLossError):
        fit(tmp_path, epochs=1, fail=(0, 0, "nan"), overwrite=True)
    assert {n: digest(tmp_path / n) for n in names} == before
    (tmp_path / "metrics.json").write_text("{}")
    fit(tmp_path, epochs=2, overwrite=True)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert not (tmp_path / "metrics.json").exists()  # stale results of the replaced run are gone


def test_resume_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(tmp_path / "empty", resume=True)
    fit(tmp_path, epochs=2, stop_after=1)
    with pytest.raises(ValueError, match="different model"):
        fit(tmp_path, epochs=2, model=model_with_seed(0, width=6), resume=True)
    with pytest.raises(ValueError, match="lr"):
        fit(tmp_path, epochs=2, resume=True, lr=0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(tmp_path, epochs=3, resume=True)  # a one-cycle schedule is fixed by its length
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        fit(tmp_path, epochs=2, resume=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 2.5}, ValueError, "epochs"),
        ({"lr": 0.0}, ValueError, "learning rate"),
        ({"lr": -0.1}, ValueError, "learning rate"),
        ({"lr": float("nan")}, ValueError, "learning rate"),
        ({"optimizer": "sgdd"}, ValueError, "unknown optimizer"),
        ({"scheduler": "cosine"}, ValueError, "scheduler"),
        ({"amp": "fp8"}, ValueError, "amp"),
    ],
)
def test_bad_arguments_fail_before_touching_disk(tmp_path, kwargs, error, match):
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        fit(out, **kwargs)
    assert not out.exists()


def test_bad_data_and_resume_without_dir():
    with pytest.raises(TypeError, match="DataBundle"):
        Trainer(Tiny(), [1, 2, 3], "cpu", 1, lr=0.1)
    with pytest.raises(ValueError, match="out_dir"):
        Trainer(Tiny(), loaders(), "cpu", 1, lr=0.1, resume=True)
    with pytest.raises(ValueError, match="lr="):
        Trainer(Tiny(), loaders(), "cpu", 1)


def test_loader_not_yielding_pairs_is_a_clear_error_and_writes_nothing(tmp_path):
    x, y = make_tensors(32, 0)
    triples = [(x[:16], y[:16], y[:16]), (x[16:], y[16:], y[16:])]
    with pytest.raises(ValueError, match=r"exactly 2, \(images, labels\)"):
        Trainer(Tiny(), (triples, triples), "cpu", 1, lr=0.1, out_dir=tmp_path, progress=False).fit()
    assert list(tmp_path.iterdir()) == []


def test_train_test_loop_history_and_summary_lines(tmp_path, capsys):
    torch.manual_seed(0)
    history = train_test_loop(
        Tiny(), loaders(), "cpu", epochs=3, max_lr=0.2, progress=False, scheduler="none"
    )
    assert len(history) == 3 and len(history.lr) == 12 and set(history.lr) == {0.2}
    assert all(t > 0 for t in history.epoch_time)
    assert all(0 <= a <= 100 for a in history.train_acc + history.test_acc)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 3 and "test loss" in lines[-1] and "acc" in lines[-1]


def test_plateau_scheduler_steps_per_epoch_on_the_train_loss_without_a_validation_split(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(
        Tiny(),
        loaders(),
        "cpu",
        3,
        lr=0.1,
        scheduler="plateau",
        scheduler_kwargs={"patience": 0, "factor": 0.5},
        progress=False,
        verbose=False,
    )
    calls = []
    real_step = trainer.scheduler.step
    trainer.scheduler.step = lambda *a, **k: (calls.append(a), real_step(*a, **k))[1]
    history = trainer.fit()
    assert [a[0] for a in calls] == pytest.approx(history.train_loss)  # never the test loss
    assert [a[0] for a in calls] != pytest.approx(history.test_loss)
    assert len(set(history.lr[:4])) == 1  # constant within an epoch


def test_history_roundtrip_and_best_epoch(tmp_path):
    h = History()
    assert h.best_epoch is None and len(h) == 0
    h.append(train_loss=1.0, train_acc=10, test_loss=0.9, test_acc=30, lrs=[0.1, 0.2], epoch_time=1.5)
    h.append(train_loss=0.5, train_acc=20, test_loss=0.8, test_acc=25, lrs=[0.3], epoch_time=1.0)
    assert h.best_epoch == 1 and h.best_test_acc == 30
    path = h.save(tmp_path / "h.json")
    assert History.load(path) == h
    (tmp_path / "bad.json").write_text('{"train_loss": [1.0')
    with pytest.raises(ValueError, match="not valid JSON"):
        History.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        History.load(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------
# With the real data pipeline and models


def test_short_digits_run_learns_well_above_chance():
    from woollylib.models import get_model
    from woollylib.preloading import get_data

    data = get_data("digits", batch_size=32, seed=0, augment=False, num_workers=0, verbose=False)
    torch.manual_seed(0)
    history = train_test_loop(
        get_model("compact", num_classes=10), data, "cpu", epochs=2, max_lr=0.2, progress=False, seed=0
    )
    assert history.test_acc[-1] > 60  # chance is 10%; ~90% measured
    assert history.train_loss[-1] < history.train_loss[0]


def test_resume_exact_with_albumentations_loader_and_device_loader(tmp_path):
    """The loaders' set_epoch protocol end to end: random crop/flip/cutout loaders, 1 + 1 == 2."""
    from woollylib.models import get_model
    from woollylib.preloading import from_arrays, get_data, load_source

    digits = load_source("digits", train=True)
    train = from_arrays(digits.images[:96], digits.labels[:96], digits.classes)
    test = from_arrays(digits.images[96:160], digits.labels[96:160], digits.classes)
    for loader in ("albumentations", "device"):

        def setup(seed_model, loader=loader):
            data = get_data((train, test), batch_size=32, seed=3, loader=loader, device="cpu",
                            num_workers=0, verbose=False)
            torch.manual_seed(seed_model)
            return get_model("compact", num_classes=10, width=8), data

        opts = {"max_lr": 0.1, "progress": False, "verbose": False}
        model, data = setup(0)
        straight = train_test_loop(model, data, "cpu", epochs=2, seed=1, out_dir=tmp_path / f"{loader}-a", **opts)
        model_b, data_b = setup(0)
        Trainer(model_b, data_b, "cpu", 2, seed=1, out_dir=tmp_path / f"{loader}-b", **opts).fit(stop_after=1)
        model_c, data_c = setup(42)
        resumed = train_test_loop(model_c, data_c, "cpu", epochs=2, resume=True, out_dir=tmp_path / f"{loader}-b",
                                  **opts)
        assert_same_weights(model_c.state_dict(), model.state_dict())
        assert_same_history(resumed, straight)


def test_speed_defaults_per_device_and_what_the_trainer_records(tmp_path, monkeypatch):
    import types
    import warnings

    from woollylib.training import speed_defaults

    assert speed_defaults("cpu") == (False, True)  # channels_last measured faster; no model: fp32
    t4 = types.SimpleNamespace(name="Tesla T4", major=7, minor=5)  # no native bf16 (tests/test_precision.py)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: t4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert speed_defaults("cuda") == ("fp16", True)  # fp16 + GradScaler, NHWC
    assert speed_defaults("mps") == (False, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU without native bf16 warns
        assert speed_defaults("cpu", "bf16", False) == ("bf16", False)  # explicit values pass through
    with pytest.raises(ValueError, match="channels_last"):
        speed_defaults("cpu", "auto", "yes")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    images, labels = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    model(images)  # materialise the lazy layer
    trainer = Trainer(model, ([(images, labels)] * 2, [(images, labels)]), "cpu", 1, lr=0.01,
                      out_dir=tmp_path / "run", progress=False, verbose=False)
    from woollylib.precision import cpu_info

    # amp="auto" on the CPU: bf16 where it is native (a model without grouped convolutions), else fp32
    assert trainer.config["resolved"]["amp"] == ("bf16" if cpu_info().bf16_native else False) == trainer.amp
    assert trainer.config["resolved"]["channels_last"] is True
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
