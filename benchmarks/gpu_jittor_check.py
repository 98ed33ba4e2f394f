"""Jittor's own CUDA backend on a GPU machine: the project's op on CUDA against the same op on the CPU.

Three commands (``benchmarks/gpu_run.sh`` runs all three):

``op`` (the default)
    1. Jittor's CUDA back-end pieces that the CUDA-13 patch touches, each on CUDA
       against the CPU: a matmul (cuBLAS), ``nn.softmax`` over the last axis
       (the fused CUB softmax), ``jt.nonzero`` of a 2-D array of 10^4 elements (CUB
       select), a convolution (cuDNN when it loaded) and a depthwise convolution's
       backward (the CUB warp reduce); plus which extern libraries loaded and the nvcc
       flags.
    2. ``ca_weight``, ``ca_map`` and ``criss_cross_attention`` (``models/ops/cca.py``,
       ``impl="kernel"``): forward and the gradients of every input on CUDA
       against the same on the CPU (the C++ kernel), at a few shapes (H != W, H = 1,
       W = 1, a 769 crop's [2, 512, 97, 97]), in float32 and float16 (float16 on CUDA
       against float32 on the CPU, on the same rounded inputs); the same for the 3-D
       functions of ``models/ops/cca3d.py`` at clip shapes [B, C, T, H, W]. The error is
       max |cuda - cpu| / max |cpu|.
    3. When all pass: ``criss_cross_attention`` with ``impl="kernel"`` against
       ``impl="reference"`` on CUDA, forward and forward+backward, at [2, 512, 97, 97]
       and [1, 512, 129, 257] and a clip of 5 frames [1, 512, 5, 97, 97], and which is
       faster: what ``impl="auto"`` should run on CUDA (``models.ops.cca.CUDA_AUTO_IMPL``).
    Exit status 0 when every check passes, 1 otherwise.

``eval``
    Evaluation time of one image of a preset (random weights, eval mode, no
    gradients): whole image and sliding window (the dataset preset's crop and
    stride; Cityscapes: 769 / 513 on a 1024x2048 image, 8 windows), median of
    ``--repeat`` after ``--warmup``, and Jittor's peak memory.

``collect``
    Merges the step records ``benchmarks/gpu_run.sh`` leaves in its work folder
    (``steps.jsonl`` plus one JSON per step) into one record with the machine's
    versions, writes it and prints a short table. Standard library only.

    python benchmarks/gpu_jittor_check.py op --json out.json
    python benchmarks/gpu_jittor_check.py eval --model ccnet_resnet101 --size 1024 2048 --json eval.json
    python benchmarks/gpu_jittor_check.py collect --work work_dirs/gpu_run --out benchmarks/results/gpu_run.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench_common import rel_error  # noqa: E402  (the benchmarks' one comparison of results)

#: value shapes [B, C, H, W], or [B, C, T, H, W] for the 3-D op; query / key have max(C // 8, 1) channels
OP_SHAPES = [(2, 24, 13, 29), (1, 16, 1, 33), (1, 16, 31, 1), (2, 512, 97, 97), (2, 24, 3, 13, 29), (1, 16, 18, 5, 1),
             (1, 512, 5, 65, 65)]
#: a 769 crop, a whole Cityscapes image at 1/8, a clip of 5 frames of 769 crops
TIME_SHAPES = [(2, 512, 97, 97), (1, 512, 129, 257), (1, 512, 5, 97, 97)]


def _functions(shape) -> tuple:
    """(ca_weight, ca_map, criss_cross_attention, positions per pixel) of images or, for 5 sizes, clips."""
    if len(shape) == 5:
        from models.ops.cca3d import ca_map_3d, ca_weight_3d, criss_cross_attention_3d
        _, _, T, H, W = shape
        return ca_weight_3d, ca_map_3d, criss_cross_attention_3d, T + H + W - 2
    from models.ops.cca import ca_map, ca_weight, criss_cross_attention
    _, _, H, W = shape
    return ca_weight, ca_map, criss_cross_attention, H + W - 1
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
BACKEND_TOLERANCE = {"matmul": 1e-4, "softmax": 1e-5, "conv2d": 1e-4, "depthwise_conv_grad": 1e-4}


def write_json(path: str, record: dict) -> None:
    """Write ``record`` atomically (standard library only, NaN as null) and say where."""
    def safe(x):
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {str(k): safe(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [safe(v) for v in x]
        return x
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(safe(record), f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


# --------------------------------------------------------------------------- op

def _on(jt, cuda: bool, fn):
    """``fn()`` with use_cuda set, its outputs as numpy arrays."""
    with jt.flag_scope(use_cuda=1 if cuda else 0):
        out = fn()
        return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


def backend_checks(jt) -> list[dict]:
    """The patched pieces of Jittor's CUDA backend, each on CUDA against the CPU."""
    import numpy as np
    from jittor import nn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 384)).astype(np.float32)
    b = rng.standard_normal((384, 128)).astype(np.float32)
    logits = (4 * rng.standard_normal((64, 1000))).astype(np.float32)
    mask = (rng.random((100, 100)) < 0.3).astype(np.float32)
    image = rng.standard_normal((2, 8, 33, 35)).astype(np.float32)
    conv_w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dw_w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)

    def matmul():
        return jt.array(a) @ jt.array(b)

    def softmax():
        return nn.softmax(jt.array(logits), dim=-1)

    def nonzero():
        return jt.nonzero(jt.array(mask))

    def conv2d():
        return nn.conv2d(jt.array(image), jt.array(conv_w), padding=1)

    def depthwise_grad():
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)  # made under use_cuda: DepthwiseConv on CUDA
        conv.weight.update(jt.array(dw_w))
        x = jt.array(image)
        y = conv(x)
        return jt.grad((y * y).sum(), [x, conv.weight])

    rows = []
    for name, fn in (("matmul", matmul), ("softmax", softmax), ("nonzero", nonzero), ("conv2d", conv2d),
                     ("depthwise_conv_grad", depthwise_grad)):
        row = {"check": name}
        try:
            cpu = _on(jt, False, fn)
            t0 = time.perf_counter()
            cuda = _on(jt, True, fn)
            row["cuda_first_call_s"] = time.perf_counter() - t0  # mostly compilation
            if name == "nonzero":
                row["max_rel_error"] = 0.0 if all(np.array_equal(g, w) for g, w in zip(cuda, cpu)) else float("inf")
                row["ok"] = row["max_rel_error"] == 0.0
            else:
                row["max_rel_error"] = max(rel_error(g, w) for g, w in zip(cuda, cpu))
                row["ok"] = row["max_rel_error"] < BACKEND_TOLERANCE[name]
        except Exception as err:  # noqa: BLE001  (record what failed, go on with the next check)
            row.update(ok=False, error=f"{type(err).__name__}: {err}"[:3000], traceback=traceback.format_exc()[-3000:])
        rows.append(row)
        print(f"  backend {name:22s} {'ok' if row['ok'] else 'FAILED'} {row.get('max_rel_error', '')}", flush=True)
    return rows


