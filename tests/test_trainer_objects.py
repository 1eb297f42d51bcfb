"""Trainer with the objects a course notebook builds: a scheduler instance and a criterion."""

import json

import pytest
import torch
import torch.nn.functional as F
from test_training import Tiny, loaders
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR

from woollylib.training import Trainer, train_test_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPOCHS, STEPS = 3, 4  # test_training's loaders: 4 batches per epoch


def quiet(**kw):
    return {"progress": False, "verbose": False, **kw}


def test_onecycle_instance_is_stepped_per_batch_like_torch_alone(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=0.3, epochs=EPOCHS, steps_per_epoch=STEPS)
    history = train_test_loop(model, loaders(), "cpu", epochs=EPOCHS, optimizer=opt, scheduler=sched,
                              out_dir=tmp_path / "run", **quiet())
    # oracle: the same schedule stepped by hand once per batch
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9)
    ref = OneCycleLR(ref_opt, max_lr=0.3, epochs=EPOCHS, steps_per_epoch=STEPS)
    expected = []
    for _ in range(EPOCHS * STEPS):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert history.lr == pytest.approx(expected)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"]["schedule"]["name"] == "onecycle"
    assert config["settings"]["optim"]["lr"] == pytest.approx(0.3)  # the peak, not the starting lr
    assert config["extra"]["scheduler"] == "OneCycleLR"


def test_other_torch_schedulers_step_once_per_epoch():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = train_test_loop(model, loaders(), "cpu", epochs=EPOCHS, optimizer=opt,
                              scheduler=StepLR(opt, step_size=1, gamma=0.5), **quiet())
    assert history.lr == pytest.approx([0.1] * STEPS + [0.05] * STEPS + [0.025] * STEPS)


def test_plateau_instance_gets_the_train_loss_without_a_validation_split():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    seen = []
    real = sched.step
    sched.step = lambda metric, *a, **k: (seen.append(metric), real(metric, *a, **k))[1]
    trainer = Trainer(model, loaders(), "cpu", epochs=2, scheduler=sched, **quiet())
    assert trainer.optimizer is opt  # the scheduler's optimizer is the one trained
    history = trainer.fit()
    assert seen == pytest.approx(history.train_loss)  # no decision looks at the test set


def test_a_scheduler_instance_checks_its_optimizer_and_length():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    other = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = OneCycleLR(opt, max_lr=0.3, epochs=EPOCHS, steps_per_epoch=STEPS)
    with pytest.raises(ValueError, match="steps another optimizer"):
        Trainer(model, loaders(), "cpu", epochs=EPOCHS, optimizer=other, scheduler=sched, **quiet())
    with pytest.raises(ValueError, match=r"spans 12 steps but this run has 2 epochs x 4 batches = 8.*epochs=2"):
        Trainer(model, loaders(), "cpu", epochs=2, scheduler=sched, **quiet())
    with pytest.raises(ValueError, match="max_lr=0.1 but the OneCycleLR"):
        Trainer(model, loaders(), "cpu", epochs=EPOCHS, max_lr=0.1, scheduler=sched, **quiet())
    stranger = OneCycleLR(torch.optim.SGD(Tiny().parameters(), lr=0.1), max_lr=0.3, epochs=EPOCHS,
                          steps_per_epoch=STEPS)
    with pytest.raises(ValueError, match="none of the model's parameters"):
        Trainer(model, loaders(), "cpu", epochs=EPOCHS, scheduler=stranger, **quiet())
    with pytest.raises(TypeError, match="torch scheduler instance"):
        Trainer(model, loaders(), "cpu", epochs=EPOCHS, lr=0.1, scheduler=3, **quiet())
    # the same max_lr as the scheduler's is fine
    Trainer(model, loaders(), "cpu", epochs=EPOCHS, max_lr=0.3, scheduler=sched, **quiet())


class LogSoftmaxNet(Tiny):
    def forward(self, x):
        return F.log_softmax(super().forward(x), dim=1)


def test_criterion_module_and_callable_are_used_for_train_and_test_loss():
    torch.manual_seed(0)
    model = LogSoftmaxNet()
    train, test = loaders()
    calls = []

    def nll(outputs, labels):
        calls.append(len(labels))
        return F.nll_loss(outputs, labels)

    # fp32: the oracle below is an fp32 forward (amp="auto" is bf16 on a CPU with native bf16)
    history = train_test_loop(model, (train, test), "cpu", epochs=1, max_lr=0.1, criterion=nll, amp=False, **quiet())
    assert sum(calls) == 64 + 32  # every train and test image went through it
    model.eval()
    with torch.no_grad():  # oracle: the test loss by hand
        total = sum(F.nll_loss(model(x), y, reduction="sum").item() for x, y in test)
    assert history.test_loss[-1] == pytest.approx(total / 32, rel=1e-5)
    h2 = train_test_loop(LogSoftmaxNet(), loaders(), "cpu", epochs=1, max_lr=0.1, criterion=nn.NLLLoss(), **quiet())
    assert len(h2) == 1


def test_criterion_errors_name_the_fix():
    with pytest.raises(TypeError, match=r"pass criterion=CrossEntropyLoss\(\)"):
        Trainer(Tiny(), loaders(), "cpu", epochs=1, lr=0.1, criterion=nn.CrossEntropyLoss, **quiet())
    with pytest.raises(ValueError, match="either criterion= or label_smoothing="):
        Trainer(Tiny(), loaders(), "cpu", epochs=1, lr=0.1, criterion=nn.CrossEntropyLoss(),
                label_smoothing=0.1, **quiet())
    with pytest.raises(TypeError, match="callable"):
        Trainer(Tiny(), loaders(), "cpu", epochs=1, lr=0.1, criterion="nll", **quiet())
