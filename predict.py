"""Segment images with a trained (train.py) or converted CCNet.

For each image it writes, under ``--output-dir``:

* ``<name>_pred.png``: the prediction coloured with the dataset's palette;
* ``<name>_overlay.png``: that colour blended over the image (``--alpha``);
* ``<name>_label.png`` with ``--save-label``: the raw class indices (8-bit grey).

Images are given as files and/or folders (searched recursively for .png,
.jpg, .jpeg, .bmp, .tif, .tiff, .webp; the folder's sub-paths are kept).

The model comes from the checkpoint: a train.py checkpoint records the model
preset, its options, the number of classes and the dataset in its ``config``;
a whole CCNet converted by ``convert_weights.py`` records the preset, options
and classes in its ``meta`` (add ``--dataset`` for the palette); any other
weights file (``{"state_dict", "meta"}`` .pkl, a PyTorch .pth whose keys
match) needs ``--model`` and ``--dataset`` (or ``--num-classes``). Flags
override the checkpoint's config. The dataset preset gives the palette, the
test resize and whole / sliding-window mode; ``--mode``, ``--test-size``,
``--crop-size`` and ``--stride`` override them.

    python predict.py work_dirs/demo data/demo_cityscapes/leftImg8bit/val -o work_dirs/demo/predict
    python predict.py ccnet_r101_cityscapes.pkl --model ccnet_resnet101 --dataset cityscapes \\
        frankfurt_000000_000294_leftImg8bit.png --mode slide --crop-size 769 --stride 513 --save-label
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (must run before jittor is imported)

from apis import predict
from cli import arguments
from cli.main import run_main

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = arguments.Parser(description=__doc__)
    arguments.add_model_args(parser, "train.py checkpoint (or its run folder) or a converted weights file")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("-o", "--output-dir", help="where to write (default: predictions)")
    arguments.add_inference_args(parser)
    arguments.add_clip_args(parser, from_checkpoint=True)
    parser.add_argument("--alpha", type=float, help="overlay opacity of the colours (default 0.5)")
    parser.add_argument("--save-label", action="store_true", default=None, help="also write the raw class-index PNG")
    arguments.add_device_args(parser)
    arguments.add_verbose_arg(parser)
    parser.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_main(predict.run, vars(args))


if __name__ == "__main__":
    sys.exit(main())
