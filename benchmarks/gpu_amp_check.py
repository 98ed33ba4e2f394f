"""Mixed precision on a GPU: how exact float16 convolution gradients are, and what ``--amp`` saves.

Two parts (``--parts``, default both); ``benchmarks/gpu_run.sh`` runs them as its
``amp-numerics`` step, and the conv part again, on a copy of Jittor carrying
``scripts/jittor_cuda13/fp32-accum.patch``, as ``amp-fp32-accum``.

``conv``
    The weight gradient of one convolution with a long reduction: 64 -> 64 channels,
    3x3, padding 1, input [2, 64, 193, 193] (an early CCNet layer at a 769 crop:
    each weight's gradient sums 2 x 193 x 193 = 74498 products). It runs through
    the project's ``models.layers.Conv2d``, as a training step does: float32, and
    float16 as ``--amp`` computes it (``models.precision``: float16 input and
    weight copies, float32 outside the layer). Each is compared with a float64
    reference computed with numpy on the CPU from the *same* inputs (for float16,
    the inputs rounded to float16), so the error is the computation's alone:
    max |got - reference| / max |reference|. Inputs: non-negative activations
    (|N(0, 1)|, as after a ReLU) and an N(0, 1) output gradient. On Ampere and
    later GPUs cuDNN may compute float32 convolutions with TF32 under its default
    math type (Jittor sets no other): a float32 error near 1e-3 instead of 1e-6
    says so.

``step``
    One training step of ``--model`` at ``--size``, batch ``--batch``, in float32 and
    with the project's mixed precision: ``bench_common.measure_model``
    (``engine.train_loop.train_step``, timed with ``jt.sync_all(True)``, Jittor's
    peak of live memory), each precision in its own process; for AMP with
    ``models.precision.set_float16(True)`` and an ``engine.amp.GradScaler``, as
    ``train.py --amp`` runs.

The decision: stock Jittor hands cuDNN the data type as compute type, so float16
convolutions may sum in float16. Rounding a float32-accumulated weight gradient
to float16 costs at most 2^-11 (4.9e-4) of its largest value, and the reference
takes the float16 inputs as they are, so an error above ``THRESHOLD`` = 4 x 2^-11
(1.95e-3) is more than rounding the result explains: the sums themselves lost
precision, which is what the fp32-accum patch is for, and it is needed. Lines starting with ``conv-grad`` and ``step`` hold the results as
``key=value`` words, the ``decision`` and ``summary`` lines say it in words;
``--json`` writes everything.

    python benchmarks/gpu_amp_check.py --json work_dirs/amp.json              # on a GPU
    python benchmarks/gpu_amp_check.py --parts conv --baseline work_dirs/amp.json   # e.g. with fp32-accum in place
    python benchmarks/gpu_amp_check.py --device cpu --small                   # tiny shapes, on the CPU (tests)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from bench_common import check_json_option, measure_model, rel_error, run_worker, write_record

#: A float16-accumulated sum shows above this relative error; a float32-accumulated one rounded to float16
#: stays within 2^-11 of the largest value (see the module docstring).
THRESHOLD = 4 * 2.0 ** -11
#: (input shape [N, C, H, W], output channels, kernel size): the GPU case, and the tiny one for --small.
CONV_CASE = ((2, 64, 193, 193), 64, 3)
SMALL_CONV_CASE = ((2, 8, 21, 21), 8, 3)
#: (model, training crop, batch, warm-up, repeat) of the step part, on a GPU and with --small.
STEP_CASE = ("ccnet_resnet101", (769, 769), 2, 2, 3)
SMALL_STEP_CASE = ("ccnet_demo", (65, 65), 1, 0, 1)
ACCUM_PATCH = "fp32-accum"  # scripts/jittor_cuda13.py leaves .ccnet_patch_fp32-accum in jittor/ with it


# --------------------------------------------------------------------------- the convolution's weight gradient

def conv_inputs(shape, out_channels: int, kernel: int, seed: int = 0):
    """Float32 ``x`` (|N(0, 1)|), ``w`` (He-scaled N(0, 1)) and the output gradient ``g`` (N(0, 1))."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    x = np.abs(rng.standard_normal(shape)).astype(np.float32)
    weight = (rng.standard_normal((out_channels, c, kernel, kernel)) * (2.0 / (c * kernel * kernel)) ** 0.5)
    g = rng.standard_normal((n, out_channels, h, w)).astype(np.float32)  # stride 1, padding kernel // 2
    return x, weight.astype(np.float32), g


def weight_grad_reference(x, g, kernel: int):
    """d(sum(conv2d(x, w) * g)) / dw in float64 with numpy: one matrix product per kernel offset.

    Cross-correlation with stride 1 and padding ``kernel // 2``, as ``nn.Conv2d``:
    ``dw[o, c, i, j] = sum over n, h, w of g[n, o, h, w] * x_padded[n, c, h + i, w + j]``.
    """
    import numpy as np
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    n, c, h, w = x.shape
    p = kernel // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    grads = g.transpose(1, 0, 2, 3).reshape(g.shape[1], -1)
    out = np.empty((g.shape[1], c, kernel, kernel))
    for i in range(kernel):
        for j in range(kernel):
            window = padded[:, :, i:i + h, j:j + w].transpose(1, 0, 2, 3).reshape(c, -1)
            out[:, :, i, j] = grads @ window.T
    return out


