"""Train CCNet on Cityscapes, ADE20K, Pascal VOC or the generated demo dataset.

Single process::

    python train.py --dataset cityscapes --data-path data/cityscapes --model ccnet_resnet101 \\
        --pretrained pretrained/resnet101_deep.pkl --output-dir work_dirs/ccnet_r101_cs

Several processes (one per GPU, or CPU processes), one node or many; the batch
size is global and BatchNorm statistics are synchronised across processes::

    mpirun -np 4 python train.py --dataset cityscapes ...

Defaults (crop, batch size, learning rate, weight decay, iterations) come from
the dataset preset (``datasets/presets.py``); every flag overrides them. The run
folder gets ``config.json`` (the resolved configuration), ``log.jsonl`` (one
JSON object per logged iteration / evaluation) and ``checkpoint_*.pkl``;
``--resume <checkpoint or run folder>`` continues exactly where a run stopped.
"""
from __future__ import annotations

import jittor_env  # noqa: F401  (must run before jittor is imported)

import argparse
import json
import os
import sys
import time

__all__ = ["get_args_parser", "main", "parse_model_opts", "resolve_config"]

#: When resuming, these options come from the new command line; all others from the checkpoint's
#: config, except those of RESUME_IF_GIVEN, which the new command line overrides only when given.
RESUME_FROM_CLI = ("resume", "stop_after", "no_progress", "no_cuda", "amp", "workers", "print_freq")
RESUME_IF_GIVEN = ("output_dir", "data_path", "list_file", "eval_interval", "snapshot_interval")
RESUME_OVERRIDABLE = RESUME_FROM_CLI + RESUME_IF_GIVEN


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train CCNet (Jittor)", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="cityscapes", help="dataset preset: cityscapes, ade20k, voc, demo")
    g.add_argument("--data-path", default=None, help="dataset folder (default data/<dataset>)")
    g.add_argument("--train-split", default=None, help="split to train on (default: the preset's)")
    g.add_argument("--val-split", default=None, help="split to evaluate on (default: the preset's)")
    g.add_argument("--list-file", default=None, help="Cityscapes layout: an official .lst file of training pairs")
    g.add_argument("--crop-size", type=int, nargs="+", default=None, metavar="N",
                   help="training crop: H [W] (default: the preset's)")
    g.add_argument("--random-scale", action=argparse.BooleanOptionalAction, default=True,
                   help="random rescaling (the preset's scales or --scale-range)")
    g.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="uniform random scale range instead of the preset's scales")
    g.add_argument("--random-mirror", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips")
    g.add_argument("-j", "--workers", type=int, default=4, help="data loading worker processes")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="ccnet_resnet101", help="model preset (models.MODEL_PRESETS)")
    g.add_argument("--pretrained", default=None, metavar="PATH",
                   help="ImageNet backbone weights (convert_weights.py output)")
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="initialise the whole model from these weights (a checkpoint or converted CCNet)")
    g.add_argument("--recurrence", type=int, default=None, help="criss-cross attention passes (default: the preset's)")
    g.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra build_model keyword (VALUE parsed as JSON when possible); repeatable")

    g = p.add_argument_group("loss")
    g.add_argument("--aux-weight", type=float, default=0.4, help="weight of the auxiliary (dsn) loss")
    g.add_argument("--ohem", action="store_true", help="online hard example mining on the main head")
    g.add_argument("--ohem-thresh", type=float, default=0.7, help="OHEM probability threshold")
    g.add_argument("--ohem-min-kept", type=int, default=100000, help="OHEM minimum kept pixels")

    g = p.add_argument_group("optimisation")
    g.add_argument("-b", "--batch-size", type=int, default=None,
                   help="GLOBAL batch size, split over MPI processes (default: the preset's)")
    g.add_argument("--iters", type=int, default=None, help="training iterations (default: the preset's)")
    g.add_argument("--opt", choices=("sgd", "adamw"), default="sgd", help="optimizer")
    g.add_argument("--lr", type=float, default=None, help="base learning rate (default: preset's; AdamW 6e-5)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (default: the preset's)")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=None,
                   help="weight decay (default: preset's; AdamW 0.01)")
    g.add_argument("--power", type=float, default=None, help="poly schedule power (default: the preset's)")
    g.add_argument("--min-lr", type=float, default=0.0, help="poly schedule floor (mmseg: 1e-4)")
    g.add_argument("--head-lr-mult", type=float, default=1.0, help="learning-rate multiplier of neck and heads")

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default=None, help="run folder (default work_dirs/<model>_<dataset>)")
    g.add_argument("--snapshot-interval", type=int, default=None,
                   help="checkpoint every N iterations (default iters/10); one at the end always")
    g.add_argument("--eval-interval", type=int, default=None,
                   help="evaluate on the val split every N iterations (default: only at the end; 0: never)")
    g.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from a checkpoint file or a run folder (its checkpoint_last.pkl)")
    g.add_argument("--seed", type=int, default=12345, help="seed of data order, augmentation and init")
    g.add_argument("--print-freq", type=int, default=10, help="log every N iterations")
    g.add_argument("--amp", action="store_true", help="mixed precision (GPU only)")
    g.add_argument("--no-cuda", action="store_true", help="run on the CPU even if a GPU is present")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # testing: stop early
    return p


