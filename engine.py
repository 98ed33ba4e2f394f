"""Training and evaluation loops shared by train.py, evaluate.py and demo.py.

Everything here is plain functions (no runner object, no global config):

* distributed helpers (:func:`rank`, :func:`world_size`, :func:`is_main`);
  under ``mpirun`` Jittor's optimizer all-reduces the gradients (mean), its
  BatchNorm synchronises the batch statistics, and datasets give each rank
  its share of every (global) batch;
* the poly learning-rate schedule and the optimizers (SGD, AdamW) with an
  optional learning-rate multiplier for the heads;
* checkpoints: one dict ``{model, optimizer, iter, epoch, rng, config,
  version, ...}`` written atomically (temporary file + ``os.replace``);
* :func:`train`: the iteration loop with exact resume, a progress bar, a JSON
  lines log, periodic evaluation and snapshots, and a stop on a non-finite loss;
* inference: whole image, sliding window (logits averaged over overlapping
  windows, as the official CCNet and mmsegmentation do), multi-scale and flip
  test-time augmentation (softmax probabilities averaged over the views, as
  mmsegmentation does);
* :func:`evaluate`: the evaluation loop with an MPI-reduced confusion matrix
  and optional colourised / submission PNGs.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from metrics import ConfusionMatrix

__all__ = [
    "CHECKPOINT_VERSION", "CheckpointError", "TrainingStopped",
    "rank", "world_size", "is_main", "set_device", "set_seed", "iteration_seed",
    "poly_lr", "build_optimizer", "set_lr", "optimizer_state", "load_optimizer_state",
    "model_state", "save_checkpoint", "load_checkpoint", "find_checkpoint", "JsonlLogger",
    "params_in_sync", "train",
    "slide_inference", "whole_inference", "inference", "evaluate", "mpi_shard_positions",
    "colorize", "save_prediction",
]

#: Version of the checkpoint dict layout written by :func:`save_checkpoint`.
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the run."""


class TrainingStopped(RuntimeError):
    """Training stopped early (non-finite loss); the message says which checkpoint is the last good one."""


# --------------------------------------------------------------------------- distributed

def rank() -> int:
    return int(jt.rank) if jt.in_mpi else 0


def world_size() -> int:
    return int(jt.world_size) if jt.in_mpi else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """print on rank 0 only."""
    if is_main():
        print(*args, **kwargs, flush=True)


def set_device(no_cuda: bool = False, amp: bool = False) -> str:
    """Select CPU or CUDA (and mixed precision); returns a short device description.

    ``amp`` needs a GPU: on the CPU it is an error (ValueError) rather than a
    silent fp32 run.
    """
    use_cuda = bool(jt.has_cuda) and not no_cuda
    jt.flags.use_cuda = 1 if use_cuda else 0
    if amp:
        if not use_cuda:
            raise ValueError("--amp (mixed precision) needs a CUDA GPU; this run is on the CPU "
                             f"({'--no-cuda given' if no_cuda else 'no GPU found'}). Drop --amp.")
        # Reductions (softmax, BN statistics, losses) stay in float32; see shared/reference/jittor.md §6.
        jt.flags.amp_level = 3
    return "cuda" if use_cuda else "cpu"


