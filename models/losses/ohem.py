"""OHEM cross-entropy: the official online hard example mining of CCNet, on the global batch.

Upstream: speedinghzl/CCNet ``loss/loss.py`` (``OhemCrossEntropy2d``) and
``loss/criterion.py`` (``CriterionOhemDSN``), MIT license.

The valid pixels whose ground-truth probability is at most a threshold are
kept, and cross-entropy is averaged over them. The threshold comes from a
1/8 subsample: the class probabilities are zoomed (order 1) and the label is
zoomed (order 0) separately, and each subsampled pixel's ground-truth
probability ``p`` is picked from the zoomed probabilities. With ``mk =
min_kept // 64`` and ``n`` valid subsampled pixels, the threshold is 1.0
(keep everything) if ``mk >= n``; otherwise ``max(thresh, mk-th smallest p)``
(``thresh`` alone if ``mk == 0``). ``min_kept`` counts the pixels of the
global batch (:func:`ohem_keep_mask`).

The official code zooms with ``scipy.ndimage.zoom(prob, 1/8, order=1)`` and
``zoom(label, 1/8, order=0)``. Both are reproduced on the device: the output
size is ``round(size / 8)`` (Python rounding), output pixel ``o`` samples the
input coordinate ``o * (size - 1) / (out - 1)`` (computed in float64 on the
host, as scipy does); order 1 interpolates linearly there, order 0 takes the
pixel ``floor(coordinate + 0.5)``. The threshold and the kept mask are
computed in Jittor, without copying the probabilities to the host.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models.losses.cross_entropy import upsampled_log_probs
from utils.comm import all_gather, all_reduce_sum

__all__ = ["OHEM_THRESH", "OHEM_MIN_KEPT", "OHEM_FACTOR", "zoom_size", "zoom_nearest_index", "zoom_linear_weights",
           "ohem_keep_mask", "ohem_cross_entropy"]

#: Defaults of the official recipe (README and ``train.py`` of speedinghzl/CCNet).
OHEM_THRESH = 0.7
OHEM_MIN_KEPT = 100000

#: Subsampling factor of the OHEM threshold search (official ``factor=8``).
OHEM_FACTOR = 8


def zoom_size(size: int, factor: int = OHEM_FACTOR) -> int:
    """Output length of ``scipy.ndimage.zoom`` by ``1/factor``: ``round(size / factor)``, at least 1."""
    return max(1, int(round(size * (1.0 / factor))))


def _zoom_coordinates(size: int, out: int) -> np.ndarray:
    """Input coordinate of each output pixel of ``scipy.ndimage.zoom`` (``grid_mode=False``), float64."""
    scale = (size - 1) / (out - 1) if out > 1 else 1.0
    return np.arange(out) * scale


def zoom_nearest_index(size: int, out: int) -> np.ndarray:
    """Input index of each output pixel of ``scipy.ndimage.zoom(order=0)``: ``floor(coordinate + 0.5)``."""
    return np.minimum(np.floor(_zoom_coordinates(size, out) + 0.5), size - 1).astype(np.int32)


def zoom_linear_weights(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, w)`` of ``scipy.ndimage.zoom(order=1)``: output = ``x[lo] * (1 - w) + x[hi] * w``."""
    coords = _zoom_coordinates(size, out)
    lo = np.clip(np.floor(coords), 0, size - 1).astype(np.int32)
    hi = np.minimum(lo + 1, size - 1).astype(np.int32)
    return lo, hi, coords - lo


def _zoom_linear(x: jt.Var, h: int, w: int) -> jt.Var:
    """Order-1 zoom of the last two axes of ``x`` to ``(h, w)``; weights from float64 coordinates as in scipy."""
    for axis, out in ((x.ndim - 2, h), (x.ndim - 1, w)):
        lo, hi, frac = zoom_linear_weights(x.shape[axis], out)
        shape = [1] * x.ndim
        shape[axis] = out
        wt = jt.array(frac.astype(np.float32)).reshape(shape).cast(x.dtype)
        index = [slice(None)] * axis
        x = x[tuple(index + [jt.array(lo)])] * (1 - wt) + x[tuple(index + [jt.array(hi)])] * wt
    return x


