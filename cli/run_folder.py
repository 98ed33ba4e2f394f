"""A training run's folder: what train.py writes there, and the rules that keep a run from being lost.

A run folder holds ``config.json`` (marked as ours by ``"run_format"``),
``log.jsonl``, ``train.log`` and ``checkpoint_<iter>.pkl`` / ``_last`` /
``_best``, plus ``eval_<split>/`` folders that evaluate.py writes beside them
(recognised by their ``results.json``). These are its *run files*; the
project never removes anything else:

* a fresh run into a folder that holds run files is refused (:func:`check_fresh`)
  unless ``--overwrite`` is given, which removes exactly those files first;
* a resumed run drops the log rows past the iteration it continues from
  (:func:`truncate_logs`), so the log reads as one run;
* :func:`is_run_folder` tells whether a folder is one of ours (demo.py only
  ever clears such a folder).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Optional

from utils.fileio import atomic_write

__all__ = ["RUN_FORMAT", "RunFolderError", "run_files", "is_run_folder", "check_fresh", "clear_run",
           "truncate_logs"]

#: ``config.json["run_format"]``: the marker of a train.py run folder.
RUN_FORMAT = "ccnet-jittor-run-1"

_TEXT_ITER = re.compile(r" iter (\d+)/")  # train.log lines of an iteration
_RUN_FILE = re.compile(r"(log\.jsonl|train\.log|checkpoint_(\d+|last|best)\.pkl)(\.tmp-\d+)?$")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it holds another run, or is not ours)."""


def run_files(folder: str) -> list[str]:
    """The names of the run files in ``folder`` (sorted; empty if there is no such folder).

    ``config.json`` counts only when train.py wrote it (its marker), an
    ``eval_*`` folder only when it holds evaluate.py's ``results.json``.
    """
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        path = os.path.join(folder, name)
        if name == "config.json":
            ours = is_run_folder(folder)
        elif name.startswith("eval_") and os.path.isdir(path) and not os.path.islink(path):
            ours = os.path.isfile(os.path.join(path, "results.json"))
        else:
            ours = bool(_RUN_FILE.match(name)) and os.path.isfile(path)
        if ours:
            found.append(name)
    return sorted(found)


#: The keys by which a config.json train.py wrote before it carried ``run_format`` is recognised.
_EARLIER_KEYS = {"model", "dataset", "iters", "batch_size", "model_opts", "jittor_version", "iters_per_epoch"}


def is_run_folder(folder: str) -> bool:
    """True if ``folder`` holds a ``config.json`` written by train.py (its marker, or an earlier one's keys)."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and (cfg.get("run_format") == RUN_FORMAT or _EARLIER_KEYS <= set(cfg))


def _summary(names: list[str]) -> str:
    checkpoints = [n for n in names if n.startswith("checkpoint_")]
    others = [n for n in names if not n.startswith("checkpoint_")]
    parts = others[:4] + ([f"{len(checkpoints)} checkpoint(s)"] if checkpoints else [])
    return ", ".join(parts) + (" ..." if len(others) > 4 else "")


def clear_run(folder: str) -> list[str]:
    """Remove the run files of ``folder`` (and nothing else); returns their names."""
    names = run_files(folder)
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return names


def check_fresh(folder: str, overwrite: bool = False, remove: bool = True) -> Optional[list[str]]:
    """Make sure a fresh run may start in ``folder``; with ``overwrite`` remove the old run's files first.

    Raises :class:`RunFolderError` naming ``--resume`` and ``--overwrite`` when
    the folder holds run files and ``overwrite`` is False. Returns the names
    removed (None when there was nothing; ``remove=False`` only checks).
    """
    if os.path.isfile(os.path.join(folder, "config.json")) and not is_run_folder(folder):
        raise RunFolderError(f"{folder} holds a config.json that train.py did not write; choose another "
                             f"--output-dir (nothing there is removed, --overwrite included)")
    names = run_files(folder)
    if not names:
        return None
    if not overwrite:
        raise RunFolderError(
            f"the run folder {folder} already holds a run ({_summary(names)}); continue it with "
            f"--resume {folder}, or start it again with --overwrite (removes those run files), "
            f"or choose another --output-dir")
    return clear_run(folder) if remove else None


def truncate_logs(folder: str, iteration: int) -> None:
    """Drop the rows of ``log.jsonl`` and lines of ``train.log`` past ``iteration`` (a resume continues there)."""
    text = os.path.join(folder, "train.log")
    if os.path.isfile(text):
        with open(text) as f:
            lines = [line for line in f if not (m := _TEXT_ITER.search(line)) or int(m.group(1)) <= iteration]
        atomic_write(text, "".join(lines), binary=False)
    path = os.path.join(folder, "log.jsonl")
    if os.path.isfile(path):
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if isinstance(row, dict) and int(row.get("iter", 0)) <= iteration:
                    kept.append(json.dumps(row) + "\n")
        atomic_write(path, "".join(kept), binary=False)
