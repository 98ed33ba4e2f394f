"""The processes of a run under ``mpirun``: rank, world size and the collectives.

Under ``mpirun`` every process runs the same script: Jittor's optimizer
all-reduces the gradients (mean), its BatchNorm synchronises the batch
statistics, and the data loader gives each rank its share of every (global)
batch (:mod:`datasets.loader`). Only rank 0 writes files and prints. Without
MPI every function here is the single-process identity.
"""
from __future__ import annotations

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

__all__ = ["rank", "world_size", "is_main", "print0", "barrier", "all_reduce_mean", "all_reduce_sum",
           "all_reduce_counts", "any_rank", "all_gather", "params_in_sync"]


def rank() -> int:
    """This process's MPI rank (0 without MPI)."""
    return int(jt.rank) if jt.in_mpi else 0


def world_size() -> int:
    """The number of MPI processes (1 without MPI)."""
    return int(jt.world_size) if jt.in_mpi else 1


def is_main() -> bool:
    """True on rank 0, the process that writes files and prints."""
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """``print`` on rank 0 only (flushed)."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    """Wait until every process gets here (a no-op without MPI)."""
    if jt.in_mpi:
        jt.array([0.0]).mpi_all_reduce("add").sync()


def all_reduce_mean(value: jt.Var) -> jt.Var:
    """The mean of ``value`` over all processes (``value`` itself without MPI)."""
    return value.mpi_all_reduce("mean") if jt.in_mpi else value


def all_reduce_sum(value: jt.Var) -> jt.Var:
    """The sum of ``value`` over all processes (``value`` itself without MPI)."""
    return value.mpi_all_reduce("add") if jt.in_mpi else value


def all_reduce_counts(counts) -> np.ndarray:
    """The exact sum over all processes of non-negative integer ``counts`` (int64; ``counts`` without MPI).

    Jittor turns 64-bit numpy arrays into 32-bit Vars (``auto_convert_64_to_32``),
    so a float64 sum would be rounded to float32 above 2**24, and its CPU MPI
    all-reduce has no int64 type. The counts travel as four 16-bit limbs in
    int32, each summed exactly for up to 2**15 processes.
    """
    counts = np.asarray(counts).astype(np.int64)
    if not jt.in_mpi:
        return counts
    if counts.size and counts.min() < 0:
        raise ValueError("all_reduce_counts sums non-negative counts only")
    limbs = np.stack([(counts >> (16 * i)) & 0xFFFF for i in range(4)]).astype(np.int32)
    sums = jt.array(limbs).mpi_all_reduce("add").numpy().astype(np.int64)
    return sum(sums[i] << (16 * i) for i in range(4))


def any_rank(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (``flag`` itself without MPI): a stop they all take."""
    return bool(all_reduce_counts([int(bool(flag))])[0]) if jt.in_mpi else bool(flag)


def all_gather(value: jt.Var) -> jt.Var:
    """``[world, *value.shape]``: every process's ``value`` (the same shape on all), on every process.

    Jittor's MPI has no all-gather: each rank fills its own slot of a zero
    buffer and the buffers are summed.
    """
    if not jt.in_mpi:
        return value.unsqueeze(0)
    slots = [value if r == rank() else jt.zeros_like(value) for r in range(world_size())]
    return jt.stack(slots).mpi_all_reduce("add")


def params_in_sync(model: nn.Module) -> float:
    """Largest absolute difference of any parameter between this rank and rank 0 (0.0 without MPI)."""
    if not jt.in_mpi:
        return 0.0
    worst = 0.0
    for p in model.parameters():
        root = p.mpi_broadcast(0)
        worst = max(worst, float((p - root).abs().max().item()))
    # every rank learns every rank's worst deviation (all-reduce has only add/mean)
    per_rank = np.zeros(world_size(), np.float64)
    per_rank[rank()] = worst
    return float(jt.array(per_rank).mpi_all_reduce("add").numpy().max())
