"""The custom ResNet (ResNet-9 layout of David Page's DAWNBench CIFAR-10 record).

    from woollylib.models import get_model
    model = get_model("custom_resnet")                   # 6,573,130 parameters, logits * 0.125
    model = get_model("custom_resnet", logit_scale=1.0)  # plain logits
    model = CustomResNet(dropout=0.05)                   # Dropout after every conv block
    model.layer3[-1]                                     # its res block (stages index like Sequential)

Layout (input 3x32x32; every conv is 3x3, stride 1, padding 1, no bias):
    prep    conv 64, norm, ReLU                                          64 @32x32
    layer1  conv 128, max-pool 2, norm, ReLU = X;  out = X + R(X)       128 @16x16
            R = (conv 128, norm, ReLU) x 2
    layer2  conv 256, max-pool 2, norm, ReLU                            256 @8x8
    layer3  conv 512, max-pool 2, norm, ReLU = X;  out = X + R(X)       512 @4x4
            R = (conv 512, norm, ReLU) x 2
    head    global max-pool (= MaxPool(4) at 32x32), Linear 512 -> num_classes, * logit_scale

`logit_scale` (no parameters, default 0.125 as in the original ResNet-9) keeps the initial
logits small: without it high learning rates (max_lr 0.1) diverge. Stages: prep, layer1..layer3;
a stage indexes as a Sequential of its parts: ``layer1[0]`` the conv block, ``layer1[-1]`` R.
``dropout`` (default 0: no Dropout modules, the same parameters and state_dict keys) adds
``nn.Dropout(dropout)`` after every conv-norm-ReLU block, as the course notebooks did.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive, check_range
from .base import ImageClassifier
from .norm import check_norm, make_norm
from .registry import register_model


def check_dropout(dropout) -> float:
    return float(check_range("dropout", dropout, 0.0, 1.0, hint="a probability such as 0.05; 0 means no dropout"))


def conv_norm_relu(cin: int, cout: int, norm: str, pool: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """conv3x3 (-> max-pool 2) -> norm -> ReLU (-> Dropout when ``dropout`` > 0)."""
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [make_norm(norm, cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []))


class ResLayer(nn.Module):
    """X = conv-pool-norm-ReLU(x); returns X + R(X) when `residual`, else X.

    Indexes like a Sequential of its parts (``[conv, res]``, or ``[conv]``): ``layer[-1]`` is R when
    there is one, the usual Grad-CAM target of course notebooks (``model.layer3[-1]``)."""

    def __init__(self, cin: int, cout: int, norm: str, residual: bool, dropout: float = 0.0):
        super().__init__()
        self.conv = conv_norm_relu(cin, cout, norm, pool=True, dropout=dropout)
        self.res = (
            nn.Sequential(conv_norm_relu(cout, cout, norm, dropout=dropout),
                          conv_norm_relu(cout, cout, norm, dropout=dropout))
            if residual else None
        )

    def _parts(self) -> list[nn.Module]:
        return [self.conv] if self.res is None else [self.conv, self.res]

    def __len__(self) -> int:
        return len(self._parts())

    def __getitem__(self, index):
        parts = self._parts()
        if isinstance(index, slice):
            return nn.Sequential(*parts[index])
        if not isinstance(index, int) or not -len(parts) <= index < len(parts):
            raise IndexError(f"ResLayer index {index!r} out of range: it has {len(parts)} parts "
                             f"({', '.join(n for n in ('conv', 'res')[:len(parts)])}); use 0..{len(parts) - 1} or -1")
        return parts[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.res is None else x + self.res(x)


class CustomResNet(ImageClassifier):
    stage_names = ("prep", "layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 10, norm: str = "bn", logit_scale: float | None = 0.125,
                 in_channels: int = 3, dropout: float = 0.0):
        super().__init__(num_classes, in_channels)
        norm, p = check_norm(norm), check_dropout(dropout)
        scale = 1.0 if logit_scale is None else logit_scale
        check_positive("logit_scale", scale, hint="0.125 is the ResNet-9 default, 1.0 gives plain logits")
        self.logit_scale = float(scale)
        self.dropout = p
        self.prep = conv_norm_relu(in_channels, 64, norm, dropout=p)
        self.layer1 = ResLayer(64, 128, norm, residual=True, dropout=p)
        self.layer2 = ResLayer(128, 256, norm, residual=False, dropout=p)
        self.layer3 = ResLayer(256, 512, norm, residual=True, dropout=p)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        x = self.linear(self.pool(x).flatten(1))
        return x * self.logit_scale if self.logit_scale != 1.0 else x

    def extra_repr(self) -> str:
        return f"logit_scale={self.logit_scale}" + (f", dropout={self.dropout}" if self.dropout else "")


@register_model
def custom_resnet(num_classes: int = 10, norm: str = "bn", logit_scale: float | None = 0.125,
                  in_channels: int = 3, dropout: float = 0.0) -> CustomResNet:
    """ResNet-9 layout, 6,573,130 parameters with 10 classes; logits multiplied by `logit_scale`;
    ``dropout``: Dropout probability after every conv block (0: none)."""
    return CustomResNet(num_classes, norm, logit_scale, in_channels, dropout)
