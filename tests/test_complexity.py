"""models/complexity.py: FLOPs against hand counts (convs, linear, criss-cross, non-local, a tiny CCNet),
agreement with bench_context.py's analytic count, and the parameter split of the official preset."""
import importlib.util
import os

import pytest

import jittor as jt
from jittor import nn

from models.complexity import count_flops, count_parameters
from models import build_model
from models.ccnet import CrissCrossAttention
from models.nonlocal_block import NonLocalBlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_bench_context():
    path = os.path.join(ROOT, "benchmarks", "bench_context.py")
    spec = importlib.util.spec_from_file_location("bench_context", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Repeat(nn.Module):
    """``block`` applied ``times`` times with shared weights (the RCCA recurrence)."""

    def __init__(self, block, times):
        super().__init__()
        self.block, self.times = block, times

    def execute(self, x):
        for _ in range(self.times):
            x = self.block(x)
        return x


def conv_flops(c_out, h, w, c_in_per_group, k, batch=1):
    """2 x multiply-adds of a convolution, by hand: one per weight of a group per output element."""
    return 2 * batch * c_out * h * w * c_in_per_group * k * k


def test_grouped_dilated_strided_conv_by_hand():
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4)
    count = count_flops(conv, (2, 8, 9, 11))
    # out: H = (9 + 4 - 4 - 1) // 2 + 1 = 5, W = (11 + 4 - 4 - 1) // 2 + 1 = 6; 8 / 4 = 2 inputs per group
    assert count["flops"] == 2 * (2 * 12 * 5 * 6) * (2 * 3 * 3) == 25920
    assert count["by_kind"]["conv"] == 25920 and count["layers"][0]["output_shape"] == [2, 12, 5, 6]
    dense = count_flops(nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2), (2, 8, 9, 11))
    assert dense["flops"] == 4 * 25920  # groups divide the work
    depthwise = count_flops(nn.Conv2d(6, 6, 7, padding=9, dilation=3, groups=6), (1, 6, 10, 10))
    assert depthwise["flops"] == 2 * 6 * 10 * 10 * 1 * 49


def test_linear_by_hand():
    assert count_flops(nn.Linear(10, 7), (1, 1, 3, 10))["by_kind"]["linear"] == 2 * 3 * 10 * 7
    assert count_flops(nn.Linear(10, 7), (2, 4, 3, 10))["flops"] == 2 * (2 * 4 * 3) * 10 * 7


def test_criss_cross_attention_by_hand_and_as_bench_context_counts():
    bench = _load_bench_context()
    # [1, 16, 3, 5] with R = 2: bench_context's hand count (tests/test_bench_context.py) is 26760
    count = count_flops(Repeat(CrissCrossAttention(16), 2), (1, 16, 3, 5))
    assert count["flops"] == 26760 == bench.count_flops("rcca", (1, 16, 3, 5), recurrence=2)["flops"]
    # per pass: q, k 16 -> 2 and v 16 -> 16 on 15 pixels; 7 positions: energies 2 channels, aggregation 16
    assert count["by_kind"]["conv"] == 2 * 2 * 15 * 16 * (2 + 2 + 16)
    assert count["by_kind"]["cca_weight"] == 2 * 2 * 15 * 7 * 2
    assert count["by_kind"]["cca_map"] == 2 * 2 * 15 * 7 * 16
    for shape, recurrence in (((2, 32, 7, 9), 1), ((1, 64, 13, 6), 3)):
        ours = count_flops(Repeat(CrissCrossAttention(shape[1]), recurrence), shape)["flops"]
        assert ours == bench.count_flops("rcca", shape, recurrence=recurrence)["flops"]


def test_nonlocal_block_by_hand_and_as_bench_context_counts():
    bench = _load_bench_context()
    count = count_flops(NonLocalBlock(16), (1, 16, 3, 5))
    assert count["by_kind"]["nonlocal_energy"] == 2 * 15 * 15 * 2
    assert count["by_kind"]["nonlocal_aggregation"] == 2 * 15 * 15 * 16
    assert count["flops"] == 2 * 8850 == bench.count_flops("nonlocal", (1, 16, 3, 5))["flops"]
    wang = count_flops(NonLocalBlock(16, 8, 8), (2, 16, 4, 6))["flops"]
    assert wang == bench.count_flops("nonlocal-wang", (2, 16, 4, 6))["flops"]


