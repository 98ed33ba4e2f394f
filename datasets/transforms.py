"""Paired image/label transforms for semantic segmentation (numpy + OpenCV).

Every transform is called as ``transform(image, label, rng) -> (image, label)``:

* ``image``: HxWx3 RGB, uint8 until :class:`Normalize`, float32 after it;
* ``label``: HxW integer train ids with ``ignore_index`` (255) for ignored
  pixels, or ``None`` (unlabelled test images; only the eval transforms
  accept that);
* ``rng``: a ``numpy.random.Generator``; the dataset derives it from
  ``(seed, epoch, sample index)`` so that augmentation is repeatable and
  independent of worker processes and MPI ranks.

The training pipeline (:func:`build_train_transform`) is

    RandomResize -> RandomCrop -> RandomHorizontalFlip -> [PhotoMetricDistortion]
    -> Normalize -> Pad -> ToCHW

Cropping happens before normalisation (cheap) and padding after it, so the
padded image area is exactly 0, i.e. the mean colour, and the padded label area
is ``ignore_index``. This equals the official CCNet order (normalise, pad
bottom/right, crop) in distribution: with bottom/right padding, the crop
offset along a side shorter than the crop is 0 in both. Labels are always
resized with nearest-neighbour interpolation.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional

import cv2
import numpy as np

from utils.input_norm import InputNorm
from utils.sizes import pair

from .presets import DatasetPreset

__all__ = [
    "Compose",
    "RandomResize",
    "Resize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "flip_lut",
    "PhotoMetricDistortion",
    "Normalize",
    "Pad",
    "ToCHW",
    "build_train_transform",
    "build_eval_transform",
]

Label = Optional[np.ndarray]
Transform = Callable[[np.ndarray, Label, np.random.Generator], tuple[np.ndarray, Label]]


def _need_label(label: Label, name: str) -> np.ndarray:
    if label is None:
        raise ValueError(f"{name} is a training transform and needs a label; unlabelled "
                         "images (e.g. the Cityscapes test split) only work with the eval transform")
    return label


def _rescale(image: np.ndarray, label: Label, scale: float) -> tuple[np.ndarray, Label]:
    h, w = image.shape[:2]
    new_w, new_h = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
    if (new_h, new_w) == (h, w):
        return image, label
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return image, label


def _fit_scale(h: int, w: int, size: tuple[int, int]) -> float:
    """mmseg ``keep_ratio`` rescale factor: fit (h, w) into (long, short)."""
    long_side, short_side = size
    return min(long_side / max(h, w), short_side / min(h, w))


class Compose:
    """Apply transforms in order, passing the same ``rng`` to each."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: Label, rng: np.random.Generator):
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class RandomResize:
    """Rescale image (bilinear) and label (nearest) by a random factor.

    The factor is drawn uniformly from the discrete set ``scales`` when given
    (official CCNet: {0.7, ..., 2.1}), else uniformly from ``ratio_range``.
    With ``base_size=(long, short)`` the factor multiplies the mmseg
    ``keep_ratio`` rescale to that size (e.g. (2048, 512) for ADE20K);
    without it, it multiplies the original size.
    """

    def __init__(self, ratio_range: tuple[float, float] | None = None,
                 scales: Sequence[float] | None = None,
                 base_size: tuple[int, int] | None = None) -> None:
        if not scales and ratio_range is None:
            raise ValueError("RandomResize needs ratio_range or scales")
        if ratio_range is not None and not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be 0 < low <= high, got {ratio_range}")
        self.ratio_range = ratio_range
        self.scales = tuple(scales) if scales else ()
        self.base_size = base_size

    def __call__(self, image, label, rng):
        if self.scales:
            ratio = float(self.scales[rng.integers(len(self.scales))])
        else:
            low, high = self.ratio_range
            ratio = float(rng.uniform(low, high))
        if self.base_size is not None:
            ratio *= _fit_scale(*image.shape[:2], self.base_size)
        return _rescale(image, label, ratio)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ratio_range={self.ratio_range}, scales={self.scales}, "
                f"base_size={self.base_size})")


