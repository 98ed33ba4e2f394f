"""The converter: any supported PyTorch checkpoint to Jittor weights, in memory or file to file.

:func:`convert_checkpoint` takes what a PyTorch file holds (read without
torch, :mod:`utils.torch_reader`) one step at a time: find the state dict,
recognise its layout -- a whole CCNet (:mod:`pretrained.ccnet_keys`) or an
ImageNet backbone (:mod:`pretrained.backbone_keys`) --, map its keys, check
that every tensor fits the Jittor model it is for, and return ``(state_dict,
meta)``; :func:`convert_file` writes that as a ``.pkl`` weights file
(``convert_weights.py``).

``meta`` of a whole CCNet holds ``arch`` (= the preset; also as ``model``),
``num_classes``, ``recurrence``, ``align_corners`` and ``overrides`` (the
extra ``build_model`` keywords; also as ``model_opts``), so that::

    model = build_model(meta["arch"], meta["num_classes"], meta["recurrence"], **meta["overrides"])
    load_state_dict_strict(model, path)          # models.weights

rebuilds it (``apis.model_files.load_model`` does both). The recurrence is
not in the weights: the official code trains and evaluates with any R; its
released models use R=2 (pass ``recurrence`` / ``--recurrence`` for the R=1
model).
"""
from __future__ import annotations

import os
from collections import Counter, OrderedDict
from typing import Any, Callable, Optional

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models import BACKBONES, MODEL_PRESETS, build_model
from models.van import VAN_LEGACY_NAMES
from models.weights import load_state_dict_strict
from pretrained import KNOWN_FILES, PRETRAINED_DIR
from pretrained.backbone_keys import (LAYOUTS, RESNET_LAYOUT_STEM, ConversionError, check_fits, convert_backbone,
                                      default_output_name, describe_arch, detect_layout, infer_arch, unwrap)
from pretrained.ccnet_keys import (CCNET_LAYOUTS, checkpoint_align_corners, class_names, convert_ccnet_state_dict,
                                   detect_ccnet_layout, infer_ccnet_config)
from utils.fileio import check_output_dir, check_output_file
from utils.input_norm import CAFFE_BGR, IMAGENET_RGB, InputNorm
from utils.torch_reader import CheckpointFormatError, read_torch_checkpoint
from utils.weight_files import WEIGHTS_FORMAT, save_weights

__all__ = ["ARCHS", "normalise_arch", "build_target", "input_norm_name", "verify_forward", "read_checkpoint",
           "convert_checkpoint", "convert_file"]

#: Backbones a checkpoint can be converted for: exactly the builders of ``models.BACKBONES``.
ARCHS: tuple[str, ...] = tuple(BACKBONES)


def normalise_arch(arch: Optional[str]) -> Optional[str]:
    """``arch`` with the legacy VAN names (van_tiny .. van_large) replaced; ConversionError if unknown."""
    if arch is None:
        return None
    arch = VAN_LEGACY_NAMES.get(arch, arch)
    if arch not in ARCHS:
        raise ConversionError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)} or a ccnet_* preset")
    return arch


def build_target(arch: str, layout: str):
    """The Jittor backbone that the converted weights are for (stochastic depth off)."""
    if arch.startswith("resnet"):
        return BACKBONES[arch](stem=RESNET_LAYOUT_STEM[layout])
    return BACKBONES[arch](drop_path_rate=0.0)


def input_norm_name(norm: InputNorm) -> str:
    """``"CAFFE_BGR"``, ``"IMAGENET_RGB"`` or ``"custom"``."""
    return {CAFFE_BGR: "CAFFE_BGR", IMAGENET_RGB: "IMAGENET_RGB"}.get(norm, "custom")


def _input_norm_values(norm: InputNorm) -> dict:
    """The normalisation recorded in a weights file's ``meta``."""
    return {"mean": list(norm.mean), "std": list(norm.std), "bgr": norm.bgr}


def verify_forward(model, size: int = 64) -> list[tuple[int, ...]]:
    """One eval-mode forward pass on a random image; the output shapes, or ConversionError if one is not finite.

    A backbone returns its stages, a CCNet its logits.
    """
    model.eval()
    x = jt.array(np.random.RandomState(0).randn(1, 3, size, size).astype("float32"))
    with jt.no_grad():
        out = model(x)
    outs = [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]
    for i, o in enumerate(outs):
        if not np.isfinite(o).all():
            what = f"stage {i + 1} output" if len(outs) > 1 else "the output"
            raise ConversionError(f"--verify: {what} has non-finite values")
    return [tuple(o.shape) for o in outs]


def read_checkpoint(src: str) -> Any:
    """The object ``torch.save`` wrote to ``src`` (tensors as numpy), or a ConversionError saying why not."""
    try:
        return read_torch_checkpoint(src)
    except CheckpointFormatError as e:
        raise ConversionError(f"{e}. Pass a file written by torch.save (.pth, .pt, .pth.tar).") from None


def _silent(line: str) -> None:
    """The log of a conversion that prints nothing."""


