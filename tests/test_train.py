"""train.py and the training loop: exact resume, checkpoints, logs, non-finite loss, bad input."""
import json
import os

import numpy as np
import pytest

from engine import checkpoint, optim, train_loop
from utils.weight_files import save_weights
from seg_fixtures import run_train, train_args, write_blocks_dataset


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    # 6 training images, batch 2: 3 iterations per epoch
    return write_blocks_dataset(str(tmp_path_factory.mktemp("blocks")), num_train=6, num_val=3)


run = run_train  # train.py's run in this process (errors raised)


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()) for k in a)


@pytest.mark.parametrize("workers", [0, 4])
def test_resume_is_exact(blocks, tmp_path, workers):
    """6 iterations in one run == 2 iterations, stop, resume, 4 more (mid-epoch stop, epoch boundary after)."""
    full, half = tmp_path / "full", tmp_path / "half"
    # random scale, mirror and dropout all on: every random draw must repeat
    run(train_args(blocks, full, "--iters", 6, "-j", workers))
    first = run(train_args(blocks, half, "--iters", 6, "--stop-after", 2, "-j", workers))
    assert first["iter"] == 2
    ck2 = checkpoint.load_checkpoint(str(half / "checkpoint_last.pkl"))
    assert ck2["iter"] == 2
    # The rest comes from the checkpoint; the worker count from this command line.
    run(["--resume", half, "--print-freq", 1, "--no-progress", "-j", workers])
    a = checkpoint.load_checkpoint(str(full / "checkpoint_last.pkl"))
    b = checkpoint.load_checkpoint(str(half / "checkpoint_last.pkl"))
    assert a["iter"] == b["iter"] == 6
    assert max_diff(a["model"], b["model"]) == 0.0
    for ga, gb in zip(a["optimizer"]["groups"], b["optimizer"]["groups"]):
        for va, vb in zip(ga["values"], gb["values"]):
            np.testing.assert_array_equal(va, vb)
    # the resumed run appended to the log: iterations 1..6 once each
    iters = [json.loads(line)["iter"] for line in open(half / "log.jsonl")]
    assert iters == [1, 2, 3, 4, 5, 6]


def test_run_folder_contents(blocks, tmp_path):
    out = tmp_path / "run"
    result = run(train_args(blocks, out, "--iters", 4, "--snapshot-interval", 2, "--eval-interval", 2))
    names = sorted(os.listdir(out))
    assert {"config.json", "log.jsonl", "checkpoint_000002.pkl", "checkpoint_000004.pkl",
            "checkpoint_last.pkl"} <= set(names)
    assert not [n for n in names if ".tmp" in n]
    cfg = json.load(open(out / "config.json"))
    # defaults resolved from the demo preset, overrides kept
    assert cfg["lr"] == 1e-2 and cfg["weight_decay"] == 1e-4 and cfg["crop_size"] == [32, 32]
    assert cfg["batch_size"] == 2 and cfg["num_classes"] == 5 and cfg["recurrence"] == 2
    ck = checkpoint.load_checkpoint(str(out / "checkpoint_last.pkl"))
    assert {"model", "optimizer", "iter", "rng", "config", "version"} <= set(ck)
    assert ck["version"] == checkpoint.CHECKPOINT_VERSION and ck["config"]["model"] == "ccnet_demo"
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    train_records = [r for r in records if "loss" in r]
    assert [r["iter"] for r in train_records] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 for r in train_records)
    val = [r for r in records if "val/mIoU" in r]
    assert [r["iter"] for r in val] == [2, 4] and 0.0 <= val[-1]["val/mIoU"] <= 1.0
    assert result["metrics"]["mIoU"] == pytest.approx(val[-1]["val/mIoU"])


def test_poly_lr():
    assert optim.poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert optim.poly_lr(0.01, 50, 100, power=0.9) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert optim.poly_lr(0.01, 100, 100) == 0.0
    assert optim.poly_lr(0.01, 100, 100, min_lr=1e-4) == pytest.approx(1e-4)
    assert optim.poly_lr(0.01, 50, 100, power=1.0, min_lr=1e-4) == pytest.approx((0.01 - 1e-4) * 0.5 + 1e-4)


def test_head_lr_mult_and_adamw(blocks, tmp_path):
    from models import build_model
    model = build_model("ccnet_demo", 5, backbone_kwargs={"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
                        channels=16, aux_channels=8, neck_channels=16)
    opt = optim.build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01, head_lr_mult=10)
    assert len(opt.param_groups) == 2
    optim.set_lr(opt, 2e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-3, 2e-2])
    n_backbone = len([p for p in model.backbone.parameters() if not p.is_stop_grad()])
    assert len(opt.param_groups[0]["params"]) == n_backbone
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.build_optimizer(model, "lamb")


