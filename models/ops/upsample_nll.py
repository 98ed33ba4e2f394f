"""Cross-entropy of bilinearly upsampled logits, without the upsampled tensors (CPU kernels).

The loss upsamples the heads' 1/8-resolution logits to the label size before
the softmax. ``upsample_nll_cpu.h`` computes ``sum_p -log softmax(upsample(logits))[p, target_p]``
and its gradient directly from the small logits, with the bilinear weights
of Jittor's ``nn.interpolate`` (:func:`bilinear_tables`).
"""
from __future__ import annotations

import functools

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models.ops.loader import kernel
from utils.jittor_fixes import ReleasingFunction, grad_as

__all__ = ["bilinear_tables", "upsample_nll_sum"]

_CPU = "upsample_nll_cpu.h"


@functools.lru_cache(maxsize=64)  # the same few sizes every training step
def bilinear_tables(size: int, out: int, align_corners: bool, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, weight)`` of each output index of Jittor's bilinear ``nn.interpolate`` from ``size`` to ``out`` >= size.

    Output ``o`` samples ``(1 - weight) * x[lo] + weight * x[lo + 1]``. The
    coordinate is computed as Jittor computes it (in float32 for float32
    logits; in float64 for float64, the exact value).
    """
    t = np.dtype(dtype).type
    index = np.arange(out).astype(t)
    if align_corners:
        coord = index * t((size - 1) / max(1, out - 1))
    else:
        coord = np.clip(index * t(size / out) + t(size / out * 0.5 - 0.5), 0, size - 1)
    lo = np.floor(coord)
    tables = lo.astype(np.int32), (coord - lo).astype(t)
    for table in tables:
        table.flags.writeable = False  # shared by the cache
    return tables


# B, C, h, w of the logits (in0), H, W of the target (in1).
_NLL_SIZES = "in0_shape0, in0_shape1, in0_shape2, in0_shape3, in1_shape1, in1_shape2"


class _UpsampleNLLSum(ReleasingFunction):
    """Sum over labelled pixels of ``-log softmax(upsample(logits))[target]`` (``upsample_nll_cpu.h``)."""

    def execute(self, logits: jt.Var, target: jt.Var, align_corners: bool) -> jt.Var:
        h, w = logits.shape[2:]
        H, W = target.shape[1:]
        tables = []
        for size, out in ((h, H), (w, W)):
            lo, weight = bilinear_tables(size, out, align_corners, str(logits.dtype))
            tables += [jt.array(lo), jt.array(weight).cast(logits.dtype)]
        self.save(logits, target, tables)
        return kernel((1,), logits.dtype, [logits, target, *tables],
                      cpu=(_CPU, f"upsample_nll::forward<in0_type>(in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, out0_p, "
                                 f"{_NLL_SIZES})"))

    def grad(self, grad_sum: jt.Var):
        logits, target, tables = self.saved()
        dlogits = kernel(logits.shape, logits.dtype, [logits, target, *tables, grad_as(grad_sum, logits)],
                         cpu=(_CPU, f"upsample_nll::backward<in0_type>(in0_p, in1_p, in2_p, in3_p, in4_p, in5_p, "
                                    f"in6_p, out0_p, {_NLL_SIZES})"))
        return dlogits, None, None


def upsample_nll_sum(logits: jt.Var, target: jt.Var, align_corners: bool = True) -> jt.Var:
    """``sum_p -log softmax(bilinear upsample of logits to target's size)[p, target_p]`` over ``target >= 0``.

    The CPU kernels of ``upsample_nll_cpu.h``: the same value as
    ``nn.interpolate`` + ``models.losses.cross_entropy.log_softmax`` + gather,
    without the upsampled ``[B, C, H, W]`` tensors (whose elementwise kernels
    run on one thread in Jittor 1.3.11 on the CPU). ``logits
    [B, C, h, w]`` float32 or float64, ``target [B, H, W]`` int32 with ``H >= h``,
    ``W >= w``; -1 marks a pixel that takes no part.
    """
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"logits [B, C, h, w] and target [B, H, W] expected, got {list(logits.shape)} and "
                         f"{list(target.shape)}")
    if target.shape[1] < logits.shape[2] or target.shape[2] < logits.shape[3]:
        raise ValueError(f"upsample_nll_sum only upsamples: target {list(target.shape[1:])} is smaller than "
                         f"the logits {list(logits.shape[2:])}")
    if str(logits.dtype) not in ("float32", "float64"):
        raise TypeError(f"upsample_nll_sum takes float32 or float64 logits, got {logits.dtype}")
    return _UpsampleNLLSum.apply(logits, target.cast("int32").stop_grad(), bool(align_corners))
