"""Evaluate a CCNet checkpoint: per-class IoU, mIoU, mean and pixel accuracy.

::

    python evaluate.py --dataset cityscapes --data-path data/cityscapes \\
        --checkpoint work_dirs/ccnet_r101_cs/checkpoint_last.pkl
    python evaluate.py ... --scales 0.75 1.0 1.25 --flip          # multi-scale + flip TTA
    mpirun -np 4 python evaluate.py ...                            # images split over processes
    python evaluate.py --dataset cityscapes --split test ... --submission   # label-id PNGs

``--checkpoint`` takes a train.py checkpoint (the model preset, recurrence and
options are read from it) or a converted CCNet weights file from
``convert_weights.py`` (give ``--model``). Inference follows the dataset
preset (Cityscapes: 769x769 sliding windows with stride 513 on the full
image; ADE20K/VOC: the whole image with the short side at 512) unless
``--mode``/``--crop-size``/``--stride``/``--test-size`` say otherwise.
Results go to ``<output-dir>/results.json``; ``--save-pred`` writes
colourised predictions, ``--submission`` Cityscapes label-id PNGs.
"""
from __future__ import annotations

import jittor_env  # noqa: F401  (must run before jittor is imported)

import argparse
import os
import sys
import time

import numpy as np

__all__ = ["get_args_parser", "main", "load_model", "label_id_lut"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate CCNet (Jittor)", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", "--weights", dest="checkpoint", required=True,
                   help="train.py checkpoint (file or run folder) or convert_weights.py CCNet weights")
    p.add_argument("--dataset", default=None, help="dataset preset (default: the checkpoint's, else cityscapes)")
    p.add_argument("--data-path", default=None, help="dataset folder (default: the checkpoint's, else data/<dataset>)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the preset's val split)")
    p.add_argument("--list-file", default=None, help="Cityscapes layout: an official .lst file")
    p.add_argument("--model", default=None, help="model preset (default: the checkpoint's)")
    p.add_argument("--recurrence", type=int, default=None, help="criss-cross passes (default: the checkpoint's)")
    p.add_argument("--model-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="extra build_model keyword (default: the checkpoint's); repeatable")
    p.add_argument("--mode", choices=("whole", "slide"), default=None, help="inference mode (default: preset's)")
    p.add_argument("--crop-size", type=int, nargs="+", default=None, metavar="N", help="sliding window H [W]")
    p.add_argument("--stride", type=int, nargs="+", default=None, metavar="N", help="sliding stride H [W]")
    p.add_argument("--test-size", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                   help="resize images to fit (long, short) before inference (default: preset's)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="test scales (multi-scale TTA)")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped views (TTA)")
    p.add_argument("-b", "--batch-size", type=int, default=1, help="images per process and step")
    p.add_argument("-j", "--workers", type=int, default=2, help="data loading worker processes")
    p.add_argument("--output-dir", default=None, help="results folder (default: <checkpoint folder>/eval_<split>)")
    p.add_argument("--save-pred", action="store_true", help="save colourised predictions (<output-dir>/pred)")
    p.add_argument("--submission", action="store_true",
                   help="save label-id PNGs for the Cityscapes server (<output-dir>/submission)")
    p.add_argument("--no-cuda", action="store_true", help="run on the CPU even if a GPU is present")
    p.add_argument("--amp", action="store_true", help="mixed precision (GPU only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def label_id_lut(preset) -> np.ndarray:
    """256-entry table: predicted class -> Cityscapes label id (for the test-server PNGs)."""
    from datasets import CITYSCAPES_ID_TO_TRAINID  # noqa: PLC0415
    if preset.name not in ("cityscapes", "demo"):
        raise ValueError(f"--submission writes Cityscapes label ids; the {preset.name!r} preset is not Cityscapes")
    train_to_label = {t: i for i, t in CITYSCAPES_ID_TO_TRAINID.items()}
    train_ids = preset.cityscapes_train_ids or tuple(range(preset.num_classes))
    lut = np.zeros(256, np.uint8)
    for cls, train_id in enumerate(train_ids):
        lut[cls] = train_to_label[train_id]
    return lut


def _first_key(state: dict, suffix: str):
    for k, v in state.items():
        if k.endswith(suffix):
            return k, v
    return None, None


def load_model(checkpoint_path: str, num_classes: int, model_name=None, recurrence=None, model_opts=None,
               checkpoint: dict | None = None):
    """Build the model a checkpoint belongs to and load it strictly; returns ``(model, info)``.

    ``checkpoint``: the train.py checkpoint at ``checkpoint_path`` if already
    read. ``info`` holds the checkpoint's config (empty for converted weights). Raises
    ``engine.CheckpointError`` with a plain explanation when the file is
    missing, holds another class count or another architecture.
    """
    import engine  # noqa: PLC0415
    from models import MODEL_PRESETS, build_model  # noqa: PLC0415
    from models.weights import WeightLoadError, load_state_dict_strict, read_weights  # noqa: PLC0415
    from train import parse_model_opts  # noqa: PLC0415

    path = checkpoint_path
    if os.path.isdir(path):
        path = engine.find_checkpoint(path)
    if not os.path.isfile(path):
        raise engine.CheckpointError(f"checkpoint not found: {path!r}")
    config: dict = {}
    try:
        ck = checkpoint if checkpoint is not None else engine.load_checkpoint(path)
        state, config = ck["model"], dict(ck.get("config", {}) or {})
    except engine.CheckpointError:
        try:
            state, meta = read_weights(path)  # convert_weights.py output, or a matching .pth
        except Exception as exc:
            raise engine.CheckpointError(f"cannot read {path!r} as a train.py checkpoint or a weights "
                                         f"file: {exc}") from exc
        meta = meta if isinstance(meta, dict) else {}
        # convert_weights.py records the preset, class count, recurrence and build_model options
        config = {"model": meta.get("model") or meta.get("arch"), "num_classes": meta.get("num_classes"),
                  "recurrence": meta.get("recurrence"),
                  "model_opts": meta.get("model_opts", meta.get("overrides"))}
    name = model_name or config.get("model")
    if not name:
        raise engine.CheckpointError(f"{path!r} does not say which model it holds; pass --model "
                                     f"({', '.join(sorted(MODEL_PRESETS))})")
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid names: {', '.join(sorted(MODEL_PRESETS))}")
    if model_name and config.get("model") and model_name != config["model"]:
        raise engine.CheckpointError(f"{path!r} holds a {config['model']} model, not {model_name}; "
                                     f"drop --model or pick the matching checkpoint")
    # class count: from the config, else from the classifier's bias
    ck_classes = config.get("num_classes")
    if ck_classes is None:
        _, bias = _first_key(state, "head.bottleneck.3.bias")
        ck_classes = int(np.asarray(bias).shape[0]) if bias is not None else None
    if ck_classes is not None and int(ck_classes) != int(num_classes):
        raise engine.CheckpointError(
            f"{path!r} was trained for {ck_classes} classes but the dataset has {num_classes}; "
            "evaluate it on the dataset it was trained for (--dataset)")
    if model_opts is None:
        opts = dict(config.get("model_opts") or {})
    else:
        opts = parse_model_opts(model_opts)
    rec = recurrence if recurrence is not None else config.get("recurrence")
    model = build_model(name, num_classes, recurrence=rec, **opts)
    try:
        load_state_dict_strict(model, state, verbose=False)
    except WeightLoadError as exc:
        raise engine.CheckpointError(f"{path!r} does not fit the {name} architecture "
                                     f"(wrong --model or --model-opt?):\n{exc}") from exc
    return model, {"path": path, "config": config, "model": name, "recurrence": int(model.recurrence)}


def main(args: argparse.Namespace) -> dict:
    """Evaluate as configured by ``args``; returns the metrics dict (also written as JSON)."""
    import jittor as jt  # noqa: PLC0415
    import engine  # noqa: PLC0415
    from datasets import build_dataset, get_preset  # noqa: PLC0415
    from metrics import format_table, to_json  # noqa: PLC0415

    engine.set_device(args.no_cuda, args.amp)
    ck_path = engine.find_checkpoint(args.checkpoint) if os.path.isdir(args.checkpoint) else args.checkpoint
    if not os.path.isfile(ck_path):
        raise engine.CheckpointError(f"checkpoint not found: {ck_path!r}")
    saved_cfg: dict = {}
    checkpoint = None
    try:
        checkpoint = engine.load_checkpoint(ck_path)
        saved_cfg = dict(checkpoint.get("config", {}) or {})
    except engine.CheckpointError:
        pass  # converted weights: no config
    dataset = args.dataset or saved_cfg.get("dataset") or "cityscapes"
    preset = get_preset(dataset)
    data_path = args.data_path or saved_cfg.get("data_path") or os.path.join("data", dataset)
    split = args.split or preset.val_split
    model, info = load_model(ck_path, preset.num_classes, args.model, args.recurrence, args.model_opt,
                             checkpoint=checkpoint)
    del checkpoint

    mode = args.mode or preset.test_mode
    crop = args.crop_size or preset.test_crop
    stride = args.stride or preset.test_stride
    if mode == "slide" and (crop is None or stride is None):
        raise ValueError("--mode slide needs --crop-size and --stride (the preset has none)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    world = engine.world_size()
    ds = build_dataset(dataset, data_path, split=split, train=False, input_norm=model.input_norm,
                       test_size=tuple(args.test_size) if args.test_size else None, list_file=args.list_file,
                       batch_size=args.batch_size * world, num_workers=args.workers, shuffle=False, drop_last=False)
    out_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(info["path"])), f"eval_{split}")
    pred_dir = os.path.join(out_dir, "pred") if args.save_pred else None
    sub_dir = os.path.join(out_dir, "submission") if args.submission else None
    lut = label_id_lut(preset) if args.submission else None
    engine.print0(f"evaluating {info['model']} (recurrence {info['recurrence']}) from {info['path']} on "
                  f"{dataset}/{split} ({ds.num_samples} images), {mode}"
                  + (f" crop {crop} stride {stride}" if mode == "slide" else "")
                  + f", scales {list(args.scales)}{' + flip' if args.flip else ''}, {world} process(es)")
    t0 = time.time()
    result = engine.evaluate(model, ds, preset.num_classes, ignore_index=preset.ignore_index, mode=mode,
                             crop_size=crop, stride=stride, scales=args.scales, flip=args.flip,
                             pred_dir=pred_dir, palette=preset.palette, submission_dir=sub_dir, label_lut=lut,
                             progress=not args.no_progress)
    result["seconds"] = round(time.time() - t0, 2)
    if engine.is_main():
        print(format_table(result, preset.class_names), flush=True)
        os.makedirs(out_dir, exist_ok=True)
        settings = {"checkpoint": info["path"], "model": info["model"], "recurrence": info["recurrence"],
                    "dataset": dataset, "split": split, "mode": mode, "crop_size": crop, "stride": stride,
                    "scales": list(args.scales), "flip": args.flip, "world_size": world,
                    "jittor_version": jt.__version__}
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            f.write(to_json({k: v for k, v in result.items() if k != "matrix"}, preset.class_names,
                            settings=settings, confusion_matrix=result["matrix"]) + "\n")
        print(f"results: {os.path.join(out_dir, 'results.json')}"
              + (f"; predictions: {pred_dir}" if pred_dir else "")
              + (f"; submission PNGs: {sub_dir}" if sub_dir else ""), flush=True)
    return result


def _cli() -> None:
    args = get_args_parser().parse_args()
    import engine  # noqa: PLC0415
    from datasets import DatasetError  # noqa: PLC0415
    try:
        main(args)
    except KeyboardInterrupt:
        sys.exit(130)  # checkpoints are written atomically: the last one on disk is complete
    except (ValueError, FileNotFoundError, DatasetError, engine.CheckpointError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    _cli()
