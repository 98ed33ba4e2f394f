"""Evaluation: the loop over a dataset, the confusion matrix and its metrics, and evaluate.py's run.

:class:`ConfusionMatrix` counts (ground truth, prediction) pairs over all
evaluated pixels, as the official CCNet ``evaluate.py`` and mmsegmentation's
``IoUMetric`` do (intersection and union summed over the whole dataset, not
averaged per image). Ground-truth pixels outside ``[0, num_classes)`` (the
ignore label 255) are skipped. From the matrix ``M`` (rows: ground truth,
columns: prediction):

* per-class IoU ``M[c,c] / (row_c + col_c - M[c,c])``;
* per-class accuracy ``M[c,c] / row_c``;
* aAcc (pixel accuracy) ``trace(M) / sum(M)``;
* mIoU and mAcc: the mean over classes that occur in the ground truth or the
  prediction (``nanmean``, as mmsegmentation); a class that never appears in
  either has IoU NaN and is left out of the mean and reported as ``nan``.

:func:`evaluate` runs a model over a dataset (under MPI each rank runs its
share and the matrices are summed); :func:`run` is evaluate.py: a model from
a file, the dataset preset's inference settings, the table and
``results.json``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from datasets import build_dataset, get_preset, label_id_lut
from datasets.loader import owned_positions
from datasets.transforms import pair
from engine.checkpoint import load_model, read_model_file
from engine.config import parse_model_opts
from engine.dist import is_main, print0, set_device, world_size
from engine.inference import inference, save_label_png
from engine.official import check_classes
from pretrained.io import atomic_write, check_output_dir

__all__ = ["ConfusionMatrix", "format_table", "to_json", "evaluate", "submission_lut", "EVAL_DEFAULTS", "run"]

#: evaluate.py's defaults for the options that neither the checkpoint nor the dataset preset decides.
EVAL_DEFAULTS = {"batch_size": 1, "workers": 2, "scales": [1.0], "flip": False, "save_pred": False,
                 "submission": False, "no_cuda": False, "amp": False, "no_progress": False}


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
            # float64 all-reduce is exact for counts below 2**53.
            total = jt.array(self.mat.astype(np.float64)).mpi_all_reduce("add").numpy()
            self.mat = np.rint(total).astype(np.int64)
        return self

    def compute(self) -> dict:
        """Metrics as a dict of floats / lists (``nan`` for classes absent from gt and prediction)."""
        mat = self.mat.astype(np.float64)
        tp = np.diag(mat)
        gt = mat.sum(1)
        pr = mat.sum(0)
        union = gt + pr - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = mat.sum()
        valid_iou = iou[~np.isnan(iou)]
        valid_acc = acc[~np.isnan(acc)]
        return {
            "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
            "mIoU": float(valid_iou.mean()) if valid_iou.size else float("nan"),
            "mAcc": float(valid_acc.mean()) if valid_acc.size else float("nan"),
            "IoU": [float(v) for v in iou],
            "Acc": [float(v) for v in acc],
            "pixels": int(total),
        }


def _pct(v: float) -> str:
    return "   nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"


def format_table(result: dict, class_names: Optional[Sequence[str]] = None) -> str:
    """Per-class IoU / Acc table plus the summary line, as text (percentages)."""
    iou, acc = result["IoU"], result["Acc"]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    width = max(12, max(len(n) for n in names))
    lines = [f"{'class':<{width}}    IoU    Acc", "-" * (width + 15)]
    for name, i, a in zip(names, iou, acc):
        lines.append(f"{name:<{width}} {_pct(i)} {_pct(a)}")
    lines.append("-" * (width + 15))
    lines.append(f"mIoU {_pct(result['mIoU']).strip()}  mAcc {_pct(result['mAcc']).strip()}  "
                 f"aAcc {_pct(result['aAcc']).strip()}  ({result.get('pixels', 0)} pixels)")
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


def evaluate(model: nn.Module, dataset, num_classes: int, *, ignore_index: int = 255,
             mode: str = "whole", crop_size=None, stride=None, scales: Sequence[float] = (1.0,),
             flip: bool = False, flip_pairs: Sequence[Sequence[int]] = (), pred_dir: Optional[str] = None,
             palette=None,
             submission_dir: Optional[str] = None, label_lut: Optional[np.ndarray] = None,
             progress: bool = True, desc: str = "eval") -> dict:
    """Evaluate ``model`` on ``dataset`` (an eval ``build_dataset``); returns :meth:`ConfusionMatrix.compute`.

    Predictions are compared with the labels at the original image size (the
    scores are resized to it). Under MPI each rank runs its share of every batch
    and the confusion matrices are summed; samples Jittor repeats on several
    ranks (short last batch) are counted and saved once. ``pred_dir`` gets
    colourised PNGs (``palette``), ``submission_dir`` grayscale PNGs of
    ``label_lut[train id]`` (e.g. Cityscapes label ids), named after each sample.
    Unlabelled images (``has_label`` False) are predicted and saved but not scored.
    ``flip_pairs`` (the preset's) are the classes the flip view swaps back.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    owned = owned_positions(dataset)
    owned_names = None if owned is None else {dataset.samples[p].name for p in owned}
    bar = None
    if progress and is_main():
        from tqdm import tqdm  # noqa: PLC0415  (only with a progress bar)
        bar = tqdm(total=len(dataset), desc=desc, dynamic_ncols=True, unit="batch", file=sys.stdout,
                   mininterval=1.0)
    seen = 0
    with jt.no_grad():
        for image, label, meta in dataset:
            sizes = {tuple(s) for s in meta["ori_size"]}
            if len(sizes) != 1:
                raise ValueError(f"one batch holds images of different sizes {sorted(sizes)}; use --batch-size 1")
            out_size = sizes.pop()
            scores = inference(model, image, num_classes, out_size, mode, crop_size, stride, scales, flip,
                               flip_pairs=flip_pairs)
            pred = jt.argmax(scores, dim=1)[0].numpy().astype(np.int64)
            label_np = label.numpy()
            for i, name in enumerate(meta["name"]):
                if owned_names is not None and name not in owned_names:
                    continue
                seen += 1
                if meta["has_label"][i]:
                    matrix.update(label_np[i], pred[i])
                if pred_dir:
                    save_label_png(pred[i], os.path.join(pred_dir, f"{name}.png"), palette=palette)
                if submission_dir:
                    save_label_png(pred[i], os.path.join(submission_dir, f"{name}.png"), lut=label_lut)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    matrix.reduce()
    result = matrix.compute()
    result["images"] = int(round(jt.array([float(seen)]).mpi_all_reduce("add").item())) if jt.in_mpi else seen
    result["matrix"] = matrix.mat.tolist()
    return result


def submission_lut(preset) -> np.ndarray:
    """Predicted class -> Cityscapes label id, for ``--submission`` (Cityscapes-layout presets only)."""
    if preset.name not in ("cityscapes", "demo"):
        raise ValueError(f"--submission writes Cityscapes label ids; the {preset.name!r} preset is not Cityscapes")
    return label_id_lut(preset.cityscapes_train_ids)


def run(options: dict) -> dict:
    """evaluate.py: evaluate the model of ``options["checkpoint"]``; returns the metrics (also written as JSON).

    ``options`` are evaluate.py's arguments (``None`` for "not given"): the
    dataset, preset, recurrence and options default to what the checkpoint
    records; inference (whole / slide, crop, stride, test size) to the dataset
    preset's.
    """
    o = {**EVAL_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    set_device(o["no_cuda"], o["amp"])
    mf = read_model_file(o["checkpoint"])
    saved = mf.settings if mf.kind == "train.py checkpoint" else {}
    dataset = o.get("dataset") or mf.settings.get("dataset") or "cityscapes"
    preset = get_preset(dataset)
    check_classes(preset, o.get("expect_num_classes"), o.get("expect_ignore_label"))
    data_path = o.get("data_path") or saved.get("data_path") or os.path.join("data", dataset)
    split = o.get("split") or preset.val_split
    out_dir = o.get("output_dir") or os.path.join(os.path.dirname(os.path.abspath(mf.path)), f"eval_{split}")
    pred_dir = os.path.join(out_dir, "pred") if o.get("save_pred") else None
    sub_dir = os.path.join(out_dir, "submission") if o.get("submission") else None
    for folder in filter(None, (out_dir, pred_dir, sub_dir)):  # before the evaluation, not after it
        check_output_dir(folder, "--output-dir")
    lut = submission_lut(preset) if o.get("submission") else None
    model, info = load_model(mf, model=o.get("model"), dataset=dataset, recurrence=o.get("recurrence"),
                             model_opts=None if o.get("model_opt") is None else parse_model_opts(o["model_opt"]))
    del mf
    mode = o.get("mode") or preset.test_mode
    crop = pair(o["crop_size"], "--crop-size") if o.get("crop_size") else preset.test_crop
    stride = pair(o["stride"], "--stride") if o.get("stride") else preset.test_stride
    if mode == "slide" and (crop is None or stride is None):
        raise ValueError("--mode slide needs --crop-size and --stride (the preset has none)")
    batch_size = int(o["batch_size"])
    if batch_size < 1:
        raise ValueError(f"-b/--batch-size must be positive, got {batch_size}")
    if int(o["workers"]) < 0:
        raise ValueError(f"-j/--workers must be 0 (load in the main process) or more, got {o['workers']}")
    scales, flip = list(o["scales"]), bool(o["flip"])
    world = world_size()
    ds = build_dataset(dataset, data_path, split=split, train=False, input_norm=model.input_norm,
                       test_size=tuple(o["test_size"]) if o.get("test_size") else None,
                       list_file=o.get("list_file"), batch_size=batch_size * world,
                       num_workers=int(o["workers"]), shuffle=False, drop_last=False)
    print0(f"evaluating {info.model} (recurrence {info.recurrence}) from {info.path} on "
           f"{dataset}/{split} ({ds.num_samples} images), {mode}"
           + (f" crop {crop} stride {stride}" if mode == "slide" else "")
           + f", scales {scales}{' + flip' if flip else ''}, {world} process(es)")
    t0 = time.time()
    result = evaluate(model, ds, preset.num_classes, ignore_index=preset.ignore_index, mode=mode,
                      crop_size=crop, stride=stride, scales=scales, flip=flip, flip_pairs=preset.flip_pairs,
                      pred_dir=pred_dir,
                      palette=preset.palette, submission_dir=sub_dir, label_lut=lut,
                      progress=not o["no_progress"])
    result["seconds"] = round(time.time() - t0, 2)
    if is_main():
        print(format_table(result, preset.class_names), flush=True)
        settings = {"checkpoint": os.path.abspath(info.path), "model": info.model, "recurrence": info.recurrence,
                    "dataset": dataset, "data_path": os.path.abspath(data_path), "split": split,
                    "test_size": o.get("test_size") or preset.test_size, "mode": mode, "crop_size": crop,
                    "stride": stride,
                    "scales": scales, "flip": flip, "world_size": world, "jittor_version": jt.__version__}
        text = to_json({k: v for k, v in result.items() if k != "matrix"}, preset.class_names,
                       settings=settings, confusion_matrix=result["matrix"])
        atomic_write(os.path.join(out_dir, "results.json"), text + "\n", binary=False)
        print(f"results: {os.path.join(out_dir, 'results.json')}"
              + (f"; predictions: {pred_dir}" if pred_dir else "")
              + (f"; submission PNGs: {sub_dir}" if sub_dir else ""), flush=True)
    return result
