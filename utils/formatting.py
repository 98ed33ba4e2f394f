"""Numbers in the printed tables, and numbers read back from the JSON the project writes."""
from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["percent", "as_number"]


def percent(value: Optional[float], signed: bool = False, width: int = 0, missing: str = "-") -> str:
    """A fraction as a percentage with 2 decimals (``0.7129`` -> ``"71.29"``), right-aligned in ``width``.

    ``None`` and NaN give ``missing``; ``signed`` adds a ``+`` to positive values.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing.rjust(width)
    return f"{100 * value:{'+' if signed else ''}{width}.2f}"


def as_number(value: Any) -> Optional[float]:
    """A recorded number as float, None when absent or not a number.

    ``log.jsonl`` records NaN and infinities as the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (JSON has no such numbers); they come back as floats.
    """
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
