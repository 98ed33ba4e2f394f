"""Whole CCNet checkpoints: conversion (official and mmsegmentation layouts) and PyTorch parity.

The PyTorch references below use each layout's exact key names:

* official (speedinghzl/CCNet ``networks/ccnet.py``): deep-stem ResNet at the
  top level, ``head.conva/cca/convb/bottleneck``, ``dsn``; InPlace-ABN in eval
  mode is BatchNorm followed by leaky ReLU 0.01 (``TIABN``);
* mmsegmentation: ``backbone.stem`` (ResNetV1c), ``decode_head.convs.N.{conv,bn}``
  (mmcv ``ConvModule``), ``decode_head.cca.gamma.scale`` (0-d ``Scale``),
  ``decode_head.conv_cat``, ``decode_head.conv_seg``, ``auxiliary_head``.

They get random weights (BatchNorm statistics included, gamma non-zero), are
saved with ``torch.save``, converted by ``convert_weights.main`` and loaded
strictly; eval-mode logits must agree within 1e-4 relative, for R = 1 and 2.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import jittor as jt

import convert_weights
from apis.model_files import load_model
from layout import file_room, floors, module_graph, room_graph
from models import CCNet, build_model
from models.weights import WeightLoadError, load_state_dict_strict
from pretrained.ccnet_keys import checkpoint_align_corners, detect_ccnet_layout
from utils.weight_files import read_weights

REL_TOL = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image(batch=1, size=65, seed=0):
    return np.random.RandomState(seed).randn(batch, 3, size, size).astype(np.float32)



torch = pytest.importorskip("torch", reason="the PyTorch CPU build is the parity reference (pip install torch)")
tnn = torch.nn
F = torch.nn.functional
from torch_reference import make_layer, randomize  # noqa: E402  (needs torch)


def _layers(module, inplanes, layers, contract):
    """layer1..4 with strides (1,2,1,1), dilations (1,1,2,4); ``contract`` halves a dilated stage's first block."""
    for i, (planes, n, s, d) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 1, 1), (1, 1, 2, 4))):
        first = d // 2 if (contract and d > 1) else d
        setattr(module, f"layer{i + 1}", make_layer(inplanes, planes, s, [first] + [d] * (n - 1)))
        inplanes = planes * 4


class TIABN(tnn.BatchNorm2d):
    """InPlaceABN(Sync) in eval mode: BatchNorm, then leaky ReLU 0.01."""

    def forward(self, x):
        return F.leaky_relu(super().forward(x), 0.01)


def t_criss_cross(q, k, v):
    """mmcv / official pure-python criss-cross attention (-inf on the column's self entry)."""
    B, _, H, W = q.shape
    neg = torch.diag(torch.full((H,), float("-inf")))
    e_h = (torch.einsum("bchw,bciw->bwhi", q, k) + neg).transpose(1, 2)
    e_w = torch.einsum("bchw,bchj->bhwj", q, k)
    attn = F.softmax(torch.cat([e_h, e_w], dim=-1), dim=-1)
    return (torch.einsum("bciw,bhwi->bchw", v, attn[..., :H])
            + torch.einsum("bchj,bhwj->bchw", v, attn[..., H:]))


