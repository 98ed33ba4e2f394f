"""Pointwise (1x1) and depthwise convolutions on the CPU, without Jittor's per-call reorders.

Jittor 1.3.11 runs every CPU convolution through its oneDNN op (``mkl_conv``),
which reorders the NCHW activations into oneDNN's blocked layout and back,
and re-lays out the weights, on every call and in each backward pass. For a
1x1 convolution that costs more than the product itself: NCHW already holds
it as one matrix product per image, ``Y_b = W X_b`` with ``X_b`` of shape
``[C_in, H*W]``, which oneDNN's sgemm computes directly. Depthwise convolutions
(VAN's 3x3, 5x5 and dilated 7x7) are all memory traffic, and the dilated
ones take oneDNN's slow gemm path; a plane-by-plane OpenMP kernel avoids
both. ``conv_cpu.h`` holds the two, forward and backward.

:func:`kernel_path` says which of them a convolution can use: on the CPU,
float32 (depthwise also float64), stride 1. ``models.layers.Conv2d``, the
convolution of every model here, routes those to :func:`pointwise_conv` and
:func:`depthwise_conv`; every other convolution, and every convolution on
the GPU, is Jittor's.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models.ops.loader import kernel
from utils.jittor_fixes import ReleasingFunction, grad_as
from utils.sizes import pair

__all__ = ["kernel_path", "pointwise_conv", "depthwise_conv"]

Size2 = Union[int, Sequence[int]]


def _code(shapes, dtypes, inputs, call: str):
    return kernel(shapes, dtypes, inputs, cpu=("conv_cpu.h", f"conv_cpu::{call}"))


# depthwise_correlate's sizes: in0 [B, C, H, W], in1 the weight [C, K, K], out0 [B, C, Ho, Wo]
_PLANES = "in0_shape0, in0_shape1, in0_shape2, in0_shape3, out0_shape2, out0_shape3, in1_shape1"


def _bias_grad(grad_y: jt.Var) -> jt.Var:
    """Sum of ``grad_y [B, C, M]`` over images and positions."""
    return _code((grad_y.shape[1],), grad_y.dtype, [grad_y],
                 "bias_grad<in0_type>(in0_p, out0_p, in0_shape0, in0_shape1, in0_shape2)")


class _Pointwise(ReleasingFunction):
    """1x1 convolution, stride 1, of ``x [B, Ci, M]`` with ``weight [Co, Ci]`` (+ ``bias [Co]``), float32."""

    def execute(self, x: jt.Var, weight: jt.Var, bias: Optional[jt.Var]):
        (B, Ci, M), Co = x.shape, weight.shape[0]
        inputs, b = ([x, weight], "nullptr") if bias is None else ([x, weight, bias], "in2_p")
        self.save(x, weight, bias is not None)
        return _code((B, Co, M), x.dtype, inputs,
                     f"pointwise_forward(in0_p, in1_p, {b}, out0_p, in0_shape0, in0_shape1, in1_shape0, in0_shape2)")

    def grad(self, grad_y):
        x, weight, has_bias = self.saved()
        if grad_y is None:
            return None, None, None
        grad_y = grad_as(grad_y, x)
        # grad_y [B, Co, M] is in0 of each kernel; Ci is taken from the weight or from x
        dx = _code(x.shape, x.dtype, [grad_y, weight],
                   "pointwise_grad_input(in0_p, in1_p, out0_p, in0_shape0, in1_shape1, in0_shape1, in0_shape2)")
        dw = _code(weight.shape, x.dtype, [grad_y, x],
                   "pointwise_grad_weight(in0_p, in1_p, out0_p, in0_shape0, in1_shape1, in0_shape1, in0_shape2)")
        db = _bias_grad(grad_y) if has_bias else None
        return dx, dw, db


class _Depthwise(ReleasingFunction):
    """Depthwise convolution, stride 1, of ``x [B, C, H, W]`` with ``weight [C, K, K]`` (+ ``bias [C]``)."""

    def execute(self, x: jt.Var, weight: jt.Var, bias: Optional[jt.Var], dilation: int, padding: int):
        B, C, H, W = x.shape
        K = weight.shape[-1]
        Ho, Wo = H + 2 * padding - dilation * (K - 1), W + 2 * padding - dilation * (K - 1)
        inputs, b = ([x, weight], "nullptr") if bias is None else ([x, weight, bias], "in2_p")
        self.save(x, weight, bias is not None, dilation, padding)
        return _code((B, C, Ho, Wo), x.dtype, inputs,
                     f"depthwise_correlate<in0_type, false>(in0_p, in1_p, {b}, out0_p, {_PLANES}, {dilation}, "
                     f"{padding})")

    def grad(self, grad_y):
        x, weight, has_bias, dilation, padding = self.saved()
        if grad_y is None:
            return None, None, None, None, None
        grad_y = grad_as(grad_y, x)
        flipped_pad = dilation * (weight.shape[-1] - 1) - padding
        dx = _code(x.shape, x.dtype, [grad_y, weight],
                   f"depthwise_correlate<in0_type, true>(in0_p, in1_p, nullptr, out0_p, {_PLANES}, {dilation}, "
                   f"{flipped_pad})")
        # in0 = grad_y [B, C, Ho, Wo], in1 = x [B, C, H, W]
        dw = _code(weight.shape, x.dtype, [grad_y, x],
                   "depthwise_grad_weight<in0_type>(in0_p, in1_p, out0_p, in0_shape0, in0_shape1, in1_shape2, "
                   f"in1_shape3, in0_shape2, in0_shape3, out0_shape1, {dilation}, {padding})")
        db = _bias_grad(grad_y.reshape(grad_y.shape[0], grad_y.shape[1], -1)) if has_bias else None
        return dx, dw, db, None, None


def pointwise_conv(x: jt.Var, weight: jt.Var, bias: Optional[jt.Var] = None) -> jt.Var:
    """1x1 convolution (stride 1, no padding) of float32 ``x [B, Ci, H, W]`` with ``weight [Co, Ci, 1, 1]``."""
    B, Ci, H, W = x.shape
    Co = weight.shape[0]
    y = _Pointwise.apply(x.reshape(B, Ci, H * W), weight.reshape(Co, Ci), bias)
    return y.reshape(B, Co, H, W)


def depthwise_conv(x: jt.Var, weight: jt.Var, bias: Optional[jt.Var] = None, padding: int = 0,
                   dilation: int = 1) -> jt.Var:
    """Depthwise convolution (stride 1) of ``x [B, C, H, W]`` with ``weight [C, 1, K, K]``."""
    C, K = weight.shape[0], weight.shape[-1]
    return _Depthwise.apply(x, weight.reshape(C, K, K), bias, int(dilation), int(padding))


def kernel_path(x: jt.Var, weight: jt.Var, stride: Size2 = 1, padding: Size2 = 0, dilation: Size2 = 1,
                groups: int = 1) -> Optional[str]:
    """The CPU kernel for a convolution with these arguments: ``"pointwise"``, ``"depthwise"`` or None (Jittor's)."""
    if jt.flags.use_cuda or jt.compile_extern.mkl_ops is None or x.ndim != 4:
        return None
    dtype = str(x.dtype)
    if str(weight.dtype) != dtype or pair(stride, "stride") != (1, 1):
        return None
    Co, Cg, KH, KW = weight.shape
    Ci = x.shape[1]
    (ph, pw), (dh, dw) = pair(padding, "padding", minimum=0), pair(dilation, "dilation")
    if groups == 1 and (KH, KW) == (1, 1) and (ph, pw) == (0, 0) and Cg == Ci and dtype == "float32":
        return "pointwise"
    if (groups == Ci == Co and Cg == 1 and KH == KW and ph == pw and dh == dw and dtype in ("float32", "float64")
            and min(x.shape[2], x.shape[3]) + 2 * ph - dh * (KH - 1) > 0):
        return "depthwise"
    return None
