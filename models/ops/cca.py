"""Criss-cross attention (CCNet, Huang et al., ICCV 2019 / TPAMI 2020).

Each pixel attends over the pixels of its row and its column, itself counted
once: H + W - 1 positions, softmax over them without scaling. The functions
keep the layout of the official op (github.com/speedinghzl/CCNet,
``cc_attention/functions.py``):

* ``ca_weight(query, key) -> energy [B, H+W-1, H, W]``: channel ``i < W`` is the
  row position ``(y, i)`` (self included); channel ``W + t`` is the column
  position ``(j, x)`` with ``j = t if t < y else t + 1`` (self skipped).
* ``ca_map(attention, value) -> [B, C, H, W]``: the attention-weighted sum of
  ``value`` over the same positions.

``impl="kernel"`` runs our custom ops (C++/OpenMP on the CPU, CUDA on the GPU,
sources in ``cca_cpu.h`` and ``cca_cuda.cuh``, gradients through
``jt.Function``); ``impl="reference"`` runs plain Jittor matmuls and is the
oracle of the tests. ``impl="auto"`` (the default) is the kernel on the CPU
and :data:`CUDA_AUTO_IMPL` on CUDA. The official module built on them,
``gamma * ca_map(softmax(ca_weight(q, k)), v) + x``, is
``models.ccnet.CrissCrossAttention``. The same kernels take clips
``[B, C, T, H, W]`` (``weight_kernel``, ``map_kernel``, ``attend_kernel``), for
the video op of ``models.ops.cca3d``.
"""
from __future__ import annotations

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.ops.loader import kernel
from models.precision import float16_enabled, float32
from utils.jittor_fixes import ReleasingFunction, grad_as, reindex

__all__ = ["ca_weight", "ca_map", "position_softmax", "criss_cross_attention", "check_impl", "resolve_impl", "IMPLS",
           "CUDA_AUTO_IMPL", "weight_kernel", "map_kernel", "attend_kernel"]

IMPLS = ("auto", "kernel", "reference")
#: What ``impl="auto"`` runs on CUDA. The reference (cuBLAS matmuls through Jittor) until a GPU
#: has timed both: the kernels have run only in the CPU emulation of CUDA
#: (tests/test_cca_cuda_emu.py); benchmarks/gpu_jittor_check.py op times the two.
CUDA_AUTO_IMPL = "reference"

_CPU, _CUDA = "cca_cpu.h", "cca_cuda.cuh"
# B, C (of the second input), H, W of images; B, C, T, H, W of clips
_SIZES = {4: "in0_shape0, in1_shape1, in0_shape2, in0_shape3",
          5: "in0_shape0, in1_shape1, in0_shape2, in0_shape3, in0_shape4"}
# B, L and the positions per slot: H*W of images, T*H*W of clips
_SOFTMAX_SIZES = {4: "in0_shape0, in0_shape1, (long long)in0_shape2 * in0_shape3",
                  5: "in0_shape0, in0_shape1, (long long)in0_shape2 * in0_shape3 * in0_shape4"}


def _cuda_call(call: str, what: str) -> str:
    """A statement that runs a cca_cuda launcher and stops with Jittor's fatal log on a CUDA error."""
    return (f"{{ cudaError_t err = cca_cuda::{call}; if (err != cudaSuccess) "
            f"LOGf << \"criss-cross attention CUDA kernel ({what}):\" << cudaGetErrorString(err); }}")


