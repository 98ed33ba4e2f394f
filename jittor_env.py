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
* Jittor's information and warning lines (``[i ...]``, ``[w ...]``) are hidden
  (``log_silent=1``) unless the script is run with ``--verbose`` (or
  ``log_silent`` is set). Its errors never are: Jittor 1.3.11's Python logger
  (``jittor_utils.Logwrapper``) returns early under ``log_silent`` for every
  level, so ``LOG.f`` -- how ``jittor/compile_extern.py`` stops when cuDNN or
  cuBLAS cannot be loaded -- would no longer stop anything. Once
  ``jittor_utils`` is imported, its ``LOG.e`` and ``LOG.f`` are made to ignore
  ``log_silent`` (:class:`_JittorErrorsShown`), as its C++ logger already does.
* ``FIX_TORCH_ERROR=0``: without it Jittor 1.3.11 imports PyTorch (when
  installed, as for the tests) into every process not started by ``mpirun``,
  with ``RTLD_GLOBAL``, so single-process and ``mpirun`` runs would load
  different CUDA and cuDNN libraries.
* An NVIDIA GPU and no usable CUDA toolchain: one ``error:`` line before
  Jittor starts (:func:`gpu_toolchain_problem`), instead of Jittor trying to
  download a CUDA toolkit (offline nodes: a long failure) or nvcc refusing
  the host compiler halfway through compiling Jittor.
* SIGUSR1 is ignored from here on, unless something handles it already
  (``utils.stop_signals`` does, in the scripts' main process): Jittor 1.3.11
  starts its compile workers while it is imported, and they inherit this;
  ``mpirun`` passes a SIGUSR1 (Slurm's time-limit warning) to each rank's
  whole process group, and a worker killed by it makes Jittor end the rank
  ("Caught SIGCHLD ... quick exit") before it can write a checkpoint.
* ``--gpu 0,1,..`` on a script's command line (the official CCNet's flag)
  sets ``CUDA_VISIBLE_DEVICES`` before Jittor starts: the list for a single
  process or with NCCL (which gives MPI rank r the r-th GPU); under
  ``mpirun`` without NCCL (``use_nccl=0``), each rank its own GPU.

These command-line flags are read here because Jittor reads its
environment when it is imported, before the script parses its arguments.
On a machine with a CUDA GPU nothing else CUDA-related is touched than
the toolchain check.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

__all__ = ["has_cuda_gpu", "onednn_dir", "gpu_toolchain_problem", "configure", "SCRIPTS"]

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


class _JittorErrorsShown:
    """Import hook: once ``jittor_utils`` is loaded, its logger's errors ignore ``log_silent``.

    Jittor 1.3.11's ``Logwrapper._log`` returns before logging anything when
    ``log_silent`` is set, ``LOG.f`` included, so its fatal set-up errors
    (cuDNN or cuBLAS not loadable, ``jittor/compile_extern.py``) pass
    silently and the run goes on with Jittor's generic kernels. Its C++ logger
    silences only the ``i`` and ``w`` levels; this makes the Python one agree.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "jittor_utils":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_show_errors(module):
            exec_module(module)
            _show_errors(module.Logwrapper)
        spec.loader.exec_module = exec_and_show_errors
        return spec


def _show_errors(logwrapper: type) -> None:
    """Make ``logwrapper``'s ``e`` and ``f`` log (``f`` raises) whatever ``log_silent`` says."""
    def level(letter):
        def log(self, *msg):
            silent, self.log_silent = self.log_silent, 0
            try:
                self._log(letter, 0, *msg)  # same frame depth as Jittor's own e/f: its file:line stays right
            finally:
                self.log_silent = silent
        log.__name__ = letter
        return log
    logwrapper.e, logwrapper.f = level("e"), level("f")


_NVCC_PLACES = ("/usr/local/cuda/bin/nvcc", "/usr/bin/nvcc", "/opt/cuda/bin/nvcc")  # Jittor 1.3.11's, after PATH


def _find_nvcc(env) -> Optional[str]:
    """The nvcc Jittor will use: ``$nvcc_path``, else ``nvcc`` on PATH, else Jittor's fixed places."""
    if "nvcc_path" in env:
        return env["nvcc_path"] or None
    return shutil.which("nvcc") or next((p for p in _NVCC_PLACES if os.access(p, os.X_OK)), None)


def _gcc_limit(nvcc: str) -> Optional[tuple[int, str]]:
    """``(newest gcc major, header)`` that this nvcc accepts, read from its ``crt/host_config.h``."""
    cuda = Path(nvcc).resolve().parent.parent
    for header in [cuda / "include" / "crt" / "host_config.h",
                   *sorted(cuda.glob("targets/*/include/crt/host_config.h"))]:
        try:
            text = header.read_text(errors="replace")
        except OSError:
            continue
        found = re.search(r"#if\s+__GNUC__\s*>\s*(\d+)", text)
        if found:
            return int(found.group(1)), str(header)
    return None


def _gcc_major(cxx: str) -> Optional[int]:
    try:
        out = subprocess.run([cxx, "-dumpversion"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"\s*(\d+)", out)
    return int(found.group(1)) if found else None


def gpu_toolchain_problem(env=os.environ) -> Optional[str]:
    """What stops Jittor from building its CUDA backend on this GPU machine (one line), or None.

    Checked before Jittor is imported: an nvcc must exist (else Jittor 1.3.11
    tries to download a CUDA toolkit, which fails on offline nodes), and the
    host C++ compiler (``$cc_path`` or ``g++``) must be one this nvcc accepts,
    as its own ``crt/host_config.h`` says (e.g. CUDA 11.4-11.8 take gcc <= 11).
    A Jittor-installed CUDA (``~/.cache/jittor/jtcuda``) is left to Jittor.
    """
    home = Path(env.get("JITTOR_HOME", str(Path.home())))
    if "nvcc_path" not in env and (home / ".cache" / "jittor" / "jtcuda").is_dir():
        return None
    nvcc = _find_nvcc(env)
    if nvcc is None:
        if "nvcc_path" in env:
            return None  # nvcc_path="": the user chose the CPU
        return ("an NVIDIA GPU is visible but no nvcc was found (PATH, " + ", ".join(_NVCC_PLACES)
                + "), and Jittor would try to download a CUDA toolkit: load one (e.g. `module load cuda`) or "
                  "set nvcc_path=/path/to/cuda/bin/nvcc; to run on the CPU set nvcc_path=\"\"")
    if not os.access(nvcc, os.X_OK):
        return f"nvcc {nvcc} is not an executable file: fix nvcc_path (or set nvcc_path=\"\" for the CPU)"
    limit = _gcc_limit(nvcc)
    cxx = env.get("cc_path") or shutil.which("g++")
    if limit is None or not cxx or "clang" in os.path.basename(cxx):
        return None
    major = _gcc_major(cxx)
    if major is not None and major > limit[0]:
        return (f"the host compiler {cxx} is gcc {major}, but {nvcc} accepts gcc <= {limit[0]} ({limit[1]}): "
                f"load an older one (e.g. `module load gcc/{limit[0]}`) and set cc_path=/path/to/g++-{limit[0]}, "
                "or use a newer CUDA")
    return None


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
    else:
        problem = gpu_toolchain_problem(env)
        if problem:
            raise SystemExit(f"error: {problem}")
    env.setdefault("FIX_TORCH_ERROR", "0")
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # inherited by Jittor's compile workers (see above)
    if not any(isinstance(f, _JittorErrorsShown) for f in sys.meta_path) and "jittor_utils" not in sys.modules:
        sys.meta_path.insert(0, _JittorErrorsShown())
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
