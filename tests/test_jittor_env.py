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


# --------------------------------------------------------------------------- Jittor's errors, PyTorch

ERRORS = """
import sys, importlib.util
import jittor_env, jittor, jittor_utils
jittor_utils.LOG.i("an info line"); jittor_utils.LOG.w("a warning line")
try:
    jittor_utils.LOG.f("a fatal line")
    print("fatal: no exception")
except RuntimeError as exc:
    print("fatal raised:", "a fatal line" in str(exc))
print("torch installed:", importlib.util.find_spec("torch") is not None, "imported:", "torch" in sys.modules)
"""


def test_jittor_hides_info_and_warnings_not_errors_and_never_imports_torch():
    env = {k: v for k, v in os.environ.items() if k not in ("log_silent", "CCNET_JITTOR_ENV_LOG_SILENT",
                                                             "FIX_TORCH_ERROR", "use_mpi")}
    out = subprocess.run([sys.executable, "-c", ERRORS], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "fatal raised: True" in text  # Jittor 1.3.11 alone: LOG.f does nothing under log_silent
    assert "an info line" not in text and "a warning line" not in text
    # torch is installed for the tests; Jittor would import it into this (non-MPI) process
    assert "torch installed: True imported: False" in text


# --------------------------------------------------------------------------- the CUDA toolchain of a GPU machine

def _executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _cuda_tree(root, gcc_limit):
    nvcc = _executable(root / "cuda" / "bin" / "nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release 11.8, V11.8.89'\n")
    header = root / "cuda" / "targets" / "x86_64-linux" / "include" / "crt" / "host_config.h"
    header.parent.mkdir(parents=True)
    header.write_text(f"#if defined(__GNUC__)\n#if __GNUC__ > {gcc_limit}\n#error -- unsupported GNU version!\n"
                      "#endif\n#endif\n")
    return nvcc


def test_gpu_toolchain_problem(tmp_path):
    import jittor_env
    home = str(tmp_path / "home")
    nvcc = _cuda_tree(tmp_path, 11)
    g12 = _executable(tmp_path / "bin" / "g++", "#!/bin/sh\necho 12\n")
    g11 = _executable(tmp_path / "old" / "g++-11", "#!/bin/sh\necho 11.4.0\n")
    empty_path = str(tmp_path / "nothing")

    problem = jittor_env.gpu_toolchain_problem({"JITTOR_HOME": home, "PATH": empty_path, "nvcc_path": nvcc,
                                                "cc_path": g12})
    assert problem.startswith(f"the host compiler {g12} is gcc 12, but {nvcc} accepts gcc <= 11") \
        and "cc_path=" in problem and "module load gcc/11" in problem
    assert jittor_env.gpu_toolchain_problem({"JITTOR_HOME": home, "nvcc_path": nvcc, "cc_path": g11}) is None
    # the same nvcc with a CUDA 12.4-style header accepts gcc 12
    nvcc13 = _cuda_tree(tmp_path / "new", 13)
    assert jittor_env.gpu_toolchain_problem({"JITTOR_HOME": home, "nvcc_path": nvcc13, "cc_path": g12}) is None
    # nvcc_path="": the user chose the CPU
    assert jittor_env.gpu_toolchain_problem({"JITTOR_HOME": home, "nvcc_path": ""}) is None
    # a wrong nvcc_path
    problem = jittor_env.gpu_toolchain_problem({"JITTOR_HOME": home, "nvcc_path": str(tmp_path / "no" / "nvcc")})
    assert "is not an executable file" in problem


def test_gpu_without_nvcc_is_one_error_line_before_jittor(tmp_path, monkeypatch):
    import jittor_env
    monkeypatch.setattr(jittor_env.shutil, "which", lambda name: None)
    monkeypatch.setattr(jittor_env, "_NVCC_PLACES", (str(tmp_path / "usr" / "bin" / "nvcc"),))
    problem = jittor_env.gpu_toolchain_problem({"JITTOR_HOME": str(tmp_path / "home")})
    assert problem.startswith("an NVIDIA GPU is visible but no nvcc was found") and "module load cuda" in problem
    # a Jittor-installed CUDA is Jittor's business
    (tmp_path / "home" / ".cache" / "jittor" / "jtcuda").mkdir(parents=True)
    assert jittor_env.gpu_toolchain_problem({"JITTOR_HOME": str(tmp_path / "home")}) is None
    # in a process: the error line, status 1, before Jittor is imported
    fake_gpu = f"""
import glob, os, shutil, sys
glob.glob = lambda pattern: ["/dev/nvidia0"]  # a GPU
shutil.which = lambda name: None                # no nvcc on PATH
os.access = lambda path, mode: False            # nor in Jittor's fixed places
sys.path.insert(0, {ROOT!r})
try:
    import jittor_env
finally:
    print("jittor imported:", "jittor" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("nvcc_path", "CUDA_VISIBLE_DEVICES", "cc_path")}
    env["JITTOR_HOME"] = str(tmp_path / "empty_home")
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.run([sys.executable, "-c", fake_gpu], env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path))
    assert proc.returncode == 1 and "jittor imported: False" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: an NVIDIA GPU is visible but no nvcc was found")
