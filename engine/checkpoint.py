"""Checkpoints and the one way to load a model from a file.

A train.py checkpoint is one dict, ``{version, model, optimizer, iter, rng,
config, world_size, ...}``, written atomically (:mod:`pretrained.io`) and read
back without running code. :func:`load_model` is what every script uses to
get a model from a file: it reads a train.py checkpoint (or its run folder),
a weights file, or a raw PyTorch checkpoint (an official or mmsegmentation
CCNet, converted in memory by the same converter as ``convert_weights.py``),
decides the preset, class count, recurrence and build options from the
arguments and what the file records, builds the model and loads it strictly,
with one clear :class:`CheckpointError` when the file cannot be used.
:func:`load_into` puts any such file into a model built by train.py: a whole
model, or ImageNet backbone weights into its backbone.
"""
from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
from jittor import nn

from datasets.presets import DatasetPreset, get_preset
from models import MODEL_PRESETS, build_model
from models.weights import WeightLoadError, load_state_dict_strict
from pretrained.convert import ConversionError
from pretrained.converter import convert_checkpoint
from pretrained.io import FileFormatError, is_torch_file, load_pickle, read_weights, save_pickle, unwrap_checkpoint
from pretrained.torch_reader import CheckpointFormatError, read_torch_checkpoint

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "model_state", "rng_state", "set_rng_state",
           "save_checkpoint", "load_checkpoint", "find_checkpoint", "link_atomic", "ModelFile", "ModelInfo",
           "read_model_file", "load_model", "load_into"]

#: Version of the checkpoint dict layout written by :func:`save_checkpoint`.
CHECKPOINT_VERSION = 1

#: The name a run folder stands for (``--resume RUN``, ``evaluate.py --checkpoint RUN``).
LAST = "checkpoint_last.pkl"


class CheckpointError(RuntimeError):
    """A checkpoint or weights file is missing, unreadable or does not fit the run; the message says why."""


def model_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict as numpy arrays."""
    return {k: v.numpy() for k, v in model.state_dict().items()}


def rng_state() -> dict:
    """Python's and numpy's global random states (Jittor's is reseeded every iteration)."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: Mapping) -> None:
    """Inverse of :func:`rng_state` (missing entries are left alone)."""
    if state.get("python") is not None:
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
    if state.get("numpy") is not None:
        np.random.set_state(tuple(state["numpy"]))


def save_checkpoint(path: str, payload: Mapping[str, Any]) -> str:
    """Write ``payload`` atomically; ``path`` is afterwards the old complete file or the new one."""
    return save_pickle(path, dict(payload))


def link_atomic(src: str, dst: str) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else a copy), replacing ``dst`` atomically."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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


def _is_train_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (clear errors for a missing or broken file)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    try:
        obj = load_pickle(path)
    except FileFormatError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from None
    if not _is_train_checkpoint(obj):
        raise CheckpointError(f"{path!r} is not a train.py checkpoint (no 'model' entry)")
    return obj


# --------------------------------------------------------------------------- models from files

@dataclass
class ModelFile:
    """What a model file holds: its tensors and what it records about the model."""

    path: str
    kind: str                       # "train.py checkpoint", "weights file", or a converted PyTorch file
    state: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)   # model, num_classes, recurrence, model_opts, dataset
    checkpoint: Optional[dict] = None              # the whole train.py checkpoint, if it is one

    @property
    def has_head(self) -> bool:
        return any(k.startswith("head.") for k in self.state)

    @property
    def head_classes(self) -> Optional[int]:
        """The class count of the classifier's bias (None if there is none)."""
        bias = self.state.get("head.bottleneck.3.bias")
        return int(np.asarray(bias).shape[0]) if bias is not None else None


@dataclass
class ModelInfo:
    """What :func:`load_model` built, and from which file."""

    model: str
    num_classes: int
    recurrence: int
    dataset: Optional[str]                 # the dataset preset's name, None when unknown
    preset: Optional[DatasetPreset]
    path: str
    kind: str
    settings: dict = field(default_factory=dict)


