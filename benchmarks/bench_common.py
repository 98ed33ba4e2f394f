"""Helpers the benchmark scripts share (a module, not a script): paths, memory, records, the PyTorch formulations.

Importing it puts the repository root on ``sys.path``, so the scripts in
``benchmarks/`` can import the project's library.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils.fileio import OutputError, check_output_file, write_json  # noqa: E402  (after the path)

__all__ = ["ROOT", "NUM_CLASSES", "rss_kb", "jittor_peak_bytes", "use_device", "measure_model", "rel_error", "cpu_model", "write_record", "run_worker", "cca_inputs", "torch_bmm",
           "torch_einsum", "torch_bmm_3d", "torch_einsum_3d", "fma_peak_gflops", "combine_rounds", "median_ratio", "time_runs", "CCA_CUDA_ABI",
           "CCA_DTYPES", "find_nvcc", "load_cca_cuda_abi", "cca_products", "GPU_PEAKS", "gpu_peaks"]


def rss_kb(field: str, pid="self") -> int:
    """A field of ``/proc/<pid>/status`` in kB: ``VmRSS`` (resident now) or ``VmHWM`` (peak resident); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def jittor_peak_bytes(run: Callable[[], object]) -> int:
    """Jittor's peak of live Var memory (``profile_memory_enable``) up to the end of ``run()``, in bytes.

    ``run`` must finish its work (synchronise) itself. The profiler keeps its
    maximum for the life of the process, so the peak is the process's so far;
    memory the allocator caches but no Var holds is not counted.
    """
    import jittor as jt
    with jt.flag_scope(profile_memory_enable=1):
        run()
        return int(jt.get_max_memory_info().split("[!@#div1!@#]")[0])  # its fields' separator


#: The class count of the models the benchmarks build (Cityscapes').
NUM_CLASSES = 19


def use_device(device: str) -> None:
    """Run Jittor on ``device`` (``"cpu"`` or ``"cuda"``); ValueError when CUDA is asked for and absent."""
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    if device == "cuda" and not jt.has_cuda:
        raise ValueError("--device cuda: Jittor found no CUDA GPU on this machine; run with --device cpu")
    jt.flags.use_cuda = 1 if device == "cuda" else 0


