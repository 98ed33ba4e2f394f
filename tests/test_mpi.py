"""Two MPI processes on the CPU (``mpirun -np 2``): training and evaluation.

* Training with a global batch of 4 over 2 processes (2 each, synchronised
  BatchNorm, all-reduced gradients) must keep the weights identical on both
  ranks and match one process with batch 4 within float tolerance. The data
  has no ignored pixel, so each rank's mean loss over its half of the batch
  averages to the single-process mean; dropout is off (its masks are drawn
  per rank).
* Stopping and resuming the 2-process run gives exactly the uninterrupted one.
* Evaluation over 2 processes (an odd number of images, so Jittor repeats one
  on both ranks) must give exactly the single-process confusion matrix.
* OHEM's ``--ohem-min-kept`` counts the pixels of the global batch: 2
  processes select the same pixels as one.
* A run is resumed only with the number of processes it was trained with.
* A video preset trains on clips over 2 processes as in one, and evaluates
  its clips over 2 processes to the same confusion matrix.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine.checkpoint import load_checkpoint
from seg_fixtures import TINY_MODEL_ARGS, train_args, write_blocks_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = shutil.which("mpirun")

pytestmark = pytest.mark.skipif(
    MPIRUN is None or shutil.which("mpicc") is None,
    reason="Open MPI not installed (mpirun/mpicc missing; apt-get install openmpi-bin libopenmpi-dev)")


def run(cmd, timeout=900, status=0):
    env = dict(os.environ)
    # jittor_env set use_mpi=0 in this (non-MPI) test process; the children under
    # mpirun must decide for themselves, or Jittor crashes (in_mpi without the module).
    env.pop("use_mpi", None)
    env.setdefault("OMP_NUM_THREADS", "1")  # two processes share the cores
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == status, output[-4000:]
    return output


def mpirun(n, script, args, status=0):
    mpi = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(n)]
    return run(mpi + [sys.executable, script] + [str(a) for a in args], status=status)


def evaluate_on_one_and_two(run_folder, tmp_path):
    """evaluate.py on ``run_folder`` in one process and under ``mpirun -np 2``: (the mpirun output, the two
    results.json)."""
    ev = ["--checkpoint", run_folder, "--no-progress", "-j", "0"]
    run([sys.executable, "evaluate.py"] + [str(a) for a in ev + ["--output-dir", tmp_path / "ev1"]])
    out = mpirun(2, "evaluate.py", ev + ["--output-dir", tmp_path / "ev2"])
    return out, *(json.load(open(tmp_path / name / "results.json")) for name in ("ev1", "ev2"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("mpi_data")), num_train=8, num_val=5)


def test_two_processes_match_one(data, tmp_path):
    extra = ["-b", "4", "--iters", "4", "--crop-size", "32", "64", "--no-random-scale",
             "--model-opt", "dropout=0", "--eval-interval", "0"]
    single_args = train_args(data, tmp_path / "single", *extra)
    mpi_args = train_args(data, tmp_path / "mpi", *extra)
    run([sys.executable, "train.py"] + [str(a) for a in single_args])
    out = mpirun(2, "train.py", mpi_args)
    assert "over 2 process(es)" in out
    # rank 1's parameters compared with rank 0's after training (utils.comm.params_in_sync)
    assert "parameters across 2 processes: max abs difference 0\n" in out
    a = load_checkpoint(str(tmp_path / "single" / "checkpoint_last.pkl"))
    b = load_checkpoint(str(tmp_path / "mpi" / "checkpoint_last.pkl"))
    assert a["iter"] == b["iter"] == 4 and b["world_size"] == 2
    for key in a["model"]:
        np.testing.assert_allclose(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-5, err_msg=key)
    # only rank 0 writes: one log line per iteration
    lines = [json.loads(x) for x in open(tmp_path / "mpi" / "log.jsonl")]
    assert [x["iter"] for x in lines] == [1, 2, 3, 4]
    single_losses = [json.loads(x)["loss"] for x in open(tmp_path / "single" / "log.jsonl")]
    np.testing.assert_allclose([x["loss"] for x in lines], single_losses, rtol=1e-4)

    # resuming under MPI: 2 iterations, stop, resume for 2 more == the 4-iteration MPI run
    mpirun(2, "train.py", train_args(data, tmp_path / "mpi_half", *extra, "--stop-after", "2"))
    out = mpirun(2, "train.py", ["--resume", tmp_path / "mpi_half", "--no-progress", "-j", "2"])
    assert "resuming at iteration 2" in out and "max abs difference 0\n" in out
    c = load_checkpoint(str(tmp_path / "mpi_half" / "checkpoint_last.pkl"))
    assert c["iter"] == 4
    for key in b["model"]:
        np.testing.assert_array_equal(c["model"][key], b["model"][key], err_msg=key)

    # evaluation: 5 val images over 2 processes (batch 1 each) == one process
    out, r1, r2 = evaluate_on_one_and_two(tmp_path / "single", tmp_path)
    assert "2 process(es)" in out
    assert r1["images"] == r2["images"] == 5
    assert r1["confusion_matrix"] == r2["confusion_matrix"]


def test_video_preset_on_two_processes_matches_one(tmp_path):
    from datasets import demo
    clips = str(tmp_path / "clips")
    demo.write_video_clips(clips, num_train_seqs=2, num_val_seqs=1, num_test_seqs=1, labelled_per_seq=3,
                           label_every=4, height=32, width=48)
    args = ["--dataset", "demo_video", "--data-path", clips, "--crop-size", "32", "48", "-b", "4", "--iters", "3",
            "--clip-length", "3", "--clip-stride", "2", "--model-opt", "dropout=0", "--eval-interval", "0",
            "-j", "0", "--no-progress", "--snapshot-interval", "100", "--model", "ccnet3d_demo", *TINY_MODEL_ARGS[2:]]
    run([sys.executable, "train.py", "--output-dir", str(tmp_path / "one")] + args)
    out = mpirun(2, "train.py", ["--output-dir", tmp_path / "two"] + args)
    assert "over 2 process(es)" in out and "max abs difference 0\n" in out
    a = load_checkpoint(str(tmp_path / "one" / "checkpoint_last.pkl"))
    b = load_checkpoint(str(tmp_path / "two" / "checkpoint_last.pkl"))
    for key in a["model"]:
        np.testing.assert_allclose(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-5, err_msg=key)
    out, r1, r2 = evaluate_on_one_and_two(tmp_path / "one", tmp_path)
    assert "clips of 3 frames 2 apart" in out
    assert r1["images"] == r2["images"] == 3 and r1["confusion_matrix"] == r2["confusion_matrix"]


def test_ohem_min_kept_counts_the_global_batch(data, tmp_path):
    # a threshold of 0.01 lets the min_kept-th smallest probability decide: 3200 / 64 = 50 of the
    # 4 x 32 subsampled pixels of the global batch (25 of each rank's 64 would be another selection)
    extra = ["-b", "4", "--iters", "2", "--crop-size", "32", "64", "--no-random-scale", "--no-random-mirror",
             "--model-opt", "dropout=0", "--ohem", "--ohem-thresh", "0.01", "--ohem-min-kept", "3200"]
    run([sys.executable, "train.py"] + [str(a) for a in train_args(data, tmp_path / "one", *extra)])
    mpirun(2, "train.py", train_args(data, tmp_path / "two", *extra))
    rows = [[json.loads(x) for x in open(tmp_path / name / "log.jsonl")] for name in ("one", "two")]
    for a, b in zip(*rows):
        assert 0.01 < a["ohem_threshold"] < 1.0  # the min_kept branch, not the fixed threshold
        assert b["ohem_threshold"] == pytest.approx(a["ohem_threshold"], rel=1e-5)
        assert b["ohem_kept"] == a["ohem_kept"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    # resuming a 1-process run with 2 processes is refused before any work
    out = mpirun(2, "train.py", ["--resume", tmp_path / "one", "--iters", "3", "--no-progress"], status=2)
    assert "trained with 1 process(es), this run has 2" in out and "python train.py --resume" in out
    assert load_checkpoint(str(tmp_path / "one" / "checkpoint_last.pkl"))["iter"] == 2


COLLECTIVES = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
import jittor_env, jittor as jt
from engine.checkpoint import TrainingStopped
from engine.snapshots import Snapshots
from evaluation.metrics import ConfusionMatrix
from utils.comm import all_reduce_counts, rank
r = rank()
def say(*words):  # one write per line: the two ranks share the output pipe
    sys.stdout.write(" ".join(map(str, words)) + "\\n")
    sys.stdout.flush()
say("counts", r, all_reduce_counts(np.array([2 ** 24 + 1, 2 ** 40 + 3, 7]) * (r + 1)).tolist())
matrix = ConfusionMatrix(2)
matrix.mat[:] = [[2 ** 24 + 1, 1], [0, 3]]
say("matrix", r, matrix.reduce().mat.tolist())
model = jt.nn.Linear(2, 2)
if r == 0:  # rank 0 checks the weights for the job
    model.weight.update(jt.array(np.full((2, 2), np.nan, np.float32)))
snapshots = Snapshots(model, jt.optim.SGD(model.parameters(), 0.1), {out!r}, 0, {{}}, {{}})
try:
    snapshots.save(1, 0.1)
    say("saved", r)
except TrainingStopped as exc:
    say("stopped", r, "not finite" in str(exc))
"""


