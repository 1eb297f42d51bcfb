"""The custom ResNet (ResNet-9 layout of David Page's DAWNBench CIFAR-10 record).

    from woollylib.models import get_model
    model = get_model("custom_resnet")                   # 6,573,130 parameters, logits * 0.125
    model = get_model("custom_resnet", logit_scale=1.0)  # plain logits

Layout (input 3x32x32; every conv is 3x3, stride 1, padding 1, no bias):
    prep    conv 64, norm, ReLU                                          64 @32x32
    layer1  conv 128, max-pool 2, norm, ReLU = X;  out = X + R(X)       128 @16x16
            R = (conv 128, norm, ReLU) x 2
    layer2  conv 256, max-pool 2, norm, ReLU                            256 @8x8
    layer3  conv 512, max-pool 2, norm, ReLU = X;  out = X + R(X)       512 @4x4
            R = (conv 512, norm, ReLU) x 2
    head    global max-pool (= MaxPool(4) at 32x32), Linear 512 -> num_classes, * logit_scale

`logit_scale` (no parameters, default 0.125 as in the original ResNet-9) keeps the initial
logits small: without it high learning rates (max_lr 0.1) diverge. Stages: prep, layer1..layer3.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive
from .base import ImageClassifier
from .norm import check_norm, make_norm
from .registry import register_model


def conv_norm_relu(cin: int, cout: int, norm: str, pool: bool = False) -> nn.Sequential:
    """conv3x3 (-> max-pool 2) -> norm -> ReLU."""
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [make_norm(norm, cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ResLayer(nn.Module):
    """X = conv-pool-norm-ReLU(x); returns X + R(X) when `residual`, else X."""

    def __init__(self, cin: int, cout: int, norm: str, residual: bool):
        super().__init__()
        self.conv = conv_norm_relu(cin, cout, norm, pool=True)
        self.res = (
            nn.Sequential(conv_norm_relu(cout, cout, norm), conv_norm_relu(cout, cout, norm))
            if residual else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.res is None else x + self.res(x)


class CustomResNet(ImageClassifier):
    stage_names = ("prep", "layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 10, norm: str = "bn", logit_scale: float | None = 0.125,
                 in_channels: int = 3):
        super().__init__(num_classes, in_channels)
        norm = check_norm(norm)
        scale = 1.0 if logit_scale is None else logit_scale
        check_positive("logit_scale", scale, hint="0.125 is the ResNet-9 default, 1.0 gives plain logits")
        self.logit_scale = float(scale)
        self.prep = conv_norm_relu(in_channels, 64, norm)
        self.layer1 = ResLayer(64, 128, norm, residual=True)
        self.layer2 = ResLayer(128, 256, norm, residual=False)
        self.layer3 = ResLayer(256, 512, norm, residual=True)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        x = self.linear(self.pool(x).flatten(1))
        return x * self.logit_scale if self.logit_scale != 1.0 else x

    def extra_repr(self) -> str:
        return f"logit_scale={self.logit_scale}"


@register_model
def custom_resnet(num_classes: int = 10, norm: str = "bn", logit_scale: float | None = 0.125,
                  in_channels: int = 3) -> CustomResNet:
    """ResNet-9 layout, 6,573,130 parameters with 10 classes; logits multiplied by `logit_scale`."""
    return CustomResNet(num_classes, norm, logit_scale, in_channels)
