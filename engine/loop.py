"""The training loop: one step, the log, the snapshots and the periodic evaluation.

:func:`train` runs iterations ``start_iter .. max_iters`` and is built from
small parts, each readable on its own:

* :func:`batches` -- the batches from an iteration on, epoch by epoch (a
  resumed run skips what the interrupted one already used);
* :func:`train_step` -- learning rate, seed, forward, loss, backward and update;
* :class:`JsonlLogger` -- one JSON object per logged iteration or evaluation;
* :class:`Snapshots` -- the checkpoints of a run folder;
* a non-finite loss, or weights that are no longer finite, stop the run
  (:class:`TrainingStopped`) with the last good checkpoint named and how to
  resume from it; no checkpoint with non-finite values is ever written;
  Ctrl-C says where the run stopped and how to continue (:class:`Interrupted`).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Optional

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.checkpoint import CHECKPOINT_VERSION, link_atomic, model_state, rng_state, save_checkpoint
from engine.dist import all_reduce_mean, is_main, iteration_seed, world_size
from engine.optim import optimizer_state, poly_lr, set_lr

__all__ = ["TrainingStopped", "Interrupted", "JsonlLogger", "Snapshots", "batches", "train_step", "train"]


class TrainingStopped(RuntimeError):
    """Training stopped early (non-finite loss or weights); the message names the last good checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the run stopped and how to continue it."""


def _non_finite(arrays) -> list[str]:
    return [name for name, a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)
            and not np.isfinite(a).all()]


class JsonlLogger:
    """Appends one JSON object per line (rank 0 only); NaN/inf written as strings."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path if is_main() else None
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def log(self, **record: Any) -> None:
        if not self.path:
            return
        clean = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


class Snapshots:
    """Writes the checkpoints of a run: ``checkpoint_{iter:06d}.pkl`` and ``checkpoint_last.pkl`` (rank 0)."""

    def __init__(self, model: nn.Module, optimizer: jt.optim.Optimizer, output_dir: Optional[str], seed: int,
                 config: Optional[dict] = None, extra: Optional[dict] = None, last: Optional[str] = None) -> None:
        self.model, self.optimizer, self.output_dir = model, optimizer, output_dir
        self.seed, self.config, self.extra = seed, config or {}, extra or {}
        self.last = last   # the last good checkpoint: this run's newest, or the one it resumed from

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
        }
        payload.update(self.extra)
        path = os.path.join(self.output_dir, f"checkpoint_{iteration:06d}.pkl")
        save_checkpoint(path, payload)
        link_atomic(path, os.path.join(self.output_dir, "checkpoint_last.pkl"))
        self.last = path
        return path


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
               label: jt.Var, lr: float, seed: int) -> tuple[float, dict]:
    """One iteration at learning rate ``lr`` with Jittor seeded by ``seed``; returns ``(loss, loss parts)``.

    The loss is the mean over all processes (every rank sees the same value,
    the same NaN included); the parts are this rank's.
    """
    set_lr(optimizer, lr)
    jt.set_seed(seed)
    loss, parts = criterion(model(image), label)
    optimizer.step(loss)
    return float(all_reduce_mean(loss.detach()).item()), parts


def _progress_bar(enabled: bool, total: int, initial: int):
    if not (enabled and is_main()):
        return None
    from tqdm import tqdm  # noqa: PLC0415  (only with a progress bar)
    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, unit="it", file=sys.stdout,
                mininterval=1.0)


def _eval_record(iteration: int, metrics: dict) -> dict:
    return {"iter": iteration, **{f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}}


