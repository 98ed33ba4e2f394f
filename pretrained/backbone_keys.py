"""The key maps of ImageNet backbone checkpoints: recognise a layout, map its keys (pure dict -> dict).

Source layouts (``LAYOUTS``) and what conversion does with them:

``resnet_deep``
    CSAIL/MIT ``resnet101-imagenet.pth`` and the official CCNet backbone:
    3x3 stem ``conv1/bn1, conv2/bn2, conv3/bn3`` (64-64-128), ``layerN.i.*``,
    ``fc.*``. Names are kept; ``fc.*`` dropped. Target stem ``deep``.
``resnet_torchvision``
    torchvision ResNet: 7x7 ``conv1/bn1``. Names kept; ``fc.*`` dropped.
``resnet_v1c``
    open-mmlab ``resnet50_v1c``/``resnet101_v1c``: ``stem.{0,1,3,4,6,7}``
    (32-32-64). Names kept; ``fc.*``/``head.*`` dropped.
``van_official``
    VAN-Classification ``van_*.pth.tar`` (weights under ``state_dict``):
    ``patch_embed{i}``, ``block{i}.{j}``, ``norm{i}``. Names kept; ``head.*``
    dropped.
``van_hf``
    HuggingFace ``VanModel`` / ``VanForImageClassification``
    (``[van.]encoder.stages.{s}.layers.{j}...``): renamed to the official
    names; ``classifier.*`` and the unused ``van.layernorm.*`` dropped.

All layouts: ``*.num_batches_tracked`` is dropped (Jittor BatchNorm has no
such buffer), a ``module.`` prefix is stripped, and checkpoints wrapped in
``state_dict``/``model`` are unwrapped. A checkpoint of a whole segmentation
model can be converted part by part: :func:`convert_backbone` takes a
``prefix`` (e.g. ``"backbone."``) and returns the keys outside it as skipped.

The functions here never touch files or build models: :mod:`pretrained.converter`
reads checkpoints, picks backbone or whole-CCNet conversion (:mod:`pretrained.ccnet_keys`),
checks the result against the model and writes it.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from models.resnet import RESNET_DEPTHS
from models.van import VAN_CONFIGS
from utils.fileio import FileFormatError
from utils.weight_files import unwrap_checkpoint

__all__ = [
    "LAYOUTS",
    "ConversionError",
    "ConversionResult",
    "unwrap",
    "strip_prefix",
    "detect_layout",
    "infer_arch",
    "convert_resnet",
    "convert_van_official",
    "convert_van_hf",
    "convert_backbone",
    "map_names",
    "check_fits",
    "compare_with_model",
    "describe_arch",
    "default_output_name",
    "RESNET_LAYOUT_STEM",
    "with_bn_counters",
    "export_backbone",
]

LAYOUTS: dict[str, str] = {
    "resnet_deep": "MIT/CSAIL or official CCNet deep-stem ResNet (3x3 stem conv1..conv3, 64-64-128)",
    "resnet_torchvision": "torchvision ResNet (7x7 conv1)",
    "resnet_v1c": "open-mmlab ResNetV1c (stem.0 .. stem.7, 32-32-64)",
    "van_official": "official VAN classification checkpoint (patch_embed1.proj..., under 'state_dict')",
    "van_hf": "HuggingFace VanModel / VanForImageClassification (van.encoder.stages...)",
}

#: Target ResNet stem of each ResNet layout.
RESNET_LAYOUT_STEM: dict[str, str] = {"resnet_deep": "deep", "resnet_torchvision": "torchvision",
                                      "resnet_v1c": "v1c"}

_BN_COUNTER = "num_batches_tracked"


class ConversionError(ValueError):
    """The checkpoint cannot be converted to the requested architecture; the message says why."""


@dataclass
class ConversionResult:
    """Converted tensors plus an account of everything that was not converted."""

    state_dict: "OrderedDict[str, np.ndarray]" = field(default_factory=OrderedDict)
    skipped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    renamed: dict[str, str] = field(default_factory=dict)  # target key -> source key (where different)


# ----------------------------------------------------------------------------- containers


def unwrap(obj: Any) -> tuple["OrderedDict[str, np.ndarray]", list[str]]:
    """:func:`utils.weight_files.unwrap_checkpoint`, with a :class:`ConversionError` when there are no tensors."""
    try:
        return unwrap_checkpoint(obj)
    except FileFormatError as exc:
        raise ConversionError(str(exc)) from None


def strip_prefix(sd: Mapping[str, np.ndarray], prefix: str) -> tuple["OrderedDict[str, np.ndarray]", dict[str, str]]:
    """Keys under ``prefix`` (prefix removed), and the others as ``{key: reason}``."""
    if not prefix:
        return OrderedDict(sd), {}
    inside = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
    outside = {k: f"outside {prefix!r}" for k in sd if not k.startswith(prefix)}
    return inside, outside


# ----------------------------------------------------------------------------- detection


def detect_layout(sd: Mapping[str, np.ndarray]) -> Optional[str]:
    """Guesses the source layout from the keys (None when nothing fits)."""
    keys = set(sd)
    if any(k.startswith(("van.encoder.stages.", "encoder.stages.")) for k in keys):
        return "van_hf"
    if "patch_embed1.proj.weight" in keys:
        return "van_official"
    if "stem.0.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "resnet_v1c"
    conv1 = sd.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and any(k.startswith("layer1.") for k in keys):
        if conv1.shape[-1] == 7:
            return "resnet_torchvision"
        if conv1.shape[-1] == 3 and "conv3.weight" in keys:
            return "resnet_deep"
    return None


def _resnet_blocks(sd: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    counts = []
    for layer in range(1, 5):
        idx = {int(m.group(1)) for k in sd for m in [re.match(rf"layer{layer}\.(\d+)\.", k)] if m}
        counts.append(max(idx) + 1 if idx else 0)
    return tuple(counts)


def _van_geometry(sd: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    dims, depths = [], []
    for s in range(1, 5):
        w = sd.get(f"patch_embed{s}.proj.weight")
        dims.append(int(w.shape[0]) if w is not None else 0)
        idx = {int(m.group(1)) for k in sd for m in [re.match(rf"block{s}\.(\d+)\.", k)] if m}
        depths.append(max(idx) + 1 if idx else 0)
    return tuple(dims), tuple(depths)


def describe_arch(arch: str) -> str:
    """Human-readable geometry of an architecture name."""
    if arch.startswith("resnet"):
        return f"{arch} (blocks per stage {'/'.join(map(str, RESNET_DEPTHS[int(arch[6:])]))})"
    cfg = VAN_CONFIGS[arch]
    return (f"{arch} (embed dims {'/'.join(map(str, cfg['embed_dims']))}, "
            f"depths {'/'.join(map(str, cfg['depths']))})")


def infer_arch(sd: Mapping[str, np.ndarray], layout: str) -> tuple[Optional[str], str]:
    """``(arch or None, description of what the file holds)`` for a state dict in ``layout``.

    ``sd`` must already be in the target names (i.e. after conversion) for VAN.
    """
    if layout.startswith("resnet"):
        blocks = _resnet_blocks(sd)
        if not any(blocks):
            return None, "no ResNet stages (no layer1..layer4 keys)"
        what = f"a ResNet with blocks per stage {'/'.join(map(str, blocks))}"
        if "layer1.0.conv3.weight" not in sd:
            return None, what + " built from basic blocks (ResNet-18/34); only Bottleneck ResNets are supported"
        for depth, layers in RESNET_DEPTHS.items():
            if tuple(layers) == blocks:
                return f"resnet{depth}", f"ResNet-{depth} ({what[2:]})"
        return None, what
    dims, depths = _van_geometry(sd)
    if not any(depths):
        return None, "no VAN stages (no block1..block4 keys)"
    what = f"a VAN with embed dims {'/'.join(map(str, dims))}, depths {'/'.join(map(str, depths))}"
    for name, cfg in VAN_CONFIGS.items():
        if tuple(cfg["embed_dims"]) == dims and tuple(cfg["depths"]) == depths:
            return name, f"VAN-{name[4:].upper()} ({what[2:]})"
    return None, what


# ----------------------------------------------------------------------------- conversions


def bn_counter_skip(key: str) -> Optional[str]:
    """Why a key is dropped by every conversion (None: keep it)."""
    if key.endswith(_BN_COUNTER):
        return "BatchNorm batch counter (Jittor BatchNorm has none)"
    return None


def map_names(sd: Mapping[str, np.ndarray], drop: tuple[str, ...], reason: str,
              rename: Optional[Callable[[str], str]] = None) -> ConversionResult:
    """Every key under its own name, or ``rename(key)``, except BatchNorm counters and the keys under ``drop``.

    The dropped keys are returned as skipped, those under ``drop`` with ``reason``.
    """
    res = ConversionResult()
    for key, value in sd.items():
        why = bn_counter_skip(key) or (reason if key.startswith(drop) else None)
        if why:
            res.skipped[key] = why
            continue
        target = rename(key) if rename else key
        res.state_dict[target] = value
        if target != key:
            res.renamed[target] = key
    return res


def convert_resnet(sd: Mapping[str, np.ndarray], layout: str = "resnet_deep") -> ConversionResult:
    """ResNet layouts: the names already are the Jittor names; the classifier is dropped."""
    if layout not in RESNET_LAYOUT_STEM:
        raise ConversionError(f"not a ResNet layout: {layout!r}")
    return map_names(sd, ("fc.", "head.", "neck."), "classifier/head (not part of the backbone)")


def convert_van_official(sd: Mapping[str, np.ndarray]) -> ConversionResult:
    """Official VAN: names kept; ``head.*`` (ImageNet classifier) dropped."""
    return map_names(sd, ("head.",), "ImageNet classifier head (not part of the backbone)")


# HuggingFace layer name (after "encoder.stages.{s}.layers.{j}.") -> official name (after "block{s+1}.{j}.").
_HF_LAYER_RENAMES: list[tuple[str, str]] = [
    ("pre_normomalization.", "norm1."),
    ("attention.pre_projection.conv.", "attn.proj_1."),
    ("attention.attention_layer.attention.depth_wise_dilated.", "attn.spatial_gating_unit.conv_spatial."),
    ("attention.attention_layer.attention.depth_wise.", "attn.spatial_gating_unit.conv0."),
    ("attention.attention_layer.attention.point_wise.", "attn.spatial_gating_unit.conv1."),
    ("attention.post_projection.", "attn.proj_2."),
    ("attention_scaling.weight", "layer_scale_1"),
    ("post_normalization.", "norm2."),
    ("mlp.in_dense.", "mlp.fc1."),
    ("mlp.depth_wise.", "mlp.dwconv.dwconv."),
    ("mlp.out_dense.", "mlp.fc2."),
    ("mlp_scaling.weight", "layer_scale_2"),
]


def _hf_to_official(key: str) -> Optional[str]:
    m = re.match(r"encoder\.stages\.(\d+)\.(.*)$", key)
    if not m:
        return None
    s, rest = int(m.group(1)) + 1, m.group(2)
    m2 = re.match(r"layers\.(\d+)\.(.*)$", rest)
    if m2:
        j, tail = m2.group(1), m2.group(2)
        for old, new in _HF_LAYER_RENAMES:
            if tail.startswith(old):
                return f"block{s}.{j}.{new}{tail[len(old):]}"
        return None
    for old, new in (("embeddings.convolution.", "proj."), ("embeddings.normalization.", "norm.")):
        if rest.startswith(old):
            return f"patch_embed{s}.{new}{rest[len(old):]}"
    if rest.startswith("normalization."):
        return f"norm{s}.{rest[len('normalization.'):]}"
    return None


def convert_van_hf(sd: Mapping[str, np.ndarray]) -> ConversionResult:
    """HuggingFace ``VanModel``/``VanForImageClassification`` -> official VAN names."""
    res = ConversionResult()
    for key, value in sd.items():
        bare = key[len("van."):] if key.startswith("van.") else key
        reason = bn_counter_skip(key)
        if reason is None and bare.startswith("classifier."):
            reason = "ImageNet classifier head (not part of the backbone)"
        if reason is None and bare.startswith("layernorm."):
            reason = "HuggingFace's final LayerNorm, which VanModel never applies"
        if reason:
            res.skipped[key] = reason
            continue
        new = _hf_to_official(bare)
        if new is None:
            res.state_dict[key] = value  # left as is; the shape check reports it as unexpected
        else:
            res.state_dict[new] = value
            res.renamed[new] = key
    return res


def convert_backbone(sd: Mapping[str, np.ndarray], layout: str, prefix: str = "",
                     exclude: tuple[str, ...] = ()) -> ConversionResult:
    """Converts the backbone part of ``sd`` (the keys under ``prefix``) from ``layout``.

    Keys outside ``prefix``, and keys starting with one of ``exclude``, are
    returned as skipped, so a whole segmentation checkpoint can be converted
    piecewise: mmseg ``prefix="backbone."`` (``decode_head.*``/``auxiliary_head.*``
    left over), official CCNet ``exclude=("head.", "dsn.")``.
    """
    inner, outside = strip_prefix(sd, prefix)
    for key in [k for k in inner if k.startswith(exclude)] if exclude else []:
        del inner[key]
        outside[prefix + key] = "not part of the backbone"
    if layout in RESNET_LAYOUT_STEM:
        res = convert_resnet(inner, layout)
    elif layout == "van_official":
        res = convert_van_official(inner)
    elif layout == "van_hf":
        res = convert_van_hf(inner)
    else:
        raise ConversionError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if prefix:
        res.skipped = {prefix + k: v for k, v in res.skipped.items()}
        res.renamed = {k: prefix + v for k, v in res.renamed.items()}
    res.skipped.update(outside)
    return res


def compare_with_model(sd: Mapping[str, np.ndarray], expected: Mapping[str, tuple]
                       ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """``(missing, unexpected, mismatched)`` of ``sd`` against ``{key: shape}`` of the model."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [(k, tuple(expected[k]), tuple(v.shape)) for k, v in sd.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k])]
    return missing, unexpected, mismatched


