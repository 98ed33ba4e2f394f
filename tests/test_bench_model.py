"""benchmarks/bench_model.py end to end on the small demo preset, and its refusals."""
import json
import os
import subprocess
import sys

import pytest

import jittor as jt
from models.complexity import count_flops, count_parameters
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
    onnx = row.get("onnx")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert onnx is None and "no onnxruntime column" in result.stdout
    else:  # the same batch through onnxruntime on the CPU
        assert onnx["size"] == [64, 96] and onnx["ms"] > 0 and onnx["ms_per_image"] == onnx["ms"]
        assert "ORT CPU ms/img" in result.stdout


def test_refusals(tmp_path):
    result = bench("--models", "ccnet_nope", "--warmup", 0)
    assert result.returncode == 2 and "unknown model preset(s) ccnet_nope" in result.stderr
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    if not jt.has_cuda:
        result = bench("--models", "ccnet_demo", "--device", "cuda")
        assert result.returncode == 2 and "error: --device cuda: Jittor found no CUDA GPU" in result.stderr
        assert result.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- against PyTorch

torch = pytest.importorskip("torch", reason="bench_model_vs_torch compares with the PyTorch CPU build")


@pytest.mark.parametrize("preset,overrides", [
    ("ccnet_demo", {"backbone_kwargs": {"drop_path_rate": 0.0}}),
    ("ccnet_resnet50_mmseg", {}),       # v1c stem, ReLU, BN + residual + ReLU in every block
])
def test_the_pytorch_mirror_computes_the_same_network(preset, overrides):
    import numpy as np
    import torch_mirror
    from utils.jittor_fixes import materialize
    jt.set_global_seed(0)
    model = build_model(preset, 7, **overrides)
    materialize(model.state_dict().values())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for k in state:
        if k.endswith("gamma"):
            state[k] = np.full_like(state[k], 0.5)   # the attention branch counts
    model.load_parameters(state)
    mirror = torch_mirror.build(json.loads(json.dumps(torch_mirror.describe(model))))  # plain data in between
    torch_mirror.load_weights(mirror, state)
    assert set(mirror.state_dict()) - set(state) <= {k for k in mirror.state_dict() if "num_batches" in k}
    x = np.random.default_rng(0).standard_normal((1, 3, 65, 65)).astype(np.float32)
    model.eval()
    mirror.eval()
    with jt.no_grad(), torch.no_grad():
        ours, theirs = model(jt.array(x)).numpy(), mirror(torch.from_numpy(x)).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(ours).max()


def test_versus_pytorch_end_to_end(tmp_path):
    out = tmp_path / "vs.json"
    script = os.path.join(ROOT, "benchmarks", "bench_model_vs_torch.py")
    args = ["--models", "ccnet_demo", "--train-size", 64, 64, "--eval-size", 64, 64, "--warmup", 0, "--repeat", 1, "--rounds", 2,
            "--json", out]
    result = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    rows = {r["mode"]: r for r in record["results"]}
    assert set(rows) == {"train", "eval"}
    for row in rows.values():
        assert row["check_rel_err"] < 1e-4
        for side in ("jittor", "torch"):
            assert row[side]["ms"] > 0 and row[side]["peak_rss_mb"] >= row[side]["base_rss_mb"] > 0
        assert len(row["jittor"]["ms_rounds"]) == len(row["torch"]["ms_rounds"]) == 2
        ratios = [a / b for a, b in zip(row["jittor"]["ms_rounds"], row["torch"]["ms_rounds"])]
        assert row["time_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two rounds' ratios
    assert "time ratio" in result.stdout


def test_a_crashed_worker_is_reported_and_the_runner_goes_on():
    # Jittor's SIGCHLD handler would end the runner at the crash, before any report
    code = ("import sys; import jittor_env, jittor; from bench_common import run_worker; "
            "r = run_worker([sys.executable, '-c', 'import sys, os; sys.stderr.write(\"boom\\\\n\"); os.abort()'], "
            "'the worker'); print('runner alive', r)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "benchmarks")])})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "runner alive None" in result.stdout
    assert result.stderr.count("the worker failed (killed by SIGABRT), running it once more:\nboom") == 1
    assert result.stderr.count("the worker failed (killed by SIGABRT):\nboom") == 1  # the second crash ends it


def test_a_worker_that_exits_with_an_error_is_reported_once(capsys):
    from bench_common import run_worker
    assert run_worker([sys.executable, "-c", "import sys; sys.exit('no such preset')"], "the worker") is None
    assert capsys.readouterr().err == "the worker failed (exit status 1):\nno such preset\n\n"
