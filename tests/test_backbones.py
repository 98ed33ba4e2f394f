"""ResNet and VAN backbones: parameter counts, key names, output strides, dilation, drop path,
and the strict weight loader. PyTorch parity lives in test_convert_weights.py."""
from __future__ import annotations

import numpy as np
import pytest

import jittor as jt

from utils.input_norm import CAFFE_BGR, IMAGENET_RGB
from models.resnet import resnet50, resnet101
from models.van import VAN, DropPath, build_van, van_b0, van_b1, van_b2, van_b3
from models.weights import WeightLoadError, load_state_dict_strict
from utils.weight_files import save_weights


def trainable_params(model) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.is_stop_grad())


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def dilations(layer):
    return [_pair(block.conv2.dilation)[0] for block in layer]


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("builder,millions", [(van_b0, 3.849), (van_b1, 13.349), (van_b2, 26.065), (van_b3, 44.253)])
def test_van_parameter_counts(builder, millions):
    """Published backbone sizes (without the ImageNet head)."""
    assert round(trainable_params(builder()) / 1e6, 3) == millions


def test_resnet101_deep_parameter_count():
    """Official CCNet ResNet-101 backbone: 42.62M trainable parameters."""
    assert round(trainable_params(resnet101(stem="deep")) / 1e6, 2) == 42.62


# ----------------------------------------------------------------------------- key names


def official_ccnet_backbone_keys(layers=(3, 4, 23, 3)) -> dict[str, tuple]:
    """The official CCNet ResNet-101 backbone state dict (without num_batches_tracked)."""
    keys: dict[str, tuple] = {}

    def bn(prefix, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{s}"] = (c,)

    keys["conv1.weight"] = (64, 3, 3, 3); bn("bn1", 64)
    keys["conv2.weight"] = (64, 64, 3, 3); bn("bn2", 64)
    keys["conv3.weight"] = (128, 64, 3, 3); bn("bn3", 128)
    inplanes = 128
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for i in range(n):
            p = f"layer{li}.{i}"
            keys[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1); bn(f"{p}.bn1", planes)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3); bn(f"{p}.bn2", planes)
            keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1); bn(f"{p}.bn3", planes * 4)
            if i == 0:
                keys[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1); bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return keys


def test_resnet101_deep_keys_match_official_ccnet():
    expected = official_ccnet_backbone_keys()
    assert len(expected) == 530
    sd = resnet101(stem="deep").state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_stem_keys():
    v1c = {k: tuple(v.shape) for k, v in resnet50(stem="v1c").state_dict().items() if not k.startswith("layer")}
    assert v1c["stem.0.weight"] == (32, 3, 3, 3)
    assert v1c["stem.3.weight"] == (32, 32, 3, 3)
    assert v1c["stem.6.weight"] == (64, 32, 3, 3)
    assert {k.split(".")[1] for k in v1c} == {"0", "1", "3", "4", "6", "7"}
    tv = {k: tuple(v.shape) for k, v in resnet50(stem="torchvision").state_dict().items() if not k.startswith("layer")}
    assert tv == {"conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "bn1.bias": (64,),
                  "bn1.running_mean": (64,), "bn1.running_var": (64,)}


def test_van_keys_follow_upstream():
    sd = van_b0().state_dict()
    assert tuple(sd["patch_embed1.proj.weight"].shape) == (32, 3, 7, 7)
    assert tuple(sd["block3.4.attn.spatial_gating_unit.conv_spatial.weight"].shape) == (160, 1, 7, 7)
    assert tuple(sd["block1.0.mlp.dwconv.dwconv.weight"].shape) == (256, 1, 3, 3)
    assert tuple(sd["block4.1.layer_scale_2"].shape) == (256,)
    assert "norm4.weight" in sd and not any(k.startswith("head") for k in sd)


# ----------------------------------------------------------------------------- geometry


def test_resnet_attributes_and_input_norm():
    m = resnet50(stem="deep")
    assert m.out_channels == (256, 512, 1024, 2048) and m.strides == (4, 8, 8, 8)
    assert m.input_norm == CAFFE_BGR
    assert resnet50(stem="v1c").input_norm == IMAGENET_RGB
    assert resnet50(stem="torchvision", output_stride=16).input_norm == IMAGENET_RGB
    assert resnet50(output_stride=16).strides == (4, 8, 16, 16)
    assert resnet50(output_stride=32).strides == (4, 8, 16, 32)


def test_resnet_dilation_official_os8():
    m = resnet101(stem="deep")
    assert dilations(m.layer3) == [2] * 23 and dilations(m.layer4) == [4] * 3
    assert [_pair(b.conv2.stride)[0] for b in m.layer2] == [2, 1, 1, 1]
    assert all(_pair(b.conv2.stride)[0] == 1 for b in list(m.layer3) + list(m.layer4))
    assert _pair(m.layer3[0].conv2.padding)[0] == 2  # padding = dilation


def test_resnet_dilation_contract_and_multi_grid():
    m = resnet50(contract_dilation=True)
    assert dilations(m.layer3) == [1, 2, 2, 2, 2, 2] and dilations(m.layer4) == [2, 4, 4]
    m = resnet50(multi_grid=(1, 2, 4))
    assert dilations(m.layer3) == [2] * 6 and dilations(m.layer4) == [4, 8, 16]
    m = resnet50(output_stride=16)
    assert dilations(m.layer3) == [1] * 6 and dilations(m.layer4) == [2, 2, 2]
    assert _pair(m.layer3[0].conv2.stride)[0] == 2
    m = resnet50(output_stride=16, contract_dilation=True, multi_grid=(1, 2, 4))
    assert dilations(m.layer4) == [1, 4, 8]


