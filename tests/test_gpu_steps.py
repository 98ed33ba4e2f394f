"""benchmarks/gpu_run.sh's amp-numerics, amp-fp32-accum and nccl-vs-mpi steps, checked on the CPU.

The GPU measurements cannot run here. What can: the float64 reference of the gradient check (against
PyTorch's float64 autograd), the check itself with the CPU standing in for CUDA (``--device cpu --small``),
the decision rule, the NCCL search and the per-mode launch settings, one MPI training step under
``mpirun -np 2`` on the CPU, and the steps' wiring in gpu_run.sh (dry run, skips, records) with a stand-in
interpreter that turns the GPU runs into CPU ones.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gpu_amp_check as amp  # benchmarks/ is on the path (conftest.py)
import gpu_nccl_check as nccl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMP = os.path.join(ROOT, "benchmarks", "gpu_amp_check.py")
NCCL = os.path.join(ROOT, "benchmarks", "gpu_nccl_check.py")
GPU_RUN = os.path.join(ROOT, "benchmarks", "gpu_run.sh")
HAVE_MPI = shutil.which("mpirun") is not None and shutil.which("mpicc") is not None


def words(line: str) -> dict:
    """The ``key=value`` words of a result line (the first word is its kind)."""
    return dict(w.split("=", 1) for w in line.split()[1:])


def cpu_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "GPU_RUN_ASSUME_GPU"}
    env.update(CUDA_VISIBLE_DEVICES="", **extra)
    return env


# --------------------------------------------------------------------------- amp-numerics: the gradient check

def test_weight_grad_reference_is_pytorchs_float64_gradient():
    torch = pytest.importorskip("torch")
    x, w, g = amp.conv_inputs((2, 3, 9, 11), 4, 3, seed=1)
    xt = torch.tensor(x, dtype=torch.float64)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    (torch.nn.functional.conv2d(xt, wt, padding=1) * torch.tensor(g, dtype=torch.float64)).sum().backward()
    want = wt.grad.numpy()
    got = amp.weight_grad_reference(x, g, 3)
    assert got.dtype == np.float64 and got.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (x >= 0).all() and abs(float(g.mean())) < 0.2  # post-ReLU activations, zero-mean output gradient


def test_gradient_errors_against_the_right_and_a_wrong_reference():
    shape, out_channels, kernel = amp.SMALL_CONV_CASE
    right = amp.conv_errors(shape, out_channels, kernel)
    assert right["reduction"] == shape[0] * shape[2] * shape[3]
    assert right["float32"]["max_rel_error"] < 1e-5
    assert np.isfinite(right["float16"]["max_rel_error"])
    assert right["float16"]["max_rel_error"] > right["float32"]["max_rel_error"]

    def flipped(x, g, k):  # convolution instead of cross-correlation: the wrong kernel orientation
        return amp.weight_grad_reference(x, g, k)[:, :, ::-1, ::-1]
    wrong = amp.conv_errors(shape, out_channels, kernel, reference=flipped)
    assert wrong["float32"]["max_rel_error"] > 0.1 and wrong["float16"]["max_rel_error"] > 0.1


def test_the_decision_rule():
    def conv(e16):
        return {"float16": {"max_rel_error": e16}, "float32": {"max_rel_error": 1e-7}}
    assert amp.THRESHOLD == pytest.approx(1.953125e-3)
    needed, text = amp.decide(conv(6e-4), "cuda", patched=False)
    assert needed is False and text.startswith("no (")
    needed, text = amp.decide(conv(3e-3), "cuda", patched=False)
    assert needed is True and text.startswith("yes (") and "0.003 > 0.00195" in text
    assert amp.decide(conv(float("nan")), "cuda", patched=False)[0] is True
    assert amp.decide(conv(float("inf")), "cuda", patched=False)[0] is True
    needed, text = amp.decide(conv(5e-4), "cuda", patched=True)
    assert needed is False and text.startswith("within threshold (with fp32-accum in place")
    assert amp.decide(conv(1.0), "cpu", patched=False)[0] is None
    needed, text = amp.decide(conv(1.0), "cuda", patched=False, cudnn=False)
    assert needed is None and "did not load cuDNN" in text


def check_amp_output(lines, record):
    """gpu_amp_check.py --device cpu --small: the lines parse, agree with the JSON, and the float32 gradient
    matches the float64 reference; the AMP step went through the GradScaler."""
    grads = [words(line) for line in lines if line.startswith("conv-grad dtype=")]
    assert [g["dtype"] for g in grads] == ["float32", "float16"]
    for g in grads:
        assert float(g["max_rel_error"]) == pytest.approx(record["conv_weight_grad"][g["dtype"]]["max_rel_error"],
                                                          rel=1e-3)
        assert g["shape"] == "2x8x21x21" and g["reduction"] == str(2 * 21 * 21)
    assert float(grads[0]["max_rel_error"]) < 1e-5
    decision = [line for line in lines if line.startswith("decision fp32-accum: ")]
    assert decision == ["decision fp32-accum: not-applicable (device cpu: the patch changes cuDNN, which only CUDA "
                        "uses)"] and record["fp32_accum_needed"] is None
    steps = {w["precision"]: w for w in (words(line) for line in lines if line.startswith("step precision="))}
    assert set(steps) == {"float32", "amp"}
    for precision, w in steps.items():
        assert w["model"] == "ccnet_demo" and float(w["ms"]) > 0 and float(w["peak_jittor_mb"]) > 0
        assert float(w["ms"]) == pytest.approx(record["step"][precision]["ms"], rel=1e-3)
    assert "amp_scale" in record["step"]["amp"] and "amp_scale" not in record["step"]["float32"]
    ratio = words(next(line for line in lines if line.startswith("step time_ratio")))
    assert float(ratio["time_ratio_amp_to_float32"]) == pytest.approx(record["step"]["time_ratio"], rel=1e-3)
    assert lines[-2].startswith("summary: conv wgrad rel. error f32") and record["summary"] in lines[-2]
    assert record["patches_in_place"] == [] and record["jittor_path"].endswith("jittor")
    assert record["cudnn_loaded"] is False  # the CPU


def check_mpi_output(lines, record):
    """gpu_nccl_check.py --device cpu --modes mpi --np 2: a training step timed in every rank."""
    mpi = record["modes"]["mpi"]
    assert [(r["rank"], r["world_size"], r["nccl"]) for r in mpi["ranks"]] == [(0, 2, False), (1, 2, False)]
    assert mpi["ms"] == max(r["ms"] for r in mpi["ranks"]) > 0
    line = words(next(x for x in lines if x.startswith("nccl-vs-mpi mode=mpi")))
    assert line["np"] == "2" and float(line["ms"]) == pytest.approx(mpi["ms"], rel=1e-3)
    assert "ratio_mpi_to_nccl" not in record  # one mode only


def test_baseline_comparison(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"conv_weight_grad": {"float16": {"max_rel_error": 0.5}}}))
    out = tmp_path / "amp.json"
    proc = subprocess.run([sys.executable, AMP, "--device", "cpu", "--small", "--parts", "conv", "--baseline",
                           str(base), "--json", str(out)], cwd=ROOT, capture_output=True, text=True, env=cpu_env(),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = words(next(x for x in proc.stdout.splitlines() if x.startswith("conv-grad baseline_float16_error=")))
    now = json.loads(out.read_text())["conv_weight_grad"]["float16"]["max_rel_error"]
    assert float(line["baseline_float16_error"]) == 0.5 and float(line["change"]) == pytest.approx(now / 0.5, rel=1e-3)
    assert "step" not in json.loads(out.read_text())


# --------------------------------------------------------------------------- nccl-vs-mpi

def _nccl_tree(root, versioned_only=False):
    (root / "include").mkdir(parents=True)
    (root / "include" / "nccl.h").write_text("")
    (root / "lib64").mkdir()
    (root / "lib64" / "libnccl.so.2").write_text("")
    if not versioned_only:
        os.symlink("libnccl.so.2", root / "lib64" / "libnccl.so")
    return root


def test_find_nccl(tmp_path):
    empty = {"PATH": "/usr/bin"}
    tree = _nccl_tree(tmp_path / "tree")
    pip = _nccl_tree(tmp_path / "site" / "nvidia" / "nccl")
    assert nccl.find_nccl({"nccl_include_path": "/i", "nccl_lib_path": "/l", "JT_CUDA_TREE": str(tree)}, []) == \
        ("/i", "/l")
    assert nccl.find_nccl(dict(empty, JT_CUDA_TREE=str(tree)), [str(tmp_path / "site")]) == \
        (str(tree / "include"), str(tree / "lib64"))
    got = nccl.find_nccl(empty, [str(tmp_path / "site")])
    if os.path.isfile("/usr/include/nccl.h") or os.path.isfile("/usr/local/cuda/include/nccl.h"):
        assert isinstance(got, tuple)  # this machine has an NCCL of its own, found before the pip one
    else:
        assert got == (str(pip / "include"), str(pip / "lib64"))
    only2 = _nccl_tree(tmp_path / "only2", versioned_only=True)
    if not (os.path.isfile("/usr/include/nccl.h") or os.path.isfile("/usr/local/cuda/include/nccl.h")):
        got = nccl.find_nccl(dict(empty, NCCL_HOME=str(only2)), [])
        assert isinstance(got, str) and "libnccl.so.2 but no libnccl.so" in got and "ln -s" in got
        got = nccl.find_nccl(empty, [str(tmp_path / "nothing")])
        assert isinstance(got, str) and got.startswith("no NCCL found")


def test_each_mode_gets_its_gpus_and_settings():
    # MPI: each rank only its own GPU (the local rank-th visible one); NCCL: all, Jittor picks
    assert [nccl.rank_gpu("mpi", ["3", "5"], r) for r in range(2)] == ["3", "5"]
    assert nccl.rank_gpu("nccl", ["3", "5"], 1) is None and nccl.rank_gpu("mpi", [], 0) is None
    base = {"CUDA_VISIBLE_DEVICES": "3,5", "use_nccl": "1", "nccl_lib_path": "/old"}
    env = nccl.mode_env("nccl", ("/inc", "/lib"), base)
    assert env["use_nccl"] == "1" and env["nccl_include_path"] == "/inc" and env["nccl_lib_path"] == "/lib"
    assert env["CUDA_VISIBLE_DEVICES"] == "3,5"
    env = nccl.mode_env("mpi", None, base)
    assert env["use_nccl"] == "0"

    class Args:
        model, size, batch, warmup, repeat, device = "ccnet_resnet101", [769, 769], 2, 2, 3, "cuda"
    cmd = nccl.mpirun_command("mpi", 2, ["3", "5"], "/rec", Args)
    assert cmd[cmd.index("-np") + 1] == "2" and "--allow-run-as-root" in cmd
    assert cmd[cmd.index("--rank-worker") + 1] == "mpi" and cmd[cmd.index("--gpus") + 1] == "3,5"
    assert cmd[cmd.index("--records") + 1] == "/rec" and "--gpus" not in nccl.mpirun_command("mpi", 2, [], "/r", Args)
    assert cmd[cmd.index("--size") + 1: cmd.index("--size") + 3] == ["769", "769"]


def test_rank_records_and_their_combination(tmp_path):
    (tmp_path / "rank1.json").write_text(json.dumps({"rank": 1, "world_size": 2, "nccl": True, "ms": 120.0,
                                                     "peak_jittor_mb": 9.0}))
    (tmp_path / "rank0.json").write_text(json.dumps({"rank": 0, "world_size": 2, "nccl": True, "ms": 100.0,
                                                     "peak_jittor_mb": 8.0}))
    (tmp_path / "rank2.json.tmp").write_text("{not finished")  # a rank that did not get to the end
    records = nccl.rank_records(str(tmp_path))
    assert [r["rank"] for r in records] == [0, 1]
    result = nccl.combine("nccl", 2, records)
    assert result["ms"] == 120.0 and result["ms_per_rank"] == [100.0, 120.0] and "error" not in result
    assert "did not load its NCCL ops" in nccl.combine("nccl", 2, [dict(r, nccl=False) for r in records])["error"]
    assert "loaded NCCL although use_nccl=0" in nccl.combine("mpi", 2, records)["error"]
    missing = nccl.combine("nccl", 3, records)
    assert "2 of 3 ranks reported" in missing["error"] and "ms" not in missing


def test_nccl_needs_cuda():
    proc = subprocess.run([sys.executable, NCCL, "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          env=cpu_env(), timeout=120)
    assert proc.returncode == 2 and "NCCL needs CUDA" in proc.stderr


# --------------------------------------------------------------------------- the steps in gpu_run.sh

def gpu_run(args, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "GPU_RUN_ASSUME_GPU"}
    env.update(env_extra or {})
    return subprocess.run(["bash", GPU_RUN, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_dry_run_lists_the_new_steps(tmp_path):
    proc = gpu_run(["--dry-run"], {"WORK": str(tmp_path / "w")})
    assert proc.returncode == 0
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    order = list(lines)
    assert order.index("jittor-op") < order.index("amp-numerics") < order.index("bench-train") \
        < order.index("nccl-vs-mpi") < order.index("bench-amp")
    assert "benchmarks/gpu_amp_check.py --json" in lines["amp-numerics"] and " 360s " in lines["amp-numerics"]
    assert "benchmarks/gpu_nccl_check.py --json" in lines["nccl-vs-mpi"] and " 300s " in lines["nccl-vs-mpi"]
    off = lines["amp-fp32-accum"]
    assert "[off by default: --only amp-fp32-accum]" in off and "--with fp32-accum" in off
    assert f"PYTHONPATH={tmp_path}/w/jittor_fp32_accum" in off and "_fp32_accum " in off
    only = gpu_run(["--dry-run", "--only", "amp-fp32-accum"], {"WORK": str(tmp_path / "w")})
    names = [line.split()[0] for line in only.stdout.splitlines()[1:]]
    assert names == ["jittor-setup", "amp-fp32-accum"] and "off by default" not in only.stdout


def test_without_gpu_the_new_steps_are_skipped(tmp_path):
    proc = gpu_run([], {"CUDA_VISIBLE_DEVICES": "", "WORK": str(tmp_path / "w")})
    assert proc.returncode == 0
    skipped = [line.split()[2].rstrip(":") for line in proc.stdout.splitlines()]
    assert "amp-numerics" in skipped and "nccl-vs-mpi" in skipped and "amp-fp32-accum" not in skipped
    proc = gpu_run(["--only", "amp-fp32-accum"], {"CUDA_VISIBLE_DEVICES": "", "WORK": str(tmp_path / "w")})
    assert proc.stdout.splitlines() == ["gpu_run: skip jittor-setup: no NVIDIA GPU visible",
                                        "gpu_run: skip amp-fp32-accum: no NVIDIA GPU visible"]
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(not HAVE_MPI, reason="Open MPI not installed (mpirun/mpicc missing)")
def test_the_steps_run_record_and_collect(tmp_path):
    """gpu_run.sh with a GPU assumed and a stand-in interpreter for the GPU venv, which runs the two
    scripts on the CPU (tiny shapes; the MPI mode with 2 processes): each step runs its script, keeps its
    JSON in the record, and its summary line becomes the note that collect's table shows; the scripts'
    outputs themselves are checked too (check_amp_output, check_mpi_output). Without the stand-in the real
    GPU runs fail on this machine and are recorded as failed."""
    real = sys.executable
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"""#!/bin/sh
case "$1" in
  benchmarks/gpu_amp_check.py) exec "{real}" "$@" --device cpu --small ;;
  benchmarks/gpu_nccl_check.py) exec "{real}" "$@" --device cpu --modes mpi --np 2 --model ccnet_demo \\
    --size 65 65 --batch 1 --warmup 0 --repeat 1 ;;
