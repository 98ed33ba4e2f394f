"""Train CCNet on Cityscapes, ADE20K, Pascal VOC or the generated demo dataset.

Single process::

    python train.py --dataset cityscapes --data-path data/cityscapes --model ccnet_resnet101 \\
        --pretrained pretrained/resnet101_deep.pkl --output-dir work_dirs/ccnet_r101_cs

Several processes (one per GPU, or CPU processes), one node or many; the batch
size is global and BatchNorm statistics are synchronised across processes::

    mpirun -np 4 python train.py --dataset cityscapes ...

Defaults (crop, batch size, learning rate, weight decay, iterations) come from
the dataset preset (``datasets/presets.py``); every flag overrides them. The run
folder gets ``config.json`` (the resolved configuration), ``log.jsonl`` (one
JSON object per logged iteration / evaluation) and ``checkpoint_*.pkl``;
``--resume <checkpoint or run folder>`` continues exactly where a run stopped
(with the same number of processes). A run folder that already holds a run is
never overwritten by accident: a fresh run there needs ``--overwrite``.

The official CCNet's and an earlier Jittor port's flags are accepted too
(``--data-dir``, ``--restore-from``, ``--input-size 769,769``,
``--learning-rate``, ``--num-steps``, ``--ohem 1 --ohem-thres --ohem-keep``,
``--gpu`` ...; see ``cli/official.py``), and their .pth files load as they
are (converted in memory).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (must run before jittor is imported)

from apis import train
from cli import arguments, official
from cli.config import TRAIN_DEFAULTS as D
from cli.main import run_main
from utils import comm

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    """train.py's flags; every default is ``None`` ("not given"), filled in by ``cli.config``."""
    p = arguments.Parser(description=__doc__)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"dataset preset: cityscapes, ade20k, voc, demo (default {D['dataset']})")
    g.add_argument("--data-path", help="dataset folder (default data/<dataset>)")
    g.add_argument("--train-split", help="split to train on (default: the preset's)")
    g.add_argument("--val-split", help="split to evaluate on (default: the preset's)")
    g.add_argument("--list-file", help="Cityscapes layout: an official .lst file of training pairs")
    g.add_argument("--crop-size", type=int, nargs="+", metavar="N", help="training crop: H [W] (default: the preset's)")
    g.add_argument("--random-scale", action=argparse.BooleanOptionalAction,
                   help="random rescaling: the preset's scales or --scale-range (default on)")
    g.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="uniform random scale range instead of the preset's scales")
    g.add_argument("--random-mirror", action=argparse.BooleanOptionalAction,
                   help="random horizontal flips (default on)")
    g.add_argument("-j", "--workers", type=int, help=f"data loading worker processes (default {D['workers']})")
    arguments.add_clip_args(p, from_checkpoint=False)

    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"model preset (models.MODEL_PRESETS; default {D['model']})")
    g.add_argument("--pretrained", metavar="PATH", help="ImageNet backbone weights (convert_weights.py output)")
    g.add_argument("--weights", metavar="PATH",
                   help="initialise the whole model from these weights (a checkpoint or converted CCNet)")
    g.add_argument("--recurrence", type=int, help="criss-cross attention passes (default: the preset's)")
    g.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="extra build_model keyword (VALUE parsed as JSON when possible); repeatable")

    g = p.add_argument_group("loss")
    g.add_argument("--aux-weight", type=float, help=f"weight of the auxiliary (dsn) loss (default {D['aux_weight']})")
    g.add_argument("--ohem", nargs="?", const=True, type=official.parse_bool, metavar="1|0",
                   help="online hard example mining on the main head (also --ohem 1 / --ohem 0)")
    g.add_argument("--ohem-thresh", type=float, help=f"OHEM probability threshold (default {D['ohem_thresh']})")
    g.add_argument("--ccl", action="store_true", default=None,
                   help="add the category consistent loss of the TPAMI version on the RCCA feature")
    g.add_argument("--ccl-weights", type=float, nargs=3, metavar=("ALPHA", "BETA", "GAMMA"),
                   help=f"weights of its variance, distance and regularisation terms (default "
                        f"{' '.join(map(str, D['ccl_weights']))})")
    g.add_argument("--ccl-deltas", type=float, nargs=2, metavar=("DELTA_V", "DELTA_D"),
                   help=f"its margins (default {' '.join(map(str, D['ccl_deltas']))})")
    g.add_argument("--ccl-dim", type=int, metavar="D",
                   help=f"channels of the projected feature it works on (default {D['ccl_dim']})")
    g.add_argument("--ohem-min-kept", type=int,
                   help=f"OHEM minimum kept pixels of the GLOBAL batch, whatever the process count "
                        f"(default {D['ohem_min_kept']}; the official code counts per GPU)")

    g = p.add_argument_group("optimisation")
    g.add_argument("-b", "--batch-size", type=int,
                   help="GLOBAL batch size, split over MPI processes (default: the preset's)")
    g.add_argument("--iters", type=int, help="training iterations (default: the preset's)")
    g.add_argument("--opt", choices=("sgd", "adamw"), help=f"optimizer (default {D['opt']})")
    g.add_argument("--lr", type=float, help="base learning rate (default: the preset's; AdamW 6e-5)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default: the preset's)")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float,
                   help="weight decay (default: the preset's; AdamW 0.01)")
    g.add_argument("--power", type=float, help="poly schedule power (default: the preset's)")
    g.add_argument("--min-lr", type=float, help=f"poly schedule floor (default {D['min_lr']}; mmseg: 1e-4)")
    g.add_argument("--head-lr-mult", type=float,
                   help=f"learning-rate multiplier of neck and heads (default {D['head_lr_mult']})")

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", help="run folder (default work_dirs/<model>_<dataset>); a folder that "
                   "already holds a run is refused unless --resume or --overwrite is given")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="start again in a run folder that holds a run: its run files are removed first")
    g.add_argument("--snapshot-interval", type=int,
                   help="checkpoint every N iterations (default iters/10); one at the end always")
    g.add_argument("--eval-interval", type=int,
                   help="evaluate on the val split every N iterations (default: only at the end; 0: never)")
    g.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue a run from a checkpoint file or a run folder (its checkpoint_last.pkl) with "
                        "its saved settings; --lr, --iters, --output-dir, --data-path, --eval-interval, "
                        "--snapshot-interval and --keep-checkpoints may be given anew")
    g.add_argument("--config", metavar="CONFIG_JSON",
                   help="run again what a run folder's config.json records; flags given here override it")
    g.add_argument("--print-config", action="store_true", default=None,
                   help="print the resolved configuration as JSON and exit (nothing is written)")
    g.add_argument("--keep-checkpoints", type=int, metavar="N",
                   help=f"keep the N newest periodic checkpoints, plus checkpoint_last.pkl and, with "
                        f"--eval-interval, checkpoint_best.pkl (default {D['keep_checkpoints']})")
    g.add_argument("--seed", type=int, help=f"seed of data order, augmentation and init (default {D['seed']})")
    g.add_argument("--print-freq", type=int, help=f"log every N iterations (default {D['print_freq']})")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (GPU only): float16 convolutions and attention products, float32 "
                        "statistics, softmax and losses, dynamic loss scaling; a resumed run keeps its setting "
                        "unless --amp/--no-amp is given")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="also write TensorBoard events (loss parts, lr, time, memory, validation mIoU and per-class "
                        "IoU) into <run folder>/tensorboard: tensorboard --logdir work_dirs; a resumed run keeps "
                        "its setting unless --tensorboard/--no-tensorboard is given")
    g.add_argument("--no-cuda", action="store_true", default=None, help="run on the CPU even if a GPU is present")
    g.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    arguments.add_verbose_arg(g)
    g.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # testing: stop early
    official.add_aliases(p, official.TRAIN_ALIASES)
    return p


def options_from_args(args: argparse.Namespace) -> dict:
    """train.py's options from its parsed arguments, the official code's spellings included."""
    return official.apply_aliases(args, official.TRAIN_ALIASES, "train", comm.world_size())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_main(lambda: train.run(options_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
