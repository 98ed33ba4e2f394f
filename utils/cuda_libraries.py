"""After ``import jittor`` on a GPU: are cuBLAS and cuDNN loaded? One ``error:`` line if not.

Jittor 1.3.11 builds its cuBLAS and cuDNN ops at import
(``jittor/compile_extern.py: setup_cuda_extern``). When one of them cannot be
loaded, stock Jittor stops with a fatal log line, and the project's nvcc-13
patch (``scripts/jittor_cuda13/nvcc13.patch``) turns a missing cuDNN into a
warning; then ``jittor.compile_extern.cudnn`` (or ``.cublas``) stays ``None``
and every convolution or matmul would run on Jittor's generic CUDA kernels:
many times slower and with more memory. :func:`check_cuda_libraries` refuses
to start a run like that and says which library, which version it found and
what to install.
"""
from __future__ import annotations

import glob
import os
import platform
import re
from types import ModuleType
from typing import Optional

from utils.errors import UserError

__all__ = ["REQUIRED", "missing_cuda_libraries", "library_versions", "check_cuda_libraries"]

#: The libraries a CUDA run needs, with what to do when one is missing.
REQUIRED = {
    "cublas": "cuBLAS comes with the CUDA toolkit: use a complete toolkit (`module load cuda`) whose lib64 holds "
              "libcublas.so and libcublasLt.so",
    "cudnn": "install cuDNN's development files for this CUDA (cudnn.h and libcudnn.so beside the toolkit, or in "
             "/usr/include and /usr/lib/<arch>-linux-gnu); with cuDNN 9 also run `python scripts/jittor_cuda13.py` "
             "(it applies the cuDNN-9 patch: Jittor 1.3.11 alone loads cuDNN 7/8)",
}


def missing_cuda_libraries(extern: ModuleType) -> list[str]:
    """The names in :data:`REQUIRED` that Jittor's ``compile_extern`` module did not load."""
    return [name for name in REQUIRED if getattr(extern, name, None) is None]


def _search_dirs(extern: ModuleType) -> list[str]:
    """Where Jittor looks for the CUDA libraries (``setup_cuda_lib``), then ``$LD_LIBRARY_PATH``."""
    arch = "aarch64" if platform.machine() == "aarch64" else "x86_64"
    cuda_lib = getattr(extern, "cuda_lib", "") or ""
    dirs = [getattr(extern, "cuda_bin", "") or "", cuda_lib,
            os.path.join(cuda_lib, "..", "targets", f"{arch}-linux", "lib") if cuda_lib else "",
            f"/usr/lib/{arch}-linux-gnu", "/usr/lib"]
    dirs += os.environ.get("LD_LIBRARY_PATH", "").split(":")
    seen, out = set(), []
    for d in dirs:
        d = os.path.abspath(d) if d else ""
        if d and d not in seen and os.path.isdir(d):
            seen.add(d)
            out.append(d)
    return out


def library_versions(name: str, dirs: list[str]) -> list[str]:
    """``lib<name>.so.<version>`` files found in ``dirs``, as ``"<version> (<folder>)"``, newest first."""
    found = []
    for d in dirs:
        for path in glob.glob(os.path.join(d, f"lib{name}.so.*")):
            version = os.path.basename(path)[len(f"lib{name}.so."):]
            if re.fullmatch(r"[\d.]+", version):
                found.append((tuple(int(x) for x in version.split(".") if x), f"{version} ({d})"))
    return [text for _, text in sorted(found, reverse=True)]


def check_cuda_libraries(extern: Optional[ModuleType] = None) -> None:
    """Raise UserError naming each of cuBLAS / cuDNN that Jittor did not load (call it with CUDA on)."""
    if extern is None:
        import jittor_env  # noqa: F401  (before jittor)
        from jittor import compile_extern as extern
    missing = missing_cuda_libraries(extern)
    if not missing:
        return
    dirs = _search_dirs(extern)
    parts = []
    for name in missing:
        versions = library_versions(name, dirs)
        found = f"found lib{name}.so {', '.join(versions[:3])}" if versions else \
            f"no lib{name}.so.* in {', '.join(dirs) or 'the library folders'}"
        parts.append(f"{name} ({found}): {REQUIRED[name]}")
    raise UserError("CUDA is on but Jittor could not load " + "; ".join(parts)
                    + ". Run with --verbose to see Jittor's own message, or --no-cuda to run on the CPU")
