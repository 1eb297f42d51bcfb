"""Grad-CAM: heatmaps match a direct computation; hooks, modes and grads are left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from woollylib.utils.gradcam import (
    compute_cams,
    list_cam_methods,
    overlay,
    resolve_stage,
)


class TinyNet(nn.Module):
    """Three conv stages (16x16 -> 8x8 -> 4x4 at 32x32 input) and a linear head."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(x.mean(dim=(2, 3)))


def oracle_gradcam(model, images, layer, targets=None):
    """Direct Grad-CAM: ReLU(sum_c mean_hw(dy/dA_c) * A_c), bilinear upsample, [0,1] per image."""
    acts = {}
    handle = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    model.eval()
    try:
        logits = model(images)
    finally:
        handle.remove()
    a = acts["a"]
    cls = logits.argmax(1) if targets is None else torch.as_tensor(targets)
    score = logits.gather(1, cls[:, None]).sum()
    (grads,) = torch.autograd.grad(score, a)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    return ((cam - lo) / (hi - lo + 1e-7)).detach().numpy()


@pytest.fixture
def net_and_images():
    torch.manual_seed(0)
    net = TinyNet()
    # warm the BatchNorm running stats so eval mode differs from train mode
    net.train()
    with torch.no_grad():
        net(torch.randn(64, 3, 32, 32))
    return net, torch.randn(6, 3, 32, 32)


@pytest.mark.parametrize("stage", ["layer1", "layer2", "layer3"])
def test_gradcam_matches_direct_computation(net_and_images, stage):
    net, x = net_and_images
    expected = oracle_gradcam(net, x, getattr(net, stage))
    got = compute_cams(net, x, stages=stage)[stage]
    assert got.shape == (6, 32, 32) and got.dtype == np.float32
    assert got.min() >= 0 and got.max() <= 1 + 1e-6
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_given_labels_and_several_stages_in_one_call(net_and_images):
    net, x = net_and_images
    labels = [0, 1, 2, 3, 4, 0]
    cams = compute_cams(net, x, stages=["layer2", "layer3"], targets=torch.tensor(labels))
    assert list(cams) == ["layer2", "layer3"]
    for stage in cams:
        expected = oracle_gradcam(net, x, getattr(net, stage), targets=labels)
        np.testing.assert_allclose(cams[stage], expected, atol=2e-3)
    # explaining another class gives another map
    pred = compute_cams(net, x, stages="layer3")["layer3"]
    assert np.abs(pred - cams["layer3"]).max() > 0.05


def test_state_restored_under_no_grad(net_and_images):
    net, x = net_and_images
    net.train()
    net.layer1[0].weight.requires_grad_(False)
    marker = torch.full_like(net.head.weight, 7.0)
    net.head.weight.grad = marker.clone()
    with torch.no_grad():
        cams = compute_cams(net, x, stages=("layer3",), method="gradcam++")
    assert cams["layer3"].shape == (6, 32, 32) and cams["layer3"].max() > 0.99
    assert net.training, "train mode must be restored"
    assert net.layer1[0].weight.requires_grad is False and net.head.weight.requires_grad is True
    assert torch.equal(net.head.weight.grad, marker), "the optimiser's gradients must be untouched"
    assert net.layer1[0].weight.grad is None
    for module in net.modules():  # every hook released
        assert not module._forward_hooks and not module._backward_hooks


@pytest.mark.parametrize("method", ["xgradcam", "eigencam", "layercam", "hirescam", "ScoreCAM",
                                    "ablation-cam"])
