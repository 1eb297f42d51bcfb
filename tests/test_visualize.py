"""Every figure writes a real PNG headless, with titles/labels; counts and curves match the data.

Also covers the optimizer comparison (utils.compare). Runs on the digits data (offline).
"""

from __future__ import annotations

import copy
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from woollylib.bp import evaluate, get_optimizer, train_epoch
from woollylib.models import get_model
from woollylib.preloading import get_data
from woollylib.scheduler import find_lr, one_cycle
from woollylib.training import History
from woollylib.utils import metrics
from woollylib.utils import visualize as viz
from woollylib.utils.compare import compare_optimizers

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data():
    # the CIFAR preset on digits (digits' own default is no augmentation): a gallery with every step
    return get_data("digits", batch_size=64, seed=0, verbose=False, augment="cifar")


@pytest.fixture(scope="module")
def model(data):
    """The registered compact net after one epoch: mostly right, some mistakes to show."""
    torch.manual_seed(0)
    net = get_model("compact", num_classes=10)
    opt = get_optimizer("adam", net, lr=3e-3)
    train_epoch(net, data.train_loader, opt, device="cpu", progress=False)
    net.eval()
    return net


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.MaxPool2d(4))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.layer1(x).mean(dim=(2, 3)))


def texts(fig: Figure) -> str:
    """Every title, axis label, tick label and text of a figure, joined."""
    parts = [fig.get_suptitle()]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts + ax.get_xticklabels() + ax.get_yticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            parts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(p for p in parts if p)


def check_png(fig, path, min_bytes=4000):
    assert isinstance(fig, Figure)
    assert path.is_file() and path.stat().st_size > min_bytes, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.get_suptitle() or any(ax.get_title() for ax in fig.axes)


def images_in(fig):
    return [im.get_array() for ax in fig.axes for im in ax.get_images()]


