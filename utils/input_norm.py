"""Input normalisation that belongs to a set of pretrained weights.

The official CCNet ResNet (the MIT/CSAIL ``resnet101-imagenet.pth``) was trained
on BGR images in 0..255 minus the Caffe mean, without dividing by a std;
torchvision, open-mmlab ``v1c`` and VAN weights expect RGB images normalised
with the ImageNet mean and std. Each backbone declares which one it needs, and
training and evaluation both read it from there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["InputNorm", "CAFFE_BGR", "IMAGENET_RGB"]


@dataclass(frozen=True)
class InputNorm:
    """``(image - mean) / std`` on 0..255 pixels, channels in the order given by ``bgr``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        """Normalise an HxWx3 RGB uint8/float image; returns float32 HxWx3."""
        image = np.asarray(image_rgb, dtype=np.float32)
        if self.bgr:
            image = image[..., ::-1]
        return (image - np.float32(self.mean)) / np.float32(self.std)

    def denormalize(self, image: np.ndarray) -> np.ndarray:
        """Inverse of ``__call__``: back to an RGB float image in 0..255."""
        image = np.asarray(image, dtype=np.float32) * np.float32(self.std) + np.float32(self.mean)
        return image[..., ::-1] if self.bgr else image


CAFFE_BGR = InputNorm(mean=(104.00698793, 116.66876762, 122.67891434), std=(1.0, 1.0, 1.0), bgr=True)
IMAGENET_RGB = InputNorm(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), bgr=False)