def set_seed(seed: int) -> None:
    """Seed Python, numpy and Jittor; Jittor's seed differs per MPI rank (dropout), the others do not."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    jt.set_seed(iteration_seed(seed, 0))


def iteration_seed(seed: int, iteration: int) -> int:
    """Jittor's seed for one training iteration: a function of (seed, iteration, rank) only.

    Reseeding Jittor at every iteration makes the random ops (dropout) of an
    iteration independent of what ran before it, so a resumed run draws
    exactly what an uninterrupted one would.
    """
    return (int(seed) * 1_000_003 + int(iteration) * 7919 + rank() * 2591) % (2 ** 31 - 1)


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


# --------------------------------------------------------------------------- schedule and optimizers

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
        opt = jt.optim.SGD(groups, lr, momentum=momentum, weight_decay=weight_decay)
    elif name == "adamw":
        opt = jt.optim.AdamW(groups, lr, betas=tuple(betas), weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose 'sgd' or 'adamw'")
    return opt


def set_lr(optimizer: jt.optim.Optimizer, lr: float) -> None:
    optimizer.lr = lr
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)


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


# --------------------------------------------------------------------------- checkpoints

def model_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict) -> None:
    if state.get("python") is not None:
        random.setstate(state["python"])
    if state.get("numpy") is not None:
        np.random.set_state(state["numpy"])


def save_checkpoint(path: str, payload: dict) -> str:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    An interrupted save (Ctrl-C, a killed job) leaves at worst a stray
    ``*.tmp-<pid>`` file; ``path`` is either the old complete file or the new one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=4)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _link_atomic(src: str, dst: str) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else a copy), replacing ``dst`` atomically."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil  # noqa: PLC0415
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (clear errors for a missing or broken file)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)
    except Exception as exc:  # truncated or foreign file
        try:
            obj = jt.load(path)  # a Jittor pickle (e.g. Module.save)
        except Exception:
            raise CheckpointError(f"cannot read checkpoint {path!r}: {exc}") from exc
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path!r} is not a train.py checkpoint (no 'model' entry)")
    return obj


def find_checkpoint(path: str) -> str:
    """``path`` itself if it is a file; for a folder, its ``checkpoint_last.pkl``."""
    if os.path.isdir(path):
        last = os.path.join(path, "checkpoint_last.pkl")
        if not os.path.isfile(last):
            raise CheckpointError(f"no checkpoint_last.pkl in {path!r}")
        return last
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    return path


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


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON write (rank 0 only)."""
    if not is_main():
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- training

def _first_loss_value(loss: jt.Var) -> float:
    value = loss.detach()
    if jt.in_mpi:
        value = value.mpi_all_reduce("mean")  # every rank sees the same (and the same NaN)
    return float(value.item())


