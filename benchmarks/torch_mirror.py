"""A PyTorch mirror of a Jittor CCNet, for benchmarks (a module, not a script).

:func:`describe` walks a model built by ``models.build_model`` and writes
down its structure as plain data (JSON-able): each module's kind, its
settings and its children under their attribute names. :func:`build` makes
the same network from ``torch.nn`` layers from that description: the same
modules under the same names (so the state dicts have the same keys) and
the same forward computation. Leaf layers map one to one (convolution,
BatchNorm, activations, pooling, dropout); each composite module of ours has
a PyTorch class below whose ``forward`` is its ``execute``. Criss-cross
attention is mmcv's pure-PyTorch formulation (``bench_common.torch_einsum``),
what a PyTorch user runs on a CPU.

The description lets a benchmark process build the mirror without importing
Jittor (which would distort its memory figures); :func:`describe` imports
Jittor only when called. This is a benchmark aid,
not a second implementation: the parity tests check our models against
independently written references.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from bench_common import torch_einsum

__all__ = ["describe", "build", "load_weights", "segmentation_loss"]

#: Optional children that may be None (kept in the description so that ``forward`` can test them).
_OPTIONAL = ("downsample", "neck", "dsn", "head_ccl")


def describe(jmodule) -> dict[str, Any]:
    """The structure of a Jittor module of this project as plain data (see the module docstring)."""
    from jittor import nn
    kind = type(jmodule).__name__
    m = jmodule
    if kind == "Conv2d":
        return {"kind": kind, "args": dict(in_channels=m.in_channels, out_channels=m.out_channels,
                                           kernel_size=list(m.kernel_size), stride=list(m.stride),
                                           padding=list(m.padding), dilation=list(m.dilation), groups=m.groups,
                                           bias=m.bias is not None)}
    if kind in ("BatchNorm", "BNAct"):
        args = dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum)
        if kind == "BNAct":
            args.update(activation=m.activation, slope=m.slope)
        return {"kind": kind, "args": args}
    if kind == "LayerNorm2d":
        return {"kind": kind, "args": dict(num_channels=int(m.weight.shape[0]), eps=m.eps)}
    if kind in ("ChannelDropout", "Dropout"):
        return {"kind": kind, "args": dict(p=m.p)}
    if kind == "MaxPool2d":
        pool = m._layer
        return {"kind": kind, "args": dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                                           ceil_mode=bool(pool.ceil_mode))}
    simple = {"relu": "ReLU", "gelu": "GELU", "identity": "Identity"}  # Jittor 1.3.11 has classes "relu", "gelu"
    if kind.lower() in simple:
        return {"kind": simple[kind.lower()], "args": {}}
    if isinstance(m, (nn.Sequential, nn.ModuleList)):
        return {"kind": "Sequential" if isinstance(m, nn.Sequential) else "ModuleList",
                "items": [describe(c) for c in m]}
    if kind not in _COMPOSITES:
        raise TypeError(f"no PyTorch mirror for {kind}")
    if kind == "Block" and getattr(m.drop_path, "drop_prob", 0.0):
        raise ValueError("the mirror has no stochastic depth: build the model with drop_path_rate=0")
    if kind == "CCNet" and m.head_ccl is not None:
        raise ValueError("the mirror has no category consistent loss projection")
    args = {"ResNet": lambda: dict(stem_type=m.stem_type),
            "Block": lambda: dict(dim=int(m.layer_scale_1.shape[0])),
            "VAN": lambda: dict(num_stages=m.num_stages),
            "FeatureNeck": lambda: dict(align_corners=m.align_corners),
            "CCNet": lambda: dict(recurrence=m.recurrence, align_corners=m.align_corners, aux_index=m.aux_index,
                                  neck_indices=list(getattr(m, "neck_indices", ()) or ()))}.get(kind, dict)()
    children = {}
    for name, value in vars(m).items():
        if isinstance(value, nn.Module):
            children[name] = describe(value)
        elif value is None and name in _OPTIONAL:
            children[name] = None
    return {"kind": kind, "args": args, "children": children}


# -- the PyTorch modules ------------------------------------------------------------------

class TBNAct(tnn.BatchNorm2d):
    def __init__(self, num_features, eps, momentum, activation, slope):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.activation, self.slope = activation, slope

    def forward(self, x, residual=None):
        x = super().forward(x)
        if residual is not None:
            x = x + residual
        return F.relu(x) if self.activation == "relu" else F.leaky_relu(x, self.slope)


class TLayerNorm2d(tnn.Module):
    def __init__(self, num_channels, eps):
        super().__init__()
        self.eps = eps
        self.weight = tnn.Parameter(torch.ones(num_channels))
        self.bias = tnn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        xc = x - x.mean(dim=1, keepdim=True)
        x = xc / torch.sqrt((xc * xc).mean(dim=1, keepdim=True) + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class Composite(tnn.Module):
    """A composite module: its children under the Jittor module's attribute names, its settings as attributes."""

    def __init__(self, children: dict, **args):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)
        for name, value in args.items():
            setattr(self, name, value)


class TBottleneck(Composite):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        return self.bn3(self.conv3(out), identity)


class TResNet(Composite):
    def forward(self, x):
        if self.stem_type == "deep":
            x = self.bn3(self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(x))))))
        elif self.stem_type == "v1c":
            x = self.stem(x)
        else:
            x = self.bn1(self.conv1(x))
        x = self.maxpool(x)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


