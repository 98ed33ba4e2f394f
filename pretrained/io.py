"""The project's file formats: atomic writes, safe pickles, weight files.

A leaf module (numpy and the standard library only), so that every other
part of the project can write and read files through it:

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
* weight files (``convert_weights.py`` output): ``{"state_dict": {name:
  array}, "meta": {...}}``; :func:`read_weights` also accepts a plain
  ``{name: array}`` pickle and PyTorch files (through the torch-free reader in
  :mod:`pretrained.torch_reader`), and :func:`unwrap_checkpoint` finds the
  state dict inside a wrapped checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
from collections import OrderedDict
from typing import Any, Callable, Mapping, Union

import numpy as np

from pretrained.torch_reader import PLAIN_GLOBALS, CheckpointFormatError, checkpoint_format, read_torch_checkpoint

__all__ = [
    "FileFormatError", "UnsafeFileError", "OutputError", "check_output_dir", "check_output_file", "atomic_write", "remove_stale_temporaries", "write_json",
    "save_pickle", "load_pickle", "unwrap_checkpoint", "read_weights", "save_weights", "WEIGHTS_FORMAT",
]

_MARKER = b"HCAJSLHD"  # jt.save's trailer: pickle bytes, 20-byte SHA-1, this marker
_DIGEST = 20

#: ``meta["format"]`` of the weight files written by :func:`save_weights`.
WEIGHTS_FORMAT = "ccnet-jittor-weights"


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
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


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


# --------------------------------------------------------------------------- weight files

def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray)


def unwrap_checkpoint(obj: Any) -> tuple["OrderedDict[str, np.ndarray]", list[str]]:
    """Find the state dict in a loaded checkpoint; returns ``(state_dict, notes)``.

    Descends into ``state_dict`` / ``model`` / ``state_dict_ema`` /
    ``model_state`` / ``net`` wrappers and strips a ``module.`` prefix shared
    by all keys; non-array entries are left out. Raises
    :class:`FileFormatError` when no tensors are found.
    """
    notes: list[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping) or any(_is_array(v) for v in obj.values()):
            break
        for wrapper in ("state_dict", "model", "state_dict_ema", "model_state", "net"):
            if isinstance(obj.get(wrapper), Mapping):
                notes.append(f"weights taken from the checkpoint's {wrapper!r} entry")
                obj = obj[wrapper]
                break
        else:
            break
    if not isinstance(obj, Mapping) or not any(_is_array(v) for v in obj.values()):
        what = type(obj).__name__
        keys = list(obj.keys())[:8] if isinstance(obj, Mapping) else []
        raise FileFormatError(
            f"no tensors found: the file holds a {what}{' with keys ' + str(keys) if keys else ''}, "
            f"not a state dict (a pickled whole model is not supported: save model.state_dict())")
    sd = OrderedDict((str(k), v) for k, v in obj.items() if _is_array(v))
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
        notes.append("stripped the 'module.' prefix")
    return sd, notes


def is_torch_file(path: str) -> bool:
    """True for a file ``torch.save`` wrote (zip or legacy format) or a ``.safetensors`` file."""
    try:
        return checkpoint_format(path) in ("zip", "legacy", "safetensors", "tar")
    except CheckpointFormatError:
        return False


def read_weights(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read a weights file into ``(state_dict, meta)``.

    Accepted: this project's ``{"state_dict", "meta"}`` pickle, a plain
    ``{name: array}`` pickle, and PyTorch files (read without torch; ``meta``
    is then ``{"source": path}``). Raises :class:`FileFormatError`.
    """
    if not os.path.isfile(path):
        raise FileFormatError(f"{path}: no such file")
    if is_torch_file(path):
        try:
            sd, _ = unwrap_checkpoint(read_torch_checkpoint(path))
        except CheckpointFormatError as exc:
            raise FileFormatError(str(exc)) from None
        return dict(sd), {"source": path}
    obj = load_pickle(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return {k: np.asarray(v) for k, v in obj["state_dict"].items()}, dict(obj.get("meta") or {})
    if isinstance(obj, Mapping) and obj and all(_is_array(v) for v in obj.values()):
        return dict(obj), {}
    raise FileFormatError(f"{path}: expected a weights file ({{'state_dict': ..., 'meta': ...}} or a dict of "
                          f"arrays), got a {type(obj).__name__}")


def save_weights(path: str, state_dict: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """Write ``{"state_dict", "meta"}`` atomically as a ``.pkl`` (readable by ``jt.load`` too)."""
    if not path.endswith(".pkl"):
        raise FileFormatError(f"the output must be a .pkl file, got {path!r}")
    payload = {"state_dict": {k: np.ascontiguousarray(v) for k, v in state_dict.items()}, "meta": dict(meta)}
    return save_pickle(path, payload)
