"""benchmarks/bench_model.py end to end on the small demo preset, and its refusals."""
import json
import os
import subprocess
import sys

import pytest

import jittor as jt
from engine.complexity import count_flops, count_parameters
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_model.py")


def bench(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_one_tiny_preset_end_to_end(tmp_path):
    out = tmp_path / "models.json"
    result = bench("--models", "ccnet_demo", "--size", 64, 96, "--train-size", 64, 64, "--warmup", 0, "--repeat", 1,
                   "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sizes reduced for the CPU" in result.stdout and "ccnet_demo" in result.stdout
    record = json.loads(out.read_text())
    assert {"date", "device", "cpu", "jittor", "sizes", "memory", "results"} <= set(record)
    assert record["device"] == "cpu" and record["jittor"] == jt.__version__ and record["cpu"]
    assert record["sizes"] == {"infer": [64, 96], "train": [64, 64], "batch": 1, "reduced": True}
    (row,) = record["results"]
    model = build_model("ccnet_demo", 19)
    params = count_parameters(model)
    assert row["parameters"] == {k: params[k] for k in ("total", "backbone", "head")}
    assert row["gflops"] == count_flops(model, (64, 96))["gflops"]
    infer, train = row["infer"], row["train"]
    assert infer["size"] == [64, 96] and train["size"] == [64, 64]
    for r in (infer, train):
        assert r["ms"] > 0 and len(r["ms_all"]) == 1 and r["peak_rss_mb"] > r["rss_at_start_mb"] > 0
    assert infer["images_per_s"] == pytest.approx(1000 / infer["ms"]) and infer["ms_per_image"] == infer["ms"]


def test_refusals(tmp_path):
    result = bench("--models", "ccnet_nope", "--warmup", 0)
    assert result.returncode == 2 and "unknown model preset(s) ccnet_nope" in result.stderr
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    if not jt.has_cuda:
        result = bench("--models", "ccnet_demo", "--device", "cuda")
        assert result.returncode == 2 and "error: --device cuda: Jittor found no CUDA GPU" in result.stderr
        assert result.stderr.count("\n") == 1
