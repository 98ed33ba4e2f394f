"""convert_weights.py --export: our models as PyTorch checkpoints of other code bases, read by torch.

The whole-model layouts are checked with the PyTorch references of
test_ccnet_parity.py (each layout's exact names): a PyTorch model's weights go
through our converter into a weights file and back out with --export; torch
loads the result strictly into a fresh reference model, whose logits must equal
the original's, and every tensor must keep its bytes. The backbone layouts go
round trip through the converter. Every refusal is one error line and no file.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import jittor as jt

import convert_weights
from apis.model_files import load_model
from models import build_model
from models.resnet import resnet50
from models.van import van_b0
from utils.torch_reader import read_torch_checkpoint
from utils.torch_writer import write_torch_state_dict
from utils.weight_files import read_weights, save_weights

torch = pytest.importorskip("torch", reason="the export is checked by loading it with torch")
from test_ccnet_parity import (TMMSegCCNet, TOfficialCCNet, _save_mmseg, _save_official, image,  # noqa: E402
                               rel_err)

REL_TOL = 1e-4


def export(src, target, out, capsys=None):
    status = convert_weights.main(["--export", target, str(src), "-o", str(out)])
    return status, (capsys.readouterr() if capsys else None)


@pytest.mark.parametrize("layout", ["official", "mmseg"])
def test_whole_model_round_trip_loads_strictly_and_gives_the_same_logits(tmp_path, layout, capsys):
    src, pkl, out = tmp_path / "src.pth", tmp_path / "ours.pkl", tmp_path / "out.pth"
    ref = _save_official(src, 2, module_prefix=False) if layout == "official" else _save_mmseg(src, 2)
    assert convert_weights.main([str(src), "-o", str(pkl)]) == 0
    status, captured = export(pkl, layout, out, capsys)
    assert status == 0, captured.err
    assert f"wrote {out}" in captured.out

    loaded = torch.load(str(out), weights_only=True)
    fresh = TOfficialCCNet((3, 4, 6, 3), 5, 2) if layout == "official" else TMMSegCCNet((3, 4, 6, 3), 6, 2)
    fresh.load_state_dict(loaded, strict=True)  # every key, shape and dtype of the layout
    want = ref.state_dict()
    if layout == "official":  # InPlace-ABN snapshots have no counters; PyTorch's BatchNorm fills them in
        want = {k: v for k, v in want.items() if not k.endswith("num_batches_tracked")}
    assert list(loaded) == [k for k in want]  # the layout's own order, counters after running_var
    for key, value in want.items():
        if key.endswith("num_batches_tracked"):
            assert loaded[key].dtype == torch.int64 and loaded[key].shape == () and int(loaded[key]) == 0
        else:
            assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
            assert loaded[key].numpy().tobytes() == value.numpy().tobytes(), key  # the same bytes
    x = torch.from_numpy(image(1, 65, seed=4))
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(fresh(x), ref(x)):
            assert torch.equal(a, b)
    # ... and equal to our model's logits from the weights file
    model, _ = load_model(str(pkl))
    model.eval()
    with jt.no_grad():
        ours = model(jt.array(x.numpy())).numpy()
    assert rel_err(fresh(x)[0].detach().numpy(), ours) <= REL_TOL


def test_a_weights_file_of_ours_exports_every_tensor_under_the_official_names(tmp_path, capsys):
    """A fresh ccnet_resnet50's weights file: the backbone loses its prefix, head.* and dsn.* stay."""
    model = build_model("ccnet_resnet50", 4)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    pkl = save_weights(str(tmp_path / "w.pkl"), state, {"arch": "ccnet_resnet50", "num_classes": 4})
    status, captured = export(pkl, "official", tmp_path / "a.pth", capsys)
    assert status == 0, captured.err
    loaded = read_torch_checkpoint(str(tmp_path / "a.pth"))
    assert "conv1.weight" in loaded and "head.cca.gamma" in loaded and "dsn.3.weight" in loaded
    assert not any(k.startswith("backbone.") for k in loaded)
    for key, value in state.items():
        name = key[len("backbone."):] if key.startswith("backbone.") else key
        np.testing.assert_array_equal(loaded[name], value)


