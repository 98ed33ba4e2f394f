"""CCNet models: the custom kernels, layers, backbones, heads and losses.

``ops/`` holds the custom kernels (criss-cross attention, BatchNorm,
convolutions, the upsampled cross-entropy), ``layers`` the plain layers built
on them, ``resnet`` / ``van`` the backbones, ``ccnet`` the criss-cross
attention module, the heads and the segmentor, ``losses/`` one loss per
module, ``weights`` strict loading, ``complexity`` parameter and FLOP counts.

``build_model(name, num_classes)`` builds a :class:`~models.ccnet.CCNet` from
one of the named presets in ``MODEL_PRESETS``:

=========================  ===========  =====================================  ============  ===  =====  =========
preset                     backbone     stem / dilation                        activation    aux  R      align
=========================  ===========  =====================================  ============  ===  =====  =========
``ccnet_resnet101``        ResNet-101   deep 64-64-128, all layer3/4 dilated   leaky 0.01    512  2      True
``ccnet_resnet50``         ResNet-50    as above                               leaky 0.01    512  2      True
``ccnet_resnet101_mmseg``  ResNet-101   v1c 32-32-64, contract_dilation        ReLU          256  2      False
``ccnet_resnet50_mmseg``   ResNet-50    as above                               ReLU          256  2      False
``ccnet_van_b0``           VAN-B0       neck: stages 2-4 -> 256 @ 1/8          leaky 0.01    128  2      True
``ccnet_van_b1..b3``       VAN-B1..B3   neck: stages 2-4 -> 512 @ 1/8          leaky 0.01    256  2      True
``ccnet_demo``             small VAN    dims 16-32-64-128, blocks 1-1-2-1;     leaky 0.01    32   2      True
                                        neck 64, head 64 (from scratch)
``ccnet3d_resnet50``,      as the 2-D   the 2-D preset's network, the 3-D      as 2-D        as   3      as 2-D
``ccnet3d_resnet101``,     preset       criss-cross attention over clips                     2-D
``ccnet3d_van_b2``,                     [B, T, 3, H, W] (video CCNet)
``ccnet3d_demo``
=========================  ===========  =====================================  ============  ===  =====  =========

The RCCA head is 512 channels wide (256 for VAN-B0, 64 for the demo); the
auxiliary 3x3 conv has a bias except in the mmseg presets. ``align`` is the
``align_corners`` of the bilinear upsampling in the loss and in ``predict``
(the official code uses True, the mmseg 512x1024 configs False). The video
presets (``ccnet3d_*``) have the parameters of their 2-D preset, so its
checkpoints (and ImageNet backbones) initialise them; R = 3 because a
position reaches every position of a clip in three passes.
"""
from __future__ import annotations

from typing import Optional

import jittor_env  # noqa: F401  (must run before jittor is imported)

from models import resnet, van
from models.ccnet import CCNet

__all__ = ["CCNet", "BACKBONES", "MODEL_PRESETS", "build_model", "build_backbone"]

#: Backbone builder name -> builder (``pretrained=`` takes a converted weights file).
#: ``convert_weights.py`` converts ImageNet checkpoints for exactly these.
BACKBONES = {"resnet50": resnet.resnet50, "resnet101": resnet.resnet101,
             **{name: getattr(van, name) for name in van.VAN_CONFIGS}}

_OFFICIAL_HEAD = dict(channels=512, aux_channels=512, aux_bias=True, activation="leaky_relu",
                      align_corners=True, recurrence=2)
_MMSEG_HEAD = dict(channels=512, aux_channels=256, aux_bias=False, activation="relu",
                   align_corners=False, recurrence=2)

