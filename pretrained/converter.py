"""The converter: any supported PyTorch checkpoint to Jittor weights, in memory or file to file.

:func:`convert_checkpoint` reads (without torch) and converts a backbone
checkpoint (the layouts of :mod:`pretrained.convert`) or a whole CCNet
(:mod:`pretrained.convert_ccnet`), checks that every tensor fits the Jittor
model and returns ``(state_dict, meta)``; :func:`convert_file` writes that as
a ``.pkl`` weights file (``convert_weights.py``).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models import BACKBONES
from models.input_norm import CAFFE_BGR, IMAGENET_RGB, InputNorm
from models.van import VAN_LEGACY_NAMES
from models.weights import load_state_dict_strict
from pretrained import KNOWN_FILES, PRETRAINED_DIR
from pretrained.convert import (LAYOUTS, RESNET_LAYOUT_STEM, ConversionError, check_fits, convert_backbone,
                                default_output_name, describe_arch, detect_layout, infer_arch, unwrap)
from pretrained.convert_ccnet import convert_ccnet_checkpoint, detect_ccnet_layout
from pretrained.io import WEIGHTS_FORMAT, check_output_dir, check_output_file, save_weights
from pretrained.torch_reader import CheckpointFormatError, read_torch_checkpoint

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


def verify_forward(model, size: int = 64) -> list[tuple[int, ...]]:
    """One eval-mode forward pass on a random image; raises ConversionError on a non-finite output."""
    model.eval()
    x = jt.array(np.random.RandomState(0).randn(1, 3, size, size).astype("float32"))
    with jt.no_grad():
        outs = [o.numpy() for o in model(x)]
    for i, o in enumerate(outs):
        if not np.isfinite(o).all():
            raise ConversionError(f"--verify: stage {i + 1} output has non-finite values")
    return [tuple(o.shape) for o in outs]


def read_checkpoint(src: str) -> Any:
    """The object ``torch.save`` wrote to ``src`` (tensors as numpy), or a ConversionError saying why not."""
    try:
        return read_torch_checkpoint(src)
    except CheckpointFormatError as e:
        raise ConversionError(f"{e}. Pass a file written by torch.save (.pth, .pt, .pth.tar).") from None


def convert_checkpoint(src: str, obj: Any = None, arch: Optional[str] = None, layout: Optional[str] = None,
                       prefix: Optional[str] = None, verify: bool = False, log: Callable[[str], None] = print,
                       recurrence: Optional[int] = None) -> tuple[dict, dict, str]:
    """Convert a PyTorch checkpoint in memory; returns ``(state_dict, meta, default output file name)``.

    ``obj`` is what ``src`` holds (read here when None). Whole CCNet
    checkpoints (official snapshots, mmsegmentation) go to
    :func:`pretrained.convert_ccnet.convert_ccnet_checkpoint` (``arch`` is then
    a ``models.MODEL_PRESETS`` name, ``recurrence`` is recorded in the
    metadata); everything else is a backbone (``arch`` in :data:`ARCHS`).

    Raises ConversionError when the file is not a checkpoint, its layout is
    unknown, or it does not fit the architecture.
    """
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
        state_dict, meta = convert_ccnet_checkpoint(src, obj, ccnet_preset, recurrence, verify, log)
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
        "input_norm_values": {"mean": list(model.input_norm.mean), "std": list(model.input_norm.std),
                              "bgr": model.input_norm.bgr},
        "source": name,
    }
    return state_dict, meta, default_output_name(arch, layout)


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
