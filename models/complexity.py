"""Model complexity: trainable parameters and the FLOPs of one forward pass, counted from the layers as they run.

:func:`count_parameters` splits the trainable parameters (those a
``build_optimizer`` would train; BatchNorm running statistics are buffers, not
parameters) into the backbone (``model.backbone``) and the rest (neck, RCCA
head, auxiliary head): the official ResNet-101 CCNet with 19 classes has
71,287,911 = 42.62M + 28.66M, as the original code.

:func:`count_flops` runs one eval-mode forward pass on a zero input with a
forward hook (Jittor's ``Module.register_forward_hook``) on every module, so
each count uses the shapes the layer really sees. Jittor evaluates lazily and
every shape is known when an op is created, so the pass is never computed:
counting ResNet-101 at 769x769 takes under a second. FLOPs are 2 x
multiply-adds of:

* convolutions (``nn.Conv2d``; grouped and dilated included): ``2 * out.numel() * C_in/groups * kh * kw``;
* linear layers: ``2 * out.numel() * in_features``;
* criss-cross attention (:class:`models.ccnet.CrissCrossAttention`, once per
  recurrence): the energies ``ca_weight`` ``2*B*Cqk*H*W*(H+W-1)`` and the
  aggregation ``ca_map`` ``2*B*C*H*W*(H+W-1)``; its 1x1 query/key/value convs
  are counted as convolutions; over a clip (:class:`models.ccnet.CrissCrossAttention3D`)
  ``B*H*W*(H+W-1)`` becomes ``B*T*H*W*(T+H+W-2)``;
* the non-local block (:class:`models.nonlocal_block.NonLocalBlock`): the
  energies ``2*B*Ck*N*N`` and the aggregation ``2*B*Cv*N*N`` (``N = H*W``),
  its 1x1 convs as convolutions.

Not counted: bias adds, BatchNorm and LayerNorm, activations, softmax, dropout,
pooling, interpolation, concatenation, residual adds and scales (element-wise
work, about one operation per element; ``bench_context.py`` puts the
attention's share under 1%). The result lists the kinds of leaf modules that
ran without a count (``not_counted``). In eval mode a CCNet returns only the
main logits, so its auxiliary head (``dsn``) does not run and is not counted.
This is the convention of ``benchmarks/bench_context.py``'s analytic count, and
the two agree on the RCCA module (tested).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.ccnet import CrissCrossAttention, CrissCrossAttention3D
from models.nonlocal_block import NonLocalBlock

__all__ = ["cca_flops", "KINDS", "count_parameters", "count_flops", "describe"]

#: The kinds of counted work, in the order of the breakdown.
KINDS = ("conv", "linear", "cca_weight", "cca_map", "nonlocal_energy", "nonlocal_aggregation")


def _numel(shape) -> int:
    return int(np.prod([int(s) for s in shape], dtype=np.int64))


def _trainable(module: nn.Module) -> int:
    return sum(_numel(p.shape) for p in module.parameters() if not p.is_stop_grad())


def count_parameters(model: nn.Module) -> dict:
    """Trainable parameters: ``{"total", "backbone", "head", "by_part": {child name: count}}``.

    ``backbone`` is ``model.backbone`` (0 if the model has none) and ``head``
    everything else; ``by_part`` splits the total over the model's top-level
    children (``backbone``, ``neck``, ``head``, ``dsn``; parameters held by the
    model itself under ``(own)``).
    """
    total = _trainable(model)
    backbone = getattr(model, "backbone", None)
    n_backbone = _trainable(backbone) if isinstance(backbone, nn.Module) else 0
    by_part: dict[str, int] = {}
    in_children = 0
    for name, child in model.named_children():
        n = _trainable(child)
        if n:
            by_part[name] = n
            in_children += n
    if total - in_children:
        by_part["(own)"] = total - in_children
    return {"total": total, "backbone": n_backbone, "head": total - n_backbone, "by_part": by_part}


def _input_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = (1, 3) + shape
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (H, W) or (B, C, H, W) with positive sizes, got {list(input_shape)}")
    return shape  # type: ignore[return-value]


def cca_flops(batch: int, qk_channels: int, channels: int, height: int, width: int,
              frames: int = 1) -> dict[str, int]:
    """Forward FLOPs of criss-cross attention: ``{"cca_weight": ..., "cca_map": ...}`` (module docstring);
    with ``frames`` > 1 of the 3-D attention over clips (``T + H + W - 2`` positions per pixel).

    The backward pass computes two products of the same size per product (the
    gradients of both inputs), so forward + backward is three times the sum.
    """
    positions = batch * frames * height * width * (frames + height + width - 2)
    return {"cca_weight": 2 * positions * qk_channels, "cca_map": 2 * positions * channels}


def _layer_flops(module: nn.Module, x: jt.Var, out) -> dict[str, int]:
    """FLOPs by kind of one call of ``module`` (input ``x``, output ``out``); {} for a module not counted."""
    if isinstance(module, nn.Conv):
        # weight [C_out, C_in / groups, kh, kw]: one multiply-add per weight of a group per output element
        return {"conv": 2 * _numel(out.shape) * _numel(module.weight.shape[1:])}
    if isinstance(module, nn.Linear):
        return {"linear": 2 * _numel(out.shape) * int(module.weight.shape[1])}
    if isinstance(module, CrissCrossAttention3D):  # (a subclass of CrissCrossAttention: first)
        B, _, T, H, W = (int(s) for s in x.shape)
        return cca_flops(B, int(module.query_conv.out_channels), int(module.value_conv.out_channels), H, W, T)
    if isinstance(module, CrissCrossAttention):
        B, _, H, W = (int(s) for s in x.shape)
        return cca_flops(B, int(module.query_conv.out_channels), int(module.value_conv.out_channels), H, W)
    if isinstance(module, NonLocalBlock):
        B, _, H, W = (int(s) for s in x.shape)
        pairs = B * (H * W) ** 2
        return {"nonlocal_energy": 2 * pairs * module.key_channels,
                "nonlocal_aggregation": 2 * pairs * module.value_channels}
    return {}


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """FLOPs (2 x multiply-adds) of one eval-mode forward pass of ``model`` on ``input_shape``.

    Args:
        model: any Jittor module; its training mode is restored afterwards.
        input_shape: ``(H, W)`` (batch 1, 3 channels) or ``(B, C, H, W)``.

    Returns:
        ``{"flops", "gflops", "input_shape", "by_kind": {kind: flops}, "by_part":
        {top-level child: flops}, "layers": [{"name", "kind", "flops",
        "output_shape"}, ...] (one entry per call and kind), "not_counted":
        [leaf module types that ran without a count]}``. What is and is not
        counted: see the module docstring.
    """
    shape = _input_shape(input_shape)
    names = {id(m): name for name, m in model.named_modules()}
    layers: list[dict] = []
    not_counted: set[str] = set()

    modules = list(model.modules())
    previous = {id(m): m.__dict__["__fhook__"] for m in modules if "__fhook__" in m.__dict__}

    def hook(module, args, out, *kw):
        own = previous.get(id(module))  # a hook the module already had runs as before
        result = own(module, args, out, *kw) if own is not None else None
        found = _layer_flops(module, args[0] if args else None, out)
        name = names.get(id(module), type(module).__name__)
        for kind, flops in found.items():
            out_shape = out.shape if isinstance(out, jt.Var) else None
            layers.append({"name": name, "kind": kind, "flops": int(flops),
                           "output_shape": [int(s) for s in out_shape] if out_shape is not None else None})
        if not found and not list(module.children()):
            not_counted.add(type(module).__name__)
        return result

    was_training = model.is_training()
    try:
        for m in modules:
            m.register_forward_hook(hook)
        model.eval()
        with jt.no_grad():
            out = model(jt.zeros(shape, dtype="float32"))
        del out  # never computed: the shapes were all the count needed
    finally:
        for m in modules:
            m.remove_forward_hook()
            if id(m) in previous:
                m.register_forward_hook(previous[id(m)])
        if was_training:
            model.train()
    by_kind = {kind: 0 for kind in KINDS}
    by_part: dict[str, int] = defaultdict(int)
    for layer in layers:
        by_kind[layer["kind"]] += layer["flops"]
        by_part[layer["name"].split(".")[0] if layer["name"] else "(own)"] += layer["flops"]
    total = sum(by_kind.values())
    return {"flops": total, "gflops": total / 1e9, "input_shape": list(shape), "by_kind": by_kind,
            "by_part": dict(by_part), "layers": layers, "not_counted": sorted(not_counted)}


def describe(counts: dict) -> str:
    """One line: ``12.34 GFLOPs at 1x3x769x769 (conv 11.2, cca_weight 0.1, ...)``."""
    parts = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in counts["by_kind"].items() if v)
    shape = "x".join(str(s) for s in counts["input_shape"])
    return f"{counts['gflops']:.2f} GFLOPs at {shape} ({parts})"