class Resize:
    """Deterministic keep-ratio resize of the image to fit ``size=(long, short)``.

    For evaluation: the label is left at its original size by default, since
    predictions are compared at the original resolution.
    """

    def __init__(self, size: tuple[int, int], resize_label: bool = False) -> None:
        self.size = tuple(size)
        self.resize_label = resize_label

    def __call__(self, image, label, rng):
        scale = _fit_scale(*image.shape[:2], self.size)
        image, new_label = _rescale(image, label if self.resize_label else None, scale)
        return image, (new_label if self.resize_label else label)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, resize_label={self.resize_label})"


class RandomCrop:
    """Random ``crop_size=(h, w)`` window, clipped to the image.

    A side shorter than the crop is kept whole (offset 0); :class:`Pad` then
    fills it up to the crop size. With ``cat_max_ratio < 1``, up to
    ``max_tries`` windows are drawn until no single class covers
    ``cat_max_ratio`` or more of the labelled pixels (mmseg's retry).
    """

    def __init__(self, crop_size: tuple[int, int], cat_max_ratio: float = 1.0,
                 ignore_index: int = 255, max_tries: int = 10) -> None:
        self.crop_size = pair(crop_size, "crop_size")
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def _window(self, h: int, w: int, rng) -> tuple[int, int, int, int]:
        ch, cw = self.crop_size
        y0 = int(rng.integers(max(h - ch, 0) + 1))
        x0 = int(rng.integers(max(w - cw, 0) + 1))
        return y0, min(y0 + ch, h), x0, min(x0 + cw, w)

    def __call__(self, image, label, rng):
        label = _need_label(label, type(self).__name__)
        h, w = image.shape[:2]
        y0, y1, x0, x1 = self._window(h, w, rng)
        if self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                values, counts = np.unique(label[y0:y1, x0:x1], return_counts=True)
                counts = counts[values != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y0, y1, x0, x1 = self._window(h, w, rng)
        return image[y0:y1, x0:x1], label[y0:y1, x0:x1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


def flip_lut(flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """256-entry uint8 table mapping each class to its mirror class (identity outside ``flip_pairs``).

    A pair ``(a, b)`` maps a to b and b to a; 255 (ignore) always maps to itself.
    """
    lut = np.arange(256, dtype=np.uint8)
    for two in flip_pairs:
        a, b = (int(c) for c in two)
        if a == b or not (0 <= a < 255 and 0 <= b < 255) or lut[a] != a or lut[b] != b:
            raise ValueError(f"flip pairs must be disjoint pairs of two different class ids in 0..254, "
                             f"got {[tuple(p) for p in flip_pairs]}")
        lut[a], lut[b] = b, a
    return lut


class RandomHorizontalFlip:
    """Mirror image and label together with probability ``p``.

    ``flip_pairs`` are classes that exchange under a mirror (LIP: left-arm and
    right-arm, ...): a flipped label has them swapped, through a 256-entry
    lookup table (:func:`flip_lut`).
    """

    def __init__(self, p: float = 0.5, flip_pairs: Sequence[Sequence[int]] = ()) -> None:
        self.p = p
        self.flip_pairs = tuple(tuple(int(c) for c in two) for two in flip_pairs)
        self._lut = flip_lut(self.flip_pairs) if self.flip_pairs else None

    def __call__(self, image, label, rng):
        if rng.random() < self.p:
            image = image[:, ::-1]
            if label is not None:
                label = label[:, ::-1]
                if self._lut is not None:
                    if label.dtype != np.uint8 and label.size and (label.min() < 0 or label.max() > 255):
                        raise ValueError(f"{type(self).__name__} with flip_pairs needs labels in 0..255, "
                                         f"got [{label.min()}, {label.max()}]")
                    label = self._lut[label].astype(label.dtype, copy=False)
        return image, label

    def __repr__(self) -> str:
        pairs = f", flip_pairs={self.flip_pairs}" if self.flip_pairs else ""
        return f"{type(self).__name__}(p={self.p}{pairs})"


class PhotoMetricDistortion:
    """mmseg's photometric distortion on a uint8 RGB image; each step fires with p=0.5.

    Brightness (+-``brightness_delta``), then contrast either second or last,
    saturation and hue (OpenCV HSV, hue in 0..179) in between.
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _contrast(self, image, rng):
        if rng.integers(2):
            image = self._convert(image, alpha=rng.uniform(*self.contrast_range))
        return image

    def __call__(self, image, label, rng):
        if image.dtype != np.uint8:
            raise TypeError("PhotoMetricDistortion works on uint8 images; put it before Normalize")
        if rng.integers(2):
            image = self._convert(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = rng.integers(2) == 1
        if contrast_first:
            image = self._contrast(image, rng)
        if rng.integers(2):
            hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if rng.integers(2):
            hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 180
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first:
            image = self._contrast(image, rng)
        return image, label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta})")


class Normalize:
    """Apply the backbone's :class:`~utils.input_norm.InputNorm` (RGB in, float32 out)."""

    def __init__(self, input_norm: InputNorm) -> None:
        if not isinstance(input_norm, InputNorm):
            raise TypeError(f"Normalize needs a utils.input_norm.InputNorm, got {type(input_norm).__name__}")
        self.input_norm = input_norm

    def __call__(self, image, label, rng):
        return self.input_norm(image), label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.input_norm})"


class Pad:
    """Pad bottom/right up to ``size=(h, w)``: image with 0 (the mean after
    normalisation), label with ``ignore_index``. Larger inputs are unchanged."""

    def __init__(self, size: tuple[int, int], ignore_index: int = 255, image_value: float = 0.0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.ignore_index = ignore_index
        self.image_value = image_value

    def __call__(self, image, label, rng):
        h, w = image.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=self.image_value)
            if label is not None:
                label = np.pad(label, ((0, ph), (0, pw)), constant_values=self.ignore_index)
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, ignore_index={self.ignore_index})"


