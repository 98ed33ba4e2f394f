"""CCNet: criss-cross attention network for semantic segmentation.

Paper: Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation",
ICCV 2019 / TPAMI 2020. Upstream: speedinghzl/CCNet ``networks/ccnet.py``
(MIT license); the mmsegmentation variant is ``CCHead`` + ``FCNHead``
(``configs/_base_/models/ccnet_r50-d8.py``, Apache-2.0).

The network is a dilated backbone (output stride 8), the recurrent criss-cross
attention head (:class:`RCCAModule`, ``self.head``) on the last stage and an
auxiliary FCN head (``self.dsn``) on the third stage. It does no upsampling:
both heads return logits at 1/8 of the input; :meth:`CCNet.predict` upsamples.

Parameter names follow the official checkpoints, so a snapshot maps 1:1 (the
backbone under ``backbone.``)::

    head.conva.0.weight               3x3 conv C -> 512, no bias
    head.conva.1.{weight,bias,running_mean,running_var}   BN (+ activation)
    head.cca.{gamma,query_conv.*,key_conv.*,value_conv.*}
    head.convb.0.weight, head.convb.1.*
    head.bottleneck.0.weight          3x3 conv (C + 512) -> 512, no bias
    head.bottleneck.1.*               BN (+ activation); .2 is Dropout2d(0.1)
    head.bottleneck.3.{weight,bias}   1x1 classifier
    dsn.0.{weight,bias}               3x3 conv stage3 -> 512 (bias in the official code)
    dsn.1.*; dsn.2 Dropout2d; dsn.3.{weight,bias}

The official code uses InPlace-ABN, one module holding the BatchNorm
parameters and the activation (leaky ReLU, slope 0.01); ``BNAct`` is that
module (``models.layers``), so index 1 of each ``nn.Sequential`` carries
both. mmsegmentation uses ReLU, a 256-channel auxiliary conv without bias,
and the same structure under other names (``decode_head.convs.0.conv`` =
``head.conva.0`` ...; see ``pretrained/ccnet_keys.py``).

The criss-cross attention itself (:class:`CrissCrossAttention`) is the
official module over the op of :mod:`models.ops.cca`.

The video CCNet of the TPAMI version (``video=True``) takes clips
``[B, T, 3, H, W]``: the backbone runs on every frame (frames folded into the
batch), the head's criss-cross attention is :class:`CrissCrossAttention3D`
(rows, columns and temporal lines of the clip), and everything after it runs on
the labelled frame only (index ``(T - 1) // 2``, ``utils.clips``), so the
logits, the loss and the auxiliary head are the labelled frame's. Its
parameters are the 2-D model's: a 2-D checkpoint loads unchanged, and a clip
of one frame gives the 2-D model's output.

VAN backbones (strides 4/8/16/32) have no stride-8 last stage. A small neck
(``self.neck``) brings stages 2-4 to stride 8: stages 3 and 4 are upsampled
bilinearly to the size of stage 2, the three maps are concatenated and fused
by a 1x1 conv + BN + activation; the RCCA head runs on that map. The
auxiliary head stays on stage 3 (stride 16), and its logits are upsampled to
the main logits' size so that both outputs are at 1/8.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.layers import BNAct, ChannelDropout, Conv2d, check_activation, resize
from models.ops.cca import ca_map, ca_weight, check_impl, criss_cross_attention, position_softmax
from models.ops.cca3d import ca_map_3d, ca_weight_3d, criss_cross_attention_3d
from utils.clips import labelled_frame
from utils.input_norm import InputNorm
from utils.jittor_fixes import materialize

__all__ = ["CrissCrossAttention", "CrissCrossAttention3D", "RCCAModule", "FCNAuxHead", "FeatureNeck", "CCNet",
           "clip_to_frames", "frames_to_clip", "labelled_frames"]

MAX_RECURRENCE = 3


def _conv_bn_act(in_channels: int, out_channels: int, activation: str, kernel_size: int = 3,
                 bias: bool = False) -> list[nn.Module]:
    return [Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
            BNAct(out_channels, activation)]


class CrissCrossAttention(nn.Module):
    """Criss-cross attention module of CCNet: ``gamma * attention(x) + x``.

    Query and key are 1x1 convolutions to ``in_channels // 8`` channels, value
    a 1x1 convolution to ``in_channels``; ``gamma`` starts at 0, so the module
    starts as the identity. Parameter names follow the official checkpoints.
    """

    def __init__(self, in_channels: int, impl: str = "auto") -> None:
        super().__init__()
        if in_channels < 8:
            raise ValueError(f"in_channels must be at least 8 (query/key use in_channels // 8), got {in_channels}")
        check_impl(impl)
        self.impl = impl
        self.query_conv = Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = Conv2d(in_channels, in_channels, 1)
        self.gamma = jt.zeros((1,))

    def execute(self, x: jt.Var) -> jt.Var:
        out = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x), impl=self.impl)
        return self.gamma * out + x


def clip_to_frames(x: jt.Var) -> jt.Var:
    """``[B, C, T, H, W]`` -> ``[B * T, C, H, W]`` (frames folded into the batch, clip-major)."""
    B, C, T, H, W = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)


def frames_to_clip(x: jt.Var, frames: int) -> jt.Var:
    """``[B * T, C, H, W]`` (clip-major) -> ``[B, C, T, H, W]``."""
    N, C, H, W = x.shape
    return x.reshape(N // frames, frames, C, H, W).permute(0, 2, 1, 3, 4)


def labelled_frames(x: jt.Var, frames: int) -> jt.Var:
    """The labelled frame of each clip from ``[B * T, C, H, W]`` (clip-major): ``[B, C, H, W]``."""
    N, C, H, W = x.shape
    return x.reshape(N // frames, frames, C, H, W)[:, labelled_frame(frames)]


class CrissCrossAttention3D(CrissCrossAttention):
    """Criss-cross attention over a clip ``[B, C, T, H, W]``: ``gamma * attention(x) + x``, each position
    attending to its row, column and temporal line (``models.ops.cca3d``).

    The parameters are those of :class:`CrissCrossAttention` (its constructor: 1x1 query/key to
    ``in_channels // 8``, value to ``in_channels``, ``gamma`` from 0), applied to every frame, so a 2-D
    module's weights load unchanged; with one frame the two compute the same.
    """

    @staticmethod
    def _frames(conv: nn.Module, x: jt.Var) -> jt.Var:
        """``conv`` on every frame of ``x [B, C, T, H, W]``."""
        return frames_to_clip(conv(clip_to_frames(x)), x.shape[2])

    def _check(self, x: jt.Var) -> None:
        if x.ndim != 5:
            raise ValueError(f"CrissCrossAttention3D takes a clip [B, C, T, H, W], got shape {list(x.shape)}")

    def execute(self, x: jt.Var) -> jt.Var:
        self._check(x)
        out = criss_cross_attention_3d(self._frames(self.query_conv, x), self._frames(self.key_conv, x),
                                       self._frames(self.value_conv, x), impl=self.impl)
        return self.gamma * out + x

    def attention(self, x: jt.Var) -> tuple[jt.Var, jt.Var]:
        """``(attention [B, T+H+W-2, T, H, W], the module's output)``: the softmax weights it applies."""
        self._check(x)
        attention = position_softmax(ca_weight_3d(self._frames(self.query_conv, x), self._frames(self.key_conv, x),
                                                  impl=self.impl))
        return attention, self.gamma * ca_map_3d(attention, self._frames(self.value_conv, x), impl=self.impl) + x


class RCCAModule(nn.Module):
    """Recurrent criss-cross attention head (official ``RCCAModule``).

    ``conva`` (3x3 conv + BN + act) -> the same :class:`CrissCrossAttention`
    applied ``recurrence`` times -> ``convb`` (3x3 conv + BN + act) -> concat
    with the input -> ``bottleneck`` (3x3 conv + BN + act, Dropout2d, 1x1
    classifier).

    With ``video=True`` the input is the frames of clips, ``[B * T, C, h, w]``
    (clip-major, ``frames=T`` passed to :meth:`execute`); the attention is
    :class:`CrissCrossAttention3D` over each clip, and ``convb`` onwards runs on
    the labelled frames, so the logits are ``[B, classes, h, w]``.

    Args:
        in_channels: channels of the input feature (2048 for ResNet).
        num_classes: output channels of the classifier.
        channels: width of the head (official ``in_channels // 4`` = 512).
        activation: ``"leaky_relu"`` (official) or ``"relu"`` (mmsegmentation).
        dropout: Dropout2d probability before the classifier.
        cca_impl: ``"auto"``, ``"kernel"`` or ``"reference"`` (see ``models.ops.cca``).
        video: the 3-D attention over clips.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512,
                 activation: str = "leaky_relu", dropout: float = 0.1, cca_impl: str = "auto",
                 video: bool = False) -> None:
        super().__init__()
        self.video = bool(video)
        self.conva = nn.Sequential(*_conv_bn_act(in_channels, channels, activation))
        self.cca = (CrissCrossAttention3D if video else CrissCrossAttention)(channels, impl=cca_impl)
        self.convb = nn.Sequential(*_conv_bn_act(channels, channels, activation))
        self.bottleneck = nn.Sequential(
            *_conv_bn_act(in_channels + channels, channels, activation),
            ChannelDropout(dropout),
            Conv2d(channels, num_classes, 1, bias=True),
        )

    def execute(self, x: jt.Var, recurrence: int = 2, return_feature: bool = False, frames: int = 1):
        """Logits; with ``return_feature`` also the RCCA feature (``convb``'s output, what is concatenated)."""
        out = self.conva(x)
        if self.video:
            out = frames_to_clip(out, frames)
            for _ in range(recurrence):
                out = self.cca(out)
            out, x = out[:, :, labelled_frame(frames)], labelled_frames(x, frames)
        else:
            for _ in range(recurrence):
                out = self.cca(out)
        out = self.convb(out)
        logits = self.bottleneck(jt.concat([x, out], dim=1))
        return (logits, out) if return_feature else logits

    def attention_maps(self, x: jt.Var, recurrence: int = 2, frames: int = 1) -> list[jt.Var]:
        """The softmax attention of each recurrence: ``[B, H+W-1, H, W]`` (official layout), or for video
        ``[B, T+H+W-2, T, H, W]`` (``models.ops.cca3d``)."""
        cca = self.cca
        out = self.conva(x)
        maps = []
        if self.video:
            out = frames_to_clip(out, frames)
            for _ in range(recurrence):
                attention, out = cca.attention(out)
                maps.append(attention)
            return maps
        for _ in range(recurrence):
            attention = position_softmax(ca_weight(cca.query_conv(out), cca.key_conv(out), impl=cca.impl))
            maps.append(attention)
            out = cca.gamma * ca_map(attention, cca.value_conv(out), impl=cca.impl) + out
        return maps


class FCNAuxHead(nn.Sequential):
    """Auxiliary head (official ``dsn``): 3x3 conv + BN + act, Dropout2d, 1x1 classifier.

    ``bias=True`` on the 3x3 conv as in the official code; mmsegmentation's
    ``FCNHead`` has none (its conv is followed by BN).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512, activation: str = "leaky_relu",
                 bias: bool = True, dropout: float = 0.1) -> None:
        super().__init__(
            *_conv_bn_act(in_channels, channels, activation, bias=bias),
            ChannelDropout(dropout),
            Conv2d(channels, num_classes, 1, bias=True),
        )


class FeatureNeck(nn.Module):
    """Fuses backbone stages at the resolution of the first one (used for VAN).

    The inputs (e.g. stages 2, 3, 4 at strides 8, 16, 32) are upsampled
    bilinearly to the first input's size, concatenated, and fused by a 1x1 conv
    + BN + activation (``neck.0``, ``neck.1``).
    """

    def __init__(self, in_channels: Sequence[int], channels: int, activation: str = "leaky_relu",
                 align_corners: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.fuse = nn.Sequential(*_conv_bn_act(sum(in_channels), channels, activation, kernel_size=1))

    def execute(self, features: Sequence[jt.Var]) -> jt.Var:
        size = tuple(features[0].shape[2:])
        maps = [features[0]] + [resize(f, size, self.align_corners) for f in features[1:]]
        return self.fuse(jt.concat(maps, dim=1))


class CCNet(nn.Module):
    """CCNet segmentor: backbone, (optional neck), RCCA head and auxiliary head.

    Args:
        backbone: a module returning four stage outputs, with ``out_channels``,
            ``strides`` and ``input_norm`` attributes (``models.resnet``,
            ``models.van``).
        num_classes: number of classes.
        recurrence: how many times the criss-cross attention runs (0..3); can be
            changed later through ``model.recurrence``.
        channels: width of the RCCA head (512).
        aux_channels: width of the auxiliary head (512 official, 256
            mmsegmentation); ``None`` or 0 for no auxiliary head.
        aux_bias: bias on the auxiliary 3x3 conv (official True, mmseg False).
        activation: ``"leaky_relu"`` (official, slope 0.01) or ``"relu"``.
        align_corners: of the bilinear upsampling in :meth:`predict`, the loss
            and the neck (official True).
        neck_channels: if set, the stages whose stride is 8 or more are fused
            at stride 8 into this many channels before the head (VAN); if
            ``None`` the head reads the last stage directly, which must be at
            stride 8 (dilated ResNet).
        aux_index: backbone stage (0-based) feeding the auxiliary head (2 = stage 3).
        dropout: Dropout2d probability of both heads (0.1).
        cca_impl: ``"auto"``, ``"kernel"`` or ``"reference"``.
        ccl_dim: if set, a 1x1 projection (``head_ccl``) of the RCCA feature to this
            many channels for the category consistent loss (TPAMI version,
            ``models.losses.ccl``); used in training only.
        video: the video CCNet: inputs are clips ``[B, T, 3, H, W]`` (an image
            ``[B, 3, H, W]`` is a clip of one frame), the head attends over the
            clip, the outputs are the labelled frame's (module docstring).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, recurrence: int = 2, channels: int = 512,
                 aux_channels: Optional[int] = 512, aux_bias: bool = True, activation: str = "leaky_relu",
                 align_corners: bool = True, neck_channels: Optional[int] = None, aux_index: int = 2,
                 dropout: float = 0.1, cca_impl: str = "auto", ccl_dim: Optional[int] = None,
                 video: bool = False) -> None:
        super().__init__()
        check_activation(activation)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.recurrence = recurrence  # validated by the property setter
        self.align_corners = bool(align_corners)
        self.aux_index = int(aux_index)
        out_channels, strides = tuple(backbone.out_channels), tuple(backbone.strides)
        if neck_channels:
            self.neck_indices = tuple(i for i, s in enumerate(strides) if s >= 8)
            self.neck = FeatureNeck([out_channels[i] for i in self.neck_indices], neck_channels, activation,
                                    align_corners)
            head_in = neck_channels
        else:
            if strides[-1] != 8:
                raise ValueError(f"the backbone's last stage is at stride {strides[-1]}; CCNet needs stride 8 "
                                 f"(build a dilated ResNet with output_stride=8) or a neck (neck_channels)")
            self.neck = None
            head_in = out_channels[-1]
        self.output_stride = 8
        self._scalar_params: Optional[list[jt.Var]] = None
        self.video = bool(video)
        self.head = RCCAModule(head_in, num_classes, channels, activation, dropout, cca_impl, video=self.video)
        self.dsn = (FCNAuxHead(out_channels[aux_index], num_classes, aux_channels, activation, aux_bias, dropout)
                    if aux_channels else None)
        if ccl_dim is not None and ccl_dim < 1:
            raise ValueError(f"ccl_dim must be a positive number of channels, got {ccl_dim}")
        self.head_ccl = Conv2d(channels, int(ccl_dim), 1) if ccl_dim else None

    @property
    def recurrence(self) -> int:
        return self._recurrence

    @recurrence.setter
    def recurrence(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= MAX_RECURRENCE:
            raise ValueError(f"recurrence must be an integer in 0..{MAX_RECURRENCE}, got {value!r}")
        self._recurrence = value

    @property
    def input_norm(self) -> InputNorm:
        """The input normalisation the backbone's weights expect."""
        return self.backbone.input_norm

    def _sync_scalar_parameters(self) -> None:
        """Materialise the 1-element parameters (``gamma``) before a forward pass (``utils.jittor_fixes.materialize``)."""
        if self._scalar_params is None:
            self._scalar_params = [p for p in self.parameters() if int(np.prod(p.shape)) == 1]
        materialize(self._scalar_params)

    def _head_input(self, features: Sequence[jt.Var]) -> jt.Var:
        if self.neck is None:
            return features[-1]
        return self.neck([features[i] for i in self.neck_indices])

    def _frames(self, x: jt.Var) -> tuple[jt.Var, int]:
        """The input as the backbone takes it, and the frames per clip: a video model's clips
        ``[B, T, 3, H, W]`` folded to ``[B * T, 3, H, W]``."""
        if not self.video:
            if x.ndim != 4:
                raise ValueError(f"this CCNet takes images [B, 3, H, W], got shape {list(x.shape)}; clips "
                                 f"[B, T, 3, H, W] need a video preset (ccnet3d_*)")
            return x, 1
        if x.ndim == 4:
            return x, 1
        if x.ndim != 5:
            raise ValueError(f"a video CCNet takes clips [B, T, 3, H, W] or images [B, 3, H, W], "
                             f"got shape {list(x.shape)}")
        B, T = x.shape[:2]
        return x.reshape(B * T, *x.shape[2:]), T

    def execute(self, x: jt.Var) -> Union[jt.Var, tuple]:
        """Training: ``(main, aux)`` logits at 1/8 (``aux`` None without an aux head), and the projected
        RCCA feature as a third element when the model has the CCL projection. Eval: ``main``.
        A video model's outputs are those of each clip's labelled frame."""
        self._sync_scalar_parameters()
        x, frames = self._frames(x)
        features = self.backbone(x)
        ccl = self.head_ccl is not None and self.is_training()
        main = self.head(self._head_input(features), self._recurrence, return_feature=ccl, frames=frames)
        if not self.is_training():
            return main
        if ccl:
            main, feature = main
        aux = None
        if self.dsn is not None:
            aux_input = features[self.aux_index]
            if self.video:
                aux_input = labelled_frames(aux_input, frames)
            aux = resize(self.dsn(aux_input), main.shape[2:], self.align_corners)
        return (main, aux, self.head_ccl(feature)) if ccl else (main, aux)

    def predict(self, x: jt.Var, size: Optional[Sequence[int]] = None) -> jt.Var:
        """Main logits upsampled bilinearly to ``x``'s size (or ``size``), ``align_corners`` of the model.

        Runs in the current mode; call ``model.eval()`` first for inference.
        """
        out = self(x)
        if isinstance(out, tuple):
            out = out[0]
        return resize(out, x.shape[-2:] if size is None else size, self.align_corners)

    def attention_maps(self, x: jt.Var) -> list[jt.Var]:
        """Softmax attention of each recurrence: ``recurrence`` tensors ``[B, H+W-1, h, w]``.

        Channel ``i < w`` is the row position ``(y, i)``; channel ``w + t`` the
        column position ``(t if t < y else t + 1, x)`` (official layout, see
        ``models.ops.cca``). A video model's are ``[B, T+h+w-2, T, h, w]``, the
        temporal line's slots after those (``models.ops.cca3d``). Recomputes the
        backbone and the head up to the last attention.
        """
        self._sync_scalar_parameters()
        x, frames = self._frames(x)
        features = self.backbone(x)
        return self.head.attention_maps(self._head_input(features), self._recurrence, frames=frames)
