"""Criss-cross attention over a clip (the video CCNet of the TPAMI version): a plain-Jittor reference.

Each position ``(t, y, x)`` of a clip ``[B, C, T, H, W]`` attends to its row,
its column and its temporal line, itself counted once: ``T + H + W - 2``
positions under one softmax. Slots (axis 1 of the energies and the attention):

* ``i < W``: the row position ``(t, y, i)``, the position itself included;
* ``W + u`` for ``u < H - 1``: the column position ``(t, j, x)`` with
  ``j = u if u < y else u + 1`` (itself skipped);
* ``W + H - 1 + v`` for ``v < T - 1``: the temporal position ``(s, y, x)``
  with ``s = v if v < t else v + 1`` (itself skipped).

With ``T = 1`` these are exactly the 2-D op's slots (``models.ops.cca``), so
the 3-D functions equal the 2-D ones. ``impl`` is that of the 2-D op:
``"kernel"`` runs the custom kernels (``cca_cpu.h`` / ``cca_cuda.cuh``, the
2-D kernels extended by the temporal lines), ``"reference"`` the plain-Jittor
formulation below (gradients by autograd), ``"auto"`` the kernel on the CPU
and ``CUDA_AUTO_IMPL`` on CUDA. The module built on them is
``models.ccnet.CrissCrossAttention3D``.
"""
from __future__ import annotations

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.ops.cca import attend_kernel, map_kernel, resolve_impl, weight_kernel
from models.precision import float32
from utils.jittor_fixes import reindex

__all__ = ["ca_weight_3d", "ca_map_3d", "criss_cross_attention_3d"]


def _check(name: str, x: jt.Var) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name} must be 5-D [B, C, T, H, W], got shape {list(x.shape)}")
    if str(x.dtype) not in ("float16", "float32", "float64"):
        raise TypeError(f"{name} must be float16, float32 or float64, got {x.dtype}")


def _check_weight_inputs(query: jt.Var, key: jt.Var) -> None:
    _check("query", query)
    _check("key", key)
    if query.shape != key.shape:
        raise ValueError(f"query and key must have the same shape, got {list(query.shape)} and {list(key.shape)}")
    if query.dtype != key.dtype:
        raise TypeError(f"query and key must have the same dtype, got {query.dtype} and {key.dtype}")


def _check_map_inputs(attention: jt.Var, value: jt.Var) -> None:
    _check("attention", attention)
    _check("value", value)
    B, _, T, H, W = value.shape
    if list(attention.shape) != [B, T + H + W - 2, T, H, W]:
        raise ValueError(f"attention must have shape [B, T+H+W-2, T, H, W] = {[B, T + H + W - 2, T, H, W]} for "
                         f"value of shape {list(value.shape)}, got {list(attention.shape)}")
    if attention.dtype != value.dtype:
        raise TypeError(f"attention and value must have the same dtype, got {attention.dtype} and {value.dtype}")


def ca_weight_3d(query: jt.Var, key: jt.Var, impl: str = "auto") -> jt.Var:
    """Energies ``[B, T+H+W-2, T, H, W]`` of query and key ``[B, C, T, H, W]`` (slots: module docstring)."""
    impl = resolve_impl(impl)
    _check_weight_inputs(query, key)
    if impl == "kernel":
        return weight_kernel(query, key)
    return _ca_weight_reference(query, key)


def ca_map_3d(attention: jt.Var, value: jt.Var, impl: str = "auto") -> jt.Var:
    """``value [B, C, T, H, W]`` aggregated with ``attention [B, T+H+W-2, T, H, W]`` over the same slots."""
    impl = resolve_impl(impl)
    _check_map_inputs(attention, value)
    if impl == "kernel":
        return map_kernel(attention, value)
    return _ca_map_reference(attention, value)


def criss_cross_attention_3d(query: jt.Var, key: jt.Var, value: jt.Var, impl: str = "auto") -> jt.Var:
    """Softmax over the ``T + H + W - 2`` positions of each pixel, then the weighted sum of value."""
    impl = resolve_impl(impl)
    _check_weight_inputs(query, key)
    _check("value", value)
    if value.shape[0] != query.shape[0] or value.shape[2:] != query.shape[2:]:
        raise ValueError(f"value must be [B, C, T, H, W] with the batch size and clip size of query "
                         f"{list(query.shape)}, got {list(value.shape)}")
    if impl == "kernel":
        return attend_kernel(query, key, value)
    query, key, dtype = float32(query), float32(key), value.dtype
    return _ca_map_reference(nn.softmax(_ca_weight_reference(query, key), dim=1), float32(value)).cast(dtype)


# -- the plain-Jittor reference ---------------------------------------------

def _ca_weight_reference(query: jt.Var, key: jt.Var) -> jt.Var:
    B, _, T, H, W = query.shape
    # row [B, T, H, W(x), W(i)] -> [B, W(i), T, H, W(x)]
    parts = [jt.matmul(query.permute(0, 2, 3, 4, 1), key.permute(0, 2, 3, 1, 4)).permute(0, 4, 1, 2, 3)]
    if H > 1:  # column [B, T, W(x), H(y), H(j)]; slot u of row y is j = u + (u >= y)
        col = jt.matmul(query.permute(0, 2, 4, 3, 1), key.permute(0, 2, 4, 1, 3))
        parts.append(reindex(col, [B, H - 1, T, H, W], ["i0", "i2", "i4", "i3", "i1+(i3<=i1)"]))
    if T > 1:  # time [B, H, W, T(t), T(s)]; slot v of frame t is s = v + (v >= t)
        line = jt.matmul(query.permute(0, 3, 4, 2, 1), key.permute(0, 3, 4, 1, 2))
        parts.append(reindex(line, [B, T - 1, T, H, W], ["i0", "i3", "i4", "i2", "i1+(i2<=i1)"]))
    return jt.concat(parts, dim=1) if len(parts) > 1 else parts[0]


def _ca_map_reference(attention: jt.Var, value: jt.Var) -> jt.Var:
    B, _, T, H, W = value.shape
    # row: out[b,c,t,y,x] += sum_i v[b,c,t,y,i] a[b,i,t,y,x]
    out = jt.matmul(value.permute(0, 2, 3, 1, 4), attention[:, :W].permute(0, 2, 3, 1, 4)).permute(0, 3, 1, 2, 4)
    if H > 1:  # a_col[b,t,x,j,y] = a[b, W + j - (y < j), t, y, x], 0 at j == y (index -1: out of range)
        a_col = reindex(attention, [B, T, W, H, H], ["i0", f"i3==i4?-1:{W}+i3-(i4<i3)", "i1", "i4", "i2"])
        out = out + jt.matmul(value.permute(0, 2, 4, 1, 3), a_col).permute(0, 3, 1, 4, 2)
    if T > 1:  # a_time[b,y,x,s,t] = a[b, W + H - 1 + s - (t < s), t, y, x], 0 at s == t
        a_time = reindex(attention, [B, H, W, T, T], ["i0", f"i3==i4?-1:{W + H - 1}+i3-(i4<i3)", "i4", "i1", "i2"])
        out = out + jt.matmul(value.permute(0, 3, 4, 1, 2), a_time).permute(0, 3, 4, 1, 2)
    return out

