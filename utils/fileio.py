"""Files the project writes and reads: atomic writes, JSON, output checks, safe pickles.

Every other part of the project writes and reads its files through here:

* :func:`atomic_write` is the one writer of every output the project keeps
  (checkpoints, weight files, JSON results, benchmark records): a temporary
  file in the target folder, fsync, rename. An interrupted write leaves the
  old file (or none), never half a file; the temporary file is named
  ``<name>.tmp-<pid>``, and one left behind by a killed process is removed at
  the next write into that folder (:func:`remove_stale_temporaries`).
* :func:`save_pickle` / :func:`load_pickle`: pickles in Jittor's ``jt.save``
  layout (pickle protocol 4, then the SHA-1 of the pickle and the marker
  ``HCAJSLHD``), so ``jt.load`` reads them too and a truncated or damaged file
  is recognised as such. Reading never runs code: the unpickler resolves only
  the few classes the project writes (containers, numpy arrays, scalars and
  dtypes); a file naming any other class is refused with
  :class:`UnsafeFileError` before anything in it is built.
* :func:`check_output_dir` / :func:`check_output_file`: an output location is
  checked before any work is done.

The weight-file format built on these is :mod:`utils.weight_files`.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
from typing import Any, Callable, Mapping, Union

import numpy as np

from utils.torch_reader import PLAIN_GLOBALS

__all__ = ["FileFormatError", "UnsafeFileError", "OutputError", "WRITE_ERRNOS", "write_failure",
           "check_output_dir", "check_output_file",
           "atomic_write", "link_atomic", "remove_stale_temporaries", "write_json", "save_pickle", "load_pickle"]

_MARKER = b"HCAJSLHD"  # jt.save's trailer: pickle bytes, 20-byte SHA-1, this marker
_DIGEST = 20


#: errno values that mean "the disk cannot take this file": full, over quota, too large, read-only.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def write_failure(exc: BaseException) -> str:
    """``"<reason> writing <file>"`` for an OSError in :data:`WRITE_ERRNOS`, else ``""``."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return ""
    name = re.sub(r"\.tmp-\d+$", "", str(exc.filename)) if exc.filename else "a file"  # atomic_write's temporary
    return f"{exc.strerror or exc} writing {name}"


class FileFormatError(ValueError):
    """A file is missing, truncated, damaged or not in the expected format; the message names it."""


class UnsafeFileError(FileFormatError):
    """A pickle names a class the project never writes: it could run code, so it is not read."""


class OutputError(ValueError):
    """An output location cannot be written; found before any work is done."""


def check_output_dir(path: str, flag: str) -> str:
    """Create ``path`` if needed and make sure files can be written there; returns it.

    Raises :class:`OutputError` naming ``flag`` (the option that chose the
    location) when the folder cannot be created or written: a file in the
    way, no permission, a read-only file system, a full disk.
    """
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"x")
        os.remove(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way"
        raise OutputError(f"cannot write to {path} ({reason}); choose another {flag}") from None
    return path


def check_output_file(path: str, flag: str) -> str:
    """Make sure ``path`` can be written (its folder is writable and it is not a folder); returns it."""
    if os.path.isdir(path):
        raise OutputError(f"{path} is a folder; give a file name for {flag}")
    check_output_dir(os.path.dirname(os.path.abspath(path)), flag)
    return path


# --------------------------------------------------------------------------- writing

def _temporary_name(path: str, pid: int) -> str:
    return f"{path}.tmp-{pid}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove ``*.tmp-<pid>`` files of processes that no longer run (a killed save); returns them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        stem, sep, pid = name.rpartition(".tmp-")
        if not sep or not stem or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def atomic_write(path: str, write: Union[bytes, str, Callable[[Any], None]], binary: bool = True) -> str:
    """Write ``path`` atomically: ``write`` is the content or a function that writes to the open file.

    The content goes to ``<path>.tmp-<pid>`` in the same folder, is fsynced
    and renamed over ``path``; on any error (Ctrl-C included) the temporary
    file is removed and ``path`` is untouched. Stale temporaries of dead
    processes in that folder are removed first. New files get the user's
    umask like any other output. Returns ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    tmp = _temporary_name(path, os.getpid())
    try:
        with open(tmp, "wb" if binary else "w") as f:
            if callable(write):
                write(f)
            else:
                f.write(write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file: name the target
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    return path


def link_atomic(src: str, dst: str) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else a copy), replacing ``dst`` atomically."""
    tmp = _temporary_name(dst, os.getpid())
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    return obj


def write_json(path: str, obj: Any) -> str:
    """Write ``obj`` as indented JSON atomically (NaN as null, inf as a string, numpy as lists)."""
    text = json.dumps(_json_safe(obj), indent=2, default=str) + "\n"
    return atomic_write(path, text, binary=False)


# --------------------------------------------------------------------------- safe pickles

#: The only classes a project file may name: what pickling our checkpoints and weight files produces.
_ALLOWED = PLAIN_GLOBALS


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self.path}: refused to read it: the file names {module}.{name}, which the project never "
                f"writes (a pickle naming other classes can run code when loaded). If you trust the file, "
                f"convert it with its own code to plain arrays first.") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.path}: refused to read it: it uses persistent ids ({pid!r}); "
                              "project files never do")


def save_pickle(path: str, obj: Any) -> str:
    """Write ``obj`` (dicts, lists, numbers, strings, numpy arrays) atomically in ``jt.save``'s layout."""
    data = pickle.dumps(obj, protocol=4)
    return atomic_write(path, data + hashlib.sha1(data).digest() + _MARKER)


def load_pickle(path: str) -> Any:
    """Read a project pickle (``jt.save`` layout, or a plain pickle) without running code.

    Raises :class:`FileFormatError` for a missing, truncated, damaged or
    non-pickle file and :class:`UnsafeFileError` for a pickle that names a
    class the project never writes.
    """
    if not os.path.isfile(path):
        raise FileFormatError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    if data.endswith(_MARKER):
        body, digest = data[:-len(_MARKER) - _DIGEST], data[-len(_MARKER) - _DIGEST:-len(_MARKER)]
        if hashlib.sha1(body).digest() != digest:
            raise FileFormatError(f"{path}: damaged (its checksum does not match: the file was changed or "
                                  "not written completely); use another copy")
        data = body
    elif not data.startswith(b"\x80"):
        raise FileFormatError(f"{path}: not a pickle written by this project or Jittor")
    try:
        return _SafeUnpickler(io.BytesIO(data), path).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as exc:
        raise FileFormatError(f"{path}: truncated or damaged ({type(exc).__name__}: {exc})") from None
