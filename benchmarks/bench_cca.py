"""Time criss-cross attention: our kernel against the plain-Jittor reference and,
when torch is installed, the two PyTorch formulations, in one run.

What is timed is the attention itself, from query/key [B, C/8, H, W] and value
[B, C, H, W] to the aggregated output (energies, softmax over the H+W-1
positions, weighted sum), forward and forward+backward (gradients of all three
inputs). The 1x1 convolutions around it are the same for every implementation
and left out.

* jittor-kernel     models.cca: our C++/OpenMP (or CUDA) kernels
* jittor-reference  models.cca impl="reference": Jittor matmuls, -inf diagonal
* torch-bmm         the official CCNet pure-python formulation (bmm, -inf diagonal)
* torch-einsum      the mmcv formulation (einsum, -inf diagonal)

Each implementation and mode runs in its own subprocess: time is the median
of --repeat runs after --warmup runs (with jt.sync_all(True) around Jittor's
lazy execution); peak memory is the process's peak resident set (VmHWM) minus
its resident set once the inputs exist, so it counts everything the
computation allocates, caches included. A small-shape output of each is
compared against the kernel's to make sure all four compute the same function.

    python benchmarks/bench_cca.py                       # [2, 512, 97, 97] on CPU
    python benchmarks/bench_cca.py --shape 1 512 129 257 --json out.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ("jittor-kernel", "jittor-reference", "torch-bmm", "torch-einsum")
CHECK_SHAPE = (2, 16, 5, 7)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def write_json(path: str, record: dict) -> None:
    """Write a benchmark record atomically (temp file, then rename) and say where."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=1)
    os.replace(tmp, path)
    print(f"wrote {path}")


