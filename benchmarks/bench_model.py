"""Model zoo benchmark: size, cost, speed and memory of every CCNet preset, in one table.

For each model preset (19 classes, random weights: speed does not depend on them):

* parameters, backbone / rest (``models.complexity.count_parameters``);
* GFLOPs of one forward pass of one image at ``--size`` (``models.complexity.count_flops``:
  2 x multiply-adds of convolutions, linear layers and the attention products; eval mode,
  so the auxiliary head does not run);
* inference: eval mode, ``jt.no_grad``, a batch of ``--batch`` images at ``--size``; time per
  batch is the median of ``--repeat`` runs after ``--warmup`` runs, with ``jt.sync_all(True)``
  before each clock read; reported per image and as images per second;
* inference of the same batch by onnxruntime on the CPU (the graph of ``convert_weights.py --onnx``,
  ``models.onnx_export``; its default threads), timed the same way: what deployment outside
  Jittor costs (mode ``onnx``; skipped with a note when onnx or onnxruntime is missing);
* one training step at ``--train-size`` (``engine.train_loop.train_step``: forward in training mode,
  ``SegmentationLoss`` with the auxiliary head, backward, SGD with momentum 0.9 and weight
  decay 1e-4 from ``engine.optim.build_optimizer``), timed the same way;
* peak memory of each: on the CPU the peak resident set of the process (``VmHWM``, Jittor's
  runtime and compiled kernels included); on CUDA Jittor's peak of live variable memory
  (``profile_memory_enable``, one extra run; allocator caching not included). Jittor's peak
  is recorded on the CPU too.

Each preset and mode runs in its own process (like ``bench_cca.py``), so peaks do not mix.
Defaults on a GPU are the presets' sizes (769x769 evaluation crop, 769x769 training crop,
batch 2); on the CPU they are reduced (257x257, 129x129, batch 1) and the output says so.

    python benchmarks/bench_model.py                                    # all presets, CPU sizes
    python benchmarks/bench_model.py --device cuda --json benchmarks/results/models_gpu.json
    python benchmarks/bench_model.py --models ccnet_demo --size 129 129 --warmup 0 --repeat 1
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

from bench_common import NUM_CLASSES, cpu_model, measure_model, run_worker, use_device, write_record
from utils.errors import missing_package  # noqa: E402  (bench_common put the project on the path)

DEFAULT_MODELS = ("ccnet_resnet50", "ccnet_resnet101", "ccnet_resnet50_mmseg", "ccnet_resnet101_mmseg",
                  "ccnet_van_b0", "ccnet_van_b1", "ccnet_van_b2", "ccnet_van_b3")
MODES = ("infer", "onnx", "train")
#: (evaluation size, training crop, batch): the presets' on a GPU, reduced on the CPU.
GPU_SIZES = ((769, 769), (769, 769), 2)
CPU_SIZES = ((257, 257), (129, 129), 1)
MEMORY = {"cpu": "peak resident set of the process (VmHWM), Jittor runtime included",
          "cuda": "Jittor's peak live variable memory (profile_memory_enable), allocator caching not included"}


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# -- one measurement, in a subprocess ------------------------------------------------

def measure_onnx(model_name: str, size, batch: int, warmup: int, repeat: int) -> dict:
    """onnxruntime (CPU) inference of ``model_name``'s ONNX graph on a batch at ``size``, in this process."""
    import statistics

    import numpy as np
    import onnxruntime as ort
    from bench_common import rss_kb, time_runs
    from models import build_model
    from models.onnx_export import build_onnx
    from utils.jittor_fixes import materialize
    use_device("cpu")
    import jittor as jt
    jt.set_seed(0)
    model = build_model(model_name, NUM_CLASSES)
    materialize(model.state_dict().values())
    session = ort.InferenceSession(build_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
    del model
    h, w = size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
    times = time_runs(lambda: session.run(["logits"], {"image": x}), warmup, repeat)
    return {"model": model_name, "mode": "onnx", "device": "cpu", "size": [h, w], "batch": batch,
            "ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times],
            "peak_rss_mb": rss_kb("VmHWM") / 1024, "onnxruntime": ort.__version__}


def _run_worker(model_name: str, mode: str, size, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", model_name, "--mode", mode,
           "--size", *map(str, size), "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--repeat", str(args.repeat), "--device", args.device]
    return run_worker(cmd, f"{model_name} {mode} {list(size)}")


# -- the table ---------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _peak(result: dict | None, device: str):
    if not result:
        return None
    return result["peak_rss_mb"] if device == "cpu" else result["peak_jittor_mb"]


def print_table(rows: list[dict], args) -> None:
    ev, tr = "x".join(map(str, args.size)), "x".join(map(str, args.train_size))
    print(f"\n{NUM_CLASSES} classes, float32, {args.device}; inference at {ev}, training step at {tr}, batch "
          f"{args.batch}; median of {args.repeat} after {args.warmup} warm-up; peak memory: {MEMORY[args.device]}")
    head = (f"{'model':22s} {'params M':>9s} {'backbone M':>10s} {'head M':>7s} {'GFLOPs':>8s} "
            f"{'infer ms/img':>12s} {'img/s':>7s} {'infer peak MB':>13s} {'ORT CPU ms/img':>14s} "
            f"{'train step ms':>13s} {'train peak MB':>13s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        p, inf, trn, ort = r["parameters"], r.get("infer"), r.get("train"), r.get("onnx")
        print(f"{r['model']:22s} {p['total'] / 1e6:9.2f} {p['backbone'] / 1e6:10.2f} {p['head'] / 1e6:7.2f} "
              f"{r['gflops']:8.4g} {_fmt(inf and inf['ms_per_image'], '12.1f')} "
              f"{_fmt(inf and inf['images_per_s'], '7.2f')} {_fmt(_peak(inf, args.device), '13.0f')} "
              f"{_fmt(ort and ort['ms_per_image'], '14.1f')} "
              f"{_fmt(trn and trn['ms'], '13.1f')} {_fmt(_peak(trn, args.device), '13.0f')}")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="PRESET",
                   help="model presets (any of models.MODEL_PRESETS; default: the ResNet and VAN-B0..B3 ones)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="inference and FLOPs input size (default 769 769 on a GPU, 257 257 on the CPU)")
    p.add_argument("--train-size", type=int, nargs=2, metavar=("H", "W"),
                   help="training crop (default 769 769 on a GPU, 129 129 on the CPU)")
    p.add_argument("--batch", type=int, help="images per inference batch and training step (default 2 GPU, 1 CPU)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="what to time (default both)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed runs first (default 3: the ResNet presets' training steps settle over the first few)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the median is reported (default 5)")
    p.add_argument("--json", help="also write all numbers to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    return p


def _resolve(args) -> bool:
    """Fill in the device's default sizes and check the options; True when they are not the presets' sizes."""
    from models import MODEL_PRESETS
    unknown = [m for m in args.models if m not in MODEL_PRESETS]
    if unknown:
        raise ValueError(f"unknown model preset(s) {', '.join(unknown)}; valid: {', '.join(MODEL_PRESETS)}")
    use_device(args.device)
    size, train_size, batch = GPU_SIZES if args.device == "cuda" else CPU_SIZES
    args.size = list(args.size or size)
    args.train_size = list(args.train_size or train_size)
    args.batch = args.batch or batch
    reduced = (tuple(args.size), tuple(args.train_size), args.batch) != GPU_SIZES
    if min(args.size + args.train_size) < 32:
        raise ValueError(f"--size and --train-size must be at least 32 pixels, got {args.size} {args.train_size}")
    if args.batch < 1 or args.warmup < 0 or args.repeat < 1:
        raise ValueError("--batch and --repeat must be at least 1 and --warmup at least 0")
    if args.json:
        from utils.fileio import check_output_file
        check_output_file(args.json, "--json")
    return reduced


def run(args) -> int:
    """The benchmark: complexity here, the timings in one subprocess per preset and mode, the table, the JSON."""
    if args.worker:
        if args.mode == "onnx":
            print(json.dumps(measure_onnx(args.worker, args.size, args.batch, args.warmup, args.repeat)))
        else:
            print(json.dumps(measure_model(args.worker, args.mode, args.size, args.batch, args.warmup, args.repeat,
                                           args.device)))
        return 0
    reduced = _resolve(args)
    missing = missing_package("onnx", "onnxruntime") if "onnx" in args.modes else None
    if missing:
        print(f"no onnxruntime column: {missing} (pip install -r requirements-dev.txt)", flush=True)
        args.modes = [m for m in args.modes if m != "onnx"]
    import jittor as jt
    from models.complexity import count_flops, count_parameters
    from models import build_model
    if reduced:
        where = " for the CPU" if args.device == "cpu" else ""
        print(f"sizes reduced{where}: inference {args.size[0]}x{args.size[1]}, training crop "
              f"{args.train_size[0]}x{args.train_size[1]}, batch {args.batch} (the presets' sizes, used on a "
              f"GPU: {GPU_SIZES[0][0]}x{GPU_SIZES[0][1]}, {GPU_SIZES[1][0]}x{GPU_SIZES[1][1]}, batch {GPU_SIZES[2]})",
              flush=True)
    rows = []
    for name in args.models:
        model = build_model(name, NUM_CLASSES)
        params = count_parameters(model)
        flops = count_flops(model, (1, 3, *args.size))
        row = {"model": name, "parameters": {k: params[k] for k in ("total", "backbone", "head")},
               "gflops": flops["gflops"], "flops_by_kind": flops["by_kind"]}
        for mode in args.modes:
            size = args.size if mode in ("infer", "onnx") else args.train_size
            result = _run_worker(name, mode, size, args)
            if result and mode in ("infer", "onnx"):
                result["ms_per_image"] = result["ms"] / args.batch
                result["images_per_s"] = 1000.0 * args.batch / result["ms"]
            row[mode] = result
            if result:
                print(f"  {name:22s} {mode:5s} {result['ms']:10.1f} ms per batch of {args.batch}", flush=True)
        rows.append(row)
    print_table(rows, args)
    if args.json:
        record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "device": args.device, "gpu": _gpu_name() if args.device == "cuda" else None,
                  "cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                  "jittor": jt.__version__, "num_classes": NUM_CLASSES,
                  "sizes": {"infer": args.size, "train": args.train_size, "batch": args.batch,
                            "reduced": reduced},
                  "warmup": args.warmup, "repeat": args.repeat, "memory": MEMORY[args.device],
                  "training_step": "SegmentationLoss (aux weight 0.4), SGD momentum 0.9, weight decay 1e-4, lr 0.01",
                  "results": rows}
        write_record(args.json, record)
    return 0


def main(argv=None) -> int:
    from cli.main import run_main
    return run_main(run, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
