"""benchmarks/gpu_run.sh and benchmarks/gpu_jittor_check.py on a machine without a GPU.

The GPU steps cannot run here; what can: the skip path (seconds, exit 0, nothing written), the
dry run, the set-up's refusal with missing wheels, the collection of step records into one JSON,
and the Jittor check's comparison logic with the CPU standing in for CUDA.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_run.sh")
CHECK = os.path.join(ROOT, "benchmarks", "gpu_jittor_check.py")
STEPS = ["kernels", "jittor-setup", "jittor-build", "jittor-op", "amp-numerics", "bench-train", "nccl-vs-mpi",
         "bench-amp", "bench-infer", "eval-timing", "demo", "collect"]  # amp-fp32-accum only with --only
RESULTS = os.path.join(ROOT, "benchmarks", "results")
import gpu_jittor_check as gjc  # noqa: E402  (benchmarks/ is on the path: conftest.py)


def run(args, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "GPU_RUN_ASSUME_GPU"}
    env.update(env_extra or {})
    start = time.monotonic()
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    return proc, time.monotonic() - start


def test_without_gpu_every_step_is_skipped_in_seconds(tmp_path):
    before = sorted(f for f in os.listdir(RESULTS) if f.startswith("gpu_run"))
    work = tmp_path / "work"
    proc, seconds = run([], {"CUDA_VISIBLE_DEVICES": "", "WORK": str(work), "GPU_VENV": str(tmp_path / "venv")})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines == [f"gpu_run: skip {s}: no NVIDIA GPU visible" for s in STEPS]
    assert seconds < 10
    assert not work.exists() and not (tmp_path / "venv").exists()
    assert sorted(f for f in os.listdir(RESULTS) if f.startswith("gpu_run")) == before  # no record written


def test_without_gpu_only_the_chosen_steps(tmp_path):
    proc, _ = run(["--only", "kernels,demo"], {"CUDA_VISIBLE_DEVICES": "", "WORK": str(tmp_path / "w")})
    assert proc.returncode == 0
    assert [line.split()[2].rstrip(":") for line in proc.stdout.splitlines()] == ["kernels", "jittor-setup", "demo"]


def test_dry_run_prints_the_steps(tmp_path):
    proc, seconds = run(["--dry-run"], {"WORK": str(tmp_path / "w")})
    assert proc.returncode == 0 and seconds < 10
    out = proc.stdout
    for step in STEPS:
        assert f"  {step} " in out
    assert "benchmarks/gpu_check.py" in out and "gpu_jittor_check.py op" in out
    assert "bench_model.py --device cuda --models ccnet_resnet101 --modes train --train-size 769 769 --batch 2" in out
    assert "--size 1024 2048 --batch 1" in out and "train.py --dataset demo --model ccnet_demo" in out
    assert "bench_model_vs_torch.py" in out and "evaluate.py" in out
    assert not (tmp_path / "w").exists()


def test_bad_arguments():
    proc, _ = run(["--only", "nonsense"])
    assert proc.returncode == 2 and "unknown step nonsense" in proc.stderr
    proc, _ = run(["--deadline", "soon"])
    assert proc.returncode == 2
    proc, _ = run(["--frobnicate"])
    assert proc.returncode == 2 and "unknown argument" in proc.stderr


def test_setup_names_what_wheels_lacks(tmp_path):
    """With a GPU assumed, an empty wheels/ stops the set-up with a list of what is missing; the
    Jittor steps after it are skipped and the run still ends with status 0."""
    work = tmp_path / "work"
    empty = tmp_path / "wheels"
    empty.mkdir()
    proc, _ = run(["--only", "jittor-op"], {"GPU_RUN_ASSUME_GPU": "1", "WORK": str(work), "WHEELS": str(empty),
                                            "GPU_VENV": str(tmp_path / "venv"), "SYS_PYTHON": sys.executable,
                                            "JITTOR_HOME": str(tmp_path / "home")}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines()]
    assert [(r["name"], r["status"]) for r in records] == [("jittor-setup", "failed"), ("jittor-op", "skipped")]
    note = records[0]["note"]
    assert "lacks" in note and "jittor-1.3.11.0.tar.gz" in note and "scripts/fetch_gpu_wheels.sh" in note
    assert "did not come up" in records[1]["note"]
    assert not (tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "jittor").exists()


# --------------------------------------------------------------------------- collect

def test_collect_merges_the_step_records(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "kernels.json").write_text(json.dumps({
        "checks": [{"ok": True}, {"ok": True}, {"ok": False}],
        "timings": [{"impl": "kernel", "dtype": "float32", "shape": [2, 512, 97, 97], "fwd+bwd_ms": 1.25}]}))
    (work / "bench_train.json").write_text(json.dumps({"results": [{"train": {"ms": 812.5, "peak_jittor_mb": 9000}}]}))
    (work / "demo.json").write_text(json.dumps({"mIoU": 0.7123}))
    lines = [
        {"name": "kernels", "status": "ok", "seconds": 40, "rc": 0, "log": "", "json": str(work / "kernels.json"),
         "note": ""},
        {"name": "jittor-build", "status": "failed", "seconds": 10, "rc": 1, "log": "", "json": "", "note": "first"},
        {"name": "bench-train", "status": "ok", "seconds": 90, "rc": 0, "log": "",
         "json": str(work / "bench_train.json"), "note": ""},
        {"name": "demo", "status": "ok", "seconds": 120, "rc": 0, "log": "", "json": str(work / "demo.json"),
         "note": ""},
        {"name": "jittor-build", "status": "ok", "seconds": 200, "rc": 0, "log": "", "json": "", "note": "again"},
    ]
    (work / "steps.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "record.json"
    proc = subprocess.run([sys.executable, CHECK, "collect", "--work", str(work), "--out", str(out),
                           "--python", sys.executable], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    names = [s["name"] for s in record["steps"]]
    assert names == ["kernels", "jittor-build", "bench-train", "demo"]  # a step run again replaces its record
    build = record["steps"][1]
    assert build["status"] == "ok" and build["note"] == "again"
    assert record["steps"][0]["result"]["timings"][0]["fwd+bwd_ms"] == 1.25
    machine = record["machine"]
    assert "date" in machine and "nvcc" in machine
    assert machine["system_python"]["numpy"] == np.__version__  # versions read from the Python given
    assert "2/3 checks ok; kernel fwd+bwd 1.25 ms" in proc.stdout
    assert "train 812.5 ms, peak 9000 MB" in proc.stdout and "mIoU 71.23" in proc.stdout
    assert "jittor-build     ok" in proc.stdout


# --------------------------------------------------------------------------- the Jittor check's logic

def test_rel_error():
    a = np.array([1.0, -2.0, 4.0])
    assert gjc.rel_error(a, a) == 0.0
    assert gjc.rel_error(a + [0, 0, 0.4], a) == pytest.approx(0.1)
    assert gjc.rel_error([np.nan, 0, 0], a) == float("inf")
    assert gjc.rel_error(a[:2], a) == float("inf")


def _cpu_as_cuda(perturb=None):
    """gjc._on with the CPU standing in for CUDA (optionally perturbing the "CUDA" results)."""
    def on(jt, cuda, fn):
        out = fn()
        arrays = [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]
        if cuda and perturb:
            arrays = [perturb(a) for a in arrays]
        return arrays
    return on


@pytest.fixture
def jt():
    import jittor
    return jittor


SHAPES = [(2, 16, 5, 7), (1, 8, 1, 9), (1, 16, 3, 4, 5)]  # images, and a clip for the 3-D functions


def test_op_checks_compare_forward_and_every_gradient(jt, monkeypatch):
    # "CUDA" results off by a relative 1e-6 (below the float32 tolerance): every check passes and reports
    # that error, for the forward pass and for each gradient
    monkeypatch.setattr(gjc, "_on", _cpu_as_cuda(perturb=lambda a: a * (1 + 1e-6)))
    rows = gjc.op_checks(jt, shapes=SHAPES, dtypes=("float32",))
    assert [(r["op"], tuple(r["shape"])) for r in rows] == [
        (op, s) for s in SHAPES for op in ("ca_weight", "ca_map", "criss_cross_attention")]
    for r in rows:
        assert r["ok"] and 5e-7 < r["max_rel_error"] < 2e-6, r
        assert all(5e-7 < e < 2e-6 for e in r["errors"].values()), r
    assert set(rows[0]["errors"]) == {"forward", "grad_q", "grad_k"}
    assert set(rows[1]["errors"]) == {"forward", "grad_a", "grad_v"}
    assert set(rows[2]["errors"]) == {"forward", "grad_q", "grad_k", "grad_v"}


def test_op_checks_catch_a_wrong_cuda_result(jt, monkeypatch):
    monkeypatch.setattr(gjc, "_on", _cpu_as_cuda(perturb=lambda a: a * (1 + 1e-3)))
    rows = gjc.op_checks(jt, shapes=SHAPES[:1], dtypes=("float32",))
    assert not any(r["ok"] for r in rows)
    assert all(1e-4 < r["max_rel_error"] < 2e-3 for r in rows)
    monkeypatch.setattr(gjc, "_on", _cpu_as_cuda(perturb=lambda a: np.where(a == a.flat[0], np.nan, a)))
    rows = gjc.op_checks(jt, shapes=SHAPES[:1], dtypes=("float32",))
    assert all(r["max_rel_error"] == float("inf") and not r["ok"] for r in rows)


def test_backend_checks_run_and_record_failures(jt, monkeypatch):
    names = ["matmul", "softmax", "nonzero", "conv2d", "depthwise_conv_grad"]
    # each check against its own tolerance: a relative error of half of it passes, twice it fails
    tolerance = dict(gjc.BACKEND_TOLERANCE, depthwise_grad=gjc.BACKEND_TOLERANCE["depthwise_conv_grad"])
    for factor, ok in ((0.5, True), (2.0, False)):
        def on(jt, cuda, fn, factor=factor, ok=ok):
            arrays = _cpu_as_cuda()(jt, cuda, fn)
            if not cuda:
                return arrays
            if fn.__name__ == "nonzero":  # indices: exact or wrong
                return arrays if ok else [a + 1 for a in arrays]
            return [a * (1 + factor * tolerance[fn.__name__]) for a in arrays]
        monkeypatch.setattr(gjc, "_on", on)
        rows = gjc.backend_checks(jt)
        assert [r["check"] for r in rows] == names
        assert [r["ok"] for r in rows] == [ok] * len(names), rows

    def broken(jt, cuda, fn):
        if cuda:
            raise RuntimeError("no CUDA here")
        return _cpu_as_cuda()(jt, cuda, fn)
    monkeypatch.setattr(gjc, "_on", broken)
    rows = gjc.backend_checks(jt)
    assert all(not r["ok"] and "no CUDA here" in r["error"] for r in rows)


def test_op_command_without_cuda_says_so(tmp_path):
    out = tmp_path / "op.json"
    proc = subprocess.run([sys.executable, CHECK, "op", "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=600)
    assert proc.returncode == 2
    assert "jt.has_cuda is False" in proc.stderr
    assert json.loads(out.read_text())["ok"] is False


def test_eval_command_times_whole_and_sliding_window(tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, CHECK, "eval", "--device", "cpu", "--model", "ccnet_demo", "--dataset", "demo",
                           "--size", "96", "160", "--crop", "64", "64", "--stride", "48", "48", "--warmup", "0",
                           "--repeat", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["crop"] == [64, 64] and record["stride"] == [48, 48]
    for mode in ("whole", "slide"):
        assert record["modes"][mode]["ms"] > 0 and record["modes"][mode]["peak_jittor_mb"] > 0


def test_impl_timings_time_both_impls_and_name_the_faster(jt):
    """On the CPU (cuda=False): both impls, forward and forward+backward, one row per shape and dtype."""
    rows = gjc.impl_timings(jt, shapes=[(1, 16, 5, 7), (1, 16, 3, 5, 7)], dtypes=("float32",), warmup=1, repeat=2,
                            cuda=False)
    assert len(rows) == 2  # an image and a clip
    for row in rows:
        for impl in ("kernel", "reference"):
            for mode in ("fwd", "fwd+bwd"):
                assert row[f"{impl} {mode} ms"] > 0, row
        assert row["faster"] == min(("kernel", "reference"), key=lambda i: row[f"{i} fwd+bwd ms"])
