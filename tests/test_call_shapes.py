"""main.py takes what the course notebooks pass: loaders + classes, (model, device, loaders, ...), lists, old names."""

from __future__ import annotations

import albumentations as A
import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from woollylib import main
from woollylib.preloading import channel_stats
from woollylib.preloading.walk import NO_NORMALIZE, normalize_stats
from woollylib.utils import metrics

matplotlib.use("Agg")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def data():
    return main.download_data("digits", batch_size=32, seed=0, verbose=False)


@pytest.fixture(scope="module")
def trained(data):
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    history = main.train_test_loop(model, "cpu", data.train_loader, data.test_loader, 0.3, 2, seed=0,
                                   progress=False, verbose=False)
    return model, history


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


class UserDataset(Dataset):
    """A course notebook's own dataset: uint8 images through an albumentations Compose with Normalize."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(image=self.images[i])["image"], int(self.labels[i])


def test_download_data_unpacks_like_the_course_notebooks(data):
    train_data, test_data, train_loader, test_loader, classes = data
    assert train_loader is data.train_loader and test_loader is data.test_loader
    assert train_data is data.train_loader.dataset and len(test_data) == 360
    assert classes == data.classes
    device_data = main.download_data("digits", batch_size=64, loader="device", augment=None, verbose=False)
    train_src, *_ = device_data
    assert train_src is device_data.train_source


def test_normalize_stats_read_from_albumentations_and_torchvision_pipelines():
    import torchvision.transforms as T

    compose = A.Compose([A.HorizontalFlip(), A.Normalize(mean=MEAN, std=STD), ToTensorV2()])
    assert normalize_stats(compose) == (MEAN, STD)
    assert normalize_stats(T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])) == (MEAN, STD)
    loader = DataLoader(UserDataset(np.zeros((4, 8, 8, 3), np.uint8), [0] * 4, compose), batch_size=2)
    assert normalize_stats(loader) == (MEAN, STD)
    assert normalize_stats(UserDataset([], [], A.Compose([ToTensorV2()]))) == NO_NORMALIZE
    assert normalize_stats(TensorDataset(torch.zeros(2, 3, 4, 4))) is None


def test_show_functions_take_a_loader_and_classes(data):
    names = [f"digit {i}" for i in range(10)]
    fig = main.show_random_samples(data.train_loader, names)
    assert isinstance(fig, Figure) and len(titles(fig)) == 16 and all(t.startswith("digit ") for t in titles(fig))
    fig = main.show_random_samples(data, names, 8)  # a bundle with other class names
    assert len(titles(fig)) == 8 and all(t.startswith("digit ") for t in titles(fig))
    assert len(titles(main.show_random_samples(data, 4))) == 4  # the old (data, n) still works
    fig = main.show_class_samples(data.test_loader, names, 2)
    assert [ax.get_ylabel().split("\n")[0] for ax in fig.axes if ax.get_ylabel()] == names
    fig = main.show_image_rgb(data.test_loader, 3)
    label = data.test_source.labels[3]
    assert f"image 3 ({label})" in fig.get_suptitle()
    # a DataLoader over a user dataset: batches de-normalised with the Normalize found in its transform
    src = data.test_source
    compose = A.Compose([A.Normalize(mean=MEAN, std=STD), ToTensorV2()])
    loader = DataLoader(UserDataset(src.images[:20], src.labels[:20], compose), batch_size=8)
    fig = main.show_image_rgb(loader, 2, names)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown, src.images[2] / 255.0, atol=1e-5)  # oracle: the raw pixels
    assert f"({names[int(src.labels[2])]})" in fig.get_suptitle()


def test_unknown_normalisation_says_what_to_pass(data):
    x, y = next(iter(data.test_loader))
    plain = DataLoader(TensorDataset(x, y), batch_size=16)
    with pytest.raises(ValueError, match=r"cannot tell how the images of a DataLoader were normalised.*mean="):
        main.show_random_samples(plain, data.classes)
    fig = main.show_random_samples(plain, data.classes, 4, mean=data.mean, std=data.std)
    assert len(titles(fig)) == 4
    with pytest.raises(TypeError, match="classes="):
        main.show_random_samples(data, classes=[1, 2, 3])


def test_train_test_loop_conventional_order_matches_the_bundle_call(data, trained):
    _, history = trained
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    again = main.train_test_loop(model, data, "cpu", max_lr=0.3, epochs=2, seed=0, progress=False, verbose=False)
    assert again.test_acc == history.test_acc and again.train_loss == pytest.approx(history.train_loss)
    assert history.test_acc[-1] > 50  # it learned (10 classes: chance is 10%)


def test_train_test_loop_with_optimizer_scheduler_and_criterion_objects(data):
    from torch.optim.lr_scheduler import OneCycleLR

    torch.manual_seed(0)
    model = nn.Sequential(main.select_model("compact", "cpu", seed=0, summary=False), nn.LogSoftmax(dim=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    EPOCHS = 1
    sched = OneCycleLR(opt, max_lr=0.2, epochs=EPOCHS, steps_per_epoch=len(data.train_loader))
    history = main.train_test_loop(model, "cpu", data.train_loader, data.test_loader, EPOCHS, opt, sched,
                                   F.nll_loss, progress=False, verbose=False)
    assert max(history.lr) == pytest.approx(0.2, rel=0.02) and len(history.lr) == len(data.train_loader)


def test_train_test_loop_call_shape_errors_show_the_call(data, trained):
    model, _ = trained
    # the canonical shape has no default number of epochs (the course's loaders shape trains its 20: see
    # test_the_course_keywords_and_defaults_of_train_test_loop)
    with pytest.raises(TypeError, match=r"needs the number of epochs.*epochs=24.*train_test_loop\(model, device"):
        main.train_test_loop(model, data, "cpu", 0.1)
    with pytest.raises(TypeError, match=r"two values for epochs: 2 \(argument 5\) and 3 \(argument 6\)"):
        main.train_test_loop(model, "cpu", data.train_loader, data.test_loader, 2, 3)
    with pytest.raises(TypeError, match="got 1 loader"):
        main.train_test_loop(model, "cpu", data.train_loader, 0.1, 2)
    with pytest.raises(TypeError, match=r"got 'sgd' as argument 3, which is none of: data, device"):
        main.train_test_loop(model, data, "sgd", epochs=1)
    with pytest.raises(ValueError, match="pass only one"):
        main.train_test_loop(model, data, "cpu", 2, epochs=2, EPOCHS=3)


def test_show_accuracy_loss_takes_the_four_lists(trained):
    _, history = trained
    fig = main.show_accuracy_loss(history.train_loss, history.train_acc, history.test_loss, history.test_acc)
    assert isinstance(fig, Figure)
    # per-batch train lists (3 per epoch) are averaged per epoch
    fig = main.show_accuracy_loss([3.0, 2.0, 1.0, 0.9, 0.8, 0.7], [10, 20, 30, 40, 50, 60], [1.5, 0.6], [40, 70])
    train_line = fig.axes[0].lines[0]
    assert list(train_line.get_ydata()) == pytest.approx([2.0, 0.8])
    with pytest.raises(ValueError, match="one value per epoch"):
        main.show_accuracy_loss([1, 2, 3], [1, 2, 3], [1, 2], [1, 2])
    with pytest.raises(TypeError, match="four lists"):
        main.show_accuracy_loss([1, 2], [1, 2])


def test_plot_misclassified_course_call_with_grid_and_grad_cam(data, trained):
    model, _ = trained
    probs = metrics.predict(model, data.test_loader, "cpu")
    wrong = int((probs.preds != probs.labels).sum())
    assert wrong >= 20
    fig = main.plot_misclassified(model, data.test_loader, data.classes, "cpu", no_misclf=20, plot_size=(4, 5))
    assert sum(ax.has_data() for ax in fig.axes) == 20 and len(fig.axes) == 20
    fig = main.plot_misclassified(model, data.test_loader, data.classes, "cpu", no_misclf=20, plot_size=(4, 5),
                                  grad_CAM=True)
    assert len(fig.axes) == 4 * 3 * 5  # 4 blocks of (images, layer2, layer3) rows, 5 columns
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "layer2", "layer3"] * 4
    fig = main.plot_misclassified(model, data, "cpu", no_misclf=3, grad_CAM=True, layers=model.layer3,
                                  target="true")
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "layer3"]
    assert "true class" in fig.get_suptitle()
    with pytest.raises(ValueError, match=r"holds 20 images but no_misclf=25; use plot_size=\(5, 5\)"):
        main.plot_misclassified(model, data, no_misclf=25, plot_size=(4, 5))
    with pytest.raises(ValueError, match="not a part of this"):
        main.plot_misclassified(model, data, grad_CAM=True, layers=nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match=r"two values for device.*plot_misclassified\(model, test_loader, classes"):
        main.plot_misclassified(model, data, "cpu", "cpu")


def test_metric_figures_take_loader_and_classes(data, trained):
    model, _ = trained
    names = [f"d{i}" for i in range(10)]
    fig = main.show_confusion_matrix(model, data.test_loader, names, "cpu")
    cm = metrics.confusion_matrix(model, data.test_loader, "cpu")
    assert (fig.confusion_matrix == cm).all()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    fig = main.show_confusion_matrix(model, "cpu", data.test_loader)  # (model, device, loader)
    assert (fig.confusion_matrix == cm).all()
    assert isinstance(main.show_per_class_accuracy(model, data.test_loader, names), Figure)


def test_plot_confusion_matrix_accepts_a_tensor():
    from woollylib.utils import visualize as viz

    cm = torch.tensor([[5, 1], [2, 7]])
    fig = viz.plot_confusion_matrix(cm, classes=["a", "b"])
    assert (fig.confusion_matrix == cm.numpy()).all()
    assert isinstance(viz.plot_per_class_accuracy(cm), Figure)


def test_select_model_with_only_a_device():
    model = main.select_model("cpu", summary=False)
    assert model.woollylib_spec["name"] == main.DEFAULT_MODEL == "custom_resnet"
    assert main.select_model(torch.device("cpu"), summary=False).woollylib_spec["name"] == "custom_resnet"
    assert main.select_model("compact", "cpu", summary=False).woollylib_spec["name"] == "compact"
    with pytest.raises(TypeError, match="select_model\\('custom_resnet', device\\)"):
        main.select_model("cpu", "compact", summary=False)


def test_course_helper_names(data, trained, capsys):
    model, _ = trained
    train_data, _, _, test_loader, classes = data
    wrong = main.get_misclassified_data(model, "cpu", test_loader)
    probs = metrics.predict(model, test_loader, "cpu")
    assert len(wrong) == int((probs.preds != probs.labels).sum())
    assert list(wrong.pred) == probs.preds[probs.preds != probs.labels].tolist()
    assert len(titles(main.display_cifar_data_samples(train_data, 6, classes))) == 6
    assert isinstance(main.visualize_cifar_augmentation(train_data, data.train_transform), Figure)
    stats = main.get_cifar_statistics(train_data)
    assert stats["mean"] == pytest.approx(data.mean)
    assert "[Train]" in capsys.readouterr().out
    assert main.get_cifar_statistics(data, "Test")["mean"] == pytest.approx(
        channel_stats(data.test_source, verbose=False)["mean"])
    import woollylib.main as m

    star = {name: getattr(m, name) for name in m.__all__}
    assert {"get_misclassified_data", "display_cifar_data_samples", "visualize_cifar_augmentation",
            "get_cifar_statistics", "train_test_loop", "select_device"} <= set(star)


def test_channel_stats_of_a_torchvision_dataset():
    from torchvision.datasets import VisionDataset

    class Cifar(VisionDataset):  # the shape of torchvision.datasets.CIFAR10: .data uint8 NHWC, .targets
        def __init__(self):
            super().__init__(root=".")
            self.data = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
            self.targets = [0, 1, 0, 1, 0, 1]

    ds = Cifar()
    assert channel_stats(ds, verbose=False)["mean"] == pytest.approx(tuple(ds.data.reshape(-1, 3).mean(0) / 255))

    class Mnist(VisionDataset):
        def __init__(self):
            super().__init__(root=".")
            self.data = torch.zeros(3, 28, 28, dtype=torch.uint8)

    with pytest.raises(ValueError, match=r"RGB images of shape \(N, H, W, 3\), got \(3, 28, 28\)"):
        channel_stats(Mnist(), verbose=False)
    with pytest.raises(TypeError, match="needs images.*got a TensorDataset"):
        channel_stats(TensorDataset(torch.zeros(2, 3)), verbose=False)


def test_get_optimizer_with_the_model_first_names_the_call():
    from woollylib.bp import get_optimizer

    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(30)])
    with pytest.raises(TypeError) as info:
        get_optimizer(model, "sgd", lr=0.1)
    text = str(info.value)
    assert "get_optimizer('sgd', model, lr=0.05)" in text and "Sequential model" in text
    assert "Linear(" not in text and len(text) < 300


def test_grad_cam_on_a_1x1_map_warns_and_names_a_larger_stage():
    import torchvision

    from woollylib.utils.gradcam import compute_cams

    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match=r"'layer4' has a 1x1 feature map on 32x32 images.*'layer3' \(2x2\)"):
        cams = compute_cams(model, x, stages=["layer4"])
    assert cams["layer4"].max() == 0  # what the warning is about
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_cams(model, x, stages=["layer3"])  # a 2x2 map: no warning


def test_grad_cam_on_a_stage_without_gradients_warns_that_the_maps_are_constant():
    from torch import nn

    from woollylib.utils.gradcam import compute_cams

    class Detached(nn.Module):  # 'features' (8x8 maps) does not reach the logits: its gradients are zero
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))

        def forward(self, x):
            return self.head(x) + 0 * self.features(x).sum()

    x = torch.randn(3, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"'features' gave a constant heatmap for 3 of 3 image\(s\)"):
        cams = compute_cams(Detached(), x, stages=["features"])
    assert all(c.max() == c.min() for c in cams["features"])  # what the warning is about


def test_python_dash_m_woollylib_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "woollylib", "--help"], capture_output=True, text=True, check=True)
    assert "usage: woollylib" in out.stdout and "train" in out.stdout


def test_conventional_resnet_constructors():
    from woollylib.models import count_parameters
    from woollylib.models.resnet import ResNet18, ResNet34

    assert count_parameters(ResNet18())["total"] == 11_173_962
    assert count_parameters(ResNet34())["total"] == 21_282_122
    assert ResNet18(num_classes=5).woollylib_spec["num_classes"] == 5


def test_minimum_rule_is_a_tenth_of_the_lowest_loss_lr():
    from woollylib.scheduler import DEFAULT_SUGGESTION, suggest_lr

    lrs = [10.0 ** (i - 11) for i in range(12)]  # one decade per point
    losses = [5, 5, 4.9, 4, 3, 2.5, 2, 1.5, 1.0, 1.2, 3, 9]  # lowest at index 8
    assert suggest_lr(lrs, losses, "minimum", skip_start=0, skip_end=0) == (lrs[7], 7)
    assert DEFAULT_SUGGESTION == "minimum"  # the rule benchmarks/lr_rules.py measured best


def test_minimum_rule_on_a_curve_without_descent_warns_and_reads_the_valley():
    from woollylib.scheduler import suggest_lr

    lrs = [10.0 ** (i - 11) for i in range(12)]
    rising = [1.0, 1.1, 1.2, 1.3, 1.35, 1.2, 1.25, 1.4, 1.5, 1.6, 2, 3]
    with pytest.warns(UserWarning, match="never fell below its value at the start"):
        got = suggest_lr(lrs, rising, "minimum", skip_start=0, skip_end=0)
    assert got == suggest_lr(lrs, rising, "valley", skip_start=0, skip_end=0)


def test_the_course_keywords_and_defaults_of_train_test_loop(capsys):
    """The course's own cell: ``train_test_loop(model, device, train_loader, test_loader, max_LR,
    lr_scheduler='OneCycle')`` with its default of 20 epochs when none is given."""
    from woollylib import course, main
    from woollylib.preloading import get_data, load_digits

    # 128 training images, batches of 64: the 20 epochs stay quick
    data = get_data((load_digits(True).subset(range(128)), load_digits(False).subset(range(64))), batch_size=64,
                    seed=0, verbose=False, augment="none", num_workers=0)
    train_loader, test_loader = data.train_loader, data.test_loader
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    history = main.train_test_loop(model, torch.device("cpu"), train_loader, test_loader, 0.05,
                                   lr_scheduler="OneCycle", progress=False, verbose=False)
    assert len(history) == course.COURSE_EPOCHS == 20 and "course's default of 20" in capsys.readouterr().out
    assert max(history.lr) == pytest.approx(0.05)  # the one-cycle peak
    h = main.train_test_loop(model, torch.device("cpu"), train_loader, test_loader, 0.05, 1,
                             lr_scheduler="ReduceLROnPlateau", progress=False, verbose=False)
    assert len(h) == 1 and h.lr[0] == pytest.approx(0.05)  # plateau: constant within the epoch
    with pytest.raises(ValueError, match="lr_scheduler='Cosine'.*'OneCycle'"):
        main.train_test_loop(model, torch.device("cpu"), train_loader, test_loader, 0.05, 1, lr_scheduler="Cosine")
    with pytest.raises(TypeError, match="needs the number of epochs"):  # the canonical shape has no default
        main.train_test_loop(model, data, "cpu", max_lr=0.05)


def test_the_course_helpers_select_cuda_dataloader_args_and_aliases(tmp_path):
    from woollylib import main

    assert main.select_cuda(verbose=False) == main.select_device(verbose=False)
    data = main.download_data("digits", dataloader_args=dict(shuffle=True, batch_size=32, num_workers=0,  # noqa: C408 (the cell)
                                                              pin_memory=True), verbose=False)
    assert next(iter(data.train_loader))[0].shape[0] == 32
    with pytest.raises(TypeError, match="dataloader_args has \\['drop_last'\\]"):
        main.download_data("digits", dataloader_args={"drop_last": True}, verbose=False)
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    fig = main.visualize_confusion_matrix(model, data, "cpu", save_path=tmp_path / "cm.png")
    assert fig.axes and (tmp_path / "cm.png").stat().st_size > 1000
    fig = main.display_cifar_misclassified_data(model, data, "cpu", no_misclf=4)
    assert len([ax for ax in fig.axes if ax.images]) == 4


def test_ricap_without_a_value_is_the_papers_beta():
    from woollylib.cli import get_args_parser

    parser = get_args_parser()
    assert parser.parse_args(["train", "--ricap"]).ricap_beta == 0.3
    assert parser.parse_args(["train", "--ricap", "0.5", "--epochs", "2"]).ricap_beta == 0.5
    assert parser.parse_args(["train", "--epochs", "2"]).ricap_beta is None