def test_sample_grids_and_channels(data, tmp_path):
    fig = viz.plot_random_samples(data, n=12, seed=0, save_path=tmp_path / "a" / "random.png")
    check_png(fig, tmp_path / "a" / "random.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert len(titles) == 12 and set(titles) <= set(data.classes)

    fig = viz.plot_class_samples(data, per_class=4, seed=0, save_path=tmp_path / "class.png")
    check_png(fig, tmp_path / "class.png")
    labels = [ax.get_ylabel().split("\n")[0] for ax in fig.axes if ax.get_ylabel()]
    assert labels == data.classes
    counts = np.bincount(data.train_source.labels)
    assert f"{data.classes[3]}\n({counts[3]})" in texts(fig)

    image = data.train_source.images[7]
    fig = viz.plot_image_channels(image, save_path=tmp_path / "rgb.png")
    check_png(fig, tmp_path / "rgb.png")
    shown = images_in(fig)
    np.testing.assert_allclose(shown[0], image / 255.0, atol=1e-6)  # pixel space
    for c in range(3):  # channel c alone, others zero
        assert np.allclose(shown[c + 1][..., c], image[..., c] / 255.0, atol=1e-6)
        assert np.all(np.delete(shown[c + 1], c, axis=-1) == 0)
    assert "Red channel" in texts(fig) and "Blue channel" in texts(fig)


def test_augmentation_gallery_in_pixel_space(data, tmp_path):
    fig = viz.plot_augmentations(data, n_images=3, seed=1, save_path=tmp_path / "aug.png")
    check_png(fig, tmp_path / "aug.png")
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    names = [r.split("\n")[0] for r in rows]
    assert names == ["original", "PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout",
                     "all together"]
    shown = images_in(fig)
    assert len(shown) == 3 * 6
    for arr in shown:
        assert 0.0 <= float(np.min(arr)) and float(np.max(arr)) <= 1.0
    # the de-normalised full pipeline looks like pixels: digits background near 0, strokes near 1
    full = np.stack([np.asarray(a) for a in shown[-3:]])
    assert full.shape[1:] == (32, 32, 3) and full.max() > 0.8 and np.median(full) < 0.5
    assert np.asarray(shown[3]).shape == (40, 40, 3)  # PadIfNeeded alone pads 32 -> 40


def test_history_lr_and_optimizer_plots(tmp_path):
    h = History()
    for e in range(5):
        h.append(train_loss=2 / (e + 1), train_acc=50 + 9 * e, test_loss=2.2 / (e + 1),
                 test_acc=45 + 10 * e - (e == 4) * 15, lrs=[0.01 * (e + 1)] * 3, epoch_time=1.0)
    for i, hist in enumerate((h, h.to_dict())):
        fig = viz.plot_history(hist, save_path=tmp_path / f"hist{i}.png")
        check_png(fig, tmp_path / f"hist{i}.png")
        text = texts(fig)
        assert "epoch" in text and "Loss" in text and "Accuracy" in text
        assert "peak test 75.00% @ epoch 4" in text and "chosen on the test set" in text
        lines = fig.axes[1].get_lines()
        np.testing.assert_allclose(lines[1].get_ydata(), h.test_acc)
    v = History()  # with a validation split the star is the epoch chosen on validation
    for e in range(4):
        v.append(train_loss=1.0, train_acc=50, test_loss=1.0, test_acc=[60, 80, 70, 65][e], lrs=[0.1],
                 epoch_time=1.0, val_loss=1.0, val_acc=[50, 55, 70, 60][e])
    fig = viz.plot_history(v, save_path=tmp_path / "val.png")
    text = texts(fig)
    assert "chosen on validation: epoch 3" in text and "test 70.00%" in text and "validation" in text
    np.testing.assert_allclose(fig.axes[1].get_lines()[1].get_ydata(), v.val_acc)

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = one_cycle(opt, max_lr=0.1, epochs=3, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    fig = viz.plot_lr_schedule(lrs, steps_per_epoch=10, save_path=tmp_path / "sched.png")
    check_png(fig, tmp_path / "sched.png")
    assert "epoch" in texts(fig) and "max 0.1" in texts(fig)

    hists = {"sgd": h, "adam": h.to_dict()}
    fig = viz.plot_optimizer_comparison(hists, save_path=tmp_path / "opt.png")
    check_png(fig, tmp_path / "opt.png")
    assert len(fig.axes) == 4 and all(len(ax.get_lines()) == 2 for ax in fig.axes)
    assert "sgd" in texts(fig) and "adam" in texts(fig)


def test_lr_finder_marks_suggestion(data, tmp_path):
    torch.manual_seed(0)
    result = find_lr(Tiny(), data.train_loader, device="cpu", start_lr=1e-4, end_lr=10,
                     num_iter=30, verbose=False)
    fig = viz.plot_lr_finder(result, save_path=tmp_path / "lr.png")
    check_png(fig, tmp_path / "lr.png")
    marks = [ln for ln in fig.axes[0].get_lines() if list(ln.get_xdata()) == [result.suggestion]]
    assert marks, "the suggested lr is marked on the curve"
    assert f"{result.suggestion:.2e}" in texts(fig) and fig.axes[0].get_xscale() == "log"


def test_misclassified_grid_and_fewer_than_asked(model, data, tmp_path):
    fig = viz.plot_misclassified(model, data, n=6, save_path=tmp_path / "wrong.png")
    check_png(fig, tmp_path / "wrong.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert len(titles) == 6 and all(t.startswith("true: ") and "\npred: " in t for t in titles)
    wrong = metrics.misclassified(model, data, limit=6)
    assert titles[0] == (f"true: {data.classes[wrong.true[0]]}\npred: "
                         f"{data.classes[wrong.pred[0]]} ({100 * wrong.confidence[0]:.0f}%)")
    np.testing.assert_allclose(images_in(fig)[0], wrong.images[0])  # de-normalised pixels

    few = copy.copy(wrong)
    few.images, few.inputs, few.true, few.pred, few.confidence = (
        wrong.images[:3], wrong.inputs[:3], wrong.true[:3], wrong.pred[:3], wrong.confidence[:3])
    with pytest.warns(UserWarning, match="only 3 exist"):
        fig = viz.plot_misclassified(few, n=10, classes=data.classes)
    assert len(images_in(fig)) == 3 and "only 3 exist" in fig.get_suptitle()

    none = copy.copy(few)
    none.images, none.true = wrong.images[:0], wrong.true[:0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = viz.plot_misclassified(none, n=4, save_path=tmp_path / "none.png")
    assert "No misclassified" in texts(fig) and (tmp_path / "none.png").stat().st_size > 1000


def test_gradcam_grid_one_row_per_stage(model, data, tmp_path):
    fig = viz.plot_gradcam(model, data, stages=("layer2", "layer3"), n=4,
                           save_path=tmp_path / "cam.png")
    check_png(fig, tmp_path / "cam.png")
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "layer2", "layer3"]
    assert len(images_in(fig)) == 12 and "gradcam" in fig.get_suptitle()
    assert not model.training
    with pytest.raises(ValueError, match="layer1, layer2, layer3"):
        viz.plot_gradcam(model, data, stages=("layer4",), n=2)
    fig = viz.plot_gradcam(model, data, n=2)  # no stages: the default stage, said in the title
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "layer3"]
    assert "stage layer3 (the default" in fig.get_suptitle()


def test_confusion_matrix_counts_whole_test_set(model, data, tmp_path):
    fig = viz.plot_confusion_matrix(model, data, save_path=tmp_path / "cm.png")
    check_png(fig, tmp_path / "cm.png")
    n = len(data.test_source)
    counts = [int(t.get_text()) for t in fig.axes[0].texts]
    assert len(counts) == 100 and sum(counts) == n == 360
    assert f"N = {n}" in fig.get_suptitle()
    # independent: predictions batch by batch over the whole test loader
    expected = np.zeros((10, 10), int)
    with torch.no_grad():
        for x, y in data.test_loader:
            np.add.at(expected, (y.numpy(), model(x).argmax(1).numpy()), 1)
    np.testing.assert_array_equal(np.array(counts).reshape(10, 10), expected)
    row_pct = [float(t.get_text()) for t in fig.axes[1].texts]  # axes: counts, pct, 2 colorbars
    assert len(row_pct) == 100
    assert "predicted class" in texts(fig) and "true class" in texts(fig)

    fig = viz.plot_per_class_accuracy(expected, classes=data.classes,
                                      save_path=tmp_path / "pc.png")
    check_png(fig, tmp_path / "pc.png")
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, 100 * np.diag(expected) / expected.sum(1))
    assert "accuracy (%)" in texts(fig) and "overall" in texts(fig)


def test_adversarial_figure(model, data, tmp_path):
    x, y = next(iter(data.test_loader))
    fig = viz.plot_adversarial(model, x[:5], y[:5], data.mean, data.std, epsilon=16 / 255,
                               classes=data.classes, save_path=tmp_path / "adv.png")
    check_png(fig, tmp_path / "adv.png")
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert rows[:3] == ["clean", "adversarial", "perturbation"] and len(rows) == 5
    assert "FGSM" in fig.get_suptitle() and "eps = 16.0/255" in fig.get_suptitle()
    assert "correctly classified" in fig.get_suptitle()
    shown = images_in(fig)
    assert len(shown) == 25 and all(0 <= np.min(a) and np.max(a) <= 1 for a in shown)


def test_compare_optimizers_same_start_and_repeatable(data):
    torch.manual_seed(0)
    net = Tiny()
    before = copy.deepcopy(net.state_dict())
    kw = {"optimizers": ("sgd", "adam"), "epochs": 2, "device": "cpu", "verbose": False}
    a = compare_optimizers(net, data, **kw)
    b = compare_optimizers(net, data, **kw)
    assert list(a) == ["sgd", "adam"] and all(len(h.train_loss) == 2 for h in a.values())
    for name in a:  # same initial weights + same seed -> identical runs
        assert a[name].to_dict() | {"epoch_time": []} == b[name].to_dict() | {"epoch_time": []}
    assert a["sgd"].train_loss != a["adam"].train_loss
    for k, v in net.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k])
    # the sgd run equals training a copy by hand from the same weights with the same seed
    ref = copy.deepcopy(net)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        opt = get_optimizer("sgd", ref, lr=0.05, momentum=0.9)
        data.train_loader.set_epoch(0) if hasattr(data.train_loader, "set_epoch") else None
        first = train_epoch(ref, data.train_loader, opt, device="cpu", progress=False)
    assert first["loss"] == pytest.approx(a["sgd"].train_loss[0], rel=1e-6)
    assert evaluate(ref, data.test_loader, device="cpu")["loss"] == pytest.approx(
        a["sgd"].test_loss[0], rel=1e-6)
    with pytest.raises(ValueError, match="unknown optimizer"):
        compare_optimizers(net, data, optimizers=("lion",))


