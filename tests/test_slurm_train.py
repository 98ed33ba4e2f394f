"""scripts/slurm_train.sh without Slurm (DRY_RUN=1): NCCL by default, found or refused; a warm-up per node."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "slurm_train.sh")


def dry_run(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("NCCL_HOME", "NCCL_ROOT", "CUDA_HOME", "nccl_include_path", "nccl_lib_path", "use_nccl")}
    base.update(DRY_RUN="1", SLURM_JOB_NUM_NODES="2", SLURM_NTASKS_PER_NODE="4", SLURM_SUBMIT_DIR=ROOT,
                PYTHON=str(tmp_path / "no_python"), RUN_DIR=str(tmp_path / "run"), CUDA_HOME=str(tmp_path / "none"))
    base.update(env)
    return subprocess.run(["bash", SCRIPT], env=base, capture_output=True, text=True, timeout=60)


def nccl_tree(root, lib_name="libnccl.so"):
    (root / "include").mkdir(parents=True)
    (root / "include" / "nccl.h").write_text("")
    (root / "lib").mkdir()
    (root / "lib" / lib_name).write_bytes(b"")
    return root


def test_nccl_is_the_default_and_is_found_and_forwarded(tmp_path):
    nccl = nccl_tree(tmp_path / "nccl")
    proc = dry_run(tmp_path, NCCL_HOME=str(nccl))
    assert proc.returncode == 0, proc.stderr
    assert f"GPU_BIND=nccl (NCCL {nccl}/lib)" in proc.stdout
    warm, launch = proc.stdout.strip().splitlines()[-2:]
    # one process per node imports Jittor before the 8 training processes start
    assert warm.startswith("mpirun -np 2 --map-by ppr:1:node") and "import jittor_env, jittor" in warm
    assert launch.startswith("mpirun -np 8 --map-by ppr:4:node") and "train.py" in launch
    for name in ("use_nccl", "nccl_include_path", "nccl_lib_path"):
        assert f"-x {name}" in launch and f"-x {name}" in warm
    proc = dry_run(tmp_path, NCCL_HOME=str(nccl), LAUNCHER="srun", WARM_UP="0")
    assert proc.returncode == 0 and "--ntasks=2 --ntasks-per-node=1" not in proc.stdout
    assert "srun --mpi=pmix --ntasks=8 --ntasks-per-node=4 --kill-on-bad-exit=1" in proc.stdout


def test_without_nccl_one_error_line_names_the_fixes(tmp_path):
    proc = dry_run(tmp_path)
    assert proc.returncode == 2 and proc.stdout.count("mpirun") == 0
    assert proc.stderr.startswith("error: GPU_BIND=nccl but no NCCL found") and "GPU_BIND=rank" in proc.stderr
    wheel = nccl_tree(tmp_path / "wheel", "libnccl.so.2")
    proc = dry_run(tmp_path, NCCL_HOME=str(wheel))
    assert proc.returncode == 2 and f"ln -s libnccl.so.2 {wheel}/lib/libnccl.so" in proc.stderr
    # the documented fallback: collectives through the CPU, no NCCL needed
    proc = dry_run(tmp_path, GPU_BIND="rank")
    assert proc.returncode == 0 and "GPU_BIND=rank," in proc.stdout
    assert "-x use_nccl" in proc.stdout and "nccl_lib_path" not in proc.stdout  # use_nccl=0, warm-up included