def convert_checkpoint(src: str, obj: Any = None, arch: Optional[str] = None, layout: Optional[str] = None,
                       prefix: Optional[str] = None, verify: bool = False,
                       log: Optional[Callable[[str], None]] = print,
                       recurrence: Optional[int] = None) -> tuple[dict, dict, str]:
    """Convert a PyTorch checkpoint in memory; returns ``(state_dict, meta, default output file name)``.

    ``obj`` is what ``src`` holds (read here when None); ``log`` gets one line
    per step (None: silent). Whole CCNet
    checkpoints (official snapshots, mmsegmentation) are converted to a
    ``models.MODEL_PRESETS`` preset (``arch`` may name it, ``recurrence`` is
    recorded in the metadata); everything else is a backbone (``arch`` in
    :data:`ARCHS`).

    Raises ConversionError when the file is not a checkpoint, its layout is
    unknown, or it does not fit the architecture.
    """
    log = log or _silent
    ccnet_preset = arch if arch is not None and arch.startswith("ccnet_") else None
    arch = None if ccnet_preset else normalise_arch(arch)
    if layout is not None and layout not in LAYOUTS:
        raise ConversionError(f"unknown --from {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if obj is None:
        obj = read_checkpoint(src)
    try:
        sd, notes = unwrap(obj)
    except ConversionError as e:
        raise ConversionError(f"{src}: {e}") from None
    name = os.path.basename(src)
    log(f"read {src}: {len(sd)} tensors")
    for note in notes:
        log(f"  {note}")
    if name in KNOWN_FILES:
        k = KNOWN_FILES[name]
        log(f"  known file: {k['source']} ({k['arch']}, layout {k['layout']})")
    if layout is None and prefix is None and detect_ccnet_layout(sd) is not None:
        state_dict, meta = _convert_ccnet(src, obj, sd, ccnet_preset, recurrence, verify, log)
        return state_dict, meta, f"{meta['arch']}_{meta['num_classes']}cls.pkl"
    if ccnet_preset or recurrence is not None:
        raise ConversionError(f"{src} is not a whole CCNet checkpoint (no head.conva / decode_head.cca keys); "
                              f"--arch ccnet_* and --recurrence apply to whole CCNet checkpoints only")

    # Layout (and the sub-dict holding the backbone).
    if prefix is None:
        prefix = ""
        if layout is None and detect_layout(sd) is None and any(k.startswith("backbone.") for k in sd):
            prefix = "backbone."
    inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    detected = detect_layout(inner)
    if layout is None:
        if detected is None:
            sample = ", ".join(list(sd)[:6])
            raise ConversionError(
                f"{src}: could not recognise the layout (first keys: {sample}). "
                f"Pass --from with one of: {', '.join(LAYOUTS)}")
        layout = detected
        log(f"  layout: {layout} (detected{', under ' + repr(prefix) if prefix else ''})")
    else:
        looks = f"; the keys look like {detected}" if detected and detected != layout else ""
        log(f"  layout: {layout} (--from{looks})")
    family = "resnet" if layout.startswith("resnet") else "van"
    hint = ""
    if detected is not None and detected != layout:
        hint = f" The keys look like layout {detected}: drop --from or pass --from {detected}."
    if arch is not None and not arch.startswith(family):
        file_family, arch_family = ("ResNet", "VAN") if family == "resnet" else ("VAN", "ResNet")
        raise ConversionError(
            f"{src} is a {file_family} checkpoint (layout {layout}) but --arch {arch} is a {arch_family}; "
            f"convert a {arch_family} checkpoint for {arch}, or choose a {file_family} --arch.{hint}")

    result = convert_backbone(sd, layout, prefix)
    found, what = infer_arch(result.state_dict, layout)
    if arch is None:
        if found is None:
            raise ConversionError(f"{src}: holds {what}, which matches no supported architecture "
                                  f"(supported: {', '.join(ARCHS)}).{hint}")
        arch = found
        log(f"  architecture: {arch} (inferred from the shapes)")
    elif found is not None and found != arch:
        raise ConversionError(
            f"{src} holds {what}, but --arch {arch} expects {describe_arch(arch)}. "
            f"Use --arch {found} (or convert a {arch} checkpoint).")

    model = build_target(arch, layout)
    check_fits(result.state_dict, model, f"{src} does not fit {arch} (layout {layout})",
               hint=f"Check --arch and --from (the keys look like layout {detected or 'unknown'}).")

    state_dict, cast = {}, Counter()
    for k, v in result.state_dict.items():
        v = np.asarray(v)
        if v.dtype != np.float32:  # the Jittor model is float32 throughout
            cast[str(v.dtype)] += 1
            v = v.astype(np.float32)
        state_dict[k] = v

    log(f"converted {len(state_dict)} tensors ({len(result.renamed)} renamed), "
        f"skipped {len(result.skipped)}, missing 0")
    for dtype, count in cast.items():
        log(f"  cast {count} {dtype} tensors to float32")
    for reason, count in Counter(result.skipped.values()).items():
        examples = [k for k, r in result.skipped.items() if r == reason][:3]
        log(f"  skipped {count}: {reason} (e.g. {', '.join(examples)})")

    if verify:
        load_state_dict_strict(model, state_dict, strict=True)
        shapes = verify_forward(model)
        log("verify: one forward pass on a random 64x64 image, all outputs finite: "
            + ", ".join("x".join(map(str, s)) for s in shapes))

    meta = {
        "format": WEIGHTS_FORMAT,
        "version": 1,
        "arch": arch,
        "layout": layout,
        "stem": RESNET_LAYOUT_STEM.get(layout),
        "input_norm": input_norm_name(model.input_norm),
        "input_norm_values": _input_norm_values(model.input_norm),
        "source": name,
    }
    return state_dict, meta, default_output_name(arch, layout)


def _convert_ccnet(src: str, obj: Any, sd: dict, preset: Optional[str], recurrence: Optional[int], verify: bool,
                   log: Callable[[str], None]) -> tuple[dict, dict]:
    """Convert a loaded whole-CCNet checkpoint ``obj`` (read from ``src``); returns ``(state_dict, meta)``.

    Args:
        src: the source path (for messages and the recorded source).
        obj: the object read from ``src`` (``read_torch_checkpoint``), for the metadata it records.
        sd: its state dict (unwrapped).
        preset: the target preset; inferred if None, and must agree with the file otherwise.
        recurrence: recorded in the metadata (the preset's, 2, if None).
        verify: load the result into the model and run one forward pass.

    Raises:
        ConversionError: the message says why.
    """
    result, layout = convert_ccnet_state_dict(sd)
    log(f"  layout: {layout} (detected: {CCNET_LAYOUTS[layout]})")
    found, num_classes, overrides, what = infer_ccnet_config(result.state_dict, layout)
    log(f"  holds {what}")
    if preset is None:
        preset = found
        log(f"  preset: {preset} (inferred)")
    elif preset not in MODEL_PRESETS:
        raise ConversionError(f"unknown preset {preset!r}; valid: {', '.join(MODEL_PRESETS)}")
    elif preset != found:
        raise ConversionError(f"{src} holds a {what}, which is preset {found}, not {preset}; "
                              f"drop --arch or pass --arch {found}")
    if recurrence is None:
        recurrence = MODEL_PRESETS[preset]["recurrence"]
    if recurrence not in range(4):
        raise ConversionError(f"recurrence must be 0..3, got {recurrence}")
    align_corners = MODEL_PRESETS[preset]["align_corners"]
    from_meta = checkpoint_align_corners(obj)
    if from_meta is not None and from_meta != align_corners:
        overrides["align_corners"] = from_meta
        log(f"  align_corners={from_meta} (from the config stored in the checkpoint)")
        align_corners = from_meta

    model = build_model(preset, num_classes, recurrence=recurrence, **overrides)
    check_fits(result.state_dict, model, f"{src} does not fit {preset} ({num_classes} classes)")
    state_dict = OrderedDict((k, np.asarray(v, dtype=np.float32)) for k, v in result.state_dict.items())
    log(f"converted {len(state_dict)} tensors ({len(result.renamed)} renamed), skipped {len(result.skipped)}")

    if verify:
        load_state_dict_strict(model, state_dict, strict=True)
        shapes = verify_forward(model, 65)
        log(f"verify: one forward pass on a random 65x65 image, logits {list(shapes[0])}, all finite")

    meta = {
        "format": WEIGHTS_FORMAT,
        "version": 1,
        "arch": preset,
        "preset": preset,
        "num_classes": num_classes,
        "recurrence": recurrence,
        "align_corners": align_corners,
        "overrides": overrides,
        "model": preset,          # the names train.py checkpoints use for the same things
        "model_opts": overrides,
        "layout": layout,
        "stem": model.backbone.stem_type,
        "input_norm_values": _input_norm_values(model.input_norm),
        "source": os.path.basename(src),
    }
    names = class_names(obj)
    if names and len(names) == num_classes:
        meta["class_names"] = names
    return state_dict, meta


def convert_file(src: str, output: Optional[str] = None, arch: Optional[str] = None,
                 layout: Optional[str] = None, prefix: Optional[str] = None, verify: bool = False,
                 log: Callable[[str], None] = print, recurrence: Optional[int] = None) -> str:
    """Convert ``src`` (see :func:`convert_checkpoint`) and write the Jittor weights; returns the output path.

    The output defaults to ``pretrained/<name>`` (:func:`convert_checkpoint`'s
    name); nothing is written when the conversion is refused.
    """
    if output is not None and not output.endswith(".pkl"):
        raise ConversionError(f"the output must be a .pkl file (a Jittor pickle), got {output!r}")
    if output is None:
        check_output_dir(PRETRAINED_DIR, "-o/--output")
    else:
        check_output_file(output, "-o/--output")
    state_dict, meta, name = convert_checkpoint(src, None, arch, layout, prefix, verify, log, recurrence)
    output = output or os.path.join(PRETRAINED_DIR, name)
    save_weights(output, state_dict, meta)
    log(f"wrote {output}")
    return output
