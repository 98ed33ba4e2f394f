"""Write numpy state dicts as PyTorch checkpoint files, without torch.

The file is what ``torch.save(state_dict, path)`` writes by default (the zip
format, read by :mod:`utils.torch_reader`): an uncompressed zip archive with

* ``<name>/data.pkl``: a protocol-2 pickle of an ``OrderedDict`` from key to
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
  requires_grad=False, backward_hooks=OrderedDict())``, each storage a
  persistent id ``('storage', torch.<Type>Storage, '<key>', 'cpu', numel)``;
* ``<name>/data/<key>``: each tensor's bytes, little-endian, C order, aligned
  to 64 bytes in the file as PyTorch aligns them (so ``torch.load(...,
  mmap=True)`` works too);
* ``<name>/byteorder`` (``little``) and ``<name>/version`` (``3``).

The pickle names only ``collections.OrderedDict``, ``torch._utils.
_rebuild_tensor_v2`` and the storage types, which ``torch.load(...,
weights_only=True)`` accepts. The opcodes are written here directly, since
the pickle module would import torch to name its functions.
"""
from __future__ import annotations

import struct
import zipfile
from typing import Mapping

import numpy as np

__all__ = ["write_torch_state_dict", "STORAGE_TYPES"]

#: numpy dtype -> the torch storage class that holds it.
STORAGE_TYPES: dict[np.dtype, str] = {
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}

_ALIGNMENT = 64  # PyTorch's zip writer starts every record's data at a multiple of 64 bytes


class _Pickle:
    """Protocol-2 pickle opcodes, enough for a dict of tensors."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL

    def string(self, text: str) -> None:
        raw = text.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE

    def integer(self, value: int) -> None:
        if -2 ** 31 <= value < 2 ** 31:
            self.out += b"J" + struct.pack("<i", value)  # BININT
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw  # LONG1

    def int_tuple(self, values) -> None:
        self.out += b"("  # MARK
        for v in values:
            self.integer(int(v))
        self.out += b"t"  # TUPLE

    def empty_ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # EMPTY_TUPLE, REDUCE

    def tensor(self, key: str, array: np.ndarray) -> None:
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("  # MARK: the arguments
        self.out += b"("  # MARK: the persistent id
        self.string("storage")
        self.global_("torch", STORAGE_TYPES[array.dtype])
        self.string(key)
        self.string("cpu")
        self.integer(array.size)
        self.out += b"tQ"  # TUPLE, BINPERSID
        self.integer(0)  # storage offset
        self.int_tuple(array.shape)
        self.int_tuple(_contiguous_strides(array.shape))
        self.out += b"\x89"  # NEWFALSE: requires_grad
        self.empty_ordered_dict()  # backward hooks
        self.out += b"tR"  # TUPLE, REDUCE

    def state_dict(self, sd: Mapping[str, np.ndarray], keys: Mapping[str, str]) -> bytes:
        self.empty_ordered_dict()
        if sd:
            self.out += b"("  # MARK
            for name, array in sd.items():
                self.string(name)
                self.tensor(keys[name], array)
            self.out += b"u"  # SETITEMS
        self.out += b"."  # STOP
        return bytes(self.out)


def _contiguous_strides(shape) -> list[int]:
    """Element strides of a C-ordered array of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return strides[::-1]


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """A stored record whose data starts at a multiple of 64 bytes (padding in a local extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header_end = archive.fp.tell() + 30 + len(name.encode())  # the local header's fixed part and the name
    pad = (-(header_end + 4)) % _ALIGNMENT  # 4: the extra field's id and size
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    archive.writestr(info, data)


def write_torch_state_dict(sd: Mapping[str, np.ndarray], path_or_file, archive_name: str = "archive") -> None:
    """Write ``sd`` (key -> numpy array) to ``path_or_file`` in ``torch.save``'s zip format.

    Arrays keep their dtype and shape (0-d included); a dtype torch has no
    storage for is a ``TypeError``. The caller makes the write atomic.
    """
    arrays, keys = {}, {}
    for i, (name, value) in enumerate(sd.items()):
        array = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        if array.dtype not in STORAGE_TYPES:
            raise TypeError(f"{name}: torch has no storage for dtype {array.dtype}")
        arrays[name], keys[name] = array, str(i)
    pickled = _Pickle().state_dict(arrays, keys)
    with zipfile.ZipFile(path_or_file, "w", zipfile.ZIP_STORED) as archive:
        _write_aligned(archive, f"{archive_name}/data.pkl", pickled)
        _write_aligned(archive, f"{archive_name}/byteorder", b"little")
        for name, array in arrays.items():
            _write_aligned(archive, f"{archive_name}/data/{keys[name]}", array.astype(array.dtype.newbyteorder("<"),
                                                                                     copy=False).tobytes())
        _write_aligned(archive, f"{archive_name}/version", b"3\n")