def train(model: nn.Module, criterion: Callable, optimizer: jt.optim.Optimizer, train_set,
          *, max_iters: int, base_lr: float, power: float = 0.9, min_lr: float = 0.0, seed: int = 0,
          start_iter: int = 0, output_dir: Optional[str] = None, snapshot_interval: int = 0,
          eval_interval: int = 0, eval_fn: Optional[Callable[[int], dict]] = None,
          print_freq: int = 10, config: Optional[dict] = None, checkpoint_extra: Optional[dict] = None,
          progress: bool = True, stop_after: Optional[int] = None, resumed_from: Optional[str] = None) -> dict:
    """Train ``model`` from iteration ``start_iter`` to ``max_iters`` (poly schedule).

    Args:
        train_set: a training dataset (``datasets.build_dataset(train=True)``).
        eval_fn: called as ``eval_fn(iteration)`` every ``eval_interval`` iterations
            and at the end when ``eval_interval > 0``; returns a metrics dict to log.
        output_dir: where ``log.jsonl`` and the checkpoints go (rank 0 only): one
            every ``snapshot_interval`` iterations and one at the end.
        stop_after: stop (with a checkpoint) after this many iterations of this
            run, e.g. to test resuming; ``None`` runs to ``max_iters``.
        resumed_from: the checkpoint this run continues (the last good one until a new one is written).

    Returns:
        A dict with the last iteration, loss, checkpoint and (if evaluated) metrics.

    Raises:
        TrainingStopped: on a non-finite loss or non-finite weights; the files on
            disk are left as they were at the last snapshot.
        Interrupted: on Ctrl-C, with where to continue.
    """
    if len(train_set) < 1:
        raise ValueError(f"the training set has fewer samples ({train_set.num_samples}) than one "
                         f"batch ({train_set.batch_size}); lower --batch-size")
    logger = JsonlLogger(os.path.join(output_dir, "log.jsonl") if output_dir else None)
    snapshots = Snapshots(model, optimizer, output_dir, seed, config, checkpoint_extra, last=resumed_from)
    end_iter = max_iters if stop_after is None else min(max_iters, start_iter + stop_after)
    bar = _progress_bar(progress, max_iters, start_iter)
    iteration, loss_value = start_iter, float("nan")
    model.train()
    t_start = t_data = time.time()
    try:
        for epoch, (image, label, _meta) in batches(train_set, start_iter) if iteration < end_iter else ():
            data_time = time.time() - t_data
            lr = poly_lr(base_lr, iteration, max_iters, power, min_lr)
            loss_value, parts = train_step(model, criterion, optimizer, image, label, lr,
                                           iteration_seed(seed, iteration))
            iteration += 1
            if not math.isfinite(loss_value):
                logger.log(iter=iteration, event="non-finite loss", loss=loss_value, lr=lr)
                raise TrainingStopped(f"loss is {loss_value} at iteration {iteration} (lr {lr:.3g}); stopping. "
                                      f"{snapshots.advice(base_lr)} (or check the data)")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
            if iteration % print_freq == 0 or iteration == end_iter:
                # parts are this rank's (rank 0); "loss" is the mean over all ranks
                record = {k: float(v) for k, v in (parts or {}).items()}
                record.update(iter=iteration, epoch=epoch, loss=loss_value, lr=lr, data_time=round(data_time, 4),
                              elapsed=round(time.time() - t_start, 2))
                logger.log(**record)
            if snapshot_interval and iteration % snapshot_interval == 0 and iteration < end_iter:
                snapshots.save(iteration, base_lr)
            if eval_fn is not None and eval_interval and iteration % eval_interval == 0 and iteration < max_iters:
                logger.log(**_eval_record(iteration, eval_fn(iteration)))
                model.train()
            if iteration >= end_iter:
                break
            t_data = time.time()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = (f"last checkpoint {snapshots.last}; continue with: python train.py --resume {output_dir}"
                 if snapshots.last else "no checkpoint written yet")
        raise Interrupted(f"interrupted at iteration {iteration}; {where}") from None
    if bar is not None:
        bar.close()
    snapshots.save(iteration, base_lr)
    result: dict = {"iter": iteration, "loss": loss_value, "checkpoint": snapshots.last}
    if eval_fn is not None and eval_interval and iteration == max_iters:
        result["metrics"] = eval_fn(iteration)
        logger.log(**_eval_record(iteration, result["metrics"]))
    return result
