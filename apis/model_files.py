"""Models from files: read any model file, build the model it holds, load its weights strictly.

:func:`load_model` is what every script uses to get a model from a file, in
one pass down the layers:

1. read the file (:func:`read_model_file`): a train.py checkpoint or its run
   folder (``engine.checkpoint``), a weights file (``utils.weight_files``),
   or a PyTorch file (``utils.torch_reader``);
2. a PyTorch file's layout is recognised and its keys mapped to ours
   (``pretrained.converter``, with the key maps of ``pretrained.ccnet_keys``
   and ``pretrained.backbone_keys``);
3. the preset, class count, recurrence and build options come from the
   arguments and what the file records; the model is built (``models``) and
   the weights loaded into it strictly (``models.weights``).

One clear :class:`~engine.checkpoint.CheckpointError` says why a file cannot
be used. :func:`load_into` puts any such file into a model train.py built: a
whole model, or ImageNet backbone weights into its backbone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
from jittor import nn

from cli.config import parse_model_opts
from datasets.presets import DatasetPreset, get_preset
from engine.checkpoint import CheckpointError, find_checkpoint, is_train_checkpoint
from models import MODEL_PRESETS, build_model
from models.weights import WeightLoadError, load_state_dict_strict
from pretrained.backbone_keys import ConversionError
from pretrained.converter import convert_checkpoint
from utils.fileio import FileFormatError, load_pickle
from utils.torch_reader import CheckpointFormatError, read_torch_checkpoint
from utils.weight_files import check_finite, is_torch_file, unwrap_checkpoint, weights_from_pickle

__all__ = ["ModelFile", "ModelInfo", "read_model_file", "load_model", "load_into", "load_model_from_options"]


@dataclass
class ModelFile:
    """What a model file holds: its tensors and what it records about the model."""

    path: str
    kind: str                       # "train.py checkpoint", "weights file", or a converted PyTorch file
    state: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)   # model, num_classes, recurrence, model_opts, dataset
    checkpoint: Optional[dict] = None              # the whole train.py checkpoint, if it is one

    def __post_init__(self) -> None:
        check_finite(self.state, self.path)  # every model file read goes through here

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
        state, meta, _ = convert_checkpoint(path, obj, arch=backbone_arch, log=None)
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
    if is_train_checkpoint(obj):
        return ModelFile(path, "train.py checkpoint", dict(obj["model"]), dict(obj.get("config") or {}), obj)
    try:
        state, meta = weights_from_pickle(obj, path)
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


def load_model_from_options(options: Mapping) -> tuple[nn.Module, ModelInfo]:
    """:func:`load_model` with the model arguments of predict.py and visualize_attention.py (``cli.arguments.add_model_args``)."""
    opts = None if options.get("model_opt") is None else parse_model_opts(options["model_opt"])
    return load_model(options["checkpoint"], model=options.get("model"), num_classes=options.get("num_classes"),
                      dataset=options.get("dataset"), recurrence=options.get("recurrence"), model_opts=opts)
