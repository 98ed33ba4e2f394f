"""ADE20K SceneParsing (``ADEChallengeData2016``), 150 classes.

Annotations store 0 for "other" and 1..150 for the classes; 0 becomes the
ignore label and the rest shift down by one (mmseg ``reduce_zero_label``).
"""
from __future__ import annotations

import glob
import os
from typing import Any, Callable, Optional

import numpy as np

from .base import Sample, SegmentationDataset, make_lut, pair_samples, require_dir

__all__ = ["ADE20KDataset", "LAYOUT"]

LAYOUT = """\
  <root>/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg
  <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_<8 digits>.png
      (<root> may also be the ADEChallengeData2016 folder itself)"""

_SPLIT_ALIASES = {"train": "training", "val": "validation", "training": "training",
                  "validation": "validation"}


class ADE20KDataset(SegmentationDataset):
    """ADE20K ``split`` ("training"/"train" or "validation"/"val") under ``root``.

    ``**kwargs`` are ``seed`` and the Jittor loader options.
    """

    NUM_CLASSES = 150

    def __init__(self, root: str, split: str = "training", transform: Optional[Callable] = None,
                 **kwargs: Any) -> None:
        if split not in _SPLIT_ALIASES:
            raise ValueError(f"unknown ADE20K split {split!r}; valid: training (train), validation (val)")
        self.split = _SPLIT_ALIASES[split]
        require_dir(root, "ADE20K root", LAYOUT)
        if os.path.isdir(os.path.join(root, "ADEChallengeData2016")):
            root = os.path.join(root, "ADEChallengeData2016")
        self.root = root
        image_dir = require_dir(os.path.join(root, "images", self.split),
                                f"ADE20K images of split {self.split!r}", LAYOUT)
        label_dir = require_dir(os.path.join(root, "annotations", self.split),
                                f"ADE20K annotations of split {self.split!r}", LAYOUT)
        images = {os.path.splitext(os.path.basename(p))[0]: p
                  for p in glob.glob(os.path.join(image_dir, "*.jpg"))}
        if not images:
            raise FileNotFoundError(f"no '*.jpg' images in {image_dir!r}.\nExpected layout:\n{LAYOUT}")
        labels = {os.path.splitext(os.path.basename(p))[0]: p
                  for p in glob.glob(os.path.join(label_dir, "*.png"))}
        samples = pair_samples(images, labels, f"{image_dir} / {label_dir}")
        self._lut = make_lut({0: 255, 255: 255, **{k: k - 1 for k in range(1, self.NUM_CLASSES + 1)}})
        super().__init__(samples, self.NUM_CLASSES, transform=transform, **kwargs)

    def label_lut(self, sample: Sample) -> np.ndarray:
        return self._lut
