"""Pascal VOC 2012 segmentation, 21 classes, optionally with the SBD augmentation.

``SegmentationClass/*.png`` are palette PNGs whose indices are the class ids,
with 255 on object borders (ignored). ``SegmentationClassAug/*.png`` (from
SBD, 10582 training images listed in ``train_aug.txt``) are grayscale index
PNGs with the same values.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np

from .base import Sample, SegmentationDataset, make_lut, require_dir, samples_from_id_list

__all__ = ["VOCDataset", "LAYOUT"]

LAYOUT = """\
  <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png          (palette PNG, 255 = border)
  <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
  test (no labels, from the VOC2012 test tar): <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt
  with SBD: <root>/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png and
            <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt (or trainaug.txt)
      (<root> may also be the VOCdevkit or VOC2012 folder itself)"""


class VOCDataset(SegmentationDataset):
    """Pascal VOC ``split`` ("train", "val", "trainval", "train_aug" or "test") under ``root``.

    ``train_aug`` reads ``SegmentationClassAug``, the others
    ``SegmentationClass``; ``label_dir`` overrides that choice. ``test`` (the
    server's test images) has no labels. ``**kwargs`` are ``seed`` and the
    Jittor loader options.
    """

    NUM_CLASSES = 21

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 label_dir: Optional[str] = None, **kwargs: Any) -> None:
        require_dir(root, "Pascal VOC root", LAYOUT)
        for sub in ("VOCdevkit/VOC2012", "VOC2012"):
            if os.path.isdir(os.path.join(root, sub)):
                root = os.path.join(root, sub)
                break
        self.root = root
        self.split = split
        image_dir = require_dir(os.path.join(root, "JPEGImages"), "VOC JPEGImages", LAYOUT)
        if split == "test":
            label_dir = None
        else:
            if label_dir is None:
                label_dir = "SegmentationClassAug" if split in ("train_aug", "trainaug") else "SegmentationClass"
            label_dir = require_dir(os.path.join(root, label_dir), f"VOC {label_dir}", LAYOUT)
        list_dir = require_dir(os.path.join(root, "ImageSets", "Segmentation"),
                               "VOC ImageSets/Segmentation", LAYOUT)
        names = [split] + (["trainaug", "train_aug"] if split in ("train_aug", "trainaug") else [])
        list_path = next((os.path.join(list_dir, f"{n}.txt") for n in names
                          if os.path.isfile(os.path.join(list_dir, f"{n}.txt"))), None)
        if list_path is None:
            raise FileNotFoundError(f"VOC split file {os.path.join(list_dir, split + '.txt')!r} not found.\n"
                                    f"Expected layout:\n{LAYOUT}")
        samples = samples_from_id_list(list_path, image_dir, label_dir, "VOC split file")
        self._lut = make_lut({**{k: k for k in range(self.NUM_CLASSES)}, 255: 255})
        super().__init__(samples, self.NUM_CLASSES, transform=transform, **kwargs)

    def label_lut(self, sample: Sample) -> np.ndarray:
        return self._lut
