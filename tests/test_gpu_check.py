"""benchmarks/gpu_check.py on a machine without a GPU: its float64 PyTorch
reference of the official layout is checked here against the numpy oracle
(the GPU half runs only where CUDA and CuPy exist)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from cca_oracle import np_ca_map, np_ca_weight

torch = pytest.importorskip("torch", reason="the GPU check's reference is written in PyTorch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import gpu_check  # noqa: E402  (benchmarks/ is on the path: conftest.py)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 6), (1, 2, 5, 1), (2, 3, 6, 11)])
def test_reference_matches_numpy_oracle(shape):
    rng = np.random.default_rng(0)
    B, C, H, W = shape
    q, k, v = (rng.standard_normal(shape) for _ in range(3))
    a = rng.standard_normal((B, H + W - 1, H, W))
    np.testing.assert_allclose(gpu_check.ref_ca_weight(torch.from_numpy(q), torch.from_numpy(k)).numpy(),
                               np_ca_weight(q, k), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpu_check.ref_ca_map(torch.from_numpy(a), torch.from_numpy(v)).numpy(),
                               np_ca_map(a, v), rtol=1e-12, atol=1e-12)


def test_torch_formulations_match_reference():
    from bench_cca import torch_bmm, torch_einsum
    rng = np.random.default_rng(1)
    q, k, v = (torch.from_numpy(rng.standard_normal((2, 4, 6, 9))) for _ in range(3))
    want = gpu_check.ref_ca_map(torch.softmax(gpu_check.ref_ca_weight(q, k), 1), v)
    for fn in (torch_bmm, torch_einsum):
        np.testing.assert_allclose(fn(q, k, v).numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


def test_without_gpu_exits_with_a_clear_message():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "needs" in proc.stderr and ("cupy" in proc.stderr or "GPU" in proc.stderr)


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory):
    """gpu_check.Kernels over the CPU emulation's build of cca_cuda_abi.cu (CPU tensors)."""
    from test_cca_cuda_emu import build
    return gpu_check.Kernels(build(str(tmp_path_factory.mktemp("gpu_check") / "cca_emu.so")))


def test_correctness_check_passes_on_the_emulated_kernels(emulated_kernels, monkeypatch):
    """gpu_check's whole check (NaN-poisoned outputs, the six products, float32 and float16) on the CPU."""
    monkeypatch.setattr(gpu_check, "CHECK_SHAPES", [(2, 24, 13, 29), (1, 16, 1, 33), (1, 16, 31, 1)])
    rows = gpu_check.check_correctness({"kernel": emulated_kernels}, "cpu")
    assert len(rows) == 6 and all(r["ok"] for r in rows), [(r["shape"], r["dtype"], r["errors"]) for r in rows]
    assert max(r["max_rel_error"] for r in rows if r["dtype"] == "float32") < 1e-6


def test_autograd_over_the_emulated_kernels_matches_torch(emulated_kernels):
    from bench_common import torch_einsum
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randn((2, 3, 6, 9), generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn((2, 5, 6, 9), generator=gen, dtype=torch.float64, requires_grad=True)
    ours = gpu_check.make_autograd(emulated_kernels)(q, k, v)
    want = torch_einsum(q, k, v)
    np.testing.assert_allclose(ours.detach().numpy(), want.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = torch.randn(ours.shape, generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_product_counts_and_peaks():
    from bench_common import cca_products, gpu_peaks
    from models.complexity import cca_flops
    products = cca_products(2, 64, 512, 97, 97)
    flops = cca_flops(2, 64, 512, 97, 97)
    assert products["weight"]["flops"] == products["weight dq"]["flops"] == flops["cca_weight"]
    assert products["map"]["flops"] == products["map dv"]["flops"] == flops["cca_map"]
    # [2, 512, 97, 97]: 2*193*9409 energies, 2*512*9409 values
    assert products["map"]["elements"] == 2 * 193 * 9409 + 2 * 2 * 512 * 9409
    assert gpu_peaks("NVIDIA H100 80GB HBM3")["gb_s"] == 3350
    assert gpu_peaks("NVIDIA H100 PCIe")["gb_s"] == 2000
    assert gpu_peaks("Tesla V100-SXM2-32GB")["fp32_tflop_s"] == 15.7
    assert gpu_peaks("NVIDIA H200")["gb_s"] == 4800
    assert gpu_peaks("NVIDIA GeForce GTX 1080") is None


def test_product_timing_table_on_the_emulated_kernels(emulated_kernels, monkeypatch):
    """time_products' rows (CUDA events replaced by a 2 ms stub): every product, both dtypes, the % of peaks."""
    monkeypatch.setattr(gpu_check, "TIME_SHAPES", [(1, 16, 5, 7)])
    monkeypatch.setattr(gpu_check, "time_cuda", lambda fn, warmup, repeat: (fn(), 2.0)[1])
    peaks = {"gb_s": 1000, "fp32_tflop_s": 10}
    rows = gpu_check.time_products({"kernel": emulated_kernels}, "cpu", peaks, 0, 1)
    assert [(r["dtype"], r["product"]) for r in rows][:6] == [("float32", p) for p in
                                                                ("weight", "map", "weight dq", "weight dk", "map da",
                                                                 "map dv")]
    assert len(rows) == 12
    weight = rows[0]  # [1, 2, 5, 7] query: 2*2*35 + 11*35 elements of 4 bytes in 2 ms
    assert weight["gb_s"] == pytest.approx((2 * 2 * 35 + 11 * 35) * 4 / 2e-3 / 1e9)
    assert weight["pct_bandwidth"] == pytest.approx(100 * weight["gb_s"] / 1000)
    assert weight["tflop_s"] == pytest.approx(2 * 35 * 11 * 2 / 2e-3 / 1e12)


def test_nvcc_builds_the_library_gpu_check_loads(tmp_path):
    """The GPU benchmark's build of cca_cuda_abi.cu links and loads here; without a GPU its first launch
    returns a CUDA error code (which gpu_check turns into an exception), an empty one returns 0."""
    if gpu_check.find_nvcc() is None:
        pytest.skip("nvcc not found")
    library = gpu_check.build_kernels(str(tmp_path), arch="sm_80")
    kernels = gpu_check.Kernels(library)
    assert kernels.lib.cca_cuda_weight(0, None, None, None, 0, 8, 5, 5, None) == 0  # nothing to launch
    if torch.cuda.is_available():
        return
    assert kernels.lib.cca_cuda_weight(0, None, None, None, 1, 8, 5, 5, None) != 0
    with pytest.raises(RuntimeError, match="weight: CUDA error"):
        kernels._check(kernels.lib.cca_cuda_weight(0, None, None, None, 1, 8, 5, 5, None), "weight")
