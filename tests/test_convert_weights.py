"""convert_weights.py: torch-free reading, layout detection, refusal, and PyTorch parity.

The PyTorch reference modules below follow each source layout's exact key
names (MIT/official deep-stem ResNet, torchvision ResNet, open-mmlab ResNetV1c,
official VAN, HuggingFace VAN); they are initialised randomly (BatchNorm
running statistics included), saved with ``torch.save`` (zip and legacy),
converted by ``convert_weights.main`` and loaded into the Jittor backbones,
whose four stage outputs must match in eval mode (relative error <= 1e-4).
"""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import convert_weights
from pretrained.backbone_keys import convert_backbone, convert_van_hf, detect_layout
from utils.weight_files import save_weights
from utils.torch_reader import CheckpointFormatError, read_torch_checkpoint

torch = pytest.importorskip("torch", reason="the PyTorch CPU build is the parity reference (pip install torch)")
tnn = torch.nn
F = torch.nn.functional
from torch_reference import make_layer, randomize  # noqa: E402  (needs torch)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL_TOL = 1e-4


# ----------------------------------------------------------------------------- PyTorch references


class TResNet(tnn.Module):
    """Stem + layer1..4 returning the four stage outputs; ``stem`` in deep/torchvision/v1c."""

    def __init__(self, stem, layers, strides, dilations_per_layer, ceil_mode):
        super().__init__()
        self.kind = stem
        if stem == "deep":  # MIT resnet101-imagenet / official CCNet
            self.conv1 = tnn.Conv2d(3, 64, 3, 2, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.conv2 = tnn.Conv2d(64, 64, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(64)
            self.conv3 = tnn.Conv2d(64, 128, 3, 1, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(128)
            inplanes = 128
        elif stem == "v1c":  # mmcv ResNetV1c: stem = conv,BN,ReLU x3
            self.stem = tnn.Sequential(
                tnn.Conv2d(3, 32, 3, 2, 1, bias=False), tnn.BatchNorm2d(32), tnn.ReLU(),
                tnn.Conv2d(32, 32, 3, 1, 1, bias=False), tnn.BatchNorm2d(32), tnn.ReLU(),
                tnn.Conv2d(32, 64, 3, 1, 1, bias=False), tnn.BatchNorm2d(64), tnn.ReLU())
            inplanes = 64
        else:  # torchvision
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            inplanes = 64
        self.maxpool = tnn.MaxPool2d(3, 2, 1, ceil_mode=ceil_mode)
        for i, (planes, n, s, dils) in enumerate(zip((64, 128, 256, 512), layers, strides, dilations_per_layer)):
            assert len(dils) == n
            setattr(self, f"layer{i + 1}", make_layer(inplanes, planes, s, dils))
            inplanes = planes * 4
        self.fc = tnn.Linear(2048, 1000)

    def forward(self, x):
        if self.kind == "deep":
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            x = F.relu(self.bn3(self.conv3(x)))
        elif self.kind == "v1c":
            x = self.stem(x)
        else:
            x = F.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


def official_ccnet_resnet(layers):
    """speedinghzl/CCNet: layer3 dilation 2 and layer4 dilation 4*multi_grid in every block, ceil_mode."""
    grid = (1, 1, 1)
    dils = [[1] * layers[0], [1] * layers[1], [2] * layers[2], [4 * grid[i % 3] for i in range(layers[3])]]
    return TResNet("deep", layers, (1, 2, 1, 1), dils, ceil_mode=True)


def torchvision_dilated_resnet(layers):
    """torchvision replace_stride_with_dilation=[False, True, True]: a dilated layer's first block
    keeps the previous dilation."""
    dils, dilation = [], 1
    for n, dilate in zip(layers, (False, False, True, True)):
        previous = dilation
        if dilate:
            dilation *= 2
        dils.append([previous] + [dilation] * (n - 1))
    return TResNet("torchvision", layers, (1, 2, 1, 1), dils, ceil_mode=False)


def mmseg_v1c_resnet(layers, contract_dilation=True):
    """mmseg ResNetV1c, strides (1,2,1,1), dilations (1,1,2,4), contract_dilation."""
    dils = []
    for n, d in zip(layers, (1, 1, 2, 4)):
        first = d // 2 if (contract_dilation and d > 1) else d
        dils.append([first] + [d] * (n - 1))
    return TResNet("v1c", layers, (1, 2, 1, 1), dils, ceil_mode=False)


# --- official VAN (VAN-Classification models/van.py names)


class TDWConv(tnn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = tnn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x):
        return self.dwconv(x)


class TMlp(tnn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.fc1 = tnn.Conv2d(c, h, 1)
        self.dwconv = TDWConv(h)
        self.act = tnn.GELU()
        self.fc2 = tnn.Conv2d(h, c, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class TLKA(tnn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv0 = tnn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = tnn.Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = tnn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class TAttention(tnn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj_1 = tnn.Conv2d(d, d, 1)
        self.activation = tnn.GELU()
        self.spatial_gating_unit = TLKA(d)
        self.proj_2 = tnn.Conv2d(d, d, 1)

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class TBlock(tnn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        self.norm1 = tnn.BatchNorm2d(dim)
        self.attn = TAttention(dim)
        self.norm2 = tnn.BatchNorm2d(dim)
        self.mlp = TMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = tnn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = tnn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x):
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))


class TPatchEmbed(tnn.Module):
    def __init__(self, k, s, cin, c):
        super().__init__()
        self.proj = tnn.Conv2d(cin, c, k, s, k // 2)
        self.norm = tnn.BatchNorm2d(c)

    def forward(self, x):
        return self.norm(self.proj(x))


class TVAN(tnn.Module):
    """Official VAN with its classifier head; forward returns the four stage outputs."""

    def __init__(self, dims, depths, ratios=(8, 8, 4, 4)):
        super().__init__()
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", TPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2,
                                                             3 if i == 0 else dims[i - 1], dims[i]))
            setattr(self, f"block{i + 1}", tnn.ModuleList([TBlock(dims[i], ratios[i]) for _ in range(depths[i])]))
            setattr(self, f"norm{i + 1}", tnn.LayerNorm(dims[i], eps=1e-6))
        self.head = tnn.Linear(dims[3], 1000)

    def forward(self, x):
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            b, c, h, w = x.shape
            x = getattr(self, f"norm{i}")(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
            outs.append(x)
        return outs


# --- HuggingFace VanForImageClassification (transformers models/deprecated/van names)


class HFEmbeddings(tnn.Module):
    def __init__(self, cin, c, k, s):
        super().__init__()
        self.convolution = tnn.Conv2d(cin, c, k, s, k // 2)
        self.normalization = tnn.BatchNorm2d(c)

    def forward(self, x):
        return self.normalization(self.convolution(x))


class HFLKA(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.depth_wise = tnn.Conv2d(c, c, 5, padding=2, groups=c)
        self.depth_wise_dilated = tnn.Conv2d(c, c, 7, dilation=3, padding=9, groups=c)
        self.point_wise = tnn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.point_wise(self.depth_wise_dilated(self.depth_wise(x)))


class HFLKALayer(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = HFLKA(c)

    def forward(self, x):
        return x * self.attention(x)


class HFSpatialAttention(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.pre_projection = tnn.Sequential(OrderedDict([("conv", tnn.Conv2d(c, c, 1)), ("act", tnn.GELU())]))
        self.attention_layer = HFLKALayer(c)
        self.post_projection = tnn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.post_projection(self.attention_layer(self.pre_projection(x))) + x


class HFScaling(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = tnn.Parameter(1e-2 * torch.ones(c))

    def forward(self, x):
        return self.weight[:, None, None] * x


class HFMlp(tnn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.in_dense = tnn.Conv2d(c, h, 1)
        self.depth_wise = tnn.Conv2d(h, h, 3, padding=1, groups=h)
        self.out_dense = tnn.Conv2d(h, c, 1)

    def forward(self, x):
        return self.out_dense(F.gelu(self.depth_wise(self.in_dense(x))))


class HFLayer(tnn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.pre_normomalization = tnn.BatchNorm2d(c)
        self.attention = HFSpatialAttention(c)
        self.attention_scaling = HFScaling(c)
        self.post_normalization = tnn.BatchNorm2d(c)
        self.mlp = HFMlp(c, c * r)
        self.mlp_scaling = HFScaling(c)

    def forward(self, x):
        x = x + self.attention_scaling(self.attention(self.pre_normomalization(x)))
        return x + self.mlp_scaling(self.mlp(self.post_normalization(x)))


class HFStage(tnn.Module):
    def __init__(self, cin, c, k, s, depth, r):
        super().__init__()
        self.embeddings = HFEmbeddings(cin, c, k, s)
        self.layers = tnn.Sequential(*[HFLayer(c, r) for _ in range(depth)])
        self.normalization = tnn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        x = self.layers(self.embeddings(x))
        b, c, h, w = x.shape
        return self.normalization(x.flatten(2).transpose(1, 2)).view(b, h, w, c).permute(0, 3, 1, 2)


class HFEncoder(tnn.Module):
    def __init__(self, dims, depths, ratios=(8, 8, 4, 4)):
        super().__init__()
        self.stages = tnn.ModuleList([
            HFStage(3 if i == 0 else dims[i - 1], dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2, depths[i], ratios[i])
            for i in range(4)])


class HFVanModel(tnn.Module):
    def __init__(self, dims, depths):
        super().__init__()
        self.encoder = HFEncoder(dims, depths)
        self.layernorm = tnn.LayerNorm(dims[-1], eps=1e-6)  # created, never used in forward

    def forward(self, x):
        outs = []
        for stage in self.encoder.stages:
            x = stage(x)
            outs.append(x)
        return outs


class HFVanForImageClassification(tnn.Module):
    def __init__(self, dims, depths):
        super().__init__()
        self.van = HFVanModel(dims, depths)
        self.classifier = tnn.Linear(dims[-1], 1000)

    def forward(self, x):
        return self.van(x)


# ----------------------------------------------------------------------------- helpers


def torch_outputs(model, x):
    with torch.no_grad():
        return [o.numpy() for o in model(torch.from_numpy(x))]


def jittor_outputs(model, x):
    import jittor as jt
    model.eval()
    with jt.no_grad():
        return [o.numpy() for o in model(jt.array(x))]


def assert_close(ref, out):
    assert len(ref) == len(out) == 4
    for i, (a, b) in enumerate(zip(ref, out)):
        assert a.shape == b.shape, f"stage {i + 1}: torch {a.shape} vs jittor {b.shape}"
        rel = np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)
        assert rel <= REL_TOL, f"stage {i + 1}: relative error {rel:.2e} > {REL_TOL}"


def convert(src, out, *args):
    rc = convert_weights.main([str(src), "-o", str(out), *args])
    assert rc == 0
    assert os.path.isfile(out)
    return str(out)


def image(size, seed=0):
    return np.random.RandomState(seed).randn(1, 3, size, size).astype(np.float32)


# ----------------------------------------------------------------------------- reader


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reader_roundtrip(tmp_path, zip_format):
    base = torch.arange(20, dtype=torch.float32)
    sd = OrderedDict(
        w=torch.randn(2, 3), nbt=torch.tensor(5), i64=torch.tensor([1, 2 ** 40]), t=torch.randn(3, 4).t(),
        v1=base[2:8].view(2, 3), v2=base[10:14], s0=base[5], h=torch.randn(3).half(),
        bf=torch.randn(4).bfloat16(), b=torch.tensor([True, False]), p=tnn.Parameter(torch.randn(2)))
    obj = {"state_dict": sd, "args": argparse.Namespace(lr=0.1), "epoch": 3, "lst": [torch.ones(2)]}
    path = tmp_path / "ck.pth.tar"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    got = read_torch_checkpoint(str(path))
    assert got["epoch"] == 3 and np.array_equal(got["lst"][0], np.ones(2, np.float32))
    for k, v in sd.items():
        ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        assert got["state_dict"][k].shape == ref.shape, k  # 0-d stays 0-d
        assert got["state_dict"][k].dtype == ref.dtype, k  # int64 stays int64
        assert np.array_equal(got["state_dict"][k], ref), k


def test_reader_refuses_non_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello, not a checkpoint\n")
    plain_pickle = tmp_path / "list.pth"
    plain_pickle.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "x")
    for path in (text, plain_pickle, other_zip, tmp_path / "absent.pth"):
        with pytest.raises(CheckpointFormatError):
            read_torch_checkpoint(str(path))


# ----------------------------------------------------------------------------- ResNet parity


def test_parity_resnet50_deep_legacy(tmp_path):
    """MIT/official CCNet layout (3x3 stem, ceil-mode pool, every layer3/4 block dilated), legacy file."""
    from models.resnet import resnet50
    ref = randomize(official_ccnet_resnet((3, 4, 6, 3)), 1)
    src = tmp_path / "resnet50-imagenet.pth"
    torch.save(ref.state_dict(), src, _use_new_zipfile_serialization=False)
    out = convert(src, tmp_path / "r50_deep.pkl", "--verify")
    x = image(64)  # even size: ceil_mode matters in the max-pool (17x17, not 16x16)
    model = resnet50(stem="deep", pretrained=out)
    assert_close(torch_outputs(ref, x), jittor_outputs(model, x))


def test_parity_resnet50_torchvision_zip(tmp_path):
    """torchvision layout; its dilated variant equals contract_dilation=True."""
    from models.resnet import resnet50
    ref = randomize(torchvision_dilated_resnet((3, 4, 6, 3)), 2)
    src = tmp_path / "resnet50-0676ba61.pth"
    torch.save(ref.state_dict(), src)
    out = convert(src, tmp_path / "r50_tv.pkl")
    x = image(63, 1)
    model = resnet50(stem="torchvision", contract_dilation=True, pretrained=out)
    assert_close(torch_outputs(ref, x), jittor_outputs(model, x))


def test_parity_resnet50_v1c_mmcls_wrapped(tmp_path):
    """open-mmlab v1c stem (stem.N), contract_dilation, keys under 'backbone.' in 'state_dict'."""
    from models.resnet import resnet50
    ref = randomize(mmseg_v1c_resnet((3, 4, 6, 3)), 3)
    sd = OrderedDict(("backbone." + k, v) for k, v in ref.state_dict().items() if not k.startswith("fc."))
    sd["head.fc.weight"] = torch.zeros(1000, 2048)
    src = tmp_path / "resnet50_v1c.pth"
    torch.save({"meta": {"epoch": 100}, "state_dict": sd}, src)
    out = convert(src, tmp_path / "r50_v1c.pkl")
    x = image(65, 2)
    model = resnet50(stem="v1c", contract_dilation=True, pretrained=out)
    assert_close(torch_outputs(ref, x), jittor_outputs(model, x))


# ----------------------------------------------------------------------------- VAN parity


def test_parity_van_b0_official_zip(tmp_path):
    from models.van import van_b0
    ref = randomize(TVAN((32, 64, 160, 256), (3, 3, 5, 2)), 4)
    src = tmp_path / "van_tiny_754.pth.tar"
    torch.save({"epoch": 300, "arch": "van_tiny", "args": argparse.Namespace(lr=1e-3),
                "state_dict": ref.state_dict(), "optimizer": {"state": {}, "param_groups": []}}, src)
    out = convert(src, tmp_path / "van_b0.pkl", "--verify")
    x = image(64, 3)
    model = van_b0(pretrained=out)
    assert_close(torch_outputs(ref, x), jittor_outputs(model, x))


def test_parity_van_b1_official_legacy_module_prefix(tmp_path):
    from models.van import build_van
    ref = randomize(TVAN((64, 128, 320, 512), (2, 2, 4, 2)), 5)
    sd = OrderedDict(("module." + k, v) for k, v in ref.state_dict().items())
    src = tmp_path / "van_small.pth"
    torch.save({"model": sd}, src, _use_new_zipfile_serialization=False)
    out = convert(src, tmp_path / "van_b1.pkl", "--arch", "van_small")  # legacy name accepted
    x = image(32, 4)
    model = build_van("van_small", pretrained=out)
    assert_close(torch_outputs(ref, x), jittor_outputs(model, x))


def test_parity_van_b0_huggingface(tmp_path):
    from models.van import van_b0
    ref = randomize(HFVanForImageClassification((32, 64, 160, 256), (3, 3, 5, 2)), 6)
    src = tmp_path / "pytorch_model.bin"
    torch.save(ref.state_dict(), src)
    out = convert(src, tmp_path / "van_b0_hf.pkl")
    x = image(48, 5)
    model = van_b0(pretrained=out)
    assert_close(torch_outputs(ref, x), jittor_outputs(model, x))


def write_safetensors(path, state_dict):
    """Minimal safetensors writer (the format: u64 header length, JSON header, raw bytes)."""
    import json
    import struct
    codes = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.bfloat16: "BF16"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in state_dict.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 \
            else t.contiguous().numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_huggingface_safetensors_matches_bin(tmp_path):
    import jittor as jt
    ref = randomize(HFVanForImageClassification((32, 64, 160, 256), (3, 3, 5, 2)), 7)
    sd = ref.state_dict()
    key = "van.encoder.stages.0.layers.0.mlp_scaling.weight"
    sd[key] = sd[key].half()  # a float16 tensor: converted to float32 either way
    torch.save(sd, tmp_path / "pytorch_model.bin")
    write_safetensors(tmp_path / "model.safetensors", sd)
    a = jt.load(convert(tmp_path / "pytorch_model.bin", tmp_path / "a.pkl"))
    b = jt.load(convert(tmp_path / "model.safetensors", tmp_path / "b.pkl"))
    assert a["meta"]["layout"] == b["meta"]["layout"] == "van_hf" and a["meta"]["arch"] == "van_b0"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert a["state_dict"][k].dtype == np.float32
        assert np.array_equal(a["state_dict"][k], b["state_dict"][k]), k


def test_huggingface_mapping_covers_every_key():
    """VanModel (no 'van.' prefix) maps onto exactly the official VAN-B1 keys."""
    hf = HFVanModel((64, 128, 320, 512), (2, 2, 4, 2))
    official = TVAN((64, 128, 320, 512), (2, 2, 4, 2))
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert detect_layout(sd) == "van_hf"
    res = convert_van_hf(sd)
    want = {k for k in official.state_dict() if not k.startswith("head.") and "num_batches_tracked" not in k}
    assert set(res.state_dict) == want
    assert set(res.skipped) == {k for k in sd if "num_batches_tracked" in k or k.startswith("layernorm.")}


def test_convert_backbone_of_whole_segmentation_checkpoints():
    """Whole-model checkpoints convert piecewise: official CCNet (head.*/dsn.*) and mmseg (backbone.*)."""
    backbone = {k: v.numpy() for k, v in official_ccnet_resnet((3, 4, 6, 3)).state_dict().items()
                if not k.startswith("fc.")}
    heads = {"head.cca.gamma": np.zeros(1, np.float32), "dsn.0.weight": np.zeros((512, 1024, 3, 3), np.float32)}
    res = convert_backbone({**backbone, **heads}, "resnet_deep", exclude=("head.", "dsn."))
    assert set(res.state_dict) == {k for k in backbone if not k.endswith("num_batches_tracked")}
    assert res.skipped["dsn.0.weight"] == "not part of the backbone"
    mmseg = {"backbone." + k: v for k, v in backbone.items()}
    mmseg["decode_head.conv_seg.weight"] = np.zeros((19, 512, 1, 1), np.float32)
    res = convert_backbone(mmseg, "resnet_deep", prefix="backbone.")
    assert set(res.state_dict) == {k for k in backbone if not k.endswith("num_batches_tracked")}
    assert "decode_head.conv_seg.weight" in res.skipped


# ----------------------------------------------------------------------------- refusals


def _assert_refused(capsys, tmp_path, args, *needles):
    out = tmp_path / "out.pkl"
    rc = convert_weights.main([*map(str, args), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    return err


def test_refuses_resnet50_file_for_resnet101(tmp_path, capsys):
    ref = official_ccnet_resnet((3, 4, 6, 3))
    src = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), src)
    _assert_refused(capsys, tmp_path, [src, "--arch", "resnet101"], "ResNet-50", "--arch resnet50")


def test_refuses_to_write_weights_with_nan(tmp_path, capsys):
    # before: written with exit status 0 unless --verify
    ref = torchvision_dilated_resnet((3, 4, 6, 3))
    sd = ref.state_dict()
    sd["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    src = tmp_path / "nan.pth"
    torch.save(sd, src)
    _assert_refused(capsys, tmp_path, [src], "refusing to write", "hold NaN or Inf", "layer2.0.conv1.weight")


def test_refuses_van_b1_file_for_van_b2(tmp_path, capsys):
    ref = TVAN((64, 128, 320, 512), (2, 2, 4, 2))
    src = tmp_path / "van_b1.pth.tar"
    torch.save({"state_dict": ref.state_dict()}, src)
    _assert_refused(capsys, tmp_path, [src, "--arch", "van_b2"], "VAN-B1", "van_b2", "--arch van_b1")


def test_refuses_wrong_family_and_wrong_layout(tmp_path, capsys):
    ref = TVAN((32, 64, 160, 256), (3, 3, 5, 2))
    src = tmp_path / "van_b0.pth"
    torch.save({"state_dict": ref.state_dict()}, src)
    _assert_refused(capsys, tmp_path, [src, "--arch", "resnet101"], "VAN checkpoint", "--arch resnet101")
    _assert_refused(capsys, tmp_path, [src, "--from", "resnet_deep"], "no ResNet stages", "--from van_official")


def test_refuses_non_checkpoints(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    _assert_refused(capsys, tmp_path, [text], "not a PyTorch checkpoint")
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(100)}, truncated, _use_new_zipfile_serialization=False)
    truncated.write_bytes(truncated.read_bytes()[:-40])
    _assert_refused(capsys, tmp_path, [truncated], "truncated")
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "args": argparse.Namespace(a=1)}, empty)
    _assert_refused(capsys, tmp_path, [empty], "no tensors found")
    unknown = tmp_path / "unknown.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unknown)
    _assert_refused(capsys, tmp_path, [unknown], "could not recognise the layout", "--from")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken_fsync(fd):  # the bytes are written, then the disk fails
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    out = tmp_path / "w.pkl"
    with pytest.raises(OSError):
        save_weights(str(out), {"a": np.zeros(2, np.float32)}, {"arch": "x"})
    assert os.listdir(tmp_path) == []


def test_help_documents_formats():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "convert_weights.py"), "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    for needle in ("legacy", "zip", ".pth.tar", "resnet_deep", "resnet_torchvision", "resnet_v1c",
                   "van_official", "van_hf", "--verify", "--from", "--arch"):
        assert needle in res.stdout, needle
