"""The video presets through the scripts: train.py (loss, checkpoints, exact resume, evaluation),
evaluate.py, predict.py and visualize_attention.py with --clip-length/--clip-stride, and the 3-D
attention composed over a clip against dense matrix products."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import visualize_attention
from datasets import demo
from engine import checkpoint
from seg_fixtures import TINY_MODEL_ARGS, run_train
from visualization import attention as va

VIDEO_MODEL_ARGS = ["--model", "ccnet3d_demo", *TINY_MODEL_ARGS[2:]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A small video demo dataset: 2 train, 1 val and 1 test sequences of 32x48 frames, 2 labelled each."""
    root = str(tmp_path_factory.mktemp("demo_video"))
    demo.write_video_clips(root, num_train_seqs=2, num_val_seqs=1, num_test_seqs=1, labelled_per_seq=2,
                           label_every=4, height=32, width=48)
    return root


def video_args(data, out, *extra):
    return ["--dataset", "demo_video", "--data-path", str(data), "--output-dir", str(out), "--crop-size", "32", "48",
            "-b", "2", "--snapshot-interval", "100", "--eval-interval", "0", "-j", "0", "--no-progress",
            "--print-freq", "1", *VIDEO_MODEL_ARGS, *extra]


def losses(folder):
    return [r["loss"] for r in map(json.loads, open(os.path.join(folder, "log.jsonl"))) if "loss" in r]


def test_training_lowers_the_loss_resumes_exactly_and_evaluates(clips, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    result = run_train(video_args(clips, full, "--iters", 24, "--clip-length", 3, "--clip-stride", 2, "--lr", 0.05,
                                  "--eval-interval", 24))
    loss = losses(full)
    assert np.mean(loss[-6:]) < 0.8 * np.mean(loss[:6]), loss
    cfg = json.load(open(full / "config.json"))
    assert (cfg["clip_length"], cfg["clip_stride"], cfg["recurrence"]) == (3, 2, 3)
    assert 0 <= result["metrics"]["mIoU"] <= 1
    # stop after 10, resume to 24: the same weights as the run in one piece
    run_train(video_args(clips, half, "--iters", 24, "--clip-length", 3, "--clip-stride", 2, "--lr", 0.05,
                         "--eval-interval", 24, "--stop-after", 10))
    run_train(["--resume", half, "--print-freq", 1, "--no-progress", "-j", 0])
    a = checkpoint.load_checkpoint(str(full / "checkpoint_last.pkl"))
    b = checkpoint.load_checkpoint(str(half / "checkpoint_last.pkl"))
    assert a["iter"] == b["iter"] == 24
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    # evaluate.py: clips as the checkpoint records them, results.json says so
    out = tmp_path / "eval"
    assert evaluate.main(["--checkpoint", str(full), "--output-dir", str(out), "--no-progress", "-j", "0"]) == 0
    results = json.load(open(out / "results.json"))
    assert (results["settings"]["clip_length"], results["settings"]["clip_stride"]) == (3, 2)
    assert results["mIoU"] == pytest.approx(result["metrics"]["mIoU"])
    # a clip of one frame is a different (2-D) evaluation of the same weights
    assert evaluate.main(["--checkpoint", str(full), "--output-dir", str(tmp_path / "eval1"), "--no-progress", "-j", "0",
                          "--clip-length", "1"]) == 0
    assert json.load(open(tmp_path / "eval1" / "results.json"))["settings"]["clip_length"] == 1


def test_clip_flags_are_checked_before_any_work(clips, tmp_path, capsys):
    # a 2-D model refuses clips; a zero clip length; clips of a dataset without video frames
    two_d = ["--model", "ccnet_demo", *TINY_MODEL_ARGS[2:]]
    for extra, message in ((["--clip-length", "3", *two_d], "need a video model"),
                           (["--clip-length", "0"], "--clip-length must be a whole number of at least 1"),
                           (["--clip-stride", "0"], "--clip-stride must be a whole number of at least 1")):
        args = video_args(clips, tmp_path / "bad", "--iters", 2, *extra)
        with pytest.raises(ValueError, match=message):
            run_train(args)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="the dataset 'demo' has none"):
        run_train(["--dataset", "demo", "--data-path", str(clips), "--output-dir", str(tmp_path / "bad2"),
                   "--iters", 2, "--no-progress", *VIDEO_MODEL_ARGS])
    assert not (tmp_path / "bad2").exists()


def test_a_2d_run_initialises_a_video_model(clips, tmp_path, capsys):
    """--weights of a 2-D run (the labelled frames as images) loads whole into ccnet3d_demo."""
    two_d = tmp_path / "two_d"
    run_train(["--dataset", "demo_video", "--data-path", str(clips), "--output-dir", str(two_d), "--crop-size", "32",
               "48", "-b", "2", "--eval-interval", "0", "-j", "0", "--no-progress", "--iters", 2, *TINY_MODEL_ARGS])
    video = tmp_path / "video"
    run_train(video_args(clips, video, "--iters", 1, "--clip-length", 3, "--weights", two_d, "--lr", 1e-9))
    assert "note:" not in capsys.readouterr().out  # used as a whole model, not as backbone weights
    a = checkpoint.load_checkpoint(str(two_d / "checkpoint_last.pkl"))["model"]
    b = checkpoint.load_checkpoint(str(video / "checkpoint_last.pkl"))["model"]
    assert a.keys() == b.keys()
    for key in a:
        if "running_" not in key and "num_batches" not in key:  # BatchNorm statistics move without a step
            np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def video_checkpoint(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("video_run") / "run"
    run_train(video_args(clips, out, "--iters", 2, "--clip-length", 3))
    return str(out)


def test_predict_segments_each_frame_from_its_clip(clips, video_checkpoint, tmp_path, capsys):
    frames = os.path.join(clips, "CamVid", "frames", "Demo01")
    names = sorted(os.listdir(frames))[:4]
    folder = tmp_path / "seq"
    folder.mkdir()
    for name in names:
        Image.open(os.path.join(frames, name)).save(folder / name)
    out = tmp_path / "pred"
    assert predict.main([video_checkpoint, str(folder), "-o", str(out), "--no-progress", "--save-label"]) == 0
    assert "clips of 3 frames 1 apart" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"{os.path.splitext(n)[0]}_{kind}.png" for n in names
                                             for kind in ("pred", "overlay", "label"))
    label = np.asarray(Image.open(out / f"{os.path.splitext(names[0])[0]}_label.png"))
    assert label.shape == (32, 48) and label.max() < 4
    # the prediction depends on the other frames of the clip: a longer stride changes some of them
    out2 = tmp_path / "pred2"
    assert predict.main([video_checkpoint, str(folder), "-o", str(out2), "--no-progress", "--save-label",
                         "--clip-stride", "3", "--clip-length", "5"]) == 0
    assert "clips of 5 frames 3 apart" in capsys.readouterr().out


