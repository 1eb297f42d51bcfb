"""woollylib.models: published parameter counts, shapes, dtypes/layouts, stages, registry, summary."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from woollylib.models import (
    CustomResNet,
    count_parameters,
    get_model,
    get_stage,
    get_stages,
    list_models,
    register_model,
    summary,
)
from woollylib.models import registry as registry_module
from woollylib.models.resnet import ResNet18

torch.set_num_threads(2)

PUBLISHED = {  # parameter counts with 10 classes (design.md / the original write-ups)
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "custom_resnet": 6_573_130,
    "compact": 55_818,
}
STAGES = {
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet34": ("layer1", "layer2", "layer3", "layer4"),
    "custom_resnet": ("prep", "layer1", "layer2", "layer3"),
    "compact": ("layer1", "layer2", "layer3"),
}
# (channels, height) each stage outputs for a 32x32 input
STAGE_SHAPES = {
    "resnet18": [(64, 32), (128, 16), (256, 8), (512, 4)],
    "resnet34": [(64, 32), (128, 16), (256, 8), (512, 4)],
    "custom_resnet": [(64, 32), (128, 16), (256, 8), (512, 4)],
    "compact": [(32, 32), (64, 16), (128, 8)],
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: get_model(name) for name in PUBLISHED}


def test_registry_lists_exactly_the_published_models():
    assert list_models() == sorted(PUBLISHED)
    assert list_models("resnet*") == ["resnet18", "resnet34"]
    assert list_models("*resnet*") == ["custom_resnet", "resnet18", "resnet34"]
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published(name, models):
    counts = count_parameters(models[name])
    assert counts == {"total": PUBLISHED[name], "trainable": PUBLISHED[name]}
    assert sum(p.numel() for p in models[name].parameters()) == PUBLISHED[name]


def test_head_scales_with_num_classes():
    # only the final Linear(512|128 -> K) changes: (in + 1) weights per extra class
    for name, feat in (("resnet18", 512), ("custom_resnet", 512), ("compact", 128)):
        n = count_parameters(get_model(name, num_classes=100))["total"]
        assert n == PUBLISHED[name] + 90 * (feat + 1)


def test_compact_layout_by_hand():
    """Stage-by-stage count of the documented compact layout, computed from its formula."""
    m = get_model("compact")
    stem = 3 * 32 * 9 + 2 * 32 + 32 * 32 * 9 + 2 * 32
    block = lambda a, b: a * 9 + a * b + 2 * b + b * 9 + b * b + 2 * b + a * b
    per_stage = [count_parameters(getattr(m, s))["total"] for s in STAGES["compact"]]
    assert per_stage == [stem, block(32, 64), block(64, 128)] == [10_208, 9_312, 35_008]
    assert count_parameters(m.linear)["total"] == 128 * 10 + 10
    # options: no shortcuts drops the two 1x1 projections; plain convs use full 3x3 kernels
    assert count_parameters(get_model("compact", skip=False))["total"] == 55_818 - 32 * 64 - 64 * 128
    plain = stem + sum(a * b * 9 + 2 * b + b * b * 9 + 2 * b + a * b for a, b in ((32, 64), (64, 128)))
    assert count_parameters(get_model("compact", conv="plain"))["total"] == plain + 1290
    assert count_parameters(get_model("compact", downsample="dilation"))["total"] == 55_818
    # depthwise-separable: every 3x3 conv in the residual stages is depthwise (groups = channels)
    for stage in (m.layer2, m.layer3):
        k3 = [c for c in stage.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
        assert k3 and all(c.groups == c.in_channels == c.out_channels for c in k3)
    # no pooling layers anywhere: downsampling is done by convolutions
    assert not any(isinstance(c, (nn.MaxPool2d, nn.AvgPool2d)) for c in m.modules())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_forward_backward_shapes_cpu(name, models):
    model = copy.deepcopy(models[name]).train()  # train mode: BatchNorm uses batch statistics
    for batch in (1, 2, 8):
        model.zero_grad(set_to_none=True)
        x = torch.randn(batch, 3, 32, 32, requires_grad=True)
        out = model(x)
        assert out.shape == (batch, 10) and out.dtype == torch.float32
        F.cross_entropy(out, torch.arange(batch) % 10).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert sum(g.abs().sum().item() for g in grads) > 0


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_channels_last_and_bf16_autocast(name, models):
    model = models[name].eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        cl = cl_model(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = model(x)
    assert cl.shape == ref.shape and torch.allclose(cl, ref, rtol=1e-3, atol=1e-4)
    assert bf.dtype == torch.bfloat16 and bf.shape == ref.shape
    # bf16 keeps ~3 significant digits: loosely the same logits
    assert torch.isfinite(bf).all()
    assert F.cosine_similarity(bf.float().flatten(), ref.flatten(), dim=0) > 0.98
    assert (bf.float() - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_stages_are_named_ordered_and_shaped(name, models):
    model = models[name].eval()
    stages = get_stages(model)
    assert tuple(stages) == STAGES[name] == type(model).stage_names
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.append((n, o.shape[1], o.shape[2])))
             for n, m in stages.items()]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    assert [s[0] for s in seen] == list(STAGES[name])  # forward order
    assert [s[1:] for s in seen] == STAGE_SHAPES[name]
    for n in STAGES[name]:
        assert get_stage(model, n) is stages[n] is getattr(model, n)
    # every registered model exposes "layer3" for Grad-CAM
    assert isinstance(get_stage(model, "layer3"), nn.Module)


def test_get_stage_errors_and_wrappers(models):
    with pytest.raises(ValueError, match=r"no stage 'layer4'.*prep, layer1, layer2, layer3"):
        get_stage(models["custom_resnet"], "layer4")
    compact = copy.deepcopy(models["compact"])  # DataParallel moves its module to the GPU where there is one
    wrapped = nn.DataParallel(compact)
    assert get_stage(wrapped, "layer2") is compact.layer2
    assert list(get_stages(wrapped)) == list(STAGES["compact"])
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU()))
    assert get_stage(plain, "1.0") is plain[1][0]  # dotted path on foreign models
    with pytest.raises(ValueError, match="stage_names"):
        get_stages(plain)
    with pytest.raises(ValueError, match="none declared"):
        get_stage(plain, "layer3")


def test_unknown_model_lists_known_names_and_closest():
    with pytest.raises(ValueError) as err:
        get_model("resnet19")
    msg = str(err.value)
    assert "Did you mean 'resnet18'" in msg
    assert all(n in msg for n in PUBLISHED)
    with pytest.raises(ValueError, match="Did you mean 'custom_resnet'"):
        get_model("customresnet")


def test_register_model_decorator_and_duplicates():
    @register_model
    def tiny_test_net(num_classes=10):
        return nn.Linear(4, num_classes)

    try:
        assert "tiny_test_net" in list_models()
        assert get_model("tiny_test_net", num_classes=3).out_features == 3
        with pytest.raises(ValueError, match="already registered"):
            register_model(name="tiny_test_net")(lambda num_classes=10: None)
    finally:
        registry_module._MODELS.pop("tiny_test_net", None)
    assert "tiny_test_net" not in list_models()


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        get_model("compact", num_classes=bad)


def test_bad_options_and_inputs(models):
    with pytest.raises(TypeError, match="num_classes must be an int"):
        get_model("compact", num_classes="10")
    with pytest.raises(TypeError, match="num_classes must be an int"):
        get_model("compact", num_classes=True)
    for name in PUBLISHED:
        with pytest.raises(ValueError, match=r"unknown norm 'batch'.*'bn', 'gn', 'ln'"):
            get_model(name, norm="batch")
    with pytest.raises(TypeError, match=r"no option 'logit_scale'.*norm"):
        get_model("resnet18", logit_scale=0.1)
    with pytest.raises(ValueError, match="unknown conv"):
        get_model("compact", conv="depthwise")
    with pytest.raises(ValueError, match="unknown downsample"):
        get_model("compact", downsample="pool")
    with pytest.raises(TypeError, match="skip must be True or False"):
        get_model("compact", skip="False")
    with pytest.raises(ValueError, match="logit_scale"):
        get_model("custom_resnet", logit_scale=0)
    for name, model in models.items():
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*in_channels=1"):
            model(torch.randn(2, 1, 32, 32))
        with pytest.raises(ValueError, match="unsqueeze"):
            model(torch.randn(3, 32, 32))
        with pytest.raises(ValueError, match="in_channels must be a positive int"):
            get_model(name, in_channels=0)
        gray = get_model(name, in_channels=1).eval()
        assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_norm_variants(name):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for norm, groups in (("gn", 8), ("ln", 1)):
        model = get_model(name, norm=norm).train()
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == groups for m in norms)
        assert count_parameters(model)["total"] == PUBLISHED[name]
        # group/layer norm are per-sample: a sample's logits do not depend on the rest of the batch
        with torch.no_grad():
            both, alone = model(x), model(x[:1])
        assert torch.allclose(both[:1], alone, atol=1e-5)
    bn = get_model(name, norm="BN")
    assert all(not isinstance(m, nn.GroupNorm) for m in bn.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())


def test_layer_norm_is_layer_norm_over_chw():
    model = get_model("compact", norm="ln")
    ln = model.layer1[1]
    x = torch.randn(2, 32, 5, 5)
    assert torch.allclose(ln(x), F.layer_norm(x, x.shape[1:]), atol=1e-5)


def _zero_last_norm(seq: nn.Sequential):
    last = seq[-1][-2]  # conv_norm_relu: [conv, norm, relu]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def test_custom_resnet_residual_is_x_plus_r_of_x():
    torch.manual_seed(0)
    model = get_model("custom_resnet").eval()
    x = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        base = model.layer1.conv(x)
        out = model.layer1(x)
        assert torch.allclose(out, base + model.layer1.res(base), atol=1e-5)
        assert not torch.allclose(out, 2 * base + model.layer1.res(base), atol=1e-3)
        # R(X) == 0 when its last norm is zeroed: the layer must then be exactly X (not 2X)
        _zero_last_norm(model.layer1.res)
        _zero_last_norm(model.layer3.res)
        assert torch.equal(model.layer1(x), model.layer1.conv(x))
        # and the whole net equals the same net with both residual branches removed
        no_res = copy.deepcopy(model)
        no_res.layer1.res = no_res.layer3.res = None
        img = torch.randn(2, 3, 32, 32)
        assert torch.allclose(model(img), no_res(img), atol=1e-6)


def test_custom_resnet_logit_scale_is_parameter_free():
    torch.manual_seed(0)
    scaled = get_model("custom_resnet").eval()  # default 0.125
    plain = get_model("custom_resnet", logit_scale=1.0).eval()
    assert count_parameters(plain) == count_parameters(scaled)
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scaled(x), 0.125 * plain(x), atol=1e-6)
    assert get_model("custom_resnet", logit_scale=None).logit_scale == 1.0


def test_compact_downsampling_options():
    dil = get_model("compact", downsample="dilation")
    firsts = [dil.layer2[0].conv1[0], dil.layer3[0].conv1[0]]  # depthwise part of sep conv
    assert [c.dilation for c in firsts] == [(8, 8), (4, 4)]
    assert [(c.stride, c.padding) for c in firsts] == [((1, 1), (0, 0))] * 2
    strided = get_model("compact")
    assert strided.layer2[0].conv1[0].stride == (2, 2) and strided.layer2[0].conv1[0].dilation == (1, 1)
    with pytest.raises(ValueError, match="image_size=\\(64, 64\\)"):
        dil(torch.randn(1, 3, 64, 64))
    assert get_model("compact", downsample="dilation", image_size=64)(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="divisible by 8"):
        get_model("compact", downsample="dilation", image_size=28)
    assert strided(torch.randn(1, 3, 28, 28)).shape == (1, 10)  # stride-2 works at any size


def test_compact_skip_option_really_removes_shortcuts():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 16, 16)
    for skip in (True, False):
        block = get_model("compact", skip=skip).layer2[0].eval()
        nn.init.zeros_(block.bn2.weight)
        nn.init.zeros_(block.bn2.bias)
        with torch.no_grad():
            out = block(x)
        expected = F.relu(block.shortcut(x)) if skip else torch.zeros_like(out)
        assert (block.shortcut is not None) == skip
        assert torch.allclose(out, expected, atol=1e-6)


def _parse(text: str, label: str) -> int:
    return int(re.search(rf"{label} params: ([\d,]+)", text).group(1).replace(",", ""))


@pytest.mark.parametrize("name", ["compact", "custom_resnet", "resnet18"])
def test_summary_on_cpu_only_reports_published_counts(name, models, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    model = models[name].cpu().train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    counts = summary(model, print_fn=lines.append)
    text = "\n".join(lines)
    assert counts == {"total": PUBLISHED[name], "trainable": PUBLISHED[name]}
    assert _parse(text, "Total") == _parse(text, "Trainable") == PUBLISHED[name]
    assert model.training  # mode restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())  # BN stats untouched


def test_summary_counts_frozen_parameters(capsys):
    model = get_model("compact")
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    counts = summary(model, device="cpu")
    text = capsys.readouterr().out
    assert counts == {"total": 55_818, "trainable": 55_818 - 10_208}
    assert _parse(text, "Total") == 55_818 and _parse(text, "Trainable") == 55_818 - 10_208


@pytest.mark.parametrize("make, published", [
    (lambda **kw: CustomResNet(**kw), 6_573_130),
    (lambda **kw: ResNet18(**kw), 11_173_962),
    (lambda **kw: get_model("resnet18", **kw), 11_173_962),
])
def test_dropout_option_keeps_parameters_and_drops_in_training(make, published):
    torch.manual_seed(0)
    plain, dropped = make(), make(dropout=0.05)
    assert count_parameters(plain)["total"] == count_parameters(dropped)["total"] == published
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())  # default 0: today's modules
    assert list(plain.state_dict()) == list(dropped.state_dict())  # checkpoints load either way
    drops = [m for m in dropped.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(m.p == 0.05 for m in drops)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), dropped.eval()
    assert torch.allclose(plain(x), dropped(x))  # eval: dropout is off
    dropped.train()
    assert not torch.allclose(dropped(x), dropped(x))  # training: a new mask each call
    with pytest.raises(ValueError, match="dropout must be in"):
        make(dropout=1.5)


def test_custom_resnet_stages_index_like_sequential():
    model = CustomResNet()
    assert model.layer3[-1] is model.layer3.res and model.layer3[0] is model.layer3.conv
    assert model.layer2[-1] is model.layer2.conv and len(model.layer2) == 1 and len(model.layer1) == 2
    x = torch.randn(2, 256, 8, 8)
    assert torch.equal(model.layer3[:1](x), model.layer3.conv(x))
    with pytest.raises(IndexError, match="1 parts"):
        model.layer2[1]


def test_stage_typo_suggests_the_closest_stage():
    with pytest.raises(ValueError, match="did you mean 'layer3'.*prep, layer1, layer2, layer3"):
        get_stage(get_model("custom_resnet"), "layr3")
