"""Check and time the criss-cross attention CUDA kernels on a GPU, outside Jittor.

The kernels of models/ops/cca_cuda.cuh are built with nvcc into a shared library
(models/ops/cca_cuda_abi.cu, the same launchers Jittor calls) for this GPU's
architecture; the earlier kernels (benchmarks/cca_cuda_naive.cuh, one thread per
output element) are compiled with CuPy (NVRTC). Both run on PyTorch's CUDA
tensors, so the script needs torch, CuPy and nvcc, not Jittor:

1. Correctness: forward and backward of ca_weight and ca_map against a float64
   PyTorch reference of the official layout (autograd through gathers), on
   fresh random inputs at several shapes (H != W, H = 1, W = 1, a 769 crop
   [2, 512, 97, 97] and a whole Cityscapes image [1, 512, 129, 257]), in
   float32 and float16, for both kernel sets. Every output is filled with NaN
   before the launch, so an element a kernel fails to write shows up as an error.
2. The card: its datasheet peaks (bench_common.GPU_PEAKS) and what it reaches
   here: a 1 GiB device copy (bandwidth) and a float32 cuBLAS GEMM without TF32.
3. Each product alone (the forward's two and the backward's four), new kernels
   against the earlier ones, float32 and float16: time, GB/s over the least
   bytes the product must move and TFLOP/s (bench_common.cca_products), each
   also as a percentage of the card's peaks.
4. The attention (energies, softmax, aggregation) forward and forward+backward,
   both kernel sets against the two PyTorch formulations of
   benchmarks/bench_cca.py (official bmm, mmcv einsum), with CUDA events
   (warm-up, median of --repeat), and peak memory from
   torch.cuda.max_memory_allocated (all tensors come from PyTorch's allocator).
   impl="reference" runs inside Jittor: benchmarks/gpu_jittor_check.py op times it.
5. Jittor's own CUDA backend: tries `import jittor; jt.flags.use_cuda = 1`
   and a small op in a subprocess, and records what happens.

It prints a short table and writes everything to
benchmarks/results/gpu_check_<gpu>_<date>.json.

    python benchmarks/gpu_check.py                # on a machine with an NVIDIA GPU, torch and cupy
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile

from bench_common import (CCA_CUDA_ABI, CCA_DTYPES, ROOT, cca_products, find_nvcc, gpu_peaks, load_cca_cuda_abi,
                          torch_bmm, torch_einsum, write_record)

CHECK_SHAPES = [  # value shape [B, C, H, W]; query/key have max(C // 8, 1) channels
    (2, 24, 13, 29), (1, 16, 1, 33), (1, 16, 31, 1), (2, 512, 97, 97), (1, 512, 129, 257)]
TIME_SHAPES = [(2, 512, 97, 97), (1, 512, 129, 257)]
TOLERANCE = {"float32": 1e-5, "float16": 1e-2}
THREADS = 256


# -- float64 reference in the official layout -------------------------------------

def col_index(H: int, device):
    """j[t, y]: the row of column slot t for pixel row y (t < y -> t, else t + 1)."""
    import torch
    t = torch.arange(H - 1, device=device)[:, None]
    y = torch.arange(H, device=device)[None, :]
    return t + (t >= y).long()  # [H-1, H]


def ref_ca_weight(q, k):
    import torch
    B, C, H, W = q.shape
    row = torch.einsum("bcyx,bcyi->biyx", q, k)
    if H == 1:
        return row
    j = col_index(H, q.device)                                   # [H-1, H]
    k_col = k[:, :, j, :]                                        # [B, C, H-1, H, W]
    col = torch.einsum("bcyx,bctyx->btyx", q, k_col)
    return torch.cat([row, col], dim=1)


def ref_ca_map(a, v):
    import torch
    B, C, H, W = v.shape
    out = torch.einsum("biyx,bcyi->bcyx", a[:, :W], v)
    if H > 1:
        j = col_index(H, v.device)
        out = out + torch.einsum("btyx,bctyx->bcyx", a[:, W:], v[:, :, j, :])
    return out


# -- the kernels ------------------------------------------------------------------

class _Launches:
    """weight / map on PyTorch tensors; subclasses launch."""

    def weight(self, p, q, poison=False):
        import torch
        B, C, H, W = p.shape
        out = torch.empty((B, H + W - 1, H, W), dtype=p.dtype, device=p.device)
        if poison:
            out.fill_(float("nan"))
        self._weight(out, p.contiguous(), q.contiguous(), B, C, H, W)
        return out

    def map(self, a, v, transposed=False, poison=False):
        import torch
        B, C, H, W = v.shape
        out = torch.empty_like(v)
        if poison:
            out.fill_(float("nan"))
        self._map(out, a.contiguous(), v.contiguous(), transposed, B, C, H, W)
        return out


def build_kernels(build_dir: str, arch: str | None = None) -> str:
    """models/ops/cca_cuda_abi.cu built by nvcc for ``arch`` (default: this GPU's, e.g. sm_90); the library's
    path. The CUDA runtime is linked statically, so the library needs only the driver."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("no nvcc found (PATH, $CUDA_HOME, /usr/local/cuda)")
    if arch is None:
        import torch
        arch = "sm_%d%d" % torch.cuda.get_device_capability()
    library = os.path.join(build_dir, "cca_cuda_abi.so")
    cmd = [nvcc, "-std=c++14", "-O3", f"-arch={arch}", "-shared", "-Xcompiler", "-fPIC",
           CCA_CUDA_ABI, "-o", library]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return library


class Kernels(_Launches):
    """models/ops/cca_cuda.cuh through a library built from cca_cuda_abi.cu (by build_kernels; the
    tests give it the CPU emulation's build and CPU tensors)."""

    def __init__(self, library: str):
        self.lib = load_cca_cuda_abi(library)

    @staticmethod
    def _stream(t):
        import torch
        return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else None

    def _check(self, code, what):
        if code != 0:
            raise RuntimeError(f"{what}: CUDA error {code}")

    def _weight(self, out, p, q, B, C, H, W):
        dtype = CCA_DTYPES[str(out.dtype).replace("torch.", "")]
        self._check(self.lib.cca_cuda_weight(dtype, p.data_ptr(), q.data_ptr(), out.data_ptr(), B, C, H, W,
                                             self._stream(out)), "weight")

    def _map(self, out, a, v, transposed, B, C, H, W):
        dtype = CCA_DTYPES[str(out.dtype).replace("torch.", "")]
        self._check(self.lib.cca_cuda_map(dtype, int(transposed), a.data_ptr(), v.data_ptr(), out.data_ptr(),
                                          B, C, H, W, self._stream(out)), "map")


class NaiveKernels(_Launches):
    """benchmarks/cca_cuda_naive.cuh compiled by NVRTC (one thread per output element)."""

    NAMES = {("weight", "float32"): "cca_cuda_naive::cca_weight_kernel<float>",
             ("weight", "float16"): "cca_cuda_naive::cca_weight_kernel<__half>",
             ("map", "float32"): "cca_cuda_naive::cca_map_kernel<float, false>",
             ("map", "float16"): "cca_cuda_naive::cca_map_kernel<__half, false>",
             ("mapT", "float32"): "cca_cuda_naive::cca_map_kernel<float, true>",
             ("mapT", "float16"): "cca_cuda_naive::cca_map_kernel<__half, true>"}

    def __init__(self):
        import cupy
        self.cupy = cupy
        with open(os.path.join(ROOT, "benchmarks", "cca_cuda_naive.cuh")) as f:
            source = f.read()
        self.module = cupy.RawModule(code=source, options=("-std=c++14",),
                                     name_expressions=list(self.NAMES.values()))

    def _launch(self, which, out, a, b, B, C, H, W):
        import numpy as np
        dtype = str(out.dtype).replace("torch.", "")
        kernel = self.module.get_function(self.NAMES[(which, dtype)])
        grid = min((out.numel() + THREADS - 1) // THREADS, 65535 * 32)
        args = [self.cupy.from_dlpack(t) for t in (a, b, out)]
        kernel((grid,), (THREADS,), (*args, np.int32(B), np.int32(C), np.int32(H), np.int32(W)))

    def _weight(self, out, p, q, B, C, H, W):
        self._launch("weight", out, p, q, B, C, H, W)

    def _map(self, out, a, v, transposed, B, C, H, W):
        self._launch("mapT" if transposed else "map", out, a, v, B, C, H, W)


def make_autograd(kernels):
    """ca_weight / ca_map as torch autograd Functions over our kernels (backward as in models/ops/cca.py)."""
    import torch

    class CAWeight(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k):
            ctx.save_for_backward(q, k)
            return kernels.weight(q, k)

        @staticmethod
        def backward(ctx, de):
            q, k = ctx.saved_tensors
            de = de.contiguous()
            return kernels.map(de, k), kernels.map(de, q, transposed=True)

    class CAMap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, v):
            ctx.save_for_backward(a, v)
            return kernels.map(a, v)

        @staticmethod
        def backward(ctx, do):
            a, v = ctx.saved_tensors
            do = do.contiguous()
            return kernels.weight(do, v), kernels.map(a, do, transposed=True)

    def attention(q, k, v):
        return CAMap.apply(torch.softmax(CAWeight.apply(q, k), dim=1), v)

    return attention


# -- checks -------------------------------------------------------------------------

def rel_error(got, want) -> float:
    got, want = got.detach().double(), want.detach().double()
    if not bool(got.isfinite().all()):
        return float("inf")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def check_correctness(kernel_sets: dict, device) -> list[dict]:
    import torch
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for shape in CHECK_SHAPES:
        B, C, H, W = shape
        Cq = max(C // 8, 1)
        q64 = torch.randn((B, Cq, H, W), generator=gen, dtype=torch.float64).to(device).requires_grad_()
        k64 = torch.randn((B, Cq, H, W), generator=gen, dtype=torch.float64).to(device).requires_grad_()
        v64 = torch.randn((B, C, H, W), generator=gen, dtype=torch.float64).to(device).requires_grad_()
        a64 = torch.softmax(torch.randn((B, H + W - 1, H, W), generator=gen, dtype=torch.float64), 1).to(device)
        a64.requires_grad_()
        de = torch.randn((B, H + W - 1, H, W), generator=gen, dtype=torch.float64).to(device)
        do = torch.randn((B, C, H, W), generator=gen, dtype=torch.float64).to(device)
        e_ref = ref_ca_weight(q64, k64)
        dq_ref, dk_ref = torch.autograd.grad(e_ref, (q64, k64), de)
        o_ref = ref_ca_map(a64, v64)
        da_ref, dv_ref = torch.autograd.grad(o_ref, (a64, v64), do)
        for dtype in ("float32", "float16"):
            t = getattr(torch, dtype)
            q, k, v, a, g_e, g_o = (x.detach().to(t) for x in (q64, k64, v64, a64, de, do))
            # Half inputs are rounded: compare with the reference on the same rounded inputs.
            if dtype == "float16":
                qd, kd, vd, ad = (x.double().requires_grad_() for x in (q, k, v, a))
                e_r = ref_ca_weight(qd, kd)
                dq_r, dk_r = torch.autograd.grad(e_r, (qd, kd), g_e.double())
                o_r = ref_ca_map(ad, vd)
                da_r, dv_r = torch.autograd.grad(o_r, (ad, vd), g_o.double())
            else:
                e_r, dq_r, dk_r, o_r, da_r, dv_r = e_ref, dq_ref, dk_ref, o_ref, da_ref, dv_ref
            for impl, kernels in kernel_sets.items():
                errors = {
                    "ca_weight fwd": rel_error(kernels.weight(q, k, poison=True), e_r),
                    "ca_weight dq": rel_error(kernels.map(g_e, k, poison=True), dq_r),
                    "ca_weight dk": rel_error(kernels.map(g_e, q, transposed=True, poison=True), dk_r),
                    "ca_map fwd": rel_error(kernels.map(a, v, poison=True), o_r),
                    "ca_map dA": rel_error(kernels.weight(g_o, v, poison=True), da_r),
                    "ca_map dv": rel_error(kernels.map(a, g_o, transposed=True, poison=True), dv_r),
                }
                worst = max(errors.values())
                rows.append({"impl": impl, "shape": list(shape), "query_channels": Cq, "dtype": dtype,
                             "errors": errors, "max_rel_error": worst, "ok": worst < TOLERANCE[dtype]})
    return rows


def time_cuda(fn, warmup, repeat):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def card(device, warmup, repeat) -> dict:
    """The GPU's datasheet peaks and what a device copy and a float32 GEMM reach on it."""
    import torch
    name = torch.cuda.get_device_name(device)
    x = torch.empty(2 ** 28, dtype=torch.float32, device=device)  # 1 GiB
    y = torch.empty_like(x)
    copy_ms = time_cuda(lambda: y.copy_(x), warmup, repeat)
    x = y = None  # noqa: F841  (free the 2 GiB before the GEMM)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192
    a, b = (torch.randn((n, n), device=device) for _ in range(2))
    gemm_ms = time_cuda(lambda: a @ b, 3, max(repeat // 5, 3))
    torch.backends.cuda.matmul.allow_tf32 = tf32
    peaks = gpu_peaks(name)
    return {"name": name, "datasheet": peaks,
            "copy_gb_s": 2 * 2 ** 30 / (copy_ms / 1e3) / 1e9,
            "sgemm_tflop_s": 2 * n ** 3 / (gemm_ms / 1e3) / 1e12}


def time_products(kernel_sets: dict, device, peaks, warmup, repeat) -> list[dict]:
    """Each launch of the op alone: ms, GB/s over its least traffic, TFLOP/s, and their % of the peaks."""
    import torch
    rows = []
    for shape in TIME_SHAPES:
        B, C, H, W = shape
        Cq = C // 8
        products = cca_products(B, Cq, C, H, W)
        for dtype in ("float32", "float16"):
            t = getattr(torch, dtype)
            gen = torch.Generator(device="cpu").manual_seed(2)
            q, k = (torch.randn((B, Cq, H, W), generator=gen).to(device, t) for _ in range(2))
            v, g_o = (torch.randn((B, C, H, W), generator=gen).to(device, t) for _ in range(2))
            a, g_e = (torch.softmax(torch.randn((B, H + W - 1, H, W), generator=gen), 1).to(device, t)
                      for _ in range(2))
            for impl, kernels in kernel_sets.items():
                calls = {"weight": lambda: kernels.weight(q, k), "map": lambda: kernels.map(a, v),
                         "weight dq": lambda: kernels.map(g_e, k), "weight dk": lambda: kernels.map(g_e, q, True),
                         "map da": lambda: kernels.weight(g_o, v), "map dv": lambda: kernels.map(a, g_o, True)}
                for name, call in calls.items():
                    ms = time_cuda(call, warmup, repeat)
                    gb_s = products[name]["elements"] * t.itemsize / (ms / 1e3) / 1e9
                    tflop_s = products[name]["flops"] / (ms / 1e3) / 1e12
                    row = {"shape": list(shape), "dtype": dtype, "impl": impl, "product": name, "ms": ms,
                           "gb_s": gb_s, "tflop_s": tflop_s}
                    if peaks:
                        row["pct_bandwidth"] = 100 * gb_s / peaks["gb_s"]
                        row["pct_fp32_peak"] = 100 * tflop_s / peaks["fp32_tflop_s"]
                    rows.append(row)
    return rows


def benchmark(kernel_sets: dict, device, warmup, repeat) -> list[dict]:
    import torch
    impls = {name: make_autograd(kernels) for name, kernels in kernel_sets.items()}
    impls.update({"torch-bmm": torch_bmm, "torch-einsum": torch_einsum})
    rows = []
    for shape in TIME_SHAPES:
        B, C, H, W = shape
        for dtype in ("float32", "float16"):
            t = getattr(torch, dtype)
            gen = torch.Generator(device="cpu").manual_seed(1)
            q, k = (torch.randn((B, C // 8, H, W), generator=gen).to(device, t).requires_grad_() for _ in range(2))
            v = torch.randn((B, C, H, W), generator=gen).to(device, t).requires_grad_()
            for name, fn in impls.items():
                row = {"shape": list(shape), "dtype": dtype, "impl": name}
                for mode in ("fwd", "fwd+bwd"):
                    def step():
                        out = fn(q, k, v)
                        if mode == "fwd+bwd":
                            torch.autograd.grad(out.sum(), (q, k, v))
                    try:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                        base = torch.cuda.memory_allocated()
                        row[mode + "_ms"] = time_cuda(step, warmup, repeat)
                        row[mode + "_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
                    except RuntimeError as err:  # e.g. out of memory
                        row[mode + "_error"] = str(err)[:300]
                rows.append(row)
    return rows


def try_jittor_cuda() -> dict:
    """What Jittor 1.3.11's own CUDA backend does on this machine."""
    code = ("import jittor as jt; jt.flags.use_cuda = 1; x = jt.random((64, 64)); "
            "print('jittor-cuda-ok', float((x @ x).sum().numpy()))")
    attempts = {"default": {}, "no-downloads": {"use_cutt": "0", "use_cutlass": "0", "use_nccl": "0", "use_mkl": "0"}}
    results = {}
    for name, extra in attempts.items():
        env = dict(os.environ, **extra)
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
            text = proc.stdout + proc.stderr
            results[name] = {"env": extra, "returncode": proc.returncode, "ok": "jittor-cuda-ok" in proc.stdout,
                             "tail": text[-3000:]}
        except (subprocess.TimeoutExpired, OSError) as err:
            results[name] = {"env": extra, "ok": False, "tail": repr(err)}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--skip-jittor", action="store_true", help="don't try Jittor's CUDA backend")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_check_<gpu>_<date>.json)")
    args = parser.parse_args(argv)
    try:
        import torch
        import cupy  # noqa: F401
    except ImportError as err:
        print(f"gpu_check needs torch and cupy: {err}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check needs an NVIDIA GPU: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)
    kernel_sets = {}
    with tempfile.TemporaryDirectory() as build_dir:
        try:
            kernel_sets["kernel"] = Kernels(build_kernels(build_dir))
        except RuntimeError as err:
            print(f"gpu_check: the kernels of models/ops/cca_cuda.cuh could not be built: {err}", file=sys.stderr)
        kernel_sets["kernel-naive"] = NaiveKernels()
        checks = check_correctness(kernel_sets, device)
        peaks_here = card(device, args.warmup, args.repeat)
        products = time_products(kernel_sets, device, peaks_here["datasheet"], args.warmup, args.repeat)
        timings = benchmark(kernel_sets, device, args.warmup, args.repeat)
    jittor = {} if args.skip_jittor else try_jittor_cuda()

    print(f"\n{gpu}, CUDA {torch.version.cuda}, torch {torch.__version__}")
    sheet = peaks_here["datasheet"]
    sheet_text = f"{sheet['gb_s']:.0f} GB/s, {sheet['fp32_tflop_s']:.1f} float32 TFLOP/s" if sheet else "not in GPU_PEAKS"
    print(f"datasheet: {sheet_text}; measured: copy {peaks_here['copy_gb_s']:.0f} GB/s, "
          f"cuBLAS SGEMM {peaks_here['sgemm_tflop_s']:.1f} TFLOP/s")
    print(f"{'impl':13s} {'shape':22s} {'dtype':8s} {'max rel err':>12s}  ok")
    for r in checks:
        print(f"{r['impl']:13s} {str(r['shape']):22s} {r['dtype']:8s} {r['max_rel_error']:12.2e}  "
              f"{'yes' if r['ok'] else 'NO'}")
    print(f"\n{'impl':13s} {'shape':22s} {'dtype':8s} {'product':10s} {'ms':>8s} {'GB/s':>7s} {'TFLOP/s':>8s} "
          f"{'% BW':>5s} {'% fp32':>6s}")
    for r in products:
        print(f"{r['impl']:13s} {str(r['shape']):22s} {r['dtype']:8s} {r['product']:10s} {r['ms']:8.3f} "
              f"{r['gb_s']:7.0f} {r['tflop_s']:8.2f} {r.get('pct_bandwidth', float('nan')):5.0f} "
              f"{r.get('pct_fp32_peak', float('nan')):6.0f}")
    print(f"\n{'shape':22s} {'dtype':8s} {'impl':13s} {'fwd ms':>8s} {'f+b ms':>8s} {'peak f+b MB':>12s} "
          f"{'new kernels faster f+b':>23s}")
    for r in timings:
        ours = next((x for x in timings if x["shape"] == r["shape"] and x["dtype"] == r["dtype"]
                     and x["impl"] == "kernel"), {})
        speed = (f"{r['fwd+bwd_ms'] / ours['fwd+bwd_ms']:.2f}x" if "fwd+bwd_ms" in r and "fwd+bwd_ms" in ours else "-")
        print(f"{str(r['shape']):22s} {r['dtype']:8s} {r['impl']:13s} {r.get('fwd_ms', float('nan')):8.2f} "
              f"{r.get('fwd+bwd_ms', float('nan')):8.2f} {r.get('fwd+bwd_peak_mb', float('nan')):12.1f} {speed:>23s}")
    for name, r in jittor.items():
        print(f"jittor CUDA backend ({name}): {'works' if r['ok'] else 'fails'}")

    date = datetime.date.today().isoformat()
    out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                   f"gpu_check_{re.sub(r'[^A-Za-z0-9]+', '_', gpu)}_{date}.json")
    record = {"gpu": gpu, "date": date, "cuda": torch.version.cuda, "torch": torch.__version__,
              "card": peaks_here, "checks": checks, "products": products, "timings": timings,
              "jittor_cuda": jittor}
    write_record(out, record)
    return 0 if "kernel" in kernel_sets and all(r["ok"] for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
