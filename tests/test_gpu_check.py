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
