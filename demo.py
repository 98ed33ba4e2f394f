"""The demo: generate the street-scene dataset, train a small CCNet on the CPU, evaluate it.

``make demo`` (or ``python demo.py``) runs, on a 2-core CPU in well under 10 minutes:

1. ``datasets/demo.py``: writes ``data/demo_cityscapes`` (150 train / 30 val
   images of 128x256 in the Cityscapes layout, 5 classes) unless it exists;
2. ``train.py``: ``ccnet_demo`` (a small VAN backbone, widths 16-32-64-128,
   depths 1-1-2-1; 64-channel RCCA head, recurrence 2) from scratch, 128x128
   crops, batch 8, 300 iterations, SGD + poly;
3. ``evaluate.py``: whole-image evaluation on the val split, the per-class
   table, and colourised predictions in ``work_dirs/demo/eval_val/pred``.

It prints the mIoU and the wall time, and exits with status 1 if the mIoU is
below ``--min-miou`` (0.6). A previous demo run in ``work_dirs/demo`` is
replaced (its run files only); a folder that is not a run folder of this
project is never touched.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jittor_env  # noqa: F401  (must run before jittor is imported)

from datasets import demo as demo_data
from apis import evaluate, train
from cli import run_folder
from cli.main import run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-path", default="data/demo_cityscapes", help="demo dataset folder (generated if missing)")
    p.add_argument("--output-dir", default="work_dirs/demo",
                   help="run folder (a previous demo run there is replaced; anything else is refused)")
    p.add_argument("--iters", type=int, default=300, help="training iterations")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--min-miou", type=float, default=0.6, help="exit with status 1 below this mIoU")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(args: argparse.Namespace) -> dict:
    t0 = time.time()
    if not os.path.isfile(os.path.join(args.data_path, "val.lst")):
        counts = demo_data.write_cityscapes(args.data_path)
        print(f"generated the demo dataset in {args.data_path}: {counts}", flush=True)
    else:
        print(f"using the demo dataset in {args.data_path}", flush=True)
    out = args.output_dir
    if os.path.isdir(out) and os.listdir(out) and not run_folder.is_run_folder(out):
        raise run_folder.RunFolderError(
            f"--output-dir {out} holds files that are not a run of this project; "
            "the demo only ever replaces its own run folder: choose another --output-dir")
    t_train = time.time()
    train.run({"overwrite": True, "dataset": "demo", "data_path": args.data_path, "model": "ccnet_demo",
                  "iters": args.iters, "batch_size": args.batch_size, "crop_size": [args.crop_size],
                  "workers": args.workers, "output_dir": out, "eval_interval": 0,
                  "snapshot_interval": max(1, args.iters // 3), "print_freq": 10, "seed": 0,
                  "no_progress": args.no_progress})
    t_train = time.time() - t_train
    result = evaluate.run({"checkpoint": os.path.join(args.output_dir, "checkpoint_last.pkl"), "dataset": "demo",
                             "data_path": args.data_path, "save_pred": True, "workers": args.workers,
                             "no_progress": args.no_progress})
    wall = time.time() - t0
    miou = result["mIoU"]
    print(f"\ndemo: mIoU {100 * miou:.2f} on the {result['images']} val images "
          f"(target >= {100 * args.min_miou:.0f}); training {t_train:.1f} s ({args.iters} iterations), "
          f"total {wall:.1f} s; "
          f"predictions in {os.path.join(args.output_dir, 'eval_val', 'pred')}", flush=True)
    return {"mIoU": miou, "seconds": wall, "train_seconds": t_train}


def _run(args: argparse.Namespace) -> int:
    return 0 if main(args)["mIoU"] >= args.min_miou else 1


if __name__ == "__main__":
    sys.exit(run_main(_run, get_args_parser().parse_args()))
