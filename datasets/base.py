"""What every segmentation dataset shares: reading files, label mapping, batching.

:class:`SegmentationDataset` holds a list of (image, label) file pairs and
does everything that is not specific to one dataset layout:

* reading: images with OpenCV (converted to RGB), labels with Pillow (palette
  PNGs give their indices), with errors that name the file;
* label mapping through a per-dataset lookup table, and a check that every
  value is a class id in ``[0, num_classes)`` or the ignore label;
* repeatable randomness: a sample's augmentation depends only on
  ``(seed, epoch, sample index)``; the order of a pass on ``(seed, epoch)``
  (:class:`datasets.loader.EpochLoader`, the Jittor loader underneath);
* a collate function that stacks images and labels and keeps the metadata
  (names, original sizes) as plain Python lists.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image, ImageOps

from .loader import EpochLoader

__all__ = ["Sample", "DatasetError", "LOSSY_FORMATS", "SegmentationDataset", "samples_from_id_list", "read_image", "read_label_raw",
           "require_dir", "pair_samples"]

_INVALID = -1  # marks raw label values a dataset's lookup table does not accept


class DatasetError(ValueError):
    """A dataset file exists but cannot be used (corrupt, wrong size, bad label values)."""


@dataclass(frozen=True)
class Sample:
    """One image and its label file (``label is None`` for unlabelled test images)."""

    name: str
    image: str
    label: Optional[str]


def require_dir(path: str, what: str, layout: str) -> str:
    """Return ``path`` if it is a directory, else raise FileNotFoundError showing ``layout``."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path!r} is not a directory.\n"
                                f"Expected layout:\n{layout}")
    return path


def pair_samples(images: dict[str, str], labels: dict[str, str] | None, where: str) -> list[Sample]:
    """Match images and labels by sample name; an unmatched file is an error naming it."""
    if labels is None:
        return [Sample(k, images[k], None) for k in sorted(images)]
    missing_label = sorted(set(images) - set(labels))
    if missing_label:
        first = images[missing_label[0]]
        raise FileNotFoundError(f"{len(missing_label)} image(s) in {where} have no label, "
                                f"e.g. {first!r} (sample {missing_label[0]!r})")
    missing_image = sorted(set(labels) - set(images))
    if missing_image:
        first = labels[missing_image[0]]
        raise FileNotFoundError(f"{len(missing_image)} label(s) in {where} have no image, "
                                f"e.g. {first!r} (sample {missing_image[0]!r})")
    return [Sample(k, images[k], labels[k]) for k in sorted(images)]


def samples_from_id_list(list_path: str, image_dir: str, label_dir: Optional[str], what: str,
                         one_field: bool = False) -> list[Sample]:
    """Samples of an id list (one image id per line; ``<id>.jpg`` in ``image_dir``, ``<id>.png`` in ``label_dir``;
    ``label_dir=None``: unlabelled test images).

    Blank lines are skipped; a repeated id, a missing image or label, or (with
    ``one_field``) a line of more than one word is an error naming the line.
    """
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    with open(list_path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if one_field and len(fields) > 1:
                raise ValueError(f"{list_path}:{lineno}: expected one image id, got {line.strip()!r}")
            sample_id = fields[0]
            if sample_id in seen:
                raise ValueError(f"{list_path}:{lineno}: id {sample_id!r} repeats line {seen[sample_id]}")
            seen[sample_id] = lineno
            image = os.path.join(image_dir, sample_id + ".jpg")
            label = os.path.join(label_dir, sample_id + ".png") if label_dir is not None else None
            if not os.path.isfile(image):
                raise FileNotFoundError(f"{list_path}:{lineno}: image {image!r} does not exist")
            if label is not None and not os.path.isfile(label):
                raise FileNotFoundError(f"{list_path}:{lineno}: image {image!r} has no label {label!r}")
            samples.append(Sample(sample_id, image, label))
    if not samples:
        raise FileNotFoundError(f"{what} {list_path!r} has no entries")
    return samples


def read_image(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB image (grey, palette and RGBA converted); DatasetError naming the file otherwise.

    Decoded with Pillow, which refuses a truncated file (OpenCV decodes a
    truncated JPEG and fills the missing part with grey, with only a warning).
    An EXIF orientation (photos from phones and cameras) is applied, so the
    image is upright as every viewer shows it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return np.ascontiguousarray(np.asarray(upright.convert("RGB")))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path!r}: truncated, corrupt or not an image file "
                           f"({exc})") from None


#: Image formats (as Pillow detects them from the content) that cannot hold a label map exactly.
LOSSY_FORMATS = ("JPEG", "MPO", "JPEG2000", "WEBP")


