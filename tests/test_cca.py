"""Criss-cross attention op: kernels against a float64 numpy oracle of the
official index formulas, the plain-Jittor reference, finite differences."""
import os
import re
import subprocess

import numpy as np
import pytest

import jittor as jt

from bench_common import find_nvcc
from cca_oracle import np_ca_map, np_ca_weight, np_softmax
from models.ccnet import CrissCrossAttention
from models.ops.cca import ca_map, ca_weight, criss_cross_attention, position_softmax
from models.ops.cca3d import criss_cross_attention_3d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# [B, C, H, W]: H != W, H = 1, W = 1, B > 1, odd channel counts, and W above
# one SIMD vector (16 floats / 8 doubles) with a ragged end.
SHAPES = [(2, 3, 4, 5), (1, 5, 1, 6), (1, 3, 7, 1), (1, 2, 1, 1), (2, 9, 13, 20), (1, 3, 5, 37)]


@pytest.fixture(autouse=True)
def keep_float64(float64):
    """Every test here may use float64 inputs (conftest's float64 fixture)."""


def inputs(shape, seed=0, dtype=np.float64, value_channels=None):
    B, C, H, W = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, C, H, W)).astype(dtype)
    k = rng.standard_normal((B, C, H, W)).astype(dtype)
    v = rng.standard_normal((B, value_channels or 2 * C + 1, H, W)).astype(dtype)
    return q, k, v


# -- forward ------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_numpy_and_reference(shape):
    q, k, v = inputs(shape)
    e_np = np_ca_weight(q, k)
    a_np = np_softmax(e_np, axis=1)
    out_np = np_ca_map(a_np, v)
    jq, jk, jv, ja = jt.array(q), jt.array(k), jt.array(v), jt.array(a_np)
    for impl in ("kernel", "reference"):
        np.testing.assert_allclose(ca_weight(jq, jk, impl=impl).numpy(), e_np, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ca_map(ja, jv, impl=impl).numpy(), out_np, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(criss_cross_attention(jq, jk, jv, impl=impl).numpy(), out_np,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 135, 13, 20), (2, 130, 7, 5)])
def test_weight_over_several_channel_blocks_matches_numpy(shape, dtype):
    """The CPU kernel sums the column part of weight in blocks of 64 channels (the last one shorter)."""
    q, k, _ = inputs(shape, seed=9, dtype=dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    got = ca_weight(jt.array(q), jt.array(k)).numpy()
    np.testing.assert_allclose(got, np_ca_weight(q.astype(np.float64), k.astype(np.float64)), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(2, 9, 13, 20), (1, 3, 5, 37), (1, 4, 17, 3)])
def test_forward_float32_kernel_matches_reference(shape):
    q, k, v = inputs(shape, seed=1, dtype=np.float32)
    jq, jk, jv = jt.array(q), jt.array(k), jt.array(v)
    e_kernel = ca_weight(jq, jk)
    assert e_kernel.dtype == "float32"
    np.testing.assert_allclose(e_kernel.numpy(), ca_weight(jq, jk, impl="reference").numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(criss_cross_attention(jq, jk, jv).numpy(),
                               criss_cross_attention(jq, jk, jv, impl="reference").numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e_kernel.numpy(), np_ca_weight(q.astype(np.float64), k.astype(np.float64)),
                               rtol=1e-4, atol=1e-4)


def test_self_counted_once():
    """All keys equal: every pixel's H + W - 1 energies are equal, so each weight is 1/(H+W-1)."""
    B, C, H, W = 2, 4, 6, 9
    q, _, v = inputs((B, C, H, W), seed=2)
    k = np.broadcast_to(np.arange(1.0, C + 1)[None, :, None, None], (B, C, H, W)).copy()
    attention = jt.nn.softmax(ca_weight(jt.array(q), jt.array(k)), dim=1).numpy()
    np.testing.assert_allclose(attention, 1.0 / (H + W - 1), rtol=1e-12)
    # The output is then the plain mean over row + column, the pixel itself once.
    expected = (v.sum(3, keepdims=True) + v.sum(2, keepdims=True) - v) / (H + W - 1)
    for impl in ("kernel", "reference"):
        out = criss_cross_attention(jt.array(q), jt.array(k), jt.array(v), impl=impl).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 9, 4, 5), (1, 3, 1, 1), (2, 40, 23, 17)])  # H*W above one block of 256
