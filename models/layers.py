"""The plain layers every model here is built from.

* :class:`Conv2d` -- ``nn.Conv2d`` that computes in float16 under mixed
  precision (``models.precision``) and otherwise runs 1x1 and depthwise
  convolutions on the CPU kernels of :mod:`models.ops.conv`;
* :class:`BatchNorm`, :class:`BNAct` -- BatchNorm, and BatchNorm + residual +
  activation as one module (InPlace-ABN, the official CCNet's), on the fused
  CPU kernels of :mod:`models.ops.batchnorm` where they apply;
* :class:`ChannelDropout` -- Dropout2d that follows ``Module.train()``;
* :func:`resize` -- bilinear resizing, skipped when the size already fits.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.ops.batchnorm import LEAKY_SLOPE, batch_norm_train
from models.ops.conv import depthwise_conv, kernel_path, pointwise_conv
from models.precision import compute, float16_enabled, float32

__all__ = ["ACTIVATIONS", "LEAKY_SLOPE", "check_activation", "Conv2d", "BatchNorm", "BNAct", "ChannelDropout",
           "resize"]

#: Activations of the heads: the official InPlace-ABN default and mmsegmentation's.
ACTIVATIONS = ("leaky_relu", "relu")


def check_activation(activation: str) -> None:
    """ValueError unless ``activation`` is one of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def resize(x: jt.Var, size: Sequence[int], align_corners: bool) -> jt.Var:
    """``x [B, C, h, w]`` resized bilinearly to ``size``; ``x`` itself when it already has that size."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    return nn.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes in float16 when the switch is on (weights stay float32 masters).

    Off, 1x1 and depthwise convolutions run on the CPU kernels of
    :mod:`models.ops.conv` where :func:`models.ops.conv.kernel_path` allows,
    the rest as ``nn.Conv2d``.
    """

    def execute(self, x: jt.Var) -> jt.Var:
        if not float16_enabled():
            path = kernel_path(x, self.weight, self.stride, self.padding, self.dilation, self.groups)
            if path == "pointwise":
                return pointwise_conv(x, self.weight, self.bias)
            if path == "depthwise":
                return depthwise_conv(x, self.weight, self.bias, self.padding[0], self.dilation[0])
            return super().execute(x)
        bias = None if self.bias is None else self.bias.float16()
        y = nn.conv2d(compute(x), self.weight.float16(), bias, self.stride, self.padding, self.dilation,
                      self.groups)
        return y.float32()


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` with float32 statistics for float16 inputs and, where it can, the fused CPU kernels.

    On the CPU in training mode it runs :func:`models.ops.batchnorm.batch_norm_train`
    (same outputs and running statistics as Jittor's: biased variance,
    momentum 0.1); in eval mode, on the GPU and under MPI (synchronised
    statistics), Jittor's own BatchNorm followed by the activation. A float16
    input (mixed precision) is normalised in float32, statistics and running
    averages included.
    """

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


class ChannelDropout(nn.Module):
    """Dropout2d: zeroes whole channels with probability ``p`` in training, scales the rest by 1/(1-p).

    Jittor 1.3.11's ``nn.Dropout2d`` starts with ``is_train=False`` and does
    not follow ``Module.train()``/``eval()``, so it never drops; this one
    follows ``is_training()`` like every other module.
    """

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def execute(self, x: jt.Var) -> jt.Var:
        if self.p == 0.0 or not self.is_training():
            return x
        keep = (jt.rand((x.shape[0], x.shape[1], 1, 1)) >= self.p).cast(x.dtype)
        return x * keep / (1.0 - self.p)
