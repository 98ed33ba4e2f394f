"""Dilated ResNet-50/101 backbones for semantic segmentation.

Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
dilation as in DeepLab / CCNet (Huang et al., "CCNet: Criss-Cross Attention for
Semantic Segmentation", ICCV 2019).

Three stems, named after the checkpoints that use them:

* ``deep``: three 3x3 convs 3-64-64-128 named ``conv1/bn1 .. conv3/bn3`` and a
  3x3/s2 max-pool with ``ceil_mode=True``; the official CCNet backbone
  (speedinghzl/CCNet ``networks/ccnet.py``) and the CSAIL/MIT
  ``resnet101-imagenet.pth``. The parameter names are exactly the official
  CCNet backbone's (530 keys for ResNet-101 with BN running statistics).
* ``v1c``: three 3x3 convs 3-32-32-64 in an ``nn.Sequential`` named ``stem``
  (``stem.0/1, stem.3/4, stem.6/7``), as open-mmlab ``ResNetV1c``
  (``resnet50_v1c``/``resnet101_v1c``); max-pool ``ceil_mode=False``.
* ``torchvision``: one 7x7/s2 conv ``conv1/bn1`` and a max-pool with
  ``ceil_mode=False`` (torchvision ``resnet50``/``resnet101``).

The residual stages are ``layer1..layer4`` of torchvision-style Bottlenecks
(stride on the 3x3 ``conv2``, ``downsample.0`` 1x1 conv + ``downsample.1`` BN).
Output stride 8 replaces the strides of layer3/layer4 by dilation 2/4 (the
official code dilates every block; ``contract_dilation=True`` halves the
dilation of the first block of a dilated stage, as mmsegmentation does), and
``multi_grid`` multiplies layer4's dilation per block.

Each stem's weights expect a particular input normalisation; it is exposed as
``STEM_INPUT_NORM`` and as ``model.input_norm``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.layers import BatchNorm, BNAct, Conv2d
from utils.input_norm import CAFFE_BGR, IMAGENET_RGB, InputNorm
from models.weights import load_state_dict_strict

__all__ = [
    "Bottleneck",
    "ResNet",
    "RESNET_DEPTHS",
    "STEM_INPUT_NORM",
    "resnet50",
    "resnet101",
]

#: Blocks per stage for each supported depth (Bottleneck only).
RESNET_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}

#: Input normalisation the ImageNet weights of each stem were used with.
#: ``deep`` follows the official CCNet (BGR, 0..255 minus the Caffe mean).
STEM_INPUT_NORM: dict[str, InputNorm] = {
    "deep": CAFFE_BGR,
    "v1c": IMAGENET_RGB,
    "torchvision": IMAGENET_RGB,
}

#: Max-pool ``ceil_mode`` of each stem's upstream code.
STEM_CEIL_MODE: dict[str, bool] = {"deep": True, "v1c": False, "torchvision": False}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias, padding = dilation (keeps the size at stride 1)."""
    return Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, expansion 4), stride on the 3x3 conv.

    Each BatchNorm carries the ReLU after it (``models.layers.BNAct``), the
    last one after the residual add: ``relu(bn3(conv3) + identity)``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = BNAct(planes, "relu")
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = BNAct(planes, "relu")
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = BNAct(planes * self.expansion, "relu")  # ReLU(BN(conv3) + identity)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def execute(self, x: jt.Var) -> jt.Var:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        return self.bn3(self.conv3(out), identity)


