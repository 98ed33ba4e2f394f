"""Progress bars: one look for training, evaluation and prediction."""
from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str, unit: str, initial: int = 0):
    """A ``tqdm`` bar on stdout, redrawn at most once a second (tqdm is imported only when a bar is shown)."""
    from tqdm import tqdm  # noqa: PLC0415
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stdout,
                mininterval=1.0)
