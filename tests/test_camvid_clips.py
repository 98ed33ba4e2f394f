"""CamVid video clips (CamVidClipDataset, build_dataset(clip_length=...)) and scripts/extract_camvid_frames.py.

The fixture tree uses the real SegNet file names of the four CamVid sequences;
every frame's pixels encode its frame number (R + 256 G) and where it was read
from (B: 200 for a labelled image of a split folder, 100 for a frame of
``frames/<sequence>/``), so a test reads back which frame landed where.
"""
import dataclasses
import errno
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets import (CLIP_LAYOUT, CamVidClipDataset, CamVidDataset, DatasetError, build_dataset, frame_name,
                      get_preset, parse_frame_name, sequence_frame_name)
from datasets.camvid import SEQUENCE_NAMING
from datasets.transforms import build_train_transform
from utils.input_norm import CAFFE_BGR, IMAGENET_RGB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "extract_camvid_frames.py")
H, W = 12, 16
LABELLED, FRAME = 200, 100   # the B value of a labelled image / of a frames-folder frame

# Labelled frames per split (real SegNet names) and the frames present per sequence (first, last).
SPLITS = {"train": ["0001TP_006690", "0001TP_006720", "0006R0_f00930", "0016E5_00390", "Seq05VD_f00000"],
          "val": ["0006R0_f00940", "Seq05VD_f00010"],
          "test": ["0016E5_00393"]}
FRAMES = {"0001TP": (6685, 6725), "0006R0": (925, 945), "0016E5": (385, 395), "Seq05VD": (0, 12)}


# ----------------------------------------------------------------------------- fixtures

def write_rgb(path, image):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))


def write_label(path, label):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(str(path))


