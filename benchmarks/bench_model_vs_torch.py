"""Our Jittor CCNet against the same network in PyTorch on the CPU, in one run.

For each model preset (19 classes, drop path 0 so that both sides compute
the same function):

1. an export process builds the Jittor model (seed 0), writes its weights,
   its structure (``torch_mirror.describe``) and its eval-mode output on a
   small check image;
2. four timing processes, one per framework and mode, each load those
   weights: PyTorch builds the mirror (``torch_mirror.build``, without
   importing Jittor) and first checks that its output on the check image
   equals Jittor's (relative error reported; the run stops above 1e-4);
3. ``train``: one training step (forward in training mode, cross-entropy of
   the bilinearly upsampled logits plus 0.4 x the auxiliary loss, backward,
   SGD with momentum 0.9 and weight decay 1e-4); on the Jittor side exactly
   ``engine.train_loop.train_step`` with ``SegmentationLoss`` and
   ``engine.optim.build_optimizer``, what train.py runs. ``eval``: the
   eval-mode forward pass under no_grad. Time is the median of ``--repeat``
   runs after ``--warmup`` runs (Jittor synchronised before each clock
   read); the first run (Jittor's JIT compilation, cache included) is
   reported on its own.
4. memory: the peak resident set of the process (``VmHWM``) and its rise
   during the measured runs above the resident set once model and inputs
   exist (what the step itself allocates, caches included).
5. ``--rounds`` (3): steps 2-4 run that many times, Jittor and PyTorch
   alternating, so that a slow spell of a shared machine hits both; times and
   memory are medians over the rounds, the time ratio the median of the
   rounds' ratios.

Both frameworks use all cores (Jittor's OpenMP default; ``torch.set_num_threads``).
Ratios are Jittor / PyTorch: below 1 Jittor is faster or smaller.

    python benchmarks/bench_model_vs_torch.py                       # ResNet-50 and VAN-B2, 257^2 / 513^2
    python benchmarks/bench_model_vs_torch.py --json benchmarks/results/model_vs_torch_cpu.json
    python benchmarks/bench_model_vs_torch.py --models ccnet_demo --train-size 65 65 --eval-size 65 65
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench_common import combine_rounds, cpu_model, median_ratio, rss_kb, run_worker, time_runs, write_record

DEFAULT_MODELS = ("ccnet_resnet50", "ccnet_van_b2")
FRAMEWORKS = ("jittor", "torch")
MODES = ("train", "eval")
NUM_CLASSES = 19
CHECK_SIZE = (97, 97)
CHECK_TOLERANCE = 1e-4


def _inputs(mode: str, size, batch: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    h, w = size
    n = batch if mode == "train" else 1
    image = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    label = rng.integers(0, NUM_CLASSES, (n, h, w)).astype(np.int32)
    label[:, : h // 16] = 255  # some ignored pixels, as in real labels
    return image, label


def _timed(run, sync, warmup: int, repeat: int) -> dict:
    """First run, then the median of ``repeat`` after ``warmup``; memory before and after."""
    base_kb = rss_kb("VmRSS")
    sync()
    start = time.perf_counter()
    run()
    sync()
    first = time.perf_counter() - start
    times = time_runs(run, warmup, repeat, sync)
    peak_kb = rss_kb("VmHWM")
    return {"ms": 1000 * statistics.median(times), "ms_all": [1000 * t for t in times], "first_ms": 1000 * first,
            "peak_rss_mb": peak_kb / 1024, "rise_mb": (peak_kb - base_kb) / 1024, "base_rss_mb": base_kb / 1024}


# -- the processes ------------------------------------------------------------------------

def export(model_name: str, folder: str) -> dict:
    """Build the Jittor model, write its weights, structure and check output into ``folder``."""
    import numpy as np
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    from utils.jittor_fixes import materialize
    from models import build_model
    from models.weights import load_state_dict_strict
    from torch_mirror import describe
    jt.flags.use_cuda = 0
    jt.set_global_seed(0)
    kwargs = {"backbone_kwargs": {"drop_path_rate": 0.0}} if "van" in model_name or model_name == "ccnet_demo" else {}
    model = build_model(model_name, NUM_CLASSES, **kwargs)
    materialize(model.state_dict().values())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    # non-zero attention and layer scales, so that the check sees every branch
    for k in state:
        if k.endswith("gamma"):
            state[k] = np.full_like(state[k], 0.5)
    np.savez(os.path.join(folder, "weights.npz"), **state)
    with open(os.path.join(folder, "spec.json"), "w") as f:
        json.dump(describe(model), f)
    load_state_dict_strict(model, state, verbose=False)
    model.eval()
    x, _ = _inputs("eval", CHECK_SIZE, 1, seed=1)
    with jt.no_grad():
        out = model(jt.array(x)).numpy()
    np.save(os.path.join(folder, "check_out.npy"), out)
    return {"parameters": int(sum(v.size for k, v in state.items() if "running" not in k))}


def _check_torch(model, folder: str) -> float:
    import numpy as np
    import torch
    x, _ = _inputs("eval", CHECK_SIZE, 1, seed=1)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    ref = np.load(os.path.join(folder, "check_out.npy"))
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def measure(framework: str, model_name: str, mode: str, folder: str, size, batch: int, warmup: int,
            repeat: int) -> dict:
    """Time ``mode`` of ``model_name`` in ``framework`` in this process (call it in a fresh process)."""
    import numpy as np
    state = dict(np.load(os.path.join(folder, "weights.npz")))
    image, label = _inputs(mode, size, batch)
    result = {"framework": framework, "model": model_name, "mode": mode, "size": list(size),
              "batch": int(image.shape[0])}
    if framework == "torch":
        import torch
        import torch_mirror
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        with open(os.path.join(folder, "spec.json")) as f:
            spec = json.load(f)
        model = torch_mirror.build(spec)
        torch_mirror.load_weights(model, state)
        result["check_rel_err"] = _check_torch(model, folder)
        result["threads"] = torch.get_num_threads()
        result["version"] = torch.__version__
        x, y = torch.from_numpy(image), torch.from_numpy(label).long()
        if mode == "train":
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
            align = spec["args"]["align_corners"]

            def run():
                optimizer.zero_grad(set_to_none=True)
                loss = torch_mirror.segmentation_loss(model(x), y, align_corners=align)
                loss.backward()
                optimizer.step()
                float(loss)
        else:
            model.eval()

            def run():
                with torch.no_grad():
                    model(x)
        result.update(_timed(run, lambda: None, warmup, repeat))
        return result

    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    from utils.jittor_fixes import materialize
    from engine.train_loop import train_step
    from engine.optim import build_optimizer
    from models import build_model
    from models.losses import SegmentationLoss
    from models.weights import load_state_dict_strict
    jt.flags.use_cuda = 0
    jt.set_global_seed(0)
    kwargs = {"backbone_kwargs": {"drop_path_rate": 0.0}} if "van" in model_name or model_name == "ccnet_demo" else {}
    model = build_model(model_name, NUM_CLASSES, **kwargs)
    load_state_dict_strict(model, state, verbose=False)
    materialize(model.state_dict().values())
    result["threads"] = int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count()  # OpenMP's default
    result["version"] = jt.__version__
    x, y = jt.array(image), jt.array(label)
    if mode == "train":
        model.train()
        criterion = SegmentationLoss(NUM_CLASSES, align_corners=bool(model.align_corners))
        optimizer = build_optimizer(model, "sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)
        steps = iter(range(10 ** 9))

        def run():
            train_step(model, criterion, optimizer, x, y, lr=0.01, seed=next(steps))
    else:
        model.eval()

        def run():
            with jt.no_grad():
                model(x).sync()
    result.update(_timed(run, lambda: jt.sync_all(True), warmup, repeat))
    return result


# -- the table ------------------------------------------------------------------------------

def _ratio(a, b):
    return None if not a or not b else a / b


def print_table(rows: list[dict], args) -> None:
    print(f"\nCPU {cpu_model()}, {os.cpu_count()} cores; float32, {NUM_CLASSES} classes; train: batch "
          f"{args.batch} at {args.train_size[0]}x{args.train_size[1]}; eval: batch 1 at "
          f"{args.eval_size[0]}x{args.eval_size[1]}; median of {args.repeat} after {args.warmup} warm-up, "
          f"median of {args.rounds} alternating rounds; "
          f"ratio = Jittor / PyTorch")
    head = (f"{'model':16s} {'mode':5s} {'Jittor ms':>10s} {'PyTorch ms':>10s} {'time ratio':>10s} "
            f"{'Jittor peak MB':>14s} {'PyTorch peak MB':>15s} {'peak ratio':>10s} {'rise ratio':>10s} "
            f"{'first run s J / T':>17s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        j, t = r.get("jittor"), r.get("torch")
        if not j or not t:
            print(f"{r['model']:16s} {r['mode']:5s} failed")
            continue
        print(f"{r['model']:16s} {r['mode']:5s} {j['ms']:10.0f} {t['ms']:10.0f} {r['time_ratio']:10.2f} "
              f"{j['peak_rss_mb']:14.0f} {t['peak_rss_mb']:15.0f} {r['peak_ratio']:10.2f} "
              f"{r['rise_ratio'] if r['rise_ratio'] is not None else float('nan'):10.2f} "
              f"{j['first_ms'] / 1000:8.1f} / {t['first_ms'] / 1000:<6.1f}")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="PRESET",
                   help="model presets (default: ccnet_resnet50 ccnet_van_b2)")
    p.add_argument("--train-size", type=int, nargs=2, default=[257, 257], metavar=("H", "W"),
                   help="training crop (default 257 257)")
    p.add_argument("--eval-size", type=int, nargs=2, default=[513, 513], metavar=("H", "W"),
                   help="evaluation input, one image (default 513 513)")
    p.add_argument("--batch", type=int, default=2, help="images per training step (default 2)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="what to time (default both)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs after the first (default 2)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the median is reported (default 5)")
    p.add_argument("--rounds", type=int, default=3,
                   help="Jittor and PyTorch run alternately this many times; times and memory are medians over "
                        "the rounds, the time ratio the median of the rounds' ratios (default 3)")
    p.add_argument("--json", help="also write all numbers to this file")
    p.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "PRESET", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    return p


def _check_args(args) -> None:
    from models import MODEL_PRESETS
    unknown = [m for m in args.models if m not in MODEL_PRESETS]
    if unknown:
        raise ValueError(f"unknown model preset(s) {', '.join(unknown)}; valid: {', '.join(MODEL_PRESETS)}")
    if min(args.train_size + args.eval_size) < 32:
        raise ValueError("--train-size and --eval-size must be at least 32 pixels")
    if args.batch < 1 or args.warmup < 0 or args.repeat < 1 or args.rounds < 1:
        raise ValueError("--batch, --repeat and --rounds must be at least 1 and --warmup at least 0")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ValueError("PyTorch is the reference of this benchmark: pip install torch (the CPU build)") from None
    if args.json:
        from utils.fileio import check_output_file
        check_output_file(args.json, "--json")


def _worker_cmd(args, *worker: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--worker", *worker, "--folder", args.folder,
            "--train-size", *map(str, args.train_size), "--eval-size", *map(str, args.eval_size),
            "--batch", str(args.batch), "--warmup", str(args.warmup), "--repeat", str(args.repeat)]


def worker(args) -> int:
    """One export or measurement (the PyTorch one imports nothing of Jittor, the engine included)."""
    framework, name, mode = args.worker
    if framework == "export":
        print(json.dumps(export(name, args.folder)))
    else:
        size = args.train_size if mode == "train" else args.eval_size
        print(json.dumps(measure(framework, name, mode, args.folder, size, args.batch, args.warmup, args.repeat)))
    return 0


def run(args) -> int:
    """Export, time each framework and mode in its own process, print the table, write the JSON."""
    _check_args(args)
    rows, failed = [], False
    for name in args.models:
        args.folder = tempfile.mkdtemp(prefix="bench_vs_torch_")
        try:
            exported = run_worker(_worker_cmd(args, "export", name, "-"), f"{name} export")
            if exported is None:
                failed = True
                continue
            for mode in args.modes:
                row = {"model": name, "mode": mode, "parameters": exported["parameters"]}
                rounds = {framework: [] for framework in FRAMEWORKS}
                for round_ in range(args.rounds):
                    for framework in FRAMEWORKS:
                        result = run_worker(_worker_cmd(args, framework, name, mode), f"{name} {mode} {framework}")
                        rounds[framework].append(result)
                        if result:
                            print(f"  round {round_ + 1}/{args.rounds} {name:16s} {mode:5s} {framework:6s} "
                                  f"{result['ms']:9.0f} ms  peak {result['peak_rss_mb']:6.0f} MB", flush=True)
                for framework in FRAMEWORKS:
                    row[framework] = combine_rounds(rounds[framework])
                j, t = row["jittor"], row["torch"]
                if t and t["check_rel_err"] > CHECK_TOLERANCE:
                    raise RuntimeError(f"{name}: the PyTorch mirror's output differs from Jittor's (relative error "
                                       f"{t['check_rel_err']:.2e} > {CHECK_TOLERANCE}); the timings would not "
                                       f"compare the same network")
                if j and t:
                    row.update(time_ratio=median_ratio(j, t), peak_ratio=j["peak_rss_mb"] / t["peak_rss_mb"],
                               rise_ratio=_ratio(j["rise_mb"], t["rise_mb"]), check_rel_err=t["check_rel_err"])
                else:
                    failed = True
                rows.append(row)
        finally:
            shutil.rmtree(args.folder, ignore_errors=True)
    print_table(rows, args)
    if args.json:
        record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                  "train": {"size": args.train_size, "batch": args.batch,
                            "step": "CE + 0.4 aux CE, SGD momentum 0.9, weight decay 1e-4, lr 0.01"},
                  "eval": {"size": args.eval_size, "batch": 1}, "warmup": args.warmup, "repeat": args.repeat,
                  "rounds": args.rounds,
                  "memory": "peak resident set of the process (VmHWM); rise = peak minus the resident set once "
                            "model and inputs exist",
                  "results": rows}
        write_record(args.json, record)
    return 1 if failed else 0


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    from cli.main import run_main
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
