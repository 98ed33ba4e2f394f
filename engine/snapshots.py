"""The checkpoints of a run folder: numbered snapshots, the last and the best, never a non-finite one."""
from __future__ import annotations

import math
import os
import re
from typing import Optional


import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.amp import GradScaler
from engine.checkpoint import CHECKPOINT_VERSION, LAST, TrainingStopped, model_state, save_checkpoint
from engine.launch import rng_state
from engine.optim import optimizer_state
from utils.comm import any_rank, is_main, world_size
from utils.fileio import link_atomic
from utils.weight_files import non_finite

__all__ = ["Snapshots"]


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
        """Write the checkpoint of ``iteration``; TrainingStopped instead if a weight or buffer is not finite.

        Rank 0 checks and writes; under MPI every rank learns the outcome (:func:`utils.comm.any_rank`),
        so that all of them stop together instead of the others waiting in their next collective.
        """
        if not self.output_dir:
            return None
        bad: list = []
        if is_main():
            state, optim = model_state(self.model), optimizer_state(self.optimizer)
            bad = non_finite(state.items()) + non_finite(
                (f"optimizer {key}", a) for g in optim["groups"] for key in ("values", "m") for a in g.get(key, []))
        if any_rank(bool(bad)):
            raise TrainingStopped(
                f"the weights are not finite after iteration {iteration} ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}); no checkpoint written. {self.advice(base_lr)}")
        if not is_main():
            self.last_iter = iteration  # as on rank 0, so that every rank takes the same saves
            return None
        payload = {
            "version": CHECKPOINT_VERSION,
            "model": state,
            "optimizer": optim,
            "iter": iteration,
            # Jittor's generator is reseeded every iteration from (seed, iteration, rank):
            # recording the seed is enough to replay it (engine.launch.iteration_seed).
            "rng": dict(rng_state(), jittor={"seed": self.seed, "next_iteration": iteration}),
            "config": self.config,
            "world_size": world_size(),
            "best": self.best,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        payload.update(self.extra)
        path = os.path.join(self.output_dir, f"checkpoint_{iteration:06d}.pkl")
        save_checkpoint(path, payload)
        link_atomic(path, os.path.join(self.output_dir, LAST))
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
        """After an evaluation: make the iteration's checkpoint ``checkpoint_best.pkl`` if its mIoU is higher.

        Called on every rank (the mIoU of an evaluation is the same on all): :meth:`save` is collective.
        """
        if not self.output_dir or not math.isfinite(miou):
            return False
        if self.best is not None and miou <= self.best["mIoU"]:
            return False
        self.best = {"mIoU": float(miou), "iter": int(iteration)}
        path = self.save(iteration, base_lr)  # (again, if written already: it now records the new best)
        if path:
            link_atomic(path, os.path.join(self.output_dir, "checkpoint_best.pkl"))
        return True
