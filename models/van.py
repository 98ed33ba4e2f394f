"""VAN (Visual Attention Network) backbones B0..B6 for semantic segmentation.

Paper: Guo et al., "Visual Attention Network", CVMJ 2023 (arXiv:2202.09741).
Upstream: Visual-Attention-Network/VAN-Classification ``models/van.py``
(commit 8566d2e, Apache-2.0) and VAN-Segmentation ``van.py``.

Module and parameter names are the upstream ones (``patch_embed{i}``,
``block{i}.{j}``, ``norm{i}``), so the official ImageNet checkpoints load with no
renaming (the classifier ``head`` is dropped: this is a backbone). As in
VAN-Segmentation, :meth:`VAN.execute` returns the four stage outputs after each
stage's LayerNorm, in NCHW at strides 4, 8, 16, 32. The stage LayerNorm eps is
an argument; the default 1e-6 is the classification code's (the ImageNet
weights), VAN-Segmentation uses 1e-5.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jittor_env  # noqa: F401  (before jittor)
import jittor as jt
from jittor import nn

from models.layers import BatchNorm, Conv2d
from models.precision import float32
from utils.input_norm import IMAGENET_RGB, InputNorm
from models.weights import load_state_dict_strict

__all__ = [
    "VAN",
    "VAN_CONFIGS",
    "VAN_LEGACY_NAMES",
    "van_b0",
    "van_b1",
    "van_b2",
    "van_b3",
    "van_b4",
    "van_b5",
    "van_b6",
    "build_van",
]

#: embed_dims, depths, mlp_ratios and the default stochastic-depth rate (the
#: upstream ``train.sh`` value where there is one) of each variant.
VAN_CONFIGS: dict[str, dict] = {
    "van_b0": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1),
    "van_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1),
    "van_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.1),
    "van_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.2),
    "van_b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.2),
    "van_b5": dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.2),
    "van_b6": dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6), mlp_ratios=(8, 8, 4, 4), drop_path_rate=0.3),
}

#: Names used before upstream commit 8566d2e (and by VAN-Jittor, HuggingFace).
VAN_LEGACY_NAMES: dict[str, str] = {
    "van_tiny": "van_b0",
    "van_small": "van_b1",
    "van_base": "van_b2",
    "van_large": "van_b3",
}


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample, in training only."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def execute(self, x: jt.Var) -> jt.Var:
        if self.drop_prob == 0.0 or not self.is_training():
            return x
        keep = 1.0 - self.drop_prob
        mask = (jt.rand((x.shape[0],) + (1,) * (x.ndim - 1)) + keep).floor()
        return x / keep * mask


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map (upstream: LayerNorm on (B, N, C) tokens).

    Same result as flattening, ``nn.LayerNorm(C)`` and reshaping back; the
    variance is computed from centred values.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = jt.init.constant((num_channels,), "float32", 1.0)
        self.bias = jt.init.constant((num_channels,), "float32", 0.0)

    def execute(self, x: jt.Var) -> jt.Var:
        x = float32(x)  # statistics in float32 (models.precision)
        mean = x.mean(dim=1, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(dim=1, keepdims=True)
        x = xc / jt.sqrt(var + self.eps)
        return x * self.weight.reshape((1, -1, 1, 1)) + self.bias.reshape((1, -1, 1, 1))


class DWConv(nn.Module):
    """Depthwise 3x3 convolution with bias (named ``dwconv.dwconv`` upstream)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = Conv2d(dim, dim, 3, padding=1, groups=dim, bias=True)

    def execute(self, x: jt.Var) -> jt.Var:
        return self.dwconv(x)


class Mlp(nn.Module):
    """1x1 conv -> depthwise 3x3 -> GELU -> 1x1 conv (with dropout)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = Conv2d(in_features, hidden_features, 1)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = Conv2d(hidden_features, in_features, 1)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def execute(self, x: jt.Var) -> jt.Var:
        x = self.act(self.dwconv(self.fc1(x)))
        x = self.drop(x)
        return self.drop(self.fc2(x))


class LKA(nn.Module):
    """Large kernel attention: depthwise 5x5, depthwise 7x7 dilation 3, 1x1; ``u * attn``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = Conv2d(dim, dim, 1)

    def execute(self, x: jt.Var) -> jt.Var:
        attn = self.conv1(self.conv_spatial(self.conv0(x)))
        return x * attn


class Attention(nn.Module):
    """``proj_2(LKA(GELU(proj_1(x)))) + x`` (``SpatialAttention`` in older upstream code)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj_1 = Conv2d(d_model, d_model, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(d_model)
        self.proj_2 = Conv2d(d_model, d_model, 1)

    def execute(self, x: jt.Var) -> jt.Var:
        shortcut = x
        x = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return x + shortcut


class Block(nn.Module):
    """VAN block: BN -> attention and BN -> MLP branches, each layer-scaled with drop path."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = BatchNorm(dim)
        self.attn = Attention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = BatchNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.layer_scale_1 = jt.init.constant((dim,), "float32", layer_scale_init_value)
        self.layer_scale_2 = jt.init.constant((dim,), "float32", layer_scale_init_value)

    def execute(self, x: jt.Var) -> jt.Var:
        x = x + self.drop_path(self.layer_scale_1.reshape((1, -1, 1, 1)) * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.layer_scale_2.reshape((1, -1, 1, 1)) * self.mlp(self.norm2(x)))
        return x