def check_impl(impl: str) -> None:
    """ValueError unless ``impl`` is one of :data:`IMPLS`."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def resolve_impl(impl: str) -> str:
    """``"kernel"`` or ``"reference"``: what ``impl`` runs on the current device."""
    check_impl(impl)
    if impl != "auto":
        return impl
    return CUDA_AUTO_IMPL if jt.flags.use_cuda else "kernel"


def _check_float(name: str, x: jt.Var) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D [B, C, H, W], got shape {list(x.shape)}")
    if str(x.dtype) not in ("float16", "float32", "float64"):
        raise TypeError(f"{name} must be float16, float32 or float64, got {x.dtype}")


def _check_weight_inputs(query: jt.Var, key: jt.Var) -> None:
    _check_float("query", query)
    _check_float("key", key)
    if query.shape != key.shape:
        raise ValueError(f"query and key must have the same shape [B, C, H, W], "
                         f"got {list(query.shape)} and {list(key.shape)}")
    if query.dtype != key.dtype:
        raise TypeError(f"query and key must have the same dtype, got {query.dtype} and {key.dtype}")


def _check_map_inputs(attention: jt.Var, value: jt.Var) -> None:
    _check_float("attention", attention)
    _check_float("value", value)
    B, _, H, W = value.shape
    if attention.shape[0] != B:
        raise ValueError(f"attention and value have different batch sizes: {attention.shape[0]} and {B}")
    if list(attention.shape) != [B, H + W - 1, H, W]:
        raise ValueError(f"attention must have shape [B, H+W-1, H, W] = {[B, H + W - 1, H, W]} "
                         f"for value of shape {list(value.shape)}, got {list(attention.shape)}")
    if attention.dtype != value.dtype:
        raise TypeError(f"attention and value must have the same dtype, got {attention.dtype} and {value.dtype}")


def _check_device_dtype(x: jt.Var) -> None:
    dtype = str(x.dtype)
    if jt.flags.use_cuda:
        if dtype not in ("float16", "float32", "float64"):
            raise TypeError(f"the CUDA kernel supports float16, float32 and float64, got {dtype}")
    elif dtype == "float16":
        raise TypeError("the CPU kernel supports float32 and float64; cast float16 inputs with .float32()")


# -- the kernels -------------------------------------------------------------

def _weight(p: jt.Var, q: jt.Var) -> jt.Var:
    """E = weight(P, Q) of images [B, C, H, W] or clips [B, C, T, H, W], see cca_cpu.h."""
    if p.ndim == 5:
        B, _, T, H, W = p.shape
        shape, name = (B, T + H + W - 2, T, H, W), "weight3d"
    else:
        B, _, H, W = p.shape
        shape, name = (B, H + W - 1, H, W), "weight"
    call = f"{name}<in0_type>(in0_p, in1_p, out0_p, {_SIZES[p.ndim]})"
    return kernel(shape, p.dtype, [p, q], cpu=(_CPU, f"cca_cpu::{call}"), cuda=(_CUDA, _cuda_call(call, name)))


def _map(a: jt.Var, v: jt.Var, transposed: bool) -> jt.Var:
    """O = map<transposed>(A, V) of images or clips, see cca_cpu.h."""
    name = "map3d" if v.ndim == 5 else "map"
    call = f"{name}<in0_type, {'true' if transposed else 'false'}>(in0_p, in1_p, out0_p, {_SIZES[v.ndim]})"
    return kernel(v.shape, v.dtype, [a, v], cpu=(_CPU, f"cca_cpu::{call}"), cuda=(_CUDA, _cuda_call(call, name)))


class _CAWeight(ReleasingFunction):
    def execute(self, query: jt.Var, key: jt.Var) -> jt.Var:
        self.save(query, key)
        return _weight(query, key)

    def grad(self, grad_energy: jt.Var):
        query, key = self.saved()
        if grad_energy is None:
            return None, None
        grad_energy = grad_as(grad_energy, query)
        return _map(grad_energy, key, False), _map(grad_energy, query, True)


class _CAMap(ReleasingFunction):
    def execute(self, attention: jt.Var, value: jt.Var) -> jt.Var:
        self.save(attention, value)
        return _map(attention, value, False)

    def grad(self, grad_out: jt.Var):
        attention, value = self.saved()
        if grad_out is None:
            return None, None
        grad_out = grad_as(grad_out, value)
        if str(value.dtype) == "float16":
            # dA = sum over C channels of grad_out * V: with a loss scale of 2**16 and a grown gamma it
            # exceeds float16's 65504, so it is computed and returned in float32 (a float16 attention
            # is the cast of the float32 softmax, whose gradient is float32 anyway).
            return _weight(grad_out.float32(), value.float32()), _map(attention, grad_out, True)
        return _weight(grad_out, value), _map(attention, grad_out, True)


class _PositionSoftmax(ReleasingFunction):
    """softmax over axis 1 (the positions) with the CPU kernels of cca_cpu.h.

    Jittor's own softmax runs its max/exp/sum/divide passes as separate
    single-threaded kernels on the CPU.
    """

    def execute(self, energy: jt.Var) -> jt.Var:
        sizes = _SOFTMAX_SIZES[energy.ndim]
        attention = kernel(energy.shape, energy.dtype, [energy],
                           cpu=(_CPU, f"cca_cpu::softmax<in0_type>(in0_p, out0_p, {sizes})"))
        self.save(attention)
        return attention

    def grad(self, grad_attention: jt.Var):
        attention, = self.saved()
        if grad_attention is None:
            return None
        sizes = _SOFTMAX_SIZES[attention.ndim]
        return kernel(attention.shape, attention.dtype, [attention, grad_as(grad_attention, attention)],
                      cpu=(_CPU, f"cca_cpu::softmax_grad<in0_type>(in0_p, in1_p, out0_p, {sizes})"))


def position_softmax(energy: jt.Var) -> jt.Var:
    """softmax of the energies over the positions (axis 1): [B, H+W-1, H, W], or [B, T+H+W-2, T, H, W] of a clip."""
    if jt.flags.use_cuda:
        return nn.softmax(energy, dim=1)
    return _PositionSoftmax.apply(energy)


# -- the plain-Jittor reference ---------------------------------------------

def _energies_reference(query: jt.Var, key: jt.Var):
    """Row energies [B, H(y), W(x), W(i)] and column energies [B, W(x), H(y), H(j)], self in both."""
    row = jt.matmul(query.permute(0, 2, 3, 1), key.permute(0, 2, 1, 3))
    col = jt.matmul(query.permute(0, 3, 2, 1), key.permute(0, 3, 1, 2))
    return row, col


def _ca_weight_reference(query: jt.Var, key: jt.Var) -> jt.Var:
    B, _, H, W = query.shape
    row, col = _energies_reference(query, key)
    row = row.permute(0, 3, 1, 2)  # [B, W(i), H(y), W(x)]
    if H == 1:
        return row
    # Column slot t of pixel (y, x) is row j = t + (t >= y) of that column.
    col = reindex(col, [B, H - 1, H, W], ["i0", "i3", "i2", "i1+(i2<=i1)"])
    return jt.concat([row, col], dim=1)


def _ca_map_reference(attention: jt.Var, value: jt.Var) -> jt.Var:
    B, _, H, W = value.shape
    row = attention[:, :W].permute(0, 2, 1, 3)  # [B, y, i, x]
    out = jt.matmul(value.permute(0, 2, 1, 3), row).permute(0, 2, 1, 3)
    if H > 1:
        # col[b, x, j, y] = attention[b, s(j, y), y, x] for j != y, else 0
        # (j == y maps to index -1: out of range, so reindex fills 0)
        col = reindex(attention, [B, W, H, H], ["i0", f"i2==i3?-1:{W}+i2-(i3<i2)", "i3", "i1"])
        out = out + jt.matmul(value.permute(0, 3, 1, 2), col).permute(0, 2, 3, 1)
    return out


def _criss_cross_attention_reference(query: jt.Var, key: jt.Var, value: jt.Var) -> jt.Var:
    """mmcv-style formulation: H + W logits, -inf on the column's self entry."""
    B, _, H, W = query.shape
    row, col = _energies_reference(query, key)
    # -inf where j == y, so that self is counted once (through the row).
    col = col + jt.array(np.diag(np.full(H, -np.inf, dtype=np.float32))).cast(col.dtype)
    attention = nn.softmax(jt.concat([col.permute(0, 2, 1, 3), row], dim=3), dim=3)  # [B, y, x, H + W]
    a_col, a_row = attention[..., :H], attention[..., H:]
    out_col = jt.matmul(value.permute(0, 3, 1, 2), a_col.permute(0, 2, 3, 1)).permute(0, 2, 3, 1)
    out_row = jt.matmul(value.permute(0, 2, 1, 3), a_row.permute(0, 1, 3, 2)).permute(0, 2, 1, 3)
    return out_col + out_row


