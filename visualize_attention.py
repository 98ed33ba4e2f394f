"""Where a pixel gathers its context from: criss-cross attention after each recurrence.

For a chosen pixel p, the map after pass r is the weight with which every
pixel s contributes to p's output after r criss-cross passes, the attention
being composed through the passes as in the paper's figure::

    after R=1:  M1[s] = A1[p, s]                        (p's row and column)
    after R=2:  M2[s] = sum_u A2[p, u] * A1[u, s]       (u on p's cross, s on u's cross: every pixel)

where ``A_r[u, s]`` is the softmax attention of pass r (pixel u attending to
pixel s on its criss-cross, ``model.attention_maps``). In matrix form
``M_r = e_p^T A_r A_(r-1) ... A_1``: each map sums to 1. Value convolutions,
``gamma`` and the residual connections are not part of it: it shows the
attention alone, as the paper does.

The output PNG has one panel per pass (the map drawn as a heat map over the
image, normalised to its own maximum, the pixel marked) after the image:

    python visualize_attention.py work_dirs/demo image.png --pixel 60 100 -o attention.png
    python visualize_attention.py work_dirs/demo image.png --pixel 60 100 --power 0.5   # small weights visible
    python visualize_attention.py model.pkl --model ccnet_resnet101 --dataset cityscapes img1.png img2.png \\
        --pixel 1000 400 --pixel 300 700 -o attention_maps/

Checkpoints, flags and input preprocessing are those of ``predict.py``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (must run before jittor is imported)

from apis import attention
from cli import arguments
from cli.main import run_main

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = arguments.Parser(description=__doc__)
    arguments.add_model_args(parser, "train.py checkpoint (or its run folder) or a converted weights file")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("--pixel", type=float, nargs=2, action="append", metavar=("X", "Y"),
                        help="image pixel to show, column then row (repeatable; default: the centre)")
    parser.add_argument("-o", "--output",
                        help="output folder, or a .png file for one image and one pixel (default: attention)")
    parser.add_argument("--test-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                        help="keep-ratio resize before the model (default: the preset's)")
    parser.add_argument("--alpha", type=float, help="heat-map opacity (default 0.6)")
    parser.add_argument("--power", type=float,
                        help="display the maps as (map / max) ** POWER; 0.5 brings out small weights (default 1)")
    parser.add_argument("--save-npy", action="store_true", default=None,
                        help="also save the composed maps [R, h, w] as .npy")
    arguments.add_clip_args(parser, from_checkpoint=True)
    arguments.add_device_args(parser)
    arguments.add_verbose_arg(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_main(attention.run, vars(args))


if __name__ == "__main__":
    sys.exit(main())