def test_position_softmax_kernel_matches_numpy_forward_and_backward(shape):
    rng = np.random.default_rng(7)
    energy = rng.standard_normal(shape) * 30
    weight = rng.standard_normal(shape)
    want = np.exp(energy - energy.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    want_grad = want * (weight - (weight * want).sum(1, keepdims=True))  # d(sum(weight * softmax)) / d energy
    je = jt.array(energy)
    got = position_softmax(je)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jt.grad((got * jt.array(weight)).sum(), je).numpy(), want_grad, rtol=1e-10, atol=1e-14)
    got32 = position_softmax(jt.array(energy.astype(np.float32))).numpy()
    np.testing.assert_allclose(got32, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_are_finite(impl, dtype):
    q, k, v = inputs((1, 4, 5, 7), seed=3, dtype=dtype)
    jq, jk, jv = jt.array(q * 100), jt.array(k * 100), jt.array(v)  # energies ~1e4
    out = criss_cross_attention(jq, jk, jv, impl=impl)
    grads = jt.grad(out.sum(), [jq, jk, jv])
    assert np.abs(ca_weight(jq, jk).numpy()).max() > 1e3
    assert np.isfinite(out.numpy()).all()
    assert all(np.isfinite(g.numpy()).all() for g in grads)


# -- backward -----------------------------------------------------------------

def numeric_grad(f, arrays, index, eps=1e-6):
    """Central finite differences of the scalar f(*arrays) with respect to arrays[index]."""
    x = arrays[index]
    grad = np.zeros_like(x)
    for pos in np.ndindex(*x.shape):
        saved = x[pos]
        x[pos] = saved + eps
        plus = f(*arrays)
        x[pos] = saved - eps
        minus = f(*arrays)
        x[pos] = saved
        grad[pos] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 3, 1, 3), (1, 2, 4, 1)])
def test_gradients_match_finite_differences(shape):
    q, k, v = inputs(shape, seed=4, value_channels=3)
    B, C, H, W = shape
    rng = np.random.default_rng(5)
    w_e = rng.standard_normal((B, H + W - 1, H, W))
    w_o = rng.standard_normal(v.shape)
    a = np_softmax(rng.standard_normal((B, H + W - 1, H, W)), axis=1)

    def weight_loss(q_, k_):
        return float((ca_weight(jt.array(q_), jt.array(k_)) * jt.array(w_e)).sum().item())

    def map_loss(a_, v_):
        return float((ca_map(jt.array(a_), jt.array(v_)) * jt.array(w_o)).sum().item())

    def full_loss(q_, k_, v_):
        return float((criss_cross_attention(jt.array(q_), jt.array(k_), jt.array(v_)) * jt.array(w_o)).sum().item())

    jq, jk, jv, ja = jt.array(q), jt.array(k), jt.array(v), jt.array(a)
    dq, dk = jt.grad((ca_weight(jq, jk) * jt.array(w_e)).sum(), [jq, jk])
    da, dv = jt.grad((ca_map(ja, jv) * jt.array(w_o)).sum(), [ja, jv])
    fq, fk, fv = jt.grad((criss_cross_attention(jq, jk, jv) * jt.array(w_o)).sum(), [jq, jk, jv])
    tol = dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dq.numpy(), numeric_grad(weight_loss, [q, k], 0), **tol)
    np.testing.assert_allclose(dk.numpy(), numeric_grad(weight_loss, [q, k], 1), **tol)
    np.testing.assert_allclose(da.numpy(), numeric_grad(map_loss, [a, v], 0), **tol)
    np.testing.assert_allclose(dv.numpy(), numeric_grad(map_loss, [a, v], 1), **tol)
    for got, index in ((fq, 0), (fk, 1), (fv, 2)):
        np.testing.assert_allclose(got.numpy(), numeric_grad(full_loss, [q, k, v], index), **tol)


