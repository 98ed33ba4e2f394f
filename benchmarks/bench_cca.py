"""Time criss-cross attention: our kernel against the plain-Jittor reference and,
when torch is installed, the two PyTorch formulations, in one run.

What is timed is the attention itself, from query/key [B, C/8, H, W] and value
[B, C, H, W] to the aggregated output (energies, softmax over the H+W-1
positions, weighted sum), forward and forward+backward (gradients of all three
inputs). The 1x1 convolutions around it are the same for every implementation
and left out.

* jittor-kernel     models.ops.cca: our C++/OpenMP (or CUDA) kernels
* jittor-reference  models.ops.cca impl="reference": Jittor matmuls, -inf diagonal
* torch-bmm         the official CCNet pure-python formulation (bmm, -inf diagonal)
* torch-einsum      the mmcv formulation (einsum, -inf diagonal)

A shape of five numbers ``B C T H W`` times the 3-D attention over clips
(``models.ops.cca3d``, T + H + W - 2 positions per pixel) the same way, against
the same two PyTorch formulations extended by the time line
(``bench_common.torch_bmm_3d``, ``torch_einsum_3d``).

Each implementation and mode runs in its own subprocess: time is the median
of --repeat runs after --warmup runs (with jt.sync_all(True) around Jittor's
lazy execution); peak memory is the process's peak resident set (VmHWM) minus
its resident set once the inputs exist, so it counts everything the
computation allocates, caches included. A small-shape output of each is
compared against the kernel's to make sure all four compute the same function.
The whole set runs --rounds times, interleaved (on a shared machine a slow
spell then hits every implementation, not one): each time is the median of
the rounds, each speed-up the median of the rounds' ratios. GFLOP/s come from
``models.complexity.cca_flops``; the machine's float32 FMA peak is measured
(``bench_common.fma_peak_gflops``) to say what fraction of it the kernel reaches.

    python benchmarks/bench_cca.py                       # [2, 512, 97, 97] on CPU
    python benchmarks/bench_cca.py --shape 1 512 129 257 --json out.json
    python benchmarks/bench_cca.py --shape 1 512 5 97 97           # a clip of 5 frames
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

from bench_common import (cca_inputs, check_json_option, combine_rounds, cpu_model, fma_peak_gflops, median_ratio, rss_kb,
                          run_worker, time_runs, torch_bmm, torch_bmm_3d, torch_einsum, torch_einsum_3d, write_record)
IMPLS = ("jittor-kernel", "jittor-reference", "torch-bmm", "torch-einsum")
CHECK_SHAPES = {4: (2, 16, 5, 7), 5: (2, 16, 3, 5, 7)}  # images, clips


# -- one implementation, in a subprocess ------------------------------------------

def _worker(impl: str, mode: str, shape, warmup: int, repeat: int) -> dict:
    if impl.startswith("jittor"):
        import jittor_env  # noqa: F401
        import jittor as jt
        from models.ops.cca import criss_cross_attention
        from models.ops.cca3d import criss_cross_attention_3d
        attend = criss_cross_attention_3d if len(shape) == 5 else criss_cross_attention
        jimpl = "kernel" if impl == "jittor-kernel" else "reference"

        def make(arrays):
            return [jt.array(a) for a in arrays]

        def run(tensors, backward):
            q, k, v = tensors
            out = attend(q, k, v, impl=jimpl)
            if backward:
                jt.sync(jt.grad(out.sum(), [q, k, v]))
            else:
                out.sync()
            jt.sync_all(True)
            return out

        def to_numpy(out):
            return out.numpy()
        device = "cuda" if jt.flags.use_cuda else "cpu"
        version = jt.__version__
    else:
        import torch
        fns = {4: (torch_bmm, torch_einsum), 5: (torch_bmm_3d, torch_einsum_3d)}[len(shape)]
        fn = fns[0] if impl == "torch-bmm" else fns[1]

        def make(arrays):
            return [torch.from_numpy(a).requires_grad_(True) for a in arrays]

        def run(tensors, backward):
            out = fn(*tensors)
            if backward:
                torch.autograd.grad(out.sum(), tensors)
            return out

        def to_numpy(out):
            return out.detach().numpy()
        device = "cpu"
        version = torch.__version__

    check = to_numpy(run(make(cca_inputs(CHECK_SHAPES[len(shape)], seed=1)), False))
    tensors = make(cca_inputs(shape))
    base_kb = rss_kb("VmRSS")
    backward = mode == "fwd+bwd"
    times = time_runs(lambda: run(tensors, backward), warmup, repeat)
    return {"impl": impl, "mode": mode, "device": device, "version": version,
            "ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times],
            "peak_mb": (rss_kb("VmHWM") - base_kb) / 1024, "check": check.tolist()}


def _run_worker(impl, mode, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--mode", mode,
           "--shape", *map(str, args.shape), "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
    return run_worker(cmd, f"{impl} {mode}")


def _torch_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs="+", type=int, default=[2, 512, 97, 97], metavar="N",
                        help="value shape B C H W, or B C T H W for clips; query/key have C/8 channels "
                             "(default: 2 512 97 97, a 769 crop at OS 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="the implementations run interleaved this many times; each time is the median over "
                             "the rounds, each speed-up the median of the rounds' ratios (default 3)")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--json", help="also write all numbers to this file")
    parser.add_argument("--worker", choices=IMPLS + ("peak",), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("fwd", "fwd+bwd"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_json_option(parser, args.json)
    if len(args.shape) not in (4, 5) or min(args.shape) < 1 or args.shape[1] < 8:
        parser.error(f"--shape must be B C H W or B C T H W, positive, C at least 8; got {args.shape}")
    if args.worker == "peak":
        print(json.dumps(fma_peak_gflops()))
        return 0
    if args.worker:
        print(json.dumps(_worker(args.worker, args.mode, tuple(args.shape), args.warmup, args.repeat)))
        return 0

    impls = [i for i in args.impls if not i.startswith("torch") or _torch_available()]
    if len(impls) < len(args.impls):
        print("torch is not installed: PyTorch formulations skipped")
    if args.rounds < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--rounds and --repeat must be at least 1, --warmup at least 0")
    rounds = {}
    for round_ in range(args.rounds):
        for impl in impls:
            for mode in ("fwd", "fwd+bwd"):
                result = _run_worker(impl, mode, args)
                rounds.setdefault((impl, mode), []).append(result)
                if result:
                    print(f"  round {round_ + 1}/{args.rounds} {impl:17s} {mode:8s} {result['ms']:9.1f} ms  "
                          f"peak {result['peak_mb']:8.1f} MB", flush=True)
    rows = {key: r for key, r in ((key, combine_rounds(rs)) for key, rs in rounds.items()) if r}

    import numpy as np
    kernel_check = rows.get(("jittor-kernel", "fwd"), {}).get("check")
    for (impl, mode), r in rows.items():
        r["check_max_abs_diff_vs_kernel"] = (float(np.abs(np.array(r["check"]) - np.array(kernel_check)).max())
                                             if kernel_check is not None else None)
    B, C, *rest = args.shape
    T, H, W = rest if len(rest) == 3 else [1, *rest]
    from models.complexity import cca_flops  # here: the workers must not import Jittor with it
    flops = sum(cca_flops(B, C // 8, C, H, W, T).values())
    flops = {"fwd": flops, "fwd+bwd": 3 * flops}  # the backward pass: two products per forward product
    for (impl, mode), r in rows.items():
        r["gflops_per_s"] = flops[mode] / (r["ms"] / 1000) / 1e9
    peak = run_worker([sys.executable, os.path.abspath(__file__), "--worker", "peak"], "FMA peak")
    print(f"\nCriss-cross attention, value [B,C,{'T,' if len(rest) == 3 else ''}H,W] = {args.shape}, "
          f"query/key {C // 8} channels, float32, "
          f"median of {args.repeat} after {args.warmup} warm-up, median of {args.rounds} interleaved rounds")
    print(f"{'implementation':18s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'peak fwd MB':>12s} {'peak f+b MB':>12s}"
          f" {'kernel speed-up f / f+b':>24s} {'same output':>12s} {'f+b GFLOP/s':>9s}")
    kernel = {m: rows.get(("jittor-kernel", m)) for m in ("fwd", "fwd+bwd")}
    for impl in impls:
        f, fb = rows.get((impl, "fwd")), rows.get((impl, "fwd+bwd"))
        if not f or not fb:
            continue
        if kernel["fwd"] and kernel["fwd+bwd"]:
            f["speedup_of_kernel"] = median_ratio(f, kernel["fwd"])
            fb["speedup_of_kernel"] = median_ratio(fb, kernel["fwd+bwd"])
            speed = f"{f['speedup_of_kernel']:.2f}x / {fb['speedup_of_kernel']:.2f}x"
        else:
            speed = "-"
        same = f"{f['check_max_abs_diff_vs_kernel']:.1e}" if f["check_max_abs_diff_vs_kernel"] is not None else "-"
        print(f"{impl:18s} {f['ms']:9.1f} {fb['ms']:11.1f} {f['peak_mb']:12.1f} {fb['peak_mb']:12.1f} {speed:>24s} {same:>12s}"
              f" {fb['gflops_per_s']:9.1f}")
    print(f"FLOPs: {flops['fwd'] / 1e9:.2f} G forward, {flops['fwd+bwd'] / 1e9:.2f} G forward+backward "
          f"(models.complexity.cca_flops; the backward pass counts two products per forward product)")
    if peak:
        print(f"this machine's float32 FMA peak, measured: {peak['gflops']:.0f} GFLOP/s on {peak['threads']} threads "
              f"(independent {peak['lanes']}-lane multiply-adds, bench_common.fma_peak_gflops)")
        kernel_fb = rows.get(("jittor-kernel", "fwd+bwd"))
        if kernel_fb:
            print(f"jittor-kernel forward+backward: {kernel_fb['gflops_per_s']:.1f} GFLOP/s = "
                  f"{100 * kernel_fb['gflops_per_s'] / peak['gflops']:.0f}% of that peak")
            if kernel_fb["gflops_per_s"] > peak["gflops"]:
                print("warning: the op ran faster than the measured peak, so that peak is wrong "
                      "(bench_common.fma_peak_gflops)", file=sys.stderr)

    if args.json:
        info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "shape": args.shape, "warmup": args.warmup, "repeat": args.repeat, "rounds": args.rounds,
                "load_average": os.getloadavg(),
                "machine": cpu_model(), "cpu_count": os.cpu_count(), "flops": flops, "fma_peak": peak,
                "results": [{k: v for k, v in r.items() if k != "check"} for r in rows.values()]}
        write_record(args.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
