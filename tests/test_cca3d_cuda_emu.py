"""The 3-D (video) CUDA kernels of models/ops/cca_cuda.cuh, run on the CPU by tests/cuda_emu.h.

weight3d and map3d (both orientations) run the 2-D op's row and column kernels over
clips [B, C, T, H, W], and the column kernel once more along the time line. The
harness and the checks are test_cca_cuda_emu's (the same g++ build of cca_cuda_abi.cu, NaN
guards, threads in order and in reverse; its Emulated and case take clips); the oracle is
the float64 numpy definition of tests/cca_oracle.py. At T = 1 the 3-D entry points must give
exactly the 2-D ones' results. Deliberately broken copies of the time line's launch must fail
the checks. (tests/test_cca.py compiles with nvcc the launches models/ops/cca3d.py hands to
jt.code.)
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from test_cca_cuda_emu import (PRODUCTS, Emulated, build, case, failures, mutated_source,  # noqa: E402
                               run_product)
from cca_oracle import (np_ca_map_3d, np_ca_map_3d_grad, np_ca_weight_3d, np_ca_weight_3d_grad,  # noqa: E402
                        np_softmax)

# [B, C, T, H, W] of query/key; value has 2C + 1 channels. They reach: T != H != W, T = 1, T = 2,
# H = 1, W = 1, H = W = 1 (the time line alone beside the self), two images, C = 17 (value 35: three
# column tiles of channels), W = 37 (two 32-lane bands), odd sizes, and T = 18: the time line over two
# 16-point tiles and K = T over several chunks.
SHAPES = [(1, 3, 3, 4, 5), (2, 5, 1, 6, 7), (1, 4, 2, 3, 5), (1, 3, 4, 1, 6), (1, 3, 5, 4, 1),
          (1, 2, 3, 1, 1), (2, 17, 3, 5, 37), (1, 3, 18, 2, 3)]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    return Emulated(build(str(tmp_path_factory.mktemp("cuda_emu_3d") / "cca_emu.so")))


# -- the oracle's backward ---------------------------------------------------------------

def test_oracle_3d_gradients_are_the_adjoints_of_the_oracle():
    """weight3d and map3d are linear in each input, so <g, f(x, y)> = <x, df/dx> = <y, df/dy>; plus one finite difference."""
    shape = (2, 3, 3, 4, 5)
    q, k, v = (np.random.default_rng(s).standard_normal(shape) for s in (1, 2, 3))
    g_e = np.random.default_rng(4).standard_normal((2, 10, 3, 4, 5))
    g_o = np.random.default_rng(5).standard_normal(shape)
    a = np_softmax(np_ca_weight_3d(q, k), axis=1)
    dq, dk = np_ca_weight_3d_grad(q, k, g_e)
    da, dv = np_ca_map_3d_grad(a, v, g_o)
    inner = (g_e * np_ca_weight_3d(q, k)).sum()
    assert np.isclose((q * dq).sum(), inner, rtol=1e-12) and np.isclose((k * dk).sum(), inner, rtol=1e-12)
    inner = (g_o * np_ca_map_3d(a, v)).sum()
    assert np.isclose((a * da).sum(), inner, rtol=1e-12) and np.isclose((v * dv).sum(), inner, rtol=1e-12)
    bumped = k.copy()
    bumped[1, 2, 0, 3, 1] += 1e-6  # reached by the row, the column and the time line of other positions
    fd = ((g_e * np_ca_weight_3d(q, bumped)).sum() - (g_e * np_ca_weight_3d(q, k)).sum()) / 1e-6
    assert np.isclose(fd, dk[1, 2, 0, 3, 1], rtol=1e-5)


# -- the kernels ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_emulated_3d_kernels_match_the_oracle_forward_and_backward(emulated, shape, dtype):
    before = emulated.barriers()
    assert failures(emulated, [shape], [dtype]) == []
    assert emulated.barriers() > before  # the blocks did synchronise


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_emulated_3d_kernels_at_one_frame_are_the_2d_kernels(emulated, dtype):
    """T = 1: weight3d / map3d give exactly the 2-D entry points' results on the same frame."""
    args, _ = case((2, 5, 1, 6, 7), round_to=np.float16)
    for name in PRODUCTS:
        got = run_product(emulated, args[name], dtype)
        frame = [x[:, :, 0] if isinstance(x, np.ndarray) else x for x in args[name][1:]]
        want = emulated.weight(*frame, dtype) if args[name][0] == "weight" else emulated.map(*frame, dtype)
        assert np.array_equal(got[:, :, 0], want), name


def test_oversized_3d_grids_are_refused_before_any_launch(emulated):
    """More than 2^31 - 1 blocks: cudaErrorInvalidConfiguration (9), nothing touched (the pointers are null)."""
    lib = emulated.lib
    assert lib.cca_cuda_weight3d(0, None, None, None, 1_000_000, 8, 2, 3000, 64, None) == 9
    assert lib.cca_cuda_map3d(0, 1, None, None, None, 1_000_000, 8, 2, 3000, 64, None) == 9
    assert lib.cca_cuda_weight3d(7, None, None, None, 1, 1, 1, 1, 1, None) == -1  # unknown dtype
    assert lib.cca_cuda_map3d(7, 0, None, None, None, 1, 1, 1, 1, 1, None) == -1


# -- broken copies of the time line must fail ---------------------------------------------------

MUTATIONS = {  # name: (text in cca_cuda.cuh, replacement)
    "time line: points W apart instead of H*W":
        ("inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 1, W, (long long)H * W}; }",
         "inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 1, W, (long long)W}; }"),
    "time line: lines (rows y) H apart instead of W":
        ("inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 1, W,",
         "inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 1, H,"),
    "time line: slots one early":
        ("inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 1,",
         "inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 2,"),
    "time line: the self position written by weight (the column's skip kept)":
        ("if (m != n) o[", "if (m != n || p.base != p.W) o["),
    "map3d: the time line's attention not transposed":
        ("launch_cols<T, MODE>(V, A, O, B, map_line(time_line", "launch_cols<T, COL_MAP>(V, A, O, B, map_line(time_line"),
    "map3d: the time line left out at T = 2":
        ("if (err == cudaSuccess && T_ > 1)\n    err = launch_cols<T, MODE>",
         "if (err == cudaSuccess && T_ > 2)\n    err = launch_cols<T, MODE>"),
}
MUTATION_SHAPES = [(2, 17, 3, 5, 37), (1, 4, 2, 3, 5)]


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_broken_time_line_fails_the_checks(name, tmp_path):
    emu = Emulated(build(str(tmp_path / "broken.so"), mutated_source(tmp_path, *MUTATIONS[name])))
    try:
        bad = failures(emu, MUTATION_SHAPES, ["float64"])
    except AssertionError as err:  # a guard was overwritten
        bad = [str(err)]
    assert bad, f"{name}: the broken kernel passed"
