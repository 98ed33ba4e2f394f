"""Register-tile sizes of the op's CPU kernels, by measurement on this machine.

``models/ops/cca_cpu.h`` computes with register tiles: rows x channels (the
column part of ``map``), rows x positions (the column part of ``weight``) and
scalars x vectors (both row parts), sized for the 32 vector registers of
AVX-512. Zen 4 executes a 512-bit operation in two halves and other cores
have other load bandwidths, so this
script times the op's forward+backward (as ``bench_cca.py``: query/key C/8
channels, gradients of all three inputs) with each candidate tiling, each in
its own process (``CCA_TILES`` defined before the header), the candidates
interleaved over ``--rounds``. Every candidate's output and gradients on a
small input are compared with the default tiling's (they must agree to
float32 rounding).

    python benchmarks/bench_cca_tiles.py                          # the candidates below, [2,512,97,97]
    python benchmarks/bench_cca_tiles.py --tiles 4,4,4,6,6,4 2,8,4,6,6,4 --json out.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys

from bench_common import (check_json_option, cca_inputs, combine_rounds, cpu_model, median_ratio, run_worker, time_runs,
                          write_record)

#: map rows, map channels, weight rows, weight positions, row-part scalars, row-part vectors;
#: the first is the AVX-512 default, the last Zen 4's (models/ops/cca_cpu.h).
CANDIDATES = ("4,4,4,6,6,4", "6,4,4,6,6,4", "4,6,4,6,6,4", "3,8,4,6,6,4", "4,4,6,4,6,4", "4,4,4,6,4,6",
              "4,4,4,6,3,7")
CHECK_SHAPE = (1, 16, 9, 11)


def _parse_tiles(text: str) -> tuple[int, ...]:
    try:
        tiles = tuple(int(t) for t in text.split(","))
    except ValueError:
        tiles = ()
    # accumulators + the vectors loaded per step must fit in 32 vector registers
    if (len(tiles) != 6 or min(tiles) < 1 or tiles[0] * tiles[1] + tiles[0] + 1 > 32
            or tiles[2] * tiles[3] + tiles[2] + 1 > 32 or tiles[4] * tiles[5] + tiles[5] + 1 > 32):
        raise argparse.ArgumentTypeError(f"{text!r}: six positive integers R,C,R,P,S,V with R*C+R, R*P+R and "
                                         "S*V+V at most 31 (the tiles must fit in 32 vector registers)")
    return tiles


def _worker(tiles, shape, warmup: int, repeat: int) -> dict:
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    import models.ops.cca as cca
    import models.ops.loader as loader
    read = loader.header
    define = f"#define CCA_TILES {', '.join(map(str, tiles))}\n"
    loader.header = lambda name: define + read(name) if name == "cca_cpu.h" else read(name)

    def run(arrays):
        q, k, v = (jt.array(a) for a in arrays)
        out = cca.criss_cross_attention(q, k, v)
        grads = jt.grad((out * out).sum(), [q, k, v])
        jt.sync([out, *grads])
        jt.sync_all(True)
        return [out, *grads]

    check = [t.numpy().ravel().tolist() for t in run(cca_inputs(CHECK_SHAPE, seed=1))]
    arrays = cca_inputs(shape)
    times = time_runs(lambda: run(arrays), warmup, repeat)
    return {"tiles": list(tiles), "ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times],
            "check": check}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", nargs="+", type=_parse_tiles, default=[_parse_tiles(t) for t in CANDIDATES],
                        metavar="R,C,R,P,S,V", help="candidate tilings; the first is the reference (default: "
                                                f"{' '.join(CANDIDATES)})")
    parser.add_argument("--shape", nargs=4, type=int, default=[2, 512, 97, 97], metavar=("B", "C", "H", "W"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the candidates (default 2)")
    parser.add_argument("--json", help="also write all numbers to this file")
    parser.add_argument("--worker", type=_parse_tiles, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_json_option(parser, args.json)
    if args.rounds < 1 or args.repeat < 1 or args.warmup < 0 or min(args.shape) < 1:
        parser.error("--rounds, --repeat and the shape must be at least 1, --warmup at least 0")
    if args.worker:
        print(json.dumps(_worker(args.worker, tuple(args.shape), args.warmup, args.repeat)))
        return 0

    import numpy as np
    from models.complexity import cca_flops
    B, C, H, W = args.shape
    flops = 3 * sum(cca_flops(B, C // 8, C, H, W).values())
    runs: dict[tuple, list] = {}
    for round_ in range(args.rounds):
        for tiles in args.tiles:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", ",".join(map(str, tiles)),
                   "--shape", *map(str, args.shape), "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
            result = run_worker(cmd, f"tiles {tiles}")
            runs.setdefault(tiles, []).append(result)
            if result:
                print(f"  round {round_ + 1}/{args.rounds} tiles {tiles}: {result['ms']:.1f} ms", flush=True)
    rows = [r for r in (combine_rounds(runs[t]) for t in args.tiles) if r]
    if not rows or tuple(rows[0]["tiles"]) != tuple(args.tiles[0]):
        print("error: the reference tiling failed", file=sys.stderr)
        return 1
    reference = rows[0]
    print(f"\nOp forward+backward, value {args.shape}, float32, median of {args.repeat} after {args.warmup}, "
          f"median of {args.rounds} rounds; {cpu_model()}")
    print(f"{'map rows x ch':>13s} {'weight rows x pos':>17s} {'row scal x vec':>15s} {'ms':>8s} {'GFLOP/s':>8s} "
          f"{'vs first':>8s} {'max diff':>9s}")
    for r in rows:
        r["gflops_per_s"] = flops / (r["ms"] / 1000) / 1e9
        r["ratio_to_first"] = median_ratio(r, reference)
        r["check_max_abs_diff"] = max(float(np.abs(np.array(a) - np.array(b)).max())
                                      for a, b in zip(r["check"], reference["check"]))
        t = r["tiles"]
        print(f"{t[0]:>6d} x {t[1]:<4d} {t[2]:>9d} x {t[3]:<5d} {t[4]:>7d} x {t[5]:<5d} {r['ms']:8.1f} {r['gflops_per_s']:8.1f} "
              f"{r['ratio_to_first']:8.2f} {r['check_max_abs_diff']:9.1e}")
    if args.json:
        write_record(args.json, {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                 "machine": cpu_model(), "cpu_count": os.cpu_count(), "shape": args.shape,
                                 "flops": flops, "rounds": args.rounds,
                                 "results": [{k: v for k, v in r.items() if k != "check"} for r in rows]})
    bad = [r["tiles"] for r in rows if r["check_max_abs_diff"] > 1e-4]
    if bad:
        print(f"error: tilings {bad} compute a different result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