def parse_model_opts(items: list[str]) -> dict:
    """``["dropout=0", "aux_channels=null"]`` -> ``{"dropout": 0, "aux_channels": None}``."""
    opts = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model-opt expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            opts[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip()] = value
    return opts


def _pair(v):
    if v is None:
        return None
    v = [int(x) for x in v]
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or min(v) <= 0:
        raise ValueError(f"--crop-size takes one or two positive ints, got {v}")
    return tuple(v)


def resolve_config(args: argparse.Namespace) -> dict:
    """Fill every unset option from the dataset preset; returns the full configuration."""
    from datasets import get_preset  # noqa: PLC0415
    from models import MODEL_PRESETS  # noqa: PLC0415

    preset = get_preset(args.dataset)
    if args.model not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {args.model!r}; valid names: {', '.join(sorted(MODEL_PRESETS))}")
    cfg = dict(vars(args))
    cfg["data_path"] = args.data_path or os.path.join("data", args.dataset)
    cfg["num_classes"] = preset.num_classes
    cfg["ignore_index"] = preset.ignore_index
    cfg["crop_size"] = list(_pair(args.crop_size) or preset.crop_size)
    cfg["batch_size"] = args.batch_size or preset.batch_size
    cfg["iters"] = args.iters or preset.iters
    adamw = args.opt == "adamw"
    cfg["lr"] = args.lr if args.lr is not None else (6e-5 if adamw else preset.lr)
    cfg["weight_decay"] = (args.weight_decay if args.weight_decay is not None
                           else (0.01 if adamw else preset.weight_decay))
    cfg["momentum"] = args.momentum if args.momentum is not None else preset.momentum
    cfg["power"] = args.power if args.power is not None else preset.power
    cfg["snapshot_interval"] = (args.snapshot_interval if args.snapshot_interval is not None
                                else max(1, cfg["iters"] // 10))
    cfg["eval_interval"] = args.eval_interval if args.eval_interval is not None else cfg["iters"]
    cfg["output_dir"] = args.output_dir or os.path.join("work_dirs", f"{args.model}_{args.dataset}")
    cfg["model_opts"] = parse_model_opts(args.model_opt)
    cfg["train_split"] = args.train_split or preset.train_split
    cfg["val_split"] = args.val_split or preset.val_split
    for key in ("iters", "batch_size"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {cfg[key]}")
    if cfg["lr"] <= 0:
        raise ValueError(f"--lr must be positive, got {cfg['lr']}")
    return cfg


def _merge_resume_config(cfg: dict, saved: dict, given: dict, parser_defaults: dict) -> dict:
    """The saved configuration, with RESUME_FROM_CLI (and RESUME_IF_GIVEN when given) from this command line.

    ``given`` are this command line's raw options: any other option that
    differs from its default and from the saved value is reported as ignored.
    """
    merged = dict(saved)
    for key in RESUME_FROM_CLI:
        if key in cfg:
            merged[key] = cfg[key]
    for key in RESUME_IF_GIVEN:
        if key in given and given[key] != parser_defaults.get(key):
            merged[key] = cfg[key]
    ignored = [k for k, v in given.items()
               if k not in RESUME_OVERRIDABLE and k in saved and k in parser_defaults
               and v != parser_defaults[k] and cfg.get(k, v) != saved[k]]
    if ignored:
        print(f"warning: --resume continues the saved configuration; ignoring {', '.join(sorted(ignored))} "
              "given on this command line", file=sys.stderr)
    return merged


def _build_train_set(cfg: dict, input_norm):
    from datasets import build_dataset  # noqa: PLC0415
    from datasets.transforms import RandomHorizontalFlip  # noqa: PLC0415
    scale_range = tuple(cfg["scale_range"]) if cfg.get("scale_range") else None
    if not cfg["random_scale"]:
        scale_range = (1.0, 1.0)
    # Bound each worker's buffer to about two batches instead of Jittor's
    # 512 MB: the workers then stay a few batches ahead of a slow training
    # step rather than holding up to a whole pass of batches in memory.
    crop_h, crop_w = cfg["crop_size"]
    per_rank = cfg["batch_size"] // max(1, cfg.get("world_size_now", 1))
    batch_bytes = per_rank * crop_h * crop_w * (3 * 4 + 4)
    ds = build_dataset(cfg["dataset"], cfg["data_path"], split=cfg["train_split"], train=True,
                       input_norm=input_norm, crop_size=tuple(cfg["crop_size"]), scale_range=scale_range,
                       list_file=cfg.get("list_file"), seed=cfg["seed"], batch_size=cfg["batch_size"],
                       num_workers=cfg["workers"], shuffle=True, drop_last=True,
                       buffer_size=2 * batch_bytes + (4 << 20))
    if not cfg["random_mirror"]:
        ds.transform.transforms = [t for t in ds.transform.transforms
                                   if not isinstance(t, RandomHorizontalFlip)]
    return ds


def main(args: argparse.Namespace) -> dict:
    """Run training as configured by ``args`` (see :func:`get_args_parser`); returns the final summary."""
    import jittor as jt  # noqa: PLC0415
    import engine  # noqa: PLC0415
    from datasets import build_dataset, get_preset  # noqa: PLC0415
    from models import build_model  # noqa: PLC0415
    from models.losses import SegmentationLoss  # noqa: PLC0415
    from models.weights import load_state_dict_strict  # noqa: PLC0415

    cfg = resolve_config(args)
    checkpoint = None
    if args.resume:
        path = engine.find_checkpoint(args.resume)
        checkpoint = engine.load_checkpoint(path)
        defaults = vars(get_args_parser().parse_args([]))
        cfg = _merge_resume_config(cfg, checkpoint.get("config", {}), vars(args), defaults)
        cfg["resume"] = path
    device = engine.set_device(cfg["no_cuda"], cfg["amp"])
    world = engine.world_size()
    if cfg["batch_size"] % world:
        raise ValueError(f"the global batch size {cfg['batch_size']} is not divisible by the {world} MPI "
                         "processes; every process must get the same share (synchronised BatchNorm)")
    preset = get_preset(cfg["dataset"])
    engine.set_seed(cfg["seed"])

    model = build_model(cfg["model"], preset.num_classes, recurrence=cfg["recurrence"],
                        pretrained_backbone=None if checkpoint else cfg["pretrained"], **cfg["model_opts"])
    cfg["recurrence"] = int(model.recurrence)
    if cfg["weights"] and not checkpoint:
        weights = cfg["weights"]
        if os.path.isfile(weights) and weights.endswith(".pkl"):
            try:
                ck = engine.load_checkpoint(weights)
                weights = ck["model"]
            except engine.CheckpointError:
                pass  # a convert_weights.py file: read by the strict loader
        load_state_dict_strict(model, weights)
    if checkpoint is not None:
        load_state_dict_strict(model, checkpoint["model"])
    # Every rank starts from rank 0's weights. Jittor's optimizer also broadcasts at
    # its first step, but only after computing that step's gradients.
    model.mpi_param_broadcast()

    criterion = SegmentationLoss(preset.num_classes, ignore_index=preset.ignore_index,
                                 aux_weight=cfg["aux_weight"], ohem=cfg["ohem"], ohem_thresh=cfg["ohem_thresh"],
                                 ohem_min_kept=cfg["ohem_min_kept"],
                                 align_corners=bool(getattr(model, "align_corners", True)))
    optimizer = engine.build_optimizer(model, cfg["opt"], cfg["lr"], cfg["momentum"], cfg["weight_decay"],
                                       cfg["head_lr_mult"])
    start_iter = 0
    if checkpoint is not None:
        engine.load_optimizer_state(optimizer, checkpoint["optimizer"])
        engine._set_rng_state(checkpoint.get("rng", {}))
        start_iter = int(checkpoint["iter"])
        if start_iter >= cfg["iters"]:
            engine.print0(f"{cfg['resume']} is already at iteration {start_iter} of {cfg['iters']}; nothing to do")
            return {"iter": start_iter, "checkpoint": cfg["resume"]}

    train_set = _build_train_set(dict(cfg, world_size_now=world), model.input_norm)
    eval_fn = None
    if cfg["eval_interval"]:
        val_set = build_dataset(cfg["dataset"], cfg["data_path"], split=cfg["val_split"], train=False,
                                input_norm=model.input_norm, batch_size=world, seed=cfg["seed"],
                                num_workers=0)  # evaluated several times: workers would need restarts (see above)

        def eval_fn(iteration: int) -> dict:
            result = engine.evaluate(model, val_set, preset.num_classes, ignore_index=preset.ignore_index,
                                     mode=preset.test_mode, crop_size=preset.test_crop,
                                     stride=preset.test_stride, progress=not cfg["no_progress"],
                                     desc=f"val@{iteration}")
            engine.print0(f"iter {iteration}: val mIoU {100 * result['mIoU']:.2f}  "
                          f"mAcc {100 * result['mAcc']:.2f}  aAcc {100 * result['aAcc']:.2f}")
            return {k: result[k] for k in ("mIoU", "mAcc", "aAcc")}

    cfg.update(world_size=world, device=device, jittor_version=jt.__version__,
               train_samples=train_set.num_samples, iters_per_epoch=len(train_set),
               started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if engine.is_main():
        os.makedirs(cfg["output_dir"], exist_ok=True)
        engine.write_json(os.path.join(cfg["output_dir"], "config.json"), cfg)
        engine.print0(f"training {cfg['model']} on {cfg['dataset']} ({train_set.num_samples} images, "
                      f"{len(train_set)} iterations per epoch) for {cfg['iters']} iterations, "
                      f"global batch {cfg['batch_size']} over {world} process(es) on {device}; "
                      f"run folder {cfg['output_dir']}"
                      + (f"; resuming at iteration {start_iter}" if start_iter else ""))
    result = engine.train(
        model, criterion, optimizer, train_set, max_iters=cfg["iters"], base_lr=cfg["lr"], power=cfg["power"],
        min_lr=cfg["min_lr"], seed=cfg["seed"], start_iter=start_iter, output_dir=cfg["output_dir"],
        snapshot_interval=cfg["snapshot_interval"], eval_interval=cfg["eval_interval"], eval_fn=eval_fn,
        print_freq=cfg["print_freq"], config=cfg, progress=not cfg["no_progress"], stop_after=cfg["stop_after"],
        checkpoint_extra={"model_name": cfg["model"], "num_classes": preset.num_classes,
                          "dataset": cfg["dataset"]})
    if jt.in_mpi:
        diff = engine.params_in_sync(model)
        result["rank_max_abs_diff"] = diff
        engine.print0(f"parameters across {world} processes: max abs difference {diff:.3g}")
    engine.print0(f"done: iteration {result['iter']}, loss {result['loss']:.4f}, checkpoint {result['checkpoint']}")
    return result


def _cli() -> None:
    args = get_args_parser().parse_args()
    import engine  # noqa: PLC0415
    from datasets import DatasetError  # noqa: PLC0415
    from models.weights import WeightLoadError  # noqa: PLC0415
    try:
        main(args)
    except KeyboardInterrupt:
        sys.exit(130)  # checkpoints are written atomically: the last one on disk is complete
    except engine.TrainingStopped as exc:
        sys.exit(f"error: {exc}")
    except (ValueError, FileNotFoundError, DatasetError, engine.CheckpointError, WeightLoadError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    _cli()
