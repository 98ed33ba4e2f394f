"""The command-line spellings of the official CCNet and of an earlier Jittor port, mapped to ours.

Users copy commands from those READMEs; train.py and evaluate.py accept
their flags as hidden aliases (``--help`` lists only our names), each mapped
to what it meant there:

===================================  =============================================================
theirs                               ours
===================================  =============================================================
``--data-dir``, ``--data-list``      ``--data-path``, ``--list-file``
``--restore-from F``                 train.py: ``--weights F`` for a whole CCNet, ``--pretrained F``
                                     for ImageNet backbone weights (decided from the file);
                                     evaluate.py: ``--checkpoint F``
``--input-size H,W`` or ``N``        train.py: ``--crop-size H W``; evaluate.py: sliding windows of
                                     that size with a third overlap (stride ``ceil(2/3 * size)``)
``--learning-rate``                  ``--lr``
``--num-steps``, ``--max-iter``      ``--iters``
``--start 0``                        nothing (a start iteration above 0 is refused: ``--resume``)
``--ohem 0|1``                       ``--ohem`` takes their value too (``parse_bool``)
``--ohem-thres``                     ``--ohem-thresh``
``--ohem-keep N``                    ``--ohem-min-kept N x GPUs``: theirs counts each GPU's share
``--snapshot-dir``                   ``--output-dir``
``--save-pred-every``                ``--snapshot-interval``
``--random-seed``, ``--num-workers``  ``--seed``, ``--workers``
``--gpu 0,1,..``                     the visible GPUs (``jittor_env``); one process per GPU
``--num-classes``, ``--ignore-label``  checked against the dataset preset
``--model ccnet|ccnet_large``        ``--model ccnet_resnet101``
``--model van --van-size van_X``     ``--model ccnet_van_b0`` .. ``b3`` (tiny, small, base, large)
``--dataset cityscape``              ``--dataset cityscapes``
``--whole``                          evaluate.py: ``--mode whole``
===================================  =============================================================

Where a meaning differs (OHEM's per-GPU count, several GPUs) one ``note:``
line says what was done. A flag given both ways with different values is an
error.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["parse_bool", "Alias", "TRAIN_ALIASES", "EVAL_ALIASES", "add_aliases", "apply_aliases", "model_from_theirs",
           "check_classes"]

#: The earlier Jittor port's VAN sizes.
VAN_SIZES = {"van_tiny": "ccnet_van_b0", "van_small": "ccnet_van_b1", "van_base": "ccnet_van_b2",
             "van_large": "ccnet_van_b3"}


def parse_bool(text: str) -> bool:
    """Their ``str2bool``: yes/true/t/y/1 or no/false/f/n/0."""
    value = str(text).strip().lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError(f"expected a yes/no value (1, 0, true, false), got {text!r}")


def _size(text: str) -> list[int]:
    """``"769,769"`` or ``"512"`` -> ``[H, W]``."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--input-size takes H,W or N, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise ValueError(f"--input-size takes H,W or N, got {text!r}")
    return values


@dataclass(frozen=True)
class Alias:
    """Their flag ``flag`` sets our option ``dest`` to ``convert(value)`` (``nargs=0`` for a switch)."""

    flag: str
    dest: str
    convert: Callable[[str], Any] = str
    nargs: Optional[int] = None


_COMMON = (
    Alias("--data-dir", "data_path"),
    Alias("--data-list", "list_file"),
    Alias("--restore-from", "restore_from"),
    Alias("--input-size", "input_size", _size),
    Alias("--gpu", "gpu"),
    Alias("--num-classes", "expect_num_classes", int),
    Alias("--ignore-label", "expect_ignore_label", int),
    Alias("--van-size", "van_size"),
    Alias("--num-workers", "workers", int),
)