def _inputs(shape, seed=0):
    import numpy as np
    B, C, H, W = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, C // 8, H, W)).astype(np.float32)
    k = rng.standard_normal((B, C // 8, H, W)).astype(np.float32)
    v = rng.standard_normal((B, C, H, W)).astype(np.float32)
    return q, k, v


# -- the PyTorch formulations, written from their formulas ----------------------

def torch_bmm(q, k, v):
    """Official CCNet pure-python formulation: batched matmuls per column and per row."""
    import torch
    B, _, H, W = q.shape
    neg_inf_diag = torch.diag(torch.full((H,), float("-inf"), dtype=q.dtype, device=q.device)).unsqueeze(0)
    q_col = q.permute(0, 3, 2, 1).reshape(B * W, H, -1)          # [(b x), y, c]
    k_col = k.permute(0, 3, 1, 2).reshape(B * W, -1, H)          # [(b x), c, j]
    q_row = q.permute(0, 2, 3, 1).reshape(B * H, W, -1)          # [(b y), x, c]
    k_row = k.permute(0, 2, 1, 3).reshape(B * H, -1, W)          # [(b y), c, i]
    e_col = (torch.bmm(q_col, k_col) + neg_inf_diag).view(B, W, H, H).permute(0, 2, 1, 3)  # [b, y, x, j]
    e_row = torch.bmm(q_row, k_row).view(B, H, W, W)                                       # [b, y, x, i]
    attention = torch.softmax(torch.cat([e_col, e_row], 3), dim=3)
    a_col = attention[..., :H].permute(0, 2, 3, 1).reshape(B * W, H, H)   # [(b x), j, y]
    a_row = attention[..., H:].permute(0, 1, 3, 2).reshape(B * H, W, W)   # [(b y), i, x]
    v_col = v.permute(0, 3, 1, 2).reshape(B * W, -1, H)                   # [(b x), c, j]
    v_row = v.permute(0, 2, 1, 3).reshape(B * H, -1, W)                   # [(b y), c, i]
    out_col = torch.bmm(v_col, a_col).view(B, W, -1, H).permute(0, 2, 3, 1)
    out_row = torch.bmm(v_row, a_row).view(B, H, -1, W).permute(0, 2, 1, 3)
    return out_col + out_row


def torch_einsum(q, k, v):
    """mmcv formulation: einsum energies, -inf on the column's self entry."""
    import torch
    B, _, H, W = q.shape
    neg_inf_diag = torch.diag(torch.full((H,), float("-inf"), dtype=q.dtype, device=q.device))
    e_col = torch.einsum("bchw,bciw->bwhi", q, k) + neg_inf_diag   # [b, x, y, j]
    e_col = e_col.transpose(1, 2)                                   # [b, y, x, j]
    e_row = torch.einsum("bchw,bchj->bhwj", q, k)                   # [b, y, x, i]
    attention = torch.softmax(torch.cat([e_col, e_row], dim=-1), dim=-1)
    return (torch.einsum("bciw,bhwi->bchw", v, attention[..., :H])
            + torch.einsum("bchj,bhwj->bchw", v, attention[..., H:]))


# -- one implementation, in a subprocess ------------------------------------------

def _worker(impl: str, mode: str, shape, warmup: int, repeat: int) -> dict:
    sys.path.insert(0, ROOT)
    import numpy as np
    if impl.startswith("jittor"):
        import jittor_env  # noqa: F401
        import jittor as jt
        from models.cca import criss_cross_attention
        jimpl = "kernel" if impl == "jittor-kernel" else "reference"

        def make(arrays):
            return [jt.array(a) for a in arrays]

        def run(tensors, backward):
            q, k, v = tensors
            out = criss_cross_attention(q, k, v, impl=jimpl)
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
        fn = torch_bmm if impl == "torch-bmm" else torch_einsum

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

    check = to_numpy(run(make(_inputs(CHECK_SHAPE, seed=1)), False))
    tensors = make(_inputs(shape))
    base_kb = _rss_kb("VmRSS")
    backward = mode == "fwd+bwd"
    for _ in range(warmup):
        run(tensors, backward)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(tensors, backward)
        times.append(time.perf_counter() - start)
    return {"impl": impl, "mode": mode, "device": device, "version": version,
            "ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times],
            "peak_mb": (_rss_kb("VmHWM") - base_kb) / 1024, "check": check.tolist()}


def _run_worker(impl, mode, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--mode", mode,
           "--shape", *map(str, args.shape), "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    for line in result.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    print(f"{impl} {mode} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
    return None


def _torch_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=4, type=int, default=[2, 512, 97, 97], metavar=("B", "C", "H", "W"),
                        help="value shape; query/key have C/8 channels (default: 2 512 97 97, a 769 crop at OS 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--json", help="also write all numbers to this file")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("fwd", "fwd+bwd"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.mode, tuple(args.shape), args.warmup, args.repeat)))
        return 0

    impls = [i for i in args.impls if not i.startswith("torch") or _torch_available()]
    if len(impls) < len(args.impls):
        print("torch is not installed: PyTorch formulations skipped")
    rows = {}
    for impl in impls:
        for mode in ("fwd", "fwd+bwd"):
            result = _run_worker(impl, mode, args)
            if result:
                rows[(impl, mode)] = result
                print(f"  {impl:17s} {mode:8s} {result['ms']:9.1f} ms  peak {result['peak_mb']:8.1f} MB", flush=True)

    import numpy as np
    kernel_check = rows.get(("jittor-kernel", "fwd"), {}).get("check")
    for (impl, mode), r in rows.items():
        r["check_max_abs_diff_vs_kernel"] = (float(np.abs(np.array(r["check"]) - np.array(kernel_check)).max())
                                             if kernel_check is not None else None)
    B, C, H, W = args.shape
    print(f"\nCriss-cross attention, value [B,C,H,W] = {args.shape}, query/key {C // 8} channels, float32, "
          f"median of {args.repeat} after {args.warmup} warm-up")
    print(f"{'implementation':18s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'peak fwd MB':>12s} {'peak f+b MB':>12s}"
          f" {'kernel speed-up f / f+b':>24s} {'same output':>12s}")
    kernel = {m: rows.get(("jittor-kernel", m)) for m in ("fwd", "fwd+bwd")}
    for impl in impls:
        f, fb = rows.get((impl, "fwd")), rows.get((impl, "fwd+bwd"))
        if not f or not fb:
            continue
        speed = (f"{f['ms'] / kernel['fwd']['ms']:.2f}x / {fb['ms'] / kernel['fwd+bwd']['ms']:.2f}x"
                 if kernel["fwd"] and kernel["fwd+bwd"] else "-")
        same = f"{f['check_max_abs_diff_vs_kernel']:.1e}" if f["check_max_abs_diff_vs_kernel"] is not None else "-"
        print(f"{impl:18s} {f['ms']:9.1f} {fb['ms']:11.1f} {f['peak_mb']:12.1f} {fb['peak_mb']:12.1f} {speed:>24s} {same:>12s}")

    if args.json:
        info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "shape": args.shape, "warmup": args.warmup, "repeat": args.repeat,
                "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "results": [{k: v for k, v in r.items() if k != "check"} for r in rows.values()]}
        write_json(args.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
