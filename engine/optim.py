"""Optimizers, the poly learning-rate schedule, and the optimizer state kept in checkpoints."""
from __future__ import annotations

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from engine.checkpoint import CheckpointError

__all__ = ["poly_lr", "build_optimizer", "set_lr", "release_gradients", "optimizer_state", "load_optimizer_state"]


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float = 0.9, min_lr: float = 0.0) -> float:
    """``(base_lr - min_lr) * (1 - it / max_iters) ** power + min_lr`` with a 0-based ``iteration``.

    With ``min_lr=0`` this is the official CCNet schedule; mmsegmentation uses
    ``min_lr=1e-4``.
    """
    frac = min(max(iteration / float(max_iters), 0.0), 1.0)
    return (base_lr - min_lr) * (1.0 - frac) ** power + min_lr


def build_optimizer(model: nn.Module, name: str = "sgd", lr: float = 1e-2, momentum: float = 0.9,
                    weight_decay: float = 5e-4, head_lr_mult: float = 1.0,
                    betas: tuple[float, float] = (0.9, 0.999)) -> jt.optim.Optimizer:
    """SGD (momentum, official CCNet) or AdamW over the trainable parameters.

    With ``head_lr_mult != 1`` there are two parameter groups: the backbone
    (``model.backbone``) at ``lr`` and everything else (neck, heads) at
    ``lr * head_lr_mult``. Each group keeps its multiplier as ``lr_mult``;
    :func:`set_lr` applies the schedule to all groups.
    """
    params = [p for p in model.parameters() if not p.is_stop_grad()]
    if not params:
        raise ValueError("the model has no trainable parameters")
    backbone = getattr(model, "backbone", None)
    if head_lr_mult != 1.0:
        if backbone is None:
            raise ValueError("--head-lr-mult needs a model with a .backbone attribute")
        in_backbone = {id(p) for p in backbone.parameters()}
        groups = [{"params": [p for p in params if id(p) in in_backbone], "lr_mult": 1.0},
                  {"params": [p for p in params if id(p) not in in_backbone], "lr_mult": float(head_lr_mult)}]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": params, "lr_mult": 1.0}]
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    name = name.lower()
    if name == "sgd":
        return jt.optim.SGD(groups, lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return jt.optim.AdamW(groups, lr, betas=tuple(betas), weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose 'sgd' or 'adamw'")


def set_lr(optimizer: jt.optim.Optimizer, lr: float) -> None:
    """Set the base learning rate; each group gets ``lr * lr_mult``."""
    optimizer.lr = lr
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)


def release_gradients(optimizer: jt.optim.Optimizer) -> None:
    """Drop the optimizer's references to the gradients of the step it has just built.

    ``jt.optim.Optimizer`` keeps each step's gradients in
    ``param_groups[i]["grads"]`` (for ``opt_grad`` and gradient accumulation)
    until the next backward pass replaces them. Those references keep every
    gradient in memory to the end of the step's execution, although the
    update that reads it runs as soon as it is ready, and on until the next
    step (through an evaluation, while a checkpoint is written): up to a
    parameter-sized set. PyTorch frees them
    (``zero_grad(set_to_none=True)``). Called after ``optimizer.step(loss)``
    and before the step runs, it lets each gradient go once its update has
    run. The next ``optimizer.backward`` creates the list again and, with the
    zero-grad flag the step has set, fills it with that step's gradients
    alone, so every update stays the same.
    """
    for group in optimizer.param_groups:
        group.pop("grads", None)


_OPT_BUFFERS = ("values", "m")  # SGD momentum / Adam(W) second and first moments


def optimizer_state(optimizer: jt.optim.Optimizer) -> dict:
    """The optimizer's step count, hyper-parameters and state buffers as numpy (not the parameters)."""
    groups = []
    for g in optimizer.param_groups:
        entry = {k: v for k, v in g.items() if k not in ("params", "grads") + _OPT_BUFFERS}
        for key in _OPT_BUFFERS:
            if key in g:
                entry[key] = [v.numpy() for v in g[key]]
        entry["shapes"] = [tuple(p.shape) for p in g["params"]]
        groups.append(entry)
    return {"type": type(optimizer).__name__, "n_step": int(optimizer.n_step), "lr": float(optimizer.lr),
            "groups": groups}


def load_optimizer_state(optimizer: jt.optim.Optimizer, state: dict) -> None:
    """Inverse of :func:`optimizer_state`; checks the optimizer type and the parameter shapes."""
    if state.get("type") != type(optimizer).__name__:
        raise CheckpointError(f"the checkpoint's optimizer is {state.get('type')}, this run uses "
                              f"{type(optimizer).__name__} (--opt must match to resume)")
    if len(state["groups"]) != len(optimizer.param_groups):
        raise CheckpointError(f"the checkpoint has {len(state['groups'])} parameter groups, this run "
                              f"{len(optimizer.param_groups)} (--head-lr-mult must match to resume)")
    for g, s in zip(optimizer.param_groups, state["groups"]):
        shapes = [tuple(p.shape) for p in g["params"]]
        if shapes != [tuple(x) for x in s["shapes"]]:
            raise CheckpointError("the checkpoint's optimizer state does not fit this model's parameters")
        for key in _OPT_BUFFERS:
            if key in g:
                for var, arr in zip(g[key], s[key]):
                    var.update(jt.array(arr).stop_grad())
        for k, v in s.items():
            if k not in ("shapes",) + _OPT_BUFFERS:
                g[k] = v
    optimizer.n_step = int(state["n_step"])
    optimizer.lr = float(state["lr"])
