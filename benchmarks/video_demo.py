"""The video demo's experiment: does temporal context help? 2-D against 3-D criss-cross attention.

On the generated video demo (``python -m datasets.demo --layout video``; each
labelled frame has a noise rectangle over 25-40% of it, its neighbours do not,
and the label is the scene under the rectangle), train with the same budget
(the ``demo_video`` preset's 600 iterations of batch 8 and whole frames, and
:data:`RECIPE`) and several seeds:

* ``2-D``:       ``ccnet_demo``, single images (the labelled frames), R = 2;
* ``T=1``:       ``ccnet3d_demo`` with clips of one frame: the same network as
                 ``2-D`` but R = 3, so the 3-D rows differ from it only in T;
* ``T=5``:       ``ccnet3d_demo`` with clips of 5 frames, 1 apart, R = 3.

Each run is ``train.py`` in its own process (the val split evaluated at the
end); the table gives each setting's val mIoU over the seeds (mean, min, max)
and the per-class IoU means, and ``--json`` keeps every run:

    python benchmarks/video_demo.py --seeds 0 1 2 --json benchmarks/results/video_demo.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

from bench_common import ROOT, check_json_option, cpu_model, write_record

#: The optimiser of every setting: AdamW, lr 2e-3 (weight decay 0.01). With SGD at the preset's lr 1e-2,
#: 600 iterations leave the attention's gamma near 0 (0.01 to 0.04 measured), so no setting's attention
#: carries anything; AdamW moves every parameter at the rate of lr.
RECIPE = ["--opt", "adamw", "--lr", "2e-3"]

SETTINGS = {
    "2-D": ["--model", "ccnet_demo"],
    "T=1": ["--model", "ccnet3d_demo", "--clip-length", "1"],
    "T=5": ["--model", "ccnet3d_demo", "--clip-length", "5"],
}


def train(name: str, seed: int, args: argparse.Namespace) -> dict:
    """One train.py run, then evaluate.py on the val split: its metrics and training time."""
    out = os.path.join(args.work_dir, f"{name.replace('=', '').replace('-', '')}_seed{seed}")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--dataset", "demo_video", "--data-path", args.data_path,
           "--output-dir", out, "--overwrite", "--seed", str(seed), "--no-progress", "--print-freq", "50",
           "--eval-interval", "0", "-j", str(args.workers), *args.recipe, *SETTINGS[name]]
    if args.iters:
        cmd += ["--iters", str(args.iters)]
    t0 = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{result.stderr[-3000:]}")
    seconds = time.time() - t0
    result = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), "--checkpoint", out, "--output-dir",
                             os.path.join(out, "eval_val"), "--no-progress", "-j", "0"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"evaluating {name} seed {seed} failed:\n{result.stderr[-3000:]}")
    metrics = json.load(open(os.path.join(out, "eval_val", "results.json")))
    return {"setting": name, "seed": seed, "mIoU": metrics["mIoU"], "aAcc": metrics["aAcc"],
            "IoU": {c: v["IoU"] for c, v in metrics["per_class"].items()}, "train_seconds": round(seconds, 1),
            "run": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default=os.path.join(ROOT, "data", "demo_video"))
    p.add_argument("--work-dir", default=os.path.join(ROOT, "work_dirs", "video_demo"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--iters", type=int, help="training iterations (default: the demo_video preset's)")
    p.add_argument("--recipe", type=shlex.split, default=RECIPE, metavar="FLAGS",
                   help=f"train.py flags of every setting, one string (default: '{' '.join(RECIPE)}'; '' for none)")
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--json", help="write every run's result here")
    args = p.parse_args(argv)
    check_json_option(p, args.json)
    if not os.path.isdir(os.path.join(args.data_path, "CamVid", "frames")):
        p.error(f"no video demo at {args.data_path}: python -m datasets.demo --layout video --root {args.data_path}")
    runs = []
    for seed in args.seeds:
        for name in args.settings:
            runs.append(train(name, seed, args))
            r = runs[-1]
            print(f"{name:4s} seed {seed}: val mIoU {100 * r['mIoU']:.2f} (trained in {r['train_seconds']:.0f} s)",
                  flush=True)
    print("\n| setting | val mIoU, mean (min-max) over seeds | " + " | ".join(
        f"IoU {c}" for c in (runs[0]["IoU"] or {})) + " |")
    print("|---|---|" + "---|" * len(runs[0]["IoU"] or {}))
    for name in args.settings:
        mine = [r for r in runs if r["setting"] == name]
        miou = [100 * r["mIoU"] for r in mine]
        per_class = {c: statistics.mean(100 * r["IoU"][c] for r in mine) for c in (mine[0]["IoU"] or {})}
        print(f"| {name} | {statistics.mean(miou):.1f} ({min(miou):.1f}-{max(miou):.1f}) | "
              + " | ".join(f"{v:.1f}" for v in per_class.values()) + " |")
    if args.json:
        write_record(args.json, {"benchmark": "video_demo", "cpu": cpu_model(), "command": " ".join(sys.argv),
                                 "recipe": args.recipe, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