@pytest.mark.parametrize("shape", [(2, 5, 6, 9), (1, 3, 11, 19), (2, 4, 1, 17)])
def test_gradients_match_reference_autograd_float32(shape):
    q, k, v = inputs(shape, seed=6, dtype=np.float32)
    w = np.random.default_rng(7).standard_normal(v.shape).astype(np.float32)
    grads = {}
    for impl in ("kernel", "reference"):
        jq, jk, jv = jt.array(q), jt.array(k), jt.array(v)
        out = criss_cross_attention(jq, jk, jv, impl=impl)
        grads[impl] = [g.numpy() for g in jt.grad((out * jt.array(w)).sum(), [jq, jk, jv])]
    for got, want in zip(grads["kernel"], grads["reference"]):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 29, 18), (2, 2, 27, 6)])
def test_gradients_over_several_channel_and_row_groups_match_reference_float64(shape):
    """The CPU map splits its work into groups of 18 channels and 24 rows; 37 value channels, H above 24."""
    q, k, v = inputs(shape, seed=10, value_channels=37)
    w = np.random.default_rng(11).standard_normal(v.shape)
    results = {}
    for impl in ("kernel", "reference"):
        jq, jk, jv = jt.array(q), jt.array(k), jt.array(v)
        out = criss_cross_attention(jq, jk, jv, impl=impl)
        results[impl] = [out.numpy()] + [g.numpy() for g in jt.grad((out * jt.array(w)).sum(), [jq, jk, jv])]
    np.testing.assert_allclose(results["kernel"][0], np_ca_map(np_softmax(np_ca_weight(q, k), axis=1), v),
                               rtol=1e-12, atol=1e-12)
    for got, want in zip(results["kernel"], results["reference"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# -- module and errors ----------------------------------------------------------

def test_module_matches_reference_and_starts_as_identity():
    jt.set_global_seed(0)
    x = jt.array(np.random.default_rng(8).standard_normal((2, 16, 7, 10)).astype(np.float32))
    module = CrissCrossAttention(16)
    assert sorted(module.state_dict()) == sorted([
        "gamma", "query_conv.weight", "query_conv.bias", "key_conv.weight", "key_conv.bias",
        "value_conv.weight", "value_conv.bias"])
    assert list(module.query_conv.weight.shape) == [2, 16, 1, 1]
    np.testing.assert_array_equal(module(x).numpy(), x.numpy())  # gamma = 0
    module.gamma.assign(jt.array([0.7]))
    out = module(x).numpy()
    module.impl = "reference"
    np.testing.assert_allclose(out, module(x).numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(out - x.numpy()).max() > 1e-2


def test_clear_errors():
    q = jt.zeros((2, 4, 5, 6))
    with pytest.raises(ValueError, match="same shape"):
        ca_weight(q, jt.zeros((2, 4, 5, 7)))
    with pytest.raises(TypeError, match="same dtype"):
        ca_weight(q, jt.zeros((2, 4, 5, 6), dtype="float64"))
    with pytest.raises(ValueError, match="4-D"):
        ca_weight(jt.zeros((4, 5, 6)), jt.zeros((4, 5, 6)))
    with pytest.raises(ValueError, match="batch sizes"):
        ca_map(jt.zeros((2, 10, 5, 6)), jt.zeros((3, 8, 5, 6)))
    with pytest.raises(ValueError, match=r"H\+W-1"):
        ca_map(jt.zeros((2, 11, 5, 6)), jt.zeros((2, 8, 5, 6)))
    with pytest.raises(ValueError, match="spatial size"):
        criss_cross_attention(q, q, jt.zeros((2, 8, 5, 7)))
    with pytest.raises(ValueError, match="impl"):
        ca_weight(q, q, impl="cuda")
    with pytest.raises(TypeError, match="float16"):
        ca_weight(jt.zeros((1, 2, 3, 4), dtype="int32"), jt.zeros((1, 2, 3, 4), dtype="int32"))
    with pytest.raises(TypeError, match="CPU kernel"):
        ca_weight(q.float16(), q.float16())
    with pytest.raises(ValueError, match="at least 8"):
        CrissCrossAttention(4)


# -- CUDA source ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["sm_70", "sm_80", "sm_90"])
def test_cuda_source_compiles_with_nvcc(arch, tmp_path):
    """Every kernel instantiation (cca_cuda_abi.cu calls the launchers for float, half and double), as
    nvcc builds it for the GPU benchmark; ptxas lists each kernel with its registers and shared memory.

    nvcc 13 cannot target sm_70 (V100); that case runs only where an older nvcc is found.
    """
    nvcc = find_nvcc()  # the GPU benchmark's search (bench_common)
    if nvcc is None:
        pytest.skip("nvcc not found")
    listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    if "compute_" + arch[3:] not in listed:
        pytest.skip(f"this nvcc ({nvcc}) cannot target {arch}; it lists {' '.join(listed)}")
    obj = tmp_path / "abi.o"
    cmd = [nvcc, "-std=c++14", f"-arch={arch}", "-Xptxas", "-v", "-Werror", "all-warnings",
           "-c", os.path.join(ROOT, "models", "ops", "cca_cuda_abi.cu"), "-o", str(obj)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert obj.stat().st_size > 0
    kernels = set(re.findall(r"Compiling entry function '(_ZN8cca_cuda\w+)'", result.stderr))
    names = subprocess.run(["c++filt"], input="\n".join(sorted(kernels)), capture_output=True, text=True).stdout
    for dtype in ("float", "__half", "double"):
        assert f"row_kernel<{dtype}>" in names, names
        for mode in (0, 1, 2):  # weight, map, transposed map
            assert f"col_kernel<{dtype}, {mode}>" in names, names
    assert len(kernels) == 12  # 3 dtypes x (1 row + 3 column kernels)


JITTOR_CUDA_OP = r"""
#include "cca_cuda.cuh"
namespace jittor {  // what Jittor's code op gives a cuda_src: its names, and LOGf
typedef long long index_t;
struct FatalLog { template <typename X> FatalLog& operator<<(const X&) { return *this; } };
#define LOGf ::jittor::FatalLog()
%s
}
"""
JITTOR_CUDA_RUN = r"""
void run_%(name)s(%(type)s* __restrict__ in0_p, %(type)s* __restrict__ in1_p, %(type)s* __restrict__ out0_p,
                  index_t in0_shape0, index_t in0_shape1, index_t in0_shape2, index_t in0_shape3, index_t in0_shape4,
                  index_t in1_shape0, index_t in1_shape1, index_t in1_shape2, index_t in1_shape3, index_t in1_shape4) {
  typedef %(type)s in0_type;
  %(call)s;
}
"""


def test_jittor_cuda_statements_compile_with_nvcc(tmp_path, monkeypatch):
    """The cuda_src statements that cca.py hands to jt.code (recorded while the CPU kernels run the
    forward and backward, of images and of clips), compiled against cca_cuda.cuh in the names Jittor's
    code op defines."""
    nvcc = find_nvcc()  # the GPU benchmark's search (bench_common)
    if nvcc is None:
        pytest.skip("nvcc not found")
    import models.ops.cca as cca
    calls, real = set(), cca.kernel

    def recording(*args, **kwargs):
        if kwargs.get("cuda"):  # the CPU softmax has none: nn.softmax runs on CUDA
            calls.add(kwargs["cuda"][1])
        return real(*args, **kwargs)

    monkeypatch.setattr(cca, "kernel", recording)
    q, k, v = (jt.array(x) for x in inputs((1, 2, 3, 4), dtype=np.float32))
    jt.grad(criss_cross_attention(q, k, v, impl="kernel").sum(), [q, k, v])
    q, k, v = (jt.array(x[:, :, None].repeat(2, axis=2)) for x in inputs((1, 2, 3, 4), dtype=np.float32))
    jt.grad(criss_cross_attention_3d(q, k, v, impl="kernel").sum(), [q, k, v])
    # weight, map, map^T of images and of clips (weight3d, map3d)
    assert len(calls) == 6 and all("cca_cuda::" in c and "LOGf" in c for c in calls), calls
    assert sum("3d<" in c for c in calls) == 3, calls
    runs = [JITTOR_CUDA_RUN % {"name": f"{n}_{i}", "type": t, "call": c}
            for n, t in (("f", "float"), ("h", "__half"), ("d", "double")) for i, c in enumerate(sorted(calls))]
    src = tmp_path / "op.cu"
    src.write_text(JITTOR_CUDA_OP % "".join(runs))
    result = subprocess.run([nvcc, "-std=c++14", "-arch=sm_80", "-I", os.path.join(ROOT, "models", "ops"),
                             "-c", str(src), "-o", str(tmp_path / "op.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
