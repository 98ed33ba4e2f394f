"""Prepare the environment for Jittor before it is imported.

Every entry point (``models``, the scripts, the tests) imports this module
before ``jittor``. It only sets environment variables that Jittor reads at
import time, and only where the user has not set them already:

* No NVIDIA GPU visible: ``nvcc_path=""``, so Jittor neither builds its CUDA
  backend against a stray ``nvcc`` nor downloads a CUDA toolkit.
* oneDNN: Jittor wants to download its own oneDNN build. ``scripts/setup.sh``
  links Debian's ``libdnnl-dev`` into Jittor's cache folder instead (Jittor
  then treats oneDNN as already downloaded); without that folder (and no
  GPU) this sets ``use_mkl=0`` and prints a one-line warning, because
  convolutions are then many times slower on the CPU. With a GPU, Jittor's own
  handling is left alone.
* Not started by ``mpirun``: ``use_mpi=0``, which skips compiling the MPI
  module at every import.
* Op compile threads: one per CPU core this process may use
  (``use_parallel_op_compiler``; Jittor 1.3.11 starts up to 16, one per 3 GB
  of memory, however few the cores). More threads than cores compile no
  faster, and fewer concurrent threads give Jittor 1.3.11's parallel
  compiler, which now and then crashes while compiling new ops, fewer
  chances to (``docs/jittor.md``); the tests use 1 (``tests/conftest.py``).
* Jittor's information lines (``[i ...]``) are hidden (``log_silent=1``)
  unless the script is run with ``--verbose`` (or ``log_silent`` is set).
* ``--gpu 0,1,..`` on a script's command line (the official CCNet's flag)
  sets ``CUDA_VISIBLE_DEVICES`` before Jittor starts: the list for a single
  process or with NCCL (which gives MPI rank r the r-th GPU); under
  ``mpirun`` without NCCL (``use_nccl=0``), each rank its own GPU.

These two command-line flags are read here because Jittor reads its
environment when it is imported, before the script parses its arguments.
On a machine with a CUDA GPU nothing else CUDA-related is touched.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

__all__ = ["has_cuda_gpu", "onednn_dir", "configure", "SCRIPTS"]

#: The project's scripts, whose --verbose and --gpu this module honours.
SCRIPTS = ("train.py", "evaluate.py", "predict.py", "visualize_attention.py", "demo.py", "convert_weights.py",
           "compare.py")

_DNNL_DIR = "dnnl_lnx_2.2.0_cpu_gomp"  # the folder name Jittor 1.3.11 looks for on x86_64
_MARK = "CCNET_JITTOR_ENV_USE_MPI"  # set when use_mpi=0 is ours, not the user's
_MARK_SILENT = "CCNET_JITTOR_ENV_LOG_SILENT"  # set when log_silent=1 is ours


def has_cuda_gpu() -> bool:
    """True when an NVIDIA GPU is visible to this process."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def onednn_dir() -> Path:
    """The folder where Jittor looks for its oneDNN (``scripts/setup.sh`` links Debian's there)."""
    # Mirrors jittor_utils.home(): $JITTOR_HOME, else the home directory.
    home = Path(os.environ.get("JITTOR_HOME", str(Path.home())))
    return home / ".cache" / "jittor" / "mkl" / _DNNL_DIR


def _flag_value(argv: list, flag: str):
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``); True for a bare switch; None if absent."""
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _command_line(env) -> None:
    """``--verbose`` and ``--gpu`` of the project's scripts (see the module docstring)."""
    argv = sys.argv if sys.argv and os.path.basename(sys.argv[0]) in SCRIPTS else []
    if _flag_value(argv, "--verbose") is not None:
        if env.pop(_MARK_SILENT, None):
            env.pop("log_silent", None)  # our own log_silent=1, inherited from a parent process
    elif "log_silent" not in env:
        env["log_silent"] = "1"
        env[_MARK_SILENT] = "1"
    gpus = _flag_value(argv, "--gpu")
    if isinstance(gpus, str) and gpus not in ("", "None") and "CUDA_VISIBLE_DEVICES" not in env:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        local = env.get("OMPI_COMM_WORLD_LOCAL_RANK")
        if local is not None and env.get("use_nccl") == "0":
            ids = [ids[int(local) % len(ids)]]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure() -> None:
    """Set Jittor's import-time variables for this machine (idempotent)."""
    if "jittor" in sys.modules:
        return
    env = os.environ
    _command_line(env)
    gpu = has_cuda_gpu()
    if not gpu:
        env.setdefault("nvcc_path", "")
    if "use_mkl" not in env and not gpu and not (onednn_dir() / "lib" / "libmkldnn.so").exists():
        # With a GPU, Jittor's own oneDNN handling is left as it is.
        env["use_mkl"] = "0"
        print("warning: oneDNN not found (run scripts/setup.sh, which links Debian's libdnnl-dev); "
              "CPU convolutions will be slow", file=sys.stderr)
    env.setdefault("use_parallel_op_compiler", str(_usable_cores()))
    if "OMPI_COMM_WORLD_SIZE" not in env:
        if "use_mpi" not in env:
            env["use_mpi"] = "0"
            env[_MARK] = "1"
    elif env.pop(_MARK, None):
        # Our own use_mpi=0, inherited from a parent process that started
        # mpirun: under mpirun Jittor's MPI must be on.
        env.pop("use_mpi", None)


if __name__ == "__main__":
    print(onednn_dir())  # for scripts/setup.sh
else:
    configure()
