"""benchmarks/bench_cca.py end to end at a tiny shape: every implementation, the FLOP count, the measured peak."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_op_benchmark_records_times_flops_and_the_machine_peak(tmp_path):
    pytest.importorskip("torch", reason="the benchmark compares with the PyTorch formulations")
    out = tmp_path / "cca.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_cca.py"), "--shape", "1", "16",
                             "9", "11", "--warmup", "0", "--repeat", "1", "--rounds", "2", "--json", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    # by hand: 1 * 9 * 11 pixels x 19 positions; energies over 2 query/key channels, aggregation over 16
    forward = 2 * 9 * 11 * 19 * 2 + 2 * 9 * 11 * 19 * 16
    assert record["flops"] == {"fwd": forward, "fwd+bwd": 3 * forward}
    assert {(r["impl"], r["mode"]) for r in record["results"]} == {
        (i, m) for i in ("jittor-kernel", "jittor-reference", "torch-bmm", "torch-einsum") for m in ("fwd", "fwd+bwd")}
    rows_by = {(r["impl"], r["mode"]): r for r in record["results"]}
    for r in record["results"]:
        assert r["gflops_per_s"] == pytest.approx(record["flops"][r["mode"]] / r["ms"] / 1e6)
        assert r["check_max_abs_diff_vs_kernel"] < 1e-5
        assert len(r["ms_rounds"]) == 2 and min(r["ms_rounds"]) <= r["ms"] <= max(r["ms_rounds"])
        ratios = [a / b for a, b in zip(r["ms_rounds"], rows_by[("jittor-kernel", r["mode"])]["ms_rounds"])]
        assert r["speedup_of_kernel"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert record["fma_peak"]["gflops"] > 1 and record["fma_peak"]["threads"] >= 1
    assert "% of that peak" in result.stdout
    with open("/proc/cpuinfo") as f:
        if "cpu family" in f.read():
            assert "(family " in record["machine"]


def test_op_benchmark_of_clips_compares_the_3d_formulations(tmp_path):
    pytest.importorskip("torch", reason="the benchmark compares with the PyTorch formulations")
    out = tmp_path / "cca3d.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_cca.py"), "--shape", "1", "16",
                             "3", "9", "11", "--warmup", "0", "--repeat", "1", "--rounds", "1", "--json", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    # by hand: 3 * 9 * 11 positions x (3 + 9 + 11 - 2) = 21 slots; 2 query/key channels, 16 value channels
    forward = 2 * 3 * 9 * 11 * 21 * 2 + 2 * 3 * 9 * 11 * 21 * 16
    assert record["flops"] == {"fwd": forward, "fwd+bwd": 3 * forward}
    assert len(record["results"]) == 8
    for r in record["results"]:  # the four compute the same 3-D function (a clip of 2 x 16 x 3 x 5 x 7)
        assert r["check_max_abs_diff_vs_kernel"] < 1e-5, r["impl"]
    assert "value [B,C,T,H,W] = [1, 16, 3, 9, 11]" in result.stdout


def test_tile_sweep_times_each_tiling_and_checks_it_computes_the_same(tmp_path):
    out = tmp_path / "tiles.json"
    script = os.path.join(ROOT, "benchmarks", "bench_cca_tiles.py")
    result = subprocess.run([sys.executable, script, "--tiles", "4,4,4,6,6,4", "2,8,2,12,3,7",
                             "--shape", "1", "16", "9", "21", "--warmup", "0", "--repeat", "1", "--rounds", "1", "--json", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["tiles"] for r in rows] == [[4, 4, 4, 6, 6, 4], [2, 8, 2, 12, 3, 7]]
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["check_max_abs_diff"] < 1e-4
    bad = subprocess.run([sys.executable, script, "--tiles", "8,8,4,6,6,4"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "at most 31" in bad.stderr


@pytest.mark.parametrize("script", ["bench_cca.py", "bench_cca_tiles.py", "bench_context.py"])
def test_an_unwritable_json_is_refused_before_any_measuring(tmp_path, script):
    blocker = tmp_path / "a_file"
    blocker.write_text("kept")
    for target, message in [(blocker / "out.json", "(a file is in the way); choose another --json"),
                            (tmp_path, "is a folder; give a file name for --json")]:
        result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--json", str(target)],
                                capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].endswith(message), result.stderr[-2000:]
        assert result.stdout == ""  # nothing was measured or printed before the error
    assert blocker.read_text() == "kept"


def test_measured_peak_bounds_the_op_and_uses_the_widest_native_vector(float64):
    """The op's float32 kernel at a size that keeps it busy never beats the measured FMA peak of the
    same process (it did when the peak used 16-lane vectors on an AVX2 machine); the peak's vector
    is the widest the CPU has."""
    import time

    import numpy as np

    import jittor as jt
    from bench_common import fma_peak_gflops
    from models.complexity import cca_flops
    from models.ops.cca import ca_map

    B, C, H, W = 1, 256, 64, 64
    rng = np.random.default_rng(0)
    a = jt.array(rng.random((B, H + W - 1, H, W), dtype=np.float32))
    v = jt.array(rng.standard_normal((B, C, H, W)).astype(np.float32))
    best = float("inf")
    for _ in range(4):
        jt.sync_all(True)
        start = time.perf_counter()
        ca_map(a, v, impl="kernel").sync()
        best = min(best, time.perf_counter() - start)
    op_gflops = cca_flops(B, 1, C, H, W)["cca_map"] / best / 1e9
    peak = fma_peak_gflops()
    assert op_gflops < peak["gflops"], (op_gflops, peak)
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    assert peak["lanes"] == (16 if "avx512f" in flags else 8 if "avx" in flags else 4)
