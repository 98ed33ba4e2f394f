"""The weight-file format, and reading any weights file into ``(state_dict, meta)``.

A weights file (``convert_weights.py`` output) is a pickle in ``jt.save``'s
layout written by :func:`utils.fileio.save_pickle`: ``{"state_dict": {name:
array}, "meta": {...}}``, ``meta["format"]`` being :data:`WEIGHTS_FORMAT`.
:func:`read_weights` also accepts a plain ``{name: array}`` pickle and
PyTorch files (through the torch-free reader of :mod:`utils.torch_reader`);
:func:`unwrap_checkpoint` finds the state dict inside a wrapped checkpoint.
Weights that are not finite are never read or written (:func:`check_finite`).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from utils.fileio import FileFormatError, load_pickle, save_pickle
from utils.torch_reader import CheckpointFormatError, checkpoint_format, read_torch_checkpoint

__all__ = ["WEIGHTS_FORMAT", "NonFiniteWeightsError", "non_finite", "check_finite", "unwrap_checkpoint",
           "is_torch_file", "read_weights", "weights_from_pickle", "save_weights"]

#: ``meta["format"]`` of the weight files written by :func:`save_weights`.
WEIGHTS_FORMAT = "ccnet-jittor-weights"


class NonFiniteWeightsError(FileFormatError):
    """A weights file (to be read or written) holds NaN or Inf values; the message names the tensors."""


def non_finite(arrays) -> list[str]:
    """The names of the floating-point arrays among ``(name, array)`` pairs that hold NaN or Inf."""
    return [name for name, a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)
            and not np.isfinite(a).all()]


def check_finite(state: Mapping[str, Any], path: str, writing: bool = False) -> None:
    """NonFiniteWeightsError naming the tensors of ``state`` that hold NaN or Inf (``path``: the file)."""
    bad = non_finite(state.items())
    if bad:
        names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        what = f"refusing to write {path}" if writing else f"{path} cannot be used"
        raise NonFiniteWeightsError(f"{what}: {len(bad)} tensor(s) hold NaN or Inf values ({names}); take an "
                                    "earlier checkpoint, or the weights from before they diverged")


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray)


def unwrap_checkpoint(obj: Any) -> tuple["OrderedDict[str, np.ndarray]", list[str]]:
    """Find the state dict in a loaded checkpoint; returns ``(state_dict, notes)``.

    Descends into ``state_dict`` / ``model`` / ``state_dict_ema`` /
    ``model_state`` / ``net`` wrappers and strips a ``module.`` prefix shared
    by all keys; non-array entries are left out. Raises
    :class:`FileFormatError` when no tensors are found.
    """
    notes: list[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping) or any(_is_array(v) for v in obj.values()):
            break
        for wrapper in ("state_dict", "model", "state_dict_ema", "model_state", "net"):
            if isinstance(obj.get(wrapper), Mapping):
                notes.append(f"weights taken from the checkpoint's {wrapper!r} entry")
                obj = obj[wrapper]
                break
        else:
            break
    if not isinstance(obj, Mapping) or not any(_is_array(v) for v in obj.values()):
        what = type(obj).__name__
        keys = list(obj.keys())[:8] if isinstance(obj, Mapping) else []
        raise FileFormatError(
            f"no tensors found: the file holds a {what}{' with keys ' + str(keys) if keys else ''}, "
            f"not a state dict (a pickled whole model is not supported: save model.state_dict())")
    sd = OrderedDict((str(k), v) for k, v in obj.items() if _is_array(v))
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
        notes.append("stripped the 'module.' prefix")
    return sd, notes


def is_torch_file(path: str) -> bool:
    """True for a file ``torch.save`` wrote (zip or legacy format) or a ``.safetensors`` file."""
    try:
        return checkpoint_format(path) in ("zip", "legacy", "safetensors", "tar")
    except CheckpointFormatError:
        return False


def read_weights(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read a weights file into ``(state_dict, meta)``.

    Accepted: this project's ``{"state_dict", "meta"}`` pickle, a plain
    ``{name: array}`` pickle, and PyTorch files (read without torch; ``meta``
    is then ``{"source": path}``). Raises :class:`FileFormatError`.
    """
    if not os.path.isfile(path):
        raise FileFormatError(f"{path}: no such file")
    if is_torch_file(path):
        try:
            sd, _ = unwrap_checkpoint(read_torch_checkpoint(path))
        except CheckpointFormatError as exc:
            raise FileFormatError(str(exc)) from None
        state, meta = dict(sd), {"source": path}
    else:
        state, meta = weights_from_pickle(load_pickle(path), path)
    check_finite(state, path)
    return state, meta


def weights_from_pickle(obj: Any, path: str) -> tuple[dict[str, np.ndarray], dict]:
    """``(state_dict, meta)`` of a loaded project pickle: ``{"state_dict", "meta"}`` or ``{name: array}``.

    Raises :class:`FileFormatError` (naming ``path``) for anything else.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return {k: np.asarray(v) for k, v in obj["state_dict"].items()}, dict(obj.get("meta") or {})
    if isinstance(obj, Mapping) and obj and all(_is_array(v) for v in obj.values()):
        return dict(obj), {}
    raise FileFormatError(f"{path}: expected a weights file ({{'state_dict': ..., 'meta': ...}} or a dict of "
                          f"arrays), got a {type(obj).__name__}")


def save_weights(path: str, state_dict: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """Write ``{"state_dict", "meta"}`` atomically as a ``.pkl`` (readable by ``jt.load`` too)."""
    if not path.endswith(".pkl"):
        raise FileFormatError(f"the output must be a .pkl file, got {path!r}")
    check_finite(state_dict, path, writing=True)
    payload = {"state_dict": {k: np.ascontiguousarray(v) for k, v in state_dict.items()}, "meta": dict(meta)}
    return save_pickle(path, payload)