def train(model: nn.Module, criterion: Callable, optimizer: jt.optim.Optimizer, train_set,
          *, max_iters: int, base_lr: float, power: float = 0.9, min_lr: float = 0.0, seed: int = 0,
          start_iter: int = 0, output_dir: Optional[str] = None, snapshot_interval: int = 0,
          eval_interval: int = 0, eval_fn: Optional[Callable[[int], dict]] = None,
          print_freq: int = 10, config: Optional[dict] = None, checkpoint_extra: Optional[dict] = None,
          progress: bool = True, stop_after: Optional[int] = None) -> dict:
    """Train ``model`` from iteration ``start_iter`` to ``max_iters``.

    Args:
        train_set: a dataset from ``datasets.build_dataset(train=True)`` (drop_last,
            ``set_epoch``); each pass over it is one epoch. The sample order and
            augmentation depend only on (seed, epoch, index), so starting at
            ``start_iter`` sets the epoch and skips the batches already seen.
        eval_fn: called as ``eval_fn(iteration)`` every ``eval_interval`` iterations
            (and at the end when ``eval_interval > 0``); returns a metrics dict to log.
        output_dir: where ``log.jsonl`` and the checkpoints go (rank 0 only);
            ``checkpoint_{iter:06d}.pkl`` every ``snapshot_interval`` iterations,
            ``checkpoint_last.pkl`` after each snapshot and at the end.
        stop_after: stop (with a checkpoint) after this many iterations of this
            run, e.g. to test resuming; ``None`` runs to ``max_iters``.

    Returns:
        A dict with the last iteration, loss and (if evaluated) metrics.

    Raises:
        TrainingStopped: on a non-finite loss; the files on disk are left as they
            were at the last snapshot.
    """
    iters_per_epoch = len(train_set)
    if iters_per_epoch < 1:
        raise ValueError(f"the training set has fewer samples ({train_set.num_samples}) than one "
                         f"batch ({train_set.batch_size}); lower --batch-size")
    logger = JsonlLogger(os.path.join(output_dir, "log.jsonl") if output_dir else None)
    if logger.path and start_iter == 0 and os.path.exists(logger.path):
        os.remove(logger.path)  # a fresh run in an old folder starts a new log; a resumed run appends
    last_good = [None]

    def snapshot(iteration: int, final: bool = False) -> None:
        if not (output_dir and is_main()):
            return
        payload = {
            "version": CHECKPOINT_VERSION,
            "model": model_state(model),
            "optimizer": optimizer_state(optimizer),
            "iter": iteration,
            # Jittor's generator is reseeded every iteration from (seed, iteration, rank):
            # recording the seed is enough to replay it (see iteration_seed).
            "rng": dict(_rng_state(), jittor={"seed": seed, "next_iteration": iteration}),
            "config": config or {},
            "world_size": world_size(),
        }
        payload.update(checkpoint_extra or {})
        path = os.path.join(output_dir, f"checkpoint_{iteration:06d}.pkl")
        save_checkpoint(path, payload)
        _link_atomic(path, os.path.join(output_dir, "checkpoint_last.pkl"))
        last_good[0] = path

    end_iter = max_iters if stop_after is None else min(max_iters, start_iter + stop_after)
    model.train()
    bar = None
    if progress and is_main():
        from tqdm import tqdm  # noqa: PLC0415
        bar = tqdm(total=max_iters, initial=start_iter, desc="train", dynamic_ncols=True,
                   unit="it", file=sys.stdout, mininterval=1.0)
    iteration = start_iter
    epoch, skip = divmod(start_iter, iters_per_epoch)
    result: dict = {"iter": iteration}
    loss_value = float("nan")
    t_data = time.time()
    t_start = time.time()
    try:
        while iteration < end_iter:
            train_set.set_epoch(epoch)
            for batch_index, (image, label, _meta) in enumerate(train_set):
                if batch_index < skip:
                    continue  # resume: batches this epoch already used
                data_time = time.time() - t_data
                lr = poly_lr(base_lr, iteration, max_iters, power, min_lr)
                set_lr(optimizer, lr)
                jt.set_seed(iteration_seed(seed, iteration))
                outputs = model(image)
                loss, parts = criterion(outputs, label)
                optimizer.step(loss)
                loss_value = _first_loss_value(loss)
                iteration += 1
                if not math.isfinite(loss_value):
                    where = (f"the last good checkpoint is {last_good[0]}" if last_good[0]
                             else "no checkpoint was written in this run")
                    logger.log(iter=iteration, event="non-finite loss", loss=loss_value, lr=lr)
                    raise TrainingStopped(
                        f"loss is {loss_value} at iteration {iteration} (lr {lr:.3g}); stopping. {where}. "
                        "Try a lower --lr, check the data, or resume from that checkpoint.")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
                if iteration % print_freq == 0 or iteration == end_iter:
                    # parts are this rank's (rank 0); "loss" is the mean over all ranks
                    record = {f"{k}": float(v) for k, v in (parts or {}).items()}
                    record.update({"iter": iteration, "epoch": epoch, "loss": loss_value, "lr": lr,
                                   "data_time": round(data_time, 4),
                                   "elapsed": round(time.time() - t_start, 2)})
                    logger.log(**record)
                if snapshot_interval and iteration % snapshot_interval == 0 and iteration < end_iter:
                    snapshot(iteration)
                if eval_fn is not None and eval_interval and iteration % eval_interval == 0 \
                        and iteration < max_iters:
                    metrics = eval_fn(iteration)
                    logger.log(iter=iteration, **{f"val/{k}": v for k, v in metrics.items()
                                                  if isinstance(v, (int, float))})
                    model.train()
                t_data = time.time()
                if iteration >= end_iter:
                    break
            skip = 0
            epoch += 1
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = last_good[0] or "none written in this run"
        print0(f"\ninterrupted at iteration {iteration}; last checkpoint: {where}")
        raise
    if bar is not None:
        bar.close()
    snapshot(iteration, final=True)
    result.update(iter=iteration, loss=loss_value, checkpoint=last_good[0])
    if eval_fn is not None and eval_interval and iteration == max_iters:
        metrics = eval_fn(iteration)
        logger.log(iter=iteration, **{f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        result["metrics"] = metrics
    return result


# --------------------------------------------------------------------------- inference

def _pair(v) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return v[0], v[0]
    if len(v) != 2:
        raise ValueError(f"expected one or two sizes, got {v}")
    return v


def whole_inference(model: nn.Module, image: jt.Var) -> jt.Var:
    """Logits of the whole image at the image's size."""
    return model.predict(image)


def slide_inference(model: nn.Module, image: jt.Var, num_classes: int, crop_size, stride) -> jt.Var:
    """Sliding-window logits at the image's size.

    Windows of ``crop_size=(h, w)`` start every ``stride`` pixels; the last
    window of a row or column is shifted inward to end at the border (so every
    pixel is covered), and an image smaller than the crop is one window of the
    image's own size. Each window's logits are upsampled to the window size by
    ``model.predict``; overlapping logits are summed and divided by the number
    of windows covering each pixel (official CCNet ``predict_sliding``,
    mmsegmentation ``slide_inference``).
    """
    ch, cw = _pair(crop_size)
    sh, sw = _pair(stride)
    if min(ch, cw, sh, sw) <= 0:
        raise ValueError(f"crop size and stride must be positive, got crop {crop_size}, stride {stride}")
    b, _, h, w = image.shape
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = np.zeros((b, num_classes, h, w), dtype=np.float32)
    count = np.zeros((1, 1, h, w), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, h), min(c * sw + cw, w)
            y0, x0 = max(y1 - ch, 0), max(x1 - cw, 0)
            out = model.predict(image[:, :, y0:y1, x0:x1])
            logits[:, :, y0:y1, x0:x1] += out.numpy()
            count[:, :, y0:y1, x0:x1] += 1
    return jt.array(logits / count)


def _resize(x: jt.Var, size: tuple[int, int], align_corners: bool) -> jt.Var:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return nn.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def inference(model: nn.Module, image: jt.Var, num_classes: int, out_size: Optional[Sequence[int]] = None,
              mode: str = "whole", crop_size=None, stride=None,
              scales: Sequence[float] = (1.0,), flip: bool = False) -> jt.Var:
    """Scores ``[B, C, *out_size]`` for a batch of images, with optional test-time augmentation.

    With one scale and no flip the scores are the logits (whole image or
    sliding window); otherwise each view (scale x [flip]) gives softmax
    probabilities at ``out_size`` and the views are averaged. Images are
    rescaled bilinearly (``align_corners=False``, like OpenCV); scores are
    resized with the model's ``align_corners``.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and (crop_size is None or stride is None):
        raise ValueError("slide inference needs crop_size and stride")
    scales = tuple(float(s) for s in scales) or (1.0,)
    if min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {scales}")
    h, w = image.shape[2:]
    out_size = (h, w) if out_size is None else tuple(int(s) for s in out_size)
    align = bool(getattr(model, "align_corners", True))
    tta = len(scales) > 1 or flip
    total = None
    for s in scales:
        size = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
        scaled = _resize(image, size, align_corners=False)
        views = [False, True] if flip else [False]
        for flipped in views:
            x = scaled[:, :, :, ::-1] if flipped else scaled
            if mode == "slide":
                out = slide_inference(model, x, num_classes, crop_size, stride)
            else:
                out = whole_inference(model, x)
            if flipped:
                out = out[:, :, :, ::-1]
            out = _resize(out, out_size, align)
            if tta:
                out = nn.softmax(out, dim=1)
            total = out if total is None else total + out
    n_views = len(scales) * (2 if flip else 1)
    return total / n_views if tta else total


# --------------------------------------------------------------------------- evaluation

def mpi_shard_positions(total: int, batch_size: int, world: int, rank_: int, drop_last: bool = False) -> np.ndarray:
    """The dataset positions Jittor's loader gives ``rank_`` (unshuffled), per ``jittor/dataset/dataset.py``.

    Jittor gives each rank ``ceil(batch_size / world)`` samples of every batch
    and, for a short last batch, *repeats* samples so that every rank gets
    some; :func:`evaluate` uses this to count each sample once.
    """
    real = (batch_size - 1) // world + 1
    fix = total // batch_size
    last = total - fix * batch_size
    idx = np.arange(total)
    out = idx[:fix * batch_size].reshape(-1, batch_size)[:, real * rank_: real * (rank_ + 1)].reshape(-1)
    if not drop_last and last > 0:
        tail = idx[total - last:]
        real_last = (last - 1) // world + 1
        lo = real_last * rank_
        hi = lo + real_last
        if hi > last:
            hi = last
            lo = hi - real_last
        out = np.concatenate([out, tail[lo:hi]])
    return out


def _owned_names(dataset) -> Optional[set]:
    """Names of the samples this rank counts (None: all, single process)."""
    if not jt.in_mpi:
        return None
    n, world, me = dataset.num_samples, world_size(), rank()
    owner: dict[int, int] = {}
    for r in range(world):
        for p in mpi_shard_positions(n, dataset.batch_size, world, r, dataset.drop_last):
            owner.setdefault(int(p), r)
    return {dataset.samples[p].name for p, r in owner.items() if r == me}


def colorize(pred: np.ndarray, palette: Sequence[Sequence[int]]):
    """A palette ('P' mode) PIL image of class indices; index 255 (ignore) is black."""
    from PIL import Image  # noqa: PLC0415
    flat = [c for rgb in palette for c in rgb]
    flat += [0] * (768 - len(flat))
    im = Image.fromarray(np.ascontiguousarray(pred, dtype=np.uint8), mode="P")
    im.putpalette(flat)
    return im


def save_prediction(pred: np.ndarray, path: str, palette=None, lut: Optional[np.ndarray] = None) -> None:
    """Save one prediction: colourised with ``palette``, or mapped through ``lut`` as a grayscale PNG."""
    from PIL import Image  # noqa: PLC0415
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if lut is not None:
        Image.fromarray(lut[pred].astype(np.uint8), mode="L").save(path)
    else:
        colorize(pred, palette).save(path)


def evaluate(model: nn.Module, dataset, num_classes: int, *, ignore_index: int = 255,
             mode: str = "whole", crop_size=None, stride=None, scales: Sequence[float] = (1.0,),
             flip: bool = False, pred_dir: Optional[str] = None, palette=None,
             submission_dir: Optional[str] = None, label_lut: Optional[np.ndarray] = None,
             progress: bool = True, desc: str = "eval") -> dict:
    """Evaluate ``model`` on ``dataset`` (an eval ``build_dataset``); returns :meth:`ConfusionMatrix.compute`.

    Predictions are compared with the labels at the original image size (the
    scores are resized to it). Under MPI each rank runs its share of every batch
    and the confusion matrices are summed; samples Jittor repeats on several
    ranks (short last batch) are counted and saved once. ``pred_dir`` gets
    colourised PNGs (``palette``), ``submission_dir`` grayscale PNGs of
    ``label_lut[train id]`` (e.g. Cityscapes label ids), named after each sample.
    Unlabelled images (``has_label`` False) are predicted and saved but not scored.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    owned = _owned_names(dataset)
    bar = None
    if progress and is_main():
        from tqdm import tqdm  # noqa: PLC0415
        bar = tqdm(total=len(dataset), desc=desc, dynamic_ncols=True, unit="batch", file=sys.stdout,
                   mininterval=1.0)
    seen = 0
    with jt.no_grad():
        for image, label, meta in dataset:
            sizes = {tuple(s) for s in meta["ori_size"]}
            if len(sizes) != 1:
                raise ValueError(f"one batch holds images of different sizes {sorted(sizes)}; use --batch-size 1")
            out_size = sizes.pop()
            scores = inference(model, image, num_classes, out_size, mode, crop_size, stride, scales, flip)
            pred = jt.argmax(scores, dim=1)[0].numpy().astype(np.int64)
            label_np = label.numpy()
            for i, name in enumerate(meta["name"]):
                if owned is not None and name not in owned:
                    continue
                seen += 1
                if meta["has_label"][i]:
                    matrix.update(label_np[i], pred[i])
                if pred_dir:
                    save_prediction(pred[i], os.path.join(pred_dir, f"{name}.png"), palette=palette)
                if submission_dir:
                    save_prediction(pred[i], os.path.join(submission_dir, f"{name}.png"), lut=label_lut)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    matrix.reduce()
    result = matrix.compute()
    result["images"] = int(round(jt.array([float(seen)]).mpi_all_reduce("add").item())) if jt.in_mpi else seen
    result["matrix"] = matrix.mat.tolist()
    return result
