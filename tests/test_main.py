"""The notebook API on digits: Figures (no pyplot leaks), aliases, bad input, values returned, run files."""

from __future__ import annotations

import json

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from woollylib import main
from woollylib.training import History
from woollylib.utils import metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend choice

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    return main.download_data("digits", batch_size=64, seed=0, verbose=False, device="cpu")  # compared on the CPU


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """compact net after 1 epoch through main.train_test_loop (EPOCHS alias), with a run directory."""
    out = tmp_path_factory.mktemp("run") / "digits"
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    history = main.train_test_loop(model, data, "cpu", max_lr=0.2, EPOCHS=1, out_dir=out, seed=0,
                                   progress=False, verbose=False)
    return model, history, out


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


def test_download_data_digits_defaults_keep_digits_readable(data):
    names = [type(t).__name__ for t in data.train_transform.transforms]
    assert "HorizontalFlip" not in names and "CoarseDropout" not in names
    assert "Rotate" in names and names[-2:] == ["Normalize", "ToTensorV2"]
    images, labels = next(iter(data.train_loader))
    assert images.shape == (64, 3, 32, 32) and labels.dtype == torch.int64
    assert data.classes == [str(d) for d in range(10)]


def test_show_functions_return_figures_write_pngs_and_leak_no_pyplot(data, trained, tmp_path):
    model, history, _ = trained
    before = plt.get_fignums()
    calls = {
        "samples": lambda p: main.show_random_samples(data, n=8, seed=0, save_path=p),
        "classes": lambda p: main.show_class_samples(data, per_class=3, seed=0, save_path=p),
        "rgb": lambda p: main.show_image_rgb(data, index=5, save_path=p),
        "augment": lambda p: main.show_augmentations(data, n_images=2, save_path=p),
        "curves": lambda p: main.show_accuracy_loss(history, save_path=p),
        "schedule": lambda p: main.show_lr_schedule(history, save_path=p),
        "per_class": lambda p: main.show_per_class_accuracy(model, data, save_path=p),
    }
    for name, call in calls.items():
        fig = call(tmp_path / f"{name}.png")
        assert isinstance(fig, Figure), name
        assert is_png(tmp_path / f"{name}.png"), name
    # a returned figure is pyplot's current one (plt.savefig/plt.show act on it); only the latest stays open
    assert len(set(plt.get_fignums()) - set(before)) <= 1
    # the channel figure names the image it shows
    label = data.train_source.labels[5]
    assert f"train image 5 ({label})" in main.show_image_rgb(data, index=5).get_suptitle()
    with pytest.raises(ValueError, match="out of range"):
        main.show_image_rgb(data, index=10**6)


def test_select_model_prints_summary_and_keeps_its_recipe(data, capsys):
    model = main.select_model("compact", "cpu", data=data, seed=0, width=16)
    printed = capsys.readouterr().out
    assert "Total params" in printed and "Trainable params" in printed
    assert model.woollylib_spec == {"name": "compact", "options": {"width": 16}, "num_classes": 10}
    assert next(model.parameters()).device.type == "cpu"
    same = main.select_model("compact", "cpu", data=data, seed=0, width=16, summary=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    with pytest.raises(ValueError, match="Known models"):
        main.select_model("resnet99", "cpu", summary=False)


def test_train_test_loop_aliases_and_run_files(data, trained):
    model, history, out = trained
    assert isinstance(history, History) and len(history) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == "compact" and config["settings"]["schedule"]["epochs"] == 1
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["samples"] == 360
    assert saved["accuracy"] == pytest.approx(metrics.predict(model, data.test_loader, "cpu").accuracy)
    assert saved["accuracy"] == pytest.approx(history.test_acc[-1], abs=1e-6)
    with pytest.raises(ValueError, match="pass only one"):
        main.train_test_loop(model, data, "cpu", epochs=2, EPOCHS=3, max_lr=0.1)


def test_plot_misclassified_counts_and_aliases(data, trained):
    model, _, _ = trained
    probs = metrics.predict(model, data.test_loader, "cpu")
    wrong = int((probs.preds != probs.labels).sum())
    assert 0 < wrong < 360
    fig = main.plot_misclassified(model, data, no_misclf=3)
    assert sum(ax.has_data() for ax in fig.axes) == 3
    assert main.plot_misclassified(model, data, n=2).get_suptitle().startswith("2 misclassified")
    # more asked than exist: all that exist, and the title says so
    with pytest.warns(UserWarning, match=f"only {wrong} exist"):
        fig = main.plot_misclassified(model, data, no_misclf=1000)
    assert sum(ax.has_data() for ax in fig.axes) == wrong
    assert f"only {wrong} exist" in fig.get_suptitle()
    with pytest.raises(ValueError, match="positive integer"):
        main.plot_misclassified(model, data, no_misclf=0)


def test_plot_misclassified_grad_cam_rows_per_layer_and_bad_layer(data, trained, tmp_path):
    model, _, _ = trained
    fig = main.plot_misclassified(model, data, "cpu", no_misclf=4, grad_CAM=True, save_path=tmp_path / "cam.png")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["image", "layer2", "layer3"]  # default: the last two stages
    assert len(fig.axes) == 3 * 4 and is_png(tmp_path / "cam.png")
    fig = main.plot_misclassified(model, data, no_misclf=2, gradcam=True, layers=["layer1"], method="gradcam++")
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "layer1"]
    with pytest.raises(ValueError, match=r"no stage 'layer4'; the stages it has are: layer1, layer2, layer3"):
        main.plot_misclassified(model, data, grad_CAM=True, layers=["layer3", "layer4"])


