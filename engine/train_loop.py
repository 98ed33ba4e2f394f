"""The training loop: one step, the log, the snapshots and the periodic evaluation.

:func:`train` runs iterations ``start_iter .. max_iters`` and is built from
small parts, each readable on its own:

* :func:`batches` -- the batches from an iteration on, epoch by epoch (a
  resumed run skips what the interrupted one already used);
* :func:`train_step` -- learning rate, seed, forward, loss, backward and update;
* ``engine.run_log.RunLog`` -- ``log.jsonl``, ``train.log`` and the progress bar;
* ``engine.snapshots.Snapshots`` -- the checkpoints of a run folder (the
  newest few, the last, the best by validation mIoU);
* a non-finite loss, or weights that are no longer finite, stop the run
  (``engine.checkpoint.TrainingStopped``) with the last good checkpoint named and how to
  resume from it; no checkpoint with non-finite values is ever written;
  Ctrl-C says where the run stopped and how to continue (:class:`Interrupted`);
* SIGTERM or SIGUSR1 (a cluster's stop and time-limit warning) end the run after
  the step in progress, with a checkpoint of that iteration and the command
  that continues it (:class:`SignalStopped`); under MPI all ranks stop at the
  same iteration.
"""
from __future__ import annotations

import math
import signal
import time
from typing import Callable, Iterator, Optional, Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.amp import GradScaler
from engine.checkpoint import TrainingStopped
from engine.launch import iteration_seed
from engine.optim import poly_lr, release_gradients, set_lr
from engine.run_log import RunLog
from engine.snapshots import Snapshots
from utils.comm import all_reduce_mean, any_rank, world_size
from utils.fileio import OutputError, write_failure
from utils.jittor_fixes import backward_built_once, release_free_heap
from utils.stop_signals import StopSignal, deferred_stop_signals

__all__ = ["Interrupted", "SignalStopped", "AMP_PATIENCE", "batches", "train_step", "train"]


