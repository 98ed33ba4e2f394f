"""The training loop: one step, the log, the snapshots and the periodic evaluation.

:func:`train` runs iterations ``start_iter .. max_iters`` and is built from
small parts, each readable on its own:

* :func:`batches` -- the batches from an iteration on, epoch by epoch (a
  resumed run skips what the interrupted one already used);
* :func:`train_step` -- learning rate, seed, forward, loss, backward and update;
* :class:`RunLog` -- ``log.jsonl``, ``train.log`` and the progress bar;
* :class:`Snapshots` -- the checkpoints of a run folder (the newest few, the
  last, the best by validation mIoU);
* a non-finite loss, or weights that are no longer finite, stop the run
  (:class:`TrainingStopped`) with the last good checkpoint named and how to
  resume from it; no checkpoint with non-finite values is ever written;
  Ctrl-C says where the run stopped and how to continue (:class:`Interrupted`).
"""
from __future__ import annotations

import json
import math
import os
import re
import resource
import sys
import time
from typing import Any, Callable, Iterator, Optional

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.amp import GradScaler
from engine.checkpoint import CHECKPOINT_VERSION, link_atomic, model_state, rng_state, save_checkpoint
from engine.compat import backward_built_once, release_free_heap
from engine.dist import all_reduce_mean, is_main, iteration_seed, world_size
from engine.optim import optimizer_state, poly_lr, release_gradients, set_lr

__all__ = ["TrainingStopped", "Interrupted", "RunLog", "Snapshots", "peak_memory_mb", "batches", "train_step",
           "train"]


#: With mixed precision, how many skipped steps in a row (non-finite gradients) stop the run.
AMP_PATIENCE = 20


class TrainingStopped(RuntimeError):
    """Training stopped early (non-finite loss or weights); the message names the last good checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the run stopped and how to continue it."""


def _non_finite(arrays) -> list[str]:
    return [name for name, a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)
            and not np.isfinite(a).all()]


def peak_memory_mb() -> tuple[str, float]:
    """``("GPU", MB)`` of Jittor's CUDA memory in use, or ``("RSS", MB)``: the process's peak resident set."""
    if jt.flags.use_cuda:
        return "GPU", jt.get_mem_info().total_cuda_used / 2 ** 20
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
                 progress: bool) -> None:
        main = is_main()
        self.jsonl = os.path.join(output_dir, "log.jsonl") if output_dir and main else None
        self.text = os.path.join(output_dir, "train.log") if output_dir and main else None
        self.max_iters, self.print_freq = max_iters, print_freq
        self.progress, self.bar, self.start_iter = progress and main, None, start_iter
        self.window: list[float] = []   # recent step times, for the ETA
        self.peak = 0.0

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
            from tqdm import tqdm  # noqa: PLC0415  (only with a progress bar)
            self.bar = tqdm(total=self.max_iters, initial=iteration - 1, desc="train", dynamic_ncols=True,
                            unit="it", file=sys.stdout, mininterval=1.0)
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

    def evaluation(self, iteration: int, metrics: dict) -> None:
        row = {"iter": iteration, **{f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}}
        shown = "  ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if isinstance(v, float))
        self._write(row, f"iter {iteration}/{self.max_iters} | val {shown}")

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


