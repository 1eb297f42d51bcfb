"""Image classifiers by name: CIFAR ResNet18/34, the custom ResNet-9, the compact separable net.

    from woollylib.models import get_model, list_models, get_stage, summary
    list_models()                                 # ['compact', 'custom_resnet', 'resnet18', 'resnet34']
    model = get_model("custom_resnet", num_classes=10, norm="bn")
    counts = summary(model)                       # torchsummary table on the model's device
    target = get_stage(model, "layer3")           # for Grad-CAM

Every model returns logits (no softmax), takes `norm="bn"|"gn"|"ln"` and `in_channels`, and
declares its stages in `stage_names`.
"""

from __future__ import annotations

from . import compact as _compact  # noqa: F401  (registers the models)
from . import custom_resnet as _custom_resnet  # noqa: F401
from . import resnet as _resnet  # noqa: F401
from .base import ImageClassifier, count_parameters, get_stage, get_stages, summary
from .compact import CompactNet
from .custom_resnet import CustomResNet
from .norm import NORMS, make_norm
from .registry import get_model, list_models, register_model
from .resnet import ResNet, ResNet18, ResNet34

__all__ = [
    "NORMS",
    "CompactNet",
    "CustomResNet",
    "ImageClassifier",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "count_parameters",
    "get_model",
    "get_stage",
    "get_stages",
    "list_models",
    "make_norm",
    "register_model",
    "summary",
]