def _weights_settings(meta: Mapping) -> dict:
    """convert_weights.py metadata in train.py's names (it records both spellings)."""
    return {"model": meta.get("model") or meta.get("arch"), "num_classes": meta.get("num_classes"),
            "recurrence": meta.get("recurrence"), "model_opts": meta.get("model_opts", meta.get("overrides")),
            "dataset": meta.get("dataset"), "arch": meta.get("arch"), "stem": meta.get("stem")}


def _read_torch_file(path: str, backbone_arch: Optional[str]) -> ModelFile:
    """A PyTorch file converted in memory: a whole CCNet, or backbone weights (for ``backbone_arch``)."""
    try:
        obj = read_torch_checkpoint(path)
    except CheckpointFormatError as exc:
        raise CheckpointError(f"cannot read {path!r}: {exc}") from None
    try:
        state, meta, _ = convert_checkpoint(path, obj, arch=backbone_arch, log=lambda line: None)
    except ConversionError as exc:
        try:  # a PyTorch file saved with this project's own names needs no conversion
            state, _ = unwrap_checkpoint(obj)
        except FileFormatError:
            state = {}
        if any(k.startswith("head.") for k in state):
            return ModelFile(path, "weights file", dict(state), {"source": path})
        raise CheckpointError(f"cannot use {path!r}: {exc}") from None
    whole = meta.get("num_classes") is not None
    kind = f"PyTorch {'CCNet' if whole else 'backbone'} checkpoint ({meta.get('layout')}, converted in memory)"
    return ModelFile(path, kind, dict(state), _weights_settings(meta))


def read_model_file(path: str, backbone_arch: Optional[str] = None) -> ModelFile:
    """Read a train.py checkpoint (a file or its run folder), a weights file or a PyTorch file, building nothing.

    A PyTorch file is converted in memory (``pretrained.converter``); backbone
    weights are converted for ``backbone_arch`` (inferred from the file when None).
    """
    path = find_checkpoint(path)
    if is_torch_file(path):
        return _read_torch_file(path, backbone_arch)
    try:
        obj = load_pickle(path)
    except FileFormatError as exc:
        raise CheckpointError(f"cannot read {path!r} as a train.py checkpoint or a weights file: {exc}") from None
    if _is_train_checkpoint(obj):
        return ModelFile(path, "train.py checkpoint", dict(obj["model"]), dict(obj.get("config") or {}), obj)
    try:
        state, meta = read_weights(path)
    except FileFormatError as exc:
        raise CheckpointError(f"cannot read {path!r} as a train.py checkpoint or a weights file: {exc}") from None
    return ModelFile(path, "weights file", state, _weights_settings(meta))


