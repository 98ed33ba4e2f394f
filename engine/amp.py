"""Mixed-precision training: float16 compute (``models.precision``) with dynamic loss scaling.

Jittor 1.3.11 has no gradient scaler. :class:`GradScaler` is a small one in
the usual form: the loss is multiplied by ``scale`` before the backward pass
so that small float16 gradients do not flush to zero; the gradients (of the
float32 master weights) are divided by it again before the update. When any
gradient is infinite or NaN the update is skipped and the scale is halved;
after ``growth_interval`` good steps in a row it is doubled. Its state is
kept in checkpoints, so a resumed run continues with the same scale.
"""
from __future__ import annotations

import math

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

__all__ = ["GradScaler"]


class GradScaler:
    """Dynamic loss scaling for one optimizer (see the module docstring).

    Args:
        init_scale: the first scale (2**16).
        growth_factor, backoff_factor: multiply the scale by these after
            ``growth_interval`` good steps / after a step with non-finite gradients.
        growth_interval: good steps in a row before the scale grows (2000).
        min_scale: the scale never goes below this.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, min_scale: float = 2.0 ** -14) -> None:
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1 and growth_interval >= 1):
            raise ValueError("GradScaler needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and "
                             "growth_interval >= 1")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.min_scale = int(growth_interval), float(min_scale)
        self.good_steps = 0        # finite steps since the last change of the scale
        self.skipped_in_a_row = 0  # steps skipped for non-finite gradients since the last good one
        self.skipped = 0           # steps skipped in all

    @staticmethod
    def _grads(optimizer: jt.optim.Optimizer) -> list[jt.Var]:
        return [g for group in optimizer.param_groups for p, g in zip(group["params"], group.get("grads", []))
                if not p.is_stop_grad()]

    def step(self, optimizer: jt.optim.Optimizer, loss: jt.Var) -> bool:
        """Backward of ``loss * scale``, then the update with unscaled gradients if all are finite.

        Returns True when the update was made, False when it was skipped. Under
        MPI the gradients are the processes' mean, so every rank decides the same.
        """
        optimizer.backward(loss * self.scale)
        grads = self._grads(optimizer)
        bad = sum(jt.logical_not(jt.isfinite(g)).sum() for g in grads)
        finite = int(bad.item()) == 0
        if finite:
            inverse = 1.0 / self.scale
            for g in grads:
                g.update(g * inverse)
            optimizer.step()
        else:
            optimizer.zero_grad()  # the next backward replaces these gradients instead of adding to them
        self.update(finite)
        return finite

    def update(self, finite: bool) -> None:
        """Adjust the scale after a step (``finite``: its gradients were all finite)."""
        if finite:
            self.skipped_in_a_row = 0
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
        else:
            self.skipped += 1
            self.skipped_in_a_row += 1
            self.good_steps = 0
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped_in_a_row": self.skipped_in_a_row,
                "skipped": self.skipped, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "min_scale": self.min_scale}

    def load_state_dict(self, state: dict) -> None:
        scale = float(state["scale"])
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"a loss scale must be a positive number, got {scale}")
        self.scale = scale
        for key in ("good_steps", "skipped_in_a_row", "skipped", "growth_interval"):
            setattr(self, key, int(state.get(key, getattr(self, key))))
        for key in ("growth_factor", "backoff_factor", "min_scale"):
            setattr(self, key, float(state.get(key, getattr(self, key))))
