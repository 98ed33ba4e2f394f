"""Dataset loaders, transforms, presets and the demo generator, on tiny fixture trees."""
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets import (ADE20KDataset, CityscapesDataset, DatasetError, VOCDataset, build_dataset,
                      get_preset, PRESETS)
from datasets import demo
from datasets.presets import voc_palette
from datasets.transforms import (Compose, Normalize, Pad, PhotoMetricDistortion, RandomCrop,
                                 RandomHorizontalFlip, RandomResize, Resize, ToCHW,
                                 build_eval_transform, build_train_transform)
from utils.input_norm import CAFFE_BGR, IMAGENET_RGB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The official Cityscapes id -> trainId table, written out independently of the code under test.
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
            24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


# ----------------------------------------------------------------------------- fixture helpers

def write_rgb(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))


def write_label(path, label, palette=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))
    if palette is not None:
        im.putpalette(palette)
    im.save(str(path))


def rand_image(h=8, w=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_cityscapes(root, h=8, w=12, label_fill=7):
    """2 train cities (3 images), 1 val city (2 images), 2 test images; real file naming."""
    files = {"train": [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
                       ("bochum", "bochum_000000_000313")],
             "val": [("lindau", "lindau_000000_000019"), ("lindau", "lindau_000001_000019")],
             "test": [("berlin", "berlin_000000_000019"), ("bonn", "bonn_000000_000019")]}
    lines = {}
    for split, items in files.items():
        lines[split] = []
        for i, (city, stem) in enumerate(items):
            img = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
            lbl = f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
            write_rgb(os.path.join(root, img), rand_image(h, w, seed=i))
            write_label(os.path.join(root, lbl), np.full((h, w), label_fill if split != "test" else 0))
            # the other files of the real download must be ignored
            write_label(os.path.join(root, lbl.replace("labelIds", "instanceIds")), np.zeros((h, w)))
            lines[split].append(f"{img} {lbl}\n" if split != "test" else f"{img}\n")
    for split, ls in lines.items():
        with open(os.path.join(root, f"{split}.lst"), "w") as f:
            f.writelines(ls)
    return files


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    demo.write_cityscapes(root, num_train=10, num_val=4, height=32, width=64, seed=0)
    return root


# ----------------------------------------------------------------------------- presets

def test_presets_and_lookup():
    assert set(PRESETS) == {"cityscapes", "ade20k", "voc", "demo", "demo_video", "camvid", "camvid32", "lip"}
    cs = get_preset("cityscapes")
    assert (cs.num_classes, cs.ignore_index, cs.crop_size) == (19, 255, (769, 769))
    assert cs.scales == (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1)
    assert (cs.test_mode, cs.test_crop, cs.test_stride, cs.test_size) == ("slide", (769, 769), (513, 513), None)
    assert (cs.iters, cs.batch_size, cs.lr, cs.weight_decay, cs.momentum, cs.power) == \
        (60000, 8, 1e-2, 1e-4, 0.9, 0.9)
    assert cs.palette[0] == (128, 64, 128) and cs.class_names[18] == "bicycle"
    ade = get_preset("ade20k")
    assert (ade.num_classes, len(ade.class_names), len(ade.palette)) == (150, 150, 150)
    assert ade.class_names[:3] == ("wall", "building", "sky") and ade.class_names[-1] == "flag"
    assert (ade.crop_size, ade.test_mode, ade.test_size, ade.cat_max_ratio) == ((512, 512), "whole", (2048, 512), 0.75)
    voc = get_preset("voc")
    assert (voc.num_classes, voc.crop_size, voc.train_split) == (21, (512, 512), "train_aug")
    assert voc.palette[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0)) and voc_palette(256)[255] == (224, 224, 192)
    d = get_preset("demo")
    assert d.class_names == ("road", "building", "vegetation", "sky", "car") and d.num_classes == 5
    with pytest.raises(ValueError, match="ade20k, camvid, camvid32, cityscapes, demo, demo_video, lip, voc"):
        get_preset("kitti")


# ----------------------------------------------------------------------------- Cityscapes