#: With mixed precision, how many skipped steps in a row (non-finite gradients) stop the run.
AMP_PATIENCE = 20


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the run stopped and how to continue it."""


class SignalStopped(StopSignal):
    """SIGTERM / SIGUSR1 during training: stopped after a step, with its checkpoint; the message says more."""


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
    backward pass reads (saved activations, :func:`utils.jittor_fixes.backward_built_once`)
    and the gradients (:func:`release_gradients`) are freed as soon as they
    have been used, and the heap's free pages are returned after the step
    (:func:`utils.jittor_fixes.release_free_heap`).
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


def _where(snapshots: Snapshots, output_dir: Optional[str]) -> str:
    """The last checkpoint and the command that continues from it (or that there is none)."""
    if not snapshots.last:
        return "no checkpoint written yet"
    return f"last checkpoint {snapshots.last}; continue with: python train.py --resume {output_dir}"


def train(model: nn.Module, criterion: Callable, optimizer: jt.optim.Optimizer, train_set,
          *, max_iters: int, base_lr: float, power: float = 0.9, min_lr: float = 0.0, seed: int = 0,
          start_iter: int = 0, output_dir: Optional[str] = None, snapshot_interval: int = 0,
          eval_interval: int = 0, eval_fn: Optional[Callable[[int], dict]] = None,
          print_freq: int = 10, config: Optional[dict] = None, checkpoint_extra: Optional[dict] = None,
          progress: bool = True, stop_after: Optional[int] = None, resumed_from: Optional[str] = None,
          keep_checkpoints: Optional[int] = None, best: Optional[dict] = None,
          scaler: Optional[GradScaler] = None, tensorboard: bool = False,
          class_names: Optional[Sequence[str]] = None) -> dict:
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
        tensorboard: also write TensorBoard events into ``output_dir/tensorboard``
            (``engine.run_log``); ``class_names`` name the per-class IoU curves.

    Returns:
        A dict with the last iteration, loss, checkpoint, best and (if evaluated) metrics.

    Raises:
        TrainingStopped: on a non-finite loss or non-finite weights; the files on
            disk are left as they were at the last snapshot.
        Interrupted: on Ctrl-C, with where to continue.
        SignalStopped: on SIGTERM or SIGUSR1, after the step in progress and its checkpoint.
    """
    if len(train_set) < 1:
        raise ValueError(f"the training set has fewer samples ({train_set.num_samples}) than one "
                         f"batch ({train_set.batch_size}); lower --batch-size")
    log = RunLog(output_dir, max_iters, start_iter, print_freq, progress, tensorboard, class_names)
    snapshots = Snapshots(model, optimizer, output_dir, seed, config, checkpoint_extra, last=resumed_from,
                          keep=keep_checkpoints, best=best, scaler=scaler)
    end_iter = max_iters if stop_after is None else min(max_iters, start_iter + stop_after)
    iteration, loss_value = start_iter, float("nan")
    log.line(f"{'resumed from ' + str(resumed_from) + ' at' if start_iter else 'started at'} iteration "
             f"{start_iter} of {max_iters} (global batch {train_set.batch_size}, {world_size()} process(es))")
    model.train()
    t_data = time.time()
    try:
        with deferred_stop_signals() as stop:
            for epoch, (image, label, _meta) in batches(train_set, start_iter) if iteration < end_iter else ():
                t_step = time.time()
                lr = poly_lr(base_lr, iteration, max_iters, power, min_lr)
                loss_value, parts = train_step(model, criterion, optimizer, image, label, lr,
                                               iteration_seed(seed, iteration), scaler)
                iteration += 1
                if scaler is not None and scaler.skipped_in_a_row >= AMP_PATIENCE:
                    raise TrainingStopped(f"float16 overflow: {AMP_PATIENCE} steps in a row had non-finite "
                                          f"gradients (loss scale now {scaler.scale:g}) at iteration {iteration}. "
                                          f"{snapshots.advice(base_lr)}, or train without --amp")
                if not math.isfinite(loss_value) and scaler is None:
                    log.event(iteration, "non-finite loss", loss=loss_value, lr=lr)
                    raise TrainingStopped(f"loss is {loss_value} at iteration {iteration} (lr {lr:.3g}); "
                                          f"stopping. {snapshots.advice(base_lr)} (or check the data)")
                log.step(iteration, epoch, loss_value, parts, lr, t_step - t_data, time.time() - t_data,
                         last=iteration == end_iter)
                if eval_fn is not None and eval_interval and iteration % eval_interval == 0 \
                        and iteration < max_iters:
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
                if any_rank(stop.signum is not None):  # every rank stops after the same iteration
                    if snapshots.last_iter != iteration:
                        snapshots.save(iteration, base_lr)
                    message = f"stopped by {stop.name} at iteration {iteration}; {_where(snapshots, output_dir)}"
                    log.close()
                    log.line(message)
                    raise SignalStopped(message, stop.signum or signal.SIGTERM)
                t_data = time.time()
    except SignalStopped:
        raise
    except KeyboardInterrupt as exc:
        log.close()
        what = str(exc) if isinstance(exc, StopSignal) else "interrupted"  # a second stop signal, or Ctrl-C
        message = f"{what} at iteration {iteration}; {_where(snapshots, output_dir)}"
        log.line(message)
        if isinstance(exc, StopSignal):
            raise SignalStopped(message, exc.signum) from None
        raise Interrupted(message) from None
    except TrainingStopped as exc:
        log.close()
        log.line(f"stopped: {exc}")
        raise
    except OSError as exc:
        failure = write_failure(exc)
        if not failure:
            raise
        message = (f"{failure} after iteration {iteration} (files are written whole or not at all); "
                   f"{_where(snapshots, output_dir)} once there is space")
        try:
            log.close()
            log.line(message)
        except OSError:
            pass
        raise OutputError(message) from None
    log.close()
    if snapshots.last_iter != iteration:
        snapshots.save(iteration, base_lr)
    result: dict = {"iter": iteration, "loss": loss_value, "checkpoint": snapshots.last}
    if eval_fn is not None and eval_interval and iteration == max_iters:
        result["metrics"] = eval_fn(iteration)
        log.evaluation(iteration, result["metrics"])
        log.close()  # the TensorBoard writer reopened for it
        snapshots.offer_best(iteration, result["metrics"].get("mIoU", float("nan")), base_lr)
    result["best"] = snapshots.best
    log.line(f"done: iteration {iteration}, loss {loss_value:.4f}, checkpoint {snapshots.last}"
             + (f", best mIoU {100 * snapshots.best['mIoU']:.2f} at iteration {snapshots.best['iter']}"
                if snapshots.best else ""))
    return result