def test_figures_are_pyplot_current_without_accumulating(model, data, tmp_path):
    """A script (Agg): the returned figure is pyplot's current one, so plt.savefig writes it; only
    the latest woollylib figure stays in pyplot, however many are made; release() takes it out."""
    import matplotlib.pyplot as plt

    plt.close("all")  # whatever other test modules left behind is not ours to judge
    mine = plt.figure()  # the user's own figure is never closed by woollylib
    a = viz.plot_random_samples(data, save_path=tmp_path / "a.png")
    assert plt.gcf() is a
    b = viz.plot_confusion_matrix(model, data, "cpu", save_path=tmp_path / "b.png")
    plt.savefig(tmp_path / "b_plt.png")
    assert 0.6 < (tmp_path / "b_plt.png").stat().st_size / (tmp_path / "b.png").stat().st_size < 1.6
    c = viz.plot_lr_schedule([0.1, 0.2, 0.1], save_path=tmp_path / "c.png")
    assert plt.gcf() is c and plt.get_fignums() == [mine.number, c.number]
    b.savefig(tmp_path / "b_again.png")  # a figure out of pyplot is still a whole Figure
    assert (tmp_path / "b_again.png").stat().st_size > 4000
    assert viz.release(c) is c and plt.get_fignums() == [mine.number]
    plt.show()  # Agg: returns at once
    plt.close("all")
