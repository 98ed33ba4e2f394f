"""Run folders on a cluster: one training process per folder, folders that move, starts that never began."""
import os
import shutil
import subprocess
import sys

import pytest

import train
from cli import run_folder
from engine.checkpoint import load_checkpoint
from seg_fixtures import run_train, train_args, write_blocks_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=4, num_val=2)


run = run_train  # train.py's run in this process (errors raised)


def error_of(args, capsys):
    status = train.main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


CLAIM = """
import sys
sys.path.insert(0, {root!r})
from cli import run_folder
try:
    run_folder.claim(sys.argv[1])
    print("claimed", flush=True)
except run_folder.RunFolderError as exc:
    print("refused", exc, flush=True)
sys.stdin.read()  # hold the claim until told to go
"""


def test_only_one_of_many_simultaneous_starts_claims_a_folder(tmp_path):
    folder = str(tmp_path / "run")
    script = CLAIM.format(root=ROOT)
    for attempt in range(5):
        procs = [subprocess.Popen([sys.executable, "-c", script, folder], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(6)]
        firsts = [p.stdout.readline().strip() for p in procs]   # every process has tried before any lets go
        for p in procs:
            p.communicate("", timeout=60)
        assert sum(line == "claimed" for line in firsts) == 1, firsts
        holder = next(p.pid for p, line in zip(procs, firsts) if line == "claimed")
        refused = [line for line in firsts if line != "claimed"]
        assert all(f"in use by process {holder} on " in line and "--output-dir" in line for line in refused)
    # every holder has ended: the OS dropped the lock, the folder can be claimed again
    run_folder.claim(folder)
    run_folder.release(folder)


def test_a_second_training_into_a_busy_folder_is_refused_and_changes_nothing(blocks, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", CLAIM.format(root=ROOT), str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "claimed"
    try:
        status, line = error_of(train_args(blocks, out, "--iters", 1), capsys)
        assert status == 2 and line.startswith(f"error: the run folder {out} is in use by process {holder.pid}")
        assert os.listdir(out) == [run_folder.LOCK]
    finally:
        holder.communicate("", timeout=60)
    run(train_args(blocks, out, "--iters", 1))  # the holder has ended: free again
    assert load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == 1


def test_a_moved_or_copied_run_continues_where_it_is(blocks, tmp_path, capsys):
    first = tmp_path / "first"
    run(train_args(blocks, first, "--iters", 3, "--stop-after", 1))
    capsys.readouterr()
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    moved = tmp_path / "moved"
    shutil.move(str(first), str(moved))
    for folder in (copy, moved):
        run(["--resume", folder, "--no-progress", "--iters", 2])
        out = capsys.readouterr().out
        assert f"note: this run was started in {first}; it continues in {folder}" in out
        assert load_checkpoint(str(folder / "checkpoint_last.pkl"))["iter"] == 2
    assert not first.exists()  # the old path is not brought back


def test_a_start_that_never_reached_an_iteration_does_not_block_the_next(blocks, tmp_path, capsys):
    out = tmp_path / "run"
    # a run that stops at its first batch: every training image is corrupt
    broken = tmp_path / "broken"
    shutil.copytree(blocks, broken)
    for base, _, names in os.walk(broken / "leftImg8bit" / "train"):
        for name in names:
            open(os.path.join(base, name), "wb").write(b"not an image")
    status, line = error_of(train_args(broken, out, "--iters", 1), capsys)
    assert status == 2 and "cannot read image" in line
    assert "config.json" in os.listdir(out)  # what such a start leaves
    run(train_args(blocks, out, "--iters", 1))  # before: "already holds a run ... --resume" (no checkpoint)
    assert load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == 1
    # a run with iterations but no checkpoint: refused, and the message does not offer a dead --resume
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text('{"run_format": "%s"}' % run_folder.RUN_FORMAT)
    (no_checkpoint / "log.jsonl").write_text('{"iter": 1, "loss": 1.0}\n')
    status, line = error_of(train_args(blocks, no_checkpoint, "--iters", 1), capsys)
    assert status == 2 and "no checkpoint to continue from" in line and "--resume" not in line


def test_a_stale_name_in_the_lock_file_is_not_taken_for_the_holder(tmp_path):
    """A holder killed before it could clear its name leaves it in the lock file; a later holder that has
    locked but not yet written its own must not be reported under the dead one's name."""
    import socket
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / run_folder.LOCK
    lock.write_text(f"process 999999 on {socket.gethostname()}\n")  # the killed holder's
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('locked', flush=True); "
                               "sys.stdin.read()", str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_folder.RunFolderError, match=f"in use by process {holder.pid}, which"):
            run_folder.claim(str(folder))
    finally:
        holder.communicate("", timeout=60)
    run_folder.claim(str(folder))  # the holder ended: free again, and released without a name left behind
    run_folder.release(str(folder))
    assert lock.read_text() == ""
