"""The one loader of the custom kernels: their header files, and the ``jt.code`` call that runs them.

Each op module reads its headers with :func:`header` and runs a kernel with
:func:`kernel`. The header's text goes into ``jt.code`` (not an
``#include``), so that editing a kernel changes Jittor's cache key and
recompiles it. Kernel sizes are taken from the input shapes in the call
(``in0_shape0`` ...), not written into the source, so one compiled kernel
serves every size.
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Sequence, Union

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

__all__ = ["header", "kernel"]

_HERE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def header(name: str) -> str:
    """The text of the kernel header ``name`` (a file beside this module)."""
    with open(os.path.join(_HERE, name)) as f:
        return f.read()


def kernel(shapes, dtypes, inputs: Sequence[jt.Var], cpu: Optional[tuple[str, str]] = None,
           cuda: Optional[tuple[str, str]] = None) -> Union[jt.Var, list[jt.Var]]:
    """``jt.code`` running one call statement per device: ``cpu=(header name, call)``, ``cuda=`` likewise.

    ``shapes``/``dtypes`` are those of the outputs (one, or a list for several).
    """
    sources = {}
    if cpu is not None:
        sources.update(cpu_header=header(cpu[0]), cpu_src=cpu[1] + ";")
    if cuda is not None:
        sources.update(cuda_header=header(cuda[0]), cuda_src=cuda[1] + ";")
    return jt.code(shapes, dtypes, list(inputs), **sources)
