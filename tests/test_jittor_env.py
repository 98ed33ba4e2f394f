"""jittor_env: the variables it sets before Jittor is imported."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("nvcc_path", "use_mpi", "use_mkl", "use_parallel_op_compiler")
SHOW = f"import jittor_env, os, json; print(json.dumps({{k: os.environ.get(k) for k in {NAMES}}}))"


def run(env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in (*NAMES, "OMPI_COMM_WORLD_SIZE", "CCNET_JITTOR_ENV_USE_MPI")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), env


def test_no_gpu_disables_cuda_and_mpi_outside_mpirun():
    values, _ = run({"CUDA_VISIBLE_DEVICES": ""})
    assert values["nvcc_path"] == ""
    assert values["use_mpi"] == "0"


def test_user_settings_are_kept():
    values, _ = run({"CUDA_VISIBLE_DEVICES": "", "nvcc_path": "/opt/cuda/bin/nvcc", "use_mpi": "0"})
    assert values["nvcc_path"] == "/opt/cuda/bin/nvcc"
    values, _ = run({"use_mpi": "0", "OMPI_COMM_WORLD_SIZE": "2"})
    assert values["use_mpi"] == "0"  # the user's own choice, even under mpirun


def test_mpirun_started_from_a_configured_process_gets_mpi_back():
    # A parent process that imported jittor_env outside mpirun exports use_mpi=0;
    # its mpirun children must not inherit it.
    parent, env = run({"CUDA_VISIBLE_DEVICES": ""})
    assert parent["use_mpi"] == "0"
    child_env = dict(env, use_mpi="0", CCNET_JITTOR_ENV_USE_MPI="1", OMPI_COMM_WORLD_SIZE="2")
    out = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=child_env, capture_output=True, text=True,
                         check=True)
    assert '"use_mpi": null' in out.stdout


def test_one_compile_thread_per_usable_core_unless_the_user_says():
    values, env = run({})
    assert values["use_parallel_op_compiler"] == str(len(os.sched_getaffinity(0)))
    code = "import jittor_env, jittor as jt; print(jt.flags.use_parallel_op_compiler)"
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1"  # Jittor itself took it, from one allowed core
    values, _ = run({"use_parallel_op_compiler": "5"})
    assert values["use_parallel_op_compiler"] == "5"