def measure_model(model_name: str, mode: str, size, batch: int, warmup: int, repeat: int, device: str,
                  amp: bool = False) -> dict:
    """Time ``mode`` (``"infer"`` or ``"train"``) of ``model_name`` in this process and read its peak memory.

    Call it in a fresh process (the peaks are the process's). ``amp``: the
    training step in mixed precision, as ``train.py --amp`` runs it (float16
    convolutions, the loss scaler); the result then also gives the scaler's
    skipped steps and final scale.
    """
    import numpy as np
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    from utils.jittor_fixes import materialize
    from engine.train_loop import train_step
    from engine.optim import build_optimizer
    from models import build_model
    from models.losses import SegmentationLoss
    from models.precision import set_float16
    from engine.amp import GradScaler
    use_device(device)
    set_float16(amp)
    scaler = GradScaler() if amp and mode == "train" else None
    jt.set_seed(0)
    model = build_model(model_name, NUM_CLASSES)
    materialize(model.state_dict().values())
    rng = np.random.default_rng(0)
    h, w = size
    x = jt.array(rng.standard_normal((batch, 3, h, w)).astype(np.float32))
    if mode == "infer":
        model.eval()

        def run():
            with jt.no_grad():
                model(x).sync()
            jt.sync_all(True)
    else:
        model.train()
        label = jt.array(rng.integers(0, NUM_CLASSES, (batch, h, w)).astype(np.int32))
        criterion = SegmentationLoss(NUM_CLASSES, align_corners=bool(model.align_corners))
        optimizer = build_optimizer(model, "sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)
        steps = iter(range(10 ** 9))

        def run():
            train_step(model, criterion, optimizer, x, label, lr=0.01, seed=next(steps), scaler=scaler)
            jt.sync_all(True)
    jt.sync_all(True)
    base_kb = rss_kb("VmRSS")
    times = time_runs(run, warmup, repeat, lambda: jt.sync_all(True))
    peak_kb = rss_kb("VmHWM")
    jt_peak = jittor_peak_bytes(run)
    return {"model": model_name, "mode": mode, "device": device, "size": [h, w], "batch": batch,
            "ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times],
            "peak_rss_mb": peak_kb / 1024 if device == "cpu" else None,
            "rss_at_start_mb": base_kb / 1024 if device == "cpu" else None,
            "peak_jittor_mb": jt_peak / 2 ** 20, "jittor": jt.__version__, "amp": amp,
            **({"amp_skipped_steps": scaler.skipped, "amp_scale": scaler.scale} if scaler is not None else {})}


def rel_error(got, want) -> float:
    """max |got - want| / max |want| in float64; inf when ``got`` is not finite or the shapes differ."""
    import numpy as np
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.isfinite(got).all():
        return float("inf")
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
    return float(np.abs(got - want).max() / scale) if got.size else 0.0


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (``/proc/cpuinfo``), for the records."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{fields['model name']} (family {fields['cpu family']}, model {fields['model']})"
    return fields["model name"]


_FMA_PEAK_SRC = r"""
// The widest vector the compiler targets natively (Jittor compiles with -march=native): a wider
// one would be split into halves and, with 12 chains, no longer fit the 16 AVX2 registers.
#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif
constexpr int kLanes = kBytes / (int)sizeof(float);
typedef float vec __attribute__((vector_size(kBytes)));
const long iters = 20000000;
double start = omp_get_wtime();
float sink = 0;
#pragma omp parallel reduction(+:sink)
{
  // 12 independent multiply-add chains: more than latency x FMA pipes, so the pipes never wait
  vec a[12], x = (vec){} + 1.000001f, y = (vec){} + 0.999999f;
  for (int r = 0; r < 12; ++r) a[r] = (vec){} + (float)r;
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int r = 0; r < 12; ++r) a[r] = a[r] * x + y;
  }
  for (int r = 1; r < 12; ++r) a[0] += a[r];
  sink += a[0][0];
}
double seconds = omp_get_wtime() - start;
out0_p[0] = (float)(omp_get_max_threads() * (double)iters * 12 * kLanes * 2 / seconds / 1e9);
out0_p[1] = (float)omp_get_max_threads();
out0_p[2] = sink;
out0_p[3] = (float)kLanes;
"""


def time_runs(run: Callable[[], object], warmup: int, repeat: int,
              sync: Callable[[], object] = lambda: None) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``run`` after ``warmup`` untimed ones.

    ``sync`` waits for the device (e.g. ``lambda: jt.sync_all(True)``) before
    each start and after each run, so that every time covers exactly one run.
    """
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return times


def fma_peak_gflops(runs: int = 3) -> dict:
    """This machine's float32 multiply-add peak, measured: every thread runs independent FMAs on the
    widest native vector (16 lanes with AVX-512, 8 with AVX2, 4 otherwise).

    Compiled by Jittor with the flags of the project's kernels; the best of
    ``runs`` (the first also brings the cores to their clock). Returns
    ``{"gflops": ..., "threads": ..., "lanes": ...}``.
    """
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    best, threads, lanes = 0.0, 0, 0
    for _ in range(runs):
        out = jt.code((4,), "float32", [], cpu_header="#include <omp.h>", cpu_src=_FMA_PEAK_SRC).numpy()
        best, threads, lanes = max(best, float(out[0])), int(out[1]), int(out[3])
    return {"gflops": best, "threads": threads, "lanes": lanes}


def check_json_option(parser, path: str | None) -> None:
    """Before any measuring: stop with ``parser.error`` if ``--json`` names a file that cannot be written."""
    if path:
        try:
            check_output_file(path, "--json")
        except OutputError as exc:
            parser.error(str(exc))


def write_record(path: str, record: dict) -> None:
    """Write a benchmark record atomically (the project's one writer) and say where."""
    write_json(path, record)
    print(f"wrote {path}")


def run_worker(cmd: list[str], what: str, retry_on_signal: bool = True) -> dict | None:
    """Run one measurement in its own process; its last stdout line that is a JSON object, or None on failure.

    A failure is reported with the worker's exit status (or the signal that
    killed it) and the end of its error output. A worker killed by a signal
    before it printed its result is run once more (the report says so): a
    crash of the JIT compiler or of an exiting process should not void a
    whole benchmark; a second crash, or an error exit, is a failure.
    """
    if "jittor" in sys.modules:  # its SIGCHLD handler would end this process when a worker crashes
        from utils.jittor_fixes import restore_sigchld
        restore_sigchld()
    result = subprocess.run(cmd, capture_output=True, text=True)
    for line in result.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    if result.returncode < 0:
        try:
            status = f"killed by {signal.Signals(-result.returncode).name}"
        except ValueError:
            status = f"killed by signal {-result.returncode}"
    else:
        status = f"exit status {result.returncode}"
    again = retry_on_signal and result.returncode < 0
    print(f"{what} failed ({status}){', running it once more' if again else ''}:\n{result.stderr[-2000:]}",
          file=sys.stderr)
    return run_worker(cmd, what, retry_on_signal=False) if again else None


def combine_rounds(results: list[dict]) -> dict | None:
    """One record from the same measurement repeated in ``rounds``: medians over the rounds.

    The rounds of the implementations compared run interleaved, so a slow
    spell of a shared machine hits all of them instead of one. ``ms`` (and
    every memory field) becomes the median of the rounds' values, ``ms_rounds``
    lists them; the other fields are the first round's. None if any round failed.
    """
    if not results or any(r is None for r in results):
        return None
    import statistics
    record = dict(results[0])
    record["ms_rounds"] = [r["ms"] for r in results]
    for key in ("ms", "peak_mb", "peak_rss_mb", "rise_mb", "base_rss_mb", "first_ms"):
        if key in record:
            record[key] = statistics.median(r[key] for r in results)
    record["ms_all"] = [t for r in results for t in r.get("ms_all", [])]
    return record


def median_ratio(a: dict, b: dict) -> float:
    """Median over the rounds of ``a``'s time over ``b``'s (records of :func:`combine_rounds`)."""
    import statistics
    return statistics.median(x / y for x, y in zip(a["ms_rounds"], b["ms_rounds"]))


def cca_inputs(shape, seed: int = 0):
    """Random query, key ([B, C/8, H, W]) and value ([B, C, H, W]) float32 arrays; for a clip shape
    [B, C, T, H, W] query and key [B, C/8, T, H, W]."""
    import numpy as np
    B, C, *rest = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, C // 8, *rest)).astype(np.float32)
    k = rng.standard_normal((B, C // 8, *rest)).astype(np.float32)
    v = rng.standard_normal((B, C, *rest)).astype(np.float32)
    return q, k, v


# -- the CUDA kernels outside Jittor --------------------------------------------------

CCA_CUDA_ABI = os.path.join(ROOT, "models", "ops", "cca_cuda_abi.cu")
CCA_DTYPES = {"float32": 0, "float16": 1, "float64": 2}  # the dtype codes of cca_cuda_abi.cu


def find_nvcc() -> str | None:
    """$JT_NVCC, nvcc on PATH, under $CUDA_HOME / $CUDA_PATH, /usr/local/cuda, or from the pip CUDA wheels."""
    import shutil
    import site
    places = [os.environ.get("JT_NVCC"), shutil.which("nvcc")]
    places += [os.path.join(os.environ[v], "bin", "nvcc") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    places.append("/usr/local/cuda/bin/nvcc")
    for packages in site.getsitepackages():
        places += [os.path.join(packages, "nvidia", sub, "bin", "nvcc") for sub in ("cu13", "cuda_nvcc")]
    return next((p for p in places if p and os.path.isfile(p) and os.access(p, os.X_OK)), None)


def load_cca_cuda_abi(library: str):
    """``ctypes`` handle of a shared library built from :data:`CCA_CUDA_ABI`, its four functions typed.

    ``cca_cuda_weight(dtype, P, Q, E, B, C, H, W, stream)``,
    ``cca_cuda_map(dtype, transposed, A, V, O, B, C, H, W, stream)`` and their
    clip forms ``cca_cuda_weight3d`` / ``cca_cuda_map3d`` (``B, C, T, H, W``) take
    pointers as integers and return the CUDA error code (0 is success).
    """
    import ctypes
    lib = ctypes.CDLL(library)
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.cca_cuda_weight.argtypes = [i32, ptr, ptr, ptr, i32, i32, i32, i32, ptr]
    lib.cca_cuda_map.argtypes = [i32, i32, ptr, ptr, ptr, i32, i32, i32, i32, ptr]
    lib.cca_cuda_weight3d.argtypes = [i32, ptr, ptr, ptr, i32, i32, i32, i32, i32, ptr]
    lib.cca_cuda_map3d.argtypes = [i32, i32, ptr, ptr, ptr, i32, i32, i32, i32, i32, ptr]
    for fn in (lib.cca_cuda_weight, lib.cca_cuda_map, lib.cca_cuda_weight3d, lib.cca_cuda_map3d):
        fn.restype = i32
    return lib


def cca_products(B: int, Cq: int, C: int, H: int, W: int) -> dict[str, dict]:
    """FLOPs and the least elements moved (every input read once, the output written once) of each
    kernel launch of criss-cross attention: the forward's two products and the backward's four.

    Query and key have ``Cq`` channels, value ``C``. Each product multiplies and adds over the
    H + W - 1 positions of every pixel, as ``models.complexity.cca_flops`` counts them.
    """
    HW, L = H * W, H + W - 1
    qk, v, e = B * Cq * HW, B * C * HW, B * L * HW  # elements of query/key, value, energies
    small, large = 2 * B * HW * L * Cq, 2 * B * HW * L * C
    return {"weight": {"flops": small, "elements": 2 * qk + e},      # E = weight(Q, K)
            "map": {"flops": large, "elements": e + 2 * v},          # O = map(A, V)
            "weight dq": {"flops": small, "elements": e + 2 * qk},   # dQ = map(dE, K)
            "weight dk": {"flops": small, "elements": e + 2 * qk},   # dK = map^T(dE, Q)
            "map da": {"flops": large, "elements": 2 * v + e},       # dA = weight(dO, V)
            "map dv": {"flops": large, "elements": e + 2 * v}}       # dV = map^T(A, dO)


#: NVIDIA datasheet peaks: memory bandwidth (GB/s) and float32 FMA throughput without tensor cores
#: (TFLOP/s), keyed by a pattern of torch.cuda.get_device_name. The op's kernels compute in float32
#: for float16 data too, so float32 is their compute peak in both.
GPU_PEAKS = {
    r"V100.*SXM2": {"gb_s": 900, "fp32_tflop_s": 15.7},
    r"V100.*PCIE": {"gb_s": 900, "fp32_tflop_s": 14.0},
    r"A100.*80GB": {"gb_s": 2039, "fp32_tflop_s": 19.5},
    r"A100": {"gb_s": 1555, "fp32_tflop_s": 19.5},
    r"H100.*PCIe": {"gb_s": 2000, "fp32_tflop_s": 51.2},
    r"H100": {"gb_s": 3350, "fp32_tflop_s": 66.9},  # SXM5 (HBM3)
    r"H200": {"gb_s": 4800, "fp32_tflop_s": 66.9},
}


def gpu_peaks(name: str) -> dict | None:
    """The :data:`GPU_PEAKS` entry of a device name (first matching pattern), or None."""
    import re
    return next((dict(v, pattern=k) for k, v in GPU_PEAKS.items() if re.search(k, name, re.IGNORECASE)), None)


# -- the PyTorch formulations of criss-cross attention, written from their formulas --

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


def torch_bmm_3d(q, k, v):
    """The 3-D attention over clips [B, C, T, H, W] in the official code's style: batched matmuls per
    row, column and time line, -inf on the column's and the time line's self entry, one softmax."""
    import torch
    B, _, T, H, W = q.shape
    C = v.shape[1]

    def neg_inf_diag(n):
        return torch.diag(torch.full((n,), float("-inf"), dtype=q.dtype, device=q.device)).unsqueeze(0)
    e_row = torch.bmm(q.permute(0, 2, 3, 4, 1).reshape(B * T * H, W, -1),
                      k.permute(0, 2, 3, 1, 4).reshape(B * T * H, -1, W)).view(B, T, H, W, W)   # [b,t,y,x,i]
    e_col = (torch.bmm(q.permute(0, 2, 4, 3, 1).reshape(B * T * W, H, -1),
                       k.permute(0, 2, 4, 1, 3).reshape(B * T * W, -1, H)) + neg_inf_diag(H))
    e_col = e_col.view(B, T, W, H, H).permute(0, 1, 3, 2, 4)                                  # [b,t,y,x,j]
    e_time = (torch.bmm(q.permute(0, 3, 4, 2, 1).reshape(B * H * W, T, -1),
                        k.permute(0, 3, 4, 1, 2).reshape(B * H * W, -1, T)) + neg_inf_diag(T))
    e_time = e_time.view(B, H, W, T, T).permute(0, 3, 1, 2, 4)                                # [b,t,y,x,s]
    attention = torch.softmax(torch.cat([e_col, e_row, e_time], 4), dim=4)
    a_col = attention[..., :H].permute(0, 1, 3, 4, 2).reshape(B * T * W, H, H)              # [(b t x), j, y]
    a_row = attention[..., H:H + W].permute(0, 1, 2, 4, 3).reshape(B * T * H, W, W)         # [(b t y), i, x]
    a_time = attention[..., H + W:].permute(0, 2, 3, 4, 1).reshape(B * H * W, T, T)         # [(b y x), s, t]
    out_col = torch.bmm(v.permute(0, 2, 4, 1, 3).reshape(B * T * W, C, H), a_col).view(B, T, W, C, H)
    out_row = torch.bmm(v.permute(0, 2, 3, 1, 4).reshape(B * T * H, C, W), a_row).view(B, T, H, C, W)
    out_time = torch.bmm(v.permute(0, 3, 4, 1, 2).reshape(B * H * W, C, T), a_time).view(B, H, W, C, T)
    return out_col.permute(0, 3, 1, 4, 2) + out_row.permute(0, 3, 1, 2, 4) + out_time.permute(0, 3, 4, 1, 2)


def torch_einsum_3d(q, k, v):
    """The 3-D attention over clips in the mmcv style: einsum energies, -inf on the self entries of
    the column and the time line (as Serge-weihao/CCNet-Pure-Pytorch's CC3d masks two of three axes)."""
    import torch
    B, _, T, H, W = q.shape

    def neg_inf_diag(n):
        return torch.diag(torch.full((n,), float("-inf"), dtype=q.dtype, device=q.device))
    e_row = torch.einsum("bcthw,bcthi->bthwi", q, k)
    e_col = torch.einsum("bcthw,bctjw->bthwj", q, k) + neg_inf_diag(H)[None, None, :, None, :]
    e_time = torch.einsum("bcthw,bcshw->bthws", q, k) + neg_inf_diag(T)[None, :, None, None, :]
    attention = torch.softmax(torch.cat([e_row, e_col, e_time], dim=-1), dim=-1)
    return (torch.einsum("bcthi,bthwi->bcthw", v, attention[..., :W])
            + torch.einsum("bctjw,bthwj->bcthw", v, attention[..., W:W + H])
            + torch.einsum("bcshw,bthws->bcthw", v, attention[..., W + H:]))
