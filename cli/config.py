"""The scripts' configuration: train.py's defaults, presets, validation and resume rules; evaluate.py's defaults.

A configuration is a plain dict with one entry per train.py option. Options
left at ``None`` take their value from :data:`TRAIN_DEFAULTS` or, for the
schedule and the crop, from the dataset preset (``datasets/presets.py``);
:func:`resolve_train_config` fills them in and checks them. The resolved
dict is what a run folder's ``config.json`` holds and what a checkpoint
records; :func:`merge_resume_config` decides which options a resumed run
takes from the checkpoint and which from its own command line.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterable, Mapping, Optional

from cli.official import check_classes
from datasets import CLIP_PRESETS, get_preset
from models import MODEL_PRESETS
from models.losses import AUX_WEIGHT, CCL_DELTAS, CCL_DIM, CCL_WEIGHTS, OHEM_MIN_KEPT, OHEM_THRESH
from utils.clips import DEFAULT_CLIP_LENGTH
from utils.sizes import pair

__all__ = ["TRAIN_DEFAULTS", "EVAL_DEFAULTS", "ADAMW_DEFAULTS", "MIN_CROP", "PRESET_OPTIONS", "RESUME_FROM_CLI", "RESUME_IF_GIVEN",
           "PATH_OPTIONS", "COMMAND_OPTIONS", "parse_model_opts", "inference_settings", "given_options", "check_train_config",
           "load_config_file", "resolve_train_config", "merge_resume_config", "clip_settings"]

#: train.py's defaults for the options the dataset preset does not decide.
TRAIN_DEFAULTS: dict[str, Any] = {
    "dataset": "cityscapes", "data_path": None, "train_split": None, "val_split": None, "list_file": None,
    "crop_size": None, "random_scale": True, "scale_range": None, "random_mirror": True, "workers": 4,
    "clip_length": None, "clip_stride": None,
    "model": "ccnet_resnet101", "pretrained": None, "weights": None, "recurrence": None, "model_opt": [],
    "aux_weight": AUX_WEIGHT, "ohem": False, "ohem_thresh": OHEM_THRESH, "ohem_min_kept": OHEM_MIN_KEPT,
    "ccl": False, "ccl_weights": list(CCL_WEIGHTS), "ccl_deltas": list(CCL_DELTAS), "ccl_dim": CCL_DIM,
    "batch_size": None, "iters": None, "opt": "sgd", "lr": None, "momentum": None, "weight_decay": None,
    "power": None, "min_lr": 0.0, "head_lr_mult": 1.0,
    "output_dir": None, "overwrite": False, "snapshot_interval": None, "eval_interval": None, "resume": None,
    "keep_checkpoints": 3, "seed": 12345,
    "print_freq": 10, "amp": False, "tensorboard": False, "no_cuda": False, "no_progress": False, "stop_after": None,
    "verbose": False, "config": None, "print_config": False,
    # the official code's flags that have no flag of ours (cli.official)
    "restore_from": None, "expect_num_classes": None, "expect_ignore_label": None,
}

#: evaluate.py's defaults for the options that neither the checkpoint nor the dataset preset decides.
EVAL_DEFAULTS = {"batch_size": 1, "workers": 2, "scales": [1.0], "flip": False, "save_pred": False,
                 "submission": False, "no_cuda": False, "amp": False, "no_progress": False, "miou_over": "present"}

#: Options about this command, not about the run: never taken from a recorded config.json.
COMMAND_OPTIONS = ("resume", "stop_after", "overwrite", "config", "print_config", "verbose")

#: AdamW's learning rate and weight decay when not given (mmsegmentation's VAN / transformer recipes).
ADAMW_DEFAULTS = {"lr": 6e-5, "weight_decay": 0.01}

#: The smallest training crop: the backbones' largest stride (VAN's last stage is at 1/32).
MIN_CROP = 32

#: Options whose default comes from the dataset preset.
PRESET_OPTIONS = ("crop_size", "batch_size", "iters", "lr", "weight_decay", "momentum", "power",
                  "train_split", "val_split")

#: When resuming, these options come from the new command line (or the defaults); all others from
#: the checkpoint's config, except those of RESUME_IF_GIVEN, which the new command line overrides
#: only when given.
RESUME_FROM_CLI = ("resume", "stop_after", "no_progress", "no_cuda", "workers", "print_freq", "overwrite",
                   "verbose", "config", "print_config")
RESUME_IF_GIVEN = ("output_dir", "data_path", "list_file", "eval_interval", "snapshot_interval", "lr", "iters",
                   "keep_checkpoints", "amp", "tensorboard")

#: Options holding paths: recorded absolute, so that a later command finds them from any folder.
PATH_OPTIONS = ("data_path", "list_file", "pretrained", "weights", "restore_from", "output_dir", "resume",
                "config")


def _flag(key: str) -> str:
    return {"workers": "-j/--workers", "batch_size": "-b/--batch-size"}.get(key, "--" + key.replace("_", "-"))


def _number(key: str, value: Any, kind: type, low: float, high: float = math.inf, low_open: bool = False,
            high_open: bool = False, what: str = "") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and kind is int:
        ok = float(value).is_integer()
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{_flag(key)} must be {what}, got {value}")


#: (kind, low, high, low open, high open, description) of each numeric option.
_RULES: dict[str, tuple] = {
    "batch_size": (int, 1, math.inf, False, False, "a positive integer"),
    "iters": (int, 1, math.inf, False, False, "a positive integer"),
    "workers": (int, 0, math.inf, False, False, "0 (load in the main process) or more worker processes"),
    "print_freq": (int, 1, math.inf, False, False, "a positive integer"),
    "snapshot_interval": (int, 0, math.inf, False, False, "0 (only at the end) or a positive integer"),
    "eval_interval": (int, 0, math.inf, False, False, "0 (never) or a positive integer"),
    "seed": (int, 0, 2 ** 31 - 1, False, False, "an integer in 0 .. 2**31-1"),
    "stop_after": (int, 1, math.inf, False, False, "a positive integer"),
    "ohem_min_kept": (int, 0, math.inf, False, False, "0 or more pixels"),
    "keep_checkpoints": (int, 0, math.inf, False, False, "0 (only the last) or more"),
    "ccl_dim": (int, 1, math.inf, False, False, "a positive number of channels"),
    "recurrence": (int, 0, 3, False, False, "0, 1, 2 or 3"),
    "lr": (float, 0, math.inf, True, False, "a positive number"),
    "min_lr": (float, 0, math.inf, False, False, "0 or a positive number below --lr"),
    "momentum": (float, 0, 1, False, True, "in [0, 1)"),
    "weight_decay": (float, 0, math.inf, False, False, "0 or a positive number"),
    "power": (float, 0, math.inf, False, False, "0 or a positive number"),
    "head_lr_mult": (float, 0, math.inf, True, False, "a positive number"),
    "aux_weight": (float, 0, math.inf, False, False, "0 or a positive number"),
    "ohem_thresh": (float, 0, 1, True, False, "in (0, 1]"),
}


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """ValueError naming the flag for any option outside its range (a zero, a NaN, a negative rate ...)."""
    for key, (kind, low, high, low_open, high_open, what) in _RULES.items():
        if cfg.get(key) is not None:
            _number(key, cfg[key], kind, low, high, low_open, high_open, what)
    if cfg["min_lr"] >= cfg["lr"]:
        raise ValueError(f"--min-lr ({cfg['min_lr']}) must be below --lr ({cfg['lr']})")
    if min(cfg["crop_size"]) < MIN_CROP:
        raise ValueError(f"--crop-size must be at least {MIN_CROP} pixels (the backbones' largest stride), "
                         f"got {cfg['crop_size']}")
    weights, deltas = cfg["ccl_weights"], cfg["ccl_deltas"]
    if len(weights) != 3 or not all(isinstance(w, (int, float)) and 0 <= w < math.inf for w in weights):
        raise ValueError(f"--ccl-weights must be ALPHA BETA GAMMA, three numbers >= 0, got {weights}")
    if len(deltas) != 2 or not all(isinstance(d, (int, float)) and math.isfinite(d) for d in deltas) \
            or not 0 <= deltas[0] < deltas[1]:
        raise ValueError(f"--ccl-deltas must be DELTA_V DELTA_D with 0 <= DELTA_V < DELTA_D, got {deltas}")
    if cfg.get("scale_range") is not None:
        low, high = cfg["scale_range"]
        if not (0 < low <= high < math.inf):
            raise ValueError(f"--scale-range must be LOW HIGH with 0 < LOW <= HIGH, got {low} {high}")


def parse_model_opts(items: Optional[Iterable[str]]) -> dict:
    """``["dropout=0", "aux_channels=null"]`` -> ``{"dropout": 0, "aux_channels": None}`` (values as JSON)."""
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


def inference_settings(options: Mapping[str, Any], preset) -> tuple[str, Optional[tuple], Optional[tuple]]:
    """``(mode, crop, stride)`` of evaluate.py and predict.py: the flags', else the dataset preset's.

    ``preset`` may be None (no dataset known): whole-image inference then,
    unless the flags say otherwise.
    """
    mode = options.get("mode") or (preset.test_mode if preset else "whole")
    crop = pair(options["crop_size"], "--crop-size") if options.get("crop_size") else (
        preset.test_crop if preset else None)
    stride = pair(options["stride"], "--stride") if options.get("stride") else (
        preset.test_stride if preset else None)
    if mode == "slide" and (crop is None or stride is None):
        raise ValueError("--mode slide needs --crop-size and --stride (the dataset preset has none)")
    return mode, crop, stride


def clip_settings(options: Mapping[str, Any], model: str, video: bool,
                  recorded: Optional[Mapping[str, Any]] = None) -> tuple[Optional[int], int]:
    """``(clip_length, clip_stride)`` for the model preset ``model`` (``video``: a video CCNet): the
    flags', else what a checkpoint records, else :data:`utils.clips.DEFAULT_CLIP_LENGTH` frames 1 apart
    for a video model; ``(None, 1)`` (single images) for the others, which refuse the flags."""
    recorded = recorded or {}
    length, stride = options.get("clip_length"), options.get("clip_stride")
    if not video:
        if length not in (None, 1) or stride not in (None, 1):
            raise ValueError(f"--clip-length/--clip-stride need a video model (ccnet3d_*); {model} segments "
                             f"single images")
        return None, 1
    length = length if length is not None else recorded.get("clip_length") or DEFAULT_CLIP_LENGTH
    stride = stride if stride is not None else recorded.get("clip_stride") or 1
    for flag, value in (("--clip-length", length), ("--clip-stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{flag} must be a whole number of at least 1, got {value!r}")
    return int(length), int(stride)


def given_options(options: Mapping[str, Any]) -> dict:
    """The options actually given (not ``None``)."""
    return {k: v for k, v in options.items() if v is not None}


def load_config_file(path: str) -> dict:
    """The run options a ``config.json`` records (train.py ``--config``), paths as recorded (absolute)."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file (give a run folder's config.json)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(saved, dict) or "model" not in saved or "dataset" not in saved:
        raise ValueError(f"--config {path}: not a train.py config.json (no model and dataset)")
    return {k: v for k, v in saved.items() if k in TRAIN_DEFAULTS and k not in COMMAND_OPTIONS}


