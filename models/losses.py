"""Segmentation losses of CCNet: cross-entropy with an ignore label, auxiliary loss, OHEM.

Upstream: speedinghzl/CCNet ``loss/criterion.py`` (``CriterionDSN``,
``CriterionOhemDSN``) and ``loss/loss.py`` (``OhemCrossEntropy2d``), MIT license.

* Both heads' logits are upsampled bilinearly to the label size
  (``align_corners=True`` in the official code).
* Cross-entropy is averaged over the valid pixels (label != ``ignore_index``),
  as ``torch.nn.CrossEntropyLoss(ignore_index=255)``. With no valid pixel at
  all the loss is 0 (PyTorch would return NaN).
* The auxiliary head gets plain cross-entropy, weighted ``aux_weight`` (0.4).
* OHEM (main head only), official semantics: ``p`` = softmax probability of
  the ground-truth class. On a 1/8 subsample of ``p`` and of the label, with
  ``mk = min_kept // 64`` and ``n`` valid subsampled pixels: the threshold is
  1.0 (keep everything) if ``mk >= n``; otherwise ``max(thresh, k-th smallest
  p)`` with ``k = mk`` (``thresh`` alone if ``mk == 0``). At full resolution the
  valid pixels with ``p <= threshold`` are kept and cross-entropy is averaged
  over them.

  The official code subsamples with ``scipy.ndimage.zoom(prob, 1/8, order=1)``
  and ``zoom(label, 1/8, order=0)``. Both are reproduced on the device: the
  output size is ``round(size / 8)`` (Python rounding), the output pixel ``o``
  samples input coordinate ``o * (size - 1) / (out - 1)``; order 1 is linear
  interpolation there (= bilinear with ``align_corners=True``), order 0 takes
  the pixel ``floor(coordinate + 0.5)``. The threshold and the kept mask are
  computed in Jittor, without copying the probabilities to the host.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

__all__ = ["SegmentationLoss", "pixel_nll", "ohem_keep_mask", "zoom_size", "zoom_nearest_index"]

#: Subsampling factor of the OHEM threshold search (official ``factor=8``).
OHEM_FACTOR = 8


def zoom_size(size: int, factor: int = OHEM_FACTOR) -> int:
    """Output length of ``scipy.ndimage.zoom`` by ``1/factor``: ``round(size / factor)``, at least 1."""
    return max(1, int(round(size * (1.0 / factor))))


def zoom_nearest_index(size: int, out: int) -> np.ndarray:
    """Input index of each output pixel of ``scipy.ndimage.zoom(order=0)`` (``grid_mode=False``)."""
    scale = (size - 1) / (out - 1) if out > 1 else 1.0
    return np.minimum(np.floor(np.arange(out) * scale + 0.5), size - 1).astype(np.int32)


def _upsample(logits: jt.Var, size: Sequence[int], align_corners: bool) -> jt.Var:
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    return nn.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def pixel_nll(logits: jt.Var, target: jt.Var) -> jt.Var:
    """Per-pixel ``-log softmax(logits)[target]``, ``[B, H, W]``; ``target`` must be in [0, C)."""
    m = logits.max(dim=1, keepdims=True).stop_grad()
    shifted = logits - m
    lse = shifted.exp().sum(dim=1).log()
    picked = jt.gather(shifted, 1, target.unsqueeze(1)).squeeze(1)
    return lse - picked


def ohem_keep_mask(prob_gt: jt.Var, valid: jt.Var, thresh: float, min_kept: int,
                   factor: int = OHEM_FACTOR) -> tuple[jt.Var, jt.Var]:
    """Official OHEM selection. Returns ``(keep mask [B, H, W] bool, threshold [1])``.

    Args:
        prob_gt: softmax probability of the ground-truth class at every pixel, ``[B, H, W]``
            (any value where not ``valid``).
        valid: ``[B, H, W]`` bool, label != ignore.
        thresh: the probability threshold (official ``--ohem-thres``).
        min_kept: the minimum number of kept pixels (official ``--ohem-keep``), at full resolution.
    """
    prob_gt, valid = prob_gt.stop_grad(), valid.stop_grad()
    B, H, W = prob_gt.shape
    h, w = zoom_size(H, factor), zoom_size(W, factor)
    # order 1: linear interpolation at o * (H - 1) / (h - 1), i.e. bilinear with align_corners=True
    small_p = _upsample(prob_gt.unsqueeze(1), (h, w), align_corners=True).squeeze(1)
    # order 0: the pixel floor(coordinate + 0.5)
    iy, ix = jt.array(zoom_nearest_index(H, h)), jt.array(zoom_nearest_index(W, w))
    small_valid = valid[:, iy][:, :, ix]
    mk = min_kept // (factor * factor)
    num_valid = small_valid.sum().cast("float32")
    if mk > 0:
        values = jt.ternary(small_valid, small_p, jt.full_like(small_p, 2.0)).reshape(-1)  # invalid last
        sorted_values = jt.argsort(values)[1]
        kth = sorted_values[min(mk, values.shape[0]) - 1:min(mk, values.shape[0])]
        threshold = jt.maximum(kth, jt.array([float(thresh)], dtype=kth.dtype))
    else:
        threshold = jt.array([float(thresh)], dtype=prob_gt.dtype)
    threshold = jt.ternary(num_valid.reshape(1) <= float(mk), jt.ones_like(threshold), threshold)
    keep = valid & (prob_gt <= threshold.reshape(1, 1, 1))
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

    def __init__(self, num_classes: int, ignore_index: int = 255, aux_weight: float = 0.4, ohem: bool = False,
                 ohem_thresh: float = 0.7, ohem_min_kept: int = 100000, align_corners: bool = True) -> None:
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
        nll = pixel_nll(logits, safe)
        keep, threshold = valid, None
        if ohem:
            prob_gt = (-nll).exp()  # softmax probability of the ground-truth class
            keep, threshold = ohem_keep_mask(prob_gt, valid, self.ohem_thresh, self.ohem_min_kept)
        weight = keep.cast(nll.dtype)
        count = weight.sum()
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