def encoded(number, where, h=H, w=W):
    """A uniform RGB image: R + 256 G = frame number, B = where it was read from."""
    return np.tile(np.array([number % 256, number // 256, where], np.uint8), (h, w, 1))


def decode(chw):
    """Frame number and origin of a CHW float image made by :func:`encoded` (untransformed)."""
    r, g, b = (int(chw[c, 0, 0]) for c in range(3))
    assert np.all(chw == chw[:, :1, :1]), "not a uniform frame"
    return r + 256 * g, b


def camvid_label():
    """Every value 0..11 in the first row, class 3 (road) elsewhere."""
    label = np.full((H, W), 3, np.uint8)
    label[0, :12] = np.arange(12)
    return label


def make_clip_tree(root, splits=SPLITS, frames=FRAMES):
    """The SegNet CamVid layout plus frames/<sequence>/ with every frame of FRAMES; returns the CamVid folder."""
    base = os.path.join(str(root), "CamVid")
    for split, names in splits.items():
        for name in names:
            number = parse_frame_name(name).number
            write_rgb(os.path.join(base, split, name + ".png"), encoded(number, LABELLED))
            write_label(os.path.join(base, split + "annot", name + ".png"), camvid_label())
    for sequence, (first, last) in frames.items():
        for number in range(first, last + 1):
            write_rgb(os.path.join(base, "frames", sequence, sequence_frame_name(sequence, number) + ".png"),
                      encoded(number, FRAME))
    return base


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("camvid_clips")
    make_clip_tree(root)
    return str(root)


def expected_numbers(n, T, stride, first, last):
    return [min(max(n + (k - (T - 1) // 2) * stride, first), last) for k in range(T)]


# ----------------------------------------------------------------------------- names

def test_frame_names_parse_and_round_trip():
    assert parse_frame_name("0001TP_006690") == ("0001TP", "", 6, 6690)
    assert parse_frame_name("0006R0_f00930") == ("0006R0", "f", 5, 930)
    assert parse_frame_name("0016E5_00390") == ("0016E5", "", 5, 390)
    assert parse_frame_name("Seq05VD_f00000") == ("Seq05VD", "f", 5, 0)
    for name in ("0001TP_006690", "0006R0_f00930", "0016E5_07959", "Seq05VD_f05100"):
        parsed = parse_frame_name(name)
        assert parsed.with_number(parsed.number) == name
        assert SEQUENCE_NAMING[parsed.sequence] == (parsed.prefix, parsed.width)   # the script's table agrees
        assert sequence_frame_name(parsed.sequence, parsed.number) == name
    assert frame_name("0006R0", "f", 5, 929) == "0006R0_f00929"
    assert sequence_frame_name("0001TP", 6660) == "0001TP_006660"
    with pytest.raises(ValueError, match=">= 0"):
        frame_name("Seq05VD", "f", 5, -1)
    with pytest.raises(ValueError, match="unknown CamVid sequence 'Seq06'"):
        sequence_frame_name("Seq06", 3)
    for bad in ("0001TP-006690", "0016E5_07959_L", "Seq05VD_x00030", "0001TP_"):
        with pytest.raises(DatasetError, match=r"not a video frame name.*<sequence>_\[f\]<digits>"):
            parse_frame_name(bad, f"/data/CamVid/train/{bad}.png")


# ----------------------------------------------------------------------------- clips

@pytest.mark.parametrize("T,stride", [(1, 1), (3, 1), (3, 3), (5, 1), (5, 3), (4, 1), (4, 3)])
def test_clip_frame_numbers(clip_root, T, stride):
    ds = CamVidClipDataset(clip_root, "train", T, clip_stride=stride)
    assert ds.label_frame == (T - 1) // 2 and ds.num_samples == 5
    for i, sample in enumerate(ds.samples):
        image, label, meta = ds[i]
        assert image.shape == (T, 3, H, W) and image.dtype == np.float32
        assert label.shape == (H, W) and label.dtype == np.int32
        np.testing.assert_array_equal(label, np.where(camvid_label() == 11, 255, camvid_label()))
        n = parse_frame_name(sample.name)
        got = [decode(frame) for frame in image]
        want = expected_numbers(n.number, T, stride, *FRAMES[n.sequence])
        assert [number for number, _ in got] == want, sample.name
        # frame n is the labelled image wherever it occurs; every other frame comes from frames/<sequence>/
        assert [where for _, where in got] == [LABELLED if m == n.number else FRAME for m in want]
        assert meta["label_frame"] == ds.label_frame and len(meta["frames"]) == T
        assert meta["frames"][ds.label_frame] == sample.image == meta["image_path"]
        assert [os.path.basename(p) for p in meta["frames"]] == [
            (n.with_number(m) + ".png") for m in want]


def test_clip_numbers_written_out(clip_root):
    """The same rule, spelled out for a few clips (stride 1 and 3, T = 1, 3, 5, 4)."""
    def numbers(T, stride, name, split="train"):
        ds = CamVidClipDataset(clip_root, split, T, clip_stride=stride)
        i = [s.name for s in ds.samples].index(name)
        return [decode(f)[0] for f in ds[i][0]]
    assert numbers(1, 1, "0006R0_f00930") == [930]
    assert numbers(3, 1, "0006R0_f00930") == [929, 930, 931]
    assert numbers(3, 3, "0006R0_f00930") == [927, 930, 933]
    assert numbers(5, 1, "0006R0_f00930") == [928, 929, 930, 931, 932]
    assert numbers(5, 1, "0016E5_00390") == [388, 389, 390, 391, 392]
    assert numbers(4, 1, "0006R0_f00930") == [929, 930, 931, 932]       # even T: the earlier middle place
    assert numbers(4, 3, "0006R0_f00930") == [927, 930, 933, 936]
    # clamping: 0001TP's frames are 6685..6725, Seq05VD's 0..12, 0016E5's 385..395
    assert numbers(5, 3, "0006R0_f00930") == [925, 927, 930, 933, 936]         # 924 -> the first frame
    assert numbers(5, 3, "0001TP_006690") == [6685, 6687, 6690, 6693, 6696]    # 6684 -> the first frame
    assert numbers(5, 3, "0001TP_006720") == [6714, 6717, 6720, 6723, 6725]    # 6726 -> the last frame
    assert numbers(3, 1, "Seq05VD_f00000") == [0, 0, 1]                      # -1 -> 0, the labelled frame
    assert numbers(5, 3, "Seq05VD_f00010", "val") == [4, 7, 10, 12, 12]
    assert numbers(5, 3, "0016E5_00393", "test") == [387, 390, 393, 395, 395]


def test_centre_is_the_labelled_image(clip_root):
    ds = CamVidClipDataset(clip_root, "val", 3)
    for i, sample in enumerate(ds.samples):
        image, _, meta = ds[i]
        n = parse_frame_name(sample.name).number
        # frames/<sequence>/ holds frame n too (B = FRAME); the clip's centre is the split's image
        assert os.path.isfile(os.path.join(clip_root, "CamVid", "frames", sample.name.split("_")[0],
                                           sample.name + ".png"))
        assert decode(image[1]) == (n, LABELLED)
        assert meta["frames"][1] == os.path.join(clip_root, "CamVid", "val", sample.name + ".png")


def _copies_tree(root, rng):
    """0006R0_f00930 labelled (random texture, random classes), its neighbours 925..935 identical copies."""
    base = os.path.join(str(root), "CamVid")
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = rng.integers(0, 12, (H, W)).astype(np.uint8)
    write_rgb(os.path.join(base, "train", "0006R0_f00930.png"), image)
    write_label(os.path.join(base, "trainannot", "0006R0_f00930.png"), label)
    for number in range(925, 936):
        write_rgb(os.path.join(base, "frames", "0006R0", f"0006R0_f{number:05d}.png"), image)
    return str(root)


def test_identical_frames_get_identical_transforms(tmp_path):
    """Frames that are the same image come out the same: every random draw (scale, crop with the
    label-dependent cat_max_ratio retries, flip, photometric) is shared by the whole clip."""
    root = _copies_tree(tmp_path, np.random.default_rng(0))
    preset = dataclasses.replace(get_preset("camvid"), cat_max_ratio=0.75)
    transform = build_train_transform(preset, CAFFE_BGR, crop_size=(6, 8), photometric=True)
    ds = CamVidClipDataset(root, "train", 5, clip_stride=2, transform=transform, seed=3)
    outputs = []
    for epoch in range(6):
        index = epoch * ds.num_samples   # sample 0 of that epoch (the epoch is encoded in the index)
        image, label, meta = ds[index]
        assert image.shape == (5, 3, 6, 8) and label.shape == (6, 8)
        assert [os.path.basename(p) for p in meta["frames"]] == [
            "0006R0_f00926.png", "0006R0_f00928.png", "0006R0_f00930.png", "0006R0_f00932.png",
            "0006R0_f00934.png"]
        for t in range(5):
            np.testing.assert_array_equal(image[t], image[ds.label_frame])
        outputs.append(image[0])
    # and the draws do change between epochs: the test is not passing on a transform without randomness
    assert len({o.tobytes() for o in outputs}) > 1


def test_frames_share_the_crop_window(tmp_path):
    """Frames with the same spatial pattern (R = column, G = row) and a per-frame B: after the camvid
    training transform (random scale, crop, flip), R and G are the same in every frame -- the same
    window -- and B says which frame is where."""
    base = tmp_path / "CamVid"
    yy, xx = np.mgrid[0:H, 0:W]
    def pattern(b):
        return np.stack([xx * 15, yy * 20, np.full((H, W), b)], axis=-1).astype(np.uint8)
    write_rgb(base / "train" / "0016E5_00390.png", pattern(90))
    write_label(base / "trainannot" / "0016E5_00390.png", camvid_label())
    for number in range(385, 396):
        write_rgb(base / "frames" / "0016E5" / f"0016E5_{number:05d}.png", pattern(number - 300))
    transform = build_train_transform(get_preset("camvid"), IMAGENET_RGB, crop_size=(6, 8))
    ds = CamVidClipDataset(str(tmp_path), "train", 3, clip_stride=2, transform=transform)
    mean, std = np.array(IMAGENET_RGB.mean), np.array(IMAGENET_RGB.std)
    windows = set()
    for epoch in range(8):
        image, _, meta = ds[epoch * ds.num_samples]
        for t in range(3):
            np.testing.assert_array_equal(image[t, :2], image[1, :2])   # same scale, crop, flip
        b = image[:, 2] * std[2] + mean[2]                                # back to the B value
        np.testing.assert_allclose(b, np.broadcast_to(np.array([88, 90, 92.0])[:, None, None], b.shape),
                                   atol=1e-3)                            # frames 388, 390 (labelled), 392
        windows.add(image[1, :2].tobytes())
    assert len(windows) > 1   # the window moved between epochs


def test_batches_through_the_loader(clip_root):
    ds = build_dataset("camvid", clip_root, train=True, input_norm=CAFFE_BGR, crop_size=(8, 8), batch_size=2,
                       clip_length=3, clip_stride=2)
    assert isinstance(ds, CamVidClipDataset) and (ds.num_samples, len(ds)) == (5, 2)
    batches = 0
    for image, label, meta in ds:
        batches += 1
        assert tuple(image.shape) == (2, 3, 3, 8, 8) and str(image.dtype) == "float32"
        assert tuple(label.shape) == (2, 8, 8) and str(label.dtype) == "int32"
        assert meta["label_frame"] == [1, 1]
        assert [len(f) for f in meta["frames"]] == [3, 3]
        assert all(f[1] == p for f, p in zip(meta["frames"], meta["image_path"]))
    assert batches == 2
    val = build_dataset("camvid", clip_root, train=False, input_norm=CAFFE_BGR, batch_size=2, clip_length=4)
    image, label, meta = next(iter(val))
    assert tuple(image.shape) == (2, 4, 3, H, W) and tuple(label.shape) == (2, H, W)
    assert meta["name"] == ["0006R0_f00940", "Seq05VD_f00010"] and meta["label_frame"] == [1, 1]


def test_worker_processes_give_the_same_clips(clip_root):
    def collect(workers):
        ds = build_dataset("camvid", clip_root, train=True, input_norm=CAFFE_BGR, crop_size=(8, 8), batch_size=2,
                           clip_length=3, num_workers=workers)
        try:
            return [(image.numpy().copy(), meta["frames"]) for _ in range(2) for image, _, meta in ds]
        finally:
            if workers:
                ds.terminate()
    single, multi = collect(0), collect(2)
    assert len(single) == len(multi) == 4
    for (a, frames_a), (b, frames_b) in zip(single, multi):
        np.testing.assert_array_equal(a, b)
        assert frames_a == frames_b


def test_build_dataset_clip_arguments(clip_root, tmp_path):
    plain = build_dataset("camvid", clip_root, input_norm=CAFFE_BGR)
    assert type(plain) is CamVidDataset and plain.num_samples == 2          # today's behaviour
    clips = build_dataset("camvid", clip_root, input_norm=CAFFE_BGR, clip_length=5, clip_stride=3)
    assert (clips.clip_length, clips.clip_stride, clips.num_classes, clips.split) == (5, 3, 11, "val")
    assert "clip_length=5, clip_stride=3" in repr(clips)
    for preset in ("camvid32", "ade20k", "demo", "cityscapes", "lip", "voc"):
        with pytest.raises(ValueError, match=rf"preset '{preset}' has no video frames; clips need camvid "
                                             r"\(or demo_video\)"):
            build_dataset(preset, str(tmp_path), input_norm=CAFFE_BGR, clip_length=3)
    with pytest.raises(ValueError, match="clip_stride=2 needs clip_length"):
        build_dataset("camvid", clip_root, input_norm=CAFFE_BGR, clip_stride=2)


def test_build_dataset_demo_video_uses_the_clip_layout(tmp_path):
    """The generated video demo: the same layout, the preset's fewer classes (11 stays void)."""
    preset = get_preset("demo_video")
    base = make_clip_tree(tmp_path, splits={"val": ["0016E5_00390"]}, frames={"0016E5": (385, 395)})
    label = np.full((H, W), preset.num_classes - 1, np.uint8)
    label[0] = 11
    write_label(os.path.join(base, "valannot", "0016E5_00390.png"), label)
    ds = build_dataset("demo_video", str(tmp_path), input_norm=CAFFE_BGR, clip_length=3)
    assert isinstance(ds, CamVidClipDataset) and ds.num_classes == preset.num_classes
    image, got, _ = ds[0]
    assert image.shape == (3, 3, H, W)
    np.testing.assert_array_equal(got, np.where(label == 11, 255, label))
    write_label(os.path.join(base, "valannot", "0016E5_00390.png"), np.full((H, W), preset.num_classes))
    with pytest.raises(DatasetError, match=rf"values \[{preset.num_classes}\]"):
        build_dataset("demo_video", str(tmp_path), input_norm=CAFFE_BGR, clip_length=3)[0]


def test_the_generated_video_demo_loads_as_clips(tmp_path):
    """datasets.demo's video layout (the demo_video preset) through build_dataset with clips."""
    from datasets import demo
    counts = demo.write_video_clips(str(tmp_path), num_train_seqs=2, num_val_seqs=1, num_test_seqs=1,
                                    labelled_per_seq=2, label_every=4, height=24, width=32)
    ds = build_dataset("demo_video", str(tmp_path), train=True, input_norm=CAFFE_BGR, batch_size=2,
                       crop_size=(24, 32), clip_length=5, clip_stride=1)
    assert isinstance(ds, CamVidClipDataset) and ds.num_samples == counts["train"] == 4
    image, label, meta = next(iter(ds))
    assert tuple(image.shape) == (2, 5, 3, 24, 32) and tuple(label.shape) == (2, 24, 32)
    assert set(np.unique(label.numpy())) <= set(range(get_preset("demo_video").num_classes)) | {255}
    for frames, path in zip(meta["frames"], meta["image_path"]):
        assert frames[2] == path and all(os.path.isfile(f) for f in frames)
    # without clip_length: the labelled frames alone, as images (the 2-D models' dataset)
    images = build_dataset("demo_video", str(tmp_path), input_norm=CAFFE_BGR)
    assert isinstance(images, CamVidDataset) and not isinstance(images, CamVidClipDataset)
    assert images.num_samples == counts["val"] and images.num_classes == get_preset("demo_video").num_classes
    image, label, meta = next(iter(images))
    assert tuple(image.shape) == (1, 3, 24, 32) and tuple(label.shape) == (1, 24, 32)


# ----------------------------------------------------------------------------- errors

def test_missing_frames_name_the_first_frame_and_the_layout(tmp_path):
    base = make_clip_tree(tmp_path)
    frames = os.path.join(base, "frames")
    os.remove(os.path.join(frames, "0001TP", "0001TP_006693.png"))   # a frame in the middle of a sequence
    with pytest.raises(FileNotFoundError) as err:
        CamVidClipDataset(str(tmp_path), "train", 3, clip_stride=3)
    message = str(err.value)
    assert "1 video frame(s) missing; the first is " + repr(os.path.join(frames, "0001TP", "0001TP_006693.png")) \
        in message
    assert "has no such frame" in message and "Expected layout:\n" + CLIP_LAYOUT in message
    assert "frames/<sequence>/<sequence>_<frame>.png" in message
    CamVidClipDataset(str(tmp_path), "train", 3, clip_stride=2)   # a clip that does not need it is fine

    shutil.rmtree(os.path.join(frames, "0006R0"))                    # a whole sequence
    with pytest.raises(FileNotFoundError, match=r"(?s)the first is '[^']*frames/0006R0/0006R0_f00928\.png'.*"
                                                r"the sequence folder '[^']*frames/0006R0' does not exist.*"
                                                r"Expected layout"):
        CamVidClipDataset(str(tmp_path), "train", 3, clip_stride=2)

    shutil.rmtree(frames)                                            # no frames at all
    with pytest.raises(FileNotFoundError) as err:
        CamVidClipDataset(str(tmp_path), "train", 3)
    message = str(err.value)
    assert f"the first is {os.path.join(frames, '0001TP', '0001TP_006689.png')!r}" in message
    assert f"the frames folder {frames!r} does not exist" in message and CLIP_LAYOUT in message
    assert "scripts/extract_camvid_frames.py" in message
    CamVidClipDataset(str(tmp_path), "train", 1)   # T = 1 needs no frames folder


def test_bad_names_and_arguments(tmp_path):
    base = make_clip_tree(tmp_path)
    write_rgb(os.path.join(base, "test", "0016E5-00394.png"), encoded(394, LABELLED))
    write_label(os.path.join(base, "testannot", "0016E5-00394.png"), camvid_label())
    assert CamVidDataset(str(tmp_path), "test").num_samples == 2   # single images do not need frame names
    with pytest.raises(DatasetError, match=r"CamVid file '[^']*CamVid/test/0016E5-00394\.png'.*"
                                           r"<sequence>_\[f\]<digits>"):
        CamVidClipDataset(str(tmp_path), "test", 3)
    for bad in (0, -1, 2.5, True, "3", None):
        with pytest.raises(ValueError, match="clip_length must be an int >= 1"):
            CamVidClipDataset(str(tmp_path / "nowhere"), "train", bad)   # before any file is looked at
    with pytest.raises(ValueError, match="clip_stride must be an int >= 1, got 0"):
        CamVidClipDataset(str(tmp_path / "nowhere"), "train", 3, clip_stride=0)


def test_frame_of_another_size_names_both_files(tmp_path):
    base = make_clip_tree(tmp_path, splits={"train": ["0016E5_00390"]}, frames={"0016E5": (385, 395)})
    bad = os.path.join(base, "frames", "0016E5", "0016E5_00391.png")
    write_rgb(bad, encoded(391, FRAME, h=2 * H, w=2 * W))
    ds = CamVidClipDataset(str(tmp_path), "train", 3)
    with pytest.raises(DatasetError, match=rf"video frame '{re.escape(bad)}' is 32x24 but the labelled image "
                                           r"'[^']*train/0016E5_00390\.png' is 16x12"):
        ds[0]


def test_num_classes_for_generated_datasets(tmp_path):
    base = make_clip_tree(tmp_path, splits={"train": ["0016E5_00390"]}, frames={"0016E5": (385, 395)})
    label = np.tile(np.array([0, 1, 2, 3, 4, 11], np.uint8), (H, 3))[:, :W]
    write_label(os.path.join(base, "trainannot", "0016E5_00390.png"), label)
    for cls in (CamVidDataset, CamVidClipDataset):
        args = (3,) if cls is CamVidClipDataset else ()
        ds = cls(str(tmp_path), "train", *args, num_classes=5)
        assert ds.num_classes == 5
        np.testing.assert_array_equal(ds[0][1], np.where(label == 11, 255, label))
        with pytest.raises(ValueError, match="num_classes must be an int in 1..11"):
            cls(str(tmp_path), "train", *args, num_classes=12)
    write_label(os.path.join(base, "trainannot", "0016E5_00390.png"), np.full((H, W), 7))
    with pytest.raises(DatasetError, match=r"values \[7\].*5 classes"):
        CamVidClipDataset(str(tmp_path), "train", 3, num_classes=5)[0]
    np.testing.assert_array_equal(CamVidDataset(str(tmp_path), "train")[0][1], 7)   # 11 classes: 7 is a class


# ----------------------------------------------------------------------------- frame extraction

@pytest.fixture(scope="module")
def extractor():
    spec = importlib.util.spec_from_file_location("extract_camvid_frames", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LEVELS = (10, 50, 90, 130, 170, 210, 250)   # the grey level of each frame of the test video


def write_video(path, levels=LEVELS, h=24, w=32):
    """An MJPG .avi whose frame i is uniformly grey at levels[i]."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    assert writer.isOpened()
    for level in levels:
        writer.write(np.full((h, w, 3), level, np.uint8))
    writer.release()
    return str(path)


def grey_level(path):
    image = cv2.imread(str(path))
    return int(np.round(image.mean()))


def pngs(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_extract_names_every_frame(extractor, tmp_path, capsys):
    video = write_video(tmp_path / "01TP_extract.avi")
    out = tmp_path / "CamVid" / "frames"
    assert extractor.main([video, "--sequence", "0006R0", "--out", str(out)]) == 0
    names = pngs(out / "0006R0")
    assert names == [f"0006R0_f{n:05d}.png" for n in range(7)]
    for name, level in zip(names, LEVELS):
        assert abs(grey_level(out / "0006R0" / name) - level) <= 3   # MJPG is lossy, the order is not
    assert "wrote 7 frames 0006R0_f00000.png .. 0006R0_f00006.png" in capsys.readouterr().out

    assert extractor.main([video, "--sequence", "0001TP", "--out", str(out), "--first-frame", "6660",
                           "--size", "16x12"]) == 0
    names = pngs(out / "0001TP")
    assert names == [f"0001TP_{n:06d}.png" for n in range(6660, 6667)]
    assert cv2.imread(str(out / "0001TP" / names[0])).shape == (12, 16, 3)

    assert extractor.main([video, "--sequence", "Seq05VD", "--out", str(out), "--first-frame", "-2"]) == 0
    names = pngs(out / "Seq05VD")
    assert names == [f"Seq05VD_f{n:05d}.png" for n in range(5)]          # frames -2, -1 skipped
    assert abs(grey_level(out / "Seq05VD" / names[0]) - LEVELS[2]) <= 3
    assert "(2 frame(s) before frame 0 skipped)" in capsys.readouterr().out


def test_extracted_frames_feed_the_clip_loader(extractor, tmp_path):
    """The script's output is the loader's layout: extract at the labelled size, then load clips."""
    base = make_clip_tree(tmp_path, splits={"train": ["0016E5_00390"]}, frames={})
    video = write_video(tmp_path / "0016E5.avi")
    assert extractor.main([video, "--sequence", "0016E5", "--out", os.path.join(base, "frames"),
                           "--first-frame", "387", "--size", f"{W}x{H}"]) == 0
    ds = CamVidClipDataset(str(tmp_path), "train", 5, clip_stride=2)
    image, _, meta = ds[0]
    assert [os.path.basename(p) for p in meta["frames"]] == [
        "0016E5_00387.png", "0016E5_00388.png", "0016E5_00390.png", "0016E5_00392.png", "0016E5_00393.png"]
    assert decode(image[2]) == (390, LABELLED)
    levels = [int(np.round(image[t].mean())) for t in (0, 1, 3, 4)]   # frames 387, 388, 392, 393 = video 0, 1, 5, 6
    assert all(abs(a - b) <= 3 for a, b in zip(levels, (10, 50, 210, 250)))


def test_extract_refuses_existing_output_and_bad_videos(extractor, tmp_path, capsys):
    video = write_video(tmp_path / "0005VD.avi")
    out = tmp_path / "frames"
    assert extractor.main([video, "--sequence", "Seq05VD", "--out", str(out)]) == 0
    before = {n: os.path.getmtime(out / "Seq05VD" / n) for n in pngs(out / "Seq05VD")}
    capsys.readouterr()
    assert extractor.main([video, "--sequence", "Seq05VD", "--out", str(out), "--first-frame", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "already holds 7 file(s); pass --overwrite" in err
    assert {n: os.path.getmtime(out / "Seq05VD" / n) for n in pngs(out / "Seq05VD")} == before
    # --overwrite: the new numbering replaces the old one completely
    assert extractor.main([video, "--sequence", "Seq05VD", "--out", str(out), "--first-frame", "3",
                           "--overwrite"]) == 0
    assert pngs(out / "Seq05VD") == [f"Seq05VD_f{n:05d}.png" for n in range(3, 10)]
    assert "removed 3 frame(s) of an earlier extraction" in capsys.readouterr().out

    not_video = tmp_path / "0006R0.MXF"
    not_video.write_text("this is not a video\n" * 50)
    assert extractor.main([str(not_video), "--sequence", "0006R0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: cannot read a frame of" in err and "0006R0.MXF" in err
    assert not os.path.exists(out / "0006R0")           # nothing created
    assert extractor.main([str(tmp_path / "missing.avi"), "--sequence", "0006R0", "--out", str(out)]) == 2
    assert "error: video file not found" in capsys.readouterr().err


def test_extract_full_disk_keeps_whole_frames(extractor, tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "v.avi")
    real = extractor.atomic_write
    calls = []

    def filling_disk(path, data, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:   # the disk is full while the third frame is written
            with open(path + f".tmp-{os.getpid()}", "wb") as f:
                f.write(data[:10])
            os.remove(path + f".tmp-{os.getpid()}")   # atomic_write removes its temporary file on errors
            raise OSError(errno.ENOSPC, "No space left on device", path + f".tmp-{os.getpid()}")
        return real(path, data, *args, **kwargs)
    monkeypatch.setattr(extractor, "atomic_write", filling_disk)
    out = tmp_path / "frames"
    assert extractor.main([video, "--sequence", "0016E5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: No space left on device writing ")
    assert "0016E5_00002.png; 2 frame(s) up to 0016E5_00001.png are complete" in err
    assert pngs(out / "0016E5") == ["0016E5_00000.png", "0016E5_00001.png"]   # whole frames, no temporary file


def test_extract_with_ffmpeg(extractor, tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "v.avi")
    empty = tmp_path / "empty_path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert extractor.main([video, "--sequence", "0006R0", "--out", str(tmp_path / "a"), "--ffmpeg"]) == 2
    assert "error: --ffmpeg needs the ffmpeg and ffprobe programs on PATH" in capsys.readouterr().err
    # stand-ins for ffprobe (the size) and ffmpeg (4 raw BGR frames, grey 0, 40, 80, 120) check the plumbing
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ffprobe").write_text(f"#!{sys.executable}\nprint('8,6')\n")
    (fake / "ffmpeg").write_text(f"#!{sys.executable}\nimport sys\nassert '-vsync' in sys.argv and "
                                 "'bgr24' in sys.argv\nfor i in range(4):\n"
                                 "    sys.stdout.buffer.write(bytes([40 * i]) * (8 * 6 * 3))\n")
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(fake / tool, 0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert extractor.main([video, "--sequence", "0006R0", "--out", str(tmp_path / "b"), "--ffmpeg",
                           "--first-frame", "930"]) == 0
    names = pngs(tmp_path / "b" / "0006R0")
    assert names == ["0006R0_f00930.png", "0006R0_f00931.png", "0006R0_f00932.png", "0006R0_f00933.png"]
    assert [grey_level(tmp_path / "b" / "0006R0" / n) for n in names] == [0, 40, 80, 120]


def test_extract_runs_as_a_script(tmp_path):
    video = write_video(tmp_path / "v.avi", levels=(20, 60))
    result = subprocess.run([sys.executable, SCRIPT, video, "--sequence", "0001TP", "--out", str(tmp_path / "f"),
                             "--first-frame", "6689"], capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert pngs(tmp_path / "f" / "0001TP") == ["0001TP_006689.png", "0001TP_006690.png"]
