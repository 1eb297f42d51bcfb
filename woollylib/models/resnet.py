"""CIFAR ResNet18 / ResNet34 (He et al. 2015, as adapted to 32x32 images).

    from woollylib.models import get_model
    model = get_model("resnet18")            # 11,173,962 parameters with 10 classes
    model = get_model("resnet34", norm="gn") # 21,282,122 parameters
    from woollylib.models.resnet import ResNet18, ResNet34   # the conventional names: ResNet18()
    model = ResNet18(dropout=0.1)            # Dropout between the two convs of every block

Layout (input 3x32x32): stem conv3x3 64 stride 1 + norm + ReLU (no max-pool);
layer1 64 @32x32, layer2 128 @16x16, layer3 256 @8x8, layer4 512 @4x4, each a stack of
BasicBlocks ([2,2,2,2] for 18, [3,4,6,3] for 34) whose first block strides by 2 from layer2 on,
with a 1x1 conv + norm projection shortcut where the shape changes; global average pool;
Linear 512 -> num_classes. Stages: layer1..layer4. ``dropout`` (default 0: no Dropout modules, the
same parameters and state_dict keys) puts ``nn.Dropout(dropout)`` between the two convolutions of
every BasicBlock (as Wide ResNets do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ImageClassifier
from .custom_resnet import check_dropout
from .norm import check_norm, make_norm
from .registry import register_model


class BasicBlock(nn.Module):
    """out = ReLU(norm(conv(ReLU(norm(conv(x))))) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "bn", dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout else None
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), make_norm(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = out if self.drop is None else self.drop(out)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(ImageClassifier):
    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, blocks=(2, 2, 2, 2), num_classes: int = 10, norm: str = "bn",
                 in_channels: int = 3, dropout: float = 0.0):
        super().__init__(num_classes, in_channels)
        norm, self.dropout = check_norm(norm), check_dropout(dropout)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, 64)
        cin, layers = 64, []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if i == 0 else 2
            stack = []
            for j in range(n):
                stack.append(BasicBlock(cin, width, stride if j == 0 else 1, norm, self.dropout))
                cin = width
            layers.append(nn.Sequential(*stack))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@register_model
def resnet18(num_classes: int = 10, norm: str = "bn", in_channels: int = 3, dropout: float = 0.0) -> ResNet:
    """CIFAR ResNet18: BasicBlock [2, 2, 2, 2]."""
    return ResNet((2, 2, 2, 2), num_classes, norm, in_channels, dropout)


@register_model
def resnet34(num_classes: int = 10, norm: str = "bn", in_channels: int = 3, dropout: float = 0.0) -> ResNet:
    """CIFAR ResNet34: BasicBlock [3, 4, 6, 3]."""
    return ResNet((3, 4, 6, 3), num_classes, norm, in_channels, dropout)


# the conventional constructor names of CIFAR code (``from models.resnet import ResNet18``)
def ResNet18(num_classes: int = 10, norm: str = "bn", in_channels: int = 3, dropout: float = 0.0) -> ResNet:
    """``get_model("resnet18", ...)`` under its conventional name (the recipe is kept for run folders)."""
    from .registry import get_model

    return get_model("resnet18", num_classes=num_classes, norm=norm, in_channels=in_channels,
                     **({"dropout": dropout} if dropout else {}))


def ResNet34(num_classes: int = 10, norm: str = "bn", in_channels: int = 3, dropout: float = 0.0) -> ResNet:
    """``get_model("resnet34", ...)`` under its conventional name."""
    from .registry import get_model

    return get_model("resnet34", num_classes=num_classes, norm=norm, in_channels=in_channels,
                     **({"dropout": dropout} if dropout else {}))
