"""convert_weights.py --onnx: every preset family's graph in onnxruntime against the Jittor model."""
from __future__ import annotations

import json

import numpy as np
import pytest

import jittor as jt

import convert_weights
from models import build_model
from utils.weight_files import save_weights

onnx = pytest.importorskip("onnx", reason="the ONNX export (requirements-dev.txt)")
ort = pytest.importorskip("onnxruntime", reason="the ONNX export's check (requirements-dev.txt)")
from models.onnx_export import OPSET, build_onnx  # noqa: E402

REL_TOL = 1e-4
SIZES = [(65, 65), (49, 81)]  # two input sizes through one graph (dynamic height and width)


def randomized(preset, num_classes=6, seed=0, **overrides):
    """A model with non-trivial eval-mode numbers: BatchNorm statistics, layer scales and gamma."""
    jt.set_global_seed(seed)
    model = build_model(preset, num_classes, **overrides)
    rng = np.random.default_rng(seed)
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            value.assign(jt.array(rng.random(value.shape).astype(np.float32) + 0.5))
        elif key.endswith(("running_mean", ".bias")):
            value.assign(jt.array(rng.standard_normal(value.shape).astype(np.float32) * 0.1))
        elif key.endswith("layer_scale_1") or key.endswith("layer_scale_2"):
            value.assign(jt.array(rng.random(value.shape).astype(np.float32) * 0.09 + 0.01))
        elif key.endswith("cca.gamma"):
            value.assign(jt.array([0.8], dtype=np.float32))
    return model.eval()


def rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": x})[0]


@pytest.mark.parametrize("preset", ["ccnet_demo", "ccnet_resnet50", "ccnet_resnet50_mmseg",
                                    "ccnet_van_b0", "ccnet_van_b1", "ccnet_van_b2", "ccnet_van_b3"])
def test_graph_equals_the_model_in_onnxruntime(preset):
    model = randomized(preset)
    proto = build_onnx(model)
    assert proto.opset_import[0].version == OPSET >= 17
    onnx.checker.check_model(proto, full_check=True)
    for h, w in SIZES:
        x = np.random.default_rng(h * w).standard_normal((1, 3, h, w)).astype(np.float32)
        with jt.no_grad():
            want = model.predict(jt.array(x)).numpy()
        got = run(proto, x)
        assert np.isfinite(want).all() and np.abs(want).max() > 0
        assert got.shape == want.shape == (1, 6, h, w)
        assert rel_err(got, want) <= REL_TOL, (preset, (h, w), rel_err(got, want))


def test_stride8_graph_recurrence_and_batch():
    model = randomized("ccnet_van_b0", seed=1)
    model.recurrence = 3
    proto = build_onnx(model, upsample=False)
    x = np.random.default_rng(2).standard_normal((2, 3, 57, 73)).astype(np.float32)
    with jt.no_grad():
        want = model(jt.array(x)).numpy()
    got = run(proto, x)
    assert got.shape == want.shape == (2, 6, 8, 10)
    assert rel_err(got, want) <= REL_TOL
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["output"] == "stride 8" and meta["recurrence"] == "3"


def test_cli_writes_a_checked_graph_with_its_metadata(tmp_path, capsys):
    model = randomized("ccnet_demo", seed=3)
    pkl = save_weights(str(tmp_path / "m.pkl"), {k: v.numpy() for k, v in model.state_dict().items()},
                       {"arch": "ccnet_demo", "num_classes": 6})
    out = tmp_path / "m.onnx"
    assert convert_weights.main(["--onnx", pkl, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    norm = json.loads(meta["input_norm"])
    assert norm["channels"] == "RGB" and norm["mean"] == [123.675, 116.28, 103.53] and meta["model"] == "ccnet_demo"
    x = np.random.default_rng(4).standard_normal((1, 3, 40, 56)).astype(np.float32)
    with jt.no_grad():
        want = model.predict(jt.array(x)).numpy()
    assert rel_err(run(proto, x), want) <= REL_TOL
    # refusals: no output, --stride8 alone, --onnx with --export, a file in the way
    assert convert_weights.main(["--onnx", pkl]) == 2
    assert "needs the output file" in capsys.readouterr().err
    for argv, words in ((["--stride8", pkl, "-o", str(tmp_path / "x.onnx")], "--stride8 goes with --onnx"),
                        (["--onnx", "--export", "official", pkl, "-o", str(tmp_path / "x.onnx")], "give one of them")):
        with pytest.raises(SystemExit):
            convert_weights.main(argv)
        assert words in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert convert_weights.main(["--onnx", pkl, "-o", str(tmp_path / "file" / "m.onnx")]) == 2
    assert "a file is in the way" in capsys.readouterr().err
    # a video model: its graph would take images only, so it is refused
    video = save_weights(str(tmp_path / "v.pkl"), {k: v.numpy() for k, v in model.state_dict().items()},
                         {"arch": "ccnet3d_demo", "num_classes": 6})
    assert convert_weights.main(["--onnx", video, "-o", str(tmp_path / "v.onnx")]) == 2
    assert "the video model ccnet3d_demo attends over clips" in capsys.readouterr().err
    assert not (tmp_path / "v.onnx").exists()


def test_without_the_onnx_package_one_error_line(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    out = tmp_path / "m.onnx"
    assert convert_weights.main(["--onnx", str(tmp_path / "whatever.pkl"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --onnx builds the graph with the onnx package") and "requirements-dev.txt" in err
    assert not out.exists()
