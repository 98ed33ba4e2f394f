"""Training-mode BatchNorm with the activation and residual add that follow it, as CPU kernels.

Jittor 1.3.11 builds training-mode BatchNorm from generic reductions and
broadcasts, and its backward from their gradients; on the CPU every such
fused elementwise kernel runs on one thread. The kernels of
``batchnorm_cpu.h`` compute ``act(bn(x) + residual)`` with OpenMP in two
passes forward (statistics, then normalisation + residual + activation) and
two backward (two sums per channel, then the input gradient), sums in double
(deterministic). Same outputs and running statistics as Jittor's BatchNorm
(biased variance). ``models.layers.BatchNorm`` / ``BNAct`` use them on the
CPU in training mode.
"""
from __future__ import annotations

import math
from typing import Optional

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models.ops.loader import kernel
from utils.jittor_fixes import ReleasingFunction, grad_as

__all__ = ["LEAKY_SLOPE", "batch_norm_train"]

#: Negative slope of the official leaky ReLU (InPlace-ABN default).
LEAKY_SLOPE = 0.01

_ACT_CODES = {None: 0, "relu": 1, "leaky_relu": 2}

# N, C, M: every kernel's first input is [N, C, M].
_SIZES = "in0_shape0, in0_shape1, in0_shape2"


def _code(shapes, dtypes, inputs, call: str):
    return kernel(shapes, dtypes, inputs, cpu=("batchnorm_cpu.h", f"bn_cpu::{call}"))


class _BatchNormTrain(ReleasingFunction):
    """``act(bn(x) + residual)`` over ``[N, C, M]``; also returns the batch mean and (biased) variance."""

    def execute(self, x: jt.Var, weight: jt.Var, bias: jt.Var, residual: Optional[jt.Var], eps: float,
                activation: Optional[str], slope: float):
        C = x.shape[1]
        T, act, sizes = "in0_type", _ACT_CODES[activation], _SIZES
        stats = _code((2, C), x.dtype, [x], f"stats<{T}>(in0_p, out0_p, {sizes})")
        mean, var = stats[0], stats[1]
        invstd = 1.0 / jt.sqrt(var + eps)
        scale = weight.cast(x.dtype) * invstd
        coef = jt.stack([scale, bias.cast(x.dtype) - mean * scale])
        inputs, res = [x, coef], "nullptr"
        if residual is not None:
            inputs, res = [x, coef, residual.cast(x.dtype)], "in2_p"
        y = _code(x.shape, x.dtype, inputs, f"forward<{T}, {act}, {str(residual is not None).lower()}>"
                                            f"(in0_p, in1_p, {res}, out0_p, ({T}){slope!r}, {sizes})")
        self.save(x, y if act else None, mean, invstd, weight, residual is not None, act, slope)
        return y, mean.stop_grad(), var.stop_grad()

    def grad(self, grad_y, grad_mean=None, grad_var=None):
        x, y, mean, invstd, weight, has_residual, act, slope = self.saved()
        if grad_y is None:
            return None, None, None, None, None, None, None
        grad_y = grad_as(grad_y, x)
        N, C, M = x.shape
        T, sizes = "in0_type", _SIZES
        if act:
            sums, g = _code([(2, C), x.shape], [x.dtype, x.dtype], [grad_y, y, x, mean],
                            f"grad_sums<{T}, {act}>(in0_p, in1_p, in2_p, in3_p, out0_p, out1_p, ({T}){slope!r}, "
                            f"{sizes})")
        else:
            g = grad_y
            sums = _code((2, C), x.dtype, [grad_y, x, mean],
                         f"grad_sums<{T}, 0>(in0_p, nullptr, in1_p, in2_p, out0_p, nullptr, ({T})0, {sizes})")
        sum_g, sum_g_xc = sums[0], sums[1]           # sum g, sum g * (x - mean)
        sum_g_xhat = sum_g_xc * invstd               # the weight's gradient
        count = float(N * M)
        a = weight.cast(x.dtype) * invstd
        b = -a * invstd * sum_g_xhat / count
        d = -a * sum_g / count - b * mean
        dx = _code(x.shape, x.dtype, [g, x, jt.stack([a, b, d])],
                   f"grad_input<{T}>(in0_p, in1_p, in2_p, out0_p, {sizes})")
        return (dx, sum_g_xhat.cast(weight.dtype), sum_g.cast(weight.dtype), g if has_residual else None,
                None, None, None)


def batch_norm_train(x: jt.Var, weight: jt.Var, bias: jt.Var, eps: float = 1e-5, activation: Optional[str] = None,
                     slope: float = LEAKY_SLOPE, residual: Optional[jt.Var] = None
                     ) -> tuple[jt.Var, jt.Var, jt.Var]:
    """Training-mode ``act(bn(x) + residual)`` of ``x [N, C, ...]`` with the CPU kernels.

    Returns ``(y, mean, var)``, the batch statistics per channel (var biased).
    ``activation`` is None, ``"relu"`` or ``"leaky_relu"`` (negative ``slope``).
    """
    if activation not in _ACT_CODES:
        raise ValueError(f"activation must be None, 'relu' or 'leaky_relu', got {activation!r}")
    if activation == "leaky_relu" and not slope > 0:
        raise ValueError(f"the leaky ReLU slope must be positive, got {slope}")
    N, C = x.shape[0], x.shape[1]
    M = int(math.prod(x.shape[2:]))
    if residual is not None:
        if tuple(residual.shape) != tuple(x.shape):
            raise ValueError(f"residual must have the shape of x {list(x.shape)}, got {list(residual.shape)}")
        residual = residual.reshape(N, C, M)
    y, mean, var = _BatchNormTrain.apply(x.reshape(N, C, M), weight, bias, residual, float(eps), activation,
                                         float(slope))
    return y.reshape(x.shape), mean, var
