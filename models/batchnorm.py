"""BatchNorm for the models, with the activation (and residual add) that follows it.

Jittor 1.3.11's ``nn.BatchNorm`` builds training-mode BatchNorm from generic
reductions and broadcasts and its backward from their gradients, and on the
CPU every such fused elementwise kernel runs on one thread. BatchNorm, the
ReLUs after it and their backward took 27% of a ResNet-50 CCNet training
step on the CPU, against 5% in PyTorch (Jittor's and PyTorch's profilers,
``benchmarks/bench_model_vs_torch.py``'s step). The kernels of
``batchnorm_cpu.h`` compute the same function with OpenMP in two passes
forward (statistics, then normalisation + residual + activation) and two
backward (two sums per channel, then the input gradient), sums in double.

* :class:`BatchNorm` is ``nn.BatchNorm``; :class:`BNAct` adds an activation
  and an optional residual input: ``act(bn(x) + residual)``. ``BNAct`` is
  also InPlace-ABN, the official CCNet's BatchNorm + leaky ReLU module.
* A float16 input (mixed precision, ``models.precision``) is normalised in
  float32, statistics and running averages included.
* On the CPU in training mode they run those kernels (same outputs and
  running statistics as Jittor's: biased variance, momentum 0.1); in eval
  mode, on the GPU and under MPI (synchronised statistics), Jittor's own
  BatchNorm followed by the activation.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.compat import ReleasingFunction
from models.precision import float32

__all__ = ["ACTIVATIONS", "LEAKY_SLOPE", "BatchNorm", "BNAct", "batch_norm_train", "check_activation"]

#: Activations of the heads: the official InPlace-ABN default and mmsegmentation's.
ACTIVATIONS = ("leaky_relu", "relu")

#: Negative slope of the official leaky ReLU (InPlace-ABN default).
LEAKY_SLOPE = 0.01

_ACT_CODES = {None: 0, "relu": 1, "leaky_relu": 2}

# The header text goes into jt.code (not an #include), so that editing it recompiles the kernels.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "batchnorm_cpu.h")) as _f:
    _HEADER = _f.read()


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


# N, C, M: every kernel's first input is [N, C, M]. Taken from the shapes, not written into the
# source, so that one compiled kernel serves every size.
_SIZES = "in0_shape0, in0_shape1, in0_shape2"


def _code(shapes, dtypes, inputs, call: str):
    return jt.code(shapes, dtypes, inputs, cpu_header=_HEADER, cpu_src=f"bn_cpu::{call};")


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


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` with float32 statistics for float16 inputs and fused CPU kernels (module docstring)."""

    activation: Optional[str] = None
    slope: float = LEAKY_SLOPE

    def _fused(self) -> bool:
        return self.is_train and self.affine and not jt.flags.use_cuda and not (self.sync and jt.in_mpi)

    def _normalize(self, x: jt.Var, residual: Optional[jt.Var] = None) -> jt.Var:
        x = float32(x)
        if not self._fused():
            y = super().execute(x)
            if residual is not None:
                y = y + float32(residual)
            if self.activation == "relu":
                return nn.relu(y)
            return nn.leaky_relu(y, self.slope) if self.activation == "leaky_relu" else y
        y, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps, self.activation, self.slope,
                                        None if residual is None else float32(residual))
        dtype = self.running_mean.dtype
        self.running_mean.update(self.running_mean + (mean.cast(dtype) - self.running_mean) * self.momentum)
        self.running_var.update(self.running_var + (var.cast(dtype) - self.running_var) * self.momentum)
        return y

    def execute(self, x: jt.Var) -> jt.Var:
        return self._normalize(x)


class BNAct(BatchNorm):
    """BatchNorm, then (after an optional residual add) an activation, as one module (InPlace-ABN).

    Holds exactly the BatchNorm parameters (``weight``, ``bias``,
    ``running_mean``, ``running_var``), so the official ``...1.weight`` keys load
    directly. ``activation`` is ``"leaky_relu"`` (slope 0.01) or ``"relu"``;
    ``execute(x, residual)`` computes ``act(bn(x) + residual)``.
    """

    def __init__(self, num_features: int, activation: str = "leaky_relu", slope: float = LEAKY_SLOPE,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        check_activation(activation)
        self.activation = activation
        self.slope = float(slope)

    def execute(self, x: jt.Var, residual: Optional[jt.Var] = None) -> jt.Var:
        return self._normalize(x, residual)
