"""Read PyTorch checkpoint files into numpy, without torch.

``torch.save`` writes one of two formats:

* **zip** (the default since PyTorch 1.6): a zip archive ``<name>/data.pkl``
  (the object, tensors pickled as persistent ids ``('storage', type, key,
  location, numel)``) plus one raw little-endian file ``<name>/data/<key>``
  per storage.
* **legacy** (``_use_new_zipfile_serialization=False``, PyTorch < 1.6): five
  consecutive pickles -- magic number, protocol version, system info, the
  object (persistent ids ``('storage', type, key, location, numel,
  view_metadata)``), the list of storage keys -- followed by each storage as
  an int64 element count and its raw bytes.

Both are handled by an :class:`pickle.Unpickler` that resolves only a short
list of known globals (tensor rebuild functions, storage types, containers);
anything else becomes an inert placeholder object, so training metadata such
as ``argparse.Namespace`` or optimizer state never breaks reading and no
foreign code runs. Tensors come back as ``numpy`` arrays with their exact
dtype and shape (0-d tensors stay 0-d; ``bfloat16`` is widened to float32);
views sharing one storage are rebuilt from (offset, size, stride).

The pre-1.0 tar format is recognised and refused. HuggingFace ``.safetensors``
files (an 8-byte header length, a JSON header, raw tensor bytes) are read too.
"""
from __future__ import annotations

import codecs
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np

__all__ = ["CheckpointFormatError", "read_torch_checkpoint", "checkpoint_format", "PLAIN_GLOBALS"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Storage class name -> numpy dtype. "bfloat16" is special-cased (no numpy dtype).
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
    "UntypedStorage": np.uint8,
}


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


class _StorageType:
    """Stands for ``torch.<X>Storage`` inside the pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage whose bytes may arrive after the object pickle (legacy format)."""

    def __init__(self, dtype: Any, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None  # flat, filled in when the bytes are read

    def set_bytes(self, raw: bytes) -> None:
        if self.dtype == "bfloat16":
            u16 = np.frombuffer(raw, dtype="<u2")
            self.array = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            self.array = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<"))
            self.array = self.array.astype(np.dtype(self.dtype), copy=False)


class _StorageView:
    """Legacy storage view: ``root[offset:offset + size]``."""

    def __init__(self, root: _Storage, offset: int, size: int) -> None:
        self.root, self.offset, self.size = root, offset, size


class _LazyTensor:
    """A tensor to build from its storage once all storages are read."""

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            offset += storage.offset
            storage = storage.root
        flat = storage.array
        if flat is None:
            raise CheckpointFormatError("a tensor refers to a storage whose data is missing")
        if len(self.size) == 0:
            return np.array(flat[offset], dtype=flat.dtype)  # 0-d stays 0-d
        n = int(np.prod(self.size))
        if n == 0:
            return np.zeros(self.size, dtype=flat.dtype)
        last = offset + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if offset < 0 or last >= flat.size:
            raise CheckpointFormatError("a tensor reaches outside its storage (truncated file?)")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=self.size,
                                               strides=tuple(st * item for st in self.stride))
        return np.array(view)  # own, contiguous copy


def _rebuild_tensor(storage, storage_offset, size, stride, *args, **kwargs):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    return data


class _Opaque:
    """Placeholder for any pickled object of a class we do not import."""

    _qualname = "?"

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:  # SETITEMS on dict subclasses
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value) -> None:  # APPENDS on list subclasses
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values) -> None:
        self.__dict__.setdefault("list", []).extend(values)

    def __repr__(self) -> str:
        return f"<unpickled {self._qualname}>"


def _opaque_class(module: str, name: str) -> type:
    return type(name, (_Opaque,), {"_qualname": f"{module}.{name}"})


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _reconstruct_ndarray, scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _reconstruct_ndarray, scalar as _numpy_scalar


#: The plain classes any pickle this project reads may name: containers and numpy arrays.
PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): codecs.encode,  # bytes pickled with protocol 2
}

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **PLAIN_GLOBALS,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class _PlainUnpickler(pickle.Unpickler):
    """Numbers, strings and containers only: the header pickles of the legacy format."""

    def find_class(self, module: str, name: str) -> Any:
        raise CheckpointFormatError(f"a pickle naming {module}.{name} where torch.save writes plain values; "
                                    f"not a torch file (and not read further: it could run code)")


def _load_plain(f: BinaryIO, path: str) -> Any:
    try:
        return _PlainUnpickler(f).load()
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, load_storage) -> None:
        super().__init__(file, encoding="latin1")
        self._load_storage = load_storage
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        return _opaque_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        view_metadata = pid[5] if len(pid) > 5 else None
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        else:  # torch >= 2 may pickle a dtype object instead; treat unknown as float32
            raise CheckpointFormatError(f"unsupported storage type {storage_type!r}")
        if key not in self.storages:
            storage = _Storage(dtype, int(numel))
            self.storages[key] = storage
            self._load_storage(key, storage)
        root = self.storages[key]
        if view_metadata is not None:
            _view_key, offset, size = view_metadata
            return _StorageView(root, int(offset), int(size))
        return root


