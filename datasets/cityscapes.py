"""Cityscapes (fine annotations), read from the layout of the official download.

Labels are the ``*_gtFine_labelIds.png`` files made by cityscapesScripts,
mapped to the 19 train ids with the official table (everything else becomes
255), or ``*_gtFine_labelTrainIds.png`` when present (used as they are). The
official CCNet list files (``train.lst``, ``val.lst``, ``test.lst``: an image
path and optionally a label path per line, relative to the root) can replace
the folder scan.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

from .base import Sample, SegmentationDataset, make_lut, pair_samples, require_dir

__all__ = ["CityscapesDataset", "CITYSCAPES_ID_TO_TRAINID", "LAYOUT", "label_id_lut"]

# Official id -> trainId table (cityscapesScripts labels.py, CCNet dataset/datasets.py).
# Every other id (0-6, 9, 10, 14-16, 18, 29, 30 and -1, stored as 255) is ignored.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_IGNORED_IDS = [i for i in range(34) if i not in CITYSCAPES_ID_TO_TRAINID] + [255]



def label_id_lut(train_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """256-entry table: predicted class -> Cityscapes label id (the test server's PNGs).

    ``train_ids`` are the Cityscapes train ids of the classes in order
    (all 19 when None; the demo keeps 5).
    """
    train_to_label = {t: i for i, t in CITYSCAPES_ID_TO_TRAINID.items()}
    lut = np.zeros(256, np.uint8)
    for cls, train_id in enumerate(range(19) if train_ids is None else train_ids):
        lut[cls] = train_to_label[train_id]
    return lut


IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
LABEL_TRAINIDS_SUFFIX = "_gtFine_labelTrainIds.png"

LAYOUT = """\
  <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
      (or ..._gtFine_labelTrainIds.png, used instead when present)
  optionally list files (e.g. <root>/train.lst) with lines
      leftImg8bit/train/<city>/<x>_leftImg8bit.png gtFine/train/<city>/<x>_gtFine_labelIds.png"""


def _stem(path: str, suffix: str) -> str:
    base = os.path.basename(path)
    return base[: -len(suffix)] if base.endswith(suffix) else os.path.splitext(base)[0]


class CityscapesDataset(SegmentationDataset):
    """Cityscapes ``split`` ("train", "val" or "test") under ``root``.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        split: folder split; the "test" split is read without labels.
        transform: ``transform(image, label, rng)``, see :mod:`datasets.transforms`.
        list_file: an official-style ``.lst`` file to use instead of scanning
            the folders (absolute, relative to the working directory, or to ``root``).
        train_ids: keep only these train ids, renumbered ``0..k-1`` in this
            order, the rest ignored (the generated demo keeps 5 classes).
        **kwargs: ``seed`` and the Jittor loader options (``batch_size``,
            ``shuffle``, ``drop_last``, ``num_workers``, ...).
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None,
                 list_file: Optional[str] = None, train_ids: Optional[Sequence[int]] = None,
                 **kwargs: Any) -> None:
        self.root = root
        self.split = split
        require_dir(root, "Cityscapes root", LAYOUT)
        if list_file is not None:
            samples = self._read_list(root, list_file)
        else:
            if split not in self.SPLITS:
                raise ValueError(f"unknown Cityscapes split {split!r}; valid: {', '.join(self.SPLITS)} "
                                 "(or pass list_file)")
            samples = self._scan(root, split)

        base = np.arange(19)
        if train_ids is not None:
            train_ids = [int(t) for t in train_ids]
            if len(set(train_ids)) != len(train_ids) or not all(0 <= t < 19 for t in train_ids):
                raise ValueError(f"train_ids must be distinct Cityscapes train ids in 0..18, got {train_ids}")
            base = np.full(19, 255)
            base[train_ids] = np.arange(len(train_ids))
        self.train_ids = tuple(train_ids) if train_ids is not None else None
        num_classes = 19 if train_ids is None else len(train_ids)
        remap = {t: int(base[t]) for t in range(19)}
        ids = {i: remap[t] for i, t in CITYSCAPES_ID_TO_TRAINID.items()}
        ids.update({i: 255 for i in _IGNORED_IDS})
        self._lut_ids = make_lut(ids)
        self._lut_train_ids = make_lut({**remap, 255: 255})
        super().__init__(samples, num_classes, transform=transform, **kwargs)

    @staticmethod
    def _scan(root: str, split: str) -> list[Sample]:
        image_dir = require_dir(os.path.join(root, "leftImg8bit", split),
                                f"Cityscapes images of split {split!r}", LAYOUT)
        images = {}
        for path in glob.glob(os.path.join(image_dir, "*", "*" + IMAGE_SUFFIX)):
            city = os.path.basename(os.path.dirname(path))
            images[f"{city}/{_stem(path, IMAGE_SUFFIX)}"] = path
        if not images:
            raise FileNotFoundError(f"no '*{IMAGE_SUFFIX}' images in {image_dir!r}.\n"
                                    f"Expected layout:\n{LAYOUT}")
        if split == "test":
            return pair_samples(images, None, image_dir)

        label_dir = require_dir(os.path.join(root, "gtFine", split),
                                f"Cityscapes labels of split {split!r}", LAYOUT)
        labels: dict[str, str] = {}
        for suffix in (LABEL_IDS_SUFFIX, LABEL_TRAINIDS_SUFFIX):  # trainIds win
            for path in glob.glob(os.path.join(label_dir, "*", "*" + suffix)):
                city = os.path.basename(os.path.dirname(path))
                labels[f"{city}/{_stem(path, suffix)}"] = path
        samples = pair_samples(images, labels, f"{image_dir} / {label_dir}")
        return [Sample(s.name.split("/", 1)[1], s.image, s.label) for s in samples]

    @staticmethod
    def _read_list(root: str, list_file: str) -> list[Sample]:
        path = list_file
        if not os.path.isfile(path) and not os.path.isabs(path):
            path = os.path.join(root, list_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Cityscapes list file not found: {list_file!r} "
                                    f"(also looked in {root!r})")
        samples = []
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) > 2:
                    raise ValueError(f"{path}:{lineno}: expected 'image [label]', got {line.strip()!r}")
                image = os.path.join(root, fields[0])
                label = os.path.join(root, fields[1]) if len(fields) == 2 else None
                if not os.path.isfile(image):
                    raise FileNotFoundError(f"{path}:{lineno}: image {image!r} does not exist")
                if label is not None and not os.path.isfile(label):
                    raise FileNotFoundError(f"{path}:{lineno}: label {label!r} (for image {image!r}) "
                                            "does not exist")
                samples.append(Sample(_stem(image, IMAGE_SUFFIX), image, label))
        if not samples:
            raise FileNotFoundError(f"list file {path!r} has no entries")
        return samples

    def label_lut(self, sample: Sample) -> np.ndarray:
        if sample.label.endswith(LABEL_TRAINIDS_SUFFIX):
            return self._lut_train_ids
        return self._lut_ids