def test_atomic_checkpoint_keeps_old_file(tmp_path):
    path = str(tmp_path / "ck.pkl")
    checkpoint.save_checkpoint(path, {"model": {"w": np.ones(3)}, "iter": 1})

    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt  # as if Ctrl-C hit during the write

    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(path, {"model": {"w": np.zeros(3)}, "iter": 2, "x": Boom()})
    assert checkpoint.load_checkpoint(path)["iter"] == 1
    assert os.listdir(tmp_path) == ["ck.pkl"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(blocks, tmp_path):
    from datasets import build_dataset
    from models import build_model
    from models.losses import SegmentationLoss

    model = build_model("ccnet_demo", 5, backbone_kwargs={"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
                        channels=16, aux_channels=8, neck_channels=16)
    loss = SegmentationLoss(5)
    calls = []

    def criterion(outputs, label):
        calls.append(1)
        total, parts = loss(outputs, label)
        return (total * float("nan") if len(calls) == 3 else total), parts

    ds = build_dataset("demo", blocks, train=True, input_norm=model.input_norm, crop_size=(32, 32),
                       batch_size=2, num_workers=0)
    opt = optim.build_optimizer(model, "sgd", 0.01)
    with pytest.raises(checkpoint.TrainingStopped, match=r"loss is nan at iteration 3.*checkpoint_000002\.pkl"):
        train_loop.train(model, criterion, opt, ds, max_iters=10, base_lr=0.01, output_dir=str(tmp_path),
                     snapshot_interval=2, progress=False)
    assert checkpoint.load_checkpoint(str(tmp_path / "checkpoint_last.pkl"))["iter"] == 2
    assert not (tmp_path / "checkpoint_000003.pkl").exists()


def test_bad_input(blocks, tmp_path):
    with pytest.raises(ValueError, match="unknown model preset 'nope'.*ccnet_demo"):
        run(train_args(blocks, tmp_path / "a", "--model", "nope"))
    with pytest.raises(ValueError, match="unknown dataset preset 'mars'"):
        run(train_args(blocks, tmp_path / "a", "--dataset", "mars"))
    with pytest.raises(ValueError, match="--amp .*needs a CUDA GPU"):
        run(train_args(blocks, tmp_path / "a", "--amp", "--no-cuda"))
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint not found"):
        run(["--resume", tmp_path / "missing.pkl"])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        run(train_args(tmp_path / "no_data", tmp_path / "a", "--iters", 1))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        run(train_args(blocks, tmp_path / "a", "--model-opt", "dropout"))


def test_weights_initialise_the_whole_model(blocks, tmp_path, capsys):
    """--weights takes a train.py checkpoint or a converted CCNet; a file that does not fit is refused."""
    first = tmp_path / "first"
    run(train_args(blocks, first, "--iters", 2))
    trained = checkpoint.load_checkpoint(str(first / "checkpoint_last.pkl"))["model"]
    converted = tmp_path / "ccnet_demo_5cls.pkl"
    save_weights(str(converted), trained, {"arch": "ccnet_demo", "num_classes": 5})
    for i, source in enumerate([first / "checkpoint_last.pkl", converted]):
        out = tmp_path / f"init{i}"
        # a learning rate of 1e-12 leaves the weights where --weights put them (BN statistics aside)
        run(train_args(blocks, out, "--iters", 1, "--lr", 1e-12, "--weights", source))
        got = checkpoint.load_checkpoint(str(out / "checkpoint_last.pkl"))["model"]
        for key in trained:
            if "running_" not in key:
                np.testing.assert_allclose(got[key], trained[key], rtol=0, atol=1e-8, err_msg=key)
    # backbone-only weights given as --weights are used as --pretrained, with a note
    backbone = tmp_path / "backbone.pkl"
    save_weights(str(backbone), {k: v for k, v in trained.items() if k.startswith("backbone.")}, {})
    run(train_args(blocks, tmp_path / "bb", "--iters", 1, "--lr", 1e-12, "--weights", backbone))
    assert "used as --pretrained" in capsys.readouterr().out
    got = checkpoint.load_checkpoint(str(tmp_path / "bb" / "checkpoint_last.pkl"))["model"]
    np.testing.assert_allclose(got["backbone.patch_embed1.proj.weight"], trained["backbone.patch_embed1.proj.weight"],
                               rtol=0, atol=1e-8)
    from models import build_model
    wrong = tmp_path / "wrong.pkl"  # a whole ccnet_demo of the default width: fits neither way
    save_weights(str(wrong), {k: v.numpy() for k, v in build_model("ccnet_demo", 5).state_dict().items()}, {})
    with pytest.raises(checkpoint.CheckpointError, match="does not fit ccnet_demo"):
        run(train_args(blocks, tmp_path / "bad", "--iters", 1, "--weights", wrong))