def open_label(path: str, palette_as_rgb: bool = False) -> tuple[str, np.ndarray]:
    """``(image mode, pixels)`` of a label file (a palette image as RGB colours with ``palette_as_rgb``).

    FileNotFoundError or DatasetError naming the file when it is missing or broken, or stored in a lossy
    format (:data:`LOSSY_FORMATS`, whatever its name ends with): compression artefacts change class ids.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path!r}")
    try:
        with Image.open(path) as im:
            if im.format in LOSSY_FORMATS:
                raise DatasetError(f"label {path!r} is a {im.format} file: lossy compression changes class ids "
                                   "along every edge; labels must be lossless index images (PNG)")
            return im.mode, np.array(im.convert("RGB")) if palette_as_rgb and im.mode == "P" else np.array(im)
    except DatasetError:
        raise
    except Exception as exc:  # PIL raises several types for broken files
        raise DatasetError(f"cannot read label {path!r} (corrupt or not an image file): {exc}") from exc


def read_label_raw(path: str) -> np.ndarray:
    """HxW uint8 label as stored: palette PNGs give their indices, grayscale its values."""
    mode, label = open_label(path)
    if mode not in ("L", "P", "I", "I;16", "I;16B"):
        raise DatasetError(f"label {path!r} has image mode {mode!r}; expected a single-channel "
                           "index image (grayscale 'L' or palette 'P'), not a colour rendering")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DatasetError(f"label {path!r} has values outside 0..255 "
                               f"(min {label.min()}, max {label.max()})")
        label = label.astype(np.uint8)
    return label


def make_lut(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry lookup table from raw value to train id; unlisted values are invalid."""
    lut = np.full(256, _INVALID, dtype=np.int16)
    for raw, train_id in mapping.items():
        lut[raw] = train_id
    return lut


class SegmentationDataset(EpochLoader):
    """Base class: a list of :class:`Sample` pairs read as ``(image, label, meta)``.

    ``image`` is float32 CxHxW after the transform (normalised by the
    transform's :class:`~datasets.transforms.Normalize`), ``label`` int32 HxW
    with ``ignore_index`` for ignored pixels (all ignore for unlabelled
    images), ``meta`` a dict with ``name``, ``image_path``, ``ori_size``
    (the image's (h, w) as stored) and ``has_label``; batches carry it as a
    dict of lists.

    Subclasses build ``samples`` from their layout and implement
    :meth:`label_lut`. Loader options (``batch_size``, ``shuffle``,
    ``drop_last``, ``num_workers``, ...) are Jittor's and can also be changed
    later with ``set_attrs``; ``seed`` fixes order and augmentation.
    """

    def __init__(self, samples: list[Sample], num_classes: int,
                 transform: Optional[Callable] = None, ignore_index: int = 255,
                 seed: int = 0, **loader_kwargs: Any) -> None:
        if not samples:
            raise FileNotFoundError(f"{type(self).__name__}: no samples found")
        super().__init__(len(samples), seed=seed, **loader_kwargs)
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.ignore_index = ignore_index

    @property
    def num_samples(self) -> int:
        """Number of samples (``len(dataset)`` is the number of batches, Jittor's convention)."""
        return len(self.samples)

    # ------------------------------------------------------------------ reading

    def label_lut(self, sample: Sample) -> np.ndarray:
        """256-entry int16 table: raw label value -> train id, ``-1`` for invalid values."""
        raise NotImplementedError

    def load_label(self, sample: Sample) -> np.ndarray:
        """The sample's label mapped to train ids (uint8), checked against the valid values."""
        raw = read_label_raw(sample.label)
        lut = self.label_lut(sample)
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        bad = present[lut[present] == _INVALID]
        if bad.size:
            raise DatasetError(
                f"label {sample.label!r} has values {bad.tolist()} that are neither a class of "
                f"{type(self).__name__} ({self.num_classes} classes after mapping) nor the ignore label")
        return lut[raw].astype(np.uint8)

    sample_error = DatasetError

    def transform_sample(self, i: int, image: np.ndarray, label: Optional[np.ndarray], rng_key: list[int]):
        """Sample ``i``'s image (float32 CxHxW) and label after the transform, its random draws from
        ``np.random.default_rng(rng_key)`` (``[seed, epoch, i]``: repeatable in any worker or rank)."""
        if self.transform is None:
            return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32), label
        return self.transform(image, label, np.random.default_rng(rng_key))

    def load(self, index: int):
        index = int(index)
        epoch_code, i = self.decode_index(index)
        sample = self.samples[i]

        image = read_image(sample.image)
        ori_size = (int(image.shape[0]), int(image.shape[1]))
        label = None
        if sample.label is not None:
            label = self.load_label(sample)
            if label.shape != image.shape[:2]:
                raise DatasetError(f"label {sample.label!r} is {label.shape[1]}x{label.shape[0]} "
                                   f"but image {sample.image!r} is {image.shape[1]}x{image.shape[0]} (WxH)")
        image, label = self.transform_sample(i, image, label, [self.seed, epoch_code, i])
        if label is None:
            label = np.full(ori_size, self.ignore_index, dtype=np.int32)  # unlabelled: all ignore
        label = np.ascontiguousarray(label, dtype=np.int32)
        meta = {"name": sample.name, "image_path": sample.image, "ori_size": ori_size,
                "has_label": sample.label is not None, "index": index}
        return image, label, meta

    # ------------------------------------------------------------------ batching

    def collate_batch(self, batch):
        failed = self.error_batch(batch)
        if failed is not None:
            return failed
        images, labels, metas = zip(*batch)
        shapes = {(im.shape, lb.shape) for im, lb in zip(images, labels)}
        if len(shapes) > 1:
            detail = ", ".join(f"{m['name']}: image {im.shape} label {lb.shape}"
                               for im, lb, m in zip(images, labels, metas))
            raise DatasetError("samples of one batch have different sizes and cannot be stacked "
                               f"({detail}); use batch_size=1 for whole-image evaluation of "
                               "images of different sizes, or a fixed crop/test size")
        meta = {key: [m[key] for m in metas] for key in metas[0]}
        return np.stack(images), np.stack(labels), meta

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, num_classes={self.num_classes}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, num_workers={self.num_workers}, "
                f"seed={self.seed}, transform={self.transform!r})")
