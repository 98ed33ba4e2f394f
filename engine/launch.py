"""What each process sets up before it works: its device and its random seeds.

Seeds: Python's and numpy's generators are seeded once (the same on every
rank) and their states travel in checkpoints (:func:`rng_state`); Jittor's is
reseeded at every training iteration from ``(seed, iteration, rank)``
(:func:`iteration_seed`), so a resumed run draws exactly what an
uninterrupted one would.
"""
from __future__ import annotations

import random
from typing import Mapping

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from models.precision import set_float16
from utils.comm import rank
from utils.cuda_libraries import check_cuda_libraries

__all__ = ["set_device", "set_seed", "iteration_seed", "rng_state", "set_rng_state"]


def set_device(no_cuda: bool = False, amp: bool = False) -> str:
    """Select CPU or CUDA, and float16 compute for ``amp``; returns ``"cuda"`` or ``"cpu"``.

    ``amp`` needs a GPU: on the CPU (no float16 kernels worth using) it is an
    error (ValueError) rather than a slow or silent float32 run. On CUDA,
    a Jittor without cuBLAS or cuDNN is an error too
    (:func:`utils.cuda_libraries.check_cuda_libraries`).
    """
    use_cuda = bool(jt.has_cuda) and not no_cuda
    if use_cuda:
        check_cuda_libraries()
    jt.flags.use_cuda = 1 if use_cuda else 0
    if amp and not use_cuda:
        raise ValueError("--amp (mixed precision) needs a CUDA GPU; this run is on the CPU "
                         f"({'--no-cuda given' if no_cuda else 'no GPU found'}). Drop --amp (when resuming a mixed-precision "
                         "run, add --no-amp).")
    set_float16(amp)  # models.precision: float16 convolutions, float32 statistics and losses
    return "cuda" if use_cuda else "cpu"


def iteration_seed(seed: int, iteration: int) -> int:
    """Jittor's seed for one training iteration: a function of (seed, iteration, rank) only.

    Reseeding Jittor at every iteration makes the random ops (dropout) of an
    iteration independent of what ran before it, so a resumed run draws
    exactly what an uninterrupted one would.
    """
    return (int(seed) * 1_000_003 + int(iteration) * 7919 + rank() * 2591) % (2 ** 31 - 1)


def set_seed(seed: int) -> None:
    """Seed Python, numpy and Jittor; Jittor's seed differs per MPI rank (dropout), the others do not."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    jt.set_seed(iteration_seed(seed, 0))


def rng_state() -> dict:
    """Python's and numpy's global random states (Jittor's is reseeded every iteration)."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: Mapping) -> None:
    """Inverse of :func:`rng_state` (missing entries are left alone)."""
    if state.get("python") is not None:
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
    if state.get("numpy") is not None:
        np.random.set_state(tuple(state["numpy"]))