def resolve_train_config(options: Mapping[str, Any]) -> dict:
    """Every option filled in (defaults, then the dataset preset) and checked; returns the configuration.

    With ``options["config"]`` the options recorded in that config.json come
    first, and the options given here override them.
    """
    given = given_options(options)
    recorded = load_config_file(given["config"]) if given.get("config") else {}
    cfg = {**TRAIN_DEFAULTS, **recorded, **given}
    preset = get_preset(cfg["dataset"])
    check_classes(preset, cfg["expect_num_classes"], cfg["expect_ignore_label"])
    if cfg["model"] not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {cfg['model']!r}; valid names: {', '.join(sorted(MODEL_PRESETS))}")
    cfg["data_path"] = cfg["data_path"] or os.path.join("data", cfg["dataset"])
    cfg["num_classes"] = preset.num_classes
    cfg["ignore_index"] = preset.ignore_index
    cfg["crop_size"] = list(pair(cfg["crop_size"], "--crop-size") if cfg["crop_size"] else preset.crop_size)
    adamw = cfg["opt"] == "adamw"
    for key in PRESET_OPTIONS:
        if cfg.get(key) is None:
            cfg[key] = ADAMW_DEFAULTS[key] if adamw and key in ADAMW_DEFAULTS else getattr(preset, key)
    _number("iters", cfg["iters"], *_RULES["iters"])
    if cfg["snapshot_interval"] is None:
        cfg["snapshot_interval"] = max(1, cfg["iters"] // 10)
    if cfg["eval_interval"] is None:
        cfg["eval_interval"] = cfg["iters"]
    cfg["output_dir"] = cfg["output_dir"] or os.path.join("work_dirs", f"{cfg['model']}_{cfg['dataset']}")
    cfg["model_opts"] = parse_model_opts(cfg["model_opt"])
    video = cfg["model_opts"].get("video", MODEL_PRESETS[cfg["model"]].get("video", False))
    cfg["clip_length"], cfg["clip_stride"] = clip_settings(cfg, cfg["model"], video)
    if cfg["clip_length"] is not None and preset.name not in CLIP_PRESETS:
        raise ValueError(f"{cfg['model']} trains on clips of video frames; the dataset {preset.name!r} has none "
                         f"(clips need {' or '.join(CLIP_PRESETS)})")
    if cfg["ccl"]:
        # the projection of the category consistent loss is part of the model (training only)
        cfg["model_opts"]["ccl_dim"] = int(cfg["ccl_dim"])
    for key in PATH_OPTIONS:
        if cfg.get(key):
            cfg[key] = os.path.abspath(cfg[key])
    check_train_config(cfg)
    return cfg


def merge_resume_config(cfg: Mapping[str, Any], saved: Mapping[str, Any], given: Mapping[str, Any]) -> dict:
    """The saved configuration, with RESUME_FROM_CLI (and RESUME_IF_GIVEN when given) from ``cfg``.

    ``cfg`` is this command line's resolved configuration and ``given`` the
    options it actually gave; any other given option whose value differs from
    the saved one is reported as ignored.
    """
    merged = dict(saved)
    for key in RESUME_FROM_CLI:
        if key in cfg:
            merged[key] = cfg[key]
    for key in RESUME_IF_GIVEN:
        if key in given:
            merged[key] = cfg[key]
    ignored = [k for k in given if k not in RESUME_FROM_CLI + RESUME_IF_GIVEN and k in saved
               and cfg.get(k) != saved[k]]
    if ignored:
        print(f"warning: --resume continues the saved configuration; ignoring {', '.join(sorted(ignored))} "
              "given on this command line", file=sys.stderr)
    return merged
