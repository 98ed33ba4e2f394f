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
      (<root> may also be the ADEChallengeData2016 folder itself)
  test (no labels, the benchmark's release_test.zip): <root>/release_test/testing/ADE_test_<8 digits>.jpg
      (or <root>/ADEChallengeData2016/images/testing/)"""

_SPLIT_ALIASES = {"train": "training", "val": "validation", "training": "training",
                  "validation": "validation", "test": "testing", "testing": "testing"}


class ADE20KDataset(SegmentationDataset):
    """ADE20K ``split`` ("training"/"train", "validation"/"val" or "testing"/"test", unlabelled) under ``root``.

    ``**kwargs`` are ``seed`` and the Jittor loader options.
    """

    NUM_CLASSES = 150

    def __init__(self, root: str, split: str = "training", transform: Optional[Callable] = None,
                 **kwargs: Any) -> None:
        if split not in _SPLIT_ALIASES:
            raise ValueError(f"unknown ADE20K split {split!r}; valid: training (train), validation (val), "
                             "testing (test)")
        self.split = _SPLIT_ALIASES[split]
        require_dir(root, "ADE20K root", LAYOUT)
        outer = root
        if os.path.isdir(os.path.join(root, "ADEChallengeData2016")):
            root = os.path.join(root, "ADEChallengeData2016")
        self.root = root
        if self.split == "testing":  # the benchmark's unlabelled test images
            places = [os.path.join(outer, "release_test", "testing"), os.path.join(root, "images", "testing"),
                      os.path.join(os.path.dirname(os.path.abspath(root)), "release_test", "testing")]
            image_dir = require_dir(next((p for p in places if os.path.isdir(p)), places[0]),
                                    "ADE20K test images", LAYOUT)
            label_dir = None
        else:
            image_dir = require_dir(os.path.join(root, "images", self.split),
                                    f"ADE20K images of split {self.split!r}", LAYOUT)
            label_dir = require_dir(os.path.join(root, "annotations", self.split),
                                    f"ADE20K annotations of split {self.split!r}", LAYOUT)
        images = {os.path.splitext(os.path.basename(p))[0]: p
                  for p in glob.glob(os.path.join(image_dir, "*.jpg"))}
        if not images:
            raise FileNotFoundError(f"no '*.jpg' images in {image_dir!r}.\nExpected layout:\n{LAYOUT}")
        labels = None if label_dir is None else {os.path.splitext(os.path.basename(p))[0]: p
                                                 for p in glob.glob(os.path.join(label_dir, "*.png"))}
        samples = pair_samples(images, labels, image_dir if label_dir is None else f"{image_dir} / {label_dir}")
        self._lut = make_lut({0: 255, 255: 255, **{k: k - 1 for k in range(1, self.NUM_CLASSES + 1)}})
        super().__init__(samples, self.NUM_CLASSES, transform=transform, **kwargs)

    def label_lut(self, sample: Sample) -> np.ndarray:
        return self._lut