def weight_grad(x, weight, g, dtype: str):
    """The weight gradient of ``models.layers.Conv2d`` with weight ``weight`` at input ``x`` and output gradient
    ``g``, computed in ``dtype`` ("float16": the layer's mixed-precision path), on the current Jittor device."""
    import numpy as np
    import jittor as jt
    from models.layers import Conv2d
    from models.precision import set_float16
    kernel = weight.shape[-1]
    conv = Conv2d(weight.shape[1], weight.shape[0], kernel, padding=kernel // 2, bias=False)
    conv.weight.assign(jt.array(weight))
    set_float16(dtype == "float16")
    try:
        loss = (conv(jt.array(x)) * jt.array(g)).sum()
        return np.asarray(jt.grad(loss, conv.weight).numpy(), np.float64)
    finally:
        set_float16(False)


def conv_errors(shape, out_channels: int, kernel: int, reference=weight_grad_reference) -> dict:
    """Float32 and float16 weight gradients against ``reference`` (float64) on the same inputs."""
    import numpy as np
    x, weight, g = conv_inputs(shape, out_channels, kernel)
    record = {"shape": list(shape), "out_channels": out_channels, "kernel": kernel,
              "reduction": shape[0] * shape[2] * shape[3]}
    for dtype in ("float32", "float16"):
        if dtype == "float16":  # the reference sees what the float16 computation sees
            x_in, g_in = x.astype(np.float16).astype(np.float32), g.astype(np.float16).astype(np.float32)
        else:
            x_in, g_in = x, g
        got = weight_grad(x, weight, g, dtype)
        want = reference(x_in, g_in, kernel)
        record[dtype] = {"max_rel_error": rel_error(got, want), "max_abs_reference": float(np.abs(want).max())}
    e32, e16 = record["float32"]["max_rel_error"], record["float16"]["max_rel_error"]
    record["ratio"] = e16 / e32 if e32 > 0 else float("inf")
    return record


def decide(conv: dict, device: str, patched: bool, cudnn: bool = True) -> tuple[bool | None, str]:
    """Whether the fp32-accum patch is needed, and the decision line's words (``cudnn``: Jittor loaded cuDNN)."""
    e16 = conv["float16"]["max_rel_error"]
    if device != "cuda":
        return None, f"not-applicable (device {device}: the patch changes cuDNN, which only CUDA uses)"
    if not cudnn:
        return None, "not-applicable (Jittor did not load cuDNN: its own kernels computed the convolutions)"
    where = "with fp32-accum in place" if patched else "stock cuDNN compute type"
    needed = not e16 <= THRESHOLD  # a NaN or inf error counts as needed
    if patched:
        return needed, (f"{'still-above' if needed else 'within'} threshold ({where}: float16 error {e16:.3g} vs "
                        f"{THRESHOLD:.3g} = 4 x 2^-11)")
    return needed, (f"{'yes' if needed else 'no'} ({where}: float16 error {e16:.3g} "
                    f"{'>' if needed else '<='} {THRESHOLD:.3g} = 4 x 2^-11, the most that rounding float32 sums "
                    "to float16 can cost)")


# --------------------------------------------------------------------------- the training step

def step_worker(precision: str, model: str, size, batch: int, warmup: int, repeat: int, device: str) -> dict:
    """One precision's training step, measured by bench_common.measure_model in this (fresh) process."""
    result = measure_model(model, "train", size, batch, warmup, repeat, device, amp=precision == "amp")
    result["precision"] = precision
    return result


def step_comparison(model: str, size, batch: int, warmup: int, repeat: int, device: str) -> dict:
    record = {"model": model, "size": list(size), "batch": batch, "warmup": warmup, "repeat": repeat}
    for precision in ("float32", "amp"):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", precision, "--model", model,
               "--size", *map(str, size), "--batch", str(batch), "--warmup", str(warmup), "--repeat", str(repeat),
               "--device", device]
        record[precision] = run_worker(cmd, f"{precision} training step of {model}")
    f32, amp = record["float32"], record["amp"]
    if f32 and amp:
        record["time_ratio"] = amp["ms"] / f32["ms"]
        record["memory_ratio"] = amp["peak_jittor_mb"] / f32["peak_jittor_mb"] if f32["peak_jittor_mb"] else None
    return record


# --------------------------------------------------------------------------- command line

def _words(**fields) -> str:
    def show(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (list, tuple)):
            return "x".join(map(str, v))
        return str(v).replace(" ", "_")
    return " ".join(f"{k}={show(v)}" for k, v in fields.items())