# ----------------------------------------------------------------------------- output


def check_fits(sd: Mapping[str, np.ndarray], model: Any, what: str, hint: Optional[str] = None) -> None:
    """Raises :class:`ConversionError` listing missing, unexpected and wrong-shape keys of ``sd`` against ``model``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, mismatched = compare_with_model(sd, expected)
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{what}: {len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with the wrong shape"]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", [f"{k}: model {list(a)}, file {list(b)}" for k, a, b in mismatched])):
        if items:
            lines.append(f"  {title}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
    if hint:
        lines.append(f"  {hint}")
    raise ConversionError("\n".join(lines))


# ----------------------------------------------------------------------------- export (the maps read backwards)


def with_bn_counters(sd: Mapping[str, np.ndarray]) -> "OrderedDict[str, np.ndarray]":
    """``sd`` with PyTorch's ``num_batches_tracked`` (int64, 0-d, 0) after every BatchNorm's ``running_var``.

    Jittor's BatchNorm counts no batches; PyTorch's BatchNorm with the default
    ``momentum`` never reads the counter, and ``load_state_dict(strict=True)``
    needs it.
    """
    out = OrderedDict()
    for key, value in sd.items():
        out[key] = value
        if key.endswith(".running_var") and f"{key[:-len('running_var')]}running_mean" in sd:
            out[key[:-len("running_var")] + _BN_COUNTER] = np.array(0, dtype=np.int64)
    return out


#: Export target -> the backbone layout it holds (detect_layout of our backbone keys must give it).
EXPORT_BACKBONES: dict[str, str] = {"official": "resnet_deep", "mmseg": "resnet_v1c",
                                    "torchvision": "resnet_torchvision", "van": "van_official"}


def export_backbone(sd: Mapping[str, np.ndarray], target: str) -> "OrderedDict[str, np.ndarray]":
    """Our backbone keys (``backbone.*``) in the ImageNet layout ``target`` ("torchvision" or "van").

    Every layout keeps our names (the conversions above only drop keys), so
    this strips ``backbone.`` and adds the BatchNorm counters; raises
    :class:`ConversionError` when the backbone is not of that layout.
    """
    backbone, _ = strip_prefix(sd, "backbone.")
    if not backbone:
        backbone = OrderedDict(sd)  # a backbone weights file: no prefix
    check_export_backbone(backbone, target)
    return with_bn_counters(backbone)


def check_export_backbone(backbone: Mapping[str, np.ndarray], target: str) -> None:
    """:class:`ConversionError` unless ``backbone`` (our names, no prefix) has the layout ``target`` needs."""
    want, have = EXPORT_BACKBONES[target], detect_layout(backbone)
    if have != want:
        what = LAYOUTS.get(have, "a backbone of no known layout")
        raise ConversionError(f"the {target!r} layout holds a {LAYOUTS[want]} backbone; this model has {what}")


def default_output_name(arch: str, layout: str) -> str:
    """File name under ``pretrained/``: ``resnet101_deep.pkl``, ``van_b2.pkl``..."""
    if layout in RESNET_LAYOUT_STEM:
        return f"{arch}_{RESNET_LAYOUT_STEM[layout]}.pkl"
    return f"{arch}.pkl"