def test_resnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="output_stride"):
        resnet50(output_stride=4)
    with pytest.raises(ValueError, match="stem"):
        resnet50(stem="resnet_d")
    with pytest.raises(ValueError, match="multi_grid"):
        resnet50(multi_grid=(0,))


@pytest.mark.parametrize("output_stride,stem,size,expected", [
    (8, "deep", 64, (17, 9, 9, 9)),           # ceil-mode max-pool: 32 -> 17
    (8, "torchvision", 65, (17, 9, 9, 9)),
    (16, "v1c", 64, (16, 8, 4, 4)),            # floor-mode max-pool: 32 -> 16
])
def test_resnet_output_sizes(output_stride, stem, size, expected):
    m = resnet50(stem=stem, output_stride=output_stride)
    m.eval()
    with jt.no_grad():
        outs = m(jt.randn(1, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(1, c, s, s) for c, s in zip(m.out_channels, expected)]
    assert all(np.isfinite(o.numpy()).all() for o in outs)


def test_van_output_sizes_and_attributes():
    m = van_b0()
    assert m.out_channels == (32, 64, 160, 256) and m.strides == (4, 8, 16, 32)
    assert m.input_norm == IMAGENET_RGB
    m.eval()
    with jt.no_grad():
        outs = m(jt.randn(2, 3, 65, 65))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 17, 17), (2, 64, 9, 9), (2, 160, 5, 5), (2, 256, 3, 3)]


def test_van_names_and_options():
    assert build_van("van_tiny").arch == "van_b0"
    assert build_van("van_large", drop_path_rate=0.0).depths == (3, 5, 27, 3)
    with pytest.raises(ValueError, match="van_b0"):
        build_van("van_huge")
    assert VAN(norm_eps=1e-5).norm1.eps == 1e-5
    assert van_b0().norm2.eps == 1e-6


# ----------------------------------------------------------------------------- drop path


def test_drop_path_rates_rise_linearly():
    m = van_b1(drop_path_rate=0.3)  # 10 blocks
    rates = [blk.drop_path.drop_prob if isinstance(blk.drop_path, DropPath) else 0.0
             for i in range(1, 5) for blk in getattr(m, f"block{i}")]
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 10), atol=1e-7)


def test_drop_path_only_in_training():
    dp = DropPath(0.5)
    x = jt.ones((64, 3, 2, 2))
    dp.train()
    y = dp(x).numpy()
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # whole samples dropped
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    dp.eval()
    assert np.array_equal(dp(x).numpy(), x.numpy())


def test_van_backward_reaches_every_parameter():
    m = van_b0(drop_path_rate=0.1)
    m.train()
    outs = m(jt.randn(2, 3, 33, 33))
    loss = sum((o * o).mean() for o in outs)
    params = [p for p in m.parameters() if not p.is_stop_grad()]
    grads = jt.grad(loss, params)
    assert len(grads) == len(params)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    assert all(np.abs(g.numpy()).sum() > 0 for g in grads)


# ----------------------------------------------------------------------------- strict loading


def _van_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_strict_load_reports_missing_and_changes_nothing():
    model = van_b0()
    before = _van_state(model)
    sd = {k: v + 1 for k, v in before.items()}
    del sd["norm4.bias"]
    with pytest.raises(WeightLoadError, match="norm4.bias"):
        load_state_dict_strict(model, sd)
    after = _van_state(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_strict_load_reports_unexpected_and_shape_mismatch():
    model = van_b0()
    sd = _van_state(model)
    sd["head.weight"] = np.zeros((1000, 256), np.float32)
    with pytest.raises(WeightLoadError, match="head.weight"):
        load_state_dict_strict(model, sd)
    sd = _van_state(model)
    sd["norm1.weight"] = np.zeros((33,), np.float32)
    with pytest.raises(WeightLoadError, match=r"norm1.weight: model \[32\], file \[33\]"):
        load_state_dict_strict(model, sd)


def test_load_casts_dtype_ignores_bn_counter_and_non_strict():
    model = van_b0()
    sd = {k: (v + 1).astype(np.float16) for k, v in _van_state(model).items()}
    sd["patch_embed1.norm.num_batches_tracked"] = np.array(5)
    report = load_state_dict_strict(model, sd)
    assert report.ok and report.ignored == ["patch_embed1.norm.num_batches_tracked"]
    assert str(model.norm1.weight.dtype) == "float32"
    np.testing.assert_allclose(model.norm1.weight.numpy(), sd["norm1.weight"].astype(np.float32))
    del sd["norm1.weight"]
    report = load_state_dict_strict(model, sd, strict=False, verbose=False)
    assert report.missing == ["norm1.weight"] and len(report.loaded) == len(sd) - 1


def test_pretrained_file_roundtrip_and_arch_check(tmp_path):
    src = van_b0()
    path = str(tmp_path / "van_b0.pkl")
    save_weights(path, _van_state(src), {"arch": "van_b0"})
    model = van_b0(pretrained=path)
    np.testing.assert_array_equal(model.block2[1].layer_scale_1.numpy(), src.block2[1].layer_scale_1.numpy())
    other = str(tmp_path / "r50.pkl")
    save_weights(other, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)},
                 {"arch": "resnet50", "stem": "torchvision"})
    with pytest.raises(WeightLoadError, match="stem='torchvision'"):
        resnet50(stem="deep", pretrained=other)
    with pytest.raises(WeightLoadError, match="resnet50 weights but the model is van_b0"):
        van_b0(pretrained=other)
