"""ONNX graphs of the CCNet models, for deployment (``convert_weights.py --onnx``).

Jittor has no ONNX export (its issue #419), so the evaluation graph is built
here, module by module, with the ``onnx`` package: each emitter below writes
the standard ONNX operators that compute what the module's ``execute`` computes
in eval mode (BatchNorm with its running statistics, dropout and drop path
absent). ``tests/test_onnx_export.py`` runs every preset family's graph in
onnxruntime against the Jittor model.

The graph takes ``image [N, 3, H, W]`` float32, normalised as the weights
expect (the model's ``input_norm``, recorded in the metadata), with dynamic
``N``, ``H`` and ``W``, and gives ``logits [N, classes, H, W]`` (bilinear
upsampling with the model's ``align_corners``) or, with ``upsample=False``,
at stride 8. The criss-cross attention is written in plain operators: the
column and row energies as MatMuls, ``-inf`` on the column's self position
(so each pixel counts itself once, through its row), one Softmax over the
H + W positions, the aggregation as MatMuls; opset 17.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np

import jittor_env  # noqa: F401  (before jittor)
from jittor import nn

from models.ccnet import CCNet, CrissCrossAttention, FeatureNeck, RCCAModule
from models.layers import BatchNorm, ChannelDropout
from models.resnet import Bottleneck, ResNet
from models.van import LKA, VAN, Attention, Block, DropPath, DWConv, LayerNorm2d, Mlp, OverlapPatchEmbed

__all__ = ["OPSET", "build_onnx"]

OPSET = 17


def _array(v) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32)


class _Graph:
    """Nodes and initializers of one ONNX graph, with an emitter per module type."""

    def __init__(self) -> None:
        import onnx
        from onnx import helper
        self.onnx, self.helper = onnx, helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    # -- plumbing -------------------------------------------------------------------------

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: Optional[str] = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "ints", np.int64)

    def spatial_size(self, x: str) -> str:
        """int64 [2]: (H, W) of an NCHW tensor."""
        return self.op("Slice", [self.op("Shape", [x]), self.ints([2]), self.ints([4])])

    # -- layers -----------------------------------------------------------------------------

    def conv(self, m: nn.Conv2d, x: str) -> str:
        inputs = [x, self.const(_array(m.weight), "weight")]
        if m.bias is not None:
            inputs.append(self.const(_array(m.bias), "bias"))
        ph, pw = (int(p) for p in m.padding)
        return self.op("Conv", inputs, "conv", strides=[int(s) for s in m.stride], pads=[ph, pw, ph, pw],
                       dilations=[int(d) for d in m.dilation], group=int(m.groups),
                       kernel_shape=[int(k) for k in m.kernel_size])

    def activation(self, kind: Optional[str], x: str, slope: float = 0.01) -> str:
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "leaky_relu":
            return self.op("LeakyRelu", [x], alpha=float(slope))
        return x

    def batch_norm(self, m: BatchNorm, x: str, residual: Optional[str] = None) -> str:
        y = self.op("BatchNormalization", [x, self.const(_array(m.weight), "bn_scale"),
                                           self.const(_array(m.bias), "bn_bias"),
                                           self.const(_array(m.running_mean), "bn_mean"),
                                           self.const(_array(m.running_var), "bn_var")], "bn", epsilon=float(m.eps))
        if residual is not None:
            y = self.op("Add", [y, residual])
        return self.activation(getattr(m, "activation", None), y, getattr(m, "slope", 0.01))

    def gelu(self, x: str) -> str:
        """x * (erf(x / sqrt 2) + 1) / 2, as jittor.nn.gelu."""
        erf = self.op("Erf", [self.op("Div", [x, self.const(np.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [erf, self.const(1.0)])]), self.const(0.5)])

    def max_pool(self, m: nn.MaxPool2d, x: str) -> str:
        pool = m._layer
        ph, pw = pool.padding
        return self.op("MaxPool", [x], "maxpool", kernel_shape=list(pool.kernel_size), strides=list(pool.stride),
                       pads=[ph, pw, ph, pw], ceil_mode=int(bool(pool.ceil_mode)))

    def resize(self, x: str, size: str, align_corners: bool) -> str:
        """Bilinear resize of ``x`` to the spatial ``size`` (int64 [2])."""
        sizes = self.op("Concat", [self.op("Slice", [self.op("Shape", [x]), self.ints([0]), self.ints([2])]), size],
                        axis=0)
        return self.op("Resize", [x, "", "", sizes], "resize", mode="linear",
                       coordinate_transformation_mode="align_corners" if align_corners else "half_pixel")

    def channel_vector(self, v, hint: str) -> str:
        return self.const(_array(v).reshape(1, -1, 1, 1), hint)

    def module(self, m, x: str) -> str:
        """One module of a Sequential, or any module whose input and output are single tensors."""
        if isinstance(m, BatchNorm):  # BNAct included
            return self.batch_norm(m, x)
        if isinstance(m, nn.Conv2d):
            return self.conv(m, x)
        if isinstance(m, (nn.Identity, ChannelDropout, DropPath, nn.Dropout)):
            return x  # eval mode
        if isinstance(m, nn.MaxPool2d):
            return self.max_pool(m, x)
        if isinstance(m, nn.GELU):
            return self.gelu(x)
        if isinstance(m, nn.Sequential):
            for child in m:
                x = self.module(child, x)
            return x
        emit = {Bottleneck: self.bottleneck, LayerNorm2d: self.layer_norm, DWConv: lambda m, x: self.conv(m.dwconv, x),
                Mlp: self.mlp, LKA: self.lka, Attention: self.attention, Block: self.van_block,
                OverlapPatchEmbed: lambda m, x: self.batch_norm(m.norm, self.conv(m.proj, x)),
                CrissCrossAttention: self.criss_cross}.get(type(m))
        if emit is None:
            raise TypeError(f"no ONNX emitter for {type(m).__name__}")
        return emit(m, x)

    # -- ResNet -------------------------------------------------------------------------------

    def bottleneck(self, m: Bottleneck, x: str) -> str:
        identity = x if m.downsample is None else self.module(m.downsample, x)
        out = self.batch_norm(m.bn1, self.conv(m.conv1, x))
        out = self.batch_norm(m.bn2, self.conv(m.conv2, out))
        return self.batch_norm(m.bn3, self.conv(m.conv3, out), identity)

    def resnet(self, m: ResNet, x: str) -> list[str]:
        if m.stem_type == "deep":
            for i in (1, 2, 3):
                x = self.batch_norm(getattr(m, f"bn{i}"), self.conv(getattr(m, f"conv{i}"), x))
        elif m.stem_type == "v1c":
            x = self.module(m.stem, x)
        else:
            x = self.batch_norm(m.bn1, self.conv(m.conv1, x))
        x = self.max_pool(m.maxpool, x)
        outs = []
        for i in (1, 2, 3, 4):
            x = self.module(getattr(m, f"layer{i}"), x)
            outs.append(x)
        return outs

    # -- VAN ------------------------------------------------------------------------------------

    def layer_norm(self, m: LayerNorm2d, x: str) -> str:
        centred = self.op("Sub", [x, self.op("ReduceMean", [x], axes=[1], keepdims=1)])
        var = self.op("ReduceMean", [self.op("Mul", [centred, centred])], axes=[1], keepdims=1)
        y = self.op("Div", [centred, self.op("Sqrt", [self.op("Add", [var, self.const(float(m.eps))])])])
        return self.op("Add", [self.op("Mul", [y, self.channel_vector(m.weight, "ln_scale")]),
                               self.channel_vector(m.bias, "ln_bias")])

    def mlp(self, m: Mlp, x: str) -> str:
        return self.conv(m.fc2, self.gelu(self.conv(m.dwconv.dwconv, self.conv(m.fc1, x))))

    def lka(self, m: LKA, x: str) -> str:
        return self.op("Mul", [x, self.conv(m.conv1, self.conv(m.conv_spatial, self.conv(m.conv0, x)))])

    def attention(self, m: Attention, x: str) -> str:
        y = self.conv(m.proj_2, self.lka(m.spatial_gating_unit, self.gelu(self.conv(m.proj_1, x))))
        return self.op("Add", [y, x])

    def van_block(self, m: Block, x: str) -> str:
        a = self.op("Mul", [self.channel_vector(m.layer_scale_1, "layer_scale"), self.attention(m.attn,
                                                                                              self.batch_norm(m.norm1, x))])
        x = self.op("Add", [x, a])
        b = self.op("Mul", [self.channel_vector(m.layer_scale_2, "layer_scale"), self.mlp(m.mlp,
                                                                                        self.batch_norm(m.norm2, x))])
        return self.op("Add", [x, b])

    def van(self, m: VAN, x: str) -> list[str]:
        outs = []
        for i in range(1, m.num_stages + 1):
            x = self.module(getattr(m, f"patch_embed{i}"), x)
            for blk in getattr(m, f"block{i}"):
                x = self.van_block(blk, x)
            x = self.layer_norm(getattr(m, f"norm{i}"), x)
            outs.append(x)
        return outs

    # -- the head ---------------------------------------------------------------------------------

    def criss_cross(self, m: CrissCrossAttention, x: str) -> str:
        """gamma * CCA(q, k, v) + x, the attention as mmcv writes it (one softmax over H + W logits)."""
        q, k, v = (self.conv(c, x) for c in (m.query_conv, m.key_conv, m.value_conv))
        # energies: row [N, H, W(x), W(i)] = q[n,:,y,x] . k[n,:,y,i]; column [N, W(x), H(y), H(j)]
        row = self.op("MatMul", [self.op("Transpose", [q], perm=[0, 2, 3, 1]), self.op("Transpose", [k], perm=[0, 2, 1, 3])])
        col = self.op("MatMul", [self.op("Transpose", [q], perm=[0, 3, 2, 1]), self.op("Transpose", [k], perm=[0, 3, 1, 2])])
        # -inf where j == y: the pixel itself is counted once, through its row
        height = self.op("Gather", [self.op("Shape", [x]), self.ints(2)], axis=0)
        steps = self.op("Range", [self.ints(0), height, self.ints(1)])
        diagonal = self.op("Equal", [self.op("Unsqueeze", [steps, self.ints([1])]),
                                     self.op("Unsqueeze", [steps, self.ints([0])])])
        col = self.op("Where", [diagonal, self.const(-np.inf), col])
        col = self.op("Transpose", [col], perm=[0, 2, 1, 3])                       # [N, H(y), W(x), H(j)]
        attention = self.op("Softmax", [self.op("Concat", [col, row], axis=3)], axis=3)
        width = self.op("Gather", [self.op("Shape", [x]), self.ints(3)], axis=0)
        total = self.op("Add", [height, width])
        a_col = self.op("Slice", [attention, self.ints([0]), self.op("Unsqueeze", [height, self.ints([0])]),
                                  self.ints([3])])
        a_row = self.op("Slice", [attention, self.op("Unsqueeze", [height, self.ints([0])]),
                                  self.op("Unsqueeze", [total, self.ints([0])]), self.ints([3])])
        # out_col[n,c,y,x] = sum_j v[n,c,j,x] a_col[n,y,x,j]; out_row[n,c,y,x] = sum_i v[n,c,y,i] a_row[n,y,x,i]
        out_col = self.op("MatMul", [self.op("Transpose", [v], perm=[0, 3, 1, 2]),
                                     self.op("Transpose", [a_col], perm=[0, 2, 3, 1])])    # [N, W, C, H(y)]
        out_row = self.op("MatMul", [self.op("Transpose", [v], perm=[0, 2, 1, 3]),
                                     self.op("Transpose", [a_row], perm=[0, 1, 3, 2])])    # [N, H, C, W(x)]
        out = self.op("Add", [self.op("Transpose", [out_col], perm=[0, 2, 3, 1]),
                              self.op("Transpose", [out_row], perm=[0, 2, 1, 3])])
        return self.op("Add", [self.op("Mul", [self.const(_array(m.gamma).reshape(())), out]), x])

    def rcca(self, m: RCCAModule, x: str, recurrence: int) -> str:
        out = self.module(m.conva, x)
        for _ in range(recurrence):
            out = self.criss_cross(m.cca, out)
        out = self.module(m.convb, out)
        return self.module(m.bottleneck, self.op("Concat", [x, out], axis=1))

    def neck(self, m: FeatureNeck, features: Sequence[str]) -> str:
        size = self.spatial_size(features[0])
        maps = [features[0]] + [self.resize(f, size, m.align_corners) for f in features[1:]]
        return self.module(m.fuse, self.op("Concat", maps, axis=1))

    def ccnet(self, model: CCNet, image: str, upsample: bool) -> str:
        backbone = model.backbone
        if isinstance(backbone, ResNet):
            features = self.resnet(backbone, image)
        elif isinstance(backbone, VAN):
            features = self.van(backbone, image)
        else:
            raise TypeError(f"no ONNX emitter for the backbone {type(backbone).__name__}")
        head_in = features[-1] if model.neck is None else self.neck(model.neck, [features[i] for i in model.neck_indices])
        logits = self.rcca(model.head, head_in, model.recurrence)
        if upsample:
            logits = self.resize(logits, self.spatial_size(image), model.align_corners)
        return logits


def build_onnx(model: CCNet, upsample: bool = True, metadata: Optional[dict] = None):
    """The evaluation graph of ``model`` as an ``onnx.ModelProto`` (checked with ``onnx.checker``).

    ``metadata`` (strings) goes into the model's ``metadata_props``, next to
    the input normalisation of the weights.
    """
    import onnx
    from onnx import TensorProto, helper
    graph = _Graph()
    was_training = model.is_training()
    model.eval()
    try:
        logits = graph.ccnet(model, "image", upsample)
    finally:
        if was_training:
            model.train()
    graph.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    spatial = ["height", "width"] if upsample else ["height_8", "width_8"]
    proto = helper.make_model(
        helper.make_graph(graph.nodes, "ccnet",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["batch", model.num_classes] + spatial)],
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ccnet-jittor")
    norm = model.input_norm
    meta = {"input_norm": json.dumps({"mean": list(norm.mean), "std": list(norm.std),
                                      "channels": "BGR" if norm.bgr else "RGB", "pixels": "0..255",
                                      "formula": "(pixel - mean) / std, NCHW"}),
            "num_classes": str(model.num_classes), "recurrence": str(model.recurrence),
            "align_corners": str(model.align_corners), "output": "input size" if upsample else "stride 8",
            **{k: str(v) for k, v in (metadata or {}).items()}}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return proto
