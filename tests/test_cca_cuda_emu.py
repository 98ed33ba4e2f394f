"""The CUDA kernels of models/ops/cca_cuda.cuh, run on the CPU by tests/cuda_emu.h.

g++ compiles the CUDA source unchanged (through cca_cuda_abi.cu, the C entry points
that the GPU benchmark uses too) with the emulation header: every block of a launch
runs, every thread of a block is a fiber, ``__syncthreads`` is a barrier among them.
Every kernel, in float64, float32 and float16, forward and the products of the
backward, is checked against the float64 numpy oracle (tests/cca_oracle.py) on
shapes that reach every edge of the tiles, with the threads of a block run in order
and in reverse order. Buffers sit between NaN guards: a read outside an input
turns a result into NaN, a write outside an output changes a guard. A second build
runs under AddressSanitizer, which also sees reads outside shared-memory tiles.
Deliberately broken copies of the source (a missing barrier, an off-by-one bound)
must fail these checks.

What this cannot show: speed, warp-level behaviour (lanes never run in lockstep
here), races between blocks (blocks run one after another) and the GPU's memory
model. Those are steps of benchmarks/gpu_run.sh.

This module imports no Jittor: the AddressSanitizer test runs its checks in a
subprocess that imports only this module.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, os.path.join(ROOT, "benchmarks"), HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_common import CCA_CUDA_ABI, CCA_DTYPES, find_nvcc, load_cca_cuda_abi  # noqa: E402
from cca_oracle import (np_ca_map, np_ca_map_3d, np_ca_map_3d_grad, np_ca_map_grad, np_ca_weight,  # noqa: E402
                        np_ca_weight_3d, np_ca_weight_3d_grad, np_ca_weight_grad, np_softmax)

OPS = os.path.join(ROOT, "models", "ops")
EMULATION = os.path.join(HERE, "cuda_emu.h")
GUARD = 4096  # elements of NaN on each side of every buffer

# [B, C, H, W] of query/key; value has 2C + 1 channels. They reach: H != W, H = 1, W = 1, several
# images, C not a multiple of a K chunk (16 rows / 8 columns) or of a tile (32 / 16), W above one
# row tile and one column band (32), H above one column tile (16) twice, a band narrower than its
# 32 lanes (W = 3), and K = W / K = H spanning several chunks.
SHAPES = [(2, 3, 4, 5), (1, 5, 1, 6), (1, 3, 7, 1), (1, 2, 1, 1), (2, 19, 13, 37), (1, 20, 35, 33),
          (1, 17, 18, 3)]
PRODUCTS = ("weight", "map", "weight dq", "weight dk", "map da", "map dv")
TOLERANCE = {"float64": 1e-12, "float32": 2e-6}
# float16 against float32 on the same (float16-rounded) inputs: each kernel rounds its result to
# float16 once (relative 2^-11) and map adds a rounded column part to a rounded row part.
FLOAT16_TOLERANCE = 2.0 ** -9


def cuda_include() -> str | None:
    """A folder with cuda_fp16.h: $CUDA_HOME, the toolkit of the nvcc the GPU benchmark finds, /usr/local/cuda."""
    places = [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    nvcc = find_nvcc()
    if nvcc:
        places.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    places += ["/usr/local/cuda/include"] + sorted(glob.glob("/usr/local/cuda-*/include"))
    return next((p for p in places if os.path.exists(os.path.join(p, "cuda_fp16.h"))), None)


def build(out: str, source_dir: str = OPS, sanitize: bool = False) -> str:
    """The emulated kernels as a shared library; pytest.skip without g++ or CUDA's headers."""
    include, gxx = cuda_include(), shutil.which("g++")
    if include is None or gxx is None:
        pytest.skip("the CUDA emulation needs g++ and the CUDA headers (cuda_fp16.h; set CUDA_HOME)")
    cmd = [gxx, "-std=c++14", "-O1", "-g0", "-fPIC", "-shared", "-Wall", "-Werror", "-Wno-unknown-pragmas",
           "-I", include, "-I", source_dir, "-include", EMULATION, "-x", "c++",
           os.path.join(source_dir, os.path.basename(CCA_CUDA_ABI)), "-o", out]
    if sanitize:
        cmd[1:1] = ["-fsanitize=address", "-fno-omit-frame-pointer"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


class Emulated:
    """The ABI of cca_cuda_abi.cu on numpy arrays, each between ``guard`` NaNs.

    ``guard=0`` leaves every buffer exactly its size, for AddressSanitizer's
    red zones (which see reads that the NaN guards would absorb).
    """

    def __init__(self, library: str, guard: int = GUARD):
        self.guard = guard
        self.lib = load_cca_cuda_abi(library)
        self.lib.cuda_emu_problem.restype = ctypes.c_char_p
        self.lib.cuda_emu_barriers.restype = ctypes.c_longlong

    def _guarded(self, array: np.ndarray) -> np.ndarray:
        buf = np.full(array.size + 2 * self.guard, np.nan, dtype=array.dtype)
        buf[self.guard:self.guard + array.size] = array.ravel()
        return buf

    def _run(self, call, inputs, out_shape, dtype):
        g, n = self.guard, int(np.prod(out_shape))
        bufs = [self._guarded(np.ascontiguousarray(x, dtype=dtype)) for x in inputs]
        out = np.full(n + 2 * g, np.nan, dtype=dtype)
        code = call(*(b.ctypes.data + g * b.itemsize for b in bufs), out.ctypes.data + g * out.itemsize)
        assert code == 0, f"CUDA error {code}"
        text = self.lib.cuda_emu_problem().decode()
        assert not text, text
        assert np.isnan(out[:g]).all() and np.isnan(out[g + n:]).all(), "a kernel wrote outside its output"
        return out[g:g + n].reshape(out_shape).astype(np.float64)

    def weight(self, p, q, dtype):
        """weight of images [B, C, H, W], or weight3d of clips [B, C, T, H, W]."""
        if p.ndim == 5:
            B, C, T, H, W = p.shape
            return self._run(lambda P, Q, E: self.lib.cca_cuda_weight3d(CCA_DTYPES[dtype], P, Q, E, B, C, T, H, W,
                                                                         None),
                             [p, q], (B, T + H + W - 2, T, H, W), dtype)
        B, C, H, W = p.shape
        return self._run(lambda P, Q, E: self.lib.cca_cuda_weight(CCA_DTYPES[dtype], P, Q, E, B, C, H, W, None),
                         [p, q], (B, H + W - 1, H, W), dtype)

    def map(self, a, v, transposed, dtype):
        """map of images, or map3d of clips."""
        if v.ndim == 5:
            B, C, T, H, W = v.shape
            return self._run(lambda A, V, O: self.lib.cca_cuda_map3d(CCA_DTYPES[dtype], int(transposed), A, V, O,
                                                                      B, C, T, H, W, None),
                             [a, v], v.shape, dtype)
        B, C, H, W = v.shape
        return self._run(lambda A, V, O: self.lib.cca_cuda_map(CCA_DTYPES[dtype], int(transposed), A, V, O,
                                                                 B, C, H, W, None),
                         [a, v], v.shape, dtype)

    def set_order(self, reverse: bool) -> None:
        self.lib.cuda_emu_set_order(int(reverse))

    def barriers(self) -> int:
        return self.lib.cuda_emu_barriers()


@functools.lru_cache(maxsize=None)
def case(shape, round_to=None):
    """Inputs and the float64 oracle's six products, of images [B, C, H, W] or clips [B, C, T, H, W];
    inputs rounded to ``round_to`` first if given."""
    B, C, *rest = shape
    weight, map_, weight_grad, map_grad = ((np_ca_weight_3d, np_ca_map_3d, np_ca_weight_3d_grad, np_ca_map_3d_grad)
                                           if len(rest) == 3 else
                                           (np_ca_weight, np_ca_map, np_ca_weight_grad, np_ca_map_grad))
    rng = np.random.default_rng(sum(shape))
    cast = (lambda x: x.astype(round_to).astype(np.float64)) if round_to else (lambda x: x)
    q, k = cast(rng.standard_normal(shape)), cast(rng.standard_normal(shape))
    v = cast(rng.standard_normal((B, 2 * C + 1, *rest)))
    a = cast(np_softmax(weight(q, k), axis=1))
    g_e, g_o = cast(rng.standard_normal(a.shape)), cast(rng.standard_normal(v.shape))
    dq, dk = weight_grad(q, k, g_e)
    da, dv = map_grad(a, v, g_o)
    args = {"weight": ("weight", q, k), "map": ("map", a, v, False), "weight dq": ("map", g_e, k, False),
            "weight dk": ("map", g_e, q, True), "map da": ("weight", g_o, v), "map dv": ("map", a, g_o, True)}
    want = {"weight": weight(q, k), "map": map_(a, v), "weight dq": dq, "weight dk": dk,
            "map da": da, "map dv": dv}
    return args, want


def run_product(emu: Emulated, args, dtype):
    if args[0] == "weight":
        return emu.weight(args[1], args[2], dtype)
    return emu.map(args[1], args[2], args[3], dtype)


def errors(emu: Emulated, shape, dtype: str) -> dict:
    """Largest error of each product relative to the largest oracle value (NaN if any output is NaN)."""
    args, want = case(shape)
    result = {}
    for name in PRODUCTS:
        got = run_product(emu, args[name], dtype)
        scale = max(np.abs(want[name]).max(), 1e-30)
        result[name] = float(np.abs(got - want[name]).max() / scale) if not np.isnan(got).any() else float("nan")
    return result


def failures(emu: Emulated, shapes, dtypes=("float64", "float32")) -> list[str]:
    """Every (order, shape, dtype, product) whose error is above tolerance, in both thread orders."""
    bad = []
    for reverse in (False, True):
        emu.set_order(reverse)
        for shape in shapes:
            for dtype in dtypes:
                for name, err in errors(emu, shape, dtype).items():
                    if not err <= TOLERANCE[dtype]:
                        bad.append(f"{'reverse' if reverse else 'forward'} {shape} {dtype} {name}: {err:.3g}")
    emu.set_order(False)
    return bad


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    return Emulated(build(str(tmp_path_factory.mktemp("cuda_emu") / "cca_emu.so")))


# -- the oracle's backward ---------------------------------------------------------------

def test_oracle_gradients_are_the_adjoints_of_the_oracle():
    """weight and map are linear in each input, so <g, f(x, y)> = <x, df/dx> = <y, df/dy>; plus one finite difference."""
    q, k, v = (np.random.default_rng(s).standard_normal((2, 3, 4, 5)) for s in (1, 2, 3))
    g_e = np.random.default_rng(4).standard_normal((2, 8, 4, 5))
    g_o = np.random.default_rng(5).standard_normal((2, 3, 4, 5))
    a = np_softmax(np_ca_weight(q, k), axis=1)
    dq, dk = np_ca_weight_grad(q, k, g_e)
    da, dv = np_ca_map_grad(a, v, g_o)
    inner = (g_e * np_ca_weight(q, k)).sum()
    assert np.isclose((q * dq).sum(), inner, rtol=1e-12) and np.isclose((k * dk).sum(), inner, rtol=1e-12)
    inner = (g_o * np_ca_map(a, v)).sum()
    assert np.isclose((a * da).sum(), inner, rtol=1e-12) and np.isclose((v * dv).sum(), inner, rtol=1e-12)
    bumped = q.copy()
    bumped[1, 2, 3, 1] += 1e-6
    fd = ((g_e * np_ca_weight(bumped, k)).sum() - (g_e * np_ca_weight(q, k)).sum()) / 1e-6
    assert np.isclose(fd, dq[1, 2, 3, 1], rtol=1e-5)


# -- the kernels ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_emulated_kernels_match_the_oracle_forward_and_backward(emulated, shape, dtype):
    before = emulated.barriers()
    assert failures(emulated, [shape], [dtype]) == []
    assert emulated.barriers() > before  # the blocks did synchronise


def test_emulated_kernels_with_2048_channels(emulated):
    """C = 2048 query/key channels (K of weight: 128 row chunks, 256 column chunks), 4097 value channels."""
    emulated.set_order(False)
    assert {n: e for n, e in errors(emulated, (1, 2048, 3, 2), "float32").items() if not e <= 1e-5} == {}


# images, and clips of the 3-D kernels (test_cca3d_cuda_emu): two lane bands, a time line over two tiles, W = 1
@pytest.mark.parametrize("shape", [(2, 19, 13, 37), (1, 17, 18, 3), (1, 3, 7, 1), (2, 17, 3, 5, 37), (1, 3, 18, 2, 3),
                                   (1, 3, 5, 4, 1)])
def test_emulated_float16_matches_float32_within_tolerance(emulated, shape):
    args, want = case(shape, round_to=np.float16)  # inputs exactly representable in float16
    for name in PRODUCTS:
        half = run_product(emulated, args[name], "float16")
        single = run_product(emulated, args[name], "float32")
        scale = np.abs(single).max()
        assert np.abs(half - single).max() <= FLOAT16_TOLERANCE * scale, name
        assert np.abs(single - want[name]).max() <= 1e-5 * scale, name


def test_oversized_grids_are_refused_before_any_launch(emulated):
    """More than 2^31 - 1 blocks: cudaErrorInvalidConfiguration (9), nothing touched (the pointers are null)."""
    lib = emulated.lib
    assert lib.cca_cuda_weight(0, None, None, None, 1_000_000, 8, 3000, 64, None) == 9
    assert lib.cca_cuda_map(0, 0, None, None, None, 1_000_000, 8, 3000, 64, None) == 9
    assert lib.cca_cuda_weight(7, None, None, None, 1, 1, 1, 1, None) == -1  # unknown dtype


# -- broken copies of the source must fail ----------------------------------------------------

MUTATIONS = {  # name: (text in cca_cuda.cuh, replacement)
    "row kernel: no barrier between loading a chunk and using it":
        ("    __syncthreads();\n#pragma unroll 4", "#pragma unroll 4"),
    "column kernel: no barrier between using a chunk and loading the next":
        ("        for (int s = 0; s < COL_RN; ++s) acc[r][s] += av[r] * bv[s];\n    }\n    __syncthreads();",
         "        for (int s = 0; s < COL_RN; ++s) acc[r][s] += av[r] * bv[s];\n    }"),
    "column kernel: K bound off by one": ("const bool in = x0 + l < p.W && gk < p.K;",
                                          "const bool in = x0 + l < p.W && gk <= p.K;"),
    "row kernel: store bound off by one": ("if (m < p.M && n < p.N) o[", "if (m <= p.M && n < p.N) o["),
    "column kernel: the self position counted": ("  if (k == n) return -1;\n", ""),
    "row kernel: the last K chunk skipped": ("for (int k0 = 0; k0 < p.K; k0 += ROW_K) {",
                                             "for (int k0 = 0; k0 + ROW_K < p.K; k0 += ROW_K) {"),
}
# Reads one row past a tile's end: the extra row is never used, so only AddressSanitizer sees it.
READ_PAST_TILE = ("tile[k][i] = (gi < I && gk < K)", "tile[k][i] = (gi <= I && gk < K)")


def mutated_source(tmp_path, old: str, new: str) -> str:
    folder = tmp_path / "ops"
    folder.mkdir()
    shutil.copy(CCA_CUDA_ABI, folder)
    with open(os.path.join(OPS, "cca_cuda.cuh")) as f:
        text = f.read()
    assert text.count(old) == 1, f"the mutation's text is not in cca_cuda.cuh exactly once: {old!r}"
    (folder / "cca_cuda.cuh").write_text(text.replace(old, new))
    return str(folder)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_broken_kernel_fails_the_checks(name, tmp_path):
    emu = Emulated(build(str(tmp_path / "broken.so"), mutated_source(tmp_path, *MUTATIONS[name])))
    try:
        bad = failures(emu, [(2, 19, 13, 37), (1, 20, 35, 33)], ["float64"])
    except AssertionError as err:  # a guard was overwritten
        bad = [str(err)]
    assert bad, f"{name}: the broken kernel passed"


# -- AddressSanitizer --------------------------------------------------------------------------

# The 2-D checks and one clip (its time line over two images and two lane bands).
ASAN_DRIVER = """
import sys
sys.path.insert(0, {here!r})
import test_cca_cuda_emu as t
bad = t.failures(t.Emulated({library!r}, guard=0), [(2, 19, 13, 37), (1, 17, 18, 3), (1, 5, 1, 6), (2, 17, 3, 5, 37)],
                 ["float64"])
print("failures:", bad)
sys.exit(1 if bad else 0)
"""


def run_under_asan(library: str) -> subprocess.CompletedProcess:
    runtime = subprocess.run([shutil.which("g++"), "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip("g++ has no AddressSanitizer runtime (libasan)")
    env = dict(os.environ, LD_PRELOAD=runtime, ASAN_OPTIONS="detect_leaks=0")
    code = ASAN_DRIVER.format(here=HERE, library=library)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_emulated_kernels_are_clean_under_address_sanitizer(tmp_path):
    good = run_under_asan(build(str(tmp_path / "asan.so"), sanitize=True))
    assert good.returncode == 0 and "ERROR: AddressSanitizer" not in good.stderr, good.stdout + good.stderr[-3000:]
    broken = run_under_asan(build(str(tmp_path / "asan_broken.so"), mutated_source(tmp_path, *READ_PAST_TILE),
                                  sanitize=True))
    assert broken.returncode != 0 and "ERROR: AddressSanitizer" in broken.stderr, broken.stdout + broken.stderr[-3000:]
