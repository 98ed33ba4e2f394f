"""evaluate.py's run: a model from a file, evaluated on a dataset split, ``results.json`` written.

The dataset, model preset, recurrence and build options default to what the
checkpoint records; inference (whole / slide, crop, stride, test size) to
the dataset preset's. Under ``mpirun`` each process evaluates its share and
the confusion matrices are summed.
"""
from __future__ import annotations

import os
import time

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt

from apis.model_files import load_model, read_model_file
from cli.config import EVAL_DEFAULTS, clip_settings, given_options, inference_settings, parse_model_opts
from cli.official import check_classes
from datasets import build_dataset, get_preset
from engine.launch import set_device
from evaluation.evaluator import evaluate
from evaluation.metrics import format_table, to_json
from evaluation.submission import submission_for
from utils.comm import is_main, print0, world_size
from utils.fileio import atomic_write, check_output_dir
from visualization.palette import save_label_png

__all__ = ["run"]


def run(options: dict) -> dict:
    """evaluate.py: evaluate the model of ``options["checkpoint"]``; returns the metrics (also written as JSON).

    ``options`` are evaluate.py's arguments (``None`` for "not given"): the
    dataset, preset, recurrence and options default to what the checkpoint
    records; inference (whole / slide, crop, stride, test size) to the dataset
    preset's.
    """
    o = {**EVAL_DEFAULTS, **given_options(options)}
    set_device(o["no_cuda"], o["amp"])
    mf = read_model_file(o["checkpoint"])
    saved = mf.settings if mf.kind == "train.py checkpoint" else {}
    dataset = o.get("dataset") or mf.settings.get("dataset") or "cityscapes"
    preset = get_preset(dataset)
    check_classes(preset, o.get("expect_num_classes"), o.get("expect_ignore_label"))
    data_path = o.get("data_path") or saved.get("data_path") or os.path.join("data", dataset)
    split = o.get("split") or preset.val_split
    out_dir = o.get("output_dir") or os.path.join(os.path.dirname(os.path.abspath(mf.path)), f"eval_{split}")
    pred_dir = os.path.join(out_dir, "pred") if o.get("save_pred") else None
    submission = submission_for(preset, out_dir, saved.get("train_split")) if o.get("submission") else None
    for folder in filter(None, (out_dir, pred_dir, submission and submission.folder)):  # before evaluating
        check_output_dir(folder, "--output-dir")
    model, info = load_model(mf, model=o.get("model"), dataset=dataset, recurrence=o.get("recurrence"),
                             model_opts=None if o.get("model_opt") is None else parse_model_opts(o["model_opt"]))
    del mf
    mode, crop, stride = inference_settings(o, preset)
    clip_length, clip_stride = clip_settings(o, info.model, model.video, saved)
    batch_size = int(o["batch_size"])
    if batch_size < 1:
        raise ValueError(f"-b/--batch-size must be positive, got {batch_size}")
    if int(o["workers"]) < 0:
        raise ValueError(f"-j/--workers must be 0 (load in the main process) or more, got {o['workers']}")
    scales, flip = list(o["scales"]), bool(o["flip"])
    world = world_size()
    ds = build_dataset(dataset, data_path, split=split, train=False, input_norm=model.input_norm,
                       test_size=tuple(o["test_size"]) if o.get("test_size") else None,
                       list_file=o.get("list_file"), batch_size=batch_size * world,
                       clip_length=clip_length, clip_stride=clip_stride,
                       num_workers=int(o["workers"]), shuffle=False, drop_last=False)
    print0(f"evaluating {info.model} (recurrence {info.recurrence}) from {info.path} on "
           f"{dataset}/{split} ({ds.num_samples} images"
           + (f", clips of {clip_length} frames {clip_stride} apart" if clip_length else "") + f"), {mode}"
           + (f" crop {crop} stride {stride}" if mode == "slide" else "")
           + f", scales {scales}{' + flip' if flip else ''}, {world} process(es)")
    t0 = time.time()
    writers = []
    if pred_dir:
        writers.append(lambda name, pred: save_label_png(pred, os.path.join(pred_dir, f"{name}.png"),
                                                         palette=preset.palette))
    if submission:
        writers.append(lambda name, pred: save_label_png(pred, submission.path(name), palette=submission.palette,
                                                         lut=submission.lut))
    result = evaluate(model, ds, preset.num_classes, ignore_index=preset.ignore_index, mode=mode,
                      crop_size=crop, stride=stride, scales=scales, flip=flip, flip_pairs=preset.flip_pairs,
                      writers=writers, progress=not o["no_progress"], miou_over=o["miou_over"])
    result["seconds"] = round(time.time() - t0, 2)
    if is_main():
        print(format_table(result, preset.class_names), flush=True)
        settings = {"checkpoint": os.path.abspath(info.path), "model": info.model, "recurrence": info.recurrence,
                    "dataset": dataset, "data_path": os.path.abspath(data_path), "split": split,
                    "test_size": o.get("test_size") or preset.test_size, "mode": mode, "crop_size": crop,
                    "stride": stride, "clip_length": clip_length, "clip_stride": clip_stride,
                    "scales": scales, "flip": flip, "miou_over": o["miou_over"], "world_size": world,
                    "jittor_version": jt.__version__}
        text = to_json({k: v for k, v in result.items() if k != "matrix"}, preset.class_names,
                       settings=settings, confusion_matrix=result["matrix"])
        atomic_write(os.path.join(out_dir, "results.json"), text + "\n", binary=False)
        print(f"results: {os.path.join(out_dir, 'results.json')}"
              + (f"; predictions: {pred_dir}" if pred_dir else "")
              + (f"; submission: {submission.what}" if submission else ""), flush=True)
    return result