TRAIN_ALIASES: tuple[Alias, ...] = _COMMON + (
    Alias("--learning-rate", "lr", float),
    Alias("--num-steps", "num_steps", int),
    Alias("--max-iter", "max_iter", int),
    Alias("--start", "start", int),
    Alias("--start-iters", "start", int),
    Alias("--ohem-thres", "ohem_thresh", float),
    Alias("--ohem-keep", "ohem_keep", int),
    Alias("--snapshot-dir", "output_dir"),
    Alias("--save-pred-every", "snapshot_interval", int),
    Alias("--random-seed", "seed", int),
    Alias("--print-frequency", "print_freq", int),
)

EVAL_ALIASES: tuple[Alias, ...] = _COMMON + (
    Alias("--whole", "whole", parse_bool),
)


def _dest(alias: Alias) -> str:
    return "theirs_" + alias.flag.lstrip("-").replace("-", "_")


def add_aliases(parser: argparse.ArgumentParser, aliases: tuple[Alias, ...]) -> None:
    """Add ``aliases`` as hidden options (not in ``--help``); read them back with :func:`apply_aliases`."""
    for alias in aliases:
        parser.add_argument(alias.flag, dest=_dest(alias), default=None, help=argparse.SUPPRESS, metavar="VALUE")


def _given(args: argparse.Namespace, aliases: tuple[Alias, ...]) -> dict[str, tuple[str, Any]]:
    """Our option -> (their flag, converted value) for every alias on the command line."""
    found: dict[str, tuple[str, Any]] = {}
    for alias in aliases:
        raw = getattr(args, _dest(alias), None)
        if raw is None:
            continue
        try:
            value = alias.convert(raw)
        except ValueError as exc:
            raise ValueError(f"{alias.flag}: {exc}") from None
        if alias.dest in found and found[alias.dest][1] != value:
            raise ValueError(f"{found[alias.dest][0]} and {alias.flag} disagree; give one of them")
        found[alias.dest] = (alias.flag, value)
    for alias in aliases:
        if hasattr(args, _dest(alias)):
            delattr(args, _dest(alias))
    return found


def _set(options: dict, dest: str, value: Any, flag: str, ours: str) -> None:
    if options.get(dest) is not None and options[dest] != value:
        raise ValueError(f"{flag} {value} and {ours} {options[dest]} disagree; give one of them")
    options[dest] = value


def model_from_theirs(model: Optional[str], van_size: Optional[str], default_van: str) -> Optional[str]:
    """Our preset for their ``--model`` (and ``--van-size``); our own preset names pass through."""
    if model in ("ccnet", "ccnet_large"):
        return "ccnet_resnet101"
    if model == "van":
        size = van_size or default_van
        if size not in VAN_SIZES:
            raise ValueError(f"--van-size must be one of {', '.join(VAN_SIZES)}, got {size!r}")
        return VAN_SIZES[size]
    if van_size is not None:
        raise ValueError("--van-size goes with --model van (or use our preset names, e.g. --model ccnet_van_b3)")
    return model


def check_classes(preset, num_classes: Optional[int], ignore_label: Optional[int]) -> None:
    """Their ``--num-classes`` / ``--ignore-label`` must say what the dataset preset says.

    The earlier port's ADE20K setting ``--num-classes 151 --ignore-label 0`` (label 0
    "other" as a class to ignore) is our 150 classes with the label shift.
    """
    if preset.name == "ade20k" and (num_classes == 151 or ignore_label == 0) and \
            num_classes in (151, None) and ignore_label in (0, None):
        return  # theirs: 151 labels with 0 ("other") ignored; ours: 150 classes after the shift
    if num_classes is not None and num_classes != preset.num_classes:
        raise ValueError(f"--num-classes {num_classes} does not match the {preset.name} preset "
                         f"({preset.num_classes} classes); drop it or choose the matching --dataset")
    if ignore_label is not None and ignore_label != preset.ignore_index:
        raise ValueError(f"--ignore-label {ignore_label} does not match the {preset.name} preset "
                         f"(ignore label {preset.ignore_index}); drop it")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def _gpus(value: Optional[str]) -> Optional[list[str]]:
    if value is None or value in ("None", ""):
        return None
    return [g.strip() for g in str(value).split(",") if g.strip()]


