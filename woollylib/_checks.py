"""Argument validators: each names the argument, what it must be, the value it got and the fix.

    from woollylib._checks import check_choice, check_int, check_non_negative, check_positive, check_range
    check_positive("lr", lr, hint="typical: 0.01-0.1 for sgd")   # a number > 0 (bools are not numbers)
    check_non_negative("weight_decay", wd)                        # a number >= 0
    check_int("epochs", epochs)                                   # a positive integer (minimum=0: >= 0)
    check_range("smooth_f", smooth_f, 0, 1)                       # in [0, 1); closed="()" for (0, 1)
    check_finite("epsilon", eps, minimum=0)                       # a finite number >= 0
    check_choice("step_mode", mode, ("exp", "linear"))            # one of 'exp', 'linear'

A check returns the value unchanged. A wrong type raises ``ConfigTypeError`` (a ``TypeError`` and a
``ValueError``), a wrong value ``ConfigError`` (a ``ValueError``); messages read
``"<name> must be <what> (<hint>), got <value>"`` (``"lr must be > 0 (...), got -1"``).
"""

from __future__ import annotations

import math
import numbers

from .errors import ConfigError, ConfigTypeError

__all__ = [
    "check_choice",
    "check_finite",
    "check_int",
    "check_non_negative",
    "check_number",
    "check_positive",
    "check_range",
    "is_int",
    "is_number",
]


def is_number(value) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fail(name: str, what: str, value, hint: str | None, error: type[ConfigError] = ConfigError):
    extra = f" ({hint})" if hint else ""
    raise error(f"{name} must be {what}{extra}, got {value!r}")


def check_number(name: str, value, *, hint: str | None = None):
    """``value`` if it is a real number (not a bool)."""
    if not is_number(value):
        _fail(name, "a number", value, hint, ConfigTypeError)
    return value


def check_positive(name: str, value, *, hint: str | None = None):
    """``value`` if it is a number > 0."""
    if not is_number(value):
        _fail(name, "a number > 0", value, hint, ConfigTypeError)
    if not value > 0:
        _fail(name, "> 0", value, hint)
    return value


def check_non_negative(name: str, value, *, hint: str | None = None):
    """``value`` if it is a number >= 0."""
    if not is_number(value):
        _fail(name, "a number >= 0", value, hint, ConfigTypeError)
    if not value >= 0:
        _fail(name, ">= 0", value, hint)
    return value


def check_finite(name: str, value, *, minimum: float | None = None, hint: str | None = None):
    """``value`` if it is a finite number (and >= ``minimum`` when given)."""
    what = "a finite number" + (f" >= {minimum:g}" if minimum is not None else "")
    if not is_number(value):
        _fail(name, what, value, hint, ConfigTypeError)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        _fail(name, what, value, hint)
    return value


def check_int(name: str, value, *, minimum: int = 1, hint: str | None = None):
    """``value`` if it is an integer >= ``minimum`` (default 1: a positive integer)."""
    what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
    if not is_int(value):
        _fail(name, what, value, hint, ConfigTypeError)
    if value < minimum:
        _fail(name, what, value, hint)
    return value


def check_range(name: str, value, low: float, high: float, *, closed: str = "[)", hint: str | None = None):
    """``value`` if it is a number in the interval from ``low`` to ``high``; ``closed`` gives its
    brackets: "[)" (default, low <= v < high), "()", "[]" or "(]"."""
    if len(closed) != 2 or closed[0] not in "[(" or closed[1] not in ")]":
        raise ValueError(f"closed must be '[)', '()', '[]' or '(]', got {closed!r}")
    what = f"in {closed[0]}{low:g}, {high:g}{closed[1]}"
    if not is_number(value):
        _fail(name, what, value, hint, ConfigTypeError)
    above = value >= low if closed[0] == "[" else value > low
    below = value <= high if closed[1] == "]" else value < high
    if not (above and below):
        _fail(name, what, value, hint)
    return value


def check_choice(name: str, value, choices, *, hint: str | None = None):
    """``value`` if it is one of ``choices`` (compared with ==; bools never match numbers)."""
    choices = tuple(choices)
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        _fail(name, "one of " + ", ".join(map(repr, choices)), value, hint)
    return value
