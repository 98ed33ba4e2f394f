"""train.py's run: from options to a trained model in a run folder.

:func:`run` resolves the configuration (:mod:`cli.config`), continues a
checkpoint when resuming, builds the model (with ImageNet or whole-model
weights), loss, optimizer and data, writes ``config.json`` and hands over to
the loop (:func:`engine.train_loop.train`), with the periodic evaluation
(:func:`evaluation.evaluator.evaluate`) as its callable.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Optional

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from apis.model_files import load_into
from cli import run_folder
from cli.config import given_options, merge_resume_config, resolve_train_config
from datasets import build_dataset, get_preset
from engine.amp import GradScaler
from engine.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from engine.launch import set_device, set_rng_state, set_seed
from engine.optim import build_optimizer, load_optimizer_state
from engine.train_loop import train
from engine.run_log import tensorboard_problem
from evaluation.evaluator import evaluate
from models import build_model
from models.losses import SegmentationLoss
from models.weights import load_state_dict_strict
from utils import comm
from utils.fileio import check_output_dir, write_json
from utils.jittor_fixes import materialize

__all__ = ["configure", "build_train_set", "run"]


def configure(options: Mapping[str, Any], check_folder: bool = True) -> tuple[dict, Optional[dict]]:
    """The run's configuration and, when resuming, the checkpoint it continues (nothing is written yet).

    With ``check_folder`` the run folder is claimed for this process (``cli.run_folder.claim``; the
    caller releases it) and checked.
    """
    cfg = resolve_train_config(options)
    checkpoint = None
    if options.get("resume"):
        path = find_checkpoint(cfg["resume"])
        checkpoint = load_checkpoint(path)
        given = given_options(options)
        cfg = merge_resume_config(cfg, checkpoint.get("config") or {}, given)
        numbered = os.path.join(os.path.dirname(path), f"checkpoint_{int(checkpoint['iter']):06d}.pkl")
        if os.path.isfile(numbered) and os.path.samefile(numbered, path):
            path = numbered  # the name that keeps meaning this checkpoint after the next snapshot
        cfg["resume"] = os.path.abspath(path)
        if "output_dir" not in given:
            # the run continues where its checkpoint is now, also after the folder was moved or copied
            here, saved = os.path.dirname(cfg["resume"]), cfg.get("output_dir")
            if saved and os.path.abspath(saved) != here:
                comm.print0(f"note: this run was started in {saved}; it continues in {here}")
            cfg["output_dir"] = here
        saved_world, world = int(checkpoint.get("world_size", 1)), comm.world_size()
        if saved_world != world:
            raise CheckpointError(
                f"{path} was trained with {saved_world} process(es), this run has {world}: each process's "
                f"share of the batch and its random draws depend on that, so the run would not continue "
                f"exactly; resume it with {'mpirun -np ' + str(saved_world) + ' ' if saved_world > 1 else ''}"
                f"python train.py --resume ...")
    problem = tensorboard_problem() if cfg.get("tensorboard") else None
    if problem:
        raise ValueError(problem)
    if not check_folder:
        return cfg, checkpoint
    check_output_dir(cfg["output_dir"], "--output-dir")
    run_folder.check_not_foreign(cfg["output_dir"])  # before the lock file is made there
    if comm.is_main():
        run_folder.claim(cfg["output_dir"])  # before the check: a second start cannot pass it meanwhile
    try:
        if checkpoint is None or cfg["output_dir"] != os.path.dirname(cfg["resume"]):
            # every rank decides from the same files; only rank 0 removes an old run (--overwrite)
            run_folder.check_fresh(cfg["output_dir"], cfg["overwrite"], remove=comm.is_main())
        comm.barrier()  # nobody writes into the folder before every rank has looked at it
    except BaseException:
        run_folder.release(cfg["output_dir"])
        raise
    return cfg, checkpoint


def build_train_set(cfg: Mapping[str, Any], input_norm, world: int):
    """The training dataset of ``cfg`` (this rank's share of every global batch)."""
    scale_range = tuple(cfg["scale_range"]) if cfg.get("scale_range") else None
    if not cfg["random_scale"]:
        scale_range = (1.0, 1.0)
    # Bound each worker's buffer to about two batches instead of Jittor's 512 MB: the
    # workers then stay a few batches ahead of a slow training step rather than
    # holding up to a whole pass of batches in memory.
    crop_h, crop_w = cfg["crop_size"]
    frames = cfg.get("clip_length") or 1
    batch_bytes = cfg["batch_size"] // max(1, world) * crop_h * crop_w * (3 * 4 * frames + 4)
    return build_dataset(cfg["dataset"], cfg["data_path"], split=cfg["train_split"], train=True,
                         input_norm=input_norm, crop_size=tuple(cfg["crop_size"]), scale_range=scale_range,
                         flip=cfg["random_mirror"], list_file=cfg.get("list_file"), seed=cfg["seed"],
                         clip_length=cfg.get("clip_length"), clip_stride=cfg.get("clip_stride") or 1,
                         batch_size=cfg["batch_size"], num_workers=cfg["workers"], shuffle=True, drop_last=True,
                         buffer_size=2 * batch_bytes + (4 << 20))


_USED_AS = {"whole": "--weights (a whole model)", "backbone": "--pretrained (ImageNet backbone weights)"}


def _initial_weights(model: nn.Module, cfg: Mapping[str, Any], checkpoint: Optional[dict]) -> None:
    """The resumed checkpoint's weights; else ``--pretrained``, ``--weights`` or their ``--restore-from``.

    Each file may be a train.py checkpoint, a converted weights file or a raw
    PyTorch file (converted in memory); a backbone-only file given as
    ``--weights`` (or a whole model as ``--pretrained``) is used as what it is,
    with one note line.
    """
    if checkpoint is not None:
        load_state_dict_strict(model, checkpoint["model"])
    else:
        given = [(flag, cfg[key]) for flag, key in (("--pretrained", "pretrained"), ("--weights", "weights"),
                                                  ("--restore-from", "restore_from")) if cfg.get(key)]
        if len(given) > 1 and any(flag == "--restore-from" for flag, _ in given):
            raise ValueError("--restore-from stands for --pretrained or --weights: give only one of them")
        for flag, path in given:
            used = load_into(model, path, flag)
            expected = {"--pretrained": "backbone", "--weights": "whole"}.get(flag)
            if used != expected:
                comm.print0(f"note: {flag} {path}: used as {_USED_AS[used]}")
    # Every rank starts from rank 0's weights. Jittor's optimizer also broadcasts at
    # its first step, but only after computing that step's gradients.
    model.mpi_param_broadcast()


def _eval_fn(cfg: Mapping[str, Any], model: nn.Module, preset, world: int):
    """The periodic evaluation on the val split (None when ``eval_interval`` is 0)."""
    if not cfg["eval_interval"]:
        return None
    # In-process loading: the set is evaluated several times and worker restarts are costly.
    val_set = build_dataset(cfg["dataset"], cfg["data_path"], split=cfg["val_split"], train=False,
                            input_norm=model.input_norm, batch_size=world, seed=cfg["seed"], num_workers=0,
                            clip_length=cfg.get("clip_length"), clip_stride=cfg.get("clip_stride") or 1)

    def eval_fn(iteration: int) -> dict:
        result = evaluate(model, val_set, preset.num_classes, ignore_index=preset.ignore_index,
                          mode=preset.test_mode, crop_size=preset.test_crop, stride=preset.test_stride,
                          progress=not cfg["no_progress"], desc=f"val@{iteration}")
        comm.print0(f"iter {iteration}: val mIoU {100 * result['mIoU']:.2f}  "
                    f"mAcc {100 * result['mAcc']:.2f}  aAcc {100 * result['aAcc']:.2f}")
        return {k: result[k] for k in ("mIoU", "mAcc", "aAcc", "IoU")}
    return eval_fn


def run(options: Mapping[str, Any]) -> dict:
    """Train as ``options`` say (train.py's arguments, ``None`` = not given); returns the final summary.

    With ``print_config`` only the resolved configuration is printed (as JSON) and returned.
    """
    if options.get("print_config"):
        cfg = configure(options, check_folder=False)[0]
        print(json.dumps({k: v for k, v in cfg.items() if k not in ("print_config",)}, indent=2, default=str))
        return cfg
    cfg, checkpoint = configure(options)
    try:
        return _train(cfg, checkpoint)
    finally:
        run_folder.release(cfg["output_dir"])


def _train(cfg: dict, checkpoint: Optional[dict]) -> dict:
    """The run of :func:`run` once its folder is claimed and checked."""
    device = set_device(cfg["no_cuda"], cfg["amp"])
    world = comm.world_size()
    if cfg["batch_size"] % world:
        raise ValueError(f"the global batch size {cfg['batch_size']} is not divisible by the {world} MPI "
                         "processes; every process must get the same share (synchronised BatchNorm)")
    preset = get_preset(cfg["dataset"])
    set_seed(cfg["seed"])

    model = build_model(cfg["model"], preset.num_classes, recurrence=cfg["recurrence"], **cfg["model_opts"])
    cfg["recurrence"] = int(model.recurrence)
    _initial_weights(model, cfg, checkpoint)
    # Jittor initialises parameters lazily, drawing from its generator whenever they are first
    # computed; computing them now keeps the first step's random draws (dropout) the same
    # whatever forces the graph before it (e.g. starting loader workers).
    materialize(model.state_dict().values())
    criterion = SegmentationLoss(preset.num_classes, ignore_index=preset.ignore_index,
                                 aux_weight=cfg["aux_weight"], ohem=cfg["ohem"], ohem_thresh=cfg["ohem_thresh"],
                                 ohem_min_kept=cfg["ohem_min_kept"],
                                 align_corners=bool(getattr(model, "align_corners", True)), ccl=cfg["ccl"],
                                 ccl_weights=cfg["ccl_weights"], ccl_deltas=cfg["ccl_deltas"])
    optimizer = build_optimizer(model, cfg["opt"], cfg["lr"], cfg["momentum"], cfg["weight_decay"],
                                cfg["head_lr_mult"])
    scaler = GradScaler() if cfg["amp"] else None
    start_iter = 0
    if checkpoint is not None:
        load_optimizer_state(optimizer, checkpoint["optimizer"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint.get("rng", {}))
        start_iter = int(checkpoint["iter"])
        if start_iter >= cfg["iters"]:
            comm.print0(f"{cfg['resume']} is already at iteration {start_iter} of {cfg['iters']}; nothing to do")
            return {"iter": start_iter, "checkpoint": cfg["resume"]}

    train_set = build_train_set(cfg, model.input_norm, world)
    eval_fn = _eval_fn(cfg, model, preset, world)
    cfg.update(run_format=run_folder.RUN_FORMAT, world_size=world, device=device, jittor_version=jt.__version__,
               train_samples=train_set.num_samples, iters_per_epoch=len(train_set),
               started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if comm.is_main():
        if start_iter:
            run_folder.truncate_logs(cfg["output_dir"], start_iter)
        write_json(os.path.join(cfg["output_dir"], "config.json"), cfg)
        comm.print0(f"training {cfg['model']} on {cfg['dataset']} ({train_set.num_samples} images, "
                    f"{len(train_set)} iterations per epoch) for {cfg['iters']} iterations, "
                    f"global batch {cfg['batch_size']} over {world} process(es) on {device}; "
                    f"run folder {cfg['output_dir']}"
                    + (f"; resuming at iteration {start_iter}" if start_iter else ""))
    result = train(
        model, criterion, optimizer, train_set, max_iters=cfg["iters"], base_lr=cfg["lr"], power=cfg["power"],
        min_lr=cfg["min_lr"], seed=cfg["seed"], start_iter=start_iter, output_dir=cfg["output_dir"],
        snapshot_interval=cfg["snapshot_interval"], eval_interval=cfg["eval_interval"], eval_fn=eval_fn,
        print_freq=cfg["print_freq"], config=cfg, progress=not cfg["no_progress"], stop_after=cfg["stop_after"],
        checkpoint_extra={"model_name": cfg["model"], "num_classes": preset.num_classes,
                          "dataset": cfg["dataset"]}, resumed_from=cfg.get("resume"),
        keep_checkpoints=cfg["keep_checkpoints"], best=(checkpoint or {}).get("best"), scaler=scaler,
        tensorboard=cfg["tensorboard"], class_names=preset.class_names)
    if jt.in_mpi:
        diff = comm.params_in_sync(model)
        result["rank_max_abs_diff"] = diff
        comm.print0(f"parameters across {world} processes: max abs difference {diff:.3g}")
    comm.print0(f"done: iteration {result['iter']}, loss {result['loss']:.4f}, checkpoint {result['checkpoint']}")
    return result
