"""Sizes given as ``N``, ``[N]`` or ``(H, W)``: crops, strides, windows, padding."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

__all__ = ["pair"]


def pair(value: Union[int, Sequence[int]], name: str = "size", minimum: int = 1) -> tuple[int, int]:
    """``N``, ``[N]`` or ``(H, W)`` as ``(H, W)`` of integers ``>= minimum``; a ValueError naming ``name`` otherwise."""
    values = [value] if isinstance(value, (int, np.integer)) else list(value)
    if len(values) == 1:
        values = values * 2
    if (len(values) != 2 or not all(isinstance(v, (int, np.integer)) or float(v).is_integer() for v in values)
            or min(values) < minimum):
        what = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise ValueError(f"{name} takes one or two {what} (H [W]), got {value}")
    return int(values[0]), int(values[1])