def _stage_geometry(output_stride: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(strides, dilations) of layer1..layer4 for an output stride of 8, 16 or 32."""
    if output_stride == 8:
        return (1, 2, 1, 1), (1, 1, 2, 4)
    if output_stride == 16:
        return (1, 2, 2, 1), (1, 1, 1, 2)
    if output_stride == 32:
        return (1, 2, 2, 2), (1, 1, 1, 1)
    raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")


class ResNet(nn.Module):
    """Dilated Bottleneck ResNet backbone returning the outputs of layer1..layer4.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 23, 3)`` for ResNet-101.
        stem: ``"deep"``, ``"v1c"`` or ``"torchvision"`` (see the module docstring).
        output_stride: 8 (layer3/4 dilated 2/4), 16 (layer4 dilated 2) or 32.
        contract_dilation: the first block of a dilated stage uses half the
            dilation (mmsegmentation); the official CCNet uses ``False``.
        multi_grid: per-block multipliers of layer4's dilation (cycled), as in
            the official code's ``multi_grid``; ``(1, 1, 1)`` is plain dilation.
        ceil_mode: max-pool ``ceil_mode``; ``None`` uses the stem's upstream value.
    """

    def __init__(self, layers: Sequence[int], stem: str = "deep", output_stride: int = 8,
                 contract_dilation: bool = False, multi_grid: Sequence[int] = (1, 1, 1),
                 ceil_mode: Optional[bool] = None) -> None:
        super().__init__()
        if stem not in STEM_INPUT_NORM:
            raise ValueError(f"stem must be one of {sorted(STEM_INPUT_NORM)}, got {stem!r}")
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 entries, got {tuple(layers)!r}")
        multi_grid = tuple(int(g) for g in multi_grid)
        if not multi_grid or min(multi_grid) < 1:
            raise ValueError(f"multi_grid must be positive integers, got {multi_grid!r}")
        strides, dilations = _stage_geometry(output_stride)
        self.stem_type = stem
        self.output_stride = output_stride
        self.input_norm: InputNorm = STEM_INPUT_NORM[stem]
        ceil_mode = STEM_CEIL_MODE[stem] if ceil_mode is None else ceil_mode

        if stem == "deep":
            self.conv1 = conv3x3(3, 64, stride=2)
            self.bn1 = BNAct(64, "relu")
            self.conv2 = conv3x3(64, 64)
            self.bn2 = BNAct(64, "relu")
            self.conv3 = conv3x3(64, 128)
            self.bn3 = BNAct(128, "relu")
            self.inplanes = 128
        elif stem == "v1c":
            # mmseg's indices: stem.0/1, stem.3/4, stem.6/7 (its ReLUs at 2, 5, 8 are inside BNAct here)
            self.stem = nn.Sequential(
                conv3x3(3, 32, stride=2), BNAct(32, "relu"), nn.Identity(),
                conv3x3(32, 32), BNAct(32, "relu"), nn.Identity(),
                conv3x3(32, 64), BNAct(64, "relu"), nn.Identity(),
            )
            self.inplanes = 64
        else:  # torchvision
            self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = BNAct(64, "relu")
            self.inplanes = 64
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode)

        grids = [(1,), (1,), (1,), multi_grid]
        self.layer1 = self._make_layer(64, layers[0], strides[0], dilations[0], grids[0], contract_dilation)
        self.layer2 = self._make_layer(128, layers[1], strides[1], dilations[1], grids[1], contract_dilation)
        self.layer3 = self._make_layer(256, layers[2], strides[2], dilations[2], grids[2], contract_dilation)
        self.layer4 = self._make_layer(512, layers[3], strides[3], dilations[3], grids[3], contract_dilation)

        self.out_channels: tuple[int, int, int, int] = (256, 512, 1024, 2048)
        total, stage_strides = 4, []
        for s in strides:
            total *= s
            stage_strides.append(total)
        self.strides: tuple[int, int, int, int] = tuple(stage_strides)  # type: ignore[assignment]
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int,
                    multi_grid: Sequence[int], contract_dilation: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                BatchNorm(planes * Bottleneck.expansion),
            )
        layers = []
        for i in range(blocks):
            base = dilation // 2 if (i == 0 and contract_dilation and dilation > 1) else dilation
            block_dilation = base * multi_grid[i % len(multi_grid)]
            layers.append(Bottleneck(self.inplanes, planes, stride if i == 0 else 1, block_dilation,
                                     downsample if i == 0 else None))
            self.inplanes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision: Kaiming normal (fan_out, ReLU) for convs, BN weight 1 / bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                jt.init.gauss_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm):
                jt.init.constant_(m.weight, 1.0)
                jt.init.constant_(m.bias, 0.0)

    def forward_stem(self, x: jt.Var) -> jt.Var:
        """Stem and max-pool: stride 4."""
        if self.stem_type == "deep":
            x = self.bn1(self.conv1(x))
            x = self.bn2(self.conv2(x))
            x = self.bn3(self.conv3(x))
        elif self.stem_type == "v1c":
            x = self.stem(x)
        else:
            x = self.bn1(self.conv1(x))
        return self.maxpool(x)

    def execute(self, x: jt.Var) -> list[jt.Var]:
        """Returns ``[layer1, layer2, layer3, layer4]`` outputs (strides ``self.strides``)."""
        x = self.forward_stem(x)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


def _resnet(depth: int, stem: str, output_stride: int, contract_dilation: bool,
            multi_grid: Sequence[int], pretrained: Optional[str], **kwargs) -> ResNet:
    model = ResNet(RESNET_DEPTHS[depth], stem=stem, output_stride=output_stride,
                   contract_dilation=contract_dilation, multi_grid=multi_grid, **kwargs)
    model.arch = f"resnet{depth}"
    if pretrained:
        load_state_dict_strict(model, pretrained, strict=True)
    return model


def resnet50(stem: str = "deep", output_stride: int = 8, contract_dilation: bool = False,
             multi_grid: Sequence[int] = (1, 1, 1), pretrained: Optional[str] = None,
             **kwargs) -> ResNet:
    """Dilated ResNet-50 backbone; ``pretrained`` is a converted ``.pkl`` (loaded strictly)."""
    return _resnet(50, stem, output_stride, contract_dilation, multi_grid, pretrained, **kwargs)


def resnet101(stem: str = "deep", output_stride: int = 8, contract_dilation: bool = False,
              multi_grid: Sequence[int] = (1, 1, 1), pretrained: Optional[str] = None,
              **kwargs) -> ResNet:
    """Dilated ResNet-101 backbone (the CCNet default); ``pretrained`` as for :func:`resnet50`."""
    return _resnet(101, stem, output_stride, contract_dilation, multi_grid, pretrained, **kwargs)