def test_confusion_matrix_counts_the_whole_test_set(data, trained):
    model, _, _ = trained
    fig = main.show_confusion_matrix(model, data)
    cm = fig.confusion_matrix
    probs = metrics.predict(model, data.test_loader, "cpu")
    assert cm.sum() == 360 and cm.trace() == int((probs.preds == probs.labels).sum())


def test_max_lr_returns_the_suggestion_and_leaves_the_model(data, tmp_path, capsys):
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lr = main.max_lr(model, data, num_iter=20, save_path=tmp_path / "lr.png")
    assert isinstance(lr, float) and lr > 0
    assert f"{lr:.3g}" in capsys.readouterr().out
    assert is_png(tmp_path / "lr.png")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_compare_optimizers_returns_histories_from_the_same_start(data, tmp_path):
    model = main.select_model("compact", "cpu", data=data, seed=0, summary=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    histories = main.compare_optimizers(model, data, optimizers=["sgd", "adam"], EPOCHS=1,
                                        save_path=tmp_path / "cmp.png", verbose=False)
    assert list(histories) == ["sgd", "adam"] and all(len(h.test_acc) == 1 for h in histories.values())
    assert histories["sgd"].test_acc != histories["adam"].test_acc
    assert is_png(tmp_path / "cmp.png")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_show_adversarial_figure_and_bad_input(data, trained, tmp_path):
    model, _, _ = trained
    fig = main.show_adversarial(model, data, epsilon=0.1, n=3, save_path=tmp_path / "adv.png")
    assert is_png(tmp_path / "adv.png") and "FGSM" in fig.get_suptitle()
    assert len(fig.axes) == 5 * 3  # clean, adversarial, perturbation, 2 Grad-CAM rows
    # the shown images were classified correctly before the attack
    assert "fooled" in fig.get_suptitle() and "of 3 correctly classified" in fig.get_suptitle()
    with pytest.raises(ValueError, match="epsilon"):
        main.show_adversarial(model, data, epsilon=-0.1)
    with pytest.raises(ValueError, match=r"stages it has are: layer1, layer2, layer3. Pass some of them as layer="):
        main.show_adversarial(model, data, layer="layer9")


def test_figures_display_once_in_a_kernel_without_pyplot(monkeypatch):
    """A stub kernel shell: main registers one PNG formatter for Figure (kept when one exists)."""
    from IPython.core.formatters import PNGFormatter

    png = PNGFormatter()

    class Shell:
        kernel = object()
        display_formatter = type("F", (), {"formatters": {"image/png": png}})()

    monkeypatch.setattr(main, "_kernel", lambda: Shell())
    fig = main.show_lr_schedule(History(lr=[0.1, 0.2, 0.1]))
    assert png(fig)[:8] == PNG
    png.for_type(Figure, lambda f: b"inline backend")  # e.g. matplotlib-inline's formatter for pyplot's figures
    main.show_lr_schedule(History(lr=[0.1, 0.2]))
    assert png(fig)[:8] == PNG  # woollylib's figures keep their one-PNG formatter ...
    assert png(Figure()) == b"inline backend"  # ... and the user's own figures keep the backend's


def test_grad_cam_of_a_model_without_stage_names_uses_its_last_conv_stage(data):
    """torchvision's resnet18 declares no stage_names: the default layer is its last stage with a map larger
    than 1x1 at 32 px (layer3, 2x2; layer4 is 1x1), as pytorch-grad-cam users pick it, and it is said."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    fig = main.plot_misclassified(model, data, "cpu", no_misclf=2, grad_CAM=True)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["image", "layer3"]
    with pytest.raises(ValueError, match=r"no stage 'layer5'.*layer1, layer2, layer3, layer4.*closest name is 'layer"):
        main.plot_misclassified(model, data, "cpu", no_misclf=2, grad_CAM=True, layers=["layer5"])
