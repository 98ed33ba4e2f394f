"""Memory soak: the resident memory of a long training run with loader workers, sampled as it goes.

A leak shows as growth that does not level off: Jittor issue #574 reports host
memory that grows every epoch until the process is killed. This script trains
the demo model (``ccnet_demo`` on the bundled demo dataset, as ``make demo`` does, ``-j 2``)
in a child process for ``--iters`` iterations and samples the resident memory
of the training process and of its workers (their sum, from ``/proc``) every
``--every`` iterations (the children: the loader workers and Jittor's
compile workers). It prints the samples, the growth per 100 iterations
after the warm-up (the least-squares slope over the second half of the run)
and writes the record to ``benchmarks/results/memory_soak.json``.

    python benchmarks/bench_memory_soak.py                      # 1500 iterations
    python benchmarks/bench_memory_soak.py --iters 300 --every 50
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_common import ROOT, cpu_model, rss_kb, write_record  # (first: puts the repository on sys.path)
from datasets import demo as demo_data


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _iterations(log: str) -> int:
    try:
        with open(log) as f:
            return sum(1 for line in f if '"iter"' in line and '"loss"' in line)
    except OSError:
        return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--every", type=int, default=100, help="sample every this many iterations")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "memory_soak.json"))
    args = p.parse_args(argv)
    if args.iters < 2 * args.every or args.every < 1:
        p.error("--iters must be at least twice --every (and --every at least 1)")

    data = os.path.join(ROOT, "data", "demo_cityscapes")  # make demo's dataset
    if not os.path.isfile(os.path.join(data, "val.lst")):
        demo_data.write_cityscapes(data)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, "train.py", "--dataset", "demo", "--data-path", data, "--model", "ccnet_demo",
               "--output-dir", out, "--iters", str(args.iters), "-b", "8", "--crop-size", "128",
               "-j", str(args.workers),
               "--snapshot-interval", str(args.iters), "--eval-interval", "0", "--print-freq", "1",
               "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples, log, t0 = [], os.path.join(out, "log.jsonl"), time.time()
        next_at = args.every
        while proc.poll() is None:
            done = _iterations(log)
            if done >= next_at:
                pids = _tree(proc.pid)
                main_kb = rss_kb("VmRSS", proc.pid)
                total_kb = sum(rss_kb("VmRSS", pid) for pid in pids)
                samples.append({"iter": done, "main_mb": main_kb / 1024, "all_mb": total_kb / 1024,
                                "processes": len(pids), "seconds": round(time.time() - t0, 1)})
                print(f"iter {done:6d}: training process {main_kb / 1024:8.1f} MB, with its {len(pids) - 1} "
                      f"child processes (loader and compile workers) {total_kb / 1024:8.1f} MB", flush=True)
                next_at = done - done % args.every + args.every
            time.sleep(0.2)
        if proc.returncode != 0:
            print(f"error: training failed (status {proc.returncode}): {proc.stderr.read()[-2000:]}",
                  file=sys.stderr)
            return 1
    half = [s for s in samples if s["iter"] > args.iters // 2]
    slopes = {}
    for key in ("main_mb", "all_mb"):
        if len(half) >= 2:
            x = np.array([s["iter"] for s in half], float)
            slopes[key] = float(np.polyfit(x, [s[key] for s in half], 1)[0] * 100)
    print(f"growth over the second half: training process {slopes.get('main_mb', float('nan')):+.2f} MB, "
          f"with workers {slopes.get('all_mb', float('nan')):+.2f} MB per 100 iterations")
    write_record(args.json, {"benchmark": "memory_soak", "cpu": cpu_model(), "iters": args.iters,
                             "workers": args.workers, "command": " ".join(cmd[1:]), "samples": samples,
                             "growth_mb_per_100_iters": slopes, "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
