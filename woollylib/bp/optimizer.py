"""Optimizers by name, with the option to keep BatchNorm and bias parameters out of weight decay.

    from woollylib.bp.optimizer import get_optimizer, list_optimizers
    opt = get_optimizer("sgd", model, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True,
                        no_decay_bn_bias=True)
    list_optimizers()   # ['adagrad', 'adam', 'adamw', 'rmsprop', 'sgd']

``momentum`` is used by sgd and rmsprop (adam/adamw take ``betas=`` through ``**kw``); ``nesterov``
only exists for sgd. Extra keyword arguments go to the torch optimizer unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_non_negative, check_positive

__all__ = ["get_optimizer", "list_optimizers", "param_groups"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def list_optimizers() -> list[str]:
    """Names accepted by :func:`get_optimizer`."""
    return sorted(_BUILDERS)


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool = False) -> list[dict]:
    """Trainable parameters as optimizer groups; with ``no_decay_bn_bias`` the parameters of
    normalisation layers and every bias (1-D tensors) go to a second group with weight decay 0."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"get_optimizer needs an nn.Module (to find its parameters), got {type(model).__name__}")
    if not no_decay_bn_bias:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        decay, no_decay, seen = [], [], set()
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                if isinstance(module, _NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                    no_decay.append(p)
                else:
                    decay.append(p)
        groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return groups


def _sgd(groups, lr, momentum, weight_decay, nesterov, **kw):
    if nesterov and momentum <= 0:
        raise ValueError("nesterov=True needs momentum > 0 (e.g. momentum=0.9)")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **kw)


def _adam(groups, lr, momentum, weight_decay, nesterov, **kw):
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **kw)


def _adamw(groups, lr, momentum, weight_decay, nesterov, **kw):
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **kw)


def _rmsprop(groups, lr, momentum, weight_decay, nesterov, **kw):
    return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)


def _adagrad(groups, lr, momentum, weight_decay, nesterov, **kw):
    return torch.optim.Adagrad(groups, lr=lr, weight_decay=weight_decay, **kw)


_BUILDERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop, "adagrad": _adagrad}


def get_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    no_decay_bn_bias: bool = False,
    **kw,
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (see :func:`list_optimizers`) over ``model``'s trainable parameters.

    ``lr`` is the (initial) learning rate, > 0; a OneCycle scheduler built afterwards overrides it.
    """
    if not isinstance(name, str):
        got = f"a {type(name).__name__} model" if isinstance(name, nn.Module) else f"a {type(name).__name__}"
        raise TypeError(f"get_optimizer takes the optimizer name first, then the model: "
                        f"get_optimizer('sgd', model, lr=0.05); got {got} as the name "
                        f"(names: {', '.join(list_optimizers())})")
    key = name.lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {list_optimizers()}")
    lr = float(check_positive("lr", lr, hint="typical: 0.01-0.1 for sgd, 1e-3 for adam"))
    momentum = float(check_non_negative("momentum", momentum))
    weight_decay = float(check_non_negative("weight_decay", weight_decay, hint="5e-4 is usual for sgd on CIFAR"))
    if nesterov and key != "sgd":
        raise ValueError(f"nesterov=True is only available with 'sgd', not {key!r}; drop nesterov or use sgd")
    groups = param_groups(model, weight_decay, no_decay_bn_bias)
    return _BUILDERS[key](groups, lr, momentum, weight_decay, bool(nesterov), **kw)
