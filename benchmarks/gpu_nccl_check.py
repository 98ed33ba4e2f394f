"""The gradient all-reduce of a training step under ``mpirun``: NCCL on the GPUs against MPI through the CPU.

Under ``mpirun`` Jittor 1.3.11's optimizer all-reduces every gradient with
``mpi_all_reduce`` (``jittor/optim.py``), and SyncBN its statistics. How that
runs depends on ``use_nccl``, read when Jittor is imported
(``jittor/compile_extern.py: setup_nccl``):

``nccl`` (``use_nccl=1``)
    Jittor builds its NCCL ops against ``nccl_include_path`` / ``nccl_lib_path``
    (without them it would download NCCL's source: this script finds an installed
    NCCL first, or says what is missing). ``mpi_all_reduce`` of a CUDA variable
    then becomes ``nccl_all_reduce``, on the GPUs. Jittor's NCCL set-up gives rank
    r GPU r of its node (``extern/cuda/nccl/src/nccl_wrapper.cc``), so every rank
    sees all GPUs.
``mpi`` (``use_nccl=0``)
    ``mpi_all_reduce`` runs its CPU kernel: each gradient is copied to the host,
    ``MPI_Allreduce``-d and copied back. Each rank is given only its own GPU
    (``CUDA_VISIBLE_DEVICES``), as ``scripts/slurm_train.sh`` does with ``GPU_BIND=rank``.

Each mode runs ``mpirun -np N`` (N: the visible GPUs, or ``--np``) of this script
as a rank worker: ``bench_common.measure_model`` (one
``engine.train_loop.train_step`` of ``--model`` at ``--size``, median of
``--repeat`` after ``--warmup``) in every rank. A step is as slow as its slowest
rank, so each mode's time is the largest of the ranks' medians; the ratio is
MPI / NCCL (above 1: NCCL is faster). With one GPU it runs ``-np 1``: Jittor
still runs as an MPI job, and every gradient still goes through the path
compared (NCCL on the GPU, or two host copies and a one-process
``MPI_Allreduce``), so the ratio is the cost of that path, without any transfer
between GPUs.

Lines starting with ``nccl-vs-mpi`` hold the results as ``key=value`` words.

    python benchmarks/gpu_nccl_check.py --json work_dirs/nccl_vs_mpi.json        # on a GPU machine
    python benchmarks/gpu_nccl_check.py --device cpu --modes mpi --np 2 --model ccnet_demo --size 65 65
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from bench_common import check_json_option, measure_model, write_record

MODES = ("nccl", "mpi")


# --------------------------------------------------------------------------- what is installed

def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``$CUDA_VISIBLE_DEVICES``'s entries, else one index per ``nvidia-smi -L`` line."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [line for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []
    return [str(i) for i in range(len(lines))]


def find_nccl(env=os.environ, sites=None) -> tuple[str, str] | str:
    """``(include folder, library folder)`` of an NCCL Jittor can build against, or a message saying why none.

    ``$nccl_include_path`` / ``$nccl_lib_path`` when both are set, else the first folder holding
    ``include/nccl.h`` and ``lib64|lib|lib/<arch>-linux-gnu/libnccl.so`` among: the merged CUDA tree of
    ``scripts/jittor_cuda13_env.sh`` (``$JT_CUDA_TREE``), ``$NCCL_HOME``, ``$NCCL_ROOT``, ``$CUDA_HOME``,
    /usr/local/cuda, /usr and the ``nvidia/nccl`` pip package of ``sites`` (default ``sys.path``).
    """
    if env.get("nccl_include_path") and env.get("nccl_lib_path"):
        return env["nccl_include_path"], env["nccl_lib_path"]
    sites = sys.path if sites is None else sites
    roots = [env.get(k) for k in ("JT_CUDA_TREE", "NCCL_HOME", "NCCL_ROOT", "CUDA_HOME")]
    roots += ["/usr/local/cuda", "/usr"] + [os.path.join(s, "nvidia", "nccl") for s in sites if s]
    versioned = None
    for root in (r for r in roots if r):
        if not os.path.isfile(os.path.join(root, "include", "nccl.h")):
            continue
        for lib in ("lib64", "lib", os.path.join("lib", f"{platform.machine()}-linux-gnu")):
            folder = os.path.join(root, lib)
            if os.path.isfile(os.path.join(folder, "libnccl.so")):
                return os.path.join(root, "include"), folder
            if versioned is None and os.path.isfile(os.path.join(folder, "libnccl.so.2")):
                versioned = folder
    if versioned:
        return (f"{versioned} has libnccl.so.2 but no libnccl.so, which Jittor links against: "
                f"ln -s libnccl.so.2 {versioned}/libnccl.so")
    return ("no NCCL found (include/nccl.h and libnccl.so under $JT_CUDA_TREE, $NCCL_HOME, $NCCL_ROOT, $CUDA_HOME, "
            "/usr/local/cuda, /usr or a pip nvidia-nccl package): install one (pip install nvidia-nccl-cu12 / -cu13) "
            "or set nccl_include_path and nccl_lib_path")


def rank_gpu(mode: str, gpus: list[str], local_rank: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for a rank: its own GPU with MPI; unchanged (None) with NCCL, which picks
    GPU <local rank> among all of them itself."""
    if mode == "nccl" or not gpus:
        return None
    return gpus[local_rank % len(gpus)]