@pytest.mark.parametrize("target", ["torchvision", "van"])
def test_backbone_round_trip_through_the_converter(tmp_path, target, capsys):
    net = resnet50(stem="torchvision") if target == "torchvision" else van_b0()
    rng = np.random.default_rng(5)
    state = {k: rng.standard_normal(v.shape).astype(v.numpy().dtype) for k, v in net.state_dict().items()}
    arch = "resnet50" if target == "torchvision" else "van_b0"
    pkl = save_weights(str(tmp_path / "b.pkl"), state, {"arch": arch})
    status, captured = export(pkl, target, tmp_path / "b.pth", capsys)
    assert status == 0, captured.err
    loaded = torch.load(str(tmp_path / "b.pth"), weights_only=True)
    counters = [k for k in loaded if k.endswith("num_batches_tracked")]
    assert counters and len(counters) == sum(k.endswith("running_var") for k in state)
    assert ("conv1.weight" in loaded and loaded["conv1.weight"].shape[-1] == 7) if target == "torchvision" \
        else "patch_embed1.proj.weight" in loaded
    # back in through the converter: the same tensors
    back = tmp_path / "back.pkl"
    assert convert_weights.main([str(tmp_path / "b.pth"), "-o", str(back)]) == 0
    again, meta = read_weights(str(back))
    assert meta["arch"] == arch and set(again) == set(state)
    for key in state:
        assert again[key].tobytes() == state[key].tobytes(), key


def test_refusals_are_one_error_line_and_no_file(tmp_path, capsys):
    demo = build_model("ccnet_demo", 3)
    demo_pkl = save_weights(str(tmp_path / "demo.pkl"), {k: v.numpy() for k, v in demo.state_dict().items()},
                            {"arch": "ccnet_demo", "num_classes": 3})
    r50 = build_model("ccnet_resnet50", 3, ccl_dim=8)
    r50_state = {k: v.numpy() for k, v in r50.state_dict().items()}
    ccl_pkl = save_weights(str(tmp_path / "ccl.pkl"), r50_state, {"arch": "ccnet_resnet50", "num_classes": 3})
    plain = {k: v for k, v in r50_state.items() if not k.startswith("head_ccl.")}
    r50_pkl = save_weights(str(tmp_path / "r50.pkl"), plain, {"arch": "ccnet_resnet50", "num_classes": 3})
    cases = [
        (demo_pkl, "official", "no place for neck.* (the VAN neck)"),
        (r50_pkl, "mmseg", "ResNetV1c"),
        (ccl_pkl, "official", "head_ccl.* (the CCL projection"),
        (r50_pkl, "van", "VAN"),
        (r50_pkl, "torchvision", "7x7"),
        (str(tmp_path / "missing.pkl"), "official", "missing.pkl"),
    ]
    for src, target, words in cases:
        out = tmp_path / f"{target}.pth"
        status, captured = export(src, target, out, capsys)
        assert status == 2, (src, target, captured)
        lines = captured.err.strip().splitlines()
        assert lines[0].startswith("error:") and words in captured.err, (target, captured.err)
        assert not out.exists()
    # an output under a file, or a folder as the output: refused before reading anything
    (tmp_path / "file").write_text("x")
    status, captured = export(tmp_path / "missing.pkl", "official", tmp_path / "file" / "x.pth", capsys)
    assert status == 2 and "a file is in the way" in captured.err and "missing.pkl" not in captured.err
    status, captured = export(r50_pkl, "official", tmp_path, capsys)
    assert status == 2 and "is a folder" in captured.err
    # the converting flags do not go with --export
    with pytest.raises(SystemExit):
        convert_weights.main(["--export", "official", r50_pkl, "-o", str(tmp_path / "x.pth"), "--arch", "x"])
    assert "--arch belong to converting" in capsys.readouterr().err


def test_torch_writer_dtypes_shapes_and_alignment(tmp_path):
    sd = {"f32": np.random.default_rng(0).random((3, 4, 2), dtype=np.float32), "count": np.array(7, np.int64),
          "f64": np.arange(5.0), "flags": np.array([True, False]), "empty": np.zeros((0, 3), np.float16),
          "big": np.array([2 ** 40, -3], np.int64), "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
          "t": np.arange(12, dtype=np.float32).reshape(3, 4).T}  # not contiguous: written in C order
    path = tmp_path / "x.pth"
    write_torch_state_dict(sd, str(path))
    for mmap in (False, True):
        loaded = torch.load(str(path), weights_only=True, mmap=mmap)
        assert list(loaded) == list(sd)
        for key, value in sd.items():
            assert loaded[key].numpy().dtype == value.dtype and tuple(loaded[key].shape) == value.shape, key
            np.testing.assert_array_equal(loaded[key].numpy(), value)
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():  # each record's data at a multiple of 64 bytes, as torch.save writes them
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            assert start % 64 == 0 and info.compress_type == zipfile.ZIP_STORED, info.filename
    with pytest.raises(TypeError, match="uint16"):
        write_torch_state_dict({"x": np.zeros(2, np.uint16)}, str(tmp_path / "y.pth"))
    assert os.path.getsize(path) > 0
