"""benchmarks/bench_context.py: analytic FLOPs against hand counts, the
non-local block against a numpy formula, and one tiny end-to-end run."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jittor as jt
from models.nonlocal_block import NonLocalBlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_context.py")


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_context", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_rcca_flops_by_hand():
    # [1, 16, 3, 5]: N = 15 pixels, H+W-1 = 7 criss-cross positions, query/key 2 channels.
    # per pass: convs 15*16*(2+2+16) = 4800, energies 15*7*2 = 210, aggregation 15*7*16 = 1680
    count = bench.count_flops("rcca", (1, 16, 3, 5), recurrence=2)
    assert count["breakdown"] == {"convs": 9600, "energy": 420, "aggregation": 3360}
    assert count["macs"] == 13380
    assert count["flops"] == 26760
    # other ops per pass: biases 15*20 + softmax 3*15*7 + scale and residual 2*15*16 = 300 + 315 + 480
    assert count["other_ops"] == 2 * 1095
    assert bench.count_flops("rcca", (1, 16, 3, 5), recurrence=1)["macs"] == 6690
    assert bench.count_flops("rcca", (3, 16, 3, 5), recurrence=2)["macs"] == 3 * 13380


def test_nonlocal_flops_by_hand():
    # same width: convs 4800, energies 15*15*2 = 450, aggregation 15*15*16 = 3600
    count = bench.count_flops("nonlocal", (1, 16, 3, 5))
    assert count["breakdown"] == {"convs": 4800, "energy": 450, "aggregation": 3600}
    assert count["flops"] == 2 * 8850
    # Wang et al.'s width (8, 8): convs 15*16*24 + output conv 15*8*16, energies and aggregation 225*8 each
    wang = bench.count_flops("nonlocal-wang", (1, 16, 3, 5))
    assert wang["breakdown"] == {"convs": 5760 + 1920, "energy": 1800, "aggregation": 1800}
    with pytest.raises(ValueError, match="block must be one of"):
        bench.count_flops("psp", (1, 16, 3, 5))


def test_flops_at_the_papers_shape():
    rcca = bench.count_flops("rcca", (1, 512, 97, 97))
    nonlocal_ = bench.count_flops("nonlocal", (1, 512, 97, 97))
    assert rcca["macs"] == pytest.approx(8.26e9, rel=1e-3)  # the author's "about 8 GFLOPs"
    assert 1 - rcca["flops"] / nonlocal_["flops"] == pytest.approx(0.847, abs=1e-3)  # paper: about 85%
    assert rcca["other_ops"] < 0.01 * rcca["flops"] and nonlocal_["other_ops"] < 0.01 * nonlocal_["flops"]


@pytest.mark.parametrize("key_channels,value_channels", [(None, None), (4, 4)])
def test_nonlocal_block_matches_numpy(key_channels, value_channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 3, 4)).astype(np.float32)
    block = NonLocalBlock(16, key_channels, value_channels)
    block.gamma.assign(jt.array([0.7], dtype="float32"))
    out = block(jt.array(x)).numpy()

    def conv(layer, a):
        w, b = layer.weight.numpy()[:, :, 0, 0], layer.bias.numpy()
        return np.einsum("oc,bchw->bohw", w, a) + b[None, :, None, None]

    B, C, H, W = x.shape
    theta = conv(block.theta, x).reshape(B, -1, H * W)
    phi = conv(block.phi, x).reshape(B, -1, H * W)
    g = conv(block.g, x).reshape(B, -1, H * W)
    logits = np.einsum("bci,bcj->bij", theta, phi)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    y = np.einsum("bcj,bij->bci", g, att).reshape(B, -1, H, W)
    if value_channels is not None:
        y = conv(block.out_conv, y)
    np.testing.assert_allclose(out, 0.7 * y + x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(block.attention(jt.array(x)).numpy(), att, rtol=1e-4, atol=1e-6)
    assert block(jt.array(x)).shape == [2, 16, 3, 4]


def test_end_to_end_tiny(tmp_path):
    out = tmp_path / "context.json"
    result = subprocess.run([sys.executable, SCRIPT, "--shapes", "1", "16", "5", "7", "--modes", "fwd+bwd",
                             "--warmup", "0", "--repeat", "1", "--json", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "paper: about 85%" in result.stdout and "paper: 11x" in result.stdout
    info = json.loads(out.read_text())
    (record,) = info["shapes"]
    assert record["shape"] == [1, 16, 5, 7]
    assert {(r["block"], r["mode"]) for r in record["results"]} == {("rcca", "fwd+bwd"), ("nonlocal", "fwd+bwd")}
    for r in record["results"]:
        assert r["ms"] > 0 and r["peak_mb"] > 0 and r["device"] == "cpu"
        assert r["params"] == 16 * 2 * 2 + 2 * 2 + 16 * 16 + 16 + 1  # q, k: 16 -> 2, v: 16 -> 16, gamma
    assert record["summary"]["memory_ratio_fwd+bwd"] > 0
    assert record["flops"]["rcca"]["macs"] == bench.count_flops("rcca", (1, 16, 5, 7))["macs"]


def test_bad_shapes_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "1", "16", "5", "--flops-only"])
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "1", "4", "5", "5", "--flops-only"])