def test_predict_clip_helpers(tmp_path):
    """An image's clip comes from the image files of its folder in name order, whichever were given."""
    from apis.predict import clip_paths
    for folder, count in (("a", 5), ("b", 1)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            (tmp_path / folder / f"{i:02d}.png").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not a frame")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    images = [(f"{a}/00.png", ""), (f"{a}/03.png", ""), (f"{b}/00.png", "")]
    clips = clip_paths(images, 3, 2)
    assert clips[0] == [f"{a}/00.png", f"{a}/00.png", f"{a}/02.png"]  # clamped at the start
    assert clips[1] == [f"{a}/01.png", f"{a}/03.png", f"{a}/04.png"]  # and at the end; 01, 04 not given
    assert clips[2] == [f"{b}/00.png"] * 3  # another folder is another sequence


def test_a_sequence_is_decoded_once_not_once_per_clip(monkeypatch):
    import apis.predict
    reads = []
    monkeypatch.setattr(apis.predict, "read_image", lambda p: reads.append(p) or np.zeros((2, 3, 3), np.uint8))
    recent: dict = {}
    for clip in (["f0", "f0", "f1"], ["f0", "f1", "f2"], ["f1", "f2", "f3"], ["f1", "f2", "f3"]):
        frames = apis.predict.read_frames(clip, recent)
        assert len(frames) == 3 and sorted(recent) == sorted(set(clip))
    assert reads == ["f0", "f1", "f2", "f3"]


def test_visualize_attention_over_the_frames_of_a_clip(clips, video_checkpoint, tmp_path, capsys):
    frames = os.path.join(clips, "CamVid", "frames", "Demo01")
    image = os.path.join(frames, sorted(os.listdir(frames))[4])
    out = tmp_path / "att.png"
    assert visualize_attention.main([video_checkpoint, image, "--pixel", "20", "12", "-o", str(out),
                                     "--save-npy", "--clip-length", "3"]) == 0
    names = sorted(os.listdir(frames))
    assert f"clip {names[3]} .. {names[5]}" in capsys.readouterr().out  # its neighbours in the folder
    composed = np.load(tmp_path / "att.npy")
    assert composed.shape == (3, 3, 4, 6)  # R = 3 passes, T = 3 frames of 4x6 features
    np.testing.assert_allclose(composed.sum((1, 2, 3)), 1.0, rtol=1e-5)
    # R=1: the pixel's row, column and time line; R=3: every position of the clip
    assert (composed[0] > 0).sum() == 3 + 4 + 6 - 2 and (composed[2] > 0).all()
    canvas = Image.open(out)
    assert canvas.size[0] == 3 * 48 + 2 * 4  # the three frames side by side
    assert canvas.size[1] == 4 * (32 + 22 + 4) - 4  # the frames and one row per pass


def _dense_3d(attention):
    """The dense [T*h*w, T*h*w] matrix A[u, s] of one 3-D pass, from the slot definition."""
    L, T, h, w = attention.shape
    dense = np.zeros((T * h * w, T * h * w))
    for t in range(T):
        for y in range(h):
            for x in range(w):
                u = (t * h + y) * w + x
                for i in range(w):
                    dense[u, (t * h + y) * w + i] += attention[i, t, y, x]
                for k in range(h - 1):
                    j = k if k < y else k + 1
                    dense[u, (t * h + j) * w + x] += attention[w + k, t, y, x]
                for v in range(T - 1):
                    s = v if v < t else v + 1
                    dense[u, (s * h + y) * w + x] += attention[w + h - 1 + v, t, y, x]
    return dense


def test_3d_composition_matches_dense_matrix_products():
    rng = np.random.default_rng(0)
    T, h, w = 3, 4, 5
    maps = []
    for _ in range(3):
        a = rng.random((T + h + w - 2, T, h, w)) + 0.05
        maps.append(a / a.sum(0, keepdims=True))
    dense = [_dense_3d(a) for a in maps]
    np.testing.assert_allclose(dense[0].sum(1), 1.0)
    for t, y, x in [(0, 0, 0), (1, 2, 3), (2, 3, 4)]:
        p = (t * h + y) * w + x
        composed = va.composed_attention_3d(maps, t, y, x)
        np.testing.assert_allclose(composed[0].ravel(), dense[0][p])
        np.testing.assert_allclose(composed[1].ravel(), (dense[1] @ dense[0])[p])
        np.testing.assert_allclose(composed[2].ravel(), (dense[2] @ dense[1] @ dense[0])[p])
    with pytest.raises(ValueError, match="outside the 3x4x5 clip"):
        va.composed_attention_3d(maps, 3, 0, 0)
