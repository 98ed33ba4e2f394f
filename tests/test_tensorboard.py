"""train.py --tensorboard: event files in the run folder, read back with TensorBoard's own reader."""
import json
import os

import pytest

from engine.run_log import TENSORBOARD_DIR
from seg_fixtures import run_train, train_args, write_blocks_dataset

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="TensorBoard's event reader (requirements-dev.txt)")


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=6, num_val=3)


def read_events(run):
    acc = event_accumulator.EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_curves_and_a_resume_without_duplicates(blocks, tmp_path):
    """Run A logs iterations 1..6 and checkpoints at 4 and 6; resuming from the checkpoint of iteration 4
    logs 5..8 again: TensorBoard must show 1..8 once each (A's 5 and 6 purged), the validations at 4 and 8,
    the per-class IoU under the class names, and the same numbers as log.jsonl."""
    out = tmp_path / "run"
    run_train(train_args(blocks, out, "--iters", 8, "--snapshot-interval", 4, "--eval-interval", 4,
                         "--stop-after", 6, "--tensorboard"))
    first = read_events(out)
    assert [e.step for e in first.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    run_train(train_args(blocks, out, "--resume", out / "checkpoint_000004.pkl", "--eval-interval", 4))
    acc = read_events(out)
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "train/loss_main", "train/loss_aux", "train/lr", "train/time", "train/data_time",
                "train/memory_mb", "val/mIoU", "val/mAcc", "val/aAcc", "val/IoU/road", "val/IoU/car"):
        assert tag in tags, (tag, tags)
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))
    assert [e.step for e in acc.Scalars("val/mIoU")] == [4, 8]
    # the resumed run said where its curves restart (a SessionLog START at the first step after the checkpoint),
    # so TensorBoard drops A's steps 5 and 6 whatever order it reads the files in
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    starts = [e.step for f in sorted((out / TENSORBOARD_DIR).iterdir()) for e in EventFileLoader(str(f)).Load()
              if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [5]
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    losses = {r["iter"]: r["loss"] for r in rows if "loss" in r}
    for e in acc.Scalars("train/loss"):
        assert e.value == pytest.approx(losses[e.step], rel=1e-6)
    lrs = {r["iter"]: r["lr"] for r in rows if "lr" in r}
    assert all(e.value == pytest.approx(lrs[e.step], rel=1e-6) for e in acc.Scalars("train/lr"))
    val = {r["iter"]: r["val/mIoU"] for r in rows if "val/mIoU" in r}
    assert all(e.value == pytest.approx(val[e.step], rel=1e-6) for e in acc.Scalars("val/mIoU"))


def test_without_the_flag_no_events_and_a_missing_package_is_one_error(blocks, tmp_path, monkeypatch):
    out = tmp_path / "plain"
    run_train(train_args(blocks, out, "--iters", 1))
    assert not os.path.exists(out / TENSORBOARD_DIR)
    import builtins
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name == "tensorboardX":
            raise ImportError("No module named 'tensorboardX'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    with pytest.raises(ValueError, match="tensorboardX"):
        run_train(train_args(blocks, tmp_path / "tb", "--iters", 1, "--tensorboard"))
    assert not os.path.exists(tmp_path / "tb" / "config.json")