# -- public API ---------------------------------------------------------------

def weight_kernel(query: jt.Var, key: jt.Var) -> jt.Var:
    """The kernels' energies of images or clips, with gradients (the caller has checked the shapes)."""
    _check_device_dtype(query)
    return _CAWeight.apply(query, key)


def map_kernel(attention: jt.Var, value: jt.Var) -> jt.Var:
    """The kernels' aggregation of images or clips, with gradients (the caller has checked the shapes)."""
    _check_device_dtype(value)
    return _CAMap.apply(attention, value)


def attend_kernel(query: jt.Var, key: jt.Var, value: jt.Var) -> jt.Var:
    """softmax of the kernels' energies over the positions, then their aggregation, images or clips.

    Mixed precision (models.precision): the energies and their softmax in float32 (no 1/sqrt(d)
    scaling: float16 overflows); the aggregation in float16 only on the GPU (the CPU kernel has
    none); the result in the value's type, so that float16 never leaves the op.
    """
    dtype = value.dtype
    query, key, value = float32(query), float32(key), float32(value)
    attention = position_softmax(weight_kernel(query, key))
    if jt.flags.use_cuda and (float16_enabled() or str(dtype) == "float16"):
        attention, value = attention.float16(), value.float16()
    return map_kernel(attention, value).cast(dtype)


def ca_weight(query: jt.Var, key: jt.Var, impl: str = "auto") -> jt.Var:
    """Criss-cross energies [B, H+W-1, H, W] of query and key [B, C, H, W] (official layout)."""
    impl = resolve_impl(impl)
    _check_weight_inputs(query, key)
    if impl == "reference":
        return _ca_weight_reference(query, key)
    return weight_kernel(query, key)


def ca_map(attention: jt.Var, value: jt.Var, impl: str = "auto") -> jt.Var:
    """Aggregate value [B, C, H, W] with attention [B, H+W-1, H, W] (official layout)."""
    impl = resolve_impl(impl)
    _check_map_inputs(attention, value)
    if impl == "reference":
        return _ca_map_reference(attention, value)
    return map_kernel(attention, value)


def criss_cross_attention(query: jt.Var, key: jt.Var, value: jt.Var, impl: str = "auto") -> jt.Var:
    """softmax over the H+W-1 criss-cross positions, then the weighted sum of value."""
    impl = resolve_impl(impl)
    _check_weight_inputs(query, key)
    if value.ndim != 4 or value.shape[0] != query.shape[0] or value.shape[2:] != query.shape[2:]:
        raise ValueError(f"value must be [B, C, H, W] with the batch size and spatial size of query "
                         f"{list(query.shape)}, got {list(value.shape)}")
    if impl == "reference":
        return _criss_cross_attention_reference(float32(query), float32(key), float32(value)).cast(value.dtype)
    return attend_kernel(query, key, value)