class TDWConv(Composite):
    def forward(self, x):
        return self.dwconv(x)


class TMlp(Composite):
    def forward(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class TLKA(Composite):
    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class TAttention(Composite):
    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class TBlock(Composite):
    def __init__(self, children, dim):
        super().__init__(children)
        self.layer_scale_1 = tnn.Parameter(torch.zeros(dim))
        self.layer_scale_2 = tnn.Parameter(torch.zeros(dim))

    def forward(self, x):
        x = x + self.layer_scale_1.view(1, -1, 1, 1) * self.attn(self.norm1(x))
        return x + self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(self.norm2(x))


class TOverlapPatchEmbed(Composite):
    def forward(self, x):
        return self.norm(self.proj(x))


class TVAN(Composite):
    def forward(self, x):
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            outs.append(getattr(self, f"norm{i}")(x))
            x = outs[-1]
        return outs


class TCrissCrossAttention(Composite):
    def __init__(self, children):
        super().__init__(children)
        self.gamma = tnn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.gamma * torch_einsum(self.query_conv(x), self.key_conv(x), self.value_conv(x)) + x


class TRCCAModule(Composite):
    def forward(self, x, recurrence):
        out = self.conva(x)
        for _ in range(recurrence):
            out = self.cca(out)
        return self.bottleneck(torch.cat([x, self.convb(out)], 1))


class TFeatureNeck(Composite):
    def forward(self, features):
        size = features[0].shape[2:]
        maps = [features[0]] + [f if f.shape[2:] == size else
                                F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners)
                                for f in features[1:]]
        return self.fuse(torch.cat(maps, 1))


class TCCNet(Composite):
    def forward(self, x):
        features = self.backbone(x)
        head_in = features[-1] if self.neck is None else self.neck([features[i] for i in self.neck_indices])
        main = self.head(head_in, self.recurrence)
        if not self.training:
            return main
        aux = None
        if self.dsn is not None:
            aux = self.dsn(features[self.aux_index])
            if aux.shape[2:] != main.shape[2:]:
                aux = F.interpolate(aux, size=main.shape[2:], mode="bilinear", align_corners=self.align_corners)
        return main, aux


_COMPOSITES = {"Bottleneck": TBottleneck, "ResNet": TResNet, "DWConv": TDWConv, "Mlp": TMlp, "LKA": TLKA,
               "Attention": TAttention, "Block": TBlock, "OverlapPatchEmbed": TOverlapPatchEmbed, "VAN": TVAN,
               "CrissCrossAttention": TCrissCrossAttention, "RCCAModule": TRCCAModule,
               "FeatureNeck": TFeatureNeck, "CCNet": TCCNet}

_LEAVES = {
    "Conv2d": lambda a: tnn.Conv2d(a["in_channels"], a["out_channels"], tuple(a["kernel_size"]), tuple(a["stride"]),
                                   tuple(a["padding"]), tuple(a["dilation"]), a["groups"], bias=a["bias"]),
    "BatchNorm": lambda a: tnn.BatchNorm2d(a["num_features"], eps=a["eps"], momentum=a["momentum"]),
    "BNAct": lambda a: TBNAct(**a),
    "LayerNorm2d": lambda a: TLayerNorm2d(**a),
    "ChannelDropout": lambda a: tnn.Dropout2d(a["p"]),
    "Dropout": lambda a: tnn.Dropout(a["p"]),
    "MaxPool2d": lambda a: tnn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"]),
    "ReLU": lambda a: tnn.ReLU(),
    "GELU": lambda a: tnn.GELU(),
    "Identity": lambda a: tnn.Identity(),
}


def build(spec: dict) -> tnn.Module:
    """The PyTorch module a :func:`describe` description stands for."""
    kind = spec["kind"]
    if kind in _LEAVES:
        return _LEAVES[kind](spec["args"])
    if kind in ("Sequential", "ModuleList"):
        items = [build(s) for s in spec["items"]]
        return tnn.Sequential(*items) if kind == "Sequential" else tnn.ModuleList(items)
    children = {name: None if s is None else build(s) for name, s in spec["children"].items()}
    return _COMPOSITES[kind](children, **spec["args"])


def load_weights(model: tnn.Module, state: dict[str, np.ndarray]) -> None:
    """Load the Jittor model's state (name -> array) into its mirror; every key must match."""
    target = model.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in target]
    if missing or extra:
        raise KeyError(f"mirror and model differ: missing {missing[:5]}, unexpected {extra[:5]}")
    tensors = {}
    for k, v in state.items():
        if v.size != target[k].numel():
            raise ValueError(f"{k}: shape {tuple(v.shape)} vs {tuple(target[k].shape)}")
        tensors[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).reshape(target[k].shape)
    model.load_state_dict(tensors, strict=False)


def segmentation_loss(outputs, label, aux_weight: float = 0.4, align_corners: bool = True,
                      ignore_index: int = 255):
    """``models.losses.SegmentationLoss`` without OHEM: CE of the logits upsampled to the label, + aux."""
    main, aux = outputs

    def ce(logits):
        logits = F.interpolate(logits, size=label.shape[1:], mode="bilinear", align_corners=align_corners)
        return F.cross_entropy(logits, label, ignore_index=ignore_index)
    loss = ce(main)
    return loss + aux_weight * ce(aux) if aux is not None else loss
