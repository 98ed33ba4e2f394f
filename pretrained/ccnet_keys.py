"""The key maps of whole CCNet checkpoints (PyTorch): recognise a layout, map its keys, read its settings.

Two source layouts (``CCNET_LAYOUTS``):

``ccnet_official``
    speedinghzl/CCNet snapshots (``CS_scenes_*.pth``, the released models):
    the deep-stem backbone at the top level (``conv1``, ``bn1`` .. ``layer4``),
    ``head.*`` (RCCA) and ``dsn.*`` (auxiliary head). BatchNorm keys come from
    InPlace-ABN (same names as ``BatchNorm2d``; ``num_batches_tracked`` only
    with inplace_abn >= 1.1). A ``module.`` prefix is stripped. Renaming: the
    backbone keys get the ``backbone.`` prefix; ``head.*``/``dsn.*`` are kept.
    Target preset ``ccnet_resnet101`` (or ``ccnet_resnet50``).
``ccnet_mmseg``
    mmsegmentation CCNet checkpoints (``{"meta", "state_dict", "optimizer"}``):
    ``backbone.*`` (ResNetV1c, names kept), ``decode_head.*`` (``CCHead``) and
    ``auxiliary_head.*`` (``FCNHead``), renamed to the official names:

    ====================================  ============================
    mmsegmentation                        Jittor CCNet
    ====================================  ============================
    decode_head.convs.0.conv / .bn        head.conva.0 / head.conva.1
    decode_head.cca.gamma.scale (0-d)     head.cca.gamma (shape [1])
    decode_head.cca.{query,key,value}_conv  head.cca.*
    decode_head.convs.1.conv / .bn        head.convb.0 / head.convb.1
    decode_head.conv_cat.conv / .bn       head.bottleneck.0 / .1
    decode_head.conv_seg                  head.bottleneck.3
    auxiliary_head.convs.0.conv / .bn     dsn.0 / dsn.1
    auxiliary_head.conv_seg               dsn.3
    ====================================  ============================

    Target preset ``ccnet_resnet101_mmseg`` (or ``..50..``). ``align_corners``
    is read from the config text stored in the checkpoint's ``meta`` when there
    is one (the 769x769 configs use True, the 512x1024 ones False).

The preset (depth from the number of blocks), the class count (rows of the
classifier) and the auxiliary width (when it differs from the preset's, as an
override) are read from the tensors (:func:`infer_ccnet_config`). The
functions here never touch files or build models; :mod:`pretrained.converter`
does, and writes the weights file.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Mapping, Optional

import numpy as np

from models import MODEL_PRESETS
from models.resnet import RESNET_DEPTHS
from pretrained.backbone_keys import (ConversionError, ConversionResult, bn_counter_skip, check_export_backbone,
                                      map_names, strip_prefix, with_bn_counters)

__all__ = [
    "CCNET_LAYOUTS",
    "detect_ccnet_layout",
    "convert_ccnet_official",
    "convert_ccnet_mmseg",
    "convert_ccnet_state_dict",
    "infer_ccnet_config",
    "checkpoint_align_corners",
    "class_names",
    "export_ccnet",
]

CCNET_LAYOUTS: dict[str, str] = {
    "ccnet_official": "official CCNet snapshot (conv1..layer4, head.conva..., head.cca.gamma, dsn.*)",
    "ccnet_mmseg": "mmsegmentation CCNet (backbone.stem..., decode_head.convs..., auxiliary_head...)",
}

#: mmseg key prefix -> Jittor CCNet prefix (first match wins).
_MMSEG_RENAMES: list[tuple[str, str]] = [
    ("decode_head.convs.0.conv.", "head.conva.0."),
    ("decode_head.convs.0.bn.", "head.conva.1."),
    ("decode_head.convs.1.conv.", "head.convb.0."),
    ("decode_head.convs.1.bn.", "head.convb.1."),
    ("decode_head.conv_cat.conv.", "head.bottleneck.0."),
    ("decode_head.conv_cat.bn.", "head.bottleneck.1."),
    ("decode_head.conv_seg.", "head.bottleneck.3."),
    ("decode_head.cca.gamma.scale", "head.cca.gamma"),
    ("decode_head.cca.", "head.cca."),
    ("auxiliary_head.convs.0.conv.", "dsn.0."),
    ("auxiliary_head.convs.0.bn.", "dsn.1."),
    ("auxiliary_head.conv_seg.", "dsn.3."),
    ("backbone.", "backbone."),
]

_BACKBONE_OFFICIAL = re.compile(r"^(conv[123]|bn[123]|layer[1-4])\.")


def detect_ccnet_layout(sd: Mapping[str, Any]) -> Optional[str]:
    """``"ccnet_official"``, ``"ccnet_mmseg"`` or None (not a whole CCNet checkpoint)."""
    keys = set(sd)
    if "head.conva.0.weight" in keys or "head.cca.gamma" in keys:
        return "ccnet_official"
    if "decode_head.cca.query_conv.weight" in keys or "decode_head.cca.gamma.scale" in keys:
        return "ccnet_mmseg"
    return None


def convert_ccnet_official(sd: Mapping[str, np.ndarray]) -> ConversionResult:
    """Official snapshot -> Jittor CCNet names (backbone under ``backbone.``; ``head.*``, ``dsn.*`` kept).

    Keys that are neither are kept as they are; the shape check reports them as unexpected.
    """
    return map_names(sd, ("fc.",), "ImageNet classifier (not part of CCNet)",
                     rename=lambda key: "backbone." + key if _BACKBONE_OFFICIAL.match(key) else key)


def convert_ccnet_mmseg(sd: Mapping[str, np.ndarray]) -> ConversionResult:
    """mmsegmentation CCNet -> Jittor CCNet names (official head layout)."""
    res = ConversionResult()
    for key, value in sd.items():
        reason = bn_counter_skip(key)
        if reason is None and key.startswith(("decode_head.loss", "auxiliary_head.loss")):
            reason = "loss module buffer"
        if reason:
            res.skipped[key] = reason
            continue
        for old, new in _MMSEG_RENAMES:
            if key.startswith(old):
                target = new + key[len(old):]
                if target == "head.cca.gamma":
                    value = np.asarray(value).reshape(1)  # mmcv Scale: a 0-d parameter
                res.state_dict[target] = value
                if target != key:
                    res.renamed[target] = key
                break
        else:
            res.state_dict[key] = value  # left as is; the shape check reports it as unexpected
    return res


def export_ccnet(sd: Mapping[str, np.ndarray], target: str) -> "OrderedDict[str, np.ndarray]":
    """Our whole-CCNet keys in the layout ``target`` ("official" or "mmseg"): the renames above read
    backwards, mmcv's 0-d ``Scale`` for gamma. mmseg's BatchNorms get ``num_batches_tracked``; the
    official snapshots have none (InPlace-ABN before 1.1 has no such buffer, and PyTorch's BatchNorm
    fills it in when a state dict without version metadata lacks it), so neither does the export.

    Raises :class:`ConversionError` for what the layout cannot hold: another
    backbone (the official layout has the deep-stem ResNet, mmseg ResNetV1c),
    a neck (the VAN presets), the CCL projection ``head_ccl``.
    """
    if not any(k.startswith("head.") for k in sd):
        raise ConversionError(f"the {target!r} layout is a whole CCNet; this file holds no RCCA head (head.*): "
                              "a backbone exports with --export torchvision or --export van")
    extra = sorted({k.split(".")[0] for k in sd if not k.startswith(("backbone.", "head.", "dsn."))})
    if extra:
        why = {"head_ccl": "the CCL projection (trained with --ccl)", "neck": "the VAN neck"}
        raise ConversionError(f"the {target!r} layout has no place for " +
                              ", ".join(f"{name}.* ({why.get(name, 'not part of that model')})" for name in extra))
    backbone, _ = strip_prefix(sd, "backbone.")
    check_export_backbone(backbone, target)
    out = OrderedDict()
    for key, value in sd.items():
        if target == "official":
            name = key[len("backbone."):] if key.startswith("backbone.") else key
        else:
            name = next((old + key[len(new):] for old, new in _MMSEG_RENAMES if key.startswith(new)), None)
            if name is None:
                raise ConversionError(f"{key}: mmsegmentation's CCNet has no place for it")
            if name == "decode_head.cca.gamma.scale":
                value = np.asarray(value).reshape(())  # mmcv Scale: a 0-d parameter
        out[name] = value
    return out if target == "official" else with_bn_counters(out)


def convert_ccnet_state_dict(sd: Mapping[str, np.ndarray], layout: Optional[str] = None) -> tuple[ConversionResult, str]:
    """Converts a whole CCNet state dict; returns ``(result, layout)``."""
    layout = layout or detect_ccnet_layout(sd)
    if layout == "ccnet_official":
        return convert_ccnet_official(sd), layout
    if layout == "ccnet_mmseg":
        return convert_ccnet_mmseg(sd), layout
    raise ConversionError(f"not a whole CCNet checkpoint (layout {layout!r}); known: {', '.join(CCNET_LAYOUTS)}")


def _blocks(sd: Mapping[str, Any], layer: int) -> int:
    idx = {int(m.group(1)) for k in sd for m in [re.match(rf"backbone\.layer{layer}\.(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def infer_ccnet_config(sd: Mapping[str, np.ndarray], layout: str) -> tuple[str, int, dict, str]:
    """``(preset, num_classes, overrides, description)`` from a converted state dict."""
    blocks = tuple(_blocks(sd, i) for i in range(1, 5))
    depth = next((d for d, b in RESNET_DEPTHS.items() if tuple(b) == blocks), None)
    if depth not in (50, 101):
        raise ConversionError(f"the backbone has blocks per stage {'/'.join(map(str, blocks))}; "
                              f"CCNet presets exist for ResNet-50 (3/4/6/3) and ResNet-101 (3/4/23/3)")
    cls = sd.get("head.bottleneck.3.weight")
    if cls is None or np.ndim(cls) != 4:
        raise ConversionError("no classifier weight (head.bottleneck.3.weight / decode_head.conv_seg.weight)")
    num_classes = int(cls.shape[0])
    preset = f"ccnet_resnet{depth}" + ("_mmseg" if layout == "ccnet_mmseg" else "")
    cfg = MODEL_PRESETS[preset]
    overrides: dict = {}
    channels = int(sd["head.conva.0.weight"].shape[0]) if "head.conva.0.weight" in sd else cfg["channels"]
    if channels != cfg["channels"]:
        overrides["channels"] = channels
    aux = sd.get("dsn.0.weight")
    aux_channels = int(aux.shape[0]) if aux is not None else None
    if aux_channels != cfg["aux_channels"]:
        overrides["aux_channels"] = aux_channels
    if aux is not None and ("dsn.0.bias" in sd) != cfg["aux_bias"]:
        overrides["aux_bias"] = "dsn.0.bias" in sd
    what = (f"CCNet ResNet-{depth} ({'official' if layout == 'ccnet_official' else 'mmsegmentation'} layout), "
            f"{num_classes} classes, head width {channels}, auxiliary head "
            f"{aux_channels if aux_channels else 'none'}")
    return preset, num_classes, overrides, what


def _strings(obj: Any, depth: int = 0):
    if depth > 4:
        return
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _strings(v, depth + 1)


def checkpoint_align_corners(obj: Any) -> Optional[bool]:
    """``align_corners`` from the config text in an mmseg checkpoint's ``meta`` (None if absent/ambiguous)."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    found = set()
    for text in _strings(meta):
        found.update(m == "True" for m in re.findall(r"align_corners\s*=\s*(True|False)", text))
        found.update(m == "true" for m in re.findall(r'"align_corners"\s*:\s*(true|false)', text))
    return found.pop() if len(found) == 1 else None


def class_names(obj: Any) -> Optional[list[str]]:
    """The class names an mmseg checkpoint's ``meta`` records (None if it records none)."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    for holder in (meta, meta.get("dataset_meta")):
        if isinstance(holder, Mapping):
            for key in ("CLASSES", "classes"):
                names = holder.get(key)
                if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                    return list(names)
    return None
