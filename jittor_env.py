"""Prepare the environment for Jittor before it is imported.

Every entry point (``models``, the scripts, the tests) imports this module
before ``jittor``. It only sets environment variables that Jittor reads at
import time, and only where the user has not set them already:

* No NVIDIA GPU visible: ``nvcc_path=""``, so Jittor neither builds its CUDA
  backend against a stray ``nvcc`` nor downloads a CUDA toolkit.
* oneDNN: Jittor wants to download its own oneDNN build. Where Debian's
  ``libdnnl-dev`` is installed we point Jittor's cache at it instead (it then
  treats oneDNN as already downloaded); otherwise ``use_mkl=0`` and a one-line
  warning, because convolutions are then ~50x slower on the CPU. With a GPU
  and no Debian oneDNN, Jittor's own handling is left alone.
* Not started by ``mpirun``: ``use_mpi=0``, which skips compiling the MPI
  module at every import.

On a machine with a CUDA GPU nothing CUDA-related is touched.
"""
from __future__ import annotations

import glob
import os
import platform
import sys
from pathlib import Path

__all__ = ["has_cuda_gpu", "configure"]

_DNNL_DIR = "dnnl_lnx_2.2.0_cpu_gomp"  # the folder name Jittor 1.3.11 looks for on x86_64
_MARK = "CCNET_JITTOR_ENV_USE_MPI"  # set when use_mpi=0 is ours, not the user's


def has_cuda_gpu() -> bool:
    """True when an NVIDIA GPU is visible to this process."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def _jittor_home() -> Path:
    # Mirrors jittor_utils.home(): $JITTOR_HOME, else the home directory.
    return Path(os.environ.get("JITTOR_HOME", str(Path.home())))


def _link_debian_onednn() -> bool:
    """Make Jittor's oneDNN cache folder point at Debian's libdnnl. True on success."""
    if platform.machine() != "x86_64":
        return False
    lib = Path("/usr/lib/x86_64-linux-gnu/libdnnl.so")
    include = Path("/usr/include")
    if not (lib.exists() and (include / "dnnl.h").exists()):
        return False
    root = _jittor_home() / ".cache" / "jittor" / "mkl" / _DNNL_DIR
    if (root / "lib" / "libmkldnn.so").exists():
        return True
    try:
        (root / "lib").mkdir(parents=True, exist_ok=True)
        (root / "include").mkdir(parents=True, exist_ok=True)
        for header in list(include.glob("dnnl*")) + [include / "oneapi"]:
            target = root / "include" / header.name
            if header.exists() and not target.exists():
                target.symlink_to(header)
        (root / "lib" / "libmkldnn.so").symlink_to(lib)
    except OSError:
        return False
    return True


def configure() -> None:
    """Set Jittor's import-time variables for this machine (idempotent)."""
    if "jittor" in sys.modules:
        return
    env = os.environ
    gpu = has_cuda_gpu()
    if not gpu:
        env.setdefault("nvcc_path", "")
    if "use_mkl" not in env and not _link_debian_onednn() and not gpu:
        # With a GPU, Jittor's own oneDNN handling is left as it is.
        env["use_mkl"] = "0"
        print("warning: oneDNN not found (apt-get install libdnnl-dev); "
              "CPU convolutions will be slow", file=sys.stderr)
    if "OMPI_COMM_WORLD_SIZE" not in env:
        if "use_mpi" not in env:
            env["use_mpi"] = "0"
            env[_MARK] = "1"
    elif env.pop(_MARK, None):
        # Our own use_mpi=0, inherited from a parent process that started
        # mpirun: under mpirun Jittor's MPI must be on.
        env.pop("use_mpi", None)


configure()