def ohem_keep_mask(prob: jt.Var, target: jt.Var, valid: jt.Var, thresh: float, min_kept: int,
                   factor: int = OHEM_FACTOR) -> tuple[jt.Var, jt.Var]:
    """Official OHEM selection. Returns ``(keep mask [B, H, W] bool, threshold [1])``.

    Args:
        prob: softmax probabilities ``[B, C, H, W]`` (at the label's resolution).
        target: ``[B, H, W]`` class indices in ``[0, C)`` (any class where not ``valid``).
        valid: ``[B, H, W]`` bool, label != ignore.
        thresh: the probability threshold (official ``--ohem-thres``).
        min_kept: the minimum number of kept pixels at full resolution, counted over the *global*
            batch: under MPI the threshold is chosen from the pixels of all processes, so the
            same flags select the same pixels whatever the process count. (The official code
            applies ``--ohem-keep`` to each GPU's share: 4 GPUs x 2 images, 100000 each.)

    As the official code, the threshold search subsamples the class
    probabilities (order-1 zoom) and the label (order-0 zoom) separately and
    then picks each subsampled pixel's ground-truth probability.
    """
    prob, target, valid = prob.stop_grad(), target.stop_grad(), valid.stop_grad()
    B, _, H, W = prob.shape
    h, w = zoom_size(H, factor), zoom_size(W, factor)
    small_prob = _zoom_linear(prob, h, w)
    iy, ix = jt.array(zoom_nearest_index(H, h)), jt.array(zoom_nearest_index(W, w))
    small_target = target[:, iy][:, :, ix]
    small_valid = valid[:, iy][:, :, ix]
    small_p = jt.gather(small_prob, 1, small_target.unsqueeze(1)).squeeze(1)
    mk = min_kept // (factor * factor)
    # Under MPI the selection runs over the global batch: every rank sees every rank's values.
    local = jt.ternary(small_valid, small_p, jt.full_like(small_p, 2.0)).reshape(-1)  # invalid ones sort last
    values = all_gather(local).reshape(-1)
    num_valid = all_reduce_sum(small_valid.sum().cast("float32"))
    if mk > 0:
        sorted_values = jt.argsort(values)[1]
        k = min(mk, values.shape[0])
        threshold = jt.maximum(sorted_values[k - 1:k], jt.array([float(thresh)]).cast(prob.dtype))
    else:
        threshold = jt.array([float(thresh)]).cast(prob.dtype)
    threshold = jt.ternary(num_valid.reshape(1) <= float(mk), jt.ones_like(threshold), threshold)
    p_gt = jt.gather(prob, 1, target.unsqueeze(1)).squeeze(1)
    keep = valid & (p_gt <= threshold.reshape(1, 1, 1))
    return keep, threshold


def ohem_cross_entropy(logits: jt.Var, size: Sequence[int], valid: jt.Var, safe: jt.Var, thresh: float,
                       min_kept: int, align_corners: bool) -> tuple[jt.Var, jt.Var, jt.Var]:
    """``(loss, kept pixels, threshold)``: cross-entropy of ``logits`` upsampled to ``size`` over the kept pixels.

    ``valid [B, H, W]`` marks the labelled pixels, ``safe`` holds their
    classes (any class elsewhere). Under MPI the loss is the mean over the
    pixels kept in the global batch: the optimizer averages the ranks'
    gradients, so each rank's sum is scaled by the process count, and the
    kept count is the global one.
    """
    logp = upsampled_log_probs(logits, size, align_corners)
    nll = -jt.gather(logp, 1, safe.unsqueeze(1)).squeeze(1)
    keep, threshold = ohem_keep_mask(logp.exp(), safe, valid, thresh, min_kept)
    weight = keep.cast(nll.dtype)
    count = weight.sum()
    if jt.in_mpi:
        total = all_reduce_sum(count.stop_grad())
        loss = (nll * weight).sum() * float(jt.world_size) / jt.maximum(total, jt.ones_like(total))
        return loss, total, threshold
    return (nll * weight).sum() / jt.maximum(count, jt.ones_like(count)), count, threshold
