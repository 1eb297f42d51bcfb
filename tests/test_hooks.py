"""Trainer hooks: the events and their order, a hook stopping the run, the stop event, and the hook that
writes metrics.json (train_test_loop's and the recipe's)."""

import json

import pytest
import torch
from torch import nn

from woollylib.bp.engine import NonFiniteLossError, evaluate
from woollylib.hooks import EarlyStopping, EpochLine, Hook, RunResults
from woollylib.training import Trainer, train_test_loop


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def data(n=32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, n, 8)]
    return batches, batches[:2]


class Recorder(Hook):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_fit_start(self, trainer):
        self.events.append(("start", trainer.start_epoch))

    def on_epoch_end(self, trainer, epoch, figures):
        assert (trainer.run_dir / "last.pt").exists()  # the epoch's files are saved first
        self.events.append(("epoch", epoch, round(figures["test"]["acc"], 6)))
        if epoch == self.stop_at:
            trainer.should_stop = True

    def on_fit_end(self, trainer):
        self.events.append(("end", len(trainer.history)))

    def on_stop(self, trainer, exc):
        self.events.append(("stop", type(exc).__name__))


def test_events_come_in_order_with_the_epochs_figures(tmp_path):
    rec = Recorder()
    t = Trainer(tiny(), data(), "cpu", epochs=3, lr=0.05, out_dir=tmp_path / "r", progress=False, verbose=False,
                amp=False, hooks=[rec])
    history = t.fit()
    assert rec.events == [("start", 0)] + [("epoch", e, round(history.test_acc[e - 1], 6)) for e in (1, 2, 3)] \
        + [("end", 3)]
    assert isinstance(t.hooks[0], EpochLine) and t.hooks[-1] is rec  # the trainer's own hooks come first


def test_a_hook_stops_the_run_after_the_current_epoch_and_it_resumes(tmp_path):
    out = tmp_path / "r"
    rec = Recorder(stop_at=1)
    t = Trainer(tiny(), data(), "cpu", epochs=3, lr=0.05, out_dir=out, progress=False, verbose=False, hooks=[rec])
    assert len(t.fit()) == 1 and rec.events[-1] == ("end", 1)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    resumed = Trainer(tiny(), data(), "cpu", epochs=3, lr=0.05, out_dir=out, resume=True, progress=False,
                      verbose=False)
    assert len(resumed.fit()) == 3


def test_on_stop_gets_the_exception_of_a_diverged_run(tmp_path):
    rec = Recorder()
    bad = [(torch.full((8, 3, 8, 8), float("nan")), torch.zeros(8, dtype=torch.long))] * 2
    t = Trainer(tiny(), (bad, bad), "cpu", epochs=1, lr=0.05, progress=False, verbose=False, hooks=[rec])
    with pytest.raises(NonFiniteLossError):
        t.fit()
    assert rec.events == [("start", 0), ("stop", "NonFiniteLossError")]


def test_early_stopping_is_a_hook_from_the_settings():
    from woollylib.preloading import from_arrays, get_data

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(60, 8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()
    labels = (torch.arange(60) % 3).numpy()
    bundle = get_data((from_arrays(images, labels), from_arrays(images, labels)), batch_size=16, val_split=0.25,
                      seed=0, verbose=False, augment="none", num_workers=0)
    t = Trainer(tiny(), bundle, "cpu", epochs=2, lr=0.05, patience=1, progress=False, verbose=False)
    assert any(isinstance(h, EarlyStopping) and h.patience == 1 for h in t.hooks)
    assert not any(isinstance(h, EarlyStopping) for h in Trainer(tiny(), data(), "cpu", epochs=1, lr=0.05).hooks)


def test_train_test_loop_writes_metrics_json_through_its_hook(tmp_path):
    out = tmp_path / "r"
    model = tiny()
    history = train_test_loop(model, data(), "cpu", epochs=2, max_lr=0.05, out_dir=out, progress=False,
                              verbose=False, amp=False)
    metrics = json.loads((out / "metrics.json").read_text())
    # the oracle: the engine's own evaluation of the final weights on the test loader
    assert metrics["accuracy"] == pytest.approx(evaluate(model, data()[1], device="cpu")["acc"], abs=1e-6)
    assert metrics["epochs"] == len(history) == 2 and metrics["this_session_s"] > 0
    hook = RunResults(data())
    Trainer(tiny(), data(), "cpu", epochs=1, lr=0.05, progress=False, verbose=False, hooks=[hook]).fit()
    assert hook.summary is None and hook.seconds > 0  # no run folder: nothing written


def test_compare_optimizers_trains_through_fit(tmp_path, capsys):
    """Each optimizer's run is an ordinary fit(): its folder, lock and stop handling; a diverging one warns."""
    from woollylib.experiments import compare_optimizers

    train, test = data()
    with pytest.warns(UserWarning, match=r"sgd: non-finite loss.*stopped after 0 epoch\(s\)"):
        histories = compare_optimizers(tiny(), train_loader=train, test_loader=test, optimizers=["sgd", "adam"],
                                       epochs=2, device="cpu",
                                       lrs={"sgd": 1e12, "adam": 1e-3}, out_dir=tmp_path, verbose=True)
    assert len(histories["sgd"]) == 0 and len(histories["adam"]) == 2
    assert "    adam epoch 2/2: train loss" in capsys.readouterr().out
    run = tmp_path / "optimizer-adam" / "seed-0"
    assert (run / "last.pt").exists() and not (run / ".woollylib.lock").exists()
