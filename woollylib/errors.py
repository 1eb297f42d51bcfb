"""woollylib's exceptions, one class per kind of problem (no torch import: cheap for the CLI).

    from woollylib.errors import WoollylibError, ConfigError, NonFiniteLossError
    try:
        trainer.fit()
    except NonFiniteLossError as exc:      # exc.epoch, exc.batch, exc.lr
        ...
    except WoollylibError as exc:          # any problem woollylib diagnosed itself
        print(exc)                         # says what was wrong and how to fix it

Each class also derives from the built-in exception such errors raised before it existed
(``ValueError``, ``TypeError``, ``FloatingPointError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigTypeError",
    "DataError",
    "DistributedError",
    "LRCurveTooShortError",
    "NonFiniteLossError",
    "RunDirError",
    "WoollylibError",
]


class WoollylibError(Exception):
    """Base class of every error woollylib raises on purpose."""


class ConfigError(WoollylibError, ValueError):
    """A setting has a value it cannot take (out of range, unknown name, contradicting another)."""


class ConfigTypeError(ConfigError, TypeError):
    """A setting has the wrong type (a string for a number, a bool for a count, ...)."""


class DataError(WoollylibError, ValueError):
    """The data cannot be used as given (a loader's batches, an empty set, mismatched splits)."""


class RunDirError(WoollylibError, ValueError):
    """A run directory is missing, damaged, or holds something other than the run asked for."""


class DistributedError(WoollylibError, RuntimeError):
    """A multi-process (torchrun) setup problem, or a collective that failed because another rank did."""


class LRCurveTooShortError(WoollylibError, ValueError):
    """The LR range test curve has too few points for a suggestion; ``lrs``/``losses`` hold it."""

    def __init__(self, message: str, lrs=(), losses=()):
        super().__init__(message)
        self.lrs, self.losses = list(lrs), list(losses)


class NonFiniteLossError(WoollylibError, FloatingPointError):
    """The training loss became NaN/inf: ``epoch``, ``batch`` (0-based index in the epoch), ``lr``."""

    def __init__(self, epoch, batch: int, lr: float | None):
        super().__init__(epoch, batch, lr)
        self.epoch, self.batch, self.lr = epoch, batch, lr

    def __str__(self) -> str:
        where = f"epoch {self.epoch}, " if self.epoch is not None else ""
        return (f"non-finite loss at {where}batch {self.batch} (lr={self.lr:.4g}): lower the learning rate, "
                f"set grad_clip (e.g. 1.0), or turn fp16 amp off" if self.lr is not None else
                f"non-finite loss at {where}batch {self.batch}: lower the learning rate or set grad_clip")