def test_cityscapes_every_label_id_maps_per_official_table(tmp_path):
    root = str(tmp_path)
    make_cityscapes(root, h=4, w=12)
    ids = np.array(list(range(34)) + [255] * 2, dtype=np.uint8).reshape(3, 12)  # every id, -1 stored as 255
    write_label(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png",
                np.vstack([ids, ids[:1]]))
    ds = CityscapesDataset(root, "train")
    i = [s.name for s in ds.samples].index("aachen_000000_000019")
    _, label, meta = ds[i]
    assert label.dtype == np.int32 and meta["name"] == "aachen_000000_000019"
    for raw, mapped in zip(ids.ravel(), label[:3].ravel()):
        assert mapped == OFFICIAL.get(int(raw), 255), raw


def test_cityscapes_uses_label_train_ids_when_present(tmp_path):
    root = str(tmp_path)
    make_cityscapes(root)
    trainids = np.tile(np.array([0, 5, 18, 255], np.uint8), (8, 3))
    write_label(tmp_path / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png", trainids)
    ds = CityscapesDataset(root, "train")
    i = [s.name for s in ds.samples].index("bochum_000000_000313")
    assert ds.samples[i].label.endswith("_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(ds[i][1], trainids)
    # the demo-style subset keeps train ids (0, 18) as classes 0, 1
    sub = CityscapesDataset(root, "train", train_ids=(0, 18))
    np.testing.assert_array_equal(sub[i][1][0, :4], [0, 255, 1, 255])
    assert sub.num_classes == 2
    np.testing.assert_array_equal(np.unique(sub[0][1]), [0])  # labelIds 7 -> train id 0 -> class 0


def test_cityscapes_sample_counts_splits_and_list_files(tmp_path):
    root = str(tmp_path)
    make_cityscapes(root)
    counts = {s: CityscapesDataset(root, s).num_samples for s in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 2, "test": 2}
    ds = CityscapesDataset(root, "train", batch_size=2)
    assert (ds.num_samples, len(ds)) == (3, 2)  # len() counts batches (Jittor convention)

    from_list = CityscapesDataset(root, "val", list_file="val.lst")  # relative to root
    assert [s.name for s in from_list.samples] == ["lindau_000000_000019", "lindau_000001_000019"]
    assert from_list.samples == CityscapesDataset(root, "val").samples
    test = CityscapesDataset(root, "test", list_file=os.path.join(root, "test.lst"))
    assert test.num_samples == 2 and all(s.label is None for s in test.samples)

    image, label, meta = CityscapesDataset(root, "test")[0]
    assert meta["has_label"] is False and meta["ori_size"] == (8, 12)
    assert image.shape == (3, 8, 12) and (label == 255).all()


# ----------------------------------------------------------------------------- ADE20K and VOC

def test_ade20k_shift_and_counts(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split, prefix, n in (("training", "train", 3), ("validation", "val", 2)):
        for i in range(n):
            name = f"ADE_{prefix}_{i + 1:08d}"
            write_rgb(root / "images" / split / f"{name}.jpg", rand_image(4, 6, i))
            write_label(root / "annotations" / split / f"{name}.png",
                        np.array([[0, 1, 2, 75, 149, 150]] * 4))
    for split in ("training", "train"):
        assert ADE20KDataset(str(tmp_path), split).num_samples == 3
    ds = ADE20KDataset(str(root), "val")  # the ADEChallengeData2016 folder itself works too
    assert ds.num_samples == 2 and ds.split == "validation"
    np.testing.assert_array_equal(ds[0][1][0], [255, 0, 1, 74, 148, 149])

    write_label(root / "annotations/validation/ADE_val_00000002.png", np.array([[0, 151, 200]] * 4))
    with pytest.raises(DatasetError, match=r"ADE_val_00000002\.png.*\[151, 200\]"):
        ds[1]


def write_voc_tree(base, palette):
    names = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"], "aug": ["2008_000002"]}
    label = np.zeros((6, 8), np.uint8)
    label[1:5, 2:6] = 255        # border
    label[2:4, 3:5] = 15         # person
    for split, ids in names.items():
        for n in ids:
            write_rgb(base / "JPEGImages" / f"{n}.jpg", rand_image(6, 8))
            if split != "aug":
                write_label(base / "SegmentationClass" / f"{n}.png", label, palette)
            write_label(base / "SegmentationClassAug" / f"{n}.png", label)
    sets = base / "ImageSets" / "Segmentation"
    os.makedirs(sets)
    (sets / "train.txt").write_text("\n".join(names["train"]) + "\n")
    (sets / "val.txt").write_text("\n".join(names["val"]) + "\n")
    (sets / "train_aug.txt").write_text("\n".join(names["train"] + names["aug"]) + "\n")
    return label


def test_voc_palette_png_border_and_counts(tmp_path):
    palette = [c for rgb in voc_palette(256) for c in rgb]
    base = tmp_path / "VOCdevkit" / "VOC2012"
    label = write_voc_tree(base, palette)
    stored = Image.open(base / "SegmentationClass" / "2007_000032.png")
    assert stored.mode == "P"  # a palette PNG like the real ones: indices, not colours
    ds = VOCDataset(str(tmp_path), "train")
    assert ds.num_samples == 2
    got = ds[0][1]
    np.testing.assert_array_equal(got, label)
    assert got[1, 2] == 255 and got[2, 3] == 15 and got[0, 0] == 0
    assert VOCDataset(str(base), "val").num_samples == 1
    aug = VOCDataset(str(tmp_path / "VOCdevkit"), "train_aug")
    assert aug.num_samples == 3 and "SegmentationClassAug" in aug.samples[0].label

    # a colour rendering instead of the index PNG is refused, naming the file
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(base / "SegmentationClass" / "2007_000033.png")
    with pytest.raises(DatasetError, match=r"2007_000033\.png.*mode 'RGB'"):
        VOCDataset(str(tmp_path), "val")[0]
    # a value outside 0..20 and 255
    write_label(base / "SegmentationClass" / "2007_000039.png", np.full((6, 8), 21), palette)
    with pytest.raises(DatasetError, match=r"2007_000039\.png.*\[21\]"):
        ds[1]


# ----------------------------------------------------------------------------- transforms

def test_crop_and_pad_values():
    preset = get_preset("demo")
    t = build_train_transform(preset, CAFFE_BGR, crop_size=(12, 16), scale_range=(1.0, 1.0))
    image = np.full((8, 10, 3), 50, np.uint8)
    label = np.full((8, 10), 3, np.uint8)
    out_img, out_lbl = t(image, label, np.random.default_rng(0))
    assert out_img.shape == (3, 12, 16) and out_img.dtype == np.float32
    assert out_lbl.shape == (12, 16) and out_lbl.dtype == np.int32
    # the image occupies the top-left (flipped or not: it is uniform); the rest is padding
    assert (out_img[:, 8:, :] == 0).all() and (out_img[:, :, 10:] == 0).all()
    assert (out_lbl[8:, :] == 255).all() and (out_lbl[:, 10:] == 255).all()
    assert (out_lbl[:8, :10] == 3).all()
    np.testing.assert_allclose(out_img[:, 0, 0], 50 - np.array(CAFFE_BGR.mean, np.float32), rtol=1e-6)

    # cropping a larger image: exact size, the window is a sub-block of the input
    big = np.arange(20 * 30, dtype=np.int64).reshape(20, 30)
    crop = RandomCrop((7, 9))
    for seed in range(5):
        _, lb = crop(np.zeros((20, 30, 3), np.uint8), big, np.random.default_rng(seed))
        assert lb.shape == (7, 9)
        y0, x0 = divmod(int(lb[0, 0]), 30)
        np.testing.assert_array_equal(lb, big[y0:y0 + 7, x0:x0 + 9])

    img, lb = Pad((4, 5), ignore_index=255)(np.ones((2, 3, 3), np.float32), np.zeros((2, 3), np.uint8), None)
    assert img.shape == (4, 5, 3) and img[2:].sum() == 0 and img[:, 3:].sum() == 0 and img[:2, :3].min() == 1
    assert (lb[2:] == 255).all() and (lb[:, 3:] == 255).all() and (lb[:2, :3] == 0).all()


def test_cat_max_ratio_retries():
    label = np.zeros((20, 100), np.uint8)
    label[:, 50:] = 1
    image = np.zeros((20, 100, 3), np.uint8)

    def mixed(cat_max_ratio):
        crop, ok = RandomCrop((20, 20), cat_max_ratio=cat_max_ratio), 0
        for seed in range(60):
            _, lb = crop(image, label, np.random.default_rng(seed))
            counts = np.bincount(lb.ravel(), minlength=2)
            ok += counts.max() / counts.sum() < 0.75
        return ok

    assert mixed(1.0) < 20 < 40 < mixed(0.75)


def test_flip_applies_to_image_and_label_together():
    h, w = 4, 7
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(w) * 10
    label = np.tile(np.arange(w, dtype=np.uint8), (h, 1))
    img, lb = RandomHorizontalFlip(p=1.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(lb[0], np.arange(w)[::-1])
    np.testing.assert_array_equal(img[..., 0], lb.astype(np.uint8) * 10)
    # through the whole training pipeline, over random flips, pixels and labels stay paired
    t = Compose([RandomResize(scales=(1.0,)), RandomCrop((4, 5)), RandomHorizontalFlip(), ToCHW()])
    flips = set()
    for seed in range(8):
        img, lb = t(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(img[0], lb * 10)
        flips.add(bool(lb[0, 0] > lb[0, -1]))
    assert flips == {True, False}


@pytest.mark.parametrize("norm, expected", [
    (CAFFE_BGR, [30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434]),           # BGR, no std
    (IMAGENET_RGB, [(10 - 123.675) / 58.395, (20 - 116.28) / 57.12, (30 - 103.53) / 57.375]),
])
def test_normalisation_per_backbone(tmp_path, norm, expected):
    root = str(tmp_path)
    make_cityscapes(root, h=4, w=6)
    write_rgb(tmp_path / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png",
              np.tile(np.array([10, 20, 30], np.uint8), (4, 6, 1)))  # RGB on disk
    ds = build_dataset("cityscapes", root, train=False, input_norm=norm)
    image, label, meta = ds[0]
    assert image.shape == (3, 4, 6) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, 2, 3], expected, rtol=1e-5)
    np.testing.assert_allclose(Normalize(norm)(np.array([[[10, 20, 30]]], np.uint8), None, None)[0][0, 0],
                               expected, rtol=1e-5)


def test_resize_scale_and_photometric():
    image, label = rand_image(10, 20), np.tile(np.arange(20, dtype=np.uint8), (10, 1))
    img, lb = RandomResize(scales=(2.0,))(image, label, np.random.default_rng(0))
    assert img.shape == (20, 40, 3) and lb.shape == (20, 40)
    assert set(np.unique(lb)) <= set(range(20))  # nearest: no new label values
    for seed in range(5):  # uniform range within bounds
        img, _ = RandomResize(ratio_range=(0.5, 1.0))(image, label, np.random.default_rng(seed))
        assert 5 <= img.shape[0] <= 10
    # mmseg keep-ratio base size: (long 2048, short 512) on a 10x20 image -> 512x1024 at ratio 1 (short side 512)
    img, lb = RandomResize(ratio_range=(1.0, 1.0), base_size=(2048, 512))(image, label, np.random.default_rng(0))
    assert img.shape[:2] == (512, 1024) == lb.shape
    img, lb = Resize((2048, 512))(image, label, None)  # eval: image only
    assert img.shape[:2] == (512, 1024) and lb.shape == (10, 20)

    pmd = PhotoMetricDistortion()
    changed = 0
    for seed in range(6):
        img, lb = pmd(image, label, np.random.default_rng(seed))
        assert img.dtype == np.uint8 and img.shape == image.shape and lb is label
        changed += not np.array_equal(img, image)
    assert changed >= 3
    with pytest.raises(TypeError):
        pmd(image.astype(np.float32), label, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs a label"):
        RandomCrop((4, 4))(image, None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="crop_size"):
        RandomCrop((0, 4))


def test_eval_transform_keeps_label_size():
    t = build_eval_transform(get_preset("ade20k"), IMAGENET_RGB)
    img, lb = t(rand_image(10, 20), np.zeros((10, 20), np.uint8), None)
    assert img.shape == (3, 512, 1024) and lb.shape == (10, 20) and lb.dtype == np.int32


# ----------------------------------------------------------------------------- loaders

def test_batches_keep_metadata_as_python_lists(demo_root):
    ds = build_dataset("demo", demo_root, train=True, input_norm=CAFFE_BGR, batch_size=4, crop_size=(16, 24))
    image, label, meta = next(iter(ds))
    assert tuple(image.shape) == (4, 3, 16, 24) and tuple(label.shape) == (4, 16, 24)
    assert str(image.dtype) == "float32" and str(label.dtype) == "int32"
    assert isinstance(meta["name"], list) and all(isinstance(n, str) for n in meta["name"])
    assert meta["ori_size"] == [(32, 64)] * 4
    assert set(np.unique(label.numpy())) <= {0, 1, 2, 3, 4, 255}
    assert (ds.num_samples, len(ds)) == (10, 2)  # drop_last for training

    val = build_dataset("demo", demo_root, train=False, input_norm=CAFFE_BGR, batch_size=2)
    assert (val.num_samples, len(val)) == (4, 2)
    image, label, meta = next(iter(val))
    assert tuple(image.shape) == (2, 3, 32, 64) and meta["name"][0].startswith("frankfurt_")


def test_different_sizes_in_a_batch_are_a_clear_error(tmp_path):
    demo.write_ade20k(str(tmp_path), num_train=2, num_val=1, height=16, width=20)
    write_rgb(tmp_path / "ADEChallengeData2016/images/training/ADE_train_00000002.jpg", rand_image(12, 20))
    write_label(tmp_path / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png", np.zeros((12, 20)))
    ds = ADE20KDataset(str(tmp_path), "train", transform=Compose([Normalize(IMAGENET_RGB), ToCHW()]),
                       batch_size=2)
    with pytest.raises(DatasetError, match="batch_size=1"):
        next(iter(ds))


def _collect(ds, epochs=2):
    out = []
    for _ in range(epochs):
        for image, label, meta in ds:
            out.append((image.numpy().copy(), label.numpy().copy(), list(meta["name"])))
    return out


def test_seeded_repeatable_and_epoch_dependent(demo_root):
    def make(seed=0):
        return build_dataset("demo", demo_root, train=True, input_norm=CAFFE_BGR, batch_size=5,
                             crop_size=(16, 16), seed=seed)
    a, b = _collect(make()), _collect(make())
    for (ia, la, na), (ib, lb, nb) in zip(a, b):
        assert na == nb
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert a[0][2] + a[1][2] != a[2][2] + a[3][2]          # a new order every epoch
    assert _collect(make(seed=1), 1)[0][2] != a[0][2]      # and another seed, another order
    ds = make()
    ds.set_epoch(1)                                          # resume at epoch 1
    resumed = _collect(ds, 1)
    assert [r[2] for r in resumed] == [r[2] for r in a[2:]]
    np.testing.assert_array_equal(resumed[0][0], a[2][0])


def test_worker_processes_give_the_same_batches(demo_root):
    def make(workers):
        return build_dataset("demo", demo_root, train=True, input_norm=IMAGENET_RGB, batch_size=3,
                             crop_size=(16, 16), num_workers=workers)
    single, multi = make(0), make(2)
    try:
        a, b = _collect(single, 3), _collect(multi, 3)
        for ds in (single, multi):   # an abandoned pass, then a jump (resume)
            next(iter(ds))
            ds.set_epoch(7)
        a += _collect(single, 1)
        b += _collect(multi, 1)
    finally:
        multi.terminate()
    assert len(a) == len(b) == 12
    for (ia, la, na), (ib, lb, nb) in zip(a, b):
        assert na == nb
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)


def test_workers_stay_one_pass_ahead_of_a_slow_consumer(demo_root):
    """Behind a slow training step the workers prefetch only the next pass (no restarts)."""
    def make(workers):
        return build_dataset("demo", demo_root, train=True, input_norm=IMAGENET_RGB, batch_size=2,
                             crop_size=(16, 16), num_workers=workers)
    single, multi = make(0), make(2)   # 5 batches a pass
    got, pids = [], []
    try:
        for _ in range(2):
            for image, label, meta in multi:
                got.append((image.numpy().copy(), label.numpy().copy(), list(meta["name"])))
                time.sleep(0.2)          # the slow training step
            assert multi._worker_epoch <= multi._pass_epoch + 1, "workers ran whole passes ahead"
            pids.append([w.p.pid for w in multi.workers])
    finally:
        multi.terminate()
    assert pids[0] == pids[1], "the workers were restarted between consecutive passes"
    want = _collect(single, 2)
    assert len(got) == len(want) == 10
    for (ia, la, na), (ib, lb, nb) in zip(want, got):
        assert na == nb
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)


_RESTART_BUSY_WORKERS = """
import sys, time
import jittor_env
from datasets import build_dataset
from utils.input_norm import IMAGENET_RGB
ds = build_dataset("demo", sys.argv[1], train=True, input_norm=IMAGENET_RGB, batch_size=1,
                   crop_size=(8, 8), num_workers=2)
ds.samples = ds.samples * 30          # 300 one-sample batches: more than the 2 KB id queue holds
ds.set_attrs(total_len=len(ds.samples))
next(iter(ds))                        # abandon the pass; the workers keep loading it
deadline = time.time() + 30
while ds.idqueue.total_push() - ds.idqueue.total_pop() < 2048 - 3 * 9 and time.time() < deadline:
    time.sleep(0.05)                  # until the worker-id queue (9 bytes an id) is all but full,
time.sleep(0.3)                       # then a worker blocks on it
queued = ds.idqueue.total_push() - ds.idqueue.total_pop()
ds.set_epoch(3)
n = sum(1 for _ in ds)                # restarts the workers
ds.terminate()
print("OK", queued, n)
"""


def test_restarting_workers_blocked_on_a_full_queue_keeps_the_process(demo_root):
    """Jittor's restart stopped the worker-id queue under a blocked worker, which SIGINTed us."""
    proc = subprocess.run([sys.executable, "-c", _RESTART_BUSY_WORKERS, demo_root], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    queued, n = proc.stdout.split("OK", 1)[1].split()[:2]
    assert int(queued) > 2000 and int(n) == 300, proc.stdout


def test_mpi_sharding_splits_each_global_batch(demo_root, monkeypatch):
    """Under MPI each rank gets its slice of every global batch, augmented identically."""
    import jittor as jt
    import jittor.dataset.dataset as jd

    def make():
        return build_dataset("demo", demo_root, train=True, input_norm=CAFFE_BGR, batch_size=4,
                             crop_size=(16, 16))
    full = _collect(make(), 2)

    class FakeMPI:
        def __init__(self, rank):
            self.rank = rank

        def world_size(self):
            return 2

        def world_rank(self):
            return self.rank

    monkeypatch.setattr(jt, "in_mpi", True, raising=False)
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(jd, "mpi", FakeMPI(rank))
        ds = make()
        shards.append(_collect(ds, 2))
        assert len(ds) == 2  # batches per rank: 10 samples, global batch 4, drop_last
    assert len(full) == len(shards[0]) == len(shards[1]) == 4
    for (image, label, names), r0, r1 in zip(full, *shards):
        assert r0[2] + r1[2] == names
        np.testing.assert_array_equal(np.concatenate([r0[0], r1[0]]), image)
        np.testing.assert_array_equal(np.concatenate([r0[1], r1[1]]), label)


# ----------------------------------------------------------------------------- bad input

def test_missing_or_misnamed_folders_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)Cityscapes root.*Expected layout.*leftImg8bit"):
        CityscapesDataset(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "leftImg8bit" / "training")  # misnamed split folder
    with pytest.raises(FileNotFoundError, match=r"(?s)leftImg8bit/train'.*Expected layout"):
        CityscapesDataset(str(tmp_path), "train")
    with pytest.raises(ValueError, match="valid: train, val, test"):
        CityscapesDataset(str(tmp_path), "trainval")
    with pytest.raises(FileNotFoundError, match=r"(?s)ADE20K images.*ADEChallengeData2016/images"):
        ADE20KDataset(str(tmp_path), "training")
    with pytest.raises(FileNotFoundError, match=r"(?s)JPEGImages.*Expected layout.*SegmentationClass"):
        VOCDataset(str(tmp_path), "train")
    with pytest.raises(TypeError, match="input_norm"):
        build_dataset("demo", str(tmp_path))


def test_image_without_label_and_label_without_image_name_the_file(tmp_path):
    root = str(tmp_path)
    make_cityscapes(root)
    os.remove(tmp_path / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png")
    with pytest.raises(FileNotFoundError, match=r"have no label.*bochum_000000_000313_leftImg8bit\.png"):
        CityscapesDataset(root, "train")
    os.remove(tmp_path / "leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png")
    with pytest.raises(FileNotFoundError, match=r"have no image.*lindau_000001_000019_gtFine_labelIds\.png"):
        CityscapesDataset(root, "val")
    with pytest.raises(FileNotFoundError, match=r"val\.lst:2: image .*lindau_000001_000019_leftImg8bit\.png"):
        CityscapesDataset(root, "val", list_file="val.lst")


def test_corrupt_image_and_bad_label_values_name_the_file(tmp_path):
    root = str(tmp_path)
    make_cityscapes(root)
    ds = CityscapesDataset(root, "val")
    bad = tmp_path / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*lindau_000000_000019_leftImg8bit\.png"):
        ds[0]
    label = np.full((8, 12), 7, np.uint8)
    label[0, :3] = [34, 40, 254]  # not Cityscapes ids
    write_label(tmp_path / "gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png", label)
    with pytest.raises(DatasetError, match=r"lindau_000001_000019_gtFine_labelIds\.png.*\[34, 40, 254\]"):
        ds[1]
    (tmp_path / "gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"cannot read label .*lindau_000001_000019_gtFine_labelIds\.png"):
        ds[1]
    write_label(tmp_path / "gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png", np.zeros((5, 12)))
    with pytest.raises(DatasetError, match="is 12x5 but image"):
        ds[1]


# ----------------------------------------------------------------------------- demo generator

def test_demo_generator_layouts(tmp_path, demo_root):
    ds = CityscapesDataset(demo_root, "train", train_ids=get_preset("demo").cityscapes_train_ids)
    assert ds.num_samples == 10 and CityscapesDataset(demo_root, "val").num_samples == 4
    assert CityscapesDataset(demo_root, "train", list_file="train.lst").samples == ds.samples
    present = set()
    for i in range(ds.num_samples):
        present |= set(np.unique(ds[i][1]).tolist())
    assert present == {0, 1, 2, 3, 4, 255}   # all five demo classes, and ignored pixels
    raw = np.array(Image.open(ds.samples[0].label))
    assert set(np.unique(raw)) <= {1, 7, 11, 17, 21, 23, 26}  # real Cityscapes label ids on disk

    again = str(tmp_path / "again")
    demo.main(["--root", again, "--num-train", "10", "--num-val", "4", "--height", "32", "--width", "64"])
    a = cv2.imread(os.path.join(again, os.path.relpath(ds.samples[3].image, demo_root)))
    np.testing.assert_array_equal(a, cv2.imread(ds.samples[3].image))  # fixed seed: same files

    demo.write_ade20k(str(tmp_path / "ade"), num_train=3, num_val=2, height=24, width=32)
    ade = ADE20KDataset(str(tmp_path / "ade"), "training")
    assert ade.num_samples == 3 and ADE20KDataset(str(tmp_path / "ade"), "validation").num_samples == 2
    assert set(np.unique(ade[0][1])) <= {1, 2, 4, 6, 20, 93, 255}
    demo.write_voc(str(tmp_path / "voc"), num_train=3, num_val=2, num_aug=2, height=24, width=32)
    assert [VOCDataset(str(tmp_path / "voc"), s).num_samples for s in ("train", "val", "train_aug")] == [3, 2, 5]
    voc = VOCDataset(str(tmp_path / "voc"), "train")
    assert Image.open(voc.samples[0].label).mode == "P"
    assert set(np.unique(voc[0][1])) <= {0, 7, 255} and 255 in voc[0][1]