#: Preset name -> constructor settings. ``backbone`` names a builder in
#: ``models.resnet`` / ``models.van``; ``backbone_kwargs`` go to it; the rest go
#: to :class:`CCNet`.
MODEL_PRESETS: dict[str, dict] = {
    "ccnet_resnet101": dict(backbone="resnet101",
                            backbone_kwargs=dict(stem="deep", contract_dilation=False, multi_grid=(1, 1, 1)),
                            **_OFFICIAL_HEAD),
    "ccnet_resnet50": dict(backbone="resnet50",
                           backbone_kwargs=dict(stem="deep", contract_dilation=False, multi_grid=(1, 1, 1)),
                           **_OFFICIAL_HEAD),
    "ccnet_resnet101_mmseg": dict(backbone="resnet101", backbone_kwargs=dict(stem="v1c", contract_dilation=True),
                                  **_MMSEG_HEAD),
    "ccnet_resnet50_mmseg": dict(backbone="resnet50", backbone_kwargs=dict(stem="v1c", contract_dilation=True),
                                 **_MMSEG_HEAD),
    "ccnet_van_b0": dict(backbone="van_b0", backbone_kwargs={}, neck_channels=256,
                         **dict(_OFFICIAL_HEAD, channels=256, aux_channels=128)),
    "ccnet_van_b1": dict(backbone="van_b1", backbone_kwargs={}, neck_channels=512,
                         **dict(_OFFICIAL_HEAD, aux_channels=256)),
    "ccnet_van_b2": dict(backbone="van_b2", backbone_kwargs={}, neck_channels=512,
                         **dict(_OFFICIAL_HEAD, aux_channels=256)),
    "ccnet_van_b3": dict(backbone="van_b3", backbone_kwargs={}, neck_channels=512,
                         **dict(_OFFICIAL_HEAD, aux_channels=256)),
    # Small enough to train at several iterations/s on 2 CPU cores (128x128 crops, batch 8): a reduced
    # VAN (VAN-B0's layout at half width, 1/1/2/1 blocks; trained from scratch, no ImageNet weights).
    "ccnet_demo": dict(backbone="van_b0",
                       backbone_kwargs=dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), drop_path_rate=0.0),
                       neck_channels=64, **dict(_OFFICIAL_HEAD, channels=64, aux_channels=32)),
}

# The video CCNet (TPAMI version): each 2-D preset's network with the 3-D criss-cross attention over
# clips [B, T, 3, H, W], and R = 3: a position reaches every position of the clip only in three passes
# (row, column and time line each change one coordinate), as two passes reach the whole image in 2-D.
VIDEO_PRESETS = {f"ccnet3d_{name[len('ccnet_'):]}": dict(MODEL_PRESETS[name], video=True, recurrence=3)
                 for name in ("ccnet_resnet50", "ccnet_resnet101", "ccnet_van_b2", "ccnet_demo")}
MODEL_PRESETS.update(VIDEO_PRESETS)

_CCNET_ARGS = ("recurrence", "channels", "aux_channels", "aux_bias", "activation", "align_corners",
               "neck_channels", "aux_index", "dropout", "cca_impl", "ccl_dim", "video")


def build_backbone(name: str, pretrained: Optional[str] = None, **kwargs):
    """A backbone by builder name (a key of :data:`BACKBONES`), optionally with converted weights."""
    name = van.VAN_LEGACY_NAMES.get(name, name)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    return BACKBONES[name](pretrained=pretrained, **kwargs)


def build_model(name: str, num_classes: int, recurrence: Optional[int] = None,
                pretrained_backbone: Optional[str] = None, **overrides) -> CCNet:
    """Builds the CCNet preset ``name`` (see ``MODEL_PRESETS``).

    Args:
        name: preset name.
        num_classes: number of classes.
        recurrence: criss-cross attention recurrences (0..3); the preset's if None.
        pretrained_backbone: converted ImageNet weights (``convert_weights.py``)
            loaded strictly into the backbone.
        **overrides: any :class:`~models.ccnet.CCNet` argument (``channels``,
            ``aux_channels``, ``activation``, ``align_corners``, ``cca_impl`` ...)
            or ``backbone_kwargs`` (merged into the preset's).

    Raises:
        ValueError: unknown preset or argument.
    """
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_PRESETS)}")
    cfg = dict(MODEL_PRESETS[name])
    backbone_kwargs = dict(cfg.pop("backbone_kwargs"))
    backbone_kwargs.update(overrides.pop("backbone_kwargs", None) or {})
    unknown = sorted(set(overrides) - set(_CCNET_ARGS))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for build_model; valid: {', '.join(_CCNET_ARGS)}, "
                         f"backbone_kwargs")
    cfg.update(overrides)
    if recurrence is not None:
        cfg["recurrence"] = recurrence
    backbone = build_backbone(cfg.pop("backbone"), pretrained=pretrained_backbone, **backbone_kwargs)
    model = CCNet(backbone, num_classes, **cfg)
    model.arch = name
    return model
