"""Segmentation losses of CCNet: cross-entropy with an ignore label, auxiliary loss, OHEM.

Upstream: speedinghzl/CCNet ``loss/criterion.py`` (``CriterionDSN``,
``CriterionOhemDSN``) and ``loss/loss.py`` (``OhemCrossEntropy2d``), MIT license.

* Both heads' logits are upsampled bilinearly to the label size
  (``align_corners=True`` in the official code).
* Cross-entropy is averaged over the valid pixels (label != ``ignore_index``),
  as ``torch.nn.CrossEntropyLoss(ignore_index=255)``. With no valid pixel at
  all the loss is 0 (PyTorch would return NaN).
* The auxiliary head gets plain cross-entropy, weighted ``aux_weight`` (0.4).
* OHEM (main head only), official semantics, but ``min_kept`` counts the
  pixels of the global batch (see :func:`ohem_keep_mask`). The threshold comes from a 1/8
  subsample: the class probabilities are zoomed (order 1) and the label is
  zoomed (order 0) separately, and each subsampled pixel's ground-truth
  probability ``p`` is picked from the zoomed probabilities. With
  ``mk = min_kept // 64`` and ``n`` valid subsampled pixels, the threshold is
  1.0 (keep everything) if ``mk >= n``; otherwise ``max(thresh, mk-th smallest
  p)`` (``thresh`` alone if ``mk == 0``). At full resolution the valid pixels
  whose ground-truth probability is ``<= threshold`` are kept, and
  cross-entropy is averaged over them.

  The official code zooms with ``scipy.ndimage.zoom(prob, 1/8, order=1)`` and
  ``zoom(label, 1/8, order=0)``. Both are reproduced on the device: the output
  size is ``round(size / 8)`` (Python rounding), output pixel ``o`` samples the
  input coordinate ``o * (size - 1) / (out - 1)`` (computed in float64 on the
  host, as scipy does); order 1 interpolates linearly there, order 0 takes the
  pixel ``floor(coordinate + 0.5)``. The threshold and the kept mask are
  computed in Jittor, without copying the probabilities to the host.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.dist import all_gather, all_reduce_sum

__all__ = ["SegmentationLoss", "AUX_WEIGHT", "OHEM_THRESH", "OHEM_MIN_KEPT", "log_softmax", "pixel_nll",
           "ohem_keep_mask", "zoom_size", "zoom_nearest_index", "zoom_linear_weights"]

#: Subsampling factor of the OHEM threshold search (official ``factor=8``).
OHEM_FACTOR = 8

#: Defaults of the official recipe (README and ``train.py`` of speedinghzl/CCNet), used by train.py too.
AUX_WEIGHT = 0.4
OHEM_THRESH = 0.7
OHEM_MIN_KEPT = 100000


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


def _upsample(logits: jt.Var, size: Sequence[int], align_corners: bool) -> jt.Var:
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    return nn.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def log_softmax(logits: jt.Var) -> jt.Var:
    """``log softmax`` over the class axis (dim 1)."""
    shifted = logits - logits.max(dim=1, keepdims=True).stop_grad()
    return shifted - shifted.exp().sum(dim=1, keepdims=True).log()


def pixel_nll(logits: jt.Var, target: jt.Var) -> jt.Var:
    """Per-pixel ``-log softmax(logits)[target]``, ``[B, H, W]``; ``target`` must be in [0, C)."""
    return -jt.gather(log_softmax(logits), 1, target.unsqueeze(1)).squeeze(1)


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


class SegmentationLoss(nn.Module):
    """CCNet criterion: CE (or OHEM CE) on the main logits + ``aux_weight`` * CE on the auxiliary logits.

    Args:
        num_classes: number of classes; labels must be in ``[0, num_classes)`` or ``ignore_index``.
        ignore_index: label of ignored pixels (255).
        aux_weight: weight of the auxiliary loss (0.4).
        ohem: online hard example mining on the main head (official ``CriterionOhemDSN``).
        ohem_thresh: OHEM probability threshold (official README 0.7).
        ohem_min_kept: OHEM minimum kept pixels (official README 100000).
        align_corners: of the bilinear upsampling of the logits to the label size.

    ``execute(outputs, label)`` takes ``(main, aux)`` (``aux`` may be None) or
    the main logits alone, and an integer label ``[B, H, W]``; it returns the
    total loss (a Jittor scalar to back-propagate) and a dict of floats:
    ``loss``, ``loss_main``, ``loss_aux`` (if any), ``valid_pixels`` and, with
    OHEM, ``ohem_threshold`` and ``ohem_kept``. Raises ValueError for a label
    outside ``[0, num_classes)`` other than ``ignore_index``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, aux_weight: float = AUX_WEIGHT, ohem: bool = False,
                 ohem_thresh: float = OHEM_THRESH, ohem_min_kept: int = OHEM_MIN_KEPT,
                 align_corners: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class index (num_classes {num_classes})")
        if ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be >= 0, got {ohem_min_kept}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.aux_weight = float(aux_weight)
        self.ohem = bool(ohem)
        self.ohem_thresh = float(ohem_thresh)
        self.ohem_min_kept = int(ohem_min_kept)
        self.align_corners = bool(align_corners)

    def _ce(self, logits: jt.Var, label: jt.Var, valid: jt.Var, safe: jt.Var,
            ohem: bool) -> tuple[jt.Var, Optional[jt.Var], Optional[jt.Var]]:
        logits = _upsample(logits, label.shape[1:], self.align_corners)
        logp = log_softmax(logits)
        nll = -jt.gather(logp, 1, safe.unsqueeze(1)).squeeze(1)
        keep, threshold = valid, None
        if ohem:
            keep, threshold = ohem_keep_mask(logp.exp(), safe, valid, self.ohem_thresh, self.ohem_min_kept)
        weight = keep.cast(nll.dtype)
        count = weight.sum()
        if ohem and jt.in_mpi:
            # mean over the pixels kept in the global batch: the optimizer averages the ranks'
            # gradients, so each rank's sum is scaled by the process count
            total = all_reduce_sum(count.stop_grad())
            loss = (nll * weight).sum() * float(jt.world_size) / jt.maximum(total, jt.ones_like(total))
            return loss, total, threshold
        loss = (nll * weight).sum() / jt.maximum(count, jt.ones_like(count))
        return loss, count, threshold

    def execute(self, outputs: Union[jt.Var, Sequence[Optional[jt.Var]]],
                label: jt.Var) -> tuple[jt.Var, dict[str, float]]:
        if isinstance(outputs, (tuple, list)):
            main = outputs[0]
            aux = outputs[1] if len(outputs) > 1 else None
        else:
            main, aux = outputs, None
        if label.ndim != 3:
            raise ValueError(f"label must be [B, H, W], got shape {list(label.shape)}")
        if main.ndim != 4 or main.shape[0] != label.shape[0] or main.shape[1] != self.num_classes:
            raise ValueError(f"logits must be [B={label.shape[0]}, C={self.num_classes}, h, w], "
                             f"got {list(main.shape)}")
        label = label.stop_grad()
        if str(label.dtype) != "int32":
            label = label.cast("int32")
        valid = label != self.ignore_index
        bad = valid & ((label < 0) | (label >= self.num_classes))
        safe = jt.ternary(valid & bad.logical_not(), label, jt.zeros_like(label))

        loss_main, valid_count, threshold = self._ce(main, label, valid, safe, self.ohem)
        loss = loss_main
        names = ["loss_main", "ohem_kept"] if self.ohem else ["loss_main"]
        values = [loss_main, valid_count] if self.ohem else [loss_main]
        if aux is not None:
            loss_aux, _, _ = self._ce(aux, label, valid, safe, False)
            loss = loss + self.aux_weight * loss_aux
            names.append("loss_aux")
            values.append(loss_aux)
        if threshold is not None:
            names.append("ohem_threshold")
            values.append(threshold)
        names += ["valid_pixels", "bad_labels", "bad_min", "bad_max"]
        values += [valid.sum(), bad.sum(),
                   jt.ternary(bad, label, jt.full_like(label, 2 ** 30)).min(),
                   jt.ternary(bad, label, jt.full_like(label, -2 ** 30)).max()]
        fetched = jt.concat([v.reshape(-1).cast("float64") for v in values]).numpy()
        stats = dict(zip(names, (float(v) for v in fetched)))
        if stats.pop("bad_labels") > 0:
            lo, hi = int(stats.pop("bad_min")), int(stats.pop("bad_max"))
            raise ValueError(f"labels must be in [0, {self.num_classes}) or the ignore index {self.ignore_index}; "
                             f"found values in [{lo}, {hi}] outside that range (check the dataset's label "
                             f"mapping and num_classes)")
        stats.pop("bad_min")
        stats.pop("bad_max")
        stats["loss"] = float(stats["loss_main"] + self.aux_weight * stats.get("loss_aux", 0.0))
        return loss, stats
