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
  convolutions are then ~50x slower on the CPU. With a GPU, Jittor's own
  handling is left alone.
* Not started by ``mpirun``: ``use_mpi=0``, which skips compiling the MPI
  module at every import.

On a machine with a CUDA GPU nothing CUDA-related is touched.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

__all__ = ["has_cuda_gpu", "onednn_dir", "configure"]

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


def onednn_dir() -> Path:
    """The folder where Jittor looks for its oneDNN (``scripts/setup.sh`` links Debian's there)."""
    # Mirrors jittor_utils.home(): $JITTOR_HOME, else the home directory.
    home = Path(os.environ.get("JITTOR_HOME", str(Path.home())))
    return home / ".cache" / "jittor" / "mkl" / _DNNL_DIR


def configure() -> None:
    """Set Jittor's import-time variables for this machine (idempotent)."""
    if "jittor" in sys.modules:
        return
    env = os.environ
    gpu = has_cuda_gpu()
    if not gpu:
        env.setdefault("nvcc_path", "")
    if "use_mkl" not in env and not gpu and not (onednn_dir() / "lib" / "libmkldnn.so").exists():
        # With a GPU, Jittor's own oneDNN handling is left as it is.
        env["use_mkl"] = "0"
        print("warning: oneDNN not found (run scripts/setup.sh, which links Debian's libdnnl-dev); "
              "CPU convolutions will be slow", file=sys.stderr)
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
