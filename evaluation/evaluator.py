"""The evaluation loop: a model over a dataset, into a confusion matrix (``mpirun``: each rank its share)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from datasets.loader import owned_positions
from evaluation.inference import inference
from evaluation.metrics import ConfusionMatrix
from utils.comm import all_reduce_counts, is_main
from utils.progress import progress_bar

__all__ = ["evaluate"]


def evaluate(model: nn.Module, dataset, num_classes: int, *, ignore_index: int = 255,
             mode: str = "whole", crop_size=None, stride=None, scales: Sequence[float] = (1.0,),
             flip: bool = False, flip_pairs: Sequence[Sequence[int]] = (),
             writers: Sequence[Callable[[str, np.ndarray], None]] = (), progress: bool = True,
             desc: str = "eval", miou_over: str = "present") -> dict:
    """Evaluate ``model`` on ``dataset`` (an eval ``build_dataset``); returns :meth:`ConfusionMatrix.compute`.

    Predictions are compared with the labels at the original image size (the
    scores are resized to it). Under MPI each rank runs its share of every batch
    and the confusion matrices are summed; samples Jittor repeats on several
    ranks (short last batch) are counted and written once. Each of ``writers``
    is called as ``writer(sample name, class indices [H, W])`` for every
    prediction (e.g. to save it as a PNG). Unlabelled images (``has_label``
    False) are predicted and written but not scored. ``flip_pairs`` (the
    preset's) are the classes the flip view swaps back.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    owned = owned_positions(dataset)
    owned_names = None if owned is None else {dataset.samples[p].name for p in owned}
    bar = progress_bar(len(dataset), desc, "batch") if progress and is_main() else None
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
                for write in writers:
                    write(name, pred[i])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    matrix.reduce()
    result = matrix.compute(miou_over)
    result["images"] = int(all_reduce_counts([seen])[0]) if jt.in_mpi else seen
    result["matrix"] = matrix.mat.tolist()
    return result