esac
exec "{real}" "$@"
""")
    python.chmod(0o755)
    work = tmp_path / "work"
    env = {"GPU_RUN_ASSUME_GPU": "1", "WORK": str(work), "GPU_VENV": str(venv), "SYS_PYTHON": real,
           "WHEELS": str(tmp_path / "wheels"), "JITTOR_HOME": os.path.expanduser("~")}
    out = tmp_path / "record.json"
    proc = gpu_run(["--only", "amp-numerics,nccl-vs-mpi,collect", "--out", str(out)], env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["name"]: r for r in map(json.loads, (work / "steps.jsonl").read_text().splitlines())}
    assert [(name, r["status"]) for name, r in records.items()] == [
        ("jittor-setup", "ok"), ("amp-numerics", "ok"), ("nccl-vs-mpi", "ok"), ("collect", "ok")], records
    assert records["amp-numerics"]["json"] == str(work / "amp_numerics.json")
    assert records["amp-numerics"]["note"].startswith("conv wgrad rel. error f32 ")
    assert records["nccl-vs-mpi"]["json"] == str(work / "nccl_vs_mpi.json")
    assert records["nccl-vs-mpi"]["note"].startswith("mpi ") and records["nccl-vs-mpi"]["note"].endswith("(-np 2)")
    check_amp_output((work / "amp-numerics.log").read_text().splitlines()[1:],
                      json.loads((work / "amp_numerics.json").read_text()))
    check_mpi_output((work / "nccl-vs-mpi.log").read_text().splitlines()[1:],
                     json.loads((work / "nccl_vs_mpi.json").read_text()))
    merged = {s["name"]: s for s in json.loads(out.read_text())["steps"]}
    assert merged["amp-numerics"]["result"]["conv_weight_grad"]["float32"]["max_rel_error"] < 1e-5
    assert merged["nccl-vs-mpi"]["result"]["modes"]["mpi"]["np"] == 2
    table = proc.stdout[proc.stdout.index("gpu_run: collect"):]  # collect's table follows its record line
    assert records["amp-numerics"]["note"] in table and records["nccl-vs-mpi"]["note"] in table
    # the real interpreter asks for CUDA: on this machine both steps fail, and say why
    work2 = tmp_path / "work2"
    proc = gpu_run(["--only", "amp-numerics,nccl-vs-mpi"], dict(env, GPU_VENV=os.path.dirname(os.path.dirname(real)),
                                                                 WORK=str(work2)), timeout=600)
    assert proc.returncode == 0
    records = {r["name"]: r for r in map(json.loads, (work2 / "steps.jsonl").read_text().splitlines())}
    assert records["amp-numerics"]["status"] == "failed" and "jt.has_cuda is False" in records["amp-numerics"]["note"]
    assert records["nccl-vs-mpi"]["status"] == "failed" and "no GPU visible" in records["nccl-vs-mpi"]["note"]
    assert records["amp-numerics"]["json"] == "" and records["nccl-vs-mpi"]["json"] == ""