class ToCHW:
    """Final step: image -> contiguous float32 CxHxW, label -> contiguous int32 HxW."""

    def __call__(self, image, label, rng):
        image = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
        if label is not None:
            label = np.ascontiguousarray(label, dtype=np.int32)
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_train_transform(preset: DatasetPreset, input_norm: InputNorm,
                          crop_size: tuple[int, int] | None = None,
                          scale_range: tuple[float, float] | None = None,
                          photometric: bool | None = None, flip: bool = True) -> Compose:
    """The preset's training pipeline; the keyword arguments override the preset.

    Passing ``scale_range`` switches from the preset's discrete scale set (if
    any) to a uniform range; ``(1, 1)`` keeps the size. ``flip=False`` drops
    the random horizontal flip; the flip swaps the preset's ``flip_pairs``.
    """
    crop = tuple(crop_size) if crop_size is not None else preset.crop_size
    if scale_range is not None:
        resize = RandomResize(ratio_range=scale_range, base_size=preset.base_size)
    else:
        resize = RandomResize(ratio_range=preset.scale_range, scales=preset.scales,
                              base_size=preset.base_size)
    steps: list[Transform] = [
        resize,
        RandomCrop(crop, cat_max_ratio=preset.cat_max_ratio, ignore_index=preset.ignore_index),
    ]
    if flip:
        steps.append(RandomHorizontalFlip(0.5, flip_pairs=preset.flip_pairs))
    if preset.photometric if photometric is None else photometric:
        steps.append(PhotoMetricDistortion())
    steps += [Normalize(input_norm), Pad(crop, ignore_index=preset.ignore_index), ToCHW()]
    return Compose(steps)


def build_eval_transform(preset: DatasetPreset, input_norm: InputNorm,
                         test_size: tuple[int, int] | None = None) -> Compose:
    """Evaluation pipeline: optional keep-ratio resize of the image (``test_size``
    or the preset's), normalisation, CHW. The label keeps its original size;
    sliding windows are evaluate.py's job."""
    size = test_size if test_size is not None else preset.test_size
    steps: list[Transform] = [Resize(size)] if size is not None else []
    steps += [Normalize(input_norm), ToCHW()]
    return Compose(steps)
