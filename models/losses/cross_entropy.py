"""Cross-entropy of logits upsampled to the label, averaged over the labelled pixels.

Upstream: speedinghzl/CCNet ``loss/criterion.py`` (``CriterionDSN``), MIT license.

The heads' logits (1/8 of the input) are upsampled bilinearly to the label
size (``align_corners`` of the model; True in the official code), and the
cross-entropy is averaged over the valid pixels, as
``torch.nn.CrossEntropyLoss(ignore_index=255)``. With no valid pixel at all
the loss is 0 (PyTorch would return NaN). On the CPU the upsampling and the
softmax are one fused kernel (:mod:`models.ops.upsample_nll`).
"""
from __future__ import annotations

from typing import Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models.layers import resize
from models.ops.upsample_nll import upsample_nll_sum

__all__ = ["log_softmax", "pixel_nll", "upsampled_log_probs", "cross_entropy"]


def log_softmax(logits: jt.Var) -> jt.Var:
    """``log softmax`` over the class axis (dim 1)."""
    shifted = logits - logits.max(dim=1, keepdims=True).stop_grad()
    return shifted - shifted.exp().sum(dim=1, keepdims=True).log()


def pixel_nll(logits: jt.Var, target: jt.Var) -> jt.Var:
    """Per-pixel ``-log softmax(logits)[target]``, ``[B, H, W]``; ``target`` must be in [0, C)."""
    return -jt.gather(log_softmax(logits), 1, target.unsqueeze(1)).squeeze(1)


def upsampled_log_probs(logits: jt.Var, size: Sequence[int], align_corners: bool) -> jt.Var:
    """``log softmax`` of ``logits [B, C, h, w]`` upsampled bilinearly to ``size``."""
    return log_softmax(resize(logits, size, align_corners))


def cross_entropy(logits: jt.Var, valid: jt.Var, safe: jt.Var, target: jt.Var,
                  align_corners: bool) -> tuple[jt.Var, jt.Var]:
    """``(loss, labelled pixels)``: mean cross-entropy of ``logits`` upsampled to the label size.

    ``valid [B, H, W]`` marks the labelled pixels, ``safe`` holds their
    classes (any class elsewhere) and ``target`` the same with -1 where not
    ``valid`` (for the fused kernel).
    """
    count = valid.cast(logits.dtype).sum()
    size = valid.shape[1:]
    if (not jt.flags.use_cuda and str(logits.dtype) in ("float32", "float64")
            and size[0] >= logits.shape[2] and size[1] >= logits.shape[3]):
        total = upsample_nll_sum(logits, target, align_corners).sum()   # the fused CPU kernels
    else:
        nll = -jt.gather(upsampled_log_probs(logits, size, align_corners), 1, safe.unsqueeze(1)).squeeze(1)
        total = (nll * valid.cast(nll.dtype)).sum()
    return total / jt.maximum(count, jt.ones_like(count)), count