def apply_aliases(args: argparse.Namespace, aliases: tuple[Alias, ...], script: str,
                  world_size: int = 1) -> dict:
    """``vars(args)`` with every alias turned into our options (``script`` is "train" or "evaluate")."""
    found = _given(args, aliases)
    options = vars(args)
    plain = {"data_path": "--data-path", "list_file": "--list-file", "workers": "-j/--workers",
             "lr": "--lr", "ohem_thresh": "--ohem-thresh", "output_dir": "--output-dir",
             "snapshot_interval": "--snapshot-interval", "seed": "--seed", "print_freq": "--print-freq"}
    for dest, ours in plain.items():
        if dest in found:
            _set(options, dest, found[dest][1], found[dest][0], ours)
    if "expect_num_classes" in found:
        options["expect_num_classes"] = found["expect_num_classes"][1]
    if "expect_ignore_label" in found:
        options["expect_ignore_label"] = found["expect_ignore_label"][1]
    if options.get("dataset") == "cityscape":
        options["dataset"] = "cityscapes"
    van = found.get("van_size", (None, None))[1]
    options["model"] = model_from_theirs(options.get("model"), van, "van_base" if script == "train" else "van_large")
    gpus = _gpus(found.get("gpu", (None, None))[1])
    if gpus and len(gpus) > 1 and world_size == 1:
        _note(f"--gpu {','.join(gpus)} lists {len(gpus)} GPUs; Jittor runs one process per GPU: start the "
              f"same command with `mpirun -np {len(gpus)} python {script}.py ...` to use them all "
              f"(this single process uses GPU {gpus[0]})")
    if "restore_from" in found:
        options["restore_from"] = found["restore_from"][1]
    if script == "evaluate":
        _evaluate_aliases(options, found)
    else:
        _train_aliases(options, found, len(gpus) if gpus else world_size)
    return options


def _train_aliases(options: dict, found: dict, processes: int) -> None:
    if "input_size" in found:
        _set(options, "crop_size", found["input_size"][1], "--input-size", "--crop-size")
    steps = [found[k] for k in ("num_steps", "max_iter") if k in found]
    if len({value for _, value in steps}) > 1:
        raise ValueError("--num-steps and --max-iter disagree; give one of them")
    if steps:
        _set(options, "iters", steps[0][1], steps[0][0], "--iters")
    if "start" in found and found["start"][1] != 0:
        raise ValueError(f"{found['start'][0]} {found['start'][1]}: to continue a run where it stopped, use "
                         f"--resume RUN_FOLDER (it restores the iteration, optimizer and data order exactly)")
    if "ohem_keep" in found:
        per_gpu = found["ohem_keep"][1]
        total = per_gpu * processes
        _set(options, "ohem_min_kept", total, "--ohem-keep", "--ohem-min-kept")
        if processes > 1:
            _note(f"--ohem-keep {per_gpu} counts each GPU's share in the official code; for {processes} "
                  f"GPUs that is --ohem-min-kept {total} here (pixels of the whole batch)")


def _evaluate_aliases(options: dict, found: dict) -> None:
    if options.get("restore_from"):
        _set(options, "checkpoint", options.pop("restore_from"), "--restore-from", "--checkpoint")
    if options.get("checkpoint") is None:
        raise ValueError("the checkpoint to evaluate is missing: give --checkpoint FILE_OR_RUN_FOLDER")
    whole = found.get("whole", (None, False))[1]
    if whole:
        _set(options, "mode", "whole", "--whole", "--mode")
    if "input_size" in found and not whole:
        size = found["input_size"][1]
        stride = [math.ceil(s * 2 / 3) for s in size]  # their sliding window: a third overlap
        _set(options, "mode", "slide", "--input-size", "--mode")
        _set(options, "crop_size", size, "--input-size", "--crop-size")
        _set(options, "stride", stride, "--input-size", "--stride")
