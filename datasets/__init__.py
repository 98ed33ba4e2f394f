"""Datasets: Cityscapes, ADE20K, Pascal VOC, CamVid, LIP and the generated demo.

One file per dataset (``cityscapes.py``, ``ade20k.py``, ``voc.py``, ``camvid.py``
with its two layouts and its video clips, ``lip.py``),
what they share in ``base.py`` (reading, label mapping, batching), the Jittor
loader underneath in ``loader.py`` (epochs, MPI shards, worker fixes), the
presets in ``presets.py`` and the paired transforms in ``transforms.py``;
``demo.py`` generates the demo dataset.

:func:`build_dataset` is what training and evaluation call: it reads the
preset, picks the dataset class and builds the training or evaluation
transform with the backbone's input normalisation.
"""
from typing import Any, Optional

import jittor_env  # noqa: F401  (must run before jittor is imported)

from utils.input_norm import InputNorm

from .ade20k import ADE20KDataset
from .base import DatasetError, Sample, SegmentationDataset, read_image
from .camvid import (CLIP_LAYOUT, CamVid32Dataset, CamVidClipDataset, CamVidDataset, FrameName, frame_name,
                     parse_frame_name, sequence_frame_name)
from .cityscapes import CITYSCAPES_ID_TO_TRAINID, CityscapesDataset, label_id_lut
from .lip import LIPDataset
from .presets import PRESETS, DatasetPreset, get_preset
from .transforms import build_eval_transform, build_train_transform
from .voc import VOCDataset

__all__ = [
    "ADE20KDataset", "CityscapesDataset", "VOCDataset", "CamVidDataset", "CamVid32Dataset", "LIPDataset",
    "CamVidClipDataset", "CLIP_LAYOUT", "CLIP_PRESETS", "FrameName", "frame_name", "parse_frame_name",
    "sequence_frame_name",
    "SegmentationDataset", "Sample",
    "DatasetError", "DatasetPreset", "PRESETS", "get_preset", "CITYSCAPES_ID_TO_TRAINID", "label_id_lut",
    "read_image", "build_dataset", "build_train_transform", "build_eval_transform",
]

#: The presets whose datasets have video frames in the CamVid clip layout (camvid.CLIP_LAYOUT),
#: so that build_dataset(..., clip_length=T) builds a CamVidClipDataset with the preset's
#: num_classes: CamVid, and the generated video demo (datasets/demo.py). A new one goes here.
CLIP_PRESETS = ("camvid", "demo_video")


def build_dataset(preset_name: str, root: str, split: Optional[str] = None, train: bool = False,
                  input_norm: Optional[InputNorm] = None,
                  crop_size: Optional[tuple[int, int]] = None,
                  test_size: Optional[tuple[int, int]] = None,
                  scale_range: Optional[tuple[float, float]] = None,
                  list_file: Optional[str] = None, seed: int = 0, flip: bool = True,
                  clip_length: Optional[int] = None, clip_stride: int = 1,
                  **loader_kwargs: Any) -> SegmentationDataset:
    """The dataset of preset ``preset_name`` under ``root``, ready to iterate.

    Args:
        preset_name: a key of :data:`PRESETS` ("cityscapes", "ade20k", "voc", "camvid",
            "camvid32", "lip", "demo").
        root: the dataset folder (layouts in each dataset module's ``LAYOUT``).
        split: defaults to the preset's train split when ``train`` else its val split.
        train: training transform (random scale, crop + pad, flip, [photometric],
            normalise) and loader defaults ``batch_size=preset.batch_size``,
            ``shuffle=True``, ``drop_last=True``; otherwise the eval transform
            (optional resize, normalise) with ``batch_size=1``.
        input_norm: the backbone's normalisation (``utils.input_norm``); required.
        crop_size, test_size, scale_range: override the preset.
        flip: the random horizontal flip of the training transform (it swaps the
            preset's ``flip_pairs``, e.g. LIP's left/right arms).
        list_file: Cityscapes-layout datasets only: an official ``.lst`` file.
        seed: shuffle and augmentation seed (the same on every MPI rank).
        clip_length, clip_stride: ``None`` (default): single images. An int T: clips of T
            video frames ``clip_stride`` apart around each labelled frame
            (:class:`CamVidClipDataset`, batches [B, T, 3, h, w]), for the presets in
            :data:`CLIP_PRESETS`; any other preset is a ValueError.
        **loader_kwargs: Jittor loader options (``batch_size`` is global under MPI,
            ``num_workers``, ``shuffle``, ``drop_last``, ...).
    """
    preset = get_preset(preset_name)
    if clip_length is None and clip_stride != 1:
        raise ValueError(f"clip_stride={clip_stride!r} needs clip_length (clips of video frames)")
    if clip_length is not None and preset.name not in CLIP_PRESETS:
        raise ValueError(f"preset {preset.name!r} has no video frames; clips need camvid (or demo_video)")
    if not isinstance(input_norm, InputNorm):
        raise TypeError("build_dataset needs input_norm=<utils.input_norm.InputNorm> "
                        "(the backbone's normalisation, e.g. CAFFE_BGR or IMAGENET_RGB)")
    if split is None:
        split = preset.train_split if train else preset.val_split
    if train:
        transform = build_train_transform(preset, input_norm, crop_size=crop_size, scale_range=scale_range,
                                          flip=flip)
        loader = {"batch_size": preset.batch_size, "shuffle": True, "drop_last": True}
    else:
        transform = build_eval_transform(preset, input_norm, test_size=test_size)
        loader = {"batch_size": 1, "shuffle": False, "drop_last": False}
    loader.update(loader_kwargs)
    common = dict(transform=transform, seed=seed, **loader)

    if preset.name in ("cityscapes", "demo"):
        return CityscapesDataset(root, split, list_file=list_file,
                                 train_ids=preset.cityscapes_train_ids, **common)
    if list_file is not None:
        raise ValueError(f"list_file is only supported for Cityscapes-layout presets, not {preset.name!r}")
    if clip_length is not None:  # a preset of CLIP_PRESETS: the CamVid clip layout
        return CamVidClipDataset(root, split, clip_length, clip_stride=clip_stride,
                                 num_classes=preset.num_classes, **common)
    if preset.name == "ade20k":
        return ADE20KDataset(root, split, **common)
    if preset.name == "voc":
        return VOCDataset(root, split, **common)
    if preset.name in ("camvid", "demo_video"):  # demo_video: the CamVid layout with the preset's classes
        return CamVidDataset(root, split, num_classes=preset.num_classes, **common)
    if preset.name == "camvid32":
        return CamVid32Dataset(root, split, class_names=preset.class_names, **common)
    if preset.name == "lip":
        return LIPDataset(root, split, **common)
    raise ValueError(f"preset {preset.name!r} has no dataset class")  # a new preset needs a line here
