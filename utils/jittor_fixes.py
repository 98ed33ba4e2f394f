"""Workarounds for bugs and gaps of Jittor 1.3.11 (all seen with 1.3.11.0 on the CPU).

Each function or class names the problem it works around; the rest of the
project calls these instead of repeating the workaround. Remove one when the
Jittor version that fixes it becomes the minimum.

* :func:`materialize` -- a pending 1-element ``jt.array`` update breaks the
  next fused kernel.
* :class:`ReleasingFunction`, :func:`backward_built_once` -- a ``jt.Function``
  keeps what it saved for its backward pass until the whole training step
  has run.
* :func:`grad_as` -- a ``jt.Function``'s ``grad`` receives the gradient in
  whatever dtype its consumer produced.
* :func:`release_free_heap` -- the memory Jittor's convolution ops free on
  every call stays resident (CPU).
* :func:`matmul_per_image` -- batched (3-D) matmuls run single-threaded.
* :func:`reindex` -- ``>`` in ``reindex`` index expressions fails to compile.
* :func:`restore_sigint` -- Jittor's SIGINT handler exits the process.
* :func:`restore_sigchld` -- Jittor's SIGCHLD handler exits the process when
  any child process dies by a signal.
* :func:`exit_now` -- after Ctrl-C, Jittor's compile pool can hang the exit and
  its SIGCHLD handler turns the status into 1.

Two workarounds live with the class they fix: ``models.layers.ChannelDropout``
(``nn.Dropout2d`` ignores ``Module.train()``) and the worker-process and MPI
overrides of Jittor's data loader in ``datasets.loader``. Setting
``JITTOR_HOME`` is persisted into ``~/.cache/jittor/config.json`` by Jittor,
so the project never sets it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import Iterable, Iterator, Optional, Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

__all__ = ["materialize", "ReleasingFunction", "backward_built_once", "grad_as", "release_free_heap",
           "matmul_per_image", "reindex", "restore_sigint", "restore_sigchld", "exit_now"]


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


class ReleasingFunction(jt.Function):
    """``jt.Function`` that can let go of the values it saved for ``grad`` once ``grad`` has used them.

    Jittor 1.3.11 keeps a Function object, and so every Var it stored for
    its backward pass, alive as long as the forward graph it belongs to. A
    training step runs forward, backward and update as one execution, so
    every saved activation stays in memory until the step has ended, through
    the whole backward pass and the update, instead of being freed when the
    gradient ops that read it have run (as PyTorch frees saved tensors).

    ``execute`` stores with :meth:`save`, ``grad`` takes them back with
    :meth:`saved`. Inside :func:`backward_built_once` (the training step,
    whose optimizer builds the backward pass once, with ``retain_graph=False``)
    ``saved`` also forgets them: the gradient ops built from them hold them
    as long as they are needed and no longer. Elsewhere they are kept, so that
    ``jt.grad``, which keeps the graph by default, can be taken again.
    """

    _releasing = 0   # > 0 inside backward_built_once()

    def save(self, *values) -> None:
        self._saved = values

    def saved(self) -> tuple:
        if "_saved" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: its saved values were let go of when its backward pass "
                               "was built in a training step; run the forward pass again for another gradient")
        return self.__dict__.pop("_saved") if ReleasingFunction._releasing else self._saved


@contextlib.contextmanager
def backward_built_once() -> Iterator[None]:
    """Within it, :class:`ReleasingFunction` backward passes let go of their saved values once built."""
    ReleasingFunction._releasing += 1
    try:
        yield
    finally:
        ReleasingFunction._releasing -= 1


def grad_as(grad: Optional[jt.Var], like: jt.Var) -> Optional[jt.Var]:
    """``grad`` in ``like``'s dtype (None stays None): for the incoming gradients of a ``jt.Function``.

    Jittor 1.3.11 hands ``grad`` the gradient of an output in the dtype its
    consumer produced, not the output's: a float64 output multiplied by a
    float32 Var gets a float32 gradient, a float16 one used in float32 math a
    float32 one. The project's kernels take one element type for all their
    inputs (``in0_type``), so a mixed pair would not compile (nvcc) or would
    read the memory as the wrong type.
    """
    if grad is None or grad.dtype == like.dtype:
        return grad
    return grad.cast(like.dtype)


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim   # the C library this process already runs on
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Jittor 1.3.11's oneDNN convolution ops allocate their reordered copies of
    inputs, weights and outputs with ``malloc`` on every call and free them
    afterwards, and each step's graph is built from and freed to the same
    heap. glibc keeps that freed memory resident, scattered between blocks
    still in use, so a training step's peak resident memory counts it on top
    of what the step needs. Called after each step (``docs/benchmarks.md``
    has what it saves and costs). Jittor's own tensor cache is not touched
    (it is reused by the next step). With CUDA on it does nothing: the
    convolutions run in cuDNN on GPU memory, and trimming would only cost
    time on every step.
    """
    if _MALLOC_TRIM is not None and not jt.flags.use_cuda:
        _MALLOC_TRIM(0)


def matmul_per_image(a: jt.Var, b: jt.Var) -> jt.Var:
    """``a @ b`` for 3-D ``a`` ``[B, n, k]`` and ``b`` ``[B, k, m]``, one 2-D matmul per image.

    Jittor 1.3.11 runs batched (3-D) matmuls on the CPU as a single-threaded
    loop, many times slower than its 2-D oneDNN sgemm.
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
