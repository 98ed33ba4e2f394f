"""The generated video demo (datasets.demo.write_video_clips): layout, occluders, determinism, need of context."""
import filecmp
import os
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets import demo, get_preset

# Small on purpose: 2 labelled frames 8 apart, 4 clean frames before the first
# and after the last -> frames 0..16, labelled 4 and 12.
SMALL = dict(num_train_seqs=2, num_val_seqs=1, num_test_seqs=1, labelled_per_seq=2, label_every=8)
LABELLED, NUM_FRAMES = (4, 12), 17
SEQS = {"train": ["Demo01", "Demo02"], "val": ["Demo03"], "test": ["Demo04"]}
NAME = re.compile(r"[0-9A-Za-z]+_f?[0-9]+")  # the clip loader's <sequence>_<optional f><digits>


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("demo_video"))
    counts = demo.write_video_clips(path, **SMALL)
    assert counts == {"train": 4, "val": 2, "test": 2, "frames": 4 * NUM_FRAMES}
    return path


def stems(folder):
    return sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".png"))


def read_rgb(path):
    return cv2.imread(path)[..., ::-1].astype(np.int16)


def test_tree_counts_names_and_values(root):
    base = os.path.join(root, "CamVid")
    assert sorted(os.listdir(base)) == ["frames", "test", "testannot", "train", "trainannot", "val", "valannot"]
    seen = set()
    for split, seqs in SEQS.items():
        want = [f"{s}_f{t:05d}" for s in seqs for t in LABELLED]
        assert stems(os.path.join(base, split)) == want == stems(os.path.join(base, split + "annot"))
        for name in want:
            assert NAME.fullmatch(name)
            image = Image.open(os.path.join(base, split, name + ".png"))
            label = Image.open(os.path.join(base, split + "annot", name + ".png"))
            assert (image.mode, image.size, label.mode, label.size) == ("RGB", (128, 96), "L", (128, 96))
            seen |= set(np.unique(np.array(label)).tolist())
            # the labelled frame is the same file as the one among the sequence's frames
            assert filecmp.cmp(os.path.join(base, split, name + ".png"),
                               os.path.join(base, "frames", name.split("_")[0], name + ".png"), shallow=False)
    assert seen <= set(range(demo.VIDEO_NUM_CLASSES)) and {0} < seen  # background and some shapes, no void
    assert sorted(os.listdir(os.path.join(base, "frames"))) == [s for seqs in SEQS.values() for s in seqs]
    for seq in sum(SEQS.values(), []):
        assert stems(os.path.join(base, "frames", seq)) == [f"{seq}_f{t:05d}" for t in range(NUM_FRAMES)]


def test_occluder_in_labelled_frames_only(root):
    frames = os.path.join(root, "CamVid", "frames", "Demo01")
    clip = [read_rgb(os.path.join(frames, f"Demo01_f{t:05d}.png")) for t in range(NUM_FRAMES)]
    changed = [float((np.abs(clip[t] - clip[t - 1]).max(-1) > 0).mean()) for t in range(1, NUM_FRAMES)]
    for t in range(1, NUM_FRAMES):
        # into and out of a labelled frame: the occluder (>= 25% of the frame, noise) changes;
        # between clean frames only the moving shapes do
        if t in LABELLED or t - 1 in LABELLED:
            assert changed[t - 1] > 0.2, t
        else:
            assert changed[t - 1] < 0.12, t

    # The same from the renderer, exactly: occluders over 25-40% of the labelled frames,
    # none elsewhere, and outside occluders and shapes a frame equals its neighbour.
    rng = np.random.default_rng(1)
    images, labels, occluders = demo.render_video_sequence(rng, NUM_FRAMES, LABELLED)
    assert images.shape == (NUM_FRAMES, 96, 128, 3) and labels.shape == occluders.shape == (NUM_FRAMES, 96, 128)
    area = occluders.mean((1, 2))
    assert all(0.25 <= area[t] <= 0.40 for t in LABELLED)
    assert not area[[t for t in range(NUM_FRAMES) if t not in LABELLED]].any()
    for t in range(1, NUM_FRAMES):
        still = ~occluders[t] & ~occluders[t - 1] & (labels[t] == 0) & (labels[t - 1] == 0)
        np.testing.assert_array_equal(images[t][still], images[t - 1][still])


def test_fixed_seed_gives_the_same_files(root, tmp_path):
    names = ["frames/Demo01/Demo01_f00000.png", "frames/Demo02/Demo02_f00009.png", "train/Demo02_f00012.png",
             "trainannot/Demo02_f00012.png", "val/Demo03_f00004.png", "testannot/Demo04_f00012.png"]
    demo.main(["--layout", "video", "--root", str(tmp_path / "again"), "--num-train", "2", "--num-val", "1"])
    again = os.path.join(str(tmp_path / "again"), "CamVid")
    for name in names[:3]:  # the CLI's default sequences (33 frames) start as the small dataset's
        assert filecmp.cmp(os.path.join(root, "CamVid", name), os.path.join(again, name), shallow=False), name
    demo.write_video_clips(str(tmp_path / "same"), **SMALL)
    for name in names:
        assert filecmp.cmp(os.path.join(root, "CamVid", name), os.path.join(str(tmp_path / "same"), "CamVid", name),
                           shallow=False), name
    demo.write_video_clips(str(tmp_path / "other"), seed=1, **SMALL)
    assert not filecmp.cmp(os.path.join(root, "CamVid", names[0]),
                           os.path.join(str(tmp_path / "other"), "CamVid", names[0]), shallow=False)


def miou(confusion):
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    return float(iou.mean())


def test_one_frame_cannot_see_under_the_occluder_its_neighbours_can():
    """On the default val sequences: the occluders hide much of the shapes; a frame either side shows them.

    "Single frame" is the best a 2-D model can do without guessing shapes it
    cannot see: every pixel right outside the occluder, background under it.
    "Neighbour" takes the labels under the occluder from the frame before.
    """
    labelled = (4, 12, 20, 28)
    n = demo.VIDEO_NUM_CLASSES
    single, neighbour = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
    hidden = []
    for i in range(8):
        _, labels, occluders = demo.render_video_sequence(np.random.default_rng([0, 1, i]), 33, labelled)
        for t in labelled:
            truth, occ = labels[t], occluders[t]
            hidden.append((occ & (truth > 0)).sum() / (truth > 0).sum())
            np.add.at(single, (truth, np.where(occ, 0, truth)), 1)
            np.add.at(neighbour, (truth, np.where(occ, labels[t - 1], truth)), 1)
    # every labelled frame hides a good part of its shapes (at least 31% here), about 62% on average
    assert min(hidden) >= 0.2 and 0.45 <= np.mean(hidden) <= 0.8
    assert miou(single) < 0.6 and miou(neighbour) > 0.85


def test_preset_matches_the_generator():
    p = get_preset("demo_video")
    assert p.num_classes == demo.VIDEO_NUM_CLASSES == len(p.class_names)
    assert p.class_names == ("background", "disc", "square", "triangle")
    assert [p.palette[c] for c in (demo.VIDEO_DISC, demo.VIDEO_SQUARE, demo.VIDEO_TRIANGLE)] == \
        [demo.SHAPE_COLORS[c] for c in (demo.VIDEO_DISC, demo.VIDEO_SQUARE, demo.VIDEO_TRIANGLE)]
    assert (p.crop_size, p.scales, p.train_split, p.val_split, p.ignore_index) == \
        ((96, 128), (1.0,), "train", "val", 255)