def test_counts_are_reduced_exactly_and_a_non_finite_weight_stops_every_rank(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES.format(root=ROOT, out=str(tmp_path / "run")))
    (tmp_path / "run").mkdir()
    out = mpirun(2, str(script), [])
    for r in (0, 1):
        # above 2**24 a float32 all-reduce (what jt.array makes of float64) rounds
        assert f"counts {r} [{3 * (2 ** 24 + 1)}, {3 * (2 ** 40 + 3)}, 21]" in out
        assert f"matrix {r} [[{2 * (2 ** 24 + 1)}, 2], [0, 6]]" in out
        assert f"stopped {r} True" in out, out  # not only rank 0: rank 1 would wait in its next collective
    assert not os.listdir(tmp_path / "run")


def test_one_failing_rank_ends_the_job_with_its_message_once(data, tmp_path):
    import time
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    run([sys.executable, "train.py"] + [str(a) for a in train_args(copy, tmp_path / "run", "--iters", "1")])
    val = [line.split()[0] for line in open(copy / "val.lst")]
    (copy / val[1]).write_bytes(b"not an image")  # the second image: rank 1's first (batch of 2 over 2 ranks)
    t0 = time.time()
    out = mpirun(2, "evaluate.py", ["--checkpoint", tmp_path / "run", "--no-progress", "-j", "0",
                                    "--output-dir", tmp_path / "ev"], status=2)
    assert time.time() - t0 < 300  # before: rank 0 waited in its all-reduce until killed
    assert out.count("cannot read image") == 1 and "error: (rank 1 of 2) cannot read image" in out, out


def test_a_stop_every_rank_takes_is_reported_once(data, tmp_path):
    # a learning rate that makes the loss infinite at once: each rank sees the all-reduced loss and stops
    out = mpirun(2, "train.py", train_args(data, tmp_path / "nan", "-b", "2", "--iters", "3", "--lr", "1e30"),
                 status=2)
    assert out.count("error:") == 1 and "(rank 1 of 2)" not in out, out
