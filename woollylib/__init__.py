"""woollylib: train and explain image classifiers on CIFAR-10-sized data.

Importing the package is cheap and has no side effects: no network access, no RNG seeding, no
device selection. Submodules load on first attribute access::

    import woollylib
    woollylib.models.get_model("resnet18")      # imports woollylib.models now

    from woollylib import main                  # the notebook API
    model = woollylib.load_model("model.pt")    # an exported model (woollylib export), ready to .predict()
"""

import importlib
import os

from ._version import __version__

# albumentations checks PyPI for a newer release on import unless told not to; a library must not
# reach the network behind its user's back. Users who want the check can set the variable to "0".
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = [
    "__version__",
    "bp",
    "cli",
    "device",
    "load_model",
    "main",
    "models",
    "preloading",
    "report",
    "scheduler",
    "training",
    "utils",
]
_SUBMODULES = frozenset(__all__) - {"__version__", "load_model"}


def __getattr__(name):
    if name == "load_model":  # woollylib.export.load_model, imported on first use
        return importlib.import_module(f"{__name__}.export").load_model
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'woollylib' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
