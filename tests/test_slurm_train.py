"""scripts/slurm_train.sh without Slurm: NCCL by default, found or refused, a warm-up per node (DRY_RUN=1); the
time-limit signal checkpoints and requeues, and the requeued job resumes (mpirun here, scontrol a stub)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from engine.checkpoint import load_checkpoint
from seg_fixtures import TINY_MODEL_ARGS, write_blocks_dataset

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


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed")
def test_slurm_warning_signal_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path):
    """The script as Slurm runs it (mpirun on this machine, scontrol a stub): SIGUSR1 to the batch shell."""
    data = write_blocks_dataset(str(tmp_path / "data"), num_train=6, num_val=2)
    stub = tmp_path / "bin" / "scontrol"
    stub.parent.mkdir()
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    stub.chmod(0o755)
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("use_mpi", "use_nccl", "CUDA_VISIBLE_DEVICES")}
    env.update(SLURM_JOB_ID="42", SLURM_JOB_NUM_NODES="1", SLURM_NTASKS_PER_NODE="2", SLURM_SUBMIT_DIR=ROOT,
               PYTHON=sys.executable, DATASET="demo", DATA_PATH=data, MODEL="ccnet_demo", PRETRAINED="",
               RUN_DIR=str(run_dir), GPU_BIND="rank", WARM_UP="0", MPIRUN_ARGS="--allow-run-as-root --oversubscribe",
               PATH=f"{stub.parent}:{env['PATH']}", OMP_NUM_THREADS="1")
    extra = ["--crop-size", "32", "-b", "2", "-j", "0", "--eval-interval", "0", *TINY_MODEL_ARGS]
    # Slurm starts the batch script with default signal dispositions (this test process ignores SIGUSR1)
    default_usr1 = lambda: signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(["bash", SCRIPT, "--iters", "100000", "--snapshot-interval", "1000", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_usr1)
    log = run_dir / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(open(log).readlines()) < 3):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)  # --signal=B:USR1@600: to the batch shell
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 138, stdout[-2000:] + stderr[-3000:]
    assert "slurm_train: SIGUSR1: asking the training processes to checkpoint and stop" in stdout
    assert "requeueing job 42" in stdout and (tmp_path / "scontrol.log").read_text() == "requeue 42\n"
    iteration = load_checkpoint(str(run_dir / "checkpoint_last.pkl"))["iter"]
    assert iteration >= 3 and stderr.count(f"stopped by SIGUSR1 at iteration {iteration};") == 1, stderr[-3000:]
    # the requeued job: same script, the run folder has a checkpoint, so it resumes
    proc = subprocess.run(["bash", SCRIPT, "--iters", str(iteration + 1)], env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=default_usr1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming at iteration {iteration}" in proc.stdout
    assert load_checkpoint(str(run_dir / "checkpoint_last.pkl"))["iter"] == iteration + 1
