"""Mixed precision: float16 where it is safe, float32 where it is not.

Jittor 1.3.11 has no autocast: its ``amp_level`` flag never makes a float32
model compute in float16. So the models' layers choose their precision from
one switch (:func:`set_float16`, set for ``--amp`` by ``engine.launch.set_device``):

* ``models.layers.Conv2d`` computes in float16 (input and a float16 copy of
  the float32 master weight; the gradient flows back to the master weight)
  and hands on float32;
* BatchNorm (``models.layers``: statistics and normalisation), layer norms, softmax,
  the losses and the criss-cross energies stay in float32: reductions and
  exponentials overflow or lose too much in float16, and the criss-cross
  energies have no 1/sqrt(d) scaling;
* the criss-cross aggregation and the non-local block's products run in
  float16 on the GPU, and hand on float32.

float16 never leaves the layer that computes in it. That keeps every
gradient in its tensor's type: in Jittor 1.3.11 the gradient of a binary op
takes the type of its result, so a float16 output meeting a float32 tensor
downstream would get a float32 gradient, which the convolution backward
(oneDNN, cuDNN) refuses next to a float16 weight. The casts are elementwise
and fuse into the neighbouring ops.

With the switch off (the default) every layer computes in its input's type.
"""
from __future__ import annotations

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

__all__ = ["set_float16", "float16_enabled", "compute", "float32"]

_FLOAT16 = [False]


def set_float16(enabled: bool) -> None:
    """Turn float16 compute on or off for every layer that asks this module (process-wide)."""
    _FLOAT16[0] = bool(enabled)


def float16_enabled() -> bool:
    return _FLOAT16[0]


def compute(x: jt.Var) -> jt.Var:
    """``x`` in the compute type: float16 when the switch is on, else unchanged."""
    return x.float16() if _FLOAT16[0] and str(x.dtype) == "float32" else x


def float32(x: jt.Var) -> jt.Var:
    """``x`` in float32 (a no-op for float32 and float64)."""
    return x.float32() if str(x.dtype) == "float16" else x
