"""Evaluate a CCNet checkpoint: per-class IoU, mIoU, mean and pixel accuracy.

::

    python evaluate.py --dataset cityscapes --data-path data/cityscapes \\
        --checkpoint work_dirs/ccnet_r101_cs/checkpoint_last.pkl
    python evaluate.py ... --scales 0.75 1.0 1.25 --flip          # multi-scale + flip TTA
    mpirun -np 4 python evaluate.py ...                            # images split over processes
    python evaluate.py --dataset cityscapes --split test ... --submission   # label-id PNGs

``--checkpoint`` takes a train.py checkpoint or run folder (the model preset,
recurrence and options are read from it) or a converted CCNet weights file
from ``convert_weights.py``. Inference follows the dataset preset
(Cityscapes: 769x769 sliding windows with stride 513 on the full image;
ADE20K/VOC: the whole image with the short side at 512) unless
``--mode``/``--crop-size``/``--stride``/``--test-size`` say otherwise.
Results go to ``<output-dir>/results.json``; ``--save-pred`` writes
colourised predictions, ``--submission`` Cityscapes label-id PNGs. The
official CCNet's evaluate.py flags work too (``--restore-from``,
``--input-size 769,769`` for its sliding window, ``--data-dir`` ...).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (must run before jittor is imported)

from apis import evaluate
from cli import arguments, official
from cli.config import EVAL_DEFAULTS as D
from cli.main import run_main
from evaluation.metrics import MIOU_OVER

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    p = arguments.Parser(description=__doc__)
    p.add_argument("--checkpoint", "--weights", dest="checkpoint",
                   help="train.py checkpoint (file or run folder), convert_weights.py CCNet weights, or an "
                        "official / mmsegmentation CCNet .pth (converted in memory); required")
    p.add_argument("--dataset", help="dataset preset (default: the checkpoint's, else cityscapes)")
    p.add_argument("--data-path", help="dataset folder (default: the checkpoint's, else data/<dataset>)")
    p.add_argument("--split", help="split to evaluate (default: the preset's val split)")
    p.add_argument("--list-file", help="Cityscapes layout: an official .lst file")
    p.add_argument("--model", help="model preset (default: the checkpoint's)")
    p.add_argument("--recurrence", type=int, help="criss-cross passes (default: the checkpoint's)")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="extra build_model keyword (default: the checkpoint's); repeatable")
    arguments.add_inference_args(p)
    arguments.add_clip_args(p, from_checkpoint=True)
    p.add_argument("--scales", type=float, nargs="+", help=f"test scales, multi-scale TTA (default {D['scales']})")
    p.add_argument("--flip", action="store_true", default=None, help="add horizontally flipped views (TTA)")
    p.add_argument("-b", "--batch-size", type=int, help=f"images per process and step (default {D['batch_size']})")
    p.add_argument("-j", "--workers", type=int, help=f"data loading worker processes (default {D['workers']})")
    p.add_argument("--output-dir", help="results folder (default: <checkpoint folder>/eval_<split>)")
    p.add_argument("--save-pred", action="store_true", default=None,
                   help="save colourised predictions (<output-dir>/pred)")
    p.add_argument("--miou-over", choices=MIOU_OVER,
                   help="which classes mIoU and mAcc average over: 'present' (in the ground truth or the "
                        "prediction; cityscapesScripts, mmsegmentation; the default) or 'all' (an absent class "
                        "counts 0; the official CCNet evaluate.py, the ADE20K benchmark)")
    p.add_argument("--submission", action="store_true", default=None,
                   help="save the predictions in the benchmark server's format: Cityscapes label-id PNGs "
                        "(<output-dir>/submission), ADE20K PNGs of values 1..150 (<output-dir>/submission), "
                        "VOC indexed PNGs (<output-dir>/results/VOC2012/Segmentation/comp{5,6}_test_cls)")
    arguments.add_device_args(p, amp=True)
    p.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    arguments.add_verbose_arg(p)
    official.add_aliases(p, official.EVAL_ALIASES)
    return p


def options_from_args(args: argparse.Namespace) -> dict:
    """evaluate.py's options from its parsed arguments, the official code's spellings included."""
    return official.apply_aliases(args, official.EVAL_ALIASES, "evaluate")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_main(lambda: evaluate.run(options_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
