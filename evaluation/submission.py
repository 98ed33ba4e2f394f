"""Benchmark-server formats of predictions."""
from __future__ import annotations

import numpy as np

from datasets import label_id_lut

__all__ = ["submission_lut"]


def submission_lut(preset) -> np.ndarray:
    """Predicted class -> Cityscapes label id, for ``--submission`` (Cityscapes-layout presets only)."""
    if preset.name not in ("cityscapes", "demo"):
        raise ValueError(f"--submission writes Cityscapes label ids; the {preset.name!r} preset is not Cityscapes")
    return label_id_lut(preset.cityscapes_train_ids)
