"""What a training run reports: ``log.jsonl``, ``train.log``, TensorBoard events and the progress bar;
and reading the log back.

``log.jsonl`` has one JSON object per logged iteration (loss parts, lr,
times, memory), per validation (``val/*``) or per event (``event``);
``train.log`` the same as readable lines. :func:`read_log`,
:func:`train_rows` and :func:`val_rows` read it back (``compare.py``).
With ``tensorboard=True`` the same numbers go to TensorBoard event files in
``<run>/tensorboard`` (tensorboardX): ``train/*`` at every logged iteration,
``val/mIoU``, ``val/mAcc``, ``val/aAcc`` and ``val/IoU/<class>`` at every
validation. A resumed run's writer purges the steps after its checkpoint, so
its curves continue those of the run it resumes without duplicates.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import resource
import time
from typing import Any, Optional, Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from utils.comm import is_main
from utils.errors import missing_package
from utils.progress import progress_bar

__all__ = ["RunLog", "peak_memory_mb", "read_log", "train_rows", "val_rows", "tensorboard_problem", "TENSORBOARD_DIR"]

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
_WRITERS = itertools.count(1)  # TensorBoard writers opened by this process


def tensorboard_problem() -> Optional[str]:
    """Why ``--tensorboard`` cannot work here (None when it can): tensorboardX must be installed."""
    missing = missing_package("tensorboardX")
    if missing:
        return (f"--tensorboard writes through the tensorboardX package, which does not import here ({missing}); "
                "pip install -r requirements.txt (it pins tensorboardX), or train without --tensorboard")
    return None


def peak_memory_mb() -> tuple[str, float]:
    """``("GPU reserved", MB)`` on CUDA, else ``("RSS", MB)``: the process's peak resident set.

    On CUDA it is what Jittor's allocators hold on the device (``get_mem_info().total_cuda_used``:
    memory in use plus memory cached for reuse, as nvidia-smi counts it for this process), not the
    peak of live tensors: Jittor tracks that only with its memory profiler on, which walks the graph
    at every new maximum (``benchmarks/bench_common.jittor_peak_bytes`` measures it for the benchmarks).
    """
    if jt.flags.use_cuda:
        return "GPU reserved", jt.get_mem_info().total_cuda_used / 2 ** 20
    return "RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0) + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunLog:
    """What a run reports (rank 0 only): ``log.jsonl`` rows, ``train.log`` lines and the progress bar.

    ``log.jsonl`` has one JSON object per logged iteration (loss parts, lr,
    times) or evaluation (``val/*``); ``train.log`` the same as readable lines
    with the time per iteration, the data time, the ETA and the peak memory. The
    progress bar starts after the first iteration, which is where Jittor
    compiles its kernels (its "Compiling Operators" lines come before the bar).
    """

    def __init__(self, output_dir: Optional[str], max_iters: int, start_iter: int, print_freq: int,
                 progress: bool, tensorboard: bool = False, class_names: Optional[Sequence[str]] = None) -> None:
        main = is_main()
        self.jsonl = os.path.join(output_dir, "log.jsonl") if output_dir and main else None
        self.text = os.path.join(output_dir, "train.log") if output_dir and main else None
        self.max_iters, self.print_freq = max_iters, print_freq
        self.progress, self.bar, self.start_iter = progress and main, None, start_iter
        self.window: list[float] = []   # recent step times, for the ETA
        self.peak = 0.0
        self.class_names = list(class_names) if class_names is not None else None
        self.board_dir = os.path.join(output_dir, TENSORBOARD_DIR) if tensorboard and output_dir and main else None
        # TensorBoard drops what an earlier run logged after the checkpoint this one resumes from
        self.purge_step = start_iter + 1 if start_iter else None
        self.board = None

    def _scalars(self, iteration: int, values: dict) -> None:
        """TensorBoard scalars; the writer opens on first use and is closed (its queue written) by close()."""
        if self.board_dir is None:
            return
        if self.board is None:
            from tensorboardX import SummaryWriter
            # tensorboardX names a file by the second it opens it in: the suffix keeps two writers of one
            # second (a resume right after a stop, the final evaluation) apart, in the order they opened
            self.board = SummaryWriter(self.board_dir, purge_step=self.purge_step, flush_secs=10,
                                       filename_suffix=f".{os.getpid()}.{next(_WRITERS):04d}")
            self.purge_step = None  # once: a writer reopened after close() (the final evaluation) adds
        for tag, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.board.add_scalar(tag, float(value), iteration)

    def _write(self, row: dict, line: str) -> None:
        if self.jsonl:
            clean = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(clean) + "\n")
        if self.text:
            with open(self.text, "a") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

    def line(self, text: str) -> None:
        """A line of train.log only (start, resume, end, stop)."""
        if self.text:
            with open(self.text, "a") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")

    def step(self, iteration: int, epoch: int, loss: float, parts: dict, lr: float, data_time: float,
             step_time: float, last: bool) -> None:
        self.window = (self.window + [step_time])[-50:]
        kind, mem = peak_memory_mb()
        self.peak = max(self.peak, mem)
        eta = _duration(float(np.median(self.window)) * (self.max_iters - iteration))
        if self.progress and self.bar is None and iteration > self.start_iter:
            self.bar = progress_bar(self.max_iters, "train", "it", initial=iteration - 1)
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e} mem {self.peak:.0f}MB", refresh=False)
            self.bar.update(1)
        if iteration % self.print_freq and not last:
            return
        # parts are this rank's (rank 0); "loss" is the mean over all ranks
        row = {k: float(v) for k, v in (parts or {}).items()}
        row.update(iter=iteration, epoch=epoch, loss=loss, lr=lr, data_time=round(data_time, 4),
                   time=round(step_time, 4), memory_mb=round(self.peak, 1))
        shown = " ".join(f"{k[5:] if k.startswith('loss_') else k} {row[k]:.4f}"
                         for k in ("loss_main", "loss_aux", "loss_ccl_var", "loss_ccl_dis", "loss_ccl_reg")
                         if k in row)
        self._write(row, f"iter {iteration}/{self.max_iters} epoch {epoch} | loss {loss:.4f}"
                         f"{' (' + shown + ')' if shown else ''} | lr {lr:.3e} | {step_time:.3f} s/it "
                         f"(data {data_time:.3f} s) | eta {eta} | {kind} {self.peak:.0f} MB")
        self._scalars(iteration, {f"train/{k}": v for k, v in row.items() if k not in ("iter", "epoch")})

    def evaluation(self, iteration: int, metrics: dict) -> None:
        row = {"iter": iteration, **{f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}}
        shown = "  ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if isinstance(v, float))
        self._write(row, f"iter {iteration}/{self.max_iters} | val {shown}")
        values = {f"val/{k}": metrics[k] for k in ("mIoU", "mAcc", "aAcc") if k in metrics}
        iou = metrics.get("IoU") or []
        names = self.class_names if self.class_names and len(self.class_names) == len(iou) else \
            [str(i) for i in range(len(iou))]
        values.update({f"val/IoU/{name}": v for name, v in zip(names, iou)})
        self._scalars(iteration, values)

    def event(self, iteration: int, text: str, **row: Any) -> None:
        self._write({"iter": iteration, "event": text, **row}, f"iter {iteration}/{self.max_iters} | {text}")

    def pause(self) -> None:
        """Clear the bar from the screen (before evaluation prints its own)."""
        if self.bar is not None:
            self.bar.clear()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.board is not None:
            self.board.close()
            self.board = None


def read_log(path: str) -> list[dict]:
    """The rows of a ``log.jsonl`` ([] if there is none); a line cut by a kill is skipped."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "iter" in row:
                rows.append(row)
    return rows


def train_rows(log: list[dict]) -> list[dict]:
    """The rows of logged training iterations."""
    return [r for r in log if "loss" in r and "event" not in r]


def val_rows(log: list[dict]) -> list[dict]:
    """The rows of validations."""
    return [r for r in log if "val/mIoU" in r]
