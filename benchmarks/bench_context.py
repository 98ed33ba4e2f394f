"""The paper's efficiency claims, measured: recurrent criss-cross attention
(RCCA, R=2) against a non-local block of the same width on the same feature map.

CCNet's abstract claims that RCCA needs "11x less GPU memory" than a non-local
block and "reduces FLOPs by about 85%"; the author counts about 8 GFLOPs for
RCCA on a 1x512x97x97 map (speedinghzl/CCNet issue #2). This script counts the
FLOPs of both blocks analytically and measures time and peak memory, forward
and forward+backward, and prints our ratios beside those claims.

The blocks (input x of shape [B, C, H, W], N = H*W):

* ``rcca``: :class:`models.ccnet.CrissCrossAttention` (query/key 1x1 convs to
  C/8 channels, value 1x1 conv to C, attention over the H+W-1 criss-cross
  positions, ``gamma * out + x``), applied R times with shared weights, as in
  the CCNet head. The 3x3 convs around it in the head are left out.
* ``nonlocal``: :class:`models.nonlocal_block.NonLocalBlock` of the same width
  (query/key C/8, value C, ``gamma * out + x``): only the attention pattern
  differs, all N positions instead of H+W-1.
* ``nonlocal-wang``: Wang et al.'s own width (theta/phi/g to C/2, a 1x1
  output conv back to C), for reference.

FLOP counting convention (``count_flops``): FLOPs = 2 x multiply-adds of the
1x1 convolutions (C_in * C_out per pixel) and of the two attention products
(energies: one C/8-long dot product per (pixel, position) pair; aggregation:
one C-long weighted sum per pair). Bias adds, softmax (exp, sum, divide per
logit), the gamma scale and the residual add are not in FLOPs; they are
reported apart as ``other_ops`` (well under 1% here). Backward is not counted
(conventionally about twice the forward). Many papers, the author's 8 GFLOPs
apparently among them, call one multiply-add one FLOP: ``macs`` gives that
number.

Measurement: each (block, mode) runs in its own subprocess, on the CPU or, with
``--device cuda``, the GPU. Time is the median of ``--repeat`` runs after
``--warmup`` runs, with ``jt.sync_all(True)`` before each clock read. "fwd" is
inference (``jt.no_grad``); "fwd+bwd" also computes the gradients of the input
and of every parameter. Peak memory is Jittor's peak of live variable memory
(``profile_memory_enable``, one extra run after the timed ones) minus the
input and parameters, which is what the block allocates, on CPU and GPU
alike (like PyTorch's ``max_memory_allocated``); on the CPU the process's peak
resident set above its resident set once the inputs exist (``VmHWM - VmRSS``,
as in ``bench_cca.py``) is reported too, caches and allocator slack included.

    python benchmarks/bench_context.py                                  # 97, 65, 33 on the CPU
    python benchmarks/bench_context.py --shapes 1 512 97 97 --json benchmarks/results/context.json
    python benchmarks/bench_context.py --device cuda --blocks rcca nonlocal nonlocal-wang
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys

from bench_common import check_json_option, cpu_model, jittor_peak_bytes, rss_kb, run_worker, time_runs, write_record

BLOCKS = ("rcca", "nonlocal", "nonlocal-wang")
MODES = ("fwd", "fwd+bwd")
DEFAULT_SHAPES = ((1, 512, 97, 97), (1, 512, 65, 65), (1, 512, 33, 33))
PAPER_FLOP_REDUCTION = 0.85  # "reduces FLOPs by about 85% of the non-local block"
PAPER_MEMORY_RATIO = 11.0    # "requires 11x less GPU memory usage"
AUTHOR_RCCA_GFLOPS = 8.0     # speedinghzl/CCNet#2, for 1x512x97x97


# -- analytic FLOPs -------------------------------------------------------------

def _widths(block: str, C: int) -> tuple[int, int]:
    """(key_channels, value_channels) of a block on C input channels."""
    if block in ("rcca", "nonlocal"):
        return C // 8, C
    if block == "nonlocal-wang":
        return C // 2, C // 2
    raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")


def count_flops(block: str, shape, recurrence: int = 2) -> dict:
    """Forward multiply-adds of ``block`` on an input of ``shape`` [B, C, H, W].

    Returns ``{"macs": total, "flops": 2 * total, "breakdown": {"convs",
    "energy", "aggregation"} (multiply-adds), "other_ops": uncounted
    element-wise operations}``; see the module docstring for the convention.
    ``recurrence`` only applies to ``rcca`` (the convs run again each pass).
    """
    B, C, H, W = shape
    N = H * W
    ck, cv = _widths(block, C)
    convs = B * N * C * (2 * ck + cv)
    biases = B * N * (2 * ck + cv)
    if block == "rcca":
        positions, passes = H + W - 1, recurrence
    else:
        positions, passes = N, 1
        if cv != C:  # output conv back to C channels
            convs += B * N * cv * C
            biases += B * N * C
    energy = B * N * positions * ck
    aggregation = B * N * positions * cv
    other = biases + 3 * B * N * positions + 2 * B * N * C  # + softmax (exp, sum, divide) + gamma, residual
    breakdown = {"convs": passes * convs, "energy": passes * energy, "aggregation": passes * aggregation}
    macs = sum(breakdown.values())
    return {"macs": macs, "flops": 2 * macs, "breakdown": breakdown, "other_ops": passes * other}


# -- one measurement, in a subprocess ----------------------------------------------

def _build(block: str, C: int, impl: str):
    import jittor as jt
    if block == "rcca":
        from models.ccnet import CrissCrossAttention
        module = CrissCrossAttention(C, impl=impl)
    else:
        from models.nonlocal_block import NonLocalBlock
        ck, cv = _widths(block, C)
        module = NonLocalBlock(C, key_channels=ck, value_channels=cv)
    module.gamma.assign(jt.full((1,), 0.5))  # any value: the cost does not depend on it
    return module


def measure(block: str, mode: str, shape, warmup: int = 2, repeat: int = 5, recurrence: int = 2,
            device: str = "cpu", impl: str = "kernel") -> dict:
    """Times ``block`` in this process and measures its peak memory (call it in a fresh process)."""
    import numpy as np
    import jittor_env  # noqa: F401
    import jittor as jt
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if device == "cuda":
        if not jt.has_cuda:
            raise RuntimeError("--device cuda: Jittor found no CUDA GPU")
        jt.flags.use_cuda = 1
    B, C, H, W = shape
    module = _build(block, C, impl)
    passes = recurrence if block == "rcca" else 1
    x = jt.array(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    params = module.parameters()
    jt.sync_all(True)
    input_bytes = 4 * (x.numel() + sum(p.numel() for p in params))
    base_kb = rss_kb("VmRSS")

    def run():
        if mode == "fwd":
            with jt.no_grad():
                out = x
                for _ in range(passes):
                    out = module(out)
                out.sync()
        else:
            out = x
            for _ in range(passes):
                out = module(out)
            jt.sync(jt.grad(out.sum(), [x] + params))
        jt.sync_all(True)

    times = time_runs(run, warmup, repeat, lambda: jt.sync_all(True))
    rss_mb = (rss_kb("VmHWM") - base_kb) / 1024 if device == "cpu" else None
    peak_bytes = jittor_peak_bytes(run)
    return {"block": block, "mode": mode, "shape": list(shape), "device": device,
            "recurrence": passes if block == "rcca" else None, "jittor": jt.__version__,
            "ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times],
            "peak_mb": (peak_bytes - input_bytes) / 2**20, "peak_rss_mb": rss_mb,
            "input_mb": input_bytes / 2**20, "params": int(sum(p.numel() for p in params))}


def _run_worker(block: str, mode: str, shape, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", block, "--mode", mode,
           "--shapes", *map(str, shape), "--warmup", str(args.warmup), "--repeat", str(args.repeat),
           "--recurrence", str(args.recurrence), "--device", args.device, "--impl", args.impl]
    return run_worker(cmd, f"{block} {mode} {list(shape)}")


# -- the report -----------------------------------------------------------------

def _ratio(a, b):
    return a / b if a is not None and b else None


def summarize(rows: dict, shape, recurrence: int) -> dict:
    """Ratios non-local / RCCA for one shape, from ``rows[(block, mode)]`` and the FLOP counts."""
    rcca, nl = count_flops("rcca", shape, recurrence), count_flops("nonlocal", shape)
    out = {"flop_reduction": 1 - rcca["flops"] / nl["flops"], "flop_ratio": nl["flops"] / rcca["flops"]}
    for mode in MODES:
        r, n = rows.get(("rcca", mode)), rows.get(("nonlocal", mode))
        if r and n:
            out[f"time_ratio_{mode}"] = _ratio(n["ms"], r["ms"])
            out[f"memory_ratio_{mode}"] = _ratio(n["peak_mb"], r["peak_mb"])
            out[f"rss_ratio_{mode}"] = _ratio(n["peak_rss_mb"], r["peak_rss_mb"])
    return out


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_report(shape, rows: dict, blocks, recurrence: int, summary: dict) -> None:
    B, C, H, W = shape
    print(f"\n[B,C,H,W] = {list(shape)}, RCCA R={recurrence}, float32")
    print(f"{'block':14s} {'GFLOPs':>8s} {'GMACs':>7s} {'fwd ms':>9s} {'f+b ms':>9s} "
          f"{'peak fwd MB':>12s} {'peak f+b MB':>12s} {'RSS fwd MB':>11s} {'RSS f+b MB':>11s}")
    for block in blocks:
        fl = count_flops(block, shape, recurrence)
        f, fb = rows.get((block, "fwd"), {}), rows.get((block, "fwd+bwd"), {})
        print(f"{block:14s} {fl['flops'] / 1e9:8.2f} {fl['macs'] / 1e9:7.2f} {_fmt(f.get('ms'), '9.1f')} "
              f"{_fmt(fb.get('ms'), '9.1f')} {_fmt(f.get('peak_mb'), '12.1f')} {_fmt(fb.get('peak_mb'), '12.1f')} "
              f"{_fmt(f.get('peak_rss_mb'), '11.1f')} {_fmt(fb.get('peak_rss_mb'), '11.1f')}")
    s = summary
    print(f"  FLOPs: RCCA needs {100 * s['flop_reduction']:.1f}% fewer than non-local "
          f"(paper: about {100 * PAPER_FLOP_REDUCTION:.0f}%)")
    for mode in MODES:
        if f"memory_ratio_{mode}" in s:
            print(f"  {mode:7s}: non-local / RCCA memory {_fmt(s[f'memory_ratio_{mode}'], '.1f')}x "
                  f"(RSS {_fmt(s[f'rss_ratio_{mode}'], '.1f')}x; paper: {PAPER_MEMORY_RATIO:.0f}x), "
                  f"time {_fmt(s[f'time_ratio_{mode}'], '.1f')}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=int, metavar="B C H W",
                        help="one or more input shapes, 4 numbers each (default: 1 512 97 97, 1 512 65 65, "
                             "1 512 33 33; 97 is a 769 crop at output stride 8)")
    parser.add_argument("--blocks", nargs="+", default=["rcca", "nonlocal"], choices=BLOCKS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--recurrence", type=int, default=2, help="RCCA passes R (default 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--impl", default="kernel", choices=("kernel", "reference"),
                        help="criss-cross attention implementation (models.ops.cca)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flops-only", action="store_true", help="print the analytic FLOPs, measure nothing")
    parser.add_argument("--json", help="also write all numbers to this file")
    parser.add_argument("--worker", choices=BLOCKS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_json_option(parser, args.json)
    flat = args.shapes or [n for s in DEFAULT_SHAPES for n in s]
    if len(flat) % 4:
        parser.error(f"--shapes takes groups of 4 numbers (B C H W), got {len(flat)} numbers")
    shapes = [tuple(flat[i:i + 4]) for i in range(0, len(flat), 4)]
    for shape in shapes:
        if min(shape) < 1 or shape[1] < 8:
            parser.error(f"bad shape {list(shape)}: all sizes positive and C >= 8")
    if args.recurrence < 1:
        parser.error(f"--recurrence must be at least 1, got {args.recurrence}")

    if args.worker:
        print(json.dumps(measure(args.worker, args.mode, shapes[0], args.warmup, args.repeat,
                                 args.recurrence, args.device, args.impl)))
        return 0

    records = []
    for shape in shapes:
        rows = {}
        if not args.flops_only:
            for block in args.blocks:
                for mode in args.modes:
                    result = _run_worker(block, mode, shape, args)
                    if result:
                        rows[(block, mode)] = result
                        print(f"  {list(shape)} {block:14s} {mode:8s} {result['ms']:10.1f} ms  "
                              f"peak {result['peak_mb']:9.1f} MB", flush=True)
        summary = summarize(rows, shape, args.recurrence)
        print_report(shape, rows, args.blocks, args.recurrence, summary)
        records.append({"shape": list(shape),
                        "flops": {b: count_flops(b, shape, args.recurrence) for b in args.blocks},
                        "results": list(rows.values()), "summary": summary})
    if shapes and tuple(shapes[0][1:]) == (512, 97, 97) and shapes[0][0] == 1:
        print(f"\nauthor's count for RCCA on 1x512x97x97: about {AUTHOR_RCCA_GFLOPS:.0f} GFLOPs; ours: "
              f"{count_flops('rcca', shapes[0], args.recurrence)['macs'] / 1e9:.2f} G multiply-adds")

    if args.json:
        info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "device": args.device, "impl": args.impl, "recurrence": args.recurrence,
                "warmup": args.warmup, "repeat": args.repeat,
                "machine": cpu_model(), "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg(),
                "paper": {"flop_reduction": PAPER_FLOP_REDUCTION, "memory_ratio": PAPER_MEMORY_RATIO,
                          "author_rcca_gflops_1x512x97x97": AUTHOR_RCCA_GFLOPS},
                "shapes": records}
        write_record(args.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
