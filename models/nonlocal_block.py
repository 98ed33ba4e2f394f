"""Non-local block, embedded-Gaussian form (Wang et al., "Non-local Neural
Networks", CVPR 2018), as the baseline of CCNet's efficiency comparison.

Every pixel attends over all ``N = H*W`` pixels::

    theta, phi = 1x1 convs to key_channels;  g = 1x1 conv to value_channels
    A = softmax_j(theta_i . phi_j)           # [B, N, N], no scaling
    y_i = sum_j A_ij g_j                       # [B, value_channels, H, W]
    out = gamma * W_z(y) + x

By default the block has the width of :class:`models.ccnet.CrissCrossAttention`
(query/key ``C // 8`` channels, value ``C`` channels, a zero-initialised
scalar ``gamma`` and no output convolution), so that in a comparison only the
attention pattern differs: all ``N`` positions instead of the ``H + W - 1`` of
the criss-cross. ``key_channels=value_channels=C // 2`` gives Wang et al.'s
configuration; when ``value_channels != C`` a 1x1 output convolution ``W_z``
maps back to ``C`` channels (Wang et al. follow it with a zero-initialised
BatchNorm; here the zero-initialised ``gamma`` plays that role).
"""
from __future__ import annotations

from typing import Optional

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.layers import Conv2d
from models.precision import compute, float32
from utils.jittor_fixes import matmul_per_image

__all__ = ["NonLocalBlock"]


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block: ``gamma * W_z(softmax(theta^T phi) g) + x``."""

    def __init__(self, in_channels: int, key_channels: Optional[int] = None,
                 value_channels: Optional[int] = None) -> None:
        super().__init__()
        key_channels = in_channels // 8 if key_channels is None else key_channels
        value_channels = in_channels if value_channels is None else value_channels
        if key_channels < 1 or value_channels < 1:
            raise ValueError(f"key_channels and value_channels must be positive, got "
                             f"{key_channels} and {value_channels} (in_channels={in_channels})")
        self.in_channels, self.key_channels, self.value_channels = in_channels, key_channels, value_channels
        self.theta = Conv2d(in_channels, key_channels, 1)
        self.phi = Conv2d(in_channels, key_channels, 1)
        self.g = Conv2d(in_channels, value_channels, 1)
        self.out_conv = Conv2d(value_channels, in_channels, 1) if value_channels != in_channels else None
        self.gamma = jt.zeros((1,))

    def attention(self, x: jt.Var) -> jt.Var:
        """The softmax attention ``[B, N, N]``: row ``i`` is what pixel ``i`` gathers from each pixel."""
        B, _, H, W = x.shape
        theta = self.theta(x).reshape(B, self.key_channels, H * W)   # [B, Ck, N]
        phi = self.phi(x).reshape(B, self.key_channels, H * W)       # [B, Ck, N]
        # energies and softmax in float32 (models.precision): without scaling, float16 overflows
        return nn.softmax(matmul_per_image(float32(theta).transpose(0, 2, 1), float32(phi)), dim=2)

    def execute(self, x: jt.Var) -> jt.Var:
        B, _, H, W = x.shape
        g = self.g(x).reshape(B, self.value_channels, H * W)          # [B, Cv, N]
        y = matmul_per_image(compute(g), compute(self.attention(x)).transpose(0, 2, 1))  # [B, Cv, N(i)]
        y = float32(y).reshape(B, self.value_channels, H, W)
        if self.out_conv is not None:
            y = self.out_conv(y)
        return self.gamma * y + x
