"""Semantic-segmentation metrics: the confusion matrix, per-class IoU and accuracy, mIoU, aAcc, mAcc.

:class:`ConfusionMatrix` counts (ground truth, prediction) pairs over all
evaluated pixels, as the official CCNet ``evaluate.py`` and mmsegmentation's
``IoUMetric`` do (intersection and union summed over the whole dataset, not
averaged per image). Ground-truth pixels outside ``[0, num_classes)`` (the
ignore label 255) are skipped. From the matrix ``M`` (rows: ground truth,
columns: prediction):

* per-class IoU ``M[c,c] / (row_c + col_c - M[c,c])``;
* per-class accuracy ``M[c,c] / row_c``;
* aAcc (pixel accuracy) ``trace(M) / sum(M)``;
* mIoU and mAcc by one of two conventions (``miou_over``):

  - ``"present"`` (the default; cityscapesScripts and mmsegmentation): the
    mean over the classes that occur in the ground truth or the prediction
    (``nanmean``); a class in neither has IoU NaN, is left out of the mean
    and is reported as ``nan``;
  - ``"all"`` (the official CCNet ``evaluate.py``, the ADE20K benchmark): the
    mean over all classes, an absent class counting 0 (its per-class entry
    is still reported as ``nan``).
"""
from __future__ import annotations

import json
import math
from typing import Optional, Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from utils.comm import all_reduce_counts
from utils.formatting import percent

__all__ = ["ConfusionMatrix", "format_table", "to_json", "MIOU_OVER"]

#: The conventions of the class mean (module docstring).
MIOU_OVER = ("present", "all")


class ConfusionMatrix:
    """``num_classes x num_classes`` int64 counts; rows ground truth, columns prediction."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.mat[:] = 0

    def update(self, target, pred) -> None:
        """Add a batch: ``target`` and ``pred`` integer arrays of the same shape.

        Ground truth outside ``[0, num_classes)`` (e.g. 255) is ignored. A
        prediction outside that range is an error (it cannot come from argmax).
        """
        target = np.asarray(target)
        pred = np.asarray(pred)
        if target.shape != pred.shape:
            raise ValueError(f"target shape {target.shape} != prediction shape {pred.shape}")
        target = target.reshape(-1).astype(np.int64)
        pred = pred.reshape(-1).astype(np.int64)
        keep = (target >= 0) & (target < self.num_classes)
        target, pred = target[keep], pred[keep]
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"prediction values must be in [0, {self.num_classes}), got "
                             f"[{pred.min()}, {pred.max()}]")
        n = self.num_classes
        self.mat += np.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over all MPI ranks (in place); no-op without MPI. Returns self."""
        if jt.in_mpi:
            self.mat = all_reduce_counts(self.mat)  # exact (a float all-reduce is rounded above 2**24)
        return self

    def compute(self, miou_over: str = "present") -> dict:
        """Metrics as a dict of floats / lists (``nan`` for classes absent from gt and prediction).

        ``miou_over``: ``"present"`` or ``"all"``, which classes mIoU and mAcc
        average over (module docstring); recorded in the result.
        """
        if miou_over not in MIOU_OVER:
            raise ValueError(f"miou_over must be one of {MIOU_OVER}, got {miou_over!r}")
        mat = self.mat.astype(np.float64)
        tp = np.diag(mat)
        gt = mat.sum(1)
        pr = mat.sum(0)
        union = gt + pr - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = mat.sum()
        if miou_over == "all":
            valid_iou, valid_acc = np.nan_to_num(iou), np.nan_to_num(acc)
        else:
            valid_iou, valid_acc = iou[~np.isnan(iou)], acc[~np.isnan(acc)]
        return {
            "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
            "mIoU": float(valid_iou.mean()) if valid_iou.size and total > 0 else float("nan"),
            "mAcc": float(valid_acc.mean()) if valid_acc.size and total > 0 else float("nan"),
            "IoU": [float(v) for v in iou],
            "Acc": [float(v) for v in acc],
            "pixels": int(total),
            "miou_over": miou_over,
        }


def _cell(value: Optional[float]) -> str:
    return percent(value, width=6, missing="nan")


def format_table(result: dict, class_names: Optional[Sequence[str]] = None) -> str:
    """Per-class IoU / Acc table plus the summary line, as text (percentages)."""
    iou, acc = result["IoU"], result["Acc"]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    width = max(12, max(len(n) for n in names))
    lines = [f"{'class':<{width}}    IoU    Acc", "-" * (width + 15)]
    for name, i, a in zip(names, iou, acc):
        lines.append(f"{name:<{width}} {_cell(i)} {_cell(a)}")
    lines.append("-" * (width + 15))
    over = {"all": "over all classes, absent ones 0", "present": "over the classes present"}.get(
        result.get("miou_over", "present"))
    lines.append(f"mIoU {_cell(result['mIoU']).strip()}  mAcc {_cell(result['mAcc']).strip()}  "
                 f"aAcc {_cell(result['aAcc']).strip()}  ({result.get('pixels', 0)} pixels; means {over})")
    return "\n".join(lines)


def to_json(result: dict, class_names: Optional[Sequence[str]] = None, **extra) -> str:
    """The result as JSON (NaN written as null), with per-class entries named."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    out = {k: clean(v) for k, v in result.items() if k not in ("IoU", "Acc")}
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(result["IoU"]))]
    out["per_class"] = {n: {"IoU": clean(i), "Acc": clean(a)} for n, i, a in zip(names, result["IoU"], result["Acc"])}
    out.update(extra)
    return json.dumps(out, indent=2)
