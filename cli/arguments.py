"""The scripts' argument parser and the argument groups they share.

Each script is ``get_args_parser()`` plus ``main(argv)``; ``main`` hands the
parsed options to the library through ``cli.main.run_main``. :class:`Parser`
turns a usage error into one ``error:`` line with the nearest known flag.
"""
from __future__ import annotations

import argparse
import difflib
from typing import Any, NoReturn

from utils.clips import DEFAULT_CLIP_LENGTH

__all__ = ["Parser", "HelpFormatter", "OTHER_NAMES", "add_model_args", "add_device_args", "add_inference_args",
           "add_clip_args", "add_verbose_arg"]

#: Flags of other segmentation code (not accepted as aliases: only named in the hint) -> ours.
OTHER_NAMES = {"--save-interval": "--snapshot-interval", "--checkpoint-interval": "--snapshot-interval",
               "--ckpt-interval": "--snapshot-interval", "--save-freq": "--snapshot-interval",
               "--save-every": "--snapshot-interval"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks (the scripts' docstrings are their help)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error:`` line, with the nearest flag for an unknown one.

    Abbreviations are off: ``--num-step`` is an unknown flag (with a hint), not a
    silent prefix of ``--num-steps``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def nearest_flag(self, flag: str) -> str:
        """`` did you mean --x?`` for the closest known flag (hidden aliases included), or ``""``.

        Names other toolboxes use for one of our flags go to it first: by
        spelling, ``--save-interval`` is nearest ``--eval-interval``.
        """
        name = flag.split("=", 1)[0]
        meant = OTHER_NAMES.get(name.replace("_", "-"))
        if meant in self._option_string_actions:
            return f"; did you mean {meant}?"
        match = difflib.get_close_matches(name, list(self._option_string_actions), n=1, cutoff=0.6)
        return f"; did you mean {match[0]}?" if match else ""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            unknown = message[len("unrecognized arguments: "):].split()
            flags = [u for u in unknown if u.startswith("-")]
            if flags:
                message = f"unknown flag {flags[0]}{self.nearest_flag(flags[0])}"
            else:
                message = f"unexpected argument(s) {' '.join(unknown)}"
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_model_args(parser: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """The model source (a positional checkpoint) and what may override what it records."""
    parser.add_argument("checkpoint", help=checkpoint_help)
    g = parser.add_argument_group("model (default: what the checkpoint records)")
    g.add_argument("--model", help="model preset")
    g.add_argument("--dataset", help="dataset preset: palette, classes, test mode")
    g.add_argument("--num-classes", type=int, help="default: the checkpoint's, else its classifier's")
    g.add_argument("--recurrence", type=int, help="criss-cross passes R")
    g.add_argument("--model-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="extra build_model keyword (VALUE parsed as JSON when possible); repeatable")


def add_verbose_arg(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: Jittor's own information lines (``jittor_env`` reads the flag before Jittor starts)."""
    parser.add_argument("--verbose", action="store_true", default=None,
                        help="show Jittor's information lines (hidden otherwise)")


def add_device_args(parser: argparse.ArgumentParser, amp: bool = False) -> None:
    """``--no-cuda`` (and ``--amp`` where the script supports it)."""
    g = parser.add_argument_group("device")
    g.add_argument("--no-cuda", action="store_true", default=None, help="run on the CPU even if a GPU is present")
    if amp:
        g.add_argument("--amp", action="store_true", default=None, help="mixed precision (GPU only)")


def add_clip_args(parser: argparse.ArgumentParser, from_checkpoint: bool) -> None:
    """``--clip-length`` and ``--clip-stride`` of the video models (``ccnet3d_*``)."""
    recorded = "the checkpoint's, else " if from_checkpoint else ""
    g = parser.add_argument_group("video clips (ccnet3d_* models only)")
    g.add_argument("--clip-length", type=int, metavar="T",
                   help=f"frames per clip, the labelled one at index (T-1)//2 (default: {recorded}"
                        f"{DEFAULT_CLIP_LENGTH})")
    g.add_argument("--clip-stride", type=int, metavar="S",
                   help=f"video frames from one frame of a clip to the next (default: {recorded}1)")


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Whole / sliding-window inference and the test resize (default: the dataset preset's)."""
    g = parser.add_argument_group("inference (default: the dataset preset's)")
    g.add_argument("--mode", choices=("whole", "slide"), help="whole image or sliding windows")
    g.add_argument("--crop-size", type=int, nargs="+", metavar="N", help="sliding window: H [W]")
    g.add_argument("--stride", type=int, nargs="+", metavar="N", help="sliding stride: H [W]")
    g.add_argument("--test-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="keep-ratio resize to fit (long, short) before inference")
