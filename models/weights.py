"""Loud, strict loading of weights into Jittor modules.

Jittor's own ``Module.load_state_dict`` ignores missing keys, only logs shape
mismatches and silently changes a parameter's dtype to the file's. Here every
key is accounted for: :func:`load_state_dict_strict` compares the file with
``model.state_dict()`` and, when ``strict``, refuses (before changing
anything) if a key is missing, unexpected or has the wrong shape. Values are
cast to each parameter's own dtype.

A path is read with :func:`utils.weight_files.read_weights` (the ``.pkl`` files
written by ``convert_weights.py``, a plain ``{name: array}`` pickle, or a
PyTorch file whose keys already match, read without torch).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from utils.errors import UserError
from utils.fileio import FileFormatError
from utils.jittor_fixes import materialize
from utils.weight_files import read_weights

__all__ = ["LoadReport", "WeightLoadError", "load_state_dict_strict"]

#: Buffers that PyTorch checkpoints carry and Jittor modules do not have.
IGNORED_SUFFIXES: tuple[str, ...] = ("num_batches_tracked",)


class WeightLoadError(UserError, RuntimeError):
    """A weights file does not fit the model."""


@dataclass
class LoadReport:
    """What :func:`load_state_dict_strict` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, model shape, file shape)
    ignored: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        """Multi-line, human-readable account of the problems (or one line when all is well)."""
        lines = [f"loaded {len(self.loaded)} tensors, missing {len(self.missing)}, "
                 f"unexpected {len(self.unexpected)}, shape mismatches {len(self.mismatched)}, "
                 f"ignored {len(self.ignored)}"]

        def block(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {s}" for s in items[:limit])
                if len(items) > limit:
                    lines.append(f"    ... and {len(items) - limit} more")

        block("missing (in the model, not in the file)", self.missing)
        block("unexpected (in the file, not in the model)", self.unexpected)
        block("shape mismatch", [f"{k}: model {list(a)}, file {list(b)}" for k, a, b in self.mismatched])
        return "\n".join(lines)


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, jt.Var):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, if torch is around
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_meta(model: Any, meta: Mapping, where: str) -> None:
    arch, stem = meta.get("arch"), meta.get("stem")
    model_arch, model_stem = getattr(model, "arch", None), getattr(model, "stem_type", None)
    if arch and model_arch and arch != model_arch:
        raise WeightLoadError(f"{where} holds {arch} weights but the model is {model_arch}; "
                              f"build {arch} or convert the right checkpoint")
    if stem and model_stem and stem != model_stem:
        raise WeightLoadError(f"{where} holds weights for the {stem!r} stem but the model has the "
                              f"{model_stem!r} stem; build it with stem={stem!r}")


def load_state_dict_strict(model: jt.nn.Module, state_dict_or_path: Union[str, Mapping[str, Any]],
                           strict: bool = True, verbose: bool = True) -> LoadReport:
    """Loads weights into ``model``, accounting for every key.

    Args:
        model: the Jittor module.
        state_dict_or_path: a ``{name: array}`` mapping (numpy, jt.Var or torch
            tensors), a loaded weights file ``{"state_dict": ..., "meta": ...}``,
            or a path (see :func:`read_weights`).
        strict: raise :class:`WeightLoadError` (and load nothing) if any key is
            missing, unexpected or has the wrong shape. With ``strict=False``
            the matching tensors are loaded and the problems printed to stderr.
        verbose: print the summary to stderr when something is not loaded.

    Returns:
        The :class:`LoadReport`. ``*.num_batches_tracked`` keys are ignored
        (Jittor's BatchNorm has no such buffer).
    """
    where = "state dict"
    meta: dict = {}
    if isinstance(state_dict_or_path, str):
        where = state_dict_or_path
        try:
            state_dict, meta = read_weights(state_dict_or_path)
        except FileFormatError as exc:
            raise WeightLoadError(f"cannot read weights: {exc}") from None
        _check_meta(model, meta, where)
    elif "state_dict" in state_dict_or_path and isinstance(state_dict_or_path["state_dict"], Mapping):
        state_dict = dict(state_dict_or_path["state_dict"])  # a loaded weights file: {"state_dict", "meta"}
        meta = dict(state_dict_or_path.get("meta", {}) or {})
        _check_meta(model, meta, where)
    else:
        state_dict = dict(state_dict_or_path)
    targets = model.state_dict()
    report = LoadReport(meta=meta)
    to_load: list[tuple[jt.Var, np.ndarray]] = []
    for key, value in state_dict.items():
        if key.endswith(IGNORED_SUFFIXES):
            report.ignored.append(key)
            continue
        if key not in targets:
            report.unexpected.append(key)
            continue
        array = _to_numpy(value)
        var = targets[key]
        if tuple(array.shape) != tuple(var.shape):
            report.mismatched.append((key, tuple(var.shape), tuple(array.shape)))
            continue
        to_load.append((var, array))
        report.loaded.append(key)
    report.missing = [k for k in targets if k not in state_dict]
    if strict and not report.ok:
        raise WeightLoadError(f"{where} does not fit {type(model).__name__}:\n{report.summary()}")
    for var, array in to_load:
        var.update(jt.array(np.ascontiguousarray(array).astype(str(var.dtype), copy=False)))
    materialize([var for var, _ in to_load])  # see utils.jittor_fixes.materialize
    if verbose and not report.ok:
        print(f"warning: non-strict load from {where}:\n{report.summary()}", file=sys.stderr)
    return report