class TCCA(tnn.Module):
    def __init__(self, c, mmseg=False):
        super().__init__()
        self.mmseg = mmseg
        if mmseg:
            self.gamma = TScale()
        else:
            self.gamma = tnn.Parameter(torch.zeros(1))
        self.query_conv = tnn.Conv2d(c, c // 8, 1)
        self.key_conv = tnn.Conv2d(c, c // 8, 1)
        self.value_conv = tnn.Conv2d(c, c, 1)

    def forward(self, x):
        out = t_criss_cross(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return (self.gamma(out) if self.mmseg else self.gamma * out) + x


class TScale(tnn.Module):
    """mmcv ``Scale``: a 0-d parameter."""

    def __init__(self):
        super().__init__()
        self.scale = tnn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return x * self.scale


class TRCCAModule(tnn.Module):
    def __init__(self, in_channels, inter, num_classes):
        super().__init__()
        self.conva = tnn.Sequential(tnn.Conv2d(in_channels, inter, 3, padding=1, bias=False), TIABN(inter))
        self.cca = TCCA(inter)
        self.convb = tnn.Sequential(tnn.Conv2d(inter, inter, 3, padding=1, bias=False), TIABN(inter))
        self.bottleneck = tnn.Sequential(
            tnn.Conv2d(in_channels + inter, 512, 3, padding=1, dilation=1, bias=False), TIABN(512),
            tnn.Dropout2d(0.1), tnn.Conv2d(512, num_classes, 1, bias=True))

    def forward(self, x, recurrence):
        out = self.conva(x)
        for _ in range(recurrence):
            out = self.cca(out)
        out = self.convb(out)
        return self.bottleneck(torch.cat([x, out], 1))


class TOfficialCCNet(tnn.Module):
    """speedinghzl/CCNet ``ResNet`` (Seg_Model): deep stem, every layer3/4 block dilated, head + dsn."""

    def __init__(self, layers, num_classes, recurrence):
        super().__init__()
        self.recurrence = recurrence
        self.conv1 = tnn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.conv2 = tnn.Conv2d(64, 64, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(64)
        self.conv3 = tnn.Conv2d(64, 128, 3, 1, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(128)
        self.maxpool = tnn.MaxPool2d(3, 2, 1, ceil_mode=True)
        _layers(self, 128, layers, contract=False)
        self.head = TRCCAModule(2048, 512, num_classes)
        self.dsn = tnn.Sequential(tnn.Conv2d(1024, 512, 3, 1, 1), TIABN(512), tnn.Dropout2d(0.1),
                                  tnn.Conv2d(512, num_classes, 1, bias=True))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer2(self.layer1(x))
        x3 = self.layer3(x)
        return [self.head(self.layer4(x3), self.recurrence), self.dsn(x3)]


class TConvModule(tnn.Module):
    """mmcv ConvModule(conv, bn, ReLU): ``conv`` without bias (a norm follows), ``bn``."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = tnn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class TBackboneV1c(tnn.Module):
    def __init__(self, layers):
        super().__init__()
        self.stem = tnn.Sequential(
            tnn.Conv2d(3, 32, 3, 2, 1, bias=False), tnn.BatchNorm2d(32), tnn.ReLU(),
            tnn.Conv2d(32, 32, 3, 1, 1, bias=False), tnn.BatchNorm2d(32), tnn.ReLU(),
            tnn.Conv2d(32, 64, 3, 1, 1, bias=False), tnn.BatchNorm2d(64), tnn.ReLU())
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        _layers(self, 64, layers, contract=True)

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


class TCCHead(tnn.Module):
    def __init__(self, num_classes, recurrence):
        super().__init__()
        self.recurrence = recurrence
        self.convs = tnn.Sequential(TConvModule(2048, 512, 3), TConvModule(512, 512, 3))
        self.cca = TCCA(512, mmseg=True)
        self.conv_cat = TConvModule(2048 + 512, 512, 3)
        self.dropout = tnn.Dropout2d(0.1)
        self.conv_seg = tnn.Conv2d(512, num_classes, 1)

    def forward(self, x):
        out = self.convs[0](x)
        for _ in range(self.recurrence):
            out = self.cca(out)
        out = self.conv_cat(torch.cat([x, self.convs[1](out)], 1))
        return self.conv_seg(self.dropout(out))


class TFCNHead(tnn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.convs = tnn.Sequential(TConvModule(1024, 256, 3))
        self.dropout = tnn.Dropout2d(0.1)
        self.conv_seg = tnn.Conv2d(256, num_classes, 1)

    def forward(self, x):
        return self.conv_seg(self.dropout(self.convs(x)))


class TMMSegCCNet(tnn.Module):
    """mmseg EncoderDecoder(ResNetV1c, CCHead, FCNHead aux)."""

    def __init__(self, layers, num_classes, recurrence):
        super().__init__()
        self.backbone = TBackboneV1c(layers)
        self.decode_head = TCCHead(num_classes, recurrence)
        self.auxiliary_head = TFCNHead(num_classes)

    def forward(self, x):
        feats = self.backbone(x)
        return [self.decode_head(feats[3]), self.auxiliary_head(feats[2])]


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _save_official(path, recurrence, module_prefix=True):
    ref = randomize(TOfficialCCNet((3, 4, 6, 3), 5, recurrence))
    sd = ref.state_dict()
    # Old inplace_abn (< 1.1) snapshots have no num_batches_tracked; DataParallel adds 'module.'.
    sd = {("module." if module_prefix else "") + k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, path)
    return ref


def _save_mmseg(path, recurrence, align_corners=True):
    ref = randomize(TMMSegCCNet((3, 4, 6, 3), 6, recurrence))
    config = ("norm_cfg = dict(type='SyncBN', requires_grad=True)\nmodel = dict(type='EncoderDecoder', "
              f"decode_head=dict(type='CCHead', recurrence={recurrence}, align_corners={align_corners}), "
              f"auxiliary_head=dict(type='FCNHead', align_corners={align_corners}))\n")
    torch.save({"meta": {"mmseg_version": "0.30.0", "config": config, "iter": 40000,
                         "CLASSES": ("a", "b", "c", "d", "e", "f")},
                "state_dict": ref.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}},
               path)
    return ref


@pytest.mark.parametrize("layout", ["official", "mmseg"])
@pytest.mark.parametrize("recurrence", [1, 2])
def test_whole_checkpoint_parity(tmp_path, layout, recurrence):
    src, out = tmp_path / f"{layout}.pth", tmp_path / f"{layout}.pkl"
    if layout == "official":
        ref = _save_official(src, recurrence)
        preset, classes = "ccnet_resnet50", 5
    else:
        ref = _save_mmseg(src, recurrence)
        preset, classes = "ccnet_resnet50_mmseg", 6
    assert convert_weights.main([str(src), "-o", str(out), "--recurrence", str(recurrence)]) == 0
    _, meta = read_weights(str(out))
    assert (meta["arch"], meta["num_classes"], meta["recurrence"]) == (preset, classes, recurrence)
    assert meta["align_corners"] is True  # official default; the mmseg file's config says True
    model, _ = load_model(str(out))
    assert isinstance(model, CCNet) and model.recurrence == recurrence and model.align_corners is True

    x = image(1, 65, seed=3)
    with torch.no_grad():
        t_main, t_aux = (o.numpy() for o in ref(torch.from_numpy(x)))
        t_up = F.interpolate(torch.from_numpy(t_main), size=(65, 65), mode="bilinear", align_corners=True).numpy()
    model.eval()
    with jt.no_grad():
        jx = jt.array(x)
        main = model(jx).numpy()
        aux = model.dsn(model.backbone(jx)[2]).numpy()
        up = model.predict(jx).numpy()
    assert main.shape == t_main.shape == (1, classes, 9, 9)
    assert rel_err(t_main, main) <= REL_TOL, rel_err(t_main, main)
    assert rel_err(t_aux, aux) <= REL_TOL, rel_err(t_aux, aux)
    assert rel_err(t_up, up) <= REL_TOL, rel_err(t_up, up)


def test_converted_file_loads_with_builder_and_refuses_wrong_preset(tmp_path):
    src, out = tmp_path / "CS_scenes_60000.pth", tmp_path / "o.pkl"
    _save_official(src, 2, module_prefix=False)
    assert convert_weights.main([str(src), "-o", str(out), "--verify", "--arch", "ccnet_resnet50"]) == 0
    state_dict, meta = read_weights(str(out))
    assert all(k.startswith(("backbone.", "head.", "dsn.")) for k in state_dict)
    assert meta["recurrence"] == 2 and meta["overrides"] == {}
    model = build_model(meta["arch"], meta["num_classes"])
    report = load_state_dict_strict(model, str(out))
    assert report.ok and len(report.loaded) == len(model.state_dict())
    # Training right after loading (a freshly loaded 1-element gamma used to break Jittor's fused kernels).
    model.train()
    main, aux = model(jt.array(image(2, 33)))
    assert np.isfinite(main.numpy()).all() and np.isfinite(aux.numpy()).all()
    wrong = build_model("ccnet_resnet50_mmseg", 5)
    with pytest.raises(WeightLoadError):
        load_state_dict_strict(wrong, str(out))
    # --arch must agree with the file
    assert convert_weights.main([str(src), "-o", str(tmp_path / "x.pkl"), "--arch", "ccnet_resnet101"]) == 2
    assert not os.path.exists(tmp_path / "x.pkl")


def _calls_between_files(fn):
    """Run ``fn()`` and return every call from one project file into another, as ``(caller, callee)``, in order.

    The caller is the nearest project frame below the callee (calls through
    Jittor's or the standard library's code count as made by the project file
    that started them).
    """
    calls, files = [], {}

    def project(code):
        if code.co_filename not in files:
            files[code.co_filename] = file_room(code.co_filename) and os.path.relpath(code.co_filename, ROOT)
        return files[code.co_filename]

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = project(frame.f_code)
        if not callee:
            return
        caller = frame.f_back
        while caller is not None and not project(caller.f_code):
            caller = caller.f_back
        if caller is not None and project(caller.f_code) != callee:
            calls.append((project(caller.f_code), callee))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_loading_a_pytorch_checkpoint_is_one_pass_down(tmp_path):
    """load_model(an official CCNet .pth): read, recognise, map keys, build and load, each call a floor down.

    Every call from one folder into another goes to a lower floor: no file
    calls back up into a folder above it.
    """
    src = tmp_path / "CS_scenes_60000.pth"
    _save_official(src, 2, module_prefix=False)
    calls = _calls_between_files(lambda: load_model(str(src)))
    floor = floors(room_graph(module_graph()))
    upward = [(a, b) for a, b in calls
              if file_room(a) != file_room(b) and floor[file_room(b)] >= floor[file_room(a)]]
    assert not upward, f"calls up (or across) a floor: {upward[:5]}"
    entered = list(dict.fromkeys(b for _, b in calls))
    # the steps, in this order: read the file, recognise its layout and map its keys, build, load
    steps = [os.path.join(*p.split("/")) for p in (
        "engine/checkpoint.py", "utils/torch_reader.py", "pretrained/converter.py", "pretrained/ccnet_keys.py",
        "models/__init__.py", "models/weights.py")]
    assert [f for f in entered if f in steps] == steps, entered
    assert calls[0][0] == os.path.join("apis", "model_files.py")


def test_detect_layouts_and_meta_parsing():
    assert detect_ccnet_layout({"head.conva.0.weight": 0, "conv1.weight": 0}) == "ccnet_official"
    assert detect_ccnet_layout({"decode_head.cca.gamma.scale": 0}) == "ccnet_mmseg"
    assert detect_ccnet_layout({"conv1.weight": 0, "layer1.0.conv1.weight": 0}) is None
    assert checkpoint_align_corners({"meta": {"config": "x = dict(align_corners=False)"}}) is False
    assert checkpoint_align_corners({"meta": {"config": "align_corners=True, align_corners=False"}}) is None
    assert checkpoint_align_corners({"state_dict": {}}) is None
