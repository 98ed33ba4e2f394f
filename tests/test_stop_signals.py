"""SIGTERM and SIGUSR1, as a cluster sends them, to real training, evaluation and MPI processes."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from engine.checkpoint import load_checkpoint
from seg_fixtures import train_args, write_blocks_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = shutil.which("mpirun")


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=6, num_val=2)


def start(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("use_mpi", None)  # under mpirun the children decide (see test_mpi.py)
    return subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(out, rows, proc):
    log = out / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(open(log).readlines()) < rows):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


@pytest.mark.parametrize("signum,workers", [(signal.SIGTERM, 0), (signal.SIGUSR1, 2)])
def test_a_stop_signal_ends_training_with_a_checkpoint_of_that_iteration(blocks, tmp_path, signum, workers):
    out = tmp_path / "run"
    proc = start([sys.executable, "train.py", *train_args(blocks, out, "--iters", 100000, "--snapshot-interval",
                                                          1000, "-j", workers)])
    wait_for_rows(out, 3, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"stopped by {name} at iteration ") and f"continue with: python train.py --resume {out}" in line
    iteration = int(line.split(" at iteration ")[1].split(";")[0])
    assert load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == iteration >= 3  # not the snapshot interval
    assert line in open(out / "train.log").read()
    assert "Traceback" not in stderr and "Caught" not in stderr and "segfault" not in stderr, stderr[-3000:]
    # the suggested command continues it
    done = subprocess.run([sys.executable, "train.py", "--resume", str(out), "--iters", str(iteration + 1),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and f"resuming at iteration {iteration}" in done.stdout, done.stderr[-3000:]


def test_sigterm_stops_evaluation_cleanly(tmp_path):
    data = write_blocks_dataset(str(tmp_path / "data"), num_train=2, num_val=300)
    run = tmp_path / "run"
    subprocess.run([sys.executable, "train.py", *map(str, train_args(data, run, "--iters", 1))], cwd=ROOT,
                   check=True, capture_output=True, timeout=600)
    out = tmp_path / "ev"
    proc = start([sys.executable, "evaluate.py", "--checkpoint", run, "--no-progress", "-j", "0", "--save-pred",
                  "--output-dir", out])
    deadline = time.time() + 300
    while time.time() < deadline and not any(name.endswith(".png") for _, _, names in os.walk(out) for name in names):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # while it writes predictions
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and stderr.strip().splitlines()[-1] == "stopped by SIGTERM", stderr[-3000:]
    assert "Traceback" not in stderr and not (out / "results.json").exists()
    assert not [name for _, _, names in os.walk(out) for name in names if ".tmp" in name]


@pytest.mark.skipif(MPIRUN is None, reason="Open MPI not installed")
def test_sigusr1_to_mpirun_stops_every_rank_at_one_iteration(blocks, tmp_path):
    out = tmp_path / "run"
    proc = start([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "train.py",
                  *train_args(blocks, out, "--iters", 100000, "--snapshot-interval", 1000, "-b", 2)])
    wait_for_rows(out, 3, proc)
    proc.send_signal(signal.SIGUSR1)  # what slurm_train.sh passes on at Slurm's warning signal
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGUSR1, stderr[-3000:]
    assert stderr.count("stopped by SIGUSR1 at iteration") == 1, stderr[-3000:]
    iteration = load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"]
    assert f"stopped by SIGUSR1 at iteration {iteration};" in stderr


def test_training_with_workers_ends_when_its_iterations_end_mid_pass(blocks, tmp_path):
    # the loader workers are ended with SIGTERM at exit: a handler inherited from the main process must not
    # keep them (and so the main process, which joins them) alive
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "train.py", *map(str, train_args(blocks, out, "--iters", 4, "-j", 2))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done: iteration 4" in proc.stdout, proc.stderr[-3000:]
