"""The compact residual net: depthwise-separable convolutions, no max-pooling, 55,818 parameters.

    from woollylib.models import get_model
    model = get_model("compact")                           # 55,818 parameters, stride-2 downsampling
    model = get_model("compact", downsample="dilation")    # dilated convs halve the size instead
    model = get_model("compact", conv="plain", skip=False) # full 3x3 convs, no shortcuts

Default layout (input 3x32x32, width=32, blocks=1; convs have no bias; "norm" is bn/gn/ln):
    layer1  stem: conv3x3 3->32, norm, ReLU, conv3x3 32->32, norm, ReLU         32 @32x32  10,208
    layer2  residual block 32->64, downsampling                                 64 @16x16   9,312
              main:     sep3x3 32->64 (stride 2), norm, ReLU, sep3x3 64->64, norm
              shortcut: conv1x1 32->64 stride 2 (projection, no norm)
              out = ReLU(main + shortcut)
    layer3  residual block 64->128, same shape                                 128 @8x8    35,008
    head    global average pool, Linear 128 -> num_classes                              1,290
where sepKxK a->b is a depthwise KxK conv (a groups) followed by a pointwise 1x1 a->b conv.

Options: `downsample="dilation"` replaces each stride-2 first conv by a stride-1, padding-0 conv
with dilation H/4 (H = input size of the stage), which also halves H (32->16->8), so the model is
built for one `image_size`; `conv="plain"` uses full 3x3 convs in the residual blocks;
`skip=False` drops the shortcuts; `blocks` adds identity-shortcut blocks per stage; `width`
scales the channels (stages use width, 2*width, 4*width). Stages: layer1, layer2, layer3.
With the defaults and RICAP this layout reached 87.6% on CIFAR-10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from .base import ImageClassifier
from .norm import check_norm, make_norm
from .registry import register_model

CONVS = ("separable", "plain")
DOWNSAMPLES = ("stride", "dilation")


class SeparableConv2d(nn.Sequential):
    """Depthwise KxK conv (one filter per input channel) then pointwise 1x1 conv; no bias."""

    def __init__(self, cin: int, cout: int, stride: int = 1, padding: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=padding, dilation=dilation,
                      groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


def conv3x3(cin: int, cout: int, conv: str, stride: int = 1, padding: int = 1,
            dilation: int = 1) -> nn.Module:
    if conv == "separable":
        return SeparableConv2d(cin, cout, stride, padding, dilation)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, dilation=dilation, bias=False)


class CompactBlock(nn.Module):
    """out = ReLU(norm(conv(ReLU(norm(conv(x))))) + shortcut(x)); shortcut dropped if not `skip`.

    With `dilation` (int or (dh, dw)) the first conv is a stride-1, padding-0 dilated conv
    (H -> H - 2*dh), which downsamples instead of `stride`. The shortcut is a strided 1x1 projection when the shape changes.
    """

    def __init__(self, cin: int, cout: int, conv: str, norm: str, stride: int = 1,
                 dilation: int | tuple[int, int] | None = None, skip: bool = True):
        super().__init__()
        if dilation is not None:
            self.conv1 = conv3x3(cin, cout, conv, stride=1, padding=0, dilation=dilation)
        else:
            self.conv1 = conv3x3(cin, cout, conv, stride=stride)
        self.bn1 = make_norm(norm, cout)
        self.conv2 = conv3x3(cout, cout, conv)
        self.bn2 = make_norm(norm, cout)
        self.skip = skip
        self.shortcut = None
        if skip and (cin != cout or stride != 1):
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.skip:
            y = y + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(y)


def _pair(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)


class CompactNet(ImageClassifier):
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 10, norm: str = "bn", conv: str = "separable",
                 downsample: str = "stride", skip: bool = True, width: int = 32, blocks: int = 1,
                 image_size: int | tuple[int, int] = 32, in_channels: int = 3):
        super().__init__(num_classes, in_channels)
        norm = check_norm(norm)
        if conv not in CONVS:
            raise ValueError(f"unknown conv {conv!r}: use 'separable' (depthwise + pointwise) "
                             "or 'plain' (full 3x3 convolutions)")
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"unknown downsample {downsample!r}: use 'stride' (stride-2 convs) "
                             "or 'dilation' (dilated convs, padding 0)")
        check_int("width", width, hint="channels of the first stage; 32 by default")
        check_int("blocks", blocks, hint="residual blocks per downsampling stage")
        if not isinstance(skip, bool):
            raise TypeError(f"skip must be True or False, got {skip!r}: pass a bool, not a string")
        self.downsample, self.conv, self.skip = downsample, conv, skip
        self.image_size = _pair(image_size)
        if downsample == "dilation" and any(s % 8 or s < 8 for s in self.image_size):
            raise ValueError(f"downsample='dilation' needs image sides divisible by 8 (two halvings "
                             f"by dilation H/4), got image_size={image_size!r}: resize the images "
                             "or use downsample='stride'")

        self.layer1 = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), make_norm(norm, width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), make_norm(norm, width),
            nn.ReLU(inplace=True),
        )
        h, w = self.image_size
        stages, cin = [], width
        for cout in (2 * width, 4 * width):
            dilation = None
            if downsample == "dilation":
                dilation = (h // 4, w // 4)  # (H - 2*H/4) = H/2
                h, w = h // 2, w // 2
            stack = [CompactBlock(cin, cout, conv, norm, stride=2, dilation=dilation, skip=skip)]
            stack += [CompactBlock(cout, cout, conv, norm, skip=skip) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stack))
            cin = cout
        self.layer2, self.layer3 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.downsample == "dilation" and tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"this compact net downsamples by dilation and was built for {self.image_size} "
                f"images, got {tuple(x.shape[-2:])}: build it with image_size={tuple(x.shape[-2:])}"
            )
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model
def compact(num_classes: int = 10, norm: str = "bn", conv: str = "separable",
            downsample: str = "stride", skip: bool = True, width: int = 32, blocks: int = 1,
            image_size: int | tuple[int, int] = 32, in_channels: int = 3) -> CompactNet:
    """Compact depthwise-separable residual net: 55,818 parameters with the defaults."""
    return CompactNet(num_classes, norm, conv, downsample, skip, width, blocks, image_size,
                      in_channels)