def test_other_methods_give_maps_in_unit_range(net_and_images, method):
    net, x = net_and_images
    cams = compute_cams(net, x[:2], stages="layer3", method=method)["layer3"]
    assert cams.shape == (2, 32, 32)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_dotted_path_and_module_stage(net_and_images):
    net, x = net_and_images
    a = compute_cams(net, x, stages="layer3.0")["layer3.0"]
    b = compute_cams(net, x, stages=[net.layer3[0]])["layer3.0"]
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["compact", "resnet18"])
def test_registered_model_stages_via_registry(name):
    from woollylib.models import get_model, get_stage, get_stages

    torch.manual_seed(0)
    model = get_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    stages = list(get_stages(model))
    cams = compute_cams(model, x, stages=stages[-2:])
    assert list(cams) == stages[-2:]
    for stage in stages[-2:]:
        expected = oracle_gradcam(model, x, get_stage(model, stage))
        # OpenCV's bilinear resize (used by pytorch_grad_cam) rounds its 8x upsampling weights of
        # a 4x4 map slightly differently from torch: agree to within 1% of the map's range
        np.testing.assert_allclose(cams[stage], expected, atol=1e-2)
    with pytest.raises(ValueError, match=", ".join(stages)):
        compute_cams(model, x, stages="layer9")


def test_error_paths(net_and_images):
    net, x = net_and_images
    with pytest.raises(ValueError, match=r"did you mean 'layer3'\?.*stages: layer1, layer2, layer3\. "):
        compute_cams(net, x, stages="layer4")  # the head holds no convolution: not a stage
    with pytest.raises(ValueError, match="gradcam\\+\\+.*scorecam"):
        compute_cams(net, x, method="bogus")
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        compute_cams(net, x, stages="layer3", targets=[9] * 6)
    with pytest.raises(ValueError, match="one class index per image"):
        compute_cams(net, x, stages="layer3", targets=[0, 1])
    with pytest.raises(ValueError, match="layer1"):
        resolve_stage(net, "")
    assert "gradcam" in list_cam_methods() and "scorecam" in list_cam_methods()


def test_overlay_is_pixel_space_rgb():
    img = np.zeros((8, 8, 3), np.float32)
    img[..., 1] = 1.0  # pure green image
    cam = np.zeros((8, 8), np.float32)
    cam[:4] = 1.0
    out = overlay(img, cam, alpha=0.5)
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    # hot region gets red from the jet colormap, the cold region blue; green survives everywhere
    assert out[:4, :, 0].mean() > out[4:, :, 0].mean()
    assert out[4:, :, 2].mean() > out[:4, :, 2].mean()
    np.testing.assert_allclose(overlay(torch.from_numpy(img).permute(2, 0, 1), cam), out)
    assert np.allclose(overlay((img * 255).astype(np.uint8), cam, alpha=0.0), img, atol=1 / 255)
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, np.zeros((4, 4)))


def test_default_stage_of_any_model_is_the_last_conv_stage_larger_than_1x1():
    import torchvision

    from woollylib.models import get_model
    from woollylib.utils.gradcam import default_stage, list_stages

    tv = torchvision.models.resnet18(num_classes=10)  # declares no stage_names
    assert list_stages(tv) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert default_stage(tv) == "layer3"  # layer4 is 1x1 on 32x32 images
    assert default_stage(tv, (3, 224, 224)) == "layer4" and default_stage(tv, torch.zeros(2, 3, 64, 64)) == "layer4"
    assert default_stage(get_model("custom_resnet")) == "layer3" and default_stage(get_model("resnet18")) == "layer4"
    assert default_stage(TinyNet()) == "layer3"
    vgg = nn.Sequential()  # a lone container: its own conv children
    vgg.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU())
    assert list_stages(vgg) == ["features.0", "features.3"] and default_stage(vgg) == "features.3"
    tv.eval()
    cams = compute_cams(tv, torch.randn(2, 3, 32, 32), stages=default_stage(tv))
    assert cams["layer3"].shape == (2, 32, 32) and cams["layer3"].max() > 0
    with pytest.raises(ValueError, match="larger than 1x1"):
        default_stage(tv, (3, 2, 2))
    with pytest.raises(ValueError, match="no convolutional stage"):
        default_stage(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)))


def test_typo_lists_the_stages_with_a_close_match():
    import torchvision

    tv = torchvision.models.resnet18()
    with pytest.raises(ValueError, match=r"did you mean 'layer3'\?.*conv1, layer1, layer2, layer3, layer4\."):
        compute_cams(tv, torch.randn(1, 3, 32, 32), stages="layr3")
    with pytest.raises(ValueError, match=r"'xyz'\. Its stages"):  # nothing close: no suggestion
        resolve_stage(tv, "xyz")