def _materialize(obj: Any, memo: dict[int, Any]) -> Any:
    """Replaces every _LazyTensor inside containers by its numpy array."""
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if isinstance(obj, _LazyTensor):
        out: Any = obj.materialize()
    elif isinstance(obj, OrderedDict):
        out = OrderedDict((k, _materialize(v, memo)) for k, v in obj.items())
    elif isinstance(obj, dict):
        out = {k: _materialize(v, memo) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [_materialize(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_materialize(v, memo) for v in obj)
    elif isinstance(obj, _Opaque):
        for attr in ("args", "state", "items", "list"):
            if attr in obj.__dict__:
                obj.__dict__[attr] = _materialize(obj.__dict__[attr], memo)
        out = obj
    else:
        out = obj
    memo[oid] = out
    return out


_SAFETENSORS_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16", "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def checkpoint_format(path: str) -> str:
    """``"zip"``, ``"legacy"``, ``"safetensors"`` or ``"tar"`` (pre-1.0); raises CheckpointFormatError otherwise."""
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # a zip archive whose end (the central directory) is missing
        raise CheckpointFormatError(f"{path}: a truncated or damaged zip archive (the format torch.save "
                                    f"writes): the file ends before its table of contents; copy it again")
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= os.path.getsize(path) - 8:
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2
        try:
            with open(path, "rb") as f:
                magic = _load_plain(f, path)
        except Exception:
            magic = None
        if magic == _LEGACY_MAGIC:
            return "legacy"
        raise CheckpointFormatError(
            f"{path}: a pickle, but not one written by torch.save (no PyTorch magic number)")
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive "
                                f"nor a legacy torch pickle)")


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointFormatError(f"{path}: a zip file, but not a torch archive (no */data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            big_endian = zf.read(prefix + "byteorder").strip() == b"big"

        def load_storage(key: str, storage: _Storage) -> None:
            name = f"{prefix}data/{key}"
            if name not in names:
                raise CheckpointFormatError(f"{path}: storage {key} missing from the archive")
            raw = zf.read(name)
            if big_endian:
                dt = np.dtype("<u2" if storage.dtype == "bfloat16" else storage.dtype)
                raw = np.frombuffer(raw, dtype=dt.newbyteorder(">")).astype(dt.newbyteorder("<")).tobytes()
            storage.set_bytes(raw)

        with zf.open(pkl[0]) as f:
            obj = _Unpickler(io.BytesIO(f.read()), load_storage).load()
    return _materialize(obj, {})


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        magic = _load_plain(f, path)
        if magic != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a legacy torch file (bad magic number)")
        protocol = _load_plain(f, path)
        if protocol != 1001:
            raise CheckpointFormatError(f"{path}: unsupported legacy protocol version {protocol}")
        sys_info = _load_plain(f, path)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise CheckpointFormatError(f"{path}: big-endian legacy files are not supported")
        unpickler = _Unpickler(f, lambda key, storage: None)
        obj = unpickler.load()
        keys = _load_plain(f, path)
        for key in keys:
            key = str(key)
            storage = unpickler.storages.get(key)
            header = f.read(8)
            if len(header) != 8:
                raise CheckpointFormatError(f"{path}: truncated (storage {key})")
            (numel,) = struct.unpack("<q", header)
            itemsize = 2 if storage is not None and storage.dtype == "bfloat16" else \
                np.dtype(storage.dtype if storage is not None else np.uint8).itemsize
            raw = f.read(numel * itemsize)
            if len(raw) != numel * itemsize:
                raise CheckpointFormatError(f"{path}: truncated (storage {key})")
            if storage is not None:
                storage.set_bytes(raw)
    return _materialize(obj, {})


def _read_safetensors(path: str) -> "OrderedDict[str, np.ndarray]":
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise CheckpointFormatError(f"{path}: unsupported safetensors dtype {info['dtype']} ({name})")
        begin, end = info["data_offsets"]
        if end > len(data):
            raise CheckpointFormatError(f"{path}: truncated safetensors file ({name})")
        storage = _Storage(_SAFETENSORS_DTYPES[info["dtype"]], 0)
        storage.set_bytes(data[begin:end])
        out[name] = np.array(storage.array.reshape(tuple(info["shape"])))
    return out


def read_torch_checkpoint(path: str) -> Any:
    """Loads a ``torch.save`` file (zip or legacy format) or a ``.safetensors`` file, tensors as numpy arrays.

    Containers (dict, OrderedDict, list, tuple) are kept; objects of other
    classes become inert placeholders. Raises :class:`CheckpointFormatError`
    for anything that is not a readable torch checkpoint.
    """
    fmt = checkpoint_format(path)
    try:
        if fmt == "zip":
            return _read_zip(path)
        if fmt == "legacy":
            return _read_legacy(path)
        if fmt == "safetensors":
            return _read_safetensors(path)
    except CheckpointFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError, KeyError,
            TypeError, UnicodeDecodeError) as e:
        raise CheckpointFormatError(f"{path}: damaged or unsupported torch file ({type(e).__name__}: {e})") from e
    raise CheckpointFormatError(
        f"{path}: pre-1.0 PyTorch tar format; re-save it with a recent PyTorch "
        f"(torch.save(torch.load(f), g)) and convert that")