class Snapshots:
    """The checkpoints of a run folder (rank 0): numbered snapshots, ``_last`` and ``_best``.

    ``keep`` numbered snapshots are kept (the newest); ``checkpoint_last.pkl``
    and ``checkpoint_best.pkl`` (highest validation mIoU) are hard links to
    the files they stand for, so pruning never removes what they point at.
    """

    def __init__(self, model: nn.Module, optimizer: jt.optim.Optimizer, output_dir: Optional[str], seed: int,
                 config: Optional[dict] = None, extra: Optional[dict] = None, last: Optional[str] = None,
                 keep: Optional[int] = None, best: Optional[dict] = None,
                 scaler: Optional[GradScaler] = None) -> None:
        self.model, self.optimizer, self.output_dir, self.scaler = model, optimizer, output_dir, scaler
        self.seed, self.config, self.extra, self.keep = seed, config or {}, extra or {}, keep
        self.last = last   # the last good checkpoint: this run's newest, or the one it resumed from
        self.last_iter: Optional[int] = None
        self.best = dict(best) if best else None   # {"mIoU": .., "iter": ..} of checkpoint_best.pkl

    def advice(self, base_lr: float) -> str:
        """Where the last good checkpoint is and the command that continues from it more gently."""
        if not self.last:
            return "No checkpoint was written in this run: start it again with a lower --lr."
        return (f"The last good checkpoint is {self.last}; continue from it with a lower learning rate: "
                f"python train.py --resume {self.last} --lr {base_lr / 10:.3g}")

    def save(self, iteration: int, base_lr: float) -> Optional[str]:
        """Write the checkpoint of ``iteration``; TrainingStopped instead if a weight or buffer is not finite."""
        if not (self.output_dir and is_main()):
            return None
        state, optim = model_state(self.model), optimizer_state(self.optimizer)
        bad = _non_finite(state.items()) + _non_finite(
            (f"optimizer {key}", a) for g in optim["groups"] for key in ("values", "m") for a in g.get(key, []))
        if bad:
            raise TrainingStopped(
                f"the weights are not finite after iteration {iteration} ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}); no checkpoint written. {self.advice(base_lr)}")
        payload = {
            "version": CHECKPOINT_VERSION,
            "model": state,
            "optimizer": optim,
            "iter": iteration,
            # Jittor's generator is reseeded every iteration from (seed, iteration, rank):
            # recording the seed is enough to replay it (engine.dist.iteration_seed).
            "rng": dict(rng_state(), jittor={"seed": self.seed, "next_iteration": iteration}),
            "config": self.config,
            "world_size": world_size(),
            "best": self.best,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        payload.update(self.extra)
        path = os.path.join(self.output_dir, f"checkpoint_{iteration:06d}.pkl")
        save_checkpoint(path, payload)
        link_atomic(path, os.path.join(self.output_dir, "checkpoint_last.pkl"))
        self.last, self.last_iter = path, iteration
        self._prune()
        return path

    def _prune(self) -> None:
        if self.keep is None:
            return
        numbered = sorted((int(m.group(1)), name) for name in os.listdir(self.output_dir)
                          for m in [re.fullmatch(r"checkpoint_(\d+)\.pkl", name)] if m)
        for _, name in numbered[:max(len(numbered) - self.keep, 0)]:
            path = os.path.join(self.output_dir, name)
            if path != self.last:
                os.remove(path)

    def offer_best(self, iteration: int, miou: float, base_lr: float) -> bool:
        """After an evaluation: make the iteration's checkpoint ``checkpoint_best.pkl`` if its mIoU is higher."""
        if not (self.output_dir and is_main()) or not math.isfinite(miou):
            return False
        if self.best is not None and miou <= self.best["mIoU"]:
            return False
        self.best = {"mIoU": float(miou), "iter": int(iteration)}
        path = self.save(iteration, base_lr)  # (again, if written already: it now records the new best)
        link_atomic(path, os.path.join(self.output_dir, "checkpoint_best.pkl"))
        return True


def batches(train_set, start_iter: int) -> Iterator[tuple[int, tuple]]:
    """``(epoch, batch)`` from iteration ``start_iter`` on, pass after pass (the caller stops).

    Each pass over ``train_set`` is one epoch; its order and augmentation
    depend only on (seed, epoch, index), so starting at ``start_iter`` sets the
    epoch and skips the batches of that epoch already used.
    """
    iters_per_epoch = len(train_set)
    epoch, skip = divmod(start_iter, iters_per_epoch)
    while True:
        train_set.set_epoch(epoch)
        for index, batch in enumerate(train_set):
            if index >= skip:
                yield epoch, batch
        skip = 0
        epoch += 1


def train_step(model: nn.Module, criterion: Callable, optimizer: jt.optim.Optimizer, image: jt.Var,
               label: jt.Var, lr: float, seed: int, scaler: Optional[GradScaler] = None) -> tuple[float, dict]:
    """One iteration at learning rate ``lr`` with Jittor seeded by ``seed``; returns ``(loss, loss parts)``.

    The loss is the mean over all processes (every rank sees the same value,
    the same NaN included); the parts are this rank's. With a ``scaler``
    (mixed precision) the update goes through it and may be skipped
    (``parts["amp_skipped"]`` is then 1). The step ends with one
    synchronisation: forward, backward, update and the logged values run as
    one Jittor execution, and only then are the values read. What the
    backward pass reads (saved activations, :func:`engine.compat.backward_built_once`)
    and the gradients (:func:`release_gradients`) are freed as soon as they
    have been used, and the heap's free pages are returned after the step
    (:func:`engine.compat.release_free_heap`).
    """
    set_lr(optimizer, lr)
    jt.set_seed(seed)
    loss, parts = criterion(model(image), label)
    extra = {}
    with backward_built_once():
        if scaler is None:
            optimizer.step(loss)
        else:
            extra = dict(amp_scale=scaler.scale, amp_skipped=float(not scaler.step(optimizer, loss)))
    release_gradients(optimizer)
    mean_loss = all_reduce_mean(loss.detach())
    jt.sync_all()
    release_free_heap()
    return float(mean_loss.item()), dict(parts, **extra)


def train(model: nn.Module, criterion: Callable, optimizer: jt.optim.Optimizer, train_set,
          *, max_iters: int, base_lr: float, power: float = 0.9, min_lr: float = 0.0, seed: int = 0,
          start_iter: int = 0, output_dir: Optional[str] = None, snapshot_interval: int = 0,
          eval_interval: int = 0, eval_fn: Optional[Callable[[int], dict]] = None,
          print_freq: int = 10, config: Optional[dict] = None, checkpoint_extra: Optional[dict] = None,
          progress: bool = True, stop_after: Optional[int] = None, resumed_from: Optional[str] = None,
          keep_checkpoints: Optional[int] = None, best: Optional[dict] = None,
          scaler: Optional[GradScaler] = None) -> dict:
    """Train ``model`` from iteration ``start_iter`` to ``max_iters`` (poly schedule).

    Args:
        train_set: a training dataset (``datasets.build_dataset(train=True)``).
        eval_fn: called as ``eval_fn(iteration)`` every ``eval_interval`` iterations
            and at the end when ``eval_interval > 0``; returns a metrics dict to log.
        output_dir: where the logs and the checkpoints go (rank 0 only): one every
            ``snapshot_interval`` iterations (the newest ``keep_checkpoints`` kept)
            and one at the end; ``checkpoint_best.pkl`` after an evaluation with a
            higher mIoU than ``best`` (the resumed run's record).
        stop_after: stop (with a checkpoint) after this many iterations of this
            run, e.g. to test resuming; ``None`` runs to ``max_iters``.
        resumed_from: the checkpoint this run continues (the last good one until a new one is written).
        scaler: mixed precision's loss scaler (``engine.amp``); its state goes into the checkpoints.

    Returns:
        A dict with the last iteration, loss, checkpoint, best and (if evaluated) metrics.

    Raises:
        TrainingStopped: on a non-finite loss or non-finite weights; the files on
            disk are left as they were at the last snapshot.
        Interrupted: on Ctrl-C, with where to continue.
    """
    if len(train_set) < 1:
        raise ValueError(f"the training set has fewer samples ({train_set.num_samples}) than one "
                         f"batch ({train_set.batch_size}); lower --batch-size")
    log = RunLog(output_dir, max_iters, start_iter, print_freq, progress)
    snapshots = Snapshots(model, optimizer, output_dir, seed, config, checkpoint_extra, last=resumed_from,
                          keep=keep_checkpoints, best=best, scaler=scaler)
    end_iter = max_iters if stop_after is None else min(max_iters, start_iter + stop_after)
    iteration, loss_value = start_iter, float("nan")
    log.line(f"{'resumed from ' + str(resumed_from) + ' at' if start_iter else 'started at'} iteration "
             f"{start_iter} of {max_iters} (global batch {train_set.batch_size}, {world_size()} process(es))")
    model.train()
    t_data = time.time()
    try:
        for epoch, (image, label, _meta) in batches(train_set, start_iter) if iteration < end_iter else ():
            t_step = time.time()
            lr = poly_lr(base_lr, iteration, max_iters, power, min_lr)
            loss_value, parts = train_step(model, criterion, optimizer, image, label, lr,
                                           iteration_seed(seed, iteration), scaler)
            iteration += 1
            if scaler is not None and scaler.skipped_in_a_row >= AMP_PATIENCE:
                raise TrainingStopped(f"float16 overflow: {AMP_PATIENCE} steps in a row had non-finite gradients "
                                      f"(loss scale now {scaler.scale:g}) at iteration {iteration}. "
                                      f"{snapshots.advice(base_lr)}, or train without --amp")
            if not math.isfinite(loss_value) and scaler is None:
                log.event(iteration, "non-finite loss", loss=loss_value, lr=lr)
                raise TrainingStopped(f"loss is {loss_value} at iteration {iteration} (lr {lr:.3g}); stopping. "
                                      f"{snapshots.advice(base_lr)} (or check the data)")
            log.step(iteration, epoch, loss_value, parts, lr, t_step - t_data, time.time() - t_data,
                     last=iteration == end_iter)
            if eval_fn is not None and eval_interval and iteration % eval_interval == 0 and iteration < max_iters:
                log.pause()
                metrics = eval_fn(iteration)
                log.evaluation(iteration, metrics)
                snapshots.offer_best(iteration, metrics.get("mIoU", float("nan")), base_lr)
                model.train()
            if snapshot_interval and iteration % snapshot_interval == 0 and iteration < end_iter \
                    and snapshots.last_iter != iteration:
                snapshots.save(iteration, base_lr)
            if iteration >= end_iter:
                break
            t_data = time.time()
    except KeyboardInterrupt:
        log.close()
        where = (f"last checkpoint {snapshots.last}; continue with: python train.py --resume {output_dir}"
                 if snapshots.last else "no checkpoint written yet")
        log.line(f"interrupted at iteration {iteration}; {where}")
        raise Interrupted(f"interrupted at iteration {iteration}; {where}") from None
    except TrainingStopped as exc:
        log.close()
        log.line(f"stopped: {exc}")
        raise
    log.close()
    if snapshots.last_iter != iteration:
        snapshots.save(iteration, base_lr)
    result: dict = {"iter": iteration, "loss": loss_value, "checkpoint": snapshots.last}
    if eval_fn is not None and eval_interval and iteration == max_iters:
        result["metrics"] = eval_fn(iteration)
        log.evaluation(iteration, result["metrics"])
        snapshots.offer_best(iteration, result["metrics"].get("mIoU", float("nan")), base_lr)
    result["best"] = snapshots.best
    log.line(f"done: iteration {iteration}, loss {loss_value:.4f}, checkpoint {snapshots.last}"
             + (f", best mIoU {100 * snapshots.best['mIoU']:.2f} at iteration {snapshots.best['iter']}"
                if snapshots.best else ""))
    return result