class OverlapPatchEmbed(nn.Module):
    """Strided conv (kernel > stride, so patches overlap) followed by BatchNorm."""

    def __init__(self, patch_size: int = 7, stride: int = 4, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = BatchNorm(embed_dim)

    def execute(self, x: jt.Var) -> jt.Var:
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """VAN backbone returning the four stage outputs (after each stage's LayerNorm).

    Args:
        embed_dims: channels of the four stages.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        norm_eps: eps of the stage LayerNorms (1e-6 upstream classification).
        in_chans: input channels.
    """

    def __init__(self, embed_dims: Sequence[int] = (64, 128, 256, 512), depths: Sequence[int] = (3, 4, 6, 3),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, in_chans: int = 3) -> None:
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(mlp_ratios) == 4):
            raise ValueError("embed_dims, depths and mlp_ratios must have 4 entries each")
        self.depths = tuple(depths)
        self.num_stages = 4
        total = sum(depths)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]  # torch.linspace
        cur = 0
        for i in range(self.num_stages):
            patch_embed = OverlapPatchEmbed(patch_size=7 if i == 0 else 3, stride=4 if i == 0 else 2,
                                            in_chans=in_chans if i == 0 else embed_dims[i - 1],
                                            embed_dim=embed_dims[i])
            block = nn.ModuleList([Block(embed_dims[i], mlp_ratios[i], drop=drop_rate, drop_path=dpr[cur + j])
                                   for j in range(depths[i])])
            norm = LayerNorm2d(embed_dims[i], eps=norm_eps)
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"block{i + 1}", block)
            setattr(self, f"norm{i + 1}", norm)
        self.input_norm: InputNorm = IMAGENET_RGB
        self.out_channels: tuple[int, int, int, int] = tuple(int(c) for c in embed_dims)  # type: ignore[assignment]
        self.strides: tuple[int, int, int, int] = (4, 8, 16, 32)
        self._init_weights()

    def _init_weights(self) -> None:
        # Upstream _init_weights: conv normal(0, sqrt(2 / fan_out)), bias 0; LN 1/0; BN default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                jt.init.gauss_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    jt.init.constant_(m.bias, 0.0)
            elif isinstance(m, nn.BatchNorm):
                jt.init.constant_(m.weight, 1.0)
                jt.init.constant_(m.bias, 0.0)

    def execute(self, x: jt.Var) -> list[jt.Var]:
        """Returns the four stage outputs, NCHW, strides 4/8/16/32."""
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            x = getattr(self, f"norm{i}")(x)
            outs.append(x)
        return outs


def build_van(name: str, drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None,
              **kwargs) -> VAN:
    """Builds a VAN backbone by name (``van_b0``..``van_b6`` or the legacy ``van_tiny``..``van_large``).

    ``drop_path_rate`` None takes the variant's rate from :data:`VAN_CONFIGS`.
    """
    key = VAN_LEGACY_NAMES.get(name, name)
    if key not in VAN_CONFIGS:
        valid = sorted(VAN_CONFIGS) + sorted(VAN_LEGACY_NAMES)
        raise ValueError(f"unknown VAN variant {name!r}; valid names: {', '.join(valid)}")
    cfg = dict(VAN_CONFIGS[key])
    if drop_path_rate is not None:
        cfg["drop_path_rate"] = drop_path_rate
    cfg.update(kwargs)
    model = VAN(**cfg)
    model.arch = key
    if pretrained:
        load_state_dict_strict(model, pretrained, strict=True)
    return model


def van_b0(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B0 (tiny): dims 32/64/160/256, depths 3/3/5/2; 3.849M parameters."""
    return build_van("van_b0", drop_path_rate, pretrained, **kwargs)


def van_b1(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B1 (small): dims 64/128/320/512, depths 2/2/4/2; 13.349M parameters."""
    return build_van("van_b1", drop_path_rate, pretrained, **kwargs)


def van_b2(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B2 (base): dims 64/128/320/512, depths 3/3/12/3; 26.065M parameters."""
    return build_van("van_b2", drop_path_rate, pretrained, **kwargs)


def van_b3(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B3 (large): dims 64/128/320/512, depths 3/5/27/3; 44.253M parameters."""
    return build_van("van_b3", drop_path_rate, pretrained, **kwargs)


def van_b4(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B4: dims 64/128/320/512, depths 3/6/40/3."""
    return build_van("van_b4", drop_path_rate, pretrained, **kwargs)


def van_b5(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B5: dims 96/192/480/768, depths 3/3/24/3."""
    return build_van("van_b5", drop_path_rate, pretrained, **kwargs)


def van_b6(drop_path_rate: Optional[float] = None, pretrained: Optional[str] = None, **kwargs) -> VAN:
    """VAN-B6: dims 96/192/384/768, depths 6/6/90/6."""
    return build_van("van_b6", drop_path_rate, pretrained, **kwargs)