# --------------------------------------------------------------------------- one mode under mpirun

def mpirun_command(mode: str, n: int, gpus: list[str], records: str, args) -> list[str]:
    """``mpirun`` of ``n`` rank workers, each writing its record into the folder ``records``."""
    mpirun = shutil.which("mpirun") or "mpirun"
    return [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(n),
            sys.executable, os.path.abspath(__file__), "--rank-worker", mode, "--records", records,
            *(["--gpus", ",".join(gpus)] if gpus else []), "--model", args.model, "--size", *map(str, args.size),
            "--batch", str(args.batch), "--warmup", str(args.warmup), "--repeat", str(args.repeat),
            "--device", args.device]


def mode_env(mode: str, nccl: tuple[str, str] | None, env=os.environ) -> dict:
    """The environment of ``mpirun`` for ``mode`` (its ranks inherit it)."""
    out = dict(env)
    out["use_nccl"] = "1" if mode == "nccl" else "0"
    if mode == "nccl":
        out["nccl_include_path"], out["nccl_lib_path"] = nccl
    out["PYTHONUNBUFFERED"] = "1"
    return out


def rank_records(folder: str) -> list[dict]:
    """The records the ranks wrote into ``folder`` (``rank<r>.json``; mpirun mixes the ranks' output lines), by rank."""
    records = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("rank") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                records.append(json.load(f))
    return sorted(records, key=lambda r: r["rank"])


def combine(mode: str, n: int, records: list[dict]) -> dict:
    """One mode's result: the slowest rank's median, or what went wrong."""
    result = {"mode": mode, "np": n, "ranks": records}
    problems = []
    if sorted(r["rank"] for r in records) != list(range(n)):
        problems.append(f"{len(records)} of {n} ranks reported")
    if any(r.get("world_size") != n for r in records):
        problems.append("a rank saw another world size")
    if mode == "nccl" and not all(r.get("nccl") for r in records):
        problems.append("Jittor did not load its NCCL ops in every rank (see the log)")
    if mode == "mpi" and any(r.get("nccl") for r in records):
        problems.append("Jittor loaded NCCL although use_nccl=0")
    if problems:
        result["error"] = "; ".join(problems)
    elif records:
        result["ms"] = max(r["ms"] for r in records)
        result["ms_per_rank"] = [r["ms"] for r in records]
        result["peak_jittor_mb"] = max(r["peak_jittor_mb"] for r in records)
    return result


