"""Helpers shared by benchmarks/run.py and benchmarks/_memory.py: synthetic data, table, 'unavailable'."""

from __future__ import annotations

import numpy as np

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10, 0-1 scale
STD = (0.2470, 0.2435, 0.2616)


def synthetic_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random CIFAR-shaped images: uint8 (n, 32, 32, 3) (150 MB for 50,000) and int64 labels (n,)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def unavailable(why: str) -> dict:
    return {"unavailable": why}


def fmt_rate(v) -> str:
    if isinstance(v, dict):
        return v.get("unavailable", str(v))
    return f"{v:12,.0f} img/s"


class Table:
    """A two-column plain-text table with section headers."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def title(self, text: str) -> None:
        self.lines += [text, "=" * min(len(text), 100)]

    def section(self, text: str) -> None:
        self.lines += ["", text, "-" * min(len(text), 100)]

    def row(self, key: str, value) -> None:
        self.lines.append(f"  {key:<42} {value}")

    def render(self) -> str:
        return "\n".join(self.lines)
