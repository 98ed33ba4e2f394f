"""The small helpers each written once in the layered library: sizes, percentages, recorded numbers, progress
bars, bilinear resizing, the kernel loader, the inference settings, key maps, label files, benchmark timing."""
from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
from PIL import Image

import jittor as jt
from bench_common import time_runs
from cli.config import inference_settings
from datasets import DatasetError, get_preset
from datasets.base import open_label
from models.layers import resize
from models.ops.loader import header, kernel
from pretrained.backbone_keys import map_names
from utils.formatting import as_number, percent
from utils.progress import progress_bar
from utils.sizes import pair


def test_pair():
    assert pair(5) == (5, 5) and pair([7]) == (7, 7) and pair((3, 4)) == (3, 4) and pair(np.int64(2)) == (2, 2)
    assert pair([6.0, 8.0]) == (6, 8)
    assert pair(0, "padding", minimum=0) == (0, 0)
    for bad in (0, (1, 2, 3), (2.5, 2), -1):
        with pytest.raises(ValueError, match="--crop-size takes one or two positive integers"):
            pair(bad, "--crop-size")
    with pytest.raises(ValueError, match=r"padding takes one or two integers >= 0 \(H \[W\]\), got -1"):
        pair(-1, "padding", minimum=0)


def test_percent_and_as_number():
    assert percent(0.71289) == "71.29" and percent(1.0) == "100.00" and percent(0.0) == "0.00"
    assert percent(0.05, signed=True) == "+5.00" and percent(-0.0123, signed=True) == "-1.23"
    assert percent(0.5, width=6) == " 50.00" and percent(float("nan"), width=6, missing="nan") == "   nan"
    assert percent(None) == "-"
    assert as_number("0.25") == 0.25 and as_number(3) == 3.0 and as_number(None) is None
    assert as_number("x") is None and as_number([1]) is None
    assert math.isnan(as_number("nan")) and as_number("inf") == math.inf and as_number("-inf") == -math.inf


def test_progress_bar_counts_on_stdout(capsys):
    bar = progress_bar(3, "eval", "batch", initial=1)
    bar.update(2)
    bar.close()
    out, err = capsys.readouterr()
    assert "eval" in out and "3/3" in out and "batch" in out and err == ""


def test_resize_keeps_a_fitting_tensor_and_matches_interpolate():
    x = jt.array(np.random.default_rng(0).normal(size=(1, 2, 5, 7)).astype(np.float32))
    assert resize(x, (5, 7), True) is x
    for align in (True, False):
        got = resize(x, [9, 13], align).numpy()
        want = jt.nn.interpolate(x, size=(9, 13), mode="bilinear", align_corners=align).numpy()
        np.testing.assert_array_equal(got, want)
    # align_corners=True keeps the corners
    np.testing.assert_allclose(resize(x, (9, 13), True).numpy()[..., [0, -1]][..., [0, -1], :],
                               x.numpy()[..., [0, -1]][..., [0, -1], :], rtol=1e-6)


def test_kernel_loader_reads_each_header_and_runs_a_call():
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "ops")
    for name in ("cca_cpu.h", "cca_cuda.cuh", "batchnorm_cpu.h", "conv_cpu.h", "upsample_nll_cpu.h"):
        with open(os.path.join(here, name)) as f:
            assert header(name) == f.read()
    with pytest.raises(FileNotFoundError):
        header("no_such_kernel.h")
    # a CPU call: the conv header's bias gradient sums over images and positions
    g = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    out = kernel((3,), "float32", [jt.array(g)],
                 cpu=("conv_cpu.h", "conv_cpu::bias_grad<in0_type>(in0_p, out0_p, in0_shape0, in0_shape1, "
                                    "in0_shape2)")).numpy()
    np.testing.assert_allclose(out, g.astype(np.float64).sum((0, 2)), rtol=1e-5)


def test_inference_settings():
    cs = get_preset("cityscapes")
    assert inference_settings({}, cs) == (cs.test_mode, cs.test_crop, cs.test_stride)
    assert inference_settings({"mode": "whole"}, cs)[0] == "whole"
    assert inference_settings({"crop_size": [65], "stride": [33, 40]}, cs)[1:] == ((65, 65), (33, 40))
    assert inference_settings({}, None) == ("whole", None, None)
    with pytest.raises(ValueError, match="--mode slide needs --crop-size and --stride"):
        inference_settings({"mode": "slide"}, None)
    with pytest.raises(ValueError, match="--stride takes one or two positive integers"):
        inference_settings({"stride": [0]}, cs)


def test_map_names():
    sd = {"conv1.weight": 1, "bn1.num_batches_tracked": 2, "fc.weight": 3, "layer1.0.conv1.weight": 4}
    res = map_names(sd, ("fc.",), "classifier")
    assert dict(res.state_dict) == {"conv1.weight": 1, "layer1.0.conv1.weight": 4} and res.renamed == {}
    assert res.skipped == {"bn1.num_batches_tracked": "BatchNorm batch counter (Jittor BatchNorm has none)",
                           "fc.weight": "classifier"}
    res = map_names(sd, ("fc.",), "classifier", rename=lambda k: "backbone." + k if k.startswith("layer") else k)
    assert list(res.state_dict) == ["conv1.weight", "backbone.layer1.0.conv1.weight"]
    assert res.renamed == {"backbone.layer1.0.conv1.weight": "layer1.0.conv1.weight"}


def test_open_label(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 7], [255, 3]], np.uint8), mode="L").save(grey)
    mode, pixels = open_label(str(grey))
    assert mode == "L" and pixels.tolist() == [[0, 7], [255, 3]]
    pal = tmp_path / "pal.png"
    im = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    im.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    im.save(pal)
    assert open_label(str(pal))[1].tolist() == [[0, 1]]
    assert open_label(str(pal), palette_as_rgb=True)[1].tolist() == [[[10, 20, 30], [40, 50, 60]]]
    with pytest.raises(FileNotFoundError, match="label file not found"):
        open_label(str(tmp_path / "missing.png"))
    broken = tmp_path / "broken.png"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    broken.write_bytes(buf.getvalue()[:20])
    with pytest.raises(DatasetError, match="cannot read label .*broken.png"):
        open_label(str(broken))


def test_time_runs_times_each_run_between_syncs():
    events = []
    times = time_runs(lambda: events.append("run"), 2, 3, sync=lambda: events.append("sync"))
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert events == ["run", "run"] + ["sync", "run", "sync"] * 3