def run_mode(mode: str, n: int, gpus: list[str], nccl, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="nccl_vs_mpi_") as folder:
        cmd = mpirun_command(mode, n, gpus, folder, args)
        print(f"nccl-vs-mpi: {mode}: {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, env=mode_env(mode, nccl), capture_output=True, text=True)
        result = combine(mode, n, rank_records(folder))
    if proc.returncode != 0 or "error" in result:
        result.setdefault("error", f"mpirun exit status {proc.returncode}")
        print(f"nccl-vs-mpi: {mode} failed ({result['error']}); the end of its output:\n"
              f"{(proc.stdout + proc.stderr)[-3000:]}", file=sys.stderr, flush=True)
    return result


# --------------------------------------------------------------------------- inside mpirun

def rank_worker(args) -> int:
    local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
    gpu = rank_gpu(args.rank_worker, [g for g in args.gpus.split(",") if g], local) if args.device == "cuda" else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before Jittor starts
    import jittor_env  # noqa: F401  (before jittor)
    import jittor as jt
    from jittor import compile_extern
    record = measure_model(args.model, "train", args.size, args.batch, args.warmup, args.repeat, args.device)
    record.update(rank=int(jt.rank), world_size=int(jt.world_size), mode=args.rank_worker,
                  nccl=getattr(compile_extern, "nccl", None) is not None,
                  cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    path = os.path.join(args.records, f"rank{record['rank']}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    return 0


# --------------------------------------------------------------------------- command line

def _words(**fields) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                   help="what to time (default both; on the CPU only mpi)")
    p.add_argument("--np", type=int, help="processes (default: one per visible GPU, at least 1; 2 on the CPU)")
    p.add_argument("--model", default="ccnet_resnet101")
    p.add_argument("--size", type=int, nargs=2, default=[769, 769], metavar=("H", "W"), help="training crop")
    p.add_argument("--batch", type=int, default=2, help="images per rank and step")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="also write all numbers to this file")
    p.add_argument("--rank-worker", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--gpus", default="", help=argparse.SUPPRESS)
    p.add_argument("--records", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.rank_worker:
        return rank_worker(args)
    check_json_option(parser, args.json)
    if args.device == "cpu" and "nccl" in args.modes:
        parser.error("--device cpu: NCCL needs CUDA; use --modes mpi")
    if shutil.which("mpirun") is None:
        print("nccl-vs-mpi: mpirun not found: install Open MPI (openmpi-bin libopenmpi-dev)", file=sys.stderr)
        return 2
    gpus = visible_gpus() if args.device == "cuda" else []
    if args.device == "cuda" and not gpus:
        print("nccl-vs-mpi: no GPU visible (CUDA_VISIBLE_DEVICES, nvidia-smi -L)", file=sys.stderr)
        return 2
    n = args.np or (len(gpus) if args.device == "cuda" else 2)
    nccl = None
    if "nccl" in args.modes:
        nccl = find_nccl()
        if isinstance(nccl, str):
            print(f"nccl-vs-mpi: {nccl}", file=sys.stderr)
            return 2
        print(f"nccl-vs-mpi: NCCL from {nccl[0]} and {nccl[1]}")
    if n == 1:
        print("nccl-vs-mpi: one process (-np 1): Jittor still runs as an MPI job and all-reduces every gradient "
              "through the path compared, with no transfer between GPUs")
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": args.device, "np": n, "gpus": gpus, "model": args.model, "size": args.size,
              "batch_per_rank": args.batch, "warmup": args.warmup, "repeat": args.repeat,
              "nccl": list(nccl) if isinstance(nccl, tuple) else None, "modes": {}}
    for mode in args.modes:
        result = run_mode(mode, n, gpus, nccl, args)
        record["modes"][mode] = result
        if "ms" in result:
            print("nccl-vs-mpi " + _words(mode=mode, np=n, ms=result["ms"], peak_jittor_mb=result["peak_jittor_mb"],
                                          ms_per_rank=",".join(f"{ms:.1f}" for ms in result["ms_per_rank"])))
        else:
            print("nccl-vs-mpi " + _words(mode=mode, np=n, failed=True))
    done = [m for m in args.modes if "ms" in record["modes"][m]]
    if set(done) == set(MODES):
        record["ratio_mpi_to_nccl"] = record["modes"]["mpi"]["ms"] / record["modes"]["nccl"]["ms"]
        print("nccl-vs-mpi " + _words(ratio_mpi_to_nccl=record["ratio_mpi_to_nccl"]))
    record["summary"] = ", ".join(f"{m} {record['modes'][m]['ms']:.0f} ms" for m in done) + f" (-np {n})" + (
        f", MPI/NCCL {record['ratio_mpi_to_nccl']:.2f}" if "ratio_mpi_to_nccl" in record else "")
    print(f"summary: {record['summary']}")
    if args.json:
        write_record(args.json, record)
    return 0 if len(done) == len(args.modes) else 1


if __name__ == "__main__":
    sys.exit(main())
