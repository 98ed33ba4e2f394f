"""Benchmark-server formats of predictions (``evaluate.py --split test --submission``).

=============  ===================================================  =====================================
preset         files (under the output folder)                      values
=============  ===================================================  =====================================
cityscapes     ``submission/<city>_<seq>_<frame>.png``               regular label ids 0..33 (never train
                                                                    ids, never 255: the server's scorer
                                                                    indexes its confusion matrix
                                                                    unchecked), single channel
ade20k         ``submission/ADE_test_<8 digits>.png``                1..150 (0 is "other", not scored)
voc            ``results/VOC2012/Segmentation/comp{5,6}_test_cls/    0..20, indexed PNG with the VOC
               <image id>.png`` (comp6: trained with data beyond    palette; ``tar zcf results.tgz
               VOC, e.g. the SBD ``train_aug`` split)               results`` is the upload
=============  ===================================================  =====================================

Every PNG has the image's original size (the evaluation predicts at it). The
demo preset writes the Cityscapes format (its classes are Cityscapes classes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from datasets import label_id_lut
from datasets.presets import voc_palette

__all__ = ["Submission", "submission_for", "submission_lut", "SUBMISSION_PRESETS", "VOC_EXTRA_DATA_SPLITS"]

SUBMISSION_PRESETS = ("cityscapes", "demo", "ade20k", "voc")
#: VOC training splits with data beyond VOC 2012 (SBD): their results go to comp6, others to comp5.
VOC_EXTRA_DATA_SPLITS = ("train_aug", "trainaug")


@dataclass
class Submission:
    """Where a server's files go and how a prediction (class indices) becomes one: a grey PNG of
    ``lut[pred]``, or (``lut`` None) an indexed PNG of ``pred`` with ``palette``
    (``visualization.palette.save_label_png`` writes either)."""

    folder: str                                          # absolute
    what: str                                            # one line for the user
    lut: Optional[np.ndarray] = None                     # class -> the server's value
    palette: Optional[Sequence[Sequence[int]]] = None

    def path(self, name: str) -> str:
        """The file of sample ``name``."""
        return os.path.join(self.folder, f"{name}.png")


def submission_lut(preset) -> np.ndarray:
    """Predicted class -> Cityscapes label id (Cityscapes-layout presets)."""
    return label_id_lut(preset.cityscapes_train_ids)


def submission_for(preset, out_dir: str, train_split: Optional[str] = None) -> Submission:
    """The server format of ``preset`` written under ``out_dir``; ValueError for a preset without a server.

    ``train_split``: the split the model was trained on (VOC: comp6 for SBD data, comp5 otherwise; the
    preset's default train split when None).
    """
    if preset.name in ("cityscapes", "demo"):
        lut = submission_lut(preset)
        folder = os.path.join(out_dir, "submission")
        return Submission(folder, f"Cityscapes label-id PNGs in {folder}", lut=lut)
    if preset.name == "ade20k":
        lut = np.zeros(256, np.uint8)
        lut[:150] = np.arange(1, 151)
        folder = os.path.join(out_dir, "submission")
        return Submission(folder, f"ADE20K PNGs (values 1..150) in {folder}", lut=lut)
    if preset.name == "voc":
        split = train_split or preset.train_split
        comp = "comp6" if split in VOC_EXTRA_DATA_SPLITS else "comp5"
        folder = os.path.join(out_dir, "results", "VOC2012", "Segmentation", f"{comp}_test_cls")
        why = "trained with SBD data" if comp == "comp6" else "VOC data only"
        return Submission(folder, f"VOC indexed PNGs in {folder} ({comp}: {why}, from training split {split!r}); "
                                  f"upload: tar zcf results.tgz -C {out_dir} results", palette=voc_palette(256))
    raise ValueError(f"--submission: the {preset.name!r} preset has no benchmark server format; "
                     f"known: {', '.join(SUBMISSION_PRESETS)}")
