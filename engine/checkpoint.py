"""Training checkpoints: their format, writing and reading them, and the errors of a run that cannot go on.

A train.py checkpoint is one dict, ``{version, model, optimizer, iter, rng,
config, world_size, best, scaler, ...}``, written atomically
(:func:`utils.fileio.save_pickle`) and read back without running code. The
run folder's checkpoints are kept by ``engine.snapshots``; building a model
from any model file is ``apis.model_files``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
from jittor import nn

from utils.errors import UserError
from utils.fileio import FileFormatError, load_pickle, save_pickle
from utils.weight_files import check_finite

__all__ = ["CHECKPOINT_VERSION", "LAST", "CheckpointError", "TrainingStopped", "model_state", "save_checkpoint",
           "find_checkpoint", "is_train_checkpoint", "load_checkpoint"]

#: Version of the checkpoint dict layout written by :func:`save_checkpoint`.
CHECKPOINT_VERSION = 1

#: The name a run folder stands for (``--resume RUN``, ``evaluate.py --checkpoint RUN``).
LAST = "checkpoint_last.pkl"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or weights file is missing, unreadable or does not fit the run; the message says why."""


class TrainingStopped(UserError, RuntimeError):
    """Training stopped early (non-finite loss or weights); the message names the last good checkpoint."""


def model_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict as numpy arrays."""
    return {k: v.numpy() for k, v in model.state_dict().items()}


def save_checkpoint(path: str, payload: Mapping[str, Any]) -> str:
    """Write ``payload`` atomically; ``path`` is afterwards the old complete file or the new one."""
    return save_pickle(path, dict(payload))


def find_checkpoint(path: str) -> str:
    """``path`` itself if it is a file; for a run folder, its ``checkpoint_last.pkl``."""
    if os.path.isdir(path):
        last = os.path.join(path, LAST)
        if not os.path.isfile(last):
            raise CheckpointError(f"no {LAST} in {path!r} (is it a train.py run folder?)")
        return last
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    return path


def is_train_checkpoint(obj: Any) -> bool:
    """True for what :func:`save_checkpoint` writes: a dict with the model's state under ``model``."""
    return isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (clear errors for a missing or broken file)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    try:
        obj = load_pickle(path)
    except FileFormatError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from None
    if not is_train_checkpoint(obj):
        raise CheckpointError(f"{path!r} is not a train.py checkpoint (no 'model' entry)")
    check_finite(obj["model"], path)
    return obj
