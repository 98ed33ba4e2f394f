"""A disk that fills up (or a quota, a read-only file system) while a run writes: one error line, nothing lost."""
import errno
import os
import shutil
import subprocess
import sys

import pytest

import train
from engine import snapshots
from engine.checkpoint import load_checkpoint
from seg_fixtures import train_args, write_blocks_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=4, num_val=2)


def test_a_failing_checkpoint_write_is_one_error_line_naming_what_was_kept(blocks, tmp_path, capsys, monkeypatch):
    real, calls = snapshots.save_checkpoint, []

    def full_at_the_second(path, payload):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp-1")
        return real(path, payload)
    monkeypatch.setattr(snapshots, "save_checkpoint", full_at_the_second)
    out = tmp_path / "run"
    status = train.main([str(a) for a in train_args(blocks, out, "--iters", 4, "--snapshot-interval", 1)])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert status == 2 and "Traceback" not in err, err
    assert line.startswith(f"error: No space left on device writing {out}/checkpoint_000002.pkl after iteration 2")
    assert f"last checkpoint {out}/checkpoint_000001.pkl; continue with: python train.py --resume {out}" in line
    assert load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == 1
    assert line[len("error: "):] in open(out / "train.log").read()


def _small_tmpfs(path, size):
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk(blocks, tmp_path):
    disk = tmp_path / "disk"
    if not _small_tmpfs(disk, "700k"):  # one checkpoint of the tiny model (about 410 KB) fits, two do not
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "run"
        proc = subprocess.run([sys.executable, "train.py", *map(str, train_args(blocks, out, "--iters", 4,
                                                                                "--snapshot-interval", 1))],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        line = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert line.startswith(f"error: No space left on device writing {out}/checkpoint_000002.pkl after "), line
        assert "continue with:" in line
        assert load_checkpoint(str(out / "checkpoint_last.pkl"))["iter"] == 1
        assert not [n for n in os.listdir(out) if ".tmp-" in n]  # no half-written file left
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
