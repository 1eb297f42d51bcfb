"""Models by name: constructors register themselves with a decorator (no if/else ladder).

    from woollylib.models import get_model, list_models
    list_models()              # ['compact', 'custom_resnet', 'resnet18', 'resnet34']
    list_models("resnet*")     # fnmatch pattern: ['resnet18', 'resnet34']
    model = get_model("resnet18", num_classes=10, norm="gn")

    @register_model            # registers under the function's name
    def my_net(num_classes=10, **options): ...

The table below is filled once, when the model modules are imported; nothing is added at run time
except by an explicit `register_model` call.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from .base import check_num_classes

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: make `fn` available as `get_model(name or fn.__name__)`.

    Use bare (`@register_model`) or with a name (`@register_model(name="wide")`). Registering a
    name twice raises ValueError (pick another name).
    """

    def decorate(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _MODELS and _MODELS[key] is not f:
            raise ValueError(f"a model named {key!r} is already registered: choose another name")
        _MODELS[key] = f
        return f

    return decorate(fn) if fn is not None else decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by an fnmatch pattern ("res*")."""
    names = sorted(_MODELS)
    return names if pattern is None else fnmatch.filter(names, pattern)




def get_model(name: str, num_classes: int = 10, **options) -> nn.Module:
    """Build the registered model `name` with `num_classes` logits and its own `options`.

    Raises ValueError for an unknown name (listing the known ones and the closest match) and
    TypeError for an option the model does not take (listing the ones it does).
    """
    if name not in _MODELS:
        known = list_models()
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.0)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(known)} "
            "(see woollylib.models.list_models())"
        )
    build = _MODELS[name]
    params = inspect.signature(build).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params]
    if unknown and not takes_any:
        accepted = [k for k in params if k != "num_classes"]
        raise TypeError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}: "
            f"its options are {', '.join(accepted)}"
        )
    model = build(num_classes=check_num_classes(num_classes), **options)
    # the recipe, so a run directory can rebuild exactly this architecture (report, resume checks)
    model.woollylib_spec = {"name": name, "options": dict(options), "num_classes": num_classes}  # woollylib.run.ModelSpec
    return model
