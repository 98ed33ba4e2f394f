"""Compare trained runs: size, cost, training curves, scores and per-class IoU side by side.

::

    python compare.py work_dirs/ccnet_r101_cs work_dirs/ccnet_van_b2_cs -o report/
    python compare.py work_dirs/a work_dirs/b work_dirs/c --labels r101 van-b2 van-b3 -o report/

Each RUN is a train.py run folder (config.json + log.jsonl; its scores from
``eval_<val split>/results.json`` when evaluate.py wrote one, else from the
last validation in the log) or an evaluate.py results folder (results.json;
the training curves then come from its checkpoint's run folder, if found).
Runs are labelled by their model preset unless ``--labels`` names them.

It prints the runs table (model, backbone, parameters, GFLOPs at the
evaluation input size, iterations, best and final mIoU, aAcc, mAcc, the
evaluation settings) and the per-class IoU with each run's difference to the
first, sorted by that difference, and writes ``curves.png``,
``per_class.png``, ``report.md`` and ``report.json`` into ``-o``. Runs
evaluated on different datasets or splits, and runs without evaluation
results, are refused.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (must run before jittor is imported)

from apis import compare
from cli import arguments
from cli.main import run_main

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    p = arguments.Parser(description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="train.py run folders or evaluate.py results folders")
    p.add_argument("-o", "--output-dir", default="report", help="report folder (default: report)")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="one distinct name per run (default: model preset)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="count FLOPs at this input size (default: the sliding-window crop or the evaluated image)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = vars(get_args_parser().parse_args(argv))
    options["command"] = "python compare.py " + shlex.join(argv)
    return run_main(compare.run, options)


if __name__ == "__main__":
    sys.exit(main())