def load_model(source, *, model: Optional[str] = None, num_classes: Optional[int] = None,
               dataset: Optional[str] = None, recurrence: Optional[int] = None,
               model_opts: Optional[dict] = None) -> tuple[nn.Module, ModelInfo]:
    """Build the model a file holds and load its weights strictly; returns ``(model in eval mode, info)``.

    Args:
        source: a path (file or run folder) or a :class:`ModelFile` already read.
        model, num_classes, dataset, recurrence, model_opts: override what the
            file records (a train.py checkpoint's ``config``, a converted
            CCNet's ``meta``); the class count, when recorded nowhere, comes
            from the classifier.

    Raises:
        CheckpointError: unreadable file, backbone-only weights, a setting
            that is missing or contradicts the file, weights that do not fit.
        ValueError: an unknown model or dataset preset.
    """
    mf = source if isinstance(source, ModelFile) else read_model_file(source)
    path, settings = mf.path, mf.settings
    if not mf.has_head:
        raise CheckpointError(
            f"{path!r} has no 'head.*' weights: it looks like backbone weights (convert_weights.py output "
            f"for ImageNet), not a trained segmentation model; use it with train.py --pretrained")
    dataset = dataset or settings.get("dataset")
    preset = get_preset(dataset) if dataset else None
    file_classes = settings.get("num_classes") or mf.head_classes
    if num_classes is not None and file_classes is not None and int(num_classes) != int(file_classes):
        raise CheckpointError(f"{path!r} was trained for {file_classes} classes, not {num_classes} "
                              f"(drop --num-classes or pick the matching checkpoint)")
    num_classes = int(num_classes if num_classes is not None else
                      file_classes if file_classes is not None else preset.num_classes if preset else 0)
    if num_classes < 1:
        raise CheckpointError(f"{path!r} does not say how many classes its model has; pass --num-classes "
                              f"or --dataset")
    if preset is not None and num_classes != preset.num_classes:
        raise CheckpointError(
            f"{path!r} was trained for {num_classes} classes but the dataset {preset.name!r} has "
            f"{preset.num_classes}; use it with the dataset it was trained for (--dataset)")
    name = model or settings.get("model")
    if not name:
        raise CheckpointError(f"{path!r} does not say which model it holds; pass --model "
                              f"({', '.join(sorted(MODEL_PRESETS))})")
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid names: {', '.join(sorted(MODEL_PRESETS))}")
    if model and settings.get("model") and model != settings["model"]:
        raise CheckpointError(f"{path!r} holds a {settings['model']} model, not {model}; "
                              f"drop --model or pick the matching checkpoint")
    opts = dict(settings.get("model_opts") or {}) if model_opts is None else dict(model_opts)
    rec = recurrence if recurrence is not None else settings.get("recurrence")
    net = build_model(name, num_classes, recurrence=rec, **opts)
    state = mf.state
    if getattr(net, "head_ccl", None) is None:
        # the category consistent loss's projection is used in training only: a model built without it
        # evaluates a checkpoint trained with it
        state = {k: v for k, v in state.items() if not k.startswith("head_ccl.")}
    try:
        load_state_dict_strict(net, state, verbose=False)
    except WeightLoadError as exc:
        raise CheckpointError(f"{path!r} does not fit the {name} architecture "
                              f"(wrong --model or --model-opt?):\n{exc}") from None
    net.eval()
    info = ModelInfo(model=name, num_classes=num_classes, recurrence=int(net.recurrence),
                     dataset=preset.name if preset else None, preset=preset, path=path, kind=mf.kind,
                     settings=dict(settings))
    return net, info


def load_into(model: nn.Module, path: str, what: str) -> str:
    """Load ``path`` into a model train.py built: a whole model, or backbone weights into ``model.backbone``.

    ``what`` names the option in messages (``--weights``, ``--pretrained``). Returns
    ``"whole"`` or ``"backbone"``, what the file was used as. Raises
    :class:`CheckpointError` when the file fits neither.
    """
    backbone = getattr(model, "backbone", None)
    mf = read_model_file(path, backbone_arch=getattr(backbone, "arch", None))
    if mf.has_head:
        try:
            load_state_dict_strict(model, mf.state, verbose=False)
        except WeightLoadError as exc:
            raise CheckpointError(f"{what} {mf.path!r} does not fit {getattr(model, 'arch', 'the model')}: "
                                  f"{exc}") from None
        return "whole"
    state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in mf.state.items()}
    meta = {k: mf.settings.get(k) for k in ("arch",) if mf.settings.get(k)}
    if mf.settings.get("stem"):
        meta["stem"] = mf.settings["stem"]
    try:
        load_state_dict_strict(backbone, {"state_dict": state, "meta": meta}, verbose=False)
    except WeightLoadError as exc:
        raise CheckpointError(f"{what} {mf.path!r} does not fit the backbone of "
                              f"{getattr(model, 'arch', 'the model')}: {exc}") from None
    return "backbone"