def tiny_ccnet():
    """tests/seg_fixtures.py's tiny model: ccnet_demo with VAN widths 8-16-24-32, one block per stage."""
    return build_model("ccnet_demo", 5, backbone_kwargs={"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
                                                         "mlp_ratios": [2, 2, 2, 2]},
                       channels=16, aux_channels=8, neck_channels=16)


def tiny_ccnet_by_hand():
    """Its layers at a 64x64 input: stages at 16, 8, 4, 2 pixels, neck and head at 8x8."""
    total, prev = 0, 3
    for d, s, k in ((8, 16, 7), (16, 8, 3), (24, 4, 3), (32, 2, 3)):
        total += conv_flops(d, s, s, prev, k)                     # patch embedding
        total += 3 * conv_flops(d, s, s, d, 1)                    # proj_1, LKA conv1, proj_2
        total += conv_flops(d, s, s, 1, 5) + conv_flops(d, s, s, 1, 7)  # LKA depthwise 5x5, 7x7 dilation 3
        total += conv_flops(2 * d, s, s, d, 1) + conv_flops(2 * d, s, s, 1, 3) + conv_flops(d, s, s, 2 * d, 1)  # MLP
        prev = d
    total += conv_flops(16, 8, 8, 16 + 24 + 32, 1)                # neck
    total += conv_flops(16, 8, 8, 16, 3)                          # conva
    per_pass = 2 * conv_flops(2, 8, 8, 16, 1) + conv_flops(16, 8, 8, 16, 1) + 2 * 64 * 15 * (2 + 16)
    total += 2 * per_pass                                         # criss-cross attention, R = 2
    total += conv_flops(16, 8, 8, 16, 3)                          # convb
    total += conv_flops(16, 8, 8, 32, 3) + conv_flops(5, 8, 8, 16, 1)  # bottleneck 3x3 and classifier
    return total                                                  # (the auxiliary head does not run in eval)


def test_tiny_ccnet_total_is_the_sum_of_its_layers_by_hand():
    model = tiny_ccnet()
    model.train()
    count = count_flops(model, (64, 64))
    assert count["flops"] == tiny_ccnet_by_hand()
    assert count["input_shape"] == [1, 3, 64, 64] and count["gflops"] == count["flops"] / 1e9
    assert sum(count["by_part"].values()) == count["flops"] and "dsn" not in count["by_part"]
    assert sum(layer["flops"] for layer in count["layers"]) == count["flops"]
    assert {"BatchNorm", "gelu"} <= set(count["not_counted"])
    assert model.is_training()  # the mode is restored
    # the hooks are gone afterwards; a hook of the user's runs during the count and stays
    seen = []
    conva = model.head.conva[0]
    conva.register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape)))
    assert count_flops(model, (2, 3, 64, 64))["flops"] == 2 * count["flops"]
    assert seen == [(2, 16, 8, 8)]
    assert all("__fhook__" not in m.__dict__ for m in model.modules() if m is not conva)
    model.eval()
    model(jt.zeros((1, 3, 32, 32)))
    assert seen == [(2, 16, 8, 8), (1, 16, 4, 4)]


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, C, H, W\)"):
        count_flops(nn.Conv2d(3, 4, 1), (3, 4, 5))


def test_parameter_split_of_the_official_preset():
    params = count_parameters(build_model("ccnet_resnet101", 19))
    assert params["total"] == 71_287_911  # tests/test_ccnet.py, the README's 71.29M
    assert round(params["backbone"] / 1e6, 2) == 42.62 and round(params["head"] / 1e6, 2) == 28.66
    assert params["backbone"] + params["head"] == params["total"] == sum(params["by_part"].values())
    assert set(params["by_part"]) == {"backbone", "head", "dsn"}


def test_parameters_by_hand_and_buffers_left_out():
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm(4))
            self.head = nn.Conv2d(4, 2, 1, bias=False)
    params = count_parameters(Small())
    # conv 3*4*9 + 4 bias, BN weight + bias (running mean / var are buffers); head 4*2
    assert params == {"total": 112 + 8 + 8, "backbone": 120, "head": 8, "by_part": {"backbone": 120, "head": 8}}
    model = Small()
    model.head.weight.stop_grad()
    assert count_parameters(model)["head"] == 0
