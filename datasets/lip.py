"""LIP (Look Into Person) single-person human parsing, 20 classes with background 0.

Parsing annotations are grayscale index PNGs, 0..19 the classes in the
official order (see :data:`datasets.presets.LIP_CLASSES`), 255 (if present)
ignored. The samples of a split are the ids listed in ``<split>_id.txt``, as
in the official download. The images are small and of different sizes, so
whole-image evaluation runs with batch size 1. Left and right body parts
(arms, legs, shoes) swap under a horizontal flip: the preset's ``flip_pairs``
tell the training flip and flip test-time augmentation which.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np

from .base import Sample, SegmentationDataset, make_lut, require_dir, samples_from_id_list

__all__ = ["LIPDataset", "LAYOUT"]

LAYOUT = """\
  <root>/TrainVal_images/{train,val}_images/<id>.jpg
  <root>/TrainVal_parsing_annotations/{train,val}_segmentations/<id>.png   (grayscale 0..19, 255 ignored)
  <root>/TrainVal_images/{train,val}_id.txt       (one image id per line; also accepted in <root>/)"""

SPLITS = ("train", "val")


class LIPDataset(SegmentationDataset):
    """LIP ``split`` ("train" or "val") under ``root``; ``**kwargs`` are ``seed`` and the Jittor loader options."""

    NUM_CLASSES = 20

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 **kwargs: Any) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown LIP split {split!r}; valid: {', '.join(SPLITS)}")
        self.root = root
        self.split = split
        require_dir(root, "LIP root", LAYOUT)
        image_dir = require_dir(os.path.join(root, "TrainVal_images", f"{split}_images"),
                                f"LIP images of split {split!r}", LAYOUT)
        label_dir = require_dir(os.path.join(root, "TrainVal_parsing_annotations", f"{split}_segmentations"),
                                f"LIP parsing annotations of split {split!r}", LAYOUT)
        candidates = [os.path.join(root, "TrainVal_images", f"{split}_id.txt"), os.path.join(root, f"{split}_id.txt")]
        list_path = next((p for p in candidates if os.path.isfile(p)), None)
        if list_path is None:
            raise FileNotFoundError(f"LIP id file of split {split!r} not found (looked for {candidates[0]!r} "
                                    f"and {candidates[1]!r}).\nExpected layout:\n{LAYOUT}")
        samples = samples_from_id_list(list_path, image_dir, label_dir, "LIP id file", one_field=True)
        self._lut = make_lut({**{k: k for k in range(self.NUM_CLASSES)}, 255: 255})
        super().__init__(samples, self.NUM_CLASSES, transform=transform, **kwargs)

    def label_lut(self, sample: Sample) -> np.ndarray:
        return self._lut
