"""Workarounds for bugs and gaps of Jittor 1.3.11 (all seen with 1.3.11.0 on the CPU).

Each function or class names the problem it works around; the rest of the
project calls these instead of repeating the workaround. Remove one when the
Jittor version that fixes it becomes the minimum.

* :func:`materialize` -- a pending 1-element ``jt.array`` update breaks the
  next fused kernel.
* :class:`ChannelDropout` -- ``nn.Dropout2d`` ignores ``Module.train()``.
* :func:`matmul_per_image` -- batched (3-D) matmuls run single-threaded.
* :func:`reindex` -- ``>`` in ``reindex`` index expressions fails to compile.
* :func:`restore_sigint` -- Jittor's SIGINT handler exits the process.
* :func:`restore_sigchld` -- Jittor's SIGCHLD handler exits the process when
  any child process dies by a signal.
* :func:`exit_now` -- after Ctrl-C, Jittor's compile pool can hang the exit and
  its SIGCHLD handler turns the status into 1.

The worker-process and MPI overrides of Jittor's data loader are methods of
the loader class itself and live in :mod:`datasets.loader`, each with the
bug it works around. Setting ``JITTOR_HOME`` is persisted into
``~/.cache/jittor/config.json`` by Jittor, so the project never sets it.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Iterable, Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

__all__ = ["materialize", "ChannelDropout", "matmul_per_image", "reindex", "restore_sigint", "restore_sigchld",
           "exit_now"]


def materialize(variables: Iterable[jt.Var]) -> None:
    """Compute ``variables`` now (a no-op for those already computed).

    Jittor 1.3.11 inlines a 1-element ``jt.array`` that is still a pending
    update (``Var.update(jt.array(...))``, e.g. CCNet's ``gamma`` right after
    loading weights) into the next fused kernels and then fails to compile
    some of them ("op0_outputstride0 was not declared"). Syncing those Vars
    first avoids it.
    """
    variables = list(variables)
    if variables:
        jt.sync(variables)


class ChannelDropout(nn.Module):
    """Dropout2d: zeroes whole channels with probability ``p`` in training, scales the rest by 1/(1-p).

    Jittor 1.3.11's ``nn.Dropout2d`` starts with ``is_train=False`` and does
    not follow ``Module.train()``/``eval()``, so it never drops; this one
    follows ``is_training()`` like every other module.
    """

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def execute(self, x: jt.Var) -> jt.Var:
        if self.p == 0.0 or not self.is_training():
            return x
        keep = (jt.rand((x.shape[0], x.shape[1], 1, 1)) >= self.p).cast(x.dtype)
        return x * keep / (1.0 - self.p)


def matmul_per_image(a: jt.Var, b: jt.Var) -> jt.Var:
    """``a @ b`` for 3-D ``a`` ``[B, n, k]`` and ``b`` ``[B, k, m]``, one 2-D matmul per image.

    Jittor 1.3.11 runs batched (3-D) matmuls on the CPU as a single-threaded
    loop, about 16x slower than its 2-D oneDNN sgemm.
    """
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"expected [B, n, k] and [B, k, m], got {list(a.shape)} and {list(b.shape)}")
    return jt.stack([jt.matmul(a[i], b[i]) for i in range(a.shape[0])])


def reindex(x: jt.Var, shape: Sequence[int], indexes: Sequence[str]) -> jt.Var:
    """``x.reindex(shape, indexes)`` with the index expressions checked first.

    Jittor 1.3.11 fails to compile index expressions that contain ``>``
    (write ``b<a`` instead of ``a>b``); out-of-range indices give 0.
    """
    bad = [e for e in indexes if ">" in e]
    if bad:
        raise ValueError(f"reindex expressions must not contain '>' (Jittor 1.3.11 cannot compile them): {bad}")
    return x.reindex(list(shape), list(indexes))


def restore_sigint() -> None:
    """Give SIGINT (Ctrl-C) back to Python, so that it raises KeyboardInterrupt.

    Jittor 1.3.11 installs a C handler at import that prints "Caught SIGINT,
    quick exit" and exits with status 1, so no ``except KeyboardInterrupt``
    ever runs: no message saying where a run stopped, and the wrong exit status.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def restore_sigchld() -> None:
    """Let child processes die without ending this one (call it before running subprocesses).

    Jittor 1.3.11 installs a C handler for SIGCHLD at import (meant for its
    data-loader workers) that prints "Caught SIGCHLD. Maybe out of memory"
    and exits at once whenever any child is killed by a signal other than
    SIGTERM. A process that runs other programs and reports their failures
    (the benchmark runners) would die instead, and the child's own error
    output would never be shown.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def exit_now(status: int) -> None:
    """End the process with ``status`` at once, after flushing stdout and stderr (for Ctrl-C).

    After a Ctrl-C in a terminal every process of the group gets SIGINT,
    Jittor 1.3.11's compile workers (a multiprocessing pool) included; they can
    die holding the pool's queue lock, and the pool's clean-up at exit then
    waits for it forever. Its loader workers are ended by SIGKILL, which its
    SIGCHLD handler reports as "Caught SIGCHLD. Maybe out of memory" before
    exiting with status 1. Jittor itself ends a Ctrl-C with such a quick exit;
    this one keeps our message and status. The run's files are closed by then
    and every checkpoint is written atomically, so nothing is lost.
    """
    restore_sigchld()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
