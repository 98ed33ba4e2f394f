"""A training run's folder: what train.py writes there, and the rules that keep a run from being lost.

A run folder holds ``config.json`` (marked as ours by ``"run_format"``),
``log.jsonl``, ``train.log`` and ``checkpoint_<iter>.pkl`` / ``_last`` /
``_best``, plus ``eval_<split>/`` folders that evaluate.py writes beside them
(recognised by their ``results.json``). These are its *run files*; the
project never removes anything else:

* one training process at a time per folder: :func:`claim` takes a lock on
  ``.train.lock`` for the life of the process (the OS drops it when the
  process ends, however it ends), *before* the folder is checked, so two
  starts into one folder cannot both pass the check;
* a fresh run into a folder that holds run files is refused (:func:`check_fresh`)
  unless ``--overwrite`` is given, which removes exactly those files first;
  what a start left that never reached iteration 1 (its ``config.json`` and
  logs without an iteration) does not count;
* a resumed run drops the log rows past the iteration it continues from
  (:func:`truncate_logs`), so the log reads as one run;
* :func:`is_run_folder` tells whether a folder is one of ours (demo.py only
  ever clears such a folder).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import struct
import time
from typing import Optional

from utils.fileio import atomic_write

__all__ = ["RUN_FORMAT", "LOCK", "RunFolderError", "run_files", "is_run_folder", "claim", "release",
           "check_not_foreign", "check_fresh", "clear_run", "truncate_logs"]

#: ``config.json["run_format"]``: the marker of a train.py run folder.
RUN_FORMAT = "ccnet-jittor-run-1"

#: The file in a run folder whose lock the training process holds.
LOCK = ".train.lock"
_HELD: dict = {}  # folder -> the open lock file of this process (kept open: closing it would drop the lock)

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


def claim(folder: str) -> None:
    """Lock ``folder`` for this process's training run (creating it); RunFolderError if another holds it.

    A POSIX record lock (``fcntl.lockf``, which NFS v4 and Lustre honour
    across nodes) on ``LOCK``, released by the OS when the process ends, so a
    crashed or killed run never blocks its resume. The holder's pid and host
    are written into the file for the message of the next one.
    """
    folder = os.path.abspath(folder)
    if folder in _HELD:
        return
    os.makedirs(folder, exist_ok=True)
    f = open(os.path.join(folder, LOCK), "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner, holder = _lock_owner(f), ""
        for _ in range(40):  # the holder writes its name just after locking
            f.seek(0)
            holder = f.read().strip()
            if holder and _names(holder, owner):
                break
            time.sleep(0.05)
        f.close()
        if not holder or not _names(holder, owner):
            holder = f"process {owner}" if owner else "another process"
        raise RunFolderError(f"the run folder {folder} is in use by {holder}, which is training into it; wait "
                             f"for it to end (or stop it), or choose another --output-dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    _HELD[folder] = f


def _lock_owner(f) -> Optional[int]:
    """The pid holding the lock on ``f`` (``F_GETLK``), or None where the system does not say (0 over NFS)."""
    layout = "hhxxxxqqixxxx"  # struct flock on 64-bit Linux: type, whence, start, length, pid
    try:
        reply = fcntl.fcntl(f.fileno(), fcntl.F_GETLK, struct.pack(layout, fcntl.F_WRLCK, 0, 0, 0, 0))
        pid = struct.unpack(layout, reply)[4]
    except (OSError, struct.error):
        return None
    return pid or None


def _names(holder: str, owner: Optional[int]) -> bool:
    """Whether the lock file's ``holder`` line names the lock's ``owner``: a name left by an earlier holder
    that was killed does not (a holder on another host cannot be checked from here and is believed)."""
    if owner is None or holder.startswith(f"process {owner} "):
        return True
    return not holder.endswith(f" on {socket.gethostname()}")


def release(folder: str) -> None:
    """Let go of the lock :func:`claim` took on ``folder`` (a no-op if this process holds none)."""
    f = _HELD.pop(os.path.abspath(folder), None)
    if f is not None:
        f.seek(0)
        f.truncate()  # no stale name for the next start to read while its holder has not written its own
        f.flush()
        f.close()  # closing the file drops the lock


def _ever_trained(folder: str, names: list[str]) -> bool:
    """True unless the run files are those of a start that never finished an iteration."""
    if any(n.startswith(("checkpoint_", "eval_")) for n in names):
        return True
    try:
        with open(os.path.join(folder, "log.jsonl")) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and int(row.get("iter", 0) or 0) >= 1:
                    return True
    except OSError:
        pass
    return False


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


def check_not_foreign(folder: str) -> None:
    """RunFolderError if ``folder`` holds a ``config.json`` that train.py did not write (read only)."""
    if os.path.isfile(os.path.join(folder, "config.json")) and not is_run_folder(folder):
        raise RunFolderError(f"{folder} holds a config.json that train.py did not write; choose another "
                             f"--output-dir (nothing there is removed, --overwrite included)")


def check_fresh(folder: str, overwrite: bool = False, remove: bool = True) -> Optional[list[str]]:
    """Make sure a fresh run may start in ``folder``; with ``overwrite`` remove the old run's files first.

    Raises :class:`RunFolderError` naming ``--resume`` and ``--overwrite`` when
    the folder holds run files and ``overwrite`` is False. Returns the names
    removed (None when there was nothing; ``remove=False`` only checks).
    """
    check_not_foreign(folder)
    names = run_files(folder)
    if not names:
        return None
    if not _ever_trained(folder, names):
        return clear_run(folder) if remove else None  # a start that never reached iteration 1
    if not overwrite:
        resume = (f"continue it with --resume {folder}, or " if any(n.startswith("checkpoint_") for n in names)
                  else "it has no checkpoint to continue from; ")
        raise RunFolderError(
            f"the run folder {folder} already holds a run ({_summary(names)}); {resume}start it again with "
            f"--overwrite (removes those run files), or choose another --output-dir")
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