def _jittor_in_use() -> tuple[str, list[str], bool]:
    """The jittor/ folder imported, the project patches whose markers are in it, and whether cuDNN loaded."""
    import jittor as jt
    from jittor import compile_extern
    folder = os.path.dirname(os.path.abspath(jt.__file__))
    patches = sorted(name[len(".ccnet_patch_"):] for name in os.listdir(folder) if name.startswith(".ccnet_patch_"))
    return folder, patches, getattr(compile_extern, "cudnn", None) is not None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--small", action="store_true",
                   help=f"tiny shapes: input {list(SMALL_CONV_CASE[0])} and {SMALL_STEP_CASE[0]} at "
                        f"{SMALL_STEP_CASE[1][0]}x{SMALL_STEP_CASE[1][1]} (for the CPU and the tests)")
    p.add_argument("--parts", nargs="+", default=["conv", "step"], choices=("conv", "step"))
    p.add_argument("--model", help=f"model preset of the step part (default {STEP_CASE[0]})")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="training crop of the step part")
    p.add_argument("--batch", type=int, help="batch of the step part")
    p.add_argument("--warmup", type=int, help="untimed steps first")
    p.add_argument("--repeat", type=int, help="timed steps; the median is reported")
    p.add_argument("--baseline", metavar="JSON", help="an earlier record of this script (e.g. without fp32-accum) "
                   "to compare the float16 error with")
    p.add_argument("--json", help="also write all numbers to this file")
    p.add_argument("--worker", choices=("float32", "amp"), help=argparse.SUPPRESS)
    return p


def run(args) -> int:
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    if args.device == "cuda" and not jt.has_cuda:
        raise ValueError("--device cuda: Jittor found no CUDA GPU on this machine (jt.has_cuda is False); "
                         "run with --device cpu")
    jt.flags.use_cuda = 1 if args.device == "cuda" else 0
    model, size, batch, warmup, repeat = SMALL_STEP_CASE if args.small else STEP_CASE
    model, size, batch = args.model or model, tuple(args.size or size), args.batch or batch
    warmup = warmup if args.warmup is None else args.warmup
    repeat = repeat if args.repeat is None else args.repeat
    if args.worker:
        print(json.dumps(step_worker(args.worker, model, size, batch, warmup, repeat, args.device)))
        return 0
    folder, patches, cudnn = _jittor_in_use()
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": args.device, "jittor": jt.__version__, "jittor_path": folder, "patches_in_place": patches,
              "cudnn_loaded": cudnn, "threshold": THRESHOLD}
    print(f"jittor {jt.__version__} from {folder}; project patches in place: {', '.join(patches) or 'none'}; "
          f"cuDNN {'loaded' if cudnn else 'not loaded'}", flush=True)
    summary = []
    if "conv" in args.parts:
        shape, out_channels, kernel = SMALL_CONV_CASE if args.small else CONV_CASE
        conv = conv_errors(shape, out_channels, kernel)
        record["conv_weight_grad"] = conv
        for dtype in ("float32", "float16"):
            print("conv-grad " + _words(dtype=dtype, max_rel_error=conv[dtype]["max_rel_error"], shape=shape,
                                        out_channels=out_channels, kernel=kernel, reduction=conv["reduction"]))
        print("conv-grad " + _words(ratio_float16_to_float32=conv["ratio"]))
        needed, words = decide(conv, args.device, ACCUM_PATCH in patches, cudnn)
        record["fp32_accum_needed"], record["decision"] = needed, words
        print(f"decision fp32-accum: {words}")
        summary.append(f"conv wgrad rel. error f32 {conv['float32']['max_rel_error']:.2g}, "
                       f"f16 {conv['float16']['max_rel_error']:.2g}")
        if args.baseline:
            with open(args.baseline) as f:
                before = json.load(f)["conv_weight_grad"]["float16"]["max_rel_error"]
            now = conv["float16"]["max_rel_error"]
            record["baseline_float16_error"] = before
            print("conv-grad " + _words(baseline_float16_error=before, float16_error=now,
                                        change=now / before if before else float("inf")))
            summary.append(f"(before: f16 {before:.2g})")
    if "step" in args.parts:
        step = step_comparison(model, size, batch, warmup, repeat, args.device)
        record["step"] = step
        for precision in ("float32", "amp"):
            r = step[precision]
            if r is None:
                print("step " + _words(precision=precision, failed=True))
                continue
            print("step " + _words(precision=precision, model=model, size=size, batch=batch, ms=r["ms"],
                                   peak_jittor_mb=r["peak_jittor_mb"]))
        if "time_ratio" in step:
            print("step " + _words(time_ratio_amp_to_float32=step["time_ratio"],
                                   memory_ratio_amp_to_float32=step["memory_ratio"]))
            summary.append(f"step AMP/f32 time {step['time_ratio']:.2f}, memory {step['memory_ratio']:.2f}")
    record["summary"] = "; ".join(summary)
    print(f"summary: {record['summary']}")
    if args.json:
        write_record(args.json, record)
    return 1 if "step" in args.parts and "time_ratio" not in record["step"] else 0


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_json_option(parser, args.json)
    from cli.main import run_main
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
