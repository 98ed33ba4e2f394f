"""CCNet model: presets, builder, parameter count, shapes, attention maps, one training step.

Whole-checkpoint conversion and PyTorch parity are in ``test_ccnet_parity.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

import jittor as jt
from jittor import nn

from models.layers import ChannelDropout
from models import MODEL_PRESETS, build_model
from models.layers import BNAct
from models.losses import SegmentationLoss


def n_params(module) -> int:
    return sum(int(np.prod(p.shape)) for p in module.parameters() if not p.is_stop_grad())


def image(batch=1, size=65, seed=0):
    return np.random.RandomState(seed).randn(batch, 3, size, size).astype(np.float32)


# ----------------------------------------------------------------------------- builder and presets


def test_official_resnet101_parameter_count_and_keys():
    model = build_model("ccnet_resnet101", 19)
    total, backbone = n_params(model), n_params(model.backbone)
    # Official: ~71.29M trainable, 42.62M backbone + 28.66M head/dsn.
    assert round(total / 1e6, 2) == 71.29
    assert round(backbone / 1e6, 2) == 42.62
    assert round((total - backbone) / 1e6, 2) == 28.66
    assert total == 71_287_911
    sd = model.state_dict()
    assert len(sd) == 562  # 530 backbone + 32 head/dsn (no num_batches_tracked)
    head = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("backbone.")}
    expected = {
        "head.conva.0.weight": (512, 2048, 3, 3), "head.cca.gamma": (1,),
        "head.cca.query_conv.weight": (64, 512, 1, 1), "head.cca.query_conv.bias": (64,),
        "head.cca.key_conv.weight": (64, 512, 1, 1), "head.cca.key_conv.bias": (64,),
        "head.cca.value_conv.weight": (512, 512, 1, 1), "head.cca.value_conv.bias": (512,),
        "head.convb.0.weight": (512, 512, 3, 3), "head.bottleneck.0.weight": (512, 2560, 3, 3),
        "head.bottleneck.3.weight": (19, 512, 1, 1), "head.bottleneck.3.bias": (19,),
        "dsn.0.weight": (512, 1024, 3, 3), "dsn.0.bias": (512,),
        "dsn.3.weight": (19, 512, 1, 1), "dsn.3.bias": (19,),
    }
    for bn in ("head.conva.1", "head.convb.1", "head.bottleneck.1", "dsn.1"):
        for s in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{bn}.{s}"] = (512,)
    assert head == expected


def test_presets_and_builder_errors():
    for name in ("ccnet_resnet101", "ccnet_resnet50", "ccnet_resnet101_mmseg", "ccnet_resnet50_mmseg",
                 "ccnet_van_b0", "ccnet_van_b1", "ccnet_van_b2", "ccnet_van_b3", "ccnet_demo"):
        assert name in MODEL_PRESETS
    with pytest.raises(ValueError, match="valid names: .*ccnet_resnet101"):
        build_model("ccnet_resnet18", 19)
    with pytest.raises(ValueError, match="recurrence"):
        build_model("ccnet_demo", 4, recurrence=4)
    with pytest.raises(ValueError, match="unknown argument"):
        build_model("ccnet_demo", 4, widht=3)
    with pytest.raises(ValueError, match="activation"):
        build_model("ccnet_demo", 4, activation="gelu")
    m = build_model("ccnet_resnet50_mmseg", 7, recurrence=1, channels=64, aux_channels=32)
    assert (m.num_classes, m.recurrence, m.arch, m.align_corners) == (7, 1, "ccnet_resnet50_mmseg", False)
    assert m.backbone.stem_type == "v1c" and "dsn.0.bias" not in m.state_dict()
    assert m.input_norm is m.backbone.input_norm
    with pytest.raises(ValueError):
        m.recurrence = -1


def test_bnact_and_dropout():
    x = jt.array(np.array([-2.0, 3.0], dtype=np.float32).reshape(1, 2, 1, 1))
    bn = BNAct(2)
    bn.eval()
    np.testing.assert_allclose(bn(x).numpy().ravel(), [-0.02, 3.0], rtol=1e-4)
    bn = BNAct(2, activation="relu")
    bn.eval()
    np.testing.assert_allclose(bn(x).numpy().ravel(), [0.0, 3.0], rtol=1e-4)
    drop = ChannelDropout(0.5)
    y = jt.ones((4, 64, 3, 3))
    out = drop(y).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert (out == out[:, :, :1, :1]).all()  # whole channels
    drop.eval()
    assert (drop(y).numpy() == 1).all()


@pytest.mark.parametrize("name,kwargs", [
    ("ccnet_resnet50", dict(channels=64, aux_channels=32)),
    ("ccnet_demo", {}),
])
def test_forward_shapes_train_eval_predict(name, kwargs):
    model = build_model(name, 5, **kwargs)
    x = jt.array(image(2))
    model.train()
    main, aux = model(x)
    assert tuple(main.shape) == (2, 5, 9, 9) and tuple(aux.shape) == (2, 5, 9, 9)
    model.eval()
    with jt.no_grad():
        main = model(x)
        assert tuple(main.shape) == (2, 5, 9, 9)
        assert np.isfinite(main.numpy()).all()
        assert tuple(model.predict(x).shape) == (2, 5, 65, 65)
        assert tuple(model.predict(x, size=(30, 41)).shape) == (2, 5, 30, 41)
    noaux = build_model(name, 5, aux_channels=None, **{k: v for k, v in kwargs.items() if k != "aux_channels"})
    noaux.train()
    assert noaux(x)[1] is None and noaux.dsn is None


def test_attention_maps_and_recurrence():
    model = build_model("ccnet_demo", 3)
    ref = build_model("ccnet_demo", 3, cca_impl="reference")
    model.head.cca.gamma.update(jt.array(np.array([0.5], dtype=np.float32)))
    ref.load_state_dict(model.state_dict())
    model.eval()
    ref.eval()
    x = jt.array(image(1))
    with jt.no_grad():
        for r in (0, 1, 3):
            model.recurrence = ref.recurrence = r
            maps = model.attention_maps(x)
            assert len(maps) == r
            for a, b in zip(maps, ref.attention_maps(x)):
                assert tuple(a.shape) == (1, 9 + 9 - 1, 9, 9)
                np.testing.assert_allclose(a.numpy().sum(1), 1.0, rtol=1e-5)
                np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
            np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,kwargs", [
    ("ccnet_resnet50", dict(channels=32, aux_channels=16)),
    ("ccnet_demo", dict(backbone_kwargs=dict(drop_path_rate=0.0))),
])
def test_one_sgd_step_reduces_loss(name, kwargs):
    jt.set_global_seed(0)
    model = build_model(name, 4, dropout=0.0, **kwargs)
    model.head.cca.gamma.update(jt.array(np.array([0.1], dtype=np.float32)))
    model.train()
    x = jt.array(image(2, 33, seed=1))
    label = np.random.RandomState(2).randint(0, 4, (2, 33, 33)).astype(np.int32)
    label[:, :5] = 255
    label = jt.array(label)
    criterion = SegmentationLoss(4, align_corners=model.align_corners)
    params = [p for p in model.parameters() if not p.is_stop_grad()]
    optimizer = nn.SGD(params, lr=0.01, momentum=0.0)
    loss0, stats0 = criterion(model(x), label)
    grads = jt.grad(loss0, params)
    dead = [n for (n, p), g in zip(((n, p) for n, p in model.named_parameters() if not p.is_stop_grad()), grads)
            if not np.abs(g.numpy()).max() > 0]
    assert not dead, f"parameters without gradient: {dead[:5]}"
    optimizer.step(loss0)
    loss1, stats1 = criterion(model(x), label)
    assert stats1["loss"] < stats0["loss"], (stats0, stats1)
    assert "loss_aux" in stats0 and stats0["valid_pixels"] == 2 * 28 * 33


def test_pretrained_backbone_is_loaded_strictly(tmp_path):
    from models.resnet import resnet50
    from models.weights import WeightLoadError
    from utils.weight_files import save_weights
    source = resnet50(stem="deep")
    state = {k: v.numpy() + 0.5 for k, v in source.state_dict().items()}
    path = str(tmp_path / "resnet50_deep.pkl")
    save_weights(path, state, {"arch": "resnet50", "stem": "deep"})
    model = build_model("ccnet_resnet50", 3, pretrained_backbone=path)
    got = model.backbone.state_dict()
    np.testing.assert_array_equal(got["layer4.2.conv3.weight"].numpy(), state["layer4.2.conv3.weight"])
    with pytest.raises(WeightLoadError, match="stem"):
        build_model("ccnet_resnet50_mmseg", 3, pretrained_backbone=path)  # v1c stem