def op_checks(jt, shapes=OP_SHAPES, dtypes=("float32", "float16")) -> list[dict]:
    """ca_weight / ca_map / criss_cross_attention, forward and backward, on CUDA against the CPU."""
    import numpy as np
    rows = []
    for shape in shapes:
        ca_weight, ca_map, criss_cross_attention, L = _functions(shape)
        B, C, *rest = shape
        cq = max(C // 8, 1)
        rng = np.random.default_rng(sum(shape))
        q, k = (rng.standard_normal((B, cq, *rest)) for _ in range(2))
        v = rng.standard_normal((B, C, *rest))
        att = rng.random((B, L, *rest))
        att /= att.sum(1, keepdims=True)
        g_e = rng.standard_normal((B, L, *rest))
        g_o = rng.standard_normal((B, C, *rest))
        for dtype in dtypes:
            # float16 inputs are rounded once; the CPU (float32 only for half data) sees the same values
            cast = (lambda x: x.astype(np.float16).astype(np.float32)) if dtype == "float16" else \
                (lambda x: x.astype(np.float32))
            data = {n: cast(x) for n, x in (("q", q), ("k", k), ("v", v), ("a", att), ("ge", g_e), ("go", g_o))}
            on_cuda_dtype = dtype

            def run(cuda: bool, which: str, data=data, on_cuda_dtype=on_cuda_dtype):
                dt = on_cuda_dtype if cuda else "float32"

                def fn():
                    x = {n: jt.array(val).cast(dt) for n, val in data.items()}
                    if which == "ca_weight":
                        out = ca_weight(x["q"], x["k"], impl="kernel")
                        inputs, grad_out = [x["q"], x["k"]], x["ge"]
                    elif which == "ca_map":
                        out = ca_map(x["a"], x["v"], impl="kernel")
                        inputs, grad_out = [x["a"], x["v"]], x["go"]
                    else:
                        out = criss_cross_attention(x["q"], x["k"], x["v"], impl="kernel")
                        inputs, grad_out = [x["q"], x["k"], x["v"]], x["go"]
                    grads = jt.grad((out.cast("float32") * grad_out.cast("float32")).sum(), inputs)
                    return [out.cast("float32")] + [g.cast("float32") for g in grads]
                return _on(jt, cuda, fn)

            for which in ("ca_weight", "ca_map", "criss_cross_attention"):
                row = {"op": which, "shape": list(shape), "query_channels": cq, "dtype": dtype}
                try:
                    cpu = run(False, which)
                    t0 = time.perf_counter()
                    cuda = run(True, which)
                    row["cuda_s"] = time.perf_counter() - t0
                    names = ["forward"] + [f"grad_{n}" for n in
                                           {"ca_weight": "qk", "ca_map": "av", "criss_cross_attention": "qkv"}[which]]
                    row["errors"] = {n: rel_error(g, w) for n, g, w in zip(names, cuda, cpu)}
                    row["max_rel_error"] = max(row["errors"].values())
                    row["ok"] = row["max_rel_error"] < TOLERANCE[dtype]
                except Exception as err:  # noqa: BLE001
                    row.update(ok=False, error=f"{type(err).__name__}: {err}"[:3000],
                               traceback=traceback.format_exc()[-3000:])
                rows.append(row)
                print(f"  {which:22s} {str(list(shape)):18s} {dtype:8s} "
                      f"{row.get('max_rel_error', float('nan')):10.2e} {'ok' if row['ok'] else 'FAILED'}", flush=True)
    return rows


def impl_timings(jt, shapes=TIME_SHAPES, dtypes=("float32", "float16"), warmup=3, repeat=10,
                 cuda: bool = True) -> list[dict]:
    """criss_cross_attention on CUDA, impl="kernel" against impl="reference": forward and forward+backward
    (median ms of ``repeat`` after ``warmup``, each run synchronised), and which one impl="auto" should run."""
    import numpy as np
    rows = []
    for shape in shapes:
        criss_cross_attention = _functions(shape)[2]
        B, C, *rest = shape
        rng = np.random.default_rng(0)
        data = [rng.standard_normal((B, c, *rest)).astype(np.float32) for c in (C // 8, C // 8, C)]
        for dtype in dtypes:
            row = {"shape": list(shape), "dtype": dtype}
            with jt.flag_scope(use_cuda=1 if cuda else 0):
                q, k, v = (jt.array(x).cast(dtype) for x in data)
                jt.sync([q, k, v])
                for impl in ("kernel", "reference"):
                    for mode in ("fwd", "fwd+bwd"):
                        def step(impl=impl, mode=mode):
                            out = criss_cross_attention(q, k, v, impl=impl)
                            grads = jt.grad(out.cast("float32").sum(), [q, k, v]) if mode == "fwd+bwd" else []
                            jt.sync([out] + list(grads))
                        try:
                            times = []
                            for i in range(warmup + repeat):
                                jt.sync_all(True)
                                t0 = time.perf_counter()
                                step()
                                jt.sync_all(True)
                                if i >= warmup:
                                    times.append(time.perf_counter() - t0)
                            row[f"{impl} {mode} ms"] = 1e3 * statistics.median(times)
                        except Exception as err:  # noqa: BLE001
                            row[f"{impl} {mode} error"] = f"{type(err).__name__}: {err}"[:1000]
            if "kernel fwd+bwd ms" in row and "reference fwd+bwd ms" in row:
                row["faster"] = "kernel" if row["kernel fwd+bwd ms"] < row["reference fwd+bwd ms"] else "reference"
            rows.append(row)
            print(f"  {str(list(shape)):18s} {dtype:8s} kernel f+b {row.get('kernel fwd+bwd ms', float('nan')):8.2f} ms, "
                  f"reference f+b {row.get('reference fwd+bwd ms', float('nan')):8.2f} ms", flush=True)
    return rows


def jittor_info(jt) -> dict:
    """Jittor's CUDA set-up: nvcc, its flags (-std=c++17 with the patch), archs, which extern libraries loaded."""
    from jittor import compile_extern, compiler
    info = {"jittor": jt.__version__, "has_cuda": bool(jt.has_cuda), "nvcc_path": getattr(compiler, "nvcc_path", None),
            "nvcc_flags": str(jt.flags.nvcc_flags), "extern": {}}
    try:
        info["cuda_archs"] = [int(a) for a in jt.flags.cuda_archs]
    except (AttributeError, TypeError, ValueError):
        info["cuda_archs"] = None
    for lib in ("cublas", "cudnn", "curand", "cufft", "cusparse", "cub"):
        info["extern"][lib] = getattr(compile_extern, lib, None) is not None
    info["cudnn_v9"] = getattr(compile_extern, "cudnn_v9", None)
    info["patched"] = os.path.isfile(os.path.join(os.path.dirname(jt.__file__), ".ccnet_cuda13_patch"))
    return info


def cmd_op(args) -> int:
    import jittor_env  # noqa: F401  (before jittor)
    t0 = time.perf_counter()
    import jittor as jt
    import_s = time.perf_counter() - t0
    if not jt.has_cuda:
        print("gpu_jittor_check: Jittor has no CUDA here (jt.has_cuda is False): no GPU visible, or Jittor's CUDA "
              "set-up failed; see scripts/jittor_cuda13_env.sh", file=sys.stderr)
        if args.json:
            write_json(args.json, {"ok": False, "error": "jt.has_cuda is False", "import_s": import_s})
        return 2
    info = jittor_info(jt)
    print(f"jittor {info['jittor']} CUDA; extern: {', '.join(k for k, v in info['extern'].items() if v)}; "
          f"import {import_s:.1f} s", flush=True)
    backend = backend_checks(jt)
    shapes = [tuple(s) for s in args.shapes] if args.shapes else OP_SHAPES
    ops = op_checks(jt, shapes=shapes, dtypes=tuple(args.dtypes))
    ok = all(r["ok"] for r in backend + ops)
    timings = impl_timings(jt, dtypes=tuple(args.dtypes)) if ok else []
    faster = {r.get("faster") for r in timings}
    from models.ops.cca import CUDA_AUTO_IMPL
    auto = {"now": CUDA_AUTO_IMPL, "measured": faster.pop() if len(faster) == 1 else None}
    if timings:
        print(f"impl='auto' on CUDA runs {auto['now']!r}; measured faster here: "
              f"{auto['measured'] or 'not one impl at every shape and dtype'}")
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "import_s": import_s, "jittor": info, "tolerance": TOLERANCE, "backend_tolerance": BACKEND_TOLERANCE,
              "backend": backend, "ops": ops, "ok": ok, "impl_timings": timings, "auto_impl": auto,
              "what": "each output and gradient on CUDA against the same on the CPU (float16: CUDA half against "
                      "CPU float32 on the same rounded inputs); error = max|cuda-cpu| / max|cpu|"}
    if args.json:
        write_json(args.json, record)
    print(f"gpu_jittor_check op: {'all passed' if ok else 'FAILURES'} "
          f"({sum(r['ok'] for r in backend + ops)}/{len(backend + ops)})")
    return 0 if ok else 1


# --------------------------------------------------------------------------- eval

def cmd_eval(args) -> int:
    import numpy as np
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    from bench_common import jittor_peak_bytes
    from datasets.presets import get_preset
    from utils.jittor_fixes import materialize
    from evaluation.inference import inference
    from models import build_model
    if args.device == "cuda" and not jt.has_cuda:
        print("gpu_jittor_check eval: Jittor has no CUDA here", file=sys.stderr)
        return 2
    jt.flags.use_cuda = 1 if args.device == "cuda" else 0
    preset = get_preset(args.dataset)
    crop = tuple(args.crop or preset.test_crop or preset.crop_size)
    stride = tuple(args.stride or preset.test_stride or (crop[0] * 2 // 3, crop[1] * 2 // 3))
    jt.set_seed(0)
    model = build_model(args.model, preset.num_classes)
    materialize(model.state_dict().values())
    model.eval()
    h, w = args.size
    x = jt.array(np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32))
    record = {"model": args.model, "dataset": args.dataset, "device": args.device, "size": [h, w],
              "crop": list(crop), "stride": list(stride), "warmup": args.warmup, "repeat": args.repeat,
              "jittor": jt.__version__, "modes": {}}
    for mode in args.modes:
        def run():
            with jt.no_grad():
                out = inference(model, x, preset.num_classes, mode=mode, crop_size=crop, stride=stride)
                out.sync()
            jt.sync_all(True)
        row = {}
        try:
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                run()
            row["warmup_s"] = time.perf_counter() - t0
            times = []
            for _ in range(args.repeat):
                jt.sync_all(True)
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            row["ms"] = 1000 * statistics.median(times)
            row["ms_all"] = [1000 * t for t in times]
            row["peak_jittor_mb"] = jittor_peak_bytes(run) / 2 ** 20
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {err}"[:3000]
        record["modes"][mode] = row
        print(f"  {args.model} {mode:5s} {h}x{w}: {row.get('ms', float('nan')):.1f} ms "
              f"(warm-up {row.get('warmup_s', float('nan')):.1f} s)", flush=True)
    if args.json:
        write_json(args.json, record)
    return 0 if all("ms" in r for r in record["modes"].values()) else 1


# --------------------------------------------------------------------------- collect

def _run_text(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_versions(python: str | None = None) -> dict:
    """GPU, driver, CUDA, cuDNN, PyTorch, Jittor versions, from nvidia-smi, nvcc and the Pythons given."""
    v: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "host_cpu_count": os.cpu_count(), "platform": platform.platform()}
    smi = _run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if smi:
        name, driver, memory = [s.strip() for s in (smi.splitlines()[0].split(",") + ["", "", ""])[:3]]
        v.update(gpu=name, driver=driver, gpu_memory=memory)
    cuda = _run_text(["nvidia-smi"])
    m = re.search(r"CUDA Version:\s*([\d.]+)", cuda or "")
    v["driver_cuda"] = m.group(1) if m else None
    nvcc = os.environ.get("nvcc_path") or "nvcc"
    text = _run_text([nvcc, "--version"])
    m = re.search(r"V(\d+\.\d+\.\d+)", text or "")
    v["nvcc"] = m.group(1) if m else None
    probe = ("import json, importlib.metadata as md\nr = {}\n"
             "for name in ('torch', 'cupy', 'numpy', 'jittor'):\n"
             "    try:\n        r[name] = __import__(name).__version__ if name != 'jittor' else md.version('jittor')\n"
             "    except Exception:\n        r[name] = None\n"
             "try:\n    import torch\n    r['torch_cuda'] = torch.version.cuda\n"
             "    r['torch_cudnn'] = torch.backends.cudnn.version()\nexcept Exception:\n    pass\n"
             "for d in ('nvidia-cudnn-cu13', 'nvidia-cudnn-cu12', 'nvidia-cublas', 'nvidia-cublas-cu12', "
             "'nvidia-cuda-nvcc', 'cupy-cuda13x', 'cupy-cuda12x'):\n"
             "    try:\n        r['pip:' + d] = md.version(d)\n    except Exception:\n        pass\n"
             "print(json.dumps(r))\n")
    for label, py in (("system_python", python or "python3"), ("jittor_python", os.environ.get("GPU_VENV_PYTHON"))):
        if not py:
            continue
        text = _run_text([py, "-c", probe])
        if text:
            try:
                v[label] = json.loads(text.splitlines()[-1])
            except ValueError:
                pass
    return v


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(work: str, out: str | None, python: str | None = None) -> dict:
    """One record from gpu_run.sh's work folder: steps.jsonl (one line per step) plus the steps' JSON files."""
    steps = []
    try:
        with open(os.path.join(work, "steps.jsonl")) as f:
            for line in f:
                line = line.strip()
                if line:
                    steps.append(json.loads(line))
    except OSError:
        pass
    # a step run again (gpu_run.sh --only ...) replaces its earlier record; the order is that of the first run
    latest: dict = {}
    for step in steps:
        latest[step.get("name")] = step
    steps = list(latest.values())
    for step in steps:
        if step.get("json"):
            step["result"] = _load(step["json"] if os.path.isabs(step["json"]) else os.path.join(ROOT, step["json"]))
    record = {"what": "benchmarks/gpu_run.sh: the project on a GPU", "machine": machine_versions(python),
              "steps": steps}
    if out:
        write_json(out, record)
    print_table(record)
    return record


def _summary(step: dict) -> str:
    """A few words of a step's result for the table."""
    r = step.get("result")
    if not isinstance(r, dict):
        return step.get("note", "")
    name = step.get("name", "")
    try:
        if name == "kernels":
            ok = sum(c["ok"] for c in r["checks"])
            t = [x for x in r["timings"] if x["impl"] == "kernel" and x["dtype"] == "float32"]
            ms = f"; kernel fwd+bwd {t[0]['fwd+bwd_ms']:.2f} ms at {t[0]['shape']}" if t and "fwd+bwd_ms" in t[0] else ""
            return f"{ok}/{len(r['checks'])} checks ok{ms}"
        if name == "jittor-op":
            rows = r.get("backend", []) + r.get("ops", [])
            auto = r.get("auto_impl") or {}
            faster = f"; faster on CUDA: {auto['measured']}" if auto.get("measured") else ""
            return f"{sum(x['ok'] for x in rows)}/{len(rows)} checks ok; import {r.get('import_s', 0):.0f} s{faster}"
        if name.startswith("bench-"):
            row = r["results"][0]
            mode = "train" if name == "bench-train" else "infer"
            res = row.get(mode) or {}
            return f"{mode} {res.get('ms', float('nan')):.1f} ms, peak {res.get('peak_jittor_mb', float('nan')):.0f} MB"
        if name == "eval-timing":
            return ", ".join(f"{m} {x.get('ms', float('nan')):.1f} ms" for m, x in r["modes"].items())
        if name == "demo":
            return f"mIoU {100 * r['mIoU']:.2f}" if "mIoU" in r else ""
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return step.get("note", "")


def print_table(record: dict) -> None:
    m = record.get("machine", {})
    print(f"\n{m.get('gpu', 'no GPU')}, driver {m.get('driver')}, CUDA (driver) {m.get('driver_cuda')}, "
          f"nvcc {m.get('nvcc')}, torch {(m.get('system_python') or {}).get('torch')}, "
          f"jittor {(m.get('jittor_python') or {}).get('jittor')}")
    print(f"{'step':16s} {'status':9s} {'seconds':>8s}  result")
    for s in record["steps"]:
        print(f"{s.get('name', '?'):16s} {s.get('status', '?'):9s} {s.get('seconds', 0):8.0f}  {_summary(s)}")


# --------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    op = sub.add_parser("op", help="the op and the patched back-end pieces, CUDA against CPU")
    op.add_argument("--json", help="write the record here")
    op.add_argument("--shapes", type=int, nargs=4, action="append", metavar=("B", "C", "H", "W"),
                    help="value shapes (repeatable; default: a few, up to [2, 512, 97, 97])")
    op.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=("float32", "float16"))
    ev = sub.add_parser("eval", help="whole / sliding-window evaluation time of one image")
    ev.add_argument("--model", default="ccnet_resnet101")
    ev.add_argument("--dataset", default="cityscapes", help="preset whose classes, crop and stride are used")
    ev.add_argument("--size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    ev.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="window (default: the preset's)")
    ev.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="window stride (default: the preset's)")
    ev.add_argument("--modes", nargs="+", default=["whole", "slide"], choices=("whole", "slide"))
    ev.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    ev.add_argument("--warmup", type=int, default=1)
    ev.add_argument("--repeat", type=int, default=3)
    ev.add_argument("--json", help="write the record here")
    co = sub.add_parser("collect", help="merge gpu_run.sh's step records")
    co.add_argument("--work", required=True, help="gpu_run.sh's work folder (holds steps.jsonl)")
    co.add_argument("--out", help="write the merged record here")
    co.add_argument("--python", help="the Python with torch (default python3)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["op"] + argv
    args = get_args_parser().parse_args(argv)
    if args.command == "collect":
        collect(args.work, args.out, args.python)
        return 0
    return cmd_eval(args) if args.command == "eval" else cmd_op(args)


if __name__ == "__main__":
    sys.exit(main())
