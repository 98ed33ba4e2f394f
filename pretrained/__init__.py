"""Weights from PyTorch code: known source files, the key maps of their layouts, the converter.

Weights are not downloaded at run time. Fetch a PyTorch checkpoint yourself
and convert it once with ``python convert_weights.py FILE``; the result is a
Jittor ``.pkl`` under this folder, loaded by the model builders'
``pretrained=`` argument.

=================  ============================================================
``backbone_keys``  ImageNet backbone layouts (ResNet, VAN): detect, map keys
``ccnet_keys``     whole CCNet layouts (official, mmsegmentation): detect, map
                   keys, read preset and class count from the tensors
``converter``      a checkpoint -> Jittor weights: recognise, map, check, write
=================  ============================================================

``KNOWN_FILES`` lists upstream files by name with their layout and the
architecture they hold; ``convert_weights.py`` prints the entry when it sees
one of these names (the keys decide, not the name).
"""
from __future__ import annotations

import os

__all__ = ["PRETRAINED_DIR", "KNOWN_FILES"]

#: Default folder of converted weight files.
PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))

#: file name -> arch, source layout, where it comes from, input normalisation, reported ImageNet top-1.
KNOWN_FILES: dict[str, dict] = {
    "resnet101-imagenet.pth": dict(
        arch="resnet101", layout="resnet_deep", input_norm="CAFFE_BGR",
        source="CSAIL/MIT semantic-segmentation-pytorch; the official CCNet initialisation"),
    "resnet50-imagenet.pth": dict(
        arch="resnet50", layout="resnet_deep", input_norm="CAFFE_BGR",
        source="CSAIL/MIT semantic-segmentation-pytorch"),
    "resnet50_v1c-2cccc1ad.pth": dict(
        arch="resnet50", layout="resnet_v1c", input_norm="IMAGENET_RGB",
        source="open-mmlab://resnet50_v1c (mmsegmentation CCNet R-50-D8 init)"),
    "resnet101_v1c-e67eebb6.pth": dict(
        arch="resnet101", layout="resnet_v1c", input_norm="IMAGENET_RGB",
        source="open-mmlab://resnet101_v1c (mmsegmentation CCNet R-101-D8 init)"),
    "resnet50-0676ba61.pth": dict(
        arch="resnet50", layout="resnet_torchvision", input_norm="IMAGENET_RGB",
        source="torchvision ResNet50_Weights.IMAGENET1K_V1", top1=76.13),
    "resnet101-63fe2227.pth": dict(
        arch="resnet101", layout="resnet_torchvision", input_norm="IMAGENET_RGB",
        source="torchvision ResNet101_Weights.IMAGENET1K_V1", top1=77.37),
    "van_tiny_754.pth.tar": dict(
        arch="van_b0", layout="van_official", input_norm="IMAGENET_RGB",
        source="Visual-Attention-Network/VAN-Tiny-original", top1=75.4),
    "van_small_811.pth.tar": dict(
        arch="van_b1", layout="van_official", input_norm="IMAGENET_RGB",
        source="Visual-Attention-Network/VAN-Small-original", top1=81.1),
    "van_base_828.pth.tar": dict(
        arch="van_b2", layout="van_official", input_norm="IMAGENET_RGB",
        source="Visual-Attention-Network/VAN-Base-original", top1=82.8),
    "van_large_839.pth.tar": dict(
        arch="van_b3", layout="van_official", input_norm="IMAGENET_RGB",
        source="Visual-Attention-Network/VAN-Large-original", top1=83.9),
}
